"""The embedded queue: one SQLite file in WAL mode, shared by the processes of one machine.

Every change is a single UPDATE/INSERT/DELETE statement, so SQLite's write
lock makes each one atomic without a multi-statement transaction (a statement
that writes takes the lock up front and waits for it up to the busy timeout).
WAL lets readers (stats, the idle check) run beside the writer. With
synchronous=NORMAL a killed process loses nothing; a power cut may lose the
last commits (synchronous=FULL in the URL trades speed for that).

One table, one row per job; `run_at` means "not before" while the job waits,
"lease ends" while it runs, and "ended at" once it is done or dead.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import List, Optional, Sequence, Union

from .backend import DEFAULT_KEEP_DONE, Backend
from .job import DEAD, DELAYED, DONE, READY, RUNNING, Claim, Idle, JobInfo
from .stats import QueueStats

# Stored state codes. WAITING covers ready and delayed: which one is a
# question of run_at against the clock, so a delayed job needs no promotion.
WAITING, LEASED, BURIED, FINISHED = 0, 1, 2, 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: an id is never reused
    queue TEXT NOT NULL,
    state INTEGER NOT NULL,
    run_at REAL NOT NULL,
    call TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, queue, run_at);
"""

_ENQUEUE = ("INSERT INTO jobs (queue, state, run_at, call, max_attempts, enqueued_at) "
            "VALUES (?, 0, ?, ?, ?, ?)")
_PENDING = ("SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 0 AND queue = ? AND run_at <= ?), "
            "EXISTS (SELECT 1 FROM jobs WHERE state = 1 AND queue = ? AND run_at <= ?)")
# A lease that ran out: the job waits again, or is dead if that was its last attempt.
_EXPIRE = """
UPDATE jobs SET
    state = CASE WHEN attempts >= max_attempts THEN 2 ELSE 0 END,
    run_at = ?2,
    error = 'the lease of attempt ' || attempts || ' expired: its consumer was lost '
            || '(killed, or stopped at once)'
WHERE state = 1 AND queue = ?1 AND run_at <= ?2
"""
_CLAIM = """
UPDATE jobs SET state = 1, attempts = attempts + 1, run_at = ?3
WHERE id = (SELECT id FROM jobs WHERE state = 0 AND queue = ?1 AND run_at <= ?2
            ORDER BY run_at, id LIMIT 1)
RETURNING id, call, attempts, max_attempts
"""
_NEXT_DUE = "SELECT MIN(run_at) FROM jobs WHERE state = ? AND queue = ?"
# (id, attempt) owns the job while the job is still where that attempt left it.
_OWNED = "id = ? AND attempts = ? AND state IN (0, 1, 2)"
_RENEW = "UPDATE jobs SET run_at = ? WHERE id = ? AND attempts = ? AND state = 1"
_ACK = "UPDATE jobs SET state = 3, run_at = ?, error = NULL WHERE " + _OWNED
_FORGET = "DELETE FROM jobs WHERE " + _OWNED
_FAIL = """
UPDATE jobs SET
    state = CASE WHEN attempts >= max_attempts THEN 2 ELSE 0 END,
    run_at = CASE WHEN attempts >= max_attempts THEN ? ELSE ? END,
    error = ?
WHERE """ + _OWNED + " RETURNING state"
_PRUNE = "DELETE FROM jobs WHERE state = 3 AND queue = ? AND run_at <= ?"
_COLUMNS = "id, queue, state, call, attempts, max_attempts, enqueued_at, run_at, error"
_RETRY = "UPDATE jobs SET state = 0, attempts = 0, run_at = ? WHERE state = 2"


