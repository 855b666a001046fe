"""The `pfm` command line: -t and its php-fpm style messages and exit
statuses, usage errors, -h, -v, -p, quick mode, and start-up failures."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import harness
import pytest
from harness import TIME_PREFIX, fcgi_get, wait_for

EX_USAGE, EX_CONFIG = 64, 78


def pfm_cmd(*args, cwd=None, timeout=30, root_ok=True) -> subprocess.CompletedProcess:
    """Run pfm; with -R unless `root_ok` is False (CI runs the suite as root)."""
    flags = ["-R"] if root_ok else []
    return subprocess.run([sys.executable, "-m", "pfm", *flags, *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=harness.test_env(), cwd=str(cwd) if cwd else None,
                          timeout=timeout)


def _kill_group(proc: subprocess.Popen) -> None:
    """Whatever a test's own pfm left behind (it leads its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)


def write_conf(run_dir, body: str, name="pfm.conf"):
    path = run_dir / name
    path.write_text(body)
    return path


def good_conf(run_dir, extra_pool: str = "", extra_global: str = "") -> str:
    return ("[global]\nerror_log = %s/pfm.log\n%s\n[www]\nlisten = 127.0.0.1:%d\n"
            "pm = static\npm.max_children = 2\napp = testapps:app\npythonpath = %s\n%s"
            % (run_dir, extra_global, harness.free_port(), harness.APPS, extra_pool))


def line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in config" % needle)


# ---- -t -------------------------------------------------------------------------------


def test_t_success_message_and_status_0(run_dir):
    """pfm -t on a good file: php-fpm's 'NOTICE: configuration file PATH test
    is successful' on stderr with the timestamp prefix, exit status 0."""
    conf = write_conf(run_dir, good_conf(run_dir))
    proc = pfm_cmd("-t", "-y", conf)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^%sNOTICE: configuration file %s test is successful$"
                     % (TIME_PREFIX, re.escape(str(conf))), proc.stderr, re.M), proc.stderr
    assert "ERROR" not in proc.stderr


def test_tt_dumps_the_configuration(run_dir):
    """pfm -tt also prints the effective configuration, then succeeds."""
    conf = write_conf(run_dir, good_conf(run_dir))
    proc = pfm_cmd("-tt", "-y", conf)
    assert proc.returncode == 0, proc.stderr
    assert "pm.max_children" in proc.stderr
    assert "test is successful" in proc.stderr


def _assert_config_failure(proc, conf, line_no, *needles):
    """php-fpm's three ERROR lines and EX_CONFIG."""
    assert proc.returncode == EX_CONFIG, (proc.returncode, proc.stderr)
    err = proc.stderr
    m = re.search(r"^%sERROR: \[%s:%d\] (.*)$" % (TIME_PREFIX, re.escape(str(conf)), line_no),
                  err, re.M)
    assert m, err
    for needle in needles:
        assert needle in m.group(1), (needle, m.group(1))
    assert re.search(r"^%sERROR: failed to load configuration file '%s'$"
                     % (TIME_PREFIX, re.escape(str(conf))), err, re.M), err
    assert re.search(r"^%sERROR: pfm initialization failed$" % TIME_PREFIX, err, re.M), err
    assert "test is successful" not in err


def test_t_bad_value_names_file_line_and_directive(run_dir):
    """A bad value: 'ERROR: [FILE:LINE] ... pm.max_children ...', then 'failed
    to load configuration file' and 'pfm initialization failed'; status 78."""
    text = good_conf(run_dir).replace("pm.max_children = 2", "pm.max_children = lots")
    conf = write_conf(run_dir, text)
    proc = pfm_cmd("-t", "-y", conf)
    _assert_config_failure(proc, conf, line_of(text, "pm.max_children"), "pm.max_children")


def test_t_unknown_directive(run_dir):
    """An unknown directive is an error naming it and its line."""
    text = good_conf(run_dir, extra_pool="pm.max_chlidren = 3\n")
    conf = write_conf(run_dir, text)
    proc = pfm_cmd("-t", "-y", conf)
    _assert_config_failure(proc, conf, line_of(text, "pm.max_chlidren"), "pm.max_chlidren")


@pytest.mark.parametrize("directive", ["php_value[memory_limit] = 128M",
                                       "php_admin_flag[display_errors] = off",
                                       "security.limit_extensions = .php",
                                       "php_admin_value[error_log] = /tmp/x.log"])
