"""The log files a pool writes (access.log, slowlog) and how a reopen reaches
processes that cannot open them themselves.

The master opens every file as root before anything forks; pool managers and
workers only inherit descriptors. On SIGUSR1 the master reopens the files and
hands the new descriptors to each pool manager over a unix socket
(SCM_RIGHTS); the manager puts them in place of the old ones (dup2, same
numbers) and replaces its workers, which inherit the new files. A pool whose
user may not open the master's log files still logs after logrotate.
"""

from __future__ import annotations

import os
import socket

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def open_append(path: str) -> int:
    return os.open(path, _FLAGS, 0o600)


class PoolFiles:
    """The descriptors of one pool's own log files (-1 where not configured)."""

    __slots__ = ("access_path", "slowlog_path", "access_fd", "slowlog_fd")

    def __init__(self, pool):
        self.access_path = pool.access_log
        self.slowlog_path = pool.slowlog
        self.access_fd = open_append(self.access_path) if self.access_path else -1
        self.slowlog_fd = open_append(self.slowlog_path) if self.slowlog_path else -1

    def reopen(self) -> list[int]:
        """Fresh descriptors for the same paths (the master's side of USR1).
        All or nothing: raises OSError (naming the file) with none left open."""
        fresh = []
        try:
            for path in (self.access_path, self.slowlog_path):
                if path:
                    fresh.append(open_append(path))
        except OSError:
            for fd in fresh:
                os.close(fd)
            raise
        return fresh

    def targets(self, error_log_fd: int) -> list[int]:
        """The descriptor numbers a reopen replaces, in `reopen()` order after the error log."""
        return [fd for fd in (error_log_fd, self.access_fd, self.slowlog_fd) if fd >= 0]

    def close(self) -> None:
        for fd in (self.access_fd, self.slowlog_fd):
            if fd >= 0:
                os.close(fd)


def send_fds(sock: socket.socket, message: bytes, fds: list[int]) -> None:
    """The master's side of a reopen: `message` and the fresh descriptors."""
    socket.send_fds(sock, [message], fds)


def recv_fds(sock: socket.socket, maxfds: int = 8) -> tuple[bytes, list[int]]:
    """The pool manager's side: (message, descriptors)."""
    msg, fds, _flags, _addr = socket.recv_fds(sock, 256, maxfds)
    return msg, fds


def install(fresh: list[int], targets: list[int]) -> None:
    """Put each fresh descriptor in place of the old one, keeping its number."""
    for new, old in zip(fresh, targets):
        os.dup2(new, old, inheritable=False)
        os.close(new)
    for extra in fresh[len(targets):]:
        os.close(extra)
