"""The process tree under signals and faults: titles, worker replacement,
graceful (QUIT) and fast (TERM/INT) stops, a master killed with SIGKILL,
daemonizing with a pid file, pm.max_requests, and the error log's lines.

Each test starts its own pfm; the fixtures kill whatever is left.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import resource
import signal
import stat
import subprocess
import sys
import time

import harness
import pytest
import requests
from harness import TIME_PREFIX, Background, fcgi_get, wait_for


def _gone(pids) -> bool:
    return not any(harness.alive(p) for p in pids)


def _started(run_dir, name="started"):
    path = run_dir / name
    return path, lambda: int(wait_for(lambda: harness.read_text(path), 10,
                                      "the app to write %s" % path))


# ---- the tree ------------------------------------------------------------------------


def test_process_titles_and_tree(pfm_factory):
    """master -> one manager per pool -> workers, titled as ps shows php-fpm's:
    'pfm: master process (CONFIG)', 'pfm: pool NAME manager', 'pfm: pool NAME'."""
    p = pfm_factory(pools={"www": {"pm.max_children": 3}, "api": {"pm.max_children": 1}})
    assert harness.cmdline(p.pid) == "pfm: master process (%s)" % p.conf_path
    managers = {name: p.manager_pids(name) for name in ("www", "api")}
    assert all(len(m) == 1 for m in managers.values()), managers
    assert sorted(harness.children_of(p.pid)) == sorted(m[0] for m in managers.values())
    workers = p.wait_workers()
    assert len(workers["www"]) == 3 and len(workers["api"]) == 1
    for name, pids in workers.items():
        for w in pids:
            assert harness.proc_stat(w)["ppid"] == managers[name][0]
    # every pool answers on its own address, from its own workers
    for name in ("www", "api"):
        info = fcgi_get(p.address(name), "/pid").json()
        assert info["pool"] == name and info["pid"] in workers[name]
    log = p.log()
    assert re.search(r"^%sNOTICE: pfm is running, pid %d$" % (TIME_PREFIX, p.pid), log, re.M)
    assert re.search(r"^%sNOTICE: ready to handle connections$" % TIME_PREFIX, log, re.M)


def _uids(pid: int) -> list[int]:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    raise KeyError(pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs a root master")
def test_pool_manager_and_workers_run_as_the_pool_user(pfm_factory):
    """user = nobody: the master stays root (it owns sockets and logs), the
    pool manager and its workers run as nobody (real, effective and saved
    uid), and the pool serves."""
    nobody = pwd.getpwnam("nobody")
    p = pfm_factory(pool={"user": "nobody"})
    assert _uids(p.pid)[0] == 0
    for pid in p.manager_pids("www") + p.worker_pids():
        assert _uids(pid)[:3] == [nobody.pw_uid] * 3, (pid, harness.cmdline(pid))
    assert fcgi_get(p.address(), "/pid").json()["pid"] in p.worker_pids()


def test_idle_pool_uses_no_cpu(pfm_factory):
    """An idle pool sleeps: master, managers and workers together use well
    under 0.1 s of CPU in 2 s (no polling loop, no busy wait)."""
    p = pfm_factory(pools={"www": {"pm.max_children": 4}, "api": {"pm.max_children": 2}})
    harness.wait_serving(p.address("www"))
    time.sleep(0.5)
    tree = p.tree()
    before = sum(harness.cpu_seconds(x) for x in tree)
    time.sleep(2)
    used = sum(harness.cpu_seconds(x) for x in tree) - before
    assert used < 0.1, "an idle pool used %.2f s of CPU in 2 s" % used


def test_error_log_lines_have_php_fpm_format(pfm):
    """Every line pfm writes to error_log is '[dd-Mon-YYYY HH:MM:SS] LEVEL: message'."""
    fcgi_get(pfm.address(), "/boom", "token=fmt")  # a multi-line traceback, too
    pfm.wait_log(r"RuntimeError: boom fmt")
    pfm.stop()
    lines = pfm.log().splitlines()
    assert lines
    bad = [line for line in lines
           if not re.match(TIME_PREFIX + r"(DEBUG|NOTICE|WARNING|ERROR|ALERT): \S", line)]
    assert not bad, bad


# ---- workers dying ---------------------------------------------------------------------


@pytest.mark.parametrize("sig,name", [(signal.SIGKILL, "SIGKILL"), (signal.SIGTERM, "SIGTERM"),
                                      (signal.SIGSEGV, "SIGSEGV")])
def test_killed_worker_is_replaced_and_logged(pfm, sig, name):
    """A worker that dies on a signal is logged in php-fpm's words (a WARNING
    with the signal's number and name and its lifetime) and replaced at once."""
    old = pfm.worker_pids()
    victim = old[0]
    mark = pfm.log_size()
    os.kill(victim, sig)
    pfm.wait_log(r"^%sWARNING: \[pool www\] child %d exited on signal %d \(%s( - core "
                 r"dumped)?\) after \d+\.\d{6} seconds from start$"
                 % (TIME_PREFIX, victim, sig, name), start=mark)
    new = pfm.wait_workers(exclude=(victim,))["www"]
    (born,) = set(new) - set(old)
    pfm.wait_log(r"^%sNOTICE: \[pool www\] child %d started$" % (TIME_PREFIX, born), start=mark)
    for _ in range(4):
        assert fcgi_get(pfm.address(), "/hello").status == 200


