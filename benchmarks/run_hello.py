#!/usr/bin/env python3
"""Hello world behind one nginx: pfm and PHP-FPM side by side.

    .venv/bin/python benchmarks/run_hello.py [--duration 10] [--connections 8,64]
                                             [--workers 4] [--rounds 3]

Installs what is missing (Debian's php8.2-fpm, wrk and nginx, with apt-get),
then starts, in a fresh temporary directory and with config files of its own:

* PHP-FPM (`php-fpm8.2 -n -F -y php-fpm.conf`), pm = static, serving
  benchmarks/apps/hello.php;
* pfm (`python -m pfm -F -y pfm.conf`, on this script's interpreter),
  pm = static with the same worker count, serving benchmarks/apps/hello.py;
* one nginx (one worker, access_log off), one loopback port per backend, each
  forwarding with the stock `include fastcgi_params;` to the backend's UNIX
  socket.

Both applications answer the same 14 bytes. wrk runs against each port,
interleaved round by round so that both peers see the same machine, and the
table gives the median requests/s and p99 latency over the rounds, the errors,
and the CPU each backend's whole process tree spent per request (read from
/proc before and after every run; the steadiest figure on a shared machine).

Nothing outside the temporary directory is configured or started, and every
process the script starts is stopped on every way out (normal end, error,
Ctrl-C, SIGTERM, SIGHUP).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
# the machinery (processes, installs, nginx, wrk, /proc) is shared with suite.py; the
# path is put back as it was, for whoever imports this file (tests read parse_wrk)
sys.path.insert(0, str(HERE))
try:
    from benchlib import install, measure, nginx, report, wrk
    from benchlib.peers import Ctx, Peer, start_pfm, start_php_fpm
    from benchlib.procs import log, on_exit, scratch_dir, unix_accepts, wait_for
    from benchlib.workloads import WORKLOADS, answers
finally:
    sys.path.remove(str(HERE))

HELLO = WORKLOADS["hello"]


def _start_pfm(ctx: Ctx, args: argparse.Namespace) -> Peer:
    return start_pfm(ctx, "pfm", HELLO, ctx.keepalive)


def _start_pfm_base(ctx: Ctx, args: argparse.Namespace) -> Peer:
    """Another pfm source tree, to measure a change against (--pfm-base)."""
    base = Ctx(**{**ctx.__dict__, "pfm_src": Path(args.pfm_base).resolve()})
    return start_pfm(base, "pfm-base", HELLO, ctx.keepalive)


def _start_php_fpm(ctx: Ctx, args: argparse.Namespace) -> Peer:
    return start_php_fpm(ctx, "php-fpm", HELLO, ctx.keepalive)


STARTERS = {"php-fpm": _start_php_fpm, "pfm": _start_pfm, "pfm-base": _start_pfm_base}


@dataclass
class Run:
    peer: str
    connections: int
    rps: float
    p99_ms: float
    requests: int
    errors: int
    non2xx: int
    cpu_us: float = 0.0         # backend tree CPU per request
    nginx_us: float = 0.0       # nginx CPU per request
    roles_us: Dict[str, float] = field(default_factory=dict)   # cpu_us by process role


def parse_wrk(text: str) -> Tuple[float, float, int, int, int]:
    """(req/s, p99 ms, requests, socket errors, non-2xx) from wrk's output."""
    r = wrk.parse(text)
    return r.rps, r.p99_ms, r.requests, r.errors, r.non2xx


def measure_run(peer: Peer, ngx, connections: int, duration: float, threads: int) -> Run:
    cpu0, ng0 = measure.tree_cpu(peer.proc.pid), measure.tree_cpu(ngx.pid)
    out = wrk.run(f"http://127.0.0.1:{peer.port}/", connections, duration, threads)
    cpu1, ng1 = measure.tree_cpu(peer.proc.pid), measure.tree_cpu(ngx.pid)
    rps, p99, requests, errors, non2xx = parse_wrk(out)
    per = 1e6 / requests if requests else float("nan")
    roles = {name: (cpu1.get(name, 0.0) - cpu0.get(name, 0.0)) * per
             for name in ("master", "manager", "worker") if name in cpu1}
    return Run(peer.name, connections, rps, p99, requests, errors, non2xx,
               sum(roles.values()), (sum(ng1.values()) - sum(ng0.values())) * per, roles)


# ---- report -----------------------------------------------------------------------------


def machine_lines(peers: List[Peer]) -> List[str]:
    return report.machine_lines() + [f"{peer.name}: {peer.version}" for peer in peers]


