"""Generations of pool managers, and when a new one may replace the old.

A generation is the set of pool managers the master started from one
configuration, with the listening sockets, log files and scoreboards they
use. A reload (SIGUSR2) starts a new generation beside the running one. The
rule (design.md): the new generation replaces the old one only once every
one of its pools serves, and the old keeps serving for as long as the new
one cannot start. There is no deadline: a new generation that fails (its
application does not preload, its workers do not boot) is stopped, the
reload is reported as failed, and the old one goes on as if nothing
happened.

The decision is a pure function of plain data (`outcome`), so that it can
be tested without processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

WAITING, READY, FAILED = "waiting", "ready", "failed"


@dataclass
class Generation:
    number: int
    config: Any                         # config.Config
    listeners: dict                     # pool name -> sockets.Listener
    status_listeners: dict              # pool name -> its pm.status_listen Listener
    files: dict                         # pool name -> logfiles.PoolFiles
    boards: dict = field(default_factory=dict)   # pool name -> its manager's Scoreboard
    started: float = 0.0                # monotonic time of its start
    failure: Optional[str] = None       # why it cannot serve, once known
    warned: bool = False                # "still waiting" was logged

    def sockets(self) -> list:
        return [*self.listeners.values(), *self.status_listeners.values()]


@dataclass(frozen=True)
class PoolReadiness:
    """What the master knows of one pool of a starting generation."""

    name: str
    ondemand: bool       # no worker until a connection comes: serving once booted
    booted: bool         # its manager runs and is past its boot (rights, preload)
    idle_workers: int    # workers that finished booting and wait for connections


def serves(pool: PoolReadiness) -> bool:
    """A pool serves once a worker waits for connections; an ondemand pool as
    soon as its manager booted (it forks on the first connection; the app was
    checked by importing it before the generation started)."""
    return pool.booted and (pool.ondemand or pool.idle_workers > 0)


def outcome(pools: list[PoolReadiness], failure: Optional[str]) -> str:
    """FAILED once any pool is known not to start, READY when every pool
    serves, else WAITING (for as long as it takes)."""
    if failure:
        return FAILED
    return READY if all(serves(p) for p in pools) else WAITING


def not_serving(pools: list[PoolReadiness]) -> list[str]:
    return [p.name for p in pools if not serves(p)]