@pytest.mark.timeout(30)
def test_sigquit_to_a_busy_worker_lets_its_request_finish(pfm, run_dir):
    """SIGQUIT to one worker (php-fpm's graceful stop of a child): the request
    it is serving completes with 200, then it exits and is replaced."""
    path, started = _started(run_dir)
    req = Background(fcgi_get, pfm.address(), "/sleep", "s=1&started=%s" % path, timeout=20)
    victim = started()
    mark = pfm.log_size()
    os.kill(victim, signal.SIGQUIT)
    r = req.join_result()
    assert r.status == 200 and r.json()["pid"] == victim
    pfm.wait_log(r"\[pool www\] child %d exited (with code 0|on signal 3 \(SIGQUIT\))"
                 % victim, start=mark)
    pfm.wait_workers(exclude=(victim,))
    for _ in range(4):
        assert fcgi_get(pfm.address(), "/hello").status == 200


def test_pm_max_requests_recycles_the_worker(pfm_factory):
    """pm.max_requests = 3: after its third request the worker exits with code
    0 (a NOTICE), a new one is started, and the fourth request is its."""
    p = pfm_factory(pool={"pm.max_children": 1, "pm.max_requests": 3})
    first = p.worker_pids()[0]
    pids = [fcgi_get(p.address(), "/pid").json()["pid"] for _ in range(3)]
    assert pids == [first] * 3
    p.wait_log(r"^%sNOTICE: \[pool www\] child %d exited with code 0 after \d+\.\d{6} "
               r"seconds from start$" % (TIME_PREFIX, first))
    second = p.wait_workers(exclude=(first,))["www"][0]
    info = fcgi_get(p.address(), "/pid").json()
    assert info["pid"] == second and info["requests"] == 1


@pytest.mark.timeout(90)
@pytest.mark.parametrize("children", [1, 2])
def test_pm_max_requests_1_every_retiree_leaves_and_the_pool_keeps_serving(pfm_factory,
                                                                             children):
    """pm.max_requests = 1 under a stream of requests: each worker serves one
    request and exits, its replacement serves the next. 60 requests are all
    answered promptly, by 60 different workers, and none of them lingers
    (a retiring worker that misses its SIGQUIT would hold its slot and, with
    one worker, leave the pool with nobody accepting)."""
    p = pfm_factory(pool={"pm.max_children": children, "pm.max_requests": 1})
    served = []
    for i in range(60):
        try:
            r = fcgi_get(p.address(), "/pid", timeout=5)
        except OSError as e:
            alive = [(x, harness.cmdline(x)) for x in p.tree()]
            pytest.fail("request %d got no answer in 5 s (%r); processes %r\n%s"
                        % (i, e, alive, p.log()[-3000:]))
        served.append(r.json()["pid"])
    assert len(set(served)) == 60
    wait_for(lambda: not any(harness.alive(x) for x in served), 5,
             "every retired worker to exit",
             on_fail=lambda: "lingering: %r\n%s" % (
                 [x for x in served if harness.alive(x)], p.log()[-3000:]))


