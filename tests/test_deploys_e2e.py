"""Deploys that go wrong and the paths around them (issue 9), through nginx
or at the socket:

* a reload (SIGUSR2) whose new code cannot start, whether the app check
  catches it or only the pool's own processes fail, with and without
  preload: the old generation serves on, not one request fails, the reload
  is logged and told to systemd as failed, and a later reload with fixed
  code is served;
* a pool renamed on reload keeps nginx's kept-alive connections;
* an application import that never returns: QUIT still stops pfm at once,
  and a SIGKILLed master leaves no preloading manager behind;
* [global] rlimit_files and rlimit_core are the master's limits;
* SIGUSR1 never says a file was re-opened when it was not.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import harness
import pytest
from harness import wait_for
from test_operations_e2e import Load, recv_all, reload_with_new_code, write_module

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="user = nobody needs root "
                               "(CI runs as root)")


def write_broken(directory: Path, version: int, how: str) -> None:
    """reloadapp.py in a version that cannot start: its import raises
    (`import-error`, which the app check catches), or it imports in the app
    check but, after half a second, raises in the pool's own processes
    (`fails-in-pool`, which only the new generation's manager or workers
    find out, after connections have come while they booted)."""
    fail = "raise RuntimeError('deploy %d cannot start')\n" % version
    if how == "fails-in-pool":
        text = ("import time\nfrom setproctitle import getproctitle\n"
                "if 'app check' not in getproctitle():\n"
                "    time.sleep(0.5)\n    " + fail +
                "def app(environ, start_response):\n"
                "    raise AssertionError('never served')\n")
    else:
        text = fail
    tmp = directory / "reloadapp.py.tmp"
    tmp.write_text(text)
    os.replace(tmp, directory / "reloadapp.py")


def notify_socket(run_dir: Path) -> tuple[socket.socket, str]:
    path = str(run_dir / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    return sock, path


# ---- item 1: a reload with a broken deploy ---------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["import-error", "fails-in-pool"])
@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_broken_deploy_keeps_the_old_generation_serving(pfm_factory, nginx_factory, run_dir,
                                                        preload, how):
    """Code that cannot start is deployed and SIGUSR2 sent while 4 clients
    GET and POST through nginx: one ERROR 'reload failed: ... [pool www] ...
    deploy 2 cannot start', STATUS=Reload failed for systemd, never 'new pool
    generation is accepting'; the failed generation is gone and the old
    workers serve version 1 on;
    the failing workers' traceback is logged once. Fixed code and another
    SIGUSR2: version 3 is served. Not one request fails throughout."""
    code = run_dir / "code"
    code.mkdir()
    write_module(code, 1)
    sock, path = notify_socket(run_dir)
    got: list[str] = []
    try:
        # pm.status_path: the pool manager's status desk takes waiting
        # connections when its workers are all busy; booting is not busy.
        p = pfm_factory(pool={"app": "reloadapp:app", "pythonpath": str(code),
                              "pm.max_children": 2, "preload": preload,
                              "pm.status_path": "/status"},
                        env={"NOTIFY_SOCKET": path})
        n = nginx_factory(p.backend())
        load = Load(n.url + "/")
        try:
            wait_for(lambda: len(load.ok) > 20, 10, "the load to run")
            workers = p.worker_pids()
            write_broken(code, 2, how)
            mark = p.log_size()
            t_reload = time.monotonic()
            os.kill(p.pid, signal.SIGUSR2)
            p.wait_log(r"ERROR: reload failed: .*\[pool www\] .*deploy 2 cannot start.*; the "
                       r"running pools keep serving$", start=mark)
            recv_all(sock, got, lambda m: m.startswith("READY=1\nSTATUS=Reload failed: ")
                     and "deploy 2 cannot start" in m, 5, "STATUS=Reload failed")
            wait_for(lambda: len(p.manager_pids("www")) == 1
                     and p.worker_pids() == workers, 10,
                     "the failed generation to be gone", on_fail=p.diagnostics)
            t_after = time.monotonic()
            wait_for(lambda: len(load.seen_since(t_after)) >= 40, 10, "traffic after it")
            served = load.seen_since(t_reload)
            assert all(body.startswith("1 ") for body in served), set(served)
            after = p.log()[mark:]
            assert "new pool generation is accepting" not in after, after
            assert len(re.findall(r"(?:child \d+|\[pool www\]): RuntimeError: deploy 2",
                                  after)) <= 1, after
            assert "Traceback" not in p.output()
            reload_with_new_code(p, load, code, 3)
        finally:
            load.stop()
    finally:
        sock.close()
    assert not load.failures, "%d failed: %r" % (len(load.failures), load.failures[:10])
    assert "[error]" not in n.error_log_text(), n.error_log_text()[-3000:]


@pytest.mark.timeout(40)
def test_ondemand_pool_whose_preload_fails_keeps_the_old_generation(pfm_factory, run_dir):
    """An ondemand pool has no worker to show that it serves: it used to count
    as ready at once, so the old generation retired before the new manager
    had even preloaded. Now it counts once its manager booted: a preload
    that fails is a failed reload, and the old manager keeps serving."""
    code = run_dir / "code"
    code.mkdir()
    write_module(code, 1)
    p = pfm_factory(pool={"app": "reloadapp:app", "pythonpath": str(code), "pm": "ondemand",
                          "pm.max_children": 2, "preload": True}, workers=False)
    assert harness.wait_serving(p.address()).body.startswith(b"1 ")
    (manager,) = p.manager_pids("www")
    write_broken(code, 2, "fails-in-pool")
    mark = p.log_size()
    os.kill(p.pid, signal.SIGUSR2)
    p.wait_log(r"ERROR: reload failed: \[pool www\] unable to preload app 'reloadapp:app': "
               r"RuntimeError: deploy 2 cannot start; the running pools keep serving$",
               start=mark)
    wait_for(lambda: p.manager_pids("www") == [manager], 10, "only the old manager")
    for _ in range(5):
        assert harness.fcgi_get(p.address(), "/").body.startswith(b"1 ")
    assert "new pool generation is accepting" not in p.log()[mark:]


# ---- item 6: a renamed pool keeps nginx's kept connections ---------------------------------


@pytest.mark.timeout(60)
def test_renamed_pool_adopts_the_kept_connections(pfm_factory, nginx_factory, run_dir):
    """nginx with fastcgi_keep_conn and an upstream keepalive pool; the pool
    is renamed (same socket) and pfm reloaded, twice, under load: the new
    pool's workers adopt the connections the old ones kept, so not one
    request waits for nginx's read timeout or fails."""
    code = run_dir / "code"
    code.mkdir()
    write_module(code, 1)
    p = pfm_factory(pool={"app": "reloadapp:app", "pythonpath": str(code),
                          "pm.max_children": 2})
    n = nginx_factory(p.backend(), keepalive=8)
    load = Load(n.url + "/")
    try:
        wait_for(lambda: len(load.ok) > 20, 10, "the load to run")
        for old, new in (("www", "api"), ("api", "www")):
            before = pool_workers(p, old)
            p.conf_path.write_text(p.conf_path.read_text().replace("[%s]" % old, "[%s]" % new))
            mark = p.log_size()
            os.kill(p.pid, signal.SIGUSR2)
            p.wait_log(r"NOTICE: new pool generation is accepting", start=mark)
            wait_for(lambda before=before: not any(harness.alive(w) for w in before), 10,
                     "pool %s's workers to exit" % old, on_fail=p.diagnostics)
            assert len(pool_workers(p, new)) == 2
            t = time.monotonic()
            wait_for(lambda t=t: len(load.seen_since(t)) >= 40, 10, "traffic after the rename")
    finally:
        load.stop()
    assert not load.failures, "%d failed: %r" % (len(load.failures), load.failures[:10])
    assert "[error]" not in n.error_log_text(), n.error_log_text()[-3000:]


