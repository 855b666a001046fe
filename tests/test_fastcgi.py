"""Tests for pfm.fastcgi, the sans-I/O FastCGI codec: bytes only, no sockets.

As in h11's tests, every input fixture is fed three ways (whole, one byte at a
time, and followed by the next keep-alive request) and must give the same
events and the same reply bytes each way.
"""

from __future__ import annotations

import random
import struct

import pytest

from pfm import fastcgi as f
from pfm.fastcgi import (
    CLOSED,
    NEED_DATA,
    Abort,
    ClientConnection,
    EndRequest,
    GetValuesResult,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    ServerConnection,
    Stderr,
    StdinData,
    StdinEnd,
    Stdout,
    UnknownTypeResult,
)

# --- helpers ----------------------------------------------------------------------


def raw_record(rtype, rid, content=b"", padding=0, version=1, clen=None):
    """A record built by hand, so tests can choose padding and lie about lengths."""
    clen = len(content) if clen is None else clen
    return struct.pack(">BBHHBx", version, rtype, rid, clen, padding) + content + b"\xaa" * padding


def begin_body(role=f.RESPONDER, flags=0):
    return struct.pack(">HB5x", role, flags)


NGINX_PARAMS = {
    "QUERY_STRING": "page=2&sort=asc",
    "REQUEST_METHOD": "POST",
    "CONTENT_TYPE": "application/x-www-form-urlencoded",
    "CONTENT_LENGTH": "30000",
    "SCRIPT_NAME": "/app",
    "REQUEST_URI": "/app/items?page=2&sort=asc",
    "DOCUMENT_URI": "/app/items",
    "DOCUMENT_ROOT": "/srv/www",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "http",
    "GATEWAY_INTERFACE": "CGI/1.1",
    "SERVER_SOFTWARE": "nginx/1.22.1",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "51234",
    "SERVER_ADDR": "127.0.0.1",
    "SERVER_PORT": "8080",
    "SERVER_NAME": "example.test",
    "REDIRECT_STATUS": "200",
    "PATH_INFO": "/items",
    "HTTP_HOST": "example.test:8080",
    "HTTP_USER_AGENT": "curl/7.88.1",
    "HTTP_ACCEPT": "*/*",
    "HTTP_COOKIE": "sid=" + "c" * 200,
}

NEXT_PARAMS = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/next"}
# The trailing bytes: the next request on a keep-alive connection.
NEXT_REQUEST = f.encode_request(NEXT_PARAMS, request_id=1, keep_conn=True)
NEXT_EVENTS = [Request(1, f.RESPONDER, True, NEXT_PARAMS), StdinEnd(1)]


def run(conn, chunks):
    """Feed chunks then EOF, acting as the worker does.

    Drains ``data_to_send()`` after every ``next_event()`` and calls
    ``request_done()`` once a request's input is over (StdinEnd or Abort).
    Returns (events, reply bytes, final sentinel).
    """
    events, sent = [], []

    def drain():
        while True:
            event = conn.next_event()
            sent.append(conn.data_to_send())
            if event is NEED_DATA or event is CLOSED:
                return event
            events.append(event)
            if isinstance(event, (StdinEnd, Abort)):
                conn.request_done()

    for chunk in chunks:
        conn.receive_data(chunk)
        assert drain() is NEED_DATA
    conn.receive_data(b"")
    final = drain()
    return events, b"".join(sent), final


def bytewise(data):
    return [data[i : i + 1] for i in range(len(data))]


def three_ways(data, **kwargs):
    """Events and replies for ``data`` fed whole, byte by byte, and with trailing bytes."""
    events, sent, final = run(ServerConnection(**kwargs), [data])
    assert final is CLOSED
    assert run(ServerConnection(**kwargs), bytewise(data)) == (events, sent, CLOSED)
    t_events, t_sent, t_final = run(ServerConnection(**kwargs), [data + NEXT_REQUEST])
    assert (t_events, t_sent, t_final) == (events + NEXT_EVENTS, sent, CLOSED)
    return events, sent


def assert_remote_error(data, match, **kwargs):
    """``data`` raises RemoteProtocolError fed whole and byte by byte; the connection stays dead."""
    for chunks in ([data], bytewise(data)):
        conn = ServerConnection(**kwargs)
        with pytest.raises(RemoteProtocolError, match=match):
            run(conn, chunks)
        with pytest.raises(RemoteProtocolError):
            conn.next_event()
        with pytest.raises(RemoteProtocolError):
            conn.receive_data(NEXT_REQUEST)


def client_events(data):
    """ClientConnection events for ``data``, checked whole and byte by byte."""
    results = []
    for chunks in ([data], bytewise(data)):
        conn = ClientConnection()
        events = []
        for chunk in chunks + [b""]:
            conn.receive_data(chunk)
            while (event := conn.next_event()) not in (NEED_DATA, CLOSED):
                events.append(event)
        assert event is CLOSED
        results.append(events)
    assert results[0] == results[1]
    return results[0]


