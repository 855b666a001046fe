"""The master's loop turned step by step on a fake system (tests/fakesystem.py):
its pool managers are fake children the test makes exit, its clock jumps
instead of sleeping. Sockets, pipes, scoreboards and the error log are real.

The same behaviours end to end, with real processes: test_processes.py and
test_operations_e2e.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from fakesystem import FakeSystem

from pfm.config import load
from pfm.log import Log
from pfm.master import MANAGER_GRACE, Master
from pfm.pool import MAX_BACKOFF
from pfm.procutil import EXIT_BOOT_FAILED
from pfm.scoreboard import IDLE

APPS = Path(__file__).parent / "apps"

pytestmark = pytest.mark.timeout(20)


class PassingCheck:
    """A reload's app check that passes at once (appcheck.AppCheck forks a
    child per pool to import its app)."""

    def __init__(self, config, watch, forget):
        self.config = config
        self.failures = []
        self.done = True

    def expire(self, now: float) -> None:
        pass

    def cancel(self) -> None:
        pass

    def fds(self) -> list:
        return []


class Rig:
    def __init__(self, tmp_path: Path, **global_):
        self.dir = tmp_path
        self.path = tmp_path / "pfm.conf"
        settings = {"error_log": tmp_path / "error.log", "log_level": "debug",
                    "process_control_timeout": 0}
        settings.update(global_)
        self.write("[global]\n%s\n\n[www]\nlisten = %s\npm = static\npm.max_children = 2\n"
                   "app = testapps:app\npythonpath = %s\n" % (
                       "\n".join("%s = %s" % (k.replace("__", "."), v)
                                 for k, v in settings.items()),
                       tmp_path / "www.sock", APPS))
        self.system = FakeSystem()
        log = Log(str(tmp_path / "error.log"), "debug")
        self.master = Master(load(str(self.path)), log, self.system, app_check=PassingCheck)
        self.master.open_sockets()
        self.master.open_loop()

    def write(self, text: str) -> None:
        self.path.write_text(text)

    def log(self) -> str:
        return (self.dir / "error.log").read_text()

    def managers(self) -> list[int]:
        return sorted(self.master.managers)

    def run(self, until, turns: int = 1000) -> None:
        self.system.run(self.master, until, turns)

    def reload(self, sig: int) -> int:
        """Send `sig` and turn until the reload forked its pool manager; its pid."""
        forks = len(self.system.forked)
        self.system.deliver(sig)
        self.run(lambda: len(self.system.forked) > forks)
        assert self.master.next is not None
        return self.system.forked[-1]

    def turns(self, count: int) -> None:
        for _ in range(count):
            self.master.step(self.master.timeout())

    def replacement(self, pid: int) -> int:
        """Turn the loop until the manager `pid` is replaced; the new one."""
        self.run(lambda: pid not in self.master.managers and self.master.managers)
        (new,) = self.managers()
        return new

    def close(self) -> None:
        self.master.cleanup()
        self.master.poller.close()
        self.system.close()


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**global_) -> Rig:
        made.append(Rig(tmp_path, **global_))
        return made[-1]
    yield make
    for r in made:
        r.close()


def serving(master: Master, pid: int) -> None:
    """The pool manager `pid` booted and a worker of it is idle."""
    manager = master.managers[pid]
    manager.booted = True
    slot = manager.board.slot(manager.board.assign_slot())
    slot.claim(pid + 1, 0.0, 0.0)
    slot.set_stage(IDLE, 0.0)


def test_a_pool_manager_that_keeps_exiting_is_restarted_after_growing_pauses(rig):
    r = rig()
    system = r.system
    pauses = []
    for _ in range(6):
        (pid,) = r.managers()
        system.exit(pid, 1)
        new = r.replacement(pid)
        pauses.append(system.forked_at[new] - system.exited_at[pid])
    assert pauses == [0.0, 2.0, 4.0, 8.0, 16.0, MAX_BACKOFF]
    assert "[pool www] manager %d exited with code 1 after 0.000000 seconds from start, " \
           "restarting it in 30.0 s" % pid in r.log()


def test_a_pool_manager_that_lived_ten_seconds_is_restarted_at_once(rig):
    r = rig()
    for _ in range(3):
        (pid,) = r.managers()
        r.system.exit(pid, 1)
        r.replacement(pid)
    (pid,) = r.managers()
    r.system.advance(10.0)
    r.system.exit(pid, 1)
    assert r.system.forked_at[r.replacement(pid)] == r.system.exited_at[pid]


def test_sigterm_sends_term_then_kill_every_grace_until_the_managers_are_gone(rig):
    r = rig()
    (pid,) = r.managers()
    start = r.system.now
    r.system.deliver(signal.SIGTERM)
    r.run(lambda: r.system.signals_to(pid).count(signal.SIGKILL) == 2)
    assert [(t - start, sig) for t, p, sig in r.system.sent_at if p == pid] == [
        (0.0, signal.SIGTERM), (MANAGER_GRACE, signal.SIGKILL),
        (2 * MANAGER_GRACE, signal.SIGKILL)]
    r.system.exit(pid, 0)
    assert r.master.step(r.master.timeout()) is True
    assert "Terminating ..." in r.log()


def test_sigquit_waits_process_control_timeout_and_a_grace_before_term(rig):
    r = rig(process_control_timeout=5)
    (pid,) = r.managers()
    start = r.system.now
    r.system.deliver(signal.SIGQUIT)
    r.run(lambda: signal.SIGKILL in r.system.signals_to(pid))
    assert [(t - start, sig) for t, p, sig in r.system.sent_at if p == pid] == [
        (0.0, signal.SIGQUIT), (5 + MANAGER_GRACE, signal.SIGTERM),
        (5 + 2 * MANAGER_GRACE, signal.SIGKILL)]


def test_a_stopping_master_does_not_restart_a_manager_that_exits(rig):
    r = rig()
    (pid,) = r.managers()
    r.system.deliver(signal.SIGQUIT)
    r.master.step(0)
    r.system.exit(pid, 1)
    assert r.master.step(0) is True
    assert r.system.forked == [pid]


def test_a_config_error_at_reload_keeps_the_running_pools(rig):
    r = rig()
    (pid,) = r.managers()
    r.write("[global]\nno_such_directive = 1\n")
    r.system.deliver(signal.SIGUSR2)
    r.master.step(0)
    assert "reload failed: the configuration has an error" in r.log()
    assert r.system.forked == [pid] and r.system.sent == []
    assert r.master.next is None and r.master.current.number == 0


def test_a_reload_whose_manager_exits_before_serving_fails_and_the_old_one_serves_on(rig):
    r = rig()
    (old,) = r.managers()
    new = r.reload(signal.SIGHUP)
    r.system.exit(new, EXIT_BOOT_FAILED)
    r.run(lambda: r.master.next is None)
    assert "reload failed: [pool www] its manager exited with code %d before the pool " \
           "served; the running pools keep serving" % EXIT_BOOT_FAILED in r.log()
    assert r.system.signals_to(old) == [] and r.managers() == [old]
    r.turns(5)
    assert r.system.forked == [old, new]        # the failed one is not restarted


def test_a_reload_commits_once_the_new_pool_serves_and_the_old_manager_finishes(rig):
    r = rig()
    (old,) = r.managers()
    new = r.reload(signal.SIGUSR2)
    r.turns(3)
    assert r.system.signals_to(old) == []       # not before the new pool serves
    serving(r.master, new)
    r.run(lambda: r.master.next is None)
    assert r.system.signals_to(old) == [signal.SIGQUIT]
    assert r.master.current.number == 1
    assert "new pool generation is accepting; 1 old pool manager(s) finishing" in r.log()


def test_crashed_workers_past_the_threshold_within_the_interval_reload_everything(rig):
    r = rig(emergency_restart_threshold=2, emergency_restart_interval=60)
    (old,) = r.managers()
    os.write(r.master.report_w, b"S")
    r.master.step(0)
    r.system.advance(61.0)           # the first crash is out of the interval by now
    os.write(r.master.report_w, b"S")
    r.master.step(0)
    assert "threshold" not in r.log() and r.system.forked == [old]
    r.system.advance(59.0)
    os.write(r.master.report_w, b"S")
    r.run(lambda: len(r.system.forked) == 2)
    assert "failed processes threshold (2 in 60 sec) is reached, initiating reload" in r.log()
    serving(r.master, r.system.forked[-1])
    r.run(lambda: r.master.next is None)
    assert r.system.signals_to(old) == [signal.SIGQUIT]
