"""Real processes for the integration and end-to-end tests: a pfm master with
its pools, a Debian nginx in front of it, and small FastCGI clients.

Everything runs on loopback addresses or unix sockets in a private temporary
directory, and everything started here is tracked so that it can be killed
even when a test fails half-way: each process gets PFM_TEST_SESSION=<token>
in its environment (inherited by every fork, and still visible in
/proc/PID/environ after an application clears os.environ), so the session
finalizer can find any survivor, daemonized or orphaned.

Every wait is bounded: helpers poll with a deadline and raise with the logs
when it passes.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from wsgiref.util import setup_testing_defaults

from pfm import fastcgi

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
APPS = TESTS / "apps"

SESSION_VAR = "PFM_TEST_SESSION"
SESSION_TOKEN = "%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])

# php-fpm's line prefix: [28-Nov-2026 18:41:10] (a debug log_level adds .%06d)
TIME_PREFIX = r"\[\d{2}-[A-Z][a-z]{2}-\d{4} \d{2}:\d{2}:\d{2}(?:\.\d{6})?\] "

_base_dir: str | None = None


def base_dir() -> str:
    """The session's private directory, short enough for unix socket paths."""
    global _base_dir
    if _base_dir is None:
        _base_dir = tempfile.mkdtemp(prefix="pfmt-", dir="/tmp")
    return _base_dir


def new_dir(name: str = "run") -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:20]
    return Path(tempfile.mkdtemp(prefix=safe + "-", dir=base_dir()))


def remove_base_dir() -> None:
    global _base_dir
    if _base_dir is not None:
        shutil.rmtree(_base_dir, ignore_errors=True)
        _base_dir = None


def test_env(extra: dict | None = None) -> dict:
    """The environment of every process the tests start."""
    env = dict(os.environ)
    env[SESSION_VAR] = SESSION_TOKEN
    env.pop("PYTHONWARNINGS", None)
    env["PYTHONUNBUFFERED"] = "1"
    # The pfm under test is the one beside these tests, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if extra:
        env.update(extra)
    return env


# ---- small utilities -----------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02, on_fail=None):
    """Poll `predicate` until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = on_fail() if on_fail else ""
            raise AssertionError("timed out after %.1f s waiting for %s%s"
                                 % (timeout, what, "\n" + detail if detail else ""))
        time.sleep(interval)


def read_text(path) -> str:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# ---- /proc ---------------------------------------------------------------------


def proc_stat(pid: int) -> dict | None:
    """state, ppid and pgrp of a process, or None if it does not exist."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("latin-1")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = data[data.rindex(")") + 2:].split()
    return {"state": rest[0], "ppid": int(rest[1]), "pgrp": int(rest[2])}


def alive(pid: int) -> bool:
    """Exists and is not a zombie (a zombie has exited; only its parent's wait is due)."""
    st = proc_stat(pid)
    return st is not None and st["state"] not in ("Z", "X")


