"""Real pfm pools driven directly by independent FastCGI clients: flup6's
client (flup.client.fcgi_app), Debian's cgi-fcgi, and a raw-socket client
built on pfm.fastcgi that can also send what a web server never would.

These are the process-level tests of the protocol and of WSGI: each pool is a
real master, manager and workers on a unix socket or a loopback TCP port.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import struct
import time

import harness
import pytest
from harness import TIME_PREFIX, Background, FcgiConnection, fcgi_get, request_params, wait_for

from pfm import fastcgi

TRANSPORTS = ["tcp4", "tcp6", "unix"]


def listen_for(transport: str) -> str | None:
    """A pool's `listen` value for the transport (None: the harness's IPv4 default)."""
    if transport == "tcp6":
        if not harness.ipv6_available():
            pytest.skip("this machine has no IPv6 loopback (::1)")
        return "[::1]:%d" % harness.free_port("::1")
    if transport == "unix":
        return "unix"
    return None


@pytest.fixture(params=TRANSPORTS)
def any_pool(request, pfm_factory):
    """A 2-worker pool of testapps on each transport in turn."""
    return pfm_factory(pool={"listen": listen_for(request.param)})


@pytest.fixture
def one_worker(pfm_factory):
    """A pool of exactly one worker, so 'the same worker' is observable."""
    return pfm_factory(pool={"pm.max_children": 1})


# ---- flup6's client -------------------------------------------------------------------


def test_flup_client_get_post_and_status_on_every_transport(any_pool):
    """flup6's FastCGI client gets answers over unix sockets, IPv4 and IPv6:
    a JSON GET, a POST body echoed back, and a non-200 status passed through."""
    addr = any_pool.address()
    status, headers, body, _ = harness.flup_request(addr, "/pid")
    assert status == "200 OK"
    assert ("content-type", "application/json") in headers
    info = json.loads(body)
    assert info["pool"] == "www" and info["pid"] in any_pool.worker_pids()

    payload = os.urandom(50000)
    status, headers, body, _ = harness.flup_request(addr, "/echo", method="POST", body=payload)
    assert status == "200 OK"
    assert body == payload

    status, headers, body, _ = harness.flup_request(addr, "/status", query="code=418")
    assert status.startswith("418 ")
    assert ("x-pfm-test", "yes") in headers


def test_flup_get_values_answers_mpxs_conns_0(pfm):
    """FCGI_GET_VALUES (as flup asks it) is answered: no multiplexing."""
    values = harness.FlupClient(pfm.address()).get_values(
        ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"])
    assert values.get("FCGI_MPXS_CONNS") == "0"
    for name, value in values.items():
        assert value.isdigit(), (name, value)


# ---- cgi-fcgi ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp4", "unix"])
def test_cgi_fcgi_get_and_post(transport, pfm_factory):
    """Debian's cgi-fcgi (libfcgi) talks to pfm: CGI variables from its
    environment become the WSGI environ, its stdin the request body."""
    p = pfm_factory(pool={"listen": listen_for(transport)})
    env = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/environ", "QUERY_STRING": "a=1&b=two",
           "REQUEST_URI": "/environ?a=1&b=two", "SERVER_NAME": "localhost",
           "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_X_CUSTOM": "hdr"}
    status, headers, body = harness.cgi_fcgi(p.listen(), env)
    assert status == 200, body
    environ = json.loads(body)
    assert environ["PATH_INFO"] == "/environ"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["QUERY_STRING"] == "a=1&b=two"
    assert environ["HTTP_X_CUSTOM"] == "hdr"
    assert environ["wsgi.multiprocess"] is True and environ["wsgi.multithread"] is False

    data = b"line one\nline two\n" * 1000
    status, headers, body = harness.cgi_fcgi(
        p.listen(), {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "/echo",
                     "QUERY_STRING": "how=readline", "CONTENT_TYPE": "text/plain"}, data)
    assert status == 200
    assert body == data


def test_cgi_fcgi_sees_status_line(pfm):
    """What cgi-fcgi prints is a CGI response: a Status header for non-200."""
    status, headers, body = harness.cgi_fcgi(
        pfm.listen(), {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/nowhere"})
    assert status == 404
    assert b"no route" in body


# ---- the raw client: keep-conn, management records, malformed input ---------------------------


def test_keep_conn_serves_100_requests_on_one_connection(pfm):
    """FCGI_KEEP_CONN: one connection carries 100 requests in a row, all served
    by the same worker (its own request count going up by one each time), and
    the connection is still open afterwards."""
    with FcgiConnection(pfm.address()) as c:
        seen = []
        for _ in range(100):
            r = c.request(request_params("/pid"), keep_conn=True)
            assert r.status == 200
            assert r.end.protocol_status == fastcgi.REQUEST_COMPLETE
            seen.append(r.json())
        assert not c.closed
        assert len({s["pid"] for s in seen}) == 1
        counts = [s["requests"] for s in seen]
        assert counts == list(range(counts[0], counts[0] + 100))
        # still usable: a final request without KEEP_CONN, then the worker closes
        r = c.request(request_params("/hello"), keep_conn=False)
        assert r.body == b"Hello, World!\n"
        assert c.next_event() is fastcgi.CLOSED


def test_connection_without_keep_conn_is_closed_after_the_response(pfm):
    """Without FCGI_KEEP_CONN the worker closes the connection after END_REQUEST."""
    with FcgiConnection(pfm.address()) as c:
        r = c.request(request_params("/hello"))
        assert r.status == 200
        assert c.next_event() is fastcgi.CLOSED


def test_worker_drains_before_closing_so_trailing_records_are_harmless(pfm_factory):
    """Without FCGI_KEEP_CONN the worker half-closes after END_REQUEST and
    drains what the client still sends before closing (php-fpm: shutdown(
    SHUT_WR), drain, close). A client that sends more after its STDIN end -
    flup6's client always sends an empty FCGI_DATA record there - must not get
    EPIPE (unix socket) or a reset (TCP) for it."""
    p = pfm_factory(pool={"listen": "unix", "pm.max_children": 1})
    failures = []
    for i in range(10):
        with FcgiConnection(p.address()) as c:
            c.send(fastcgi.encode_request(request_params("/hello")))
            r = c.read_response()
            assert r.status == 200
            time.sleep(0.02)
            try:
                c.send(fastcgi.encode_record(fastcgi.DATA, 1))
            except OSError as e:
                failures.append((i, harness.errno_name(e)))
                continue
            assert c.next_event() is fastcgi.CLOSED
    assert not failures, "the worker closed without draining: %r" % failures


def _connect_during_startup(p) -> FcgiConnection:
    """A connection made as soon as the master listens, while the workers still
    import the app (slow_import takes a second): the kernel completes it in the
    backlog, so it gets whatever socket options the listening socket had then."""
    def attempt():
        try:
            return FcgiConnection(p.address(), timeout=30)
        except OSError:
            return None
    return wait_for(attempt, 10, "the pool's socket to accept connections", interval=0.005)


@pytest.mark.timeout(40)
def test_client_that_never_closes_does_not_hold_the_worker(pfm_factory):
    """A client that reads its (non keep-alive) response but never closes its
    end must not keep the worker from serving others: the drain before the
    close is bounded (nginx always closes; a monitoring script or a broken
    client may not). The connection is made while pfm starts, the hardest
    case: it waits in the backlog before any worker runs."""
    p = pfm_factory(pool={"pm.max_children": 1, "app": "slow_import:app"}, wait=False)
    idle = _connect_during_startup(p)
    try:
        assert idle.request(request_params("/hello")).status == 200
        t0 = time.monotonic()
        try:
            r = fcgi_get(p.address(), "/hello", timeout=12)
        except TimeoutError:
            pytest.fail("no answer in 12 s: the only worker still waits for the first "
                        "client to close its end")
        waited = time.monotonic() - t0
        assert r.status == 200
        assert waited < 10, "the next request waited %.1f s" % waited
    finally:
        idle.close()


@pytest.mark.timeout(40)
def test_connection_that_sends_nothing_is_dropped(pfm_factory):
    """A connection that sends nothing is closed after about 5 s with a log
    line (php-fpm polls a new connection 5 s for its first bytes), so it
    holds a worker no longer. The connection is made while pfm starts, the
    hardest case: it waits in the backlog before any worker runs."""
    p = pfm_factory(pool={"pm.max_children": 1, "app": "slow_import:app"}, wait=False)
    silent = _connect_during_startup(p)
    try:
        p.wait_ready()
        t0 = time.monotonic()
        try:
            r = fcgi_get(p.address(), "/hello", timeout=12)
        except TimeoutError:
            pytest.fail("no answer in 12 s: the only worker still waits for the silent "
                        "connection's first record")
        assert r.status == 200
        assert time.monotonic() - t0 < 10
        p.wait_log(r"closing connection: no data for 5 seconds")
        assert silent.next_event() is fastcgi.CLOSED
    finally:
        silent.close()


def test_flup_client_many_posts_over_a_unix_socket(pfm_factory):
    """200 POSTs with flup6's client over a unix socket all succeed (it sends an
    empty FCGI_DATA record after the body, racing the worker's close)."""
    p = pfm_factory(pool={"listen": "unix"})
    failures = []
    for i in range(200):
        payload = b"%d" % i * 10
        try:
            status, _, body, _ = harness.flup_request(p.address(), "/echo", method="POST",
                                                      body=payload)
            if status != "200 OK" or body != payload:
                failures.append((i, status, body[:50]))
        except OSError as e:
            failures.append((i, harness.errno_name(e)))
    assert not failures, failures[:10]