def split_records(data):
    """(type, request id, content, padding) for each record of well-formed bytes."""
    out, i = [], 0
    while i < len(data):
        _, rtype, rid, clen, plen = struct.unpack_from(">BBHHBx", data, i)
        out.append((rtype, rid, data[i + 8 : i + 8 + clen], plen))
        i += 8 + clen + plen
    return out


# --- constants and encoding -----------------------------------------------------


def test_constants_match_the_spec():
    assert f.VERSION_1 == 1
    assert (f.BEGIN_REQUEST, f.ABORT_REQUEST, f.END_REQUEST, f.PARAMS, f.STDIN) == (1, 2, 3, 4, 5)
    assert (f.STDOUT, f.STDERR, f.DATA, f.GET_VALUES, f.GET_VALUES_RESULT) == (6, 7, 8, 9, 10)
    assert f.UNKNOWN_TYPE == 11
    assert (f.RESPONDER, f.AUTHORIZER, f.FILTER, f.KEEP_CONN) == (1, 2, 3, 1)
    assert (f.REQUEST_COMPLETE, f.CANT_MPX_CONN, f.OVERLOADED, f.UNKNOWN_ROLE) == (0, 1, 2, 3)
    assert f.MAX_CONTENT == 65535


def test_encode_record_writes_header_and_pads_to_8():
    assert f.encode_record(f.STDOUT, 0x0102, b"abc") == (
        b"\x01\x06\x01\x02\x00\x03\x05\x00" + b"abc" + b"\0" * 5
    )
    assert f.encode_record(f.PARAMS, 1) == b"\x01\x04\x00\x01\x00\x00\x00\x00"
    for n in (1, 7, 8, 9, 1000, 65528):
        assert len(f.encode_record(f.STDIN, 1, b"x" * n)) % 8 == 0


def test_encode_record_keeps_content_plus_padding_within_65535():
    record = f.encode_record(f.STDOUT, 1, b"x" * 65535)
    assert split_records(record) == [(f.STDOUT, 1, b"x" * 65535, 0)]


def test_encode_record_rejects_what_cannot_be_encoded():
    with pytest.raises(LocalProtocolError):
        f.encode_record(f.STDOUT, 1, b"x" * 65536)
    with pytest.raises(LocalProtocolError):
        f.encode_record(f.STDOUT, 65536, b"")
    with pytest.raises(LocalProtocolError):
        f.encode_record(256, 1, b"")
    with pytest.raises(LocalProtocolError):
        f.end_request(1, app_status=-1)
    with pytest.raises(LocalProtocolError):
        f.end_request_record(1, protocol_status=256)
    with pytest.raises(LocalProtocolError):
        f.begin_request(1, role=70000)


def test_encode_stream_never_emits_an_empty_record():
    # An empty record would end the stream early (php-fpm bug72185).
    assert f.encode_stream(f.STDOUT, 1, b"") == b""
    assert f.stdout(1, b"") == b""
    assert f.stderr(1, b"") == b""
    assert f.stdout(1, memoryview(b"")) == b""


def test_stdout_of_200kb_is_split_into_4_records_and_reassembled_exactly():
    body = bytes(random.Random(1).getrandbits(8) for _ in range(200 * 1024))
    data = f.stdout(7, body)
    records = split_records(data)
    assert len(records) == 4
    assert all(0 < len(content) <= f.MAX_CONTENT for _, _, content, _ in records)
    assert all(rtype == f.STDOUT and rid == 7 for rtype, rid, _, _ in records)
    assert b"".join(content for _, _, content, _ in records) == body
    assert f.parse_response(data + f.end_request(7)) == (body, b"", EndRequest(7, 0, 0))


def test_stdout_accepts_bytearray_and_memoryview():
    assert f.stdout(1, bytearray(b"hi")) == f.stdout(1, memoryview(b"hi")) == f.stdout(1, b"hi")


def test_end_request_is_empty_stdout_then_end_request():
    assert f.end_request(1) == (
        b"\x01\x06\x00\x01\x00\x00\x00\x00"  # empty STDOUT ends the stream
        b"\x01\x03\x00\x01\x00\x08\x00\x00"  # END_REQUEST header
        b"\x00\x00\x00\x00\x00\x00\x00\x00"  # appStatus 0, REQUEST_COMPLETE
    )
    assert f.end_request(258, app_status=0x01020304, protocol_status=f.OVERLOADED) == (
        b"\x01\x06\x01\x02\x00\x00\x00\x00"
        b"\x01\x03\x01\x02\x00\x08\x00\x00"
        b"\x01\x02\x03\x04\x02\x00\x00\x00"
    )
    assert f.end_request_record(3, 0, f.UNKNOWN_ROLE) == (
        b"\x01\x03\x00\x03\x00\x08\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00"
    )


