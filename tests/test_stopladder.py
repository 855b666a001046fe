"""php-fpm's stop ladder: QUIT, TERM after the grace, then KILL; TERM, then
KILL. Driven on a fake clock (tests/fakesystem.py): no sleep, and the edges
are tested exactly, a moment before and at each deadline."""

import signal

from fakesystem import FakeSystem

from pfm.stopladder import StopLadder


def ladder(step: float):
    system, sent = FakeSystem(), []
    return system, sent, StopLadder(sent.append, step, system)


def test_graceful_stop_escalates_quit_term_kill():
    system, sent, stop = ladder(step=0.05)
    stop.start(graceful=True, grace=0.05)
    stop.escalate(children_left=True)
    assert sent == [signal.SIGQUIT]            # the grace is not over yet
    system.advance(0.049)
    stop.escalate(children_left=True)
    assert sent == [signal.SIGQUIT]            # nor a moment before it is
    system.advance(0.001)
    stop.escalate(children_left=True)
    assert sent == [signal.SIGQUIT, signal.SIGTERM]
    system.advance(0.05)
    stop.escalate(children_left=True)
    assert sent == [signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL]


def test_kill_is_repeated_a_step_apart_while_children_are_left():
    system, sent, stop = ladder(step=1.0)
    stop.start(graceful=False, grace=None)
    for _ in range(3):
        system.advance(1.0)
        stop.escalate(children_left=True)
    assert sent == [signal.SIGTERM, signal.SIGKILL, signal.SIGKILL, signal.SIGKILL]


def test_graceful_stop_without_grace_waits_for_ever():
    system, sent, stop = ladder(step=0.01)
    stop.start(graceful=True, grace=None)
    system.advance(3600.0)
    stop.escalate(children_left=True)
    assert sent == [signal.SIGQUIT] and stop.deadline is None


def test_fast_stop_kills_a_step_after_term_and_stops_when_no_child_is_left():
    system, sent, stop = ladder(step=0.02)
    stop.start(graceful=False, grace=None)
    system.advance(0.02)
    stop.escalate(children_left=True)
    system.advance(0.02)
    stop.escalate(children_left=False)
    assert sent == [signal.SIGTERM, signal.SIGKILL]
