"""Tests for pfm.pool: the process-manager policy on a simulated clock.

No processes: a `Sim` holds fake slot states, applies each Decision the way
the pool manager does (forks become idle workers at once unless asked to
boot, stopped workers are reaped at once unless kept), and moves the clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

import pytest

from pfm import pool
from pfm.log import WARNING
from pfm.pool import PolicyState, decide, initial, max_requests_for_worker
from pfm.scoreboard import IDLE, KEEPALIVE, READING, RETIRING, RUNNING, STARTING, Scoreboard

T0 = 5000.0


@dataclass
class Cfg:
    pm: str = "dynamic"
    pm_max_children: int = 5
    pm_start_servers: Optional[int] = 2
    pm_min_spare_servers: int = 1
    pm_max_spare_servers: int = 3
    pm_max_spawn_rate: int = 32
    pm_process_idle_timeout: float = 10
    pm_max_requests: int = 0
    pm_max_requests_jitter: int = 0
    name: str = "www"


@dataclass
class W:
    pid: int
    stage: int
    last_activity: float
    request_start: float = 0.0


class Sim:
    def __init__(self, cfg: Cfg, now: float = T0, boot: bool = False):
        self.cfg = cfg
        self.now = now
        self.state = PolicyState()
        self.workers: dict[int, W] = {}
        self.next_pid = 100
        self.logs: list[tuple[int, str]] = []
        self.reached = 0
        self.boot = boot           # new workers stay STARTING until `ready()`
        self.retiring: list[int] = []   # said they retire; gone at `reap()`
        for _ in range(initial(cfg)):
            self.fork()

    def fork(self) -> int:
        self.next_pid += 1
        stage = STARTING if self.boot else IDLE
        self.workers[self.next_pid] = W(self.next_pid, stage, self.now)
        return self.next_pid

    def step(self, dt: float = 0.0, reap: bool = True, **kw) -> pool.Decision:
        self.now += dt
        kw.setdefault("retiring", self.retiring)
        d = decide(self.cfg, list(self.workers.values()), self.now, self.state, **kw)
        for _ in range(d.spawn):
            self.fork()
        pool.replaced(self.state, d.replace)
        if reap:
            for pid in d.stop:
                del self.workers[pid]
        self.logs.extend(d.logs)
        self.reached += d.max_children_reached
        return d

    # -- load --

    def busy(self, n: Optional[int] = None) -> None:
        """n idle workers (all by default) take a request."""
        for w in self.idle()[:n]:
            w.stage, w.request_start = RUNNING, self.now

    def done(self, n: Optional[int] = None) -> None:
        """n busy workers (all by default) finish their request now."""
        for w in [w for w in self.workers.values() if w.stage == RUNNING][:n]:
            w.stage, w.last_activity = IDLE, self.now

    def ready(self) -> None:
        for w in self.workers.values():
            if w.stage == STARTING:
                w.stage, w.last_activity = IDLE, self.now

    def retire(self, pid: int) -> None:
        """The worker served its last request and says so (its slot shows Retiring)."""
        self.workers[pid].stage = RETIRING
        self.retiring.append(pid)

    def reap(self, pid: int) -> None:
        del self.workers[pid]
        if pid in self.retiring:
            self.retiring.remove(pid)

    def idle(self) -> list[W]:
        return [w for w in self.workers.values() if w.stage in (IDLE, KEEPALIVE)]

    @property
    def total(self) -> int:
        return len(self.workers)

    def texts(self) -> list[str]:
        return [m for _, m in self.logs]


def busy_msg(n: int, idle: int, total: int) -> str:
    return ("[pool www] seems busy (you may need to increase pm.start_servers, or "
            "pm.min/max_spare_servers), spawning %d children, there are %d idle, and %d "
            "total children" % (n, idle, total))


REACHED_DYNAMIC = "[pool www] server reached pm.max_children setting (5), consider raising it"
REACHED_ONDEMAND = "[pool www] server reached max_children setting (5), consider raising it"


# ---- initial ------------------------------------------------------------------------


def test_initial_workers_per_pm():
    assert initial(Cfg(pm="static", pm_max_children=7)) == 7
    assert initial(Cfg(pm="dynamic", pm_start_servers=3)) == 3
    assert initial(Cfg(pm="ondemand")) == 0


def test_initial_dynamic_without_start_servers_is_php_fpm_default():
    cfg = Cfg(pm_start_servers=None, pm_min_spare_servers=1, pm_max_spare_servers=4)
    assert initial(cfg) == 2                   # min + (max - min) / 2, integer


# ---- static -------------------------------------------------------------------------


def test_static_keeps_max_children_and_replaces_the_dead():
    sim = Sim(Cfg(pm="static"))
    assert sim.total == 5
    assert sim.step().spawn == 0
    del sim.workers[101], sim.workers[102]     # two crashed and were reaped
    assert sim.step(0.1).spawn == 2 and sim.total == 5


def test_static_never_stops_idle_workers():
    sim = Sim(Cfg(pm="static", pm_process_idle_timeout=1))
    for _ in range(100):
        d = sim.step(1.0)
        assert (d.spawn, d.stop, d.logs) == (0, [], [])
        assert d.next_check == sim.now + pool.TICK


def test_static_waits_for_a_stopping_worker_to_exit_before_replacing_it():
    sim = Sim(Cfg(pm="static"))
    assert sim.step(told_to_stop={101}).spawn == 0


# ---- dynamic: growth ----------------------------------------------------------------


def test_dynamic_starts_start_servers_and_holds_steady_between_spares():
    sim = Sim(Cfg(pm_start_servers=2, pm_min_spare_servers=1, pm_max_spare_servers=3))
    assert sim.total == 2
    for _ in range(10):
        d = sim.step(1.0)
        assert (d.spawn, d.stop, d.logs) == (0, [], [])
    assert sim.state.spawn_rate == 1


def grow(sim: Sim, ticks: int) -> list[int]:
    """Every worker is busy at each tick: the spawns per tick."""
    out = []
    for _ in range(ticks):
        sim.busy()
        out.append(sim.step(1.0).spawn)
    return out


def test_dynamic_spawn_rate_doubles_each_tick_up_to_max_spawn_rate():
    cfg = Cfg(pm_max_children=1000, pm_start_servers=1, pm_min_spare_servers=500,
              pm_max_spare_servers=600, pm_max_spawn_rate=32)
    sim = Sim(cfg)
    assert grow(sim, 8) == [1, 2, 4, 8, 16, 32, 32, 32]


def test_dynamic_spawn_rate_is_clamped_at_a_cap_that_is_not_a_power_of_two():
    cfg = Cfg(pm_max_children=1000, pm_start_servers=1, pm_min_spare_servers=500,
              pm_max_spare_servers=600, pm_max_spawn_rate=20)
    assert grow(Sim(cfg), 7) == [1, 2, 4, 8, 16, 20, 20]


def test_dynamic_growth_is_bounded_by_min_spare_and_max_children():
    cfg = Cfg(pm_max_children=17, pm_start_servers=1, pm_min_spare_servers=6,
              pm_max_spare_servers=10)
    sim = Sim(cfg)
    spawns = grow(sim, 8)
    assert spawns == [1, 2, 4, 6, 3, 0, 0, 0]  # min_spare - idle caps at 6, then room
    assert sim.total == 17


def test_dynamic_spawns_only_what_min_spare_lacks():
    sim = Sim(Cfg(pm_max_children=50, pm_start_servers=4, pm_min_spare_servers=4,
                  pm_max_spare_servers=8, pm_max_spawn_rate=32))
    sim.state.spawn_rate = 16
    sim.busy(3)                                # 1 idle left, min_spare 4
    assert sim.step(1.0).spawn == 3


def test_dynamic_spawn_rate_resets_once_enough_workers_are_idle():
    cfg = Cfg(pm_max_children=100, pm_start_servers=1, pm_min_spare_servers=50,
              pm_max_spare_servers=90)
    sim = Sim(cfg)
    grow(sim, 4)
    assert sim.state.spawn_rate == 16
    sim.done()
    sim.workers.update({p: W(p, IDLE, sim.now) for p in range(1000, 1050)})
    sim.step(1.0)
    assert sim.state.spawn_rate == 1


def test_dynamic_ticks_once_per_second_between_calls():
    sim = Sim(Cfg(pm_start_servers=1, pm_min_spare_servers=1))
    d = sim.step()
    assert d.next_check == sim.now + 1.0
    tick = sim.now
    sim.busy()                                 # short of idle now, but not yet a tick
    for dt in (0.2, 0.3, 0.4):
        d = sim.step(dt)
        assert d.spawn == 0 and d.next_check == tick + 1.0
    assert sim.step(0.1).spawn == 1            # the tick is due


def test_booting_workers_count_as_coming_idle_workers():
    """A slow app import must not be answered by more forks at each tick."""
    sim = Sim(Cfg(pm_max_children=10, pm_start_servers=3, pm_min_spare_servers=3,
                  pm_max_spare_servers=5), boot=True)
    for _ in range(5):
        assert sim.step(1.0).spawn == 0
    assert sim.total == 3


# ---- dynamic: messages --------------------------------------------------------------


def test_seems_busy_is_logged_once_the_spawn_rate_reaches_8():
    cfg = Cfg(pm_max_children=1000, pm_start_servers=1, pm_min_spare_servers=500,
              pm_max_spare_servers=600)
    sim = Sim(cfg)
    grow(sim, 3)                               # rates 1, 2, 4: quiet
    assert sim.logs == []
    sim.busy()
    sim.step(1.0)                              # rate 8
    assert sim.logs == [(WARNING, busy_msg(8, 0, 8))]


def test_seems_busy_is_rate_limited_to_one_line_per_warn_interval():
    cfg = Cfg(pm_max_children=10_000, pm_start_servers=1, pm_min_spare_servers=5000,
              pm_max_spare_servers=6000, pm_max_spawn_rate=8)
    sim = Sim(cfg)
    grow(sim, 3)
    lines = []
    for _ in range(int(pool.WARN_INTERVAL) * 3):   # a busy half minute, 1 tick a second
        sim.busy()
        d = sim.step(1.0)
        assert d.spawn == 8                    # the spawning itself is not limited
        lines.append(len(d.logs))
    assert sum(lines) == 3
    assert lines[0] == lines[10] == lines[20] == 1


def test_max_children_warning_is_latched_once_per_episode():
    sim = Sim(Cfg(pm_max_children=5, pm_start_servers=5, pm_min_spare_servers=1,
                  pm_max_spare_servers=5))
    sim.busy()
    d = sim.step(1.0)
    assert d.spawn == 0 and d.max_children_reached
    assert d.logs == [(WARNING, REACHED_DYNAMIC)]
    for _ in range(30):                        # still saturated: no more lines, no count
        d = sim.step(1.0)
        assert d.logs == [] and not d.max_children_reached
    assert sim.reached == 1
    assert sim.state.spawn_rate == 1


def test_max_children_warning_is_rearmed_after_a_spawn():
    sim = Sim(Cfg(pm_max_children=5, pm_start_servers=5, pm_min_spare_servers=1,
                  pm_max_spare_servers=5))
    sim.busy()
    sim.step(1.0)
    del sim.workers[101]                       # one busy worker crashed: room for one
    assert sim.step(pool.WARN_INTERVAL).spawn == 1     # spawn ends the episode
    sim.busy()
    d = sim.step(1.0)                          # at max again: a new episode
    assert d.max_children_reached and d.logs == [(WARNING, REACHED_DYNAMIC)]
    assert sim.reached == 2


def test_max_children_episodes_are_all_counted_but_logged_at_most_once_per_interval():
    sim = Sim(Cfg(pm_max_children=5, pm_start_servers=5, pm_min_spare_servers=1,
                  pm_max_spare_servers=5))
    for _ in range(4):                         # an episode every two seconds
        sim.busy()
        sim.step(1.0)
        pid = next(iter(sim.workers))
        del sim.workers[pid]
        sim.step(1.0)
    assert sim.reached == 4
    assert sim.texts() == [REACHED_DYNAMIC]


# ---- dynamic: shrink ----------------------------------------------------------------


def test_dynamic_stops_one_worker_per_tick_the_longest_idle_by_last_activity():
    sim = Sim(Cfg(pm_max_children=10, pm_start_servers=0, pm_min_spare_servers=1,
                  pm_max_spare_servers=2))
    # Started in pid order; the first started was active most recently.
    sim.workers = {101: W(101, IDLE, T0 - 1), 102: W(102, IDLE, T0 - 50),
                   103: W(103, IDLE, T0 - 30), 104: W(104, IDLE, T0 - 40),
                   105: W(105, KEEPALIVE, T0 - 20)}
    stopped = [sim.step(1.0).stop for _ in range(4)]
    assert stopped == [[102], [104], [103], []]
    assert sorted(sim.workers) == [101, 105]
    assert sim.state.spawn_rate == 1


def test_dynamic_never_stops_a_worker_in_a_request():
    sim = Sim(Cfg(pm_max_children=10, pm_start_servers=0, pm_min_spare_servers=1,
                  pm_max_spare_servers=1))
    sim.workers = {101: W(101, RUNNING, T0 - 100), 102: W(102, READING, T0 - 90),
                   103: W(103, IDLE, T0 - 5), 104: W(104, IDLE, T0 - 1)}
    assert sim.step(1.0).stop == [103]
    for _ in range(5):
        assert sim.step(1.0).stop == []        # the busy ones stay, however old
    assert sorted(sim.workers) == [101, 102, 104]


def test_dynamic_does_not_stop_a_worker_twice():
    sim = Sim(Cfg(pm_max_children=10, pm_start_servers=0, pm_min_spare_servers=1,
                  pm_max_spare_servers=1))
    sim.workers = {101: W(101, IDLE, T0 - 9), 102: W(102, IDLE, T0 - 5),
                   103: W(103, IDLE, T0 - 1)}
    assert sim.step(1.0, reap=False).stop == [101]
    # 101 has not exited yet: it is neither idle nor chosen again.
    assert sim.step(1.0, reap=False, told_to_stop={101}).stop == [102]
    assert sim.step(1.0, reap=False, told_to_stop={101, 102}).stop == []


def test_workers_being_stopped_count_toward_max_children_but_not_as_idle():
    sim = Sim(Cfg(pm_max_children=3, pm_start_servers=0, pm_min_spare_servers=2,
                  pm_max_spare_servers=3))
    sim.workers = {101: W(101, IDLE, T0), 102: W(102, IDLE, T0), 103: W(103, RUNNING, T0)}
    d = sim.step(1.0, told_to_stop={101, 102})
    assert d.spawn == 0 and d.max_children_reached


# ---- dynamic: immediate spawn -------------------------------------------------------


def test_dynamic_spawns_at_once_when_connections_wait_and_none_is_idle():
    sim = Sim(Cfg(pm_max_children=10, pm_start_servers=2, pm_min_spare_servers=1,
                  pm_max_spare_servers=3))
    sim.step()                                 # the tick at start
    sim.busy()
    d = sim.step(0.05, pending=3)              # between ticks
    assert d.spawn == 3


def test_dynamic_immediate_spawn_with_unknown_queue_depth_forks_one():
    sim = Sim(Cfg(pm_start_servers=2))
    sim.step()
    sim.busy()
    assert sim.step(0.05, wanted=True).spawn == 1


def test_no_immediate_spawn_while_an_idle_worker_can_take_the_connection():
    sim = Sim(Cfg(pm_start_servers=2))
    sim.step()
    sim.busy(1)
    assert sim.step(0.05, wanted=True).spawn == 0
    assert sim.step(0.05, pending=1).spawn == 0


def test_immediate_spawn_counts_booting_workers():
    sim = Sim(Cfg(pm_max_children=10, pm_start_servers=2), boot=True)
    sim.step()
    d = sim.step(0.05, pending=3)              # 2 booting take 2 of them
    assert d.spawn == 1
    assert sim.step(0.05, pending=3).spawn == 0    # the manager wakes again: no more


def test_immediate_spawn_stops_at_max_children_and_warns():
    sim = Sim(Cfg(pm_max_children=5, pm_start_servers=2, pm_min_spare_servers=1,
                  pm_max_spare_servers=3))
    sim.step()
    sim.busy()
    d = sim.step(0.05, pending=10)
    assert d.spawn == 3 and sim.total == 5
    assert d.max_children_reached and d.logs == [(WARNING, REACHED_DYNAMIC)]
    sim.busy()
    d = sim.step(0.05, pending=7)
    assert d.spawn == 0 and d.logs == [] and not d.max_children_reached


def test_dynamic_does_not_shrink_while_connections_wait():
    sim = Sim(Cfg(pm_max_children=10, pm_start_servers=0, pm_max_spare_servers=1))
    sim.workers = {101: W(101, IDLE, T0 - 9), 102: W(102, IDLE, T0 - 5)}
    assert sim.step(1.0, pending=2).stop == []
    assert sim.step(1.0).stop == [101]


# ---- ondemand -----------------------------------------------------------------------


def ondemand(**kw) -> Cfg:
    kw.setdefault("pm_process_idle_timeout", 10)
    return Cfg(pm="ondemand", pm_start_servers=None, **kw)


def test_ondemand_starts_with_no_workers_and_waits_for_a_connection():
    sim = Sim(ondemand())
    assert sim.total == 0
    d = sim.step(3.0)
    assert (d.spawn, d.stop, d.logs) == (0, [], [])
    assert d.next_check == sim.now + 10


def test_ondemand_cold_start_forks_on_the_first_connection():
    sim = Sim(ondemand(), boot=True)
    assert sim.step(1.0, wanted=True).spawn == 1
    assert sim.step(0.001, wanted=True).spawn == 0     # it is booting: wait for it


def test_ondemand_burst_grows_to_max_children_and_warns_once():
    sim = Sim(ondemand(pm_max_children=5))
    d = sim.step(1.0, pending=8)
    assert d.spawn == 5
    assert d.max_children_reached and d.logs == [(WARNING, REACHED_ONDEMAND)]
    sim.busy()
    for _ in range(20):
        d = sim.step(0.01, pending=3)
        assert d.spawn == 0 and d.logs == [] and not d.max_children_reached


def test_ondemand_growth_one_connection_at_a_time():
    sim = Sim(ondemand(pm_max_children=3))
    for expected in (1, 2, 3):
        sim.step(0.01, wanted=True)
        sim.busy()
        assert sim.total == expected
    d = sim.step(0.01, wanted=True)
    assert d.spawn == 0 and d.logs == [(WARNING, REACHED_ONDEMAND.replace("(5)", "(3)"))]


def test_ondemand_stops_every_worker_idle_past_the_timeout_at_once():
    sim = Sim(ondemand(pm_max_children=5, pm_process_idle_timeout=10))
    sim.step(0.0, pending=5)
    sim.busy()
    sim.now += 2.0
    sim.done()                                 # the burst is over at T0 + 2
    d = sim.step(9.9)
    assert d.stop == [] and d.next_check == pytest.approx(T0 + 12)
    d = sim.step(0.1)
    assert sorted(d.stop) == [101, 102, 103, 104, 105] and sim.total == 0


def test_ondemand_never_stops_a_busy_worker():
    sim = Sim(ondemand(pm_max_children=3, pm_process_idle_timeout=5))
    sim.step(0.0, pending=3)
    sim.busy(1)                                # 101 holds a long request
    d = sim.step(60.0)
    assert sorted(d.stop) == [102, 103]
    for _ in range(10):
        assert sim.step(60.0).stop == []
    assert list(sim.workers) == [101]


def test_ondemand_next_check_is_when_the_next_idle_worker_expires():
    sim = Sim(ondemand(pm_max_children=5, pm_process_idle_timeout=10))
    sim.workers = {101: W(101, IDLE, T0 - 3), 102: W(102, IDLE, T0 - 7),
                   103: W(103, RUNNING, T0 - 9.5)}
    d = sim.step()
    assert d.stop == [] and d.next_check == T0 + 3     # 102 expires first
    d = sim.step(3.0)
    assert d.stop == [102] and d.next_check == T0 + 7  # then 101


def test_ondemand_next_check_with_only_busy_workers_is_one_timeout_away():
    """A busy worker goes idle at the earliest now, so it cannot expire
    before now + timeout: no need to poll."""
    sim = Sim(ondemand(pm_process_idle_timeout=10))
    sim.workers = {101: W(101, RUNNING, T0 - 100)}
    assert sim.step(1.0).next_check == T0 + 11


def test_ondemand_keeps_an_expired_idle_worker_for_a_waiting_connection():
    """The manager may see a connection before the idle worker accepts it."""
    sim = Sim(ondemand(pm_process_idle_timeout=10))
    sim.workers = {101: W(101, IDLE, T0 - 30), 102: W(102, IDLE, T0 - 20)}
    d = sim.step(wanted=True)
    assert d.spawn == 0 and d.stop == [101]            # 102, the most recent, stays
    assert d.next_check == T0 + pool.TICK


def test_ondemand_worker_being_stopped_is_not_counted_idle():
    sim = Sim(ondemand(pm_max_children=5))
    sim.workers = {101: W(101, IDLE, T0 - 30)}
    d = sim.step(wanted=True, told_to_stop={101})
    assert d.spawn == 1 and d.stop == []


# ---- recycling ----------------------------------------------------------------------


def test_max_requests_jitter_stays_within_its_bounds():
    rng = random.Random(3)
    cfg = Cfg(pm_max_requests=500, pm_max_requests_jitter=50)
    drawn = {max_requests_for_worker(cfg, rng) for _ in range(5000)}
    assert min(drawn) == 500 and max(drawn) == 550 and len(drawn) == 51


def test_max_requests_without_jitter_is_exact():
    assert max_requests_for_worker(Cfg(pm_max_requests=100), random.Random()) == 100


def test_max_requests_zero_means_never_even_with_jitter():
    cfg = Cfg(pm_max_requests=0, pm_max_requests_jitter=50)
    assert max_requests_for_worker(cfg, random.Random()) == 0


# ---- with the real scoreboard -------------------------------------------------------


def test_policy_reads_the_scoreboards_slot_states():
    board = Scoreboard.create(6)
    cfg = Cfg(pm_max_children=6, pm_start_servers=0, pm_min_spare_servers=1,
              pm_max_spare_servers=1)
    for pid, idle_since in ((11, T0 - 5), (12, T0 - 50), (13, T0 - 1)):
        slot = board.slot(board.assign_slot(T0 - 100))
        slot.claim(pid, 0.0, T0 - 100)
        slot.set_stage(IDLE, idle_since)
    board.assign_slot(T0)                      # a fourth one booting, pid not known yet
    d = decide(cfg, board.read(), T0, PolicyState())
    assert d.stop == [12] and d.spawn == 0


def test_unknown_pm_is_refused():
    with pytest.raises(ValueError):
        decide(Cfg(pm="adaptive"), [], T0, PolicyState())


# ---- recycling (pm.max_requests, pm.max_memory) -------------------------------------------


def test_scoreboard_has_a_slot_for_every_worker_and_a_replacement_of_each():
    assert pool.scoreboard_slots(Cfg(pm_max_children=1)) == 2
    assert pool.scoreboard_slots(Cfg(pm_max_children=50)) == 100


@pytest.mark.parametrize("pm", ["static", "dynamic", "ondemand"])
def test_a_retiree_is_replaced_at_once_and_only_once(pm):
    """Not at the next tick: the pool lacks a worker only while the
    replacement boots. Asked again before the retiree is reaped, no second one."""
    sim = Sim(Cfg(pm=pm, pm_max_children=2, pm_start_servers=2, pm_min_spare_servers=1,
                  pm_max_spare_servers=2), boot=True)
    if pm == "ondemand":
        sim.step(wanted=True, pending=2)
    sim.ready()
    sim.step(1.0)
    sim.busy()
    old = sorted(sim.workers)[0]
    sim.retire(old)
    d = sim.step(0.01)                  # well before the next tick
    assert (d.spawn, d.replace) == (1, [old])
    assert sim.step(0.01).spawn == 0
    sim.reap(old)
    assert sim.step(0.01).spawn == 0
    assert len(sim.workers) == 2


def test_retirees_count_neither_in_the_total_nor_as_busy():
    """Both workers of a full pool retire at once: both are replaced (the
    scoreboard has the slots), and max_children is never reported reached."""
    sim = Sim(Cfg(pm="dynamic", pm_max_children=2, pm_start_servers=2,
                  pm_min_spare_servers=1, pm_max_spare_servers=1))
    sim.busy()
    a, b = sorted(sim.workers)
    sim.retire(a)
    sim.retire(b)
    d = sim.step(0.01, pending=2)
    assert (d.spawn, d.replace, d.max_children_reached) == (2, [a, b], False)
    assert len(sim.workers) == 4 <= pool.scoreboard_slots(sim.cfg)


def test_a_replacement_that_could_not_be_forked_is_still_owed():
    """The manager forks what it can (process.max, a failed fork) and says
    which were replaced; the others are asked for again."""
    sim = Sim(Cfg(pm="dynamic", pm_max_children=2, pm_start_servers=2,
                  pm_min_spare_servers=0, pm_max_spare_servers=2))
    sim.busy()
    old = sorted(sim.workers)[0]
    sim.retire(old)
    d = decide(sim.cfg, list(sim.workers.values()), sim.now, sim.state, retiring=[old])
    assert d.replace == [old]           # not forked, not reported as replaced
    d = decide(sim.cfg, list(sim.workers.values()), sim.now, sim.state, retiring=[old])
    assert (d.spawn, d.replace) == (1, [old])


def test_a_worker_whose_slot_shows_retiring_counts_as_a_retiree():
    """Its word may not have reached the manager yet (or never will)."""
    sim = Sim(Cfg(pm="static", pm_max_children=2))
    old = sorted(sim.workers)[0]
    sim.workers[old].stage = RETIRING
    d = sim.step(0.01)
    assert (d.spawn, d.replace) == (1, [old])


def test_a_retiree_reaped_before_its_replacement_leaves_it_to_the_pm():
    """Once gone it is an ordinary exit: dynamic replaces it only if the
    spare servers call for it."""
    sim = Sim(Cfg(pm="dynamic", pm_max_children=3, pm_start_servers=2,
                  pm_min_spare_servers=1, pm_max_spare_servers=2))
    old = sorted(sim.workers)[0]
    sim.workers[old].stage = RUNNING
    sim.retiring.append(old)
    sim.reap(old)
    assert sim.step(1.0).spawn == 0     # one idle worker left: min_spare holds


def test_recycling_a_saturated_small_pool_never_leaves_it_without_workers():
    """The reproduction of issue 9, item 3, on a simulated clock: dynamic,
    pm.max_children = 2, one spare, pm.max_requests = 5, connections always
    waiting, 10 ms per request, 50 ms to boot, a retiree reaped 5 ms after
    it said so. Two workers are always serving or booting, the scoreboard
    never overflows, and every worker serves its 5 requests."""
    cfg = Cfg(pm="dynamic", pm_max_children=2, pm_start_servers=1, pm_min_spare_servers=1,
              pm_max_spare_servers=1, pm_max_requests=5)
    sim = Sim(cfg, boot=True)
    served: dict[int, int] = {}
    born: dict[int, float] = {}
    said: dict[int, float] = {}
    dt = 0.005
    for _ in range(2000):
        sim.now += dt
        for pid, w in list(sim.workers.items()):
            born.setdefault(pid, sim.now)
            if w.stage == STARTING and sim.now - born[pid] >= 0.05:
                w.stage = IDLE
            if w.stage == IDLE:
                w.stage, w.request_start = RUNNING, sim.now
            elif w.stage == RUNNING and sim.now - w.request_start >= 0.01:
                served[pid] = served.get(pid, 0) + 1
                w.stage = IDLE
                if served[pid] == 5:
                    sim.retire(pid)
                    said[pid] = sim.now
            elif w.stage == RETIRING and sim.now - said[pid] >= 0.005:
                sim.reap(pid)
        sim.step(pending=6)             # the manager hears of retirees and exits at once
        assert len(sim.workers) <= pool.scoreboard_slots(cfg)
        if sim.now > 0.1:
            working = [w for w in sim.workers.values() if w.stage != RETIRING]
            assert len(working) == 2, sim.workers
    assert len([p for p, n in served.items() if n == 5]) > 100
    assert all(n <= 5 for n in served.values())


# ---- fork back-off and rate-limited lines -------------------------------------------------


def test_fork_backoff_doubles_up_to_its_cap_and_a_success_starts_over():
    b = pool.Backoff(0.1, 2.0)
    assert b.ready(T0)
    pauses = [b.failed(T0) for _ in range(7)]
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert not b.ready(T0 + 1.9) and b.ready(T0 + 2.0)
    b.succeeded()
    assert b.ready(T0) and b.failed(T0) == 0.1


def test_throttle_allows_one_line_per_interval_and_counts_the_rest():
    t = pool.Throttle(10.0)
    assert t.allow(T0) == (True, 0)
    assert [t.allow(T0 + i)[0] for i in range(1, 10)] == [False] * 9
    assert t.allow(T0 + 10) == (True, 9)
    assert t.allow(T0 + 11) == (False, 1)
    assert pool.suppressed_note(0) == ""
    assert pool.suppressed_note(1) == " (1 similar message suppressed)"
    assert pool.suppressed_note(9) == " (9 similar messages suppressed)"
