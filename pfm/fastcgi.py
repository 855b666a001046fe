"""FastCGI 1.0 as a sans-I/O codec: bytes in, events out; calls in, bytes out.

The rule of this module: it never touches sockets (nor WSGI, nor the clock).
The worker owns the socket; it feeds what it reads to
``ServerConnection.receive_data`` and pulls events with ``next_event()``, and
writes what the encoding functions (``stdout``, ``end_request``, ...) return.
That keeps every protocol decision testable with plain bytes, as h11 does for
HTTP/1.1.

References: the FastCGI Specification 1.0 (Open Market, 1996), cited as
"spec 3.3" etc., and php-fpm's ``main/fastcgi.c`` where its behaviour is the
one nginx users expect.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Union

# --- Constants (spec 8, "Types and Constants") ------------------------------

VERSION_1 = 1

BEGIN_REQUEST = 1
ABORT_REQUEST = 2
END_REQUEST = 3
PARAMS = 4
STDIN = 5
STDOUT = 6
STDERR = 7
DATA = 8
GET_VALUES = 9
GET_VALUES_RESULT = 10
UNKNOWN_TYPE = 11

RESPONDER = 1
AUTHORIZER = 2
FILTER = 3

KEEP_CONN = 1

REQUEST_COMPLETE = 0
CANT_MPX_CONN = 1
OVERLOADED = 2
UNKNOWN_ROLE = 3

MAX_CONTENT = 65535

# Records that carry no request (management records, whose answers queue up;
# DATA, ABORT or empty STDIN of no request) a server connection takes between
# two requests. Past this the peer is flooding, not asking: on TCP the socket
# buffers hold megabytes of questions, seconds of a worker's time to answer.
# php-fpm closes a connection after one GET_VALUES; its tests send two.
MAX_IDLE_RECORDS = 64

# Streams are cut at the largest multiple of 8 below MAX_CONTENT, so full
# records need no padding and contentLength + paddingLength never exceeds
# 65535 (php-fpm closes the connection on records that do; so may other
# strict peers). php's own fcgi_write cuts at the same size.
_STREAM_CHUNK = MAX_CONTENT & ~7  # 65528

# version, type, requestId, contentLength, paddingLength, reserved (spec 3.3)
_HEADER = struct.Struct(">BBHHBx")
_HEADER_LEN = 8
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack
# role, flags, reserved[5] (spec 5.1)
_BEGIN_BODY = struct.Struct(">HB5x")
# One END_REQUEST record: header + appStatus, protocolStatus, reserved[3] (spec 5.5)
_END_RECORD = struct.Struct(">BBHHBxIB3x")
# The empty STDOUT record that closes the stream, then the END_REQUEST record.
_END_RESPONSE = struct.Struct(">BBHHBxBBHHBxIB3x")
# type, reserved[7] (spec 4.2)
_UNKNOWN_TYPE_RECORD = struct.Struct(">BBHHBxB7x")
_U32 = struct.Struct(">I")
_PADDING = tuple(b"\0" * n for n in range(8))

# GET_VALUES variables (spec 4.1).
_MAX_CONNS = "FCGI_MAX_CONNS"
_MAX_REQS = "FCGI_MAX_REQS"
_MPXS_CONNS = "FCGI_MPXS_CONNS"

BytesLike = Union[bytes, bytearray, memoryview]
StrOrBytes = Union[bytes, str]


# --- Errors -------------------------------------------------------------------


class ProtocolError(Exception):
    """Base class: the FastCGI conversation cannot go on."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol; close that connection."""


class LocalProtocolError(ProtocolError):
    """Our own code misused this API (a bug on our side, not the peer's)."""


# --- Sentinels ----------------------------------------------------------------


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
"""next_event() needs more bytes before it can say anything."""
CLOSED = _Sentinel("CLOSED")
"""The peer closed the connection and every byte it sent was consumed."""


