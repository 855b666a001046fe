"""Property-based fuzzing (hypothesis) of pfm/fastcgi.py and of the params ->
environ step (pfm/wsgi.py make_environ).

What is checked, beyond "no crash":

* any bytes at all: the server side raises nothing but RemoteProtocolError,
  gives the same events, replies and ending however the bytes are split, and
  stays dead after an error (h11's rule for a fuzz target);
* arbitrary record sequences: what is accepted, answered, ignored or refused
  is exactly what a small reference model of the rules (spec 3.3, 4, 5 as
  pfm applies them) says, record by record; the model is written apart from
  the codec's hot path so that a rewrite of that path (or a compiled twin)
  cannot change a decision unnoticed;
* valid conversations (keep-alive requests, params and bodies cut at any
  point, management records between them, aborts) give exactly the events
  and replies built from what was sent, independently of the model;
* round trips: name-value pairs, records and streams, whole responses, CGI
  header blocks;
* make_environ on arbitrary params: PEP 3333's required keys, native
  strings, the SCRIPT_NAME/PATH_INFO split, url_scheme.

Bounded for CI: every test has max_examples and a deadline (see FUZZ), the
whole file runs in well under 30 s.
"""

from __future__ import annotations

import struct

from harness import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from test_fastcgi import raw_record

from pfm import fastcgi as f
from pfm import wsgi
from pfm.fastcgi import (
    CLOSED,
    NEED_DATA,
    Abort,
    ClientConnection,
    EndRequest,
    RemoteProtocolError,
    Request,
    ServerConnection,
    Stderr,
    StdinData,
    StdinEnd,
    Stdout,
)

FUZZ = fuzz_settings(max_examples=150)
FUZZ_SMALL = fuzz_settings(max_examples=80)

KNOWN_VALUES = {"FCGI_MAX_CONNS": "1", "FCGI_MAX_REQS": "1", "FCGI_MPXS_CONNS": "0"}


# ---- driving the codec as the worker does -----------------------------------------------


def drive(data: bytes, cuts, max_params: int = 1 << 20):
    """Feed `data` cut at `cuts`, then EOF, as pfm/worker.py does: drain the
    replies after every next_event(), request_done() after StdinEnd or Abort,
    and send what is queued when the connection fails.

    Returns (events, reply bytes, ending), ending "closed" or "error". Any
    exception other than RemoteProtocolError propagates and fails the test.
    """
    conn = ServerConnection(max_params_bytes=max_params)
    events: list = []
    sent: list[bytes] = []
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])] + [b""]
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                sent.append(conn.data_to_send())
                if event is NEED_DATA:
                    assert chunk, "NEED_DATA after EOF"
                    break
                if event is CLOSED:
                    assert not chunk, "CLOSED before EOF"
                    return events, b"".join(sent), "closed"
                events.append(event)
                if isinstance(event, (StdinEnd, Abort)):
                    conn.request_done()
    except RemoteProtocolError:
        sent.append(conn.data_to_send())
        # Dead for good: no further input is taken and no event comes.
        for call in (conn.next_event, lambda: conn.receive_data(b"more")):
            try:
                call()
            except RemoteProtocolError:
                continue
            raise AssertionError("a failed connection accepted more") from None
        return events, b"".join(sent), "error"
    raise AssertionError("no ending after EOF")


# ---- the reference model -----------------------------------------------------------------


def model_pairs(blob: bytes):
    """Name-value pairs (spec 3.4) as a list, or None if one overruns the blob."""
    out, i = [], 0
    lengths = []
    while i < len(blob):
        lengths.clear()
        for _ in range(2):
            if i >= len(blob):
                return None
            if blob[i] < 128:
                lengths.append(blob[i])
                i += 1
            elif i + 4 <= len(blob):
                lengths.append(int.from_bytes(blob[i:i + 4], "big") & 0x7FFFFFFF)
                i += 4
            else:
                return None
        name_end = i + lengths[0]
        value_end = name_end + lengths[1]
        if value_end > len(blob):
            return None
        out.append((blob[i:name_end], blob[name_end:value_end]))
        i = value_end
    return out


