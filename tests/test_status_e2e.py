"""Seeing inside a pool, end to end (issue 4): the status page in every
format, ping, status while every worker is busy, pm.status_listen, counts
that add up under load, the listen queue of a unix socket, slowlog entries
with the Python stack, request_terminate_timeout, keep-alive idle time that
never counts, and the access log — through a real nginx where a client
would go through one.
"""

from __future__ import annotations

import json
import re
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import harness
import pytest
import requests
from harness import APPS, TIME_PREFIX, Background, FcgiConnection, fcgi_get, wait_for
from prometheus_client.openmetrics.parser import text_string_to_metric_families

STATUS = {"pm.status_path": "/status", "ping.path": "/ping", "ping.response": "pong"}

# php-fpm's pool fields, in its order, then pfm's extras for a static pool.
POOL_FIELDS = ["pool", "process manager", "start time", "start since", "accepted conn",
               "listen queue", "max listen queue", "listen queue len", "idle processes",
               "active processes", "total processes", "max active processes",
               "max children reached", "slow requests", "max children", "busy ratio"]
PROCESS_FIELDS = ["pid", "state", "start time", "start since", "requests", "request duration",
                  "request method", "request uri", "content length", "user", "script",
                  "last request cpu", "last request memory", "pss", "uss"]
IDLE_STATES = ("Idle", "Keep-alive idle")
CONTENT_TYPES = {"": "text/plain", "json": "application/json", "xml": "text/xml",
                 "html": "text/html",
                 "openmetrics": "application/openmetrics-text; version=1.0.0; charset=utf-8"}


def _line_of(path, needle: str) -> int:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in %s" % (needle, path))


SLEEP_LINE = _line_of(APPS / "testapps.py", 'time.sleep(float(q.get("s", 1)))')


@pytest.fixture(scope="module")
def site():
    """One pool of 2 static workers with status and ping behind a stock nginx."""
    p = harness.Pfm(harness.new_dir("status-site"), pool=dict(STATUS, app="opsapps:app"))
    n = None
    try:
        p.start()
        n = harness.Nginx(harness.new_dir("status-site-nginx"), p.backend()).start()
        yield p, n
    finally:
        if n is not None:
            n.stop()
        p.stop()


def status(n, query: str = "json", timeout: float = 5) -> requests.Response:
    r = requests.get(n.url + "/status" + ("?" + query if query else ""), timeout=timeout)
    assert r.status_code == 200, (r.status_code, r.text)
    return r


def parse_text(body: str) -> tuple[dict, list[dict]]:
    """php-fpm's plain text page: the pool block, then one block per process."""
    blocks = body.split("\n************************\n")
    out = []
    for block in blocks:
        fields = {}
        for line in block.strip("\n").splitlines():
            m = re.fullmatch(r"([a-zA-Z ]+):( +)(.*)", line)
            assert m, "bad status line %r" % line
            assert len(m.group(1)) + 1 + len(m.group(2)) >= 22, line   # %-22s
            fields[m.group(1)] = m.group(3)
        out.append(fields)
    return out[0], out[1:]


def check_sums(snap: dict, max_active: bool = False) -> None:
    assert snap["idle processes"] + snap["active processes"] == snap["total processes"], snap
    if max_active:
        assert snap["max active processes"] >= snap["active processes"], snap


# ---- formats and fields ----------------------------------------------------------------


