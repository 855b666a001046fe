"""Starting each peer: a backend serving one workload on a UNIX socket, and
the nginx site that fronts it. Each peer gets the same number of workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .install import PHP_FPM, UWSGI
from .nginx import Site
from .procs import IS_ROOT, PROCS, free_port
from .workloads import APPS, Workload

ROOT = Path(__file__).resolve().parent.parent.parent   # the pfm checkout


@dataclass
class Ctx:
    tmp: Path                       # this workload's directory: configs, sockets, logs
    workers: int = 4
    preload: bool = True            # pfm preload = yes, gunicorn --preload, uWSGI default
    keepalive: int = 0              # upstream keepalive of the *-keepalive peers (0: workers)
    php_opcache: bool = False
    pfm_src: Path = ROOT
    pfm_base: Optional[Path] = None     # another pfm source tree: the pfm-base peer
    pfm_extra: str = ""             # more lines in pfm's pool section
    pm: str = "static"              # with pm_lines, for the pools benchmarks
    pm_lines: str = ""
    nginx_keepalive: Optional[int] = None   # force this keepalive on every FastCGI site


@dataclass
class Peer:
    name: str
    port: int
    site: Site
    proc: Optional[subprocess.Popen] = None   # None: nginx alone
    socket: Optional[Path] = None
    version: str = ""
    logs: List[Path] = field(default_factory=list)


def _ka(ctx: Ctx) -> int:
    return ctx.keepalive or ctx.workers


def _pool_lines(ctx: Ctx) -> str:
    if ctx.pm == "static":
        return f"pm = static\npm.max_children = {ctx.workers}\n"
    return f"pm = {ctx.pm}\npm.max_children = {ctx.workers}\n{ctx.pm_lines}"


def source_revision(src: Path) -> str:
    """`git describe --always --dirty` of a pfm tree: which code was measured ("-dirty":
    with changes not committed)."""
    try:
        out = subprocess.run(["git", "-C", str(src), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "no git"
    return out.stdout.strip() if out.returncode == 0 else "not a git checkout"


def start_pfm(ctx: Ctx, name: str, w: Workload, keepalive: int = 0,
              env_extra: Optional[Dict[str, str]] = None) -> Peer:
    sock = ctx.tmp / f"{name}.sock"
    conf = ctx.tmp / f"{name}.conf"
    module, _, attr = w.wsgi.partition(":")
    conf.write_text(f"""\
; written by benchmarks/benchlib/peers.py
[global]
pid = {ctx.tmp}/{name}.pid
error_log = {ctx.tmp}/{name}.log
daemonize = no

[bench]
listen = {sock}
{_pool_lines(ctx)}app = {module}:{attr}
pythonpath = {APPS}
preload = {"yes" if ctx.preload else "no"}
{ctx.pfm_extra}
""")
    argv = [sys.executable, "-m", "pfm", "-F", "-y", str(conf)] + (["-R"] if IS_ROOT else [])
    env = dict(os.environ)
    # `python -m pfm` from a checkout, installed or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ctx.pfm_src),
                                                      env.get("PYTHONPATH")]))
    env.update(env_extra or {})
    version = subprocess.run([sys.executable, "-m", "pfm", "-v"], capture_output=True,
                             text=True, env=env, cwd=ctx.tmp).stdout.strip()
    proc = PROCS.start(name, argv, ctx.tmp / f"{name}.out", env=env, cwd=ctx.tmp)
    port = free_port()
    return Peer(name, port, Site(name, port, "fastcgi", str(sock), keepalive), proc, sock,
                f"{version} from {ctx.pfm_src} ({source_revision(ctx.pfm_src)}), {ctx.pm}, preload "
                f"{'yes' if ctx.preload else 'no'}",
                [ctx.tmp / f"{name}.out", ctx.tmp / f"{name}.log"])


def start_php_fpm(ctx: Ctx, name: str, w: Workload, keepalive: int = 0) -> Peer:
    sock = ctx.tmp / f"{name}.sock"
    docroot = ctx.tmp / "www"
    docroot.mkdir(exist_ok=True)
    shutil.copy(APPS / w.php, docroot / w.php)
    conf = ctx.tmp / f"{name}.conf"
    conf.write_text(f"""\
; written by benchmarks/benchlib/peers.py
[global]
pid = {ctx.tmp}/{name}.pid
error_log = {ctx.tmp}/{name}.log
daemonize = no

