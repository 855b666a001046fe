"""A saturated pool says which requests hold it, not only "consider raising it"."""

import re

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


@pytest.mark.timeout(30)
def test_a_booting_worker_is_shown_as_starting_not_as_a_request(pfm_factory):
    """Issue 9, item 11: the only worker is still importing the app (2 s)
    while a connection waits. The saturation warning used to show it as a
    request as old as the machine's uptime (its slot has no request start);
    now it says the worker is starting and for how long. The status page
    (answered by the manager meanwhile) shows it Starting, with no request."""
    p = pfm_factory(pool={"pm.max_children": 1, "app": "slow_import:app",
                          "env[SLOW_IMPORT_SECONDS]": "2", "pm.status_path": "/status"},
                    workers=False)
    waiting = Background(harness.fcgi_get, p.address(), "/pid", timeout=20)
    m = p.wait_log(r"WARNING: \[pool www\] all 1 workers busy, \d+ connection\(s\) "
                   r"waiting(.*)$")
    assert re.fullmatch(r"; starting: pid \d+ for [01]\.\ds", m.group(1)), m.group(0)
    status = harness.fcgi_get(p.address(), "/status", "json&full", timeout=5).json()
    (proc,) = status["processes"]
    assert proc["state"] == "Starting", proc
    assert (proc["request duration"], proc["request method"], proc["requests"]) == \
        (0, "-", 0), proc
    assert waiting.join_result(20).status == 200
