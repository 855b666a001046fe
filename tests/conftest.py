"""Fixtures that start real pfm and nginx processes and always stop them.

Each factory fixture stops what it started in its finalizer, pass or fail;
a session finalizer then SIGKILLs anything this session started that is still
alive (found through its PFM_TEST_SESSION environment mark: a daemonized
master, an orphaned worker) and removes the session's temporary directory.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import harness
import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_cleanup():
    """After the last test: nothing this session started may still run. A
    survivor (which every test's own teardown should have stopped) is killed
    and reported as an error, since it means processes escaped their tree."""
    yield
    try:
        harness.wait_for(lambda: not harness.session_pids(), 2, "", interval=0.1)
    except AssertionError:
        pass
    leftovers = harness.kill_session_leftovers()
    harness.remove_base_dir()
    if leftovers:
        sys.stderr.write("\nkilled processes the tests left running: %r\n" % leftovers)
        pytest.fail("processes outlived the tests that started them: %r" % leftovers,
                    pytrace=False)


def _name(request) -> str:
    return request.node.name


@pytest.fixture
def run_dir(request):
    """A fresh private directory under the session's /tmp directory."""
    return harness.new_dir(_name(request))


@pytest.fixture
def shared_dir():
    """A directory every user may traverse and read (the run directories and
    pytest's own are root's, 0700), for what a pool's user must reach."""
    d = Path(tempfile.mkdtemp(prefix="pfmt-shared-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pfm_factory(request):
    """start_pfm(pool=..., pools=..., global_=..., raw=..., args=..., start=True,
    wait=True) -> a started harness.Pfm, stopped (TERM, then KILL) at teardown."""
    started: list[harness.Pfm] = []

    def start_pfm(start: bool = True, wait: bool = True, workers: bool = True, **kwargs):
        p = harness.Pfm(harness.new_dir(_name(request)), **kwargs)
        started.append(p)
        if start:
            p.start(wait=wait, workers=workers)
        return p

    yield start_pfm
    for p in reversed(started):
        p.stop()


@pytest.fixture
def pfm(pfm_factory):
    """A pfm with one static pool 'www' of 2 workers serving tests/apps/testapps.py."""
    return pfm_factory()


@pytest.fixture
def nginx_factory(request):
    """start_nginx(backend, **options) -> a started harness.Nginx, stopped at teardown.
    nginx missing is a failure, not a skip: the end-to-end tests are the point."""
    started: list[harness.Nginx] = []

    def start_nginx(backend: str, **kwargs):
        n = harness.Nginx(harness.new_dir(_name(request) + "-nginx"), backend, **kwargs)
        started.append(n)
        return n.start()

    yield start_nginx
    for n in reversed(started):
        n.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server (Debian's) on a free loopback port and a unix
    socket, for the whole session; stopped at the end."""
    from redisserver import RedisServer
    server = RedisServer(harness.new_dir("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def jobs_url(request, run_dir):
    """An empty job queue on each backend: a new SQLite file, or a key prefix
    of its own in the session's redis-server."""
    if request.param == "sqlite":
        return "sqlite://%s/jobs.sqlite3" % run_dir
    server = request.getfixturevalue("redis_server")
    return "%s?prefix=%s" % (server.url, run_dir.name)


@pytest.fixture
def job_procs(request):
    """start(*argv) -> a Popen of tests/apps/jobprocs.py (consumer or producer),
    SIGKILLed at teardown if still running."""
    from jobtools import start_jobproc
    started = []

    def start(*argv, **kwargs):
        proc = start_jobproc(harness.new_dir(_name(request)), *argv, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