def table(runs: List[Run], peers: List[str], connections: List[int]) -> List[str]:
    head = ("| peer | conns | req/s (median) | p99 latency | errors / non-2xx "
            "| backend CPU µs/req | nginx CPU µs/req | req/s ÷ php-fpm | CPU/req ÷ php-fpm |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in connections:
        medians = {}
        for name in peers:
            mine = [r for r in runs if r.peer == name and r.connections == c]
            if not mine:
                continue
            medians[name] = (
                statistics.median(r.rps for r in mine),
                statistics.median(r.p99_ms for r in mine),
                sum(r.errors for r in mine),
                sum(r.non2xx for r in mine),
                statistics.median(r.cpu_us for r in mine),
                statistics.median(r.nginx_us for r in mine),
            )
        for name in peers:
            if name not in medians:
                continue
            rps, p99, err, non2xx, cpu, ng = medians[name]
            ratio_rps = ratio_cpu = ""
            if name != "php-fpm" and "php-fpm" in medians:
                ratio_rps = f"{rps / medians['php-fpm'][0]:.2f}"
                ratio_cpu = f"{cpu / medians['php-fpm'][4]:.2f}"
            lines.append(f"| {name} | {c} | {rps:,.0f} | {p99:.2f} ms | {err} / {non2xx} "
                         f"| {cpu:.0f} | {ng:.0f} | {ratio_rps} | {ratio_cpu} |")
    return lines


def every_run(runs: List[Run]) -> List[str]:
    return [f"  {r.peer:8} c={r.connections:<4} {r.rps:10,.0f} req/s  p99 {r.p99_ms:7.2f} ms  "
            f"{r.requests:8} req  err {r.errors}/{r.non2xx}  cpu {r.cpu_us:6.0f} µs/req  "
            f"nginx {r.nginx_us:5.0f} µs/req  ("
            + ", ".join(f"{k} {v:.0f}" for k, v in r.roles_us.items()) + ")" for r in runs]


# ---- main -------------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    p.add_argument("--connections", default="8,64",
                   help="comma-separated wrk connection counts (8,64)")
    p.add_argument("--workers", type=int, default=4, help="workers of each backend (4)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (3)")
    p.add_argument("--threads", type=int, default=1,
                   help="wrk threads (1; leaves the cores to the servers)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per peer (2)")
    p.add_argument("--peers", default="php-fpm,pfm", help="which backends (php-fpm,pfm)")
    p.add_argument("--pfm-base", metavar="DIR",
                   help="also run pfm from this source tree (peer pfm-base), e.g. "
                        "`git archive REV | tar -x -C DIR`, to measure a change")
    p.add_argument("--php-opcache", action="store_true",
                   help="load PHP's OPcache into php-fpm (-n starts it without any "
                        "extension, as the suite's default)")
    p.add_argument("--keepalive", action="store_true",
                   help="nginx keeps its FastCGI connections (upstream keepalive + "
                        "fastcgi_keep_conn on) instead of one connection per request")
    p.add_argument("--results", default=str(HERE / "results"),
                   help="directory for the markdown table (benchmarks/results)")
    p.add_argument("--no-results", action="store_true", help="do not write a results file")
    p.add_argument("--no-install", action="store_true", help="never run apt-get")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temporary directory (configs and logs) for inspection")
    args = p.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    args.peers = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in args.peers if name not in STARTERS]
    if unknown or not args.peers:
        p.error(f"unknown peer(s) {unknown}; choose among {', '.join(STARTERS)}")
    if args.pfm_base:
        if not (Path(args.pfm_base) / "pfm" / "__main__.py").exists():
            p.error(f"--pfm-base {args.pfm_base}: not a pfm source tree")
        if "pfm-base" not in args.peers:
            args.peers.append("pfm-base")
    elif "pfm-base" in args.peers:
        p.error("the pfm-base peer needs --pfm-base DIR")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    needed = ["wrk", "nginx"] + (["php-fpm"] if "php-fpm" in args.peers else [])
    install.ensure_apt(needed, install=not args.no_install)
    on_exit()

    with scratch_dir("pfm-bench-", args.keep_tmp) as tmp:
        ctx = Ctx(tmp, workers=args.workers, preload=False,
                  keepalive=args.workers if args.keepalive else 0, php_opcache=args.php_opcache)
        peers = [STARTERS[name](ctx, args) for name in args.peers]
        for peer in peers:
            wait_for(f"{peer.name} on {peer.socket}", lambda p=peer: unix_accepts(p.socket),
                     peer.proc, peer.logs)
        ngx = nginx.start(tmp, [peer.site for peer in peers])
        for peer in peers:
            wait_for(f"nginx -> {peer.name} on port {peer.port}",
                     lambda p=peer: answers(HELLO, p.port), ngx,
                     [tmp / "nginx-error.log"] + peer.logs)
        header = machine_lines(peers)
        for line in header:
            log(line)
        if args.warmup > 0:
            for peer in peers:
                log(f"warm-up {peer.name}")
                wrk.run(f"http://127.0.0.1:{peer.port}/", max(args.connections), args.warmup,
                        args.threads)

        runs: List[Run] = []
        for rnd in range(args.rounds):
            order = peers if rnd % 2 == 0 else peers[::-1]
            for c in args.connections:
                for peer in order:
                    run = measure_run(peer, ngx, c, args.duration, args.threads)
                    runs.append(run)
                    log(f"round {rnd + 1}/{args.rounds}" + every_run([run])[0])
                    if peer.proc.poll() is not None:
                        raise SystemExit(f"run_hello: {peer.name} died "
                                         f"(status {peer.proc.returncode}); see {tmp}")

        mode = f"{args.workers} kept-alive FastCGI connections per backend" if args.keepalive else \
            "one FastCGI connection per request (nginx's default)"
        text = [
            f"# hello world, {report.stamp()}",
            "",
            f"command: `{report.command_line('run_hello.py', argv)}`",
            "",
            f"{args.workers} workers each (pm = static), {args.rounds} rounds of "
            f"{args.duration:g} s per peer and connection count, interleaved; wrk "
            f"{args.threads} thread(s); nginx 1 worker, {mode}, UNIX sockets; "
            f"php-fpm -n{' with OPcache' if args.php_opcache else ''}.",
            "",
        ] + [f"- {line}" for line in header] + [""] + table(runs, args.peers, args.connections)
        text += ["", "every run:", "", "```"] + every_run(runs) + ["```"]
        print("\n".join(text), flush=True)
        if not args.no_results:
            out = report.write(Path(args.results), "hello", "\n".join(text) + "\n")
            log(f"wrote {out}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