def cmdline(pid: int) -> str:
    """The process title as ps shows it (setproctitle rewrites this)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return data.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def children_of(pid: int) -> list[int]:
    out = []
    for p in all_pids():
        st = proc_stat(p)
        if st and st["ppid"] == pid and st["state"] not in ("Z", "X"):
            out.append(p)
    return sorted(out)


def group_members(pgrp: int) -> list[int]:
    """Live processes of a process group (it outlives its leader)."""
    out = []
    for p in all_pids():
        st = proc_stat(p)
        if st and st["pgrp"] == pgrp and st["state"] not in ("Z", "X"):
            out.append(p)
    return sorted(out)


def pfm_tree(master: int) -> list[int]:
    """Live processes in the master's process group, below the master, or in
    a process group led by one of those (a worker's)."""
    stats = {}
    for p in all_pids():
        st = proc_stat(p)
        if st and st["state"] not in ("Z", "X"):
            stats[p] = st
    below, grew = {master}, True
    while grew:
        more = {p for p, st in stats.items() if st["ppid"] in below} - below
        below |= more
        grew = bool(more)
    groups = {master} | {p for p in below if p in stats and stats[p]["pgrp"] == p}
    return sorted(p for p, st in stats.items()
                  if st["pgrp"] in groups or (p in below and p in stats))


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time a process has used (0 if it is gone)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("latin-1")
    except OSError:
        return 0.0
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def vm_kb(pid: int, field: str = "VmRSS") -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def session_pids() -> list[int]:
    """Every live process started by this test session (see SESSION_VAR)."""
    mark = ("%s=%s" % (SESSION_VAR, SESSION_TOKEN)).encode()
    me = os.getpid()
    out = []
    for p in all_pids():
        if p == me:
            continue
        try:
            with open("/proc/%d/environ" % p, "rb") as f:
                env = f.read()
        except OSError:
            continue
        if mark in env.split(b"\0") and alive(p):
            out.append(p)
    return out


def kill_session_leftovers() -> list[tuple[int, str]]:
    """SIGKILL whatever this session started and is still running; returns them."""
    killed = []
    for _ in range(5):
        pids = session_pids()
        if not pids:
            break
        for p in pids:
            killed.append((p, cmdline(p)))
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return killed


# ---- pfm -----------------------------------------------------------------------


def _ini_value(value) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)