def test_app_that_fails_to_import_is_logged_and_retried(pfm_factory):
    """An app whose import raises in the workers (fails_in_pool passes the
    start-up check, which a plainly broken app does not): the failure is
    logged with its traceback, in full once (the same error again is counted,
    not repeated); the manager keeps retrying with a pause instead of dying,
    and the master stays up."""
    p = pfm_factory(pool={"app": "fails_in_pool:app", "pm.max_children": 2}, workers=False)
    p.wait_log(r"ERROR: \[pool www\] child \d+ failed to initialize")
    p.wait_log(r"RuntimeError: fails_in_pool refuses to import")
    p.wait_log(r"failed to initialize: the same error again \(RuntimeError: fails_in_pool")
    time.sleep(1.5)
    assert p.running()
    assert len(p.manager_pids("www")) == 1
    log = p.log()
    assert len(re.findall(r"failed to initialize; next try", log)) <= 8, "no back-off:\n" + log
    assert len(re.findall(r"child \d+: RuntimeError: fails_in_pool", log)) == 1, log


def test_preload_failure_is_logged_and_retried_with_a_pause(pfm_factory):
    """preload = yes with an app whose import raises in the manager: it logs
    it with the traceback and exits; the master stays up and restarts it with
    a growing pause rather than in a tight loop."""
    p = pfm_factory(pool={"app": "fails_in_pool:app", "preload": "yes"}, workers=False)
    p.wait_log(r"RuntimeError: fails_in_pool refuses to import")
    time.sleep(2.5)
    assert p.running()
    restarts = len(re.findall(r"manager \d+ exited", p.log()))
    assert 1 <= restarts <= 5, p.log()
    assert p.stop() == 0


# ---- stopping ---------------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_sigquit_lets_the_request_in_flight_finish(pfm, run_dir):
    """SIGQUIT (graceful stop): a request sleeping 2 s that started before the
    QUIT completes with 200; then every process exits and the master logs
    'Finishing ...' and 'exiting, bye-bye!' and exits 0."""
    path, started = _started(run_dir)
    tree = pfm.tree()
    req = Background(fcgi_get, pfm.address(), "/sleep", "s=2&started=%s" % path, timeout=30)
    started()
    t_quit = time.monotonic()
    os.kill(pfm.pid, signal.SIGQUIT)
    pfm.wait_log(r"^%sNOTICE: Finishing \.\.\.$" % TIME_PREFIX)
    r = req.join_result()
    assert r.status == 200 and r.json()["slept"] == 2
    assert req.finished_at - t_quit > 1.0, "the request did not outlive the QUIT"
    assert pfm.proc.wait(10) == 0
    pfm.wait_log(r"^%sNOTICE: exiting, bye-bye!$" % TIME_PREFIX)
    wait_for(lambda: _gone(tree), 5, "every pfm process to exit",
             on_fail=lambda: repr([(p, harness.cmdline(p)) for p in tree if harness.alive(p)]))


@pytest.mark.timeout(40)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_at_once(pfm, run_dir, sig):
    """SIGTERM/SIGINT: stop now, even with a request running for 30 s: every
    process is gone within about 2 s, the request is cut, and the master logs
    'Terminating ...' and 'exiting, bye-bye!' and exits 0."""
    path, started = _started(run_dir)
    tree = pfm.tree()
    req = Background(fcgi_get, pfm.address(), "/sleep", "s=30&started=%s" % path, timeout=40)
    started()
    t0 = time.monotonic()
    os.kill(pfm.pid, sig)
    wait_for(lambda: _gone(tree), 3, "every pfm process to exit",
             on_fail=lambda: repr([(p, harness.cmdline(p)) for p in tree if harness.alive(p)]))
    assert time.monotonic() - t0 < 3
    assert pfm.proc.wait(5) == 0
    with pytest.raises(ConnectionError):
        req.join_result(10)
    log = pfm.log()
    assert re.search(r"^%sNOTICE: Terminating \.\.\.$" % TIME_PREFIX, log, re.M)
    assert re.search(r"^%sNOTICE: exiting, bye-bye!$" % TIME_PREFIX, log, re.M)


