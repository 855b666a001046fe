"""Pools that scale, end to end (issue 3): HTTP clients -> a real nginx -> pfm.

dynamic pools fork at once when a connection waits and shrink one worker a
second (the longest idle first, never one in a request); ondemand pools
start empty and stop every worker idle past pm.process_idle_timeout;
pm.max_requests and pm.max_memory recycle a worker with its replacement
forked first and no failed request; preload imports the app once, in the
pool manager; a worker holding idle kept-alive connections still takes new
ones, so 8 clients never stall on a pool of 2.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import harness
import pytest
import requests
from harness import TIME_PREFIX, Background, wait_for

DYNAMIC = {"pm": "dynamic"}


# ---- helpers ---------------------------------------------------------------------------


def get(url: str, timeout: float = 20, **params) -> requests.Response:
    return requests.get(url, params=params or None, timeout=timeout)


def started_files(run_dir, n: int, prefix: str = "started"):
    return [run_dir / ("%s%d" % (prefix, i)) for i in range(n)]


def watch_deaths(pids, until, timeout: float) -> dict[int, float]:
    """Poll `pids` (bounded by `timeout`) until `until()` is true; returns
    pid -> monotonic time at which it was first seen gone."""
    died: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids:
            if pid not in died and not harness.alive(pid):
                died[pid] = time.monotonic()
        if until():
            break
        time.sleep(0.02)
    return died


def log_events(text: str, pool: str = "www"):
    """('started'|'exited', pid, line index) for every worker start and exit line."""
    out = []
    for i, line in enumerate(text.splitlines()):
        m = re.search(r"\[pool %s\] child (\d+) (started|exited)" % pool, line)
        if m:
            out.append((m.group(2), int(m.group(1)), i))
    return out


def hammer(url: str, threads: int, per_thread: int, timeout: float = 20,
           method: str = "GET"):
    """`threads` clients each sending `per_thread` requests to `url`
    (keep-alive to nginx); returns (responses, failures) where failures are
    exceptions or non-2xx answers. POSTs carry a small body: nginx never
    retries them on another upstream connection, so a reset reaches the client."""
    results, failures = [], []
    lock = threading.Lock()

    def client(_):
        with requests.Session() as s:
            for _ in range(per_thread):
                try:
                    r = s.request(method, url, timeout=timeout,
                                  data=b"payload" if method == "POST" else None)
                except requests.RequestException as e:
                    with lock:
                        failures.append(repr(e))
                    continue
                with lock:
                    if 200 <= r.status_code < 300:
                        results.append(r)
                    else:
                        failures.append((r.status_code, r.text[:200]))

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(client, range(threads)))
    return results, failures


# ---- dynamic -----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_dynamic_starts_with_pm_start_servers_workers(pfm_factory):
    """pm = dynamic forks pm.start_servers (4) workers when the pool starts,
    all at once (not grown one tick at a time from a single worker), keeps
    them while idle between the spare bounds (2..6), and an idle pool
    starting up logs no 'seems busy'."""
    p = pfm_factory(pool=dict(DYNAMIC, **{"pm.max_children": 8, "pm.start_servers": 4,
                                          "pm.min_spare_servers": 2,
                                          "pm.max_spare_servers": 6}), workers=False)
    workers = p.wait_workers({"www": 4}, timeout=1.5)["www"]
    time.sleep(1.5)
    assert p.worker_pids() == workers
    assert "seems busy" not in p.log() and "max_children" not in p.log(), p.log()


@pytest.mark.timeout(40)
def test_dynamic_forks_at_once_up_to_max_children_and_says_so(pfm_factory, nginx_factory,
                                                              run_dir):
    """pm = dynamic starts pm.start_servers workers; 4 slow requests at once
    make it fork at once (not at php-fpm's one-second tick) up to
    pm.max_children = 3, log php-fpm's 'server reached pm.max_children
    setting (3), consider raising it', count it in the status page's `max
    children reached`, and serve the 4th request when a worker frees up."""
    p = pfm_factory(pool=dict(DYNAMIC, **{"pm.max_children": 3, "pm.start_servers": 1,
                                          "pm.min_spare_servers": 1,
                                          "pm.max_spare_servers": 1,
                                          "pm.status_path": "/status"}), workers=False)
    (first,) = p.wait_workers({"www": 1})["www"]
    time.sleep(1.2)      # past the start-up: a tick now could only fork one a second
    assert p.worker_pids() == [first]
    n = nginx_factory(p.backend())
    mark = p.log_size()
    files = started_files(run_dir, 4)
    t0 = time.monotonic()
    reqs = [Background(get, n.url + "/sleep", s="2", started=str(f)) for f in files]
    wait_for(lambda: sum(f.exists() for f in files) >= 3, 1.0,
             "3 requests running at once within 1 s (fork on a waiting connection)",
             on_fail=lambda: "running: %r, workers %r\n%s" % (
                 [f.exists() for f in files], p.worker_pids(), p.diagnostics()))
    assert len(p.worker_pids()) == 3
    p.wait_log(r"^%sWARNING: \[pool www\] server reached pm\.max_children setting \(3\), "
               r"consider raising it$" % TIME_PREFIX, start=mark)
    results = [b.join_result(20) for b in reqs]
    elapsed = time.monotonic() - t0
    assert [r.status_code for r in results] == [200] * 4
    pids = {r.json()["pid"] for r in results}
    assert len(pids) == 3 and first in pids
    assert elapsed < 5.0, elapsed    # 2 s + 2 s for the one that waited
    assert len(p.worker_pids()) <= 3
    snap = get(n.url + "/status", json="").json()
    assert snap["max children reached"] == 1 and snap["max children"] == 3, snap


@pytest.mark.timeout(40)
def test_dynamic_stops_one_spare_a_second_longest_idle_first(pfm_factory, nginx_factory,
                                                            run_dir):
    """Above pm.max_spare_servers = 1, idle workers are stopped one per
    second, the one idle the longest first (by last activity, not start
    time: the oldest worker, given the 1.5 s request, goes third), and never
    the worker that is in a request: its 3.5 s request ends with 200 and it
    is the one left at the end."""
    p = pfm_factory(pool=dict(DYNAMIC, **{"pm.max_children": 4, "pm.start_servers": 1,
                                          "pm.min_spare_servers": 1,
                                          "pm.max_spare_servers": 1}), workers=False)
    (oldest,) = p.wait_workers({"www": 1})["www"]
    n = nginx_factory(p.backend())
    files = started_files(run_dir, 4)
    durations = ["1.5", "0.5", "1.0", "3.5"]
    reqs = [Background(get, n.url + "/sleep", s="1.5", started=str(files[0]))]
    wait_for(files[0].exists, 5, "the first worker to take the first request")
    reqs += [Background(get, n.url + "/sleep", s=s, started=str(f))
             for s, f in zip(durations[1:], files[1:])]
    wait_for(lambda: all(f.exists() for f in files), 5, "the 4 requests to run at once",
             on_fail=p.diagnostics)
    workers = p.worker_pids()
    assert len(workers) == 4, workers
    by_duration = {d: int(f.read_text()) for d, f in zip(durations, files)}
    assert by_duration["1.5"] == oldest
    long_worker = by_duration["3.5"]
    died = watch_deaths(workers, lambda: len([w for w in workers if harness.alive(w)]) <= 1
                        and all(b.finished_at for b in reqs), 12)
    results = [b.join_result(10) for b in reqs]
    assert [r.status_code for r in results] == [200] * 4
    assert results[3].json() == {"pid": long_worker, "slept": 3.5}
    assert long_worker not in died and harness.alive(long_worker), (died, p.log())
    order = sorted(died, key=died.get)
    assert order == [by_duration["0.5"], by_duration["1.0"], by_duration["1.5"]], (
        order, by_duration, p.log())
    gaps = [died[b] - died[a] for a, b in zip(order, order[1:])]
    assert all(g >= 0.5 for g in gaps), ("more than one spare stopped a second", gaps)
    assert p.worker_pids() == [long_worker]
    for pid in order:
        assert re.search(r"NOTICE: \[pool www\] child %d exited with code 0 after" % pid,
                         p.log()), p.log()


@pytest.mark.timeout(40)
def test_dynamic_seems_busy_when_the_spawn_rate_reaches_8(pfm_factory):
    """With every worker busy and fewer idle than pm.min_spare_servers, the
    once-a-second pass doubles its spawn rate (1, 2, 4, 8) and, at 8, logs
    php-fpm's 'seems busy (you may need to increase pm.start_servers, or
    pm.min/max_spare_servers), spawning N children, there are I idle, and T
    total children'."""
    p = pfm_factory(pool=dict(DYNAMIC, **{"pm.max_children": 24, "pm.start_servers": 8,
                                          "pm.min_spare_servers": 8,
                                          "pm.max_spare_servers": 8}), workers=False)
    p.wait_workers({"www": 8})
    time.sleep(1.5)      # a settled pool: 8 idle workers, spawn rate back to 1
    mark = p.log_size()
    reqs = [Background(harness.fcgi_get, p.address(), "/sleep", "s=7", timeout=20)
            for _ in range(8)]
    m = p.wait_log(r"^%sWARNING: \[pool www\] seems busy \(you may need to increase "
                   r"pm\.start_servers, or pm\.min/max_spare_servers\), spawning (\d+) "
                   r"children, there are (\d+) idle, and (\d+) total children$" % TIME_PREFIX,
                   timeout=9, start=mark)
    spawning, idle, total = map(int, m.groups())
    assert 1 <= spawning <= 8 and idle < 8 and 8 < total <= 24, m.group(0)
    assert [r.status for r in (b.join_result(20) for b in reqs)] == [200] * 8
    assert len(re.findall("seems busy", p.log())) == 1, "not rate-limited:\n" + p.log()


# ---- ondemand ----------------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_ondemand_starts_empty_forks_on_demand_and_stops_idle_workers(pfm_factory,
                                                                      nginx_factory):
    """pm = ondemand: no worker at start; a request forks one and is served
    quickly; 3 slow requests with pm.max_children = 2 log 'server reached
    max_children setting (2), consider raising it' (php-fpm's ondemand
    wording, without 'pm.'); every worker idle past pm.process_idle_timeout
    (1 s) is stopped, exiting with code 0, and the pool is empty again."""
    p = pfm_factory(pool={"pm": "ondemand", "pm.max_children": 2,
                          "pm.process_idle_timeout": "1s"}, workers=False)
    time.sleep(0.5)
    assert p.worker_pids() == []
    assert len(p.manager_pids("www")) == 1
    n = nginx_factory(p.backend())
    t0 = time.monotonic()
    r = get(n.url + "/pid")
    assert r.status_code == 200 and time.monotonic() - t0 < 1.0
    first = r.json()["pid"]
    mark = p.log_size()
    reqs = [Background(get, n.url + "/sleep", s="1") for _ in range(3)]
    m = p.wait_log(r"^%sWARNING: \[pool www\] server reached (pm\.)?max_children setting "
                   r"\(2\), consider raising it$" % TIME_PREFIX, start=mark)
    assert m.group(1) is None, "ondemand says 'max_children', not 'pm.max_children'"
    results = [b.join_result(20) for b in reqs]
    assert [x.status_code for x in results] == [200] * 3
    served_by = {x.json()["pid"] for x in results} | {first}
    assert len(served_by) == 2
    assert len(p.worker_pids()) <= 2
    wait_for(lambda: not p.worker_pids(), 4, "every idle worker to be stopped",
             on_fail=p.diagnostics)
    for pid in served_by:
        p.wait_log(r"^%sNOTICE: \[pool www\] child %d exited with code 0 after "
                   r"\d+\.\d{6} seconds from start$" % (TIME_PREFIX, pid))
    r = get(n.url + "/pid")
    assert r.status_code == 200 and r.json()["pid"] not in served_by