def test_status_formats_carry_php_fpm_fields(site):
    """/status answers in plain text, ?json, ?xml, ?html and ?openmetrics
    with php-fpm's fields in its order (plus max children and busy ratio),
    each with its Content-Type and no-cache headers; the values agree
    across formats; `accepted conn` counts every request (the status
    request itself included, as php-fpm does); OpenMetrics parses with
    prometheus-client, its metrics named pfm_* with a pool label and its
    counters sampled as *_total."""
    p, n = site
    t_start = time.time()
    base = status(n).json()["accepted conn"]
    for i in range(5):
        assert requests.get(n.url + "/hello", params={"i": i}, timeout=5).status_code == 200

    for query, ctype in CONTENT_TYPES.items():
        r = status(n, query)
        assert r.headers["Content-Type"] == ctype, (query, r.headers)
        assert r.headers["Cache-Control"] == "no-cache, no-store, must-revalidate, max-age=0"
        assert r.headers["Expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    # (base counted the first status request) 5 /hello, the 5 status requests, this one
    snap = json.loads(status(n, "json").text)
    assert snap["accepted conn"] == base + 5 + 5 + 1, (base, snap)
    assert list(snap) == POOL_FIELDS
    assert snap["pool"] == "www" and snap["process manager"] == "static"
    assert t_start - 120 < snap["start time"] <= time.time()
    assert 0 <= snap["start since"] < 120
    assert snap["total processes"] == 2 and snap["max children"] == 2
    assert snap["active processes"] >= 1       # a worker is serving this very request
    check_sums(snap)
    assert snap["busy ratio"] == snap["active processes"] / 2
    assert isinstance(snap["listen queue"], int) and snap["listen queue len"] > 0
    assert snap["max children reached"] == 0 and snap["slow requests"] == 0

    text, procs = parse_text(status(n, "").text)
    assert list(text) == POOL_FIELDS and procs == []
    assert text["pool"] == "www" and text["process manager"] == "static"
    assert re.fullmatch(r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}",
                        text["start time"]), text["start time"]
    assert int(text["accepted conn"]) == snap["accepted conn"] + 1
    assert text["total processes"] == "2" and text["max children"] == "2"
    assert re.fullmatch(r"\d\.\d\d", text["busy ratio"])

    root = ET.fromstring(status(n, "xml").content)
    assert root.tag == "status"
    assert [c.tag for c in root] == [f.replace(" ", "-") for f in POOL_FIELDS]
    assert root.findtext("pool") == "www"
    assert int(root.findtext("accepted-conn")) == snap["accepted conn"] + 2
    assert int(root.findtext("start-time")) == snap["start time"]
    assert root.findtext("total-processes") == "2"

    page = ET.fromstring(status(n, "html").content)
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    rows = {tr.findtext("h:th", namespaces=ns): tr.findtext("h:td", namespaces=ns)
            for tr in page.iterfind(".//h:table/h:tr", ns)}
    assert list(rows) == POOL_FIELDS
    assert rows["pool"] == "www" and rows["total processes"] == "2"
    assert int(rows["accepted conn"]) == snap["accepted conn"] + 3

    r = status(n, "openmetrics")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in ("pfm_up", "pfm_accepted_connections", "pfm_listen_queue",
                 "pfm_idle_processes", "pfm_active_processes", "pfm_total_processes",
                 "pfm_max_active_processes", "pfm_max_children_reached",
                 "pfm_slow_requests", "pfm_max_children", "pfm_busy_ratio"):
        assert name in families, (name, sorted(families))
    for f in families.values():
        assert f.name.startswith("pfm_")
        for s in f.samples:
            assert s.labels.get("pool") == "www", s
            if f.type == "counter":
                assert s.name == f.name + "_total", s
    (acc,) = families["pfm_accepted_connections"].samples
    assert acc.value == snap["accepted conn"] + 4
    (total,) = families["pfm_total_processes"].samples
    assert total.value == 2
    assert families["pfm_up"].samples[0].labels["pm"] == "static"


