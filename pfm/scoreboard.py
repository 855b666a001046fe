"""The pool's scoreboard: one shared-memory table per pool, one slot per worker.

Rule of this module: it only lays out and reads bytes; no sockets, no
signals, no policy. The pool manager creates the table before it forks, so
every worker inherits the same anonymous MAP_SHARED mapping.

Who writes what (php-src's lesson: never write a counter from two sides):

* A worker writes only its own slot, through a `SlotWriter`, twice per
  request (`request_start`, `request_end`) and at each stage change.
* The pool manager writes only the header (pool counters), and a slot only
  while no process owns it: `assign_slot` before the fork, `free_slot`
  after the reap.
* Idle, active, total and `accepted conn` are computed from the slots when
  they are read, never stored.

Each slot carries a seqlock counter: the writer makes it odd before writing
and even after, and a reader retries a slot whose counter was odd or changed
while it copied the bytes. Stores reach other CPUs in program order on x86;
on weaker memory models a reader could still, rarely, see a mixed slot, which
is acceptable for a status page ("consistent enough").

Times: `*_time` fields are wall-clock (time.time(), for display); every
other time is time.monotonic(), comparable across the pool's processes.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

# ---- stages -------------------------------------------------------------------------

IDLE = 0        # waiting for a connection (a zeroed slot reads as Idle)
READING = 1     # waiting on connections whose request has not all arrived (worker.Parked);
                # it still takes new connections, but counts as active, as in php-fpm
INFO = 2        # params parsed, request being set up
RUNNING = 3     # the application runs
FINISHING = 4   # response sent (pfm.finish_request), the application still runs
KEEPALIVE = 5   # waiting, holding idle kept-alive connections; also watches the
                # listening socket, so the policy counts it as idle
STARTING = 6    # slot reserved by the manager before fork; the worker is booting
RETIRING = 7    # served its pm.max_requests (or passed pm.max_memory); accepts no
                # more, tells the manager and exits (its replacement is forked at once)

STAGE_NAMES = {
    IDLE: "Idle",
    READING: "Reading headers",
    INFO: "Getting request information",
    RUNNING: "Running",
    FINISHING: "Finishing",
    KEEPALIVE: "Keep-alive idle",
    STARTING: "Starting",
    RETIRING: "Retiring",
}
IDLE_STAGES = frozenset((IDLE, KEEPALIVE))

# php-fpm's scoreboard string limits (fpm_scoreboard.h), plus user as php-fpm.
METHOD_SIZE = 16
URI_SIZE = 128
QUERY_SIZE = 512
SCRIPT_SIZE = 256
USER_SIZE = 32

# ---- layout -------------------------------------------------------------------------
#
# Fields are grouped so that every writer call is one contiguous pack_into
# starting at the seqlock counter (which is therefore written first), then one
# more pack_into of the counter alone. Grouped by who changes them how often:
#
#   seq | stage stage_since heartbeat last_activity     set_stage()
#       | duration_us cpu memory                        + request_end()
#       | requests request_start content_length
#       | method uri query script user                  + request_start()
#       | pid start_time                                + claim(), manager writes

_SEQ = struct.Struct("<Q")
_HEAD = "<Q" + "qddd"
_END = _HEAD + "qdq"
_START = _END + "qdq%ds%ds%ds%ds%ds" % (METHOD_SIZE, URI_SIZE, QUERY_SIZE, SCRIPT_SIZE,
                                        USER_SIZE)
_FULL = _START + "qd"

_HEAD_S = struct.Struct(_HEAD)
_END_S = struct.Struct(_END)
_START_S = struct.Struct(_START)
_FULL_S = struct.Struct(_FULL)

SLOT_SIZE = _FULL_S.size
_CACHE_LINE = 64
# Slots start on their own cache line: workers write their slots at the same
# time, and sharing a line between two of them would bounce it between CPUs.
SLOT_STRIDE = -(-SLOT_SIZE // _CACHE_LINE) * _CACHE_LINE

# Header: seq, start_time, nslots, retired_requests, max_active, max_children_reached,
# slow_requests, listen_queue, max_listen_queue. Every field is 8-byte aligned.
_HEADER_S = struct.Struct("<QdQQQQQQQ")
(_H_SEQ, _H_START, _H_NSLOTS, _H_RETIRED, _H_MAX_ACTIVE, _H_MAX_CHILDREN, _H_SLOW,
 _H_LQ, _H_MAX_LQ) = range(9)    # cells of the header (_H_START is a double)
HEADER_SIZE = -(-_HEADER_S.size // _CACHE_LINE) * _CACHE_LINE

_U64 = struct.Struct("<Q")
_PID_OFFSET = _START_S.size           # the pid field inside a slot
_STAGE_OFFSET = _SEQ.size             # the stage field inside a slot

# A reader retries a slot being written this many times; a writer killed in
# the middle of a write leaves the counter odd for good, so it must give up.
READ_RETRIES = 1000

Text = Union[str, bytes]


class ScoreboardFull(RuntimeError):
    """No free slot: the manager tried to run more workers than it sized the board for."""


def _pause() -> None:
    """Between two reads of a slot being written: let its writer run."""
    os.sched_yield()


def encode(value: Text, size: int) -> bytes:
    """UTF-8 bytes of `value`, at most `size` of them, never ending inside a character.

    bytes are taken as they are (they should already be UTF-8, as the
    request's bytes from nginx usually are); str is encoded.
    """
    data = value.encode("utf-8", "replace") if type(value) is str else value
    if len(data) > size:
        data = _cut(data, size)
    return data


def _cut(data: bytes, size: int) -> bytes:
    """Cut at a UTF-8 character boundary: back off over continuation bytes
    (10xxxxxx), at most three, the longest tail of a character."""
    cut = size
    while cut > size - 3 and cut > 0 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return data[:cut]


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


# ---- what readers get ---------------------------------------------------------------


@dataclass(frozen=True)
class SlotState:
    """One worker as read from its slot. `pid` 0 with stage STARTING: reserved
    by the manager, the child has not claimed it yet (never signal pid 0)."""

    index: int
    pid: int
    stage: int
    stage_name: str
    start_time: float       # wall clock
    stage_since: float      # monotonic
    heartbeat: float        # monotonic
    last_activity: float    # monotonic: when it last went idle
    requests: int
    method: str
    uri: str
    query: str
    script: str
    user: str
    content_length: int
    request_start: float    # monotonic, of the current or last request
    duration_us: int        # of the last finished request
    cpu: float              # % of one CPU during the last request
    memory: int             # bytes, after the last request

    @property
    def idle(self) -> bool:
        return self.stage in IDLE_STAGES


@dataclass(frozen=True)
class PoolCounters:
    """The pool fields of php-fpm's status page that are not the config."""

    start_time: float            # wall clock
    accepted_conn: int           # requests of live slots + retired_requests
    listen_queue: int
    max_listen_queue: int
    idle: int
    active: int
    total: int
    max_active: int
    max_children_reached: int
    slow_requests: int


def peak_active(states: Iterable[SlotState], now: float) -> int:
    """The most requests that ran at once among each worker's current or last
    request: catches a burst between two reads of the table, which counting
    the active workers at read time alone misses."""
    edges = []
    for s in states:
        if not s.pid or not s.request_start:
            continue
        if s.idle or s.stage == STARTING:
            if not s.duration_us:
                continue
            end = s.request_start + s.duration_us / 1e6
        else:
            end = now
        edges.append((s.request_start, 1))
        edges.append((end, -1))
    peak = current = 0
    for _t, step in sorted(edges, key=lambda e: (e[0], e[1])):
        current += step
        peak = max(peak, current)
    return peak


def counts(states: Iterable[SlotState]) -> Tuple[int, int, int]:
    """(idle, active, total) of the workers in `states`; a reserved slot
    (booting worker) is active, as php-fpm counts a child before its first accept."""
    idle = total = 0
    for s in states:
        if s.pid or s.stage == STARTING:
            total += 1
            if s.stage in IDLE_STAGES:
                idle += 1
    return idle, total - idle, total


# ---- the worker side ----------------------------------------------------------------


class SlotWriter:
    """A worker's handle on its own slot, with the offsets and the seqlock
    counter precomputed: each call is two pack_into, no read of the mapping.

    Only one process may hold a SlotWriter for a slot at a time.
    """

    __slots__ = ("index", "_buf", "_off", "_seq", "_stage", "_since", "_last_activity",
                 "_requests", "_request_start")

    def __init__(self, buf: mmap.mmap, index: int, offset: int):
        self.index = index
        self._buf = buf
        self._off = offset
        seq = _SEQ.unpack_from(buf, offset)[0]
        # Stays even between calls; odd only while writing.
        self._seq = seq + 1 if seq & 1 else seq
        v = _FULL_S.unpack_from(buf, offset)
        self._stage = v[1]
        self._since = v[2]
        self._last_activity = v[4]
        self._requests = v[8]
        self._request_start = v[9]

    def claim(self, pid: int, now_wall: float, now_mono: float) -> None:
        """Called by the new worker first thing: the slot is now its own.
        The stage stays STARTING until `set_stage(IDLE, now)` says it accepts."""
        seq = self._seq
        off = self._off
        self._stage = STARTING
        self._since = now_mono
        self._last_activity = now_mono
        self._requests = 0
        self._request_start = 0.0
        _FULL_S.pack_into(self._buf, off, seq + 1, STARTING, now_mono, now_mono, now_mono,
                          0, 0.0, 0, 0, 0.0, 0, b"", b"", b"", b"", b"", pid, now_wall)
        _SEQ.pack_into(self._buf, off, seq + 2)
        self._seq = seq + 2

    def set_stage(self, stage: int, now: float) -> None:
        """A stage change (and heartbeat). Going idle from a non-idle stage
        records `now` as the last activity, which the idle policies compare."""
        old = self._stage
        if stage in IDLE_STAGES and old not in IDLE_STAGES:
            self._last_activity = now
        # stage_since is the start of the stage: kept when the stage does not change.
        if stage != old:
            self._since = now
            self._stage = stage
        seq = self._seq
        _HEAD_S.pack_into(self._buf, self._off, seq + 1, stage, self._since, now,
                          self._last_activity)
        _SEQ.pack_into(self._buf, self._off, seq + 2)
        self._seq = seq + 2

    def request_start(self, method: Text, uri: Text, query: Text, content_length: int,
                      now: float, script: Text = "", user: Text = "") -> None:
        """A request's params are in: stage RUNNING, requests += 1 (this is what
        `accepted conn` sums). Strings as for `encode`: pass the params'
        latin-1 native strings as bytes (`.encode("latin-1")`) to keep the
        request's own bytes."""
        m = encode(method, METHOD_SIZE)
        u = encode(uri, URI_SIZE)
        q = encode(query, QUERY_SIZE)
        s = encode(script, SCRIPT_SIZE)
        a = encode(user, USER_SIZE)
        seq = self._seq
        self._requests = requests = self._requests + 1
        self._request_start = now
        self._stage = RUNNING
        self._since = now
        # The last request's duration, cpu and memory are cleared: they
        # belong to an idle worker only (php-fpm shows them only then).
        try:
            _START_S.pack_into(self._buf, self._off, seq + 1, RUNNING, now, now,
                               self._last_activity, 0, 0.0, 0, requests, now,
                               content_length, m, u, q, s, a)
        except struct.error:
            # A content length that is not an int of the field's range
            # (CONTENT_LENGTH as a string, or crafted): costs nothing until then.
            _START_S.pack_into(self._buf, self._off, seq + 1, RUNNING, now, now,
                               self._last_activity, 0, 0.0, 0, requests, now,
                               _as_length(content_length), m, u, q, s, a)
        _SEQ.pack_into(self._buf, self._off, seq + 2)
        self._seq = seq + 2

    def request_end(self, now: float, cpu: float = 0.0, memory: int = 0,
                    stage: int = IDLE) -> None:
        """The request is over: record its duration, CPU % and memory, and go
        `stage` (IDLE, or KEEPALIVE when kept connections stay open)."""
        seq = self._seq
        self._stage = stage
        self._since = now
        self._last_activity = now
        duration = int((now - self._request_start) * 1e6)
        _END_S.pack_into(self._buf, self._off, seq + 1, stage, now, now, now,
                         duration if duration > 0 else 0, cpu, memory)
        _SEQ.pack_into(self._buf, self._off, seq + 2)
        self._seq = seq + 2

    @property
    def requests(self) -> int:
        """Requests this worker counted: what pm.max_requests compares."""
        return self._requests

    @property
    def stage(self) -> int:
        """The stage this writer last wrote."""
        return self._stage


_I64_MAX = (1 << 63) - 1


def _as_length(value) -> int:
    """A content length the slot's signed 64-bit field holds: anything but a
    plain run of ASCII digits (a crafted CONTENT_LENGTH such as '\u00b2' or
    '-1') is 0, a number past the field (2**64) is clipped to it."""
    if type(value) is int:
        return min(max(value, 0), _I64_MAX)
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    if not (text.isdigit() and text.isascii()):
        return 0
    text = text.lstrip("0")
    return _I64_MAX if len(text) > 19 else min(int(text or "0"), _I64_MAX)


# ---- shared counters ----------------------------------------------------------------


def shared_memory(size: int) -> mmap.mmap:
    """`size` zeroed bytes of anonymous MAP_SHARED memory: made before a fork,
    the same pages in the parent and every child."""
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)