# ---- recycling ---------------------------------------------------------------------------


def check_rotation(p, responses, max_requests: int, jitter: int = 0) -> set[int]:
    """Every worker served 1, 2, ... in order with no gap; those that exited
    served between max_requests and max_requests + jitter; each replacement
    was started before its predecessor exited (never fewer than
    pm.max_children workers). Returns the pids that were recycled."""
    per_pid: dict[int, list[int]] = {}
    for r in responses:
        info = r.json()
        per_pid.setdefault(info["pid"], []).append(info["requests"])
    exited = {pid for kind, pid, _ in log_events(p.log()) if kind == "exited"}
    for pid, counts in per_pid.items():
        assert sorted(counts) == list(range(1, len(counts) + 1)), (pid, sorted(counts))
        assert len(counts) <= max_requests + jitter, (pid, len(counts))
        if pid in exited:
            assert max_requests <= len(counts) <= max_requests + jitter, (pid, len(counts))
    live = 0
    for kind, pid, line in log_events(p.log()):
        live += 1 if kind == "started" else -1
        if kind == "exited":
            assert live >= 2, ("child %d exited before its replacement started (line %d)\n%s"
                               % (pid, line, p.log()))
    assert not re.search(r"exited on signal|exited with code [1-9]", p.log()), p.log()
    return exited & set(per_pid)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keepalive", [None, 4], ids=["close", "keepalive"])
