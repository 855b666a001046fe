"""Peers that stop or crawl in the middle of a request (issue 9, item 4):
connections that send nothing, a client that trickles its request a byte at
a time, a body that stalls, a client that floods management records and
never reads the answers. Each costs that connection only: the worker waits
for them together with everything else it watches, never for one alone, so
the pool goes on serving; the waits are bounded, shown as "Reading headers"
on the status page, and do not keep a graceful stop from finishing.

Driven at the socket by the raw FastCGI client of harness.py, on a unix
socket (where an accepted connection inherits no receive timeout from the
listening socket) and on TCP.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import harness
import pytest
from harness import Background, FcgiConnection, fcgi_get, request_params, wait_for

from pfm import fastcgi

STATUS = {"pm.status_path": "/status", "ping.path": "/ping"}


def _listen(transport: str):
    return "unix" if transport == "unix" else None


def _silent(p, n: int) -> list[socket.socket]:
    """n connections that send nothing, each accepted by a worker by now."""
    socks = [harness.connect(p.address(), timeout=30) for _ in range(n)]
    time.sleep(0.5)
    return socks


def _closed_by_server(sock: socket.socket, within: float) -> float:
    """Seconds until the server closed `sock` (EOF or reset), reading what it sends."""
    t0 = time.monotonic()
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail("the server kept the connection open for %.0f s" % within)
    return time.monotonic() - t0


def _timed_get(p, path: str, query: str = "", timeout: float = 10.0):
    t0 = time.monotonic()
    try:
        r = fcgi_get(p.address(), path, query, timeout=timeout)
    except TimeoutError:
        pytest.fail("%s got no answer in %.0f s: the workers wait on silent connections"
                    % (path, timeout))
    return r, time.monotonic() - t0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_six_silent_connections_do_not_stop_a_two_worker_pool(pfm_factory, transport):
    """Six connections that send nothing on a pool of 2 workers: an ordinary
    request, /ping and /status are still answered within a second or two;
    the status page (read on pm.status_listen, so that no worker is busy
    serving it) shows the workers that watch them "Reading headers"; after
    about 5 s each silent connection is closed with a log line, and the
    workers are Idle again."""
    status_port = harness.free_port()
    p = pfm_factory(pool=dict(STATUS, listen=_listen(transport),
                              **{"pm.status_listen": "127.0.0.1:%d" % status_port}))
    workers = p.worker_pids()
    silent = _silent(p, 6)

    def states():
        r = fcgi_get(("127.0.0.1", status_port), "/status", "json&full", timeout=5)
        return {proc["pid"]: proc["state"] for proc in r.json()["processes"]}
    try:
        for path in ("/hello", "/ping", "/status"):
            r, took = _timed_get(p, path, "json")
            assert r.status == 200 and took < 2.0, (path, r, took)
        wait_for(lambda: "Reading headers" in states().values(), 3,
                 "a worker shown 'Reading headers'", on_fail=lambda: repr(states()))
        for sock in silent:
            assert _closed_by_server(sock, within=10) < 8
        p.wait_log(r"NOTICE: \[pool www\] child \d+: closing connection: no data for "
                   r"5 seconds")
        wait_for(lambda: set(states().values()) == {"Idle"}, 3, "every worker Idle again",
                 on_fail=lambda: repr(states()))
        assert p.worker_pids() == workers and "exited" not in p.log()
    finally:
        for sock in silent:
            sock.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_request_that_arrives_while_the_worker_is_busy_is_served_after_its_deadline(
        pfm_factory, run_dir, transport):
    """A connection the only worker accepted before its request came, whose
    request then arrives while the worker runs a 6 s request: it is served
    once the worker is free, although that is past the 5 s a request has to
    arrive in - the peer was in time, the worker was not."""
    p = pfm_factory(pool={"pm.max_children": 1, "listen": _listen(transport)})
    (worker,) = p.worker_pids()
    early = FcgiConnection(p.address(), timeout=30)
    try:
        time.sleep(0.3)                         # accepted and watched, nothing sent yet
        started = run_dir / "started"
        busy = Background(fcgi_get, p.address(), "/sleep", "s=6&started=%s" % started,
                          timeout=30)
        wait_for(started.exists, 5, "the worker to run the 6 s request")
        early.send(fastcgi.encode_request(request_params("/pid")))
        r = early.read_response()
        assert r.status == 200 and r.json()["pid"] == worker
        assert busy.join_result(30).status == 200
    finally:
        early.close()
    assert "closing connection" not in p.log(), p.log()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_connection_accepted_before_its_request_does_not_wait_behind_another(pfm_factory,
                                                                              transport):
    """A worker accepted connection A before A's request came (a TCP accept
    often wins that race against the client's first write), then starts a
    3 s request on another connection: A goes to the other, idle worker
    first, so A's request, coming a moment later, is answered at once, not
    after the 3 s request."""
    status_port = harness.free_port()
    p = pfm_factory(pool={"listen": _listen(transport),
                          "pm.status_listen": "127.0.0.1:%d" % status_port})

    def reading():
        r = fcgi_get(("127.0.0.1", status_port), "/status", "json&full", timeout=5)
        return [x["pid"] for x in r.json()["processes"] if x["state"] == "Reading headers"]
    with FcgiConnection(p.address(), timeout=30) as kept:
        holder = kept.request(request_params("/pid"), keep_conn=True).json()["pid"]
        for _ in range(20):     # until A is accepted by the worker that holds `kept`
            early = FcgiConnection(p.address(), timeout=30)
            watcher = wait_for(reading, 5, "a worker watching the new connection")
            if watcher == [holder]:
                break
            early.close()
            wait_for(lambda: not reading(), 5, "the closed connection to be dropped")
        else:
            pytest.fail("20 connections in a row went to the other worker")
        try:
            kept.send(fastcgi.encode_request(request_params("/sleep", "s=3"), keep_conn=True))
            time.sleep(0.3)                     # the 3 s request runs
            t0 = time.monotonic()
            early.send(fastcgi.encode_request(request_params("/pid")))
            r = early.read_response()
            took = time.monotonic() - t0
            assert r.status == 200 and r.json()["pid"] != holder, r.json()
            assert took < 1.5, took
            assert kept.read_response().status == 200
        finally:
            early.close()


@pytest.mark.timeout(40)
def test_a_retiring_worker_passes_on_a_connection_that_sent_nothing_yet(pfm_factory):
    """pm.max_requests = 2 and a connection the only worker accepted before
    its request came: when the worker retires, that connection goes to its
    replacement (as idle kept connections do), which serves the request
    when it comes; the retiree served exactly 2 requests."""
    p = pfm_factory(pool={"pm.max_children": 1, "pm.max_requests": 2, "listen": "unix"})
    (first,) = p.worker_pids()
    early = FcgiConnection(p.address(), timeout=30)
    try:
        time.sleep(0.3)                                 # watched, nothing sent
        for n in (1, 2):
            info = fcgi_get(p.address(), "/pid", timeout=10).json()
            assert (info["pid"], info["requests"]) == (first, n)
        p.wait_log(r"child %d exited with code 0" % first)
        (second,) = p.wait_workers(exclude=(first,))["www"]
        time.sleep(1.5)                                 # longer than any grace on the way out
        early.send(fastcgi.encode_request(request_params("/pid")))
        info = early.read_response().json()
        assert (info["pid"], info["requests"]) == (second, 1)
    finally:
        early.close()
    assert "closing connection" not in p.log(), p.log()


@pytest.mark.timeout(40)
def test_a_worker_watches_at_most_64_silent_connections(pfm_factory):
    """70 silent connections on one worker: it watches 64 at most (its
    descriptors and read-ahead stay bounded), closing the oldest with a log
    line, and still serves an ordinary request at once."""
    p = pfm_factory(pool={"pm.max_children": 1, "listen": "unix"})
    silent = _silent(p, 70)
    try:
        r, took = _timed_get(p, "/hello", timeout=5)
        assert r.status == 200 and took < 1.5, took
        p.wait_log(r"NOTICE: \[pool www\] child \d+: closing connection: 64 others wait for "
                   r"their request")
        closed = 0
        for sock in silent:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 6, closed
    finally:
        for sock in silent:
            sock.close()


def _trickle(address, data: bytes, pause: float, stop: threading.Event):
    """Send `data` a byte every `pause` seconds; returns (bytes sent, seconds
    until the server closed the connection) or (sent, None)."""
    sock = harness.connect(address, timeout=30)
    t0 = time.monotonic()
    sent = 0
    try:
        for byte in data:
            if stop.is_set():
                return sent, None
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return sent, time.monotonic() - t0
            sent += 1
            time.sleep(pause)
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    return sent, time.monotonic() - t0
            except BlockingIOError:
                pass
            except OSError:
                return sent, time.monotonic() - t0
            finally:
                sock.setblocking(True)
        return sent, None
    finally:
        sock.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_trickling_client_is_cut_by_request_terminate_timeout(pfm_factory, transport):
    """A client that sends its request one byte every 0.2 s (each byte would
    reset a receive timeout) holds no worker: the only worker serves other
    requests meanwhile, and request_terminate_timeout = 2s bounds the whole
    wait for its params, so the connection is closed after about 2 s,
    without killing the worker."""
    p = pfm_factory(pool={"pm.max_children": 1, "listen": _listen(transport),
                          "request_terminate_timeout": "2s"})
    (worker,) = p.worker_pids()
    request = fastcgi.encode_request(request_params("/hello"))
    stop = threading.Event()
    trickler = Background(_trickle, p.address(), request, 0.2, stop)
    try:
        time.sleep(0.5)
        r, took = _timed_get(p, "/pid", timeout=5)
        assert r.status == 200 and r.json()["pid"] == worker and took < 1.5, took
        sent, closed_after = trickler.join_result(15)
    finally:
        stop.set()
    assert closed_after is not None and sent < len(request)
    assert 1.5 <= closed_after < 4.5, closed_after
    p.wait_log(r"NOTICE: \[pool www\] child %d: closing connection: no complete request "
               r"in 2 seconds" % worker)
    assert p.worker_pids() == [worker]


@pytest.mark.timeout(40)
@pytest.mark.parametrize("terminate", [None, "2s"], ids=["no-limit", "terminate-2s"])
def test_stalled_body_holds_no_worker(pfm_factory, terminate):
    """A request whose params are complete but whose small body stops half-way
    (unix socket: no receive timeout) does not start the app and holds no
    worker: the only worker serves others meanwhile. With
    request_terminate_timeout = 2s the stalled connection is closed after
    about 2 s and the worker lives on."""
    pool = {"pm.max_children": 1, "listen": "unix"}
    if terminate:
        pool["request_terminate_timeout"] = terminate
    p = pfm_factory(pool=pool)
    (worker,) = p.worker_pids()
    body = b"x" * 100
    with FcgiConnection(p.address(), timeout=30) as stalled:
        stalled.send(fastcgi.begin_request(1)
                     + fastcgi.params(1, request_params("/echo", method="POST", body=body))
                     + fastcgi.encode_record(fastcgi.STDIN, 1, body[:10]))
        time.sleep(0.5)
        for _ in range(3):
            r, took = _timed_get(p, "/pid", timeout=5)
            assert r.status == 200 and r.json()["pid"] == worker and took < 1.5, took
        if terminate:
            assert 1.0 <= _closed_by_server(stalled.sock, within=10) < 4.0
            p.wait_log(r"NOTICE: \[pool www\] child %d: closing connection: request body "
                       r"stalled for 2 seconds" % worker)
        else:
            stalled.sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                stalled.sock.recv(1)          # still open, nothing answered
    assert p.worker_pids() == [worker] and "exited" not in p.log()


def _flood(address, stop: threading.Event):
    """GET_VALUES records as fast as the socket takes them, never reading a
    reply; returns how the connection ended."""
    batch = fastcgi.get_values(["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"]) * 2000
    sock = harness.connect(address, timeout=2)
    try:
        while not stop.is_set():
            try:
                sock.sendall(batch)
            except TimeoutError:
                continue            # the worker reads nothing right now: keep pushing
            except OSError as e:
                return harness.errno_name(e)
        return "still open"
    finally:
        sock.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_client_flooding_get_values_without_reading_is_dropped(pfm_factory, transport):
    """A client that floods FCGI_GET_VALUES and never reads the answers: the
    worker drops that connection once it has asked more than any client asks
    between requests (or as soon as the answers would block it), logs why,
    and goes on serving (it used to block in sendall for good)."""
    p = pfm_factory(pool={"pm.max_children": 1, "listen": _listen(transport)})
    (worker,) = p.worker_pids()
    stop = threading.Event()
    flood = Background(_flood, p.address(), stop)
    try:
        p.wait_log(r"\[pool www\] child %d: closing connection: (the peer does not read the "
                   r"replies|malformed FastCGI input: more than 64 management records)" % worker,
                   timeout=10)
        ended = flood.join_result(10)
    finally:
        stop.set()
    assert ended in ("EPIPE", "ECONNRESET"), ended
    r, took = _timed_get(p, "/pid", timeout=5)
    assert r.status == 200 and r.json()["pid"] == worker and took < 1.5, took


@pytest.mark.timeout(40)
def test_quit_finishes_with_silent_connections_open(pfm_factory):
    """SIGQUIT (graceful stop) while silent connections are open on a unix
    socket: every pfm process exits within a few seconds, status 0."""
    p = pfm_factory(pool={"listen": "unix"})
    silent = _silent(p, 4)
    try:
        assert fcgi_get(p.address(), "/hello", timeout=5).status == 200
        tree = p.tree()
        os.kill(p.pid, signal.SIGQUIT)
        wait_for(lambda: not any(harness.alive(x) for x in tree), 8,
                 "every pfm process to exit after SIGQUIT",
                 on_fail=lambda: repr([(x, harness.cmdline(x)) for x in tree
                                       if harness.alive(x)]))
        assert p.proc.wait(5) == 0
    finally:
        for sock in silent:
            sock.close()
