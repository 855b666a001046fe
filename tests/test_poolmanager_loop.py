"""A pool manager's loop turned step by step on a fake system
(tests/fakesystem.py): its workers are fake children the test makes exit,
its clock jumps instead of sleeping. The listening socket, the pipes to the
master, the scoreboard and the error log are real.

The same behaviours with real processes: test_processes.py."""

from __future__ import annotations

import os
import signal
import socket
import struct
from pathlib import Path

import pytest
from fakesystem import FakeSystem

from pfm import sockets
from pfm.config import load, parse_listen
from pfm.log import Log
from pfm.logfiles import PoolFiles
from pfm.pool import scoreboard_slots
from pfm.poolmanager import KILL_AFTER_TERM, ManagerContext, PoolManager
from pfm.procutil import EXIT_BOOT_FAILED
from pfm.scoreboard import IDLE, Scoreboard

APPS = Path(__file__).parent / "apps"

pytestmark = pytest.mark.timeout(20)


class Rig:
    def __init__(self, tmp_path: Path, control_timeout: float = 0, **pool):
        self.dir = tmp_path
        settings = {"listen": tmp_path / "www.sock", "pm": "static", "pm.max_children": 2,
                    "app": "testapps:app", "pythonpath": APPS}
        settings.update({k.replace("__", "."): v for k, v in pool.items()})
        path = tmp_path / "pfm.conf"
        path.write_text("[global]\nerror_log = %s\n\n[www]\n%s\n" % (
            tmp_path / "error.log", "\n".join("%s = %s" % kv for kv in settings.items())))
        self.pool = load(str(path)).pools[0]
        self.system = FakeSystem()
        self.listener = sockets.bind(parse_listen(self.pool.listen))
        self.lifeline_r, self.lifeline_w = os.pipe2(os.O_CLOEXEC)
        self.report_r, self.report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.master_end, control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.board = Scoreboard.create(scoreboard_slots(self.pool))
        self.manager = PoolManager(ManagerContext(
            pool=self.pool, listener=self.listener, files=PoolFiles(self.pool),
            log=Log(str(tmp_path / "error.log"), "debug"), board=self.board,
            system=self.system, lifeline_fd=self.lifeline_r, report_fd=self.report_w,
            control=control, master_pid=self.system.getpid(),
            control_timeout=control_timeout))
        self.manager.open_loop()

    def log(self) -> str:
        return (self.dir / "error.log").read_text()

    def workers(self) -> list[int]:
        return sorted(self.manager.children)

    def run(self, until, turns: int = 1000) -> None:
        self.system.run(self.manager, until, turns)

    def replacement(self, pid: int) -> int:
        """Turn the loop until the worker `pid` is replaced (pools of one)."""
        self.run(lambda: pid not in self.manager.children and self.manager.children)
        (new,) = self.workers()
        return new

    def booted(self, pid: int) -> None:
        """The worker `pid` claims its slot and goes idle, as a real one would."""
        slot = self.board.slot(self.manager.children[pid].slot)
        slot.claim(pid, self.system.time(), self.system.now)
        slot.set_stage(IDLE, self.system.now)

    def close(self) -> None:
        self.manager.poller.close()
        self.system.close()
        self.listener.sock.close()
        self.master_end.close()
        for fd in (self.lifeline_r, self.lifeline_w, self.report_r, self.report_w):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**settings) -> Rig:
        made.append(Rig(tmp_path, **settings))
        return made[-1]
    yield make
    for r in made:
        r.close()


def test_the_first_workers_are_forked_at_start(rig):
    r = rig()
    assert r.workers() == r.system.forked and len(r.system.forked) == 2
    assert "[pool www] child %d started" % r.system.forked[0] in r.log()


