"""Tests for pfm.scoreboard: the shared-memory table of a pool's workers.

Unit tests on one mapping, plus one real fork to show that what a child
writes is what its parent reads.
"""

from __future__ import annotations

import mmap
import os
import time

import pytest
from harness import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from pfm import scoreboard as sb
from pfm.scoreboard import (
    FINISHING,
    IDLE,
    KEEPALIVE,
    READING,
    RUNNING,
    STARTING,
    Scoreboard,
    ScoreboardFull,
    counts,
    encode,
)

T0 = 1000.0          # a monotonic time
WALL = 1764331200.0  # a wall-clock time


def worker(board: Scoreboard, pid: int = 4242, now: float = T0):
    """A slot assigned by the 'manager' and claimed by a 'worker' that is ready."""
    index = board.assign_slot(now)
    slot = board.slot(index)
    slot.claim(pid, WALL, now)
    slot.set_stage(IDLE, now)
    return index, slot


def seq_of(board: Scoreboard, index: int) -> int:
    return sb._SEQ.unpack_from(board._buf, board._offset(index))[0]


def set_seq(board: Scoreboard, index: int, value: int) -> None:
    sb._SEQ.pack_into(board._buf, board._offset(index), value)


# ---- layout -------------------------------------------------------------------------


def test_slots_start_on_their_own_cache_line():
    assert sb.SLOT_STRIDE % 64 == 0 and sb.HEADER_SIZE % 64 == 0
    assert sb.SLOT_SIZE <= sb.SLOT_STRIDE < sb.SLOT_SIZE + 64
    board = Scoreboard.create(3)
    assert len(board._buf) == sb.HEADER_SIZE + 3 * sb.SLOT_STRIDE


def test_new_board_has_no_workers_and_its_start_time():
    board = Scoreboard.create(4, start_time=WALL)
    assert board.read() == []
    c = board.pool_counters()
    assert (c.start_time, c.accepted_conn, c.idle, c.active, c.total) == (WALL, 0, 0, 0, 0)


# ---- worker writes, manager reads ---------------------------------------------------


def test_claimed_slot_reads_back_pid_start_time_and_starting_stage():
    board = Scoreboard.create(2)
    i = board.assign_slot(T0)
    board.slot(i).claim(777, WALL, T0 + 0.5)
    (s,) = board.read()
    assert (s.index, s.pid, s.stage, s.stage_name) == (i, 777, STARTING, "Starting")
    assert s.start_time == WALL and s.stage_since == T0 + 0.5 and s.requests == 0


def test_request_start_and_end_round_trip():
    board = Scoreboard.create(2)
    i, slot = worker(board)
    slot.request_start("POST", "/app.py", "a=1&b=2", 42, T0 + 1, script="/srv/app.py",
                       user="alice")
    (s,) = board.read()
    assert (s.stage, s.stage_name) == (RUNNING, "Running")
    assert (s.method, s.uri, s.query, s.script, s.user) == (
        "POST", "/app.py", "a=1&b=2", "/srv/app.py", "alice")
    assert (s.content_length, s.request_start, s.stage_since, s.heartbeat) == (
        42, T0 + 1, T0 + 1, T0 + 1)
    assert s.requests == 1 and slot.requests == 1

    slot.request_end(T0 + 1.25, cpu=12.5, memory=3 << 20)
    (s,) = board.read()
    assert (s.stage, s.stage_name, s.idle) == (IDLE, "Idle", True)
    assert s.duration_us == 250000 and s.cpu == 12.5 and s.memory == 3 << 20
    assert s.last_activity == T0 + 1.25 and s.stage_since == T0 + 1.25
    # The last request stays on show while idle, as php-fpm's status page has it.
    assert (s.method, s.uri, s.requests) == ("POST", "/app.py", 1)


def test_next_request_clears_the_last_requests_figures():
    board = Scoreboard.create(1)
    _, slot = worker(board)
    slot.request_start("GET", "/a", "", 0, T0 + 1)
    slot.request_end(T0 + 2, cpu=50.0, memory=1000)
    slot.request_start("GET", "/b", "", 0, T0 + 3)
    (s,) = board.read()
    assert (s.uri, s.requests, s.duration_us, s.cpu, s.memory) == ("/b", 2, 0, 0.0, 0)