def test_t_php_only_directive_is_rejected_with_file_and_line(run_dir, directive):
    """A PHP-only directive pasted from a php-fpm pool is refused with a clear
    message naming the file, the line and the directive."""
    text = good_conf(run_dir, extra_pool=directive + "\n")
    conf = write_conf(run_dir, text)
    proc = pfm_cmd("-t", "-y", conf)
    name = directive.split("=")[0].strip().split("[")[0]
    _assert_config_failure(proc, conf, line_of(text, directive), name)


def test_t_app_module_not_found(run_dir):
    """app = a module that cannot be found: an error on the app line, found
    without running the application."""
    text = good_conf(run_dir).replace("app = testapps:app", "app = no_such_module_xyz:app")
    conf = write_conf(run_dir, text)
    proc = pfm_cmd("-t", "-y", conf)
    _assert_config_failure(proc, conf, line_of(text, "no_such_module_xyz"),
                           "no_such_module_xyz")


# ---- -t imports the applications (issue 9, item 2) -----------------------------------------


def _app_conf(run_dir, app: str, pythonpath=None, extra_pool: str = "") -> tuple[str, object]:
    text = good_conf(run_dir, extra_pool=extra_pool).replace("app = testapps:app",
                                                            "app = %s" % app)
    if pythonpath is not None:
        text = text.replace("pythonpath = %s" % harness.APPS, "pythonpath = %s" % pythonpath)
    return text, write_conf(run_dir, text)


def _django_project(directory) -> None:
    (directory / "mysite").mkdir(parents=True)
    (directory / "mysite" / "__init__.py").write_text("")
    (directory / "mysite" / "wsgi.py").write_text(
        "def application(environ, start_response):\n    return []\n")


def test_t_imports_the_app_and_reports_its_exception_and_line(run_dir):
    """An app whose import raises: -t (which used to say 'successful') gives
    the exception's type and message and the file and line it came from, on
    the app directive's line; no traceback; status 78."""
    text, conf = _app_conf(run_dir, "broken_app:app")
    proc = pfm_cmd("-t", "-y", conf)
    _assert_config_failure(proc, conf, line_of(text, "app = broken_app"), "[pool www]",
                           "RuntimeError: broken_app refuses to import",
                           "%s:5" % (harness.APPS / "broken_app.py"))
    assert "Traceback" not in proc.stderr


def test_t_names_the_callable_django_calls_application(run_dir):
    """`app = mysite.wsgi` means mysite.wsgi:app, which Django's wsgi.py does
    not have: the error says so and names the callable it does have."""
    _django_project(run_dir / "project")
    text, conf = _app_conf(run_dir, "mysite.wsgi", run_dir / "project")
    proc = pfm_cmd("-t", "-y", conf)
    _assert_config_failure(proc, conf, line_of(text, "app = mysite.wsgi"),
                           "module 'mysite.wsgi' has no callable 'app'",
                           "write app = mysite.wsgi:application")
    text, conf = _app_conf(run_dir, "mysite.wsgi:application", run_dir / "project")
    assert pfm_cmd("-t", "-y", conf).returncode == 0


@pytest.mark.timeout(30)
def test_t_bounds_an_app_import_that_never_returns(run_dir):
    """An import that never returns: the check is killed after
    app_check_timeout and the error names the pool and the timeout."""
    marker = run_dir / "hang"
    marker.write_text("")
    text, conf = _app_conf(run_dir, "hangs_when_told:app", extra_pool=(
        "env[HANG_MARKER] = %s\napp_check_timeout = 1s\n" % marker))
    t0 = time.monotonic()
    proc = pfm_cmd("-t", "-y", conf)
    assert time.monotonic() - t0 < 10
    _assert_config_failure(proc, conf, line_of(text, "app = hangs_when_told"), "[pool www]",
                           "did not finish importing in 1 s (app_check_timeout)")
    wait_for(lambda: not [p for p in harness.session_pids()
                          if "app check" in harness.cmdline(p)], 3, "no check left behind")


