"""A worker process: accepts connections on the pool's listening socket and
serves one request at a time, FastCGI in, WSGI call, FastCGI out.

The hot path is accept -> recv -> parse -> environ -> app -> send. A small
response and its END_REQUEST leave in one send(2).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback

from . import fastcgi, procutil, signals
from .accesslog import Entry, compile_format
from .fastcgi import NEED_DATA, Abort, Request, StdinData, StdinEnd
from .wsgi import (
    ErrorStream,
    InputStream,
    base_environ,
    check_headers,
    header_block,
    make_environ,
    reraise,
)

RECV_SIZE = 262144
FIRST_RECORD_TIMEOUT = 5.0   # php-fpm polls a new connection this long for its first bytes

_ACCEPT_AGAIN = (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR, errno.EPROTO)
_INTERNAL_ERROR = (b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"
                   b"Internal Server Error\n")


class ConnectionLost(Exception):
    """The web server went away in the middle of a request."""


class _Shutdown(BaseException):
    """Raised from the SIGQUIT handler while the worker waits for work."""


class Worker:
    """One process, one request at a time. Nothing here is shared with other
    workers; the module-level state of the app lives in this process only."""

    def __init__(self, pool, listener, log, app, files=None):
        self.pool = pool
        self.name = pool.name
        self.listen_sock = listener.sock
        self.log = log
        self.app = app
        self.pid = os.getpid()
        self.requests = 0
        self.max_requests = pool.pm_max_requests or 0
        self.max_params_bytes = pool.max_params_bytes
        self.ping_path = pool.ping_path or None
        self.ping_response = (pool.ping_response or "pong").encode("utf-8")
        self.stopping = False
        self.interruptible = False   # True while blocked waiting for a new request
        self.prefix = "[pool %s] child %d" % (self.name, self.pid)
        self.kept: dict[int, tuple[socket.socket, object]] = {}   # idle kept-alive connections
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
        """Wait on the listening socket and on the kept-alive connections
        together, and serve whichever is ready.

        A worker that blocked on an idle kept connection (php-fpm) would leave
        new connections waiting in the backlog while it could serve them. The
        listening socket is registered with EPOLLEXCLUSIVE, so each new
        connection wakes one idle worker, not all of them.
        """
        lsock = self.listen_sock
        lfd = lsock.fileno()
        lsock.setblocking(False)   # shared by the pool: accept() never blocks a worker
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(FIRST_RECORD_TIMEOUT))
        family = lsock.family
        accept = lsock._accept
        epoll = select.epoll()
        epoll.register(lfd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        kept = self.kept
        allowed = self.allowed_clients()
        try:
            while not self.stopping:
                self.interruptible = True
                try:
                    ready = epoll.poll()
                finally:
                    self.interruptible = False
                for fd, _ in ready:
                    if fd == lfd:
                        try:
                            cfd, addr = accept()
                        except OSError as e:
                            if self.stopping:
                                break
                            if e.errno in _ACCEPT_AGAIN:
                                continue
                            raise
                        if allowed is not None and not self.client_allowed(addr, allowed):
                            os.close(cfd)
                            continue
                        sock = socket.socket(family, socket.SOCK_STREAM, 0, cfd)
                        conn = fastcgi.ServerConnection(self.max_params_bytes)
                        was_kept = False
                    else:
                        sock, conn = kept.pop(fd)
                        epoll.unregister(fd)
                        was_kept = True
                    if self.serve(sock, conn, was_kept):
                        kept[sock.fileno()] = (sock, conn)
                        epoll.register(sock.fileno(), select.EPOLLIN)
                    else:
                        sock.close()
                    if not was_kept:
                        # Back to the end of the socket's queue of exclusive
                        # waiters: new connections go round the idle workers as
                        # with php-fpm's blocking accept(), not always to the first.
                        epoll.unregister(lfd)
                        epoll.register(lfd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
                    if self.stopping or (self.max_requests and self.requests >= self.max_requests):
                        self.stopping = True
                        break
        except _Shutdown:
            pass
        finally:
            for sock, _conn in kept.values():
                sock.close()
            kept.clear()
            epoll.close()
        return procutil.EXIT_OK

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

    def serve(self, sock: socket.socket, conn, kept: bool) -> bool:
        """Serve requests on one connection until it needs to wait for the
        next one. True: kept alive and idle (watch it); False: close it.
        `kept`: an idle kept-alive connection that became readable."""
        recv = sock.recv
        served = kept
        try:
            if kept:
                conn.receive_data(recv(RECV_SIZE))
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    out = conn.data_to_send()
                    if out:
                        sock.sendall(out)
                    if served and conn.active_request_id is None:
                        return True
                    conn.receive_data(recv(RECV_SIZE))
                    continue
                if type(event) is Request:
                    if not self.handle(sock, conn, event):
                        return False
                    served = True
                    if self.stopping or (self.max_requests and self.requests >= self.max_requests):
                        return False
                    continue
                if event is fastcgi.CLOSED:
                    return False
                if type(event) is Abort and conn.active_request_id == event.request_id:
                    # Aborted before its params were complete: end it, nothing ran.
                    sock.sendall(fastcgi.end_request(event.request_id))
                    conn.request_done()
        except fastcgi.RemoteProtocolError as e:
            self.log.warning("%s: closing connection: malformed FastCGI input: %s"
                             % (self.prefix, e))
            _send_quietly(sock, conn.data_to_send())
        except BlockingIOError:
            self.log.notice("%s: closing connection: no data for %.0f seconds"
                            % (self.prefix, FIRST_RECORD_TIMEOUT))
        except (ConnectionLost, ConnectionError):
            pass
        return False

    # ---- one request -----------------------------------------------------

    def handle(self, sock: socket.socket, conn, request: Request) -> bool:
        """Serve one request; True if the connection may carry another."""
        self.requests += 1
        rid = request.request_id
        params = request.params
        recv = sock.recv

        def pull() -> bytes:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    data = recv(RECV_SIZE)
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

        body = InputStream(pull)
        response = Response(sock, rid)
        if self.access_format is not None:
            started = (time.time(), time.monotonic(),
                       os.times() if "cpu" in self.access_format.needs else None)
        ok = True
        if self.ping_path and params.get("SCRIPT_NAME") == self.ping_path:
            response.complete("200 OK", [("Content-Type", "text/plain"), _NO_CACHE,
                                         _EXPIRES], self.ping_response)
        else:
            environ = make_environ(params, self.base)
            environ["wsgi.input"] = body
            environ["pfm.finish_request"] = response.finish_request
            ok = self.call_app(environ, response)
        if self.access_format is not None:
            self.write_access_log(sock, params, response, started)
        if not ok:
            return False
        body.drain()
        conn.request_done()
        return request.keep_conn and not response.released

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
        try:
            peer = sock.getpeername()
            peer = _normalize_ip(peer[0]) if isinstance(peer, tuple) else "-"
        except OSError:
            peer = "-"
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
        except (ConnectionLost, ConnectionError):
            return False
        except Exception:
            self.log_exception(environ)
            if response.headers_sent:
                # Part of the answer is out: closing without END_REQUEST tells
                # nginx the response is incomplete.
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


_NO_CACHE = ("Cache-Control", "no-cache, no-store, must-revalidate, max-age=0")
_EXPIRES = ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")


class Response:
    """The WSGI response side of one request: start_response, write(), and
    the FastCGI records that carry them."""

    __slots__ = ("sock", "rid", "status", "headers", "headers_sent", "finished", "released")

    def __init__(self, sock: socket.socket, rid: int):
        self.sock = sock
        self.rid = rid
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
            self.headers_sent = True
            data = header_block(self.status, self.headers) + data
        self.sock.sendall(fastcgi.stdout(self.rid, data))

    def end(self) -> None:
        if self.finished:
            return
        if self.status is None:
            raise AssertionError("the application returned without calling start_response()")
        out = b"" if self.headers_sent else fastcgi.stdout(
            self.rid, header_block(self.status, self.headers))
        self.headers_sent = True
        self.finished = True
        self.sock.sendall(out + fastcgi.end_request(self.rid))
        if self.released:
            self.sock.shutdown(socket.SHUT_WR)

    def complete(self, status: str, headers, body: bytes) -> None:
        """The whole response in one send: headers, body, end of stream, END_REQUEST."""
        if self.finished:
            return
        if self.headers_sent:
            self.write(body)
            self.end()
            return
        self.headers_sent = True
        self.finished = True
        self.sock.sendall(fastcgi.stdout(self.rid, header_block(status, headers) + body)
                          + fastcgi.end_request(self.rid))
        if self.released:
            self.sock.shutdown(socket.SHUT_WR)

    def send_raw(self, stdout_bytes: bytes) -> None:
        self.headers_sent = True
        self.finished = True
        self.sock.sendall(fastcgi.stdout(self.rid, stdout_bytes) + fastcgi.end_request(self.rid))

    def finish_request(self) -> bool:
        """pfm's fastcgi_finish_request(): complete the response now and give
        the connection back to nginx; the application goes on running here.
        Returns False if the connection was already gone."""
        if self.released:
            return True
        self.released = True
        try:
            # With no response started yet, it ends (and the connection is
            # released) as soon as the app returns it, before its close().
            if self.status is not None:
                self.end()
            return True
        except OSError:
            return False


def _normalize_ip(text: str) -> str:
    """'::ffff:127.0.0.1' and '127.0.0.1' are the same client (php-fpm)."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    if data:
        try:
            sock.sendall(data)
        except OSError:
            pass


def worker_main(pool, listener, log, app, manager_pid: int, files=None) -> None:
    """Entry point of a forked worker; never returns into the manager's code."""
    code = procutil.EXIT_OK
    try:
        procutil.set_title("pfm: pool %s" % pool.name)
        worker = Worker(pool, listener, log, app, files)
        worker.install_signals()
        if pool.catch_workers_output:
            sys.stdout.reconfigure(line_buffering=True)   # a print() is a log line at once
        procutil.die_with_parent(signal.SIGTERM, manager_pid)
        if worker.app is None:
            from .app import load
            try:
                worker.app = load(pool.app_module, pool.app_callable)
            except BaseException:
                log.error("[pool %s] child %d failed to initialize: cannot load app '%s:%s'"
                          % (pool.name, worker.pid, pool.app_module, pool.app_callable))
                for line in traceback.format_exc().rstrip("\n").split("\n"):
                    log.error("[pool %s] child %d: %s" % (pool.name, worker.pid, line))
                os._exit(procutil.EXIT_BOOT_FAILED)
        code = worker.run()
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