# --- Events ---------------------------------------------------------------------

# slots=True exists from Python 3.10; on 3.9 the events just lack __slots__.
_event = dataclass(frozen=True, **({"slots": True} if sys.version_info >= (3, 10) else {}))


def _check_request_id(request_id: int) -> None:
    # Application records carry ids 1..65535; 0 is for management records (spec 3.3).
    if not 0 < request_id <= 0xFFFF:
        raise LocalProtocolError(f"request id must be 1..65535, not {request_id!r}")


@_event
class Request:
    """A RESPONDER request whose PARAMS stream is complete (spec 5.2).

    Names and values are latin-1 decoded, which is how PEP 3333 wants bytes
    presented as native strings, and is lossless.
    """

    request_id: int
    role: int
    keep_conn: bool
    params: dict[str, str]

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)


@_event
class StdinData:
    """One non-empty STDIN record's content, passed through without buffering."""

    request_id: int
    data: bytes

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)


@_event
class StdinEnd:
    """The empty STDIN record: the request body is complete (spec 5.3)."""

    request_id: int

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)


@_event
class Abort:
    """ABORT_REQUEST for the active request (spec 5.4).

    It may come before the Request event (params not yet complete). Either
    way the application answers with ``end_request`` and ``request_done()``.
    """

    request_id: int

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)


@_event
class Stdout:
    """Client side: a non-empty STDOUT record's content."""

    request_id: int
    data: bytes

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)


@_event
class Stderr:
    """Client side: a non-empty STDERR record's content."""

    request_id: int
    data: bytes

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)


@_event
class EndRequest:
    """Client side: END_REQUEST (spec 5.5)."""

    request_id: int
    app_status: int
    protocol_status: int

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        if not 0 <= self.app_status <= 0xFFFFFFFF:
            raise LocalProtocolError(f"app_status must fit 32 bits, not {self.app_status!r}")
        if not 0 <= self.protocol_status <= 0xFF:
            raise LocalProtocolError(f"protocol_status must fit a byte: {self.protocol_status!r}")


@_event
class GetValuesResult:
    """Client side: GET_VALUES_RESULT, latin-1 decoded (spec 4.1)."""

    values: dict[str, str]


@_event
class UnknownTypeResult:
    """Client side: the application did not understand record type ``rtype`` (spec 4.2)."""

    rtype: int


# --- Encoding (pure functions) --------------------------------------------------


def encode_record(rtype: int, request_id: int, content: BytesLike = b"") -> bytes:
    """One record, padded to a multiple of 8 as spec 3.3 recommends."""
    clen = len(content)
    if clen > MAX_CONTENT:
        raise LocalProtocolError(f"record content is {clen} bytes; the limit is {MAX_CONTENT}")
    # No padding past 65528 keeps contentLength + paddingLength <= 65535.
    pad = -clen & 7 if clen <= _STREAM_CHUNK else 0
    try:
        header = _pack_header(VERSION_1, rtype, request_id, clen, pad)
    except struct.error:
        raise LocalProtocolError(
            f"record type {rtype!r} or request id {request_id!r} out of range"
        ) from None
    if pad:
        return b"".join((header, content, _PADDING[pad]))
    return header + content


def encode_stream(rtype: int, request_id: int, data: BytesLike) -> bytes:
    """``data`` as records of at most 65528 bytes each.

    Never emits an empty record: an empty record ends a stream (spec 3.3), and
    php-fpm's bug72185 was about stray empty frames. Use ``end_request`` (or
    ``encode_record`` with no content) to end the stream on purpose.
    """
    n = len(data)
    if n <= _STREAM_CHUNK:
        return encode_record(rtype, request_id, data) if n else b""
    view = memoryview(data)
    step = _STREAM_CHUNK
    return b"".join(
        [encode_record(rtype, request_id, view[i : i + step]) for i in range(0, n, step)]
    )