def test_get_values_then_requests_on_the_same_connection(pfm):
    """GET_VALUES is answered with FCGI_MPXS_CONNS=0 and leaves the connection
    open: GET_VALUES, a request, GET_VALUES again (php-fpm's bug76922 test)."""
    names = ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"]
    with FcgiConnection(pfm.address()) as c:
        for _ in range(2):
            c.send(fastcgi.get_values(names))
            event = c.next_event()
            assert isinstance(event, fastcgi.GetValuesResult), event
            assert event.values["FCGI_MPXS_CONNS"] == "0"
            assert set(event.values) <= set(names)
            r = c.request(request_params("/hello"), keep_conn=True)
            assert r.status == 200


def test_unknown_record_type_gets_unknown_type(pfm):
    """A management record of an unknown type is answered with UNKNOWN_TYPE
    (FastCGI 1.0, 4.2) and the connection stays usable."""
    with FcgiConnection(pfm.address()) as c:
        c.send(fastcgi.encode_record(42, 0, b"whatever"))
        event = c.next_event()
        assert isinstance(event, fastcgi.UnknownTypeResult), event
        assert event.rtype == 42
        r = c.request(request_params("/hello"))
        assert r.status == 200


@pytest.mark.parametrize("role", [fastcgi.AUTHORIZER, fastcgi.FILTER, 7])
def test_other_roles_get_unknown_role(pfm, role):
    """Only the RESPONDER role is served; others get END_REQUEST with
    FCGI_UNKNOWN_ROLE, and the worker goes on serving."""
    with FcgiConnection(pfm.address()) as c:
        c.send(fastcgi.begin_request(1, role, keep_conn=True)
               + fastcgi.params(1, request_params("/hello")) + fastcgi.stdin(1, b""))
        ends = [e for e in c.events() if isinstance(e, fastcgi.EndRequest)]
        assert ends and ends[0].protocol_status == fastcgi.UNKNOWN_ROLE
    assert fcgi_get(pfm.address(), "/hello").status == 200