def pool_workers(p: harness.Pfm, name: str) -> list[int]:
    return sorted(w for m in harness.children_of(p.pid) for w in harness.children_of(m)
                  if harness.cmdline(w) == "pfm: pool %s" % name)


# ---- item 7: an app import that never returns ---------------------------------------------


def start_then_hang(pfm_factory, shared_dir: Path, preload: bool, **pool):
    """A pool of hangs_when_told that booted; then the marker that makes the
    next import hang is created and a process is killed so that its
    replacement imports: the manager (preload) or a worker. Returns the pfm
    and the pid of the process now stuck in the import."""
    shared_dir.chmod(0o1777)     # the pool's user writes HANG_MARKER.PID there
    marker = shared_dir / "hang"
    settings = {"app": "hangs_when_told:app", "env[HANG_MARKER]": str(marker),
                "preload": preload, "pm.max_children": 1}
    settings.update(pool)
    p = pfm_factory(pool=settings)
    marker.write_text("")
    if preload:
        victim = p.manager_pids("www")[0]
    else:
        victim = p.worker_pids()[0]
    mark = p.log_size()
    os.kill(victim, signal.SIGKILL)
    p.wait_log(r"(manager|child) %d exited on signal 9" % victim, start=mark)

    def stuck():
        pids = p.manager_pids("www") if preload else p.worker_pids()
        pids = [x for x in pids if x != victim and (shared_dir / ("hang.%d" % x)).exists()]
        return pids and pids[0]
    return p, wait_for(stuck, 10, "a process stuck in the app's import",
                       on_fail=p.diagnostics)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("preload", [True, False], ids=["preloading-manager", "booting-worker"])
