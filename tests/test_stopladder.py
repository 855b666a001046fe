"""php-fpm's stop ladder: QUIT, TERM after the grace, then KILL; TERM, then KILL."""

import signal
import time

from pfm.stopladder import StopLadder


def test_graceful_stop_escalates_quit_term_kill():
    sent = []
    ladder = StopLadder(sent.append, step=0.05)
    ladder.start(graceful=True, grace=0.05)
    ladder.escalate(children_left=True)
    assert sent == [signal.SIGQUIT]            # the grace is not over yet
    time.sleep(0.06)
    ladder.escalate(children_left=True)
    time.sleep(0.06)
    ladder.escalate(children_left=True)
    assert sent == [signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL]


def test_graceful_stop_without_grace_waits_for_ever():
    sent = []
    ladder = StopLadder(sent.append, step=0.01)
    ladder.start(graceful=True, grace=None)
    time.sleep(0.02)
    ladder.escalate(children_left=True)
    assert sent == [signal.SIGQUIT] and ladder.deadline is None


def test_fast_stop_kills_a_step_after_term_and_stops_when_no_child_is_left():
    sent = []
    ladder = StopLadder(sent.append, step=0.02)
    ladder.start(graceful=False, grace=None)
    time.sleep(0.03)
    ladder.escalate(children_left=True)
    time.sleep(0.03)
    ladder.escalate(children_left=False)
    assert sent == [signal.SIGTERM, signal.SIGKILL]
