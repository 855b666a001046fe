"""Unit tests for pfm.statusdesk: the pool manager's desk, driven in this
process.

Everything is real but the manager: a listening socket, client connections,
a scoreboard in shared memory, the hand-off socket pair and a log file. The
manager's event loop is a small select() over the descriptors the desk
asked to watch, run until the descriptor the test waits for is readable.
"""

from __future__ import annotations

import os
import select
import socket
import time

import pytest
from harness import FcgiConnection, request_params

from pfm import config, fastcgi, handoff
from pfm.log import Log
from pfm.scoreboard import Scoreboard
from pfm.sockets import Listener
from pfm.statusdesk import MAX_HELD, READ_TIMEOUT, StatusDesk


class Loop:
    """The manager's side of `watch`/`unwatch`."""

    def __init__(self):
        self.handlers: dict = {}

    def watch(self, fd: int, handler) -> None:
        self.handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        self.handlers.pop(fd, None)

    def run_until(self, done, timeout: float = 5.0) -> None:
        """Dispatch the desk's events until `done()` (what they cause) holds."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, "timed out: the desk's events never got there"
            ready, _, _ = select.select(list(self.handlers), [], [], left)
            for fd in ready:
                handler = self.handlers.get(fd)
                if handler is not None:
                    handler(fd, select.EPOLLIN)


def readable(sock) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def tcp_listener() -> Listener:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)    # as the pool's workers leave the shared socket
    address = "127.0.0.1:%d" % sock.getsockname()[1]
    return Listener(sock, address, address, None)


def make_pool(**overrides):
    values = dict(pm_status_path="/status", ping_path="/ping")
    values.update(overrides)
    return config.quick_config("pfm.demo:app", "127.0.0.1:9000", **values).pools[0]


def busy_board(workers: int = 1) -> Scoreboard:
    """A board whose every worker runs a request: the pool is saturated."""
    board = Scoreboard.create(workers + 1)
    for _ in range(workers):
        slot = board.slot(board.assign_slot())
        slot.claim(os.getpid(), time.time(), time.monotonic())
        slot.request_start(b"GET", b"/slow", b"", 0, time.monotonic())
    return board


@pytest.fixture
def desk_parts(tmp_path):
    made = []

    def build(pool=None, board=None, status_listener=None):
        loop = Loop()
        log = Log(str(tmp_path / "error.log"))
        listener = tcp_listener()
        desk = StatusDesk(io=loop, board=board or busy_board(), listener=listener, log=log,
                          pool=pool or make_pool(), status_listener=status_listener)
        made.append((desk, listener, log))
        return desk, loop, listener, tmp_path / "error.log"

    yield build
    for desk, listener, log in made:
        desk.close()
        listener.sock.close()
        log.close()


def client(listener: Listener, params: dict | None = None) -> FcgiConnection:
    conn = FcgiConnection(listener.sock.getsockname())
    if params is not None:
        conn.send(fastcgi.encode_request(params))
    return conn


def test_status_is_answered_by_the_desk_and_counts_the_connections_it_holds(desk_parts):
    desk, loop, listener, _log = desk_parts()
    asking = client(listener, request_params("/status", query="json"))
    silent = client(listener)      # accepted by the desk, has sent nothing yet
    desk.intercept()
    loop.run_until(lambda: readable(asking.sock))
    response = asking.read_response()
    assert response.status == 200
    page = response.json()
    assert page["pool"] == "www"
    assert page["active processes"] == 1
    assert page["listen queue"] == 1       # the silent one still waits for a worker
    assert len(desk.held) == 1             # the answered one is closed and forgotten
    silent.close()
    asking.close()


def test_ping_is_answered_by_the_desk(desk_parts):
    desk, loop, listener, _log = desk_parts(make_pool(ping_response="alive"))
    asking = client(listener, request_params("/ping"))
    desk.intercept()
    loop.run_until(lambda: readable(asking.sock))
    response = asking.read_response()
    assert (response.status, response.body) == (200, b"alive")
    asking.close()


def test_an_ordinary_request_goes_to_a_worker_with_the_bytes_already_read(desk_parts):
    desk, loop, listener, _log = desk_parts()
    request = fastcgi.encode_request(request_params("/app"), b"body")
    asking = client(listener)
    asking.send(request)
    desk.intercept()
    loop.run_until(lambda: readable(desk.handoff_for_workers))
    got = handoff.receive(desk.handoff_for_workers, socket.AF_INET)
    assert got is not None
    conn, data, fresh = got
    assert (data, fresh) == (request, False)
    assert desk.still_waiting() == 1       # handed off, no worker has taken it yet
    desk.counts.taken(0)
    assert desk.still_waiting() == 0
    assert not desk.held
    # The descriptor is the client's own connection: a worker answers on it.
    conn.sendall(fastcgi.stdout(1, b"Status: 204 No Content\r\n\r\n") + fastcgi.end_request(1))
    assert asking.read_response().status == 204
    conn.close()
    asking.close()


def test_a_full_handoff_queue_keeps_the_connection_until_a_worker_reads(desk_parts):
    desk, loop, listener, _log = desk_parts()
    filler = socket.socket()
    queued = 0
    while handoff.send(desk.ours, filler, b"x"):
        queued += 1
    asking = client(listener, request_params("/app"))
    desk.intercept()
    loop.run_until(lambda: desk.waiting_handoff)
    assert desk.still_waiting() == 1     # the filler was never counted as sent
    assert desk.due() is not None                 # the manager wakes to try again
    for _ in range(queued):
        handoff.receive(desk.handoff_for_workers, socket.AF_INET)[0].close()
    desk.tick(time.monotonic())
    assert not desk.waiting_handoff
    conn, data, _fresh = handoff.receive(desk.handoff_for_workers, socket.AF_INET)
    assert data == fastcgi.encode_request(request_params("/app"))
    conn.close()
    filler.close()
    asking.close()


def test_malformed_input_is_logged_and_the_connection_closed(desk_parts):
    desk, loop, listener, log_path = desk_parts()
    asking = client(listener)
    asking.send(b"\x07" * 16)      # FastCGI version 7
    desk.intercept()
    loop.run_until(lambda: readable(asking.sock))
    assert asking.sock.recv(100) == b""
    assert not desk.held
    assert "[pool www] closing connection: malformed FastCGI input" in log_path.read_text()
    asking.close()


def test_nothing_is_taken_while_no_worker_has_booted(desk_parts):
    board = Scoreboard.create(2)
    board.assign_slot()                 # reserved: a worker still importing the app
    desk, _loop, listener, _log = desk_parts(board=board)
    asking = client(listener, request_params("/status"))
    desk.intercept()
    assert not desk.held
    sock, _addr = listener.sock.accept()     # still in the kernel's queue, for the workers
    sock.close()
    asking.close()


def test_the_desk_holds_at_most_max_held_connections(desk_parts):
    desk, _loop, listener, _log = desk_parts()
    clients = [client(listener) for _ in range(MAX_HELD + 1)]
    desk.intercept()
    assert len(desk.held) == MAX_HELD
    sock, _addr = listener.sock.accept()     # the last one waits in the kernel's queue
    sock.close()
    for c in clients:
        c.close()


def test_a_connection_silent_past_the_read_timeout_is_dropped(desk_parts):
    desk, loop, listener, _log = desk_parts()
    asking = client(listener)
    desk.intercept()
    assert len(desk.held) == 1
    (held,) = desk.held.values()
    assert desk.due() == held.since + READ_TIMEOUT
    desk.tick(held.since + READ_TIMEOUT / 2)
    assert len(desk.held) == 1
    desk.tick(held.since + READ_TIMEOUT + 0.001)
    assert not desk.held and not loop.handlers
    assert asking.sock.recv(100) == b""
    asking.close()


def test_status_listen_serves_the_page_at_any_path_without_a_status_path(desk_parts):
    status = tcp_listener()
    desk, loop, _listener, _log = desk_parts(make_pool(pm_status_path=None, ping_path=None),
                                            status_listener=status)
    assert not desk.intercepts and desk.counts is None
    assert status.fileno() in loop.handlers
    asking = client(status, request_params("/anything", query="json"))
    loop.run_until(lambda: readable(asking.sock))
    assert asking.read_response().json()["pool"] == "www"
    asking.close()
    desk.in_child()         # a new worker keeps nothing of the desk's
    assert status.fileno() == -1 and not loop.handlers


def test_status_listen_answers_other_paths_404_beside_a_status_path(desk_parts):
    status = tcp_listener()
    desk, loop, _listener, _log = desk_parts(status_listener=status)
    asking = client(status, request_params("/app"))
    loop.run_until(lambda: readable(asking.sock))
    assert asking.read_response().status == 404
    asking.close()
    status.sock.close()
