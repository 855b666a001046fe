"""The master process: owns the config, the listening sockets, the log and
the signals; forks one pool manager per pool and supervises them.

It never parses FastCGI and never imports an application, so no request and
no application bug can reach it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from . import generation, handoff, logfiles, procutil, reexec, sockets
from .appcheck import AppCheck
from .generation import Generation, PoolReadiness
from .isolation import IsolationError, apply_limits
from .log import Log
from .logfiles import PoolFiles
from .pool import manager_restart, scoreboard_slots
from .poolmanager import BOOTED, FAILED, REOPEN, ManagerContext, manager_main
from .processmax import ProcessTable
from .scoreboard import Scoreboard, counts
from .stopladder import State, StopLadder
from .system import System
from .systemd import Notifier

EX_SOFTWARE, EX_CONFIG = 70, 78
STILL_WAITING = 30.0     # a new generation not serving after this long is logged (once)
MANAGER_GRACE = 3.0      # after managers were told to stop fast, SIGKILL them this much later


class InitError(Exception):
    """Start-up failed; the message is logged and the exit status is EX_CONFIG."""


class Manager:
    """A pool manager, as the master knows it."""

    __slots__ = ("pid", "pool", "started", "generation", "control", "board", "cell", "booted")

    def __init__(self, pid: int, pool, *, started: float, generation: int, control, board,
                 cell: int):
        self.pid = pid
        self.pool = pool
        self.started = started
        self.generation = generation
        self.control = control      # our end of the socket to this manager
        self.board = board          # its pool's scoreboard (the master only reads it)
        self.cell = cell            # its cell in the process.max table
        self.booted = False         # it said it is past its boot (rights, preload)


class Master:
    """Built by `build_master()`; a test builds one with a fake system
    (tests/fakesystem.py) and turns its loop with `step()`."""

    def __init__(self, config, log: Log, system: System, *, daemonize: bool = False,
                 pidfile: str | None = None, inherited: reexec.InheritedState | None = None,
                 notifier: Notifier | None = None, code: tuple = (), app_check=AppCheck):
        self.system = system
        self.config = config        # the serving generation's configuration
        self.log = log
        self.daemonize = daemonize
        self.pidfile = pidfile
        self.app_check = app_check  # how a reload checks the apps (appcheck.py: children)
        self.current: Generation | None = None   # the generation serving
        self.next: Generation | None = None      # a reload's, until it serves or fails
        self.checking: AppCheck | None = None    # a reload's app check, before `next`
        self.adoptions: dict = {}   # listening address -> adoption socket pair (handoff.py)
        self.retiring: list[int] = []   # a previous image's managers, until ours serve
        self.started_generations = 0    # numbers them: the first is 0
        self.managers: dict[int, Manager] = {}
        self.restart_at: dict[str, float] = {}     # pool name -> when to restart its manager
        self.failures: dict[str, int] = {}
        self.state = State.RUNNING
        self.ladder = StopLadder(self.signal_managers, MANAGER_GRACE, self.system)
        self.status_fd: int | None = None
        self.notifier = notifier or Notifier({})
        self.inherited = inherited or reexec.InheritedState({})  # from a previous image of us
        self.code = code    # pfm's code as this image loaded it (empty: never re-exec)
        self.next_notify: float | None = None
        self.notify_interval = 0.0
        self.last_requests = 0
        # The loop's own descriptors and tables, made by open_loop().
        self.sigpipe = self.poller = self.processes = None
        self.lifeline_r = self.lifeline_w = self.report_r = self.report_w = -1
        self.crashes: list[float] = []      # when workers died of SIGSEGV/SIGBUS, lately

    # ---- start -------------------------------------------------------------

    def run(self) -> int:
        """Start, then turn the loop until the last pool manager is gone."""
        if not self.log.to_stderr:
            self.log.also_stderr = True
        for warning in self.config.warnings:
            self.log.warning(warning)
        try:
            apply_limits(self.config.global_)       # [global] rlimit_*, as php-fpm
            self.open_sockets()
        except (InitError, IsolationError) as e:
            self.log.error(str(e))
            self.log.error("pfm initialization failed")
            return EX_CONFIG
        try:
            if not self.start():
                return EX_CONFIG
            while not self.step(self.timeout()):
                pass
            self.log.notice("exiting, bye-bye!")
            return 0
        finally:
            self.cleanup()

    def start(self) -> bool:
        """Detach, write the pid file, fork the pool managers; False if that failed."""
        if self.daemonize and not self.inherited.daemonized:
            self.detach()
        try:
            self.write_pidfile()
        except OSError as e:
            self.log.error("unable to write pid file '%s': %s" % (self.pidfile, e.strerror))
            self.log.error("pfm initialization failed")
            self.report_status(EX_CONFIG)
            return False
        procutil.set_title("pfm: master process (%s)" % (self.config.path or "built-in demo"))
        self.open_loop()
        self.log.notice("pfm is running, pid %d" % self.system.getpid())
        self.log.notice("ready to handle connections")
        self.log.also_stderr = False
        self.report_status(0)
        self.notify_ready()
        return True

    def open_loop(self) -> None:
        """The loop's descriptors and tables, and a pool manager per pool."""
        self.sigpipe = self.system.signal_pipe()
        # Old pool managers of a previous image watch this pipe: keep it.
        self.lifeline_r, self.lifeline_w = self.inherited.lifeline or self.system.pipe()
        self.retiring = self.inherited.retiring
        # process.max: a cell per live manager; reloads briefly double the managers.
        self.processes = ProcessTable(4 * len(self.config.pools) + 16)
        # Managers write one byte here per worker that died of SIGSEGV/SIGBUS.
        self.report_r, self.report_w = self.system.pipe(os.O_CLOEXEC | os.O_NONBLOCK)
        self.poller = self.system.poller()
        self.poller.watch(self.sigpipe.fileno(), self.on_signals)
        self.poller.watch(self.report_r, self.read_reports)
        for pool in self.config.pools:
            self.spawn_manager(self.current, pool)

    def open_sockets(self) -> None:
        inherited = [sockets.Listener(sock, address, address,
                                      address if sock.family == socket.AF_UNIX else None)
                     for address, sock in self.inherited.sockets.items()]
        self.current = self.open_generation(self.config, 0, inherited)
        used = {id(x) for x in self.current.sockets()}
        for listener in inherited:
            if id(listener) in used:
                self.log.notice('using inherited socket fd=%d, "%s"'
                                % (listener.sock.fileno(), listener.address))
            else:
                _close_listener(listener)

    def open_generation(self, config, number: int, existing: list) -> Generation:
        """The sockets and log files of a generation: an address already open
        in `existing` keeps its socket (no connection is refused); what this
        opens is closed again if something else fails. Raises InitError."""
        fresh = []
        try:
            listeners = bind_listeners(config.pools, "listen", existing, fresh)
            status_listeners = bind_listeners(config.pools, "pm.status_listen", existing, fresh)
            files = self.open_files(config.pools)
        except InitError:
            for listener in fresh:
                _close_listener(listener)
            raise
        return Generation(number, config, listeners, status_listeners, files,
                          started=self.system.monotonic())

    @staticmethod
    def open_files(pools) -> dict:
        """Each pool's access.log and slowlog, opened here, as root, once."""
        files = {}
        for pool in pools:
            try:
                files[pool.name] = PoolFiles(pool)
            except OSError as e:
                for opened in files.values():
                    opened.close()
                raise InitError("[pool %s] unable to open log file '%s': %s"
                                % (pool.name, e.filename, e.strerror)) from None
        return files

    def detach(self) -> None:
        """Fork to the background; the parent exits with the child's start status."""
        r, w = os.pipe()
        pid = os.fork()
        if pid > 0:
            os.close(w)
            os._exit(_wait_status(r, 10.0))
        os.close(r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        if not self.log.to_stderr:
            os.dup2(devnull, 2)
            self.log.also_stderr = False
        os.close(devnull)
        self.status_fd = w

    def report_status(self, code: int) -> None:
        if self.status_fd is not None:
            try:
                os.write(self.status_fd, bytes([code]))
                os.close(self.status_fd)
            except OSError:
                pass
            self.status_fd = None

    def write_pidfile(self) -> None:
        if not self.pidfile:
            return
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass
        fd = os.open(self.pidfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    # ---- the loop ----------------------------------------------------------

    def step(self, timeout: float) -> bool:
        """One turn: wait up to `timeout` for a descriptor, act on it, then
        on what is due. True once stopping and no pool manager is left."""
        for fd, _events in self.system.wait(self.poller, timeout):
            handler = self.poller.handlers.get(fd)
            if handler is not None:
                handler(fd)
        if self.checking is not None:
            self.checking.expire(self.system.monotonic())
            self.check_done()
        self.reap()
        if self.next_notify is not None and self.system.monotonic() >= self.next_notify:
            self.notify_status()
        if self.state == State.RUNNING:
            self.restart_managers()
            self.advance_reload()
            self.retire_previous_image()
            return False
        self.escalate()
        return not self.managers

    def timeout(self) -> float:
        """How long the next turn may wait: until the next thing due."""
        now = self.system.monotonic()
        timeout = 1.0
        if self.next_notify is not None:
            timeout = min(timeout, max(0.0, self.next_notify - now))
        if self.ladder.deadline is not None:
            timeout = min(timeout, max(0.0, self.ladder.deadline - now))
        if self.next is not None or self.retiring:
            timeout = min(timeout, 0.05)     # watch the new generation's scoreboards
        if self.checking is not None:
            timeout = min(timeout, self.checking.timeout(now))
        for when in self.restart_at.values():
            timeout = min(timeout, max(0.0, when - now))
        return timeout

    def on_signals(self, fd: int) -> None:
        for sig in self.sigpipe.read():
            self.on_signal(sig)

    def on_signal(self, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stop(State.TERMINATING)
        elif sig == signal.SIGQUIT:
            self.stop(State.FINISHING)
        elif sig == signal.SIGUSR1:
            self.reopen_logs()
        elif sig in (signal.SIGUSR2, signal.SIGHUP):  # HUP: as gunicorn and uWSGI reload
            self.reload()

    # ---- reload ------------------------------------------------------------

    def reload(self) -> None:
        """Graceful reload, in three steps, none of which touches the running
        pools: read and validate the new config; import each pool's app in a
        forked child set up as its workers will be (appcheck.py, without
        blocking this loop); start a new generation of pool managers on the
        same listening sockets. The old generation retires once every new
        pool serves (advance_reload). A failure at any step is logged as a
        failed reload and the old generation goes on serving."""
        if self.state != State.RUNNING:
            return
        self.log.notice("Reloading in progress ...")
        self.notifier.send("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=Reloading"
                           % (self.system.monotonic() * 1e6))
        self.cancel_check()
        from .config import ConfigError, load
        new = self.config
        if self.config.path is not None:
            try:
                new = load(self.config.path, prefix=self.config.prefix)
            except ConfigError as e:
                self.log.error(str(e))
                self.reload_failed("the configuration has an error", str(e))
                return
        self.checking = self.app_check(new, self.watch_check, self.poller.unwatch)

    def watch_check(self, fd: int) -> None:
        self.poller.watch(fd, lambda fd: self.checking.read(fd))

    def cancel_check(self) -> None:
        if self.checking is not None:
            self.checking.cancel()
            self.checking = None

    def check_done(self) -> None:
        """The reload's app check finished: start the new generation, or fail."""
        checks = self.checking
        if not checks.done:
            return
        self.checking = None
        if checks.failures:
            for e in checks.failures:
                self.reload_failed(str(e), e.message)
                for line in e.details:
                    self.log.error("[pool %s] %s" % (e.pool, line) if e.pool else line)
            return
        self.start_generation(checks.config)

    def start_generation(self, new) -> None:
        existing = self.current.sockets() + (self.next.sockets() if self.next else [])
        try:
            apply_limits(new.global_)
            self.started_generations += 1
            gen = self.open_generation(new, self.started_generations, existing)
        except (InitError, IsolationError) as e:
            self.reload_failed(str(e))
            return
        if self.code and reexec.fingerprint() != self.code:
            self.release(gen, keep=[self.current, self.next])
            self.reexec()
            return
        for warning in new.warnings:
            self.log.warning(warning)
        if self.next is not None:
            self.log.notice("a newer reload replaces the one still starting")
            self.abandon(self.next, keep=[self.current, gen])
        self.next = gen
        for pool in new.pools:
            self.spawn_manager(gen, pool)
        old = [pid for pid, m in self.managers.items() if m.generation == self.current.number]
        self.log.notice("configuration %s reloaded: %d pool(s) starting; %d old pool "
                        "manager(s) serve until they are ready" % (
                            new.path or "(built-in)", len(new.pools), len(old)))

    def reload_failed(self, reason: str, status: str | None = None) -> None:
        """One ERROR line naming the reason, and systemd told (READY=1: the
        old generation is serving)."""
        self.log.error("reload failed: %s; the running pools keep serving" % reason)
        self.notifier.send("READY=1\nSTATUS=Reload failed: %s" % (status or reason))

    def advance_reload(self) -> None:
        """Retire the old generation once the new one serves; stop the new
        one if it cannot. No deadline: the old one serves meanwhile."""
        gen = self.next
        if gen is None:
            return
        pools = self.readiness(gen)
        state = generation.outcome(pools, gen.failure)
        if state == generation.READY:
            self.commit(gen)
        elif state == generation.FAILED:
            self.abandon(gen, keep=[self.current])
            self.reload_failed(gen.failure)
        elif not gen.warned and self.system.monotonic() - gen.started > STILL_WAITING:
            gen.warned = True
            self.log.warning("reload: pool(s) %s not serving yet after %d s; the old "
                             "generation keeps serving until they do" % (
                                 ", ".join(generation.not_serving(pools)), STILL_WAITING))

    def readiness(self, gen: Generation) -> list[PoolReadiness]:
        managers = {m.pool.name: m for m in self.managers.values()
                    if m.generation == gen.number}
        out = []
        for pool in gen.config.pools:
            m = managers.get(pool.name)
            idle = sum(1 for s in m.board.read() if s.idle and s.pid) if m else 0
            out.append(PoolReadiness(pool.name, pool.pm == "ondemand",
                                     m is not None and m.booted, idle))
        return out

    def commit(self, gen: Generation) -> None:
        old = self.current
        leaving = [pid for pid, m in self.managers.items() if m.generation == old.number]
        for pid in leaving:
            self.system.kill(pid, signal.SIGQUIT)
        self.release(old, keep=[gen])
        self.current, self.next, self.config = gen, None, gen.config
        self.restart_at.clear()
        self.failures.clear()
        used = {listener.key for listener in gen.listeners.values()}
        for address in [a for a in self.adoptions if a not in used]:
            for end in self.adoptions.pop(address):
                end.close()
        self.log.notice("new pool generation is accepting; %d old pool manager(s) finishing "
                        "their requests" % len(leaving))
        self.notifier.send("READY=1\nSTATUS=Ready to handle connections")

    def abandon(self, gen: Generation, keep: list) -> None:
        """Stop a generation that will not serve: gracefully, since a pool of
        it that did start may already be serving requests."""
        for pid, m in self.managers.items():
            if m.generation == gen.number:
                self.system.kill(pid, signal.SIGQUIT)
        self.release(gen, keep=keep)
        if self.next is gen:
            self.next = None

    def release(self, gen: Generation, keep: list) -> None:
        """Close the sockets of `gen` that no generation in `keep` uses, and its files."""
        kept = {id(x) for other in keep if other is not None for x in other.sockets()}
        for listener in gen.sockets():
            if id(listener) not in kept:
                _close_listener(listener)
                kept.add(id(listener))
        for files in gen.files.values():
            files.close()
        gen.files = {}

    def retire_previous_image(self) -> None:
        """After a re-exec: the previous image's managers go once our pools serve."""
        if self.retiring and generation.outcome(self.readiness(self.current), None) \
                == generation.READY:
            for pid in self.retiring:
                self.system.kill(pid, signal.SIGQUIT)
            self.log.notice("new pool generation is accepting; %d old pool manager(s) "
                            "finishing their requests" % len(self.retiring))
            self.retiring = []
            self.notifier.send("READY=1\nSTATUS=Ready to handle connections")

    def reexec(self) -> None:
        """pfm itself was upgraded: exec the new code in this process (same pid),
        handing over the sockets; the running pools serve until the new
        image's pools accept (reexec.py)."""
        self.log.notice("pfm's code changed since start; reloading: " + reexec.describe())
        extra = {"NOTIFY_SOCKET": self.notifier.env_value} if self.notifier.enabled else {}
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        reexec.exec_master(self.current.sockets(), (self.lifeline_r, self.lifeline_w),
                           list(self.managers) + self.retiring, self.daemonize, extra)

    def read_reports(self, fd: int) -> None:
        """emergency_restart_threshold: that many workers dying of SIGSEGV or
        SIGBUS within emergency_restart_interval reload everything (php-fpm)."""
        try:
            data = os.read(self.report_r, 4096)
        except BlockingIOError:
            return
        g = self.config.global_
        if not (g.emergency_restart_threshold and g.emergency_restart_interval):
            return
        now = self.system.monotonic()
        self.crashes.extend(now for byte in data if byte == ord("S"))
        self.crashes = [t for t in self.crashes if now - t <= g.emergency_restart_interval]
        if self.state == State.RUNNING and len(self.crashes) >= g.emergency_restart_threshold:
            self.log.warning("failed processes threshold (%d in %d sec) is reached, "
                             "initiating reload" % (g.emergency_restart_threshold,
                                                    g.emergency_restart_interval))
            self.crashes.clear()
            self.reload()

    def on_control(self, manager: Manager):
        """A pool manager's messages: b"booted" once it is past its boot,
        b"failed\\nREASON" when its app does not preload or its workers do not boot."""
        def handler(fd: int) -> None:
            self.read_control(manager)
        return handler

    def read_control(self, manager: Manager) -> None:
        while True:
            try:
                message = manager.control.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                self.unwatch_control(manager)
                return
            kind, _, text = message.partition(b"\n")
            if kind == BOOTED:
                manager.booted = True
            elif kind == FAILED:
                self.note_failure(manager, text.decode("utf-8", "replace"))

    def note_failure(self, manager: Manager, reason: str) -> None:
        gen = self.next
        if gen is not None and manager.generation == gen.number and gen.failure is None:
            gen.failure = "[pool %s] %s" % (manager.pool.name, reason)

    def unwatch_control(self, manager: Manager) -> None:
        self.poller.unwatch(manager.control.fileno())   # -1 once closed: nothing to do

    # ---- systemd -------------------------------------------------------------

    def notify_ready(self) -> None:
        """READY=1 once every pool's socket is open and its manager forked
        (connections queue in the kernel until the workers accept them)."""
        if not self.notifier.enabled:
            return
        if not self.notifier.send("READY=1\nSTATUS=Ready to handle connections\nMAINPID=%d"
                                  % self.system.getpid()):
            self.log.warning("failed to notify start to systemd")
        interval = self.config.global_.systemd_interval
        if self.notifier.watchdog_interval > 0:
            if interval and interval != 10:
                self.log.warning("systemd_interval option ignored")
            interval = self.notifier.watchdog_interval
            self.log.notice("systemd watchdog configured to %.3gsec" % (interval * 2))
        if interval and interval > 0:
            self.notify_interval = interval
            self.next_notify = self.system.monotonic() + interval
            self.log.notice("systemd monitor interval set to %dms" % (interval * 1000))
        else:
            self.log.notice("systemd monitor disabled")

    def notify_status(self) -> None:
        """php-fpm's periodic STATUS= line, summed over all pools."""
        active, idle, requests, slow = self.totals()
        traffic = max(0, requests - self.last_requests) / self.notify_interval
        self.last_requests = requests
        watchdog = "WATCHDOG=1\n" if self.notifier.watchdog_interval > 0 else ""
        if not self.notifier.send("READY=1\n%sSTATUS=Processes active: %d, idle: %d, "
                                  "Requests: %d, slow: %d, Traffic: %.3greq/sec"
                                  % (watchdog, active, idle, requests, slow, traffic)):
            self.log.notice("failed to notify status to systemd")
        self.next_notify = self.system.monotonic() + self.notify_interval

    def totals(self) -> tuple[int, int, int, int]:
        """(active, idle, requests, slow) over every pool's scoreboard."""
        active = idle = requests = slow = 0
        for board in self.current.boards.values():
            counters, slots = board.snapshot()
            i, a, _t = counts(slots)
            active, idle = active + a, idle + i
            requests += counters.accepted_conn
            slow += counters.slow_requests
        return active, idle, requests, slow

    def reopen_logs(self) -> None:
        """USR1 (logrotate): reopen every file here, where the rights are, and
        hand the new descriptors to the pool managers. A file that cannot be
        reopened is logged with its reason; the old one stays in use."""
        try:
            self.log.reopen()
            self.log.notice("error log file re-opened")
        except OSError as e:
            self.log.error("unable to reopen error log file '%s': %s"
                           % (self.log.path, e.strerror))
        reopened = failed = 0
        for gen in filter(None, (self.current, self.next)):
            for files in gen.files.values():
                try:
                    logfiles.install(files.reopen(), [fd for fd in (files.access_fd,
                                                                    files.slowlog_fd) if fd >= 0])
                except OSError as e:
                    failed += 1
                    self.log.error("unable to reopen log file '%s': %s"
                                   % (e.filename, e.strerror))
                    continue
                reopened += files.access_fd >= 0
        if reopened and not failed:
            self.log.notice("access log file re-opened")
        self.send_reopened()

    def send_reopened(self) -> None:
        error_fd = self.log.fd if self.log.path else -1
        for manager in self.managers.values():
            gen = self.generation_of(manager)
            files = gen.files.get(manager.pool.name) if gen is not None else None
            if files is None:
                continue
            try:
                logfiles.send_fds(manager.control, REOPEN, files.targets(error_fd))
            except OSError:
                pass

    def generation_of(self, manager: Manager) -> Generation | None:
        for gen in (self.current, self.next):
            if gen is not None and gen.number == manager.generation:
                return gen
        return None

    # ---- managers ------------------------------------------------------------

    def spawn_manager(self, gen: Generation, pool) -> None:
        listener = gen.listeners[pool.name]
        master = self.system.getpid()
        # A fresh scoreboard for every manager: a restarted one starts clean,
        # with room for a replacement of every recycled worker (pool.py).
        board = Scoreboard.create(scoreboard_slots(pool))
        used = {m.cell for m in self.managers.values()}
        cell = next(i for i in range(self.processes.cells) if i not in used)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Keyed by the address: a pool renamed on the same socket still adopts
        # the kept connections of its predecessor's workers.
        adoption = self.adoptions.get(listener.key)
        if adoption is None:
            adoption = self.adoptions[listener.key] = handoff.adoption_pair()
        pid = self.system.fork()
        if pid == 0:
            ours.close()
            self.in_manager(gen, pool, adoption, board)
            g = gen.config.global_
            manager_main(ManagerContext(
                pool=pool, listener=listener, files=gen.files[pool.name], log=self.log,
                board=board, system=self.system, lifeline_fd=self.lifeline_r,
                report_fd=self.report_w, control=theirs, master_pid=master,
                control_timeout=g.process_control_timeout,
                status_listener=gen.status_listeners.get(pool.name),
                processes=self.processes, cell=cell, process_max=g.process_max,
                adoption=adoption))
        theirs.close()
        ours.setblocking(False)
        manager = Manager(pid, pool, started=self.system.monotonic(), generation=gen.number,
                          control=ours, board=board, cell=cell)
        self.managers[pid] = manager
        self.poller.watch(ours.fileno(), self.on_control(manager))
        gen.boards[pool.name] = board
        if gen is self.current:
            self.restart_at.pop(pool.name, None)

    def in_manager(self, gen: Generation, pool, adoption, board) -> None:
        """In a new pool manager: close what belongs to the master or to other pools."""
        self.poller.close()
        self.sigpipe.close()
        os.close(self.lifeline_w)
        os.close(self.report_r)
        mine = {gen.listeners[pool.name].sock.fileno()}
        if pool.name in gen.status_listeners:
            mine.add(gen.status_listeners[pool.name].sock.fileno())
        for other in {id(x): x for g in (self.current, self.next) if g
                      for x in g.sockets()}.values():
            if other.sock.fileno() not in mine:
                other.sock.close()
        for g in filter(None, (self.current, self.next)):
            for name, files in g.files.items():
                if g is not gen or name != pool.name:
                    files.close()
        for manager in self.managers.values():
            manager.control.close()
            if manager.board is not board:
                manager.board.close()   # another pool's scoreboard is none of its business
        for other in self.adoptions.values():
            if other is not adoption:
                for end in other:
                    end.close()
        if self.checking is not None:
            for fd in self.checking.fds():
                os.close(fd)        # the check's children are the master's, not ours

    def reap(self) -> None:
        for pid, status in self.system.reaped():
            manager = self.managers.pop(pid, None)
            if manager is None:
                continue
            self.forget(manager)
            how, bad = procutil.describe_exit(status)
            if self.next is not None and manager.generation == self.next.number:
                self.note_failure(manager, "its manager exited %s before the pool served"
                                  % how)
                continue
            if self.state != State.RUNNING or manager.generation != self.current.number:
                self.log.debug("[pool %s] manager %d exited %s" % (manager.pool.name, pid, how))
                continue
            self.schedule_restart(manager, pid, how)

    def forget(self, manager: Manager) -> None:
        """A manager exited: read what it said last, free its resources."""
        self.read_control(manager)
        self.unwatch_control(manager)
        manager.control.close()
        self.processes.set(manager.cell, 0)     # its workers are gone with it
        gen = self.generation_of(manager)
        if gen is not None and gen.boards.get(manager.pool.name) is manager.board:
            del gen.boards[manager.pool.name]
        manager.board.close()

    def schedule_restart(self, manager: Manager, pid: int, how: str) -> None:
        name = manager.pool.name
        lived = self.system.monotonic() - manager.started
        self.failures[name], pause = manager_restart(self.failures.get(name, 0), lived)
        self.log.warning("[pool %s] manager %d exited %s after %.6f seconds from start, "
                         "restarting it%s" % (name, pid, how, lived,
                                              " in %.1f s" % pause if pause else ""))
        self.restart_at[name] = self.system.monotonic() + pause

    def restart_managers(self) -> None:
        now = self.system.monotonic()
        for pool in self.config.pools:
            when = self.restart_at.get(pool.name)
            if when is not None and now >= when:
                self.spawn_manager(self.current, pool)

    def stop(self, how: State) -> None:
        """finishing (QUIT): managers let requests finish. terminating (TERM,
        INT): managers kill their workers now. Terminating overrides finishing."""
        if self.state == how or self.state == State.TERMINATING:
            return
        self.log.notice("Finishing ..." if how == State.FINISHING else "Terminating ...")
        self.notifier.send("STOPPING=1")
        self.state = how
        self.restart_at.clear()
        self.cancel_check()
        # The managers escalate over their workers themselves (process_control_
        # timeout); the master only steps in a little later, for stuck managers.
        timeout = self.config.global_.process_control_timeout
        self.ladder.start(how == State.FINISHING, timeout + MANAGER_GRACE if timeout > 0 else None)

    def escalate(self) -> None:
        self.ladder.escalate(bool(self.managers))

    def signal_managers(self, sig: int) -> None:
        for pid in list(self.managers):
            self.system.kill(pid, sig)

    def cleanup(self) -> None:
        for gen in filter(None, (self.current, self.next)):
            for listener in gen.sockets():
                if listener.sock.fileno() >= 0:
                    _close_listener(listener)
        if self.pidfile:
            try:
                os.unlink(self.pidfile)
            except OSError:
                pass


def bind_listeners(pools, directive: str, existing: list, fresh: list) -> dict:
    """Pool name -> a socket for its `directive`: "listen", or
    "pm.status_listen" (served by the pool manager itself; a pool without
    it is left out). The socket already open for the same address is kept
    (a reload keeps it, so no connection is refused); a new one is added
    to `fresh`. Raises InitError naming the pool."""
    from .config import parse_listen
    by_address = {listener.address: listener for listener in [*existing, *fresh]}
    result = {}
    for pool in pools:
        address = pool.listen if directive == "listen" else pool.pm_status_listen
        if not address:
            continue
        listener = by_address.get(address)
        if listener is None:
            # ACL entries are listen's only: the status socket keeps owner and group.
            acl = (pool.listen_acl_users, pool.listen_acl_groups) \
                if directive == "listen" else ()
            try:
                listener = sockets.bind(parse_listen(address), pool.listen_backlog,
                                        pool.listen_mode, pool.listen_owner, pool.listen_group,
                                        *acl)
            except (sockets.SocketError, ValueError, OSError) as e:
                where = "" if directive == "listen" else directive + ": "
                raise InitError("[pool %s] %s%s" % (pool.name, where, e)) from None
            fresh.append(listener)
            by_address[address] = listener
        result[pool.name] = listener
    return result


def build_master(config, foreground: bool | None = None, force_stderr: bool = False,
                 pidfile: str | None = None) -> Master:
    """The master as `pfm` runs it: it opens the error log, takes what a
    previous image of it and systemd left in the environment, and notes
    pfm's code on disk (a later change of it makes a reload re-exec)."""
    g = config.global_
    log = Log(None if force_stderr else g.error_log, g.log_level, g.log_limit,
              g.syslog_ident, g.syslog_facility)
    return Master(config, log, System(),
                  daemonize=g.daemonize if foreground is None else not foreground,
                  pidfile=pidfile or g.pid, inherited=reexec.InheritedState(),
                  notifier=Notifier(), code=reexec.fingerprint())


def _close_listener(listener) -> None:
    """Close a socket for good; a unix socket's file goes with it."""
    listener.sock.close()
    if listener.unix_path:
        try:
            os.unlink(listener.unix_path)
        except OSError:
            pass


def _wait_status(fd: int, timeout: float) -> int:
    """The daemonizing parent: the child's start status byte, or 70 if none came."""
    import select
    ready, _, _ = select.select([fd], [], [], timeout)
    data = os.read(fd, 1) if ready else b""
    if not data:
        sys.stderr.write("pfm: the master process didn't send back its status "
                         "(via the pipe to the calling process)\n")
        return EX_SOFTWARE
    return data[0]
