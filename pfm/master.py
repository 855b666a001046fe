"""The master process: owns the config, the listening sockets, the log and
the signals; forks one pool manager per pool and supervises them.

It never parses FastCGI and never imports an application, so no request and
no application bug can reach it.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time

from . import handoff, logfiles, procutil, reexec, signals, sockets
from .log import Log
from .logfiles import PoolFiles
from .pool import scoreboard_slots
from .poolmanager import Inherited, manager_main
from .processmax import ProcessTable
from .scoreboard import Scoreboard, counts
from .signals import SignalPipe
from .stopladder import StopLadder
from .systemd import Notifier

EX_SOFTWARE, EX_CONFIG = 70, 78
_HANDLED = (signal.SIGCHLD, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT,
            signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
READY_WAIT = 30.0        # the old generation retires at the latest this long after a reload
MANAGER_GRACE = 3.0      # after managers were told to stop fast, SIGKILL them this much later
MAX_BACKOFF = 30.0


class InitError(Exception):
    """Start-up failed; the message is logged and the exit status is EX_CONFIG."""


class Manager:
    __slots__ = ("pid", "pool", "started", "generation", "control", "board", "cell")

    def __init__(self, pid: int, pool, started: float, generation: int, control, board,
                 cell: int):
        self.pid = pid
        self.pool = pool
        self.started = started
        self.generation = generation
        self.control = control      # our end of the socket to this manager
        self.board = board          # its pool's scoreboard (the master only reads it)
        self.cell = cell            # its cell in the process.max table


class Master:
    def __init__(self, config, foreground: bool | None = None, force_stderr: bool = False,
                 pidfile: str | None = None):
        self.config = config
        g = config.global_
        self.daemonize = g.daemonize if foreground is None else not foreground
        self.pidfile = pidfile or g.pid
        self.log = Log(None if force_stderr else g.error_log, g.log_level, g.log_limit,
                       g.syslog_ident, g.syslog_facility)
        self.listeners: dict[str, sockets.Listener] = {}   # pool name -> its socket
        self.status_listeners: dict[str, sockets.Listener] = {}  # pool name -> pm.status_listen
        self.boards: dict[str, Scoreboard] = {}    # pool name -> its current scoreboard
        self.adoptions: dict = {}      # pool name -> adoption socket pair, kept across reloads
        self.retiring: list[int] = []      # old managers waiting for the new generation
        self.retire_deadline = 0.0
        self.generation = 0    # bumped by each reload; older managers are retiring
        self.managers: dict[int, Manager] = {}
        self.restart_at: dict[str, float] = {}     # pool name -> when to restart its manager
        self.failures: dict[str, int] = {}
        self.state = "running"
        self.ladder = StopLadder(self.signal_managers, MANAGER_GRACE)
        self.status_fd: int | None = None
        self.notifier = Notifier()
        self.inherited = reexec.Inherited()     # from a previous image of this master
        self.code = reexec.fingerprint()        # pfm's code as this image loaded it
        self.next_notify: float | None = None
        self.last_requests = 0

    # ---- start -------------------------------------------------------------

    def run(self) -> int:
        if not self.log.to_stderr:
            self.log.also_stderr = True
        for warning in self.config.warnings:
            self.log.warning(warning)
        try:
            self.open_sockets()
        except InitError as e:
            self.log.error(str(e))
            self.log.error("pfm initialization failed")
            return EX_CONFIG
        if self.daemonize and not self.inherited.daemonized:
            self.detach()
        try:
            self.write_pidfile()
        except OSError as e:
            self.log.error("unable to write pid file '%s': %s" % (self.pidfile, e.strerror))
            self.log.error("pfm initialization failed")
            self.report_status(EX_CONFIG)
            return EX_CONFIG
        procutil.set_title("pfm: master process (%s)" % (self.config.path or "built-in demo"))
        self.sigpipe = SignalPipe(_HANDLED)
        # Old pool managers of a previous image watch this pipe: keep it.
        self.lifeline_r, self.lifeline_w = self.inherited.lifeline or os.pipe2(os.O_CLOEXEC)
        if self.inherited.retiring:
            self.retiring = self.inherited.retiring
            self.retire_deadline = time.monotonic() + READY_WAIT
        # process.max: a cell per live manager; reloads briefly double the managers.
        self.processes = ProcessTable(4 * len(self.config.pools) + 16)
        # Managers write one byte here per worker that died of SIGSEGV/SIGBUS.
        self.report_r, self.report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.crashes: list[float] = []
        for pool in self.config.pools:
            self.spawn_manager(pool)
        self.log.notice("pfm is running, pid %d" % os.getpid())
        self.log.notice("ready to handle connections")
        self.log.also_stderr = False
        self.report_status(0)
        self.notify_ready()
        try:
            return self.loop()
        finally:
            self.cleanup()

    def open_sockets(self) -> None:
        inherited = {address: sockets.Listener(sock, address, address,
                                               address if sock.family == socket.AF_UNIX
                                               else None)
                     for address, sock in self.inherited.sockets.items()}
        self.listeners = self.bind_pools(self.config.pools, inherited)
        self.status_listeners = self.bind_status(self.config.pools, inherited)
        used = {id(x) for x in [*self.listeners.values(), *self.status_listeners.values()]}
        for address, listener in inherited.items():
            if id(listener) in used:
                self.log.notice('using inherited socket fd=%d, "%s"'
                                % (listener.sock.fileno(), address))
            else:
                _close_listener(listener)
        self.files = self.open_files(self.config.pools)

    def bind_status(self, pools, current: dict) -> dict:
        """pm.status_listen sockets, served by the pool managers themselves."""
        from .config import parse_listen
        by_address = {listener.address: listener for listener in current.values()}
        result = {}
        for pool in pools:
            if not pool.pm_status_listen:
                continue
            listener = by_address.get(pool.pm_status_listen)
            if listener is None:
                try:
                    listener = sockets.bind(parse_listen(pool.pm_status_listen),
                                            pool.listen_backlog, pool.listen_mode,
                                            pool.listen_owner, pool.listen_group)
                except (sockets.SocketError, ValueError) as e:
                    raise InitError("[pool %s] pm.status_listen: %s" % (pool.name, e)) from None
            result[pool.name] = listener
        return result

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

    @staticmethod
    def bind_pools(pools, current: dict) -> dict:
        """A socket for every pool: the one already open for the same address
        (a reload keeps it, so no connection is refused), or a new one."""
        from .config import parse_listen
        by_address = {listener.address: listener for listener in current.values()}
        opened, result = [], {}
        for pool in pools:
            listener = by_address.get(pool.listen)
            if listener is None:
                try:
                    listener = sockets.bind(parse_listen(pool.listen), pool.listen_backlog,
                                            pool.listen_mode, pool.listen_owner,
                                            pool.listen_group, pool.listen_acl_users,
                                            pool.listen_acl_groups)
                except (sockets.SocketError, ValueError) as e:
                    for sock in opened:
                        _close_listener(sock)
                    raise InitError("[pool %s] %s" % (pool.name, e)) from None
                opened.append(listener)
                by_address[pool.listen] = listener
            result[pool.name] = listener
        return result

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

    def loop(self) -> int:
        selector = selectors.DefaultSelector()
        selector.register(self.sigpipe, selectors.EVENT_READ)
        selector.register(self.report_r, selectors.EVENT_READ)
        while True:
            selector.select(self._timeout())
            for sig in self.sigpipe.read():
                self.on_signal(sig)
            self.read_reports()
            self.reap()
            if self.next_notify is not None and time.monotonic() >= self.next_notify:
                self.notify_status()
            if self.state == "running":
                self.restart_managers()
                self.retire_old_generation()
            else:
                self.escalate()
                if not self.managers:
                    self.log.notice("exiting, bye-bye!")
                    return 0

    def _timeout(self) -> float:
        now = time.monotonic()
        timeout = 1.0
        if self.next_notify is not None:
            timeout = min(timeout, max(0.0, self.next_notify - now))
        if self.ladder.deadline is not None:
            timeout = min(timeout, max(0.0, self.ladder.deadline - now))
        if self.retiring:
            timeout = min(timeout, 0.05)
        for when in self.restart_at.values():
            timeout = min(timeout, max(0.0, when - now))
        return timeout

    def on_signal(self, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stop("terminating")
        elif sig == signal.SIGQUIT:
            self.stop("finishing")
        elif sig == signal.SIGUSR1:
            self.reopen_logs()
        elif sig == signal.SIGUSR2:
            self.reload()

    def reload(self) -> None:
        """Graceful reload: validate the new config first (a bad one is logged
        and the running pools keep serving), start a new generation of pool
        managers on the same listening sockets, then let the old generation
        finish its requests and retire. The master's pid does not change."""
        self.log.notice("Reloading in progress ...")
        self.notifier.send("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=Reloading"
                           % (time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000))
        from .config import ConfigError, load
        new = self.config
        if self.config.path is not None:
            try:
                new = load(self.config.path, prefix=self.config.prefix)
            except ConfigError as e:
                self.log.error(str(e))
                self.log.error("reload failed: the configuration has an error; "
                               "the running pools keep serving with the old one")
                self.notifier.send("READY=1\nSTATUS=Reload failed: %s" % e)
                return
        try:
            listeners = self.bind_pools(new.pools, self.listeners)
            status_listeners = self.bind_status(new.pools, self.status_listeners)
        except InitError as e:
            self.log.error(str(e))
            self.log.error("reload failed: the running pools keep serving")
            self.notifier.send("READY=1\nSTATUS=Reload failed: %s" % e)
            return
        if reexec.fingerprint() != self.code:
            self.reexec()
            return
        try:
            files = self.open_files(new.pools)
        except InitError as e:
            self.log.error(str(e))
            self.log.error("reload failed: the running pools keep serving")
            self.notifier.send("READY=1\nSTATUS=Reload failed: %s" % e)
            return
        for warning in new.warnings:
            self.log.warning(warning)
        # Managers of an earlier reload still waiting for their successors: go now.
        for pid in self.retiring:
            _kill(pid, signal.SIGQUIT)
        self.retiring = [pid for pid, m in self.managers.items()
                         if m.generation == self.generation]
        self.retire_deadline = time.monotonic() + READY_WAIT
        kept = {id(x) for x in [*listeners.values(), *status_listeners.values()]}
        for listener in [*self.listeners.values(), *self.status_listeners.values()]:
            if id(listener) not in kept:
                _close_listener(listener)
        for old_files in self.files.values():
            old_files.close()
        self.config, self.listeners, self.files = new, listeners, files
        self.status_listeners = status_listeners
        self.generation += 1
        self.restart_at.clear()
        for pool in new.pools:
            self.spawn_manager(pool)
        self.log.notice("configuration %s reloaded: %d pool(s) starting; %d old pool "
                        "manager(s) serve until they are ready" % (
                            new.path or "(built-in)", len(new.pools), len(self.retiring)))

    def reexec(self) -> None:
        """pfm itself was upgraded: exec the new code in this process (same pid),
        handing over the sockets; the running pools serve until the new
        image's pools accept (reexec.py)."""
        self.log.notice("pfm's code changed since start; reloading: " + reexec.describe())
        extra = {"NOTIFY_SOCKET": self.notifier.env_value} if self.notifier.enabled else {}
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        reexec.exec_master([*self.listeners.values(), *self.status_listeners.values()],
                           (self.lifeline_r, self.lifeline_w), list(self.managers),
                           self.daemonize, extra)

    def retire_old_generation(self) -> None:
        """After a reload: once every new pool accepts (a worker is idle; an
        ondemand pool at once), the old managers finish their requests and go."""
        if not self.retiring:
            return
        if not self.new_generation_ready() and time.monotonic() < self.retire_deadline:
            return
        for pid in self.retiring:
            _kill(pid, signal.SIGQUIT)
        self.log.notice("new pool generation is accepting; %d old pool manager(s) finishing "
                        "their requests" % len(self.retiring))
        self.retiring = []
        self.notifier.send("READY=1\nSTATUS=Ready to handle connections")

    def new_generation_ready(self) -> bool:
        for pool in self.config.pools:
            if pool.pm == "ondemand":
                continue
            board = self.boards.get(pool.name)
            if board is None or not any(s.idle and s.pid for s in board.read()):
                return False
        return True

    def read_reports(self) -> None:
        """emergency_restart_threshold: that many workers dying of SIGSEGV or
        SIGBUS within emergency_restart_interval reload everything (php-fpm)."""
        try:
            data = os.read(self.report_r, 4096)
        except BlockingIOError:
            return
        g = self.config.global_
        if not (g.emergency_restart_threshold and g.emergency_restart_interval):
            return
        now = time.monotonic()
        self.crashes.extend(now for byte in data if byte == ord("S"))
        self.crashes = [t for t in self.crashes if now - t <= g.emergency_restart_interval]
        if self.state == "running" and len(self.crashes) >= g.emergency_restart_threshold:
            self.log.warning("failed processes threshold (%d in %d sec) is reached, "
                             "initiating reload" % (g.emergency_restart_threshold,
                                                    g.emergency_restart_interval))
            self.crashes.clear()
            self.reload()

    # ---- systemd -------------------------------------------------------------

    def notify_ready(self) -> None:
        """READY=1 once every pool's socket is open and its manager forked
        (connections queue in the kernel until the workers accept them)."""
        if not self.notifier.enabled:
            return
        if not self.notifier.send("READY=1\nSTATUS=Ready to handle connections\nMAINPID=%d"
                                  % os.getpid()):
            self.log.warning("failed to notify start to systemd")
        interval = self.config.global_.systemd_interval
        if self.notifier.watchdog_interval > 0:
            if interval and interval != 10:
                self.log.warning("systemd_interval option ignored")
            interval = self.notifier.watchdog_interval
            self.log.notice("systemd watchdog configured to %.3gsec" % (interval * 2))
        if interval and interval > 0:
            self.notify_interval = interval
            self.next_notify = time.monotonic() + interval
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
        self.next_notify = time.monotonic() + self.notify_interval

    def totals(self) -> tuple[int, int, int, int]:
        """(active, idle, requests, slow) over every pool's scoreboard."""
        active = idle = requests = slow = 0
        for board in self.boards.values():
            counters, slots = board.snapshot()
            i, a, _t = counts(slots)
            active, idle = active + a, idle + i
            requests += counters.accepted_conn
            slow += counters.slow_requests
        return active, idle, requests, slow

    def reopen_logs(self) -> None:
        """USR1 (logrotate): reopen every file here, where the rights are, and
        hand the new descriptors to the pool managers."""
        if self.log.reopen():
            self.log.notice("error log file re-opened")
        else:
            self.log.error("unable to re-opened error log file")
        any_access = False
        for files in self.files.values():
            try:
                logfiles.install(files.reopen(), [fd for fd in (files.access_fd,
                                                                files.slowlog_fd) if fd >= 0])
            except OSError as e:
                self.log.error("unable to re-opened access log file: %s" % e)
            any_access = any_access or files.access_fd >= 0
        if any_access:
            self.log.notice("access log file re-opened")
        error_fd = self.log.fd if self.log.path else -1
        for manager in self.managers.values():
            files = self.files.get(manager.pool.name)
            if files is None or manager.generation != self.generation:
                continue
            try:
                logfiles.send_fds(manager.control, b"reopen", files.targets(error_fd))
            except OSError:
                pass

    # ---- managers ------------------------------------------------------------

    def spawn_manager(self, pool) -> None:
        listener = self.listeners[pool.name]
        master = os.getpid()
        # A fresh scoreboard for every manager: a restarted one starts clean,
        # with room for a replacement of every recycled worker (pool.py).
        board = Scoreboard.create(scoreboard_slots(pool))
        used = {m.cell for m in self.managers.values()}
        cell = next(i for i in range(self.processes.cells) if i not in used)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        adoption = self.adoptions.get(pool.name)
        if adoption is None:
            adoption = self.adoptions[pool.name] = handoff.adoption_pair()
        pid = signals.fork()
        if pid == 0:
            ours.close()
            self.sigpipe.close()
            os.close(self.lifeline_w)
            os.close(self.report_r)
            mine = {listener.sock.fileno()}
            if pool.name in self.status_listeners:
                mine.add(self.status_listeners[pool.name].sock.fileno())
            for other in [*self.listeners.values(), *self.status_listeners.values()]:
                if other.sock.fileno() not in mine:
                    other.sock.close()
            for name, files in self.files.items():
                if name != pool.name:
                    files.close()
            for manager in self.managers.values():
                manager.control.close()
            for name, other in self.adoptions.items():
                if name != pool.name:
                    for end in other:
                        end.close()
            for name, other_board in self.boards.items():
                if name != pool.name or other_board is not board:
                    other_board.close()    # another pool's scoreboard is none of its business
            manager_main(Inherited(pool, listener, self.files[pool.name], self.log, board,
                                   self.lifeline_r, self.report_w, theirs, master,
                                   self.config.global_.process_control_timeout,
                                   self.status_listeners.get(pool.name),
                                   self.processes, cell, self.config.global_.process_max,
                                   adoption))
        theirs.close()
        self.managers[pid] = Manager(pid, pool, time.monotonic(), self.generation, ours, board,
                                     cell)
        self.boards[pool.name] = board
        self.restart_at.pop(pool.name, None)

    def reap(self) -> None:
        for pid, status in procutil.reaped():
            manager = self.managers.pop(pid, None)
            if manager is None:
                continue
            manager.control.close()
            self.processes.set(manager.cell, 0)     # its workers are gone with it
            if self.boards.get(manager.pool.name) is not manager.board:
                manager.board.close()
            how, bad = procutil.describe_exit(status)
            if self.state != "running" or manager.generation != self.generation:
                self.log.debug("[pool %s] manager %d exited %s" % (manager.pool.name, pid, how))
                continue
            name = manager.pool.name
            lived = time.monotonic() - manager.started
            failures = self.failures.get(name, 0) + 1 if lived < 10 else 1
            self.failures[name] = failures
            pause = 0.0 if failures <= 1 else min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 8))
            self.log.warning("[pool %s] manager %d exited %s after %.6f seconds from start, "
                             "restarting it%s" % (name, pid, how, lived,
                                                  " in %.1f s" % pause if pause else ""))
            self.restart_at[name] = time.monotonic() + pause

    def restart_managers(self) -> None:
        now = time.monotonic()
        for pool in self.config.pools:
            when = self.restart_at.get(pool.name)
            if when is not None and now >= when:
                self.spawn_manager(pool)

    def stop(self, how: str) -> None:
        """finishing (QUIT): managers let requests finish. terminating (TERM,
        INT): managers kill their workers now. Terminating overrides finishing."""
        if self.state == how or self.state == "terminating":
            return
        self.log.notice("Finishing ..." if how == "finishing" else "Terminating ...")
        self.notifier.send("STOPPING=1")
        self.state = how
        self.restart_at.clear()
        # The managers escalate over their workers themselves (process_control_
        # timeout); the master only steps in a little later, for stuck managers.
        timeout = self.config.global_.process_control_timeout
        self.ladder.start(how == "finishing", timeout + MANAGER_GRACE if timeout > 0 else None)

    def escalate(self) -> None:
        self.ladder.escalate(bool(self.managers))

    def signal_managers(self, sig: int) -> None:
        for pid in list(self.managers):
            _kill(pid, sig)

    def cleanup(self) -> None:
        for listener in [*self.listeners.values(), *self.status_listeners.values()]:
            _close_listener(listener)
        if self.pidfile:
            try:
                os.unlink(self.pidfile)
            except OSError:
                pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


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