def stdout(request_id: int, data: BytesLike) -> bytes:
    """Response bytes (CGI headers, then body) as STDOUT records."""
    return encode_stream(STDOUT, request_id, data)


def stderr(request_id: int, data: BytesLike) -> bytes:
    """Diagnostics as STDERR records (nginx logs them as "FastCGI sent in stderr")."""
    return encode_stream(STDERR, request_id, data)


def end_request_record(
    request_id: int, app_status: int = 0, protocol_status: int = REQUEST_COMPLETE
) -> bytes:
    """Only the END_REQUEST record: for UNKNOWN_ROLE / CANT_MPX_CONN refusals."""
    try:
        return _END_RECORD.pack(
            VERSION_1, END_REQUEST, request_id, 8, 0, app_status, protocol_status
        )
    except struct.error:
        raise LocalProtocolError(
            f"bad END_REQUEST fields: id={request_id!r} app_status={app_status!r} "
            f"protocol_status={protocol_status!r}"
        ) from None


def end_request(
    request_id: int, app_status: int = 0, protocol_status: int = REQUEST_COMPLETE
) -> bytes:
    """The empty STDOUT record that closes the stream, then END_REQUEST.

    One bytes object ends a response (spec 5.5: the application closes its
    streams, then sends END_REQUEST).
    """
    try:
        return _END_RESPONSE.pack(
            VERSION_1, STDOUT, request_id, 0, 0,
            VERSION_1, END_REQUEST, request_id, 8, 0, app_status, protocol_status,
        )  # fmt: skip
    except struct.error:
        raise LocalProtocolError(
            f"bad END_REQUEST fields: id={request_id!r} app_status={app_status!r} "
            f"protocol_status={protocol_status!r}"
        ) from None


def _as_bytes(s: StrOrBytes) -> bytes:
    return s.encode("latin-1") if isinstance(s, str) else bytes(s)


def _length_prefix(n: int) -> bytes:
    # spec 3.4: one byte below 128, else four bytes with the high bit set.
    if n < 128:
        return bytes((n,))
    if n > 0x7FFFFFFF:
        raise LocalProtocolError(f"name or value of {n} bytes cannot be encoded")
    return _U32.pack(n | 0x80000000)


def encode_pairs(pairs: Iterable[tuple[StrOrBytes, StrOrBytes]]) -> bytes:
    """Name-value pairs (spec 3.4); str is encoded as latin-1."""
    out: list[bytes] = []
    for name, value in pairs:
        nb = _as_bytes(name)
        vb = _as_bytes(value)
        out += (_length_prefix(len(nb)), _length_prefix(len(vb)), nb, vb)
    return b"".join(out)


def _long_lengths(data: bytes, i: int) -> tuple[int, int, int]:
    """Name and value lengths at ``data[i]`` when either uses the 4-byte form.

    Reading past the end raises IndexError or struct.error; callers turn
    those into RemoteProtocolError.
    """
    nlen = data[i]
    if nlen < 128:
        i += 1
    else:
        nlen = _U32.unpack_from(data, i)[0] & 0x7FFFFFFF
        i += 4
    vlen = data[i]
    if vlen < 128:
        i += 1
    else:
        vlen = _U32.unpack_from(data, i)[0] & 0x7FFFFFFF
        i += 4
    return nlen, vlen, i


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """Name-value pairs (spec 3.4); RemoteProtocolError if one overruns ``data``."""
    data = bytes(data)
    out: list[tuple[bytes, bytes]] = []
    i, n = 0, len(data)
    try:
        while i < n:
            nlen, vlen, i = _long_lengths(data, i)
            mid = i + nlen
            i = mid + vlen
            out.append((data[mid - nlen : mid], data[mid:i]))
    except (IndexError, struct.error):
        i = n + 1
    if i != n:
        raise RemoteProtocolError("name-value pair overruns its stream")
    return out


