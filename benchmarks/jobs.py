#!/usr/bin/env python3
"""pfm's job queue beside rq and huey: what an enqueue costs, how many jobs a second.

    .venv/bin/python benchmarks/jobs.py [--quick] [--jobs N] [--consumers 1,2]
                                        [--rounds N] [--peers LIST] [--keep-tmp]

Installs what is missing (Debian's redis-server with apt-get; rq and huey
with pip into the running interpreter's environment: benchmark-only, pfm never
imports them), then starts its own redis-server on a UNIX socket in a fresh
temporary directory (no persistence) and, for every peer, round by round so
that all peers see the same machine:

1. enqueues --jobs trivial jobs (benchmarks/apps/jobpeers.py:noop) from this
   process with nothing consuming: the wall time of one call is the cost an
   enqueue adds to a web request. A plain redis-py LPUSH to the same server is
   the reference (pfm's aim: less than LPUSH + 50 µs);
2. starts N consumer processes (huey: one consumer with N worker processes)
   and times the queue from its first job taken to empty (start-up excluded;
   at most --budget seconds, which only rq's forking Worker needs): jobs per
   second, and the CPU the consumers' process trees and redis-server spent
   per job (read from /proc; the steadiest figure on a shared machine).

Peers: pfm on SQLite and on Redis; rq's default Worker (forks one child per
job) and its SimpleWorker (no fork), both on Redis; huey on SQLite and on
Redis. Each Redis peer has a database of its own. Every process started is
stopped on every way out, and the directory removed (--keep-tmp keeps it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "apps"))

from benchlib import install, measure, report  # noqa: E402
from benchlib.procs import PROCS, log, on_exit, scratch_dir, tail, wait_for  # noqa: E402

PEERS = ["pfm-sqlite", "pfm-redis", "rq", "rq-simple", "huey-sqlite", "huey-redis"]
REDIS_DB = {"pfm-redis": 1, "rq": 2, "rq-simple": 2, "huey-redis": 3}
LPUSH = "redis LPUSH (reference)"


@dataclass
class Samples:
    # per round, medians over its batches: wall µs per enqueue, and its excess
    # over the LPUSH batch just before it; the same for this process's CPU and
    # redis-server's CPU
    enqueue_us: List[float] = field(default_factory=list)
    over_lpush_us: List[float] = field(default_factory=list)
    client_cpu_us: List[float] = field(default_factory=list)
    client_over_lpush_us: List[float] = field(default_factory=list)
    server_over_lpush_us: List[float] = field(default_factory=list)
    rate: Dict[int, List[float]] = field(default_factory=dict)
    cpu_us: Dict[int, List[float]] = field(default_factory=dict)
    server_us: Dict[int, List[float]] = field(default_factory=dict)


class Redis:
    """Our own redis-server: a UNIX socket in the temporary directory, nothing saved."""

    def __init__(self, tmp: Path):
        self.socket = tmp / "redis.sock"
        self.proc = PROCS.start("redis-server", [
            "/usr/bin/redis-server", "--port", "0", "--unixsocket", str(self.socket),
            "--unixsocketperm", "700", "--dir", str(tmp), "--save", "", "--appendonly", "no",
            "--logfile", str(tmp / "redis.log")], tmp / "redis.out")
        wait_for("redis-server", self.socket.exists, self.proc, [tmp / "redis.log"])
        import redis
        self.client = redis.Redis.from_url(self.url(0))

    def url(self, db: int, scheme: str = "unix") -> str:
        return "%s://%s?db=%d" % (scheme, self.socket, db)

    def command_usec(self) -> int:
        """Microseconds redis-server spent in commands so far (INFO commandstats,
        finer than /proc's 10 ms ticks; INFO itself left out)."""
        stats = self.client.info("commandstats")
        return sum(v["usec"] for k, v in stats.items() if k != "cmdstat_info")

    def cpu(self) -> float:
        """redis-server's CPU seconds (one process: /proc/PID/stat, cheap to read)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / measure.CLK_TCK


class Peer:
    """How to enqueue `noop`, count what is left, and start consumers, for one peer."""

    def __init__(self, name: str, tmp: Path, redis: Redis, run: int):
        self.name, self.kind = name, name.split("-")[0]
        backend = "sqlite" if name.endswith("sqlite") else "redis"
        if backend == "sqlite":  # a fresh file per run
            path = tmp / ("%s-%d.sqlite3" % (name, run))
            self.target = ("sqlite://%s" % path) if self.kind == "pfm" else "sqlite:%s" % path
        else:
            db = REDIS_DB[name]
            scheme = "redis+unix" if self.kind == "pfm" else "unix"
            self.target = redis.url(db, scheme)
            import redis as redis_py
            redis_py.Redis.from_url(redis.url(db)).flushdb()
        self.enqueue, self.remaining = self._client()

    def _client(self):
        import jobpeers
        if self.kind == "pfm":
            from pfm import jobs
            backend = jobs.open_backend(self.target)

            def left() -> int:
                return sum(s.ready + s.running + s.delayed for s in backend.stats()
                           if s.queue == jobpeers.QUEUE)
            return (lambda: jobs.enqueue(jobpeers.noop, queue=jobpeers.QUEUE,
                                         url=self.target)), left
        if self.kind == "rq":
            from redis import Redis as Client
            from rq import Queue
            from rq.registry import StartedJobRegistry
            queue = Queue(jobpeers.QUEUE, connection=Client.from_url(self.target))
            started = StartedJobRegistry(queue=queue)
            return (lambda: queue.enqueue(jobpeers.noop)), (lambda: queue.count + started.count)
        huey, task = jobpeers.huey_app(self.target)
        return task, huey.pending_count

    def consumers(self, n: int, tmp: Path) -> List[subprocess.Popen]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE / "apps"), str(ROOT)]))
        # imported, not run as __main__: huey names tasks after their module
        argv = [sys.executable, "-c", "import sys, jobpeers; jobpeers.main(sys.argv[1:])",
                self.kind if self.kind != "rq" else self.name, self.target]
        if self.kind == "huey":
            return [PROCS.start(self.name, argv + [str(n)], tmp / (self.name + ".log"), env=env)]
        return [PROCS.start(self.name, argv + ["1"], tmp / (self.name + ".log"), env=env)
                for _ in range(n)]


def timed_calls(call: Callable[[], object], count: int, redis: Redis) -> tuple:
    """(wall, this process's CPU, redis-server's time in commands) in µs per call."""
    server = redis.command_usec()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / count * 1e6, cpu / count * 1e6, (redis.command_usec() - server) / count


def enqueues(peer: Peer, lpush: Callable[[], object], count: int, redis: Redis,
             s: Samples, ref: Samples, batches: int = 10) -> None:
    """`count` enqueues in batches, each right after a batch of LPUSHes, so
    that every difference is taken at one moment of a noisy machine."""
    per = max(1, count // batches)
    rows = []
    for _ in range(batches):
        rows.append(timed_calls(lpush, per, redis) + timed_calls(peer.enqueue, per, redis))
    med = statistics.median
    ref.enqueue_us.append(med(r[0] for r in rows))
    ref.client_cpu_us.append(med(r[1] for r in rows))
    s.enqueue_us.append(med(r[3] for r in rows))
    s.client_cpu_us.append(med(r[4] for r in rows))
    s.over_lpush_us.append(med(r[3] - r[0] for r in rows))
    s.client_over_lpush_us.append(med(r[4] - r[1] for r in rows))
    s.server_over_lpush_us.append(med(r[5] - r[2] for r in rows))


def drain(peer: Peer, n: int, jobs: int, budget: float, tmp: Path, redis: Redis,
          s: Samples) -> None:
    """Start n consumers on a full queue; time it from the first job taken to
    empty, or for `budget` seconds at most (rq's forking Worker is slow)."""
    procs = peer.consumers(n, tmp)
    try:
        deadline = time.monotonic() + 120
        while (left := peer.remaining()) >= jobs:
            _check_alive(peer, procs, deadline, tmp)
            time.sleep(0.002)
        t0, cpu0, srv0 = time.perf_counter(), _cpu(procs), redis.cpu()
        while (remaining := peer.remaining()) > 0 and time.perf_counter() - t0 < budget:
            _check_alive(peer, procs, deadline, tmp)
            time.sleep(0.002)
        elapsed, cpu1, srv1 = time.perf_counter() - t0, _cpu(procs), redis.cpu()
    finally:
        for proc in procs:
            PROCS.stop_one(proc)
    done = left - remaining
    s.rate.setdefault(n, []).append(done / elapsed)
    s.cpu_us.setdefault(n, []).append((cpu1 - cpu0) / done * 1e6)
    s.server_us.setdefault(n, []).append((srv1 - srv0) / done * 1e6)


def _cpu(procs: List[subprocess.Popen]) -> float:
    return sum(sum(measure.tree_cpu(p.pid).values()) for p in procs)


def _check_alive(peer: Peer, procs, deadline: float, tmp: Path) -> None:
    dead = [p for p in procs if p.poll() is not None]
    if dead or time.monotonic() > deadline:
        why = "a consumer exited" if dead else "120 s passed"
        raise SystemExit("%s: %s\n%s" % (peer.name, why, tail([tmp / (peer.name + ".log")])))


def run(args: argparse.Namespace, tmp: Path) -> Dict[str, Samples]:
    import redis as redis_py
    redis = Redis(tmp)
    lpush = redis_py.Redis.from_url(redis.url(0))
    results: Dict[str, Samples] = {name: Samples() for name in [LPUSH] + args.peers}
    runs = 0
    for round_ in range(1, args.rounds + 1):
        for n in args.consumers:
            log("round %d of %d, %d consumer(s)" % (round_, args.rounds, n))
            for name in args.peers:
                runs += 1
                peer = Peer(name, tmp, redis, runs)
                enqueues(peer, lambda: lpush.lpush("lpush", "x"), args.jobs, redis,
                         results[name], results[LPUSH])
                lpush.delete("lpush")
                drain(peer, n, args.jobs, args.budget, tmp, redis, results[name])
    return results


def render(results: Dict[str, Samples], args: argparse.Namespace) -> List[str]:
    med = statistics.median
    ref = results[LPUSH]
    out = ["## enqueue: µs per call from this process, nothing consuming (median)", "",
           "Wall time is what an enqueue adds to a request; each peer's batches alternate "
           "with LPUSH batches, and the differences are taken pair by pair. CPU: this "
           "process's (the web worker's); redis-server's time in commands (INFO "
           "commandstats; Lua scripts included, protocol parsing not).", "",
           "| peer | wall µs | wall minus LPUSH | client CPU µs | client CPU minus LPUSH "
           "| redis-server µs in commands minus LPUSH's |", "|---|---:|---:|---:|---:|---:|",
           "| %s | %.1f | | %.1f | | |" % (LPUSH, med(ref.enqueue_us), med(ref.client_cpu_us))]
    for name in args.peers:
        s = results[name]
        server = ("%+.1f" % med(s.server_over_lpush_us)) if name in REDIS_DB else ""
        out.append("| %s | %.1f | %+.1f | %.1f | %+.1f | %s |" % (
            name, med(s.enqueue_us), med(s.over_lpush_us), med(s.client_cpu_us),
            med(s.client_over_lpush_us), server))
    cols = args.consumers
    out += ["", "## throughput: jobs/s from the first job taken to an empty queue (median); "
            "CPU µs per job of the consumers and of redis-server", "",
            "| peer | " + " | ".join("%d consumer%s jobs/s" % (n, "s" * (n > 1)) for n in cols)
            + " | " + " | ".join("CPU µs/job (%d)" % n for n in cols)
            + " | redis-server µs/job |",
            "|---|" + "---:|" * (2 * len(cols) + 1)]
    for name in args.peers:
        s = results[name]
        server = med(s.server_us[cols[0]]) if name in REDIS_DB else None
        out.append("| %s | " % name
                   + " | ".join(report.fmt(med(s.rate[n])) for n in cols) + " | "
                   + " | ".join(report.fmt(med(s.cpu_us[n])) for n in cols) + " | "
                   + (report.fmt(server) if server is not None else "") + " |")
    return out


def versions() -> str:
    import huey
    import redis
    import rq
    server = subprocess.run(["/usr/bin/redis-server", "--version"], capture_output=True,
                            text=True).stdout.split()
    return "tools: redis-server %s, redis-py %s, rq %s, huey %s" % (
        next((w[2:] for w in server if w.startswith("v=")), "?"), redis.__version__,
        rq.__version__, huey.__version__)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="500 jobs, 1 round, 1 consumer")
    p.add_argument("--jobs", type=int, default=2000, help="jobs per run (default 2000)")
    p.add_argument("--consumers", default="1,2", help="consumer processes (default 1,2)")
    p.add_argument("--budget", type=float, default=15.0,
                   help="longest time a queue is drained for, in seconds (default 15)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--peers", default=",".join(PEERS), help="default: " + ",".join(PEERS))
    p.add_argument("--results", default=str(HERE / "results"),
                   help="directory of the markdown copy (benchmarks/results)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory")
    p.add_argument("--no-install", action="store_true", help="fail instead of installing")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.rounds, args.consumers = 500, 1, "1"
    args.consumers = [int(n) for n in args.consumers.split(",")]
    args.peers = args.peers.split(",")
    unknown = set(args.peers) - set(PEERS)
    if unknown or args.jobs < 1 or args.rounds < 1 or min(args.consumers) < 1:
        p.error("unknown peers %s" % sorted(unknown) if unknown
                else "--jobs, --rounds and --consumers must be positive")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    install.ensure_apt(["redis-server"], not args.no_install)
    install.ensure_pip(["rq", "huey"], not args.no_install)
    on_exit()
    with scratch_dir("pfm-jobs-", args.keep_tmp) as tmp:
        text = ["# pfm's job queue beside rq and huey, %s" % report.stamp(), "",
                "command: `%s`" % report.command_line("jobs.py", argv), ""]
        text += ["- " + line for line in report.machine_lines(tools=False)] + ["- " + versions()]
        text += ["- %d jobs per run, %d round(s), consumers %s" % (
            args.jobs, args.rounds, ",".join(map(str, args.consumers))), ""]
        text += render(run(args, tmp), args)
        body = "\n".join(text) + "\n"
        print(body, flush=True)
        log("wrote %s" % report.write(Path(args.results), "jobs", body))
        return 0


if __name__ == "__main__":
    sys.exit(main())
