"""Helpers for the job-queue tests: consumer and producer processes, and the
record files the test job functions write (tests/apps/jobfuncs.py)."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import harness

if str(harness.APPS) not in sys.path:  # in-process consumers import jobfuncs too
    sys.path.insert(0, str(harness.APPS))

JOBPROCS = harness.APPS / "jobprocs.py"


def start_jobproc(workdir: Path, *argv) -> subprocess.Popen:
    """tests/apps/jobprocs.py ARGV..., output to workdir/out.log."""
    env = harness.test_env()
    env["PYTHONPATH"] = os.pathsep.join([str(harness.APPS), env["PYTHONPATH"]])
    out = open(workdir / "out.log", "wb")
    try:
        proc = subprocess.Popen([sys.executable, str(JOBPROCS), *map(str, argv)], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()
    proc.log_path = workdir / "out.log"
    return proc


def output(proc) -> str:
    return harness.read_text(proc.log_path)


def quit_and_wait(proc, timeout: float = 20.0) -> int:
    """SIGQUIT (finish the current job, then exit) and wait for the exit."""
    proc.send_signal(signal.SIGQUIT)
    return proc.wait(timeout)


def records(path) -> list:
    """[(token, pid, time)] from a record file, in the order written."""
    out = []
    for line in harness.read_text(path).splitlines():
        token, pid, when = line.split()
        out.append((token, int(pid), float(when)))
    return out


def token_counts(path) -> collections.Counter:
    return collections.Counter(token for token, _, _ in records(path))


def wait_tokens(path, tokens, timeout: float, procs=()) -> collections.Counter:
    """Wait until every one of `tokens` was recorded at least once."""
    wanted = {str(t) for t in tokens}

    def complete():
        counts = token_counts(path)
        return counts if wanted <= set(counts) else None

    def explain():
        missing = sorted(wanted - set(token_counts(path)), key=lambda t: (len(t), t))
        outs = "\n".join("--- %s\n%s" % (p.args[2:], output(p)[-2000:]) for p in procs)
        return "%d missing, e.g. %s\n%s" % (len(missing), missing[:10], outs)

    return harness.wait_for(complete, timeout, "%d jobs to run" % len(wanted),
                            interval=0.05, on_fail=explain)


class ConsumerThread(threading.Thread):
    """A Consumer run in a thread of the test process, stopped at exit."""

    def __init__(self, consumer, max_jobs=None):
        super().__init__(daemon=True)
        self.consumer = consumer
        self.max_jobs = max_jobs
        self.ran = None

    def run(self):
        self.ran = self.consumer.run(max_jobs=self.max_jobs)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.consumer.stop()
        self.join(20)
        assert not self.is_alive(), "the consumer thread did not stop"