class Refused(Exception):
    """The model's verdict: the peer broke the protocol here."""


class Model:
    """What pfm's server side must do with each record, one request at a time.

    States: idle, or a request `active` in its "params" or "stdin" phase.
    The driver (like the worker) ends a request at StdinEnd or Abort; an id
    ended before its STDIN was complete, or refused, is ignored until a new
    BEGIN_REQUEST revives it (spec 3.3: records of inactive ids are ignored,
    but a stray STDIN/PARAMS for an id never begun is a protocol error).
    """

    def __init__(self, max_params: int):
        self.max_params = max_params
        self.active = None
        self.phase = None
        self.keep = False
        self.params = b""
        self.ignored: set[int] = set()
        self.events: list = []
        self.replies: list[bytes] = []

    def end(self, completed: bool) -> None:
        if not completed:
            self.ignored.add(self.active)
        self.active = self.phase = None

    def record(self, rtype: int, rid: int, content: bytes) -> None:
        if self.active is not None and rid == self.active:
            self.active_record(rtype, rid, content)
        elif rtype == f.BEGIN_REQUEST:
            self.begin(rid, content)
        elif rtype in (f.STDIN, f.PARAMS, f.ABORT_REQUEST, f.DATA):
            if rid == 0:
                raise Refused("application record with id 0")
            if rid in self.ignored or rtype in (f.ABORT_REQUEST, f.DATA):
                return
            if rtype == f.STDIN and not content and self.active is None:
                return   # php-fpm's habit: an empty STDIN before any request
            raise Refused("stream record of an inactive request")
        else:
            self.management(rtype, rid, content)

    def active_record(self, rtype: int, rid: int, content: bytes) -> None:
        if rtype == f.STDIN:
            if self.phase != "stdin":
                raise Refused("STDIN before the params ended")
            if content:
                self.events.append(StdinData(rid, content))
            else:
                self.events.append(StdinEnd(rid))
                self.end(completed=True)
        elif rtype == f.PARAMS:
            if self.phase != "params":
                raise Refused("PARAMS after the params ended")
            if content:
                self.params += content
                if len(self.params) > self.max_params:
                    raise Refused("params too big")
                return
            pairs = model_pairs(self.params)
            if pairs is None:
                raise Refused("a pair overruns the params")
            params = {n.decode("latin-1"): v.decode("latin-1") for n, v in pairs}
            self.events.append(Request(rid, f.RESPONDER, self.keep, params))
            self.phase = "stdin"
        elif rtype == f.ABORT_REQUEST:
            self.events.append(Abort(rid))
            self.end(completed=False)
        elif rtype == f.BEGIN_REQUEST:
            raise Refused("BEGIN_REQUEST for the active id")
        else:
            self.management(rtype, rid, content)

    def begin(self, rid: int, content: bytes) -> None:
        if rid == 0 or len(content) != 8:
            raise Refused("bad BEGIN_REQUEST")
        role, flags = struct.unpack(">HB", content[:3])
        if role != f.RESPONDER or self.active is not None:
            status = f.UNKNOWN_ROLE if role != f.RESPONDER else f.CANT_MPX_CONN
            self.replies.append(f.end_request_record(rid, 0, status))
            self.ignored.add(rid)
            return
        self.ignored.discard(rid)
        self.active, self.phase, self.keep, self.params = rid, "params", bool(flags & 1), b""

    def management(self, rtype: int, rid: int, content: bytes) -> None:
        if rtype == f.DATA:
            return    # DATA of the active request: only FILTER reads it
        if rtype == f.GET_VALUES:
            pairs = model_pairs(content)
            if rid != 0 or pairs is None:
                raise Refused("bad GET_VALUES")
            answer = {}
            for name, _ in pairs:
                key = name.decode("latin-1")
                if key in KNOWN_VALUES:
                    answer[key] = KNOWN_VALUES[key]
            self.replies.append(raw_record_padded(f.GET_VALUES_RESULT, 0,
                                                  f.encode_pairs(answer.items())))
        elif rtype in (f.END_REQUEST, f.STDOUT, f.STDERR, f.GET_VALUES_RESULT, f.UNKNOWN_TYPE):
            raise Refused("a record only an application sends")
        else:
            self.replies.append(raw_record(f.UNKNOWN_TYPE, 0, bytes([rtype]) + bytes(7)))


