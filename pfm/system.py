"""The OS seam of pfm's process loops (supervisor's `options` object).

The master, the pool manager, the stop ladder and the request watch fork,
signal, reap, wait and read the clock only through a `System`, so a test
can hand them a fake one (tests/fakesystem.py: a clock it advances and
children it makes exit) and drive them turn by turn, without a process or a
sleep. Descriptors stay real: a fake system waits on them without blocking.
"""

from __future__ import annotations

import os
import select
import time
from typing import Callable, Iterator

from . import signals
from .signals import SignalPipe

READ = select.EPOLLIN


class Poller:
    """The descriptors that wake a loop, each with its handler (epoll)."""

    def __init__(self):
        self.epoll = select.epoll()
        self.handlers: dict[int, Callable] = {}

    def watch(self, fd: int, handler: Callable, events: int = READ) -> None:
        self.epoll.register(fd, events)
        self.handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        self.handlers.pop(fd, None)
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass        # closed already, or never watched

    def modify(self, fd: int, events: int) -> None:
        self.epoll.modify(fd, events)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        """(fd, events) of every descriptor ready within `timeout`. Look its
        handler up when its turn comes: an earlier one may have unwatched it."""
        return self.epoll.poll(timeout)

    def close(self) -> None:
        self.epoll.close()


class System:
    """What the loops ask of the operating system."""

    def fork(self) -> int:
        return signals.fork()

    def kill(self, pid: int, sig: int) -> None:
        """Signal `pid`; one that is gone already is not an error."""
        signals.send(pid, sig)

    def killpg(self, pgid: int, sig: int) -> None:
        """Signal a process group; one that is empty, or not ours to
        signal, is not an error."""
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass

    def reaped(self) -> Iterator[tuple[int, int]]:
        """(pid, wait status) of every child that has exited, without blocking."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            yield pid, status

    def pipe(self, flags: int = os.O_CLOEXEC) -> tuple[int, int]:
        return os.pipe2(flags)

    def signal_pipe(self, sigs=signals.HANDLED) -> SignalPipe:
        return SignalPipe(sigs)

    def poller(self) -> Poller:
        return Poller()

    def wait(self, poller: Poller, timeout: float) -> list[tuple[int, int]]:
        """Block until a watched descriptor is ready or `timeout` passed."""
        return poller.poll(timeout)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def time(self) -> float:
        return time.time()

    def getpid(self) -> int:
        return os.getpid()
