"""The suite's plain-WSGI workloads besides hello (hello.py) and Flask (flask_json.py).

Each has a twin in PHP (big.php, upload.php, sleep.php) answering the same bytes.

    big     GET: a 64 KiB body (65,536 bytes of "x")
    upload  POST: reads the body in 64 KiB pieces and answers its length and
            SHA-256 in hex, "1048576 9f3c...\\n": memory stays flat whatever the size
    sleep   GET: sleeps 50 ms (?ms=N: N ms) and answers "slept\\n": I/O-bound, it
            saturates the pool
"""

import hashlib
import time

BIG = b"x" * 65536
BIG_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BIG)))]
SLEPT = b"slept\n"
SLEPT_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(SLEPT)))]


def big(environ, start_response):
    start_response("200 OK", BIG_HEADERS)
    return [BIG]


def upload(environ, start_response):
    try:
        left = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        left = 0
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    total = 0
    while left > 0:
        chunk = stream.read(min(left, 65536))
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
        left -= len(chunk)
    body = b"%d %s\n" % (total, digest.hexdigest().encode())
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def sleep(environ, start_response):
    ms = 50
    for part in environ.get("QUERY_STRING", "").split("&"):
        if part.startswith("ms="):
            try:
                ms = int(part[3:])
            except ValueError:
                pass
    time.sleep(ms / 1000.0)
    start_response("200 OK", SLEPT_HEADERS)
    return [SLEPT]