@pytest.mark.parametrize("nlen", [0, 1, 127, 128, 300, 65536, 70000])
@pytest.mark.parametrize("vlen", [0, 127, 128, 65537])
def test_pairs_round_trip_with_1_and_4_byte_lengths(nlen, vlen):
    name, value = b"n" * nlen, bytes(range(256)) * (vlen // 256) + b"v" * (vlen % 256)
    encoded = f.encode_pairs([(name, value)])
    prefix = (1 if nlen < 128 else 4) + (1 if vlen < 128 else 4)
    assert len(encoded) == prefix + nlen + vlen
    if nlen >= 128:
        assert encoded[0] & 0x80
    assert f.decode_pairs(encoded) == [(name, value)]


def test_encode_pairs_takes_str_as_latin1():
    assert f.encode_pairs([("Ä", "é"), (b"k", b"v")]) == b"\x01\x01\xc4\xe9\x01\x01kv"


@pytest.mark.parametrize(
    "data",
    [
        b"\x05",  # only a name length
        b"\x01\x05ab",  # value longer than what is left
        b"\x80\x00",  # truncated 4-byte length
        b"\x01\x80\x00\x00",  # truncated 4-byte value length
        b"\x80\x00\x00\x10\x00abc",  # 4-byte name length beyond the end
        b"\x01\x01ab\x03",  # a good pair then a broken one
    ],
)
def test_decode_pairs_rejects_a_pair_that_overruns(data):
    with pytest.raises(RemoteProtocolError, match="overruns"):
        f.decode_pairs(data)


def test_client_helpers_compose_encode_request():
    pairs = [("A", "1"), ("B", "2")]
    assert f.params(3, pairs) == f.params(3, dict(pairs))
    assert f.params(3, pairs).endswith(f.encode_record(f.PARAMS, 3))
    assert f.stdin(3, b"").endswith(f.encode_record(f.STDIN, 3)) and len(f.stdin(3, b"")) == 8
    assert f.encode_request(pairs, b"body", 3, True) == (
        f.begin_request(3, f.RESPONDER, True) + f.params(3, pairs) + f.stdin(3, b"body")
    )
    assert split_records(f.begin_request(3, f.FILTER, True)) == [
        (f.BEGIN_REQUEST, 3, begin_body(f.FILTER, f.KEEP_CONN), 0)
    ]
    assert split_records(f.abort_request(3)) == [(f.ABORT_REQUEST, 3, b"", 0)]
    ((rtype, rid, content, _),) = split_records(f.get_values(["FCGI_MPXS_CONNS"]))
    assert (rtype, rid, f.decode_pairs(content)) == (f.GET_VALUES, 0, [(b"FCGI_MPXS_CONNS", b"")])


# --- events ------------------------------------------------------------------------


def test_events_refuse_invalid_request_ids():
    for bad in (0, -1, 65536):
        with pytest.raises(LocalProtocolError):
            Request(bad, f.RESPONDER, False, {})
        with pytest.raises(LocalProtocolError):
            StdinEnd(bad)
    with pytest.raises(LocalProtocolError):
        EndRequest(1, 1 << 32, 0)


def test_events_are_frozen():
    with pytest.raises(AttributeError):
        StdinEnd(1).request_id = 2


# --- ServerConnection: requests ---------------------------------------------------------


def test_nginx_request_with_body_over_several_stdin_records():
    body = b"".join(b"field%d=%s&" % (i, b"x" * 50) for i in range(500))[:30000]
    parts = [body[:16384], body[16384:16390], body[16390:]]
    data = (
        f.begin_request(1)
        + f.params(1, NGINX_PARAMS)
        + b"".join(f.encode_record(f.STDIN, 1, part) for part in parts)
        + f.encode_record(f.STDIN, 1)
    )
    events, sent = three_ways(data)
    assert events == [
        Request(1, f.RESPONDER, False, NGINX_PARAMS),
        *(StdinData(1, part) for part in parts),
        StdinEnd(1),
    ]
    assert sent == b""


def test_request_without_body():
    events, _ = three_ways(f.encode_request({"REQUEST_METHOD": "GET"}, request_id=9))
    assert events == [Request(9, f.RESPONDER, False, {"REQUEST_METHOD": "GET"}), StdinEnd(9)]


def test_empty_params_stream_gives_empty_dict():
    events, _ = three_ways(f.encode_request({}))
    assert events == [Request(1, f.RESPONDER, False, {}), StdinEnd(1)]


def test_params_are_latin1_strings_so_utf8_bytes_survive():
    path = "/café".encode()
    events, _ = three_ways(f.encode_request([(b"PATH_INFO", path)]))
    assert events[0].params == {"PATH_INFO": path.decode("latin-1")}
    assert events[0].params["PATH_INFO"].encode("latin-1") == path


def test_params_spanning_records_with_a_pair_cut_in_the_middle():
    blob = f.encode_pairs(NGINX_PARAMS.items())
    cuts = [0, 1, 2, 37, len(blob) // 2, len(blob)]
    data = (
        f.begin_request(4)
        + b"".join(f.encode_record(f.PARAMS, 4, blob[a:b]) for a, b in zip(cuts, cuts[1:]))
        + f.encode_record(f.PARAMS, 4)
        + f.stdin(4, b"")
    )
    events, _ = three_ways(data)
    assert events == [Request(4, f.RESPONDER, False, NGINX_PARAMS), StdinEnd(4)]


def test_long_names_and_values_in_params():
    big = {"N" * 128: "v" * 127, "HTTP_X_BIG": "x" * 70000, "A" * 127: "w" * 128}
    data = f.begin_request(1) + f.params(1, big) + f.stdin(1, b"")
    assert len(split_records(data)) == 5  # BEGIN, 2 PARAMS + empty one, empty STDIN
    events, _ = three_ways(data)
    assert events[0].params == big


def test_padding_of_any_length_is_skipped():
    data = (
        raw_record(f.BEGIN_REQUEST, 1, begin_body(), padding=3)
        + raw_record(f.PARAMS, 1, f.encode_pairs([("A", "1")]), padding=255)
        + raw_record(f.PARAMS, 1, padding=1)
        + raw_record(f.STDIN, 1, b"body", padding=0)
        + raw_record(f.STDIN, 1, padding=7)
    )
    events, _ = three_ways(data)
    assert events == [
        Request(1, f.RESPONDER, False, {"A": "1"}),
        StdinData(1, b"body"),
        StdinEnd(1),
    ]


def test_content_plus_padding_beyond_65535_is_accepted():
    # The spec bounds each field, not their sum (php-fpm is stricter).
    body = b"b" * 65535
    data = (
        f.begin_request(1)
        + f.params(1, {})
        + raw_record(f.STDIN, 1, body, padding=255)
        + f.encode_record(f.STDIN, 1)
    )
    events, _ = three_ways(data)
    assert events[1:] == [StdinData(1, body), StdinEnd(1)]


def test_between_requests_is_false_while_any_byte_of_a_request_waits():
    """What the worker watches a kept-alive connection by: an idle one has no
    deadline, one with part of a request (a record header, params) has."""
    conn = ServerConnection()
    assert conn.between_requests
    data = f.encode_request({"N": "1"}, b"", request_id=1, keep_conn=True)
    conn.receive_data(data[:3])
    assert conn.next_event() is NEED_DATA and not conn.between_requests
    conn.receive_data(data[3:])
    assert isinstance(conn.next_event(), Request) and not conn.between_requests
    assert conn.next_event() == StdinEnd(1) and not conn.between_requests
    conn.request_done()
    assert conn.next_event() is NEED_DATA and conn.between_requests
    conn.receive_data(f.get_values(["FCGI_MPXS_CONNS"]))
    assert conn.next_event() is NEED_DATA and conn.between_requests   # answered, nothing left
    assert conn.data_to_send()


def test_keep_alive_serves_requests_in_sequence_after_request_done():
    conn = ServerConnection()
    assert conn.active_request_id is None and conn.keep_conn is False
    conn.receive_data(f.encode_request({"N": "1"}, b"one", request_id=1, keep_conn=True))
    assert conn.next_event() == Request(1, f.RESPONDER, True, {"N": "1"})
    assert conn.active_request_id == 1 and conn.keep_conn is True
    assert conn.next_event() == StdinData(1, b"one")
    assert conn.next_event() == StdinEnd(1)
    assert conn.next_event() is NEED_DATA
    conn.request_done()
    assert conn.active_request_id is None and conn.keep_conn is False
    conn.receive_data(f.encode_request({"N": "2"}, b"", request_id=1, keep_conn=False))
    assert conn.next_event() == Request(1, f.RESPONDER, False, {"N": "2"})
    assert conn.keep_conn is False
    assert conn.next_event() == StdinEnd(1)
    conn.request_done()
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    assert conn.next_event() is CLOSED


def test_request_done_before_stdin_end_drops_the_rest_of_that_body():
    # The app may answer without reading the body; its remaining STDIN
    # records then concern an inactive id and are ignored (spec 3.3).
    conn = ServerConnection()
    conn.receive_data(f.begin_request(1, keep_conn=True) + f.params(1, {}))
    assert conn.next_event() == Request(1, f.RESPONDER, True, {})
    conn.request_done()
    conn.receive_data(f.stdin(1, b"late body") + NEXT_REQUEST)
    assert [conn.next_event(), conn.next_event(), conn.next_event()] == [*NEXT_EVENTS, NEED_DATA]


def test_empty_stdin_records_before_begin_request_are_skipped():
    # php-fpm skips them too; some servers send a stray stream terminator.
    data = f.encode_record(f.STDIN, 1) + f.encode_record(f.STDIN, 5) + f.encode_request({})
    events, _ = three_ways(data)
    assert events == [Request(1, f.RESPONDER, False, {}), StdinEnd(1)]


def test_data_records_are_ignored():
    data = (
        f.begin_request(1)
        + f.params(1, {})
        + f.encode_record(f.DATA, 1, b"filter data")
        + f.encode_record(f.DATA, 1)
        + f.stdin(1, b"")
    )
    events, _ = three_ways(data)
    assert events == [Request(1, f.RESPONDER, False, {}), StdinEnd(1)]


def test_abort_request_gives_abort_and_drops_the_rest_of_the_request():
    data = (
        f.begin_request(2)
        + f.params(2, {"A": "1"})
        + f.encode_record(f.STDIN, 2, b"part")
        + f.abort_request(2)
        + f.encode_record(f.STDIN, 2, b"more")
        + f.encode_record(f.STDIN, 2)
    )
    events, _ = three_ways(data)
    assert events == [
        Request(2, f.RESPONDER, False, {"A": "1"}),
        StdinData(2, b"part"),
        Abort(2),
    ]


def test_abort_before_params_complete_is_reported():
    data = f.begin_request(2) + f.encode_record(f.PARAMS, 2, b"\x01\x01ab") + f.abort_request(2)
    events, _ = three_ways(data)
    assert events == [Abort(2)]


def test_abort_for_an_inactive_request_is_ignored():
    # It may cross our END_REQUEST on the wire.
    events, _ = three_ways(f.abort_request(3) + f.encode_request({}) + f.abort_request(1))
    assert events == [Request(1, f.RESPONDER, False, {}), StdinEnd(1)]


def test_body_streams_with_a_flat_receive_buffer():
    conn = ServerConnection()
    conn.receive_data(f.begin_request(1) + f.params(1, {}))
    assert isinstance(conn.next_event(), Request)
    chunk = f.encode_record(f.STDIN, 1, b"z" * 32768)
    total = 0
    for _ in range(640):  # 20 MiB of body
        conn.receive_data(chunk)
        event = conn.next_event()
        total += len(event.data)
        assert conn.next_event() is NEED_DATA
        assert len(conn._buf) <= len(chunk)
    assert total == 640 * 32768


# --- ServerConnection: management records and refusals ------------------------------


def test_get_values_answers_only_known_names_and_keeps_the_connection():
    # php-fpm bug76922: GET_VALUES, a request, GET_VALUES again on one connection.
    ask = f.get_values(["FCGI_MAX_CONNS", "FCGI_UNKNOWN_THING", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"])
    data = ask + f.encode_request({"A": "1"}, keep_conn=True) + ask
    events, sent = three_ways(data, max_conns=10, max_reqs=20)
    assert events == [Request(1, f.RESPONDER, True, {"A": "1"}), StdinEnd(1)]
    answer = client_events(sent)
    expected = GetValuesResult(
        {"FCGI_MAX_CONNS": "10", "FCGI_MAX_REQS": "20", "FCGI_MPXS_CONNS": "0"}
    )
    assert answer == [expected, expected]
    assert all((rtype, rid) == (f.GET_VALUES_RESULT, 0) for rtype, rid, _, _ in split_records(sent))


def test_get_values_for_one_name_answers_that_name_only():
    _, sent = three_ways(f.get_values(["FCGI_MPXS_CONNS"]))
    assert client_events(sent) == [GetValuesResult({"FCGI_MPXS_CONNS": "0"})]
    _, sent = three_ways(f.get_values(["NOPE"]))
    assert client_events(sent) == [GetValuesResult({})]


def test_get_values_while_a_request_is_active():
    data = (
        f.begin_request(1) + f.get_values(["FCGI_MPXS_CONNS"]) + f.params(1, {}) + f.stdin(1, b"")
    )
    events, sent = three_ways(data)
    assert events == [Request(1, f.RESPONDER, False, {}), StdinEnd(1)]
    assert client_events(sent) == [GetValuesResult({"FCGI_MPXS_CONNS": "0"})]


@pytest.mark.parametrize("role", [f.AUTHORIZER, f.FILTER, 0, 99])
def test_roles_other_than_responder_get_unknown_role_and_their_records_are_ignored(role):
    data = (
        f.begin_request(5, role=role)
        + f.params(5, {"X": "1"})
        + f.encode_record(f.DATA, 5, b"filter input")
        + f.encode_record(f.DATA, 5)
        + f.stdin(5, b"body")
        + f.encode_request({"OK": "1"}, request_id=6)
    )
    events, sent = three_ways(data)
    assert events == [Request(6, f.RESPONDER, False, {"OK": "1"}), StdinEnd(6)]
    assert sent == f.end_request_record(5, 0, f.UNKNOWN_ROLE)
    assert client_events(sent) == [EndRequest(5, 0, f.UNKNOWN_ROLE)]


def test_second_concurrent_request_gets_cant_mpx_conn_and_first_continues():
    data = (
        f.begin_request(1)
        + f.encode_record(f.PARAMS, 1, f.encode_pairs([("FIRST", "yes")]))
        + f.begin_request(2, keep_conn=True)
        + f.params(2, {"SECOND": "no"})
        + f.encode_record(f.PARAMS, 1)
        + f.encode_record(f.STDIN, 2, b"ignored")
        + f.stdin(1, b"first body")
        + f.encode_record(f.STDIN, 2)
    )
    events, sent = three_ways(data)
    assert events == [
        Request(1, f.RESPONDER, False, {"FIRST": "yes"}),
        StdinData(1, b"first body"),
        StdinEnd(1),
    ]
    assert sent == f.end_request_record(2, 0, f.CANT_MPX_CONN)


def test_refused_request_id_can_begin_again_later():
    conn = ServerConnection()
    conn.receive_data(f.begin_request(1) + f.begin_request(2))
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == f.end_request_record(2, 0, f.CANT_MPX_CONN)
    assert conn.data_to_send() == b""
    conn.request_done()
    conn.receive_data(f.encode_request({}, request_id=2))
    assert [conn.next_event(), conn.next_event()] == [Request(2, 1, False, {}), StdinEnd(2)]


@pytest.mark.parametrize("rid", [0, 1, 3])
@pytest.mark.parametrize("rtype", [0, 12, 200, 255])
def test_unknown_record_type_is_answered_with_unknown_type(rtype, rid):
    events, sent = three_ways(f.encode_record(rtype, rid, b"whatever") + f.encode_request({}))
    assert events == [Request(1, f.RESPONDER, False, {}), StdinEnd(1)]
    assert sent == b"\x01\x0b\x00\x00\x00\x08\x00\x00" + bytes([rtype]) + b"\0" * 7
    assert client_events(sent) == [UnknownTypeResult(rtype)]


def test_data_to_send_is_empty_when_nothing_is_queued():
    conn = ServerConnection()
    assert conn.data_to_send() == b""


# --- ServerConnection: misuse and malformed input ----------------------------------


def test_request_done_without_active_request_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        ServerConnection().request_done()


def test_receive_data_after_eof_is_a_local_error():
    conn = ServerConnection()
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"more")


def test_eof_between_requests_is_closed_even_mid_request():
    # EOF on a record boundary is not a protocol error: the worker decides.
    conn = ServerConnection()
    conn.receive_data(f.begin_request(1) + f.params(1, {}))
    conn.receive_data(b"")
    assert conn.next_event() == Request(1, f.RESPONDER, False, {})
    assert conn.next_event() is CLOSED


@pytest.mark.parametrize("version", [0, 2, 255])
def test_bad_version_is_rejected(version):
    assert_remote_error(raw_record(f.BEGIN_REQUEST, 1, begin_body(), version=version), "version")


@pytest.mark.parametrize("cut", [1, 4, 7])
def test_eof_mid_header_is_rejected(cut):
    assert_remote_error(f.encode_request({})[:cut], "closed mid-record")


def test_eof_mid_content_is_rejected():
    assert_remote_error(f.begin_request(1) + f.params(1, {"A": "1"})[:10], "closed mid-record")


def test_eof_mid_padding_is_rejected():
    assert_remote_error(raw_record(f.STDIN, 1, b"", padding=8)[:-1], "closed mid-record")


@pytest.mark.parametrize("length", [0, 7, 9, 16])
def test_begin_request_body_must_be_8_bytes(length):
    assert_remote_error(
        raw_record(
            f.BEGIN_REQUEST, 1, b"\0\x01" + b"\0" * (length - 2) if length >= 2 else b"\0" * length
        ),
        "not 8",
    )


def test_params_over_max_params_bytes_are_rejected():
    pairs = {"HTTP_X": "y" * 600}
    assert_remote_error(f.encode_request(pairs), "max_params_bytes", max_params_bytes=500)
    # The limit is on the whole stream, not on each record.
    blob = f.encode_pairs(pairs.items())
    split = f.begin_request(1) + b"".join(
        f.encode_record(f.PARAMS, 1, blob[i : i + 100]) for i in range(0, len(blob), 100)
    )
    assert_remote_error(split, "max_params_bytes", max_params_bytes=500)
    events, _ = three_ways(f.encode_request(pairs), max_params_bytes=len(blob))
    assert events[0].params == pairs


def test_pair_overrunning_the_params_stream_is_rejected():
    data = (
        f.begin_request(1)
        + f.encode_record(f.PARAMS, 1, b"\x04\x10NAMEvalue")
        + f.encode_record(f.PARAMS, 1)
    )
    assert_remote_error(data, "overruns")


def test_stdin_for_a_request_that_is_not_active_is_rejected():
    assert_remote_error(f.encode_record(f.STDIN, 1, b"body"), "not active")
    assert_remote_error(f.begin_request(1) + f.params(1, {}) + f.stdin(2, b"x"), "not active")
    assert_remote_error(f.encode_record(f.PARAMS, 3, b"\x01\x01ab"), "not active")


def test_stdin_before_params_end_is_rejected():
    assert_remote_error(f.begin_request(1) + f.stdin(1, b"x"), "before its PARAMS stream ended")


def test_params_after_params_end_is_rejected():
    data = f.begin_request(1) + f.params(1, {}) + f.encode_record(f.PARAMS, 1, b"\x01\x01ab")
    assert_remote_error(data, "after its PARAMS stream ended")


def test_stdin_after_stdin_end_is_rejected():
    conn = ServerConnection()
    conn.receive_data(f.encode_request({}) + f.encode_record(f.STDIN, 1, b"x"))
    assert conn.next_event() == Request(1, f.RESPONDER, False, {})
    assert conn.next_event() == StdinEnd(1)
    with pytest.raises(RemoteProtocolError, match="after its STDIN stream ended"):
        conn.next_event()


def test_second_begin_for_the_active_id_is_rejected():
    assert_remote_error(f.begin_request(1) + f.begin_request(1), "already active")


@pytest.mark.parametrize("rtype", [f.BEGIN_REQUEST, f.ABORT_REQUEST, f.PARAMS, f.STDIN, f.DATA])
def test_application_record_with_request_id_0_is_rejected(rtype):
    content = begin_body() if rtype == f.BEGIN_REQUEST else b""
    assert_remote_error(f.encode_record(rtype, 0, content), "request id 0")


def test_get_values_with_a_request_id_is_rejected():
    assert_remote_error(f.encode_record(f.GET_VALUES, 1, f.encode_pairs([("A", "")])), "GET_VALUES")


def test_malformed_get_values_is_rejected():
    assert_remote_error(f.encode_record(f.GET_VALUES, 0, b"\x05\x00ab"), "overruns")


@pytest.mark.parametrize(
    "rtype", [f.END_REQUEST, f.STDOUT, f.STDERR, f.GET_VALUES_RESULT, f.UNKNOWN_TYPE]
)
def test_records_only_an_application_sends_are_rejected(rtype):
    assert_remote_error(f.encode_record(rtype, 1, b"\0" * 8), "application to server")


def test_constructor_limits_must_be_positive():
    with pytest.raises(ValueError):
        ServerConnection(max_params_bytes=0)


# --- ClientConnection and response helpers ------------------------------------------


def test_client_parses_every_application_record_type():
    data = (
        f.stdout(1, b"Status: 200 OK\r\n\r\nhello")
        + f.stderr(1, b"a warning")
        + f.encode_record(f.STDERR, 1)
        + f.end_request(1, app_status=3)
        + f.encode_record(f.GET_VALUES_RESULT, 0, f.encode_pairs([("FCGI_MPXS_CONNS", "0")]))
        + f.encode_record(f.UNKNOWN_TYPE, 0, bytes([42]) + b"\0" * 7)
        + f.end_request_record(2, 0, f.CANT_MPX_CONN)
    )
    assert client_events(data) == [
        Stdout(1, b"Status: 200 OK\r\n\r\nhello"),
        Stderr(1, b"a warning"),
        EndRequest(1, 3, f.REQUEST_COMPLETE),
        GetValuesResult({"FCGI_MPXS_CONNS": "0"}),
        UnknownTypeResult(42),
        EndRequest(2, 0, f.CANT_MPX_CONN),
    ]


@pytest.mark.parametrize(
    "data, match",
    [
        (raw_record(f.END_REQUEST, 1, b"\0" * 7), "not 8"),
        (raw_record(f.UNKNOWN_TYPE, 0, b"\0" * 9), "not 8"),
        (raw_record(f.STDOUT, 0, b"x"), "request id 0"),
        (f.begin_request(1), "unexpected record type"),
        (raw_record(f.STDOUT, 1, b"x", version=0), "version"),
        (f.stdout(1, b"abc")[:-1], "closed mid-record"),
        (raw_record(f.GET_VALUES_RESULT, 0, b"\x09\x00"), "overruns"),
    ],
)
def test_client_rejects_malformed_application_output(data, match):
    conn = ClientConnection()
    conn.receive_data(data)
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match=match):
        while conn.next_event() is not CLOSED:
            pass
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_parse_response_joins_streams():
    data = (
        f.stdout(1, b"Content-Type: text/plain\r\n\r\n")
        + f.stderr(1, b"e1")
        + f.stdout(1, b"body")
        + f.stderr(1, b"e2")
        + f.end_request(1)
    )
    assert f.parse_response(data) == (
        b"Content-Type: text/plain\r\n\r\nbody",
        b"e1e2",
        EndRequest(1, 0, 0),
    )
    assert f.parse_response(f.stdout(1, b"partial")) == (b"partial", b"", None)


def test_split_headers_reads_status_and_defaults_to_200():
    assert f.split_headers(b"Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\nnope") == (
        404,
        [("Content-Type", "text/html")],
        b"nope",
    )
    assert f.split_headers(b"Content-Type: text/plain\r\nX-A:  b \r\n\r\nbody\r\n\r\nmore") == (
        200,
        [("Content-Type", "text/plain"), ("X-A", "b")],
        b"body\r\n\r\nmore",
    )
    assert f.split_headers(b"Status: 302\nLocation: /x\n\n") == (302, [("Location", "/x")], b"")


@pytest.mark.parametrize(
    "data", [b"Content-Type: text/plain\r\n", b"no colon\r\n\r\n", b"Status: abc\r\n\r\n"]
)
def test_split_headers_rejects_a_broken_header_block(data):
    with pytest.raises(RemoteProtocolError):
        f.split_headers(data)


# --- fuzzing ---------------------------------------------------------------------------


def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif choice == 1:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
        elif choice == 2:
            del data[pos : pos + rng.randint(1, 9)]
        elif choice == 3:
            del data[pos:]
        elif choice == 4:
            data[pos:pos] = data[: rng.randint(0, 64)]
        else:
            start = rng.randrange(len(data) + 1)
            data[pos:pos] = data[start : start + rng.randint(8, 40)]
    return bytes(data)


def _mutate_records(rng, data):
    """Keep the framing valid and break the conversation instead."""
    records = [list(r) for r in split_records(data)]
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(6)
        i = rng.randrange(len(records))
        if choice == 0:
            del records[i]
        elif choice == 1:
            records.insert(rng.randrange(len(records) + 1), list(records[i]))
        elif choice == 2:
            j = rng.randrange(len(records))
            records[i], records[j] = records[j], records[i]
        elif choice == 3:
            records[i][0] = rng.choice((0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12))
        elif choice == 4:
            records[i][1] = rng.choice((0, 1, 2, 3, 65535))
        elif records[i][2]:
            content = bytearray(records[i][2])
            content[rng.randrange(len(content))] = rng.randrange(256)
            records[i][2] = bytes(content)
        if not records:
            break
    return b"".join(raw_record(t, r, c, padding=rng.choice((0, p, 7))) for t, r, c, p in records)


def _random_chunks(rng, data):
    chunks, i = [], 0
    while i < len(data):
        n = rng.choice((1, 3, 8, 64, 1000))
        chunks.append(data[i : i + n])
        i += n
    return chunks


FUZZ_SEEDS = [
    f.encode_request(NGINX_PARAMS, b"x" * 300, keep_conn=True),
    f.get_values(["FCGI_MAX_CONNS", "FCGI_MPXS_CONNS"]) + f.encode_request({"A": "1"}),
    f.begin_request(1)
    + f.begin_request(2, role=f.FILTER)
    + f.params(1, {"B": "2"})
    + f.stdin(2, b"no")
    + f.abort_request(1),
    f.encode_request({"Q": "1"}, request_id=3, keep_conn=True) + f.encode_request({}, b"yy"),
]


def test_fuzzed_server_input_raises_only_remote_protocol_error():
    rng = random.Random(20240601)
    for _ in range(2000):
        seed = rng.choice(FUZZ_SEEDS)
        data = _mutate(rng, seed) if rng.random() < 0.4 else _mutate_records(rng, seed)
        try:
            run(ServerConnection(max_params_bytes=4096), _random_chunks(rng, data))
        except RemoteProtocolError:
            pass


def test_fuzzed_application_output_raises_only_remote_protocol_error():
    rng = random.Random(7)
    seed = (
        f.stdout(1, b"Status: 200 OK\r\n\r\n" + b"b" * 100)
        + f.stderr(1, b"err")
        + f.end_request(1)
        + f.encode_record(f.GET_VALUES_RESULT, 0, f.encode_pairs([("FCGI_MPXS_CONNS", "0")]))
        + f.encode_record(f.UNKNOWN_TYPE, 0, b"\x0c" + b"\0" * 7)
    )
    for _ in range(1000):
        data = _mutate(rng, seed) if rng.random() < 0.5 else _mutate_records(rng, seed)
        try:
            f.parse_response(data)
        except RemoteProtocolError:
            pass
