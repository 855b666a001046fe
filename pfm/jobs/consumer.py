"""The consumer loop a supervised worker process runs: claim, run, acknowledge.

One job at a time. While a job runs, a heartbeat thread renews its lease every
lease/3 seconds, so a slow job keeps its lease and a consumer that dies
(SIGKILL, OOM, a host gone) leaves its job to be run again once the lease
runs out. A job is acknowledged only after its function returned (at least
once); one that raised is retried after an exponential back-off, and kept as
dead with its traceback once `max_attempts` runs have failed.

Stopping, as a supervisor asks for it:
* QUIT: call `stop()` (signal-handler safe). The current job finishes and is
  acknowledged, then `run()` returns; an idle consumer returns at once.
* TERM: just exit. The job's lease runs out and another consumer runs it.

A job that raises SystemExit or KeyboardInterrupt ends run() the same way:
its lease runs out and the job runs again. The heartbeat needs the GIL now and
then: a C extension holding it for longer than a lease makes the job run twice.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from typing import Callable, Optional, Sequence, TypeVar, Union

from ..log import ERROR, NOTICE, WARNING, stderr_line
from .backend import Backend
from .job import DEAD, Claim, Idle, check_queue, decode_call, resolve

T = TypeVar("T")
Log = Callable[[int, str], None]


def retry_delay(attempt: int, base: float, cap: float, jitter: float = 0.25,
                rand: Callable[[], float] = random.random) -> float:
    """Seconds before retrying a job whose `attempt`-th run failed: base,
    2*base, 4*base... up to cap, plus up to `jitter` of that at random so that
    jobs that failed together (a service down) do not all come back together."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay * (1 + jitter * rand())


class _Interrupted(BaseException):
    """Raised by stop() inside an idle wait to end it at once."""


