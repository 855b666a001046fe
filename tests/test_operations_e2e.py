"""Operating pfm, end to end (issue 5): reloads under load that lose no
request and pick up new code, a bad config at reload, logrotate-style
reopening, systemd's notify protocol against a fake NOTIFY_SOCKET, the
emergency restart threshold, a pool manager's restart, workers' output in
the error log, and isolation between pools (users, environment, limits,
socket ownership and ACLs, allowed clients, file descriptors), which needs
root: CI runs the suite as root, so these create the users they need.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import harness
import pytest
import requests
from harness import ROOT, TIME_PREFIX, fcgi_get, wait_for

USERS = ("pfmtest_a", "pfmtest_b")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs root (CI runs as root)")


# ---- helpers -----------------------------------------------------------------------------


def write_module(directory: Path, version: int) -> None:
    """reloadapp.py answering 'VERSION PID'; a new version differs in size too."""
    text = ("import os\n"
            "VERSION = %d\n"
            "PADDING = %r\n"
            "def app(environ, start_response):\n"
            "    body = ('%%d %%d' %% (VERSION, os.getpid())).encode()\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain'),\n"
            "                              ('Content-Length', str(len(body)))])\n"
            "    return [body]\n" % (version, "x" * version))
    tmp = directory / "reloadapp.py.tmp"
    tmp.write_text(text)
    os.replace(tmp, directory / "reloadapp.py")


class Load:
    """`threads` clients through nginx until stopped (each bounded), GETs and
    POSTs alternating (nginx retries neither a POST nor anything after a
    reset it did not cause, so a lost request shows). Records (monotonic
    time, body) of each success and every failure."""

    def __init__(self, url: str, threads: int = 4, limit: int = 20000):
        self.url = url
        self.stop_event = threading.Event()
        self.ok: list[tuple[float, str]] = []
        self.failures: list = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(i, limit), daemon=True)
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def client(self, i: int, limit: int) -> None:
        with requests.Session() as s:
            for k in range(limit):
                if self.stop_event.is_set():
                    return
                try:
                    if (i + k) % 2:
                        r = s.post(self.url, data=b"body %d" % k, timeout=15)
                    else:
                        r = s.get(self.url, timeout=15)
                except requests.RequestException as e:
                    with self.lock:
                        self.failures.append(repr(e))
                    continue
                with self.lock:
                    if r.status_code == 200:
                        self.ok.append((time.monotonic(), r.text))
                    else:
                        self.failures.append((r.status_code, r.text[:200]))

    def seen_since(self, t: float) -> list[str]:
        with self.lock:
            return [body for when, body in self.ok if when >= t]

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
            assert not t.is_alive(), "a load client did not stop"


def usr2_and_wait(p: harness.Pfm, timeout: float = 20) -> None:
    mark = p.log_size()
    os.kill(p.pid, signal.SIGUSR2)
    p.wait_log(r"NOTICE: new pool generation is accepting", start=mark, timeout=timeout)


def reload_with_new_code(p: harness.Pfm, load: Load, code: Path, version: int) -> None:
    """Write version `version` of the app, SIGUSR2, and check that it is served,
    that every old worker exits and is replaced, and that only it is served then."""
    before = set(p.worker_pids())
    write_module(code, version)
    prefix = "%d " % version
    t_reload = time.monotonic()
    usr2_and_wait(p)
    wait_for(lambda: any(b.startswith(prefix) for b in load.seen_since(t_reload)), 10,
             "version %d to be served" % version,
             on_fail=lambda: repr(load.seen_since(t_reload)[-5:]))
    wait_for(lambda: not any(harness.alive(w) for w in before), 10,
             "the old workers to exit", on_fail=p.diagnostics)
    after = set(p.wait_workers()["www"])
    assert not after & before, (before, after)
    t_settled = time.monotonic()
    wait_for(lambda: len(load.seen_since(t_settled)) >= 10, 10, "traffic after the reload")
    old = [b for b in load.seen_since(t_settled) if not b.startswith(prefix)]
    assert not old, "old code served after the old workers exited: %r" % old[:5]


def recv_all(sock: socket.socket, into: list, until, timeout: float, what: str) -> str:
    """Datagrams from the fake NOTIFY_SOCKET into `into` until one satisfies `until`."""
    deadline = time.monotonic() + timeout
    for message in into:
        if until(message):
            return message
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        message = data.decode()
        into.append(message)
        if until(message):
            return message
    raise AssertionError("no notify message with %s in %.0f s; got %r" % (what, timeout, into))


# ---- reload ----------------------------------------------------------------------------------


@pytest.mark.timeout(150)
@pytest.mark.parametrize("keepalive", [None, 8], ids=["close", "keepalive"])
@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_five_reloads_under_load_lose_nothing_and_serve_new_code(
        pfm_factory, nginx_factory, run_dir, preload, keepalive):
    """SIGUSR2 five times while 4 clients GET and POST through nginx without
    pause (nginx with and without fastcgi_keep_conn): zero failed and zero
    non-2xx responses, the master's pid is the same, after each reload every
    worker is new, and the app module, changed on disk before each reload,
    is served in its new version (with preload on and off)."""
    code = run_dir / "code"
    code.mkdir()
    write_module(code, 1)
    p = pfm_factory(pool={"app": "reloadapp:app", "pythonpath": str(code), "pm.max_children": 2,
                          "preload": preload})
    n = nginx_factory(p.backend(), keepalive=keepalive)
    master = p.pid
    load = Load(n.url + "/")
    try:
        wait_for(lambda: len(load.ok) > 20, 10, "the load to run")
        for version in range(2, 7):
            reload_with_new_code(p, load, code, version)
    finally:
        load.stop()
    assert not load.failures, "%d failed: %r" % (len(load.failures), load.failures[:10])
    assert len(load.ok) > 200
    assert p.running() and p.pid == master
    assert len(re.findall(r"new pool generation is accepting", p.log())) == 5
    assert "[error]" not in n.error_log_text(), n.error_log_text()[-3000:]


@pytest.mark.timeout(60)
def test_bad_config_at_reload_keeps_the_old_pools_serving(pfm_factory, nginx_factory):
    """A reload with a broken config file logs the error (file, line,
    directive) and 'reload failed'; the running pool keeps serving with the
    same workers; once the file is fixed, the next SIGUSR2 reloads."""
    p = pfm_factory(pool={"pm.max_children": 2})
    n = nginx_factory(p.backend())
    workers = p.worker_pids()
    good = p.conf_path.read_text()
    p.conf_path.write_text(good + "pm.max_children = many\n")
    mark = p.log_size()
    os.kill(p.pid, signal.SIGUSR2)
    p.wait_log(r"ERROR: .*reload failed", start=mark)
    assert re.search(r"ERROR: \[%s:\d+\].*pm\.max_children" % re.escape(str(p.conf_path)),
                     p.log()[mark:]), p.log()[mark:]
    for _ in range(10):
        r = requests.get(n.url + "/pid", timeout=5)
        assert r.status_code == 200 and r.json()["pid"] in workers
    time.sleep(0.5)
    assert p.running() and p.worker_pids() == workers
    p.conf_path.write_text(good)
    usr2_and_wait(p)
    wait_for(lambda: not set(p.worker_pids()) & set(workers), 10, "a new generation")
    assert requests.get(n.url + "/pid", timeout=5).status_code == 200


# ---- logs ------------------------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_usr1_after_logrotate_writes_into_new_files(pfm_factory, nginx_factory, run_dir):
    """logrotate style: error_log, access.log and slowlog renamed to *.1,
    then SIGUSR1: the master reopens them under their names ('error log file
    re-opened' in the new error log), the workers are replaced, and new
    lines of each kind land in the new files, none in the renamed ones.
    conf/logrotate.d/pfm does exactly this in its postrotate."""
    rotate_conf = (ROOT / "conf" / "logrotate.d" / "pfm").read_text()
    assert "postrotate" in rotate_conf and "-USR1" in rotate_conf
    access, slow = run_dir / "access.log", run_dir / "slow.log"
    p = pfm_factory(pool={"pm.max_children": 1, "access.log": str(access), "slowlog": str(slow),
                          "request_slowlog_timeout": "1s"})
    n = nginx_factory(p.backend())
    (old_worker,) = p.worker_pids()
    assert requests.get(n.url + "/hello?before=1", timeout=5).status_code == 200
    assert requests.get(n.url + "/sleep?s=1.4&before=1", timeout=10).status_code == 200
    wait_for(lambda: "before=1" in harness.read_text(slow), 5, "the first slowlog entry")
    wait_for(lambda: harness.read_text(access).count("\n") == 2, 5, "2 access lines")

    rotated = {}
    for path in (p.log_path, access, slow):
        rotated[path] = Path(str(path) + ".1")
        os.rename(path, rotated[path])
    os.kill(p.pid, signal.SIGUSR1)
    p.wait_log(r"NOTICE: error log file re-opened")
    (new_worker,) = p.wait_workers(exclude=(old_worker,))["www"]
    frozen = {path: old.read_text() for path, old in rotated.items()}
    assert requests.get(n.url + "/hello?after=1", timeout=5).status_code == 200
    assert requests.get(n.url + "/sleep?s=1.4&after=1", timeout=10).status_code == 200
    wait_for(lambda: "after=1" in harness.read_text(slow), 5, "a slowlog entry in the new file",
             on_fail=lambda: "new: %r\nold: %r" % (harness.read_text(slow),
                                                   rotated[slow].read_text()))
    wait_for(lambda: harness.read_text(access).count("\n") == 2, 5,
             "2 lines in the new access log",
             on_fail=lambda: "new: %r\nold: %r" % (harness.read_text(access),
                                                   rotated[access].read_text()))
    assert "GET /hello" in harness.read_text(access)
    p.wait_log(r"WARNING: \[pool www\] child %d, script .* executing too slow" % new_worker)
    for path, old in rotated.items():
        assert old.read_text() == frozen[path], "%s got lines after the reopen" % old
        assert "after=1" not in old.read_text()
    assert "before=1" not in harness.read_text(access) + harness.read_text(slow)


def test_catch_workers_output_through_nginx(pfm_factory, nginx_factory):
    """catch_workers_output = yes: an app's print() during a request through
    nginx appears in the error log as php-fpm decorates it: 'WARNING: [pool
    www] child N said into stdout: "..."'."""
    p = pfm_factory(pool={"app": "opsapps:app", "pm.max_children": 1,
                          "catch_workers_output": True})
    n = nginx_factory(p.backend())
    r = requests.get(n.url + "/say?token=ops77", timeout=5)
    assert r.status_code == 200
    p.wait_log(r'^%sWARNING: \[pool www\] child %d said into stdout: "app says ops77"$'
               % (TIME_PREFIX, r.json()["pid"]))


