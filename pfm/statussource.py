"""Where the status page's and ping's figures come from: the scoreboard, the
listen queue and process memory. Both sides read them here - a worker that
gets a status or ping request answers it itself, and the pool manager's desk
(statusdesk.py) answers it while every worker is busy - so the two answers
cannot drift apart.

Rule of this module: it reads and returns; it neither renders (status.py)
nor touches a connection (the worker and the desk send what it returns).
"""

from __future__ import annotations

import dataclasses
import os
import time

from . import listenqueue, status
from .scoreboard import peak_active


def answer(pool, board, listen_sock, params: dict, status_anywhere: bool = False,
           held: int = 0):
    """(status, headers, body) for a ping or status request, or None.
    `status_anywhere`: pm.status_listen without pm.status_path serves the
    status page at any path. `held`: connections the desk took off the listen
    queue and holds (they still wait, so they count in it)."""
    script = params.get("SCRIPT_NAME")
    method = params.get("REQUEST_METHOD", "GET")
    if pool.ping_path and script == pool.ping_path:
        return status.ping_response(pool.ping_response or "pong", method)
    if (pool.pm_status_path and script == pool.pm_status_path) or (
            status_anywhere and not pool.pm_status_path):
        counters, slots = board.snapshot()
        now = time.monotonic()
        peak = max(counters.max_active, peak_active(slots, now))
        if peak > counters.max_active:
            counters = dataclasses.replace(counters, max_active=peak)
        queue, backlog = listenqueue.queue(listen_sock)
        if queue is not None:
            queue += held
        query = params.get("QUERY_STRING", "")
        memory = proc_memory([s.pid for s in slots if s.pid]) if "full" in query else None
        return status.status_response(pool, counters, slots, listen_queue=queue,
                                      listen_queue_len=backlog, now_wall=time.time(),
                                      now_mono=now, memory=memory,
                                      query_string=query, method=method)
    return None


# ---- process memory (/proc) ---------------------------------------------------------


def proc_memory(pids) -> dict[int, tuple[int, int]]:
    """pid -> (PSS, USS) in bytes from /proc/PID/smaps_rollup (what a
    worker really costs with copy-on-write sharing)."""
    out = {}
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid, "rb") as f:
                fields = {}
                for line in f:
                    name, _, rest = line.partition(b":")
                    if name in (b"Pss", b"Private_Clean", b"Private_Dirty"):
                        fields[name] = int(rest.split()[0]) * 1024
            out[pid] = (fields.get(b"Pss", 0),
                        fields.get(b"Private_Clean", 0) + fields.get(b"Private_Dirty", 0))
        except (OSError, ValueError):
            continue
    return out


def current_rss() -> int:
    """This process's resident memory now, in bytes, from /proc/self/statm
    (pm.max_memory compares it after each request); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE")
