"""`pfm top`: every pool and its workers, live, in the terminal (uwsgitop's
idea, with nothing to set up: it asks each pool for `?json&full` once a
second through probe.py).

Per pool: busy and idle workers, the listen queue, requests per second
(from the change of `accepted conn`). Per worker: state, requests served,
requests per second, CPU % (from /proc/PID/stat between two refreshes),
PSS, and the running request with its duration.

`Tracker` (rates) and `render` (lines of text) are plain functions of the
samples, tested without a terminal; only `_curses_loop` draws. curses comes
with Python, so nothing needs installing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .probe import ProbeError, ask_ok, status_endpoint

REFRESH = 1.0  # seconds between two samples
BUSY_STATES = frozenset(("Reading headers", "Getting request information", "Running",
                         "Finishing"))
_TICK = os.sysconf("SC_CLK_TCK")

Line = Tuple[str, str]  # (text, style): style is "title", "pool", "head" or ""


def proc_cpu_seconds(pid: int) -> Optional[float]:
    """user + system CPU seconds of `pid` from /proc, None if it cannot be read
    (gone, or in another pid namespace than this command)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class PoolSample:
    """One pool at one refresh: its `?json&full` snapshot, or why there is none."""

    name: str
    snap: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    rate: Optional[float] = None                                   # requests/s
    worker_rates: Dict[int, float] = field(default_factory=dict)   # pid -> requests/s
    cpu: Dict[int, float] = field(default_factory=dict)            # pid -> CPU %


class Tracker:
    """Rates from two successive samples: requests/s per pool and per worker,
    CPU % per worker. The first sample of anything has no rate yet."""

    def __init__(self, cpu_seconds: Callable[[int], Optional[float]] = proc_cpu_seconds):
        self.cpu_seconds = cpu_seconds
        self.accepted: Dict[str, Tuple[float, int, float]] = {}  # pool -> (t, count, start)
        self.requests: Dict[int, Tuple[float, int]] = {}         # pid -> (t, count)
        self.cpu_seen: Dict[int, Tuple[float, float]] = {}       # pid -> (t, cpu seconds)

    def update(self, sample: PoolSample, now: float) -> PoolSample:
        snap = sample.snap
        if snap is None:
            return sample
        accepted, started = int(snap.get("accepted conn", 0)), snap.get("start time")
        before = self.accepted.get(sample.name)
        # A reload starts the counters afresh: no rate across it.
        if before and before[2] == started and now > before[0] and accepted >= before[1]:
            sample.rate = (accepted - before[1]) / (now - before[0])
        self.accepted[sample.name] = (now, accepted, started)
        for proc in snap.get("processes", []):
            pid = proc.get("pid")
            if not pid:
                continue
            count = int(proc.get("requests") or 0)
            seen = self.requests.get(pid)
            if seen and now > seen[0] and count >= seen[1]:
                sample.worker_rates[pid] = (count - seen[1]) / (now - seen[0])
            self.requests[pid] = (now, count)
            cpu = self.cpu_seconds(pid)
            seen_cpu = self.cpu_seen.get(pid)
            if cpu is not None:
                if seen_cpu and now > seen_cpu[0]:
                    sample.cpu[pid] = max(0.0, 100.0 * (cpu - seen_cpu[1]) / (now - seen_cpu[0]))
                self.cpu_seen[pid] = (now, cpu)
        return sample


def sample_pools(pools: List[Any], timeout: float) -> List[PoolSample]:
    """Ask every pool for its full JSON status page."""
    out = []
    for pool in pools:
        try:
            answer = ask_ok(status_endpoint(pool), "json&full", timeout)
            out.append(PoolSample(pool.name, snap=json.loads(answer.body)))
        except ProbeError as e:
            out.append(PoolSample(pool.name, error=str(e)))
        except ValueError as e:
            out.append(PoolSample(pool.name, error="the status page is not JSON: %s" % e))
    return out


# ---- rendering ----------------------------------------------------------------------


