#!/usr/bin/env python3
"""How pfm's pools behave beside php-fpm's: bursts, cold starts, memory, keep-alive.

    .venv/bin/python benchmarks/pools.py [--quick] [--only burst,coldstart,memory,starvation]
                                         [--rounds N]

Each benchmark starts its peers in a temporary directory behind one nginx
(access_log off, UNIX sockets), as suite.py does, and stops every process it
started on every way out:

burst       pm = dynamic, max_children 8, start_servers 1, min/max_spare 1/3,
            the same for pfm and php-fpm: 8 requests that each sleep 8 s arrive
            at once; how long until the pool has 8 workers (counted in /proc
            every 5 ms), and how much longer than 8 s the slowest request took.
coldstart   pm = ondemand, max_children 4, process_idle_timeout 2 s, the Flask
            app (php-fpm: json.php): once the pool is back to zero workers, the
            latency of the first request, then of a second one right after it.
            pfm with preload = no (each worker imports Flask) and = yes (a fork).
memory      pm = static, 4 workers of the Flask app, after 2 s of load: PSS,
            USS and RSS per worker and the pool's total PSS, pfm with preload no
            and yes, beside uWSGI (app loaded in its master) and php-fpm.
starvation  pm = static, 2 workers, a fast app (hello), 8 wrk connections; nginx
            with upstream keepalive 16 + fastcgi_keep_conn on, and without:
            requests slower than 500 ms (from wrk's full latency record), p99, max.
uploads     one worker (pfm, uWSGI) answering 1 MiB POSTs with their SHA-256:
            its RSS and PSS after 10, 100, 250, 500 and 1,000 uploads (flat or not).
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import install, measure, nginx, report, wrk  # noqa: E402
from benchlib.peers import Ctx, Peer, start_pfm, start_php_fpm, start_uwsgi  # noqa: E402
from benchlib.procs import PROCS, log, on_exit, scratch_dir, unix_accepts, wait_for  # noqa: E402
from benchlib.workloads import WORKLOADS, Workload, answers  # noqa: E402

BENCHES = ["burst", "coldstart", "memory", "starvation", "uploads"]


# ---- helpers --------------------------------------------------------------------------------


def get(port: int, path: str, timeout: float = 30.0) -> float:
    """Seconds one GET through nginx took; fails on anything but a 200."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: status {resp.status}")
    finally:
        conn.close()
    return time.monotonic() - t0


def worker_count(peer: Peer) -> int:
    return len(measure.workers(peer.proc.pid))


