"""The pool manager: one process per pool. It prepares the pool's
environment, optionally preloads the app, forks the workers, reaps them and
keeps their number where the process-manager policy (pool.py) wants it,
watches request timeouts, and answers the status page when every worker is
busy (statusdesk.py).

A worker that dies costs only its own request; the manager replaces it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
from dataclasses import dataclass

from . import listenqueue, logfiles, procutil, signals, workergroups
from . import pool as policy
from .log import ALERT
from .requestwatch import RequestWatch
from .scoreboard import STARTING, Scoreboard, ScoreboardFull, counts, peak_active
from .stopladder import State, StopLadder
from .system import System
from .worker import log_boot_failure, worker_main
from .workeroutput import OutputCatcher, WorkerPipes, silence_child_output

# What a pool manager tells the master on their socket pair (b"failed\nREASON"),
# and what the master sends it with the new log descriptors (USR1).
BOOTED, FAILED, REOPEN = b"booted", b"failed", b"reopen"
KILL_AFTER_TERM = 1.0      # php-fpm: SIGKILL one second after SIGTERM went unheeded
FORK_RETRY = 0.1           # after a failed fork() the next waits this long, doubling
FORK_RETRY_MAX = 2.0       # up to this (the cause - nproc, memory, descriptors - may pass)
LISTEN_REARM = 0.02        # after a wakeup by the listening socket, ignore it this long
SATURATED_FOR = 0.1        # all workers busy this long: the manager answers status itself
SATURATION_LOG_INTERVAL = 10.0   # at most one "all workers busy" line per this long
SATURATION_SHOWN = 5       # requests named in it, oldest first
BOOT_ERROR_RELOG = 300.0   # a worker's boot error seen again is logged in full after this long
_PID = struct.Struct("=i")


class Child:
    __slots__ = ("pid", "started", "slot")

    def __init__(self, pid: int, started: float, slot: int):
        self.pid = pid
        self.started = started
        self.slot = slot


@dataclass(frozen=True, kw_only=True)
class ManagerContext:
    """What a pool manager gets from the master across fork."""

    pool: object
    listener: object            # sockets.Listener
    files: object               # logfiles.PoolFiles
    log: object                 # log.Log
    board: Scoreboard           # made by the master, so it can read the totals
    system: System              # the OS seam (system.py)
    lifeline_fd: int            # EOF here means the master is gone
    report_fd: int              # one byte per worker that died of SIGSEGV/SIGBUS
    control: socket.socket      # the master's messages (log reopen with new fds)
    master_pid: int
    control_timeout: float      # process_control_timeout
    status_listener: object = None   # pm.status_listen, served here
    processes: object = None         # processmax.ProcessTable shared by every pool
    cell: int = 0                    # this manager's cell in it
    process_max: int = 0             # [global] process.max, 0: no cap
    adoption: tuple = None           # the pool's adoption socket pair (handoff.py)


class PoolManager:
    def __init__(self, ctx: ManagerContext):
        self.ctx = ctx
        self.system = system = ctx.system
        self.pool = pool = ctx.pool
        self.name = pool.name
        self.listener = ctx.listener
        self.files = ctx.files
        self.log = ctx.log
        self.log.also_stderr = False     # the master's start-up mirror is not ours
        self.board = ctx.board
        self.control = ctx.control
        self.children: dict[int, Child] = {}
        self.told_to_stop: set[int] = set()  # pids the policy asked to stop (SIGQUIT)
        self.retiring: list[int] = []        # said they reached pm.max_requests/max_memory
        # The workers' process groups: what the app forks stays in them.
        self.groups = workergroups.Groups(system)
        self.policy = policy.PolicyState()
        self.next_check = 0.0
        self.listen_woke = False
        self.listen_armed_at: float | None = None
        self.state = State.RUNNING
        self.ladder = StopLadder(self.kill_all, KILL_AFTER_TERM, system)
        self.boot_backoff = policy.Backoff(1.0, policy.MAX_BACKOFF)   # the app fails to start
        self.fork_backoff = policy.Backoff(FORK_RETRY, FORK_RETRY_MAX)   # fork() fails
        self.fork_failures = policy.Throttle()
        self.process_max_warnings = policy.Throttle()
        self.saturation_warnings = policy.Throttle(SATURATION_LOG_INTERVAL)
        self.app = None
        self.boot_error: str | None = None   # the last worker boot error logged in full
        self.boot_error_logged = -1e9
        self.boot_error_repeats = 0
        # The loop's own descriptors and helpers, made by open_loop().
        self.sigpipe = self.poller = self.requests = self.desk = None
        self.boot_r = self.boot_w = None
        self.retire_r = self.retire_w = -1

    # ---- setup -------------------------------------------------------------

    def run(self) -> int:
        """Boot, then turn the loop until the last worker is gone."""
        self.boot()
        self.open_loop()
        while not self.step(self.timeout()):
            pass
        return 0

    def boot(self) -> None:
        """Become the pool's process: its signals, identity, environment, app."""
        procutil.set_title("pfm: pool %s manager" % self.name)
        self.sigpipe = self.system.signal_pipe()
        procutil.exit_on_stop_signals()     # while booting nothing is in flight: stop means now
        signals.unblock()
        self.prepare()
        # Past the boot: the loop takes the signals, and a dead master means a
        # stop with the workers' requests cut (armed after setuid, which clears it).
        self.sigpipe.reinstall()
        procutil.die_with_parent(signal.SIGTERM, self.ctx.master_pid)
        self.tell_master(BOOTED)

    def open_loop(self) -> None:
        """The loop's descriptors and helpers, and the first workers. (The
        boot made the signal pipe early, to hold the signals while the app
        imports; a unit test starts here.)"""
        if self.sigpipe is None:
            self.sigpipe = self.system.signal_pipe()
        self.retire_r, self.retire_w = self.system.pipe(os.O_CLOEXEC | os.O_NONBLOCK)
        self.poller = self.system.poller()
        self.boot_r, self.boot_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.boot_r.setblocking(False)
        self.watch(self.boot_r.fileno(), self.on_boot_report)
        self.watch(self.sigpipe.fileno(), self.on_signals)
        self.watch(self.ctx.lifeline_fd, self.on_master_gone)
        self.watch(self.control.fileno(), self.on_control)
        self.watch(self.retire_r, self.on_retire)
        self.requests = RequestWatch(self.pool, self.board, self.log, self.files.slowlog_fd,
                                     self.system)
        from .statusdesk import StatusDesk
        self.desk = StatusDesk(io=self, board=self.board, listener=self.listener, log=self.log,
                               pool=self.pool, status_listener=self.ctx.status_listener)
        if self.watches_listen():
            self.watch(self.listener.fileno(), self.on_listen, select.EPOLLIN | select.EPOLLET)
        for _ in range(policy.initial(self.pool)):     # pm.start_servers for dynamic
            self.spawn()
        self.manage(self.system.monotonic())

    def watch(self, fd: int, handler, events: int = select.EPOLLIN) -> None:
        self.poller.watch(fd, handler, events)

    def unwatch(self, fd: int) -> None:
        self.poller.unwatch(fd)

    def watches_listen(self) -> bool:
        """The listening socket wakes the manager only where it must act on a
        waiting connection: to fork (dynamic, ondemand) or to answer status
        and ping while every worker is busy."""
        return self.pool.pm != "static" or self.desk.intercepts

    def prepare(self) -> None:
        """Limits, identity, environment and import path, then preload if asked.
        A failure is logged, told to the master (a reload then fails), and
        ends the manager with EXIT_BOOT_FAILED."""
        from .app import load, prepare_path
        from .config import app_search_path
        from .isolation import IsolationError, apply_environment, apply_limits_and_identity
        search_path = app_search_path(self.pool)     # before a chroot hides the outside
        try:
            apply_limits_and_identity(self.pool)
        except IsolationError as e:
            self.boot_failed(str(e))
        # SIGKILL: an import stuck in C code cannot stop a dead master's
        # manager from going. Armed after setuid, which clears it.
        procutil.die_with_parent(signal.SIGKILL, self.ctx.master_pid)
        apply_environment(self.pool)
        try:
            prepare_path(self.pool, search_path)
        except OSError as e:
            self.boot_failed("unable to chdir to '%s': %s" % (self.pool.chdir, e.strerror))
        if self.pool.preload:
            try:
                self.app = load(self.pool.app_module, self.pool.app_callable)
            except BaseException as e:
                self.log.exception("[pool %s]" % self.name, "unable to preload app '%s:%s'"
                                   % (self.pool.app_module, self.pool.app_callable))
                self.boot_failed("unable to preload app '%s': %s" % (
                    self.pool.app, _one_line(e)), logged=True)
            import gc
            gc.collect()
            gc.freeze()   # keep the preloaded objects' pages shared with the workers

    def boot_failed(self, reason: str, logged: bool = False) -> None:
        if not logged:
            self.log.error("[pool %s] %s" % (self.name, reason))
        self.tell_master(FAILED, reason)
        os._exit(procutil.EXIT_BOOT_FAILED)

    def tell_master(self, kind: bytes, reason: str = "") -> None:
        """BOOTED, or FAILED with the reason: how a reload learns whether
        the new generation can serve (master.py)."""
        message = kind + b"\n" + reason.encode("utf-8", "replace") if reason else kind
        try:
            self.control.send(message[:4096], socket.MSG_DONTWAIT)
        except OSError:
            pass

    def on_boot_report(self, fd: int, events: int) -> None:
        """A worker failed to load the app (worker.report_boot_failure): its
        traceback is logged in full once; the same error again is counted,
        not repeated, so a pool of many workers does not flood the log."""
        while True:
            try:
                report = json.loads(self.boot_r.recv(65536))
            except (BlockingIOError, ValueError):
                return
            pid, summary = report.get("pid", 0), report.get("summary", "")
            now = self.system.monotonic()
            if summary != self.boot_error or now - self.boot_error_logged > BOOT_ERROR_RELOG:
                self.boot_error, self.boot_error_logged, self.boot_error_repeats = \
                    summary, now, 0
                log_boot_failure(self.log, self.pool, pid, [
                    line for line in report.get("traceback", "").split("\n") if line.strip()])
            else:
                self.boot_error_repeats += 1
                self.log.error("[pool %s] child %d failed to initialize: the same error again "
                               "(%s), %d time(s) since it was logged in full" % (
                                   self.name, pid, summary, self.boot_error_repeats))
            self.tell_master(FAILED, "child %d failed to initialize: %s" % (pid, summary))

    # ---- the loop ----------------------------------------------------------

    def step(self, timeout: float) -> bool:
        """One turn: wait up to `timeout` for a descriptor, act on it, then
        on what is due. True once stopping and no worker is left."""
        for fd, events in self.system.wait(self.poller, timeout):
            handler = self.poller.handlers.get(fd)
            if handler is not None:
                handler(fd, events)
        self.reap()
        now = self.system.monotonic()
        if self.state == State.RUNNING:
            self.rearm_listen(now)
            if self.listen_woke or now >= self.next_check:
                self.manage(now)
            self.requests.check(self.board.read(), now)
            self.desk.tick(now)
            return False
        self.escalate()
        if self.children:
            return False
        self.drain_output()
        self.desk.close(self.ctx.adoption)
        self.end_app_processes()
        return True

    def timeout(self) -> float:
        """How long the next turn may wait: until the next thing due."""
        now = self.system.monotonic()
        due = [now + 1.0]
        if self.ladder.deadline is not None:
            due.append(self.ladder.deadline)
        if self.state == State.RUNNING:
            due.append(self.next_check)
            if self.spawn_after() > now:
                due.append(self.spawn_after())
            if self.listen_armed_at is not None:
                due.append(self.listen_armed_at)
            for when in (self.requests.due(), self.desk.due()):
                if when is not None:
                    due.append(when)
        return max(0.0, min(due) - now)

    # ---- events ------------------------------------------------------------

    def on_signals(self, fd: int, events: int) -> None:
        for sig in self.sigpipe.read():
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.stop(State.TERMINATING)
            elif sig == signal.SIGQUIT:
                self.stop(State.FINISHING)

    def on_master_gone(self, fd: int, events: int) -> None:
        """EOF on the lifeline: the master died (even by SIGKILL). Stop now."""
        self.unwatch(fd)
        self.stop(State.TERMINATING)

    def on_control(self, fd: int, events: int) -> None:
        """The master reopened the log files (USR1) and sent us the new ones:
        put them in place and replace the workers, which hold the old ones."""
        try:
            message, fds = logfiles.recv_fds(self.control)
        except OSError:
            return
        if message == REOPEN:
            error_fd = self.log.fd if self.log.path else -1
            logfiles.install(fds, self.files.targets(error_fd))
            self.kill_all(signal.SIGQUIT)
        else:
            for extra in fds:
                os.close(extra)

    def on_listen(self, fd: int, events: int) -> None:
        """A connection arrived (edge-triggered). Disarm for LISTEN_REARM so a
        busy pool does not wake the manager for every request."""
        self.listen_woke = True
        self.poller.modify(fd, 0)
        self.listen_armed_at = self.system.monotonic() + LISTEN_REARM

    def rearm_listen(self, now: float) -> None:
        if self.listen_armed_at is not None and now >= self.listen_armed_at:
            self.listen_armed_at = None
            # Re-arming reports at once if connections are still waiting.
            self.poller.modify(self.listener.fileno(), select.EPOLLIN | select.EPOLLET)

    def on_retire(self, fd: int = -1, events: int = 0) -> None:
        """Workers that reached pm.max_requests or pm.max_memory say so here,
        then exit: fork their replacements now."""
        try:
            data = os.read(self.retire_r, 4096)
        except OSError:
            return
        said = [pid for (pid,) in _PID.iter_unpack(data[: len(data) - len(data) % _PID.size])]
        new = policy.newly_retiring(said, self.children, self.retiring)
        self.retiring += new
        if new and self.state == State.RUNNING:
            self.manage(self.system.monotonic())

    def on_output(self, catcher: OutputCatcher):
        def handler(fd: int, events: int) -> None:
            if not catcher.feed(fd):
                self.unwatch(fd)
                os.close(fd)
        handler.catcher = catcher
        return handler

    def drain_output(self) -> None:
        """Log what the last workers printed before their pipes are dropped."""
        for fd, handler in list(self.poller.handlers.items()):
            catcher = getattr(handler, "catcher", None)
            if catcher is not None:
                catcher.feed(fd)
                self.unwatch(fd)
                os.close(fd)

    # ---- the verbs ---------------------------------------------------------

    def manage(self, now: float) -> None:
        """Apply the policy: fork (retirees' replacements first), stop idle workers."""
        slots = self.board.read()
        idle, active, _total = counts(slots)
        self.board.update_max_active(max(active, peak_active(slots, now)))
        pending = None
        if self.listen_woke or now >= self.next_check:
            pending = listenqueue.queue(self.listener.sock)[0]
            if pending is not None:
                self.board.update_listen_queue(pending)
        decision = policy.decide(self.pool, slots, now, self.policy, pending=pending,
                                 wanted=self.listen_woke, told_to_stop=self.told_to_stop,
                                 retiring=self.retiring)
        woke, self.listen_woke = self.listen_woke, False
        for level, message in decision.logs:
            self.log.write(level, message)
        if decision.max_children_reached:
            self.board.note_max_children_reached()
        retiring = policy.retirees(slots, self.retiring)
        if decision.spawn and now >= self.spawn_after():
            forked = 0
            while forked < decision.spawn and self.spawn(leaving=len(retiring)) is not None:
                forked += 1
            policy.replaced(self.policy, decision.replace[:forked])
        for pid in decision.stop:
            self.stop_worker(pid)
        if pending and saturated(slots, now, retiring):
            self.log_saturation(slots, pending, now, retiring)
        self.next_check = min(decision.next_check, now + 1.0)
        self.groups.prune(self.children)
        if woke and self.desk.intercepts and saturated(slots, now, retiring):
            self.desk.intercept()

    def spawn_after(self) -> float:
        """No fork before this: the app failed to start, or fork() failed."""
        return max(self.boot_backoff.until, self.fork_backoff.until)

    def log_saturation(self, slots, pending: int, now: float, retiring) -> None:
        """Every worker busy and connections waiting: say which requests hold
        the pool, oldest first, not only "consider raising it" (at most every 10 s).
        Retirees are leaving, not busy; a booting worker has no request yet,
        and a pool whose workers are all booting is starting, not saturated."""
        line = describe_saturation(slots, pending, now, retiring)
        if line is not None and self.saturation_warnings.allow(now)[0]:
            self.log.warning("[pool %s] %s" % (self.name, line))

    def stop_worker(self, pid: int) -> None:
        self.told_to_stop.add(pid)
        self.system.kill(pid, signal.SIGQUIT)

    def spawn(self, leaving: int = 0) -> int | None:
        """Fork a worker; None if it cannot be done now (process.max, no
        slot, or a failure, which is logged and backed off). `leaving`:
        retirees about to exit, whose room the fork may wait for quietly."""
        if not self.below_process_max(leaving):
            return None
        try:
            index = self.board.assign_slot()
        except ScoreboardFull:
            return None
        manager = self.system.getpid()
        # EMFILE from the output pipes, EAGAIN or ENOMEM from fork(): keep the
        # workers there are, and try again after a pause.
        try:
            pipes = WorkerPipes() if self.pool.catch_workers_output else None
        except OSError as e:
            self.board.free_slot(index)
            self.fork_failed("pipe2()", e)
            return None
        try:
            pid = self.system.fork()
        except OSError as e:
            self.board.free_slot(index)
            if pipes:
                pipes.close()
            self.fork_failed("fork()", e)
            return None
        if pid == 0:
            try:
                self.in_child(pipes)
            except BaseException:
                self.log.exception("[pool %s] child %d:" % (self.name, self.system.getpid()),
                                   "failed to start", level=ALERT)
                os._exit(procutil.EXIT_BOOT_FAILED)
            worker_main(self.pool, self.listener, self.log, self.app, manager, self.files,
                        self.board, index, self.retire_w, self.desk.handoff_for_workers,
                        self.desk.counts, self.ctx.adoption, self.boot_w)
        self.fork_backoff.succeeded()
        workergroups.lead(pid)
        self.groups.add(pid)
        self.children[pid] = Child(pid, self.system.monotonic(), index)
        self.count_processes()
        if pipes:
            for fd, stream in zip(pipes.in_parent(), ("stdout", "stderr")):
                self.watch(fd, self.on_output(OutputCatcher(
                    self.log, self.name, pid, stream, self.pool.decorate_workers_output)))
        self.log.notice("[pool %s] child %d started" % (self.name, pid))
        return pid

    def fork_failed(self, call: str, error: OSError) -> None:
        """Logged at most every 10 s, with how many were left out."""
        now = self.system.monotonic()
        pause = self.fork_backoff.failed(now)
        allowed, left_out = self.fork_failures.allow(now)
        if allowed:
            self.log.error("[pool %s] %s failed: %s; next try in %.1f s%s" % (
                self.name, call, error.strerror or error, pause,
                policy.suppressed_note(left_out)))

    def in_child(self, pipes) -> None:
        """In a new worker: drop what belongs to the manager, then keep the
        app's children from the listening socket (the manager's descriptors
        are closed by then, so this works even where it ran out of them)."""
        self.sigpipe.close()
        self.poller.close()
        self.desk.in_child()
        for fd in list(self.poller.handlers):
            if fd not in (self.listener.fileno(), self.retire_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.close(self.ctx.report_fd)
        if pipes:
            pipes.in_child()
        else:
            silence_child_output()
        workergroups.in_worker(self.listener.fileno(), self.log.fd)

    def reap(self) -> None:
        for pid, status in self.system.reaped():
            if pid in self.children and pid not in self.retiring:
                # A retiree says so before it exits: read that first, so its
                # replacement is forked (and logged) before its exit is.
                self.on_retire()
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self.board.free_slot(child.slot)
            self.count_processes()
            self.told_to_stop.discard(pid)
            if pid in self.retiring:
                self.retiring.remove(pid)
            self.groups.exited(pid)
            self.requests.forget(pid)
            how, bad = procutil.describe_exit(status)
            lived = self.system.monotonic() - child.started
            line = "[pool %s] child %d exited %s after %.6f seconds from start" % (
                self.name, pid, how, lived)
            if self.state != State.RUNNING:
                self.log.debug(line)
                continue
            (self.log.warning if bad else self.log.notice)(line)
            self.next_check = 0.0     # replace it now, not at the next tick
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGSEGV, signal.SIGBUS):
                self.report_crash()
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == procutil.EXIT_BOOT_FAILED:
                pause = self.boot_backoff.failed(self.system.monotonic())
                self.log.error("[pool %s] child %d failed to initialize; next try in %.1f s"
                               % (self.name, pid, pause))
            else:
                self.boot_backoff.succeeded()

    def below_process_max(self, leaving: int = 0) -> bool:
        """[global] process.max, over every pool (php-fpm); logged at most
        every 10 s, and not while retirees about to exit hold the room (their
        replacements are forked as they are reaped)."""
        cap = self.ctx.process_max
        if not cap or self.ctx.processes is None:
            return True
        total = self.ctx.processes.total()
        if total < cap:
            return True
        now = self.system.monotonic()
        if total - leaving < cap:
            return False
        allowed, left_out = self.process_max_warnings.allow(now)
        if allowed:
            self.log.warning("[pool %s] process.max (%d) reached across all pools, "
                             "not forking a worker%s" % (self.name, cap,
                                                         policy.suppressed_note(left_out)))
        return False

    def count_processes(self) -> None:
        if self.ctx.processes is not None:
            self.ctx.processes.set(self.ctx.cell, len(self.children))

    def report_crash(self) -> None:
        """Tell the master, which counts them for emergency_restart_threshold."""
        try:
            os.write(self.ctx.report_fd, b"S")
        except OSError:
            pass

    def stop(self, how: State) -> None:
        """FINISHING: QUIT, workers end their request (process_control_timeout
        bounds the wait when set; 0 waits as long as requests run). TERMINATING:
        TERM now, KILL a second later. TERMINATING overrides FINISHING."""
        if self.state == how or self.state == State.TERMINATING:
            return
        self.state = how
        timeout = self.ctx.control_timeout
        self.ladder.start(how == State.FINISHING, timeout if timeout > 0 else None)

    def escalate(self) -> None:
        self.ladder.escalate(bool(self.children))

    def kill_all(self, sig: int) -> None:
        """QUIT (finish the request) goes to the workers; TERM and KILL to
        their whole process groups, so what the app forked stops with them."""
        for pid in list(self.children):
            self.system.kill(pid, sig)
            if sig != signal.SIGQUIT:
                self.groups.signal(pid, sig)

    def end_app_processes(self) -> None:
        """The pool stops: end what the app left in its workers' process
        groups, and name whatever still holds the listening socket."""
        self.groups.end(KILL_AFTER_TERM / 2)
        holders = workergroups.socket_holders(self.listener.sock, self.ctx.master_pid)
        if holders:
            self.log.warning("[pool %s] processes the app started outside its workers' "
                             "process groups still hold the listening socket %s: %s; it "
                             "cannot be bound again until they exit" % (
                                 self.name, self.pool.listen, ", ".join(
                                     "pid %d (%s)" % (pid, title) for pid, title in holders)))


