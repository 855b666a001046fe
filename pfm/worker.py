"""A worker process: accepts connections on the pool's listening socket and
serves one request at a time, FastCGI in, WSGI call, FastCGI out.

The hot path is accept -> recv -> parse -> environ -> app -> send. A small
response and its END_REQUEST leave in one send(2).

A worker never waits on one connection while others may be ready: a
connection whose request has not all arrived (no data yet, params cut in
two, a small body still coming) is parked in the worker's epoll beside the
listening socket and the kept-alive connections, with a deadline, and served
once its request is there (peerio.py reads and writes without blocking).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import os
import random
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback

from . import fastcgi, handoff, procutil, signals
from .accesslog import Entry, compile_format
from .fastcgi import NEED_DATA, Abort, Request, StdinData, StdinEnd
from .handoff import receive
from .peerio import (
    BODY_TIMEOUT,
    DONTWAIT,
    RECEIVE_TIMEOUT,
    RECV_SIZE,
    ConnectionLost,
    NotReading,
    linger,
    send_all,
    send_now,
    send_quietly,
    set_timeout,
    shutdown_write,
)
from .pool import max_requests_for_worker
from .requestwatch import install_stack_dumps
from .scoreboard import FINISHING, IDLE, KEEPALIVE, READING, RETIRING
from .statussource import answer, current_rss
from .wsgi import (
    ErrorStream,
    InputStream,
    base_environ,
    check_headers,
    content_length,
    header_block,
    make_environ,
    reraise,
)

# What serve() wants done with a connection.
KEEP, LINGER, DROP, WAIT = "keep", "linger", "drop", "wait"
DEFERRED_CLOSE_WAIT = 1.0    # an idle worker closes its half-closed connections after this
READ_AHEAD = 65536           # body bytes read before the app runs (see Parked)
YIELD_READS = 64             # reads from one connection with no request before others' turn
EXIT_GRACE = 1.0             # stopping, a parked connection that sent nothing gets this long
MAX_PARKED = 64              # connections a worker watches for their request at most
                             # (the desk's MAX_HELD): fds and read-ahead stay bounded

_EXCLUSIVE = select.EPOLLIN | select.EPOLLEXCLUSIVE
_ACCEPT_AGAIN = (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR, errno.EPROTO)
_NO_FDS = (errno.EMFILE, errno.ENFILE)
_INTERNAL_ERROR = (b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"
                   b"Internal Server Error\n")
_BAD_REQUEST = ("400 Bad Request", [("Content-Type", "text/plain")], b"Bad Request\n")


class _Shutdown(BaseException):
    """Raised from the SIGQUIT handler while the worker waits for work."""


class Parked:
    """A connection whose request has not all arrived, watched in the
    worker's epoll with the others until it has: its params, and its body
    up to the end or READ_AHEAD bytes (so a small body that stalls holds no
    worker either; a bigger one streams to the app as it comes).

    Deadlines (php-fpm bounds these stages by request_terminate_timeout; its
    worker blocks in read() meanwhile): the params must all come within
    RECEIVE_TIMEOUT of the first wait, however the bytes trickle; a body may
    pause BODY_TIMEOUT at a time; request_terminate_timeout, if set, bounds
    the whole wait."""

    __slots__ = ("sock", "conn", "served", "heard", "request", "body", "size", "since",
                 "progress", "deadline", "adopted")

    def __init__(self, sock: socket.socket, conn, served: bool, now: float):
        self.sock = sock
        self.conn = conn
        self.served = served        # it carried a request before (kept alive)
        self.heard = False          # it sent something
        self.request: Request | None = None
        self.body: list | None = None   # the body read ahead so far
        self.size = 0
        self.since = now            # the first wait
        self.progress = now         # the last wait that followed new bytes
        self.deadline = now
        self.adopted = False        # passed on by another worker (it stays here now)

    def plan(self, now: float, terminate: float) -> None:
        """Set the deadline of the wait that begins `now`."""
        if self.request is None:
            deadline = self.since + RECEIVE_TIMEOUT
        else:
            deadline = now + BODY_TIMEOUT
        if terminate:
            deadline = min(deadline, self.since + terminate)
        self.deadline = deadline

    def why_closed(self) -> str:
        if self.request is not None:
            return "request body stalled for %.0f seconds" % (self.deadline - self.progress)
        limit = self.deadline - self.since
        if self.heard or self.served:
            return "no complete request in %g seconds" % limit
        return "no data for %g seconds" % limit


class Worker:
    """One process, one request at a time. Nothing here is shared with other
    workers; the module-level state of the app lives in this process only."""

    def __init__(self, pool, listener, log, app, files=None, handoff=None, slot=None,
                 retire_fd: int = -1, board=None, handoff_counts=None, adoption=None):
        self.pool = pool
        self.name = pool.name
        self.listen_sock = listener.sock
        self.log = log
        self.app = app
        self.pid = os.getpid()
        self.requests = 0
        self.max_requests = max_requests_for_worker(pool, random.Random(self.pid))
        self.max_memory = pool.pm_max_memory or 0
        self.retire_reason: str | None = None
        self.cpu_used = 0.0          # user+system CPU seconds when the request began
        # Per-request CPU and memory only feed the status page: skip the syscall without one.
        self.measure = bool(pool.pm_status_path or pool.pm_status_listen)
        self.retire_fd = retire_fd
        self.max_params_bytes = pool.max_params_bytes
        # ping.path and pm.status_path are answered from the scoreboard, never by the app.
        self.special_paths = {p for p in (pool.ping_path, pool.pm_status_path) if p}
        self.board = board
        self.current_params: dict | None = None   # the request being served (for its stack)
        self.app_spec = pool.app
        self.slot = slot if slot is not None else _NoSlot()
        self.stopping = False
        self.interruptible = False   # True while blocked waiting for a new request
        self.prefix = "[pool %s] child %d" % (self.name, self.pid)
        self.kept: dict[int, tuple[socket.socket, object]] = {}   # idle kept-alive connections
        self.parked: dict[int, Parked] = {}   # connections whose request is still arriving
        self.showing_reading = False          # the slot says "Reading headers" for them
        self.terminate = pool.request_terminate_timeout or 0
        self.answered = False        # the last request's response went out complete
        self.deferred: list[socket.socket] = []   # half-closed, closed at the next wakeup
        self.handoff = handoff      # the pool's hand-off socket, shared by its workers
        self.handoff_counts = handoff_counts
        self.adoption = adoption    # (send, receive): idle kept connections between workers
        self.slot_index = slot.index if slot is not None else -1
        self.errors = ErrorStream(self._said_into_stderr)
        self.access_fd = files.access_fd if files is not None else -1
        self.access_format = compile_format(pool.access_format) if self.access_fd >= 0 else None
        self.base = base_environ(self.name, self.errors)

    # ---- process setup -------------------------------------------------

    def install_signals(self) -> None:
        """php-fpm's worker dispositions: QUIT finishes the current request,
        TERM/INT/USR1/USR2 kill at once, PIPE is ignored."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2,
                    signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signals.unblock()

    def _on_quit(self, signum, frame) -> None:
        self.stopping = True
        # Swap the listening descriptor for an unbound socket: a blocked or
        # later accept() fails at once, and the pool's socket stays open in the
        # other processes, so no queued connection is lost.
        try:
            dummy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            os.dup2(dummy.fileno(), self.listen_sock.fileno())
            dummy.close()
        except OSError:
            pass
        if self.interruptible:
            raise _Shutdown()

    # ---- the accept loop -------------------------------------------------

    def run(self) -> int:
        """Wait on the listening socket, the pool's hand-off socket, the
        kept-alive connections and the parked ones (a request still arriving)
        together, and serve whichever is ready.

        A worker that blocked on one connection (php-fpm) would leave new
        connections waiting in the backlog while it could serve them, for as
        long as that peer pleased. The shared sockets are registered with
        EPOLLEXCLUSIVE, so each new connection wakes one idle worker, not all
        of them.
        """
        lsock = self.listen_sock
        self.lfd = lsock.fileno()
        lsock.setblocking(False)   # shared by the pool: accept() never blocks a worker
        self.allowed = self.allowed_clients()
        self.epoll = epoll = select.epoll()
        epoll.register(self.lfd, _EXCLUSIVE)
        self.hfd = self.afd = -1
        if self.handoff is not None:
            self.hfd = self.handoff.fileno()
            epoll.register(self.hfd, _EXCLUSIVE)
        if self.adoption is not None:
            self.afd = self.adoption[1].fileno()
            epoll.register(self.afd, _EXCLUSIVE)
        kept = self.kept
        requeue = False
        try:
            while not (self.stopping or self.retire_reason):
                ready = epoll.poll(0)
                if not ready:
                    # About to sleep: first go to the back of the queue of idle
                    # workers, so new connections go round them as with php-fpm's
                    # blocking accept(). A busy pool never gets here and pays nothing.
                    if requeue:
                        requeue = False
                        self.requeue(epoll)
                    timeout = DEFERRED_CLOSE_WAIT if self.deferred else -1
                    if self.parked:
                        timeout = self.await_parked(timeout)
                    self.interruptible = True
                    try:
                        ready = epoll.poll(timeout)
                    finally:
                        self.interruptible = False
                if self.deferred:
                    self.close_deferred()
                if len(ready) > 1:
                    # Connections the manager already holds waited longest: first;
                    # then ours (a parked request whose rest came), new ones last.
                    ready.sort(key=self.turn)
                for fd, _ in ready:
                    served = self.take(fd)
                    if served is None:
                        continue
                    sock, conn, outcome = served
                    if outcome is KEEP:
                        cfd = sock.fileno()
                        kept[cfd] = (sock, conn)
                        if cfd != fd:       # new here; a watched one stays registered
                            epoll.register(cfd, select.EPOLLIN)
                    elif outcome is LINGER:
                        if sock.fileno() == fd:
                            # Watched: its trailing bytes must not wake us to close it
                            # unread (a reset); it is closed at a later wakeup.
                            self.unwatch(fd)
                        shutdown_write(sock)
                        self.deferred.append(sock)
                    elif outcome is DROP:
                        sock.close()
                    if fd == self.lfd:
                        requeue = not self.stopping
                    if self.stopping or self.retire_reason:
                        break
                if self.parked:
                    # Also when busy and never sleeping: the silent ones go at their time.
                    self.expire(time.monotonic())
                if self.showing_reading and not self.parked:
                    self.stop_reading()
        except _Shutdown:
            return procutil.EXIT_OK
        finally:
            for sock, conn in list(kept.values()):
                self.close_kept(sock, conn)
            kept.clear()
            self.finish_parked()
            self.close_deferred()
            epoll.close()
        if self.retire_reason and not self.stopping:
            self.retire()
        return procutil.EXIT_OK

    def turn(self, item) -> int:
        fd = item[0]
        return 0 if fd == self.hfd else 2 if fd == self.lfd or fd == self.afd else 1

    def close_deferred(self) -> None:
        """Close the connections whose last response went out before the
        latest wait. By then the web server has read it and closed its end
        (nginx does so at END_REQUEST), so nothing it sends can arrive after
        our close and turn into a reset - php-fpm reads to EOF before closing
        for the same reason, at a blocking read per connection."""
        for sock in self.deferred:
            sock.close()
        self.deferred.clear()

    # ---- connections whose request is still arriving ------------------------

    def park(self, sock: socket.socket, conn, parked: Parked | None, served: bool,
             heard: bool, request: Request | None, body: list | None, size: int) -> str:
        """Watch the connection with the others until more of its request
        comes (or its deadline passes): never wait on it alone."""
        now = time.monotonic()
        if parked is None:
            parked = Parked(sock, conn, served, now)
            if len(self.parked) >= MAX_PARKED:
                self.close_oldest_parked("%d others wait for their request" % MAX_PARKED)
        elif heard:
            parked.progress = now
        parked.heard = parked.heard or heard or not conn.between_requests
        parked.request, parked.body, parked.size = request, body, size
        parked.plan(now, self.terminate)
        if parked.deadline <= now:
            # Read just now and still not complete, past its time (also when this
            # worker was busy meanwhile: a waiting request is served in time).
            self.log.notice("%s: closing connection: %s" % (self.prefix, parked.why_closed()))
            return DROP
        fd = sock.fileno()
        self.parked[fd] = parked
        try:
            self.epoll.register(fd, select.EPOLLIN)
        except FileExistsError:
            pass        # watched already (it was kept or parked)
        return WAIT

    def await_parked(self, timeout: float) -> float:
        """About to sleep with connections parked: close the overdue ones,
        show "Reading headers" (the worker now waits on them), and wake by
        the next deadline. Only here, off the hot path, does the slot change
        for them: nginx's requests never park."""
        now = time.monotonic()
        self.expire(now)
        if not self.parked:
            if self.showing_reading:
                self.stop_reading()
            return timeout
        if self.slot.stage != READING:
            self.slot.set_stage(READING, now)
        self.showing_reading = True
        wait = max(0.0, min(p.deadline for p in self.parked.values()) - now)
        return wait if timeout < 0 else min(timeout, wait)

    def stop_reading(self) -> None:
        self.showing_reading = False
        if self.slot.stage == READING:
            self.slot.set_stage(KEEPALIVE if self.kept else IDLE, time.monotonic())

    def expire(self, now: float, leaving: bool = False) -> None:
        """Close the parked connections past their deadline that have nothing
        to read, saying why. One with bytes waiting (they may have come while
        this worker was busy) is read first: park() then decides."""
        for fd, p in list(self.parked.items()):
            if p.deadline > now or _pending(p.sock):
                continue
            why = "no request before the worker stopped" if leaving and not (
                p.heard or p.request) else p.why_closed()
            self.close_parked(fd, why)

    def close_parked(self, fd: int, why: str) -> None:
        p = self.parked.pop(fd)
        self.unwatch(fd)
        self.log.notice("%s: closing connection: %s" % (self.prefix, why))
        p.sock.close()

    def close_oldest_parked(self, why: str) -> None:
        fd = min(self.parked, key=lambda fd: self.parked[fd].since)
        self.close_parked(fd, why)

    def finish_parked(self) -> None:
        """Leaving: a connection that has sent nothing yet goes to another
        worker of the pool (the adoption socket, as idle kept connections
        do; nginx writes its request right after connecting, so this is
        mostly a request about to come). One with part of a request is still
        served if the rest comes within its deadline. Without a taker, a
        silent connection gets EXIT_GRACE: it must not hold up a stop."""
        self.pass_on_silent(leaving=True)
        now = time.monotonic()
        for p in self.parked.values():
            if not (p.heard or p.request):
                p.deadline = min(p.deadline, now + EXIT_GRACE)
        while self.parked:
            now = time.monotonic()
            self.expire(now, leaving=True)
            if not self.parked:
                break
            poller = select.poll()
            for fd in self.parked:
                poller.register(fd, select.POLLIN)
            wait = min(p.deadline for p in self.parked.values()) - now
            for fd, _ in poller.poll(math.ceil(max(0.0, wait) * 1000)):
                p = self.parked.pop(fd, None)
                if p is None:
                    continue
                self.unwatch(fd)
                outcome = self.serve(p.sock, p.conn, p.served, p)
                if outcome is KEEP:
                    self.close_kept(p.sock, p.conn)
                elif outcome is LINGER:
                    linger(p.sock)
                elif outcome is DROP:
                    p.sock.close()

    def pass_on_silent(self, leaving: bool) -> None:
        """Give the parked connections that have sent nothing yet to another
        worker of the pool (the adoption socket): before this worker runs a
        request, so that a request about to come on them (the accept won the
        race with the peer's first write) does not wait behind it while
        another worker is idle; and when it leaves. A connection passed on
        once stays where it went, but for the leaving: silent peers do not
        travel for ever."""
        if self.adoption is None:
            return
        for fd, p in list(self.parked.items()):
            if p.heard or p.request or (p.adopted and not leaving):
                continue
            if not handoff.send(self.adoption[0], p.sock, b"", fresh=True):
                return
            del self.parked[fd]
            self.unwatch(fd)
            p.sock.close()

    def unwatch(self, fd: int) -> None:
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass    # the epoll is closed (leaving) or never had it

    def adopt(self):
        """An idle kept-alive connection, or one that has sent nothing yet,
        that another worker of the pool gave up: watch it as one of ours
        (serve it now if a request came with it)."""
        got = receive(self.adoption[1], self.listen_sock.family)
        if got is None:
            return None
        sock, data, fresh = got
        conn = fastcgi.ServerConnection(self.max_params_bytes)
        if fresh:       # nothing sent yet: as if just accepted here
            outcome = self.serve(sock, conn, False)
            if outcome is WAIT:
                self.parked[sock.fileno()].adopted = True
            return sock, conn, outcome
        if data:
            conn.receive_data(data)
            return sock, conn, self.serve(sock, conn, False, read_first=False)
        self.kept[sock.fileno()] = (sock, conn)
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        return None

    def close_kept(self, sock: socket.socket, conn) -> None:
        """Leaving with idle kept-alive connections: pass each to another
        worker of the pool (handoff.adoption_pair); failing that, serve a
        request nginx already sent on it (as its last), then close gracefully.
        Closing with a request unread would reset it."""
        if self.adoption is not None and handoff.send(self.adoption[0], sock,
                                                      conn.pending_bytes()):
            sock.close()
            return
        try:
            pending = sock.recv(1, socket.MSG_PEEK | DONTWAIT)
        except BlockingIOError:
            pending = b""
        except OSError:
            sock.close()
            return
        try:
            outcome = self.serve(sock, conn, True) if pending else KEEP
        except BaseException:
            sock.close()
            return
        if outcome is DROP:
            sock.close()
        elif outcome is not WAIT:     # parked: finish_parked serves or closes it
            linger(sock)

    def requeue(self, epoll) -> None:
        """Back to the end of the listening socket's queue of exclusive waiters."""
        try:
            epoll.unregister(self.lfd)
            epoll.register(self.lfd, _EXCLUSIVE)
        except OSError:
            pass    # SIGQUIT swapped the descriptor just now: we are stopping

    def retire(self) -> None:
        """pm.max_requests or pm.max_memory reached, kept connections passed
        on: tell the manager, which forks the replacement at once, and exit.
        Waiting for it would only hold a slot: a retiree accepts nothing."""
        self.slot.set_stage(RETIRING, time.monotonic())
        try:
            os.write(self.retire_fd, struct.pack("=i", self.pid))
        except OSError:
            pass    # the manager learns it from the exit

    def take(self, fd: int):
        """Serve what a ready descriptor brings: (sock, codec, outcome), or None.
        (No "Reading headers" stage write here: nginx sends the params at once,
        and a clock read is a real system call on some VMs.)"""
        if fd == self.lfd:
            try:
                cfd, addr = self.listen_sock._accept()
            except OSError as e:
                if self.stopping or e.errno in _ACCEPT_AGAIN:
                    return None
                if e.errno in _NO_FDS and self.parked:
                    self.close_oldest_parked("out of file descriptors (%s)" % e.strerror)
                    return None
                raise
            if self.allowed is not None and not self.client_allowed(addr, self.allowed):
                os.close(cfd)
                return None
            sock = socket.socket(self.listen_sock.family, socket.SOCK_STREAM, 0, cfd)
            conn = fastcgi.ServerConnection(self.max_params_bytes)
            return sock, conn, self.serve(sock, conn, False)
        if fd == self.afd:
            return self.adopt()
        if fd == self.hfd:
            # A connection the manager accepted while every worker was busy,
            # with the bytes it read from it (handoff.py).
            got = receive(self.handoff, self.listen_sock.family)
            if got is None:
                return None
            if self.handoff_counts is not None:
                self.handoff_counts.taken(self.slot_index)
            sock, data, _fresh = got
            conn = fastcgi.ServerConnection(self.max_params_bytes)
            conn.receive_data(data)
            return sock, conn, self.serve(sock, conn, False, read_first=False)
        # A watched connection stays registered while it is served: kept again
        # (the common case) it costs no epoll_ctl; closed, it leaves the epoll.
        kept = self.kept.pop(fd, None)
        if kept is not None:
            sock, conn = kept
            return sock, conn, self.serve(sock, conn, True)
        p = self.parked.pop(fd, None)
        if p is None:
            return None     # half-closed (LINGER) and closed at this wakeup
        return p.sock, p.conn, self.serve(p.sock, p.conn, p.served, p)

    def allowed_clients(self) -> set[str] | None:
        """listen.allowed_clients as a set of normalized addresses (TCP only)."""
        entries = getattr(self.pool, "listen_allowed_clients", None)
        if not entries or self.listen_sock.family == socket.AF_UNIX:
            return None
        return {_normalize_ip(entry) for entry in entries}

    def client_allowed(self, addr, allowed: set[str]) -> bool:
        ip = _normalize_ip(addr[0])
        if ip in allowed:
            return True
        self.log.error("[pool %s] Connection disallowed: IP address '%s' has been dropped."
                       % (self.name, ip))
        return False

    def serve(self, sock: socket.socket, conn, kept: bool, parked: Parked | None = None,
              read_first: bool = True):
        """Serve requests on one connection until it needs to wait for more.
        KEEP: kept alive and idle (watch it); WAIT: parked with part of a
        request (watched, see Parked); LINGER: the last response is complete,
        close gracefully; DROP: close now. `kept`: it carried a request
        before; `parked`: it was parked and became readable; `read_first`:
        read before parsing (not for bytes handed over with the connection).

        Reads never block: a request is served once its params and its body
        (or READ_AHEAD of it) are in. nginx writes them right after
        connecting, so the common case is one recv(2) and no epoll change."""
        recv = sock.recv
        served = kept
        request = body = None
        size = 0
        reads = 0 if read_first else 1     # bytes handed over with it count as heard
        if parked is not None:
            request, body, size = parked.request, parked.body, parked.size
        try:
            while True:
                if read_first:
                    try:
                        data = recv(RECV_SIZE, DONTWAIT)
                    except BlockingIOError:
                        if served and request is None and conn.between_requests:
                            return KEEP
                        return self.park(sock, conn, parked, served, reads > 0, request,
                                         body, size)
                    conn.receive_data(data)
                    read_first = False
                    reads += 1
                    if reads > YIELD_READS and request is None and data:
                        # Bytes and bytes, no request: let the others have a turn
                        # (and its deadline be checked).
                        return self.park(sock, conn, parked, served, True, request, body, size)
                event = conn.next_event()
                if event is NEED_DATA:
                    out = conn.data_to_send()
                    if out:
                        send_now(sock, out)
                    if served and request is None and conn.between_requests:
                        return KEEP
                    read_first = True
                    continue
                kind = type(event)
                if request is not None:
                    # Reading the body ahead of the app, up to READ_AHEAD.
                    if kind is StdinData:
                        body.append(event.data)
                        size += len(event.data)
                        if size < READ_AHEAD:
                            continue
                        ended = False
                    elif kind is StdinEnd or kind is Abort:
                        ended = True
                    else:
                        return DROP         # CLOSED: gone before its body ended
                    if self.parked:
                        self.pass_on_silent(leaving=False)
                    ok = self.handle(sock, conn, request, body, ended)
                    request = body = parked = None
                    size = reads = 0
                    if not ok:
                        return LINGER if self.answered else DROP
                    served = True
                    if self.stopping or self.retire_reason:
                        return KEEP       # still kept: handed to another worker on the way out
                    continue
                if kind is Request:
                    request, body = event, []
                    continue
                if event is fastcgi.CLOSED:
                    return DROP
                if kind is Abort and conn.active_request_id == event.request_id:
                    # Aborted before its params were complete: end it, nothing ran.
                    send_all(sock, fastcgi.end_request(event.request_id))
                    conn.request_done()
        except fastcgi.RemoteProtocolError as e:
            self.log.warning("%s: closing connection: malformed FastCGI input: %s"
                             % (self.prefix, e))
            send_quietly(sock, conn.data_to_send())
        except NotReading as e:
            self.log.notice("%s: closing connection: %s" % (self.prefix, e))
        except (ConnectionLost, ConnectionError):
            pass
        return DROP

    # ---- one request -----------------------------------------------------

    def handle(self, sock: socket.socket, conn, request: Request, read_ahead: list,
               ended: bool) -> bool:
        """Serve one request; True if the connection may carry another.
        `read_ahead`: the body read so far; `ended`: that is all of it."""
        self.requests += 1
        rid = request.request_id
        params = request.params
        data = b"".join(read_ahead) if read_ahead else b""
        # Mostly the whole body is in (a GET's is empty): nothing to pull then.
        body = InputStream(_NOTHING_MORE, data, True) if ended \
            else InputStream(_body_reader(sock, conn), data, False)
        response = Response(sock, rid, self.slot, self)
        get = params.get
        self.current_params = params
        start = time.monotonic()
        if self.measure:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            self.cpu_used = usage.ru_utime + usage.ru_stime
        length = get("CONTENT_LENGTH")
        clen = content_length(length) if length else 0
        self.slot.request_start(get("REQUEST_METHOD", "").encode("latin-1"),
                                get("SCRIPT_NAME", "").encode("latin-1"),
                                get("QUERY_STRING", "").encode("latin-1"),
                                clen, start,
                                get("SCRIPT_FILENAME", "").encode("latin-1"),
                                get("REMOTE_USER", "").encode("latin-1"))
        if self.access_format is not None:
            started = (time.time(), start, os.times() if "cpu" in self.access_format.needs
                       else None)
        ok = True
        if clen is None:
            # Only a crafted request has one (nginx checks Content-Length):
            # no app should have to guess what it means.
            self.log.warning('%s: invalid CONTENT_LENGTH %r (request: "%s %s"), answered 400'
                             % (self.prefix, length if len(length) <= 40 else length[:40] + "...",
                                get("REQUEST_METHOD", "-"),
                                get("REQUEST_URI") or get("SCRIPT_NAME", "-")))
            response.complete(*_BAD_REQUEST)
        elif self.special_paths and get("SCRIPT_NAME") in self.special_paths:
            waiting = self.handoff_counts.waiting() if self.handoff_counts is not None else 0
            code, headers, payload = answer(self.pool, self.board, self.listen_sock, params,
                                            held=waiting)
            response.complete(code, headers, payload)
        else:
            environ = make_environ(params, self.base)
            environ["wsgi.input"] = body
            environ["pfm.finish_request"] = response.finish_request
            ok = self.call_app(environ, response)
        if self.access_format is not None:
            self.write_access_log(sock, params, response, started)
        keep = ok and request.keep_conn and not response.released
        self.answered = ok
        if ok:
            try:
                body.drain()    # still this request's time: a body may not end
            except (ConnectionLost, ConnectionError):
                ok = keep = False
        self.request_end(start, keep, params)
        if not ok:
            return False
        conn.request_done()
        return keep

    def request_end(self, start: float, keep: bool, params: dict) -> None:
        """The slot goes idle with the request's figures; decide on recycling.

        getrusage(2) at the start and here gives the request's CPU and the
        peak RSS; only with a status page to show them."""
        now = time.monotonic()
        cpu = memory = 0
        if self.measure:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            used = usage.ru_utime + usage.ru_stime
            elapsed = now - start
            # getrusage may tick coarser than a short request lasts: one thread is 100 % at most.
            cpu = min(100.0, 100.0 * (used - self.cpu_used) / elapsed) if elapsed > 0 else 0.0
            self.cpu_used = used
            memory = usage.ru_maxrss * 1024
        self.slot.request_end(now, cpu, memory, KEEPALIVE if keep or self.kept else IDLE)
        if self.max_requests and self.requests >= self.max_requests:
            self.retire_reason = "max_requests"
        elif self.max_memory:
            rss = current_rss()
            if rss > self.max_memory:
                self.retire_reason = "max_memory"
                self.log.notice('[pool %s] child %d: memory %d bytes passed pm.max_memory '
                                '(%d) after "%s %s", recycling' % (
                                    self.name, self.pid, rss, self.max_memory,
                                    params.get("REQUEST_METHOD", "-"),
                                    params.get("REQUEST_URI") or params.get("SCRIPT_NAME", "-")))

    def write_access_log(self, sock, params: dict, response: Response, started) -> None:
        """One line per request, after the app is done (so the time after
        finish_request counts, as in php-fpm), in one write(2)."""
        wall, mono, cpu0 = started
        cpu = (0.0, 0.0)
        if cpu0 is not None:
            cpu1 = os.times()
            cpu = (cpu1.user - cpu0.user, cpu1.system - cpu0.system)
        memory = 0
        if "memory" in self.access_format.needs:
            memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peer = "-"
        if "peer" in self.access_format.needs and sock.family != socket.AF_UNIX:
            try:
                peer = _normalize_ip(sock.getpeername()[0])
            except OSError:
                pass
        status = response.status
        entry = Entry(params=params, status=int(status[:3]) if status else 500,
                      headers=response.headers or [], peer=peer, started=wall,
                      ended=time.time(), duration=time.monotonic() - mono, cpu=cpu,
                      memory=memory, pid=self.pid, pool=self.name)
        try:
            os.write(self.access_fd, self.access_format.render(entry))
        except OSError:
            pass

    def call_app(self, environ: dict, response: Response) -> bool:
        """Run the app; False if the connection can only be dropped."""
        result = None
        try:
            result = self.app(environ, response.start_response)
            try:
                if type(result) is list and response.status is not None:
                    response.complete(response.status, response.headers, b"".join(result))
                else:
                    for chunk in result:
                        response.write(chunk)
                    response.end()
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            return True
        except NotReading as e:
            self.log.notice("%s: closing connection: %s" % (self.prefix, e))
            return False
        except (ConnectionLost, ConnectionError):
            return False
        except Exception:
            self.log_exception(environ)
            if response.headers_sent:
                # Part of the answer is out: all that is left is to close without
                # END_REQUEST. nginx logs "upstream prematurely closed" (1.22
                # still ends a chunked response normally; the log is the trace).
                return False
            try:
                response.send_raw(_INTERNAL_ERROR)
            except OSError:
                return False
            return True
        finally:
            self.errors.flush()

    def log_exception(self, environ: dict) -> None:
        uri = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
        self.log.error('%s: exception in the application (request: "%s %s")'
                       % (self.prefix, environ.get("REQUEST_METHOD", "-"), uri))
        for line in traceback.format_exc().rstrip("\n").split("\n"):
            self.log.error("%s: %s" % (self.prefix, line))

    def _said_into_stderr(self, line: str) -> None:
        self.log.warning('%s said into stderr: "%s"' % (self.prefix, line))