def test_status_full_shows_each_worker_and_its_last_request(pfm_factory, nginx_factory):
    """&full adds one entry per worker (php-fpm's fields plus pss and uss):
    the worker serving the status request is 'Running' it, the other shows
    its last request (a POST of 123 bytes to /echo: method, URI, content
    length), requests per worker add up to `accepted conn`, the last
    request's CPU is a percentage of one core (0..100), PSS/USS are real
    sizes; the text, XML and OpenMetrics forms list the same workers."""
    p = pfm_factory(pool=dict(STATUS, **{"pm.max_children": 2}))
    n = nginx_factory(p.backend())
    workers = p.worker_pids()
    for _ in range(4):
        assert requests.get(n.url + "/hello", timeout=5).status_code == 200
    # Occupy one worker so that the POST and the status request go to the other two
    # slots in a known way: both workers end up with a known last request.
    r = requests.post(n.url + "/echo", data=b"x" * 123, timeout=5)
    assert r.status_code == 200 and len(r.content) == 123
    snap = status(n, "json&full").json()
    procs = snap["processes"]
    assert list(snap)[:-1] == POOL_FIELDS and list(snap)[-1] == "processes"
    assert sorted(x["pid"] for x in procs) == workers
    assert len(procs) == snap["total processes"]
    assert sum(x["requests"] for x in procs) == snap["accepted conn"] == 6
    running = [x for x in procs if x["state"] == "Running"]
    assert len(running) == 1, procs
    assert running[0]["request uri"] == "/status?json&full"
    assert running[0]["request method"] == "GET"
    others = [x for x in procs if x is not running[0]]
    for x in procs:
        assert list(x) == PROCESS_FIELDS
        assert x["user"] == "-"
        assert x["pss"] > 0 and 0 < x["uss"] <= x["pss"] + 4096, x
        assert x["start time"] <= time.time() and x["requests"] >= 1
    for x in others:
        assert x["state"] in IDLE_STATES
        assert x["last request memory"] > 0
    posted = [x for x in procs if x["request method"] == "POST"]
    if posted:     # the POST's worker is idle now (the status went to the other one)
        assert posted[0]["request uri"] == "/echo" and posted[0]["content length"] == 123
    else:          # the same worker served both: its previous request is gone
        assert running[0]["requests"] >= 2

    _, text_procs = parse_text(status(n, "full").text)
    assert sorted(int(x["pid"]) for x in text_procs) == workers
    assert all(list(x) == [f if f != "request uri" else "request URI"
                           for f in PROCESS_FIELDS] for x in text_procs)
    root = ET.fromstring(status(n, "xml&full").content)
    assert sorted(int(x.findtext("pid")) for x in root.iterfind("processes/process")) == workers
    families = {f.name: f for f in text_string_to_metric_families(
        status(n, "openmetrics&full").text)}
    for name in ("pfm_process_requests", "pfm_process_pss_bytes", "pfm_process_uss_bytes",
                 "pfm_process_active"):
        assert sorted(int(s.labels["pid"]) for s in families[name].samples) == workers, name
    for x in others:
        assert 0.0 <= x["last request cpu"] <= 100.0, (
            "CPU of a single-threaded request as a percentage of one core", x)


def test_max_active_processes_counts_a_burst(pfm_factory, nginx_factory):
    """`max active processes` is the most workers busy at once since the
    pool started: after 2 requests ran together on 2 workers it is 2, and it
    is never below the current `active processes`."""
    p = pfm_factory(pool=dict(STATUS, **{"pm.max_children": 2}))
    n = nginx_factory(p.backend())
    reqs = [Background(requests.get, n.url + "/sleep?s=0.3", timeout=10) for _ in range(2)]
    assert [b.join_result(10).status_code for b in reqs] == [200, 200]
    assert len({r.result.json()["pid"] for r in reqs}) == 2
    snap = status(n).json()
    assert snap["max active processes"] == 2, snap
    check_sums(snap, max_active=True)


def test_accepted_conn_survives_worker_recycling(pfm_factory, nginx_factory):
    """`accepted conn` counts every request of the pool, including those
    served by workers already recycled by pm.max_requests (it never drifts
    or resets when workers come and go)."""
    p = pfm_factory(pool=dict(STATUS, **{"pm.max_children": 2, "pm.max_requests": 3}))
    n = nginx_factory(p.backend())
    with requests.Session() as s:
        for _ in range(20):
            assert s.get(n.url + "/hello", timeout=5).status_code == 200
    p.wait_log(r"child \d+ exited with code 0")
    assert status(n).json()["accepted conn"] == 21


