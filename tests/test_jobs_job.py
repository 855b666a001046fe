"""The parts of pfm.jobs that need no queue: naming functions, checking and
encoding arguments, the back-off, queue URLs, the figures' text."""

from __future__ import annotations

import datetime
import os

import jobtools  # noqa: F401  (puts tests/apps on sys.path)
import pytest

from pfm import jobs
from pfm.jobs import backend as backend_mod
from pfm.jobs import job as job_mod
from pfm.jobs.sqlitebackend import SQLiteBackend
from pfm.jobs.stats import QueueStats, describe_dead, table, with_queues


def module_level(x):
    return x


def test_func_name_of_a_module_level_function_and_of_a_name():
    assert job_mod.func_name(module_level) == "test_jobs_job:module_level"
    assert job_mod.func_name(os.path.join) == "posixpath:join"
    assert job_mod.func_name("myapp.mail:send") == "myapp.mail:send"


@pytest.mark.parametrize("func, words", [
    (lambda: None, "not a module-level function"),
    (QueueStats.as_dict, "not a module-level function"),
    ("no_colon", "not a 'module:function' name"),
    ("bad module:f", "not a 'module:function' name"),
    (42, "neither a function"),
])
def test_func_name_refuses_what_a_worker_cannot_import(func, words):
    with pytest.raises((TypeError, ValueError), match=words):
        job_mod.func_name(func)


def test_func_name_refuses_a_nested_function():
    def inner():
        pass
    with pytest.raises(TypeError, match="module-level"):
        job_mod.func_name(inner)


@pytest.mark.parametrize("args, kwargs, named", [
    ((datetime.date(2026, 1, 1),), {}, "positional argument 1 (date"),
    (("ok", {1, 2}), {}, "positional argument 2 (set"),
    ((), {"when": object()}, "keyword argument 'when' (object"),
    ((float("nan"),), {}, "positional argument 1 (float nan)"),
    (([1, b"bytes"],), {}, "positional argument 1 (list"),
])
def test_encode_call_refuses_non_json_arguments_naming_them(args, kwargs, named):
    with pytest.raises(TypeError) as e:
        job_mod.encode_call("m:f", args, kwargs)
    assert named in str(e.value) and "m:f" in str(e.value)


def test_encode_call_round_trip():
    call = job_mod.encode_call("m:f", (1, "é", [None, True], {"a": 1.5}), {"k": "v"})
    assert job_mod.decode_call(call) == ("m:f", [1, "é", [None, True], {"a": 1.5}], {"k": "v"})


def test_enqueue_checks_everything_before_touching_a_queue(tmp_path):
    url = "sqlite://%s/never.sqlite3" % tmp_path
    with pytest.raises(TypeError, match="keyword argument 'at'"):
        jobs.enqueue(module_level, at=datetime.datetime.now(), url=url)
    with pytest.raises(ValueError, match="max_attempts"):
        jobs.enqueue(module_level, 1, max_attempts=0, url=url)
    with pytest.raises(ValueError, match="delay"):
        jobs.enqueue(module_level, 1, delay=-1, url=url)
    with pytest.raises(ValueError, match="queue names"):
        jobs.enqueue(module_level, 1, queue="has space", url=url)
    assert not os.path.exists(tmp_path / "never.sqlite3")


def test_retry_delay_doubles_up_to_the_cap_plus_bounded_jitter():
    assert [jobs.retry_delay(n, 2.0, 60.0, rand=lambda: 0.0) for n in (1, 2, 3, 4, 6, 9)] == \
        [2.0, 4.0, 8.0, 16.0, 60.0, 60.0]
    assert jobs.retry_delay(3, 2.0, 60.0, jitter=0.25, rand=lambda: 1.0) == 10.0


def test_url_resolution_order(monkeypatch):
    monkeypatch.delenv(jobs.ENV_URL, raising=False)
    jobs.set_default_url(None)
    assert jobs.resolve_url() == jobs.default_url()
    jobs.set_default_url("redis://pfm-master/1")
    try:
        assert jobs.resolve_url() == "redis://pfm-master/1"
        monkeypatch.setenv(jobs.ENV_URL, "sqlite:///env.sqlite3")
        assert jobs.resolve_url() == "sqlite:///env.sqlite3"
        assert jobs.resolve_url("redis://explicit/2") == "redis://explicit/2"
    finally:
        jobs.set_default_url(None)


def test_default_sqlite_path_follows_systemd_then_root_then_xdg():
    assert backend_mod.default_sqlite_path({"STATE_DIRECTORY": "/var/lib/pfm:/other"}) == \
        "/var/lib/pfm/jobs.sqlite3"
    if os.geteuid() == 0:
        assert backend_mod.default_sqlite_path({}) == "/var/lib/pfm/jobs.sqlite3"
    else:
        assert backend_mod.default_sqlite_path({"XDG_STATE_HOME": "/x"}) == \
            "/x/pfm/jobs.sqlite3"


@pytest.mark.parametrize("url, path", [
    ("sqlite:///srv/q/jobs.db", "/srv/q/jobs.db"),
    ("sqlite:////srv/q/jobs.db", "/srv/q/jobs.db"),
    ("sqlite://rel/jobs.db", "/base/rel/jobs.db"),
    ("sqlite:///srv/q/jobs.db?keep_done=0&synchronous=full", "/srv/q/jobs.db"),
])
def test_sqlite_urls(url, path):
    backend = jobs.open_backend(url, base="/base")
    assert isinstance(backend, SQLiteBackend) and backend.path == path


def test_sqlite_url_options():
    backend = jobs.open_backend("sqlite:///q.db?keep_done=0&synchronous=full&timeout=2")
    assert (backend.keep_done, backend.synchronous, backend.timeout) == (0.0, "FULL", 2.0)


@pytest.mark.parametrize("url, words", [
    ("mysql://h/db", "unsupported queue URL"),
    ("sqlite:///q.db?nosuch=1", "unknown option 'nosuch'"),
    ("sqlite:///q.db?keep_done=soon", "keep_done=soon"),
    ("sqlite:///q.db?synchronous=maybe", "synchronous=MAYBE"),
])
def test_bad_urls_are_clear_errors(url, words):
    with pytest.raises(ValueError, match=words):
        jobs.open_backend(url)


def test_redis_urls_keep_redis_options_and_take_ours():
    backend = jobs.open_backend("redis+unix:///run/redis.sock?db=3&prefix=site1&keep_done=9")
    kwargs = backend.client.connection_pool.connection_kwargs
    assert (kwargs["path"], kwargs["db"]) == ("/run/redis.sock", 3)
    assert (backend.prefix, backend.keep_done) == ("site1", 9.0)
    backend = jobs.open_backend("redis://127.0.0.1:7/2?socket_timeout=5")
    kwargs = backend.client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == (7, 2, 5.0)


def test_stats_table_and_named_queues():
    stats = with_queues([QueueStats("mail", 3, 1, 2, 4)], ["default", "mail"])
    assert [s.queue for s in stats] == ["default", "mail"]
    assert table(stats) == [
        "queue      ready  running  delayed     dead",
        "default        0        0        0        0",
        "mail           3        1        2        4",
    ]


def test_a_dead_job_is_described_with_its_traceback():
    info = job_mod.JobInfo.build("7", "mail", "dead", job_mod.encode_call("m:f", (), {}), 5, 5,
                                 0.0, 0.0, "Traceback (most recent call last):\nValueError: x\n")
    lines = describe_dead(info)
    assert lines[0].startswith("job 7  queue mail  m:f  attempts 5/5  dead since ")
    assert lines[1:] == ["    Traceback (most recent call last):", "    ValueError: x"]