class Pfm:
    """One pfm master, started in the foreground (-F) on a config file.

    `pool` is a dict of pool directives for the pool named `name`, `pools` a
    dict of several pools, `global_` the [global] directives; defaults fill in
    a loopback TCP listen address, `pm = static`, 2 workers, the test
    applications' directory as pythonpath and an error_log in the run
    directory. `raw` is a whole config file instead, where @DIR@, @LOG@,
    @APPS@ and @PORT@ are replaced. `listen="unix"` means a socket file in the
    run directory.
    """

    def __init__(self, workdir: Path, pool: dict | None = None, pools: dict | None = None,
                 global_: dict | None = None, raw: str | None = None, name: str = "www",
                 args=(), env: dict | None = None, rlimits: dict | None = None):
        self.dir = Path(workdir)
        self.rlimits = dict(rlimits or {})    # resource.RLIMIT_* -> (soft, hard) for pfm
        self.conf_path = self.dir / "pfm.conf"
        self.log_path = self.dir / "pfm.log"
        self.out_path = self.dir / "pfm.out"
        self.args = list(args)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.pools: dict[str, dict] = {}
        self.port = free_port()
        self._spec = None if raw is not None else (
            dict(global_ or {}), pools if pools is not None else {name: dict(pool or {})})
        if raw is not None:
            text = (raw.replace("@DIR@", str(self.dir)).replace("@LOG@", str(self.log_path))
                    .replace("@APPS@", str(APPS)).replace("@PORT@", str(self.port)))
        else:
            if pools is None:
                pools = {name: dict(pool or {})}
            text = self._render(global_ or {}, pools)
        self.conf_path.write_text(text)
        self.config_text = text

    def _render(self, global_: dict, pools: dict) -> str:
        g = {"error_log": str(self.log_path), "daemonize": "no"}
        g.update(global_)
        lines = ["[global]"] + ["%s = %s" % (k, _ini_value(v)) for k, v in g.items()]
        first = True
        for name, settings in pools.items():
            p = {"listen": None, "pm": "static", "pm.max_children": 2,
                 "app": "testapps:app", "pythonpath": str(APPS)}
            p.update(settings)
            if p["listen"] is None:
                p["listen"] = "127.0.0.1:%d" % (self.port if first else free_port())
            elif p["listen"] == "unix":
                p["listen"] = str(self.dir / ("%s.sock" % name))
            first = False
            self.pools[name] = p
            lines += ["", "[%s]" % name]
            lines += ["%s = %s" % (k, _ini_value(v)) for k, v in p.items() if v is not None]
        return "\n".join(lines) + "\n"

    # -- addresses -------------------------------------------------------------

    def listen(self, pool: str | None = None) -> str:
        pool = pool or next(iter(self.pools))
        return self.pools[pool]["listen"]

    def address(self, pool: str | None = None):
        """What socket.connect() takes: a path, (host, port) or (v6host, port)."""
        return parse_address(self.listen(pool))

    def backend(self, pool: str | None = None) -> str:
        """The same address as nginx's fastcgi_pass writes it."""
        listen = self.listen(pool)
        return "unix:" + listen if listen.startswith("/") else listen

    # -- life cycle ------------------------------------------------------------

    def command(self) -> list[str]:
        # -R: the suite runs as root in CI; pools without `user` run as root then.
        return [sys.executable, "-m", "pfm", "-F", "-R", "-y", str(self.conf_path)] + self.args

    def start(self, wait: bool = True, workers: bool = True) -> "Pfm":
        """Start and (by default) wait until ready with every worker up.

        A port the harness picked can be taken by someone else's outgoing
        connection before pfm binds it; then pfm is started again on fresh
        ports (the failed attempt's files are kept beside, as *.attemptN)."""
        for attempt in range(1, 4):
            self._launch()
            if not wait:
                return self
            try:
                self.wait_ready()
                break
            except AssertionError:
                if (self._spec is None or attempt == 3 or self.proc.poll() is None
                        or "Address already in use" not in self.log() + self.output()):
                    raise
            for path in (self.log_path, self.out_path, self.conf_path):
                if path.exists():
                    path.rename(path.with_name(path.name + ".attempt%d" % attempt))
            self.port = free_port()
            self.pools = {}
            self.config_text = self._render(*self._spec)
            self.conf_path.write_text(self.config_text)
        if workers:
            self.wait_workers()
        return self

    def _launch(self) -> None:
        out = open(self.out_path, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         cwd=str(self.dir), env=test_env(self.env),
                                         start_new_session=True,
                                         preexec_fn=self._set_rlimits if self.rlimits else None)
        finally:
            out.close()
        self.pid = self.proc.pid

    def _set_rlimits(self) -> None:
        import resource
        for which, limits in self.rlimits.items():
            resource.setrlimit(which, limits)

    def wait_ready(self, timeout: float = 10.0) -> None:
        def ready():
            if "ready to handle connections" in self.log():
                return True
            if self.proc.poll() is not None:
                raise AssertionError("pfm exited with status %s before it was ready\n%s"
                                     % (self.proc.returncode, self.diagnostics()))
            return False
        wait_for(ready, timeout, "pfm to log 'ready to handle connections'",
                 on_fail=self.diagnostics)

    def expected_workers(self) -> dict[str, int]:
        return {name: int(p.get("pm.max_children", 2)) for name, p in self.pools.items()
                if p.get("pm", "static") == "static"}

    def wait_workers(self, counts: dict[str, int] | None = None, timeout: float = 10.0,
                     exclude=()) -> dict[str, list[int]]:
        """Until every static pool has its pm.max_children workers (none of `exclude`)."""
        counts = counts or self.expected_workers()

        def check():
            got = {name: [p for p in self.worker_pids(name) if p not in exclude]
                   for name in counts}
            return got if all(len(got[n]) == c for n, c in counts.items()) else None
        return wait_for(check, timeout, "workers %r" % counts,
                        on_fail=lambda: "have %r\n%s" % (
                            {n: self.worker_pids(n) for n in counts}, self.diagnostics()))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Stop the whole tree: `sig` to the master, SIGKILL to the group if it lingers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_all()
        return self.proc.returncode

    def kill_all(self) -> None:
        """SIGKILL the master's process group (master and managers) and the
    groups its workers lead."""
        if self.proc is None:
            return
        groups = {self.pid} | {st["pgrp"] for st in map(proc_stat, self.tree()) if st}
        for pgrp in groups:
            try:
                os.killpg(pgrp, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- observation -----------------------------------------------------------

    def log(self) -> str:
        return read_text(self.log_path)

    def output(self) -> str:
        return read_text(self.out_path)

    def diagnostics(self) -> str:
        return "--- %s\n%s--- error log\n%s--- stdout/stderr\n%s" % (
            self.conf_path, read_text(self.conf_path), self.log(), self.output())

    def wait_log(self, pattern: str, timeout: float = 10.0, start: int = 0,
                 flags: int = re.M) -> re.Match:
        """The first match of `pattern` in the error log (from offset `start`)."""
        rx = re.compile(pattern, flags)
        return wait_for(lambda: rx.search(self.log(), start), timeout,
                        "log line /%s/" % pattern, on_fail=self.diagnostics)

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def manager_pids(self, pool: str | None = None) -> list[int]:
        want = "pfm: pool %s manager" % pool if pool else None
        out = []
        for p in children_of(self.pid):
            title = cmdline(p)
            if (want and title == want) or (not want and re.fullmatch(
                    r"pfm: pool \S+ manager", title)):
                out.append(p)
        return out

    def worker_pids(self, pool: str | None = None) -> list[int]:
        out = []
        for name in ([pool] if pool else list(self.pools)):
            for m in self.manager_pids(name):
                out += [p for p in children_of(m) if cmdline(p) == "pfm: pool %s" % name]
        return sorted(out)

    def tree(self) -> list[int]:
        """Every live process of this pfm: the master's process group (the
        master and its pool managers), and the groups of the master's
        descendants (each worker leads one, with what the app forked)."""
        return pfm_tree(self.pid) if self.pid else []


def parse_address(listen: str):
    if listen.startswith("/"):
        return listen
    if listen.startswith("["):
        host, _, port = listen[1:].partition("]:")
        return (host, int(port))
    host, _, port = listen.rpartition(":")
    return (host or "127.0.0.1", int(port))


def connect(address, timeout: float = 10.0) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    elif ":" in address[0]:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


# ---- a raw FastCGI client on pfm.fastcgi ------------------------------------------


def request_params(path: str = "/", query: str = "", method: str = "GET",
                   body: bytes = b"", **extra) -> dict:
    """The params nginx's stock fastcgi_params would send for `path`."""
    uri = path + ("?" + query if query else "")
    params = {
        "QUERY_STRING": query, "REQUEST_METHOD": method, "CONTENT_TYPE": "",
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "SCRIPT_NAME": path, "REQUEST_URI": uri, "DOCUMENT_URI": path,
        "DOCUMENT_ROOT": "/nonexistent", "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_SCHEME": "http", "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "pfm-tests", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
        "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "80", "SERVER_NAME": "localhost",
        "HTTP_HOST": "localhost",
    }
    params.update(extra)
    return params


class Response:
    def __init__(self, stdout: bytes, stderr: bytes, end):
        self.raw = stdout
        self.stderr = stderr
        self.end = end
        self.status, self.headers, self.body = fastcgi.split_headers(stdout)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:80])


