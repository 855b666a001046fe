"""When a new generation of pools may replace the old one (pfm/generation.py),
and the app check's explanations (pfm/appcheck.py), without
starting pfm."""

from __future__ import annotations

import os
import pwd
import types

import pytest

from pfm import appcheck, generation
from pfm.generation import FAILED, READY, WAITING, PoolReadiness


def pool(name="www", ondemand=False, booted=True, idle=0) -> PoolReadiness:
    return PoolReadiness(name, ondemand, booted, idle)


def test_a_generation_is_ready_once_every_pool_has_an_idle_worker():
    assert generation.outcome([pool(idle=1), pool("api", idle=2)], None) == READY
    assert generation.outcome([pool(idle=1), pool("api", idle=0)], None) == WAITING
    assert generation.not_serving([pool(idle=1), pool("api", idle=0)]) == ["api"]


def test_waiting_has_no_deadline():
    """No clock goes in: a generation whose workers are still booting is
    waited for, however long; only a known failure ends the wait."""
    booting = [pool(idle=0)]
    assert generation.outcome(booting, None) == WAITING
    assert generation.outcome(booting, "[pool www] child 12 failed to initialize") == FAILED


def test_a_failure_wins_even_over_a_ready_pool():
    assert generation.outcome([pool(idle=4)], "[pool api] unable to preload") == FAILED


def test_an_ondemand_pool_serves_once_its_manager_booted():
    """An ondemand pool has no worker until a connection comes: it counts as
    serving once its manager is past its boot (its preload, if any), not at
    once as it used to, so a preload that fails is seen before the old
    generation retires."""
    assert generation.outcome([pool(ondemand=True, booted=True)], None) == READY
    assert generation.outcome([pool(ondemand=True, booted=False)], None) == WAITING
    assert generation.outcome([pool(booted=False, idle=1)], None) == WAITING


def test_missing_callable_names_the_one_the_module_has():
    django = types.SimpleNamespace(application=lambda e, s: [])
    message = appcheck.missing_callable(django, "mysite.wsgi", "app")
    assert message.startswith("module 'mysite.wsgi' has no callable 'app'; it has "
                              "'application': write app = mysite.wsgi:application")
    assert "Django" in message
    assert appcheck.missing_callable(types.SimpleNamespace(), "m", "app") == \
        "module 'm' has no callable 'app'"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_first_unreadable_names_the_directory_that_shuts_the_user_out(tmp_path):
    """As nobody (in a forked child), a directory under root's 0700 tree is
    reported with the parent that closes it."""
    inner = tmp_path / "lib" / "python3"
    inner.mkdir(parents=True)
    tmp_path.chmod(0o700)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(pwd.getpwnam("nobody").pw_uid)
            found = appcheck.first_unreadable([("/usr", "user", ""),
                                               (str(inner), "user", "the standard library")])
            os.write(w, repr(found).encode())
        finally:
            os._exit(0)
    os.close(w)
    found = os.read(r, 4096).decode()
    os.waitpid(pid, 0)
    closed = next(str(p) for p in [*reversed(inner.parents), inner]
                  if not os.stat(p).st_mode & 0o001)
    assert found == repr(("user", "user nobody cannot read %s (the standard library): it "
                                  "may not enter %s" % (inner, closed))), found