def test_ctrl_c_to_the_whole_foreground_group_stops_cleanly(pfm_factory):
    """Ctrl-C in a terminal sends SIGINT to the foreground process group: the
    master and the pool managers (each worker leads a group of its own, and
    its manager stops it): everything stops within a second, no worker is
    respawned, the master says goodbye and exits 0."""
    p = pfm_factory(pool={"pm.max_children": 4})
    tree = p.tree()
    assert len(tree) == 6, [(x, harness.cmdline(x)) for x in tree]   # master, manager, 4
    mark = p.log_size()
    os.killpg(p.pid, signal.SIGINT)
    assert p.proc.wait(5) == 0
    wait_for(lambda: _gone(tree) and not p.tree(), 2, "every pfm process to exit")
    after = p.log()[mark:]
    assert "Terminating ..." in after and "exiting, bye-bye!" in after
    assert " started" not in after, after


@pytest.mark.timeout(40)
def test_master_killed_with_sigkill_leaves_no_orphans(pfm_factory, run_dir):
    """The master dies by SIGKILL (no chance to clean up): every pool manager
    and worker, busy or idle, exits within about a second by itself."""
    p = pfm_factory(pools={"www": {"pm.max_children": 2}, "api": {"pm.max_children": 2}})
    path, started = _started(run_dir)
    busy = Background(fcgi_get, p.address("www"), "/sleep", "s=30&started=%s" % path,
                      timeout=40)
    started()
    tree = [pid for pid in p.tree() if pid != p.pid]
    assert len(tree) == 6, [(x, harness.cmdline(x)) for x in tree]  # 2 managers, 4 workers
    os.kill(p.pid, signal.SIGKILL)
    p.proc.wait(5)
    t0 = time.monotonic()
    wait_for(lambda: _gone(tree) and not p.tree(), 3,
             "the managers and workers of a SIGKILLed master to exit",
             on_fail=lambda: repr([(x, harness.cmdline(x)) for x in tree if harness.alive(x)]))
    assert time.monotonic() - t0 < 3
    with pytest.raises((ConnectionError, OSError)):
        busy.join_result(10)


@pytest.mark.timeout(40)
def test_killed_pool_manager_is_restarted(pfm):
    """A pool manager killed with SIGKILL: its workers go too, the master logs
    it and starts a new manager, and the pool serves again."""
    (manager,) = pfm.manager_pids("www")
    old_workers = pfm.worker_pids()
    os.kill(manager, signal.SIGKILL)
    pfm.wait_log(r"WARNING: \[pool www\] manager %d exited on signal 9 \(SIGKILL\)" % manager)
    wait_for(lambda: _gone(old_workers), 3, "the dead manager's workers to exit")
    wait_for(lambda: pfm.manager_pids("www") and pfm.manager_pids("www") != [manager], 10,
             "a new manager")
    new_workers = pfm.wait_workers()["www"]
    assert not set(new_workers) & set(old_workers)
    harness.wait_serving(pfm.address())


@pytest.mark.timeout(40)
def test_sigquit_does_not_wait_for_idle_kept_alive_connections(pfm_factory, nginx_factory):
    """Workers holding idle connections that nginx keeps alive (fastcgi_keep_conn
    + upstream keepalive) still stop promptly on SIGQUIT: an idle kept
    connection is not a request in flight."""
    p = pfm_factory(pool={"pm.max_children": 2})
    n = nginx_factory(p.backend(), keepalive=2)
    with requests.Session() as s:
        for _ in range(10):
            assert s.get(n.url + "/hello", timeout=10).status_code == 200
    wait_for(lambda: harness.established_to(p.port) >= 1, 5, "a kept-alive connection")
    tree = p.tree()
    os.kill(p.pid, signal.SIGQUIT)
    wait_for(lambda: _gone(tree), 5, "every pfm process to exit",
             on_fail=lambda: repr([(x, harness.cmdline(x)) for x in tree if harness.alive(x)]))
    assert p.proc.wait(5) == 0