def test_max_requests_rotation_under_load_through_nginx(pfm_factory, nginx_factory, keepalive):
    """pm.max_requests = 5 under 4 concurrent clients POSTing through nginx
    (with and without fastcgi_keep_conn): every worker serves exactly 5
    requests, its replacement is forked before it exits (log 'child NEW
    started' before 'child OLD exited with code 0'), not one request fails,
    and nginx never sees a reset or a premature close (a retiring worker
    ends its kept connections cleanly)."""
    p = pfm_factory(pool={"pm.max_children": 2, "pm.max_requests": 5})
    n = nginx_factory(p.backend(), keepalive=keepalive)
    responses, failures = hammer(n.url + "/pid", threads=4, per_thread=40, method="POST")
    assert not failures, failures[:10]
    assert len(responses) == 160
    recycled = check_rotation(p, responses, 5)
    assert len(recycled) >= 25, recycled     # 160 requests, 5 each
    assert "[error]" not in n.error_log_text(), n.error_log_text()[-3000:]


@pytest.mark.timeout(60)
def test_max_requests_jitter_adds_up_to_j_requests(pfm_factory, nginx_factory):
    """pm.max_requests = 3 with pm.max_requests_jitter = 3: each recycled
    worker served between 3 and 6 requests (not all exactly 3), one at a
    time with the replacement first, and no request failed."""
    p = pfm_factory(pool={"pm.max_children": 2, "pm.max_requests": 3,
                          "pm.max_requests_jitter": 3})
    n = nginx_factory(p.backend())
    responses, failures = hammer(n.url + "/pid", threads=2, per_thread=60)
    assert not failures, failures[:10]
    recycled = check_rotation(p, responses, 3, jitter=3)
    lifetimes = {}
    for r in responses:
        info = r.json()
        lifetimes[info["pid"]] = max(lifetimes.get(info["pid"], 0), info["requests"])
    served = [lifetimes[pid] for pid in recycled]
    assert len(served) >= 10 and len(set(served)) >= 2, served