def test_second_request_id_gets_cant_mpx_conn(pfm):
    """A second request id on a connection while one is active is refused
    with FCGI_CANT_MPX_CONN; the first request is still answered."""
    with FcgiConnection(pfm.address()) as c:
        c.send(fastcgi.begin_request(1, keep_conn=True)
               + fastcgi.params(1, request_params("/pid"))
               + fastcgi.begin_request(2, keep_conn=True)
               + fastcgi.stdin(1, b""))
        ends, out = {}, []
        deadline = time.monotonic() + 10
        while len(ends) < 2 and time.monotonic() < deadline:
            event = c.next_event()
            assert event is not fastcgi.CLOSED, "closed with END_REQUESTs %r" % ends
            if isinstance(event, fastcgi.EndRequest):
                ends[event.request_id] = event.protocol_status
            elif isinstance(event, fastcgi.Stdout):
                assert event.request_id == 1
                out.append(event.data)
        assert ends == {1: fastcgi.REQUEST_COMPLETE, 2: fastcgi.CANT_MPX_CONN}
        status, _, body = fastcgi.split_headers(b"".join(out))
        assert status == 200 and b'"pid"' in body


def test_abort_request_ends_the_request(pfm):
    """FCGI_ABORT_REQUEST while the body is still coming ends the request
    (END_REQUEST for it), and the worker is free again."""
    with FcgiConnection(pfm.address()) as c:
        c.send(fastcgi.begin_request(1) + fastcgi.params(
            1, request_params("/echo", method="POST", CONTENT_LENGTH="100000"))
            + fastcgi.encode_record(fastcgi.STDIN, 1, b"x" * 1000))
        c.send(fastcgi.abort_request(1))
        kinds = [type(e) for e in c.events()]
        assert fastcgi.EndRequest in kinds
    for _ in range(4):
        assert fcgi_get(pfm.address(), "/hello").status == 200


