"""`pfm jobs` on both backends, run as the operator runs it: `python -m pfm
jobs ...` in a process of its own, the queue named by PFM_JOBS_URL or --url."""

from __future__ import annotations

import json
import subprocess
import sys

import harness
import jobtools  # noqa: F401  (puts tests/apps on sys.path)
import pytest

from pfm import jobs
from pfm.jobs.job import encode_call

CALL = encode_call("jobfuncs:echo", (), {})


def pfm_jobs(url, *args):
    env = harness.test_env({jobs.ENV_URL: url})
    return subprocess.run([sys.executable, "-m", "pfm", "jobs", *args], env=env,
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def dead_and_ready(jobs_url):
    """Queue 'mail': one ready job and two dead ones (the later one's error
    says 'second'); queue 'default': one delayed job."""
    backend = jobs.open_backend(jobs_url)
    ids = [backend.enqueue("mail", CALL, 1, 0) for _ in range(3)]
    for word in ("first", "second"):
        claim = backend.claim(["mail"], 30)
        backend.fail(claim, "Traceback (most recent call last):\nValueError: %s\n" % word, 0)
    backend.enqueue("default", CALL, 1, 60)
    return backend, ids


def test_show_counts_each_queue_and_lists_dead_jobs_with_tracebacks(jobs_url, dead_and_ready):
    _, ids = dead_and_ready
    result = pfm_jobs(jobs_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2:5] == [
        "queue      ready  running  delayed     dead",
        "default        0        0        1        0",
        "mail           1        0        0        2",
    ]
    assert lines[6] == "dead jobs (most recent first):"
    assert lines[7].startswith("job %s  queue mail  jobfuncs:echo  attempts 1/1" % ids[1])
    assert lines[8:10] == ["    Traceback (most recent call last):", "    ValueError: second"]
    assert lines[10].startswith("job %s  queue mail" % ids[0])


def test_show_as_json(jobs_url, dead_and_ready):
    result = pfm_jobs(jobs_url, "--json", "--queue", "mail")
    data = json.loads(result.stdout)
    assert data["queues"] == [{"queue": "mail", "ready": 1, "running": 0, "delayed": 0,
                               "dead": 2}]
    assert [d["error"].splitlines()[-1] for d in data["dead"]] == \
        ["ValueError: second", "ValueError: first"]


def test_retry_one_dead_job_then_all(jobs_url, dead_and_ready):
    backend, ids = dead_and_ready
    result = pfm_jobs(jobs_url, "retry", ids[0])
    assert (result.returncode, result.stdout) == (0, "job %s is ready again\n" % ids[0])
    assert backend.get(ids[0]).state == jobs.READY
    result = pfm_jobs(jobs_url, "retry", ids[0], "424242")
    assert result.returncode == 1
    assert result.stderr == ("pfm jobs: cannot retry job %s: it is ready, not dead\n"
                             "pfm jobs: cannot retry job 424242: no such job\n" % ids[0])
    result = pfm_jobs(jobs_url, "retry", "--all")
    assert (result.returncode, result.stdout) == (0, "1 dead jobs are ready again\n")
    assert [s.dead for s in backend.stats()] == [0, 0]


def test_purge_a_queue(jobs_url, dead_and_ready):
    backend, _ = dead_and_ready
    result = pfm_jobs(jobs_url, "purge", "mail")
    assert (result.returncode, result.stdout) == \
        (0, "queue mail: 3 ready, delayed or dead jobs deleted\n")
    assert [s.queue for s in backend.stats()] == ["default"]


def test_url_option_wins_over_the_environment(jobs_url, dead_and_ready, run_dir):
    result = pfm_jobs("sqlite://%s/elsewhere.sqlite3" % run_dir, "--url", jobs_url, "--json")
    assert [q["queue"] for q in json.loads(result.stdout)["queues"]] == ["default", "mail"]


@pytest.mark.parametrize("args, words", [
    (["retry"], "retry takes job ids or --all"),
    (["retry", "1", "--all"], "retry takes job ids or --all"),
    (["purge"], "purge takes one queue name"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_64(jobs_url, args, words):
    result = pfm_jobs(jobs_url, *args)
    assert result.returncode == 64 and words in result.stderr


def test_an_unreachable_queue_is_a_clear_error_not_a_traceback():
    port = harness.free_port()
    result = pfm_jobs("redis://127.0.0.1:%d/0" % port)
    assert result.returncode == 69
    assert result.stderr.startswith("pfm jobs: cannot reach the queue redis://127.0.0.1:%d/0"
                                    % port)
    assert "Traceback" not in result.stderr


def test_a_bad_url_is_a_usage_error():
    result = pfm_jobs("ftp://nowhere/")
    assert result.returncode == 64 and "unsupported queue URL 'ftp://nowhere/'" in result.stderr
