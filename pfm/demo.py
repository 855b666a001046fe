"""The demo application: which worker served you, and how many requests that
worker has served. Reload the page: the pids change and each keeps its own
count, because nothing is shared between workers."""

from __future__ import annotations

import html
import json
import os

served = 0   # this worker's own count; every worker has its own copy

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>pfm demo</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto}}
b{{font-size:1.4em}}</style></head>
<body><h1>pfm is serving this page</h1>
<p>pool: <b>{pool}</b></p>
<p>pid: <b>{pid}</b></p>
<p>requests served by this worker: <b>{requests}</b></p>
<p>Reload the page: each worker is a separate process with its own count.
Nothing is shared between them.</p>
<p><small>Python {python}</small></p>
</body></html>
"""


def app(environ, start_response):
    global served
    served += 1
    pool = environ.get("pfm.pool", "-")
    if "format=json" in environ.get("QUERY_STRING", ""):
        body = json.dumps({"pool": pool, "pid": os.getpid(), "requests": served}).encode()
        ctype = "application/json"
    else:
        body = PAGE.format(pool=html.escape(pool), pid=os.getpid(), requests=served,
                           python=html.escape(environ.get("pfm.python", ""))).encode()
        ctype = "text/html; charset=utf-8"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
