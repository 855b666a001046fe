"""The trivial job of benchmarks/jobs.py and a consumer process for each peer.

    python -c 'import sys, jobpeers; jobpeers.main(sys.argv[1:])' PEER TARGET PROCESSES

PEER is pfm, rq, rq-simple or huey; TARGET a pfm queue URL, a redis:// URL
(rq, huey) or sqlite:PATH (huey). pfm and rq run one consumer per process
(the script starts PROCESSES of them); huey runs its own consumer with
PROCESSES worker processes, as `huey_consumer -w N -k process` does.
"""

from __future__ import annotations

QUEUE = "bench"


def noop() -> None:
    """The job: nothing, so that what is measured is the queue."""


def huey_app(target: str):
    """A Huey on `target` with `noop` registered as the task "noop"."""
    from huey import RedisHuey, SqliteHuey
    if target.startswith("sqlite:"):
        huey = SqliteHuey(QUEUE, filename=target[len("sqlite:"):])
    else:
        huey = RedisHuey(QUEUE, url=target)
    return huey, huey.task(name="noop")(noop)


def consume(peer: str, target: str, processes: int) -> None:
    if peer == "pfm":
        from pfm import jobs
        jobs.Consumer(jobs.open_backend(target), [QUEUE]).run()
    elif peer in ("rq", "rq-simple"):
        from redis import Redis
        from rq import SimpleWorker, Worker
        worker = (SimpleWorker if peer == "rq-simple" else Worker)
        worker([QUEUE], connection=Redis.from_url(target)).work(logging_level="WARNING")
    elif peer == "huey":
        huey, _ = huey_app(target)
        huey.create_consumer(workers=processes, worker_type="process", periodic=False).run()
    else:
        raise SystemExit("unknown peer %r" % peer)


def main(argv: list) -> None:
    consume(argv[0], argv[1], int(argv[2]))
