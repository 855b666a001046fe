"""Unit tests for pfm.handoff: passing a connection and the bytes already
read from it to another process, over real socket pairs in this process
(a descriptor passed to oneself is passed all the same)."""

from __future__ import annotations

import os
import socket

import pytest

from pfm import handoff, logfiles


@pytest.fixture
def pair():
    ours, theirs = handoff.pair()
    yield ours, theirs
    ours.close()
    theirs.close()


@pytest.fixture
def connection():
    """(the connection to pass, its peer: nginx's end)."""
    conn, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield conn, peer
    conn.close()
    peer.close()


def test_both_ends_are_seqpacket_and_never_block(pair):
    for end in pair:
        assert end.type == socket.SOCK_SEQPACKET and end.getblocking() is False
    for end in handoff.adoption_pair():
        assert end.type == socket.SOCK_SEQPACKET and end.getblocking() is False
        end.close()


def test_a_connection_arrives_with_the_bytes_read_from_it(pair, connection):
    ours, theirs = pair
    conn, peer = connection
    assert handoff.send(ours, conn, b"params and stdin")
    conn.close()                # the sender's copy: the receiver's stays open
    got, data, fresh = handoff.receive(theirs, socket.AF_UNIX)
    assert (data, fresh) == (b"params and stdin", False)
    assert got.getblocking() is True
    got.sendall(b"answer")      # the same connection: its peer reads it
    assert peer.recv(100) == b"answer"
    got.close()


def test_an_idle_kept_connection_arrives_with_no_bytes(pair, connection):
    ours, theirs = pair
    assert handoff.send(ours, connection[0], b"")
    got, data, fresh = handoff.receive(theirs, socket.AF_UNIX)
    assert (data, fresh) == (b"", False)
    got.close()


def test_a_fresh_connection_is_told_from_an_idle_kept_one(pair, connection):
    ours, theirs = pair
    assert handoff.send(ours, connection[0], b"", fresh=True)
    got, data, fresh = handoff.receive(theirs, socket.AF_UNIX)
    assert (data, fresh) == (b"", True)
    got.close()


def test_the_largest_message_arrives_whole(pair, connection):
    ours, theirs = pair
    data = bytes(range(256)) * (handoff.MAX_BYTES // 256)
    assert len(data) == handoff.MAX_BYTES
    assert handoff.send(ours, connection[0], data)
    got, received, _fresh = handoff.receive(theirs, socket.AF_UNIX)
    assert received == data
    got.close()


def test_nothing_to_receive_when_another_worker_took_it(pair):
    assert handoff.receive(pair[1], socket.AF_UNIX) is None


def test_a_full_queue_says_so_and_takes_more_once_read(pair, connection):
    ours, theirs = pair
    sent = 0
    while handoff.send(ours, connection[0], b"x"):
        sent += 1
    assert sent > 0
    got = handoff.receive(theirs, socket.AF_UNIX)
    got[0].close()
    assert handoff.send(ours, connection[0], b"y")
    for _ in range(sent):
        got = handoff.receive(theirs, socket.AF_UNIX)
        got[0].close()
    assert got[1] == b"y"           # in order, after what waited
    assert handoff.receive(theirs, socket.AF_UNIX) is None


def test_counts_say_how_many_handed_off_connections_wait():
    counts = handoff.HandoffCounts(3)
    assert counts.waiting() == 0
    for _ in range(4):
        counts.sent()
    counts.taken(0)
    counts.taken(2)
    assert counts.waiting() == 2
    counts.taken(2)
    counts.taken(1)
    assert counts.waiting() == 0
    counts.taken(1)                 # a slot's next worker counting on: never below 0
    assert counts.waiting() == 0


def test_log_descriptors_reach_the_manager_for_a_reopen(tmp_path):
    """The same mechanism carries a log reopen's fresh descriptors."""
    master, manager = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    paths = [tmp_path / "access.log", tmp_path / "slow.log"]
    fresh = [logfiles.open_append(str(p)) for p in paths]
    logfiles.send_fds(master, b"reopen", fresh)
    for fd in fresh:
        os.close(fd)
    message, fds = logfiles.recv_fds(manager)
    assert message == b"reopen" and len(fds) == 2
    for fd, path in zip(fds, paths):
        os.write(fd, b"line\n")
        os.close(fd)
        assert path.read_bytes() == b"line\n"
    master.close()
    manager.close()
