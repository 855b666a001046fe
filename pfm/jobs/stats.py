"""The queue figures `pfm jobs` and the status page show, and their text form.

Backends count; this module only shapes and renders what they counted, so the
command line and a status page cannot disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Sequence

from ..log import timestamp

COUNTS = ("ready", "running", "delayed", "dead")


@dataclass(frozen=True)
class QueueStats:
    """One queue's jobs by state. `running` counts leases not yet settled,
    including one whose consumer was just lost."""
    queue: str
    ready: int = 0
    running: int = 0
    delayed: int = 0
    dead: int = 0

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def with_queues(stats: Iterable[QueueStats], named: Sequence[str] = ()) -> List[QueueStats]:
    """The backend's figures plus a zero line for each named queue (the ones a
    config consumes) it had nothing about, sorted by queue name."""
    by_name = {s.queue: s for s in stats}
    for name in named:
        by_name.setdefault(name, QueueStats(name))
    return [by_name[name] for name in sorted(by_name)]


def table(stats: Sequence[QueueStats]) -> List[str]:
    """Aligned lines: a header, then one line per queue."""
    width = max([len("queue")] + [len(s.queue) for s in stats])
    head = "%-*s" % (width, "queue") + "".join("%9s" % c for c in COUNTS)
    lines = [head]
    for s in stats:
        lines.append("%-*s" % (width, s.queue)
                     + "".join("%9d" % getattr(s, c) for c in COUNTS))
    return lines


def describe_dead(job: Any) -> List[str]:
    """A dead job as `pfm jobs` lists it: one line, then its traceback indented."""
    lines = ["job %s  queue %s  %s  attempts %d/%d  dead since %s"
             % (job.id, job.queue, job.func, job.attempts, job.max_attempts, timestamp(job.at))]
    lines.extend("    " + line for line in (job.error or "(no traceback)").rstrip().splitlines())
    return lines
