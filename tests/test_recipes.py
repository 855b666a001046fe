"""Each recipe in docs/ run for real: its files are taken from the page (a
code fence whose info string names a file, ```` ```ini flaskapp.conf ````),
its /srv and /run paths moved into a temporary directory, and the result
served through pfm and a real nginx, or run as the container or systemd
would run it.

Only what cannot be had here is changed, and each change is said where it
is made: the pools run as root with -R instead of www-data (the tests run as
root in private 0700 directories), and nginx listens on a free loopback port.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import harness
import pytest
import requests
from harness import wait_for

DOCS = harness.ROOT / "docs"
FENCE = re.compile(r"^```(\w+) +(\S+)\n(.*?)^```$", re.M | re.S)
POOL_USER_LINES = re.compile(r"^(user|group|listen\.owner|listen\.group) = .*\n", re.M)


def doc_files(name: str) -> dict:
    """{file name: text} of the named code fences of docs/NAME."""
    text = (DOCS / name).read_text()
    files = {m.group(2): m.group(3) for m in FENCE.finditer(text)}
    assert files, "docs/%s has no named code fence" % name
    return files


def write_tree(root: Path, files: dict) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def as_test_pool(pool_text: str, moves: dict) -> str:
    """The recipe's pool file with its paths moved and no user switch (see above)."""
    for old, new in moves.items():
        pool_text = pool_text.replace(old, str(new))
    return POOL_USER_LINES.sub("", pool_text)


def as_test_site(site_text: str, moves: dict) -> str:
    """The recipe's nginx server block on a free port, paths moved."""
    for old, new in moves.items():
        site_text = site_text.replace(old, str(new))
    site_text = re.sub(r"listen 80;", "listen 127.0.0.1:@PORT@;", site_text)
    return site_text.replace("include fastcgi_params;", "include %s;" % harness.FASTCGI_PARAMS)


def free_listen() -> str:
    return "127.0.0.1:%d" % harness.free_port()


