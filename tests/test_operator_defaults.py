"""Defaults an operator relies on: pfm never serves the demo unasked, quick
mode's errors name the flag, `--listen unix:/path` works, quick mode shows
the application's output as it is, and SIGHUP reloads like SIGUSR2."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import harness
import pytest
from harness import TIME_PREFIX, fcgi_get, wait_for

from pfm.cli import DEFAULT_CONFIG

EX_CONFIG = 78


def run_pfm(*args, cwd=None, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pfm", *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=harness.test_env(), cwd=str(cwd) if cwd else None,
                          timeout=timeout)


def start_quick(run_dir, *args, cwd=None):
    out_path = run_dir / "quick.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pfm", "-R", *map(str, args)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(cwd or harness.APPS), env=harness.test_env(),
                                start_new_session=True)
    return proc, out_path


def stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    harness.kill_group(proc)


def test_without_any_config_pfm_refuses_to_serve_the_demo(run_dir):
    """No -y, no -p, no quick-mode flag and no /etc/pfm/pfm.conf: exit 78 with
    a message naming -y, --app and --demo; nothing is started."""
    assert not os.path.exists(DEFAULT_CONFIG), "this machine has %s" % DEFAULT_CONFIG
    for args in ([], ["-F"], ["-t"]):
        proc = run_pfm(*args, cwd=run_dir)
        assert proc.returncode == EX_CONFIG, (args, proc.stderr)
        assert re.search(r"^%sERROR: no configuration file: %s does not exist\. Give one with "
                         r"-y FILE, run an application with --app MODULE:CALLABLE, or serve "
                         r"the demo application with --demo$" % (TIME_PREFIX,
                                                                   re.escape(DEFAULT_CONFIG)),
                         proc.stderr, re.M), proc.stderr
        assert "ready to handle connections" not in proc.stderr


@pytest.mark.parametrize("how", [["--demo"], []], ids=["--demo", "quick-mode-without-app"])
def test_the_demo_is_served_when_asked_and_the_log_says_so(run_dir, how):
    port = harness.free_port()
    proc, out = start_quick(run_dir, *how, "--listen", "127.0.0.1:%d" % port)
    try:
        wait_for(lambda: "ready to handle connections" in harness.read_text(out), 10,
                 "pfm to start", on_fail=lambda: harness.read_text(out))
        why = "--demo" if how else "quick mode without --app"
        assert re.search(r"^%sNOTICE: serving the demo application pfm\.demo:app \(%s\)$"
                         % (TIME_PREFIX, re.escape(why)), harness.read_text(out), re.M)
        page = harness.wait_serving(("127.0.0.1", port))
        assert fcgi_get(("127.0.0.1", port), "/").body.startswith(b"<!DOCTYPE html>")
        assert page.status == 200
    finally:
        stop(proc)


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers 0: must be a positive value"),
    (["--workers", "-2"], "--workers -2: must be a positive value"),
    (["--app", "no_such_module_xyz:app"],
     "--app no_such_module_xyz:app: no module named 'no_such_module_xyz'"),
    (["--app", "a b"], "--app 'a b': must be of the form"),
    (["--listen", "127.0.0.1:x"], "--listen 127.0.0.1:x: invalid port value 'x'"),
    (["--demo", "--app", "testapps:app"], "--demo serves pfm.demo:app; it cannot be combined"),
])
def test_quick_mode_errors_name_the_flag(args, message):
    proc = run_pfm("-R", "-t", *args, cwd=harness.APPS)
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert re.search(r"^%sERROR: %s" % (TIME_PREFIX, re.escape(message)), proc.stderr,
                     re.M), proc.stderr
    for directive in ("pm.max_children", "[pool www]", "'app'", "listen ="):
        assert directive not in proc.stderr


def test_quick_mode_listens_on_unix_colon_path_and_shows_output_undecorated(run_dir):
    """--listen unix:/path (nginx's spelling) binds /path; what the app
    prints reaches stderr as it is (catch_workers_output = yes,
    decorate_workers_output = no)."""
    path = run_dir / "quick.sock"
    proc, out = start_quick(run_dir, "--app", "testapps:app", "--listen", "unix:%s" % path,
                            "--workers", "1")
    try:
        harness.wait_serving(str(path))
        assert fcgi_get(str(path), "/output", "token=plain-words").status == 200
        wait_for(lambda: re.search(r"^stdout says plain-words$", harness.read_text(out), re.M)
                 and re.search(r"^stderr says plain-words$", harness.read_text(out), re.M),
                 10, "the app's output, undecorated", on_fail=lambda: harness.read_text(out))
        assert "said into" not in harness.read_text(out)
    finally:
        stop(proc)
    assert not path.exists()


def test_sighup_reloads_like_sigusr2(pfm_factory):
    p = pfm_factory(pool={"pm.max_children": 2})
    before = set(p.worker_pids())
    mark = p.log_size()
    os.kill(p.pid, signal.SIGHUP)
    p.wait_log(r"NOTICE: Reloading in progress", start=mark)
    p.wait_log(r"NOTICE: new pool generation is accepting", start=mark)
    wait_for(lambda: not any(harness.alive(w) for w in before), 10, "the old workers to go",
             on_fail=p.diagnostics)
    after = set(p.wait_workers()["www"])
    assert not after & before
    assert p.running() and fcgi_get(p.address(), "/hello").status == 200


def test_parse_listen_takes_nginx_unix_spelling():
    from pfm.config import parse_listen

    address = parse_listen("unix:/run/pfm/www.sock")
    assert (address.kind, address.path, address.value) == ("unix", "/run/pfm/www.sock",
                                                           "/run/pfm/www.sock")
    with pytest.raises(ValueError, match="a socket path must follow"):
        parse_listen("unix:")