def raw_record_padded(rtype: int, rid: int, content: bytes) -> bytes:
    """A record padded to 8 with zeros, as the codec writes (checked by
    test_streams_are_cut_into_padded_records_that_reassemble_exactly)."""
    return f.encode_record(rtype, rid, content)


def model_outcome(data: bytes, max_params: int):
    """(events, replies, ending) the model predicts for `data` then EOF."""
    model = Model(max_params)
    i = 0
    try:
        while i < len(data):
            if len(data) - i < 8:
                raise Refused("EOF mid-header")
            version, rtype, rid, clen, plen = struct.unpack_from(">BBHHBx", data, i)
            if version != 1:
                raise Refused("version")
            if i + 8 + clen + plen > len(data):
                raise Refused("EOF mid-record")
            model.record(rtype, rid, data[i + 8:i + 8 + clen])
            i += 8 + clen + plen
    except Refused:
        return model.events, b"".join(model.replies), "error"
    return model.events, b"".join(model.replies), "closed"


# ---- strategies ---------------------------------------------------------------------------

latin1_text = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40)
# Lengths on both sides of 127, where the pair encoding switches to 4 bytes.
pair_bytes = st.one_of(st.binary(max_size=12), st.binary(min_size=120, max_size=300))
pairs = st.lists(st.tuples(pair_bytes, pair_bytes), max_size=8)
request_ids = st.sampled_from([1, 1, 1, 2, 3, 255, 256, 65535])


@st.composite
def cuts_for(draw, data: bytes):
    """Where to split `data` into reads: nowhere, everywhere, or anywhere."""
    how = draw(st.sampled_from(["whole", "bytewise", "random"]))
    if how == "whole" or not data:
        return []
    if how == "bytewise" and len(data) < 3000:
        return list(range(1, len(data)))
    return draw(st.lists(st.integers(0, len(data)), max_size=12))


@st.composite
def records(draw):
    """One record, usually of a type and id that means something here."""
    rtype = draw(st.sampled_from([
        f.BEGIN_REQUEST, f.BEGIN_REQUEST, f.PARAMS, f.PARAMS, f.PARAMS, f.STDIN, f.STDIN,
        f.STDIN, f.ABORT_REQUEST, f.DATA, f.GET_VALUES, f.GET_VALUES, f.END_REQUEST,
        f.STDOUT, f.STDERR, f.GET_VALUES_RESULT, f.UNKNOWN_TYPE, 0, 12, 200, 255]))
    rid = draw(st.sampled_from([0, 1, 1, 1, 2, 65535])) if rtype != f.GET_VALUES else \
        draw(st.sampled_from([0, 0, 0, 1]))
    if rtype == f.BEGIN_REQUEST and draw(st.booleans()):
        role = draw(st.sampled_from([f.RESPONDER] * 4 + [0, f.AUTHORIZER, f.FILTER, 99]))
        content = struct.pack(">HB5x", role, draw(st.sampled_from([0, 1, 255])))
    elif rtype in (f.PARAMS, f.GET_VALUES) and draw(st.booleans()):
        blob = f.encode_pairs(draw(pairs))
        if rtype == f.GET_VALUES:
            names = draw(st.lists(st.sampled_from(list(KNOWN_VALUES) + ["X", ""]), max_size=4))
            blob = f.encode_pairs((n, "") for n in names)
        content = blob[:draw(st.integers(0, len(blob)))] if draw(st.booleans()) else blob
    elif rtype in (f.PARAMS, f.STDIN) and draw(st.booleans()):
        content = b""      # the end of a stream
    else:
        content = draw(st.binary(max_size=40))
    padding = draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=7),
                             st.binary(min_size=8, max_size=300)))
    version = draw(st.sampled_from([1] * 30 + [0, 2, 255]))
    return raw_record(rtype, rid, content[:65535], len(padding[:255]), version)


