"""The soak suite's application (tests/soakrig.py): every answer proves the
request arrived whole and the response can be checked whole.

GET  /get?n=SIZE&id=ID   n bytes of SHAKE-256(ID): the client recomputes them.
POST /post?id=ID         the body's length and SHA-256, read in pieces as an app would.
                         &say=1 also writes a line to wsgi.errors (the error log).

Each answer names the worker (X-Pid) and echoes the request id (X-Id), so a
client can tell whose answer it got.
"""

from __future__ import annotations

import hashlib
import json
import os
from urllib.parse import parse_qs


def _query(environ) -> dict:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _answer(start_response, rid: str, body: bytes, content_type: str):
    start_response("200 OK", [("Content-Type", content_type),
                              ("Content-Length", str(len(body))),
                              ("X-Pid", str(os.getpid())), ("X-Id", rid)])
    return [body]


def get(environ, start_response):
    q = _query(environ)
    rid = q.get("id", "")
    return _answer(start_response, rid, hashlib.shake_256(rid.encode()).digest(int(q["n"])),
                   "application/octet-stream")


def post(environ, start_response):
    q = _query(environ)
    rid = q.get("id", "")
    digest = hashlib.sha256()
    size = 0
    read = environ["wsgi.input"].read
    while True:
        chunk = read(16384)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    if q.get("say"):
        environ["wsgi.errors"].write("soak %s: %d bytes\n" % (rid, size))
    body = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
    return _answer(start_response, rid, body, "application/json")


ROUTES = {"/get": get, "/post": post}


def app(environ, start_response):
    handler = ROUTES.get(environ.get("PATH_INFO", ""))
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", "10")])
        return [b"not found\n"]
    return handler(environ, start_response)
