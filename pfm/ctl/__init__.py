"""`pfm status`, `pfm top` and `pfm ping`: an operator's look at running pools.

Rule of this package: it never talks to nginx and never touches a pool's
processes. It reads the same configuration as the master (-y, -p) to find
each pool's socket, and asks the pool itself with one FastCGI request for
its status page or ping (`probe.py`), as nginx would. The pool answers
from its scoreboard; when every worker is busy its manager answers instead,
and `pm.status_listen` is answered by the manager alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

COMMANDS = ("status", "top", "ping")

# pfm's own options that take a value: the word after them is never a command.
_VALUE_OPTIONS = frozenset(("-y", "--fpm-config", "--config", "-g", "--pid", "-p", "--prefix",
                            "--app", "--listen", "--workers", "--user"))


def find_command(argv: List[str]) -> Optional[int]:
    """Index in `argv` of the first word that names a command (`pfm -y X status`), or None."""
    skip = False
    for i, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word in _VALUE_OPTIONS:
            skip = True
            continue
        if word.startswith("-"):
            continue
        return i if word in COMMANDS else None
    return None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        sys.stderr.write("pfm %s: %s\n" % (self.prog.split()[-1], message))
        self.print_usage(sys.stderr)
        sys.exit(64)


def build_parser(command: str) -> argparse.ArgumentParser:
    """The options of one command: pfm's -y and -p, then the command's own."""
    descriptions = {
        "status": "Print each pool's status page (php-fpm's fields), asked from the pool "
                  "itself, without nginx.",
        "top": "A live view of every pool and its workers, refreshed each second; "
               "q quits.",
        "ping": "Ask every pool for its ping (or status) page: exit 0 when all answer, "
                "1 with the reason when one does not.",
    }
    p = _Parser(prog="pfm " + command, description=descriptions[command])
    p.add_argument("-y", "--fpm-config", "--config", dest="config", metavar="FILE",
                   help="the configuration file of the running pfm (default: "
                        "PREFIX/etc/pfm.conf with -p, else /etc/pfm/pfm.conf)")
    p.add_argument("-p", "--prefix", metavar="DIR", help="prefix for relative paths")
    if command in ("status", "ping"):
        p.add_argument("pool", nargs="?", metavar="POOL", help="only this pool")
    if command == "status":
        p.add_argument("--json", action="store_true",
                       help="php-fpm's JSON, one line per pool")
        p.add_argument("--full", action="store_true", help="also one entry per worker")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long a pool has to answer (default 5)")
    return p


def main(command: str, argv: List[str]) -> int:
    """Run `pfm COMMAND ARGS...`; returns the exit status."""
    args = build_parser(command).parse_args(argv)
    from . import probe
    try:
        config = probe.load_config(args.config, args.prefix)
    except probe.ConfigProblem as e:
        sys.stderr.write("pfm %s: %s\n" % (command, e))
        return 78
    if command == "status":
        from .statuscmd import run
        return run(config, args.pool, json=args.json, full=args.full, timeout=args.timeout)
    if command == "ping":
        from .ping import run as run_ping
        return run_ping(config, args.pool, timeout=args.timeout)
    from .top import run as run_top
    return run_top(config, timeout=min(args.timeout, 1.0) if args.timeout else 1.0,
                   interactive=os.isatty(sys.stdout.fileno()))