@pytest.mark.timeout(40)
def test_max_memory_recycles_the_worker_that_grew(pfm_factory, nginx_factory):
    """pm.max_memory = 40M: a request after which the worker's RSS passed it
    (the app keeps 60 MB) is answered, logged as 'child N: memory X bytes
    passed pm.max_memory (41943040) after "GET /grow?mb=60", recycling', and
    the worker is replaced (replacement first) and exits with code 0; the
    next request is served by the new worker with its normal memory."""
    p = pfm_factory(pool={"app": "opsapps:app", "pm.max_children": 1,
                          "pm.max_memory": "40M"})
    n = nginx_factory(p.backend())
    (old,) = p.worker_pids()
    for _ in range(3):      # small requests: no recycling
        assert get(n.url + "/pid").json()["pid"] == old
    assert "pm.max_memory" not in p.log()
    r = get(n.url + "/grow", mb="60")
    assert r.status_code == 200 and r.json() == {"pid": old, "kept_mb": 60}
    m = p.wait_log(r'^%sNOTICE: \[pool www\] child %d: memory (\d+) bytes passed '
                   r'pm\.max_memory \(41943040\) after "GET /grow\?mb=60", recycling$'
                   % (TIME_PREFIX, old))
    assert int(m.group(1)) > 60 * 1024 * 1024
    p.wait_log(r"NOTICE: \[pool www\] child %d exited with code 0" % old)
    (new,) = p.wait_workers(exclude=(old,))["www"]
    events = [(kind, pid) for kind, pid, _ in log_events(p.log())]
    assert events.index(("started", new)) < events.index(("exited", old)), events
    r = get(n.url + "/pid")
    assert r.json() == {"pid": new, "requests": 1, "pool": "www"}
    assert harness.vm_kb(new) < 40 * 1024


