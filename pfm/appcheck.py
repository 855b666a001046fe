"""The application check: each pool's app imported the way its workers will
import it, before anything depends on it. `pfm -t`, the start and every
reload (SIGUSR2) run it.

The master never imports an application (design.md), so each pool gets a
forked child that sets itself up as that pool's manager does ([global] and
pool rlimits, chroot, priority, group and user, environment, import path),
imports the app, finds the callable and writes one JSON line back over a
pipe. The pool's app_check_timeout bounds it: a child still importing then
is killed, with its process group. What is reported is the real reason: the
exception and where it was raised, a missing callable and the name the
module does have, or the directory the pool's user cannot read. Each failure
is a ConfigError located at the directive at fault, so it prints (and exits
78) like any other configuration error.

`AppCheck` runs the checks without blocking (the master's loop watches its
pipes); `check()` waits for them (`pfm -t`, the start).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import selectors
import signal
import sys
import sysconfig
import time
import traceback

import pfm

from . import procutil, signals
from .config import HEADER, ConfigError

FRAMES_SHOWN = 3        # innermost frames of an import error worth showing
# Names a WSGI callable usually has, for the hint when the configured one is missing.
_USUAL_NAMES = ("application", "app", "wsgi_app", "api")
_REPORT_LIMIT = 65536   # a report is one short JSON line; more is not ours


class AppCheckError(ConfigError):
    """A pool whose application cannot start; `details` are the innermost
    frames of the exception, for the lines after the error."""

    def __init__(self, message: str, file, line, directive: str, pool: str | None,
                 details: list[str]):
        super().__init__(message, file, line, directive, pool)
        self.details = details


class _Child:
    __slots__ = ("pool", "pid", "fd", "deadline", "data")

    def __init__(self, pool, pid: int, fd: int, deadline: float):
        self.pool, self.pid, self.fd, self.deadline = pool, pid, fd, deadline
        self.data = b""


class AppCheck:
    """The checks of every pool of `config`, one child each, a few at a time
    (a host with a hundred pools must not import a hundred apps at once).
    `watch(fd)` and `forget(fd)` are told of each child's pipe as it opens
    and before it closes; feed `read(fd)` when one is readable and
    `expire(now)` on every turn; `done` once every child reported or was
    killed."""

    def __init__(self, config, watch=None, forget=None, parallel: int | None = None):
        self.config = config
        self.watch = watch or (lambda fd: None)
        self.forget = forget or (lambda fd: None)
        self.parallel = parallel or max(2, os.cpu_count() or 2)
        self.failures: list[AppCheckError] = []
        self.running: dict[int, _Child] = {}
        self.waiting = list(config.pools)
        self._fill()

    def _fill(self) -> None:
        while self.waiting and len(self.running) < self.parallel:
            self._start(self.waiting.pop(0))

    def _start(self, pool) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        pid = signals.fork()
        if pid == 0:
            os.close(r)
            _child_main(self.config.global_, pool, w, parent)
        os.close(w)
        os.set_blocking(r, False)
        self.running[r] = _Child(pool, pid, r, time.monotonic() + pool.app_check_timeout)
        self.watch(r)

    @property
    def done(self) -> bool:
        return not self.running and not self.waiting

    def fds(self) -> list[int]:
        return list(self.running)

    def timeout(self, now: float) -> float:
        """Seconds until the next child is overdue."""
        return max(0.0, min((c.deadline for c in self.running.values()), default=now) - now)

    def read(self, fd: int) -> None:
        child = self.running.get(fd)
        if child is None:
            return
        try:
            data = os.read(fd, _REPORT_LIMIT)
        except BlockingIOError:
            return
        child.data += data
        if data and b"\n" not in child.data and len(child.data) < _REPORT_LIMIT:
            return
        status = self._end(child, wait=not child.data)
        report = _parse(child.data) if child.data else _died(status)
        if report is not None:
            self.failures.append(self._error(child.pool, report))
        self._fill()

    def expire(self, now: float) -> None:
        for child in [c for c in self.running.values() if now >= c.deadline]:
            self._end(child)
            timeout = child.pool.app_check_timeout
            self.failures.append(self._error(child.pool, {
                "directive": "app", "message": "app '%s' did not finish importing in %d s "
                "(app_check_timeout): an import that waits for something that never comes "
                "would hold every worker of the pool" % (child.pool.app, timeout)}))
        self._fill()

    def cancel(self) -> None:
        self.waiting = []
        for child in list(self.running.values()):
            self._end(child)

    def _end(self, child: _Child, wait: bool = False) -> int | None:
        """Kill what is left of the child (an app may have forked at import)
        and reap it: waiting for it when it closed its pipe without a report
        (its exit status says why); else whoever reaps children does."""
        del self.running[child.fd]
        self.forget(child.fd)
        os.close(child.fd)
        for kill in (os.killpg, os.kill):
            try:
                kill(child.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            pid, status = os.waitpid(child.pid, 0 if wait else os.WNOHANG)
        except ChildProcessError:
            return None     # the master's loop reaped it already
        return status if pid else None

    def _error(self, pool, report: dict) -> AppCheckError:
        directive = report.get("directive", "app")
        if report.get("scope") == "global":
            source, prefix, name = self.config.global_.source, "", None
        else:
            source, prefix, name = pool.source, "[pool %s] " % pool.name, pool.name
        file, line = source.get(directive) or source.get(HEADER) or (self.config.path, 0)
        return AppCheckError(prefix + report.get("message", "the app check failed"), file,
                             line, directive, name, list(report.get("details", [])))


def check(config) -> list[AppCheckError]:
    """Run every pool's check and wait for all of them (bounded by their timeouts)."""
    with selectors.DefaultSelector() as selector:
        checks = AppCheck(config, lambda fd: selector.register(fd, selectors.EVENT_READ),
                          selector.unregister)
        while not checks.done:
            for key, _ in selector.select(checks.timeout(time.monotonic())):
                checks.read(key.fd)
            checks.expire(time.monotonic())
    return checks.failures