class Cells:
    """A row of unsigned 64-bit counters in shared memory, each written by
    one process only (a cell written from two sides would lose updates).
    The one implementation of pfm's three such tables: the scoreboard's
    pool counters, process.max's workers per pool manager (processmax.py)
    and the hand-off counts (handoff.py).

    `buf`/`offset`: cells inside an existing mapping; by default a new one."""

    __slots__ = ("count", "_buf", "_base")

    def __init__(self, count: int, buf: Optional[mmap.mmap] = None, offset: int = 0):
        self.count = count
        self._buf = shared_memory(count * _U64.size) if buf is None else buf
        self._base = offset

    def get(self, cell: int) -> int:
        return _U64.unpack_from(self._buf, self._base + cell * _U64.size)[0]

    def set(self, cell: int, value: int) -> None:
        _U64.pack_into(self._buf, self._base + cell * _U64.size, value)

    def add(self, cell: int, n: int = 1) -> None:
        off = self._base + cell * _U64.size
        _U64.pack_into(self._buf, off, _U64.unpack_from(self._buf, off)[0] + n)

    def values(self) -> List[int]:
        return [self.get(i) for i in range(self.count)]

    def close(self) -> None:
        self._buf.close()


# ---- the table ----------------------------------------------------------------------


class Scoreboard:
    """The shared table: a header of pool counters and `nslots` worker slots."""

    def __init__(self, buf: mmap.mmap, nslots: int):
        self._buf = buf
        self.nslots = nslots
        self._header = Cells(_HEADER_S.size // _U64.size, buf)

    @classmethod
    def create(cls, nslots: int, start_time: Optional[float] = None) -> Scoreboard:
        """A new zeroed board in anonymous shared memory, made before any fork
        so that every worker maps the same pages. Size it for every process
        that can hold a slot at once: pool.scoreboard_slots(), every worker
        plus a replacement for each retiree that has not exited yet."""
        if nslots < 1:
            raise ValueError("a scoreboard needs at least one slot")
        buf = shared_memory(HEADER_SIZE + nslots * SLOT_STRIDE)
        _HEADER_S.pack_into(buf, 0, 0, time.time() if start_time is None else start_time,
                            nslots, 0, 0, 0, 0, 0, 0)
        return cls(buf, nslots)

    def close(self) -> None:
        self._buf.close()

    def _offset(self, index: int) -> int:
        if not 0 <= index < self.nslots:
            raise IndexError("slot %d out of range (0..%d)" % (index, self.nslots - 1))
        return HEADER_SIZE + index * SLOT_STRIDE

    # -- worker side --

    def slot(self, index: int) -> SlotWriter:
        """The writer for slot `index`, for the worker that owns it."""
        return SlotWriter(self._buf, index, self._offset(index))

    # -- manager side: slots it owns only while no worker does --

    def assign_slot(self, now: Optional[float] = None) -> int:
        """Reserve the first free slot before fork and return its index for
        the child (which then calls `slot(i).claim(...)`). Until the claim it
        reads as pid 0, stage STARTING: counted in total, never idle."""
        buf = self._buf
        for i in range(self.nslots):
            off = HEADER_SIZE + i * SLOT_STRIDE
            if (_U64.unpack_from(buf, off + _PID_OFFSET)[0] == 0
                    and _U64.unpack_from(buf, off + _STAGE_OFFSET)[0] != STARTING):
                t = time.monotonic() if now is None else now
                self._write_whole(off, (STARTING, t, t, t, 0, 0.0, 0, 0, 0.0, 0,
                                        b"", b"", b"", b"", b"", 0, 0.0))
                return i
        raise ScoreboardFull("all %d scoreboard slots are in use" % self.nslots)

    def free_slot(self, index: int) -> None:
        """After the worker was reaped (or the fork failed): its requests go
        to `retired_requests`, so `accepted conn` neither drops nor counts
        them twice, and the slot is zeroed for reuse."""
        off = self._offset(index)
        header = self._header
        requests = _FULL_S.unpack_from(self._buf, off)[8]
        hseq = header.get(_H_SEQ)
        hseq += 1 if hseq % 2 == 0 else 2       # odd: readers of the totals retry
        header.set(_H_SEQ, hseq)
        self._write_whole(off, (IDLE, 0.0, 0.0, 0.0, 0, 0.0, 0, 0, 0.0, 0,
                                b"", b"", b"", b"", b"", 0, 0.0))
        header.add(_H_RETIRED, requests)
        header.set(_H_SEQ, hseq + 1)

    def _write_whole(self, off: int, values: Sequence) -> None:
        """Rewrite a whole slot under its seqlock, continuing its counter
        (left odd if its last writer died in the middle of a write)."""
        seq = _SEQ.unpack_from(self._buf, off)[0]
        odd = seq + 1 if seq & 1 == 0 else seq + 2
        _FULL_S.pack_into(self._buf, off, odd, *values)
        _SEQ.pack_into(self._buf, off, odd + 1)

    # -- manager side: the pool counters --

    def note_max_children_reached(self) -> None:
        self._header.add(_H_MAX_CHILDREN)

    def note_slow_request(self) -> None:
        self._header.add(_H_SLOW)

    def update_max_active(self, active: int) -> None:
        """Raise `max active processes` to `active` if it is higher."""
        if active > self._header.get(_H_MAX_ACTIVE):
            self._header.set(_H_MAX_ACTIVE, active)

    def update_listen_queue(self, depth: int) -> None:
        """Record the listen queue depth just measured (`listen queue`) and
        raise `max listen queue` to it if it is higher."""
        depth = max(0, depth)
        self._header.set(_H_LQ, depth)
        if depth > self._header.get(_H_MAX_LQ):
            self._header.set(_H_MAX_LQ, depth)

    # -- readers (manager, or a worker serving the status page) --

    def read_slot(self, index: int) -> SlotState:
        """One slot, copied under its seqlock (see the module docstring)."""
        return self._state(index, self._copy(self._offset(index)))

    def read(self) -> List[SlotState]:
        """Every slot in use (a live worker, or reserved for one), in slot order."""
        buf = self._buf
        out = []
        for i in range(self.nslots):
            off = HEADER_SIZE + i * SLOT_STRIDE
            # Cheap skip of free slots; a slot being assigned is caught next read.
            if (_U64.unpack_from(buf, off + _PID_OFFSET)[0] == 0
                    and _U64.unpack_from(buf, off + _STAGE_OFFSET)[0] != STARTING):
                continue
            v = self._copy(off)
            if v[16] or v[1] == STARTING:
                out.append(self._state(i, v))
        return out

    def snapshot(self) -> Tuple[PoolCounters, List[SlotState]]:
        """Pool counters and slots read together: retried while the manager
        is freeing a slot, so `accepted conn` never counts a request twice."""
        buf = self._buf
        for _attempt in range(READ_RETRIES):
            before = self._header.get(_H_SEQ)
            states = self.read()
            header = _HEADER_S.unpack_from(buf, 0)
            if before & 1 == 0 and header[0] == before:
                break
            _pause()
        (_seq, start, _n, retired, max_active, max_children, slow, lq,
         max_lq) = header
        idle, active, total = counts(states)
        accepted = retired + sum(s.requests for s in states)
        return PoolCounters(start, accepted, lq, max_lq, idle, active, total,
                            max_active, max_children, slow), states

    def pool_counters(self) -> PoolCounters:
        return self.snapshot()[0]

    def _copy(self, off: int) -> tuple:
        buf = self._buf
        size = SLOT_SIZE
        for _attempt in range(READ_RETRIES):
            before = _SEQ.unpack_from(buf, off)[0]
            raw = buf[off:off + size]
            after = _SEQ.unpack_from(buf, off)[0]
            if before == after and before & 1 == 0:
                break
            _pause()
        # Out of retries: the writer died mid-write; the last copy is all there is.
        return _FULL_S.unpack(raw)

    @staticmethod
    def _state(index: int, v: tuple) -> SlotState:
        stage = v[1]
        return SlotState(
            index=index, pid=v[16], stage=stage, stage_name=STAGE_NAMES.get(stage, "Unknown"),
            start_time=v[17], stage_since=v[2], heartbeat=v[3], last_activity=v[4],
            requests=v[8], method=_text(v[11]), uri=_text(v[12]), query=_text(v[13]),
            script=_text(v[14]), user=_text(v[15]), content_length=v[10],
            request_start=v[9], duration_us=v[5], cpu=v[6], memory=v[7])