def pfm_ctl(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pfm", *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=harness.test_env(env), timeout=30)


# ---- Flask ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_flask_recipe(pfm_factory, nginx_factory, run_dir):
    """docs/flask.md: `app = myapp:create_app()` is called in the pool (with
    preload), FLASK_SECRET_KEY reaches it through clear_env = yes + env[],
    nginx serves the static file, and pfm status/ping answer on
    pm.status_listen."""
    files = doc_files("flask.md")
    src = run_dir / "src"
    write_tree(src, {k: v for k, v in files.items() if k.startswith("myapp/")})
    status_listen = free_listen()
    moves = {"/srv/flaskapp/src": src, "/srv/flaskapp/.venv": sys.prefix,
             "/run/pfm/flaskapp.sock": run_dir / "flaskapp.sock",
             "127.0.0.1:9002": status_listen}
    pool = as_test_pool(files["flaskapp.conf"], moves)
    assert "app = myapp:create_app()" in pool and "clear_env = yes" in pool
    p = pfm_factory(raw="[global]\nerror_log = @LOG@\ndaemonize = no\n\n" + pool,
                    env={"FLASK_SECRET_KEY": "from-the-master"}, workers=False)
    n = nginx_factory("unix:%s" % (run_dir / "flaskapp.sock"),
                      site=as_test_site(files["flaskapp.nginx"], moves))
    page = wait_for(lambda: _get(n.url + "/"), 10, "the Flask page through nginx",
                    on_fail=p.diagnostics)
    assert page.json()["config"] == "production"
    css = requests.get(n.url + "/static/site.css", timeout=10)
    assert css.status_code == 200 and css.headers["Content-Type"] == "text/css"
    assert css.text == files["myapp/static/site.css"]
    status = pfm_ctl("status", "flaskapp", "--json", "-y", p.conf_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["accepted conn"] >= 1
    assert pfm_ctl("ping", "-y", p.conf_path).returncode == 0


def _get(url):
    try:
        r = requests.get(url, timeout=5)
    except requests.RequestException:
        return None
    return r if r.status_code == 200 else None


# ---- Django -----------------------------------------------------------------------------


class SystemPythonPfm(harness.Pfm):
    """pfm run by Debian's /usr/bin/python3, which has no Django: the site's
    packages can only come from the pool's `virtualenv`."""

    def command(self) -> list:
        return ["/usr/bin/python3", "-m", "pfm", "-F", "-R", "-y", str(self.conf_path)]


@pytest.mark.timeout(90)
def test_django_recipe(nginx_factory, run_dir):
    """docs/django.md on a real `django-admin startproject` site: the settings
    added from the page, collectstatic, the page's pool (virtualenv, env[]
    with clear_env = yes) run by Debian's Python, the page's nginx site; the
    admin login page comes from Django and its CSS from nginx."""
    files = doc_files("django.md")
    src, static = run_dir / "src", run_dir / "static"
    src.mkdir()
    bin_dir = Path(sys.prefix) / "bin"
    subprocess.run([str(bin_dir / "django-admin"), "startproject", "mysite", str(src)],
                   check=True, env=harness.test_env(), timeout=60)
    settings = src / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + files["settings-production.py"].replace(
        "/srv/mysite/static", str(static)))
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=src,
                   check=True, capture_output=True, timeout=60,
                   env=harness.test_env({"DJANGO_SECRET_KEY": "collectstatic"}))
    assert (static / "admin" / "css" / "base.css").is_file()

    moves = {"/srv/mysite/src": src, "/srv/mysite/.venv": sys.prefix,
             "/srv/mysite/static": static, "/run/pfm/mysite.sock": run_dir / "mysite.sock",
             "127.0.0.1:9001": free_listen()}
    pool = as_test_pool(files["mysite.conf"], moves).replace(
        "env[DJANGO_ALLOWED_HOSTS] = www.example.org", "env[DJANGO_ALLOWED_HOSTS] = 127.0.0.1")
    assert "clear_env = yes" in pool and "env[DJANGO_SECRET_KEY] = $DJANGO_SECRET_KEY" in pool
    site_dir = run_dir / "pfm"
    site_dir.mkdir()
    p = SystemPythonPfm(site_dir, raw="[global]\nerror_log = @LOG@\ndaemonize = no\n\n" + pool,
                        env={"DJANGO_SECRET_KEY": "a-secret-from-the-service-manager"})
    assert subprocess.run(["/usr/bin/python3", "-c", "import django"],
                          capture_output=True).returncode != 0, "Debian's python3 has Django"
    try:
        p.start(workers=False)
        n = nginx_factory("unix:%s" % (run_dir / "mysite.sock"),
                          site=as_test_site(files["mysite.nginx"], moves))
        login = wait_for(lambda: _get(n.url + "/admin/login/"), 15,
                         "Django's admin login page through nginx", on_fail=p.diagnostics)
        assert "Django administration" in login.text and 'name="password"' in login.text
        css_paths = re.findall(r'href="(/static/admin/css/[^"]+\.css)"', login.text)
        assert "/static/admin/css/base.css" in css_paths, css_paths
        for path in css_paths:
            css = requests.get(n.url + path, timeout=10)
            assert css.status_code == 200 and css.headers["Content-Type"] == "text/css"
            assert css.content == (static / path[len("/static/"):]).read_bytes()
        status = pfm_ctl("status", "mysite", "-y", p.conf_path)
        assert status.returncode == 0, status.stderr
        assert re.search(r"^accepted conn: +[1-9]", status.stdout, re.M), status.stdout
        assert pfm_ctl("ping", "-y", p.conf_path).returncode == 0
    finally:
        p.stop()


# ---- the container ----------------------------------------------------------------------


def dockerfile() -> dict:
    """Instruction -> its arguments (the last one wins, as in Docker)."""
    text = (harness.ROOT / "conf" / "docker" / "Dockerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    return {m.group(1).upper(): m.group(2).strip()
            for m in re.finditer(r"^([A-Za-z]+)\s+(.*)$", text, re.M)}


def test_dockerfile_has_what_a_container_needs():
    d = dockerfile()
    assert d["STOPSIGNAL"] == "SIGQUIT"
    assert d["USER"] not in ("root", "0")
    cmd = json.loads(d["CMD"])
    assert cmd[0] == "pfm" and {"-F", "-O"} <= set(cmd) and "/etc/pfm/pfm.conf" in cmd
    health = re.fullmatch(r"(--\S+ )*CMD (\[.*\])", d["HEALTHCHECK"])
    assert health and json.loads(health.group(2)) == ["pfm", "ping"], d["HEALTHCHECK"]
    assert "COPY pfm.conf /etc/pfm/pfm.conf" in (harness.ROOT / "conf" / "docker" /
                                                 "Dockerfile").read_text()