# ---- logs -------------------------------------------------------------------------------------


def test_usr1_reopens_the_error_log_everywhere(pfm, run_dir):
    """SIGUSR1 after logrotate moved the file: the master logs 'error log file
    re-opened' into a new file, and what workers log afterwards (wsgi.errors,
    tracebacks) lands there too, not in the rotated file."""
    rotated = pfm.log_path.with_name("pfm.log.1")
    os.rename(pfm.log_path, rotated)
    os.kill(pfm.pid, signal.SIGUSR1)
    pfm.wait_log(r"^%sNOTICE: error log file re-opened$" % TIME_PREFIX)

    # Workers may need replacing to pick up the new file: within a few seconds,
    # a round of requests (to every worker) must all log into the new file.
    rounds = iter(range(1000))

    def round_lands_in_new_file():
        k = next(rounds)
        tokens = ["after-usr1-%d-%d" % (k, i) for i in range(6)]
        for t in tokens:
            assert fcgi_get(pfm.address(), "/errors", "token=" + t).status == 200
        time.sleep(0.1)
        new, old = pfm.log(), harness.read_text(rotated)
        return all(t in new and t not in old for t in tokens)
    wait_for(round_lands_in_new_file, 10, "workers to log into the reopened file",
             interval=0.2, on_fail=pfm.diagnostics)
    fcgi_get(pfm.address(), "/boom", "token=rot")
    pfm.wait_log(r"RuntimeError: boom rot")
    assert "boom rot" not in harness.read_text(rotated)


def test_log_level_warning_hides_notices(pfm_factory):
    """log_level = warning: no NOTICE line at all, WARNINGs still logged."""
    p = pfm_factory(global_={"log_level": "warning"}, wait=False)
    harness.wait_serving(p.address())
    victim = p.wait_workers()["www"][0]
    os.kill(victim, signal.SIGKILL)
    p.wait_log(r"WARNING: \[pool www\] child %d exited on signal 9" % victim)
    p.wait_workers(exclude=(victim,))
    p.stop()
    assert "NOTICE" not in p.log(), p.log()


@pytest.mark.timeout(40)
def test_workers_do_not_outlive_a_killed_manager_even_if_the_app_ignores_sigterm(pfm_factory):
    """An app that ignores SIGTERM (tests/apps/stubborn.py) must not let its
    workers survive their pool manager: after the manager is SIGKILLed they
    exit within a few seconds instead of living on unsupervised, still
    accepting on the pool's socket beside the new manager's workers."""
    p = pfm_factory(pool={"app": "stubborn:app"})
    old = p.worker_pids()
    os.kill(p.manager_pids("www")[0], signal.SIGKILL)
    wait_for(lambda: _gone(old), 3, "the dead manager's workers to exit",
             on_fail=lambda: repr([(x, harness.cmdline(x), harness.proc_stat(x))
                                   for x in old if harness.alive(x)]))
    p.wait_workers(exclude=old)
    harness.wait_serving(p.address())


@pytest.mark.timeout(40)
@pytest.mark.parametrize("sig,limit", [(signal.SIGQUIT, 5.0), (signal.SIGTERM, 2.5)],
                         ids=["QUIT", "TERM"])
def test_preloaded_app_cannot_take_the_managers_signals(pfm_factory, sig, limit):
    """preload = yes imports the app in the pool manager; an app that ignores
    SIGTERM/SIGQUIT there must not stop the manager from obeying the master:
    an idle pool stops on QUIT within a few seconds and on TERM at once."""
    p = pfm_factory(pool={"app": "stubborn:app", "preload": "yes"})
    assert fcgi_get(p.address(), "/hello").status == 200
    tree = p.tree()
    t0 = time.monotonic()
    os.kill(p.pid, sig)
    wait_for(lambda: _gone(tree), limit + 1, "every pfm process to exit",
             on_fail=lambda: repr([(x, harness.cmdline(x)) for x in tree if harness.alive(x)]))
    took = time.monotonic() - t0
    assert took < limit, "stopping took %.1f s" % took