def test_a_worker_that_fails_to_initialize_is_replaced_after_doubling_pauses(rig):
    r = rig(pm__max_children=1)
    pauses = []
    for _ in range(4):
        (pid,) = r.workers()
        r.system.exit(pid, EXIT_BOOT_FAILED)
        pauses.append(r.system.forked_at[r.replacement(pid)] - r.system.exited_at[pid])
    assert pauses == [1.0, 2.0, 4.0, 8.0]
    assert "[pool www] child %d failed to initialize; next try in 8.0 s" % pid in r.log()


def test_a_worker_that_booted_resets_the_backoff_and_a_crash_is_told_to_the_master(rig):
    r = rig(pm__max_children=1)
    (pid,) = r.workers()
    r.system.exit(pid, EXIT_BOOT_FAILED)
    pid = r.replacement(pid)
    r.system.kill_by(pid, signal.SIGSEGV)
    assert r.system.forked_at[r.replacement(pid)] == r.system.exited_at[pid]   # at once
    assert os.read(r.report_r, 16) == b"S"      # emergency_restart_threshold counts it
    assert "[pool www] child %d exited on signal 11 (SIGSEGV)" % pid in r.log()


def test_sigterm_sends_term_then_kill_a_second_later_until_the_workers_are_gone(rig):
    r = rig()
    first, second = r.workers()
    start = r.system.now
    r.system.deliver(signal.SIGTERM)
    r.run(lambda: r.system.signals_to(first).count(signal.SIGKILL) == 2)
    assert [(t - start, sig) for t, p, sig in r.system.sent_at if p == first] == [
        (0.0, signal.SIGTERM), (KILL_AFTER_TERM, signal.SIGKILL),
        (2 * KILL_AFTER_TERM, signal.SIGKILL)]
    assert r.system.signals_to(second) == r.system.signals_to(first)
    # ...and to their process groups, so what the app forked stops with them
    assert r.system.signals_to(-first) == r.system.signals_to(first)
    r.system.exit(first, 0)
    assert r.manager.step(0) is False
    r.system.kill_by(second, signal.SIGKILL)
    assert r.manager.step(0) is True
    assert len(r.system.forked) == 2            # nothing replaced while stopping


def test_sigquit_waits_for_the_requests_without_process_control_timeout(rig):
    r = rig()
    (first, _) = r.workers()
    r.system.deliver(signal.SIGQUIT)
    r.manager.step(0)
    for _ in range(10):
        r.system.advance(360.0)
        r.manager.step(0)
    assert r.system.signals_to(first) == [signal.SIGQUIT]
    assert r.system.signals_to(-first) == []    # the request may use what the app forked


def test_sigquit_escalates_after_process_control_timeout(rig):
    r = rig(control_timeout=5)
    (first, _) = r.workers()
    start = r.system.now
    r.system.deliver(signal.SIGQUIT)
    r.run(lambda: signal.SIGKILL in r.system.signals_to(first))
    assert [(t - start, sig) for t, p, sig in r.system.sent_at if p == first] == [
        (0.0, signal.SIGQUIT), (5.0, signal.SIGTERM), (5.0 + KILL_AFTER_TERM, signal.SIGKILL)]


def test_a_master_gone_stops_the_pool_at_once(rig):
    r = rig()
    os.close(r.lifeline_w)
    r.manager.step(0)
    assert sorted(r.system.sent) == sorted((who, signal.SIGTERM) for pid in r.workers()
                                           for who in (pid, -pid))     # worker and group


def test_retirees_are_replaced_in_the_order_they_said_so(rig):
    r = rig()
    first, second = r.workers()
    r.booted(first)
    r.booted(second)
    os.write(r.manager.retire_w, struct.pack("=ii", second, first))
    r.manager.step(0)
    assert r.manager.retiring == [second, first]
    assert len(r.system.forked) == 4            # one replacement each, at once
    r.system.exit(second, 0)
    r.system.exit(first, 0)
    r.manager.step(0)
    assert r.manager.retiring == [] and len(r.system.forked) == 4
