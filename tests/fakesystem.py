"""A fake `pfm.system.System`: a clock the test advances and children the
test makes exit, so the master, the pool manager, the stop ladder and the
request watch run turn by turn without a process or a sleep.

Descriptors stay real (pipes, socket pairs, scoreboards): waiting on them
never blocks, and when none is ready the clock jumps by the whole timeout,
as if the loop had slept through it.

Fake pids start above the largest pid_max Linux allows (2**22), so a signal
that reached the real kernel by mistake could never hit a real process.
"""

from __future__ import annotations

import os

from pfm.system import Poller

FIRST_PID = 5_000_000
T0 = 1000.0


class FakeSignalPipe:
    """The loop's signal pipe; `FakeSystem.deliver(sig)` writes to it."""

    def __init__(self):
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self.rfd

    def reinstall(self) -> None:
        pass

    def read(self) -> list[int]:
        try:
            return list(os.read(self.rfd, 256))
        except BlockingIOError:
            return []

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class FakeSystem:
    def __init__(self, now: float = T0):
        self.now = now
        self.next_pid = FIRST_PID
        self.forked: list[int] = []         # every fake child, in order
        self.forked_at: dict[int, float] = {}
        self.exited_at: dict[int, float] = {}
        self.alive: set[int] = set()
        self.exits: list[tuple[int, int]] = []    # (pid, wait status) not reaped yet
        self.sent: list[tuple[int, int]] = []     # (pid, signal), in order
        self.sent_at: list[tuple[float, int, int]] = []   # (time, pid, signal)
        self.sigpipes: list[FakeSignalPipe] = []
        self.waits: list[float] = []        # the timeouts the loop waited with

    # ---- what the test does -------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def exit(self, pid: int, code: int = 0) -> None:
        """The child `pid` exits with `code`."""
        self.alive.discard(pid)
        self.exited_at[pid] = self.now
        self.exits.append((pid, code << 8))

    def kill_by(self, pid: int, sig: int) -> None:
        """The child `pid` dies of signal `sig`."""
        self.alive.discard(pid)
        self.exited_at[pid] = self.now
        self.exits.append((pid, sig))

    def deliver(self, sig: int) -> None:
        """The loop's process receives `sig`."""
        os.write(self.sigpipes[-1].wfd, bytes([sig]))

    def signals_to(self, pid: int) -> list[int]:
        return [sig for p, sig in self.sent if p == pid]

    def run(self, loop, until, turns: int = 1000) -> None:
        """Turn `loop` (a Master or a PoolManager) as its run() would,
        until `until()` is true; fails if it never gets there."""
        for _ in range(turns):
            if until():
                return
            loop.step(loop.timeout())
        raise AssertionError("not reached in %d turns (clock at %.3f)" % (turns, self.now))

    def close(self) -> None:
        for pipe in self.sigpipes:
            pipe.close()

    # ---- the System interface -------------------------------------------------

    def fork(self) -> int:
        pid = self.next_pid
        self.next_pid += 1
        self.forked.append(pid)
        self.forked_at[pid] = self.now
        self.alive.add(pid)
        return pid

    def kill(self, pid: int, sig: int) -> None:
        self.sent.append((pid, sig))
        self.sent_at.append((self.now, pid, sig))

    def killpg(self, pgid: int, sig: int) -> None:
        """Recorded as kill(2) writes it: the group as a negative pid."""
        self.kill(-pgid, sig)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def reaped(self):
        while self.exits:
            yield self.exits.pop(0)

    def pipe(self, flags: int = os.O_CLOEXEC) -> tuple[int, int]:
        return os.pipe2(flags)

    def signal_pipe(self, sigs=()) -> FakeSignalPipe:
        pipe = FakeSignalPipe()
        self.sigpipes.append(pipe)
        return pipe

    def poller(self) -> Poller:
        return Poller()

    def wait(self, poller: Poller, timeout: float) -> list[tuple[int, int]]:
        self.waits.append(timeout)
        ready = poller.poll(0)
        if not ready and not self.exits:
            self.advance(max(0.0, timeout))
        return ready

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1.7e9 + self.now

    def getpid(self) -> int:
        return 4_999_999