# ---- systemd ---------------------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_systemd_notify_ready_status_reloading_stopping(pfm_factory, run_dir):
    """Type=notify against a fake NOTIFY_SOCKET: READY=1 with MAINPID= the
    master's pid once the pools accept; a php-fpm-like STATUS= line every
    systemd_interval (1 s) counting the requests served; RELOADING=1 then
    READY=1 around a SIGUSR2 reload; STOPPING=1 on SIGTERM."""
    path = run_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    got: list[str] = []
    try:
        p = pfm_factory(global_={"systemd_interval": 1}, pool={"pm.max_children": 2},
                        env={"NOTIFY_SOCKET": str(path)})
        ready = recv_all(sock, got, lambda m: "READY=1" in m.split("\n"), 5, "READY=1")
        assert "MAINPID=%d" % p.pid in ready.split("\n"), ready
        status_rx = (r"^STATUS=Processes active: (\d+), idle: (\d+), Requests: (\d+), "
                     r"slow: (\d+), Traffic: ([0-9.e+]+)req/sec$")
        first = recv_all(sock, got, lambda m: re.search(status_rx, m, re.M), 3, "STATUS=")
        active, idle, count, slow, _ = re.search(status_rx, first, re.M).groups()
        assert (int(active), int(idle), int(slow)) == (0, 2, 0), first
        for _ in range(3):
            assert fcgi_get(p.address(), "/hello").status == 200
        def counted(message):
            m = re.search(status_rx, message, re.M)
            return m is not None and int(m.group(3)) == int(count) + 3
        recv_all(sock, got, counted, 3, "Requests: %d" % (int(count) + 3))
        del got[:]
        os.kill(p.pid, signal.SIGUSR2)
        reloading = recv_all(sock, got, lambda m: "RELOADING=1" in m.split("\n"), 5,
                             "RELOADING=1")
        assert re.search(r"^MONOTONIC_USEC=\d+$", reloading, re.M), reloading
        after = got.index(reloading)
        recv_all(sock, got, lambda m: "READY=1" in m.split("\n") and got.index(m) > after, 10,
                 "READY=1 after RELOADING=1")
        del got[:]
        os.kill(p.pid, signal.SIGTERM)
        recv_all(sock, got, lambda m: "STOPPING=1" in m.split("\n"), 5, "STOPPING=1")
        assert p.proc.wait(10) == 0
    finally:
        sock.close()


