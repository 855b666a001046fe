"""catch_workers_output: what a worker prints to stdout or stderr reaches
the error log, one line per line, decorated as php-fpm does:

    WARNING: [pool www] child 123 said into stdout: "text"

The pool manager owns the read ends of each worker's two pipes and calls
`feed()` when one is readable. A line longer than log_limit is wrapped, each
piece repeating the decoration, so no log line is ever longer than the limit.
"""

from __future__ import annotations

import os

from .log import WARNING, timestamp

CHUNK = 4096
_LEVEL_PREFIX_LEN = len("[%s] WARNING: " % timestamp(0))


class WorkerPipes:
    """The two pipes of one worker: made before fork, split after it."""

    def __init__(self):
        self.out_r, self.out_w = os.pipe2(os.O_CLOEXEC)
        try:
            self.err_r, self.err_w = os.pipe2(os.O_CLOEXEC)
        except OSError:
            os.close(self.out_r)      # out of descriptors: leave none behind
            os.close(self.out_w)
            raise

    def close(self) -> None:
        """The fork failed: all four ends go."""
        for fd in (self.out_r, self.out_w, self.err_r, self.err_w):
            os.close(fd)

    def in_child(self) -> None:
        """The worker's fds 1 and 2 become the write ends."""
        os.dup2(self.out_w, 1)
        os.dup2(self.err_w, 2)
        for fd in (self.out_r, self.out_w, self.err_r, self.err_w):
            os.close(fd)

    def in_parent(self) -> tuple[int, int]:
        os.close(self.out_w)
        os.close(self.err_w)
        for fd in (self.out_r, self.err_r):
            os.set_blocking(fd, False)
        return self.out_r, self.err_r


def silence_child_output() -> None:
    """catch_workers_output = no: the worker's stdout and stderr go nowhere (php-fpm)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


class OutputCatcher:
    """Turns the bytes of one worker stream into log lines."""

    def __init__(self, log, pool: str, pid: int, stream: str, decorate: bool):
        self.log = log
        self.prefix = '[pool %s] child %d said into %s: "' % (pool, pid, stream)
        self.decorate = decorate
        self.partial = b""

    def feed(self, fd: int) -> bool:
        """Read what is there; False once the pipe is closed (the worker is gone)."""
        while True:
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                if self.partial:
                    self.emit(self.partial, closed=True)
                    self.partial = b""
                return False
            lines = (self.partial + data).split(b"\n")
            self.partial = lines.pop()
            for line in lines:
                self.emit(line)
            if len(self.partial) >= CHUNK:
                self.emit(self.partial)
                self.partial = b""

    def emit(self, raw: bytes, closed: bool = False) -> None:
        text = raw.decode("utf-8", "backslashreplace").rstrip("\r")
        if not self.decorate:
            for piece in wrap(text, self.log.limit, 0, ""):
                self.log.raw(piece)
            return
        tail = '", pipe is closed' if closed else '"'
        for piece, last in _with_last(wrap(text, self.log.limit, _LEVEL_PREFIX_LEN
                                           + len(self.prefix), tail)):
            self.log.write(WARNING, self.prefix + piece + (tail if last else ""))


def wrap(text: str, limit: int, overhead: int, tail: str) -> list[str]:
    """Split `text` so each piece plus `overhead` fits in `limit`, and the last
    piece fits together with `tail` (php-fpm's log_limit wrapping)."""
    room = max(1, limit - overhead)
    pieces = []
    while len(text) + len(tail) > room:
        pieces.append(text[:room])
        text = text[room:]
    pieces.append(text)
    return pieces


def _with_last(items):
    for i, item in enumerate(items):
        yield item, i == len(items) - 1
