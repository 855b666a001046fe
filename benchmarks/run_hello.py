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
import atexit
import datetime
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS = HERE / "apps"
BODY = b"Hello, world!\n"

PHP_FPM = "/usr/sbin/php-fpm8.2"
NGINX = "/usr/sbin/nginx"
FASTCGI_PARAMS = "/etc/nginx/fastcgi_params"
# tool -> (Debian package, how to tell it is there)
TOOLS = {
    "php-fpm": ("php8.2-fpm", PHP_FPM),
    "wrk": ("wrk", "wrk"),
    "nginx": ("nginx", NGINX),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
IS_ROOT = os.geteuid() == 0


def log(message: str) -> None:
    print(f"run_hello: {message}", file=sys.stderr, flush=True)


# ---- installing what is missing ---------------------------------------------------


def have(path_or_name: str) -> bool:
    if "/" in path_or_name:
        return os.access(path_or_name, os.X_OK)
    return shutil.which(path_or_name) is not None


def ensure_tools(needed: List[str], install: bool) -> None:
    missing = [TOOLS[t][0] for t in needed if not have(TOOLS[t][1])]
    if not missing:
        return
    if not install:
        sys.exit(f"run_hello: missing {', '.join(missing)} (and --no-install was given)")
    sudo = [] if IS_ROOT else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing Debian packages: {' '.join(missing)}")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
                   + missing, check=True, env=env, stdout=subprocess.DEVNULL)
    still = [TOOLS[t][0] for t in needed if not have(TOOLS[t][1])]
    if still:
        sys.exit(f"run_hello: still missing after apt-get: {', '.join(still)}")


# ---- processes we start, and stopping them on every exit path -------------------------


class Processes:
    """Every process this script starts, each the leader of its own session,
    so that stopping one stops its whole tree (php-fpm's and pfm's workers,
    nginx's worker)."""

    def __init__(self) -> None:
        self.started: List[Tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: List[str], logfile: Path,
              env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None
              ) -> subprocess.Popen:
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True)
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 5.0) -> None:
        """TERM to the process group, KILL what is left after `grace` seconds."""
        pgid = proc.pid  # start_new_session: the leader's pid is the group's id
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=grace)
                # the leader is gone; make sure no member of its group outlives it
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                return
            except subprocess.TimeoutExpired:
                continue
        proc.wait(timeout=grace)

    def stop_all(self) -> None:
        # a second Ctrl-C or SIGTERM must not cut the clean-up short (each stop is bounded)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        while self.started:
            name, proc = self.started.pop()
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                log(f"could not stop {name} (pid {proc.pid}): {exc}")


PROCS = Processes()