# ---- supervision -------------------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_emergency_restart_threshold_reloads(pfm_factory):
    """emergency_restart_threshold = 2 within emergency_restart_interval =
    10s: two workers dying of SIGSEGV make the master log 'failed processes
    threshold (2 in 10 sec) is reached, initiating reload' and start a new
    generation of workers, which serves."""
    p = pfm_factory(global_={"emergency_restart_threshold": 2,
                             "emergency_restart_interval": "10s"}, pool={"pm.max_children": 2})
    first = p.worker_pids()
    os.kill(first[0], signal.SIGSEGV)
    second = p.wait_workers(exclude=(first[0],))["www"]
    assert "threshold" not in p.log()
    os.kill(first[1], signal.SIGSEGV)
    p.wait_log(r"^%sWARNING: failed processes threshold \(2 in 10 sec\) is reached, "
               r"initiating reload$" % TIME_PREFIX)
    p.wait_log(r"NOTICE: new pool generation is accepting")
    wait_for(lambda: not set(p.worker_pids()) & set(first + second), 10,
             "every worker to be replaced", on_fail=p.diagnostics)
    assert p.running()
    harness.wait_serving(p.address())


@pytest.mark.timeout(40)
def test_killed_pool_manager_is_restarted_and_the_pool_serves(pfm_factory, nginx_factory):
    """A pool manager killed with SIGKILL: the master logs '[pool www]
    manager N exited on signal 9 (SIGKILL) after ... seconds from start,
    restarting it', starts a new manager, and nginx gets 200 again."""
    p = pfm_factory(pool={"pm.max_children": 2})
    n = nginx_factory(p.backend())
    (manager,) = p.manager_pids("www")
    os.kill(manager, signal.SIGKILL)
    p.wait_log(r"^%sWARNING: \[pool www\] manager %d exited on signal 9 \(SIGKILL\) after "
               r"\d+\.\d{6} seconds from start, restarting it$" % (TIME_PREFIX, manager))

    def served():
        try:
            return requests.get(n.url + "/pid", timeout=3).status_code == 200
        except requests.RequestException:
            return False
    wait_for(served, 10, "the pool to serve again", interval=0.1)
    (new_manager,) = p.manager_pids("www")
    assert new_manager != manager
    assert p.running()