def _parse(data: bytes) -> dict | None:
    try:
        report = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return {"message": "the app check sent garbage: %r" % data[:200]}
    return report if isinstance(report, dict) and not report.get("ok") else None


def _died(status: int | None) -> dict:
    how = procutil.describe_exit(status)[0] if status is not None else "early"
    return {"message": "the app check process exited %s while importing the app (did the "
                       "app's import end the process?)" % how}


# ---- in the child ------------------------------------------------------------------------


def _child_main(global_, pool, fd: int, parent: int) -> None:
    """The forked checker: never returns."""
    try:
        os.setpgid(0, 0)    # so that what the app forks at import is killed with it
        os.closerange(3, fd)
        os.closerange(fd + 1, 2 ** 31 - 1)
        report = inspect(global_, pool, parent) or {"ok": True}
    except BaseException as e:  # a bug of ours must still come back as a report
        report = {"message": "the app check failed: %s: %s" % (type(e).__name__, e)}
    try:
        os.write(fd, json.dumps(report).encode() + b"\n")
    finally:
        os._exit(0)


def inspect(global_, pool, parent: int) -> dict | None:
    """Set up as the pool's manager does, then import; a report dict or None."""
    from .app import prepare_path
    from .config import app_search_path
    from .isolation import (
        IsolationError,
        apply_environment,
        apply_limits,
        apply_limits_and_identity,
    )
    procutil.set_title("pfm: pool %s app check" % pool.name)
    search_path = app_search_path(pool)
    wanted = _dirs_to_read(pool, search_path)
    master_path = [p for p in sys.path if p and os.path.isdir(p)]
    try:
        apply_limits(global_)
    except IsolationError as e:
        return {"directive": e.directive, "message": str(e), "scope": "global"}
    try:
        apply_limits_and_identity(pool)
    except IsolationError as e:
        return {"directive": e.directive, "message": str(e)}
    procutil.die_with_parent(signal.SIGKILL, parent)    # armed after setuid, which clears it
    signals.unblock()
    blocked = first_unreadable(wanted)
    if blocked:
        return {"directive": blocked[0], "message": blocked[1]}
    apply_environment(pool)
    try:
        prepare_path(pool, search_path)
    except OSError as e:
        return {"directive": "chdir", "message": "unable to chdir to '%s': %s"
                % (pool.chdir, e.strerror)}
    return _import(pool, [(p, "app", "on pfm's own sys.path") for p in master_path]
                   + [(p, "pythonpath", "") for p in pool.pythonpath])


