"""An application that starts processes of its own, for the tests of what
becomes of them (issue 9, item 12). Each child writes its pid to ?pidfile
and sleeps a minute; the request answers once the pid is written.

/fork?how=python   os.fork() without exec (at-fork hooks run)
/fork?how=c        fork(2) straight from C, as an extension would (no hooks)
/fork?how=detached fork(2) from C, then setsid(): a session of its own
/spawn             posix_spawn() of /bin/sleep: exec'd, keeps what is inheritable
Other paths go to testapps.app.
"""

from __future__ import annotations

import ctypes
import os
import time
from urllib.parse import parse_qs

import testapps

_libc = ctypes.CDLL(None, use_errno=True)


def _query(environ) -> dict:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _child(pidfile: str, detach: bool) -> None:
    try:
        if detach:
            os.setsid()
        testapps._touch(pidfile, str(os.getpid()))
        time.sleep(60)
    finally:
        os._exit(0)


def fork(environ, start_response):
    q = _query(environ)
    how, pidfile = q.get("how", "python"), q["pidfile"]
    pid = os.fork() if how == "python" else _libc.fork()
    if pid == 0:
        _child(pidfile, how == "detached")
    return _answer(start_response, pidfile)


def spawn(environ, start_response):
    pidfile = _query(environ)["pidfile"]
    pid = os.posix_spawn("/bin/sleep", ["sleep", "60"], os.environ)
    testapps._touch(pidfile, str(pid))
    return _answer(start_response, pidfile)


def _answer(start_response, pidfile: str):
    deadline = time.monotonic() + 10
    while not os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(pidfile) as f:
        child = int(f.read())
    return testapps._json(start_response, {"pid": os.getpid(), "child": child})


ROUTES = {"/fork": fork, "/spawn": spawn}


def app(environ, start_response):
    handler = ROUTES.get(environ.get("PATH_INFO") or "/", testapps.app)
    return handler(environ, start_response)
