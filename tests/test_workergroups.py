"""pfm.workergroups with real processes: what a pool manager ends when it
stops, and what it must never touch."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import harness
import pytest

from pfm import workergroups
from pfm.system import System


def _orphan_in_group() -> tuple[int, int]:
    """(group, member): a leader that exits at once, leaving a child in its
    group, as a worker that forked and was reaped (the leader is reaped here)."""
    r, w = os.pipe()
    leader = os.fork()
    if leader == 0:
        os.setpgid(0, 0)
        member = os.fork()
        if member == 0:
            os.close(r)
            os.execv("/bin/sleep", ["sleep", "30"])
        os.write(w, str(member).encode())
        os._exit(0)
    os.close(w)
    member = int(os.read(r, 32))
    os.close(r)
    os.waitpid(leader, 0)
    return leader, member


@pytest.mark.timeout(20)
def test_a_gone_workers_group_is_ended_with_its_members():
    group, member = _orphan_in_group()
    try:
        groups = workergroups.Groups(System())
        groups.add(group)
        groups.exited(group)            # reaped, but its child is still in the group
        assert groups.pgids == {group}
        t0 = time.monotonic()
        groups.end(0.5)
        harness.wait_for(lambda: not harness.alive(member), 2, "the member to be ended")
        assert time.monotonic() - t0 < 1.5
        assert groups.pgids == set()
    finally:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(20)
def test_a_group_whose_number_a_live_process_has_is_never_signalled():
    """A gone worker's number given to a new process that leads a group of
    its own (the old group emptied meanwhile): not ours, forgotten, spared."""
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        groups = workergroups.Groups(System())
        groups.add(other.pid)
        groups.prune(live_workers=())
        assert groups.pgids == set()
        groups.add(other.pid)
        groups.end(0.2)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.timeout(20)
def test_in_a_worker_the_socket_is_closed_on_exec_and_swapped_in_a_forked_child():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.set_inheritable(True)      # as the master leaves it, for a re-exec
    inode = os.fstat(listener.fileno()).st_ino
    r, w = os.pipe()
    worker = os.fork()
    if worker == 0:
        try:
            os.close(r)
            workergroups.in_worker(listener.fileno())
            report = [os.getpgrp() == os.getpid(),
                      not os.get_inheritable(listener.fileno())]
            child = os.fork()
            if child == 0:
                same = os.fstat(listener.fileno()).st_ino == inode
                os._exit(1 if same else 0)
            _, status = os.waitpid(child, 0)
            report.append(os.waitstatus_to_exitcode(status) == 0)
            report.append(os.fstat(listener.fileno()).st_ino == inode)   # the worker's own
            os.write(w, bytes(report))
        finally:
            os._exit(0)
    os.close(w)
    report = os.read(r, 16)
    os.close(r)
    os.waitpid(worker, 0)
    listener.close()
    assert list(report) == [1, 1, 1, 1]     # own group, cloexec, child unbound, worker bound
