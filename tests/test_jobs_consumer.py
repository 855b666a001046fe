"""The consumer loop on both backends: it runs jobs, renews their leases,
retries with back-off, honours delays, and stops as a supervisor asks (QUIT:
finish the job; TERM: at once, the job runs again after its lease)."""

from __future__ import annotations

import os
import signal
import threading
import time

import harness
from jobtools import ConsumerThread, output, quit_and_wait, records, wait_tokens

from pfm import jobs
from pfm.log import ERROR, WARNING


def consumer(url, **kwargs):
    kwargs.setdefault("max_wait", 0.2)
    kwargs.setdefault("lease", 5.0)
    return jobs.Consumer(jobs.open_backend(url), kwargs.pop("queues", ["default"]), **kwargs)


def test_a_job_runs_with_its_arguments_and_is_acknowledged(jobs_url, run_dir):
    record = run_dir / "record"
    seen = []
    job_id = jobs.enqueue("jobfuncs:record", str(record), "tok", url=jobs_url)
    with ConsumerThread(consumer(jobs_url, on_job=seen.append)):
        wait_tokens(record, ["tok"], 10)
        harness.wait_for(lambda: jobs.status(job_id, url=jobs_url).state == jobs.DONE, 5,
                         "the job to be done")
    assert [c and (c.id, c.func, c.attempt) for c in seen] == \
        [(job_id, "jobfuncs:record", 1), None]


def test_a_failing_job_backs_off_exponentially_then_is_dead_with_its_traceback(
        jobs_url, run_dir):
    record = run_dir / "record"
    logged = []
    job_id = jobs.enqueue("jobfuncs:fail_always", str(record), "x", max_attempts=3,
                          url=jobs_url)
    c = consumer(jobs_url, retry_base=0.2, log=lambda level, msg: logged.append((level, msg)))
    with ConsumerThread(c):
        harness.wait_for(lambda: jobs.status(job_id, url=jobs_url).state == jobs.DEAD, 10,
                         "the job to be dead")
    times = [t for _, _, t in records(record)]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.4
    info = jobs.status(job_id, url=jobs_url)
    assert info.attempts == 3
    assert "Traceback (most recent call last)" in info.error
    assert "in fail_always" in info.error and info.error.endswith("ValueError: boom x\n")
    assert [level for level, _ in logged] == [WARNING, WARNING, ERROR]
    assert "attempt 1 of 3 failed: ValueError: boom x; retrying in 0.2" in logged[0][1]
    assert logged[2][1].endswith("attempt 3 of 3 failed: ValueError: boom x; the job is dead")


def test_a_function_that_cannot_be_imported_is_a_failure_like_any_other(jobs_url):
    job_id = jobs.enqueue("no_such_module:f", max_attempts=1, url=jobs_url)
    with ConsumerThread(consumer(jobs_url, log=lambda *_: None)):
        harness.wait_for(lambda: jobs.status(job_id, url=jobs_url).state == jobs.DEAD, 10,
                         "the job to be dead")
    assert "ModuleNotFoundError: No module named 'no_such_module'" in \
        jobs.status(job_id, url=jobs_url).error


def test_lease_renewal_keeps_a_slow_job_from_running_twice(jobs_url, run_dir):
    """The job takes 4 leases; a second consumer waits for work all along."""
    record = run_dir / "record"
    job_id = jobs.enqueue("jobfuncs:slow", str(record), "s", 1.2, url=jobs_url)
    with ConsumerThread(consumer(jobs_url, lease=0.3)), \
            ConsumerThread(consumer(jobs_url, lease=0.3)):
        wait_tokens(record, ["end-s"], 10)
        harness.wait_for(lambda: jobs.status(job_id, url=jobs_url).state == jobs.DONE, 5,
                         "the job to be done")
    assert [token for token, _, _ in records(record)] == ["start-s", "end-s"]
    assert jobs.status(job_id, url=jobs_url).attempts == 1


def test_a_delayed_job_runs_no_earlier_than_asked(jobs_url, run_dir):
    record = run_dir / "record"
    with ConsumerThread(consumer(jobs_url, max_wait=5.0), max_jobs=1):
        time.sleep(0.1)  # let the consumer go idle: the delayed job must wake it
        asked = time.time()
        jobs.enqueue("jobfuncs:record", str(record), "later", delay=0.6, url=jobs_url)
        wait_tokens(record, ["later"], 10)
    (_, _, ran), = records(record)
    assert ran >= asked + 0.6


