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
