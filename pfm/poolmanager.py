"""The pool manager: one process per pool. It prepares the pool's
environment, optionally preloads the app, forks the workers, reaps them and
keeps their number where the process manager wants it.

It never accepts connections itself; a worker that dies costs only its own
request, and the manager replaces it.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
import traceback
from dataclasses import dataclass

from . import logfiles, procutil, signals
from .signals import SignalPipe
from .worker import worker_main
from .workeroutput import OutputCatcher, WorkerPipes, silence_child_output

RUNNING, FINISHING, TERMINATING = "running", "finishing", "terminating"
_HANDLED = (signal.SIGCHLD, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT,
            signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
KILL_AFTER_TERM = 1.0      # php-fpm: SIGKILL one second after SIGTERM went unheeded
MAX_BACKOFF = 30.0         # cap on the pause between respawns of a failing app


class Child:
    __slots__ = ("pid", "started")

    def __init__(self, pid: int, started: float):
        self.pid = pid
        self.started = started


@dataclass
class Inherited:
    """What a pool manager gets from the master across fork."""

    pool: object
    listener: object            # sockets.Listener
    files: object               # logfiles.PoolFiles
    log: object                 # log.Log
    lifeline_fd: int            # EOF here means the master is gone
    report_fd: int              # one byte per worker that died of SIGSEGV/SIGBUS
    control: socket.socket      # the master's messages (log reopen with new fds)
    master_pid: int
    control_timeout: float      # process_control_timeout


class PoolManager:
    def __init__(self, inherited: Inherited):
        self.inherited = inherited
        self.pool = pool = inherited.pool
        self.name = pool.name
        self.listener = inherited.listener
        self.files = inherited.files
        self.log = inherited.log
        self.log.also_stderr = False     # the master's start-up mirror is not ours
        self.lifeline_fd = inherited.lifeline_fd
        self.report_fd = inherited.report_fd
        self.control = inherited.control
        self.master_pid = inherited.master_pid
        self.control_timeout = inherited.control_timeout
        self.children: dict[int, Child] = {}
        self.state = RUNNING
        self.deadline: float | None = None     # next escalation of a stop
        self.boot_failures = 0
        self.spawn_after = 0.0
        self.app = None
        self.output_fds: set[int] = set()    # read ends of the workers' stdout/stderr

    # ---- setup -------------------------------------------------------------

    def run(self) -> int:
        procutil.set_title("pfm: pool %s manager" % self.name)
        self.sigpipe = SignalPipe(_HANDLED)
        signals.unblock()
        procutil.die_with_parent(signal.SIGTERM, self.master_pid)
        self.prepare()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sigpipe, selectors.EVENT_READ, "signals")
        self.selector.register(self.lifeline_fd, selectors.EVENT_READ, "lifeline")
        self.selector.register(self.control, selectors.EVENT_READ, "control")
        self.manage()
        return self.loop()

    def prepare(self) -> None:
        """Environment and import path for the app, then preload if asked."""
        from .app import load, prepare_path
        from .config import app_search_path
        search_path = app_search_path(self.pool)     # before a chroot hides the outside
        from .isolation import IsolationError, apply_environment, apply_limits_and_identity
        try:
            apply_limits_and_identity(self.pool)
        except IsolationError as e:
            self.log.error("[pool %s] %s" % (self.name, e))
            os._exit(procutil.EXIT_BOOT_FAILED)
        apply_environment(self.pool)
        prepare_path(self.pool, search_path)
        if self.pool.preload:
            try:
                self.app = load(self.pool.app_module, self.pool.app_callable)
            except BaseException:
                self.log.error("[pool %s] unable to preload app '%s:%s'" % (
                    self.name, self.pool.app_module, self.pool.app_callable))
                for line in traceback.format_exc().rstrip("\n").split("\n"):
                    self.log.error("[pool %s] %s" % (self.name, line))
                os._exit(procutil.EXIT_BOOT_FAILED)
            import gc
            gc.collect()
            gc.freeze()   # keep the preloaded objects' pages shared with the workers

    # ---- the loop ----------------------------------------------------------

    def loop(self) -> int:
        while True:
            timeout = self._timeout()
            for key, _ in self.selector.select(timeout):
                if key.data == "signals":
                    for sig in self.sigpipe.read():
                        self.on_signal(sig)
                elif key.data == "control":
                    self.on_control()
                elif key.data == "lifeline":
                    # The master is gone (its end of the pipe closed): stop now.
                    self.selector.unregister(self.lifeline_fd)
                    self.stop(TERMINATING)
                elif not key.data.feed(key.fd):
                    self.selector.unregister(key.fd)
                    self.output_fds.discard(key.fd)
                    os.close(key.fd)
            self.reap()
            if self.state == RUNNING:
                self.manage()
            else:
                self.escalate()
                if not self.children:
                    self.drain_output()
                    return 0

    def _timeout(self) -> float:
        now = time.monotonic()
        timeout = 1.0
        if self.deadline is not None:
            timeout = min(timeout, max(0.0, self.deadline - now))
        if self.state == RUNNING and len(self.children) < self.pool.pm_max_children:
            timeout = min(timeout, max(0.0, self.spawn_after - now))
        return timeout

    def on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return  # reaped after every wakeup
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stop(TERMINATING)
        elif sig == signal.SIGQUIT:
            self.stop(FINISHING)

    def on_control(self) -> None:
        """The master reopened the log files (USR1) and sent us the new ones:
        put them in place and replace the workers, which hold the old ones."""
        try:
            message, fds = logfiles.recv_fds(self.control)
        except OSError:
            return
        if message == b"reopen":
            error_fd = self.log.fd if self.log.path else -1
            logfiles.install(fds, self.files.targets(error_fd))
            self.kill_all(signal.SIGQUIT)
        else:
            for fd in fds:
                os.close(fd)

    def drain_output(self) -> None:
        """Log what the last workers printed before their pipes are dropped."""
        for key in list(self.selector.get_map().values()):
            if isinstance(key.data, OutputCatcher):
                key.data.feed(key.fd)
                self.selector.unregister(key.fd)
                os.close(key.fd)
        self.output_fds.clear()

    # ---- the verbs ---------------------------------------------------------

    def manage(self) -> None:
        """static: keep pm.max_children workers alive."""
        now = time.monotonic()
        while len(self.children) < self.pool.pm_max_children and now >= self.spawn_after:
            self.spawn()

    def spawn(self) -> None:
        manager = os.getpid()
        pipes = WorkerPipes() if self.pool.catch_workers_output else None
        pid = signals.fork()
        if pid == 0:
            self.sigpipe.close()
            self.selector.close()
            os.close(self.lifeline_fd)
            os.close(self.report_fd)
            self.control.close()
            for fd in self.output_fds:
                os.close(fd)
            if pipes:
                pipes.in_child()
            else:
                silence_child_output()
            worker_main(self.pool, self.listener, self.log, self.app, manager, self.files)
        self.children[pid] = Child(pid, time.monotonic())
        if pipes:
            for fd, stream in zip(pipes.in_parent(), ("stdout", "stderr")):
                catcher = OutputCatcher(self.log, self.name, pid, stream,
                                        self.pool.decorate_workers_output)
                self.selector.register(fd, selectors.EVENT_READ, catcher)
                self.output_fds.add(fd)
        self.log.notice("[pool %s] child %d started" % (self.name, pid))

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            how, bad = procutil.describe_exit(status)
            lived = time.monotonic() - child.started
            line = "[pool %s] child %d exited %s after %.6f seconds from start" % (
                self.name, pid, how, lived)
            if self.state != RUNNING:
                self.log.debug(line)
                continue
            (self.log.warning if bad else self.log.notice)(line)
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGSEGV, signal.SIGBUS):
                self.report_crash()
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == procutil.EXIT_BOOT_FAILED:
                self.boot_failures += 1
                pause = min(MAX_BACKOFF, 0.5 * 2 ** min(self.boot_failures, 8))
                self.spawn_after = time.monotonic() + pause
                self.log.error("[pool %s] child %d failed to initialize; next try in %.1f s"
                               % (self.name, pid, pause))
            else:
                self.boot_failures = 0

    def report_crash(self) -> None:
        """Tell the master, which counts them for emergency_restart_threshold."""
        try:
            os.write(self.report_fd, b"S")
        except OSError:
            pass

    def stop(self, how: str) -> None:
        """FINISHING: QUIT, workers end their request (process_control_timeout
        bounds the wait when set; 0 waits as long as requests run). TERMINATING:
        TERM now, KILL a second later. TERMINATING overrides FINISHING."""
        if self.state == how or self.state == TERMINATING:
            return
        self.state = how
        now = time.monotonic()
        if how == FINISHING:
            self.kill_all(signal.SIGQUIT)
            self.deadline = now + self.control_timeout if self.control_timeout > 0 else None
            self.stage = signal.SIGQUIT
        else:
            self.kill_all(signal.SIGTERM)
            self.deadline = now + KILL_AFTER_TERM
            self.stage = signal.SIGTERM

    def escalate(self) -> None:
        if self.deadline is None or time.monotonic() < self.deadline or not self.children:
            return
        nxt = signal.SIGTERM if self.stage == signal.SIGQUIT else signal.SIGKILL
        self.kill_all(nxt)
        self.stage = nxt
        self.deadline = time.monotonic() + KILL_AFTER_TERM

    def kill_all(self, sig: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def manager_main(inherited: Inherited) -> None:
    """Entry point of a forked pool manager; never returns into the master's code."""
    code = 1
    try:
        code = PoolManager(inherited).run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        inherited.log.alert("[pool %s] manager crashed: %s" % (
            inherited.pool.name, traceback.format_exc().replace("\n", " | ")))
    finally:
        os._exit(code)