def saturated(slots, now: float, retiring=()) -> bool:
    """Every worker has been busy for a while (SATURATED_FOR): the desk takes
    over waiting connections. A pool busy with quick requests never is, so
    its traffic never goes through the manager. Retirees do not count: they
    are on their way out, not busy."""
    workers = [s for s in slots if s.pid and s.pid not in retiring]
    return bool(workers) and all(not s.idle and now - s.stage_since >= SATURATED_FOR
                                 for s in workers)


def describe_saturation(slots, pending: int, now: float, retiring=()) -> str | None:
    """The saturation warning: which requests hold the pool, oldest first;
    booting workers are named as such, not as a request begun at boot.
    None when no request holds it (every worker is booting)."""
    busy = [s for s in slots if s.pid and not s.idle and s.pid not in retiring]
    running = sorted((s for s in busy if s.stage != STARTING), key=lambda s: s.request_start)
    if not running:
        return None
    booting = [s for s in busy if s.stage == STARTING]
    line = "all %d workers busy, %d connection(s) waiting; oldest requests: %s" % (
        len(busy), pending, ", ".join('pid %d "%s %s%s" %.1fs' % (
            s.pid, s.method or "-", s.uri or "-", "?" + s.query if s.query else "",
            now - s.request_start) for s in running[:SATURATION_SHOWN]))
    if booting:
        line += "; starting: " + ", ".join("pid %d for %.1fs" % (s.pid, now - s.stage_since)
                                          for s in booting[:SATURATION_SHOWN])
    return line


def _one_line(error: BaseException) -> str:
    text = str(error).strip().split("\n")[-1]
    return "%s: %s" % (type(error).__name__, text) if text else type(error).__name__


def manager_main(ctx: ManagerContext) -> None:
    """Entry point of a forked pool manager; never returns into the master's code."""
    code = 1
    try:
        code = PoolManager(ctx).run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        ctx.log.exception("[pool %s]" % ctx.pool.name, "manager crashed", level=ALERT)
    finally:
        os._exit(code)