# ---- isolation (root) ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def test_users():
    """pfmtest_a and pfmtest_b (system users, no home; left in place)."""
    if os.geteuid() != 0:
        pytest.skip("isolation needs root (CI runs as root)")
    for name in USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", name], check=True, capture_output=True,
                           timeout=30)
    return {name: pwd.getpwnam(name) for name in USERS}


def proc_ids(pid: int, field: str) -> list[int]:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return [int(x) for x in line.split()[1:]]
    raise KeyError(field)


@root_only
@pytest.mark.timeout(30)
def test_pool_runs_as_its_user_with_its_environment_limits_and_directory(shared_dir,
                                                                         pfm_factory):
    """user = nobody: the pool manager and the workers run as nobody (real,
    effective, saved and filesystem ids), the app sees nobody's uid and gid;
    clear_env (default yes) hides a variable set in pfm's environment while
    env[FOO] = bar is set; rlimit_files = 123 is the worker's RLIMIT_NOFILE;
    chdir is its working directory."""
    nobody = pwd.getpwnam("nobody")
    p = pfm_factory(pool={"app": "opsapps:app", "user": "nobody", "pm.max_children": 1,
                          "env[FOO]": "bar", "rlimit_files": 123, "chdir": str(shared_dir)},
                    env={"PFM_LEAKED_SECRET": "s3cret"})
    info = fcgi_get(p.address(), "/ids", "env=FOO,PFM_LEAKED_SECRET").json()
    assert info["uid"] == info["euid"] == nobody.pw_uid
    assert info["gid"] == info["egid"] == nobody.pw_gid
    assert set(info["groups"]) <= {nobody.pw_gid}, info["groups"]
    assert info["env"] == {"FOO": "bar", "PFM_LEAKED_SECRET": None}
    assert info["nofile"][0] == 123
    assert info["cwd"] == str(shared_dir)
    (worker,) = p.worker_pids()
    (manager,) = p.manager_pids("www")
    for pid in (worker, manager):
        assert proc_ids(pid, "Uid") == [nobody.pw_uid] * 4, pid
        assert proc_ids(pid, "Gid") == [nobody.pw_gid] * 4, pid


