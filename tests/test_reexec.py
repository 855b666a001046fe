"""A reload after pfm itself was upgraded re-executes the master in place."""

import os
import signal
import time

import harness
import pytest
from harness import Background

import pfm


@pytest.mark.timeout(60)
def test_reload_after_upgrade_reexecs_with_the_same_pid_and_sockets(pfm_factory):
    """When pfm's code on disk changed since start, SIGUSR2 execs the master
    anew (php-fpm's `reloading: execvp(...)`): same pid, the listening socket
    handed over (`using inherited socket fd=N, "ADDR"`), new workers, and
    requests sent throughout are all answered."""
    p = pfm_factory(pool={"pm.max_children": 2})
    old_workers = set(p.worker_pids())
    stop = time.monotonic() + 4
    statuses = []

    def load():
        while time.monotonic() < stop:
            statuses.append(harness.fcgi_get(p.address(), "/pid", timeout=10).status)

    clients = [Background(load) for _ in range(3)]
    time.sleep(0.5)
    init = os.path.join(os.path.dirname(pfm.__file__), "__init__.py")
    now = time.time()
    os.utime(init, (now, now))          # what an upgrade does to the files' mtimes
    mark = p.log_size()
    os.kill(p.pid, signal.SIGUSR2)
    p.wait_log(r'NOTICE: pfm\'s code changed since start; reloading: execvp\(', start=mark)
    p.wait_log(r'NOTICE: using inherited socket fd=\d+, "%s"' % p.listen(), start=mark)
    p.wait_log(r"new pool generation is accepting", start=mark)
    for c in clients:
        c.join_result(20)
    assert statuses and set(statuses) == {200}
    assert p.running() and p.proc.pid == p.pid
    harness.wait_for(lambda: not set(p.worker_pids()) & old_workers, 10, "old workers gone")
    assert harness.fcgi_get(p.address(), "/pid").status == 200