def test_shorter_string_leaves_no_tail_of_the_longer_one():
    board = Scoreboard.create(1)
    _, slot = worker(board)
    slot.request_start("DELETE", "/a/very/long/uri", "x=1", 0, T0)
    slot.request_end(T0 + 1)
    slot.request_start("GET", "/b", "", 0, T0 + 2)
    (s,) = board.read()
    assert (s.method, s.uri, s.query) == ("GET", "/b", "")


def test_content_length_may_come_straight_from_the_params():
    board = Scoreboard.create(1)
    _, slot = worker(board)
    slot.request_start("POST", "/", "", "1234", T0)
    assert board.read()[0].content_length == 1234
    slot.request_start("GET", "/", "", "", T0)
    assert board.read()[0].content_length == 0


@pytest.mark.parametrize("given,stored", [
    ("18446744073709551616", (1 << 63) - 1), ("\u00b2", 0), ("\u0665", 0), ("-1", 0),
    (" 5", 0), ("1" * 5000, (1 << 63) - 1), (1 << 64, (1 << 63) - 1)])
def test_crafted_content_length_never_breaks_the_slot_write(given, stored):
    """A CONTENT_LENGTH no web server sends (2**64, a unicode digit) used to
    raise in request_start and crash the worker: it is stored clipped to
    the field, or 0 when it is no number at all."""
    board = Scoreboard.create(1)
    _, slot = worker(board)
    slot.request_start("POST", "/", "", given, T0)
    (s,) = board.read()
    assert s.content_length == stored and s.stage == RUNNING and s.requests == 1


def test_request_end_in_keepalive_counts_as_idle():
    board = Scoreboard.create(1)
    _, slot = worker(board)
    slot.request_start("GET", "/", "", 0, T0)
    slot.request_end(T0 + 1, stage=KEEPALIVE)
    (s,) = board.read()
    assert (s.stage_name, s.idle, s.last_activity) == ("Keep-alive idle", True, T0 + 1)
    assert counts([s]) == (1, 0, 1)


def test_set_stage_keeps_stage_since_while_the_stage_does_not_change():
    board = Scoreboard.create(1)
    _, slot = worker(board, now=T0)
    slot.set_stage(IDLE, T0 + 5)
    (s,) = board.read()
    assert (s.stage_since, s.heartbeat) == (T0, T0 + 5)


def test_last_activity_moves_only_when_the_worker_goes_idle():
    board = Scoreboard.create(1)
    _, slot = worker(board, now=T0)
    slot.set_stage(READING, T0 + 1)            # a connection came in
    assert board.read()[0].last_activity == T0
    slot.set_stage(IDLE, T0 + 2)               # ... and went without a request
    assert board.read()[0].last_activity == T0 + 2
    slot.set_stage(KEEPALIVE, T0 + 3)          # idle to idle: not activity
    s = board.read()[0]
    assert (s.last_activity, s.stage_since) == (T0 + 2, T0 + 3)
    slot.request_start("GET", "/", "", 0, T0 + 4)
    slot.set_stage(FINISHING, T0 + 5)          # after pfm.finish_request
    assert board.read()[0].stage_name == "Finishing"
    slot.request_end(T0 + 6)
    assert board.read()[0].last_activity == T0 + 6


