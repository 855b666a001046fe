"""How a stop escalates, for the master (over its pool managers) and a pool
manager (over its workers): php-fpm's ladder.

graceful (QUIT, reload): SIGQUIT, then SIGTERM once the grace is over (no
grace: wait as long as requests run), then SIGKILL a step later, repeated.
fast (TERM, INT): SIGTERM, then SIGKILL a step later, repeated.
"""

from __future__ import annotations

import enum
import signal
from typing import Callable


class State(enum.Enum):
    """What a master or a pool manager does: serve, or stop one of two ways."""

    RUNNING = "running"
    FINISHING = "finishing"         # QUIT: the requests in flight finish
    TERMINATING = "terminating"     # TERM, INT: now; overrides FINISHING


class StopLadder:
    def __init__(self, send: Callable[[int], None], step: float, system):
        self.send = send            # signals every child still there
        self.step = step
        self.clock = system.monotonic   # system.System: the loop's clock
        self.stage: int | None = None
        self.deadline: float | None = None

    def start(self, graceful: bool, grace: float | None) -> None:
        now = self.clock()
        if graceful:
            self.stage = signal.SIGQUIT
            self.deadline = now + grace if grace else None
        else:
            self.stage = signal.SIGTERM
            self.deadline = now + self.step
        self.send(self.stage)

    def escalate(self, children_left: bool) -> None:
        """Call on every pass of the loop while stopping."""
        if self.deadline is None or self.clock() < self.deadline or not children_left:
            return
        self.stage = signal.SIGTERM if self.stage == signal.SIGQUIT else signal.SIGKILL
        self.send(self.stage)
        self.deadline = self.clock() + self.step
