"""The pool manager's desk: it answers the status page and ping while every
worker is busy.

php-fpm serves its status page from a worker, so it goes dark exactly when
the pool is saturated. Here a worker that gets a status or ping request
answers it itself (statussource.answer), and when no worker is idle the
manager accepts the waiting connections itself: it answers status and ping
from the same source, and hands every other request to the next free worker
with the bytes it already read (handoff.py). The desk also serves
pm.status_listen.
"""

from __future__ import annotations

import socket
import time
from typing import Callable, Protocol

from . import fastcgi, handoff
from .fastcgi import NEED_DATA, Request, StdinEnd
from .peerio import RECEIVE_TIMEOUT
from .scoreboard import STARTING
from .statussource import answer
from .wsgi import header_block

MAX_HELD = 64           # connections the desk holds at once while the pool is saturated
READ_TIMEOUT = RECEIVE_TIMEOUT   # a connection that sends no complete request in this
                                # long is dropped, as a worker does
_NOT_FOUND = ("404 Not Found", [("Content-Type", "text/plain")], b"File not found.\n")


def response_bytes(rid: int, response) -> bytes:
    code, headers, body = response
    return fastcgi.stdout(rid, header_block(code, headers) + body) + fastcgi.end_request(rid)


class Held:
    """A connection the desk accepted and reads without blocking."""

    __slots__ = ("sock", "conn", "raw", "since", "from_pool", "request")

    def __init__(self, sock: socket.socket, from_pool: bool, max_params: int):
        self.sock = sock
        self.conn = fastcgi.ServerConnection(max_params)
        self.raw = bytearray()
        self.since = time.monotonic()
        self.from_pool = from_pool
        self.request: Request | None = None


class Watcher(Protocol):
    """What the desk needs of the manager's event loop."""

    def watch(self, fd: int, handler: Callable[[int, int], None]) -> None: ...

    def unwatch(self, fd: int) -> None: ...


