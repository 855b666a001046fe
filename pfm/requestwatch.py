"""request_slowlog_timeout and request_terminate_timeout, watched by the
pool manager from the scoreboard.

Timers run only while a worker is in a request (stage Running, and Finishing
with request_terminate_timeout_track_finished): time spent idle on a kept-alive
connection never counts. The Python stack of a slow or overdue request is
written by the worker itself, from a signal handler (faulthandler), so no
ptrace is needed and the request is never stopped to take it.

An overdue request is ended once: one log line, one stack, SIGTERM, and
SIGKILL a second later if the request still runs (an app may ignore SIGTERM;
php-fpm's own stop escalates the same way).

A worker bounds the stages before Running itself (a request still arriving
is never waited on alone, worker.Parked), also by request_terminate_timeout.
"""

from __future__ import annotations

import os
import signal

from .log import timestamp
from .scoreboard import FINISHING, RUNNING

# Real-time signals, out of the way of anything an application or php-fpm uses.
SIG_STACK_TO_SLOWLOG = signal.SIGRTMIN + 1
SIG_STACK_TO_ERRORLOG = signal.SIGRTMIN + 2
KILL_DELAY = 0.2        # between asking for the stack and SIGTERM, to let it be written
KILL_GRACE = 1.0        # SIGTERM unheeded this long: SIGKILL (php-fpm: a second after TERM)
MIN_PERIOD = 0.13       # php-fpm's heartbeat floor


def install_stack_dumps(worker, slowlog_fd: int, error_fd: int, depth: int) -> None:
    """In the worker: on SIG_STACK_TO_*, write the running request's entry
    (php-fpm's slowlog header and the Python stack, innermost first) to the
    slowlog or the error log in one write(2), so entries from several workers
    never interleave. The handler runs between two bytecodes of the app: the
    request goes on as soon as the entry is written."""
    def dump(fd: int):
        def handler(signum, frame) -> None:
            if fd >= 0:
                try:
                    os.write(fd, stack_entry(worker, frame, depth).encode("utf-8", "replace"))
                except OSError:
                    pass
        return handler
    signal.signal(SIG_STACK_TO_SLOWLOG, dump(slowlog_fd))
    signal.signal(SIG_STACK_TO_ERRORLOG, dump(error_fd))


def stack_entry(worker, frame, depth: int) -> str:
    """php-fpm's slowlog entry with a Python stack. pfm's own frames (the
    worker around the app call) are left out: the stack ends at the app."""
    params = worker.current_params or {}
    query = params.get("QUERY_STRING", "")
    lines = ["", "[%s]  [pool %s] pid %d" % (timestamp(), worker.name, worker.pid),
             "script_filename = %s" % (params.get("SCRIPT_FILENAME") or worker.app_spec),
             "request = %s %s%s" % (params.get("REQUEST_METHOD", "-"),
                                    params.get("SCRIPT_NAME", "-"),
                                    "?" + query if query else "")]
    frames = []
    while frame is not None and len(frames) < depth:
        code = frame.f_code
        if code.co_filename.startswith(_PFM_DIR) and code.co_name in _PFM_BOUNDARY:
            break
        frames.append("[0x%016x] %s() %s:%d" % (id(frame), code.co_name, code.co_filename,
                                                 frame.f_lineno))
        frame = frame.f_back
    if not frames:
        frames.append("+++ no Python frame of the application is running")
    return "\n".join(lines + frames) + "\n"


_PFM_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_PFM_BOUNDARY = frozenset({"call_app", "handle", "serve", "run", "retire"})


def period(pool) -> float | None:
    """How often to look (php-fpm: a third of the smallest timeout); None: never."""
    timeouts = [t for t in (pool.request_slowlog_timeout, pool.request_terminate_timeout) if t]
    if not timeouts:
        return None
    return max(MIN_PERIOD, min(timeouts) / 3.0)


def describe(state, pool) -> str:
    """php-fpm's `script '...' (request: "GET /x?q")`; the script is the app."""
    query = "?" + state.query if state.query else ""
    return "script '%s' (request: \"%s %s%s\")" % (state.script or pool.app, state.method or "-",
                                                  state.uri or "-", query)