def test_quit_finishes_the_current_job_then_exits(jobs_url, run_dir, job_procs):
    record = run_dir / "record"
    slow = jobs.enqueue("jobfuncs:slow", str(record), "q", 1.0, url=jobs_url)
    proc = job_procs("consume", jobs_url, "default", 5, 1)
    wait_tokens(record, ["start-q"], 15, [proc])
    waiting = jobs.enqueue("jobfuncs:record", str(record), "after", url=jobs_url)
    assert quit_and_wait(proc) == 0, output(proc)
    assert [token for token, _, _ in records(record)] == ["start-q", "end-q"]
    assert jobs.status(slow, url=jobs_url).state == jobs.DONE
    assert jobs.status(waiting, url=jobs_url).state == jobs.READY
    assert output(proc).endswith("stopped\n")


def test_term_stops_at_once_and_the_job_runs_again_after_its_lease(
        jobs_url, run_dir, job_procs):
    record = run_dir / "record"
    job_id = jobs.enqueue("jobfuncs:slow", str(record), "t", 1.5, url=jobs_url)
    first = job_procs("consume", jobs_url, "default", 1, 1)
    wait_tokens(record, ["start-t"], 15, [first])
    first.send_signal(signal.SIGTERM)
    assert first.wait(5) == -signal.SIGTERM
    assert jobs.status(job_id, url=jobs_url).state == jobs.RUNNING
    second = job_procs("consume", jobs_url, "default", 1, 1)
    wait_tokens(record, ["end-t"], 15, [second])
    assert [(token, pid) for token, pid, _ in records(record)] == \
        [("start-t", first.pid), ("start-t", second.pid), ("end-t", second.pid)]
    harness.wait_for(lambda: jobs.status(job_id, url=jobs_url).state == jobs.DONE, 5,
                     "the job to be done")
    assert jobs.status(job_id, url=jobs_url).attempts == 2
    assert quit_and_wait(second) == 0


def test_quit_while_idle_returns_at_once(jobs_url):
    """stop() from a SIGQUIT handler ends a long idle wait in the same thread."""
    c = consumer(jobs_url, max_wait=30.0)
    previous = signal.signal(signal.SIGQUIT, lambda *_: c.stop())

    def quit_once_idle():
        harness.wait_for(lambda: c.idle, 10, "the consumer to wait for work")
        time.sleep(0.05)  # well inside the wait, not at its edge
        os.kill(os.getpid(), signal.SIGQUIT)

    killer = threading.Thread(target=quit_once_idle)
    killer.start()
    try:
        started = time.monotonic()
        assert c.run() == 0
        assert time.monotonic() - started < 10
    finally:
        killer.join(15)
        signal.signal(signal.SIGQUIT, previous)


def test_stop_between_jobs_leaves_the_rest_ready(jobs_url, run_dir):
    record = run_dir / "record"
    ids = [jobs.enqueue("jobfuncs:record", str(record), n, url=jobs_url) for n in range(3)]
    c = consumer(jobs_url)
    c.on_job = lambda claim: claim is None or c.stop()
    assert c.run() == 1
    assert [jobs.status(i, url=jobs_url).state for i in ids] == \
        [jobs.DONE, jobs.READY, jobs.READY]


def test_a_consumer_waits_out_a_redis_restart(run_dir):
    from redisserver import RedisServer
    server = RedisServer(run_dir).start()
    record, logged = run_dir / "record", []
    try:
        c = consumer(server.url, log=lambda level, message: logged.append(message))
        with ConsumerThread(c):
            jobs.enqueue("jobfuncs:record", str(record), "before", url=server.url)
            wait_tokens(record, ["before"], 10)
            server.stop()
            harness.wait_for(lambda: any("unavailable" in m for m in logged), 10,
                             "the consumer to notice the outage")
            server.start(port=server.port)
            jobs.enqueue("jobfuncs:record", str(record), "after", url=server.url)
            wait_tokens(record, ["after"], 15)
    finally:
        server.stop()
    assert logged[0].startswith("job queue %s unavailable, retrying: " % server.url)
    assert logged[-1] == "job queue %s is back" % server.url
