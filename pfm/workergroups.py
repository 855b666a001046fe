"""The processes an application starts, and the pool's listening socket.

A process that holds a pool's listening socket keeps its address taken: the
next start of pfm cannot bind it (exit 78) until that process is gone. So:

* Each worker leads a process group of its own. What the app forks stays in
  it (unless it calls setsid() or setpgid()), so the group can be signalled
  by the worker's pid even after the worker is gone.
* In a worker every inherited descriptor is close-on-exec: a program the app
  runs (subprocess, os.system, os.posix_spawn, os.exec*) never gets pfm's
  sockets, pipes or log files.
* A child forked by Python code without exec (os.fork, multiprocessing's
  fork) gets an unbound socket in place of the listening one (an at-fork
  hook), so it cannot accept the pool's connections or keep its address.
  Only a child forked from C without exec still holds it.
* When the pool stops, its manager signals the workers' groups (TERM, then
  KILL) and names every process outside pfm that still holds the socket:
  one the app detached into a session or group of its own.

A worker in a group of its own is not in the terminal's foreground group:
Ctrl-C reaches the master and the pool managers, which stop the workers.
Reading the terminal would stop a worker (SIGTTIN), so a worker's stdin is
/dev/null when it is a terminal.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
from typing import Iterable, List, Tuple

POLL = 0.02     # while waiting for a group to be gone


def lead(pid: int) -> None:
    """In the manager, right after fork: `pid` leads a group of its own.
    The child does the same; whichever runs first wins, so neither the
    manager nor a signal can see the child in the manager's group later."""
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass        # the child did it first and exec'd, or is gone already


def in_worker(listen_fd: int, log_fd: int = -1) -> None:
    """First thing in a new worker (see the module docstring)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    _close_on_exec_all()
    if os.isatty(0):
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    if any(fd >= 0 and os.isatty(fd) for fd in (1, 2, log_fd)):
        # Writing to the terminal from a background group stops the writer
        # when the terminal has `stty tostop`; a worker must never stop.
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    os.register_at_fork(after_in_child=lambda: _unbind(listen_fd))


def _close_on_exec_all() -> None:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:     # no /proc (a chroot), or no descriptor left to read it
        fds = range(3, min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536))
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass    # not open (the directory's own descriptor, closed by now)


def _unbind(fd: int) -> None:
    """In a child the app forked: the listening descriptor becomes an
    unbound socket (the number stays taken, so nothing else lands on it)."""
    try:
        dummy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.dup2(dummy.fileno(), fd, inheritable=False)
        finally:
            dummy.close()
    except OSError:
        pass


class Groups:
    """The process groups of a pool's workers: of each live worker, and of
    each gone one while something the app forked is still in it.

    A gone worker's pid cannot be given to a new process while its group
    has members (the kernel keeps a number in use as a group id), so a
    group whose leader is gone and that still has members is ours. Once a
    process with that pid exists again, the number was reused after the
    group emptied: that group is not ours, and is forgotten."""

    def __init__(self, system):
        self.system = system        # system.System: signals and waits go through it
        self.pgids: set[int] = set()

    def add(self, pid: int) -> None:
        self.pgids.add(pid)

    def exited(self, pid: int) -> None:
        """The worker was reaped: keep its group only if it has members left."""
        if not group_alive(pid):
            self.pgids.discard(pid)

    def prune(self, live_workers: Iterable[int]) -> None:
        """Forget the groups of gone workers that have emptied or whose
        number a new process has."""
        live = set(live_workers)
        for pgid in [g for g in self.pgids if g not in live]:
            if not _orphaned_group(pgid):
                self.pgids.discard(pgid)

    def signal(self, pgid: int, sig: int) -> None:
        self.system.killpg(pgid, sig)

    def end(self, grace: float) -> None:
        """The pool stops and its workers are reaped: TERM what is left in
        their groups, KILL what is still there after `grace`, and wait up to
        `grace` more for it to be gone."""
        left = [g for g in self.pgids if _orphaned_group(g)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not left:
                break
            for pgid in left:
                self.signal(pgid, sig)
            left = self._wait_gone(left, grace)
        self.pgids.clear()

    def _wait_gone(self, pgids: List[int], timeout: float) -> List[int]:
        """The groups of `pgids` with a live member after up to `timeout`."""
        deadline = self.system.monotonic() + timeout
        while True:
            left = [g for g in pgids if _has_live_member(g)]
            if not left or self.system.monotonic() >= deadline:
                return left
            self.system.sleep(POLL)


def group_alive(pgid: int) -> bool:
    """Has the group a member (a zombie counts until its parent reaps it)?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True     # EPERM: there is a member, not ours to signal
    return True


def _orphaned_group(pgid: int) -> bool:
    """A group with members whose leader (a reaped worker) is gone."""
    try:
        os.kill(pgid, 0)
        return False        # that pid is some new process: not our group any more
    except ProcessLookupError:
        pass
    except OSError:
        return False
    return group_alive(pgid)


def _has_live_member(pgid: int) -> bool:
    """A member that is not a zombie (a zombie holds no descriptor, and one
    whose parent never reaps it must not hold up the stop)."""
    if not group_alive(pgid):
        return False
    pids = _pids()
    if pids is None:
        return True     # no /proc to tell (a chroot): wait it out
    for pid in pids:
        stat = _stat(pid)
        if stat is not None and stat[2] == pgid and stat[0] not in ("Z", "X"):
            return True
    return False


def _pids():
    """Every pid in /proc; None where there is no /proc (a chroot)."""
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None


def _stat(pid: int):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[1]), int(rest[2])


def socket_holders(sock: socket.socket, master_pid: int) -> List[Tuple[int, str]]:
    """(pid, title) of every process but pfm's own that holds `sock`, from
    /proc/*/fd. pfm's own: the master and, below it, the pool managers and
    their workers (another generation's after a reload, another pool's on
    the same address). Processes whose fds cannot be read (another user's;
    all of them in a chroot without /proc) are not seen."""
    try:
        target = "socket:[%d]" % os.fstat(sock.fileno()).st_ino
    except OSError:
        return []
    me = os.getpid()
    out = []
    for pid in _pids() or ():
        if pid == me:
            continue
        if _holds(pid, target) and not _pfm_process(pid, master_pid):
            out.append((pid, _title(pid)))
    return sorted(out)


def _holds(pid: int, target: str) -> bool:
    base = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(base)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink("%s/%s" % (base, fd)) == target:
                return True
        except OSError:
            continue
    return False


def _pfm_process(pid: int, master_pid: int) -> bool:
    """The master, a child of it (a pool manager), a grandchild leading its
    own group (a worker), or in the group of a live worker. What a gone
    worker forked is under init or a subreaper by now."""
    if pid == master_pid:
        return True
    stat = _stat(pid)
    if stat is None:
        return True     # gone meanwhile
    if stat[1] == master_pid or _worker(pid, stat, master_pid):
        return True
    # Forked by a live worker of another pool or generation, in its group:
    # that pool's business, ended when it stops.
    leader = _stat(stat[2]) if stat[2] != pid else None
    return leader is not None and _worker(stat[2], leader, master_pid)


def _worker(pid: int, stat, master_pid: int) -> bool:
    """A grandchild of the master that leads its own group."""
    if stat[2] != pid:
        return False
    parent = _stat(stat[1])
    return parent is not None and parent[1] == master_pid


def _title(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:80]
    except OSError:
        return "?"
