"""Each backend keeps the same promises: every test here runs on a real SQLite
file and on a real redis-server (the jobs_url fixture), driving the backend
interface directly with short leases."""

from __future__ import annotations

import os
import threading
import time

import harness
import jobtools  # noqa: F401  (puts tests/apps on sys.path)
import pytest

from pfm import jobs
from pfm.jobs.job import encode_call

CALL = encode_call("jobfuncs:echo", (1,), {})


@pytest.fixture
def backend(jobs_url):
    b = jobs.open_backend(jobs_url)
    yield b
    b.close()


def claim(backend, queues=("default",), lease=30.0):
    got = backend.claim(list(queues), lease)
    assert isinstance(got, jobs.Claim), got
    return got


def test_enqueue_returns_distinct_ids_and_the_job_reads_back(backend, jobs_url):
    first = jobs.enqueue("jobfuncs:echo", 1, "two", [3], queue="mail", max_attempts=3,
                         url=jobs_url, key={"k": None})
    second = jobs.enqueue("jobfuncs:echo", url=jobs_url)
    assert first != second
    info = jobs.status(first, url=jobs_url)
    assert (info.id, info.queue, info.state, info.func, info.args, info.kwargs,
            info.attempts, info.max_attempts) == \
        (first, "mail", jobs.READY, "jobfuncs:echo", [1, "two", [3]], {"key": {"k": None}}, 0, 3)
    assert jobs.status("999999", url=jobs_url) is None
    assert jobs.status("not-an-id", url=jobs_url) is None


def test_claim_takes_the_oldest_job_once_and_ack_makes_it_done(backend):
    ids = [backend.enqueue("default", CALL, 5, 0) for _ in range(3)]
    first, second = claim(backend), claim(backend)
    assert [first.id, second.id] == ids[:2] and first.attempt == 1 and first.call == CALL
    assert backend.get(first.id).state == jobs.RUNNING
    assert backend.ack(first) is True
    assert backend.get(first.id).state == jobs.DONE
    assert backend.ack(first) is False  # twice is a no-op
    assert claim(backend).id == ids[2]
    assert isinstance(backend.claim(["default"], 30.0), jobs.Idle)


def test_queues_are_taken_in_the_order_given(backend):
    low = backend.enqueue("low", CALL, 5, 0)
    high = backend.enqueue("high", CALL, 5, 0)
    assert claim(backend, ["high", "low"]).id == high
    assert claim(backend, ["high", "low"]).id == low
    assert isinstance(backend.claim(["other"], 30.0), jobs.Idle)


def test_concurrent_claims_never_hand_out_a_job_twice(jobs_url):
    """Threads with connections of their own race for 300 jobs."""
    setup = jobs.open_backend(jobs_url)
    for _ in range(300):
        setup.enqueue("default", CALL, 5, 0)
    taken: list = []

    def drain():
        b = jobs.open_backend(jobs_url)
        while True:
            got = b.claim(["default"], 30.0)
            if not isinstance(got, jobs.Claim):
                return
            taken.append(got.id)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(taken) == 300 and len(set(taken)) == 300


def test_an_expired_lease_puts_the_job_back_and_the_old_run_loses_it(backend):
    job_id = backend.enqueue("default", CALL, 5, 0)
    old = claim(backend, lease=0.2)
    assert isinstance(backend.claim(["default"], 30.0), jobs.Idle)
    new = harness.wait_for(lambda: _claim_or_none(backend), 5, "the lease to expire")
    assert (new.id, new.attempt) == (job_id, 2)
    assert "lease of attempt 1 expired" in backend.get(job_id).error
    assert backend.renew(old, 30.0) is False
    assert backend.ack(old) is False and backend.fail(old, "late", 0) is None
    assert backend.get(job_id).state == jobs.RUNNING
    assert backend.ack(new) is True


def test_renewing_a_lease_keeps_the_job(backend):
    backend.enqueue("default", CALL, 5, 0)
    held = claim(backend, lease=0.3)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert backend.renew(held, 0.3) is True
        assert isinstance(backend.claim(["default"], 0.3), jobs.Idle)
        time.sleep(0.05)
    assert backend.ack(held) is True


