"""WSGI test applications for pfm's process and end-to-end tests.

`app` routes on PATH_INFO to small PEP 3333 applications, each showing one
behaviour (streaming, finish_request, an exception, ...), so one pool can serve
most tests. The other callables are the same applications under their own
names, for pools that mount just one of them.

Query parameters steer them (e.g. `/sleep?s=2&started=/tmp/x`): file paths
given by the tests are where an application leaves a marker the test waits for.
Everything answers text or JSON and says which worker (pid) served it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from urllib.parse import parse_qs

served = 0  # requests served by this worker process


def _query(environ) -> dict:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _touch(path: str, text: str = "") -> None:
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)   # the test never sees a half-written marker


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def _proc_status(field: str) -> int:
    """A /proc/self/status size field (VmRSS, VmHWM) in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def hello(environ, start_response):
    body = b"Hello, World!\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def pid(environ, start_response):
    """Which worker, and how many requests it has served."""
    return _json(start_response, {"pid": os.getpid(), "requests": served,
                                  "pool": environ.get("pfm.pool")})


def environ_dump(environ, start_response):
    """The CGI/WSGI keys as the application sees them."""
    out = {}
    for key, value in environ.items():
        if isinstance(value, (str, int, bool)) or value is None:
            out[key] = value
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = type(value).__name__
    out["wsgi.input.has"] = [m for m in ("read", "readline", "readlines", "__iter__")
                             if hasattr(environ["wsgi.input"], m)]
    return _json(start_response, out)


def echo(environ, start_response):
    """The request body back, read the way ?how= says."""
    how = _query(environ).get("how", "chunks")
    inp = environ["wsgi.input"]
    if how == "read":
        data = inp.read()
    elif how == "readline":
        parts = []
        while True:
            line = inp.readline()
            if not line:
                break
            parts.append(line)
        data = b"".join(parts)
    elif how == "readlines":
        data = b"".join(inp.readlines())
    elif how == "iter":
        data = b"".join(line for line in inp)
    elif how == "length":
        data = inp.read(int(environ.get("CONTENT_LENGTH") or 0))
    else:
        parts = []
        while True:
            chunk = inp.read(8192)
            if not chunk:
                break
            parts.append(chunk)
        data = b"".join(parts)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(data)))])
    return [data]


def upload(environ, start_response):
    """Hash the body in 64 KiB reads; report this worker's memory before and after."""
    rss_before, hwm_before = _proc_status("VmRSS"), _proc_status("VmHWM")
    inp = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = inp.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return _json(start_response, {
        "pid": os.getpid(), "size": size, "sha256": digest.hexdigest(),
        "rss_before_kb": rss_before, "rss_after_kb": _proc_status("VmRSS"),
        "hwm_before_kb": hwm_before, "hwm_after_kb": _proc_status("VmHWM")})


def stream(environ, start_response):
    """?n chunks, ?delay seconds apart; each chunk says when it left the app."""
    q = _query(environ)
    n, delay = int(q.get("n", 3)), float(q.get("delay", 0.5))
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        for i in range(n):
            if i:
                time.sleep(delay)
            yield ("chunk %d at %.6f\n" % (i, time.time())).encode()
    return gen()


def big(environ, start_response):
    """?n bytes of a repeating pattern, in one body (split into records by pfm)."""
    n = int(_query(environ).get("n", 1 << 20))
    body = (b"0123456789abcdef" * (n // 16 + 1))[:n]
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(n))])
    return [body]


def finish(environ, start_response):
    """PHP's echo; fastcgi_finish_request(); slow work. ?mode=write uses the
    write() callable, ?mode=iter a generator; the marker appears after ?s."""
    q = _query(environ)
    delay, marker = float(q.get("s", 2)), q.get("marker", "")
    body = ("finished by %d\n" % os.getpid()).encode()
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    if q.get("mode", "write") == "write":
        write = start_response("200 OK", headers)
        write(body)
        ok = environ["pfm.finish_request"]()
        time.sleep(delay)
        _touch(marker, "finish_request returned %r at %.6f" % (ok, time.time()))
        return []

    start_response("200 OK", headers)

    def gen():
        yield body
        ok = environ["pfm.finish_request"]()
        time.sleep(delay)
        _touch(marker, "finish_request returned %r at %.6f" % (ok, time.time()))
    return gen()


def boom(environ, start_response):
    """An application bug: the exception carries ?token so the test finds it in the log."""
    raise RuntimeError("boom %s" % _query(environ).get("token", ""))


def boom_late(environ, start_response):
    """Fails after the first chunk of a streamed body went out."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"first part\n"
        raise RuntimeError("late boom %s" % _query(environ).get("token", ""))
    return gen()


def sleep(environ, start_response):
    """Sleep ?s seconds; ?started names a file written (with the pid) when it starts."""
    q = _query(environ)
    _touch(q.get("started", ""), str(os.getpid()))
    time.sleep(float(q.get("s", 1)))
    return _json(start_response, {"pid": os.getpid(), "slept": float(q.get("s", 1))})


def ignore_term(environ, start_response):
    """/sleep that ignores SIGTERM while it runs, as some libraries make a
    process do: request_terminate_timeout must still end it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return sleep(environ, start_response)