@pytest.mark.skipif(os.geteuid() != 0, reason="user = nobody needs root (CI runs as root)")
def test_t_pythonpath_the_pool_user_cannot_read(run_dir, shared_dir):
    """A pythonpath under a directory only root may enter: -t checks as the
    pool's user and says 'user nobody cannot read DIR', on the pythonpath
    line. A module the app imports from pfm's own path, unreadable to the
    pool's user (as the standard library is when Python lives under /root),
    is explained the same way after the ImportError."""
    private = run_dir / "private"
    _django_project(private)
    text, conf = _app_conf(run_dir, "mysite.wsgi:application", private,
                           extra_pool="user = nobody\n")
    proc = pfm_cmd("-t", "-y", conf)
    _assert_config_failure(proc, conf, line_of(text, "pythonpath = "),
                           "user nobody cannot read %s" % private)

    (shared_dir / "uses_private.py").write_text("import secret_dependency\napp = None\n")
    (run_dir / "secret_dependency.py").write_text("")
    text, conf = _app_conf(run_dir, "uses_private:app", shared_dir,
                           extra_pool="user = nobody\nclear_env = no\n")
    proc = subprocess.run([sys.executable, "-m", "pfm", "-R", "-t", "-y", str(conf)],
                          capture_output=True, text=True, timeout=30,
                          env=harness.test_env({"PYTHONPATH": "%s:%s" % (harness.ROOT,
                                                                         run_dir)}))
    _assert_config_failure(proc, conf, line_of(text, "app = uses_private"),
                           "No module named 'secret_dependency'",
                           "user nobody cannot read %s" % run_dir)


@pytest.mark.parametrize("line,needle", [
    ("listen.backlog = 99999999999", "listen.backlog"),
    ("pm.max_children = 100000000000000000000000", "pm.max_children"),
    ("rlimit_files = 100000000000000000000000", "rlimit_files"),
    ("request_terminate_timeout = 99999999999999999999d", "request_terminate_timeout"),
])
def test_numbers_too_large_are_config_errors_at_t_and_at_start(run_dir, line, needle):
    """A number bigger than the system call or structure it goes to can hold
    is an error naming file, line and directive, at -t and at start (which
    used to die of an OverflowError with a traceback, exit 1, leaving its
    socket file behind)."""
    text = re.sub(r"listen = \S+", "listen = %s" % (run_dir / "www.sock"),
                  good_conf(run_dir, extra_pool=line + "\n"))
    conf = write_conf(run_dir, text)
    for mode in ("-t", "-F"):
        proc = pfm_cmd(mode, "-y", conf)
        _assert_config_failure(proc, conf, line_of(text, line), needle)
        assert "Traceback" not in proc.stderr
        assert not (run_dir / "www.sock").exists()


@pytest.mark.parametrize("directive", ["error_log", "listen", "access.log", "pid"])
def test_a_directory_where_a_file_belongs_is_a_config_error(run_dir, directive):
    """error_log, pid, access.log or a UNIX listen path naming a directory:
    a config error on that line, not a traceback at start."""
    target = run_dir / "a-directory"
    target.mkdir()
    if directive in ("error_log", "pid"):
        text = good_conf(run_dir, extra_global="%s = %s\n" % (directive, target))
    elif directive == "listen":
        text = re.sub(r"listen = \S+", "listen = %s" % target, good_conf(run_dir))
    else:
        text = good_conf(run_dir, extra_pool="%s = %s\n" % (directive, target))
    conf = write_conf(run_dir, text)
    for mode in ("-t", "-F"):
        proc = pfm_cmd(mode, "-y", conf)
        _assert_config_failure(proc, conf, line_of(text, "%s = %s" % (directive, target)),
                               directive, str(target))
        assert "Traceback" not in proc.stderr


def test_start_with_an_app_that_cannot_import_leaves_nothing_behind(run_dir):
    """Starting (not -t) with an app whose import raises: the same error,
    exit 78, no traceback, and neither a socket file nor a pid file left."""
    sock, pid = run_dir / "www.sock", run_dir / "pfm.pid"
    text, conf = _app_conf(run_dir, "broken_app:app")
    text = re.sub(r"listen = \S+", "listen = %s" % sock, text).replace(
        "[global]\n", "[global]\npid = %s\n" % pid)
    conf = write_conf(run_dir, text)
    proc = pfm_cmd("-F", "-y", conf)
    _assert_config_failure(proc, conf, line_of(text, "app = broken_app"),
                           "RuntimeError: broken_app refuses to import")
    assert "Traceback" not in proc.stderr
    assert not sock.exists() and not pid.exists()


def test_t_missing_file(run_dir):
    """A config file that does not exist: an error naming it, status 78."""
    missing = run_dir / "nope.conf"
    proc = pfm_cmd("-t", "-y", missing)
    assert proc.returncode == EX_CONFIG
    assert str(missing) in proc.stderr
    assert re.search(r"^%sERROR: pfm initialization failed$" % TIME_PREFIX, proc.stderr, re.M)


