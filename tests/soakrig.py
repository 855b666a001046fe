"""The soak and fault suite: real pfm, real nginx, real signals, and an
account of every request.

Used by tests/test_soak.py (each scenario bounded to seconds, in CI) and by
benchmarks/soak.py (the same scenarios for minutes, as a table). A scenario
starts pfm (tests/harness.py Pfm: a dynamic pool with a small
pm.max_requests, serving tests/apps/soakapp.py) behind nginx (harness.Nginx,
with or without fastcgi_keep_conn), runs several clients that GET and POST
bodies of every size through nginx and check every answer (the POST's SHA-256,
the GET's bytes), and meanwhile injects its faults:

  sigkill    SIGKILL a random worker, again and again
  reload     USR2 in bursts (several in a row), and USR1 between them
  logfull    the error and access logs on a small tmpfs, filled up, with USR1
             and worker recycling while it is full; then space comes back
  slowpeers  on the pool's own socket: silent clients (connect, send nothing),
             trickling clients (a request a byte a second) and non-reading
             clients (GET_VALUES floods, replies never read)

Every request is counted. A failed request is "explained" only if a fault
explains it: it was in flight when a worker was SIGKILLed and failed the way
a dead upstream fails (502 or a cut answer), at most one per connection the
killed worker held. Everything else is unexplained: a stall longer than
`stall` seconds, a wrong body, a 5xx with no kill, a reset. The master's and
each pool manager's RSS and open descriptors are taken after warm-up and
again once the pool has settled at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness

from pfm import fastcgi

# ---- what runs ---------------------------------------------------------------------------

POOL = {
    "app": "soakapp:app",
    "pm": "dynamic",
    "pm.max_children": 3,           # tight: recycling competes with the clients for slots
    "pm.start_servers": 2,
    "pm.min_spare_servers": 1,
    "pm.max_spare_servers": 2,
    "pm.max_requests": 10,          # small: a worker is replaced every few requests
    "pm.max_requests_jitter": 3,
    "pm.status_path": "/status",
    "catch_workers_output": True,
    "request_terminate_timeout": "30s",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    faults: tuple = ()
    keepalive: int | None = None    # nginx upstream keepalive and fastcgi_keep_conn on
    listen: str = "unix"            # the pool's socket: "unix" or "tcp"
    pool: dict = field(default_factory=dict)
    clients: int = 5
    stall: float = 10.0             # a request slower than this failed


SCENARIOS = {s.name: s for s in [
    Scenario("mixed", "GET/POST with checksums, a worker recycled every 10-13 requests"),
    Scenario("mixed-keepalive", "the same with fastcgi_keep_conn", keepalive=8),
    Scenario("sigkill", "SIGKILL a random worker every 0.4-1.2 s", ("sigkill",)),
    Scenario("sigkill-keepalive", "the same with fastcgi_keep_conn", ("sigkill",),
             keepalive=8),
    Scenario("reload", "USR2 bursts (2-4 in a row) with USR1 between", ("reload",)),
    Scenario("reload-keepalive", "the same with fastcgi_keep_conn", ("reload",),
             keepalive=8),
    Scenario("logfull", "error and access logs on a full tmpfs; USR1; then space again",
             ("logfull",)),
    # Without a status page: while every worker is busy the manager's status desk
    # takes waiting connections and drops those silent for 5 s, which would hide
    # what the workers themselves do with such peers. Issue 9: they "must not
    # delay a normal request by more than a few seconds", hence the 3 s stall.
    Scenario("slowpeers-unix", "6 silent, 2 trickling, 2 non-reading clients on the "
             "pool's unix socket", ("slowpeers",), pool={"pm.status_path": None}, stall=3.0),
    Scenario("slowpeers-tcp", "the same on a TCP socket", ("slowpeers",), listen="tcp",
             pool={"pm.status_path": None}, stall=3.0),
]}

KILL_GRACE = 0.2        # a request sent this soon after a kill may still reach the victim
FD_SLACK = 2            # descriptors a process may gain between start and end
RSS_SLACK_KB = 4096     # resident memory it may gain (allocator noise, caches warming)
DEAD_UPSTREAM = ("HTTP 502", "cut short", "RemoteDisconnected", "IncompleteRead")


@dataclass
class Budget:
    """How much of each fault a run may inject: bounded in count as well as time."""

    kills: int = 10
    reload_bursts: int = 4
    usr1: int = 4
    silent: int = 6
    trickling: int = 2
    flooding: int = 2


# ---- records -----------------------------------------------------------------------------


@dataclass
class Outcome:
    rid: str
    kind: str
    size: int
    t0: float
    t1: float
    wall: float
    error: str | None = None      # None: a verified 200
    pid: int | None = None


@dataclass
class Fault:
    kind: str
    t: float
    wall: float
    detail: str = ""
    capacity: int = 0             # requests a SIGKILL may explain
    pid: int | None = None        # the worker it killed


@dataclass
class ProcFigures:
    rss_kb: int
    fds: int
    workers: int = 0

    def __str__(self) -> str:
        return "%d kB/%d fds" % (self.rss_kb, self.fds)


# ---- the clients through nginx -----------------------------------------------------------


def body_size(rng: random.Random) -> int:
    """Mostly small, sometimes tens of KiB, now and then over 100 KiB."""
    roll = rng.random()
    if roll < 0.7:
        return rng.randint(0, 2048)
    if roll < 0.95:
        return rng.randint(2048, 65536)
    return rng.randint(65536, 300000)


class _Threads:
    """A group of daemon threads that run until `stop_event`, joined with a bound."""

    join_timeout = 10.0

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def spawn(self, name: str, target, *args) -> None:
        self.threads.append(threading.Thread(target=target, args=args, daemon=True, name=name))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(self.join_timeout)
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            raise AssertionError("soak threads did not stop: %s" % alive)


class Traffic(_Threads):
    """`clients` threads, each with its own HTTP/1.1 connection to nginx,
    alternating at random between GETs of n checked bytes and POSTs whose
    SHA-256 comes back; every request is recorded with its verdict."""

    def __init__(self, port: int, clients: int, stall: float, seed: int):
        super().__init__()
        self.port = port
        self.stall = stall
        self.join_timeout = stall + 10     # a request in flight ends within `stall`
        self.outcomes: list[Outcome] = []
        for i in range(clients):
            self.spawn("soak-client-%d" % i, self.client, i, seed)

    def client(self, i: int, seed: int) -> None:
        rng = random.Random(seed * 1000 + i)
        conn = None
        seq = 0
        while not self.stop_event.is_set():
            seq += 1
            rid = "c%d-%d" % (i, seq)
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.stall)
            outcome, reusable = self.one(conn, rng, rid)
            with self.lock:
                self.outcomes.append(outcome)
            if not reusable:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def one(self, conn, rng: random.Random, rid: str) -> tuple[Outcome, bool]:
        post = rng.random() < 0.5
        size = body_size(rng)
        out = Outcome(rid, "POST" if post else "GET", size, time.monotonic(), 0.0, time.time())
        reusable = False
        try:
            if post:
                body = rng.randbytes(size)
                say = "&say=1" if rng.random() < 0.05 else ""
                conn.request("POST", "/post?id=%s%s" % (rid, say), body=body,
                             headers={"Content-Type": "application/octet-stream"})
            else:
                conn.request("GET", "/get?n=%d&id=%s" % (size, rid))
            resp = conn.getresponse()
            pid = resp.getheader("X-Pid")
            out.pid = int(pid) if pid and pid.isdigit() else None
            data, out.error = self.read_body(resp)
            if out.error is None:
                reusable = not resp.will_close
                out.error = self.verdict(resp, data, rid, size, body if post else None)
        except socket.timeout:
            out.error = "no answer in %.0f s" % self.stall
        except http.client.IncompleteRead as e:
            out.error = "IncompleteRead: cut short after %d bytes" % len(e.partial)
        except (OSError, http.client.HTTPException) as e:
            out.error = "%s: %s" % (type(e).__name__, e)
        out.t1 = time.monotonic()
        if out.error is None and out.t1 - out.t0 > self.stall:
            out.error = "took %.1f s" % (out.t1 - out.t0)
        return out, reusable and out.error is None

    def read_body(self, resp) -> tuple[bytes, str | None]:
        """The body, or what came of it and why no more. A worker killed
        while it writes an answer ends nginx's upstream connection; without
        fastcgi_keep_conn nginx takes that close for the end of the answer
        (its FastCGI connection may end so), logs nothing, and keeps the
        client's connection, whose Content-Length then never comes: that is
        an answer cut short, which the client sees as a stall mid-body."""
        data = bytearray()
        length = resp.getheader("Content-Length")
        try:
            while chunk := resp.read1(65536):    # what came, as it comes
                data += chunk
        except socket.timeout:
            return bytes(data), ("cut short: no byte in %.0f s after %d of %s bytes"
                                 % (self.stall, len(data), length))
        except http.client.IncompleteRead as e:     # a chunked answer ended early
            return bytes(data), "IncompleteRead: cut short after %d bytes" % (
                len(data) + len(e.partial))
        if resp.length:     # the connection ended before the Content-Length did
            return bytes(data), "IncompleteRead: cut short after %d of %s bytes" % (
                len(data), length)
        resp.read()         # b"": marks the answer done, so the connection takes the next
        return bytes(data), None

    @staticmethod
    def verdict(resp, data: bytes, rid: str, size: int, body: bytes | None) -> str | None:
        if resp.status != 200:
            return "HTTP %d: %r" % (resp.status, data[:120])
        if resp.getheader("X-Id") != rid:
            return "answer for %r, not %r" % (resp.getheader("X-Id"), rid)
        if body is None:
            if len(data) != size:
                return "cut short: %d of %d bytes" % (len(data), size)
            if data != hashlib.shake_256(rid.encode()).digest(size):
                return "wrong bytes in a GET of %d" % size
            return None
        try:
            got = json.loads(data)
        except ValueError:
            return "not JSON: %r" % data[:120]
        if got != {"size": size, "sha256": hashlib.sha256(body).hexdigest()}:
            return "POST of %d arrived as %r" % (size, got)
        return None


# ---- peers that misbehave on the pool's socket -------------------------------------------


class SlowPeers(_Threads):
    """Silent, trickling and non-reading clients straight on the pool's socket.
    Each reconnects when pfm closes it, so the pressure lasts the whole run;
    how long pfm let each connection live is recorded."""

    REQUEST = fastcgi.encode_request(harness.request_params("/get", "n=1&id=trickle"))

    def __init__(self, address, budget: Budget):
        super().__init__()
        self.address = address
        self.lifetimes: dict[str, list[float]] = {"silent": [], "trickling": [], "flooding": []}
        for kind, count in (("silent", budget.silent), ("trickling", budget.trickling),
                            ("flooding", budget.flooding)):
            for i in range(count):
                self.spawn("soak-%s-%d" % (kind, i), self.peer, kind)

    def peer(self, kind: str) -> None:
        while not self.stop_event.is_set():
            try:
                sock = harness.connect(self.address, timeout=5)
            except OSError:
                self.stop_event.wait(0.2)
                continue
            # Non-blocking: a socket with a timeout waits that long even for
            # MSG_DONTWAIT (CPython polls first), and would give up on its own.
            sock.setblocking(False)
            born = time.monotonic()
            try:
                getattr(self, kind)(sock)
            except OSError:
                pass
            finally:
                sock.close()
                with self.lock:
                    if not self.stop_event.is_set():
                        self.lifetimes[kind].append(time.monotonic() - born)

    def closed_by_peer(self, sock) -> bool:
        """True once pfm has closed the connection (EOF or reset)."""
        try:
            return sock.recv(65536, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False

    def silent(self, sock) -> None:
        while not self.stop_event.wait(0.2):
            if self.closed_by_peer(sock):
                return

    def trickling(self, sock) -> None:
        for i in range(len(self.REQUEST)):
            if self.stop_event.wait(1.0):
                return
            try:
                sock.send(self.REQUEST[i:i + 1])
            except BlockingIOError:
                pass      # cannot be: one byte into an empty buffer; skip it if so
            if self.closed_by_peer(sock):
                return
        while not self.stop_event.wait(0.2):   # the whole request went: wait for the end
            if self.closed_by_peer(sock):
                return

    def flooding(self, sock) -> None:
        record = fastcgi.get_values(["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"])
        chunk = memoryview(record * 512)
        pending = chunk
        while not self.stop_event.is_set():
            try:
                pending = pending[sock.send(pending):] or chunk    # whole records only
            except BlockingIOError:
                # Both buffers are full: pfm's replies wait for us to read, which
                # we never do. Check now and then whether pfm gave up on us.
                if self.stop_event.wait(0.2):
                    return
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        return
                except BlockingIOError:
                    pass


# ---- observing pfm -----------------------------------------------------------------------


def proc_figures(pid: int) -> ProcFigures | None:
    try:
        return ProcFigures(harness.vm_kb(pid), len(os.listdir("/proc/%d/fd" % pid)))
    except (OSError, KeyError):
        return None


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass
    return inodes


def stopped(pid: int, timeout: float = 2.0) -> bool:
    """Until `pid` has stopped (False if it has not in `timeout`): kill(SIGSTOP)
    returns before the signal takes effect, and a worker running meanwhile
    may still adopt connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = harness.proc_stat(pid)
        if st is None or st["state"] in ("T", "t", "Z", "X"):
            return True
        time.sleep(0.0005)
    return False


