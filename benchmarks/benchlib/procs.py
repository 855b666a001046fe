"""Processes a benchmark starts, and stopping every one of them on every way out."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

IS_ROOT = os.geteuid() == 0
PROG = Path(sys.argv[0]).stem or "bench"


def log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


class Processes:
    """Every process a script starts, each the leader of its own session, so
    that stopping one stops its whole tree (the workers of a process manager,
    nginx's worker)."""

    def __init__(self) -> None:
        self.started: List[Tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: Sequence[str], logfile: Path,
              env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None
              ) -> subprocess.Popen:
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True)
        self.started.append((name, proc))
        return proc

    def run_bounded(self, name: str, argv: Sequence[str], timeout: float,
                    env: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
        """Run a client (wrk) to its end, output captured; stopped if it overruns."""
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, env=env,
                                start_new_session=True)
        self.started.append((name, proc))
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            out, _ = proc.communicate()
        finally:
            self.forget(proc)
            if proc.poll() is None:
                self.stop(proc)
        return proc.returncode, out

    def forget(self, proc: subprocess.Popen) -> None:
        self.started = [(n, p) for n, p in self.started if p is not proc]

    @staticmethod
    def stop(proc: subprocess.Popen, grace: float = 5.0,
             first: signal.Signals = signal.SIGTERM) -> None:
        """`first` (TERM) to the process group, KILL what is left after `grace` s."""
        pgid = proc.pid  # start_new_session: the leader's pid is the group's id
        for sig in (first, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=grace)
                # the leader is gone; no member of its group may outlive it
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                return
            except subprocess.TimeoutExpired:
                continue
        proc.wait(timeout=grace)

    def stop_one(self, proc: subprocess.Popen, grace: float = 5.0,
                 first: signal.Signals = signal.SIGTERM) -> None:
        try:
            self.stop(proc, grace, first)
        finally:
            self.forget(proc)

    def stop_all(self) -> None:
        # a second Ctrl-C or SIGTERM must not cut the clean-up short (each stop is bounded)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        try:
            while self.started:
                name, proc = self.started.pop()
                try:
                    self.stop(proc)
                except Exception as exc:  # keep stopping the others
                    log(f"could not stop {name} (pid {proc.pid}): {exc}")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT
                              else signal.SIG_DFL)


PROCS = Processes()


def _on_signal(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def on_exit() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C (through every `finally`), and
    whatever is still running at exit is stopped."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(PROCS.stop_all)


def interrupted(exc: BaseException) -> bool:
    """Ctrl-C or a signal, as opposed to a failure (which keeps the temp dir)."""
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code >= 128)


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool = False):
    """A fresh temporary directory for one run. On the way out every process
    the script started is stopped, and the directory removed unless asked to
    keep it or the run failed (its configs and logs are then worth a look;
    Ctrl-C and signals are not failures)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    except BaseException as exc:
        keep = keep or not interrupted(exc)
        raise
    finally:
        PROCS.stop_all()
        if keep:
            log(f"kept {tmp} (configs and logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unix_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
    return True


def tail(paths: Sequence[Path], lines: int = 15) -> str:
    out = []
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace").strip().splitlines()[-lines:]
            out.append(f"--- {path}\n" + "\n".join(text))
    return "\n".join(out)


def wait_for(what: str, check: Callable[[], object], proc: Optional[subprocess.Popen],
             logs: Sequence[Path], timeout: float = 20.0) -> None:
    """Poll `check` until it returns true; fail with the logs' tails."""
    deadline = time.monotonic() + timeout
    last: object = "timed out"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            last = f"exited with status {proc.returncode}"
            break
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise SystemExit(f"{PROG}: {what} is not ready ({last})\n" + tail(logs))