def test_t_does_not_start_anything(run_dir):
    """-t only tests: it binds nothing and starts no process."""
    text = good_conf(run_dir)
    port = int(re.search(r"listen = 127.0.0.1:(\d+)", text).group(1))
    conf = write_conf(run_dir, text)
    assert pfm_cmd("-t", "-y", conf).returncode == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not (run_dir / "pfm.log").exists() or "running" not in (run_dir / "pfm.log").read_text()


# ---- usage, help, version ------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--memory-limit=1G"], ["-Z"], ["stray-argument"],
                                  ["-F", "-D"]])
def test_bad_usage_prints_usage_and_exits_64(args):
    """An unknown option, a stray argument or conflicting flags: 'Usage:' on
    stderr and exit status 64 (EX_USAGE), as php-fpm (bug78323)."""
    proc = pfm_cmd(*args)
    assert proc.returncode == EX_USAGE, (proc.returncode, proc.stderr)
    assert "Usage:" in proc.stderr or "usage:" in proc.stderr


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(flag):
    """-h prints the usage with every flag, exit 0."""
    proc = pfm_cmd(flag)
    assert proc.returncode == 0
    for option in ("-y", "-t", "-F", "-D", "-R", "-g", "-p", "-O", "--app", "--listen",
                   "--workers"):
        assert re.search(r"(^|\W)%s(\W|$)" % re.escape(option), proc.stdout), option


@pytest.mark.parametrize("flag", ["-v", "--version"])
def test_version(flag):
    """-v / --version prints 'pfm VERSION ...' and exits 0."""
    import pfm
    proc = pfm_cmd(flag)
    assert proc.returncode == 0
    assert proc.stdout.startswith("pfm %s" % pfm.__version__), proc.stdout


# ---- -p PREFIX -------------------------------------------------------------------------


def test_prefix_finds_config_and_relative_paths(run_dir):
    """-p DIR: the config defaults to DIR/etc/pfm.conf, and a relative
    error_log and pid are under DIR; the pid file is removed on exit."""
    (run_dir / "etc").mkdir()
    (run_dir / "log").mkdir()
    port = harness.free_port()
    conf = run_dir / "etc" / "pfm.conf"
    conf.write_text("[global]\nerror_log = log/pfm.log\npid = pfm.pid\n\n[www]\n"
                    "listen = 127.0.0.1:%d\npm = static\npm.max_children = 1\n"
                    "app = testapps:app\npythonpath = %s\n" % (port, harness.APPS))
    proc = pfm_cmd("-p", run_dir, "-t")
    assert proc.returncode == 0, proc.stderr
    assert "configuration file %s test is successful" % conf in proc.stderr

    master = subprocess.Popen([sys.executable, "-m", "pfm", "-F", "-R", "-p", str(run_dir)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=harness.test_env(),
                              start_new_session=True)
    try:
        log = run_dir / "log" / "pfm.log"
        wait_for(lambda: "ready to handle connections" in harness.read_text(log), 10,
                 "the log under the prefix")
        assert harness.read_text(run_dir / "pfm.pid").strip() == str(master.pid)
        harness.wait_serving(("127.0.0.1", port))
        master.send_signal(signal.SIGTERM)
        assert master.wait(10) == 0
        assert not (run_dir / "pfm.pid").exists()
    finally:
        _kill_group(master)


def test_prefix_that_is_not_a_directory(run_dir):
    """-p on a path that is not a directory is refused (php-fpm's message)."""
    proc = pfm_cmd("-p", run_dir / "missing", "-t")
    assert proc.returncode == EX_CONFIG
    assert "does not exist or is not a directory" in proc.stderr


# ---- starting ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_quick_mode_serves_an_app(run_dir, transport):
    """pfm --app MOD:CALLABLE --listen ADDR --workers N runs one pool in the
    foreground without a config file (the current directory on the path)."""
    listen = ("127.0.0.1:%d" % harness.free_port() if transport == "tcp"
              else str(run_dir / "quick.sock"))
    out = open(run_dir / "quick.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pfm", "-R", "--app", "testapps:app",
                             "--listen", listen, "--workers", "3"],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            cwd=str(harness.APPS), env=harness.test_env(),
                            start_new_session=True)
    out.close()
    try:
        addr = harness.parse_address(listen)
        harness.wait_serving(addr)
        managers = [p for p in harness.children_of(proc.pid)
                    if harness.cmdline(p) == "pfm: pool www manager"]
        assert len(managers) == 1
        wait_for(lambda: len(harness.children_of(managers[0])) == 3, 10, "3 workers")
        pids = {fcgi_get(addr, "/pid").json()["pid"] for _ in range(12)}
        assert pids <= set(harness.children_of(managers[0]))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "ready to handle connections" in harness.read_text(run_dir / "quick.out")
    finally:
        _kill_group(proc)


