"""A saturated pool says which requests hold it, not only "consider raising it"."""

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
