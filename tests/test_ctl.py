"""`pfm status`, `pfm ping` and `pfm top` against a running pfm: they find
the pools in the same config file, ask each pool on its own socket (or its
pm.status_listen) with one FastCGI request, never through nginx, and say
clearly what is wrong when a pool cannot be asked. `pfm top` runs in a real
terminal (tmux) and quits on q.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import harness
import pytest
from harness import Background, fcgi_get, wait_for

from pfm import ctl
from pfm.ctl import top

TEXT_FIELDS = ("pool", "process manager", "start time", "start since", "accepted conn",
               "listen queue", "max listen queue", "listen queue len", "idle processes",
               "active processes", "total processes", "max active processes",
               "max children reached", "slow requests")


def pfm_ctl(*args, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pfm", *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=harness.test_env(), timeout=timeout)


def three_pools(pfm_factory):
    """www: status and ping on its TCP socket; api: a UNIX socket and
    pm.status_listen only; bare: neither status nor ping."""
    return pfm_factory(pools={
        "www": {"pm.max_children": 2, "pm.status_path": "/status", "ping.path": "/ping"},
        "api": {"listen": "unix", "pm.max_children": 1,
                "pm.status_listen": "127.0.0.1:%d" % harness.free_port()},
        "bare": {"listen": "unix", "pm.max_children": 1},
    })


# ---- the command line ------------------------------------------------------------------


@pytest.mark.parametrize("argv, found", [
    (["status"], 0), (["-y", "x.conf", "ping", "www"], 2), (["-y", "status"], None),
    (["--listen", "top"], None), (["-F", "stray"], None), (["-p", "/srv", "top"], 2),
])
def test_find_command_skips_option_values(argv, found):
    assert ctl.find_command(argv) == found


def test_commands_without_a_config_say_which_file_is_missing(run_dir):
    for command in ("status", "ping", "top"):
        proc = pfm_ctl(command, "-p", run_dir)
        assert proc.returncode == 78, proc.stderr
        assert "failed to open configuration file '%s/etc/pfm.conf'" % run_dir in proc.stderr


# ---- pfm status -----------------------------------------------------------------------


def test_status_prints_php_fpm_fields_of_every_pool_and_names_the_one_without_status(
        pfm_factory):
    p = three_pools(pfm_factory)
    proc = pfm_ctl("status", "-y", p.conf_path)
    assert proc.returncode == 1, proc.stderr
    pools = re.findall(r"^pool: +(\S+)$", proc.stdout, re.M)
    assert pools == ["www", "api"], proc.stdout
    for field in TEXT_FIELDS:
        assert len(re.findall(r"^%s: +\S" % re.escape(field), proc.stdout, re.M)) == 2, field
    assert re.search(r"^pfm status: pool bare: neither pm.status_path nor pm.status_listen "
                     r"is set.*pm.status_listen = ", proc.stderr, re.M), proc.stderr
    only = pfm_ctl("-y", p.conf_path, "status", "api")
    assert only.returncode == 0, only.stderr
    assert re.findall(r"^pool: +(\S+)$", only.stdout, re.M) == ["api"]


def test_status_json_full_lists_the_workers_of_each_pool(pfm_factory):
    p = three_pools(pfm_factory)
    for name in ("www", "api"):
        proc = pfm_ctl("status", name, "--json", "--full", "-y", p.conf_path)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert len(lines) == 1
        snap = json.loads(lines[0])
        assert snap["pool"] == name
        assert sorted(w["pid"] for w in snap["processes"]) == p.worker_pids(name)
        assert all(w["pss"] > 0 for w in snap["processes"]), snap
    plain = pfm_ctl("status", "www", "--json", "-y", p.conf_path)
    assert "processes" not in json.loads(plain.stdout)


def test_status_answers_while_every_worker_is_busy(pfm_factory):
    """Both workers sleep in a request: the pool manager answers the status
    request itself, showing them Running."""
    p = pfm_factory(pool={"pm.max_children": 2, "pm.status_path": "/status"})
    sleepers = [Background(fcgi_get, p.address(), "/sleep", "s=4", timeout=15)
                for _ in range(2)]

    def both_running():
        proc = pfm_ctl("status", "--json", "--full", "--timeout", "3", "-y", p.conf_path)
        if proc.returncode != 0:
            return None
        snap = json.loads(proc.stdout)
        states = sorted(w["state"] for w in snap["processes"])
        return snap if states == ["Running", "Running"] else None
    snap = wait_for(both_running, 5, "status showing both workers Running")
    assert snap["active processes"] == 2 and snap["idle processes"] == 0
    assert {w["request uri"] for w in snap["processes"]} == {"/sleep?s=4"}
    for b in sleepers:
        assert b.join_result(15).status == 200


# ---- pfm ping -------------------------------------------------------------------------


def test_ping_exits_0_when_every_pool_answers_and_1_with_the_reason_when_not(pfm_factory):
    p = pfm_factory(pools={
        "www": {"pm.max_children": 1, "ping.path": "/ping", "ping.response": "alive"},
        "api": {"listen": "unix", "pm.max_children": 1,
                "pm.status_listen": "127.0.0.1:%d" % harness.free_port()},
    })
    ok = pfm_ctl("ping", "-y", p.conf_path)
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"^pool www: ok, /ping on 127\.0\.0\.1:\d+ \(listen\)", ok.stdout, re.M)
    assert re.search(r"^pool api: ok, /status on .*\(pm\.status_listen\)", ok.stdout, re.M)
    p.stop(signal.SIGTERM)
    down = pfm_ctl("ping", "-y", p.conf_path)
    assert down.returncode == 1
    assert re.search(r"^pfm ping: pool www: connection refused at 127\.0\.0\.1:\d+",
                     down.stderr, re.M), down.stderr
    assert re.search(r"^pfm ping: pool api: connection refused", down.stderr, re.M)


def test_ping_of_a_pool_with_nothing_to_ask_fails_naming_the_directives(pfm_factory):
    p = pfm_factory(pool={"pm.max_children": 1})
    proc = pfm_ctl("ping", "-y", p.conf_path)
    assert proc.returncode == 1
    assert "none of ping.path, pm.status_path and pm.status_listen is set" in proc.stderr


def test_ping_times_out_on_a_socket_that_never_answers(run_dir):
    """A listener that accepts nothing: ping gives up after --timeout."""
    import socket
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        conf = run_dir / "pfm.conf"
        conf.write_text("[www]\nlisten = 127.0.0.1:%d\npm = static\npm.max_children = 1\n"
                        "app = testapps:app\nping.path = /ping\n" % silent.getsockname()[1])
        start = time.monotonic()
        proc = pfm_ctl("ping", "--timeout", "0.5", "-y", conf)
    assert proc.returncode == 1
    assert "no answer from /ping on 127.0.0.1" in proc.stderr and "within 0.5 s" in proc.stderr
    assert time.monotonic() - start < 10


def test_unknown_pool_is_a_config_error(pfm_factory):
    p = pfm_factory(pool={"pm.max_children": 1, "ping.path": "/ping"})
    proc = pfm_ctl("ping", "nosuch", "-y", p.conf_path)
    assert proc.returncode == 78
    assert "no pool 'nosuch'" in proc.stderr and "pools: www" in proc.stderr


# ---- pfm top --------------------------------------------------------------------------


def test_tracker_rates_from_two_samples_and_none_across_a_reload():
    cpu = {10: 1.0}
    tracker = top.Tracker(cpu_seconds=lambda pid: cpu.get(pid))

    def sample(accepted, started, requests):
        return top.PoolSample("www", snap={
            "accepted conn": accepted, "start time": started,
            "processes": [{"pid": 10, "requests": requests}]})
    first = tracker.update(sample(100, 5, 7), now=50.0)
    assert first.rate is None and first.cpu == {} and first.worker_rates == {}
    cpu[10] = 1.5
    second = tracker.update(sample(120, 5, 12), now=52.0)
    assert second.rate == 10.0 and second.worker_rates == {10: 2.5}
    assert second.cpu == {10: 25.0}
    after_reload = tracker.update(sample(3, 60, 1), now=53.0)
    assert after_reload.rate is None


def test_render_shows_pool_summary_and_the_busy_workers_request():
    snap = {"pool": "www", "process manager": "static", "start since": 3725,
            "accepted conn": 42, "listen queue": 1, "max listen queue": 3,
            "listen queue len": 128, "idle processes": 1, "active processes": 1,
            "total processes": 2, "max children": 2, "max children reached": 0,
            "slow requests": 0, "processes": [
                {"pid": 11, "state": "Running", "requests": 5, "request duration": 1500000,
                 "request method": "GET", "request uri": "/sleep?s=2", "pss": 3 << 20},
                {"pid": 12, "state": "Idle", "requests": 9, "request duration": 800,
                 "request method": "GET", "request uri": "/old", "pss": None}]}
    sample = top.PoolSample("www", snap=snap, rate=2.5, cpu={11: 12.5})
    lines = [text for text, _ in top.render([sample], "/etc/pfm/pfm.conf", "12:00:00")]
    assert "1/2 workers busy" in lines[0] and "q quits" in lines[0]
    assert re.search(r"pool www +static +up 01:02:05 +busy 1 +idle 1 .*queue 1/128 \(max 3\)"
                     r" +2\.5 req/s", lines[2]), lines[2]
    running = next(line for line in lines if line.strip().startswith("11 "))
    assert re.search(r"Running +5 +- +12\.5 +3\.0M +1\.50s +GET /sleep\?s=2$", running)
    idle = next(line for line in lines if line.strip().startswith("12 "))
    assert "/old" not in idle and re.search(r"Idle +9 .* - +- +-$", idle), idle


def tmux(sock, *args, check=True) -> subprocess.CompletedProcess:
    exe = shutil.which("tmux")
    assert exe, "tmux is missing: install Debian's tmux (scripts/setup does)"
    return subprocess.run([exe, "-S", str(sock), *map(str, args)], capture_output=True,
                          text=True, env=harness.test_env({"TERM": "xterm"}), timeout=10,
                          check=check)


@pytest.mark.timeout(60)
def test_top_in_a_real_terminal_shows_pools_workers_and_requests_and_quits_on_q(
        pfm_factory, run_dir):
    p = pfm_factory(pools={
        "www": {"pm.max_children": 2, "pm.status_path": "/status"},
        "api": {"listen": "unix", "pm.max_children": 1,
                "pm.status_listen": "127.0.0.1:%d" % harness.free_port()},
    })
    sock = run_dir / "tmux.sock"
    tmux(sock, "new-session", "-d", "-x", "160", "-y", "40", "-s", "top",
         sys.executable, "-m", "pfm", "top", "-y", p.conf_path)
    try:
        def screen():
            return tmux(sock, "capture-pane", "-p", "-t", "top", check=False).stdout

        wait_for(lambda: "pool api" in screen() and "pool www" in screen(), 10,
                 "top to draw both pools", on_fail=screen)
        pids = p.worker_pids()
        wait_for(lambda: all(re.search(r"^ +%d +(Idle|Running) " % pid, screen(), re.M)
                             for pid in pids), 5, "workers %r on the screen" % pids,
                 on_fail=screen)
        sleeper = Background(fcgi_get, p.address("www"), "/sleep", "s=3", timeout=15)
        wait_for(lambda: re.search(r"Running .* \d+(ms|\.\d\ds) +GET /sleep\?s=3$", screen(),
                                   re.M), 5, "the running request on the screen",
                 on_fail=screen)
        title = screen().splitlines()[0]
        assert re.match(r"pfm top - \d\d:\d\d:\d\d - %s - 2 pool\(s\)" % re.escape(
            str(p.conf_path)), title), title
        first = title
        wait_for(lambda: screen().splitlines()[0] != first, 3, "a refresh within a second",
                 on_fail=screen)
        tmux(sock, "send-keys", "-t", "top", "q")
        wait_for(lambda: tmux(sock, "has-session", "-t", "top", check=False).returncode != 0,
                 5, "top to quit on q", on_fail=screen)
        assert sleeper.join_result(15).status == 200
    finally:
        tmux(sock, "kill-server", check=False)


def test_top_without_a_terminal_prints_one_view_with_rates(pfm_factory):
    p = pfm_factory(pool={"pm.max_children": 1, "pm.status_path": "/status"})
    proc = pfm_ctl("top", "-y", p.conf_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("pfm top - ") and "1 pool(s)" in lines[0]
    summary = next(line for line in lines if line.startswith("pool www "))
    assert re.search(r" \d+\.\d req/s ", summary), summary
    assert re.search(r"^ +%d +Running " % p.worker_pids()[0], proc.stdout, re.M), proc.stdout