def test_ping(site):
    """ping.path answers ping.response as text/plain, uncached, and HEAD gets
    the headers only; other paths still reach the app."""
    p, n = site
    r = requests.get(n.url + "/ping", timeout=5)
    assert r.status_code == 200 and r.text == "pong"
    assert r.headers["Content-Type"] == "text/plain"
    assert r.headers["Cache-Control"].startswith("no-cache")
    r = requests.head(n.url + "/ping", timeout=5)
    assert r.status_code == 200 and r.content == b""
    assert requests.get(n.url + "/hello", timeout=5).text == "Hello, World!\n"


# ---- counts under load ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_counts_always_add_up_under_load(pfm_factory, nginx_factory):
    """While 6 clients load a dynamic pool (workers forked and stopped), every
    status read has idle + active == total, as many process entries as total
    processes, idle == the entries in an idle state, and at most
    pm.max_children workers that are not retiring (a retiree, on its way
    out, can overlap its replacement)."""
    p = pfm_factory(pool=dict(STATUS, **{"pm": "dynamic", "pm.max_children": 4,
                                         "pm.start_servers": 1, "pm.min_spare_servers": 1,
                                         "pm.max_spare_servers": 2,
                                         "pm.max_requests": 15}), workers=False)
    p.wait_workers({"www": 1})
    n = nginx_factory(p.backend())
    stop = threading.Event()
    failures = []

    def load(i):
        paths = ["/hello", "/sleep?s=0.05", "/sleep?s=0.2", "/pid"]
        with requests.Session() as s:
            k = 0
            while not stop.is_set() and k < 400:
                r = s.get(n.url + paths[(i + k) % len(paths)], timeout=10)
                if r.status_code != 200:
                    failures.append(r.status_code)
                k += 1

    snaps = []
    with ThreadPoolExecutor(6) as ex:
        futures = [ex.submit(load, i) for i in range(6)]
        deadline = time.monotonic() + 3.0
        try:
            with requests.Session() as s:
                while time.monotonic() < deadline:
                    r = s.get(n.url + "/status?json&full", timeout=5)
                    assert r.status_code == 200
                    snaps.append(r.json())
        finally:
            stop.set()
        for f in futures:
            f.result(30)
    assert not failures, failures[:5]
    assert len(snaps) >= 20
    for snap in snaps:
        check_sums(snap)
        procs = snap["processes"]
        assert len(procs) == snap["total processes"], snap
        assert sum(x["state"] in IDLE_STATES for x in procs) == snap["idle processes"], snap
        assert sum(x["state"] != "Retiring" for x in procs) <= 4, snap
        assert snap["total processes"] <= 8, snap
    assert max(s["total processes"] for s in snaps) >= 2


# ---- saturation -----------------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_status_and_ping_answer_while_every_worker_is_busy(pfm_factory, nginx_factory,
                                                           run_dir):
    """Both workers sleep in 4 s requests and an ordinary request waits:
    /status?json, /status?json&full and /ping through nginx still answer
    within a second (the pool manager answers them), showing 2 active and 0
    idle; the waiting request is served by a worker once one is free."""
    p = pfm_factory(pool=dict(STATUS, **{"pm.max_children": 2}))
    n = nginx_factory(p.backend())
    files = [run_dir / "a", run_dir / "b"]
    sleepers = [Background(requests.get, n.url + "/sleep", params={"s": "4", "started": str(f)},
                           timeout=20) for f in files]
    wait_for(lambda: all(f.exists() for f in files), 5, "both workers to sleep")
    waiting = Background(requests.get, n.url + "/pid", timeout=20)
    time.sleep(0.3)
    assert not waiting.finished_at
    for query in ("json", "json&full"):
        t0 = time.monotonic()
        snap = status(n, query, timeout=3).json()
        assert time.monotonic() - t0 < 1.0
        assert snap["active processes"] == 2 and snap["idle processes"] == 0, snap
        assert snap["total processes"] == 2
    t0 = time.monotonic()
    r = requests.get(n.url + "/ping", timeout=3)
    assert r.status_code == 200 and r.text == "pong" and time.monotonic() - t0 < 1.0
    assert not waiting.finished_at, "an ordinary request was served before a worker was free"
    r = waiting.join_result(20)
    assert r.status_code == 200 and r.json()["pid"] in p.worker_pids()
    assert [b.join_result(10).status_code for b in sleepers] == [200, 200]