def _dirs_to_read(pool, search_path: list[str]) -> list[tuple[str, str, str]]:
    """(directory as the pool sees it, directive, what it is) of every
    directory the pool's user must be able to read, where it exists. Under a
    chroot the interpreter's own directories are the chroot's business.
    Quick mode's implicit pythonpath (the working directory) is only named
    if the import fails: nobody asked for it."""
    from .config import COMMAND_LINE, outside_path
    implicit = pool.source.get("pythonpath", ("", 0))[0] == COMMAND_LINE
    wanted = [(p, "pythonpath", "") for p in pool.pythonpath if not implicit]
    if pool.chdir:
        wanted.append((pool.chdir, "chdir", ""))
    wanted += [(p, "virtualenv", "") for p in search_path
               if p not in pool.pythonpath and p != pool.chdir]
    if not pool.chroot:
        stdlib = sysconfig.get_path("stdlib")
        wanted += [(stdlib, "user", "the Python standard library"),
                   (os.path.join(stdlib, "lib-dynload"), "user", "the Python standard library"),
                   (os.path.dirname(os.path.abspath(pfm.__file__)), "user", "pfm's own code")]
    return [w for w in wanted if os.path.isdir(outside_path(pool, w[0]))]


def first_unreadable(wanted) -> tuple[str, str] | None:
    """(directive, message) for the first directory this process cannot
    read, naming the directory that shuts it out when that is a parent."""
    for path, directive, what in wanted:
        if os.access(path, os.R_OK | os.X_OK):
            continue
        message = "user %s cannot read %s" % (_user(), path)
        if what:
            message += " (%s)" % what
        closed = _closed_parent(path)
        if closed and closed != path:
            message += ": it may not enter %s" % closed
        return directive, message
    return None


def _closed_parent(path: str) -> str | None:
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:i]) or os.sep
        if not os.access(prefix, os.X_OK):
            return prefix
    return None


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _import(pool, path_dirs) -> dict | None:
    """Import the module, then get the callable the way a worker does
    (app.load), so that a missing callable is told apart from an error."""
    import importlib

    from .app import load
    try:
        module = importlib.import_module(pool.app_module)
    except BaseException as e:
        return _import_failure(pool, e, path_dirs)
    first = re.split(r"[.(]", pool.app_callable, maxsplit=1)[0]
    if not hasattr(module, first):
        return {"directive": "app",
                "message": missing_callable(module, pool.app_module, pool.app_callable)}
    try:
        load(pool.app_module, pool.app_callable)
    except BaseException as e:
        return _import_failure(pool, e, [], "failed to load")
    return None


def missing_callable(module_object, module: str, callable_name: str) -> str:
    """"module 'mysite.wsgi' has no callable 'app'", with the name it does
    have: Django's wsgi.py calls it `application`, so `app = mysite.wsgi`
    (which means mysite.wsgi:app) is the usual mistake."""
    message = "module '%s' has no callable '%s'" % (module, callable_name)
    found = [name for name in _USUAL_NAMES
             if name != callable_name and callable(getattr(module_object, name, None))]
    if not found:
        return message
    hint = "write app = %s:%s" % (module, found[0])
    if found[0] == "application":
        hint += " (Django's wsgi.py names it 'application')"
    return "%s; it has '%s': %s" % (message, found[0], hint)


def _import_failure(pool, error: BaseException, path_dirs, what: str = "failed to import"
                    ) -> dict:
    """The exception's type and message, where it was raised, and why an
    ImportError may be a matter of rights rather than of code."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not _machinery(f.filename)]
    text = error.msg if isinstance(error, SyntaxError) else str(error)
    reason = "%s: %s" % (type(error).__name__, text) if text else type(error).__name__
    message = "app '%s' %s: %s" % (pool.app, what, reason)
    if isinstance(error, SyntaxError) and error.filename:
        message += " (%s:%s)" % (error.filename, error.lineno)
    elif frames:
        message += " (%s:%d)" % (frames[-1].filename, frames[-1].lineno)
    if isinstance(error, ImportError):
        blocked = first_unreadable(path_dirs)
        if blocked:
            message += "; " + blocked[1]
    details = ["  %s:%d in %s: %s" % (f.filename, f.lineno, f.name, (f.line or "").strip())
               for f in frames[-FRAMES_SHOWN:]] if len(frames) > 1 else []
    return {"directive": "app", "message": message, "details": details}


def _machinery(filename: str) -> bool:
    """A frame of the import system or of pfm, not of the application."""
    if filename.startswith("<frozen "):
        return True
    import importlib
    where = os.path.dirname(os.path.abspath(filename))
    return where in (os.path.dirname(importlib.__file__), os.path.dirname(pfm.__file__))