def wait_workers(peer: Peer, test: Callable[[int], bool], what: str,
                 timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = worker_count(peer)
        if test(n):
            return n
        if peer.proc.poll() is not None:
            raise SystemExit(f"pools: {peer.name} exited ({peer.proc.returncode})")
        time.sleep(0.05)
    raise SystemExit(f"pools: {peer.name}: {what} not reached in {timeout:g} s "
                     f"({worker_count(peer)} workers)")


def up(tmp: Path, peers: List[Peer], w: Optional[Workload], check: bool = True):
    """Wait for the backends' sockets, start nginx, check one answer from each."""
    for peer in peers:
        wait_for(f"{peer.name} on {peer.socket}",
                 (lambda p=peer: unix_accepts(p.socket)) if check else
                 (lambda p=peer: p.socket.exists()), peer.proc, peer.logs, 30)
    ngx = nginx.start(tmp, [p.site for p in peers])
    if check:
        for peer in peers:
            wait_for(f"nginx -> {peer.name}", lambda p=peer: answers(w, p.port), ngx,
                     [tmp / "nginx-error.log"] + peer.logs, 30)
    else:
        wait_for("nginx", lambda: (tmp / "nginx.pid").exists(), ngx,
                 [tmp / "nginx-error.log"], 15)
        time.sleep(0.3)
    return ngx


def down(peers: List[Peer], ngx) -> None:
    for peer in peers:
        if peer.proc is not None:
            PROCS.stop_one(peer.proc)
    if ngx is not None:
        PROCS.stop_one(ngx)


def med(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_s(values: List[float], unit: str = "ms") -> str:
    if not values:
        return ""
    k = 1000.0 if unit == "ms" else 1.0
    m = med(values) * k
    lo, hi = min(values) * k, max(values) * k
    return f"{m:,.0f} {unit} ({lo:,.0f}–{hi:,.0f})" if len(values) > 1 else f"{m:,.0f} {unit}"


# ---- burst ----------------------------------------------------------------------------------


BURST_CHILDREN = 8
BURST_SLEEP_MS = 8000
DYNAMIC = ("pm.start_servers = 1\npm.min_spare_servers = 1\npm.max_spare_servers = 3\n")


def burst_once(tmp: Path, name: str) -> Dict[str, float]:
    w = WORKLOADS["sleep"]
    ctx = Ctx(tmp, workers=BURST_CHILDREN, preload=False, pm="dynamic", pm_lines=DYNAMIC)
    peer = (start_pfm(ctx, name, w) if name == "pfm" else start_php_fpm(ctx, name, w))
    peers, ngx = [peer], None
    try:
        ngx = up(tmp, peers, w)
        # settle at start_servers / min_spare (the check request may have added one)
        wait_workers(peer, lambda n: n <= 2, "at most 2 workers", 30)
        time.sleep(1.5)
        before = worker_count(peer)
        latencies: List[float] = []
        errors: List[str] = []
        gate = threading.Barrier(BURST_CHILDREN + 1)

        def client():
            gate.wait()
            try:
                latencies.append(get(peer.port, f"{w.path}?ms={BURST_SLEEP_MS}", 60))
            except Exception as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=client, daemon=True) for _ in range(BURST_CHILDREN)]
        for t in threads:
            t.start()
        gate.wait()
        t0 = time.monotonic()
        full = float("nan")
        most = 0
        deadline = t0 + BURST_SLEEP_MS / 1000.0 + 20
        while time.monotonic() < deadline:
            n = worker_count(peer)
            most = max(most, n)
            if n >= BURST_CHILDREN:
                full = time.monotonic() - t0
                break
            if not any(t.is_alive() for t in threads):
                break
            time.sleep(0.005)
        for t in threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        return {"before": before, "full": full, "most": most, "errors": len(errors),
                "slowest": max(latencies) if latencies else float("nan"),
                "answered": len(latencies)}
    finally:
        down(peers, ngx)


