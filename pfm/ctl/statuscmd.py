"""`pfm status [POOL] [--json] [--full]`: each pool's status page as php-fpm
prints it (plain text, or JSON one line per pool), asked from the pool."""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

from .probe import ask_ok, for_each_pool, status_endpoint


def query_for(json: bool, full: bool) -> str:
    """The status page's query string: its keys pick the format (status.choose_format)."""
    return "&".join(k for k, on in (("json", json), ("full", full)) if on)


def run(config: Any, pool_name: Optional[str], json: bool = False, full: bool = False,
        timeout: float = 5.0, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Print every pool's page (or POOL's); 0 if all answered, 1 if one did not,
    78 if POOL is not in the configuration."""
    out = out or sys.stdout

    def show(index: int, pool: Any) -> None:
        answer = ask_ok(status_endpoint(pool), query_for(json, full), timeout)
        text = answer.body.decode("utf-8", "replace")
        if json:
            out.write(text.strip() + "\n")
        else:
            out.write(("\n" if index else "") + text.rstrip("\n") + "\n")
        out.flush()
    return for_each_pool("status", config, pool_name, err or sys.stderr, show)