# ---- strings ------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
@pytest.mark.parametrize("size", [16, 127, 128, 129, 130])
def test_long_utf8_is_cut_at_a_character_boundary(char, size):
    data = encode(char * 200, size)
    text = data.decode("utf-8")                # raises if a character was split
    width = len(char.encode())
    assert len(data) == size - size % width
    assert text == char * (size // width)


def test_cut_keeps_a_character_that_ends_exactly_at_the_limit():
    assert encode("ab€", 5) == "ab€".encode()
    assert encode("ab€", 4) == b"ab"


def test_uri_longer_than_its_field_is_cut_whole_characters():
    board = Scoreboard.create(1)
    _, slot = worker(board)
    uri = "/" + "é" * 100                       # 201 bytes for a 128-byte field
    query = "q=" + "€" * 300
    slot.request_start("GET", uri, query, 0, T0, script="/" + "x" * 300)
    s = board.read()[0]
    assert s.uri == "/" + "é" * 63 and len(s.uri.encode()) == 127
    assert s.query == "q=" + "€" * 170 and len(s.query.encode()) == 512
    assert s.script == "/" + "x" * 255


def test_bytes_are_stored_as_given():
    """A worker hands over the request's own bytes (latin-1 native strings
    encoded back), so a UTF-8 URI from nginx is shown as it was sent."""
    board = Scoreboard.create(1)
    _, slot = worker(board)
    native = "/caf\xc3\xa9"                     # how PEP 3333 presents b"/caf\xc3\xa9"
    slot.request_start(b"GET", native.encode("latin-1"), b"", 0, T0)
    assert board.read()[0].uri == "/café"


_FIELDS = (("method", sb.METHOD_SIZE), ("uri", sb.URI_SIZE), ("query", sb.QUERY_SIZE),
           ("script", sb.SCRIPT_SIZE), ("user", sb.USER_SIZE))
_CHARS = st.sampled_from("a/é€😀\0")


def _value(size: int):
    """str or bytes, short or ending near `size` bytes with multi-byte
    characters straddling the limit."""
    near = st.builds(lambda pad, tail: "a" * pad + tail,
                     st.integers(max(0, size - 8), size), st.text(_CHARS, max_size=6))
    text = st.one_of(st.text(_CHARS, max_size=8), near)
    return st.one_of(text, text.map(str.encode), st.binary(max_size=size + 4))


@fuzz_settings(200)
@given(st.tuples(*[_value(size) for _name, size in _FIELDS]))
def test_request_start_stores_each_string_as_encode_makes_it(values):
    """request_start writes, byte for byte, what encode() makes of each
    string, str or bytes, cut or not, in each of the five fields."""
    board = Scoreboard.create(1)
    index, slot = worker(board)
    method, uri, query, script, user = values
    slot.request_start(method, uri, query, 0, T0, script=script, user=user)
    raw = sb._FULL_S.unpack_from(board._buf, board._offset(index))[11:16]
    for (name, size), value, stored in zip(_FIELDS, values, raw):
        assert stored == encode(value, size).ljust(size, b"\0"), name
    board.close()


def test_invalid_utf8_reads_with_replacement_characters():
    board = Scoreboard.create(1)
    _, slot = worker(board)
    slot.request_start(b"GET", b"/\xff", b"", 0, T0)
    assert board.read()[0].uri == "/\ufffd"


# ---- slots: assign, free, reuse -----------------------------------------------------


def test_assigned_slot_is_reserved_until_claimed():
    """Between fork and claim the slot already counts in total (so the policy
    does not fork again for it) but not as idle."""
    board = Scoreboard.create(3)
    assert board.assign_slot(T0) == 0
    assert board.assign_slot(T0) == 1          # a reserved slot is not free
    states = board.read()
    assert [(s.pid, s.stage) for s in states] == [(0, STARTING), (0, STARTING)]
    assert counts(states) == (0, 2, 2)


def test_free_slot_is_reused_first_and_comes_back_clean():
    board = Scoreboard.create(3)
    a, slot_a = worker(board, pid=1)
    b, _ = worker(board, pid=2)
    c, _ = worker(board, pid=3)
    slot_a.request_start("GET", "/x", "y=1", 5, T0)
    slot_a.request_end(T0 + 1)
    board.free_slot(b)
    assert [s.pid for s in board.read()] == [1, 3]
    assert board.assign_slot(T0 + 2) == b
    slot = board.slot(b)
    slot.claim(4, WALL, T0 + 2)
    s = board.read_slot(b)
    assert (s.pid, s.requests, s.uri, s.start_time) == (4, 0, "", WALL)


def test_full_board_refuses_another_slot():
    board = Scoreboard.create(2)
    board.assign_slot(T0)
    board.assign_slot(T0)
    with pytest.raises(ScoreboardFull):
        board.assign_slot(T0)


def test_slot_index_out_of_range():
    board = Scoreboard.create(2)
    with pytest.raises(IndexError):
        board.slot(2)
    with pytest.raises(IndexError):
        board.free_slot(-1)


def test_counts_idle_active_total_from_the_slots():
    board = Scoreboard.create(6)
    _, s1 = worker(board, pid=1)
    _, s2 = worker(board, pid=2)
    _, s3 = worker(board, pid=3)
    worker(board, pid=4)
    board.assign_slot(T0)                      # booting: active, as php-fpm counts it
    s1.request_start("GET", "/", "", 0, T0)
    s2.set_stage(READING, T0)
    s3.request_start("GET", "/", "", 0, T0)
    s3.request_end(T0 + 1, stage=KEEPALIVE)
    assert counts(board.read()) == (2, 3, 5)
    c = board.pool_counters()
    assert (c.idle, c.active, c.total) == (2, 3, 5)


# ---- pool counters ------------------------------------------------------------------


def test_accepted_conn_stays_exact_after_a_slot_is_freed():
    board = Scoreboard.create(2)
    a, slot_a = worker(board, pid=1)
    b, slot_b = worker(board, pid=2)
    for k in range(3):
        slot_a.request_start("GET", "/", "", 0, T0 + k)
        slot_a.request_end(T0 + k + 0.5)
    slot_b.request_start("GET", "/", "", 0, T0)
    assert board.pool_counters().accepted_conn == 4
    board.free_slot(a)                         # worker 1 recycled after 3 requests
    assert board.pool_counters().accepted_conn == 4
    assert board.assign_slot(T0 + 5) == a
    fresh = board.slot(a)
    fresh.claim(3, WALL, T0 + 5)
    fresh.set_stage(IDLE, T0 + 5)
    fresh.request_start("GET", "/", "", 0, T0 + 6)
    assert board.pool_counters().accepted_conn == 5


def test_pool_counters_set_by_the_manager():
    board = Scoreboard.create(1)
    board.note_max_children_reached()
    board.note_max_children_reached()
    board.note_slow_request()
    board.update_max_active(3)
    board.update_max_active(2)                 # a maximum never goes down
    board.update_listen_queue(7)
    board.update_listen_queue(2)
    c = board.pool_counters()
    assert (c.max_children_reached, c.slow_requests, c.max_active) == (2, 1, 3)
    assert (c.listen_queue, c.max_listen_queue) == (2, 7)


# ---- across fork --------------------------------------------------------------------


def test_child_writes_its_slot_and_parent_reads_it_across_fork():
    board = Scoreboard.create(4)
    worker(board, pid=1)                       # slot 0 is someone else's
    index = board.assign_slot()                # decided before fork, as the manager does
    pid = os.fork()
    if pid == 0:                               # the worker
        code = 1
        try:
            slot = board.slot(index)
            now = time.monotonic()
            slot.claim(os.getpid(), time.time(), now)
            slot.set_stage(IDLE, now)
            for _ in range(5):
                slot.request_start("GET", "/from/child", "n=1", 0, time.monotonic())
                slot.request_end(time.monotonic(), cpu=1.0, memory=123)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    s = board.read_slot(index)
    assert (s.pid, s.stage, s.requests, s.uri, s.memory) == (pid, IDLE, 5, "/from/child", 123)
    assert board.pool_counters().accepted_conn == 5
    board.free_slot(index)                     # the manager, after the reap
    assert board.pool_counters().accepted_conn == 5
    assert [s.pid for s in board.read()] == [1]


# ---- the seqlock --------------------------------------------------------------------


def test_writer_leaves_the_counter_even_and_advances_it():
    board = Scoreboard.create(1)
    i, slot = worker(board)
    before = seq_of(board, i)
    slot.request_start("GET", "/", "", 0, T0)
    slot.request_end(T0 + 1)
    after = seq_of(board, i)
    assert before % 2 == 0 and after == before + 4


def test_reader_retries_a_slot_whose_counter_is_odd(monkeypatch):
    """The slot is being written (odd counter): the reader waits for the
    writer instead of returning the half-written bytes."""
    board = Scoreboard.create(1)
    i, slot = worker(board, pid=5)
    seq = seq_of(board, i)
    set_seq(board, i, seq + 1)                 # the writer is in the middle...
    pauses = []

    def writer_finishes():
        pauses.append(1)
        slot._seq = seq + 2                    # ...and completes a request_start
        slot.request_start("GET", "/done", "", 0, T0)

    monkeypatch.setattr(sb, "_pause", writer_finishes)
    s = board.read_slot(i)
    assert pauses == [1]
    assert (s.uri, s.stage) == ("/done", RUNNING)


def test_reader_retries_when_the_counter_changed_during_the_copy(monkeypatch):
    class Meddling(mmap.mmap):
        """A mapping where a writer slips in while the reader copies a slot."""
        meddled = 0

        def __getitem__(self, key):
            data = super().__getitem__(key)
            if isinstance(key, slice) and not self.meddled:
                Meddling.meddled += 1
                seq = sb._SEQ.unpack_from(self, key.start)[0]
                sb._SEQ.pack_into(self, key.start, seq + 2)   # a whole write happened
            return data

    size = sb.HEADER_SIZE + sb.SLOT_STRIDE
    board = Scoreboard(Meddling(-1, size, flags=mmap.MAP_SHARED), 1)
    pauses = []
    monkeypatch.setattr(sb, "_pause", lambda: pauses.append(1))
    worker(board, pid=9)
    Meddling.meddled = 0
    assert board.read_slot(0).pid == 9
    assert Meddling.meddled == 1 and len(pauses) == 1


def test_reader_gives_up_on_a_writer_that_died_mid_write(monkeypatch):
    """A worker killed between its two stores leaves the counter odd for
    good; the reader must return, not spin forever."""
    board = Scoreboard.create(1)
    i, _ = worker(board, pid=6)
    set_seq(board, i, seq_of(board, i) + 1)
    pauses = []
    monkeypatch.setattr(sb, "_pause", lambda: pauses.append(1))
    assert board.read_slot(i).pid == 6
    assert len(pauses) == sb.READ_RETRIES


def test_freeing_a_slot_left_odd_by_a_dead_writer_makes_it_reusable():
    board = Scoreboard.create(1)
    i, _ = worker(board, pid=6)
    set_seq(board, i, seq_of(board, i) + 1)
    board.free_slot(i)
    assert seq_of(board, i) % 2 == 0
    assert board.assign_slot(T0) == i
    slot = board.slot(i)
    slot.claim(8, WALL, T0)
    assert seq_of(board, i) % 2 == 0 and board.read_slot(i).pid == 8


def test_totals_are_reread_while_the_manager_frees_a_slot(monkeypatch):
    """accepted conn sums the slots and retired_requests; read in the middle
    of free_slot it could count a request twice, so the reader retries."""
    board = Scoreboard.create(1)
    i, slot = worker(board, pid=6)
    slot.request_start("GET", "/", "", 0, T0)
    board._header.set(sb._H_SEQ, 1)           # free_slot is under way
    board._header.set(sb._H_RETIRED, 1)       # retired already counts it
    pauses = []

    def manager_finishes():
        pauses.append(1)
        board._write_whole(board._offset(i), (IDLE, 0.0, 0.0, 0.0, 0, 0.0, 0, 0, 0.0, 0,
                                              b"", b"", b"", b"", b"", 0, 0.0))
        board._header.set(sb._H_SEQ, 2)

    monkeypatch.setattr(sb, "_pause", manager_finishes)
    counters, states = board.snapshot()
    assert pauses == [1]
    assert counters.accepted_conn == 1 and states == []


# ---- Cells: the u64 counters shared by the scoreboard, process.max and hand-off ----


def test_cells_count_each_on_its_own():
    cells = sb.Cells(3)
    cells.add(0)
    cells.add(2, 5)
    cells.set(1, 7)
    cells.add(1)
    assert cells.values() == [1, 8, 5]
    assert cells.get(2) == 5
    cells.close()


def test_cells_inside_a_mapping_touch_only_their_own_bytes():
    buf = mmap.mmap(-1, 64)
    cells = sb.Cells(2, buf, offset=16)
    cells.set(0, 1)
    cells.add(1, 2 ** 40)
    assert buf[:16] == bytes(16) and buf[32:] == bytes(32)
    assert sb.Cells(6, buf).values() == [0, 0, 1, 2 ** 40, 0, 0]


def test_cells_written_by_a_child_are_read_by_its_parent():
    cells = sb.Cells(2)
    pid = os.fork()
    if pid == 0:
        cells.add(1, 3)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert cells.values() == [0, 3]


def test_process_table_sums_every_managers_cell():
    from pfm.processmax import ProcessTable
    table = ProcessTable(4)
    assert table.cells == 4 and table.total() == 0
    table.set(0, 2)
    table.set(3, 5)
    table.set(0, 1)
    assert table.total() == 6
    table.close()
