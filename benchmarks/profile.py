#!/usr/bin/env python3
"""Where a pfm worker's time goes: one worker under load, under cProfile.

    .venv/bin/python benchmarks/profile.py [--workload hello] [--duration 10]
                                           [--connections 8] [--keepalive] [--top 25]

Starts pfm (pm = static, one worker) with PFM_PROFILE_DIR set in its
environment, so that its worker runs under cProfile and writes
worker-PID.prof when it stops gracefully; puts one nginx in front of it
(access_log off, a UNIX socket; --keepalive: upstream keepalive +
fastcgi_keep_conn on); loads it with wrk for --duration seconds; stops pfm with
SIGQUIT (graceful: the worker finishes and dumps its profile); and prints the
top entries by own time (tottime) and by cumulative time (cumtime), with
requests/s and the worker's CPU per request of the run. cProfile slows the
worker down several times over: read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import io
import pstats
import shutil
import signal
import sys
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import install, measure, nginx, report, wrk  # noqa: E402
from benchlib.peers import Ctx, start_pfm  # noqa: E402
from benchlib.procs import PROCS, log, on_exit, scratch_dir, unix_accepts, wait_for  # noqa: E402
from benchlib.workloads import WORKLOADS, answers  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", default="hello", choices=list(WORKLOADS))
    p.add_argument("--duration", type=float, default=10, help="seconds of load, whole (10)")
    p.add_argument("--connections", type=int, default=8, help="wrk connections (8)")
    p.add_argument("--keepalive", action="store_true",
                   help="nginx keeps its FastCGI connections (upstream keepalive 1)")
    p.add_argument("--preload", action="store_true", help="pfm preload = yes")
    p.add_argument("--top", type=int, default=25, help="entries per listing (25)")
    p.add_argument("--out", help="also copy the .prof file here")
    p.add_argument("--no-install", action="store_true", help="never run apt-get or pip")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs, logs and .prof")
    return p.parse_args(argv)


def listing(stats: pstats.Stats, key: str, top: int) -> str:
    buf = io.StringIO()
    stats.stream = buf
    stats.sort_stats(key).print_stats(top)
    text = buf.getvalue()
    # from the column header on: the preamble repeats the file name and totals
    start = text.find("   ncalls")
    return text[start:].rstrip() if start >= 0 else text.rstrip()


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    w = WORKLOADS[args.workload]
    install.ensure_apt(["nginx", "wrk"], not args.no_install)
    install.ensure_pip(["flask"] if w.name == "json" else [], not args.no_install)
    on_exit()
    with scratch_dir("pfm-profile-", args.keep_tmp) as tmp:
        profdir = tmp / "prof"
        profdir.mkdir()
        ctx = Ctx(tmp, workers=1, preload=args.preload)
        peer = start_pfm(ctx, "pfm", w, 1 if args.keepalive else 0,
                         env_extra={"PFM_PROFILE_DIR": str(profdir)})
        wait_for(f"pfm on {peer.socket}", lambda: unix_accepts(peer.socket), peer.proc,
                 peer.logs)
        ngx = nginx.start(tmp, [peer.site])
        wait_for(f"nginx -> pfm on port {peer.port}", lambda: answers(w, peer.port), ngx,
                 [tmp / "nginx-error.log"] + peer.logs)
        cpu0 = measure.tree_cpu(peer.proc.pid)
        log(f"loading pfm ({w.name}) for {args.duration:g} s at {args.connections} connections")
        res = wrk.parse(wrk.run(f"http://127.0.0.1:{peer.port}{w.path}", args.connections,
                                args.duration, 1, w.script))
        cpu1 = measure.tree_cpu(peer.proc.pid)
        PROCS.stop_one(ngx)
        # graceful stop: the worker returns from its loop and dumps the profile
        PROCS.stop_one(peer.proc, grace=20, first=signal.SIGQUIT)
        profs = sorted(profdir.glob("worker-*.prof"))
        if not profs:
            raise SystemExit(f"profile: no worker-*.prof in {profdir}; is this a pfm that "
                             f"reads PFM_PROFILE_DIR?\n")
        stats = pstats.Stats(*[str(p) for p in profs]).strip_dirs()
        worker_us = (cpu1.get("worker", 0) - cpu0.get("worker", 0)) * 1e6 / max(1, res.requests)
        text = [
            f"# pfm worker profile, {report.stamp()}", "",
            f"command: `{report.command_line('profile.py', argv)}`", "",
        ] + [f"- {x}" for x in report.machine_lines()] + [
            f"- pfm: {peer.version}, 1 worker, "
            + ("kept-alive FastCGI connection" if args.keepalive else "one connection per request"),
            f"- load: workload {w.name}, wrk {args.connections} connections, "
            f"{args.duration:g} s: {res.requests} requests, {res.rps:,.0f} req/s under the "
            f"profiler, errors {res.errors} / non-2xx {res.non2xx}; the worker's CPU "
            f"{worker_us:.0f} µs/request (profiled)",
            f"- profile: {', '.join(p.name for p in profs)}, {stats.total_calls:,} calls, "
            f"{stats.total_tt:.2f} s", "",
            f"## top {args.top} by tottime (own time)", "", "```",
            listing(stats, "tottime", args.top), "```", "",
            f"## top {args.top} by cumtime (with callees)", "", "```",
            listing(stats, "cumulative", args.top), "```",
        ]
        print("\n".join(text), flush=True)
        if args.out:
            shutil.copy(profs[0], args.out)
            log(f"copied {profs[0].name} to {args.out}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