class SQLiteBackend(Backend):
    transient_errors = (sqlite3.OperationalError,)

    def __init__(self, path: str, keep_done: float = DEFAULT_KEEP_DONE, timeout: float = 10.0,
                 synchronous: str = "NORMAL", poll_max: float = 0.05):
        self.path = path
        self.url = "sqlite://" + path
        self.keep_done = keep_done
        self.timeout = timeout
        self.synchronous = synchronous
        # An idle consumer checks for news this often at most (see wait()).
        self.poll_max = poll_max
        self._local = threading.local()
        self._pruned = 0.0

    # One connection per thread and per process: sqlite3 connections may not
    # cross threads, and none may cross fork().
    def _db(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.db = self._connect()
            local.pid = os.getpid()
        return local.db

    def _connect(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = %s" % self.synchronous)
        db.executescript(SCHEMA)
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None and getattr(self._local, "pid", None) == os.getpid():
            db.close()
        self._local = threading.local()

    # -- producers ------------------------------------------------------------------

    def enqueue(self, queue: str, call: str, max_attempts: int, delay: float) -> str:
        now = time.time()
        cursor = self._db().execute(_ENQUEUE, (queue, now + delay, call, max_attempts, now))
        return str(cursor.lastrowid)

    # -- consumers ------------------------------------------------------------------

    def claim(self, queues: Sequence[str], lease: float) -> Union[Claim, Idle]:
        db = self._db()
        now = time.time()
        self._prune(db, queues, now)
        for queue in queues:
            ready, expired = db.execute(_PENDING, (queue, now, queue, now)).fetchone()
            if expired:
                db.execute(_EXPIRE, (queue, now))
                ready = True
            if ready:
                row = db.execute(_CLAIM, (queue, now, now + lease)).fetchone()
                if row is not None:
                    return Claim(str(row[0]), queue, row[1], row[2], row[3])
        return Idle(self._due_in(db, queues, now))

    def _due_in(self, db: sqlite3.Connection, queues: Sequence[str], now: float) -> Optional[float]:
        times = [db.execute(_NEXT_DUE, (state, queue)).fetchone()[0]
                 for queue in queues for state in (WAITING, LEASED)]
        times = [t for t in times if t is not None]
        return max(0.0, min(times) - now) if times else None

    def _prune(self, db: sqlite3.Connection, queues: Sequence[str], now: float) -> None:
        """Forget jobs done longer than keep_done ago, now and then."""
        if now - self._pruned < min(10.0, self.keep_done / 4 + 0.1):
            return
        self._pruned = now
        for queue in queues:
            db.execute(_PRUNE, (queue, now - self.keep_done))

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Sleep until another connection commits, or `timeout`.

        SQLite has no notification, but PRAGMA data_version changes when any
        other connection commits, and reading it touches no lock: checking it
        with a back-off (1 ms doubling to poll_max) costs an idle consumer
        about 20 cheap reads a second and finds new work within poll_max."""
        db = self._db()
        version = db.execute("PRAGMA data_version").fetchone()[0]
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(pause, left))
            if db.execute("PRAGMA data_version").fetchone()[0] != version:
                return
            pause = min(pause * 2, self.poll_max)

    def renew(self, claim: Claim, lease: float) -> bool:
        cursor = self._db().execute(_RENEW, (time.time() + lease, claim.id, claim.attempt))
        return cursor.rowcount == 1

    def ack(self, claim: Claim) -> bool:
        if self.keep_done > 0:
            cursor = self._db().execute(_ACK, (time.time(), claim.id, claim.attempt))
        else:
            cursor = self._db().execute(_FORGET, (claim.id, claim.attempt))
        return cursor.rowcount == 1

    def fail(self, claim: Claim, error: str, retry_in: float) -> Optional[str]:
        now = time.time()
        row = self._db().execute(_FAIL, (now, now + retry_in, error, claim.id,
                                          claim.attempt)).fetchone()
        if row is None:
            return None
        return DEAD if row[0] == BURIED else DELAYED

    # -- operators ------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[JobInfo]:
        row = self._db().execute("SELECT %s FROM jobs WHERE id = ?" % _COLUMNS,
                                 (_int(job_id),)).fetchone()
        return _info(row, time.time()) if row else None

    def stats(self) -> List[QueueStats]:
        counts: dict = {}
        rows = self._db().execute(
            "SELECT queue, state, run_at <= ?, COUNT(*) FROM jobs WHERE state IN (0, 1, 2) "
            "GROUP BY 1, 2, 3", (time.time(),))
        for queue, state, due, n in rows:
            c = counts.setdefault(queue, dict(ready=0, running=0, delayed=0, dead=0))
            name = _state_name(state, due)
            c[name] += n
        return [QueueStats(q, **c) for q, c in sorted(counts.items())]

    def dead(self, queue: Optional[str] = None, limit: int = 100) -> List[JobInfo]:
        where, args = ("state = 2 AND queue = ?", (queue,)) if queue else ("state = 2", ())
        rows = self._db().execute("SELECT %s FROM jobs WHERE %s ORDER BY run_at DESC LIMIT ?"
                                  % (_COLUMNS, where), args + (limit,))
        now = time.time()
        return [_info(row, now) for row in rows]

    def retry(self, job_id: str) -> bool:
        cursor = self._db().execute(_RETRY + " AND id = ?", (time.time(), _int(job_id)))
        return cursor.rowcount == 1

    def retry_dead(self, queue: Optional[str] = None) -> int:
        if queue:
            cursor = self._db().execute(_RETRY + " AND queue = ?", (time.time(), queue))
        else:
            cursor = self._db().execute(_RETRY, (time.time(),))
        return cursor.rowcount

    def purge(self, queue: str) -> int:
        cursor = self._db().execute("DELETE FROM jobs WHERE queue = ? AND state IN (0, 2)",
                                    (queue,))
        return cursor.rowcount


def _int(job_id: str) -> int:
    try:
        return int(job_id)
    except (TypeError, ValueError):
        return -1  # no such job


def _state_name(state: int, due: bool) -> str:
    if state == WAITING:
        return READY if due else DELAYED
    return {LEASED: RUNNING, BURIED: DEAD, FINISHED: DONE}[state]


def _info(row: tuple, now: float) -> JobInfo:
    id_, queue, state, call, attempts, max_attempts, enqueued_at, run_at, error = row
    return JobInfo.build(id_, queue, _state_name(state, run_at <= now), call, attempts,
                         max_attempts, enqueued_at, run_at, error)
