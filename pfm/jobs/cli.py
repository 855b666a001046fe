"""`pfm jobs`: each queue's figures and its dead jobs; retry and purge.

    pfm jobs [--url URL] [--queue QUEUE] [--limit N] [--json]
    pfm jobs retry ID... | --all [--queue QUEUE]
    pfm jobs purge QUEUE

The queue: --url, else the one pfm's config names (`config_url`, passed by
pfm's own command line), else $PFM_JOBS_URL, else the embedded default.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional, Sequence

from ..cli import EX_USAGE, UsageParser
from .api import resolve_url
from .backend import Backend, open_backend
from .stats import describe_dead, table, with_queues

EX_UNAVAILABLE = 69
USAGE = """\
Usage: pfm jobs [--url URL] [--queue QUEUE] [--limit N] [--json]
       pfm jobs retry ID... | --all [--queue QUEUE]
       pfm jobs purge QUEUE
"""


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="pfm jobs", usage=USAGE[len("Usage: "):], add_help=True,
                description="Show the job queues, retry dead jobs, purge a queue.")
    p.add_argument("--url", help="the queue's URL (default: the config's jobs.url, "
                                 "else $PFM_JOBS_URL, else the embedded SQLite file)")
    p.add_argument("command", nargs="?", choices=("show", "retry", "purge"), default="show")
    p.add_argument("targets", nargs="*", metavar="ID|QUEUE")
    p.add_argument("--all", action="store_true", help="retry: every dead job")
    p.add_argument("--queue", help="only this queue")
    p.add_argument("--limit", type=int, default=20, help="dead jobs listed (default 20)")
    p.add_argument("--json", action="store_true", help="show: as JSON")
    return p


def main(argv: Optional[Sequence[str]] = None, config_url: Optional[str] = None,
         queues: Sequence[str] = ()) -> int:
    """`queues`: the queues the config consumes, shown even when empty."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    url = args.url or config_url or resolve_url()
    try:
        backend = open_backend(url)
    except ValueError as e:
        sys.stderr.write("pfm jobs: %s\n" % e)
        return EX_USAGE
    try:
        return _COMMANDS[args.command](backend, args, queues)
    except backend.transient_errors + (OSError,) as e:
        sys.stderr.write("pfm jobs: cannot reach the queue %s: %s\n" % (url, e))
        return EX_UNAVAILABLE
    finally:
        backend.close()


def _show(backend: Backend, args: argparse.Namespace, queues: Sequence[str]) -> int:
    stats = with_queues(backend.stats(), queues)
    if args.queue:
        stats = [s for s in with_queues(stats, [args.queue]) if s.queue == args.queue]
    dead = backend.dead(args.queue, args.limit)
    if args.json:
        print(json.dumps({"url": backend.url, "queues": [s.as_dict() for s in stats],
                          "dead": [vars(job) for job in dead]}, indent=2))
        return 0
    lines: List[str] = ["queue %s" % backend.url, ""] + table(stats)
    if dead:
        lines += ["", "dead jobs (most recent first):"]
        for job in dead:
            lines += describe_dead(job)
    print("\n".join(lines))
    return 0


def _retry(backend: Backend, args: argparse.Namespace, queues: Sequence[str]) -> int:
    if args.all == bool(args.targets):
        sys.stderr.write("pfm jobs: retry takes job ids or --all\n" + USAGE)
        return EX_USAGE
    if args.all:
        print("%d dead jobs are ready again" % backend.retry_dead(args.queue))
        return 0
    status = 0
    for job_id in args.targets:
        if backend.retry(job_id):
            print("job %s is ready again" % job_id)
            continue
        job = backend.get(job_id)
        why = "no such job" if job is None else "it is %s, not dead" % job.state
        sys.stderr.write("pfm jobs: cannot retry job %s: %s\n" % (job_id, why))
        status = 1
    return status


def _purge(backend: Backend, args: argparse.Namespace, queues: Sequence[str]) -> int:
    if len(args.targets) != 1:
        sys.stderr.write("pfm jobs: purge takes one queue name\n" + USAGE)
        return EX_USAGE
    queue = args.targets[0]
    print("queue %s: %d ready, delayed or dead jobs deleted"
          % (queue, backend.purge(queue)))
    return 0


_COMMANDS = {"show": _show, "retry": _retry, "purge": _purge}
