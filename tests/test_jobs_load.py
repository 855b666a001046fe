"""Many processes at once, on both backends: 2,000 jobs enqueued by concurrent
producer processes are all run by several consumer processes, none lost;
consumers SIGKILLed at random (and replaced, as a supervisor would) cost no
job and at most one duplicate run per kill."""

from __future__ import annotations

import random
import signal
import time

from jobtools import output, quit_and_wait, token_counts, wait_tokens

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


def test_2000_jobs_from_concurrent_producers_all_run(jobs_url, run_dir, job_procs):
    record = run_dir / "record"
    consumers = [consume(job_procs, jobs_url) for _ in range(CONSUMERS)]
    producers = produce(job_procs, jobs_url, record, 0)
    assert_all_enqueued(producers)
    counts = wait_tokens(record, range(JOBS), 60, consumers)
    for c in consumers:
        assert quit_and_wait(c) == 0, output(c)
    counts = token_counts(record)
    assert len(counts) == JOBS and sum(counts.values()) == JOBS  # nobody killed: no duplicate
    assert jobs.open_backend(jobs_url).stats() == []


def test_sigkilled_consumers_lose_no_job_and_duplicate_at_most_one_each(
        jobs_url, run_dir, job_procs):
    record = run_dir / "record"
    rng = random.Random(11)
    consumers = [consume(job_procs, jobs_url) for _ in range(CONSUMERS)]
    # A 2 ms pause inside each job, between its work (the record) and its
    # acknowledgement, so that kills land mid-job as well as between jobs.
    producers = produce(job_procs, jobs_url, record, 0.002)
    kills = 0
    while kills < 8 and len(token_counts(record)) < JOBS * 0.8:
        time.sleep(rng.uniform(0.05, 0.25))
        victim = rng.randrange(CONSUMERS)
        consumers[victim].send_signal(signal.SIGKILL)
        assert consumers[victim].wait(10) == -signal.SIGKILL
        consumers[victim] = consume(job_procs, jobs_url)  # the supervisor's restart
        kills += 1
    assert kills >= 3, "the run ended before the kills: make it longer"
    assert_all_enqueued(producers)
    wait_tokens(record, range(JOBS), 60, consumers)
    for c in consumers:
        assert quit_and_wait(c) == 0, output(c)
    counts = token_counts(record)
    assert set(counts) == {str(n) for n in range(JOBS)}
    duplicates = sum(counts.values()) - JOBS
    assert duplicates <= kills, (duplicates, kills)
    assert jobs.open_backend(jobs_url).stats() == []
