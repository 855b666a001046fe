"""request_slowlog_timeout and request_terminate_timeout, watched by the
pool manager from the scoreboard.

Timers run only while a worker is in a request (stage Running, and Finishing
with request_terminate_timeout_track_finished): time spent idle on a kept-alive
connection never counts. The Python stack of a slow or overdue request is
written by the worker itself, from a signal handler (faulthandler), so no
ptrace is needed and the request is never stopped to take it.
"""

from __future__ import annotations

import os
import signal
import time

from .log import timestamp
from .scoreboard import FINISHING, RUNNING

# Real-time signals, out of the way of anything an application or php-fpm uses.
SIG_STACK_TO_SLOWLOG = signal.SIGRTMIN + 1
SIG_STACK_TO_ERRORLOG = signal.SIGRTMIN + 2
KILL_DELAY = 0.1        # between asking for the stack and SIGTERM, to let it be written
MIN_PERIOD = 0.13       # php-fpm's heartbeat floor


def install_stack_dumps(slowlog_fd: int, error_fd: int) -> None:
    """In the worker: the stack of the running request on the two signals."""
    import faulthandler
    if slowlog_fd >= 0:
        faulthandler.register(SIG_STACK_TO_SLOWLOG, file=slowlog_fd, all_threads=False)
    if error_fd >= 0:
        faulthandler.register(SIG_STACK_TO_ERRORLOG, file=error_fd, all_threads=False)


def period(pool) -> float | None:
    """How often to look (php-fpm: a third of the smallest timeout); None: never."""
    timeouts = [t for t in (pool.request_slowlog_timeout, pool.request_terminate_timeout) if t]
    if not timeouts:
        return None
    return max(MIN_PERIOD, min(timeouts) / 3.0)


def describe(state) -> str:
    """php-fpm's `script '...' (request: "GET /x?q")`."""
    query = "?" + state.query if state.query else ""
    return "script '%s' (request: \"%s %s%s\")" % (state.script or "-", state.method or "-",
                                                  state.uri or "-", query)


class RequestWatch:
    def __init__(self, pool, board, log, slowlog_fd: int):
        self.pool = pool
        self.board = board
        self.log = log
        self.slowlog_fd = slowlog_fd
        self.period = period(pool)
        self.next_check = time.monotonic() + self.period if self.period else None
        self.logged: dict[int, float] = {}      # pid -> request_start already slow-logged
        self.killing: dict[int, float] = {}     # pid -> when to send SIGTERM

    def check(self, slots, now: float) -> None:
        """One pass; call when `due()` is."""
        self.kill_due(now)
        if self.next_check is None or now < self.next_check:
            return
        self.next_check = now + self.period
        slow, term = self.pool.request_slowlog_timeout, self.pool.request_terminate_timeout
        stages = (RUNNING, FINISHING) if self.pool.request_terminate_timeout_track_finished \
            else (RUNNING,)
        for s in slots:
            if not s.pid or s.stage not in stages or s.pid in self.killing:
                continue
            elapsed = now - s.request_start
            if slow and s.stage == RUNNING and elapsed >= slow \
                    and self.logged.get(s.pid) != s.request_start:
                self.logged[s.pid] = s.request_start
                self.slow(s, elapsed)
            elif term and elapsed >= term:
                self.terminate(s, elapsed)

    def slow(self, s, elapsed: float) -> None:
        self.log.warning("[pool %s] child %d, %s executing too slow (%.6f sec), logging"
                         % (self.pool.name, s.pid, describe(s), elapsed))
        self.board.note_slow_request()
        self.write_header(s)
        _signal(s.pid, SIG_STACK_TO_SLOWLOG)

    def write_header(self, s) -> None:
        """php-fpm's slowlog entry header (a blank line, the double space),
        the request line; the worker appends its stack right after."""
        header = "\n[%s]  [pool %s] pid %d\nscript_filename = %s\nrequest = %s %s%s\n" % (
            timestamp(), self.pool.name, s.pid, s.script or "-", s.method or "-",
            s.uri or "-", "?" + s.query if s.query else "")
        try:
            os.write(self.slowlog_fd, header.encode("utf-8", "backslashreplace"))
        except OSError as e:
            self.log.error("unable to write slowlog (%s): %s (%d)"
                           % (self.pool.slowlog, e.strerror, e.errno))

    def terminate(self, s, elapsed: float) -> None:
        self.log.warning("[pool %s] child %d, %s execution timed out (%.6f sec), terminating"
                         % (self.pool.name, s.pid, describe(s), elapsed))
        if self.slowlog_fd >= 0:
            self.write_header(s)
            _signal(s.pid, SIG_STACK_TO_SLOWLOG)
        else:
            self.log.warning("[pool %s] child %d stack at the timeout (most recent call "
                             "first) follows" % (self.pool.name, s.pid))
            _signal(s.pid, SIG_STACK_TO_ERRORLOG)
        self.killing[s.pid] = time.monotonic() + KILL_DELAY

    def kill_due(self, now: float) -> None:
        for pid, when in list(self.killing.items()):
            if now >= when:
                _signal(pid, signal.SIGTERM)
                del self.killing[pid]

    def due(self) -> float | None:
        """The next time the manager must call `check`."""
        times = [t for t in [self.next_check, *self.killing.values()] if t is not None]
        return min(times) if times else None

    def forget(self, pid: int) -> None:
        self.logged.pop(pid, None)
        self.killing.pop(pid, None)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