class Consumer:
    """Runs jobs from `queues` (the first queue with a ready job goes first).

    `lease`: seconds a claim lasts without renewal; a job whose consumer died
    runs again about that long after. `retry_base`/`retry_cap`: the back-off.
    `max_wait`: longest idle block before claiming again (new work normally
    wakes the consumer sooner). `on_job(claim)` is called when a job starts and
    `on_job(None)` when it ends: process titles and status slots hang on it.
    `log(level, message)` receives pfm.log levels."""

    def __init__(self, backend: Backend, queues: Sequence[str], *, lease: float = 30.0,
                 retry_base: float = 2.0, retry_cap: float = 3600.0, max_wait: float = 5.0,
                 on_job: Optional[Callable[[Optional[Claim]], None]] = None,
                 log: Log = stderr_line):
        if not queues:
            raise ValueError("pfm.jobs: a consumer needs at least one queue")
        self.backend = backend
        self.queues = [check_queue(q) for q in queues]
        self.lease = lease
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self.max_wait = max_wait
        self.on_job = on_job
        self.log = log
        self.current: Optional[Claim] = None
        self.stopping = False
        self._waiting = False
        self._run_thread: Optional[int] = None
        self._heartbeat: Optional[_Heartbeat] = None
        self._outage = 0  # failed claims in a row

    @property
    def idle(self) -> bool:
        """True while the consumer waits for work (it holds no job)."""
        return self._waiting

    def stop(self) -> None:
        """Finish the current job, then return from run(). Safe to call from a
        signal handler: in the thread running run(), an idle wait ends at once."""
        self.stopping = True
        if self._waiting and threading.get_ident() == self._run_thread:
            self._waiting = False
            raise _Interrupted()

    def run(self, should_stop: Callable[[], bool] = lambda: False,
            max_jobs: Optional[int] = None) -> int:
        """Consume until stop() or should_stop() (checked between jobs and
        after each idle wait), or `max_jobs` jobs. Returns the jobs run."""
        self._run_thread = threading.get_ident()
        self._heartbeat = _Heartbeat(self.backend, self.lease, self.log)

        def ending(done: int) -> bool:
            return self.stopping or should_stop() or (max_jobs is not None and done >= max_jobs)

        done = 0
        got: Union[Claim, Idle, None] = None  # what the last acknowledgement brought back
        try:
            while True:
                if got is None:
                    if ending(done):
                        break
                    got = self._claim()
                if isinstance(got, Claim):
                    # A job taken is run, even if a stop came while it was taken.
                    got = self._run(got, take_next=lambda after=done + 1: not ending(after))
                    done += 1
                elif got is not None:
                    due = self.max_wait if got.due_in is None else got.due_in
                    self._idle(self._wait, min(self.max_wait, due))
                    got = None
        except _Interrupted:
            pass  # stop() while idle: no job is held
        finally:
            self._heartbeat.close()
            self._run_thread = None
        return done

    def _idle(self, wait: Callable[..., None], *args: object) -> None:
        """Block in `wait(*args)` where stop() may interrupt it."""
        try:
            self._waiting = True
            if not self.stopping:
                wait(*args)
        finally:
            self._waiting = False

    def _wait(self, timeout: float) -> None:
        try:
            self.backend.wait(self.queues, timeout)
        except self.backend.transient_errors:
            pass  # the next claim finds out and waits the outage out

    def _claim(self) -> Union[Claim, Idle, None]:
        """A job, or Idle, or None after waiting out an unavailable queue."""
        try:
            got = self.backend.claim(self.queues, self.lease)
        except self.backend.transient_errors as e:
            # Wait the outage out (0.1 s doubling to max_wait); say so once.
            if not self._outage:
                self.log(WARNING, "job queue %s unavailable, retrying: %s"
                         % (self.backend.url, e))
            self._idle(time.sleep, min(self.max_wait, 0.1 * 2 ** min(self._outage, 10)))
            self._outage += 1
            return None
        if self._outage:
            self.log(NOTICE, "job queue %s is back" % self.backend.url)
            self._outage = 0
        return got

    def _run(self, claim: Claim, take_next: Callable[[], bool]) -> Union[Claim, Idle, None]:
        """Run the job and record its outcome. If `take_next()` says so once the
        job is over, a success is acknowledged together with claiming the next
        job, which is returned."""
        self.current = claim
        self._heartbeat.hold(claim)
        if self.on_job:
            self.on_job(claim)
        try:
            func, args, kwargs = decode_call(claim.call)
            resolve(func)(*args, **kwargs)
        except Exception as e:
            self._heartbeat.hold(None)
            self._failed(claim, e, traceback.format_exc())
            return None
        else:
            self._heartbeat.hold(None)
            if take_next():
                acked, got = self._settle(claim, self.backend.ack_and_claim, claim,
                                          self.queues, self.lease) or (None, None)
            else:
                acked, got = self._settle(claim, self.backend.ack, claim), None
            if acked is False:
                self.log(WARNING, "job %s (%s) finished after its lease was lost: it ran "
                         "more than once" % (claim.id, claim.func))
            return got
        finally:
            self.current = None
            if self.on_job:
                self.on_job(None)

    def _failed(self, claim: Claim, e: Exception, error: str) -> None:
        delay = retry_delay(claim.attempt, self.retry_base, self.retry_cap)
        state = self._settle(claim, self.backend.fail, claim, error, delay)
        what = "job %s (%s) attempt %d of %d failed: %s: %s" % (
            claim.id, claim.func, claim.attempt, claim.max_attempts, type(e).__name__, e)
        if state == DEAD:
            self.log(ERROR, what + "; the job is dead")
        elif state is not None:
            self.log(WARNING, what + "; retrying in %.1fs" % delay)

    def _settle(self, claim: Claim, action: Callable[..., T], *args: object) -> Optional[T]:
        """Record a job's outcome, waiting out a queue that is briefly away (up
        to one lease: after that the job will run again anyway)."""
        pause, give_up = 0.05, time.monotonic() + self.lease
        while True:
            try:
                return action(*args)
            except self.backend.transient_errors as e:
                if time.monotonic() + pause > give_up:
                    self.log(ERROR, "job %s (%s): could not record its outcome (%s); it will "
                             "run again when its lease expires" % (claim.id, claim.func, e))
                    return None
                time.sleep(pause)
                pause = min(pause * 2, 2.0)


class _Heartbeat:
    """A daemon thread renewing the lease of the job being run, every lease/3."""

    def __init__(self, backend: Backend, lease: float, log: Log):
        self.backend, self.lease, self.log = backend, lease, log
        self._lock = threading.Lock()
        self._claim: Optional[Claim] = None
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def hold(self, claim: Optional[Claim]) -> None:
        """Renew `claim` from now on (None: stop renewing). Waits for a renewal
        in flight, so none can land after the job was settled."""
        with self._lock:
            self._claim = claim
        if claim is not None and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="pfm-jobs-lease",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._closed.wait(self.lease / 3):
            with self._lock:
                claim = self._claim
                if claim is None:
                    continue
                try:
                    kept = self.backend.renew(claim, self.lease)
                except self.backend.transient_errors as e:
                    self.log(WARNING, "job %s: could not renew its lease: %s" % (claim.id, e))
                    continue
                if not kept:
                    self.log(WARNING, "job %s (%s) lost its lease: it may run twice"
                             % (claim.id, claim.func))
                    self._claim = None