def file_wrapper(environ, start_response):
    """wsgi.file_wrapper over this module's own source."""
    f = open(__file__, "rb")
    size = os.fstat(f.fileno()).st_size
    start_response("200 OK", [("Content-Type", "text/x-python"),
                              ("Content-Length", str(size))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is None:
        return iter(lambda: f.read(4096), b"")
    return wrapper(f, 4096)


def write_callable(environ, start_response):
    """Part of the body through write(), the rest as the returned iterable."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    write(b"by write(); ")
    return [b"returned ", b"by the app\n"]


class _Closing:
    def __init__(self, marker: str, chunks):
        self.marker = marker
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        _touch(self.marker, "closed by %d" % os.getpid())


def closing(environ, start_response):
    """An iterable with close(): the server must call it (marker file ?marker)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _Closing(_query(environ).get("marker", ""), [b"iterable ", b"with close\n"])


def exc_info(environ, start_response):
    """PEP 3333's error path: start_response again with exc_info before any output."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("caught by the app")
    except ValueError:
        body = b"handled: caught by the app\n"
        start_response("503 Service Unavailable",
                       [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
                       sys.exc_info())
        return [body]


def errors(environ, start_response):
    """Write ?token to wsgi.errors (an operator's log) and answer normally."""
    token = _query(environ).get("token", "")
    environ["wsgi.errors"].write("wsgi.errors says %s\n" % token)
    environ["wsgi.errors"].flush()
    return hello(environ, start_response)


def output(environ, start_response):
    """print() and sys.stderr: caught only with catch_workers_output = yes."""
    token = _query(environ).get("token", "")
    print("stdout says %s" % token, flush=True)
    sys.stderr.write("stderr says %s\n" % token)
    sys.stderr.flush()
    return hello(environ, start_response)


def status(environ, start_response):
    """Answer with the ?code given (and a body unless it is 204/304)."""
    code = int(_query(environ).get("code", 404))
    reasons = {201: "Created", 204: "No Content", 302: "Found", 304: "Not Modified",
               404: "Not Found", 418: "I'm a teapot"}
    if code in (204, 304):   # no body, so no Content-Type either (PEP 3333, RFC 9110)
        start_response("%d %s" % (code, reasons[code]), [("X-Pfm-Test", "yes")])
        return []
    body = b"status %d\n" % code
    headers = [("Content-Type", "text/plain"), ("X-Pfm-Test", "yes"),
               ("Content-Length", str(len(body)))]
    start_response("%d %s" % (code, reasons.get(code, "Other")), headers)
    return [body]


def bad(environ, start_response):
    """PEP 3333 violations by the app (?kind=): each must give a 500 and a log
    line, never a broken response or a dead worker."""
    kind = _query(environ).get("kind", "str")
    if kind == "str":                       # a str body instead of bytes
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["not bytes"]
    if kind == "nostart":                   # never calls start_response
        return [b"no start_response"]
    if kind == "badstatus":
        start_response("OK", [("Content-Type", "text/plain")])
        return [b"bad status"]
    if kind == "badheader":
        start_response("200 OK", [("Content-Type", "text/plain\r\nX-Injected: 1")])
        return [b"bad header"]
    if kind == "twice":                     # start_response twice without exc_info
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"twice"]
    if kind == "none":                      # returns None
        start_response("200 OK", [("Content-Type", "text/plain")])
        return None
    if kind == "strchunk":                  # an iterable (not a list) yielding str
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter(["not bytes"])
    if kind == "strwrite":                  # the write() callable given a str
        start_response("200 OK", [("Content-Type", "text/plain")])("not bytes")
        return []
    raise ValueError(kind)


def cookies(environ, start_response):
    """Repeated headers (two Set-Cookie) must all reach the client."""
    body = b"cookies set\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Set-Cookie", "a=1; Path=/"),
                              ("Set-Cookie", "b=2; Path=/; HttpOnly"),
                              ("X-Latin-1", "caf\xe9"),
                              ("Content-Length", str(len(body)))])
    return [body]


ROUTES = {
    "/": hello,
    "/hello": hello,
    "/pid": pid,
    "/environ": environ_dump,
    "/echo": echo,
    "/upload": upload,
    "/stream": stream,
    "/big": big,
    "/finish": finish,
    "/boom": boom,
    "/boom-late": boom_late,
    "/sleep": sleep,
    "/ignore-term": ignore_term,
    "/file": file_wrapper,
    "/write": write_callable,
    "/close": closing,
    "/exc-info": exc_info,
    "/errors": errors,
    "/output": output,
    "/status": status,
    "/bad": bad,
    "/cookies": cookies,
}


def app(environ, start_response):
    """Route on PATH_INFO (the path as pfm derives it from nginx's stock params)."""
    global served
    served += 1
    handler = ROUTES.get(environ.get("PATH_INFO") or "/")
    if handler is None:
        body = ("no route for %r\n" % environ.get("PATH_INFO")).encode()
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(body)))])
        return [body]
    return handler(environ, start_response)