def test_quit_stops_a_pool_whose_app_import_never_returns(pfm_factory, shared_dir, preload):
    """A pool manager preloading, or a worker loading, an app whose import
    never returns has nothing in flight: SIGQUIT to the master (with
    process_control_timeout = 0, which waits as long as requests run) ends
    every process within a few seconds."""
    p, stuck = start_then_hang(pfm_factory, shared_dir, preload)
    tree = p.tree()
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGQUIT)
    assert p.proc.wait(10) == 0, p.diagnostics()
    wait_for(lambda: not any(harness.alive(x) for x in tree), 3, "every pfm process to exit",
             on_fail=lambda: repr([(x, harness.cmdline(x)) for x in tree if harness.alive(x)]))
    assert time.monotonic() - t0 < 5
    assert not harness.alive(stuck)


@root_only
@pytest.mark.timeout(40)
def test_sigkilled_master_leaves_no_preloading_manager_behind(pfm_factory, shared_dir):
    """user = nobody and preload = yes, the manager stuck in the app's import
    (after setuid, which clears the parent-death signal): the master is
    SIGKILLed; the manager exits within a few seconds, so it does not keep
    the pool's socket, and pfm starts again on the same socket at once."""
    p, stuck = start_then_hang(pfm_factory, shared_dir, True, user="nobody",
                               listen=str(shared_dir / "www.sock"))
    os.kill(p.pid, signal.SIGKILL)
    p.proc.wait(5)
    wait_for(lambda: not harness.alive(stuck), 3, "the stuck manager to exit",
             on_fail=lambda: "%d: %s" % (stuck, harness.cmdline(stuck)))
    (shared_dir / "hang").unlink()
    again = pfm_factory(raw=re.sub(r"(?m)^error_log = .*$", "error_log = @LOG@",
                                   p.config_text), start=False)
    again.start(workers=False)
    harness.wait_serving(str(shared_dir / "www.sock"))


# ---- item 10: [global] rlimits --------------------------------------------------------------


def limits(pid: int) -> dict[str, tuple[str, str]]:
    out = {}
    with open("/proc/%d/limits" % pid) as f:
        next(f)
        for line in f:
            name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
            out[name] = (soft, hard)
    return out


@pytest.mark.timeout(30)
def test_global_rlimits_are_the_masters(pfm_factory):
    """[global] rlimit_files and rlimit_core are set in the master when it
    starts (php-fpm does so), and its pools inherit them."""
    p = pfm_factory(global_={"rlimit_files": 4321, "rlimit_core": 7654321})
    for pid in (p.pid, p.worker_pids()[0]):
        got = limits(pid)
        assert got["Max open files"] == ("4321", "4321"), (pid, got)
        assert got["Max core file size"] == ("7654321", "7654321"), (pid, got)


# ---- item 11c: USR1 ---------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_usr1_does_not_claim_a_reopen_that_failed(pfm_factory, run_dir):
    """After logrotate, a directory stands where the access log and then
    the error log should be reopened: SIGUSR1 logs 'unable to reopen ... file
    PATH: Is a directory' and never 're-opened' for that file; the old files
    stay in use."""
    access = run_dir / "access.log"
    p = pfm_factory(pool={"access.log": str(access)})
    os.rename(access, run_dir / "access.log.1")
    access.mkdir()
    mark = p.log_size()
    os.kill(p.pid, signal.SIGUSR1)
    p.wait_log(r"ERROR: unable to reopen log file '%s': Is a directory$" % re.escape(str(access)),
               start=mark)
    p.wait_log(r"NOTICE: error log file re-opened$", start=mark)
    assert "access log file re-opened" not in p.log()[mark:], p.log()[mark:]

    rotated = p.log_path.with_name("pfm.log.1")
    os.rename(p.log_path, rotated)
    p.log_path.mkdir()
    mark = len(harness.read_text(rotated))
    os.kill(p.pid, signal.SIGUSR1)
    wait_for(lambda: re.search(r"ERROR: unable to reopen error log file '%s': Is a directory$"
                               % re.escape(str(p.log_path)),
                               harness.read_text(rotated)[mark:], re.M), 10,
             "the error log's failure in the old file",
             on_fail=lambda: harness.read_text(rotated)[mark:])
    assert "error log file re-opened" not in harness.read_text(rotated)[mark:]
