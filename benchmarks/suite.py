#!/usr/bin/env python3
"""pfm against the servers it replaces, every workload, behind one nginx.

    .venv/bin/python benchmarks/suite.py [--quick] [--peers LIST] [--workloads LIST]
                                         [--duration S] [--rounds N] [--workers N]

Installs what is missing (Debian's nginx, wrk, php8.2-fpm, uwsgi-core with its
python3 plugin, by apt-get; flup6, gunicorn, Flask and matplotlib into the
running interpreter's virtualenv, by pip), then for each workload starts every
peer with the same number of workers, each on a UNIX socket, and one nginx
(one worker, access_log off, its own config, one loopback port per peer):

    nginx               `return 200` with the 14 bytes: the ceiling of the path
    php-fpm             php-fpm8.2 -n, pm = static, the workload's PHP twin
    php-fpm-keepalive   the same, nginx upstream keepalive + fastcgi_keep_conn on
    pfm                 python -m pfm, pm = static, preload = yes
    pfm-keepalive       the same, nginx upstream keepalive + fastcgi_keep_conn on
    uwsgi               uWSGI --fastcgi-socket --plugin python3 --thunder-lock
    flup                flup6's fcgi_fork prefork server (apps/flup_server.py)
    gunicorn            gunicorn sync workers, behind proxy_pass

wrk loads each peer's port at each connection count, the peers interleaved
round by round (the order reversed every other round); the tables give the
medians over the rounds. Every process started is stopped on every way out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import install, measure, nginx, report, wrk  # noqa: E402
from benchlib.peers import NEEDS, STARTERS, Ctx, Peer  # noqa: E402
from benchlib.procs import PROCS, log, on_exit, scratch_dir, unix_accepts, wait_for  # noqa: E402
from benchlib.workloads import WORKLOADS, Workload, answers  # noqa: E402

PEERS = ["nginx", "php-fpm", "php-fpm-keepalive", "pfm", "pfm-keepalive", "uwsgi", "flup",
         "gunicorn"]
HELLO = WORKLOADS["hello"]


@dataclass
class Run:
    workload: str
    peer: str
    connections: int
    result: wrk.WrkResult
    cpu_us: float = float("nan")     # backend tree CPU per request
    nginx_us: float = float("nan")   # nginx CPU per request
    roles_us: Dict[str, float] = field(default_factory=dict)


@dataclass
class Memory:
    per_worker_pss: float      # KiB, mean over the workers
    total_pss: float           # KiB, the whole tree
    per_worker_uss: float
    workers: int


def measure_run(w: Workload, peer: Peer, ngx, c: int, args) -> Run:
    cpu0 = measure.tree_cpu(peer.proc.pid) if peer.proc else {}
    ng0 = measure.tree_cpu(ngx.pid)
    out = wrk.run(f"http://127.0.0.1:{peer.port}{w.path}", c, args.duration, args.threads,
                  w.script)
    cpu1 = measure.tree_cpu(peer.proc.pid) if peer.proc else {}
    ng1 = measure.tree_cpu(ngx.pid)
    res = wrk.parse(out)
    per = 1e6 / res.requests if res.requests else float("nan")
    roles = {k: (cpu1.get(k, 0.0) - cpu0.get(k, 0.0)) * per
             for k in ("master", "manager", "worker") if k in cpu1}
    return Run(w.name, peer.name, c, res, sum(roles.values()) if peer.proc else float("nan"),
               (sum(ng1.values()) - sum(ng0.values())) * per, roles)


def run_line(rnd: str, r: Run) -> str:
    x = r.result
    roles = ", ".join(f"{k} {v:.0f}" for k, v in r.roles_us.items())
    return (f"{rnd} {r.workload:7} {r.peer:18} c={r.connections:<3} {x.rps:9,.0f} req/s  "
            f"p50 {x.p50_ms:7.2f} ms  p99 {x.p99_ms:7.2f} ms  {x.requests:7} req  "
            f"err {x.errors}/{x.non2xx}  cpu {r.cpu_us:5.0f} µs/req  "
            f"nginx {r.nginx_us:4.0f} µs/req" + (f"  ({roles})" if roles else ""))


def run_workload(tmp: Path, w: Workload, args, runs: List[Run], memory: Dict,
                 versions: Dict[str, str], notes: List[str]) -> None:
    wdir = tmp / w.name
    wdir.mkdir()
    ctx = Ctx(wdir, workers=args.workers, preload=not args.no_preload,
              keepalive=args.keepalive, php_opcache=args.php_opcache,
              pfm_base=Path(args.pfm_base).resolve() if args.pfm_base else None)
    names = [p for p in args.peers if p != "nginx" or w.ceiling]
    peers: List[Peer] = []
    ngx = None
    try:
        for name in names:
            peers.append(STARTERS[name](ctx, w))
        for peer in peers:
            if peer.proc is not None:
                wait_for(f"{peer.name} on {peer.socket}",
                         lambda p=peer: unix_accepts(p.socket), peer.proc, peer.logs, 30)
        ngx = nginx.start(wdir, [p.site for p in peers])
        for peer in peers:
            check = HELLO if peer.proc is None else w
            wait_for(f"nginx -> {peer.name} ({w.name}) on port {peer.port}",
                     lambda p=peer, c=check: answers(c, p.port), ngx,
                     [wdir / "nginx-error.log"] + peer.logs, 30)
            if peer.name == "uwsgi":
                text = (wdir / "uwsgi.out").read_text(errors="replace")
                if "thunder lock: enabled" not in text:
                    notes.append(f"{w.name}: uWSGI did not say `thunder lock: enabled`")
            versions.setdefault(peer.name, peer.version)
        if args.warmup > 0:
            for peer in peers:
                wrk.run(f"http://127.0.0.1:{peer.port}{w.path}", max(args.connections),
                        args.warmup, args.threads, w.script)
        live = list(peers)
        for rnd in range(args.rounds):
            order = live if rnd % 2 == 0 else live[::-1]
            for c in args.connections:
                for peer in list(order):
                    if peer not in live:
                        continue
                    run = measure_run(w, peer, ngx, c, args)
                    runs.append(run)
                    log(run_line(f"round {rnd + 1}/{args.rounds}", run))
                    if peer.proc is not None and peer.proc.poll() is not None:
                        notes.append(f"{w.name}: {peer.name} died (status "
                                     f"{peer.proc.returncode}) in round {rnd + 1}; see "
                                     f"{wdir} (kept)")
                        log(notes[-1])
                        args.keep_tmp = True
                        live.remove(peer)
        for peer in live:
            if peer.proc is None:
                continue
            mem = measure.tree_memory(peer.proc.pid)
            ws = mem["workers"]
            if ws:
                memory[(w.name, peer.name)] = Memory(
                    statistics.mean(x[1] for x in ws), mem["total_pss"],
                    statistics.mean(x[2] for x in ws), len(ws))
    finally:
        for peer in peers:
            if peer.proc is not None:
                PROCS.stop_one(peer.proc)
        if ngx is not None:
            PROCS.stop_one(ngx)


# ---- report -------------------------------------------------------------------------------


def medians(runs: List[Run]) -> Dict:
    """(workload, peer, conns) -> medians over the rounds, errors summed."""
    groups: Dict = {}
    for r in runs:
        groups.setdefault((r.workload, r.peer, r.connections), []).append(r)
    out = {}
    for key, rs in groups.items():
        def med(f, rs=rs):
            vals = [f(r) for r in rs]
            vals = [v for v in vals if v == v]
            return statistics.median(vals) if vals else float("nan")
        out[key] = {
            "rps": med(lambda r: r.result.rps), "p50": med(lambda r: r.result.p50_ms),
            "p99": med(lambda r: r.result.p99_ms), "cpu": med(lambda r: r.cpu_us),
            "nginx": med(lambda r: r.nginx_us),
            "errors": sum(r.result.errors for r in rs), "non2xx": sum(r.result.non2xx for r in rs),
            "slow": sum(max(r.result.slow, 0) for r in rs), "n": len(rs),
        }
    return out


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def ratio(a: float, b: Optional[float]) -> str:
    if b is None or not b or a != a or b != b:
        return ""
    return f"{a / b:.2f}"


def workload_table(w: str, med: Dict, memory: Dict, peers: List[str],
                   connections: List[int]) -> List[str]:
    lines = ["| peer | conns | req/s | p50 | p99 | errors / non-2xx | backend CPU µs/req "
             "| nginx CPU µs/req | PSS/worker MiB | PSS total MiB | req/s ÷ php-fpm "
             "| CPU ÷ php-fpm | req/s ÷ nginx |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in connections:
        php = med.get((w, "php-fpm", c))
        ceil = med.get((w, "nginx", c))
        for p in peers:
            m = med.get((w, p, c))
            if m is None:
                continue
            mem = memory.get((w, p))
            lines.append(
                f"| {p} | {c} | {m['rps']:,.0f} | {report.ms(m['p50'])} | {report.ms(m['p99'])} "
                f"| {m['errors']} / {m['non2xx']} | {report.fmt(m['cpu'])} "
                f"| {report.fmt(m['nginx'])} | {mib(mem.per_worker_pss) if mem else ''} "
                f"| {mib(mem.total_pss) if mem else ''} "
                f"| {ratio(m['rps'], php['rps']) if php and p != 'php-fpm' else ''} "
                f"| {ratio(m['cpu'], php['cpu']) if php and p != 'php-fpm' else ''} "
                f"| {ratio(m['rps'], ceil['rps']) if ceil and p != 'nginx' else ''} |")
    return lines


def overview(med: Dict, peers: List[str], workloads: List[str],
             connections: List[int]) -> List[str]:
    cols = [(w, c) for w in workloads for c in connections]
    lines = ["| peer | " + " | ".join(f"{w} c={c}" for w, c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for p in peers:
        cells = [med.get((w, p, c)) for w, c in cols]
        if not any(cells):
            continue
        lines.append(f"| {p} | " + " | ".join(f"{m['rps']:,.0f}" if m else "" for m in cells)
                     + " |")
    return lines


def chart(med: Dict, peers: List[str], workloads: List[str], connections: List[int],
          out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(workloads)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.2 * rows), squeeze=False)
    width = 0.8 / max(1, len(connections))
    for i, w in enumerate(workloads):
        ax = axes[i // cols][i % cols]
        shown = [p for p in peers if any((w, p, c) in med for c in connections)]
        for j, c in enumerate(connections):
            xs = [k + (j - (len(connections) - 1) / 2) * width for k in range(len(shown))]
            ys = [med.get((w, p, c), {}).get("rps", 0) for p in shown]
            bars = ax.bar(xs, ys, width, label=f"{c} connections", color=f"C{j}")
            for bar, p in zip(bars, shown):
                if p.startswith("pfm"):
                    bar.set_edgecolor("black")
                    bar.set_linewidth(1.2)
        # nginx alone is far above the rest: clip its bars and print its figure
        others = [med[(w, p, c)]["rps"] for p in shown if p != "nginx" for c in connections
                  if (w, p, c) in med]
        if "nginx" in shown and others:
            top = max(others) * 1.3
            ax.set_ylim(0, top)
            k = shown.index("nginx")
            best = max(med.get((w, "nginx", c), {}).get("rps", 0) for c in connections)
            if best > top:
                ax.text(k, top * 0.97, f"ceiling\n{best:,.0f}", ha="center", va="top",
                        fontsize=7, bbox=dict(facecolor="white", alpha=0.8, lw=0))
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels(shown, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{w}: {WORKLOADS[w].short}", fontsize=9)
        ax.set_ylabel("requests/s (median)")
        ax.grid(axis="y", alpha=0.3)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8, ncol=len(connections))
    fig.suptitle(title + " (pfm outlined)", fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(out, dpi=110)
    plt.close(fig)


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a short run: 2 s per wrk run, 1 round "
                        "(an explicit --duration/--rounds/--warmup wins)")
    p.add_argument("--peers", default=",".join(PEERS), help=f"({','.join(PEERS)})")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"({','.join(WORKLOADS)})")
    p.add_argument("--duration", type=float, help="seconds per wrk run, whole (5)")
    p.add_argument("--rounds", type=int, help="rounds; medians are reported (3)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per peer, whole; 0: none (1)")
    p.add_argument("--connections", default="8,64", help="wrk connection counts (8,64)")
    p.add_argument("--workers", type=int, default=4, help="workers of every backend (4)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--keepalive", type=int, default=0,
                   help="upstream keepalive connections of the *-keepalive peers "
                        "(default: the worker count)")
    p.add_argument("--pfm-base", metavar="DIR",
                   help="also run pfm from this source tree (peer pfm-base, after pfm), e.g. "
                        "`git archive REV | tar -x -C DIR`, to see how a change moves the figures")
    p.add_argument("--no-preload", action="store_true",
                   help="pfm preload = no, gunicorn without --preload, uWSGI --lazy-apps")
    p.add_argument("--php-opcache", action="store_true", help="load OPcache into php-fpm")
    p.add_argument("--note", action="append", default=[],
                   help="a line for the report's notes, e.g. what else the machine ran "
                        "(repeatable)")
    p.add_argument("--results", default=str(HERE / "results"),
                   help="directory of the markdown table and the chart (benchmarks/results)")
    p.add_argument("--latest", action="store_true",
                   help="also copy the table and chart to benchmarks/results-latest/")
    p.add_argument("--no-chart", action="store_true", help="no PNG (no matplotlib needed)")
    p.add_argument("--no-install", action="store_true", help="never run apt-get or pip")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    args = p.parse_args(argv)
    for name, quick, full in (("duration", 2.0, 5.0), ("rounds", 1, 3), ("warmup", 1.0, 1.0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    args.peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    args.workloads = [x.strip() for x in args.workloads.split(",") if x.strip()]
    bad = [x for x in args.peers if x not in STARTERS]
    if bad or not args.peers:
        p.error(f"unknown peer(s) {bad}; choose among {', '.join(STARTERS)}")
    if args.pfm_base:
        if not (Path(args.pfm_base) / "pfm" / "__main__.py").exists():
            p.error(f"--pfm-base {args.pfm_base}: not a pfm source tree")
        if "pfm-base" not in args.peers:
            args.peers.insert(args.peers.index("pfm") + 1 if "pfm" in args.peers
                              else len(args.peers), "pfm-base")
    elif "pfm-base" in args.peers:
        p.error("the pfm-base peer needs --pfm-base DIR")
    bad = [x for x in args.workloads if x not in WORKLOADS]
    if bad or not args.workloads:
        p.error(f"unknown workload(s) {bad}; choose among {', '.join(WORKLOADS)}")
    if args.rounds < 1 or args.duration <= 0 or args.workers < 1:
        p.error("--rounds, --duration and --workers must be positive")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    apt, pip = ["nginx", "wrk"], []
    for peer in args.peers:
        a, m = NEEDS.get(peer, ([], []))
        apt += a
        pip += m
    if "json" in args.workloads:
        pip.append("flask")
    if not args.no_chart:
        pip.append("matplotlib")
    install.ensure_apt(apt, not args.no_install)
    install.ensure_pip(pip, not args.no_install)
    on_exit()

    with scratch_dir("pfm-suite-", args.keep_tmp) as tmp:
        runs: List[Run] = []
        memory: Dict = {}
        versions: Dict[str, str] = {}
        notes: List[str] = list(args.note)
        header = report.machine_lines()
        for line in header:
            log(line)
        for name in args.workloads:
            log(f"workload {name}: {WORKLOADS[name].about}")
            run_workload(tmp, WORKLOADS[name], args, runs, memory, versions, notes)

        notes.append("load average at the end: "
                     + " ".join(f"{x:.2f}" for x in os.getloadavg())
                     + f" (nproc {len(os.sched_getaffinity(0))})")
        med = medians(runs)
        peers = [p for p in args.peers if p in versions]
        when = report.stamp()
        text = [
            f"# pfm benchmark suite, {when}", "",
            f"command: `{report.command_line('suite.py', argv)}`", "",
            f"{args.workers} workers per backend, {args.rounds} round(s) of {args.duration:g} s "
            f"per peer, workload and connection count, peers interleaved; wrk "
            f"{args.threads} thread(s), {args.warmup:g} s warm-up per peer; one nginx "
            "(1 worker, access_log off), UNIX sockets to the backends; *-keepalive: upstream "
            f"keepalive {args.keepalive or args.workers} + fastcgi_keep_conn on; "
            f"preload {'off' if args.no_preload else 'on'} (pfm, gunicorn, uWSGI).", "",
        ] + [f"- {x}" for x in header] + [f"- {p}: {versions[p]}" for p in peers]
        text += ["", "Medians of requests/s:", ""]
        text += overview(med, peers, args.workloads, args.connections)
        for name in args.workloads:
            text += ["", f"## {name}: {WORKLOADS[name].about}", ""]
            text += workload_table(name, med, memory, peers, args.connections)
        if notes:
            text += ["", "Notes:", ""] + [f"- {n}" for n in notes]
        text += ["", "Every run:", "", "```"] + [run_line("", r) for r in runs] + ["```"]
        body = "\n".join(text) + "\n"
        print(body, flush=True)
        out = report.write(Path(args.results), "suite", body)
        log(f"wrote {out}")
        outs = [out]
        if not args.no_chart:
            png = out.with_suffix(".png")
            chart(med, peers, args.workloads, args.connections, png,
                  f"pfm suite {when}: requests/s by peer and connections "
                  f"({args.workers} workers, nproc {len(os.sched_getaffinity(0))})")
            log(f"wrote {png}")
            outs.append(png)
        if args.latest:
            latest = HERE / "results-latest"
            latest.mkdir(exist_ok=True)
            for f in outs:
                shutil.copy(f, latest / ("suite" + f.suffix))
            log(f"copied to {latest}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