record_streams = st.lists(records(), max_size=14).map(b"".join)


@st.composite
def sessions(draw):
    """A valid keep-alive conversation and the (events, replies) it must give.

    Each request: BEGIN_REQUEST, its params cut into PARAMS records at any
    points, its body in STDIN records, the end of both streams; management
    records (GET_VALUES, unknown types, an empty STDIN, DATA) between
    requests; sometimes an ABORT_REQUEST part-way, after which the rest of
    that request's records (which nginx may still send) are ignored.
    """
    out: list[bytes] = []
    events: list = []
    replies: list[bytes] = []
    for _ in range(draw(st.integers(1, 4))):
        for _ in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(["values", "unknown", "empty-stdin"]))
            if kind == "values":
                names = draw(st.lists(st.sampled_from(list(KNOWN_VALUES) + ["NOPE"]),
                                      max_size=4))
                out.append(f.get_values(names))
                answer = {n: KNOWN_VALUES[n] for n in names if n in KNOWN_VALUES}
                replies.append(raw_record_padded(f.GET_VALUES_RESULT, 0,
                                                 f.encode_pairs(answer.items())))
            elif kind == "unknown":
                rtype = draw(st.sampled_from([0, 12, 64, 255]))
                out.append(f.encode_record(rtype, 0, draw(st.binary(max_size=16))))
                replies.append(raw_record(f.UNKNOWN_TYPE, 0, bytes([rtype]) + bytes(7)))
            else:
                out.append(f.encode_record(f.STDIN, draw(request_ids)))
        rid = draw(request_ids)
        keep = draw(st.booleans())
        pair_list = draw(pairs)
        params = {n.decode("latin-1"): v.decode("latin-1") for n, v in pair_list}
        blob = f.encode_pairs(pair_list)
        cuts = sorted(draw(st.lists(st.integers(1, max(1, len(blob) - 1)), max_size=4)))
        pieces = [blob[a:b] for a, b in zip([0] + cuts, cuts + [len(blob)]) if blob[a:b]]
        body = [c for c in draw(st.lists(st.binary(max_size=200), max_size=4)) if c]
        abort_at = draw(st.sampled_from([None, None, None, "params", "stdin"]))
        out.append(f.begin_request(rid, keep_conn=keep))
        out += [f.encode_record(f.PARAMS, rid, piece) for piece in pieces]
        if abort_at == "params":
            out.append(f.abort_request(rid))
            events.append(Abort(rid))
        out.append(f.encode_record(f.PARAMS, rid))
        if abort_at != "params":
            events.append(Request(rid, f.RESPONDER, keep, params))
        for chunk in body:
            out.append(f.encode_record(f.STDIN, rid, chunk))
            if abort_at != "params":
                events.append(StdinData(rid, chunk))
        if abort_at == "stdin":
            out.append(f.abort_request(rid))
            events.append(Abort(rid))
        out.append(f.encode_record(f.STDIN, rid))
        if abort_at is None:
            events.append(StdinEnd(rid))
        if abort_at and draw(st.booleans()):
            out.append(f.encode_record(f.DATA, rid, b"late"))   # dropped, as spec 3.3 says
    return b"".join(out), events, b"".join(replies)


# ---- the server side ------------------------------------------------------------------------


@FUZZ
@given(st.data(), st.binary(max_size=400), st.sampled_from([1 << 20, 64, 1]))
def test_any_bytes_give_only_remote_errors_and_the_same_result_however_split(
        data, blob, max_params):
    """Whatever a peer sends, split however the reads fall: the same events,
    the same replies and the same ending as fed whole; no exception but
    RemoteProtocolError, and a failed connection stays failed."""
    whole = drive(blob, [], max_params)
    assert drive(blob, data.draw(cuts_for(blob)), max_params) == whole
    assert whole == model_outcome(blob, max_params)