def connections_held(pid: int, address) -> int:
    """How many connections from the web server process `pid` holds: its
    sockets that were accepted on the pool's socket `address` (in
    /proc/net/unix connected and named by its path; in /proc/net/tcp{,6}
    established on its port), whether a request runs on them or they wait
    kept alive. Not the pool's shared sockets, nor its pipes."""
    inodes = socket_inodes(pid)
    held = 0
    if isinstance(address, str):
        for row in harness.read_text("/proc/net/unix").splitlines()[1:]:
            f = row.split()
            held += len(f) > 7 and f[7] == address and f[5] == "03" and f[6] in inodes
        return held
    port = ":%04X" % address[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in harness.read_text(table).splitlines()[1:]:
            f = row.split()
            held += f[1].endswith(port) and f[3] == "01" and f[9] in inodes
    return held


def snapshot(p: harness.Pfm, pool: str = "www") -> dict[str, ProcFigures]:
    out = {}
    master = proc_figures(p.pid)
    if master is not None:
        out["master"] = master
    for m in p.manager_pids(pool):
        figures = proc_figures(m)
        if figures is not None:
            figures.workers = len([w for w in harness.children_of(m)
                                   if harness.cmdline(w) == "pfm: pool %s" % pool])
            out["manager"] = figures
    return out


# ---- one run -----------------------------------------------------------------------------


@dataclass
class Result:
    scenario: Scenario
    duration: float
    outcomes: list = field(default_factory=list)
    faults: list = field(default_factory=list)
    explained: list = field(default_factory=list)     # (Outcome, Fault)
    unexplained: list = field(default_factory=list)   # (Outcome, context lines)
    start: dict = field(default_factory=dict)
    end: dict = field(default_factory=dict)
    incidents: list = field(default_factory=list)     # log lines that must not be there
    notes: list = field(default_factory=list)
    peers: dict = field(default_factory=dict)
    max_children: int = 0      # the pool's pm.max_children: more workers at the end is a leak

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if o.error]

    def latency(self, q: float) -> float:
        times = sorted(o.t1 - o.t0 for o in self.outcomes if not o.error)
        if not times:
            return 0.0
        return times[min(len(times) - 1, int(q * len(times)))]

    def leaks(self) -> list[str]:
        """Growth beyond the slack between the start and end figures."""
        out = []
        for who in ("master", "manager"):
            a, b = self.start.get(who), self.end.get(who)
            if a is None or b is None:
                out.append("%s: no figures (%s -> %s)" % (who, a, b))
                continue
            # A manager holds 2 pipes per worker with catch_workers_output: compare without them.
            per = 2 if who == "manager" else 0
            fds_a, fds_b = a.fds - per * a.workers, b.fds - per * b.workers
            if fds_b > fds_a + FD_SLACK:
                out.append("%s: descriptors %d -> %d (%d -> %d workers)"
                           % (who, a.fds, b.fds, a.workers, b.workers))
            if b.rss_kb > a.rss_kb + RSS_SLACK_KB:
                out.append("%s: RSS %d -> %d kB" % (who, a.rss_kb, b.rss_kb))
        end = self.end.get("manager")
        if self.max_children and end is not None and end.workers > self.max_children:
            out.append("manager: %d workers once settled; pm.max_children is %d"
                       % (end.workers, self.max_children))
        return out

    def problems(self) -> list[str]:
        out = []
        if len(self.outcomes) < 20:
            out.append("only %d requests ran" % len(self.outcomes))
        for outcome, context in self.unexplained[:8]:
            out.append("unexplained failure %s %s (%d bytes) after %.2f s: %s%s" % (
                outcome.kind, outcome.rid, outcome.size, outcome.t1 - outcome.t0,
                outcome.error, "".join("\n      " + line for line in context)))
        if len(self.unexplained) > 8:
            out.append("... %d unexplained failures in all" % len(self.unexplained))
        out += self.leaks()
        out += ["log: " + line for line in self.incidents[:10]]
        return out

    def row(self) -> dict:
        def fig(who):
            a, b = self.start.get(who), self.end.get(who)
            return "%s -> %s" % (a, b) if a and b else "-"
        return {"scenario": self.scenario.name, "requests": len(self.outcomes),
                "failed": len(self.failed), "explained": len(self.explained),
                "unexplained": len(self.unexplained),
                "p99 s": "%.2f" % self.latency(0.99), "max s": "%.2f" % self.latency(1.0),
                "faults": fault_summary(self.faults),
                "master": fig("master"), "manager": fig("manager")}

    def report(self) -> str:
        lines = ["scenario %s: %d requests, %d failed (%d explained by faults, %d unexplained); "
                 "faults: %s" % (self.scenario.name, len(self.outcomes), len(self.failed),
                                 len(self.explained), len(self.unexplained),
                                 fault_summary(self.faults) or "none")]
        lines += ["  " + p for p in self.problems()]
        if self.explained:
            lines.append("  explained: " + ", ".join(
                "%d %s" % (n, how) for how, n in failure_kinds(o for o, _ in self.explained)))
        kills = [f for f in self.faults if f.kind == "sigkill"]
        if kills:
            lines.append("  kills: " + kill_costs(kills, self.explained))
        lines += ["  note: " + n for n in self.notes]
        return "\n".join(lines)


