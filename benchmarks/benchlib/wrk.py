"""Running wrk and reading what it prints."""

from __future__ import annotations

import math
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from .procs import PROCS, PROG

SCRIPTS = Path(__file__).resolve().parent.parent / "wrk"
POST_1MIB = SCRIPTS / "post-1mib.lua"
SLOW = SCRIPTS / "slow.lua"

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int       # socket errors: connect + read + write + timeout
    non2xx: int
    slow: int = -1    # requests over the first of WRK_SLOW_US, when the script counts them
    max_ms: float = math.nan
    slow_by: Dict[int, int] = field(default_factory=dict)   # threshold µs -> requests over
    slow_estimated: bool = False     # from percentiles (a large record), not counted


def _percentile(text: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    return float(m.group(1)) * _UNIT_MS[m.group(2)] if m else math.nan


def parse(text: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non2xx = int(m.group(1)) if m else 0
    result = WrkResult(rps, _percentile(text, "50"), _percentile(text, "99"), requests,
                       errors, non2xx)
    for m in re.finditer(r"Slow requests: (~?)(\d+) over (\d+) us, max (\d+) us", text):
        result.slow_by[int(m.group(3))] = int(m.group(2))
        result.slow_estimated = result.slow_estimated or m.group(1) == "~"
        result.max_ms = int(m.group(4)) / 1000.0
        if result.slow < 0:
            result.slow = int(m.group(2))
    return result


def run(url: str, connections: int, duration: float, threads: int = 1,
        script: Optional[Path] = None, slow_us: Union[int, Sequence[int]] = 500000,
        timeout_s: float = 0) -> str:
    """wrk's output; fails when wrk does. timeout_s: wrk's --timeout (0: its 2 s)."""
    threads = max(1, min(threads, connections))
    duration = max(1, int(round(duration)))     # wrk takes whole seconds
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
            "--latency"]
    if timeout_s:
        argv += ["--timeout", f"{timeout_s:g}s"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    if isinstance(slow_us, int):
        slow_us = [slow_us]
    env = dict(os.environ, WRK_SLOW_US=",".join(str(x) for x in slow_us))
    code, out = PROCS.run_bounded("wrk", argv, duration + 30, env=env)
    if code != 0 or "Requests/sec" not in out:
        raise SystemExit(f"{PROG}: wrk failed ({code}): {' '.join(argv)}\n{out}")
    return out


def version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return (out.strip().splitlines() or [""])[0].split(" Copyright")[0]
