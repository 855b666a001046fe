"""The status page and ping: php-fpm's fields, labels and formats (fpm_status.c).

Rule of this module: it renders; it never reads the scoreboard, sockets or
/proc itself. statussource.py reads those and passes what it found, so the
page can be answered outside the worker pool (php-fpm's page goes dark when
every worker is busy, because a worker serves it) and so every line here is
testable with hand-made slots.

`snapshot()` builds one ordered dict, the JSON shape; each `render_*` turns
it into bytes. Where pfm departs from php-fpm, on purpose:

* idle/active/total are counted from the slots (`scoreboard.counts`), never
  taken from stored counters, which drift in php-fpm;
* a listen queue that cannot be measured is unknown (`-`, `null`, no
  OpenMetrics sample), never a false 0; its maximum then too;
* extras follow php-fpm's fields: `max children`, `min/max spare servers`
  (pm = dynamic), `busy ratio`, and per process `pss`/`uss`;
* every string is escaped for its format (php-fpm escapes only the query
  string in JSON, test bug64539, and nothing in XML);
* OpenMetrics names use the prefix `pfm_` instead of `phpfpm_` (the numbers
  are pfm's, not PHP's, and a dashboard must not mix them up), every sample
  carries a `pool` label so several pools scrape into one registry, counter
  samples end in `_total` as OpenMetrics requires, HELP always precedes TYPE
  (php-fpm swaps them for listen_queue_length), and `full` adds per-process
  metrics (php-fpm ignores it).
"""

from __future__ import annotations

import json
import re
import time
from html import escape as _html_escape
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import unquote_plus

from .log import MONTHS
from .scoreboard import (
    FINISHING,
    IDLE_STAGES,
    INFO,
    READING,
    RUNNING,
    STAGE_NAMES,
    STARTING,
    PoolCounters,
    SlotState,
    counts,
)

Headers = List[Tuple[str, str]]
Response = Tuple[str, Headers, bytes]

# php-fpm's Content-Type per format (fpm_status.c).
CONTENT_TYPES = {
    "text": "text/plain",
    "html": "text/html",
    "xml": "text/xml",
    "json": "application/json",
    "openmetrics": "application/openmetrics-text; version=1.0.0; charset=utf-8",
}

# The key whose presence picks the format, in php-fpm's order of precedence.
_FORMAT_KEYS = ("html", "xml", "json", "openmetrics")

# Every status and ping response: proxies and browsers must never cache a live view.
NO_CACHE_HEADERS: Headers = [
    ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    ("Cache-Control", "no-cache, no-store, must-revalidate, max-age=0"),
]

# php-fpm's body when the scoreboard cannot be read.
INTERNAL_ERROR_BODY = b"Internal error. Please review log file for errors."

# Per-process keys, in php-fpm's order, then pfm's extras.
PROCESS_FIELDS = ("pid", "state", "start time", "start since", "requests", "request duration",
                  "request method", "request uri", "content length", "user", "script",
                  "last request cpu", "last request memory", "pss", "uss")

# Plain text differs from the JSON keys in one label only.
_TEXT_LABELS = {"request uri": "request URI"}

# Stages in which the slot's last-request fields are not (yet) final.
_BUSY_STAGES = frozenset((STARTING, READING, INFO, RUNNING, FINISHING))

_SEPARATOR = "************************"


# ---- the snapshot -------------------------------------------------------------------


def snapshot(pool: Any, counters: PoolCounters, slots: Iterable[SlotState], *,
             listen_queue: Optional[int], listen_queue_len: Optional[int],
             now_wall: float, now_mono: float,
             memory: Optional[Mapping[int, Tuple[int, int]]] = None) -> Dict[str, Any]:
    """The status page as one ordered dict (JSON keys, php-fpm's order, then pfm's extras).

    `pool` needs name, pm, pm_max_children, pm_min_spare_servers and
    pm_max_spare_servers. `counters` gives the pool's history (start time,
    accepted conn, maxima, slow requests); its idle/active/total are ignored
    and counted from `slots`. `listen_queue`/`listen_queue_len` None: could
    not be measured. `memory` maps pid -> (PSS, USS) in bytes. Times in
    `slots` are monotonic except start_time, as the scoreboard keeps them.
    """
    slots = list(slots)
    idle, active, total = counts(slots)
    max_children = int(pool.pm_max_children or 0)
    known_queue = listen_queue is not None
    snap: Dict[str, Any] = {
        "pool": pool.name,
        "process manager": pool.pm,
        "start time": int(counters.start_time),
        "start since": _since(now_wall, counters.start_time),
        "accepted conn": int(counters.accepted_conn),
        "listen queue": int(listen_queue) if known_queue else None,
        # Where the depth cannot be measured its maximum was never measured
        # either: the stored 0 would be a false 0.
        "max listen queue": int(counters.max_listen_queue) if known_queue else None,
        "listen queue len": None if listen_queue_len is None else int(listen_queue_len),
        "idle processes": idle,
        "active processes": active,
        "total processes": total,
        "max active processes": int(counters.max_active),
        "max children reached": int(counters.max_children_reached),
        "slow requests": int(counters.slow_requests),
        "max children": max_children,
    }
    if pool.pm == "dynamic":
        snap["min spare servers"] = pool.pm_min_spare_servers
        snap["max spare servers"] = pool.pm_max_spare_servers
    # A replacement forked before its predecessor exits can make active
    # exceed max_children for a moment; autoscalers want 0..1.
    snap["busy ratio"] = min(1.0, active / max_children) if max_children > 0 else 0.0
    snap["processes"] = [_process(s, now_wall, now_mono, memory) for s in slots]
    return snap