[bench]
listen = {sock}
{_pool_lines(ctx)}""")
    argv = [PHP_FPM, "-n", "-F", "-y", str(conf)] + (["-R"] if IS_ROOT else [])
    if ctx.php_opcache:  # -n loads no php.ini, so no extension: load OPcache by hand
        argv += ["-d", "zend_extension=opcache.so", "-d", "opcache.enable=1"]
    version = subprocess.run([PHP_FPM, "-n", "-v"], capture_output=True,
                             text=True).stdout.splitlines()[0]
    proc = PROCS.start(name, argv, ctx.tmp / f"{name}.out")
    port = free_port()
    extra = f"fastcgi_param SCRIPT_FILENAME {docroot}/{w.php};"
    return Peer(name, port, Site(name, port, "fastcgi", str(sock), keepalive, extra), proc,
                sock, f"{version}, -n{' + OPcache' if ctx.php_opcache else ''}, {ctx.pm}",
                [ctx.tmp / f"{name}.out", ctx.tmp / f"{name}.log"])


# nginx's stock fastcgi_params send no PATH_INFO: pfm derives it (as PHP does), uWSGI
# and flup need it sent, or every request is routed as "/"
PATH_INFO = "fastcgi_param PATH_INFO $document_uri;"


def start_uwsgi(ctx: Ctx, name: str, w: Workload) -> Peer:
    sock = ctx.tmp / f"{name}.sock"
    module, _, attr = w.wsgi.partition(":")
    argv = [UWSGI, "--plugin", "python3", "--fastcgi-socket", str(sock),
            "--master", "--processes", str(ctx.workers), "--thunder-lock",
            "--home", sys.prefix, "--pythonpath", str(APPS),
            "--module", f"{module}:{attr}", "--need-app", "--disable-logging",
            "--die-on-term", "--pidfile", str(ctx.tmp / f"{name}.pid")]
    if not ctx.preload:
        argv.append("--lazy-apps")
    version = "uWSGI " + subprocess.run([UWSGI, "--version"], capture_output=True,
                                        text=True).stdout.strip()
    proc = PROCS.start(name, argv, ctx.tmp / f"{name}.out")
    port = free_port()
    return Peer(name, port, Site(name, port, "fastcgi", str(sock), 0, PATH_INFO), proc, sock,
                f"{version}, --fastcgi-socket, --thunder-lock, "
                f"{'--lazy-apps' if not ctx.preload else 'app loaded in the master'}",
                [ctx.tmp / f"{name}.out"])


def start_flup(ctx: Ctx, name: str, w: Workload) -> Peer:
    sock = ctx.tmp / f"{name}.sock"
    argv = [sys.executable, str(APPS / "flup_server.py"), str(sock), w.wsgi,
            str(ctx.workers), str(APPS)]
    version = subprocess.run([sys.executable, "-m", "pip", "show", "flup6"],
                             capture_output=True, text=True).stdout
    version = next((x.split(":", 1)[1].strip() for x in version.splitlines()
                    if x.startswith("Version:")), "?")
    proc = PROCS.start(name, argv, ctx.tmp / f"{name}.out", cwd=ctx.tmp)
    port = free_port()
    return Peer(name, port, Site(name, port, "fastcgi", str(sock), 0, PATH_INFO), proc, sock,
                f"flup6 {version} fcgi_fork, minSpare = maxSpare = maxChildren = "
                f"{ctx.workers}", [ctx.tmp / f"{name}.out"])


def start_gunicorn(ctx: Ctx, name: str, w: Workload) -> Peer:
    sock = ctx.tmp / f"{name}.sock"
    argv = [sys.executable, "-m", "gunicorn", "--workers", str(ctx.workers),
            "--worker-class", "sync", "--bind", f"unix:{sock}", "--pythonpath", str(APPS),
            "--error-logfile", str(ctx.tmp / f"{name}.log"), "--log-level", "warning",
            "--pid", str(ctx.tmp / f"{name}.pid")]
    if ctx.preload:
        argv.append("--preload")
    argv.append(w.wsgi)
    version = subprocess.run([sys.executable, "-m", "gunicorn", "--version"],
                             capture_output=True, text=True).stdout.strip()
    proc = PROCS.start(name, argv, ctx.tmp / f"{name}.out", cwd=ctx.tmp)
    port = free_port()
    return Peer(name, port, Site(name, port, "proxy", str(sock)), proc, sock,
                f"{version}, sync workers{', --preload' if ctx.preload else ''}, "
                "behind proxy_pass", [ctx.tmp / f"{name}.out", ctx.tmp / f"{name}.log"])


def start_nginx_return(ctx: Ctx, name: str, w: Workload) -> Peer:
    port = free_port()
    return Peer(name, port, Site(name, port, "return"), None, None,
                "nginx alone: return 200 with the 14 bytes, whatever the workload")


STARTERS: Dict[str, Callable[[Ctx, Workload], Peer]] = {
    "pfm": lambda c, w: start_pfm(c, "pfm", w),
    "pfm-keepalive": lambda c, w: start_pfm(c, "pfm-keepalive", w, _ka(c)),
    "pfm-base": lambda c, w: start_pfm(replace(c, pfm_src=c.pfm_base), "pfm-base", w),
    "php-fpm": lambda c, w: start_php_fpm(c, "php-fpm", w),
    "php-fpm-keepalive": lambda c, w: start_php_fpm(c, "php-fpm-keepalive", w, _ka(c)),
    "uwsgi": lambda c, w: start_uwsgi(c, "uwsgi", w),
    "flup": lambda c, w: start_flup(c, "flup", w),
    "gunicorn": lambda c, w: start_gunicorn(c, "gunicorn", w),
    "nginx": lambda c, w: start_nginx_return(c, "nginx", w),
}
# what each peer needs installed: apt tools and Python modules
NEEDS = {
    "php-fpm": (["php-fpm"], []), "php-fpm-keepalive": (["php-fpm"], []),
    "uwsgi": (["uwsgi", "uwsgi-python3"], []), "flup": ([], ["flup"]),
    "gunicorn": ([], ["gunicorn"]),
}
