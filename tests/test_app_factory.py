"""`app = package.module:create_app(...)`: gunicorn's application factory.
The config check parses it without running anything; a worker (or the pool
manager, with preload) calls it and serves what it returns."""

from __future__ import annotations

import sys

import harness
import pytest

from pfm import app as app_loader
from pfm import config as cfg


@pytest.mark.parametrize("spec, parsed", [
    ("create_app()", ("create_app", (), {})),
    ("create_app('prod', debug=False)", ("create_app", ("prod",), {"debug": False})),
    ("factories.web(1, [2], {'a': None})", ("factories.web", (1, [2], {"a": None}), {})),
    ("application", None),
    ("web.app", None),
])
def test_parse_factory(spec, parsed):
    assert app_loader.parse_factory(spec) == parsed


@pytest.mark.parametrize("spec, message", [
    ("create_app(os.environ)", "arguments must be literals"),
    ("create_app(**opts)", "**kwargs are not allowed"),
    ("create_app()()", "only a name can be called"),
    ("create_app(1))", "is not a call"),
    ("(create_app)", "is not a call"),
])
def test_parse_factory_refuses_code(spec, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("(", r"\(")):
        app_loader.parse_factory(spec)


def _pool_file(tmp_path, app_line):
    (tmp_path / "facmod.py").write_text(
        "def create_app(name='default', **kw):\n"
        "    def app(environ, start_response):\n"
        "        start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "        return [('%s %r' % (name, sorted(kw))).encode()]\n"
        "    return app\n"
        "def not_a_factory():\n"
        "    return 42\n")
    conf = tmp_path / "pfm.conf"
    conf.write_text("[www]\nlisten = 127.0.0.1:9999\npm = static\npm.max_children = 1\n"
                    "pythonpath = %s\napp = %s\n" % (tmp_path, app_line))
    return conf


def test_config_accepts_a_factory_and_refuses_code_with_file_and_line(tmp_path):
    pool = cfg.load(str(_pool_file(tmp_path, "facmod:create_app('prod', x=1)"))).pools[0]
    assert (pool.app_module, pool.app_callable) == ("facmod", "create_app('prod', x=1)")
    conf = _pool_file(tmp_path, "facmod:create_app(__import__('os'))")
    with pytest.raises(cfg.ConfigError) as e:
        cfg.load(str(conf))
    assert e.value.line == 6 and e.value.directive == "app"
    assert "a factory's arguments must be literals" in str(e.value)


def test_load_calls_the_factory_and_checks_what_it_returns(tmp_path, monkeypatch):
    _pool_file(tmp_path, "x")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("facmod", None)
    wsgi = app_loader.load("facmod", "create_app('prod', debug=True)")
    assert b"".join(wsgi({}, lambda *a: None)) == b"prod ['debug']"
    with pytest.raises(TypeError, match="returned int, not a WSGI callable"):
        app_loader.load("facmod", "not_a_factory()")


@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
def test_a_pool_serves_what_the_factory_returns(pfm_factory, tmp_path, preload):
    _pool_file(tmp_path, "x")
    p = pfm_factory(pool={"app": "facmod:create_app('staging')", "pythonpath": str(tmp_path),
                          "preload": preload})
    assert harness.fcgi_get(p.address(), "/").body == b"staging []"
