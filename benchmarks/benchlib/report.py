"""The header every result carries (interpreter, machine, versions), and the
markdown helpers."""

from __future__ import annotations

import datetime
import math
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from . import nginx, wrk


def machine_lines(tools: bool = True) -> List[str]:
    """Interpreter and machine, and (`tools`) the nginx and wrk versions."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    lines = [
        f"interpreter: {sys.executable} -> {os.path.realpath(sys.executable)} "
        f"(Python {platform.python_version()}, {platform.python_implementation()})",
        f"machine: nproc {len(os.sched_getaffinity(0))}, {model or platform.machine()}, "
        f"kernel {platform.release()}, load average at start {load}",
    ]
    if tools:
        lines.append(f"tools: {nginx.version()}; {wrk.version()}")
    return lines


def command_line(script: str, argv: Optional[Sequence[str]]) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    return (f"{sys.executable} benchmarks/{script} "
            + " ".join(shlex.quote(a) for a in args)).rstrip()


def stamp() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")


def fmt(value: float, spec: str = ",.0f", empty: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return empty
    return format(value, spec)


def ms(value: float) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"


def write(results: Path, prefix: str, text: str) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{prefix}-{datetime.datetime.now():%Y%m%d-%H%M%S}.md"
    out.write_text(text)
    return out