@pytest.mark.timeout(60)
def test_container_recipe(run_dir):
    """The image's CMD as a plain process, as a non-root user (nobody here,
    the image's own user there) on conf/docker/pfm.conf: it serves, logs to
    stderr with the application's output undecorated, HEALTHCHECK's
    `pfm ping` passes, and STOPSIGNAL (SIGQUIT) lets a request in flight
    finish before pfm exits 0; then `pfm ping` fails."""
    d = dockerfile()
    conf = str(harness.ROOT / "conf" / "docker" / "pfm.conf")
    here = [sys.executable, "-m", "pfm"]

    def as_here(argv):  # the image's paths and `pfm` on PATH, here
        argv = [conf if a == "/etc/pfm/pfm.conf" else a for a in argv]
        return here + argv[1:] if argv[0] == "pfm" else argv
    listen, status_listen = free_listen(), free_listen()
    env = harness.test_env({"PFM_APP": "testapps:app", "PFM_APP_DIR": str(harness.APPS),
                            "PFM_LISTEN": listen, "PFM_STATUS_LISTEN": status_listen,
                            "PFM_WORKERS": "2"})
    health = json.loads(re.search(r"CMD (\[.*\])", d["HEALTHCHECK"]).group(1))
    health_cmd = as_here(health) + ["-y", conf]

    def healthcheck():
        return subprocess.run(health_cmd, env=env, user="nobody", capture_output=True,
                              text=True, timeout=30, cwd=str(harness.APPS))
    stderr_path = run_dir / "container.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(as_here(json.loads(d["CMD"])), env=env, user="nobody",
                                group="nogroup", cwd=str(harness.APPS), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)

    def logs():
        return harness.read_text(stderr_path)
    try:
        wait_for(lambda: "NOTICE: ready to handle connections" in logs(), 10,
                 "pfm to start as the container's main process", on_fail=logs)
        address = harness.parse_address(listen)
        harness.wait_serving(address)
        assert harness.fcgi_get(address, "/output", "token=from-the-app").status == 200
        wait_for(lambda: re.search(r"^stdout says from-the-app$", logs(), re.M), 10,
                 "the application's print() on stderr, as written", on_fail=logs)
        assert re.search(r"^%sNOTICE: pfm is running, pid %d$" % (harness.TIME_PREFIX,
                                                                   proc.pid), logs(), re.M)
        ok = healthcheck()
        assert ok.returncode == 0, ok.stderr
        assert "(pm.status_listen)" in ok.stdout

        slow = harness.Background(harness.fcgi_get, address, "/sleep", "s=1.5", timeout=15)

        def sleeping():
            st = pfm_ctl("status", "--json", "--full", "-y", conf, env={
                k: env[k] for k in ("PFM_LISTEN", "PFM_STATUS_LISTEN", "PFM_APP")})
            return st.returncode == 0 and any(
                w["state"] == "Running" and w["request uri"].startswith("/sleep")
                for w in json.loads(st.stdout)["processes"])
        wait_for(sleeping, 5, "the slow request to run")
        proc.send_signal(getattr(signal, d["STOPSIGNAL"]))
        assert slow.join_result(15).status == 200
        assert proc.wait(15) == 0
        assert "NOTICE: exiting, bye-bye!" in logs()
        down = healthcheck()
        assert down.returncode == 1 and "connection refused" in down.stderr, down.stderr
    finally:
        harness.kill_group(proc)


# ---- systemd ----------------------------------------------------------------------------


UNIT = harness.ROOT / "conf" / "systemd" / "pfm.service"


