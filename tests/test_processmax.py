"""process.max caps the workers of all pools together (php-fpm's [global] directive)."""

import time

import harness
import pytest
from harness import Background


@pytest.mark.timeout(40)
def test_process_max_caps_workers_across_pools(pfm_factory):
    """process.max = 3 with a static pool of 2: the ondemand pool gets one
    worker however many requests wait, logs that the cap is reached, and still
    serves them all, one after the other."""
    p = pfm_factory(global_={"process.max": 3},
                    pools={"fixed": {"pm": "static", "pm.max_children": 2},
                           "burst": {"pm": "ondemand", "pm.max_children": 3}},
                    workers=False)
    p.wait_workers({"fixed": 2})
    waiting = [Background(harness.fcgi_get, p.address("burst"), "/sleep", "s=1", timeout=20)
               for _ in range(3)]
    p.wait_log(r"WARNING: \[pool burst\] process\.max \(3\) reached across all pools, "
               r"not forking a worker")
    time.sleep(0.3)
    assert len(p.worker_pids("burst")) == 1
    assert len(p.worker_pids()) == 3
    assert [w.join_result(20).status for w in waiting] == [200, 200, 200]
