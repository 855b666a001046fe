"""Signals as events for a selectors loop (gunicorn's arbiter, php-fpm's
socketpair): the C-level handler writes the signal number into a pipe, the
loop reads it. No work is done inside a handler."""

from __future__ import annotations

import fcntl
import os
import signal


class SignalPipe:
    def __init__(self, signals):
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, _noop)
            signal.siginterrupt(sig, False)

    def fileno(self) -> int:
        return self.rfd

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


def set_cloexec(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFD)
    fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
