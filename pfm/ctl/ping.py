"""`pfm ping [POOL]`: a health check for Docker's HEALTHCHECK and Kubernetes
probes. Exit 0 when every pool answers its ping.path (or status page), 1
with the reason on standard error when one does not."""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

from .probe import ConfigProblem, ProbeError, ask_ok, ping_endpoint, select_pools


def check(pool: Any, timeout: float) -> str:
    """A line saying how the pool answered; ProbeError with the reason when it did not."""
    endpoint = ping_endpoint(pool)
    answer = ask_ok(endpoint, timeout=timeout)
    if endpoint.expect is not None and answer.body != endpoint.expect:
        raise ProbeError("%s answered %r instead of ping.response %r" % (
            endpoint.describe(), answer.body[:80], endpoint.expect))
    return "pool %s: ok, %s answered in %.1f ms" % (pool.name, endpoint.describe(),
                                                    answer.seconds * 1000)


def run(config: Any, pool_name: Optional[str], timeout: float = 5.0,
        out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        pools = select_pools(config, pool_name)
    except ConfigProblem as e:
        err.write("pfm ping: %s\n" % e)
        return 78
    failed = 0
    for pool in pools:
        try:
            out.write(check(pool, timeout) + "\n")
        except ProbeError as e:
            err.write("pfm ping: pool %s: %s\n" % (pool.name, e))
            failed += 1
    out.flush()
    return 1 if failed else 0