def _on_signal(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


# ---- CPU of a process tree, from /proc ----------------------------------------------


def proc_table() -> Dict[int, Tuple[int, int]]:
    """pid -> (ppid, clock ticks of utime+stime+cutime+cstime)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()
        # fields[0] is stat's 3rd field (state): ppid is the 4th, utime..cstime the 14th-17th
        table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return table


def role(pid: int) -> str:
    """master, manager or worker, from the process title (pfm's and php-fpm's)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "worker"
    if "master process" in title:
        return "master"
    return "manager" if title.endswith(" manager") else "worker"


def tree_cpu(root_pid: int) -> Dict[str, float]:
    """CPU seconds used by a process and all its descendants, living or reaped,
    by role ("master", "manager", "worker"; a reaped child counts for its parent)."""
    table = proc_table()
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    by_role: Dict[str, float] = {}
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        if pid in table:
            name = role(pid)
            by_role[name] = by_role.get(name, 0.0) + table[pid][1] / CLK_TCK
        todo.extend(children.get(pid, ()))
    return by_role


# ---- the peers ----------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    socket: Path
    port: int
    proc: Optional[subprocess.Popen] = None
    version: str = ""


def start_php_fpm(tmp: Path, port: int, args: argparse.Namespace) -> Peer:
    peer = Peer("php-fpm", tmp / "php-fpm.sock", port)
    docroot = tmp / "www"
    docroot.mkdir(exist_ok=True)
    shutil.copy(APPS / "hello.php", docroot / "hello.php")
    conf = tmp / "php-fpm.conf"
    conf.write_text(f"""\
; written by benchmarks/run_hello.py
[global]
pid = {tmp}/php-fpm.pid
error_log = {tmp}/php-fpm.log
daemonize = no

[hello]
listen = {peer.socket}
pm = static
pm.max_children = {args.workers}
""")
    argv = [PHP_FPM, "-n", "-F", "-y", str(conf)] + (["-R"] if IS_ROOT else [])
    if args.php_opcache:  # -n loads no php.ini, so no extension: load OPcache by hand
        argv += ["-d", "zend_extension=opcache.so", "-d", "opcache.enable=1"]
    peer.version = subprocess.run([PHP_FPM, "-n", "-v"], capture_output=True,
                                  text=True).stdout.splitlines()[0]
    peer.proc = PROCS.start("php-fpm", argv, tmp / "php-fpm.out")
    return peer


def start_pfm(tmp: Path, port: int, args: argparse.Namespace, name: str = "pfm",
              src: Path = ROOT) -> Peer:
    """pfm from the source tree `src` (this checkout, or --pfm-base's)."""
    peer = Peer(name, tmp / f"{name}.sock", port)
    conf = tmp / f"{name}.conf"
    conf.write_text(f"""\
; written by benchmarks/run_hello.py
[global]
pid = {tmp}/{name}.pid
error_log = {tmp}/{name}.log
daemonize = no

[hello]
listen = {peer.socket}
pm = static
pm.max_children = {args.workers}
app = hello:app
pythonpath = {APPS}
""")
    argv = [sys.executable, "-m", "pfm", "-F", "-y", str(conf)] + (["-R"] if IS_ROOT else [])
    env = dict(os.environ)
    # `python -m pfm` from a checkout works without installing the package too
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    # cwd: `python -m` puts the working directory first on sys.path
    peer.version = subprocess.run([sys.executable, "-m", "pfm", "-v"], capture_output=True,
                                  text=True, env=env, cwd=tmp).stdout.strip() + f" from {src}"
    peer.proc = PROCS.start(name, argv, tmp / f"{name}.out", env=env, cwd=tmp)
    return peer


def start_pfm_base(tmp: Path, port: int, args: argparse.Namespace) -> Peer:
    """Another pfm source tree, to measure a change against (--pfm-base)."""
    return start_pfm(tmp, port, args, "pfm-base", Path(args.pfm_base).resolve())


STARTERS = {"php-fpm": start_php_fpm, "pfm": start_pfm, "pfm-base": start_pfm_base}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp: Path, peers: List[Peer], keepalive: int) -> subprocess.Popen:
    """keepalive: connections nginx keeps to each backend (0: one per request).
    PHP-FPM pins a worker to each kept connection, so it is kept at the worker
    count; more would leave requests queued behind idle kept connections."""
    for sub in ("body", "fastcgi", "proxy", "uwsgi", "scgi"):
        (tmp / "nginx" / sub).mkdir(parents=True, exist_ok=True)
    servers = []
    for peer in peers:
        upstream = f"unix:{peer.socket}"
        extra = ""
        if peer.name == "php-fpm":
            extra = (f"        root {tmp}/www;\n"
                     "        fastcgi_param SCRIPT_FILENAME $document_root/hello.php;\n")
        if keepalive:
            name = "up_" + re.sub(r"\W", "_", peer.name)
            servers.append(f"    upstream {name} {{\n        server {upstream};\n"
                           f"        keepalive {keepalive};\n    }}\n")
            upstream = name
            extra += "        fastcgi_keep_conn on;\n"
        servers.append(f"""\
    server {{
        listen 127.0.0.1:{peer.port};
        location / {{
            include {FASTCGI_PARAMS};
{extra}            fastcgi_pass {upstream};
        }}
    }}
""")
    conf = tmp / "nginx.conf"
    conf.write_text(f"""\
# written by benchmarks/run_hello.py
{"user root;" if IS_ROOT else ""}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx/body;
    fastcgi_temp_path {tmp}/nginx/fastcgi;
    proxy_temp_path {tmp}/nginx/proxy;
    uwsgi_temp_path {tmp}/nginx/uwsgi;
    scgi_temp_path {tmp}/nginx/scgi;
{"".join(servers)}}}
""")
    argv = [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")]
    return PROCS.start("nginx", argv, tmp / "nginx.out")


def wait_for(what: str, check, proc: subprocess.Popen, logs: List[Path],
             timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            last = f"exited with status {proc.returncode}"
            break
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    tails = []
    for path in logs:
        if path.exists():
            text = path.read_text(errors="replace").strip().splitlines()[-15:]
            tails.append(f"--- {path.name}\n" + "\n".join(text))
    raise SystemExit(f"run_hello: {what} is not ready ({last})\n" + "\n".join(tails))


def unix_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
    return True


def answers_hello(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        body = resp.read()
        if resp.status != 200 or body != BODY:
            raise RuntimeError(f"unexpected answer {resp.status} {body[:60]!r}")
    return True


# ---- wrk --------------------------------------------------------------------------------


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


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(text: str) -> Tuple[float, float, int, int, int]:
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    p99 = float(m.group(1)) * _UNIT_MS[m.group(2)] if m else float("nan")
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non2xx = int(m.group(1)) if m else 0
    return rps, p99, requests, errors, non2xx


def wrk(port: int, connections: int, duration: float, threads: int) -> str:
    threads = max(1, min(threads, connections))
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
            "--latency", f"http://127.0.0.1:{port}/"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    PROCS.started.append(("wrk", proc))
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    finally:
        if ("wrk", proc) in PROCS.started:
            PROCS.started.remove(("wrk", proc))
        if proc.poll() is None:
            PROCS.stop(proc)
    if proc.returncode != 0 or "Requests/sec" not in out:
        raise SystemExit(f"run_hello: wrk failed ({proc.returncode}):\n{out}")
    return out


def measure(peer: Peer, nginx: subprocess.Popen, connections: int, duration: float,
            threads: int) -> Run:
    cpu0, ng0 = tree_cpu(peer.proc.pid), tree_cpu(nginx.pid)
    out = wrk(peer.port, connections, duration, threads)
    cpu1, ng1 = tree_cpu(peer.proc.pid), tree_cpu(nginx.pid)
    rps, p99, requests, errors, non2xx = parse_wrk(out)
    per = 1e6 / requests if requests else float("nan")
    roles = {name: (cpu1.get(name, 0.0) - cpu0.get(name, 0.0)) * per
             for name in ("master", "manager", "worker") if name in cpu1}
    return Run(peer.name, connections, rps, p99, requests, errors, non2xx,
               sum(roles.values()), (sum(ng1.values()) - sum(ng0.values())) * per, roles)


# ---- report -----------------------------------------------------------------------------


def machine_lines(peers: List[Peer]) -> List[str]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    nginx_v = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    wrk_v = (wrk_v.strip().splitlines() or [""])[0]
    lines = [
        f"interpreter: {sys.executable} -> {os.path.realpath(sys.executable)} "
        f"(Python {platform.python_version()}, {platform.python_implementation()})",
        f"machine: nproc {len(os.sched_getaffinity(0))}, {model or platform.machine()}, "
        f"kernel {platform.release()}",
        f"servers: {nginx_v}; {wrk_v.split(' Copyright')[0]}",
    ]
    lines += [f"{peer.name}: {peer.version}" for peer in peers]
    return lines


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
    ensure_tools(needed, install=not args.no_install)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(PROCS.stop_all)

    tmp = Path(tempfile.mkdtemp(prefix="pfm-bench-"))
    keep = args.keep_tmp
    try:
        peers = [STARTERS[name](tmp, free_port(), args) for name in args.peers]
        for peer in peers:
            wait_for(f"{peer.name} on {peer.socket}", lambda p=peer: unix_accepts(p.socket),
                     peer.proc, [tmp / f"{peer.name}.out", tmp / f"{peer.name}.log"])
        nginx = start_nginx(tmp, peers, args.workers if args.keepalive else 0)
        for peer in peers:
            wait_for(f"nginx -> {peer.name} on port {peer.port}",
                     lambda p=peer: answers_hello(p.port), nginx,
                     [tmp / "nginx-error.log", tmp / f"{peer.name}.log"])
        header = machine_lines(peers)
        for line in header:
            log(line)
        if args.warmup > 0:
            for peer in peers:
                log(f"warm-up {peer.name}")
                wrk(peer.port, max(args.connections), args.warmup, args.threads)

        runs: List[Run] = []
        for rnd in range(args.rounds):
            order = peers if rnd % 2 == 0 else peers[::-1]
            for c in args.connections:
                for peer in order:
                    run = measure(peer, nginx, c, args.duration, args.threads)
                    runs.append(run)
                    log(f"round {rnd + 1}/{args.rounds}" + every_run([run])[0])
                    if peer.proc.poll() is not None:
                        raise SystemExit(f"run_hello: {peer.name} died "
                                         f"(status {peer.proc.returncode}); see {tmp}")

        command = "benchmarks/run_hello.py " + " ".join(
            shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        mode = f"{args.workers} kept-alive FastCGI connections per backend" if args.keepalive else \
            "one FastCGI connection per request (nginx's default)"
        report = [
            f"# hello world, {datetime.datetime.now():%Y-%m-%d %H:%M}",
            "",
            f"command: `{sys.executable} {command.strip()}`",
            "",
            f"{args.workers} workers each (pm = static), {args.rounds} rounds of "
            f"{args.duration:g} s per peer and connection count, interleaved; wrk "
            f"{args.threads} thread(s); nginx 1 worker, {mode}, UNIX sockets; "
            f"php-fpm -n{' with OPcache' if args.php_opcache else ''}.",
            "",
        ] + [f"- {line}" for line in header] + [""] + table(runs, args.peers, args.connections)
        report += ["", "every run:", "", "```"] + every_run(runs) + ["```"]
        print("\n".join(report), flush=True)
        if not args.no_results:
            out_dir = Path(args.results)
            out_dir.mkdir(parents=True, exist_ok=True)
            out = out_dir / f"hello-{datetime.datetime.now():%Y%m%d-%H%M%S}.md"
            out.write_text("\n".join(report) + "\n")
            log(f"wrote {out}")
        return 0
    except BaseException as exc:
        # a failure keeps the configs and logs for a look; Ctrl-C and signals do not
        interrupted = isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code >= 128)
        keep = keep or not interrupted
        raise
    finally:
        PROCS.stop_all()
        if keep:
            log(f"kept {tmp} (configs and logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
