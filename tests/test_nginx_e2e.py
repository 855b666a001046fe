"""End to end: HTTP clients -> a real Debian nginx -> pfm -> WSGI apps.

nginx's `location /` holds nothing but the stock `include fastcgi_params;`
and `fastcgi_pass` unless a test says otherwise (keep-alive upstream,
fastcgi_buffering off, client_max_body_size 0): applications must work with
the configuration people copy from PHP-FPM setups.
"""

from __future__ import annotations

import collections
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import harness
import pytest
import requests
from harness import APPS, wait_for


@pytest.fixture(scope="module")
def site():
    """One pfm pool (3 workers of testapps) behind one stock nginx, shared by
    the tests that do not disturb it."""
    p = harness.Pfm(harness.new_dir("e2e-site"), pool={"pm.max_children": 3})
    n = None
    try:
        p.start()
        n = harness.Nginx(harness.new_dir("e2e-site-nginx"), p.backend(),
                          locations={"/stream": ["fastcgi_buffering off;"]}).start()
        yield p, n
    finally:
        if n is not None:
            n.stop()
        p.stop()


def no_trouble(p: harness.Pfm) -> None:
    """Nothing in pfm's log or output that a healthy run would not write."""
    text = p.log() + p.output()
    for word in ("Traceback", "AssertionError", "Warning:", "WARNING", "ERROR", "ALERT"):
        assert word not in text, "%r in pfm's log:\n%s" % (word, text)


# ---- the demo --------------------------------------------------------------------------


def test_demo_page_shows_workers_each_with_its_own_count(pfm_factory, nginx_factory):
    """The demo through nginx: reloading shows several worker pids, each
    counting only its own requests (1, 2, 3, ... per pid), pool 'www'; the
    HTML page shows the pool, the pid and that count."""
    p = pfm_factory(pool={"app": "pfm.demo:app", "pm.max_children": 3})
    n = nginx_factory(p.backend())
    seen = collections.defaultdict(list)
    with requests.Session() as s:
        for _ in range(30):
            r = s.get(n.url + "/?format=json", timeout=10)
            assert r.status_code == 200
            assert r.headers["Content-Type"].startswith("application/json")
            info = r.json()
            assert info["pool"] == "www"
            seen[info["pid"]].append(info["requests"])
    assert len(seen) >= 2, "every reload served by one worker: %r" % dict(seen)
    assert set(seen) <= set(p.worker_pids())
    for pid, counts in seen.items():
        assert counts == list(range(1, len(counts) + 1)), (pid, counts)

    r = requests.get(n.url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert len([w for w in p.worker_pids() if re.search(r"\b%d\b" % w, r.text)]) == 1, r.text
    assert "www" in r.text


@pytest.mark.timeout(180)
def test_readme_demo_command_serves_the_demo_through_nginx():
    """README's first command, scripts/demo, sets up and starts nginx and pfm,
    prints a local URL that serves the demo (several workers, each with its
    own count), and Ctrl-C/TERM stops everything it started."""
    script = harness.ROOT / "scripts" / "demo"
    assert os.access(script, os.X_OK), script
    out_path = harness.new_dir("demo") / "demo.out"
    out = open(out_path, "wb")
    proc = subprocess.Popen([str(script), str(harness.free_port())], cwd=str(harness.ROOT),
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            env=harness.test_env(), start_new_session=True)
    out.close()
    try:
        m = wait_for(lambda: re.search(r"open (http://127\.0\.0\.1:\d+/)",
                                       harness.read_text(out_path)), 150,
                     "scripts/demo to print its URL",
                     on_fail=lambda: harness.read_text(out_path))
        url = m.group(1)
        seen = collections.defaultdict(list)

        def fetch():
            try:
                r = requests.get(url + "?format=json", timeout=5)
                return r if r.status_code == 200 else None
            except requests.RequestException:
                return None
        wait_for(fetch, 10, "the demo to answer")
        for _ in range(20):
            info = requests.get(url + "?format=json", timeout=5).json()
            assert info["pool"] == "www"
            seen[info["pid"]].append(info["requests"])
        assert len(seen) >= 2, dict(seen)
        for pid, counts in seen.items():
            assert counts == sorted(counts) and len(set(counts)) == len(counts), (pid, counts)
        page = requests.get(url, timeout=5)
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
        tree = harness.group_members(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        wait_for(lambda: not any(harness.alive(p) for p in tree), 10,
                 "everything scripts/demo started to stop",
                 on_fail=lambda: repr([(p, harness.cmdline(p)) for p in tree
                                       if harness.alive(p)]))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


# ---- WSGI through stock nginx ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp4", "tcp6", "unix"])
def test_hello_through_nginx_on_each_backend_transport(pfm_factory, nginx_factory, transport):
    """fastcgi_pass to 127.0.0.1:PORT, [::1]:PORT and unix:/path all work."""
    listen = None
    if transport == "tcp6":
        if not harness.ipv6_available():
            pytest.skip("no IPv6 loopback")
        listen = "[::1]:%d" % harness.free_port("::1")
    elif transport == "unix":
        listen = "unix"
    p = pfm_factory(pool={"listen": listen})
    n = nginx_factory(p.backend())
    r = requests.get(n.url + "/hello", timeout=10)
    assert r.status_code == 200 and r.text == "Hello, World!\n"


def test_environ_from_stock_fastcgi_params(site):
    """With stock fastcgi_params (SCRIPT_NAME=$fastcgi_script_name, no
    PATH_INFO) the app is mounted at the root: SCRIPT_NAME '' and PATH_INFO
    the path; CGI and WSGI keys as PEP 3333 wants them."""
    p, n = site
    r = requests.post(n.url + "/environ?x=1&y=%20z", data=b"a=b",
                      headers={"Content-Type": "application/x-www-form-urlencoded",
                               "X-Custom-Header": "custom"}, timeout=10)
    assert r.status_code == 200
    env = r.json()
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "x=1&y=%20z"
    assert env["REQUEST_METHOD"] == "POST"
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_X_CUSTOM_HEADER"] == "custom"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_PORT"] == str(n.port)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.multiprocess"] is True and env["wsgi.multithread"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input.has"] == ["read", "readline", "readlines", "__iter__"]
    assert env["pfm.pool"] == "www"


