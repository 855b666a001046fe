"""access.log and access.format with php-fpm's placeholders.

The format is compiled once (at config time, so `pfm -t` reports a bad one)
into a list of literal strings and small functions; a worker then builds one
line per request and writes it with a single write(2). The worker measures CPU
and memory only when the format asks for them (`needs`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

DEFAULT_FORMAT = '%R - %u %t "%m %r" %s'
DEFAULT_TIME = "%d/%b/%Y:%H:%M:%S %z"
LINE_MAX = 1024          # php-fpm's access log buffer
ARG_MAX = 128            # php-fpm's cap on a {} argument


@dataclass
class Entry:
    """What one finished request tells the access log."""

    params: dict
    status: int
    headers: list           # response headers [(name, value)]
    peer: str               # the FastCGI client (nginx), not REMOTE_ADDR; '-' for unix
    started: float          # wall clock, when the request was read
    ended: float            # wall clock, when the response was complete
    duration: float         # seconds (monotonic)
    cpu: tuple = (0.0, 0.0)     # user, system seconds of this request
    memory: int = 0         # peak RSS of the worker, bytes
    pid: int = 0
    pool: str = ""


def _strftime(fmt: str):
    """Format a time; the same second is formatted once (a busy worker logs
    many requests a second, and strftime is the dearest part of a line)."""
    cache = [None, ""]

    def render(t: float) -> str:
        second = int(t)
        if cache[0] != second:
            cache[0], cache[1] = second, time.strftime(fmt, time.localtime(t))
        return cache[1]
    return render


def compile_format(fmt: str):
    """Parse an access.format; ValueError with php-fpm's message if it is bad."""
    parts: list = []
    needs: set[str] = set()
    literal = []
    i, n = 0, len(fmt)
    while i < n:
        c = fmt[i]
        if c != "%":
            literal.append(c)
            i += 1
            continue
        i += 1
        arg = None
        if i < n and fmt[i] == "{":
            end = fmt.find("}", i)
            if end < 0:
                raise ValueError("missing closing embrace in the access.format")
            arg = fmt[i + 1:end][:ARG_MAX]
            i = end + 1
        if i >= n:
            raise ValueError("Invalid token in the access.format (%%)")
        letter = fmt[i]
        i += 1
        if letter == "%":
            if arg is not None:
                raise ValueError("embrace is not allowed for modifier %%")
            literal.append("%")
            continue
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_placeholder(letter, arg, needs))
    if literal:
        parts.append("".join(literal))
    return AccessFormat(parts, needs)


# What the worker must measure for a placeholder (AccessFormat.needs).
_NEEDS = {"C": "cpu", "M": "memory", "o": "headers", "R": "peer"}
_TAKES_ARG = "CdeMotT"

# The placeholders read straight from the entry.
_PLAIN = {
    "f": lambda e: e.params.get("SCRIPT_FILENAME") or "-",
    "l": lambda e: str(_int(e.params.get("CONTENT_LENGTH"))),
    "m": lambda e: e.params.get("REQUEST_METHOD") or "-",
    "n": lambda e: e.pool,
    "p": lambda e: str(e.pid),
    "P": lambda e: str(os.getppid()),
    "q": lambda e: e.params.get("QUERY_STRING", ""),
    "Q": lambda e: "?" if e.params.get("QUERY_STRING") else "",
    "r": lambda e: e.params.get("SCRIPT_NAME") or e.params.get("DOCUMENT_URI") or "-",
    "R": lambda e: e.peer,
    "s": lambda e: str(e.status),
    "u": lambda e: e.params.get("REMOTE_USER") or e.params.get("PHP_AUTH_USER") or "-",
}


def _placeholder(letter: str, arg, needs: set):
    if arg is not None and letter not in _TAKES_ARG:
        raise ValueError("embrace is not allowed for modifier %%%s" % letter)
    make = _WITH_ARG.get(letter)
    render = make(arg) if make is not None else _PLAIN.get(letter)
    if render is None:
        raise ValueError("Invalid token in the access.format (%%%s)" % letter)
    if letter in _NEEDS:
        needs.add(_NEEDS[letter])
    return render


def _cpu(arg):
    which = arg or "total"
    if which not in ("total", "user", "system"):
        raise ValueError("only 'total', 'user' or 'system' are allowed as a modifier "
                         "for %%C ('%s')" % which)
    pick = {"total": lambda c: c[0] + c[1], "user": lambda c: c[0],
            "system": lambda c: c[1]}[which]
    return lambda e: "%.2f" % (100.0 * pick(e.cpu) / e.duration if e.duration > 0 else 0.0)


def _duration(arg):
    unit = arg or "seconds"
    if unit in ("seconds",):
        return lambda e: "%.3f" % e.duration
    if unit in ("milliseconds", "milli", "miliseconds", "mili"):
        return lambda e: "%.3f" % (e.duration * 1e3)
    if unit in ("microseconds", "micro"):
        return lambda e: "%d" % (e.duration * 1e6)
    raise ValueError("only 'seconds', 'milli', 'milliseconds', 'micro' or 'microseconds' "
                     "are allowed as a modifier for %%d ('%s')" % unit)


def _environment(arg):
    if not arg:
        raise ValueError("the name of the environment variable must be set between "
                         "embraces for %e")
    return lambda e: e.params.get(arg) or "-"


def _memory(arg):
    unit = arg or "bytes"
    div = {"bytes": 1, "kilo": 1024, "kilobytes": 1024, "mega": 1 << 20,
           "megabytes": 1 << 20}.get(unit)
    if div is None:
        raise ValueError("only 'bytes', 'kilo', 'kilobytes', 'mega' or 'megabytes' are "
                         "allowed as a modifier for %%M ('%s')" % unit)
    return lambda e: str(e.memory // div)


def _header(arg):
    if not arg:
        raise ValueError("the name of the header must be set between embraces for %o")
    wanted = arg.lower()
    return lambda e: next((v for k, v in e.headers if k.lower() == wanted), "-")


def _started(arg):
    render = _strftime(arg or DEFAULT_TIME)
    return lambda e: render(e.started)


def _ended(arg):
    render = _strftime(arg or DEFAULT_TIME)
    return lambda e: render(e.ended)


# The placeholders with a {} argument: its check, then how to render.
_WITH_ARG = {"C": _cpu, "d": _duration, "e": _environment, "M": _memory, "o": _header,
             "t": _started, "T": _ended}


def _int(text) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


class AccessFormat:
    __slots__ = ("parts", "needs")
    # needs: what the worker must measure for this format - "cpu", "memory",
    # "headers", "peer" (the client address costs a getpeername(2)).

    def __init__(self, parts: list, needs: set):
        self.parts = parts
        self.needs = needs

    def render(self, entry: Entry) -> bytes:
        line = "".join([p if type(p) is str else p(entry) for p in self.parts])
        data = line.encode("utf-8", "backslashreplace")
        if len(data) >= LINE_MAX:
            data = data[: LINE_MAX - 1]
        return data + b"\n"