@FUZZ
@given(st.data(), record_streams, st.sampled_from([1 << 20, 300, 8]))
def test_record_sequences_are_accepted_or_refused_as_the_rules_say(data, blob, max_params):
    """Well-framed records of any type and id, in any order: each is served,
    answered, ignored or refused exactly as the reference model says, and the
    split of the reads changes nothing."""
    expected = model_outcome(blob, max_params)
    assert drive(blob, data.draw(cuts_for(blob)), max_params) == expected


@FUZZ
@given(st.data(), sessions())
def test_valid_conversations_give_exactly_what_was_sent(data, session):
    """nginx-like keep-alive conversations: every request arrives with its
    params and body intact, management records are answered in order, aborted
    requests end at their Abort, and the connection ends CLOSED."""
    blob, events, replies = session
    assert drive(blob, data.draw(cuts_for(blob))) == (events, replies, "closed")
    assert model_outcome(blob, 1 << 20) == (events, replies, "closed")


@FUZZ_SMALL
@given(st.data(), sessions())
def test_a_conversation_cut_short_is_refused_unless_cut_between_records(data, session):
    """EOF inside a record is a protocol error; EOF between records is CLOSED
    with the events of the records before it."""
    blob = session[0]
    cut = data.draw(st.integers(0, len(blob)))
    events, replies, ending = drive(blob[:cut], data.draw(cuts_for(blob[:cut])))
    boundaries, i = {0}, 0
    while i < len(blob):
        i += 8 + struct.unpack_from(">H", blob, i + 4)[0] + blob[i + 6]
        boundaries.add(i)
    assert ending == ("closed" if cut in boundaries else "error")
    assert (events, replies, ending) == model_outcome(blob[:cut], 1 << 20)