GARBAGE = {
    "http-request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "bad-version": struct.pack(">BBHHBx", 2, fastcgi.BEGIN_REQUEST, 1, 8, 0) + b"\0" * 8,
    "truncated-header": b"\x01\x01\x00",
    "pair-overruns-params": (fastcgi.begin_request(1)
                             + fastcgi.encode_record(fastcgi.PARAMS, 1, b"\x7f\x7fAB")
                             + fastcgi.encode_record(fastcgi.PARAMS, 1)),
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_closes_that_connection_and_the_worker_lives_on(one_worker, kind):
    """Malformed FastCGI input closes that connection with a logged reason;
    the worker is not replaced and serves the next request."""
    worker = one_worker.worker_pids()
    mark = one_worker.log_size()
    with harness.connect(one_worker.address(), timeout=10) as s:
        s.sendall(GARBAGE[kind])
        if kind == "truncated-header":
            s.shutdown(socket.SHUT_WR)
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        else:
            pytest.fail("the worker kept the connection open after %s" % kind)
    assert not data or not data.startswith(b"Status: 200"), data
    line = one_worker.wait_log(r"^%sWARNING: \[pool www\] child %d: closing connection: "
                               r"malformed FastCGI input: \S.*$" % (TIME_PREFIX, worker[0]),
                               start=mark)
    assert line
    r = fcgi_get(one_worker.address(), "/pid")
    assert r.status == 200 and r.json()["pid"] == worker[0]
    assert one_worker.worker_pids() == worker
    assert "exited" not in one_worker.log()[mark:]


def test_params_over_max_params_bytes_closes_connection(pfm_factory):
    """Params bigger than max_params_bytes close the connection with a logged
    reason naming the limit; the worker serves the next request."""
    p = pfm_factory(pool={"pm.max_children": 1, "max_params_bytes": "4K"})
    with FcgiConnection(p.address()) as c:
        with pytest.raises((ConnectionError, OSError)):
            c.request(request_params("/hello", HTTP_COOKIE="c" * 20000))
    p.wait_log(r"closing connection: malformed FastCGI input: .*max_params_bytes")
    assert fcgi_get(p.address(), "/hello", HTTP_COOKIE="c" * 1000).status == 200


def test_killed_worker_costs_only_its_own_request(pfm, run_dir):
    """SIGKILL to a worker in the middle of a request: that request is lost (the
    connection closes without END_REQUEST), a request running on another worker
    completes, the worker is replaced and the pool goes on serving."""
    started = run_dir / "started"
    victim_req = Background(fcgi_get, pfm.address(), "/sleep",
                            "s=5&started=%s" % started, timeout=20)
    victim = int(harness.wait_for(lambda: harness.read_text(started), 10, "the request"))
    assert victim in pfm.worker_pids()
    other_started = run_dir / "other"
    other_req = Background(fcgi_get, pfm.address(), "/sleep",
                           "s=1&started=%s" % other_started, timeout=20)
    other = int(harness.wait_for(lambda: harness.read_text(other_started), 10, "the other"))
    assert other != victim

    os.kill(victim, signal.SIGKILL)
    with pytest.raises(ConnectionError):
        victim_req.join_result()
    r = other_req.join_result()
    assert r.status == 200 and r.json()["pid"] == other

    pfm.wait_log(r"^%sWARNING: \[pool www\] child %d exited on signal 9 \(SIGKILL\) after "
                 r"\d+\.\d{6} seconds from start$" % (TIME_PREFIX, victim))
    pfm.wait_log(r"NOTICE: \[pool www\] child \d+ started", start=pfm.log().index(
        "child %d exited" % victim))
    workers = pfm.wait_workers(exclude=(victim,))["www"]
    assert victim not in workers and other in workers
    for _ in range(4):
        assert fcgi_get(pfm.address(), "/hello").status == 200


# ---- a saturated pool: the manager holds connections and hands them over -------------------


@pytest.fixture
def saturable(pfm_factory):
    """One worker and a ping.path: when the worker is busy the pool manager
    accepts waiting connections itself (to answer ping/status) and hands the
    ordinary requests to the worker with the bytes it already read."""
    return pfm_factory(pool={"pm.max_children": 1, "ping.path": "/ping"})


def _keep_busy(p, run_dir, seconds=1.5):
    path, name = run_dir / "busy", "s=%s&started=%s" % (seconds, run_dir / "busy")
    busy = Background(fcgi_get, p.address(), "/sleep", name, timeout=30)
    wait_for(lambda: path.exists(), 10, "the worker to be busy")
    time.sleep(0.3)  # past the manager's saturation delay
    return busy


@pytest.mark.parametrize("split_at", [None, 300, 9000])
def test_request_handed_over_while_saturated_arrives_intact(saturable, run_dir, split_at):
    """A request that arrives while every worker is busy reaches the app byte
    for byte, whether its records come in one write or its params are split
    across writes (so the manager reads it in several pieces): 200 KB of body
    hashed right, no protocol error."""
    busy = _keep_busy(saturable, run_dir)
    body = os.urandom(200000)
    req = fastcgi.encode_request(request_params("/upload", method="POST", body=body), body)
    with FcgiConnection(saturable.address(), timeout=20) as c:
        if split_at:
            c.send(req[:split_at])
            time.sleep(0.3)
            c.send(req[split_at:])
        else:
            c.send(req)
        r = c.read_response()
    assert r.status == 200, (r.status, r.body[:200], saturable.log()[-2000:])
    info = r.json()
    assert info["size"] == len(body) and info["sha256"] == hashlib.sha256(body).hexdigest()
    assert busy.join_result().status == 200
    assert "malformed" not in saturable.log()


@pytest.mark.timeout(60)
def test_saturated_pool_serves_every_waiting_request_and_answers_ping(saturable, run_dir):
    """While the only worker is busy, ping is answered at once by the manager,
    and 10 requests that wait are all served, correctly, once it is free."""
    busy = _keep_busy(saturable, run_dir, seconds=2)
    t0 = time.monotonic()
    r = fcgi_get(saturable.address(), "/ping", timeout=5)
    assert r.status == 200 and r.body == b"pong"
    assert time.monotonic() - t0 < 1.0
    waiting = [Background(fcgi_get, saturable.address(), "/echo", method="POST",
                          body=b"req %d " % i * 1000, timeout=30) for i in range(10)]
    for i, w in enumerate(waiting):
        r = w.join_result(30)
        assert r.status == 200 and r.body == b"req %d " % i * 1000
    assert busy.join_result().status == 200


# ---- WSGI over the raw client -----------------------------------------------------------------


def test_big_response_is_split_into_records_and_arrives_whole(pfm):
    """A 3 MB body reaches the client intact, in STDOUT records of at most 65535 bytes."""
    n = 3 * 1024 * 1024 + 7
    with FcgiConnection(pfm.address()) as c:
        c.send(fastcgi.encode_request(request_params("/big", "n=%d" % n)))
        events = list(c.events())
    stdout = [e.data for e in events if isinstance(e, fastcgi.Stdout)]
    assert all(len(d) <= 65535 for d in stdout)
    assert isinstance(events[-1], fastcgi.EndRequest)
    status, headers, body = fastcgi.split_headers(b"".join(stdout))
    assert status == 200 and len(body) == n
    assert body == (b"0123456789abcdef" * (n // 16 + 1))[:n]


@pytest.mark.parametrize("how", ["chunks", "read", "readline", "readlines", "iter", "length"])
def test_wsgi_input_read_methods(pfm, how):
    """wsgi.input supports read(n), read(), readline(), readlines() and
    iteration over a body that spans many STDIN records."""
    body = b"".join(b"line %06d %s\n" % (i, b"x" * (i % 200)) for i in range(3000)) + b"tail"
    r = fcgi_get(pfm.address(), "/echo", "how=" + how, method="POST", body=body)
    assert r.status == 200
    assert r.body == body


def test_request_body_of_20mb_is_hashed_correctly(pfm):
    """A 20 MB body sent in 64 KiB STDIN records arrives byte for byte."""
    body = os.urandom(1 << 20) * 20
    r = fcgi_get(pfm.address(), "/upload", method="POST", body=body, timeout=60)
    info = r.json()
    assert info["size"] == len(body)
    assert info["sha256"] == hashlib.sha256(body).hexdigest()


def test_streamed_chunks_arrive_as_the_app_yields_them(pfm):
    """A generator's chunks are sent as they are produced, not buffered until
    the end: the first arrives long before the last."""
    with FcgiConnection(pfm.address()) as c:
        t0 = time.monotonic()
        c.send(fastcgi.encode_request(request_params("/stream", "n=3&delay=0.6")))
        arrivals = []
        for event in c.events():
            if isinstance(event, fastcgi.Stdout) and b"chunk " in event.data:
                arrivals.append((time.monotonic() - t0, event.data))
    assert len(arrivals) >= 3, arrivals
    assert arrivals[0][0] < 0.5, arrivals
    assert arrivals[-1][0] - arrivals[0][0] > 1.0, arrivals


def test_finish_request_completes_the_response_early(one_worker, run_dir):
    """pfm.finish_request(): END_REQUEST (and the close) arrive at once while
    the application goes on working; the marker it writes 2 s later appears."""
    marker = run_dir / "marker"
    t0 = time.monotonic()
    with FcgiConnection(one_worker.address()) as c:
        r = c.request(request_params("/finish", "s=2&marker=%s" % marker))
        answered = time.monotonic() - t0
        assert c.next_event() is fastcgi.CLOSED
    assert r.status == 200 and r.body.startswith(b"finished by")
    assert answered < 1.5
    assert not marker.exists()
    harness.wait_for(marker.exists, 10, "the marker written after finish_request")
    assert "True" in marker.read_text()


def test_app_exception_gives_500_traceback_and_worker_survives(one_worker):
    """An exception in the app: 500 to the client, the traceback (with the
    exception's message) in the error log, and the same worker serves the
    next request."""
    worker = one_worker.worker_pids()[0]
    r = fcgi_get(one_worker.address(), "/boom", "token=tok123")
    assert r.status == 500
    one_worker.wait_log(r"Traceback \(most recent call last\)")
    one_worker.wait_log(r"RuntimeError: boom tok123")
    r = fcgi_get(one_worker.address(), "/pid")
    assert r.status == 200 and r.json()["pid"] == worker


def test_exception_after_output_drops_the_connection_without_end_request(one_worker):
    """An exception after part of the body went out cannot become a 500: pfm
    closes the connection without END_REQUEST (so the web server can tell the
    response is incomplete), logs the traceback, and serves the next request."""
    worker = one_worker.worker_pids()[0]
    with FcgiConnection(one_worker.address()) as c:
        c.send(fastcgi.encode_request(request_params("/boom-late", "token=lt1")))
        events = list(c.events())
        assert c.closed
    assert not any(isinstance(e, fastcgi.EndRequest) for e in events), events
    assert b"first part" in b"".join(e.data for e in events if isinstance(e, fastcgi.Stdout))
    one_worker.wait_log(r"RuntimeError: late boom lt1")
    r = fcgi_get(one_worker.address(), "/pid")
    assert r.status == 200 and r.json()["pid"] == worker


@pytest.mark.parametrize("kind", ["str", "strchunk", "strwrite", "nostart", "badstatus",
                                  "badheader", "twice", "none"])
def test_pep3333_violations_give_500_and_the_worker_survives(one_worker, kind):
    """An app that breaks PEP 3333 (a str body in a list, from an iterator or
    given to write(), no start_response, a bad status or header,
    start_response twice, None returned) gets a 500 - never a malformed
    response, a connection dropped without END_REQUEST (nginx's 502) or an
    injected header - an error in the log, and the same worker serves the
    next request."""
    worker = one_worker.worker_pids()[0]
    mark = one_worker.log_size()
    r = fcgi_get(one_worker.address(), "/bad", "kind=" + kind)
    assert r.status == 500, (r.status, r.headers, r.body)
    assert r.header("X-Injected") is None
    one_worker.wait_log(r"ERROR: \[pool www\] child %d" % worker, start=mark)
    r = fcgi_get(one_worker.address(), "/pid")
    assert r.status == 200 and r.json()["pid"] == worker


@pytest.mark.parametrize("value", ["18446744073709551616", "\u00b2", "-1", "+5", " 5", "1e3",
                                   "1_000"])
def test_crafted_content_length_gets_400_and_the_worker_lives(one_worker, value):
    """A CONTENT_LENGTH that is not a plain run of ASCII digits within 64 bits
    (only a peer other than nginx sends one: nginx checks Content-Length) is
    answered 400 Bad Request with END_REQUEST, without running the app, and
    logged; the same worker serves the next request (a 2**64 value or a
    unicode digit such as '\u00b2', byte 0xb2, used to crash it in the
    scoreboard write)."""
    worker = one_worker.worker_pids()[0]
    mark = one_worker.log_size()
    with FcgiConnection(one_worker.address()) as c:
        r = c.request(request_params("/echo", method="POST", CONTENT_LENGTH=value), b"abc")
    assert r.status == 400, (r.status, r.body)
    assert r.end.protocol_status == fastcgi.REQUEST_COMPLETE
    one_worker.wait_log(r"WARNING: \[pool www\] child %d: invalid CONTENT_LENGTH %s "
                        r"\(request: \"POST /echo\"\), answered 400"
                        % (worker, re.escape(repr(value))), start=mark)
    r = fcgi_get(one_worker.address(), "/echo", method="POST", body=b"fine")
    assert r.status == 200 and r.body == b"fine"
    assert one_worker.worker_pids() == [worker]
    assert "crashed" not in one_worker.log() and "exited" not in one_worker.log()


@pytest.mark.timeout(30)
def test_client_gone_mid_response_does_not_hurt_the_worker(one_worker):
    """The web server closes the connection while a streamed response is being
    written: the worker notices, drops the request and serves the next one."""
    worker = one_worker.worker_pids()[0]
    with FcgiConnection(one_worker.address()) as c:
        c.send(fastcgi.encode_request(request_params("/stream", "n=30&delay=0.05")))
        event = c.next_event()
        assert isinstance(event, fastcgi.Stdout)
    t0 = time.monotonic()
    r = fcgi_get(one_worker.address(), "/pid", timeout=10)
    assert r.status == 200 and r.json()["pid"] == worker
    assert time.monotonic() - t0 < 3
    assert "Traceback" not in one_worker.log()


@pytest.mark.parametrize("extra,scheme", [({"HTTPS": "on"}, "https"),
                                          ({"REQUEST_SCHEME": "https"}, "https"),
                                          ({"HTTPS": ""}, "http"), ({}, "http")])
def test_url_scheme_follows_https(pfm, extra, scheme):
    """wsgi.url_scheme is https when nginx says HTTPS=on (stock params:
    `HTTPS $https if_not_empty`) or REQUEST_SCHEME=https, else http."""
    params = request_params("/environ")
    params.pop("REQUEST_SCHEME")
    params.update(extra)
    with FcgiConnection(pfm.address()) as c:
        env = c.request(params).json()
    assert env["wsgi.url_scheme"] == scheme


def test_wsgi_errors_reach_the_error_log(pfm):
    """Text written to wsgi.errors appears in pfm's error log, tagged with the pool."""
    assert fcgi_get(pfm.address(), "/errors", "token=errs789").status == 200
    pfm.wait_log(r"^%s\w+: \[pool www\] .*wsgi\.errors says errs789" % TIME_PREFIX)


@pytest.mark.parametrize("form", ["port", "[::]:port"])
def test_listen_on_every_address_accepts_ipv4_and_ipv6(pfm_factory, form):
    """listen = PORT or [::]:PORT listens on every address, IPv4 and IPv6
    alike (php-fpm's bug68420 and socket-ipv6-any); only loopback is used here."""
    if not harness.ipv6_available():
        pytest.skip("no IPv6 loopback")
    port = harness.free_port()
    listen = str(port) if form == "port" else "[::]:%d" % port
    p = pfm_factory(pool={"listen": listen})
    for host in ("127.0.0.1", "::1"):
        r = fcgi_get((host, port), "/environ")
        assert r.status == 200
    assert p.running()


@pytest.mark.parametrize("transport", ["tcp6", "unix"])
def test_raw_client_on_other_transports(transport, pfm_factory):
    """The pool listens and serves on IPv6 loopback and on a unix socket."""
    p = pfm_factory(pool={"listen": listen_for(transport)})
    if transport == "unix":
        assert os.path.exists(p.listen())
    with FcgiConnection(p.address()) as c:
        for _ in range(3):
            assert c.request(request_params("/hello"), keep_conn=True).status == 200
