"""The process-manager policy (static, dynamic, ondemand) as a pure function.

Rule of this module: no processes, no signals, no clock. `decide()` is given
the pool's config, the slot states read from the scoreboard, the monotonic
time and what the manager knows of the listen queue, and says what to spawn,
which pids to stop, what to log and when to be asked again. The pool manager
applies the decision; tests drive it with a simulated clock.

Use: fork `initial(cfg)` workers at start, then call `decide()` after every
wakeup (signal, reap, listening socket readable) and at `next_check` at the
latest, fork `spawn` workers, send SIGQUIT to each pid in `stop` and keep it
in `told_to_stop` until it is reaped (escalating as php-fpm does is the
manager's job), write `logs`, and bump the scoreboard's counter when
`max_children_reached`.

Where pfm departs from php-fpm (fpm_process_ctl.c), and why:

* Immediate spawn (dynamic and ondemand): when connections wait and too few
  workers are idle or booting to take them, workers are spawned at once, not
  at the next one-second tick: `min(pending - (idle + starting), room)`,
  where a known queue depth spawns for the whole backlog and an unknown one
  (the manager only saw the listening socket readable) counts as one.
* Workers that are booting (stage STARTING) count as available for the
  spawn decisions, so a slow import is not answered by more forks.
* dynamic shrinks the worker idle the longest (by last activity), not the one
  started first, so the warm workers stay.
* ondemand stops every worker idle past pm.process_idle_timeout at once, not
  one per second, and the next check is due when the next one would expire.
  While connections wait, neither pm stops the idle workers about to take them.
* The doubling spawn rate is clamped at pm.max_spawn_rate (php-fpm can
  overshoot a non-power-of-two cap once).
* Recycling (pm.max_requests, pm.max_memory): a worker that reached its
  limit tells the manager and exits at once; it accepts nothing more, so
  waiting for its replacement would only hold a slot (php-fpm's child also
  just exits). Retirees count neither in the pool's total nor as busy:
  each is owed one replacement, forked the moment the manager learns of
  it, within pm.max_children. The scoreboard has a slot for every worker
  and for a replacement of each (`scoreboard_slots`), so retirees that
  are not reaped yet can never keep their replacements from being forked.
* Failed forks back off (`Backoff`), and their log lines are rate-limited
  with a count of the ones left out (`Throttle`). A worker whose app fails
  to start and a pool manager that keeps exiting back off by the same
  doubling (`doubling`, `manager_restart`).
* Both warnings are rate-limited to one per WARN_INTERVAL. "reached
  max_children" stays latched per episode as in php-fpm (re-armed by the
  next spawn), and the `max children reached` counter still counts every
  episode. ondemand warns only when a connection waits that no worker can
  take, not on every connection arriving at max_children.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Collection, List, Optional, Sequence, Set, Tuple

from .log import WARNING
from .scoreboard import IDLE_STAGES, RETIRING, STARTING

TICK = 1.0            # php-fpm's FPM_IDLE_SERVER_MAINTENANCE_HEARTBEAT (dynamic)
TICK_SLACK = 0.002    # a wakeup this close to the tick counts as on time (timer rounding)
WARN_INTERVAL = 10.0  # at most one "seems busy" / "reached max_children" line per this long
BUSY_RATE = 8         # php-fpm logs "seems busy" once the spawn rate reaches 8
DEFAULT_MAX_SPAWN_RATE = 32
MAX_BACKOFF = 30.0    # cap on the pause between restarts of a failing app or pool manager
STABLE_AFTER = 10.0   # a pool manager that lived this long was not failing


@dataclass
class PolicyState:
    """What the policy remembers between calls; `decide()` updates it in place."""

    spawn_rate: int = 1                    # dynamic: doubles each tick short of idle workers
    max_children_latched: bool = False     # an episode at max_children is open (warned)
    last_max_children_log: Optional[float] = None
    last_busy_log: Optional[float] = None
    last_tick: Optional[float] = None      # dynamic: time of the last maintenance pass
    replaced: Set[int] = field(default_factory=set)   # retirees whose replacement was forked


@dataclass
class Decision:
    """What the manager should do now.

    spawn: workers to fork, the replacements first. replace: the retirees
    those first forks replace, oldest first; once forked, tell the state
    (`replaced()`). stop: pids to ask to stop (SIGQUIT); all idle, none of
    them already in `told_to_stop`. logs: (level, message) with pfm.log levels.
    next_check: monotonic time to call `decide()` again at the latest.
    max_children_reached: a new episode at max_children began; bump the
    scoreboard's counter (`note_max_children_reached()`).
    """

    spawn: int = 0
    replace: List[int] = field(default_factory=list)
    stop: List[int] = field(default_factory=list)
    logs: List[Tuple[int, str]] = field(default_factory=list)
    next_check: float = math.inf
    max_children_reached: bool = False


def initial(cfg: Any) -> int:
    """Workers to fork when the pool starts (fpm_children_create_initial)."""
    if cfg.pm == "static":
        return cfg.pm_max_children
    if cfg.pm == "dynamic":
        if cfg.pm_start_servers:
            return cfg.pm_start_servers
        low, high = cfg.pm_min_spare_servers, cfg.pm_max_spare_servers
        return low + (high - low) // 2
    return 0


def max_requests_for_worker(cfg: Any, rng: Any) -> int:
    """pm.max_requests for one worker, plus up to pm.max_requests_jitter drawn
    from `rng` (a random.Random), so workers started together are not all
    recycled together. 0 means never."""
    base = getattr(cfg, "pm_max_requests", 0) or 0
    if base <= 0:
        return 0
    jitter = getattr(cfg, "pm_max_requests_jitter", 0) or 0
    return base + (rng.randint(0, jitter) if jitter > 0 else 0)


def scoreboard_slots(cfg: Any) -> int:
    """Slots in a pool's scoreboard: one per worker, and one for the
    replacement of each worker that retires (pm.max_requests, pm.max_memory)
    and is not reaped yet, so a replacement always finds a slot."""
    return 2 * cfg.pm_max_children


def retirees(slots: Sequence[Any], announced: Collection[int]) -> List[int]:
    """The workers that retire and are not reaped yet: those that said so
    (`announced`, in that order), then any slot showing Retiring."""
    live = {s.pid for s in slots if s.pid}
    out = [pid for pid in announced if pid in live]
    seen = set(out)
    out += [s.pid for s in slots if s.pid and s.stage == RETIRING and s.pid not in seen]
    return out


def newly_retiring(announced: Sequence[int], live: Collection[int],
                   retiring: Collection[int]) -> List[int]:
    """The workers in `announced` (in the order they said they retire)
    that are live and not known to retire yet, each once: the order in
    which their replacements are owed."""
    out: List[int] = []
    for pid in announced:
        if pid in live and pid not in retiring and pid not in out:
            out.append(pid)
    return out


def replaced(state: PolicyState, pids: Collection[int]) -> None:
    """The manager forked the replacements of `pids` (a prefix of `Decision.replace`)."""
    state.replaced.update(pids)


class _Pool:
    """The counts every rule needs, taken once from the slot states."""

    def __init__(self, slots: Sequence[Any], told_to_stop: Collection[int],
                 retiring: Collection[int] = ()):
        self.total = 0
        self.idle: List[Any] = []      # idle workers not told to stop
        self.starting = 0              # booting, not told to stop
        for s in slots:
            if not s.pid and s.stage != STARTING:
                continue               # a free slot
            if s.pid in retiring:
                continue               # leaving on its own: not busy, not in the total
            self.total += 1            # workers told to stop still hold their slot
            if s.pid and s.pid in told_to_stop:
                continue
            if s.stage in IDLE_STAGES:
                self.idle.append(s)
            elif s.stage == STARTING:
                self.starting += 1


def decide(cfg: Any, slots: Sequence[Any], now: float, state: PolicyState, *,
           pending: Optional[int] = None, wanted: bool = False,
           told_to_stop: Collection[int] = (), retiring: Collection[int] = ()) -> Decision:
    """One decision of the pool's process manager.

    cfg: pm, pm_max_children, pm_min/max_spare_servers, pm_max_spawn_rate,
    pm_process_idle_timeout, name. slots: the scoreboard's states (pid,
    stage, last_activity); free slots are ignored. now: monotonic seconds.
    pending: connections waiting in the listen queue, None if unknown.
    wanted: the manager saw the listening socket readable (at least one
    connection waits). told_to_stop: pids already told to stop; they count in
    the total (they hold a slot until reaped) but not as idle, and are never
    returned again. retiring: workers that said they reached pm.max_requests
    or pm.max_memory and exit by themselves (see `retirees()`); they count
    nowhere, and each gets one replacement. `state` is updated in place.
    """
    retiring = retirees(slots, retiring)
    pool = _Pool(slots, frozenset(told_to_stop), frozenset(retiring))
    waiting = max(pending or 0, 1 if wanted else 0)
    d = Decision()
    _replace_retirees(cfg, pool, retiring, state, d)
    at_max = False
    if cfg.pm == "static":
        d.spawn += max(0, cfg.pm_max_children - pool.total - d.spawn)
        d.next_check = now + TICK
    elif cfg.pm == "dynamic":
        at_max = _spawn_for_waiting(cfg, pool, waiting, now, state, d, "pm.max_children")
        at_max = _dynamic_tick(cfg, pool, waiting, now, state, d) or at_max
    elif cfg.pm == "ondemand":
        at_max = _spawn_for_waiting(cfg, pool, waiting, now, state, d, "max_children")
        _ondemand_idle(cfg, pool, waiting, now, d)
    else:
        raise ValueError("unknown process manager %r" % (cfg.pm,))
    if d.spawn and not at_max:
        state.max_children_latched = False   # a spawn that was not capped ends the episode
    return d


def _replace_retirees(cfg: Any, pool: _Pool, retiring: List[int], state: PolicyState,
                      d: Decision) -> None:
    """One replacement per retiree, oldest first, as php-fpm restarts a child
    that exited, whatever the pm: at once, not at the next tick, so recycling
    leaves the pool short of a worker only while the replacement boots."""
    state.replaced.intersection_update(retiring)
    owed = [pid for pid in retiring if pid not in state.replaced]
    room = max(0, cfg.pm_max_children - pool.total)
    d.replace = owed[:room]
    d.spawn += len(d.replace)


def _spawn_for_waiting(cfg: Any, pool: _Pool, waiting: int, now: float, state: PolicyState,
                       d: Decision, directive: str) -> bool:
    """Connections wait that idle and booting workers (and the replacements
    forked now) cannot take: fork now. True if max_children kept some of
    them waiting."""
    short = waiting - len(pool.idle) - pool.starting - d.spawn
    if short <= 0:
        return False
    room = max(0, cfg.pm_max_children - pool.total - d.spawn)
    d.spawn += min(short, room)
    if short <= room:
        return False
    _reached_max_children(cfg, now, state, d, directive)
    return True


def _dynamic_tick(cfg: Any, pool: _Pool, waiting: int, now: float, state: PolicyState,
                  d: Decision) -> bool:
    """php-fpm's once-a-second pass (fpm_pctl_perform_idle_server_maintenance).
    True if it found the pool short of idle workers at max_children."""
    if state.last_tick is not None and now < state.last_tick + TICK - TICK_SLACK:
        d.next_check = state.last_tick + TICK
        return False
    state.last_tick = now
    d.next_check = now + TICK
    idle = len(pool.idle)
    total = pool.total + d.spawn
    available = idle + pool.starting + d.spawn
    max_rate = getattr(cfg, "pm_max_spawn_rate", None) or DEFAULT_MAX_SPAWN_RATE
    if idle > cfg.pm_max_spare_servers and not waiting:
        # One per pass, the longest idle; a worker in a request is never idle.
        # Not while connections wait: the idle workers are about to take them.
        victim = min(pool.idle, key=lambda s: s.last_activity)
        d.stop.append(victim.pid)
        state.spawn_rate = 1
    elif available < cfg.pm_min_spare_servers:
        room = cfg.pm_max_children - total
        if room <= 0:
            _reached_max_children(cfg, now, state, d, "pm.max_children")
            state.spawn_rate = 1
            return True
        n = min(state.spawn_rate, cfg.pm_min_spare_servers - available, room)
        if state.spawn_rate >= BUSY_RATE and _due(state.last_busy_log, now):
            state.last_busy_log = now
            d.logs.append((WARNING, "[pool %s] seems busy (you may need to increase "
                           "pm.start_servers, or pm.min/max_spare_servers), spawning %d "
                           "children, there are %d idle, and %d total children"
                           % (cfg.name, n, idle, total)))
        d.spawn += n
        state.spawn_rate = min(state.spawn_rate * 2, max_rate)
    else:
        state.spawn_rate = 1
    return False


def _ondemand_idle(cfg: Any, pool: _Pool, waiting: int, now: float, d: Decision) -> None:
    """Stop every worker idle past pm.process_idle_timeout, and be called
    again when the next one would pass it: a worker busy now goes idle at
    the earliest now, so it cannot expire before now + timeout.

    While connections wait, enough idle workers are kept to take them (the
    manager may see a connection before the idle worker that will accept it).
    """
    timeout = cfg.pm_process_idle_timeout
    next_check = now + timeout
    expired = []
    for s in pool.idle:
        expires = s.last_activity + timeout
        if expires <= now:
            expired.append(s)
        elif expires < next_check:
            next_check = expires
    keep = min(len(expired), max(0, waiting - (len(pool.idle) - len(expired))))
    if keep:
        expired.sort(key=lambda s: s.last_activity)
        del expired[len(expired) - keep:]      # keep the most recently active
        next_check = min(next_check, now + TICK)
    d.stop.extend(s.pid for s in expired)
    d.next_check = next_check


def _reached_max_children(cfg: Any, now: float, state: PolicyState, d: Decision,
                          directive: str) -> None:
    """Once per episode: count it, and log it unless one was logged lately."""
    if state.max_children_latched:
        return
    state.max_children_latched = True
    d.max_children_reached = True
    if _due(state.last_max_children_log, now):
        state.last_max_children_log = now
        d.logs.append((WARNING, "[pool %s] server reached %s setting (%d), consider "
                       "raising it" % (cfg.name, directive, cfg.pm_max_children)))


def _due(last: Optional[float], now: float) -> bool:
    return last is None or now - last >= WARN_INTERVAL


def doubling(first: float, cap: float, failures: int) -> float:
    """The pause after `failures` failures in a row: `first`, doubling
    with each further one, up to `cap`."""
    return min(cap, first * 2 ** min(failures - 1, 30))


def manager_restart(failures: int, lived: float) -> Tuple[int, float]:
    """A pool manager exited after `lived` seconds; `failures` of its
    predecessors failed in a row before it. Returns the failures in a row
    now and the pause before restarting it: none the first time, then 2 s
    doubling up to MAX_BACKOFF while each lives less than STABLE_AFTER."""
    failures = failures + 1 if lived < STABLE_AFTER else 1
    return failures, 0.0 if failures <= 1 else doubling(1.0, MAX_BACKOFF, failures)


class Backoff:
    """When forking may be tried again after failures: `first` seconds after
    the first, doubling with each failure in a row up to `cap`; a success
    starts over. fork() fails for reasons that last (RLIMIT_NPROC, no
    memory, no descriptor left), and retrying at every wakeup turns one
    problem into thousands of log lines and a busy manager."""

    def __init__(self, first: float, cap: float):
        self.first = first
        self.cap = cap
        self.failures = 0
        self.until = -math.inf

    def failed(self, now: float) -> float:
        """Count a failure; returns the pause before the next try."""
        self.failures += 1
        pause = doubling(self.first, self.cap, self.failures)
        self.until = now + pause
        return pause

    def succeeded(self) -> None:
        self.failures = 0
        self.until = -math.inf

    def ready(self, now: float) -> bool:
        return now >= self.until


class Throttle:
    """One log line per `interval` for a message that may repeat: `allow()`
    says whether to write it now, and how many were left out since the last
    one written (to say so in it)."""

    def __init__(self, interval: float = WARN_INTERVAL):
        self.interval = interval
        self.last: Optional[float] = None
        self.suppressed = 0

    def allow(self, now: float) -> Tuple[bool, int]:
        if self.last is not None and now - self.last < self.interval:
            self.suppressed += 1
            return False, self.suppressed
        left_out, self.suppressed = self.suppressed, 0
        self.last = now
        return True, left_out


def suppressed_note(count: int) -> str:
    """The tail of a rate-limited line: what was left out since the last one."""
    return " (%d similar message%s suppressed)" % (count, "" if count == 1 else "s") \
        if count else ""
