"""request_terminate_timeout's ladder, driven with a simulated clock over a
real scoreboard: the signals a pool manager would send are recorded by a
fake system (tests/fakesystem.py) instead of sent (the pids are made up).
The end-to-end test with a real app that ignores SIGTERM is in
test_status_e2e.py."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
from fakesystem import FakeSystem

from pfm.requestwatch import KILL_DELAY, KILL_GRACE, SIG_STACK_TO_ERRORLOG, RequestWatch
from pfm.scoreboard import Scoreboard

T0 = 1000.0
PID = 4242


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)


@pytest.fixture
def system():
    return FakeSystem(T0)


@pytest.fixture
def sent(system):
    return system.sent


def pool(**extra):
    settings = dict(name="www", app="testapps:app", request_slowlog_timeout=0,
                    request_terminate_timeout=2, request_terminate_timeout_track_finished=False)
    settings.update(extra)
    return SimpleNamespace(**settings)


def running_board(start: float):
    board = Scoreboard.create(1)
    slot = board.slot(board.assign_slot(T0))
    slot.claim(PID, 0.0, T0)
    slot.request_start("GET", "/ignore-term", "", 0, start)
    return board, slot


def run(watch, board, until: float, step: float = 0.05):
    """The manager's loop: check whenever due, on a simulated clock."""
    now = T0
    while now <= until:
        due = watch.due()
        if due is not None and now >= due:
            watch.check(board.read(), now)
        now = round(now + step, 6)


def test_an_overdue_request_is_logged_once_dumped_once_then_term_then_kill(system, sent):
    """Overdue at 2 s: one log line, one stack request, SIGTERM 0.2 s later,
    SIGKILL a second after that - and nothing more however long the worker
    lingers (it used to get SIGTERM and a stack dump three times a second)."""
    board, _ = running_board(T0)
    log = Log()
    watch = RequestWatch(pool(), board, log, slowlog_fd=-1, system=system)
    run(watch, board, until=T0 + 10)
    assert [line for line in log.lines if "execution timed out" in line] == log.lines
    assert len(log.lines) == 1
    assert sent == [(PID, SIG_STACK_TO_ERRORLOG), (PID, signal.SIGTERM), (PID, signal.SIGKILL)]


def test_the_kill_comes_a_grace_after_the_term(system, sent):
    board, _ = running_board(T0)
    watch = RequestWatch(pool(), board, Log(), slowlog_fd=-1, system=system)
    times = []
    now = T0
    while now < T0 + 6:
        due = watch.due()
        if due is not None and now >= due:
            before = len(sent)
            watch.check(board.read(), now)
            times += [(sig, now) for _pid, sig in sent[before:]]
        now = round(now + 0.01, 6)
    when = dict(times)
    assert when[signal.SIGTERM] - when[SIG_STACK_TO_ERRORLOG] == pytest.approx(KILL_DELAY,
                                                                               abs=0.02)
    assert when[signal.SIGKILL] - when[signal.SIGTERM] == pytest.approx(KILL_GRACE, abs=0.02)


def test_a_request_that_ends_after_sigterm_is_not_killed(system, sent):
    """The app ignored SIGTERM but finished its request before the grace
    ran out: the worker is serving again, so no SIGKILL."""
    board, slot = running_board(T0)
    watch = RequestWatch(pool(), board, Log(), slowlog_fd=-1, system=system)
    run(watch, board, until=T0 + 2.5)
    assert sent[-1] == (PID, signal.SIGTERM)
    slot.request_end(T0 + 2.6)
    slot.request_start("GET", "/next", "", 0, T0 + 2.7)
    now = T0 + 2.6
    while now < T0 + 4.5:
        watch.check(board.read(), now)
        now = round(now + 0.05, 6)
    assert signal.SIGKILL not in [sig for _pid, sig in sent]