@pytest.mark.timeout(30)
def test_status_listen_answers_a_raw_fastcgi_client(pfm_factory):
    """pm.status_listen = 127.0.0.1:PORT: a FastCGI client on that address
    gets the status page (and ping), also while the only worker is busy."""
    port = harness.free_port()
    p = pfm_factory(pool=dict(STATUS, **{"pm.max_children": 1,
                                         "pm.status_listen": "127.0.0.1:%d" % port}))
    addr = ("127.0.0.1", port)
    r = fcgi_get(addr, "/status", "json")
    assert r.status == 200 and r.header("Content-Type") == "application/json"
    snap = r.json()
    assert snap["pool"] == "www" and snap["total processes"] == 1
    busy = Background(fcgi_get, p.address(), "/sleep", "s=2", timeout=10)
    time.sleep(0.3)
    t0 = time.monotonic()
    with FcgiConnection(addr, timeout=3) as c:
        r = c.request(harness.request_params("/status", "json"))
    assert time.monotonic() - t0 < 1.0
    assert r.status == 200 and r.json()["active processes"] == 1
    assert fcgi_get(addr, "/ping", timeout=3).body == b"pong"
    assert busy.join_result(10).status == 200


@pytest.mark.timeout(30)
def test_listen_queue_of_a_unix_socket_counts_waiting_connections(pfm_factory):
    """On a unix-socket pool (php-fpm always says 0 there), with the only
    worker busy and 3 requests waiting, the status page's `listen queue` is
    a real count (at least 1) and `max listen queue` too; then the waiting
    requests are all served."""
    p = pfm_factory(pool=dict(STATUS, **{"listen": "unix", "pm.max_children": 1}))
    addr = p.address()
    busy = Background(fcgi_get, addr, "/sleep", "s=2.5", timeout=10)
    time.sleep(0.3)
    waiting = [Background(fcgi_get, addr, "/pid", timeout=10) for _ in range(3)]
    time.sleep(0.4)
    snap = fcgi_get(addr, "/status", "json", timeout=3).json()
    assert snap["listen queue len"] and snap["listen queue len"] > 0, snap
    assert snap["max listen queue"] is not None and snap["max listen queue"] >= 1, snap
    assert snap["listen queue"] is not None and snap["listen queue"] >= 1, (
        "3 requests wait for the busy worker but the status page says %r" % snap)
    assert busy.join_result(10).status == 200
    assert [b.join_result(10).status for b in waiting] == [200] * 3


# ---- slowlog and timeouts -------------------------------------------------------------------


SLOWLOG_HEADER = r"\n\[\d{2}-[A-Z][a-z]{2}-\d{4} \d{2}:\d{2}:\d{2}\]  \[pool www\] pid %d\n"