class FcgiConnection:
    """A client connection to a pfm pool built on pfm.fastcgi's ClientConnection;
    with keep_conn several requests run over it, one after the other."""

    def __init__(self, address, timeout: float = 10.0):
        self.sock = connect(address, timeout)
        self.conn = fastcgi.ClientConnection()
        self.closed = False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_event(self):
        """The next record from the server, or fastcgi.CLOSED."""
        while True:
            event = self.conn.next_event()
            if event is not fastcgi.NEED_DATA:
                return event
            data = self.sock.recv(262144)
            self.conn.receive_data(data)

    def events(self):
        """Records until END_REQUEST (included) or the connection closes."""
        while True:
            event = self.next_event()
            if event is fastcgi.CLOSED:
                self.closed = True
                return
            yield event
            if isinstance(event, fastcgi.EndRequest):
                return

    def request(self, params: dict, body: bytes = b"", keep_conn: bool = False,
                request_id: int = 1) -> Response:
        self.send(fastcgi.encode_request(params, body, request_id=request_id,
                                         keep_conn=keep_conn))
        return self.read_response()

    def read_response(self) -> Response:
        out, err, end = [], [], None
        for event in self.events():
            if isinstance(event, fastcgi.Stdout):
                out.append(event.data)
            elif isinstance(event, fastcgi.Stderr):
                err.append(event.data)
            elif isinstance(event, fastcgi.EndRequest):
                end = event
        if end is None:
            raise ConnectionError("connection closed before END_REQUEST (got %d bytes)"
                                  % sum(map(len, out)))
        return Response(b"".join(out), b"".join(err), end)


