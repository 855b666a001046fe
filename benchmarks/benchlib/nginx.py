"""One nginx in front of every peer: its own config in a temporary directory,
one worker, access_log off, one loopback port per peer."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List

from .install import FASTCGI_PARAMS, NGINX
from .procs import IS_ROOT, PROCS

BODY = b"Hello, world!\n"


@dataclass
class Site:
    """What nginx does on one port.

    kind: "fastcgi" (fastcgi_pass to `target`, a UNIX socket), "proxy"
    (proxy_pass over HTTP/1.0 to `target`, a UNIX socket), or "return"
    (nginx answers the 14 bytes itself: the ceiling of the path).
    keepalive: connections nginx keeps to the backend (upstream keepalive +
    fastcgi_keep_conn on); 0 opens one connection per request, nginx's default.
    """
    name: str
    port: int
    kind: str
    target: str = ""
    keepalive: int = 0
    extra: str = ""          # more lines in the location (fastcgi_param SCRIPT_FILENAME ...)


def _server(site: Site) -> str:
    ups = ""
    lines = []
    if site.kind == "return":
        lines.append('return 200 "Hello, world!\\n";')
    else:
        upstream = f"unix:{site.target}"
        if site.keepalive:
            name = "up_" + re.sub(r"\W", "_", site.name)
            ups = (f"    upstream {name} {{\n        server {upstream};\n"
                   f"        keepalive {site.keepalive};\n    }}\n")
            upstream = name
        if site.kind == "fastcgi":
            lines.append(f"include {FASTCGI_PARAMS};")
            if site.keepalive:
                lines.append("fastcgi_keep_conn on;")
            lines += [x for x in site.extra.splitlines() if x.strip()]
            lines.append(f"fastcgi_pass {upstream};")
        elif site.kind == "proxy":
            lines.append("proxy_set_header Host $host;")
            if site.keepalive:
                lines += ["proxy_http_version 1.1;", 'proxy_set_header Connection "";']
            lines += [x for x in site.extra.splitlines() if x.strip()]
            lines.append(f"proxy_pass http://{upstream if site.keepalive else upstream + ':'};")
        else:
            raise ValueError(f"unknown site kind {site.kind}")
    body = "".join(f"            {x}\n" for x in lines)
    return (f"{ups}    server {{\n        listen 127.0.0.1:{site.port};\n"
            f"        location / {{\n{body}        }}\n    }}\n")


def config(tmp: Path, sites: List[Site], workers: int = 1) -> str:
    return f"""\
# written by benchmarks/ (benchlib/nginx.py)
{"user root;" if IS_ROOT else ""}
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {tmp}/nginx/body;
    fastcgi_temp_path {tmp}/nginx/fastcgi;
    proxy_temp_path {tmp}/nginx/proxy;
    uwsgi_temp_path {tmp}/nginx/uwsgi;
    scgi_temp_path {tmp}/nginx/scgi;
    # 1 MiB uploads and 64 KiB answers stay in memory, never in temp files
    client_max_body_size 4m;
    client_body_buffer_size 2m;
    fastcgi_buffers 16 16k;
    proxy_buffers 16 16k;
{"".join(_server(s) for s in sites)}}}
"""


def start(tmp: Path, sites: List[Site], name: str = "nginx") -> subprocess.Popen:
    for sub in ("body", "fastcgi", "proxy", "uwsgi", "scgi"):
        (tmp / "nginx" / sub).mkdir(parents=True, exist_ok=True)
    conf = tmp / f"{name}.conf"
    conf.write_text(config(tmp, sites))
    argv = [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")]
    return PROCS.start(name, argv, tmp / f"{name}.out")


def version() -> str:
    return subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
