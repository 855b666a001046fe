"""Processes for the job-queue tests.

    python jobprocs.py consume URL QUEUE[,QUEUE] LEASE RETRY_BASE
        a consumer, as a pfm worker would run it: SIGQUIT finishes the
        current job and exits 0; SIGTERM keeps its default (die at once)
    python jobprocs.py produce URL QUEUE RECORD FIRST COUNT PAUSE
        enqueue jobfuncs:record for tokens FIRST..FIRST+COUNT-1
"""

from __future__ import annotations

import signal
import sys

from pfm import jobs


def consume(url: str, queues: str, lease: str, retry_base: str) -> int:
    consumer = jobs.Consumer(jobs.open_backend(url), queues.split(","), lease=float(lease),
                             retry_base=float(retry_base), max_wait=2.0)
    signal.signal(signal.SIGQUIT, lambda *_: consumer.stop())
    print("consuming", flush=True)
    consumer.run()
    print("stopped", flush=True)
    return 0


def produce(url: str, queue: str, record: str, first: str, count: str, pause: str) -> int:
    for token in range(int(first), int(first) + int(count)):
        jobs.enqueue("jobfuncs:record", record, token, pause=float(pause), queue=queue, url=url)
    return 0


if __name__ == "__main__":
    sys.exit({"consume": consume, "produce": produce}[sys.argv[1]](*sys.argv[2:]))