def _decode_params(blob: bytes) -> dict[str, str]:
    """The PARAMS stream as a latin-1 dict; the hot path of every request.

    Latin-1 maps byte i to character i, so the blob is decoded once and the
    pairs are cut out of the str by byte offsets: no decode call per pair.
    Nearly all lengths fit one byte, so that case is tested first, and an
    overrun is detected once after the loop: offsets only grow, so a pair
    that overruns is the last one read and leaves ``i > n``.
    A repeated name keeps its last value.
    """
    text = blob.decode("latin-1")
    out: dict[str, str] = {}
    i, n = 0, len(blob)
    try:
        while i < n:
            nlen = blob[i]
            vlen = blob[i + 1]
            if (nlen | vlen) < 128:
                i += 2
            else:
                nlen, vlen, i = _long_lengths(blob, i)
            mid = i + nlen
            end = mid + vlen
            out[text[i:mid]] = text[mid:end]
            i = end
    except (IndexError, struct.error):
        i = n + 1
    if i != n:
        raise RemoteProtocolError("name-value pair overruns the PARAMS stream")
    return out


# --- Client-side encoding (tests, benchmarks, the pool manager's probes) -------


def begin_request(request_id: int = 1, role: int = RESPONDER, keep_conn: bool = False) -> bytes:
    """A BEGIN_REQUEST record (spec 5.1)."""
    try:
        body = _BEGIN_BODY.pack(role, KEEP_CONN if keep_conn else 0)
    except struct.error:
        raise LocalProtocolError(f"role {role!r} out of range") from None
    return encode_record(BEGIN_REQUEST, request_id, body)


def params(
    request_id: int,
    mapping_or_pairs: Mapping[StrOrBytes, StrOrBytes] | Iterable[tuple[StrOrBytes, StrOrBytes]],
) -> bytes:
    """The whole PARAMS stream, including its terminating empty record."""
    pairs = mapping_or_pairs.items() if isinstance(mapping_or_pairs, Mapping) else mapping_or_pairs
    return encode_stream(PARAMS, request_id, encode_pairs(pairs)) + encode_record(
        PARAMS, request_id
    )


_params_stream = params  # encode_request's argument is also called params


def stdin(request_id: int, body: BytesLike) -> bytes:
    """The whole STDIN stream, including its terminating empty record."""
    return encode_stream(STDIN, request_id, body) + encode_record(STDIN, request_id)


def get_values(names: Iterable[StrOrBytes]) -> bytes:
    """A GET_VALUES management record asking for ``names`` (spec 4.1)."""
    return encode_record(GET_VALUES, 0, encode_pairs((name, b"") for name in names))


def abort_request(request_id: int) -> bytes:
    """An ABORT_REQUEST record (spec 5.4)."""
    return encode_record(ABORT_REQUEST, request_id)


def encode_request(
    params: Mapping[StrOrBytes, StrOrBytes] | Iterable[tuple[StrOrBytes, StrOrBytes]],
    body: BytesLike = b"",
    request_id: int = 1,
    keep_conn: bool = False,
) -> bytes:
    """A complete RESPONDER request: BEGIN_REQUEST, PARAMS stream, STDIN stream."""
    return (
        begin_request(request_id, RESPONDER, keep_conn)
        + _params_stream(request_id, params)
        + stdin(request_id, body)
    )


# --- Decoding: record framing shared by both sides ------------------------------


class _RecordReader:
    """A receive buffer: a bytearray plus a read offset.

    Consumed bytes are dropped in ``receive_data`` with ``del buf[:pos]``,
    which CPython does in O(1) by moving the bytearray's start, so a record
    is never copied for framing; only its content is, once, when an event
    needs it.
    """

    __slots__ = ("_buf", "_pos", "_eof", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None

    def receive_data(self, data: BytesLike) -> None:
        """Append bytes read from the transport; ``b""`` means the peer closed it."""
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error}")
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("receive_data() after EOF")
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def _starved(self, avail: int) -> _Sentinel:
        """What to say when the next record is not complete in the buffer."""
        if not self._eof:
            return NEED_DATA
        if avail == 0:
            return CLOSED
        raise RemoteProtocolError("connection closed mid-record")


