"""Installing what a benchmark needs and is missing: Debian packages with
apt-get, Python packages with pip into the interpreter running the script (.venv)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from typing import Dict, Iterable, List, Tuple

from .procs import IS_ROOT, PROG, log

PHP_FPM = "/usr/sbin/php-fpm8.2"
NGINX = "/usr/sbin/nginx"
UWSGI = "/usr/bin/uwsgi"
UWSGI_PY3 = "/usr/lib/uwsgi/plugins/python3_plugin.so"
FASTCGI_PARAMS = "/etc/nginx/fastcgi_params"

# tool -> (Debian package, a path or command name that tells it is there)
APT: Dict[str, Tuple[str, str]] = {
    "nginx": ("nginx", NGINX),
    "wrk": ("wrk", "wrk"),
    "php-fpm": ("php8.2-fpm", PHP_FPM),
    "uwsgi": ("uwsgi-core", UWSGI),
    "uwsgi-python3": ("uwsgi-plugin-python3", UWSGI_PY3),
    "redis-server": ("redis-server", "/usr/bin/redis-server"),
}
# import name -> PyPI name (checked against benchmarks' package list: flup6 is the
# Python 3 flup with fcgi_fork, the others are the usual names)
PIP: Dict[str, str] = {
    "flup": "flup6",
    "gunicorn": "gunicorn",
    "flask": "flask",
    "matplotlib": "matplotlib",
    "rq": "rq",
    "huey": "huey",
}


def have(path_or_name: str) -> bool:
    if "/" in path_or_name:
        return os.path.exists(path_or_name)
    return shutil.which(path_or_name) is not None


def ensure_apt(tools: Iterable[str], install: bool) -> None:
    tools = list(dict.fromkeys(tools))
    missing = [APT[t][0] for t in tools if not have(APT[t][1])]
    if not missing:
        return
    if not install:
        sys.exit(f"{PROG}: missing {', '.join(missing)} (and --no-install was given)")
    sudo = [] if IS_ROOT else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing Debian packages: {' '.join(missing)}")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
                   + missing, check=True, env=env, stdout=subprocess.DEVNULL)
    still = [APT[t][0] for t in tools if not have(APT[t][1])]
    if still:
        sys.exit(f"{PROG}: still missing after apt-get: {', '.join(still)}")


def missing_modules(modules: Iterable[str]) -> List[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def ensure_pip(modules: Iterable[str], install: bool) -> None:
    """pip-install into sys.executable's environment (the .venv) what is missing."""
    missing = missing_modules(modules)
    if not missing:
        return
    names = [PIP[m] for m in missing]
    if not install:
        sys.exit(f"{PROG}: missing Python packages {', '.join(names)} (--no-install)")
    if sys.prefix == sys.base_prefix:
        log(f"warning: {sys.executable} is not a virtualenv; pip installs into it anyway")
    log(f"installing into {sys.prefix} with pip: {' '.join(names)}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q"] + names, check=True)
    importlib.invalidate_caches()
    still = missing_modules(missing)
    if still:
        sys.exit(f"{PROG}: still missing after pip: {', '.join(still)}")