def fcgi_get(address, path: str = "/", query: str = "", method: str = "GET",
             body: bytes = b"", timeout: float = 10.0, **extra) -> Response:
    """One request on a new connection, as nginx does without fastcgi_keep_conn."""
    with FcgiConnection(address, timeout) as c:
        return c.request(request_params(path, query, method, body, **extra), body)


def wait_serving(address, timeout: float = 10.0) -> Response:
    """Until the pool answers /hello (connection refused or reset: retry)."""
    def attempt():
        try:
            r = fcgi_get(address, "/hello", timeout=2)
            return r if r.status == 200 else None
        except OSError:
            return None
    return wait_for(attempt, timeout, "the pool at %r to answer" % (address,), interval=0.1)


class Background(threading.Thread):
    """Run fn() in a thread; .join_result() gives its value or re-raises."""

    def __init__(self, fn, *args, **kwargs):
        super().__init__(daemon=True)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result = self.error = None
        self.finished_at: float | None = None
        self.start()

    def run(self):
        try:
            self.result = self.fn(*self.args, **self.kwargs)
        except BaseException as e:  # handed to the test thread
            self.error = e
        finally:
            self.finished_at = time.monotonic()

    def join_result(self, timeout: float = 30.0):
        self.join(timeout)
        if self.is_alive():
            raise AssertionError("background call %s did not finish in %.0f s"
                                 % (getattr(self.fn, "__name__", self.fn), timeout))
        if self.error is not None:
            raise self.error
        return self.result


# ---- flup6's FastCGI client, on Python 3 ---------------------------------------------
#
# flup6 1.1.1's flup.client.fcgi_app was written for Python 2, where str was
# bytes: it builds records with chr() and '' and joins recv() results with ''.
# Handing it a socket that speaks latin-1 text (and struct that unpacks such
# text) runs its unchanged protocol code on Python 3, byte for byte.

from flup.client import fcgi_app as _flup  # noqa: E402


class _Latin1Struct:
    calcsize = staticmethod(struct.calcsize)

    @staticmethod
    def pack(fmt, *values):
        return struct.pack(fmt, *values)

    @staticmethod
    def unpack(fmt, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        return struct.unpack(fmt, data)


_flup.struct = _Latin1Struct()


class _TextSocket:
    def __init__(self, sock: socket.socket):
        self._sock = sock

    def send(self, data) -> int:
        if isinstance(data, str):
            data = data.encode("latin-1")
        return self._sock.send(data)

    def recv(self, n: int) -> str:
        return self._sock.recv(n).decode("latin-1")

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


class FlupClient(_flup.FCGIApp):
    """flup6's FCGIApp (a WSGI app forwarding to a FastCGI server) on any of
    pfm's transports: unix socket, IPv4 or IPv6."""

    def __init__(self, address, timeout: float = 10.0):
        super().__init__(connect=address)
        self._address = address
        self._timeout = timeout

    def _getConnection(self):
        return _TextSocket(connect(self._address, self._timeout))

    def get_values(self, names):
        sock = self._getConnection()
        try:
            return self._fcgiGetValues(sock, names)
        finally:
            sock.close()


def flup_request(address, path: str = "/", query: str = "", method: str = "GET",
                 body: bytes = b"", headers: dict | None = None):
    """Drive FlupClient like a WSGI server would: (status, headers, body bytes)."""
    environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": path, "PATH_INFO": "",
               "QUERY_STRING": query, "REQUEST_URI": path + ("?" + query if query else ""),
               "SERVER_NAME": "localhost", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO()}
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/octet-stream"
    for k, v in (headers or {}).items():
        environ["HTTP_" + k.upper().replace("-", "_")] = v
    setup_testing_defaults(environ)
    got = {}

    def start_response(status, hdrs, exc_info=None):
        got["status"], got["headers"] = status, hdrs
        return lambda data: None

    result = FlupClient(address)(environ, start_response)
    body_text = "".join(result)
    return got["status"], got["headers"], body_text.encode("latin-1"), \
        environ["wsgi.errors"].getvalue()


