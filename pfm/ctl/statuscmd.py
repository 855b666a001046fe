"""`pfm status [POOL] [--json] [--full]`: each pool's status page as php-fpm
prints it (plain text, or JSON one line per pool), asked from the pool."""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

from .probe import ConfigProblem, ProbeError, ask_ok, select_pools, status_endpoint


def query_for(json: bool, full: bool) -> str:
    """The status page's query string: its keys pick the format (status.choose_format)."""
    return "&".join(k for k, on in (("json", json), ("full", full)) if on)


def run(config: Any, pool_name: Optional[str], json: bool = False, full: bool = False,
        timeout: float = 5.0, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Print every pool's page (or POOL's); 0 if all answered, 1 if one did not,
    78 if POOL is not in the configuration."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        pools = select_pools(config, pool_name)
    except ConfigProblem as e:
        err.write("pfm status: %s\n" % e)
        return 78
    failed = 0
    for i, pool in enumerate(pools):
        try:
            answer = ask_ok(status_endpoint(pool), query_for(json, full), timeout)
        except ProbeError as e:
            err.write("pfm status: pool %s: %s\n" % (pool.name, e))
            failed += 1
            continue
        text = answer.body.decode("utf-8", "replace")
        if json:
            out.write(text.strip() + "\n")
        else:
            out.write(("\n" if i else "") + text.rstrip("\n") + "\n")
        out.flush()
    return 1 if failed else 0
