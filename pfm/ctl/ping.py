"""`pfm ping [POOL]`: a health check for Docker's HEALTHCHECK and Kubernetes
probes. Exit 0 when every pool answers its ping.path (or status page), 1
with the reason on standard error when one does not."""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

from .probe import ProbeError, ask_ok, for_each_pool, ping_endpoint


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

    def ping(index: int, pool: Any) -> None:
        out.write(check(pool, timeout) + "\n")
        out.flush()
    return for_each_pool("ping", config, pool_name, err or sys.stderr, ping)
