"""The pure back-off and recycling decisions of pool.py, on a simulated
clock: when a failing app's workers, a failing fork() and a pool manager
that keeps exiting are tried again, and in which order retirees are owed
their replacements."""

from __future__ import annotations

import math

from pfm.pool import (
    MAX_BACKOFF,
    STABLE_AFTER,
    Backoff,
    doubling,
    manager_restart,
    newly_retiring,
)

T0 = 1000.0


def test_doubling_starts_at_first_and_stops_at_the_cap():
    assert [doubling(1.0, 30.0, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert [doubling(0.1, 2.0, n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert doubling(1.0, 30.0, 10_000) == 30.0      # no overflow however long it fails


def test_a_manager_that_keeps_exiting_is_restarted_at_once_then_after_doubling_pauses():
    """Each lives 0.5 s: restarted at once, then 2, 4, 8, 16 s later, then every 30 s."""
    now, failures, restarts = T0, 0, []
    for _ in range(8):
        now += 0.5                                  # it lived half a second
        failures, pause = manager_restart(failures, lived=0.5)
        restarts.append(pause)
        now += pause
    assert restarts == [0.0, 2.0, 4.0, 8.0, 16.0, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]


def test_a_manager_that_lived_long_enough_starts_its_count_over():
    failures, pause = manager_restart(5, lived=STABLE_AFTER)
    assert (failures, pause) == (1, 0.0)
    failures, pause = manager_restart(failures, lived=STABLE_AFTER - 0.001)
    assert (failures, pause) == (2, 2.0)


def test_the_master_and_the_boot_backoff_share_one_formula():
    """The manager restart pauses are the boot back-off's (1 s doubling to
    30 s) for every failure after the first."""
    boot = Backoff(1.0, MAX_BACKOFF)
    for n in range(2, 12):
        expected = boot.failed(T0)
        assert manager_restart(n - 1, lived=0.0) == (n, doubling(1.0, MAX_BACKOFF, n))
        assert doubling(1.0, MAX_BACKOFF, n) == min(MAX_BACKOFF, 2 * expected)


def test_boot_backoff_holds_forks_until_the_pause_is_over_and_a_success_resets_it():
    boot = Backoff(1.0, MAX_BACKOFF)
    assert boot.ready(T0) and boot.until == -math.inf
    now = T0
    for pause in (1.0, 2.0, 4.0):
        assert boot.failed(now) == pause
        assert not boot.ready(now + pause - 0.001)
        assert boot.ready(now + pause)
        now += pause
    boot.succeeded()
    assert boot.ready(now) and boot.failed(now) == 1.0


def test_retirees_are_owed_replacements_in_the_order_they_said_so_each_once():
    live = {101, 102, 103, 104}
    assert newly_retiring([103, 101, 103, 999, 102], live, retiring=[102]) == [103, 101]
    assert newly_retiring([], live, retiring=[]) == []