def _since(now_wall: float, start: float) -> int:
    return max(0, int(now_wall - start))


def _process(s: SlotState, now_wall: float, now_mono: float,
             memory: Optional[Mapping[int, Tuple[int, int]]]) -> Dict[str, Any]:
    # Any stage but these is between requests (Idle, Keep-alive idle, or a
    # worker retiring after its last request): it shows the last request.
    between = s.stage not in _BUSY_STAGES
    if between:
        duration = s.duration_us
    elif s.stage == STARTING:
        duration = 0                    # no request yet
    elif s.stage in (READING, INFO):
        # The request is not parsed yet, so request_start is still the last
        # one's; the request began when this stage did.
        duration = int((now_mono - s.stage_since) * 1e6)
    else:
        duration = int((now_mono - s.request_start) * 1e6)
    uri = s.uri + "?" + s.query if s.query else s.uri
    # A slot reserved before fork has no wall-clock start yet.
    started = s.start_time > 0
    pss, uss = (memory or {}).get(s.pid, (None, None)) if s.pid else (None, None)
    return {
        "pid": s.pid,
        "state": s.stage_name,
        "start time": int(s.start_time) if started else None,
        "start since": _since(now_wall, s.start_time) if started else None,
        "requests": s.requests,
        "request duration": max(0, duration),
        "request method": s.method or "-",
        "request uri": uri,
        "content length": s.content_length,
        "user": s.user or "-",
        "script": s.script or "-",
        # php-fpm shows the last request's cpu and memory only once it is over.
        "last request cpu": float(s.cpu) if between else 0.0,
        "last request memory": int(s.memory) if between else 0,
        "pss": pss,
        "uss": uss,
    }


# ---- value formatting ---------------------------------------------------------------


