"""The shared queue: one Redis for many hosts, through redis-py.

Each state change is one script call (see redislua.py for the keys and why),
so a claim, an acknowledgement or a retry is one round trip and atomic. An
idle consumer blocks in BLPOP on its queues' wake-up keys rather than polling.
"""

from __future__ import annotations

import re
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

import redis

from . import redislua
from .backend import DEFAULT_KEEP_DONE, Backend
from .job import DEAD, DELAYED, Claim, Idle, JobInfo
from .stats import QueueStats

_PURGE_BATCH = 1000
_PREFIX = re.compile(r"^[A-Za-z0-9:_.-]{1,64}$")


class RedisBackend(Backend):
    transient_errors = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

    def __init__(self, url: str, keep_done: float = DEFAULT_KEEP_DONE, prefix: str = "pfm:jobs"):
        self.url = url
        self.keep_done = keep_done
        self.prefix = prefix
        # The client's pool is thread-safe and notices fork() (it checks the pid).
        self.client = redis.Redis.from_url(url, decode_responses=True)
        if not _PREFIX.match(prefix):
            raise ValueError("pfm.jobs: prefix=%s: use letters, digits and ':_.-'" % prefix)
        # script -> (its text for this prefix, its SHA1 once loaded)
        self._scripts: Dict[str, List[Optional[str]]] = {}

    def close(self) -> None:
        self.client.close()

    def _run(self, script: str, *args: object) -> object:
        """EVALSHA `script` (loaded on first use, and again after the server
        forgot it: a restart, SCRIPT FLUSH). Called directly rather than through
        redis-py's Script: enqueue runs inside web requests, and each µs counts."""
        entry = self._scripts.get(script)
        if entry is None:
            entry = self._scripts[script] = [script.replace("__PREFIX__", self.prefix), None]
        if entry[1] is not None:
            try:
                return self.client.execute_command("EVALSHA", entry[1], 0, *args)
            except redis.exceptions.NoScriptError:
                pass
        entry[1] = self.client.script_load(entry[0])
        return self.client.execute_command("EVALSHA", entry[1], 0, *args)

    # -- producers ------------------------------------------------------------------

    def enqueue(self, queue: str, call: str, max_attempts: int, delay: float) -> str:
        head = "%s %d %r %r\n" % (queue, max_attempts, delay, time.time())
        return str(self._run(redislua.ENQUEUE, head + call))

    # -- consumers ------------------------------------------------------------------

    def claim(self, queues: Sequence[str], lease: float) -> Union[Claim, Idle]:
        return _claimed(self._run(redislua.CLAIM, lease, *queues))

    def ack_and_claim(self, claim: Claim, queues: Sequence[str],
                      lease: float) -> Tuple[bool, Union[Claim, Idle]]:
        acked, got = self._run(redislua.ACK_CLAIM, claim.queue, claim.id, claim.attempt,
                               self.keep_done, lease, *queues)
        return acked == 1, _claimed(got)

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        # BLPOP's timeout is in seconds with decimals (Redis >= 6); 0 would mean forever.
        self.client.blpop(["%s:wake:%s" % (self.prefix, q) for q in queues],
                          timeout=max(timeout, 0.01))

    def renew(self, claim: Claim, lease: float) -> bool:
        return self._run(redislua.RENEW, claim.queue, claim.id, claim.attempt, lease) == 1

    def ack(self, claim: Claim) -> bool:
        return self._run(redislua.ACK, claim.queue, claim.id, claim.attempt,
                         self.keep_done) == 1

    def fail(self, claim: Claim, error: str, retry_in: float) -> Optional[str]:
        state = self._run(redislua.FAIL, claim.queue, claim.id, claim.attempt, error, retry_in)
        return {"dead": DEAD, "delayed": DELAYED}.get(state)

    # -- operators ------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[JobInfo]:
        return self._info(job_id, self.client.hgetall(self._key(job_id)))

    def _key(self, job_id: str) -> str:
        return "%s:job:%s" % (self.prefix, job_id)

    @staticmethod
    def _info(job_id: str, h: dict) -> Optional[JobInfo]:
        if not h or "call" not in h:
            return None
        return JobInfo.build(job_id, h["q"], h["state"], h["call"], h.get("n", 0), h["max"],
                             h["enq"], h.get("at", h["enq"]), h.get("err"))

    def stats(self) -> List[QueueStats]:
        rows = self._run(redislua.STATS)
        return sorted((QueueStats(q, *map(int, counts)) for q, *counts in rows),
                      key=lambda s: s.queue)

    def _queues(self, queue: Optional[str]) -> List[str]:
        return [queue] if queue else sorted(self.client.smembers(self.prefix + ":queues"))

    def dead(self, queue: Optional[str] = None, limit: int = 100) -> List[JobInfo]:
        found = []
        for q in self._queues(queue):
            found += self.client.zrevrange("%s:dead:%s" % (self.prefix, q), 0, limit - 1,
                                           withscores=True)
        found.sort(key=lambda pair: -pair[1])
        with self.client.pipeline(transaction=False) as pipe:
            for job_id, _ in found[:limit]:
                pipe.hgetall(self._key(job_id))
            hashes = pipe.execute()
        jobs = (self._info(job_id, h) for (job_id, _), h in zip(found, hashes))
        return [job for job in jobs if job is not None]

    def retry(self, job_id: str) -> bool:
        return self._run(redislua.RETRY, job_id) == 1

    def retry_dead(self, queue: Optional[str] = None) -> int:
        total = 0
        for q in self._queues(queue):
            key = "%s:dead:%s" % (self.prefix, q)
            while True:
                ids = self.client.zrange(key, 0, _PURGE_BATCH - 1)
                n = self._run(redislua.RETRY, *ids) if ids else 0
                if not n:  # empty, or only ids whose job is gone
                    break
                total += n
        return total

    def purge(self, queue: str) -> int:
        total = 0
        while True:
            n = self._run(redislua.PURGE, queue, _PURGE_BATCH)
            if not n:
                return total
            total += n


def _claimed(reply: object) -> Union[Claim, Idle]:
    """The claim script's reply: a job, or the seconds until one may be due."""
    if isinstance(reply, list):
        id_, queue, call, attempt, max_attempts = reply
        return Claim(id_, queue, call, int(attempt), int(max_attempts))
    return Idle(None if reply is None else float(reply))