def test_a_run_that_finishes_after_losing_its_lease_still_completes_the_job(backend):
    """Nobody claimed it again yet: the ack takes it back out of the ready jobs."""
    job_id = backend.enqueue("default", CALL, 5, 0)
    old = claim(backend, lease=0.1)
    time.sleep(0.15)
    backend.claim(["other"], 1.0)  # settles nothing of 'default'
    assert backend.ack(old) is True
    assert backend.get(job_id).state == jobs.DONE
    assert isinstance(backend.claim(["default"], 30.0), jobs.Idle)


def test_lost_leases_count_as_attempts_until_the_job_is_dead(backend):
    job_id = backend.enqueue("default", CALL, 2, 0)
    claim(backend, lease=0.05)
    harness.wait_for(lambda: _claim_or_none(backend, lease=0.05), 5, "attempt 2")


    def dead_after_a_claim():  # a claim is what settles expired leases
        assert isinstance(backend.claim(["default"], 0.05), jobs.Idle)
        return backend.get(job_id).state == jobs.DEAD

    harness.wait_for(dead_after_a_claim, 5, "the job to be dead")
    info = backend.get(job_id)
    assert info.attempts == 2 and "lease of attempt 2 expired" in info.error


def test_fail_retries_after_the_delay_then_the_last_failure_is_dead(backend):
    job_id = backend.enqueue("default", CALL, 2, 0)
    first = claim(backend)
    before = time.time()
    assert backend.fail(first, "Traceback...\nValueError: one\n", 0.3) == jobs.DELAYED
    info = backend.get(job_id)
    assert info.state == jobs.DELAYED and "one" in info.error and info.at >= before + 0.3
    idle = backend.claim(["default"], 30.0)
    assert isinstance(idle, jobs.Idle) and 0 < idle.due_in <= 0.3
    second = harness.wait_for(lambda: _claim_or_none(backend), 5, "the retry")
    assert time.time() >= before + 0.3 and second.attempt == 2
    assert backend.fail(second, "Traceback...\nValueError: two\n", 0.3) == jobs.DEAD
    info = backend.get(job_id)
    assert info.state == jobs.DEAD and info.error.endswith("ValueError: two\n")
    assert [j.id for j in backend.dead()] == [job_id]
    assert isinstance(backend.claim(["default"], 30.0), jobs.Idle)


def test_a_delayed_job_is_not_claimed_before_its_time(backend):
    start = time.time()
    job_id = backend.enqueue("default", CALL, 5, 0.4)
    assert backend.get(job_id).state == jobs.DELAYED
    idle = backend.claim(["default"], 30.0)
    assert isinstance(idle, jobs.Idle) and 0.2 < idle.due_in <= 0.4
    got = harness.wait_for(lambda: _claim_or_none(backend), 5, "the delayed job")
    assert got.id == job_id and time.time() >= start + 0.4


def test_stats_count_each_state_per_queue(backend):
    for _ in range(3):
        backend.enqueue("a", CALL, 1, 0)
    backend.enqueue("a", CALL, 1, 60)
    backend.enqueue("b", CALL, 1, 0)
    claim(backend, ["a"])
    backend.fail(claim(backend, ["a"]), "boom", 0)
    assert backend.stats() == [jobs.QueueStats("a", ready=1, running=1, delayed=1, dead=1),
                               jobs.QueueStats("b", ready=1)]


def test_retry_makes_a_dead_job_ready_with_fresh_attempts(backend):
    job_id = backend.enqueue("default", CALL, 1, 0)
    backend.fail(claim(backend), "boom", 0)
    assert backend.retry(job_id) is True and backend.retry(job_id) is False
    info = backend.get(job_id)
    assert (info.state, info.attempts) == (jobs.READY, 0)
    assert claim(backend).attempt == 1
    assert backend.retry("999999") is False


def test_retry_dead_retries_all_or_one_queue(backend):
    for queue in ("a", "a", "b"):
        backend.enqueue(queue, CALL, 1, 0)
    for queue in ("a", "a", "b"):
        backend.fail(claim(backend, [queue]), "boom", 0)
    assert backend.retry_dead("a") == 2
    assert [s.dead for s in backend.stats()] == [0, 1]
    assert backend.retry_dead() == 1
    assert backend.dead() == []