# Request states of ServerConnection (one request at a time, spec 3.3).
_IDLE = 0  # no active request: waiting for BEGIN_REQUEST
_READING_PARAMS = 1  # BEGIN_REQUEST seen, PARAMS stream open
_READING_STDIN = 2  # Request emitted, STDIN stream open
_STDIN_DONE = 3  # StdinEnd emitted; the application is answering
_ABORTED = 4  # Abort emitted; the rest of this request's input is dropped


_VALUES: dict = {}    # GET_VALUES answers by (max_conns, max_reqs)


class ServerConnection(_RecordReader):
    """The application side of one transport connection.

    Serves one request at a time (FCGI_MPXS_CONNS=0, as php-fpm). Management
    records and refusals are answered internally: their bytes wait in
    ``data_to_send()``, which the worker drains after every ``next_event()``.
    DATA records are dropped: only the FILTER role reads them, and it is
    refused with UNKNOWN_ROLE.
    """

    __slots__ = (
        "_max_params_bytes", "_values", "_out", "_state", "_request_id", "_role",
        "_keep_conn", "_params_chunks", "_params_len", "_ignored", "_idle_records",
    )  # fmt: skip

    def __init__(self, max_params_bytes: int = 1 << 20, max_conns: int = 1, max_reqs: int = 1):
        super().__init__()
        if max_params_bytes < 1 or max_conns < 1 or max_reqs < 1:
            raise ValueError("max_params_bytes, max_conns and max_reqs must be positive")
        # php-fpm has no cap beyond memory; nginx itself cannot send much more
        # than its header buffers (large_client_header_buffers, 4 x 8k), so
        # 1 MiB only stops a hostile or broken peer from growing us unbounded.
        self._max_params_bytes = max_params_bytes
        # Built once per (max_conns, max_reqs), not per connection: read-only.
        self._values = _VALUES.get((max_conns, max_reqs)) or _VALUES.setdefault(
            (max_conns, max_reqs),
            {_MAX_CONNS: str(max_conns), _MAX_REQS: str(max_reqs), _MPXS_CONNS: "0"})
        self._out: list[bytes] = []
        self._state = _IDLE
        self._request_id = 0
        self._role = 0
        self._keep_conn = False
        self._params_chunks: list[bytes] = []
        self._params_len = 0
        # Ids whose records are dropped: refused BEGIN_REQUESTs, and a request
        # finished before its STDIN ended (spec 3.3: an application ignores
        # records for inactive ids). A new BEGIN_REQUEST revives an id.
        self._ignored: set[int] = set()
        self._idle_records = 0  # records of no request since the last BEGIN_REQUEST

    @property
    def active_request_id(self) -> int | None:
        """The id of the request being served, or None between requests."""
        return self._request_id if self._state != _IDLE else None

    @property
    def keep_conn(self) -> bool:
        """FCGI_KEEP_CONN of the active request: if False, close after END_REQUEST."""
        return self._keep_conn if self._state != _IDLE else False

    @property
    def between_requests(self) -> bool:
        """No request active and no byte of a next record received: an idle
        kept-alive connection (anything else is a request on its way)."""
        return self._state == _IDLE and len(self._buf) == self._pos

    def pending_bytes(self) -> bytes:
        """Received bytes not consumed yet (a next request's first records),
        for handing the connection to another process."""
        return bytes(self._buf[self._pos:])

    def data_to_send(self) -> bytes:
        """Drain the reply bytes queued by management records and refusals."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def request_done(self) -> None:
        """The worker has sent END_REQUEST: accept a new BEGIN_REQUEST."""
        if self._state == _IDLE:
            raise LocalProtocolError("request_done() with no active request")
        if self._state != _STDIN_DONE:
            # Answered early (or aborted): the rest of its input may still come.
            self._ignored.add(self._request_id)
        self._state = _IDLE
        self._request_id = 0
        self._keep_conn = False
        self._params_chunks = []
        self._params_len = 0

    def next_event(
        self,
    ) -> Request | StdinData | StdinEnd | Abort | _Sentinel:
        """The next event, NEED_DATA or CLOSED; RemoteProtocolError on bad input."""
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error}")
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc  # the stream position is now meaningless: stay dead
            raise

    def _next_event(self) -> Request | StdinData | StdinEnd | Abort | _Sentinel:
        # Record framing is inlined here and in ClientConnection rather than
        # shared: this is every request's hot path, and a call per record costs.
        buf = self._buf
        while True:
            pos = self._pos
            avail = len(buf) - pos
            if avail < _HEADER_LEN:
                return self._starved(avail)
            version, rtype, rid, clen, plen = _unpack_header(buf, pos)
            if version != VERSION_1:
                raise RemoteProtocolError(f"unsupported FastCGI version {version}")
            # Any contentLength/paddingLength the header can hold is accepted:
            # the spec bounds each field, not their sum (php-fpm rejects a sum
            # over 65535), and either way a record is at most 65798 bytes.
            start = pos + _HEADER_LEN
            end = start + clen
            if end + plen > len(buf):
                return self._starved(avail)
            self._pos = end + plen  # padding is skipped (spec 3.3)

            if rid == self._request_id and rid:
                # A record of the active request: the common case.
                state = self._state
                if rtype == STDIN:
                    if state == _READING_STDIN:
                        if clen:
                            if clen < 4096:
                                return StdinData(rid, bytes(buf[start:end]))
                            # One copy instead of two (slice, then bytes) for big bodies.
                            with memoryview(buf) as view:
                                return StdinData(rid, view[start:end].tobytes())
                        self._state = _STDIN_DONE
                        return StdinEnd(rid)
                    if state != _ABORTED:
                        raise RemoteProtocolError(self._misplaced("STDIN", rid))
                elif rtype == PARAMS:
                    if state == _READING_PARAMS:
                        if clen:
                            self._params_len += clen
                            if self._params_len > self._max_params_bytes:
                                raise RemoteProtocolError(
                                    f"PARAMS stream of request {rid} exceeds "
                                    f"max_params_bytes ({self._max_params_bytes})"
                                )
                            self._params_chunks.append(bytes(buf[start:end]))
                            continue
                        return self._params_complete()
                    if state != _ABORTED:
                        raise RemoteProtocolError(self._misplaced("PARAMS", rid))
                elif rtype == ABORT_REQUEST:
                    if state != _ABORTED:
                        self._state = _ABORTED
                        return Abort(rid)
                elif rtype == BEGIN_REQUEST:
                    raise RemoteProtocolError(f"BEGIN_REQUEST for already active request {rid}")
                else:
                    self._other_record(rtype, rid, start, end)
                continue

            if rtype == BEGIN_REQUEST:
                if rid == 0:
                    raise RemoteProtocolError("BEGIN_REQUEST with request id 0")
                if clen != 8:
                    raise RemoteProtocolError(f"BEGIN_REQUEST body is {clen} bytes, not 8")
                role, flags = _BEGIN_BODY.unpack_from(buf, start)
                if role != RESPONDER:
                    # The brief for pfm: only RESPONDER is served. (php-fpm
                    # runs AUTHORIZER and FILTER as responders too.)
                    self._refuse(rid, UNKNOWN_ROLE)
                elif self._state != _IDLE:
                    self._refuse(rid, CANT_MPX_CONN)  # spec 5.1
                else:
                    self._ignored.discard(rid)
                    self._idle_records = 0
                    self._state = _READING_PARAMS
                    self._request_id = rid
                    self._role = role
                    self._keep_conn = bool(flags & KEEP_CONN)
                continue
            if rtype in (STDIN, PARAMS, ABORT_REQUEST, DATA):
                if rid == 0:
                    raise RemoteProtocolError(f"record type {rtype} with request id 0")
                if rid in self._ignored:
                    continue  # the rest of a refused or finished request (spec 3.3)
                if rtype in (ABORT_REQUEST, DATA):
                    # An ABORT that crossed our END_REQUEST concerns an inactive id.
                    self._no_request()
                    continue
                if rtype == STDIN and clen == 0 and self._state == _IDLE:
                    self._no_request()
                    continue  # php-fpm skips empty STDIN records before BEGIN_REQUEST
                name = "STDIN" if rtype == STDIN else "PARAMS"
                raise RemoteProtocolError(self._misplaced(name, rid))
            self._other_record(rtype, rid, start, end)

    def _misplaced(self, name: str, rid: int) -> str:
        if self._state == _IDLE or rid != self._request_id:
            active = self._request_id if self._state != _IDLE else "none"
            return f"{name} record for request {rid}, which is not active (active: {active})"
        if self._state == _READING_PARAMS:
            return f"{name} record for request {rid} before its PARAMS stream ended"
        if name == "PARAMS":
            return f"PARAMS record for request {rid} after its PARAMS stream ended"
        return f"STDIN record for request {rid} after its STDIN stream ended"

    def _params_complete(self) -> Request:
        chunks = self._params_chunks
        blob = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._params_chunks = []
        self._state = _READING_STDIN
        return Request(self._request_id, self._role, self._keep_conn, _decode_params(blob))

    def _refuse(self, rid: int, protocol_status: int) -> None:
        self._no_request()
        self._out.append(end_request_record(rid, 0, protocol_status))
        self._ignored.add(rid)

    def _no_request(self) -> None:
        self._idle_records += 1
        if self._idle_records > MAX_IDLE_RECORDS:
            raise RemoteProtocolError(f"more than {MAX_IDLE_RECORDS} management records (or "
                                      "records of no request) between requests")

    def _other_record(self, rtype: int, rid: int, start: int, end: int) -> None:
        """Management records, DATA, and types that make no sense here."""
        if rtype != DATA:
            self._no_request()
        if rtype == GET_VALUES:
            if rid != 0:
                raise RemoteProtocolError(f"GET_VALUES with request id {rid}, not 0")
            self._answer_get_values(bytes(self._buf[start:end]))
        elif rtype == DATA:
            pass  # DATA only feeds FILTER, which is refused: dropped.
        elif rtype in (END_REQUEST, STDOUT, STDERR, GET_VALUES_RESULT, UNKNOWN_TYPE):
            raise RemoteProtocolError(f"record type {rtype} only flows from application to server")
        else:
            # spec 4.2 answers unknown management types; pfm answers any unknown type.
            self._out.append(_UNKNOWN_TYPE_RECORD.pack(VERSION_1, UNKNOWN_TYPE, 0, 8, 0, rtype))

    def _answer_get_values(self, content: bytes) -> None:
        answer: dict[str, str] = {}
        for name, _ in decode_pairs(content):
            key = name.decode("latin-1")
            value = self._values.get(key)
            if value is not None:
                answer[key] = value  # only the variables we know (spec 4.1)
        self._out.append(encode_record(GET_VALUES_RESULT, 0, encode_pairs(answer.items())))


class ClientConnection(_RecordReader):
    """The web-server side: parses what an application sends back."""

    __slots__ = ()

    def next_event(
        self,
    ) -> Stdout | Stderr | EndRequest | GetValuesResult | UnknownTypeResult | _Sentinel:
        """The next event, NEED_DATA or CLOSED; RemoteProtocolError on bad input."""
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error}")
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc  # the stream position is now meaningless: stay dead
            raise

    def _next_event(
        self,
    ) -> Stdout | Stderr | EndRequest | GetValuesResult | UnknownTypeResult | _Sentinel:
        buf = self._buf
        while True:
            pos = self._pos
            avail = len(buf) - pos
            if avail < _HEADER_LEN:
                return self._starved(avail)
            version, rtype, rid, clen, plen = _unpack_header(buf, pos)
            if version != VERSION_1:
                raise RemoteProtocolError(f"unsupported FastCGI version {version}")
            start = pos + _HEADER_LEN
            end = start + clen
            if end + plen > len(buf):
                return self._starved(avail)
            self._pos = end + plen
            if rtype in (STDOUT, STDERR, END_REQUEST) and rid == 0:
                raise RemoteProtocolError(f"record type {rtype} with request id 0")
            if rtype == STDOUT:
                if clen:  # an empty record only ends the stream
                    return Stdout(rid, bytes(buf[start:end]))
            elif rtype == STDERR:
                if clen:
                    return Stderr(rid, bytes(buf[start:end]))
            elif rtype == END_REQUEST:
                if clen != 8:
                    raise RemoteProtocolError(f"END_REQUEST body is {clen} bytes, not 8")
                app_status, protocol_status = struct.unpack_from(">IB", buf, start)
                return EndRequest(rid, app_status, protocol_status)
            elif rtype == GET_VALUES_RESULT:
                pairs = decode_pairs(bytes(buf[start:end]))
                return GetValuesResult({n.decode("latin-1"): v.decode("latin-1") for n, v in pairs})
            elif rtype == UNKNOWN_TYPE:
                if clen != 8:
                    raise RemoteProtocolError(f"UNKNOWN_TYPE body is {clen} bytes, not 8")
                return UnknownTypeResult(buf[start])
            else:
                raise RemoteProtocolError(f"unexpected record type {rtype} from the application")


def parse_response(data: bytes) -> tuple[bytes, bytes, EndRequest | None]:
    """A whole response: (stdout bytes, stderr bytes, END_REQUEST or None)."""
    conn = ClientConnection()
    conn.receive_data(data)
    conn.receive_data(b"")
    out: list[bytes] = []
    err: list[bytes] = []
    end: EndRequest | None = None
    while True:
        event = conn.next_event()
        if event is CLOSED:
            return b"".join(out), b"".join(err), end
        if isinstance(event, Stdout):
            out.append(event.data)
        elif isinstance(event, Stderr):
            err.append(event.data)
        elif isinstance(event, EndRequest):
            end = event


def split_headers(stdout: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """The CGI header block of a response: (status, headers, body).

    ``Status: 404 Not Found`` gives 404 and is not kept as a header; without
    it the status is 200 (RFC 3875 6.3.3). Lines may end in CRLF or LF.
    """
    crlf = stdout.find(b"\r\n\r\n")
    lf = stdout.find(b"\n\n")
    if crlf == -1 and lf == -1:
        raise RemoteProtocolError("no blank line ends the CGI header block")
    if lf == -1 or (crlf != -1 and crlf < lf):
        head, body = stdout[:crlf], stdout[crlf + 4 :]
    else:
        head, body = stdout[:lf], stdout[lf + 2 :]
    status = 200
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").split("\n"):
        name, sep, value = line.rstrip("\r").partition(":")
        if not sep:
            raise RemoteProtocolError(f"CGI header line without a colon: {line!r}")
        # Only blanks are trimmed (HTTP's OWS, as nginx does): str.strip() would
        # also eat \x1f, \x85 or \xa0, which are part of a value.
        name, value = name.strip(" \t"), value.strip(" \t")
        if name.lower() == "status":
            code = value.split(" ", 1)[0]
            if not (len(code) == 3 and code.isdigit()):
                raise RemoteProtocolError(f"bad CGI Status header: {value!r}")
            status = int(code)
        else:
            headers.append((name, value))
    return status, headers, body