def _size(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            return "%.1f%s" % (n / scale, unit)
    return str(n)


def _duration(us: int) -> str:
    s = us / 1e6
    if s < 1:
        return "%dms" % (us // 1000)
    if s < 60:
        return "%.2fs" % s
    return "%dm%02ds" % (s // 60, s % 60)


def _uptime(seconds: Optional[int]) -> str:
    if seconds is None:
        return "-"
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return ("%dd" % d if d else "") + ("%02d:%02d:%02d" % (h, m, s))


def _num(value: Optional[float], fmt: str = "%.1f") -> str:
    return "-" if value is None else fmt % value


WORKER_HEADER = "%7s %-16s %8s %6s %6s %8s %9s  %s" % (
    "PID", "STATE", "REQS", "REQ/S", "CPU%", "PSS", "DURATION", "REQUEST")


def render_pool(sample: PoolSample) -> List[Line]:
    """The lines of one pool: a summary line, then a header and one line per worker."""
    if sample.snap is None:
        return [("pool %s: %s" % (sample.name, sample.error), "pool")]
    s = sample.snap
    queue = s.get("listen queue")
    queue_text = "-" if queue is None else "%d/%s (max %s)" % (
        queue, s.get("listen queue len", "-"), s.get("max listen queue", "-"))
    summary = ("pool %s  %s  up %s  busy %d  idle %d  total %d/%d  queue %s  %s req/s  "
               "accepted %d  max reached %d  slow %d" % (
                   s.get("pool", sample.name), s.get("process manager", "?"),
                   _uptime(s.get("start since")), s.get("active processes", 0),
                   s.get("idle processes", 0), s.get("total processes", 0),
                   s.get("max children", 0), queue_text, _num(sample.rate),
                   s.get("accepted conn", 0), s.get("max children reached", 0),
                   s.get("slow requests", 0)))
    lines: List[Line] = [(summary, "pool"), (WORKER_HEADER, "head")]
    for p in sorted(s.get("processes", []), key=lambda p: p.get("pid") or 0):
        pid = p.get("pid") or 0
        busy = p.get("state") in BUSY_STATES
        request = "-"
        if busy:
            request = "%s %s" % (p.get("request method", "-"), p.get("request uri", ""))
        lines.append(("%7s %-16s %8d %6s %6s %8s %9s  %s" % (
            pid or "-", (p.get("state") or "?")[:16], int(p.get("requests") or 0),
            _num(sample.worker_rates.get(pid)), _num(sample.cpu.get(pid)),
            _size(p.get("pss")), _duration(int(p.get("request duration") or 0)) if busy
            else "-", request), ""))
    return lines


def render(samples: List[PoolSample], source: str, clock: str) -> List[Line]:
    """The whole screen, top to bottom."""
    busy = sum(s.snap.get("active processes", 0) for s in samples if s.snap)
    total = sum(s.snap.get("total processes", 0) for s in samples if s.snap)
    rate = sum(s.rate or 0.0 for s in samples)
    title = "pfm top - %s - %s - %d pool(s), %d/%d workers busy, %.1f req/s - q quits" % (
        clock, source, len(samples), busy, total, rate)
    lines: List[Line] = [(title, "title")]
    for sample in samples:
        lines.append(("", ""))
        lines.extend(render_pool(sample))
    return lines


# ---- the terminal -------------------------------------------------------------------


def _curses_loop(stdscr: Any, frame: Callable[[], List[Line]]) -> None:
    import curses

    try:
        curses.curs_set(0)
    except curses.error:
        pass
    styles = {"title": curses.A_REVERSE, "pool": curses.A_BOLD, "head": curses.A_UNDERLINE,
              "": curses.A_NORMAL}
    stdscr.timeout(100)
    lines: List[Line] = []
    next_refresh = 0.0
    while True:
        now = time.monotonic()
        redraw = False
        if now >= next_refresh:
            lines = frame()
            next_refresh = now + REFRESH
            redraw = True
        key = stdscr.getch()
        if key in (ord("q"), ord("Q"), 27):
            return
        if key == curses.KEY_RESIZE or redraw:
            height, width = stdscr.getmaxyx()
            stdscr.erase()
            for y, (text, style) in enumerate(lines[:height]):
                try:
                    stdscr.addnstr(y, 0, text, max(0, width - 1), styles[style])
                except curses.error:
                    pass
            stdscr.refresh()


def run(config: Any, timeout: float = 1.0, interactive: bool = True) -> int:
    """Refresh every second until q; without a terminal, print one frame
    (taken a second after a first sample, so that it has rates) and exit."""
    pools = list(config.pools)
    tracker = Tracker()
    source = config.path or "(no file)"

    def frame() -> List[Line]:
        now = time.monotonic()
        samples = [tracker.update(s, now) for s in sample_pools(pools, timeout)]
        return render(samples, source, time.strftime("%H:%M:%S"))

    if not interactive:
        frame()
        time.sleep(REFRESH)
        sys.stdout.write("".join(text + "\n" for text, _ in frame()))
        return 0
    import curses

    try:
        curses.wrapper(_curses_loop, frame)
    except KeyboardInterrupt:
        pass
    return 0
