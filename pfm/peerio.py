"""Reading and writing a web server's connection without letting the peer
hold the worker.

A worker serves one request at a time but watches many connections: the
listening socket, kept-alive connections, and connections whose request is
still arriving. It must never sleep in recv() or send() on one of them while
others are ready, and never for ever. So reads outside a request are
non-blocking (MSG_DONTWAIT: no fcntl per connection) and a request that has
not arrived whole is watched in the worker's epoll (worker.py); the only
blocking calls - the app reading a body still on its way, a response bigger
than the socket buffer - get a timeout set on that socket then, on the slow
path only. The common case, nginx writing a whole request right after
connecting and reading the whole answer, stays one recv(2) and one send(2).

The timeouts are set here, per connection, because an accepted unix-socket
connection inherits none from the listening socket (TCP copies the
listener's SO_RCVTIMEO/SO_SNDTIMEO; AF_UNIX starts with none).
"""

from __future__ import annotations

import math
import select
import socket
import struct
import time

DONTWAIT = socket.MSG_DONTWAIT
RECV_SIZE = 65536      # below malloc's mmap threshold: no mmap/munmap per recv
RECEIVE_TIMEOUT = 5.0  # a new request's params must all come within this (php-fpm
                       # polls a new connection 5 s for its first bytes)
BODY_TIMEOUT = 60.0    # a request body may pause this long (nginx's fastcgi_send_timeout)
SEND_TIMEOUT = 60.0    # the web server may read nothing of our answer this long
                       # (nginx's fastcgi_read_timeout: as long as it waits for us)
LINGER_TIMEOUT = 1.0   # closing, wait this long for the peer's end (nginx closes at once)


class ConnectionLost(Exception):
    """The web server went away in the middle of a request."""


class NotReading(ConnectionLost):
    """The peer does not read what is sent to it: a web server reads its
    answers, so the connection is given up, not the worker."""


def set_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    """SO_RCVTIMEO or SO_SNDTIMEO: a blocking call on `sock` fails with EAGAIN
    after `seconds` without progress."""
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, option,
                    struct.pack("ll", whole, int((seconds - whole) * 1e6)))


def send_all(sock: socket.socket, data) -> None:
    """Send all of `data`: in one send(2) when the socket buffer takes it,
    else blocking with a SEND_TIMEOUT for each stall. NotReading if the
    peer read nothing for that long."""
    try:
        sent = sock.send(data, DONTWAIT)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    set_timeout(sock, socket.SO_SNDTIMEO, SEND_TIMEOUT)
    try:
        sock.sendall(memoryview(data)[sent:])
    except BlockingIOError:
        raise NotReading("read nothing for %.0f seconds" % SEND_TIMEOUT) from None


def send_now(sock: socket.socket, data) -> None:
    """Answers to management records (GET_VALUES, unknown types): whoever
    asks reads them, so they never fill the socket buffer - unless the peer
    floods questions and reads nothing. Then NotReading, without waiting."""
    try:
        sent = sock.send(data, DONTWAIT)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        raise NotReading("the peer does not read the replies")


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """What may still go out before a connection is closed anyway."""
    if data:
        try:
            sock.send(data, DONTWAIT)
        except OSError:
            pass


def shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def linger(sock: socket.socket, timeout: float = LINGER_TIMEOUT) -> None:
    """Close as php-fpm does: half-close, read and discard what the client
    still sends until it closes its side, then close. Closing with bytes left
    unread would reset the connection (TCP) or fail the client's next write
    (unix socket); flup6's client, for one, sends an empty DATA record after
    the body. nginx closes at once on END_REQUEST, so this costs one read; a
    client that never closes is waited for `timeout` at most."""
    deadline = time.monotonic() + timeout
    try:
        sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                if not sock.recv(RECV_SIZE, DONTWAIT):
                    break
                continue
            except BlockingIOError:
                pass
            if not _readable(sock, deadline - time.monotonic()):
                break
    except OSError:
        pass
    sock.close()


def _readable(sock, seconds: float) -> bool:
    """Whether `sock` (a socket or a descriptor) has something to read
    within `seconds`."""
    if seconds <= 0:
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(math.ceil(seconds * 1000)))