def test_purge_deletes_waiting_and_dead_jobs_but_not_running_ones(backend):
    for delay in (0, 0, 60):
        backend.enqueue("a", CALL, 1, delay)
    backend.enqueue("b", CALL, 1, 0)
    running = claim(backend, ["a"])
    backend.enqueue("a", CALL, 1, 0)
    backend.fail(claim(backend, ["a"]), "boom", 0)
    assert backend.purge("a") == 3
    assert backend.stats() == [jobs.QueueStats("a", running=1), jobs.QueueStats("b", ready=1)]
    assert backend.ack(running) is True


def test_dead_lists_the_most_recent_first_and_filters_by_queue(backend):
    ids = []
    for queue in ("a", "b", "a"):
        ids.append(backend.enqueue(queue, CALL, 1, 0))
        backend.fail(claim(backend, [queue]), "boom " + queue, 0)
        time.sleep(0.01)
    assert [j.id for j in backend.dead()] == ids[::-1]
    assert [j.id for j in backend.dead("a", limit=1)] == [ids[2]]


def test_keep_done_zero_forgets_a_job_once_done(jobs_url):
    sep = "&" if "?" in jobs_url else "?"
    backend = jobs.open_backend(jobs_url + sep + "keep_done=0")
    job_id = backend.enqueue("default", CALL, 5, 0)
    assert backend.ack(claim(backend)) is True
    assert backend.get(job_id) is None


def test_redis_over_a_unix_socket(redis_server):
    url = redis_server.unix_url + "&prefix=unix-test"
    job_id = jobs.enqueue("jobfuncs:echo", 1, url=url)
    backend = jobs.open_backend(url)
    assert claim(backend).id == job_id


def _claim_or_none(backend, lease=30.0):
    got = backend.claim(["default"], lease)
    return got if isinstance(got, jobs.Claim) else None


def test_a_backend_opened_before_fork_works_in_both_processes(backend, jobs_url):
    """A pool manager that preloads the app may enqueue (and so connect)
    before forking its workers: each process must get connections of its own."""
    first = jobs.enqueue("jobfuncs:echo", 1, url=jobs_url)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: enqueue through the inherited cache, report, leave
        try:
            os.close(r)
            os.write(w, jobs.enqueue("jobfuncs:echo", 2, url=jobs_url).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as pipe:
        child = pipe.read()
    assert os.waitpid(pid, 0)[1] == 0
    third = jobs.enqueue("jobfuncs:echo", 3, url=jobs_url)
    assert [claim(backend).id for _ in range(3)] == [first, child, third]


def test_redis_scripts_are_loaded_again_after_the_server_forgot_them(redis_server):
    """After a restart or SCRIPT FLUSH, EVALSHA fails with NOSCRIPT: the backend
    loads the script again and the call goes through."""
    backend = jobs.open_backend(redis_server.url + "?prefix=flush-test")
    first = backend.enqueue("default", CALL, 5, 0)
    backend.client.script_flush()
    second = backend.enqueue("default", CALL, 5, 0)
    assert int(second) == int(first) + 1
    assert claim(backend).id == first


def test_a_redis_prefix_must_be_a_plain_name(redis_server):
    with pytest.raises(ValueError, match="prefix=a'b"):
        jobs.open_backend(redis_server.url + "?prefix=a'b")


def test_ack_and_claim_settles_one_job_and_takes_the_next(backend):
    first, second = (backend.enqueue("default", CALL, 5, 0) for _ in range(2))
    held = claim(backend)
    acked, nxt = backend.ack_and_claim(held, ["default"], 30.0)
    assert acked is True and backend.get(first).state == jobs.DONE
    assert (nxt.id, nxt.attempt) == (second, 1)
    acked, nxt = backend.ack_and_claim(nxt, ["default"], 30.0)
    assert acked is True and isinstance(nxt, jobs.Idle)
    acked, nxt = backend.ack_and_claim(held, ["default"], 30.0)  # twice: a no-op
    assert acked is False and isinstance(nxt, jobs.Idle)