@pytest.mark.timeout(30)
def test_slowlog_entry_names_the_slow_python_function(pfm_factory, nginx_factory, run_dir):
    """request_slowlog_timeout = 1s: a 2 s request logs php-fpm's WARNING
    'child N, script ... (request: "GET /sleep?s=2") executing too slow
    (T sec), logging', writes a slowlog entry (blank line, '[date]  [pool
    www] pid N', script_filename, request, then the Python stack innermost
    first: testapps.py's sleep() at the line that sleeps, then app()), counts
    in `slow requests`, and still completes with 200."""
    slowlog = run_dir / "slow.log"
    p = pfm_factory(pool=dict(STATUS, **{"pm.max_children": 1, "request_slowlog_timeout": "1s",
                                         "slowlog": str(slowlog)}))
    n = nginx_factory(p.backend())
    (worker,) = p.worker_pids()
    t0 = time.monotonic()
    r = requests.get(n.url + "/sleep?s=2", timeout=20)
    assert r.status_code == 200 and r.json() == {"pid": worker, "slept": 2.0}
    assert time.monotonic() - t0 >= 2.0
    m = p.wait_log(r"^%sWARNING: \[pool www\] child %d, script 'testapps:app' \(request: "
                   r"\"GET /sleep\?s=2\"\) executing too slow \((\d+\.\d+) sec\), logging$"
                   % (TIME_PREFIX, worker))
    assert 1.0 <= float(m.group(1)) < 2.0
    text = wait_for(lambda: harness.read_text(slowlog), 5, "the slowlog entry")
    m = re.match(SLOWLOG_HEADER % worker + r"script_filename = (\S+)\n"
                 r"request = GET /sleep\?s=2\n"
                 r"(\[0x[0-9a-f]+\] \S+\(\) \S+:\d+\n)+$", text)
    assert m, text
    frames = re.findall(r"^\[0x[0-9a-f]+\] (\S+)\(\) (\S+):(\d+)$", text, re.M)
    assert frames[0] == ("sleep", str(APPS / "testapps.py"), str(SLEEP_LINE)), frames
    assert frames[1][:2] == ("app", str(APPS / "testapps.py")), frames
    assert status(n).json()["slow requests"] == 1
    assert harness.alive(worker)


def cut_off(n, path: str, at_least: float, below: float) -> None:
    """A request through nginx that pfm ends: an error status (502/504, not
    200) after `at_least` to `below` seconds."""
    t0 = time.monotonic()
    r = requests.get(n.url + path, timeout=20)
    elapsed = time.monotonic() - t0
    assert r.status_code in (500, 502, 503, 504), (r.status_code, r.text)
    assert at_least <= elapsed < below, elapsed


def wait_killed(p, worker: int, signal_name: str) -> None:
    p.wait_log(r"^%sWARNING: \[pool www\] child %d exited on signal %s after "
               r"\d+\.\d{6} seconds from start$" % (TIME_PREFIX, worker, re.escape(signal_name)))


@pytest.mark.timeout(40)
@pytest.mark.parametrize("with_slowlog", [True, False], ids=["slowlog", "errorlog"])
def test_request_terminate_timeout_kills_only_that_request(pfm_factory, nginx_factory,
                                                           run_dir, with_slowlog):
    """request_terminate_timeout = 2s: a 10 s request is cut after about 2 s
    (nginx answers 502/504, not 200), pfm logs 'execution timed out (T sec),
    terminating' and 'child N exited on signal 15 (SIGTERM)', the request's
    Python stack is written first (to the slowlog if set, else the error
    log), and the pool serves the next request."""
    slowlog = run_dir / "slow.log"
    pool = dict(STATUS, **{"pm.max_children": 1, "request_terminate_timeout": "2s"})
    if with_slowlog:
        pool["slowlog"] = str(slowlog)
    p = pfm_factory(pool=pool)
    n = nginx_factory(p.backend())
    (worker,) = p.worker_pids()
    cut_off(n, "/sleep?s=10", 1.9, 5.0)
    m = p.wait_log(r"^%sWARNING: \[pool www\] child %d, script 'testapps:app' \(request: "
                   r"\"GET /sleep\?s=10\"\) execution timed out \((\d+\.\d+) sec\), "
                   r"terminating$" % (TIME_PREFIX, worker))
    assert 2.0 <= float(m.group(1)) < 3.0
    wait_killed(p, worker, "15 (SIGTERM)")
    stack_file = slowlog if with_slowlog else p.log_path
    entry = r"\[pool www\] pid %d\nscript_filename = \S+\nrequest = GET /sleep\?s=10\n" \
            r"\[0x[0-9a-f]+\] sleep\(\) %s:%d\n" % (worker, re.escape(str(APPS / "testapps.py")),
                                                   SLEEP_LINE)
    wait_for(lambda: re.search(entry, harness.read_text(stack_file)), 5,
             "the stack of the killed request in %s" % stack_file,
             on_fail=lambda: harness.read_text(stack_file))
    (new,) = p.wait_workers(exclude=(worker,))["www"]
    r = requests.get(n.url + "/pid", timeout=10)
    assert r.status_code == 200 and r.json()["pid"] == new