@root_only
@pytest.mark.timeout(30)
def test_a_pool_cannot_read_another_pools_file(shared_dir, test_users, pfm_factory):
    """Pools as pfmtest_a and pfmtest_b: a file mode 0600 owned by pfmtest_b
    is readable by pool B's app and refused (EACCES) to pool A's."""
    secret = shared_dir / "b-only.txt"
    secret.write_text("b's secret")
    b = test_users["pfmtest_b"]
    os.chown(secret, b.pw_uid, b.pw_gid)
    secret.chmod(0o600)
    p = pfm_factory(pools={
        "a": {"app": "opsapps:app", "user": "pfmtest_a", "pm.max_children": 1},
        "b": {"app": "opsapps:app", "user": "pfmtest_b", "pm.max_children": 1}})
    got_a = fcgi_get(p.address("a"), "/read", "path=%s" % secret).json()
    got_b = fcgi_get(p.address("b"), "/read", "path=%s" % secret).json()
    assert got_b == {"ok": True, "data": "b's secret"}
    assert got_a == {"ok": False, "errno": "EACCES"}
    assert fcgi_get(p.address("a"), "/ids").json()["uid"] == test_users["pfmtest_a"].pw_uid


@root_only
@pytest.mark.timeout(30)
def test_allowed_clients_refuses_an_unlisted_address(pfm_factory):
    """listen = PORT (every address, IPv6 and IPv4) with listen.allowed_clients
    = 127.0.0.1: a client from ::1 is dropped without an answer and logged
    'Connection disallowed: IP address '::1' has been dropped.'; a client
    from 127.0.0.1 is served."""
    if not harness.ipv6_available():
        pytest.skip("no IPv6 loopback")
    port = harness.free_port("::1")
    p = pfm_factory(pool={"listen": str(port), "listen.allowed_clients": "127.0.0.1",
                          "pm.max_children": 1})
    assert fcgi_get(("127.0.0.1", port), "/hello").status == 200
    with pytest.raises((ConnectionError, OSError)):
        fcgi_get(("::1", port), "/hello", timeout=5)
    p.wait_log(r"^%sERROR: \[pool www\] Connection disallowed: IP address '::1' has been "
               r"dropped\.$" % TIME_PREFIX)
    assert fcgi_get(("127.0.0.1", port), "/hello").status == 200


def acl_entries(path) -> list[tuple[int, int, int]]:
    """(tag, permissions, id) of a file's POSIX access ACL (system.posix_acl_access)."""
    raw = os.getxattr(path, "system.posix_acl_access")
    (version,) = struct.unpack_from("<I", raw)
    assert version == 2, version
    return [struct.unpack_from("<HHI", raw, off) for off in range(4, len(raw), 8)]


