"""Handing a connection from the pool manager to whichever worker is free.

When every worker is busy, the manager accepts waiting connections itself so
that it can answer the status page and ping (they must work exactly when the
pool is saturated). A connection that turns out to be an ordinary request is
passed on, with the bytes already read from it, over one SOCK_SEQPACKET socket
that all the pool's workers read (EPOLLEXCLUSIVE: one idle worker takes it).
A message is one connection: its descriptor (SCM_RIGHTS) and its bytes;
one byte 0 for none (an idle kept-alive connection), no byte at all for a
fresh connection that has sent nothing yet (a receiver of an older pfm takes
that for an idle kept one, so a reload across versions still works).

Descriptors cross processes only through the standard library's
socket.send_fds/recv_fds, here and for a log reopen (logfiles.py).
"""

from __future__ import annotations

import socket

from .scoreboard import Cells

MAX_BYTES = 65536    # what the manager reads before deciding (nginx sends params first);
                     # a message never carries more, so the worker's receive buffer fits it


def adoption_pair() -> tuple[socket.socket, socket.socket]:
    """(send end, receive end) of a pool's adoption socket: a worker that stops
    (pm.max_requests, pm.max_memory, a reload's SIGQUIT) passes its idle
    kept-alive connections here instead of closing them, and another worker
    of the pool - of the next generation after a reload - adopts them. Closing
    a connection nginx keeps for reuse races with nginx sending a request on
    it (nginx answers a POST so cut short with 502); passing it on does not.
    Connections accepted before their request came go the same way, when
    their worker leaves or is about to run another request (worker.py).
    The master makes one per pool name and keeps it across reloads."""
    return pair()


def pair() -> tuple[socket.socket, socket.socket]:
    """(manager's end, workers' end)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    return ours, theirs


def send(sock: socket.socket, conn: socket.socket, data: bytes, fresh: bool = False) -> bool:
    """False if the hand-off queue is full right now (try again later).
    `fresh`: a connection that has not sent anything yet (`data` is empty)."""
    try:
        socket.send_fds(sock, [b"" if fresh else data or b"\0"], [conn.fileno()])
    except BlockingIOError:
        return False
    return True


def receive(sock: socket.socket, family: int):
    """(connection, bytes, fresh) or None if another worker took it first."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_BYTES, 1)
    except BlockingIOError:
        return None
    if not fds:
        return None
    conn = socket.socket(family, socket.SOCK_STREAM, 0, fds[0])
    conn.setblocking(True)
    return conn, (b"" if data == b"\0" else data), not data


class HandoffCounts:
    """How many handed-off connections wait for a worker, for the status
    page's listen queue (they left the kernel's queue but still wait).

    Shared memory with one writer per cell: cell 0 counts what the manager
    sent; cell 1+i what the worker in scoreboard slot i took (the next worker
    in that slot goes on counting from there)."""

    def __init__(self, nslots: int):
        self._cells = Cells(nslots + 1)

    def sent(self) -> None:
        self._cells.add(0)

    def taken(self, slot: int) -> None:
        self._cells.add(slot + 1)

    def waiting(self) -> int:
        sent, *taken = self._cells.values()
        return max(0, sent - sum(taken))