def failure_kinds(outcomes) -> list[tuple[str, int]]:
    """How requests failed, most frequent first: "POST HTTP 502", "GET cut short"..."""
    counts: dict[str, int] = {}
    for o in outcomes:
        how = "%s %s" % (o.kind, o.error.split(":")[0])
        counts[how] = counts.get(how, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def kill_costs(kills: list, explained: list) -> str:
    """How many requests each kill cost, and how many connections the victims held."""
    cost = {id(k): 0 for k in kills}
    for _, k in explained:
        cost[id(k)] += 1
    by_cost: dict[int, int] = {}
    for n in cost.values():
        by_cost[n] = by_cost.get(n, 0) + 1
    held = sorted(k.capacity for k in kills)
    return "%s; victims held %d-%d connections from nginx (median %d)" % (
        ", ".join("%d cost %d request%s" % (by_cost[n], n, "" if n == 1 else "s")
                  for n in sorted(by_cost)), held[0], held[-1], held[len(held) // 2])


def fault_summary(faults: list) -> str:
    counts: dict[str, int] = {}
    for f in faults:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    return ", ".join("%d %s" % (n, k) for k, n in counts.items())


def attribute(failures: list, faults: list) -> tuple[list, list]:
    """(explained, unexplained): a failure is explained by a SIGKILL that hit
    while it was in flight (sent up to KILL_GRACE after the kill: nginx may
    not have seen the victim's kept connection close yet), if it failed the
    way a dead upstream fails; each kill explains at most as many failures as
    the victim held connections (its `capacity`), and an answer that began
    (X-Pid) only if the victim began it. Nothing else explains any."""
    kills = sorted((f for f in faults if f.kind == "sigkill"), key=lambda f: f.t)
    left = {id(k): k.capacity for k in kills}
    explained, unexplained = [], []
    for outcome in sorted(failures, key=lambda o: o.t1):
        cause = None
        if any(mark in outcome.error for mark in DEAD_UPSTREAM):
            cause = next((k for k in kills if left[id(k)] > 0
                          and outcome.t0 <= k.t + KILL_GRACE <= outcome.t1 + KILL_GRACE
                          and outcome.pid in (None, k.pid)), None)
        if cause is None:
            unexplained.append(outcome)
        else:
            left[id(cause)] -= 1
            explained.append((outcome, cause))
    return explained, unexplained


class Soak:
    """One scenario: start everything, load, inject, settle, account, stop."""

    def __init__(self, scenario: Scenario, workdir: Path, duration: float,
                 seed: int | None = None, budget: Budget | None = None):
        self.scenario = scenario
        self.dir = Path(workdir)
        self.duration = duration
        self.stall = scenario.stall
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.budget = budget or Budget()
        self.faults: list[Fault] = []
        self.stop_event = threading.Event()
        self.notes: list[str] = ["seed %d" % self.seed]
        self.pfm: harness.Pfm | None = None
        self.nginx: harness.Nginx | None = None
        self.log_mount: Path | None = None

    # -- plumbing --------------------------------------------------------------

    def fault(self, kind: str, detail: str = "", capacity: int = 0,
              pid: int | None = None) -> None:
        self.faults.append(Fault(kind, time.monotonic(), time.time(), detail, capacity, pid))

    def run(self) -> Result:
        with contextlib.ExitStack() as stack:
            pfm_dir = self.dir / "pfm"
            pfm_dir.mkdir(parents=True, exist_ok=True)
            if "logfull" in self.scenario.faults:
                stack.callback(self.unmount)
                self.mount(pfm_dir)
            pool = dict(POOL, pythonpath=str(harness.APPS), **self.scenario.pool)
            pool["listen"] = "unix" if self.scenario.listen == "unix" else None
            pool["access.log"] = str(pfm_dir / "access.log")
            self.pfm = harness.Pfm(pfm_dir, pool=pool)
            stack.callback(self.pfm.stop)
            self.pfm.start(workers=False)
            nginx_dir = self.dir / "nginx"
            nginx_dir.mkdir(exist_ok=True)
            self.nginx = harness.Nginx(nginx_dir, self.pfm.backend(),
                                       keepalive=self.scenario.keepalive)
            stack.callback(self.nginx.stop)
            self.nginx.start()
            return self.load_and_inject()

    def load_and_inject(self) -> Result:
        p, n = self.pfm, self.nginx
        warm = Traffic(n.port, 2, self.stall, self.seed + 1).start()
        harness.wait_for(lambda: sum(1 for o in warm.outcomes if not o.error) >= 30, 20,
                         "warm-up requests through nginx", on_fail=self.diagnostics)
        warm.stop()
        if any(o.error for o in warm.outcomes):
            self.notes.append("warm-up failures: %r" % [o.error for o in warm.outcomes
                                                        if o.error][:3])
        self.settle(p)
        start = snapshot(p)
        traffic = Traffic(n.port, self.scenario.clients, self.stall, self.seed).start()
        injectors = [threading.Thread(target=self.inject, args=(kind,), daemon=True)
                     for kind in self.scenario.faults]
        peers = None
        if "slowpeers" in self.scenario.faults:
            peers = SlowPeers(p.address(), self.budget).start()
        t_start = time.monotonic()
        for t in injectors:
            t.start()
        try:
            self.stop_event.wait(self.duration)
        finally:
            self.stop_event.set()
            for t in injectors:
                t.join(60)
            if peers is not None:
                peers.stop()
            traffic.stop()
        ran = time.monotonic() - t_start
        self.settle(p)
        end = snapshot(p)
        result = Result(self.scenario, ran, traffic.outcomes, self.faults, start=start, end=end,
                        notes=self.notes,
                        max_children=int(self.pfm.pools["www"]["pm.max_children"]))
        if peers is not None:
            result.peers = peers.lifetimes
            for kind, lives in peers.lifetimes.items():
                if lives:
                    result.notes.append("%s peers: %d connections cut, median life %.1f s"
                                        % (kind, len(lives), statistics.median(lives)))
        self.account(result)
        return result

    def settle(self, p: harness.Pfm, timeout: float = 15.0) -> None:
        """Until one manager runs and its worker count holds for a second."""
        seen: list = []

        def steady():
            managers = p.manager_pids("www")
            if len(managers) != 1:
                seen.clear()
                return False
            count = len(p.worker_pids("www"))
            seen.append((time.monotonic(), count))
            recent = [c for t, c in seen if t > time.monotonic() - 1.0]
            return count > 0 and seen[0][0] < time.monotonic() - 1.0 and len(set(recent)) == 1
        try:
            harness.wait_for(steady, timeout, "the pool to settle", interval=0.1)
        except AssertionError:
            self.notes.append("the pool did not settle in %.0f s (%d managers)"
                              % (timeout, len(p.manager_pids("www"))))

    def diagnostics(self) -> str:
        return "%s\n%s" % (self.pfm.diagnostics()[-6000:], self.nginx.diagnostics()[-3000:])

    # -- faults ----------------------------------------------------------------

    def inject(self, kind: str) -> None:
        getattr(self, "inject_" + kind)()

    def inject_sigkill(self) -> None:
        kills = 0
        while kills < self.budget.kills and not self.stop_event.wait(self.rng.uniform(0.4, 1.2)):
            victim = self.pick_victim()
            if victim is None:
                continue
            # Stopped, the victim takes no connection and gives none away: what
            # it holds is counted as the kill finds it. Each of those
            # connections may carry a request nginx wrote to it (kept alive,
            # several wait for one worker), which the kill costs.
            try:
                os.kill(victim, signal.SIGSTOP)
                if not stopped(victim):
                    self.notes.append("worker %d did not stop in 2 s: the connections "
                                      "counted for its kill may be short" % victim)
                held = connections_held(victim, self.pfm.address())
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
            kills += 1
            self.fault("sigkill", "worker %d holding %d connections" % (victim, held),
                       capacity=held, pid=victim)

    def pick_victim(self) -> int | None:
        """A worker to kill. Mostly one that holds a connection from nginx
        (a request runs or may come on it), since only such kills can cost a
        request; now and then any worker."""
        want_busy = self.rng.random() < 0.75
        deadline = time.monotonic() + 0.5
        address = self.pfm.address()
        while True:
            workers = self.pfm.worker_pids("www")
            busy = [w for w in workers if connections_held(w, address) > 0]
            if busy or not want_busy or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        pool = busy if want_busy and busy else workers
        return self.rng.choice(pool) if pool else None

    def inject_reload(self) -> None:
        bursts = usr1 = 0
        while bursts < self.budget.reload_bursts and not self.stop_event.wait(
                self.rng.uniform(1.0, 2.0)):
            mark = self.pfm.log_size()
            for _ in range(self.rng.randint(2, 4)):
                os.kill(self.pfm.pid, signal.SIGUSR2)
                self.fault("usr2")
                if self.stop_event.wait(self.rng.uniform(0.05, 0.3)):
                    break
            bursts += 1
            self.wait_log(r"new pool generation is accepting|reload failed", mark, 20)
            if usr1 < self.budget.usr1 and not self.stop_event.wait(self.rng.uniform(0.5, 1.5)):
                mark = self.pfm.log_size()
                os.kill(self.pfm.pid, signal.SIGUSR1)
                self.fault("usr1")
                usr1 += 1
                self.wait_log(r"error log file re-opened", mark, 10)

    def inject_logfull(self) -> None:
        """Fill the log filesystem; recycle and reopen while it is full; free it;
        reopen again, and check that pfm logs once there is room."""
        filler = self.log_mount / "filler"
        self.fill(filler)
        self.fault("logfs-full", "%s" % self.df())
        rotations = 0
        half = time.monotonic() + self.duration * 0.6
        while time.monotonic() < half and rotations < self.budget.usr1:
            if self.stop_event.wait(self.rng.uniform(1.0, 2.0)):
                return
            if rotations == 0:
                # logrotate's move while the disk is full: the reopen must create the file
                for name in ("pfm.log", "access.log"):
                    with contextlib.suppress(OSError):
                        os.rename(self.log_mount / name, self.log_mount / (name + ".1"))
                self.pfm.log_path = self.log_mount / "pfm.log"
            os.kill(self.pfm.pid, signal.SIGUSR1)
            self.fault("usr1", "while full")
            rotations += 1
        grown = self.pfm.log_size() + self.size_of("access.log")
        filler.unlink()
        self.fault("logfs-freed", self.df())
        self.notes.append("while the disk was full (%d USR1) the error and access logs "
                          "held %d bytes after the rename" % (rotations, grown))
        mark = self.pfm.log_size()
        os.kill(self.pfm.pid, signal.SIGUSR1)
        self.fault("usr1", "after freeing")
        if not self.wait_log(r"error log file re-opened", mark, 10):
            self.notes.append("no 'error log file re-opened' after space came back")

    def inject_slowpeers(self) -> None:
        self.fault("slowpeers", "%d silent, %d trickling, %d flooding" % (
            self.budget.silent, self.budget.trickling, self.budget.flooding))

    def wait_log(self, pattern: str, mark: int, timeout: float) -> bool:
        """Until `pattern` shows in the error log after offset `mark`; bounded,
        and given up at once when the run is over."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rx.search(self.pfm.log()[mark:]):
                return True
            if self.stop_event.wait(0.1):
                return False
        self.notes.append("no /%s/ in the log within %.0f s" % (pattern, timeout))
        return False

    # -- the log filesystem ------------------------------------------------------

    def mount(self, directory: Path) -> None:
        """A 2 MiB tmpfs for the run directory: config, sockets, error and access logs."""
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "pfm-soak",
                               str(directory)], capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError("cannot mount a tmpfs for the log-full scenario (needs root "
                                 "and CAP_SYS_ADMIN): %s" % done.stderr.strip())
        self.log_mount = directory

    def unmount(self) -> None:
        if self.log_mount is None:
            return
        done = subprocess.run(["umount", str(self.log_mount)], capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(self.log_mount)], capture_output=True)
        self.log_mount = None

    def fill(self, path: Path) -> None:
        with open(path, "wb", buffering=0) as f:
            for block in (1 << 16, 4096, 512, 64, 1):
                while True:
                    try:
                        f.write(b"\0" * block)
                    except OSError:
                        break

    def size_of(self, name: str) -> int:
        try:
            return os.path.getsize(self.log_mount / name)
        except OSError:
            return 0

    def df(self) -> str:
        st = os.statvfs(self.log_mount)
        return "%d kB free" % (st.f_bavail * st.f_frsize // 1024)

    # -- accounting --------------------------------------------------------------

    def account(self, result: Result) -> None:
        """Match each failure to a fault that explains it, or to none."""
        nginx_log = self.nginx.error_log_text().splitlines()
        rotated = self.pfm.log_path.with_name(self.pfm.log_path.name + ".1")
        pfm_log = harness.read_text(rotated) + self.pfm.log()
        result.explained, unexplained = attribute(result.failed, result.faults)
        result.unexplained = [(o, self.context(o, nginx_log, pfm_log)) for o in unexplained]
        result.incidents = [line for line in pfm_log.splitlines()
                            if re.search(r"ALERT:|crashed|exception in the application", line)]

    def context(self, outcome: Outcome, nginx_log: list[str], pfm_log: str) -> list[str]:
        """What nginx said about this request, and pfm's log lines of that moment."""
        needle = "id=%s " % outcome.rid
        lines = ["nginx: " + re.sub(r"^\S+ \S+ ", "", line)[:300]
                 for line in nginx_log if needle in line or ("id=%s&" % outcome.rid) in line]
        start = time.localtime(outcome.wall - 1)
        end = time.localtime(outcome.wall + (outcome.t1 - outcome.t0) + 1)
        lo, hi = time.strftime("%H:%M:%S", start), time.strftime("%H:%M:%S", end)
        during = [line for line in pfm_log.splitlines()
                  if lo <= (line[13:21] if line.startswith("[") else "") <= hi
                  and "said into stderr" not in line and " started" not in line]
        if len(during) > 10:    # the first and the last of a long window
            during = during[:5] + ["..."] + during[-5:]
        return lines[:3] + ["pfm: " + line[:300] for line in during]