def try_connect_as(user: str, path: str) -> str:
    """Connect to a unix socket as `user` in a child process: 'ok' or the errno name."""
    code = ("import socket, errno, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1]); print('ok')\n"
            "except OSError as e:\n    print(errno.errorcode[e.errno])\n")
    out = subprocess.run([sys.executable, "-c", code, path], user=user, capture_output=True,
                         text=True, timeout=20, env=harness.test_env())
    return out.stdout.strip() or out.stderr


@root_only
@pytest.mark.timeout(30)
def test_unix_socket_owner_group_mode_and_acl(shared_dir, test_users, pfm_factory):
    """listen.owner/listen.group/listen.mode = pfmtest_a/pfmtest_b/0600 give the
    socket file that owner, group and mode (nobody cannot connect, pfmtest_a
    can); listen.acl_users = nobody adds an ACL entry granting nobody read
    and write on another pool's socket, and nobody can connect to it."""
    a, b = test_users["pfmtest_a"], grp.getgrnam("pfmtest_b")
    owned, acl = str(shared_dir / "owned.sock"), str(shared_dir / "acl.sock")
    pfm_factory(pools={
        "owned": {"listen": owned, "listen.owner": "pfmtest_a", "listen.group": "pfmtest_b",
                  "listen.mode": "0600", "pm.max_children": 1},
        "acl": {"listen": acl, "listen.acl_users": "nobody", "pm.max_children": 1}})
    st = os.stat(owned)
    assert stat.S_ISSOCK(st.st_mode)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (a.pw_uid, b.gr_gid, 0o600)
    assert try_connect_as("pfmtest_a", owned) == "ok"
    assert try_connect_as("nobody", owned) == "EACCES"
    nobody = pwd.getpwnam("nobody").pw_uid
    acl_user = 2    # ACL_USER
    entries = acl_entries(acl)
    assert any(tag == acl_user and uid == nobody and perm & 6 == 6
               for tag, perm, uid in entries), entries
    assert try_connect_as("nobody", acl) == "ok"
    assert fcgi_get(acl, "/hello").status == 200


@root_only
@pytest.mark.timeout(30)
def test_root_without_user_and_without_R_is_refused(run_dir):
    """As root without -R, a pool with no `user` is refused as php-fpm does:
    exit status 78 (EX_CONFIG) and '[pool www] user has not been defined'."""
    p = harness.Pfm(run_dir, pool={"pm.max_children": 1})
    proc = subprocess.run([sys.executable, "-m", "pfm", "-F", "-y", str(p.conf_path)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=harness.test_env(), cwd=str(run_dir), timeout=20)
    text = proc.stdout + proc.stderr + p.log()
    assert proc.returncode == 78, (proc.returncode, text)
    assert re.search(r"ALERT: \[pool www\] user has not been defined", text), text


def unix_listening_inode(path: str) -> int:
    """The inode of the listening unix socket bound to `path` (/proc/net/unix)."""
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                return int(fields[6])
    raise AssertionError("no listening socket at %s" % path)


def fd_targets(pid: int) -> set[str]:
    out = set()
    base = "/proc/%d/fd" % pid
    for fd in os.listdir(base):
        try:
            out.add(os.readlink(os.path.join(base, fd)))
        except OSError:
            pass
    return out


@pytest.mark.timeout(30)
def test_worker_holds_no_fd_of_another_pool(pfm_factory, run_dir):
    """Two pools on unix sockets, each with its own access log: a worker and
    the manager of pool a hold pool a's listening socket but neither pool
    b's listening socket nor pool b's access log (and the other way round)."""
    logs = {name: str(run_dir / ("%s-access.log" % name)) for name in ("a", "b")}
    p = pfm_factory(pools={name: {"listen": "unix", "pm.max_children": 1,
                                  "access.log": logs[name]} for name in ("a", "b")})
    inode = {name: unix_listening_inode(p.listen(name)) for name in ("a", "b")}
    for mine, other in (("a", "b"), ("b", "a")):
        (worker,) = p.worker_pids(mine)
        (manager,) = p.manager_pids(mine)
        for pid in (worker, manager):
            targets = fd_targets(pid)
            assert "socket:[%d]" % inode[mine] in targets, (mine, pid, targets)
            assert "socket:[%d]" % inode[other] not in targets, (mine, pid, targets)
            assert logs[other] not in targets, (mine, pid, targets)
