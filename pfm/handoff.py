"""Handing a connection from the pool manager to whichever worker is free.

When every worker is busy, the manager accepts waiting connections itself so
that it can answer the status page and ping (they must work exactly when the
pool is saturated). A connection that turns out to be an ordinary request is
passed on, with the bytes already read from it, over one SOCK_SEQPACKET socket
that all the pool's workers read (EPOLLEXCLUSIVE: one idle worker takes it).
A message is one connection: its descriptor (SCM_RIGHTS) and its bytes.
"""

from __future__ import annotations

import array
import socket

MAX_BYTES = 65536    # what the manager reads before deciding (nginx sends params first);
                     # a message never carries more, so the worker's receive buffer fits it


def pair() -> tuple[socket.socket, socket.socket]:
    """(manager's end, workers' end)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    return ours, theirs


def send(sock: socket.socket, conn: socket.socket, data: bytes) -> bool:
    """False if the hand-off queue is full right now (try again later)."""
    try:
        sock.sendmsg([data or b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", [conn.fileno()]))])
    except BlockingIOError:
        return False
    return True


def receive(sock: socket.socket, family: int):
    """(connection, bytes) or None if another worker took it first."""
    fds = array.array("i")
    try:
        data, ancdata, _flags, _addr = sock.recvmsg(MAX_BYTES, socket.CMSG_LEN(fds.itemsize))
    except BlockingIOError:
        return None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not fds:
        return None
    conn = socket.socket(family, socket.SOCK_STREAM, 0, fds[0])
    conn.setblocking(True)
    return conn, (b"" if data == b"\0" else data)
