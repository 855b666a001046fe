"""Signals as events for a selectors loop (gunicorn's arbiter, php-fpm's
socketpair): the C-level handler writes the signal number into a pipe, the
loop reads it. No work is done inside a handler."""

from __future__ import annotations

import os
import signal

# The signals the master and the pool managers take through their pipe; a
# forked child starts with the default action for each.
HANDLED = (signal.SIGCHLD, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT,
           signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


def send(pid: int, sig: int) -> None:
    """kill(2), where a process already gone is not an error: it exited
    (and awaits reaping) between our deciding and signalling."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class SignalPipe:
    def __init__(self, signals):
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        self.signals = tuple(signals)
        for sig in signals:
            signal.signal(sig, _noop)
            signal.siginterrupt(sig, False)

    def fileno(self) -> int:
        return self.rfd

    def reinstall(self) -> None:
        """Take the signals back from an application that changed their
        handlers when it was imported (some libraries ignore SIGTERM)."""
        for sig in self.signals:
            signal.signal(sig, _noop)

    def read(self) -> list[int]:
        """The signals received since the last call, in order."""
        out = []
        while True:
            try:
                data = os.read(self.rfd, 256)
            except BlockingIOError:
                return out
            if not data:
                return out
            out.extend(data)

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


def _noop(signum, frame) -> None:
    pass


_ALL = set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP}


def fork() -> int:
    """fork(2) with every signal blocked across it, as php-fpm does.

    Without this, a signal landing in the child before it set up its own
    handlers would run the parent's handler there, which writes into the
    parent's wakeup pipe (inherited) and makes the parent act on a signal
    that was never sent to it. The child starts with default dispositions and
    signals still blocked; it calls `unblock()` once its own handlers are in.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _ALL)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        raise
    if pid == 0:
        signal.set_wakeup_fd(-1)
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        _saved_mask[:] = [old]
        return 0
    signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return pid


_saved_mask: list = []


def unblock() -> None:
    """In a child made by `fork()`: restore the signal mask it was forked with."""
    if _saved_mask:
        signal.pthread_sigmask(signal.SIG_SETMASK, _saved_mask.pop())