class Ending:
    """An overdue request being ended: SIGTERM at `term_at`, SIGKILL at
    `kill_at` - while the same request (its start time) still runs."""

    __slots__ = ("request_start", "term_at", "kill_at", "sent")

    def __init__(self, request_start: float, now: float):
        self.request_start = request_start
        self.term_at = now + KILL_DELAY
        self.kill_at = self.term_at + KILL_GRACE
        self.sent = 0               # the last signal sent (0: none yet)

    def due(self) -> float | None:
        if self.sent == 0:
            return self.term_at
        return self.kill_at if self.sent == signal.SIGTERM else None


class RequestWatch:
    def __init__(self, pool, board, log, slowlog_fd: int, system):
        self.pool = pool
        self.board = board
        self.log = log
        self.slowlog_fd = slowlog_fd
        self.system = system        # system.System: the signals go through it
        self.period = period(pool)
        now = system.monotonic()
        self.next_check = now + self.period if self.period else None
        self.logged: dict[int, float] = {}      # pid -> request_start already slow-logged
        self.ending: dict[int, Ending] = {}     # pid -> its overdue request, until reaped
        self.stages = (RUNNING, FINISHING) if pool.request_terminate_timeout_track_finished \
            else (RUNNING,)

    def check(self, slots, now: float) -> None:
        """One pass; call when `due()` is."""
        if self.ending:
            self.end_overdue(slots, now)
        if self.next_check is None or now < self.next_check:
            return
        self.next_check = now + self.period
        slow, term = self.pool.request_slowlog_timeout, self.pool.request_terminate_timeout
        for s in slots:
            if not s.pid or s.stage not in self.stages or s.pid in self.ending:
                continue
            elapsed = now - s.request_start
            if slow and s.stage == RUNNING and elapsed >= slow \
                    and self.logged.get(s.pid) != s.request_start:
                self.logged[s.pid] = s.request_start
                self.slow(s, elapsed)
            elif term and elapsed >= term:
                self.terminate(s, elapsed, now)

    def slow(self, s, elapsed: float) -> None:
        self.log.warning("[pool %s] child %d, %s executing too slow (%.6f sec), logging"
                         % (self.pool.name, s.pid, describe(s, self.pool), elapsed))
        self.board.note_slow_request()
        self.system.kill(s.pid, SIG_STACK_TO_SLOWLOG)

    def terminate(self, s, elapsed: float, now: float) -> None:
        """The stack first (to the slowlog, else the error log), SIGTERM a
        moment later, SIGKILL if that is not enough: logged once."""
        self.log.warning("[pool %s] child %d, %s execution timed out (%.6f sec), terminating"
                         % (self.pool.name, s.pid, describe(s, self.pool), elapsed))
        self.system.kill(s.pid, SIG_STACK_TO_SLOWLOG if self.slowlog_fd >= 0
                         else SIG_STACK_TO_ERRORLOG)
        self.ending[s.pid] = Ending(s.request_start, now)

    def end_overdue(self, slots, now: float) -> None:
        """Send what is due to the overdue requests that still run. One that
        ended meanwhile (its worker ignored SIGTERM but finished) is let be."""
        running = {s.pid: s.request_start for s in slots if s.stage in self.stages}
        for pid, ending in list(self.ending.items()):
            if running.get(pid) != ending.request_start:
                del self.ending[pid]
            elif ending.sent == 0 and now >= ending.term_at:
                ending.sent = signal.SIGTERM
                self.system.kill(pid, signal.SIGTERM)
            elif ending.sent == signal.SIGTERM and now >= ending.kill_at:
                ending.sent = signal.SIGKILL
                self.system.kill(pid, signal.SIGKILL)

    def due(self) -> float | None:
        """The next time the manager must call `check`."""
        times = [t for t in [self.next_check, *(e.due() for e in self.ending.values())]
                 if t is not None]
        return min(times) if times else None

    def forget(self, pid: int) -> None:
        self.logged.pop(pid, None)
        self.ending.pop(pid, None)