@FUZZ_SMALL
@given(st.data(), pairs.filter(lambda p: p), st.integers(1, 4))
def test_max_params_bytes_is_the_exact_limit_however_the_params_are_cut(data, pair_list, parts):
    """Params of exactly max_params_bytes are served, one byte more is refused,
    whether they come in one PARAMS record or several."""
    blob = f.encode_pairs(pair_list)
    step = max(1, len(blob) // parts)
    request = f.begin_request(1) + b"".join(
        f.encode_record(f.PARAMS, 1, blob[i:i + step]) for i in range(0, len(blob), step)
    ) + f.encode_record(f.PARAMS, 1) + f.stdin(1, b"")
    cuts = data.draw(cuts_for(request))
    assert drive(request, cuts, max_params=len(blob))[2] == "closed"
    if len(blob) > 1:
        assert drive(request, cuts, max_params=len(blob) - 1)[2] == "error"


# ---- round trips ------------------------------------------------------------------------------


@FUZZ
@given(pairs)
def test_pairs_round_trip_and_arrive_as_latin1_params(pair_list):
    """encode_pairs -> decode_pairs is the identity; as a PARAMS stream the
    pairs arrive as a latin-1 dict in which a repeated name keeps its last value."""
    blob = f.encode_pairs(pair_list)
    assert f.decode_pairs(blob) == pair_list
    events, _, ending = drive(f.encode_request(pair_list), [])
    assert ending == "closed"
    assert events[0].params == {n.decode("latin-1"): v.decode("latin-1")
                                for n, v in pair_list}


@FUZZ
@given(st.binary(max_size=300))
def test_decode_pairs_takes_any_bytes_or_refuses_them(blob):
    """Any bytes: a list of pairs that re-encodes to pairs equal to it, or
    RemoteProtocolError; never another exception."""
    try:
        got = f.decode_pairs(blob)
    except RemoteProtocolError:
        assert model_pairs(blob) is None
        return
    assert got == model_pairs(blob)
    assert f.decode_pairs(f.encode_pairs(got)) == got


@FUZZ
@given(st.integers(1, 65535), st.integers(0, 3 * 65528 + 9), st.binary(min_size=1, max_size=64))
def test_streams_are_cut_into_padded_records_that_reassemble_exactly(rid, size, seed):
    """encode_stream: records of at most 65528 bytes, never empty, padded to a
    multiple of 8 while content + padding <= 65535, reassembling to the data."""
    data = (seed * (size // len(seed) + 1))[:size]
    blob = f.encode_stream(f.STDOUT, rid, data)
    got, i = [], 0
    while i < len(blob):
        version, rtype, r, clen, plen = struct.unpack_from(">BBHHBx", blob, i)
        assert (version, rtype, r) == (1, f.STDOUT, rid)
        assert 0 < clen <= 65528 and clen + plen <= 65535 and (8 + clen + plen) % 8 == 0
        got.append(blob[i + 8:i + 8 + clen])
        i += 8 + clen + plen
    assert i == len(blob) and b"".join(got) == data


@st.composite
def responses(draw):
    """An application's output: STDOUT and STDERR pieces in any order, then END_REQUEST."""
    rid = draw(request_ids)
    pieces = draw(st.lists(st.tuples(st.sampled_from([Stdout, Stderr]),
                                     st.binary(min_size=1, max_size=100)), max_size=6))
    big = draw(st.integers(0, 2)) * 40000     # now and then records of 65528 bytes
    if big:
        pieces.append((Stdout, b"b" * big))
    status = (draw(st.integers(0, 0xFFFFFFFF)), draw(st.integers(0, 255)))
    return rid, pieces, status


@FUZZ
@given(st.data(), responses())
def test_responses_round_trip_through_the_client_side(data, response):
    """What the worker sends (stdout/stderr records, end_request) is read back
    by ClientConnection as the same streams and END_REQUEST, however split."""
    rid, pieces, (app_status, protocol_status) = response
    blob = b"".join((f.stdout if kind is Stdout else f.stderr)(rid, chunk)
                    for kind, chunk in pieces) + f.end_request(rid, app_status, protocol_status)
    conn = ClientConnection()
    got: list = []
    cuts = data.draw(st.lists(st.integers(1, len(blob) - 1), max_size=8))
    bounds = [0] + sorted(set(cuts)) + [len(blob)]
    for a, b in zip(bounds, bounds[1:]):
        conn.receive_data(blob[a:b])
        while (event := conn.next_event()) is not NEED_DATA:
            got.append(event)
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    for kind in (Stdout, Stderr):
        assert b"".join(e.data for e in got if type(e) is kind) == \
            b"".join(c for k, c in pieces if k is kind)
    assert got[-1] == EndRequest(rid, app_status, protocol_status)
    assert all(e.request_id == rid for e in got)


@FUZZ
@given(st.binary(max_size=400))
def test_any_application_output_gives_only_remote_errors(blob):
    """The client side (tests, the pool manager's probes) on garbage."""
    try:
        f.parse_response(blob)
    except RemoteProtocolError:
        pass


# ---- CGI header blocks ---------------------------------------------------------------------

header_names = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", fullmatch=True).filter(
    lambda name: name.lower() != "status")
header_values = st.text(st.characters(min_codepoint=0, max_codepoint=255,
                                      blacklist_characters="\r\n"), max_size=30)


@FUZZ
@given(st.integers(100, 999), latin1_text.map(lambda s: s.replace("\r", "").replace("\n", "")),
       st.lists(st.tuples(header_names, header_values), max_size=6), st.binary(max_size=50))
def test_header_blocks_round_trip(code, reason, headers, body):
    """A response the WSGI layer accepts (check_headers) reaches nginx as a CGI
    header block that reads back as the same status and headers (values
    trimmed, as CGI says) and the body untouched."""
    status = "%d %s" % (code, reason)
    wsgi.check_headers(status, headers)
    got = f.split_headers(wsgi.header_block(status, headers) + body)
    assert got == (code, [(n, v.strip(" \t")) for n, v in headers], body)


@FUZZ
@given(st.binary(max_size=200))
def test_split_headers_takes_any_bytes_or_refuses_them(blob):
    try:
        status, headers, body = f.split_headers(blob)
    except RemoteProtocolError:
        return
    assert 100 <= status <= 999 and body in blob


# ---- params -> environ ------------------------------------------------------------------------

CGI_KEYS = ["SCRIPT_NAME", "PATH_INFO", "REQUEST_URI", "QUERY_STRING", "REQUEST_METHOD",
            "HTTPS", "REQUEST_SCHEME", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH",
            "CONTENT_LENGTH", "CONTENT_TYPE", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL",
            "HTTP_HOST", "wsgi.url_scheme", "wsgi.errors", "wsgi.version", "pfm.pool"]
path_text = st.text(st.sampled_from("/ab.%~é\x00?"), max_size=12)
params_dicts = st.dictionaries(
    st.one_of(st.sampled_from(CGI_KEYS), latin1_text),
    st.one_of(path_text, latin1_text, st.sampled_from(["on", "ON", "1", "off", "https", ""])),
    max_size=12)


@FUZZ
@given(params_dicts)
def test_make_environ_gives_a_pep3333_environ_for_any_params(params):
    """Any params a peer can send make a valid environ: the required CGI keys
    are native strings, the request's own values are passed as given, the
    HTTP_CONTENT_* duplicates are dropped, SCRIPT_NAME/PATH_INFO follow the
    documented split, and the per-worker base is not changed."""
    base = wsgi.base_environ("www", wsgi.ErrorStream(lambda line: None))
    frozen = dict(base)
    env = wsgi.make_environ(dict(params), base)
    assert base == frozen
    for key in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
                "SERVER_PORT", "SERVER_PROTOCOL"):
        assert type(env[key]) is str
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    for key, value in params.items():
        if key not in ("SCRIPT_NAME", "PATH_INFO", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH") \
                and key not in frozen:
            assert env[key] == value
    assert not env["SCRIPT_NAME"].endswith("/")
    script, path = params.get("SCRIPT_NAME", ""), params.get("PATH_INFO", "")
    if path:
        assert env["PATH_INFO"] == path
        if script.endswith(path) and not script[:len(script) - len(path)].endswith("/"):
            assert env["SCRIPT_NAME"] + env["PATH_INFO"] == script
    elif script:
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", script)
    else:
        assert env["PATH_INFO"] == params.get("REQUEST_URI", "").split("?", 1)[0]
    https = params.get("HTTPS", "off").lower() in ("on", "1") or \
        params.get("REQUEST_SCHEME") == "https"
    assert env["wsgi.url_scheme"] == ("https" if https else "http")
    for key, value in frozen.items():
        if key != "wsgi.url_scheme":
            assert env[key] is value


# ---- regressions the fuzzing found -------------------------------------------------------------


def test_a_param_cannot_replace_the_servers_wsgi_keys():
    """A FastCGI peer sending a param named wsgi.errors or wsgi.url_scheme
    got it into the environ in place of the server's own object (found by
    test_make_environ_gives_a_pep3333_environ_for_any_params)."""
    base = wsgi.base_environ("www", wsgi.ErrorStream(lambda line: None))
    env = wsgi.make_environ({"wsgi.errors": "", "wsgi.url_scheme": "ftp", "pfm.pool": "x",
                             "wsgi.version": "9"}, base)
    assert env["wsgi.errors"] is base["wsgi.errors"]
    assert (env["wsgi.url_scheme"], env["pfm.pool"], env["wsgi.version"]) == \
        ("http", "www", (1, 0))


def test_split_headers_trims_only_blanks():
    """str.strip() ate a header value of b'\\x1f' or a trailing NBSP (found by
    test_header_blocks_round_trip)."""
    assert f.split_headers(b"X-A: \x1f\r\nX-B:\t\xa0v\xa0 \r\n\r\n") == \
        (200, [("X-A", "\x1f"), ("X-B", "\xa0v\xa0")], b"")