def unit_service() -> dict:
    """[Service] key -> list of values, in order."""
    section = UNIT.read_text().split("[Service]", 1)[1].split("\n[", 1)[0]
    out: dict = {}
    for line in section.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def make_pfm_virtualenv(where: Path) -> Path:
    """A real virtualenv with pfm installed into it the way an editable pip
    install does (a .pth file), plus setproctitle from the project's .venv."""
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(where)], check=True,
                   timeout=60)
    site = next(where.glob("lib/python3*/site-packages"))
    ours = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    (site / "pfm-wsgi.pth").write_text("%s\n%s\n" % (harness.ROOT, ours))
    return where / "bin"


def notify_socket(path: Path):
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    return sock


def wait_notify(sock, field: str) -> str:
    import socket
    got = []
    while True:
        try:
            message = sock.recv(65536).decode()
        except socket.timeout:
            raise AssertionError("no %s from pfm; got %r" % (field, got)) from None
        got.append(message)
        if field in message.split("\n"):
            return message


@pytest.mark.timeout(90)
@pytest.mark.parametrize("install", ["virtualenv-in-opt-pfm", "system-python"])
def test_systemd_unit_runs_unedited_for_both_installs(run_dir, install):
    """The unit's ExecStart and ExecReload lines, run as systemd would (its
    PATH, NOTIFY_SOCKET, $MAINPID), on a pool running as nobody: READY=1
    with the master's pid, a reload (RELOADING=1 then READY=1), and
    KillSignal's graceful stop (STOPPING=1, exit 0). With pfm in a
    virtualenv at /opt/pfm (moved to the test's directory) the unit's PATH
    finds its python3 with no PYTHONPATH at all; with pfm in the system's
    Python, Debian's /usr/bin/python3 runs it (PYTHONPATH stands in for
    dist-packages)."""
    service = unit_service()
    assert service["Type"] == ["notify"] and service["KillSignal"] == ["SIGQUIT"]
    unit_path = dict(v.split("=", 1) for v in service["Environment"])["PATH"]
    assert unit_path.startswith("/opt/pfm/bin:")
    env = {harness.SESSION_VAR: harness.SESSION_TOKEN}
    if install == "virtualenv-in-opt-pfm":
        venv_bin = make_pfm_virtualenv(run_dir / "opt-pfm")
        env["PATH"] = unit_path.replace("/opt/pfm/bin", str(venv_bin))
        assert shutil.which("python3", path=env["PATH"]) == str(venv_bin / "python3")
    else:
        env["PATH"] = unit_path.replace("/opt/pfm/bin", str(run_dir / "no-such-venv"))
        assert shutil.which("python3", path=env["PATH"]) in ("/usr/bin/python3",
                                                             "/usr/local/bin/python3")
        env["PYTHONPATH"] = str(harness.ROOT)
    port = harness.free_port()
    conf = run_dir / "pfm.conf"
    conf.write_text("[global]\nerror_log = %s/pfm.log\n\n[www]\nuser = nobody\ngroup = nogroup\n"
                    "listen = 127.0.0.1:%d\npm = static\npm.max_children = 1\n"
                    "app = testapps:app\npythonpath = %s\n" % (run_dir, port, harness.APPS))

    def command(line: str, mainpid: int = 0) -> list:
        line = line.replace("/etc/pfm/pfm.conf", str(conf)).replace("$MAINPID", str(mainpid))
        return shlex.split(line)
    sock = notify_socket(run_dir / "notify.sock")
    env["NOTIFY_SOCKET"] = str(run_dir / "notify.sock")
    [start] = service["ExecStart"]
    proc = subprocess.Popen(command(start), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        ready = wait_notify(sock, "READY=1")
        assert "MAINPID=%d" % proc.pid in ready.split("\n"), ready
        assert harness.wait_serving(("127.0.0.1", port)).status == 200
        check, kill = service["ExecReload"]
        tested = subprocess.run(command(check), env=env, capture_output=True, text=True,
                                timeout=30)
        assert tested.returncode == 0 and "test is successful" in tested.stderr, tested.stderr
        assert subprocess.run(command(kill, proc.pid), env=env, timeout=10).returncode == 0
        wait_notify(sock, "RELOADING=1")
        wait_notify(sock, "READY=1")
        proc.send_signal(getattr(signal, service["KillSignal"][0]))
        wait_notify(sock, "STOPPING=1")
        assert proc.wait(15) == 0
    finally:
        sock.close()
        harness.kill_group(proc)