@pytest.mark.timeout(40)
def test_request_terminate_timeout_kills_an_app_that_ignores_sigterm(pfm_factory, nginx_factory,
                                                                     run_dir):
    """request_terminate_timeout = 1s and a request that ignores SIGTERM (as
    some libraries make a process do): one 'execution timed out' line, one
    stack entry in the slowlog, SIGTERM, and SIGKILL a second later (php-fpm
    does the same after process_control_timeout), so the request ends after
    about 2 s instead of running its 10 s with SIGTERM and a stack dump sent
    three times a second. The pool serves the next request."""
    slowlog = run_dir / "slow.log"
    p = pfm_factory(pool={"pm.max_children": 1, "request_terminate_timeout": "1s",
                          "slowlog": str(slowlog)})
    n = nginx_factory(p.backend())
    (worker,) = p.worker_pids()
    cut_off(n, "/ignore-term?s=10", 1.9, 4.0)
    wait_killed(p, worker, "9 (SIGKILL)")
    (new,) = p.wait_workers(exclude=(worker,))["www"]
    r = requests.get(n.url + "/pid", timeout=10)
    assert r.status_code == 200 and r.json()["pid"] == new
    log = p.log()
    assert len(re.findall(r"child %d, .* execution timed out" % worker, log)) == 1, log
    assert len(re.findall(r"\[pool www\] pid %d\n" % worker,
                          harness.read_text(slowlog))) == 1, harness.read_text(slowlog)


@pytest.mark.timeout(30)
def test_keepalive_idle_time_never_counts_toward_timeouts(pfm_factory, nginx_factory, run_dir):
    """request_terminate_timeout = 1s with kept-alive connections (a raw
    FastCGI client with FCGI_KEEP_CONN, and nginx with fastcgi_keep_conn):
    connections idle for 2 s between two fast requests cause no kill and no
    log line; the same worker answers before and after on the same
    connections."""
    p = pfm_factory(pool={"pm.max_children": 1, "request_terminate_timeout": "1s",
                          "request_slowlog_timeout": "1s", "slowlog": str(run_dir / "slow")})
    n = nginx_factory(p.backend(), keepalive=4)
    (worker,) = p.worker_pids()
    params = harness.request_params("/pid")
    with FcgiConnection(p.address()) as c, requests.Session() as s:
        first = c.request(params, keep_conn=True)
        assert first.status == 200 and first.json()["pid"] == worker
        r = s.get(n.url + "/pid", timeout=5)
        assert r.status_code == 200 and r.json()["pid"] == worker
        assert harness.established_to(p.port) >= 2      # ours and nginx's, both kept
        time.sleep(2.2)
        second = c.request(params, keep_conn=True)
        assert second.status == 200 and second.json()["pid"] == worker
        r = s.get(n.url + "/pid", timeout=5)
        assert r.status_code == 200 and r.json()["pid"] == worker
        assert not c.closed
    assert p.worker_pids() == [worker]
    assert "timed out" not in p.log() and "too slow" not in p.log(), p.log()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("track", [False, True], ids=["untracked", "tracked"])