# ---- cgi-fcgi (Debian's libfcgi-bin) ---------------------------------------------------


def cgi_fcgi(listen: str, env: dict, body: bytes = b"", timeout: float = 15.0):
    """`cgi-fcgi -bind -connect ADDR` with CGI variables in its environment and the
    body on stdin; returns (status, headers, body) parsed from what it prints."""
    exe = shutil.which("cgi-fcgi") or "/usr/bin/cgi-fcgi"
    if not os.path.exists(exe):
        raise AssertionError("cgi-fcgi not found: install Debian's libfcgi-bin "
                             "(scripts/setup does)")
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), SESSION_VAR: SESSION_TOKEN}
    full_env.update(env)
    if body:
        full_env["CONTENT_LENGTH"] = str(len(body))
    proc = subprocess.run([exe, "-bind", "-connect", listen], input=body, env=full_env,
                          capture_output=True, timeout=timeout)
    if proc.returncode != 0 and not proc.stdout:
        raise AssertionError("cgi-fcgi failed (%d): %r" % (proc.returncode, proc.stderr))
    status, headers, out = fastcgi.split_headers(proc.stdout)
    return status, headers, out


# ---- nginx -------------------------------------------------------------------------


def nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError("nginx not found (looked in PATH and /usr/sbin): install "
                         "Debian's nginx package (scripts/setup does)")


FASTCGI_PARAMS = "/etc/nginx/fastcgi_params"


