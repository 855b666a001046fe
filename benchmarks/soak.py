#!/usr/bin/env python3
"""The soak and fault suite for minutes: does pfm lose anything?

    .venv/bin/python benchmarks/soak.py [--duration S] [--scenarios LIST] [--seed N]
                                        [--keep-tmp] [--results DIR] [--no-install]

Runs the scenarios of tests/soakrig.py (the same code tests/test_soak.py
runs for 10 s each in CI), each for --duration seconds (120): real pfm (a
dynamic pool, pm.max_requests 10 to 13) behind real nginx, five clients
sending GETs and POSTs of 0 to 300 KB whose bodies are checked byte for byte
(SHA-256), and the scenario's faults meanwhile, bounded by the duration:

  mixed, mixed-keepalive        none: recycling alone, without and with fastcgi_keep_conn
  sigkill, sigkill-keepalive    SIGKILL of a random worker every 0.4-1.2 s, mostly busy ones
  reload, reload-keepalive      USR2 in bursts of 2-4, USR1 between the bursts
  logfull                       error and access logs on a full 2 MiB tmpfs, USR1 while full
                                (after a logrotate-style rename), then space again
  slowpeers-unix, -tcp          6 silent, 2 trickling (a byte a second) and 2 non-reading
                                (GET_VALUES flood) clients on the pool's own socket

The table counts every request: failed, explained by the faults (only a
request in flight in a SIGKILLed worker may fail) and unexplained; latency
p99 and max; the master's and the pool manager's RSS and open descriptors
after warm-up and at the end, once the pool has settled. Below it, each
unexplained failure with what nginx and pfm logged about it. A request
slower than 10 s (3 s in the slow-peer scenarios: issue 9's "a few seconds")
counts as failed. The exit status is 1 when anything is unexplained or grew.

Runs as root (the log-full scenario mounts a tmpfs); everything lives in a
fresh temporary directory and every process is stopped on every way out.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests"), str(HERE.parent)]

import harness  # noqa: E402
import soakrig  # noqa: E402
from benchlib import install, report  # noqa: E402
from benchlib.peers import source_revision  # noqa: E402
from benchlib.procs import log, on_exit, scratch_dir  # noqa: E402

COLUMNS = ["scenario", "requests", "failed", "explained", "unexplained", "p99 s", "max s",
           "faults", "master", "manager"]
HEADINGS = ["scenario", "requests", "failed", "explained by faults", "unexplained", "p99 s",
            "max s", "faults injected", "master RSS/fds start -> end",
            "manager RSS/fds start -> end"]


def budget_for(duration: float) -> soakrig.Budget:
    """Bounded by the duration rather than by count (the CI test bounds both)."""
    n = int(duration) + 1
    return soakrig.Budget(kills=2 * n, reload_bursts=n, usr1=n)


def table(results: List[soakrig.Result]) -> List[str]:
    rows = [r.row() for r in results]
    lines = ["| " + " | ".join(HEADINGS) + " |",
             "|---|" + "---:|" * 6 + "---|---|---|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    return lines


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=120.0, help="seconds per scenario (120)")
    p.add_argument("--scenarios", default=",".join(soakrig.SCENARIOS),
                   help="comma-separated (all: %s)" % ",".join(soakrig.SCENARIOS))
    p.add_argument("--seed", type=int, help="random seed (a new one each run)")
    p.add_argument("--results", default=str(HERE / "results"),
                   help="directory of the markdown copy (benchmarks/results)")
    p.add_argument("--no-install", action="store_true", help="never run apt-get")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    args = p.parse_args(argv)
    args.scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    bad = [x for x in args.scenarios if x not in soakrig.SCENARIOS]
    if bad or not args.scenarios:
        p.error("unknown scenario(s) %s; choose among %s" % (bad, ", ".join(soakrig.SCENARIOS)))
    if args.duration < 5:
        p.error("--duration must be at least 5 s")
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    install.ensure_apt(["nginx"], not args.no_install)
    on_exit()
    revision = source_revision(HERE.parent)     # the code measured, before it can change
    results = []
    with scratch_dir("pfm-soak-", args.keep_tmp) as tmp:
        try:
            for i, name in enumerate(args.scenarios):
                log("%s: %.0f s ..." % (name, args.duration))
                soak = soakrig.Soak(soakrig.SCENARIOS[name], tmp / name, args.duration,
                                    seed=args.seed + i, budget=budget_for(args.duration))
                results.append(soak.run())
                log(results[-1].report().splitlines()[0])
        finally:
            leftovers = harness.kill_session_leftovers()
            if leftovers:
                log("killed leftover processes: %r" % leftovers)
    text = ["# pfm soak and fault suite, %s" % report.stamp(), "",
            "command: `%s`" % report.command_line("soak.py", argv), ""]
    text += ["- %s" % x for x in report.machine_lines(tools=False)]
    text += ["- pfm: %s (%s), seed %d" % (HERE.parent, revision, args.seed),
             "- pool: %s" % ", ".join("%s = %s" % kv for kv in soakrig.POOL.items()), ""]
    text += table(results) + [""]
    for r in results:
        text += ["## %s: %s" % (r.scenario.name, r.scenario.what), "", "```",
                 r.report(), "```", ""]
    body = "\n".join(text) + "\n"
    print(body, flush=True)
    out = report.write(Path(args.results), "soak", body)
    log("wrote %s" % out)
    return 1 if any(r.problems() for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