def test_terminate_timeout_track_finished(pfm_factory, nginx_factory, run_dir, track):
    """request_terminate_timeout = 1s and an app that calls
    pfm.finish_request() then works 2.5 s more: the client has its 200 at
    once either way; with request_terminate_timeout_track_finished = no the
    work after finish_request is not timed (the app finishes and writes its
    marker), with yes it is (the worker is terminated, no marker)."""
    p = pfm_factory(pool={"pm.max_children": 1, "request_terminate_timeout": "1s",
                          "request_terminate_timeout_track_finished": track})
    n = nginx_factory(p.backend())
    (worker,) = p.worker_pids()
    marker = run_dir / "done"
    t0 = time.monotonic()
    r = requests.get(n.url + "/finish", params={"s": "2.5", "marker": str(marker)}, timeout=10)
    assert r.status_code == 200 and time.monotonic() - t0 < 1.0
    if track:
        p.wait_log(r"WARNING: \[pool www\] child %d, script 'testapps:app' \(request: "
                   r"\"GET /finish\?s=2\.5&marker=\S+\"\) execution timed out" % worker)
        p.wait_log(r"child %d exited on signal 15 \(SIGTERM\)" % worker)
        time.sleep(2.0)
        assert not marker.exists()
    else:
        wait_for(marker.exists, 5, "the work after finish_request to complete")
        assert harness.alive(worker) and "timed out" not in p.log(), p.log()
    r = requests.get(n.url + "/pid", timeout=10)
    assert r.status_code == 200


# ---- access log -------------------------------------------------------------------------------


def test_access_log_custom_format(pfm_factory, nginx_factory, run_dir):
    """access.format = "%R %m %r%Q%q %s %{mili}d %n %p %{HTTP_HOST}e
    %{Content-Type}o": one line per request, in order, with the client
    address (nginx, 127.0.0.1), method, path and query, status, duration in
    milliseconds, pool, worker pid, the Host header and the response's
    Content-Type."""
    access = run_dir / "access.log"
    p = pfm_factory(pool={"pm.max_children": 1, "access.log": str(access),
                          "access.format": '"%R %m %r%Q%q %s %{mili}d %n %p %{HTTP_HOST}e '
                                           '%{Content-Type}o"'})
    n = nginx_factory(p.backend())
    (worker,) = p.worker_pids()
    host = {"Host": "shop.example"}
    with requests.Session() as s:
        assert s.get(n.url + "/pid?x=1&y=2", headers=host, timeout=5).status_code == 200
        assert s.get(n.url + "/hello", headers=host, timeout=5).status_code == 200
        assert s.post(n.url + "/status?code=418", data=b"abc", headers=host,
                      timeout=5).status_code == 418
        assert s.get(n.url + "/sleep?s=0.3", headers=host, timeout=5).status_code == 200
    def four():
        got = [x for x in harness.read_text(access).splitlines() if x]
        return got if len(got) >= 4 else None
    lines = wait_for(four, 5, "4 access log lines", on_fail=lambda: harness.read_text(access))
    assert len(lines) == 4, lines
    d = r"(\d+\.\d{3})"
    want = [
        r"127\.0\.0\.1 GET /pid\?x=1&y=2 200 %s www %d shop\.example application/json"
        % (d, worker),
        r"127\.0\.0\.1 GET /hello 200 %s www %d shop\.example text/plain" % (d, worker),
        r"127\.0\.0\.1 POST /status\?code=418 418 %s www %d shop\.example text/plain"
        % (d, worker),
        r"127\.0\.0\.1 GET /sleep\?s=0\.3 200 %s www %d shop\.example application/json"
        % (d, worker),
    ]
    for line, rx in zip(lines, want):
        assert re.fullmatch(rx, line), (line, rx)
    slept = float(re.fullmatch(want[3], lines[3]).group(1))
    assert 300.0 <= slept < 1500.0, slept