def _start_foreground(run_dir, conf, *flags):
    out_path = run_dir / "stderr.out"
    out = open(out_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pfm", "-F", "-R", "-y", str(conf), *flags],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            env=harness.test_env(), start_new_session=True)
    out.close()
    return proc, out_path


@pytest.mark.parametrize("how", ["no error_log", "-O"])
def test_logging_to_stderr(run_dir, how):
    """With no error_log (or with -O, which overrides it) pfm logs to stderr in
    php-fpm's line format, start to finish, worker events included."""
    text = good_conf(run_dir).replace("pm.max_children = 2", "pm.max_children = 1")
    if how == "no error_log":
        text = re.sub(r"error_log = .*\n", "", text)
    conf = write_conf(run_dir, text)
    proc, out_path = _start_foreground(run_dir, conf, *(["-O"] if how == "-O" else []))
    try:
        def err():
            return harness.read_text(out_path)
        wait_for(lambda: "NOTICE: ready to handle connections" in err(), 10, "start on stderr",
                 on_fail=err)
        port = int(re.search(r"listen = 127.0.0.1:(\d+)", text).group(1))
        worker = fcgi_get(("127.0.0.1", port), "/pid").json()["pid"]
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: re.search(r"^%sWARNING: \[pool www\] child %d exited on signal 9"
                                   % (TIME_PREFIX, worker), err(), re.M), 10,
                 "the worker's death on stderr", on_fail=err)
        assert fcgi_get(("127.0.0.1", port), "/errors", "token=on-stderr").status == 200
        wait_for(lambda: "on-stderr" in err(), 10, "wsgi.errors on stderr", on_fail=err)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert re.search(r"^%sNOTICE: exiting, bye-bye!$" % TIME_PREFIX, err(), re.M), err()
        assert "ready to handle connections" not in harness.read_text(run_dir / "pfm.log")
    finally:
        _kill_group(proc)


def test_start_fails_when_the_port_is_taken(run_dir):
    """A listen address already in use: php-fpm's bind error naming the
    address and errno, 'pfm initialization failed', exit status 78."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        text = re.sub(r"listen = 127.0.0.1:\d+", "listen = 127.0.0.1:%d" % port,
                      good_conf(run_dir))
        conf = write_conf(run_dir, text)
        proc = pfm_cmd("-F", "-y", conf, timeout=20)
    out = proc.stderr + harness.read_text(run_dir / "pfm.log")
    assert proc.returncode == EX_CONFIG, (proc.returncode, out)
    assert re.search(r"ERROR: \[pool www\] unable to bind listening socket for address "
                     r"'127\.0\.0\.1:%d': Address already in use \(98\)" % port, out), out
    assert "ERROR: pfm initialization failed" in out


def test_config_error_at_start_exits_78(run_dir):
    """Starting (not -t) on a broken file fails the same way: status 78."""
    text = good_conf(run_dir).replace("pm = static", "pm = sometimes")
    conf = write_conf(run_dir, text)
    proc = pfm_cmd("-F", "-y", conf)
    _assert_config_failure(proc, conf, line_of(text, "pm = sometimes"), "pm")


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal applies to a root master only")
def test_root_pool_is_refused_without_R(run_dir):
    """As root, a pool without `user` (or with a root user) is refused with
    php-fpm's messages and exit 78, unless -R allows it."""
    conf = write_conf(run_dir, good_conf(run_dir))
    proc = pfm_cmd("-t", "-y", conf, root_ok=False)
    assert proc.returncode == EX_CONFIG
    assert re.search(r"ALERT: \[pool www\] user has not been defined", proc.stderr)
    assert "pfm initialization failed" in proc.stderr
    rooted = write_conf(run_dir, good_conf(run_dir).replace("[www]", "[www]\nuser = root"))
    proc = pfm_cmd("-t", "-y", rooted, root_ok=False)
    assert proc.returncode == EX_CONFIG
    assert "[pool www] please specify user and group other than root" in proc.stderr
    assert pfm_cmd("-t", "-y", rooted).returncode == 0