# ---- preload -----------------------------------------------------------------------------


@pytest.mark.timeout(40)
@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_preload_imports_the_app_once_in_the_manager(pfm_factory, nginx_factory, run_dir,
                                                     preload):
    """preload = yes: the app module is imported once, by the pool manager
    (its module-level code runs in the manager's pid), and neither the
    workers nor a replacement worker import it again. preload = no: each
    worker imports it itself, a replacement too. (The start's app check
    imports it first, in a child process of its own that is gone by then.)"""
    log = run_dir / "imports"
    log.touch()
    log.chmod(0o666)
    p = pfm_factory(pool={"app": "opsapps:app", "pm.max_children": 2, "preload": preload,
                          "env[OPS_IMPORT_LOG]": str(log)})
    n = nginx_factory(p.backend())
    (manager,) = p.manager_pids("www")
    workers = p.worker_pids()
    served = {get(n.url + "/ids").json()["pid"] for _ in range(6)}
    assert served <= set(workers)

    def imports():
        checked, *imported = [int(x) for x in log.read_text().split()]
        assert checked not in [manager, *workers] and not harness.alive(checked)
        return imported
    if preload:
        assert imports() == [manager]
    else:
        wait_for(lambda: sorted(imports()) == workers, 5, "one import per worker",
                 on_fail=lambda: repr((imports(), workers)))
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    (new,) = set(p.wait_workers(exclude=(victim,))["www"]) - set(workers)
    harness.wait_serving(p.address())
    if preload:
        time.sleep(0.3)
        assert imports() == [manager]
    else:
        wait_for(lambda: sorted(imports()) == sorted(workers + [new]), 5,
                 "the replacement to import the app", on_fail=lambda: repr(imports()))


# ---- keep-alive without starvation -------------------------------------------------------


@pytest.mark.timeout(60)
def test_keepalive_connections_do_not_starve_new_ones(pfm_factory, nginx_factory):
    """nginx `fastcgi_keep_conn on` with `keepalive 16` in front of 2 workers
    and 8 concurrent clients: nginx opens more connections than there are
    workers; a worker holding idle kept connections still takes the new ones
    (php-fpm's workers block on an idle kept connection while others wait in
    the backlog), so no request stalls: each takes well under 1 s."""
    p = pfm_factory(pool={"pm.max_children": 2})
    n = nginx_factory(p.backend(), keepalive=16)
    latencies = []
    lock = threading.Lock()
    failures = []

    def client(i):
        with requests.Session() as s:
            for _ in range(40):
                t0 = time.monotonic()
                try:
                    r = s.get(n.url + "/hello", timeout=10)
                    ok = r.status_code == 200 and r.text == "Hello, World!\n"
                except requests.RequestException as e:
                    ok, r = False, e
                with lock:
                    latencies.append(time.monotonic() - t0)
                    if not ok:
                        failures.append(repr(r))

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(client, range(8)))
    assert not failures, failures[:5]
    assert len(latencies) == 320
    slow = sorted(latencies)[-5:]
    assert max(latencies) < 1.0, "stalled requests: %r" % slow
    assert harness.established_to(p.port) > 2, "nginx kept no more connections than workers"
    assert "[error]" not in n.error_log_text(), n.error_log_text()[-3000:]


