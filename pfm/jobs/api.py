"""What application code calls: `enqueue()` a job, `status()` of a job.

Which queue: `url=` if given, else the PFM_JOBS_URL environment variable,
else the default pfm set at process start with `set_default_url()` (a pfm
process sets its master's `[global] jobs.url`), else the embedded SQLite file
(backend.default_url()). One backend per URL per process, opened on first use.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, Optional, Union

from .backend import Backend, default_url, open_backend
from .job import JobInfo, check_queue, encode_call, func_name

ENV_URL = "PFM_JOBS_URL"

_default_url: Optional[str] = None
_backends: Dict[str, Backend] = {}
_lock = threading.Lock()


def set_default_url(url: Optional[str]) -> None:
    """The queue of this process when neither url= nor PFM_JOBS_URL says
    otherwise. pfm calls it in every process it starts; None unsets it."""
    global _default_url
    _default_url = url


def resolve_url(url: Optional[str] = None) -> str:
    return url or os.environ.get(ENV_URL) or _default_url or default_url()


def backend_for(url: Optional[str] = None) -> Backend:
    """The (cached) backend for `url` as resolve_url() reads it."""
    url = resolve_url(url)
    backend = _backends.get(url)
    if backend is None:
        with _lock:
            backend = _backends.get(url)
            if backend is None:
                backend = _backends[url] = open_backend(url)
    return backend


def enqueue(func: Union[str, Callable[..., Any]], *args: Any, queue: str = "default",
            delay: float = 0, max_attempts: int = 5, url: Optional[str] = None,
            **kwargs: Any) -> str:
    """Queue `func(*args, **kwargs)` to run in a worker; returns the job's id.

    `func` is a module-level function or its "module:function" name. The
    arguments must be JSON-serialisable (TypeError here, naming the argument,
    if not). The job runs no earlier than `delay` seconds from now, at least
    once, and up to `max_attempts` times while it raises. (`queue`, `delay`,
    `max_attempts` and `url` are enqueue's own: a function taking keyword
    arguments of those names needs a wrapper.)"""
    name = func_name(func)
    check_queue(queue)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError("pfm.jobs: max_attempts must be an int >= 1, not %r" % (max_attempts,))
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0:
        raise ValueError("pfm.jobs: delay must be a number of seconds >= 0, not %r" % (delay,))
    call = encode_call(name, args, kwargs)
    return backend_for(url).enqueue(queue, call, max_attempts, float(delay))


def status(job_id: str, url: Optional[str] = None) -> Optional[JobInfo]:
    """The job's state (ready, delayed, running, done, dead) and details, or
    None if unknown (done jobs are kept for keep_done seconds)."""
    return backend_for(url).get(str(job_id))