def format_time(epoch: float) -> str:
    """php-fpm's `%d/%b/%Y:%H:%M:%S %z` in local time, with English month names
    whatever the locale (strftime's %b would follow LC_TIME)."""
    t = time.localtime(epoch)
    off = t.tm_gmtoff or 0
    sign = "-" if off < 0 else "+"
    off = abs(off) // 60
    return "%02d/%s/%04d:%02d:%02d:%02d %s%02d%02d" % (
        t.tm_mday, MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec,
        sign, off // 60, off % 60)


def _plain(key: str, value: Any, dates: bool) -> str:
    """A value as text: unknown is `-`, floats have php-fpm's two decimals,
    start times are dates in text and html, epoch seconds elsewhere."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.2f" % value
    if dates and key == "start time":
        return format_time(value)
    return str(value)


# C0 controls and DEL: shown as \xNN in plain text, so that a URI cannot
# start a line of its own on the page.
_CONTROL = re.compile("[\x00-\x1f\x7f]")
# Characters XML 1.0 forbids even as references: replaced, or the document
# would not parse at all.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text_safe(s: str) -> str:
    return _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), s)


def _xml_safe(s: str) -> str:
    return _html_escape(_NOT_XML.sub("\ufffd", s), quote=True)


def _pool_items(snap: Mapping[str, Any]) -> Iterable[Tuple[str, Any]]:
    return ((k, v) for k, v in snap.items() if k != "processes")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "replace")


# ---- renderers ----------------------------------------------------------------------


def render_text(snap: Mapping[str, Any], full: bool) -> bytes:
    """php-fpm's plain text: `label:` padded to 22 columns, then each process
    after a blank line and a row of stars."""
    def block(items: Iterable[Tuple[str, Any]]) -> List[str]:
        return ["%-22s%s\n" % (_TEXT_LABELS.get(k, k) + ":", _text_safe(_plain(k, v, True)))
                for k, v in items]

    out = block(_pool_items(snap))
    if full:
        for proc in snap["processes"]:
            out.append("\n" + _SEPARATOR + "\n")
            out.extend(block(proc.items()))
    return _encode("".join(out))


def _json_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return "%.2f" % value
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(int(value))


def _json_object(items: Iterable[Tuple[str, Any]]) -> str:
    return ",".join("%s:%s" % (json.dumps(k), _json_value(v)) for k, v in items)


def render_json(snap: Mapping[str, Any], full: bool) -> bytes:
    """php-fpm's JSON shape byte for byte (unquoted numbers, `, "processes":[`),
    but with every string escaped."""
    out = "{" + _json_object(_pool_items(snap))
    if full:
        procs = ",".join("{" + _json_object(p.items()) + "}" for p in snap["processes"])
        out += ', "processes":[' + procs + "]"
    return _encode(out + "}")


def render_xml(snap: Mapping[str, Any], full: bool) -> bytes:
    """php-fpm's XML: one element per field, named after the label with dashes."""
    def elements(items: Iterable[Tuple[str, Any]]) -> Iterable[str]:
        for k, v in items:
            tag = k.replace(" ", "-")
            yield "<%s>%s</%s>" % (tag, _xml_safe(_plain(k, v, False)), tag)

    out = ['<?xml version="1.0" ?>\n<status>\n']
    out.extend(e + "\n" for e in elements(_pool_items(snap)))
    if full:
        out.append("<processes>\n")
        for proc in snap["processes"]:
            out.append("<process>" + "".join(elements(proc.items())) + "</process>\n")
        out.append("</processes>\n")
    out.append("</status>")
    return _encode("".join(out))


def render_html(snap: Mapping[str, Any], full: bool) -> bytes:
    """php-fpm's XHTML 1.0 Strict page: a table of the pool, with `full` a
    bordered table with one row per process."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
        "<head><title>pfm status page</title></head>\n"
        "<body>\n"
        "<table>\n"
    ]
    for k, v in _pool_items(snap):
        out.append("<tr><th>%s</th><td>%s</td></tr>\n" % (k, _xml_safe(_plain(k, v, True))))
    out.append("</table>\n")
    if full:
        out.append('<table border="1">\n<tr>')
        out.extend("<th>%s</th>" % k for k in PROCESS_FIELDS)
        out.append("</tr>\n")
        for proc in snap["processes"]:
            out.append("<tr>")
            out.extend("<td>%s</td>" % _xml_safe(_plain(k, proc.get(k), True))
                       for k in PROCESS_FIELDS)
            out.append("</tr>\n")
        out.append("</table>\n")
    out.append("</body>\n</html>\n")
    return _encode("".join(out))


# ---- OpenMetrics --------------------------------------------------------------------

# (snapshot key, metric family, type, help). Names are php-fpm's with `pfm_`.
_POOL_METRICS = (
    ("start since", "pfm_start_since", "counter", "Seconds since the pool started."),
    ("accepted conn", "pfm_accepted_connections", "counter",
     "Requests accepted by the pool."),
    ("listen queue", "pfm_listen_queue", "gauge",
     "Connections waiting in the listening socket's accept queue."),
    ("max listen queue", "pfm_max_listen_queue", "counter",
     "Most connections seen waiting in the accept queue since the pool started."),
    ("listen queue len", "pfm_listen_queue_length", "gauge",
     "Size of the listening socket's accept queue (backlog)."),
    ("idle processes", "pfm_idle_processes", "gauge", "Workers waiting for a request."),
    ("active processes", "pfm_active_processes", "gauge",
     "Workers serving a request or starting."),
    ("total processes", "pfm_total_processes", "gauge", "Idle plus active workers."),
    ("max active processes", "pfm_max_active_processes", "counter",
     "Most active workers at once since the pool started."),
    ("max children reached", "pfm_max_children_reached", "counter",
     "Times the pool wanted more workers than pm.max_children allows."),
    ("slow requests", "pfm_slow_requests", "counter",
     "Requests that ran longer than request_slowlog_timeout."),
    ("max children", "pfm_max_children", "gauge", "The pool's pm.max_children."),
    ("min spare servers", "pfm_min_spare_servers", "gauge",
     "The pool's pm.min_spare_servers (pm = dynamic)."),
    ("max spare servers", "pfm_max_spare_servers", "gauge",
     "The pool's pm.max_spare_servers (pm = dynamic)."),
    ("busy ratio", "pfm_busy_ratio", "gauge",
     "Active workers over pm.max_children, from 0 to 1."),
)

# A process dict has the stage's name only; idle as `scoreboard.counts` says.
_IDLE_NAMES = frozenset(STAGE_NAMES[stage] for stage in IDLE_STAGES)

# Per process, with `full`: (snapshot key, family, type, help, value).
_PROCESS_METRICS: Tuple[Tuple[str, str, str, str, Callable[[Any], Any]], ...] = (
    ("state", "pfm_process_active", "gauge",
     "1 while the worker serves a request or starts, 0 while it is idle.",
     lambda state: 0 if state in _IDLE_NAMES else 1),
    ("start since", "pfm_process_start_since", "gauge", "Seconds since the worker started.",
     None),
    ("requests", "pfm_process_requests", "counter", "Requests served by the worker.", None),
    ("request duration", "pfm_process_request_duration_microseconds", "gauge",
     "Duration of the last request if idle, else time spent so far in the current one.",
     None),
    ("last request cpu", "pfm_process_last_request_cpu", "gauge",
     "CPU percent of one core used by the last request (0 while in a request).", None),
    ("last request memory", "pfm_process_last_request_memory_bytes", "gauge",
     "Memory after the last request (0 while in a request).", None),
    ("pss", "pfm_process_pss_bytes", "gauge", "Proportional set size of the worker.", None),
    ("uss", "pfm_process_uss_bytes", "gauge", "Unique set size of the worker.", None),
)


def _label(value: Any) -> str:
    """An OpenMetrics label value: backslash, quote and newline escaped."""
    return (str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _family(out: List[str], name: str, kind: str, help_text: str,
            samples: List[Tuple[str, Any]]) -> None:
    """One metric family, left out entirely when it has no known sample."""
    if not samples:
        return
    out.append("# HELP %s %s\n# TYPE %s %s\n" % (name, help_text, name, kind))
    suffix = "_total" if kind == "counter" else ""
    out.extend("%s%s{%s} %s\n" % (name, suffix, labels, _number(v)) for labels, v in samples)


def render_openmetrics(snap: Mapping[str, Any], full: bool) -> bytes:
    """OpenMetrics 1.0.0 text, parseable by Prometheus (see the module docstring)."""
    pool = 'pool="%s"' % _label(snap["pool"])
    out: List[str] = []
    _family(out, "pfm_up", "gauge", "Whether the pool could be reached; pm is its mode.",
            [('%s,pm="%s"' % (pool, _label(snap["process manager"])), 1)])
    for key, name, kind, help_text in _POOL_METRICS:
        value = snap.get(key)
        _family(out, name, kind, help_text, [] if value is None else [(pool, value)])
    if full:
        # A slot reserved before fork has no pid yet: nothing to label it with.
        procs = [p for p in snap["processes"] if p["pid"]]
        for key, name, kind, help_text, conv in _PROCESS_METRICS:
            samples = [('%s,pid="%d"' % (pool, p["pid"]), conv(p[key]) if conv else p[key])
                       for p in procs if p[key] is not None]
            _family(out, name, kind, help_text, samples)
    out.append("# EOF\n")
    return _encode("".join(out))


RENDERERS: Dict[str, Callable[[Mapping[str, Any], bool], bytes]] = {
    "text": render_text,
    "html": render_html,
    "xml": render_xml,
    "json": render_json,
    "openmetrics": render_openmetrics,
}


# ---- requests -----------------------------------------------------------------------


def choose_format(query_string: str) -> Tuple[str, bool]:
    """(format, full) from the keys present in the query string, values
    ignored, with php-fpm's precedence html > xml > json > openmetrics > text."""
    keys = {unquote_plus(part.split("=", 1)[0]) for part in query_string.split("&") if part}
    fmt = next((k for k in _FORMAT_KEYS if k in keys), "text")
    return fmt, "full" in keys


def _response(content_type: str, body: bytes, method: str,
              status: str = "200 OK") -> Response:
    headers = [("Content-Type", content_type)] + NO_CACHE_HEADERS
    return status, headers, b"" if method.upper() == "HEAD" else body


def status_response(pool: Any, counters: PoolCounters, slots: Iterable[SlotState], *,
                    listen_queue: Optional[int], listen_queue_len: Optional[int],
                    now_wall: float, now_mono: float,
                    memory: Optional[Mapping[int, Tuple[int, int]]] = None,
                    query_string: str = "", method: str = "GET") -> Response:
    """(status, headers, body) of a status request: the format its query
    string asks for, never cached, headers only for HEAD."""
    fmt, full = choose_format(query_string)
    snap = snapshot(pool, counters, slots, listen_queue=listen_queue,
                    listen_queue_len=listen_queue_len, now_wall=now_wall,
                    now_mono=now_mono, memory=memory)
    return _response(CONTENT_TYPES[fmt], RENDERERS[fmt](snap, full), method)


def ping_response(text: str, method: str = "GET") -> Response:
    """ping.path's answer: `text` (ping.response) as is, no newline added."""
    return _response("text/plain", _encode(text), method)


def internal_error_response(method: str = "GET") -> Response:
    """php-fpm's 500 when the scoreboard cannot be read; the caller logs why."""
    return _response("text/plain", INTERNAL_ERROR_BODY, method, "500 Internal Server Error")