def test_head_request(site):
    """HEAD through nginx: 200, the headers, no body."""
    p, n = site
    r = requests.head(n.url + "/hello", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "14"
    assert r.content == b""


def test_status_codes_and_headers_pass_through(site):
    """The app's status line and headers reach the client (201, 404, 418, 204)."""
    p, n = site
    for code in (201, 404, 418, 204):
        r = requests.get(n.url + "/status?code=%d" % code, timeout=10, allow_redirects=False)
        assert r.status_code == code
        assert r.headers.get("X-Pfm-Test") == "yes"


def test_repeated_and_latin1_headers(site):
    """Two Set-Cookie headers both arrive; a latin-1 header value arrives as sent."""
    p, n = site
    r = requests.get(n.url + "/cookies", timeout=10)
    assert r.status_code == 200
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert r.cookies.get("a") == "1" and r.cookies.get("b") == "2"
    assert r.headers["X-Latin-1"].encode("latin-1") == b"caf\xe9"


@pytest.mark.parametrize("how", ["chunks", "readline", "iter", "read"])
def test_post_bodies_through_nginx(site, how):
    """A request body (chunked from the client, buffered by nginx) reaches
    wsgi.input intact, whichever way the app reads it."""
    p, n = site
    body = b"".join(b"%05d: %s\n" % (i, b"q" * (i % 97)) for i in range(8000))

    def gen():
        for i in range(0, len(body), 100000):
            yield body[i:i + 100000]
    r = requests.post(n.url + "/echo?how=" + how, data=gen(), timeout=30)
    assert r.status_code == 200
    assert r.content == body


def test_file_wrapper_write_and_close(site):
    """wsgi.file_wrapper sends the file, the write() callable and the returned
    iterable combine in order, and close() is called on the iterable."""
    p, n = site
    r = requests.get(n.url + "/file", timeout=10)
    assert r.status_code == 200 and r.content == (APPS / "testapps.py").read_bytes()

    r = requests.get(n.url + "/write", timeout=10)
    assert r.text == "written by write(); returned by the app\n"

    marker = harness.new_dir("close") / "closed"
    r = requests.get(n.url + "/close", params={"marker": str(marker)}, timeout=10)
    assert r.text == "iterable with close\n"
    wait_for(marker.exists, 5, "close() to be called")


def test_start_response_with_exc_info(site):
    """start_response(status, headers, exc_info) before any output replaces the
    response (PEP 3333's error path)."""
    p, n = site
    r = requests.get(n.url + "/exc-info", timeout=10)
    assert r.status_code == 503
    assert r.text == "handled: caught by the app\n"


def test_streaming_response_arrives_incrementally(site):
    """With fastcgi_buffering off, a generator's chunks reach the HTTP client
    as they are yielded: the first well before the last."""
    p, n = site
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /stream?n=4&delay=0.5 HTTP/1.0\r\nHost: localhost\r\n\r\n")
        f = s.makefile("rb")
        arrivals = []
        for _ in range(200):
            line = f.readline()
            if not line:
                break
            if line.startswith(b"chunk "):
                arrivals.append(time.monotonic() - t0)
    assert len(arrivals) == 4, arrivals
    assert arrivals[0] < 0.45, arrivals
    assert arrivals[-1] - arrivals[0] > 1.2, arrivals


def test_wsgi_errors_and_no_noise(site):
    """wsgi.errors reaches pfm's error log; ordinary traffic leaves no
    warning or error there."""
    p, n = site
    mark = p.log_size()
    r = requests.get(n.url + "/errors?token=e2e55", timeout=10)
    assert r.status_code == 200
    p.wait_log(r"wsgi\.errors says e2e55", start=mark)


# ---- Flask ------------------------------------------------------------------------------------


MOUNTED_AT_APP = ["fastcgi_split_path_info ^(/app)(/.*)$;",
                  "fastcgi_param PATH_INFO $fastcgi_path_info;"]


@pytest.fixture(scope="module")
def flask_site():
    """The Flask app behind stock nginx at /, and also mounted at /app with
    fastcgi_split_path_info (SCRIPT_NAME=/app, PATH_INFO the rest)."""
    p = harness.Pfm(harness.new_dir("flask"), pool={"app": "flaskapp:app"})
    n = None
    try:
        p.start()
        n = harness.Nginx(harness.new_dir("flask-nginx"), p.backend(),
                          locations={"/app/": MOUNTED_AT_APP}).start()
        yield p, n
    finally:
        if n is not None:
            n.stop()
        p.stop()


def test_flask_routes_through_stock_nginx(flask_site):
    """A Flask app with several routes works behind `include fastcgi_params;
    fastcgi_pass` and nothing more: path parameters (with UTF-8), query
    arguments, a POST form, JSON in and out, url_for() and redirects, 404s."""
    p, n = flask_site
    u = n.url
    r = requests.get(u + "/", timeout=10)
    assert r.status_code == 200 and r.text.startswith("Flask index")

    r = requests.get(u + "/users/42", timeout=10)
    assert r.json() == {"uid": 42, "url": "/users/42", "path": "/users/42", "script_root": ""}

    r = requests.get(u + "/hello/caf%C3%A9%20ol%C3%A9", timeout=10)
    assert r.json() == {"name": "café olé"}

    r = requests.get(u + "/files/a/b/c.txt", timeout=10)
    assert r.json() == {"sub": "a/b/c.txt"}

    r = requests.get(u + "/search", params=[("q", "hello world&more"), ("tag", "a"),
                                           ("tag", "b"), ("page", "3")], timeout=10)
    assert r.json() == {"q": "hello world&more", "tags": ["a", "b"], "page": 3}

    r = requests.post(u + "/form", data={"name": "Zoë", "age": "33"}, timeout=10)
    assert r.json() == {"name": "Zoë", "age": 33, "method": "POST"}

    r = requests.post(u + "/api/sum", json={"numbers": [1, 2, 3.5]}, timeout=10)
    assert r.status_code == 200 and r.json() == {"total": 6.5, "count": 3}

    r = requests.get(u + "/go", allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"] in ("/users/7", "http://127.0.0.1/users/7",
                                     u + "/users/7")
    r = requests.get(u + "/go", timeout=10)
    assert r.status_code == 200 and r.json()["uid"] == 7 and r.url == u + "/users/7"

    r = requests.get(u + "/go-external", allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"].endswith("/search?q=x")

    r = requests.get(u + "/no/such/page", timeout=10)
    assert r.status_code == 404 and r.json() == {"error": "not found",
                                                 "path": "/no/such/page"}
    r = requests.delete(u + "/users/1", timeout=10)
    assert r.status_code == 405
    no_trouble(p)


def test_flask_mounted_under_a_prefix(flask_site):
    """With fastcgi_split_path_info sending SCRIPT_NAME=/app and PATH_INFO, the
    app sees itself mounted at /app: routes match, url_for() and redirects
    carry the prefix."""
    p, n = flask_site
    r = requests.get(n.url + "/app/users/42", timeout=10)
    assert r.json() == {"uid": 42, "url": "/app/users/42", "path": "/users/42",
                        "script_root": "/app"}
    r = requests.get(n.url + "/app/go", allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"].endswith("/app/users/7")
    r = requests.get(n.url + "/app/search?q=mounted", timeout=10)
    assert r.json()["q"] == "mounted"


# ---- the validator -----------------------------------------------------------------------------


def test_validator_wrapped_app_raises_nothing(pfm_factory, nginx_factory):
    """testapps behind wsgiref.validate.validator, through stock nginx: GET,
    POST with a body, HEAD, streaming, write(), close(), exc_info, a 204 and a
    404 all pass every PEP 3333 check (any AssertionError or WSGIWarning would
    be a 500 and a traceback in the log)."""
    p = pfm_factory(pool={"app": "validated:app", "catch_workers_output": "yes"})
    n = nginx_factory(p.backend())
    u = n.url
    marker = harness.new_dir("validated") / "closed"
    checks = [
        ("GET", "/hello", None, 200),
        ("GET", "/environ?a=1", None, 200),
        ("GET", "/pid", None, 200),
        ("POST", "/echo", b"x=1&y=2" * 5000, 200),
        ("POST", "/upload", b"z" * 300000, 200),
        ("HEAD", "/hello", None, 200),
        ("HEAD", "/pid", None, 200),
        ("GET", "/stream?n=2&delay=0.05", None, 200),
        ("GET", "/write", None, 200),
        ("GET", "/close?marker=%s" % marker, None, 200),
        ("GET", "/exc-info", None, 503),
        ("GET", "/status?code=204", None, 204),
        ("GET", "/status?code=404", None, 404),
        ("GET", "/nowhere", None, 404),
    ]
    with requests.Session() as s:
        for method, path, body, want in checks:
            r = s.request(method, u + path, data=body, timeout=10)
            assert r.status_code == want, (method, path, r.status_code, r.text)
    wait_for(marker.exists, 5, "close() through the validator")
    p.stop()   # flushes anything a worker still had to say (validator checks in __del__)
    no_trouble(p)


# ---- finish_request, exceptions, memory ------------------------------------------------------


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode,keepalive", [("write", None), ("iter", None), ("write", 1)])
def test_finish_request_through_nginx(pfm_factory, nginx_factory, mode, keepalive):
    """pfm.finish_request(): the client gets the whole response at once while
    the app works on for 2 s (then writes a marker); the worker is busy
    meanwhile, so with one worker the next request waits for it - also when
    nginx keeps its FastCGI connections alive (it must not send the next
    request down the released connection and fail)."""
    p = pfm_factory(pool={"pm.max_children": 1})
    n = nginx_factory(p.backend(), keepalive=keepalive)
    marker = harness.new_dir("finish") / "done"
    t0 = time.monotonic()
    r = requests.get(n.url + "/finish", params={"s": "2", "marker": str(marker),
                                                "mode": mode}, timeout=20)
    answered = time.monotonic() - t0
    assert r.status_code == 200
    assert r.text == "finished by %d\n" % p.worker_pids()[0]
    assert answered < 1.5, answered
    assert not marker.exists()
    r2 = requests.get(n.url + "/pid", timeout=20)
    second = time.monotonic() - t0
    assert r2.status_code == 200
    assert marker.exists(), "the single worker served a request before its finish work ended"
    assert second >= 1.9, second
    assert "True" in marker.read_text()


def test_exception_gives_500_and_the_next_request_is_fine(pfm_factory, nginx_factory):
    """An app exception: nginx answers 500, pfm logs the traceback, and the
    same (only) worker serves the following requests."""
    p = pfm_factory(pool={"pm.max_children": 1})
    n = nginx_factory(p.backend())
    worker = p.worker_pids()[0]
    r = requests.get(n.url + "/boom?token=nx500", timeout=10)
    assert r.status_code == 500
    p.wait_log(r"RuntimeError: boom nx500")
    for _ in range(3):
        r = requests.get(n.url + "/pid", timeout=10)
        assert r.status_code == 200 and r.json()["pid"] == worker


@pytest.mark.parametrize("kind", ["strchunk", "strwrite"])
def test_str_chunk_gives_500_not_502(pfm_factory, nginx_factory, kind):
    """An app whose first chunk is a str (from an iterator, or given to
    write()) has sent nothing yet: nginx gets pfm's 500 with the error
    logged, not a connection dropped mid-response (502), and the same worker
    serves the next request."""
    p = pfm_factory(pool={"pm.max_children": 1})
    n = nginx_factory(p.backend())
    worker = p.worker_pids()[0]
    r = requests.get(n.url + "/bad?kind=" + kind, timeout=10)
    assert r.status_code == 500, (r.status_code, r.text)
    assert r.text == "Internal Server Error\n"
    p.wait_log(r"ERROR: \[pool www\] child %d: exception in the application \(request: "
               r"\"GET /bad\?kind=%s\"\)" % (worker, kind))
    p.wait_log(r"ERROR: \[pool www\] child %d: TypeError: " % worker)
    assert "upstream prematurely closed" not in n.error_log_text()
    r = requests.get(n.url + "/pid", timeout=10)
    assert r.status_code == 200 and r.json()["pid"] == worker


def test_exception_after_the_headers_went_out(pfm_factory, nginx_factory):
    """An exception after part of a streamed body was sent cannot become a 500:
    the traceback is logged and the worker serves the next request.
    (pfm drops the FastCGI connection without END_REQUEST, see
    test_fcgi_clients; nginx 1.22 then ends the chunked response as if it
    were complete, so the HTTP client cannot tell.)"""
    p = pfm_factory(pool={"pm.max_children": 1})
    n = nginx_factory(p.backend())
    worker = p.worker_pids()[0]
    try:
        r = requests.get(n.url + "/boom-late?token=late7", timeout=10)
        assert r.status_code in (200, 502)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        pass
    p.wait_log(r"RuntimeError: late boom late7")
    r = requests.get(n.url + "/pid", timeout=10)
    assert r.status_code == 200 and r.json()["pid"] == worker


@pytest.mark.timeout(60)
def test_upload_that_pauses_mid_body_with_request_buffering_off(pfm_factory, nginx_factory):
    """With `fastcgi_request_buffering off` nginx streams the body as the client
    sends it; a slow client that pauses 6 s half-way must still get its upload
    read whole (php-fpm just waits; nginx's own timeouts govern the client)."""
    p = pfm_factory(pool={"pm.max_children": 1})
    n = nginx_factory(p.backend(), locations={"/upload": ["fastcgi_request_buffering off;"]})
    body = os.urandom(200000)
    conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=30)
    try:
        conn.putrequest("POST", "/upload")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders(body[:100000])
        time.sleep(6)
        conn.send(body[100000:])
        r = conn.getresponse()
        raw = r.read()
    finally:
        conn.close()
    assert r.status == 200, (r.status, raw[:300], p.log()[-2000:])
    info = json.loads(raw)
    assert info["size"] == len(body)
    assert info["sha256"] == hashlib.sha256(body).hexdigest()


class PatternBody:
    """A request body of `size` bytes made on the fly (no 100 MB in memory),
    hashed as it is read; requests sends it with a Content-Length."""

    def __init__(self, size: int):
        self.size = size
        self.sent = 0
        self.block = hashlib.sha256(b"pfm").digest() * 2048   # 64 KiB
        self.digest = hashlib.sha256()

    def __len__(self):
        return self.size - self.sent

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.sent
        if left <= 0:
            return b""
        n = left if n is None or n < 0 else min(n, left)
        out = bytearray()
        while len(out) < n:
            off = (self.sent + len(out)) % len(self.block)
            out += self.block[off:off + n - len(out)]
        data = bytes(out)
        self.sent += len(data)
        self.digest.update(data)
        return data


@pytest.mark.timeout(180)
def test_100mb_upload_with_flat_worker_memory(pfm_factory, nginx_factory):
    """A 100 MB POST through nginx is read by the app in 64 KiB pieces and
    hashed correctly, while the worker that served it grows by far less than
    the body (wsgi.input streams; nothing holds the whole body)."""
    p = pfm_factory(pool={"pm.max_children": 1})
    n = nginx_factory(p.backend(), max_body="0")
    worker = p.worker_pids()[0]
    rss_before = harness.vm_kb(worker, "VmRSS")
    body = PatternBody(100 * 1024 * 1024)
    r = requests.post(n.url + "/upload", data=body, timeout=150,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["pid"] == worker
    assert info["size"] == body.size
    assert info["sha256"] == body.digest.hexdigest()
    limit_kb = 30 * 1024
    assert info["hwm_after_kb"] - info["hwm_before_kb"] < limit_kb, info
    assert harness.vm_kb(worker, "VmRSS") - rss_before < limit_kb
    assert harness.vm_kb(worker, "VmHWM") - rss_before < limit_kb


# ---- keep-alive upstream -----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_keepalive_upstream_many_requests_all_succeed(pfm_factory, nginx_factory):
    """nginx with `fastcgi_keep_conn on` and an upstream `keepalive 2` in front
    of 2 workers: 300 sequential and 300 concurrent requests (8 at a time) all
    get 200 with the right body, and nginx keeps idle connections open to
    pfm afterwards (the connections are reused, not re-made per request)."""
    p = pfm_factory(pool={"pm.max_children": 2})
    n = nginx_factory(p.backend(), keepalive=2)
    with requests.Session() as s:
        for i in range(300):
            r = s.get(n.url + "/pid", timeout=10)
            assert r.status_code == 200, (i, r.status_code, r.text)
            assert r.json()["pid"] in p.worker_pids()

    errors = []
    lock = threading.Lock()

    def hit(i):
        path = "/echo" if i % 3 == 0 else "/hello"
        try:
            if path == "/echo":
                payload = b"%d" % i * 100
                r = requests.post(n.url + path, data=payload, timeout=20)
                ok = r.status_code == 200 and r.content == payload
            else:
                r = requests.get(n.url + path, timeout=20)
                ok = r.status_code == 200 and r.text == "Hello, World!\n"
            if not ok:
                with lock:
                    errors.append((i, r.status_code, r.text[:200]))
        except requests.RequestException as e:
            with lock:
                errors.append((i, repr(e)))

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(hit, range(300)))
    assert not errors, errors[:10]
    wait_for(lambda: 1 <= harness.established_to(p.port) <= 2, 5,
             "nginx to keep 1 or 2 idle connections to pfm",
             on_fail=lambda: "ESTABLISHED: %d" % harness.established_to(p.port))
    assert "[error]" not in n.error_log_text(), n.error_log_text()[-3000:]
    no_trouble(p)


def test_big_response_through_nginx(site):
    """A 20 MB response (spilled to nginx's temp file) arrives intact."""
    p, n = site
    size = 20 * 1024 * 1024 + 3
    r = requests.get(n.url + "/big?n=%d" % size, timeout=60)
    assert r.status_code == 200 and len(r.content) == size
    assert r.content == (b"0123456789abcdef" * (size // 16 + 1))[:size]


@pytest.mark.timeout(60)
def test_one_worker_many_concurrent_clients(pfm_factory, nginx_factory):
    """More concurrent clients than workers: connections wait in the listen
    backlog and every request is served (1 worker, 8 clients, 80 requests)."""
    p = pfm_factory(pool={"pm.max_children": 1})
    n = nginx_factory(p.backend())

    def hit(i):
        r = requests.get(n.url + "/echo", data=b"%d" % i, timeout=30)
        return r.status_code, r.content == b"%d" % i
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(hit, range(80)))
    assert results == [(200, True)] * 80


def test_concurrent_requests_spread_over_workers(site):
    """Slow requests in parallel run in different workers at the same time."""
    p, n = site
    t0 = time.monotonic()
    with ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda _: requests.get(n.url + "/sleep?s=1", timeout=20),
                              range(3)))
    elapsed = time.monotonic() - t0
    assert all(r.status_code == 200 for r in results)
    assert len({r.json()["pid"] for r in results}) == 3
    assert elapsed < 2.5, elapsed


def test_json_roundtrip_helper_sanity(site):
    """The shared site answers JSON (guards the fixtures themselves)."""
    p, n = site
    assert json.loads(requests.get(n.url + "/pid", timeout=10).text)["pool"] == "www"
