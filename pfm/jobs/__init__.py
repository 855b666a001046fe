"""pfm's job queue: enqueue a function call, run it in a worker, at least once.

    from pfm import jobs
    job_id = jobs.enqueue("myapp.mail:send_welcome", user_id, queue="mail")
    jobs.status(job_id).state      # ready, delayed, running, done or dead

The queue is named by a URL (`sqlite:///PATH` or `redis://HOST:PORT/DB`):
`url=`, else $PFM_JOBS_URL, else what pfm set with set_default_url(), else
the embedded SQLite file (see api.py). Consumers run `Consumer(backend,
queues).run()`; `pfm jobs` (cli.py) shows and repairs queues.

Modules: job (the stored call and its checks), backend (the interface and
URLs), sqlitebackend and redisbackend (+ redislua, its atomic steps),
consumer (the loop, leases, retries), stats (figures and their text), api
(what applications call), cli (`pfm jobs`).
"""

from .api import ENV_URL, backend_for, enqueue, resolve_url, set_default_url, status
from .backend import Backend, default_url, open_backend
from .consumer import Consumer, retry_delay
from .job import DEAD, DELAYED, DONE, READY, RUNNING, Claim, Idle, JobInfo
from .stats import QueueStats

__all__ = [
    "ENV_URL", "backend_for", "enqueue", "resolve_url", "set_default_url", "status",
    "Backend", "default_url", "open_backend", "Consumer", "retry_delay",
    "READY", "DELAYED", "RUNNING", "DONE", "DEAD", "Claim", "Idle", "JobInfo", "QueueStats",
]