# ---- daemonizing --------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["-D", "daemonize=yes", "-D -g"])
def test_daemonize_with_pid_file(pfm_factory, how):
    """-D (or daemonize = yes): the command returns 0 once the master runs in
    the background, the pid file (from `pid` or -g) holds the master's pid,
    the master serves, and SIGTERM stops it and removes the pid file."""
    g = {"daemonize": "yes" if how == "daemonize=yes" else "no"}
    p = pfm_factory(global_=g, start=False)
    pidfile = p.dir / "run" / "pfm.pid"
    pidfile.parent.mkdir()
    if how == "-D -g":
        args = ["-D", "-g", str(pidfile)]
    else:
        p.conf_path.write_text(p.config_text.replace(
            "[global]\n", "[global]\npid = %s\n" % pidfile, 1))
        args = ["-D"] if how == "-D" else []
    cmd = [sys.executable, "-m", "pfm", "-R", "-y", str(p.conf_path)] + args
    master = None
    try:
        t0 = time.monotonic()
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              env=harness.test_env(), cwd=str(p.dir), timeout=20)
        assert proc.returncode == 0, (proc.stdout, proc.stderr, p.diagnostics())
        assert time.monotonic() - t0 < 10
        master = int(wait_for(lambda: harness.read_text(pidfile).strip(), 5, "the pid file"))
        assert harness.alive(master)
        assert harness.cmdline(master) == "pfm: master process (%s)" % p.conf_path
        assert harness.proc_stat(master)["ppid"] != os.getpid()
        p.wait_log(r"NOTICE: pfm is running, pid %d" % master)
        p.wait_log(r"NOTICE: ready to handle connections")
        harness.wait_serving(p.address())
        os.kill(master, signal.SIGTERM)
        wait_for(lambda: not harness.alive(master), 5, "the daemon to exit")
        wait_for(lambda: not pidfile.exists(), 5, "the pid file to be removed")
        p.wait_log(r"NOTICE: exiting, bye-bye!")
    finally:
        if master and harness.alive(master):
            try:
                os.killpg(master, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---- sockets ---------------------------------------------------------------------------------


def test_unix_socket_mode_and_removal(pfm_factory):
    """listen = /path.sock with listen.mode = 0666: a socket file with that mode,
    served, and removed when pfm stops."""
    p = pfm_factory(pool={"listen": "unix", "listen.mode": "0666"})
    path = p.listen()
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert fcgi_get(path, "/hello").status == 200
    assert p.stop() == 0
    assert not os.path.exists(path)


@pytest.mark.timeout(40)
def test_unix_socket_left_by_a_killed_master_is_reused_but_a_live_one_is_not(pfm_factory,
                                                                            run_dir):
    """A socket file left behind by a master killed with SIGKILL does not stop
    the next start; a socket another pfm still listens on does (php-fpm:
    'Another FPM instance seems to already listen on PATH'), exit 78."""
    path = str(run_dir / "shared.sock")
    first = pfm_factory(pool={"listen": path})
    second = pfm_factory(pool={"listen": path}, start=False)
    proc = subprocess.run(second.command(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=harness.test_env(), timeout=20)
    assert proc.returncode == 78, (proc.returncode, proc.stderr)
    assert "seems to already listen on %s" % path in proc.stderr + second.log()
    assert fcgi_get(path, "/hello").status == 200     # the first one was not disturbed

    tree = first.tree()
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: _gone(tree), 5, "the killed master's tree to exit")
    assert os.path.exists(path)                        # stale: nobody unlinked it
    third = pfm_factory(pool={"listen": path})
    assert fcgi_get(path, "/pid").json()["pid"] in third.worker_pids()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs a root master")
def test_unix_socket_owner_and_group(pfm_factory):
    """listen.owner / listen.group / listen.mode set the socket file's owner,
    group and mode (so that nginx's user can connect, and nobody else)."""
    p = pfm_factory(pool={"listen": "unix", "listen.owner": "nobody",
                          "listen.group": "nogroup", "listen.mode": "0660"})
    st = os.stat(p.listen())
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid
    assert st.st_gid == grp.getgrnam("nogroup").gr_gid
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert fcgi_get(p.listen(), "/hello").status == 200


# ---- application output -------------------------------------------------------------------------


def test_catch_workers_output_logs_stdout_and_stderr(pfm_factory):
    """catch_workers_output = yes: what the app prints reaches the error log in
    php-fpm's decoration: 'WARNING: [pool www] child N said into stdout: "..."'."""
    p = pfm_factory(pool={"pm.max_children": 1, "catch_workers_output": "yes"})
    worker = p.worker_pids()[0]
    assert fcgi_get(p.address(), "/output", "token=cwo42").status == 200
    p.wait_log(r'^%sWARNING: \[pool www\] child %d said into stdout: "stdout says cwo42"$'
               % (TIME_PREFIX, worker))
    p.wait_log(r'^%sWARNING: \[pool www\] child %d said into stderr: "stderr says cwo42"$'
               % (TIME_PREFIX, worker))


# ---- running short of descriptors and processes --------------------------------------------


@pytest.mark.timeout(40)
def test_out_of_descriptors_the_manager_keeps_the_workers_it_could_start(pfm_factory):
    """Issue 9, item 9: rlimit_files = 64 with 30 workers whose output is
    caught (two pipes each): the manager runs out of descriptors part way.
    pipe2() failing with EMFILE used to crash it, and the master restarted
    it over and over. Now the failure is logged once (rate-limited), the
    manager lives on with the workers it could start, and they serve."""
    p = pfm_factory(pool={"pm.max_children": 30, "catch_workers_output": "yes",
                          "rlimit_files": 64}, workers=False)
    m = p.wait_log(r"^%sERROR: \[pool www\] pipe2\(\) failed: Too many open files; next "
                   r"try in \d+\.\d s$" % TIME_PREFIX)
    (manager,) = p.manager_pids("www")
    workers = p.worker_pids()
    assert 10 <= len(workers) < 30, workers
    for _ in range(5):
        # a retry may have found room for one more worker meanwhile
        assert fcgi_get(p.address(), "/pid").json()["pid"] in p.worker_pids()
    time.sleep(3)     # a crash loop, or a line per retry, would show by now
    assert p.manager_pids("www") == [manager]
    assert p.log().count("failed: Too many open files") == 1, p.log()[m.start():]
    assert not re.search(r"manager \d+ exited|crashed", p.log()), p.log()


@pytest.mark.timeout(40)
@pytest.mark.skipif(os.geteuid() != 0, reason="the pool must run as another user")
def test_fork_failures_are_rate_limited_and_backed_off(pfm_factory):
    """Issue 9, item 11: fork() failing (here: RLIMIT_NPROC = 1 for the
    pool's user; root, the master, is exempt) was logged at every attempt,
    thousands of lines while connections waited. Now one line per 10 s,
    forks backed off, and the manager lives on."""
    p = pfm_factory(pool={"user": "nobody", "pm": "ondemand", "pm.max_children": 2},
                    rlimits={resource.RLIMIT_NPROC: (1, 1)}, workers=False)
    (manager,) = harness.wait_for(lambda: p.manager_pids("www"), 10, "the pool manager")
    waiting = [Background(fcgi_get, p.address(), "/pid", timeout=30) for _ in range(3)]
    m = p.wait_log(r"^%sERROR: \[pool www\] fork\(\) failed: Resource temporarily "
                   r"unavailable" % TIME_PREFIX)
    time.sleep(3)
    assert p.log().count("fork() failed") == 1, p.log()[m.start():][:3000]
    assert p.log()[m.end():].startswith("; next try in 0.1 s\n"), p.log()[m.start():]
    assert p.manager_pids("www") == [manager] and not p.worker_pids()
    assert p.stop() == 0
    for request in waiting:
        with pytest.raises((ConnectionError, OSError)):
            request.join_result(10)


# ---- processes the application starts ------------------------------------------------------


def _holds_socket(pid: int, inode: int) -> bool:
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    target = "socket:[%d]" % inode
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == target:
                return True
        except OSError:
            pass
    return False


def _listen_inode(p) -> int:
    """The inode of the pool's listening socket, from its master's descriptors."""
    host, port = p.address()
    for fd in os.listdir("/proc/%d/fd" % p.pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (p.pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inode = int(link[8:-1])
            for line in open("/proc/net/tcp").readlines()[1:]:
                f = line.split()
                if int(f[9]) == inode and f[3] == "0A" and int(f[1].split(":")[1], 16) == port:
                    return inode
    raise AssertionError("no listening socket for port %d in the master" % port)


@pytest.mark.timeout(40)
def test_children_the_app_starts_neither_hold_the_socket_nor_outlive_the_pool(pfm_factory,
                                                                                run_dir):
    """Issue 9, item 12: children the app forked used to survive pfm's stop
    holding the listening socket, so the next start exited 78. Now a child
    forked by Python (os.fork) or exec'd (posix_spawn) never holds it, one
    forked from C does but stays in its worker's process group, and when
    the pool stops every one of them is ended: the address can be bound
    again at once."""
    p = pfm_factory(pool={"app": "forking:app", "pm.max_children": 1})
    inode = _listen_inode(p)
    children = {}
    for how, path, query in (("python", "/fork", "how=python"), ("c", "/fork", "how=c"),
                             ("exec", "/spawn", "")):
        pidfile = run_dir / ("child-" + how)
        r = fcgi_get(p.address(), path, "&".join(filter(None, [query, "pidfile=%s" % pidfile])))
        assert r.status == 200, r
        children[how] = r.json()["child"]
    (worker,) = p.worker_pids()
    groups = {how: harness.proc_stat(c)["pgrp"] for how, c in children.items()}
    holding = {how: _holds_socket(c, inode) for how, c in children.items()}
    os.kill(p.pid, signal.SIGTERM)      # not p.stop(): its SIGKILL to the groups would
    assert p.proc.wait(10) == 0         # end what pfm must end by itself
    again = pfm_factory(pool={"app": "forking:app", "pm.max_children": 1,
                              "listen": p.listen()})
    assert fcgi_get(again.address(), "/pid").json()["pid"] in again.worker_pids()
    wait_for(lambda: _gone(children.values()), 5, "the app's children to be ended",
             on_fail=lambda: repr({h: harness.cmdline(c) for h, c in children.items()
                                   if harness.alive(c)}))
    assert groups == {"python": worker, "c": worker, "exec": worker}
    assert holding == {"python": False, "c": True, "exec": False}   # C forks skip the hooks


@pytest.mark.timeout(40)
def test_a_detached_child_holding_the_socket_is_named_when_the_pool_stops(pfm_factory,
                                                                         run_dir):
    """A child the app forked from C and put in a session of its own is out
    of pfm's reach: when the pool stops it is left alone, and the pool
    manager says which pid still holds the listening socket."""
    p = pfm_factory(pool={"app": "forking:app", "pm.max_children": 1})
    pidfile = run_dir / "detached"
    child = fcgi_get(p.address(), "/fork", "how=detached&pidfile=%s" % pidfile).json()["child"]
    try:
        assert harness.proc_stat(child)["pgrp"] == child
        os.kill(p.pid, signal.SIGTERM)
        assert p.proc.wait(10) == 0
        assert harness.alive(child)
        p.wait_log(r"^%sWARNING: \[pool www\] processes the app started outside its workers' "
                   r"process groups still hold the listening socket %s: pid %d \(pfm: pool "
                   r"www\); it cannot be bound again until they exit$"
                   % (TIME_PREFIX, re.escape(p.listen()), child))
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
