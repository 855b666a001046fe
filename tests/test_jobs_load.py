"""Many processes at once, on both backends: 2,000 jobs enqueued by concurrent
producer processes are all run by several consumer processes, none lost;
consumers SIGKILLed at random (and replaced, as a supervisor would) cost no
job and at most one duplicate run per kill."""

from __future__ import annotations

import random
import signal
import time

import harness
from jobtools import output, quit_and_wait, records, token_counts, wait_tokens

from pfm import jobs

JOBS, PRODUCERS, CONSUMERS = 2000, 4, 3
LEASE = 1.0  # a killed consumer's job runs again about this long after


def produce(job_procs, url, record, pause):
    per = JOBS // PRODUCERS
    return [job_procs("produce", url, "load", record, n * per, per, pause)
            for n in range(PRODUCERS)]


def consume(job_procs, url):
    return job_procs("consume", url, "load", LEASE, 0.1)


def assert_all_enqueued(producers):
    for p in producers:
        assert p.wait(60) == 0, output(p)


def settle_and_quit(url, consumers):
    """Wait until no job is left in any state (a killed consumer's job runs
    again once its lease expires), then QUIT the consumers: each exits 0."""
    backend = jobs.open_backend(url)
    harness.wait_for(lambda: backend.stats() == [], LEASE + 30, "every job to be done",
                     interval=0.1, on_fail=lambda: repr(backend.stats()))
    for c in consumers:
        assert quit_and_wait(c) == 0, output(c)


def test_2000_jobs_from_concurrent_producers_all_run(jobs_url, run_dir, job_procs):
    record = run_dir / "record"
    consumers = [consume(job_procs, jobs_url) for _ in range(CONSUMERS)]
    producers = produce(job_procs, jobs_url, record, 0)
    assert_all_enqueued(producers)
    wait_tokens(record, range(JOBS), 60, consumers)
    settle_and_quit(jobs_url, consumers)
    counts = token_counts(record)
    assert len(counts) == JOBS and sum(counts.values()) == JOBS  # nobody killed: no duplicate


def test_sigkilled_consumers_lose_no_job_and_duplicate_at_most_one_each(
        jobs_url, run_dir, job_procs):
    record = run_dir / "record"
    rng = random.Random(11)
    consumers = [consume(job_procs, jobs_url) for _ in range(CONSUMERS)]
    # A 4 ms pause inside each job, between its work (the record) and its
    # acknowledgement, so that kills land mid-job (a duplicate) as well as
    # between jobs (none).
    producers = produce(job_procs, jobs_url, record, 0.004)
    harness.wait_for(lambda: len(records(record)) >= 50, 30, "the first jobs to run")
    kills = 0
    while kills < 8 and len(token_counts(record)) < JOBS * 0.8:
        time.sleep(rng.uniform(0.05, 0.2))
        # Mostly the consumer that recorded last: likely inside its job's pause.
        last = records(record)[-1:]
        pids = [c.pid for c in consumers]
        victim = pids.index(last[0][1]) if last and last[0][1] in pids and rng.random() < 0.75 \
            else rng.randrange(CONSUMERS)
        consumers[victim].send_signal(signal.SIGKILL)
        assert consumers[victim].wait(10) == -signal.SIGKILL
        consumers[victim] = consume(job_procs, jobs_url)  # the supervisor's restart
        kills += 1
    assert kills >= 3, "the run ended before the kills: make it longer"
    assert_all_enqueued(producers)
    wait_tokens(record, range(JOBS), 60, consumers)
    settle_and_quit(jobs_url, consumers)
    counts = token_counts(record)
    assert set(counts) == {str(n) for n in range(JOBS)}
    duplicates = sum(counts.values()) - JOBS
    assert duplicates <= kills, (duplicates, kills)
