"""Job functions for the job-queue tests. Each run appends one line to a
record file (`token pid time`), in one O_APPEND write, so runs in many
processes can be counted afterwards."""

from __future__ import annotations

import os
import time


def _append(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def record(path: str, token, pause: float = 0.0) -> None:
    """Record, then pause: a window for a kill between the work and its ack."""
    _append(path, "%s %d %.6f\n" % (token, os.getpid(), time.time()))
    if pause:
        time.sleep(pause)


def fail_always(path: str, token) -> None:
    _append(path, "%s %d %.6f\n" % (token, os.getpid(), time.time()))
    raise ValueError("boom %s" % token)


def slow(path: str, token, seconds: float) -> None:
    """Record 'start' and 'end' around a sleep."""
    _append(path, "start-%s %d %.6f\n" % (token, os.getpid(), time.time()))
    time.sleep(seconds)
    _append(path, "end-%s %d %.6f\n" % (token, os.getpid(), time.time()))


def echo(*args, **kwargs):
    return args, kwargs
