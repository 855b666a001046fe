"""The one small interface every queue backend implements, and the URL that picks one.

`sqlite:///PATH` is the embedded queue: one file, many processes on one
machine. `redis://HOST:PORT/DB` (or `rediss://`, or `redis+unix:///PATH?db=N`)
is for several machines sharing one Redis. Both keep the same promises, and
the same tests run on both:

* a job is claimed by one consumer at a time, under a lease that the consumer
  renews while the job runs; a lease that runs out puts the job back (or makes
  it dead once its attempts are spent);
* a claim is named by (job id, attempt): only the run holding the latest
  attempt can renew, acknowledge or fail the job, so a consumer that lost its
  lease cannot undo what another did;
* ids are never reused.

Options common to both, in the URL's query: `keep_done=SECONDS` (how long a
finished job can still be looked up, default 300; 0 forgets it at once).
"""

from __future__ import annotations

import abc
import os
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union
from urllib.parse import parse_qsl, urlsplit

from .job import Claim, Idle, JobInfo
from .stats import QueueStats

DEFAULT_KEEP_DONE = 300.0
SQLITE_FILE = "jobs.sqlite3"


class Backend(abc.ABC):
    """A job store. Safe to share between threads and across fork()."""

    url: str
    # Errors worth waiting out (a restarting Redis, a locked database): the
    # consumer retries on these instead of dying.
    transient_errors: Tuple[Type[BaseException], ...] = ()

    # -- producers ------------------------------------------------------------------

    @abc.abstractmethod
    def enqueue(self, queue: str, call: str, max_attempts: int, delay: float) -> str:
        """Store a job, ready now or after `delay` seconds; return its id."""

    # -- consumers ------------------------------------------------------------------

    @abc.abstractmethod
    def claim(self, queues: Sequence[str], lease: float) -> Union[Claim, Idle]:
        """Take the oldest ready job of the first queue that has one, leased for
        `lease` seconds. Expired leases and due delayed jobs are settled first."""

    @abc.abstractmethod
    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until a job may have become ready in `queues`, or `timeout`
        seconds. May return early; the caller claims again either way."""

    @abc.abstractmethod
    def renew(self, claim: Claim, lease: float) -> bool:
        """Extend the lease to now + `lease`. False: the lease was lost."""

    @abc.abstractmethod
    def ack(self, claim: Claim) -> bool:
        """The job's function returned: the job is done. False if a later
        attempt owns the job (this run was a duplicate)."""

    def ack_and_claim(self, claim: Claim, queues: Sequence[str],
                      lease: float) -> Tuple[bool, Union[Claim, Idle]]:
        """ack(claim), then claim(queues, lease): a backend that can do both in
        one round trip does (a consumer's loop, job after job)."""
        return self.ack(claim), self.claim(queues, lease)

    @abc.abstractmethod
    def fail(self, claim: Claim, error: str, retry_in: float) -> Optional[str]:
        """The function raised `error` (a traceback): retry in `retry_in`
        seconds, or dead if that was the last attempt. Returns the new state
        (DELAYED or DEAD), or None if a later attempt owns the job."""

    # -- operators ------------------------------------------------------------------

    @abc.abstractmethod
    def get(self, job_id: str) -> Optional[JobInfo]:
        """The job, or None if unknown (or done longer than keep_done ago)."""

    @abc.abstractmethod
    def stats(self) -> List[QueueStats]:
        """One line per queue that has ready, running, delayed or dead jobs."""

    @abc.abstractmethod
    def dead(self, queue: Optional[str] = None, limit: int = 100) -> List[JobInfo]:
        """Dead jobs, the most recent first."""

    @abc.abstractmethod
    def retry(self, job_id: str) -> bool:
        """Make a dead job ready again, with its attempts reset. False if it is
        not dead."""

    @abc.abstractmethod
    def retry_dead(self, queue: Optional[str] = None) -> int:
        """retry() every dead job (of `queue`); returns how many."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Delete the queue's ready, delayed and dead jobs; running jobs finish.
        Returns how many were deleted."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections (the backend reconnects if used again)."""


def default_sqlite_path(environ: Optional[Dict[str, str]] = None) -> str:
    """Where the embedded queue lives when nothing says otherwise: systemd's
    StateDirectory= if set, else /var/lib/pfm for root, else the user's XDG
    state directory (~/.local/state/pfm)."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return os.path.join(env["STATE_DIRECTORY"].split(":")[0], SQLITE_FILE)
    if os.geteuid() == 0:
        return os.path.join("/var/lib/pfm", SQLITE_FILE)
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "pfm", SQLITE_FILE)


def default_url(environ: Optional[Dict[str, str]] = None) -> str:
    return "sqlite://" + default_sqlite_path(environ)


def open_backend(url: str, base: Optional[str] = None) -> Backend:
    """The backend a URL names. A relative SQLite path starts from `base`
    (pfm passes its prefix), else from the current directory."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return _open_sqlite(url, base)
    if scheme in ("redis", "rediss", "redis+unix", "unix"):
        from .redisbackend import RedisBackend
        rest, options = _split_options(url, ("keep_done", "prefix"))
        if scheme == "redis+unix":
            rest = "unix" + rest[len("redis+unix"):]
        return RedisBackend(rest, keep_done=_seconds(options, "keep_done", url),
                            prefix=options.get("prefix", "pfm:jobs"))
    raise ValueError("pfm.jobs: unsupported queue URL %r: use sqlite:///PATH, "
                     "redis://HOST:PORT/DB or redis+unix:///PATH?db=N" % url)


def _open_sqlite(url: str, base: Optional[str]) -> Backend:
    from .sqlitebackend import SQLiteBackend
    rest, options = _split_options(url, ("keep_done", "timeout", "synchronous"))
    path = rest[len("sqlite:"):]
    if path.startswith("//"):
        path = path[2:]
    if path.startswith("//"):  # SQLAlchemy's four slashes for an absolute path
        path = path[1:]
    if not path:
        path = default_sqlite_path()
    elif not path.startswith("/"):
        path = os.path.join(base or os.getcwd(), path)
    synchronous = options.get("synchronous", "NORMAL").upper()
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError("pfm.jobs: synchronous=%s in %r: use NORMAL or FULL" % (synchronous, url))
    return SQLiteBackend(path, keep_done=_seconds(options, "keep_done", url),
                         timeout=_seconds(options, "timeout", url, 10.0), synchronous=synchronous)


def _split_options(url: str, ours: Sequence[str]) -> Tuple[str, Dict[str, str]]:
    """The URL without our own query options, and those options. Other options
    stay in the URL (redis-py reads e.g. socket_timeout from it)."""
    parts = urlsplit(url)
    mine, theirs = {}, []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ours:
            mine[name] = value
        else:
            theirs.append("%s=%s" % (name, value))
    if theirs and url.startswith("sqlite"):
        raise ValueError("pfm.jobs: unknown option %r in %r (known: %s)"
                         % (theirs[0].split("=")[0], url, ", ".join(ours)))
    rest = url.split("?", 1)[0]
    return (rest + "?" + "&".join(theirs)) if theirs else rest, mine


def _seconds(options: Dict[str, str], name: str, url: str,
             default: float = DEFAULT_KEEP_DONE) -> float:
    try:
        value = float(options.get(name, default))
    except ValueError:
        value = -1.0
    if value < 0:
        raise ValueError("pfm.jobs: %s=%s in %r is not a number of seconds"
                         % (name, options[name], url))
    return value
