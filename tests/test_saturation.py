"""A saturated pool says which requests hold it, not only "consider raising it"."""

import os
import signal

import harness
import pytest
from harness import Background


@pytest.mark.timeout(30)
def test_saturated_pool_logs_its_oldest_requests(pfm_factory, tmp_path):
    """Every worker busy and a connection waiting: a WARNING names the busy
    workers' requests, oldest first, with their age; the waiting request is
    still served."""
    p = pfm_factory(pool={"pm.max_children": 1})
    started = tmp_path / "started"
    slow = Background(harness.fcgi_get, p.address(), "/sleep", "s=2.5&started=%s" % started,
                      timeout=20)
    harness.wait_for(started.exists, 10, "the slow request to start")
    waiting = Background(harness.fcgi_get, p.address(), "/pid", timeout=20)
    p.wait_log(r'WARNING: \[pool www\] all 1 workers busy, 1 connection\(s\) waiting; '
               r'oldest requests: pid \d+ "GET /sleep\?s=2\.5&started=\S+" \d+\.\ds$')
    assert slow.join_result(20).status == 200
    assert waiting.join_result(20).status == 200


@pytest.mark.timeout(40)
def test_a_booting_worker_is_shown_as_starting_not_as_a_request(pfm_factory, tmp_path):
    """Issue 9, item 11: a worker still importing the app (2 s here) used to
    appear in the saturation warning as a request as old as the machine's
    uptime (its slot has no request start). Now a pool whose workers are all
    booting is starting, not saturated: no warning, and the status page
    (answered by the manager meanwhile) shows them Starting, with no
    request. When one worker is in a request and the other boots, the
    warning names the request, and the other as starting."""
    status_port = harness.free_port()
    p = pfm_factory(pool={"pm.max_children": 2, "app": "slow_import:app",
                          "env[SLOW_IMPORT_SECONDS]": "2", "pm.status_path": "/status",
                          "pm.status_listen": "127.0.0.1:%d" % status_port},
                    workers=False)
    waiting = Background(harness.fcgi_get, p.address(), "/pid", timeout=20)
    harness.wait_for(lambda: len(p.worker_pids()) == 2, 10, "two workers forked")
    # Asked on pm.status_listen: while no worker has booted, the manager
    # leaves the pool's own socket to the workers (a reload's new generation
    # may never serve), but answers on its own address.
    status = harness.fcgi_get(("127.0.0.1", status_port), "/status", "json&full",
                              timeout=5).json()
    assert [x["state"] for x in status["processes"]] == ["Starting"] * 2, status
    for proc in status["processes"]:
        assert (proc["request duration"], proc["request method"], proc["requests"]) == \
            (0, "-", 0), proc
    assert waiting.join_result(20).status == 200
    assert "workers busy" not in p.log(), p.log()

    started = tmp_path / "started"
    slow = Background(harness.fcgi_get, p.address(), "/sleep", "s=3&started=%s" % started,
                      timeout=20)
    harness.wait_for(started.exists, 10, "the slow request to start")
    busy = int(started.read_text())
    (idle,) = [w for w in p.worker_pids() if w != busy]
    os.kill(idle, signal.SIGKILL)       # its replacement boots for 2 s
    p.wait_log(r"child %d exited on signal 9" % idle)
    waiting = Background(harness.fcgi_get, p.address(), "/pid", timeout=20)
    m = p.wait_log(r'WARNING: \[pool www\] all 2 workers busy, 1 connection\(s\) waiting; '
                   r'oldest requests: pid %d "GET /sleep\?s=3&started=\S+" \d\.\ds; '
                   r"starting: pid (\d+) for \d\.\ds$" % busy)
    assert int(m.group(1)) not in (busy, idle)
    assert slow.join_result(20).status == 200
    assert waiting.join_result(20).status == 200