class StatusDesk:
    """Built by keyword with only what it uses: the loop to watch descriptors
    on (`io`), the pool's scoreboard, listening socket (sockets.Listener),
    log and config, and pm.status_listen's Listener (None without one)."""

    def __init__(self, *, io: Watcher, board, listener, log, pool, status_listener=None):
        self.io = io
        self.board = board
        self.listener = listener
        self.log = log
        self.pool = pool
        self.intercepts = bool(pool.pm_status_path or pool.ping_path)
        self.ours = self.handoff_for_workers = self.counts = None
        if self.intercepts:
            self.ours, self.handoff_for_workers = handoff.pair()
            self.counts = handoff.HandoffCounts(board.nslots)
        self.held: dict[int, Held] = {}
        self.waiting_handoff: list[Held] = []
        self.status_listener = status_listener
        if status_listener is not None:
            status_listener.sock.setblocking(False)
            io.watch(status_listener.fileno(), self.on_status_listen)

    # -- accepting ------------------------------------------------------------

    def intercept(self) -> None:
        """Every worker is busy and connections wait: take them off the queue.
        Not while none of the pool's workers has booted: a generation whose
        workers still import the app (a reload's new one, which may never
        serve) leaves the connections to the workers already serving on
        the same socket."""
        if not any(s.pid and s.stage != STARTING for s in self.board.read()):
            return
        lsock = self.listener.sock
        while len(self.held) + len(self.waiting_handoff) < MAX_HELD:
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.hold(sock, from_pool=True)

    def on_status_listen(self, fd: int, events: int) -> None:
        while len(self.held) < MAX_HELD:
            try:
                sock, _addr = self.status_listener.sock.accept()
            except OSError:
                return
            self.hold(sock, from_pool=False)

    def hold(self, sock: socket.socket, from_pool: bool) -> None:
        sock.setblocking(False)
        held = Held(sock, from_pool, self.pool.max_params_bytes)
        self.held[sock.fileno()] = held
        self.io.watch(sock.fileno(), self.on_readable)
        self.on_readable(sock.fileno(), 0)

    # -- reading and answering ------------------------------------------------------

    def on_readable(self, fd: int, events: int) -> None:
        held = self.held.get(fd)
        if held is None:
            return
        room = handoff.MAX_BYTES - len(held.raw)
        if room <= 0:
            # A hand-off message holds at most MAX_BYTES: the worker reads the rest.
            self.pass_on(held)
            return
        try:
            data = held.sock.recv(room)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop(held)
            return
        held.raw += data
        held.conn.receive_data(data)
        try:
            self.advance(held)
        except fastcgi.RemoteProtocolError as e:
            self.log.warning("[pool %s] closing connection: malformed FastCGI input: %s"
                             % (self.pool.name, e))
            self.drop(held)

    def advance(self, held: Held) -> None:
        while True:
            event = held.conn.next_event()
            if event is NEED_DATA:
                if held.request is not None and held.from_pool \
                        and not self.is_ours(held.request):
                    self.pass_on(held)
                return
            if event is fastcgi.CLOSED:
                self.drop(held)
                return
            if type(event) is Request:
                held.request = event
                if held.from_pool and not self.is_ours(event):
                    self.pass_on(held)
                    return
            elif type(event) is StdinEnd and held.request is not None:
                self.respond(held)
                return

    def is_ours(self, request: Request) -> bool:
        script = request.params.get("SCRIPT_NAME")
        return script is not None and script in (self.pool.pm_status_path, self.pool.ping_path)

    def respond(self, held: Held) -> None:
        request = held.request
        reply = answer(self.pool, self.board, self.listener.sock, request.params,
                       status_anywhere=not held.from_pool,
                       held=self.still_waiting(held)) or _NOT_FOUND
        try:
            held.sock.setblocking(True)
            held.sock.settimeout(1.0)
            held.sock.sendall(response_bytes(request.request_id, reply))
        except OSError:
            pass
        self.drop(held)

    def still_waiting(self, asking: Held | None = None) -> int:
        """Connections taken off the kernel's listen queue that no worker has
        yet: they still count in the status page's listen queue."""
        held = sum(h.from_pool and h is not asking for h in self.held.values())
        sent = self.counts.waiting() if self.counts is not None else 0
        return held + len(self.waiting_handoff) + sent

    def pass_on(self, held: Held) -> None:
        """An ordinary request: to the next free worker, with what was read."""
        self.forget(held)
        if not handoff.send(self.ours, held.sock, bytes(held.raw)):
            self.waiting_handoff.append(held)
            return
        self.counts.sent()
        held.sock.close()

    def forget(self, held: Held) -> None:
        fd = held.sock.fileno()
        self.held.pop(fd, None)
        self.io.unwatch(fd)

    def drop(self, held: Held) -> None:
        self.forget(held)
        held.sock.close()

    # -- housekeeping ----------------------------------------------------------

    def tick(self, now: float) -> None:
        while self.waiting_handoff:
            held = self.waiting_handoff[0]
            if not handoff.send(self.ours, held.sock, bytes(held.raw)):
                break
            self.counts.sent()
            self.waiting_handoff.pop(0)
            held.sock.close()
        for held in list(self.held.values()):
            if now - held.since > READ_TIMEOUT:
                self.drop(held)

    def due(self) -> float | None:
        times = [h.since + READ_TIMEOUT for h in self.held.values()]
        if self.waiting_handoff:
            times.append(time.monotonic() + 0.05)
        return min(times) if times else None

    def in_child(self) -> None:
        """In a new worker: only the workers' end of the hand-off stays."""
        for held in list(self.held.values()) + self.waiting_handoff:
            held.sock.close()
        if self.ours is not None:
            self.ours.close()
        if self.status_listener is not None:
            self.io.unwatch(self.status_listener.fileno())
            self.status_listener.sock.close()

    def close(self, adoption=None) -> None:
        """The pool's last worker has exited. Connections taken off the
        listen queue and not served yet - held here, or waiting in the
        hand-off socket for a worker that will never take them - go to the
        pool's `adoption` socket pair with what was read of them: after a
        reload the next generation serves them (closed, they would fail
        unanswered). Only what cannot be passed on is closed."""
        leftovers = [(h.sock, bytes(h.raw)) for h in self.held.values() if h.from_pool]
        leftovers += [(h.sock, bytes(h.raw)) for h in self.waiting_handoff]
        while self.handoff_for_workers is not None:
            got = handoff.receive(self.handoff_for_workers, self.listener.sock.family)
            if got is None:
                break
            leftovers.append(got[:2])
        for sock, data in leftovers:
            if adoption is not None:
                handoff.send(adoption[0], sock, data, fresh=not data)
            sock.close()
        for held in self.held.values():
            held.sock.close()
        self.held.clear()
        self.waiting_handoff.clear()