@pytest.mark.timeout(60)
def test_recycling_at_process_max_does_not_wait_for_room(pfm_factory, nginx_factory):
    """Issue 9, item 3: with [global] process.max = pm.max_children there is
    no room for a replacement while its predecessor lives. A retiree used to
    wait 30 s for a SIGQUIT that came only once its replacement was forked,
    so every recycling stalled the pool. Now it exits at once and the
    replacement is forked as it is reaped: 60 requests, none slower than a
    few seconds, each worker serving exactly pm.max_requests, and no
    "process.max reached" warning for room that retirees hold a moment."""
    p = pfm_factory(global_={"process.max": 2},
                    pool={"pm.max_children": 2, "pm.max_requests": 3})
    n = nginx_factory(p.backend())
    responses, failures = hammer(n.url + "/pid", threads=4, per_thread=15, timeout=5)
    assert not failures, (failures[:10], p.log()[-4000:])
    per_pid: dict[int, list[int]] = {}
    for r in responses:
        info = r.json()
        per_pid.setdefault(info["pid"], []).append(info["requests"])
    for pid, counts in per_pid.items():
        assert sorted(counts) == list(range(1, len(counts) + 1)), (pid, sorted(counts))
    assert sum(len(c) == 3 for c in per_pid.values()) >= 18, per_pid
    assert "process.max" not in p.log(), p.log()
    assert not re.search(r"exited on signal|exited with code [1-9]", p.log()), p.log()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keepalive", [None, 4], ids=["close", "keepalive"])
@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_recycling_a_small_dynamic_pool_never_stalls_it(pfm_factory, nginx_factory,
                                                         preload, keepalive):
    """Issue 9, item 3: pm = dynamic, pm.max_children = 2, one spare, and
    pm.max_requests = 5 under 8 concurrent clients through nginx (with and
    without preload and fastcgi_keep_conn). Retiring workers used to fill
    the scoreboard and wait 30 s for a SIGQUIT that never came, so every
    request stalled. Now each of 160 requests is answered within a few
    seconds (a slower one counts as failed), every worker serves its exact
    pm.max_requests, and the pool never has more than 2 workers that accept."""
    p = pfm_factory(pool={"pm": "dynamic", "pm.max_children": 2, "pm.start_servers": 1,
                          "pm.min_spare_servers": 1, "pm.max_spare_servers": 1,
                          "pm.max_requests": 5, "preload": preload}, workers=False)

    def answer():
        try:
            return harness.fcgi_get(p.address(), "/pid", timeout=2).json()
        except OSError:
            return None
    first = wait_for(answer, 10, "the pool to answer")      # its first request
    n = nginx_factory(p.backend(), keepalive=keepalive)
    responses, failures = hammer(n.url + "/pid", threads=8, per_thread=40, timeout=5)
    assert not failures, (failures[:10], p.log()[-4000:])
    assert len(responses) == 320
    per_pid = {first["pid"]: list(range(1, first["requests"] + 1))}
    for r in responses:
        info = r.json()
        per_pid.setdefault(info["pid"], []).append(info["requests"])
    for pid, counts in per_pid.items():
        assert sorted(counts) == list(range(1, len(counts) + 1)), (pid, sorted(counts))
        assert len(counts) <= 5, (pid, len(counts))
    assert sum(len(c) == 5 for c in per_pid.values()) >= 28, per_pid
    assert not re.search(r"exited on signal|exited with code [1-9]", p.log()), p.log()
    assert "[error]" not in n.error_log_text(), n.error_log_text()[-3000:]
