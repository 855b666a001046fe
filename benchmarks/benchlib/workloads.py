"""The suite's workloads: what each peer serves, how wrk loads it, how an
answer is checked before anything is measured."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from .wrk import POST_1MIB, SLOW

APPS = Path(__file__).resolve().parent.parent / "apps"
UPLOAD = bytes(range(256)) * 4096          # what wrk/post-1mib.lua sends: 1 MiB
UPLOAD_ANSWER = b"%d %s\n" % (len(UPLOAD), hashlib.sha256(UPLOAD).hexdigest().encode())


def _check_hello(body: bytes) -> bool:
    return body == b"Hello, world!\n"


def _check_json(body: bytes) -> bool:
    return json.loads(body) == {"message": "Hello, world!"}


def _check_big(body: bytes) -> bool:
    return body == b"x" * 65536


def _check_upload(body: bytes) -> bool:
    return body == UPLOAD_ANSWER


def _check_sleep(body: bytes) -> bool:
    return body == b"slept\n"


@dataclass
class Workload:
    name: str
    path: str                  # the URL path wrk asks for
    wsgi: str                  # module:callable under benchmarks/apps
    php: str                   # its twin under benchmarks/apps
    check: Callable[[bytes], bool]
    script: Path = SLOW        # wrk -s
    body: Optional[bytes] = None
    body_answer: Optional[bytes] = None
    ceiling: bool = True       # nginx's `return 200` is a meaningful ceiling
    about: str = ""
    short: str = ""            # the chart's title


WORKLOADS: Dict[str, Workload] = {w.name: w for w in [
    Workload("hello", "/", "hello:app", "hello.php", _check_hello,
             short="hello, 14 bytes",
             about="14 bytes, `Hello, world!\\n`: the server's own cost per request"),
    Workload("json", "/json", "flask_json:app", "json.php", _check_json,
             short="Flask JSON route",
             about="Flask route answering `{\"message\": \"Hello, world!\"}` with jsonify "
                   "(php-fpm: json_encode)"),
    Workload("64k", "/64k", "workloads:big", "big.php", _check_big,
             short="64 KiB response",
             about="a 65,536-byte answer"),
    Workload("upload", "/upload", "workloads:upload", "upload.php", _check_upload,
             short="1 MiB POST, length + SHA-256",
             script=POST_1MIB, body=UPLOAD, body_answer=UPLOAD_ANSWER,
             about="1 MiB POST (wrk/post-1mib.lua), answered with its length and SHA-256"),
    Workload("sleep", "/sleep", "workloads:sleep", "sleep.php", _check_sleep,
             short="50 ms sleep (pool saturated)", ceiling=False,
             about="50 ms sleep then 6 bytes: I/O-bound, the pool saturated "
                   "(at most workers / 0.05 s requests/s)"),
]}


def fetch(port: int, path: str, body: Optional[bytes] = None, timeout: float = 10.0):
    """(status, body) of one request through nginx."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", "application/octet-stream")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def answers(workload: Workload, port: int) -> bool:
    status, body = fetch(port, workload.path, workload.body)
    if status != 200 or not workload.check(body):
        raise RuntimeError(f"unexpected answer {status} {body[:80]!r}")
    return True
