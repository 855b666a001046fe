"""WSGI routes for the pool, status and operations end-to-end tests
(test_pools_e2e.py, test_status_e2e.py, test_operations_e2e.py).

`app` serves the routes below and hands everything else to testapps.app, so
a pool of `opsapps:app` also has /pid, /sleep, /hello, ...

Importing this module appends the importing process's pid to the file named
by $OPS_IMPORT_LOG (set with `env[OPS_IMPORT_LOG] = ...` in the pool): the
tests count the imports to tell preload (one import, in the pool manager)
from per-worker imports.
"""

from __future__ import annotations

import errno
import json
import os
import resource
from urllib.parse import parse_qs

import testapps

_import_log = os.environ.get("OPS_IMPORT_LOG")
if _import_log:
    with open(_import_log, "a") as _f:
        _f.write("%d\n" % os.getpid())

_kept: list = []   # memory /grow allocated, kept for the worker's lifetime


def _query(environ) -> dict:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def grow(environ, start_response):
    """Allocate ?mb megabytes, every page written (so it is resident), and
    keep them in a module global: this worker's RSS stays that much higher."""
    n = int(_query(environ).get("mb", 60)) * 1024 * 1024
    _kept.append(b"\x01" * n)
    return _json(start_response, {"pid": os.getpid(), "kept_mb": sum(map(len, _kept)) >> 20})


def ids(environ, start_response):
    """Who the worker runs as and what it was given: uid/gid, cwd, the
    RLIMIT_NOFILE limits and the environment variables named in ?env=A,B."""
    names = [n for n in _query(environ).get("env", "").split(",") if n]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _json(start_response, {
        "pid": os.getpid(), "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
        "egid": os.getegid(), "groups": sorted(os.getgroups()), "cwd": os.getcwd(),
        "nofile": [soft, hard], "env": {n: os.environ.get(n) for n in names}})


def read(environ, start_response):
    """Try to read the file ?path: its text, or the errno name of the failure."""
    path = _query(environ).get("path", "")
    try:
        with open(path) as f:
            return _json(start_response, {"ok": True, "data": f.read(200)})
    except OSError as e:
        return _json(start_response, {"ok": False, "errno": errno.errorcode.get(e.errno)})


def say(environ, start_response):
    """print() ?token to stdout (caught by catch_workers_output)."""
    print("app says %s" % _query(environ).get("token", ""), flush=True)
    return _json(start_response, {"pid": os.getpid()})


ROUTES = {"/grow": grow, "/ids": ids, "/read": read, "/say": say}


def app(environ, start_response):
    handler = ROUTES.get(environ.get("PATH_INFO") or "/")
    if handler is None:
        return testapps.app(environ, start_response)
    testapps.served += 1
    return handler(environ, start_response)