class Nginx:
    """A private nginx on a free loopback port in front of `backend` (what
    fastcgi_pass takes: 127.0.0.1:9000, [::1]:9000 or unix:/path).

    `location /` has the stock `include fastcgi_params;` and `fastcgi_pass`
    and nothing else unless asked: keepalive=N adds an upstream block with
    `keepalive N` and `fastcgi_keep_conn on`; buffering=False adds
    `fastcgi_buffering off`; max_body sets client_max_body_size (0 = no
    limit); `locations` maps extra location paths to extra directives.
    `site` is a whole `server { ... }` block instead (a recipe's, from docs/),
    in which @PORT@ stands for the port nginx listens on.
    """

    def __init__(self, workdir: Path, backend: str, keepalive: int | None = None,
                 buffering: bool = True, max_body: str | None = None,
                 locations: dict | None = None, site: str | None = None):
        self.dir = Path(workdir)
        self.backend = backend
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.conf_path = self.dir / "nginx.conf"
        self.error_log = self.dir / "nginx-error.log"
        self.proc: subprocess.Popen | None = None
        self.binary = nginx_binary()
        if not os.path.exists(FASTCGI_PARAMS):
            raise AssertionError("%s is missing (Debian's nginx-common ships it)"
                                 % FASTCGI_PARAMS)
        self._options = (keepalive, buffering, max_body, locations or {}, site)
        self.conf_path.write_text(self._render(*self._options))

    def _render(self, keepalive, buffering, max_body, locations, site=None) -> str:
        d = self.dir
        upstream = ""
        pass_to = self.backend
        common = ["include %s;" % FASTCGI_PARAMS]
        if keepalive:
            upstream = "    upstream pfm_backend {\n        server %s;\n        keepalive %d;\n" \
                       "    }\n" % (self.backend, keepalive)
            pass_to = "pfm_backend"
            common.append("fastcgi_keep_conn on;")
        common.append("fastcgi_pass %s;" % pass_to)
        root_extra = [] if buffering else ["fastcgi_buffering off;"]
        blocks = ["        location / {\n" + "".join(
            "            %s\n" % line for line in common + root_extra) + "        }\n"]
        for path, extra in locations.items():
            blocks.append("        location %s {\n" % path + "".join(
                "            %s\n" % line for line in common + list(extra)) + "        }\n")
        user = "user root;\n" if os.geteuid() == 0 else ""
        body_size = "        client_max_body_size %s;\n" % max_body if max_body is not None \
            else ""
        server = (f"    server {{\n        listen 127.0.0.1:{self.port};\n"
                  f"        server_name localhost;\n{body_size}{''.join(blocks)}    }}")
        if site is not None:
            # Debian's nginx.conf includes the MIME types a site's static files need.
            server = "    include /etc/nginx/mime.types;\n" + site.replace("@PORT@",
                                                                           str(self.port))
        return f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi_temp;
    proxy_temp_path {d}/proxy_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
{upstream}{server}
}}
"""

    def start(self) -> "Nginx":
        """Start and wait for the port; on a port taken meanwhile, retry on another."""
        for attempt in range(1, 4):
            try:
                return self._start_once()
            except AssertionError:
                if attempt == 3 or "Address already in use" not in self.error_log_text():
                    raise
            self.error_log.rename(self.error_log.with_name("nginx-error.log.attempt%d"
                                                           % attempt))
            self.port = free_port()
            self.url = "http://127.0.0.1:%d" % self.port
            self.conf_path.write_text(self._render(*self._options))
        return self

    def _start_once(self) -> "Nginx":
        out = open(self.dir / "nginx.out", "ab")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-p", str(self.dir), "-c", str(self.conf_path),
                 "-e", str(self.error_log)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=test_env(), start_new_session=True)
        finally:
            out.close()

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited with %s\n%s" % (
                    self.proc.returncode, self.diagnostics()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(listening, 10, "nginx to listen on port %d" % self.port,
                 on_fail=self.diagnostics)
        return self

    def diagnostics(self) -> str:
        return "--- nginx.conf\n%s--- nginx error log\n%s--- nginx output\n%s" % (
            read_text(self.conf_path), read_text(self.error_log),
            read_text(self.dir / "nginx.out"))

    def error_log_text(self) -> str:
        return read_text(self.error_log)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


# ---- other helpers -------------------------------------------------------------------


def established_to(port: int) -> int:
    """TCP connections in ESTABLISHED state whose remote end is local port `port`
    (the client side of connections into a pfm pool), from /proc/net/tcp*."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    remote, state = fields[2], fields[3]
                    if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            pass
    return count


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what a test started as a process-group leader (start_new_session),
    whatever it left behind, and reap the leader."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)


def errno_name(e: OSError) -> str:
    return errno.errorcode.get(e.errno, str(e.errno))


# ---- property-based fuzzing (hypothesis) -----------------------------------------------


def fuzz_settings(max_examples: int, deadline_ms: int = 2000):
    """hypothesis settings for CI: bounded examples, a deadline that a shared
    machine's hiccup does not trip, no example database in the checkout, and
    no shrinking: hypothesis shrinks for up to 5 minutes and treats
    pytest-timeout's exception as one more failure to shrink, so a failing
    example is reported as found. The examples are derived from each test's
    name, so a run of the suite is reproducible and main stays green on what
    it passed; exploring is a run by hand: PFM_FUZZ_RANDOM=1 draws new
    examples, PFM_FUZZ_SCALE=N runs N times as many, PFM_FUZZ_SHRINK=1 shrinks."""
    from hypothesis import HealthCheck, Phase, settings

    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    if os.environ.get("PFM_FUZZ_SHRINK") == "1":
        phases.append(Phase.shrink)
    scale = max(1, int(os.environ.get("PFM_FUZZ_SCALE", "1") or 1))
    return settings(max_examples=max_examples * scale, deadline=deadline_ms, database=None,
                    phases=phases, print_blob=False,
                    derandomize=os.environ.get("PFM_FUZZ_RANDOM") != "1",
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
