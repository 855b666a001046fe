"""A job as it is stored: which function, which JSON arguments, how many tries.

This module never touches a backend. It turns a call into the one string the
backends store (`encode_call`), refusing at enqueue time anything a worker
could not rebuild, and turns that string back into a function and its
arguments in the worker (`decode_call`, `resolve`).
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

# The states a job moves through. READY and DELAYED are both "waiting": a
# delayed job becomes ready when its time comes, without being touched.
READY, DELAYED, RUNNING, DONE, DEAD = "ready", "delayed", "running", "done", "dead"
STATES = (READY, DELAYED, RUNNING, DONE, DEAD)

_FUNC_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def func_name(func: Union[str, Callable[..., Any]]) -> str:
    """`module:function` for a module-level function (or that string, checked),
    so that a worker in another process can import it again."""
    if isinstance(func, str):
        if not _FUNC_NAME.match(func):
            raise ValueError("pfm.jobs: %r is not a 'module:function' name" % (func,))
        return func
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not callable(func) or not module or not qualname:
        raise TypeError("pfm.jobs: %r is neither a function nor a 'module:function' name"
                        % (func,))
    if "<" in qualname or "." in qualname:
        raise TypeError("pfm.jobs: %s.%s is not a module-level function: a worker can "
                        "only import functions defined at the top of a module"
                        % (module, qualname))
    if module == "__main__":
        raise TypeError("pfm.jobs: %s is defined in __main__, which a worker cannot "
                        "import: move it into a module" % qualname)
    if getattr(sys.modules.get(module), qualname, None) is not func:
        raise TypeError("pfm.jobs: %s:%s does not name this function (a decorator "
                        "without functools.wraps?)" % (module, qualname))
    return "%s:%s" % (module, qualname)


def check_queue(queue: str) -> str:
    if not isinstance(queue, str) or not _QUEUE_NAME.match(queue):
        raise ValueError("pfm.jobs: queue names are 1-64 letters, digits, '_', '.' or "
                         "'-', not %r" % (queue,))
    return queue


_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def encode_call(func: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
    """The stored form of a call: `{"f": "mod:fn", "a": [...], "k": {...}}`.

    Arguments must survive JSON: anything else is refused here, in the
    process that made the mistake, with the argument named."""
    try:
        return _dumps({"f": func, "a": args, "k": kwargs})
    except (TypeError, ValueError) as e:
        raise TypeError("pfm.jobs: %s of %s is not JSON-serialisable (%s); pass plain "
                        "str, int, float, bool, None, lists and dicts"
                        % (_culprit(args, kwargs), func, e)) from None


def _culprit(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
    """Which argument made encoding fail, in words."""
    for i, value in enumerate(args):
        if not _encodable(value):
            return "positional argument %d (%s)" % (i + 1, _describe(value))
    for name, value in kwargs.items():
        if not _encodable(value):
            return "keyword argument %r (%s)" % (name, _describe(value))
    return "an argument"


def _encodable(value: Any) -> bool:
    try:
        _dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _describe(value: Any) -> str:
    text = repr(value)
    return "%s %s" % (type(value).__name__, text if len(text) <= 60 else text[:57] + "...")


def decode_call(call: str) -> Tuple[str, List[Any], Dict[str, Any]]:
    data = json.loads(call)
    return data["f"], data["a"], data["k"]


_resolved: Dict[str, Callable[..., Any]] = {}


def resolve(name: str) -> Callable[..., Any]:
    """Import `module:function` (cached: a worker runs the same few functions)."""
    func = _resolved.get(name)
    if func is None:
        module, _, attr = name.partition(":")
        func = importlib.import_module(module)
        for part in attr.split("."):
            func = getattr(func, part)
        _resolved[name] = func
    return func


@dataclass(frozen=True)
class Claim:
    """A job a consumer holds the lease of: attempt `attempt` of `max_attempts`.

    (id, attempt) names this run: a backend only lets the run holding the
    latest attempt renew, acknowledge or fail it."""
    id: str
    queue: str
    call: str
    attempt: int
    max_attempts: int

    @property
    def func(self) -> str:
        return decode_call(self.call)[0]


@dataclass(frozen=True)
class Idle:
    """No job was ready. `due_in`: seconds until a delayed job becomes ready or
    a lease expires, whichever comes first (None: nothing is pending)."""
    due_in: Optional[float]


@dataclass(frozen=True)
class JobInfo:
    """What `pfm jobs` and a status page show about one job."""
    id: str
    queue: str
    state: str
    func: str
    args: List[Any]
    kwargs: Dict[str, Any]
    attempts: int
    max_attempts: int
    enqueued_at: float
    # ready or delayed: when it may run; running: when its lease ends; done or
    # dead: when it ended.
    at: float
    error: Optional[str] = field(default=None)

    @classmethod
    def build(cls, id: str, queue: str, state: str, call: str, attempts: int,
              max_attempts: int, enqueued_at: float, at: float,
              error: Optional[str]) -> "JobInfo":
        func, args, kwargs = decode_call(call)
        return cls(str(id), queue, state, func, args, kwargs, int(attempts),
                   int(max_attempts), float(enqueued_at), float(at), error)