def bench_burst(tmp: Path, args) -> List[str]:
    rows: Dict[str, List[Dict[str, float]]] = {"php-fpm": [], "pfm": []}
    for rnd in range(args.rounds):
        for name in (["php-fpm", "pfm"] if rnd % 2 == 0 else ["pfm", "php-fpm"]):
            d = tmp / f"burst-{name}-{rnd}"
            d.mkdir()
            r = burst_once(d, name)
            rows[name].append(r)
            log(f"burst round {rnd + 1}: {name}: {r}")
    out = [f"## burst: {BURST_CHILDREN} requests of {BURST_SLEEP_MS} ms at once, pm = dynamic "
           f"(max_children {BURST_CHILDREN}, start_servers 1, min/max_spare_servers 1/3)", "",
           "| peer | workers before | most workers seen | time to max_children "
           f"| slowest request − {BURST_SLEEP_MS} ms | answered / errors |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, rs in rows.items():
        full = [r["full"] for r in rs if r["full"] == r["full"]]
        extra = [r["slowest"] - BURST_SLEEP_MS / 1000.0 for r in rs if r["slowest"] == r["slowest"]]
        never = sum(1 for r in rs if r["full"] != r["full"])
        out.append(f"| {name} | {med([r['before'] for r in rs]):.0f} "
                   f"| {max(r['most'] for r in rs)} | {fmt_s(full)}"
                   f"{f' (never reached: {never})' if never else ''} | {fmt_s(extra)} "
                   f"| {sum(r['answered'] for r in rs)} / {sum(r['errors'] for r in rs)} |")
    out += ["", f"Medians over {args.rounds} round(s), (min–max); each round starts a fresh "
            "pool. Workers are counted in /proc every 5 ms (a worker counts once forked)."]
    return out


# ---- cold start -----------------------------------------------------------------------------


def coldstart_peers(tmp: Path) -> List[Peer]:
    w = WORKLOADS["json"]
    lines = "pm.process_idle_timeout = 2s\n"
    peers = []
    for name, preload in (("pfm preload=no", False), ("pfm preload=yes", True)):
        ctx = Ctx(tmp, workers=4, preload=preload, pm="ondemand", pm_lines=lines)
        peers.append(start_pfm(ctx, name.replace(" ", "-").replace("=", "-"), w))
        peers[-1].name = name
    ctx = Ctx(tmp, workers=4, pm="ondemand", pm_lines=lines)
    peers.append(start_php_fpm(ctx, "php-fpm", w))
    return peers


def bench_coldstart(tmp: Path, args) -> List[str]:
    w = WORKLOADS["json"]
    peers = coldstart_peers(tmp)
    ngx = None
    cold: Dict[str, List[float]] = {p.name: [] for p in peers}
    warm: Dict[str, List[float]] = {p.name: [] for p in peers}
    try:
        ngx = up(tmp, peers, w, check=False)
        for peer in peers:   # a first request each, not counted: the pools are up
            get(peer.port, w.path)
        for rnd in range(args.rounds):
            for peer in (peers if rnd % 2 == 0 else peers[::-1]):
                wait_workers(peer, lambda n: n == 0, "zero workers", 30)
                time.sleep(0.2)
                cold[peer.name].append(get(peer.port, w.path))
                warm[peer.name].append(get(peer.port, w.path))
                log(f"coldstart round {rnd + 1}: {peer.name}: first "
                    f"{cold[peer.name][-1] * 1000:.1f} ms, "
                    f"then {warm[peer.name][-1] * 1000:.1f} ms")
    finally:
        down(peers, ngx)
    out = ["## coldstart: pm = ondemand, first response from zero workers", "",
           "Flask app (`GET /json`; php-fpm: json.php), max_children 4, process_idle_timeout "
           "2 s; each sample waits until the pool has no worker left.", "",
           "| peer | first request (cold) | next request (warm) |", "|---|---:|---:|"]
    for peer in peers:
        out.append(f"| {peer.name} | {fmt_s(cold[peer.name])} | {fmt_s(warm[peer.name])} |")
    out += ["", f"Medians over {args.rounds} sample(s), (min–max)."]
    return out


# ---- memory ---------------------------------------------------------------------------------


def bench_memory(tmp: Path, args) -> List[str]:
    w = WORKLOADS["json"]
    peers = [start_pfm(Ctx(tmp, workers=4, preload=False), "pfm-preload-no", w),
             start_pfm(Ctx(tmp, workers=4, preload=True), "pfm-preload-yes", w)]
    if "uwsgi" in args.with_peers:
        peers.append(start_uwsgi(Ctx(tmp, workers=4, preload=True), "uwsgi", w))
    peers.append(start_php_fpm(Ctx(tmp, workers=4), "php-fpm", w))
    ngx = None
    rows = []
    try:
        ngx = up(tmp, peers, w)
        for peer in peers:
            wrk.run(f"http://127.0.0.1:{peer.port}{w.path}", 8, 2, 1)
        for peer in peers:
            mem = measure.tree_memory(peer.proc.pid)
            ws = mem["workers"]
            rows.append((peer, len(ws), med([x[1] for x in ws]), med([x[2] for x in ws]),
                         med([x[3] for x in ws]), mem["total_pss"], mem["total_uss"]))
    finally:
        down(peers, ngx)
    out = ["## memory: 4 workers of the Flask app (php-fpm: json.php), after 2 s of load", "",
           "| peer | workers | PSS/worker | USS/worker | RSS/worker | pool PSS (all processes) "
           "| pool USS |", "|---|---:|---:|---:|---:|---:|---:|"]
    for peer, n, pss, uss, rss, tpss, tuss in rows:
        out.append(f"| {peer.name} | {n} | {pss / 1024:.1f} MiB | {uss / 1024:.1f} MiB "
                   f"| {rss / 1024:.1f} MiB | {tpss / 1024:.1f} MiB | {tuss / 1024:.1f} MiB |")
    out += ["", "Medians over the workers, from /proc/PID/smaps_rollup (USS = Private_Clean + "
            "Private_Dirty); the pool's figures add the master and pool manager."]
    for peer, *_ in rows:
        out.append(f"- {peer.name}: {peer.version}")
    return out


# ---- keep-alive starvation ------------------------------------------------------------------


def bench_starvation(tmp: Path, args) -> List[str]:
    w = WORKLOADS["hello"]
    peers = []
    for name in ("pfm", "php-fpm"):
        for ka in (0, 16):
            ctx = Ctx(tmp, workers=2, preload=True)
            full = f"{name}-keepalive" if ka else name
            start = start_pfm if name == "pfm" else start_php_fpm
            peers.append(start(ctx, full, w, ka))
    ngx = None
    results: Dict[str, List[wrk.WrkResult]] = {p.name: [] for p in peers}
    try:
        ngx = up(tmp, peers, w)
        for rnd in range(args.rounds):
            for peer in (peers if rnd % 2 == 0 else peers[::-1]):
                r = wrk.parse(wrk.run(f"http://127.0.0.1:{peer.port}/", 8, args.starve_duration,
                                      1, wrk.SLOW, slow_us=[500000, 100000]))
                results[peer.name].append(r)
                log(f"starvation round {rnd + 1}: {peer.name}: {r.rps:,.0f} req/s, slow "
                    f"{r.slow}, p99 {r.p99_ms:.2f} ms, max {r.max_ms:.0f} ms, "
                    f"errors {r.errors}/{r.non2xx}")
    finally:
        down(peers, ngx)
    out = ["## starvation: 2 workers, 8 wrk connections, hello", "",
           f"*-keepalive: nginx upstream keepalive 16 + fastcgi_keep_conn on; the others one "
           f"FastCGI connection per request. {args.rounds} round(s) of {args.starve_duration} s, "
           "interleaved.", "",
           "| peer | req/s | requests > 500 ms | > 100 ms | share > 500 ms | p99 | max "
           "| errors / non-2xx |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for peer in peers:
        rs = results[peer.name]
        slow, total = sum(r.slow for r in rs), sum(r.requests for r in rs)
        slow100 = sum(r.slow_by.get(100000, 0) for r in rs)
        est = "≈" if any(r.slow_estimated for r in rs) else ""
        out.append(f"| {peer.name} | {med([r.rps for r in rs]):,.0f} | {est}{slow} "
                   f"| {est}{slow100} "
                   f"| {slow / max(1, total):.3%} | {report.ms(med([r.p99_ms for r in rs]))} "
                   f"| {report.ms(max(r.max_ms for r in rs))} "
                   f"| {sum(r.errors for r in rs)} / {sum(r.non2xx for r in rs)} |")
    out += ["", "req/s and p99: medians over the rounds; slow requests, errors and max: over "
            "all rounds (wrk's own record of every request; wrk's 2 s timeout counts as an "
            "error, not a latency; ≈: estimated from wrk's percentiles, within about 2 %)."]
    return out


# ---- 1 MiB uploads: worker memory -----------------------------------------------------------


UPLOAD_MARKS = (10, 100, 250, 500, 1000)


def post(port: int, path: str, body: bytes, timeout: float = 30.0) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"POST {path}: status {resp.status}")
        return data
    finally:
        conn.close()


def bench_uploads(tmp: Path, args) -> List[str]:
    w = WORKLOADS["upload"]
    peers = [start_pfm(Ctx(tmp, workers=1, preload=True), "pfm", w)]
    if "uwsgi" in args.with_peers:
        peers.append(start_uwsgi(Ctx(tmp, workers=1, preload=True), "uwsgi", w))
    ngx = None
    rows: Dict[str, List[tuple]] = {}
    total = max(UPLOAD_MARKS) if not args.quick else 250
    try:
        ngx = up(tmp, peers, w)
        for peer in peers:
            (pid,) = measure.workers(peer.proc.pid)[:1] or (None,)
            m = measure.smaps(pid)
            rows[peer.name] = [(0, m.get("Rss", 0), m.get("Pss", 0))]
            t0 = time.monotonic()
            for i in range(1, total + 1):
                if post(peer.port, w.path, w.body) != w.body_answer:
                    raise SystemExit(f"pools: {peer.name}: wrong answer to upload {i}")
                if i in UPLOAD_MARKS:
                    now = measure.workers(peer.proc.pid)
                    if now != [pid]:
                        raise SystemExit(f"pools: {peer.name}: the worker changed ({pid} -> "
                                         f"{now}) during the uploads")
                    m = measure.smaps(pid)
                    rows[peer.name].append((i, m.get("Rss", 0), m.get("Pss", 0)))
            log(f"uploads: {peer.name}: {total} uploads in {time.monotonic() - t0:.1f} s, "
                f"{rows[peer.name]}")
    finally:
        down(peers, ngx)
    marks = [0] + [m for m in UPLOAD_MARKS if m <= total]
    out = [f"## uploads: {total} POSTs of 1 MiB to one worker, one after the other", "",
           "The worker's RSS / PSS (MiB) after N uploads (the app reads the body in 64 KiB "
           "pieces); flat means the body is never held whole, or is freed.", "",
           "| peer | " + " | ".join(f"after {m}" if m else "after the check (1)"
                                    for m in marks) + " |",
           "|---|" + "---:|" * len(marks)]
    for name, pts in rows.items():
        by = {n: (rss, pss) for n, rss, pss in pts}
        out.append(f"| {name} | " + " | ".join(
            f"{by[m][0] / 1024:.1f} / {by[m][1] / 1024:.1f}" if m in by else "" for m in marks)
            + " |")
    return out


# ---- main -----------------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHES), help=f"({','.join(BENCHES)})")
    p.add_argument("--quick", action="store_true",
                   help="2 rounds, 3 s starvation runs (an explicit option wins)")
    p.add_argument("--rounds", type=int, help="rounds or samples of each benchmark (5)")
    p.add_argument("--starve-duration", type=int, help="seconds per starvation run (10)")
    p.add_argument("--with-peers", default="uwsgi",
                   help="extra peers in the memory benchmark: uwsgi or none (uwsgi)")
    p.add_argument("--results", default=str(HERE / "results"),
                   help="directory of the markdown copy (benchmarks/results)")
    p.add_argument("--no-install", action="store_true", help="never run apt-get or pip")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    args = p.parse_args(argv)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in args.only if x not in BENCHES]
    if bad or not args.only:
        p.error(f"unknown benchmark(s) {bad}; choose among {', '.join(BENCHES)}")
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.starve_duration is None:
        args.starve_duration = 3 if args.quick else 10
    if args.rounds < 1 or args.starve_duration < 1:
        p.error("--rounds and --starve-duration must be positive")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    apt = ["nginx", "wrk", "php-fpm"]
    if {"memory", "uploads"} & set(args.only) and "uwsgi" in args.with_peers:
        apt += ["uwsgi", "uwsgi-python3"]
    install.ensure_apt(apt, not args.no_install)
    install.ensure_pip(["flask"], not args.no_install)
    on_exit()
    with scratch_dir("pfm-pools-", args.keep_tmp) as tmp:
        benches = {"burst": bench_burst, "coldstart": bench_coldstart, "memory": bench_memory,
                   "starvation": bench_starvation, "uploads": bench_uploads}
        header = report.machine_lines()
        text = [f"# pfm pools beside php-fpm, {report.stamp()}", "",
                f"command: `{report.command_line('pools.py', argv)}`", ""]
        text += [f"- {x}" for x in header]
        for name in args.only:
            d = tmp / name
            d.mkdir()
            log(f"{name} ...")
            text += [""] + benches[name](d, args)
        body = "\n".join(text) + "\n"
        print(body, flush=True)
        out = report.write(Path(args.results), "pools", body)
        log(f"wrote {out}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
