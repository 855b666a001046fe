"""The causes of the soak's unexplained failures (tests/soakrig.py), each
pinned by a focused test: a defect the 60-second soak found only now and
then, reproduced here every time.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time

import harness
import pytest
from harness import Background, fcgi_get

from pfm import fastcgi
from pfm.fastcgi import NEED_DATA, RemoteProtocolError, Request, ServerConnection

GET_VALUES = fastcgi.get_values(["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"])


# ---- records that carry no request ----------------------------------------------------------


def _drain(conn: ServerConnection) -> list:
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def test_a_flood_of_management_records_ends_the_connection():
    """Management records are answered one by one; a peer that sends more
    than MAX_IDLE_RECORDS of them with no request between is cut, so that a
    flood costs a worker that many answers, not as many as the socket
    buffers hold (megabytes on TCP)."""
    conn = ServerConnection()
    conn.receive_data(GET_VALUES * fastcgi.MAX_IDLE_RECORDS)
    assert _drain(conn) == []
    assert conn.data_to_send().count(bytes([fastcgi.VERSION_1, fastcgi.GET_VALUES_RESULT])) \
        == fastcgi.MAX_IDLE_RECORDS
    conn.receive_data(GET_VALUES)
    with pytest.raises(RemoteProtocolError, match="more than %d management records"
                       % fastcgi.MAX_IDLE_RECORDS):
        conn.next_event()


@pytest.mark.parametrize("record", [
    fastcgi.encode_record(99, 0, b""),                              # an unknown type
    fastcgi.encode_record(fastcgi.DATA, 7, b"x"),                   # DATA of no request
    fastcgi.encode_record(fastcgi.ABORT_REQUEST, 7),                # ABORT of no request
    fastcgi.encode_record(fastcgi.STDIN, 7),                        # empty STDIN before BEGIN
    fastcgi.begin_request(7, fastcgi.FILTER),                       # refused: each answered
])
def test_a_flood_of_records_of_no_request_ends_the_connection(record):
    conn = ServerConnection()
    conn.receive_data(record * (fastcgi.MAX_IDLE_RECORDS + 1))
    with pytest.raises(RemoteProtocolError, match="records of no request"):
        _drain(conn)


def test_management_records_between_requests_are_counted_afresh_after_each_request():
    """php-fpm's bug76922 order, many times over: GET_VALUES, a request,
    GET_VALUES... on one kept connection is no flood."""
    conn = ServerConnection()
    few = GET_VALUES * (fastcgi.MAX_IDLE_RECORDS - 1)
    for rid in range(1, 5):
        conn.receive_data(few + fastcgi.encode_request({"A": "1"}, request_id=rid,
                                                       keep_conn=True))
        events = _drain(conn)
        assert type(events[0]) is Request and events[0].request_id == rid
        conn.request_done()


# ---- through a worker -----------------------------------------------------------------------


def _flood_again_and_again(address, stop: threading.Event) -> int:
    """GET_VALUES as fast as the socket takes them, never reading a reply,
    on a new connection each time pfm closes one; returns the connections."""
    chunk = memoryview(GET_VALUES * 512)
    connections = 0
    while not stop.is_set():
        sock = harness.connect(address, timeout=5)
        sock.setblocking(False)
        connections += 1
        pending = chunk
        try:
            while not stop.is_set():
                try:
                    pending = pending[sock.send(pending):] or chunk
                except BlockingIOError:
                    if stop.wait(0.01):
                        break
        except OSError:
            pass        # pfm closed it: reset, or EPIPE
        finally:
            sock.close()
    return connections


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_management_record_flood_does_not_hold_the_only_worker(pfm_factory, transport):
    """A client flooding GET_VALUES without reading, reconnecting each time
    it is cut, beside ordinary requests on a one-worker pool. On TCP the
    socket buffers grow to megabytes, so the worker used to answer some
    140,000 records (about 2 s of its time) per flooding connection before
    the replies blocked, and each ordinary request waited that long (the
    soak's slowpeers-tcp stalls)."""
    p = pfm_factory(pool={"pm": "static", "pm.max_children": 1,
                          "listen": "unix" if transport == "unix" else None})
    stop = threading.Event()
    flood = Background(_flood_again_and_again, p.address(), stop)
    took = []
    try:
        harness.wait_for(lambda: "closing connection" in p.log(), 15,
                         "pfm to cut a flooding connection")
        for _ in range(15):
            t0 = time.monotonic()
            assert fcgi_get(p.address(), "/hello", timeout=20).status == 200
            took.append(time.monotonic() - t0)
            time.sleep(0.05)    # spaced a little, as the soak's clients come
    finally:
        stop.set()
    assert flood.join_result(10) >= 2
    assert statistics.median(took) < 0.5, ["%.2f" % t for t in took]


# ---- a reload while every worker is busy ----------------------------------------------------


@pytest.mark.timeout(60)
def test_requests_waiting_on_a_busy_pool_survive_a_reload(pfm_factory, run_dir):
    """The only worker sleeps in a request and others wait: with a status
    page the pool manager takes them off the listen queue (to answer status
    and ping) and hands them to the next free worker. A reload now retires
    that generation: its worker finishes its request and leaves, and the
    waiting requests used to go with the old manager, closed unanswered
    (nginx: "upstream prematurely closed connection"; the soak's reload
    failures). They must be served, by the new generation if not the old."""
    p = pfm_factory(pool={"pm": "static", "pm.max_children": 1, "pm.status_path": "/status"})
    started = run_dir / "started"
    sleeper = Background(fcgi_get, p.address(), "/sleep", "s=2&started=%s" % started,
                         timeout=30)
    harness.wait_for(started.exists, 10, "the only worker to sleep")
    time.sleep(0.3)         # busy long enough that the manager takes the waiting ones
    waiting = [Background(fcgi_get, p.address(), "/pid", timeout=30) for _ in range(4)]
    time.sleep(0.5)
    assert not any(w.finished_at for w in waiting)
    mark = p.log_size()
    os.kill(p.pid, signal.SIGUSR2)
    p.wait_log(r"new pool generation is accepting", timeout=20, start=mark)
    answers = []
    for w in waiting:
        try:
            answers.append(w.join_result(30).status)
        except (OSError, fastcgi.RemoteProtocolError) as e:
            answers.append(repr(e))
    assert answers == [200] * 4
    assert sleeper.join_result(30).status == 200
