"""Small process-level helpers shared by the master, pool managers and workers."""

from __future__ import annotations

import ctypes
import os
import signal

try:
    from setproctitle import setproctitle
except ImportError:
    # A dependency of the installed package, but pfm's source tree run by
    # an interpreter without it still serves, untitled: docs/django.md's
    # pool run by Debian's python3 (tests/test_recipes.py) relies on that.
    def setproctitle(title: str) -> None:
        pass

_PR_SET_PDEATHSIG = 1
_libc = None


def set_title(title: str) -> None:
    setproctitle(title)


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Ask Linux to send `sig` when our parent dies, so that killing the master
    (even with SIGKILL) takes its whole tree down. If the parent is already gone
    when we get here, go now."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


def exit_on_stop_signals(sigs=(signal.SIGQUIT, signal.SIGTERM, signal.SIGINT)) -> None:
    """While a process boots (an app import may never return) a stop signal
    ends it at once: it has no request in flight. SIGQUIT's default action
    would dump core, hence a handler rather than SIG_DFL."""
    for sig in sigs:
        signal.signal(sig, _exit_now)


def _exit_now(signum, frame) -> None:
    os._exit(EXIT_OK)


def describe_exit(status: int) -> tuple[str, bool]:
    """php-fpm's wording for a wait status, and whether it is worth a WARNING.

    'with code 0' and 'on signal 3 (SIGQUIT)' are the normal ends (NOTICE)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "SIG%d" % sig
        core = " - core dumped" if os.WCOREDUMP(status) else ""
        return "on signal %d (%s%s)" % (sig, name, core), sig != signal.SIGQUIT
    code = os.waitstatus_to_exitcode(status)
    return "with code %d" % code, code != 0


# Exit codes a worker uses so its manager can tell a boot failure from a crash.
EXIT_OK = 0
EXIT_BOOT_FAILED = 70   # php-fpm: "child failed to initialize" (EX_SOFTWARE)
