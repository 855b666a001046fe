"""Re-executing the master in place, for an upgraded pfm, without closing a
listening socket or cutting a request short.

A reload normally happens inside the running master (new pool managers are
forked from it). When pfm's own code changed on disk since the master
started, forked managers would still run the old code, so the master
execs itself instead (same pid, same argv) and hands over, in the
environment:

* PFM_SOCKETS: the listening sockets, `ADDRESS=FD,...`, as php-fpm's FPM_SOCKETS;
* PFM_LIFELINE: the pipe whose end the old pool managers watch (they must not
  see it close, or they would stop at once);
* PFM_RETIRING: the old pool managers' pids; the new master lets them finish
  their requests once its own pools accept;
* PFM_DAEMONIZED: the master is already in the background (no second fork).
"""

from __future__ import annotations

import os
import socket
import sys

import pfm

ENV_SOCKETS, ENV_LIFELINE = "PFM_SOCKETS", "PFM_LIFELINE"
ENV_RETIRING, ENV_DAEMONIZED = "PFM_RETIRING", "PFM_DAEMONIZED"


def fingerprint() -> tuple:
    """What pfm's code on disk is now (file names, sizes, mtimes)."""
    here = os.path.dirname(os.path.abspath(pfm.__file__))
    out = []
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            st = os.stat(os.path.join(here, name))
            out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


class InheritedState:
    """What the previous master image handed over (all empty on a fresh start)."""

    def __init__(self, environ=os.environ):
        self.sockets: dict[str, socket.socket] = {}
        for item in filter(None, environ.pop(ENV_SOCKETS, "").split(",")):
            address, _, fd = item.rpartition("=")
            if fd.isdigit():
                sock = socket.socket(fileno=int(fd))
                sock.set_inheritable(False)
                self.sockets[address] = sock
        lifeline = environ.pop(ENV_LIFELINE, "")
        self.lifeline = tuple(int(x) for x in lifeline.split(",")) if lifeline else None
        if self.lifeline:
            for fd in self.lifeline:
                os.set_inheritable(fd, False)
        self.retiring = [int(x) for x in environ.pop(ENV_RETIRING, "").split(",") if x]
        self.daemonized = environ.pop(ENV_DAEMONIZED, "") == "1"


def exec_master(listeners, lifeline: tuple[int, int], retiring: list[int], daemonized: bool,
                extra_env: dict[str, str]) -> None:
    """Replace this process image with a fresh pfm master (never returns)."""
    env = dict(os.environ)
    env.update(extra_env)
    pairs = []
    for listener in listeners:
        os.set_inheritable(listener.sock.fileno(), True)
        pairs.append("%s=%d" % (listener.address, listener.sock.fileno()))
    for fd in lifeline:
        os.set_inheritable(fd, True)
    env[ENV_SOCKETS] = ",".join(pairs)
    env[ENV_LIFELINE] = "%d,%d" % lifeline
    env[ENV_RETIRING] = ",".join(str(pid) for pid in retiring)
    if daemonized:
        env[ENV_DAEMONIZED] = "1"
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
    os.execve(sys.executable, argv, env)


def describe(argv=None) -> str:
    """php-fpm's `execvp("...", {"...", ...})` line, up to 10 arguments."""
    argv = list(argv or getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
    shown = ", ".join('"%s"' % a for a in argv[:11])
    return 'execvp("%s", {%s})' % (sys.executable, shown)