class Response:
    """The WSGI response side of one request: start_response, write(), and
    the FastCGI records that carry them."""

    __slots__ = ("sock", "rid", "status", "headers", "headers_sent", "finished", "released",
                 "slot", "worker")

    def __init__(self, sock: socket.socket, rid: int, slot=None, worker=None):
        self.sock = sock
        self.rid = rid
        self.slot = slot
        self.worker = worker
        self.status = None
        self.headers = None
        self.headers_sent = False
        self.finished = False      # END_REQUEST sent; later output is discarded
        self.released = False      # finish_request() handed the connection back to nginx

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.headers_sent:
                    reraise(exc_info)
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        check_headers(status, headers)
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data) -> None:
        if self.finished or not data:
            return
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if not self.headers_sent:
            # Built before headers_sent is set: a str chunk (TypeError) or a
            # header that is not latin-1 still gets the app its 500.
            data = header_block(self.status, self.headers) + data
            self.headers_sent = True
        send_all(self.sock, fastcgi.stdout(self.rid, data))

    def closing(self) -> bool:
        """This response is the connection's last: its END_REQUEST goes out
        followed at once by a FIN, so nginx sees the connection end before it
        could cache it for another request (a kept-alive connection closed
        later could already carry one, and nginx would get a reset)."""
        w = self.worker
        return self.released or (w is not None and w.adoption is None and (
            w.stopping or w.retire_reason is not None
            or (w.max_requests and w.requests >= w.max_requests)))

    def end(self) -> None:
        if self.finished:
            return
        if self.status is None:
            raise AssertionError("the application returned without calling start_response()")
        out = b"" if self.headers_sent else fastcgi.stdout(
            self.rid, header_block(self.status, self.headers))
        self.headers_sent = True
        self.finished = True
        send_all(self.sock, out + fastcgi.end_request(self.rid))
        if self.closing():
            shutdown_write(self.sock)

    def complete(self, status: str, headers, body: bytes) -> None:
        """The whole response in one send: headers, body, end of stream, END_REQUEST."""
        if self.finished:
            return
        if self.headers_sent:
            self.write(body)
            self.end()
            return
        self.status, self.headers = status, headers     # for the access log
        out = fastcgi.stdout(self.rid, header_block(status, headers) + body) \
            + fastcgi.end_request(self.rid)
        self.headers_sent = True
        self.finished = True
        # send_all() inlined: this is the response of most requests (a list body).
        try:
            sent = self.sock.send(out, DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent != len(out):
            send_all(self.sock, memoryview(out)[sent:])
        if self.closing():
            shutdown_write(self.sock)

    def send_raw(self, stdout_bytes: bytes) -> None:
        """The 500 of an app that failed before answering."""
        self.status, self.headers = "500 Internal Server Error", [("Content-Type", "text/plain")]
        self.headers_sent = True
        self.finished = True
        send_all(self.sock, fastcgi.stdout(self.rid, stdout_bytes) + fastcgi.end_request(self.rid))

    def finish_request(self) -> bool:
        """pfm's fastcgi_finish_request(): complete the response now and give
        the connection back to nginx; the application goes on running here.
        Returns False if the connection was already gone."""
        if self.released:
            return True
        self.released = True
        if self.slot is not None:
            self.slot.set_stage(FINISHING, time.monotonic())
        try:
            # With no response started yet, it ends (and the connection is
            # released) as soon as the app returns it, before its close().
            if self.status is not None:
                self.end()
            return True
        except OSError:
            return False


class _NoSlot:
    """Stands in for a scoreboard slot when a worker runs without one (tests)."""

    stage = IDLE

    def set_stage(self, stage, now):
        pass

    def request_start(self, *args):
        pass

    def request_end(self, *args):
        pass


def _pending(sock: socket.socket) -> bool:
    """Bytes, or the peer's end, wait to be read."""
    try:
        sock.recv(1, socket.MSG_PEEK | DONTWAIT)
        return True
    except OSError:         # BlockingIOError: nothing yet
        return False


def _body_reader(sock: socket.socket, conn):
    """wsgi.input's source for a body still on its way (a big upload,
    fastcgi_request_buffering off): the next STDIN chunk, b"" at its end.
    It blocks, within nginx's fastcgi_send_timeout between two pieces."""
    blocking = False
    recv = sock.recv

    def pull() -> bytes:
        nonlocal blocking
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                out = conn.data_to_send()
                if out:
                    send_now(sock, out)
                if not blocking:
                    blocking = True
                    set_timeout(sock, socket.SO_RCVTIMEO, BODY_TIMEOUT)
                try:
                    data = recv(RECV_SIZE)
                except BlockingIOError:
                    raise ConnectionLost() from None
                if not data:
                    raise ConnectionLost()
                conn.receive_data(data)
                continue
            kind = type(event)
            if kind is StdinData:
                return event.data
            if kind is StdinEnd or kind is Abort:
                return b""
            if event is fastcgi.CLOSED:
                raise ConnectionLost()
    return pull


def _nothing_more() -> bytes:
    return b""


_NOTHING_MORE = _nothing_more


def _normalize_ip(text: str) -> str:
    """'::ffff:127.0.0.1' and '127.0.0.1' are the same client (php-fpm)."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


# benchmarks/profile.py sets this: each worker then runs under cProfile and
# writes PFM_PROFILE_DIR/worker-PID.prof when it stops (SIGQUIT). Read at
# import, in the master, before any pool clears its environment.
PROFILE_DIR = os.environ.get("PFM_PROFILE_DIR")


def profiled(run) -> int:
    import cProfile
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(run)
    finally:
        profiler.dump_stats(os.path.join(PROFILE_DIR, "worker-%d.prof" % os.getpid()))


def report_boot_failure(log, pool, pid: int, boot_report) -> None:
    """The app did not load: hand the traceback to the manager, which logs
    it once however many workers fail the same way; log it here without one."""
    text = traceback.format_exc()
    lines = [line for line in text.rstrip("\n").split("\n") if line.strip()]
    summary = lines[-1].strip() if lines else "unknown error"
    if boot_report is not None:
        try:
            boot_report.send(json.dumps({"pid": pid, "summary": summary,
                                         "traceback": text[-32768:]}).encode(),
                             socket.MSG_DONTWAIT)
            return
        except OSError:
            pass
    log_boot_failure(log, pool, pid, lines)


def log_boot_failure(log, pool, pid: int, lines: list[str]) -> None:
    log.error("[pool %s] child %d failed to initialize: cannot load app '%s'"
              % (pool.name, pid, pool.app))
    for line in lines:
        log.error("[pool %s] child %d: %s" % (pool.name, pid, line))


def worker_main(pool, listener, log, app, manager_pid: int, files=None, board=None,
                slot_index: int = -1, retire_fd: int = -1, handoff=None,
                handoff_counts=None, adoption=None, boot_report=None) -> None:
    """Entry point of a forked worker; never returns into the manager's code.
    `boot_report`: the manager's datagram socket for a failed app import."""
    code = procutil.EXIT_OK
    try:
        slot = None
        if board is not None:
            slot = board.slot(slot_index)
            slot.claim(os.getpid(), time.time(), time.monotonic())
        procutil.set_title("pfm: pool %s" % pool.name)
        worker = Worker(pool, listener, log, app, files, handoff, slot, retire_fd, board,
                        handoff_counts, adoption)
        worker.install_signals()
        install_stack_dumps(worker, files.slowlog_fd if files is not None else -1, log.fd,
                            pool.request_slowlog_trace_depth)
        if pool.catch_workers_output:
            sys.stdout.reconfigure(line_buffering=True)   # a print() is a log line at once
        # SIGKILL: an app may ignore SIGTERM, and a worker must not outlive its manager.
        procutil.die_with_parent(signal.SIGKILL, manager_pid)
        if worker.app is None:
            from .app import load
            # Nothing is in flight while the app loads: QUIT ends the worker
            # at once, even if the import never returns (TERM is SIG_DFL).
            procutil.exit_on_stop_signals((signal.SIGQUIT,))
            try:
                worker.app = load(pool.app_module, pool.app_callable)
            except BaseException:
                report_boot_failure(log, pool, worker.pid, boot_report)
                os._exit(procutil.EXIT_BOOT_FAILED)
            worker.install_signals()      # the app's import may have changed them
        worker.slot.set_stage(IDLE, time.monotonic())
        code = profiled(worker.run) if PROFILE_DIR else worker.run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        try:
            log.alert("[pool %s] child %d crashed: %s" % (
                pool.name, os.getpid(), traceback.format_exc().replace("\n", " | ")))
        finally:
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(code)
