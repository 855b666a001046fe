"""One FastCGI request to a running pool for its status page or ping, as
nginx would send it, but straight to the pool's socket.

Where to ask (`status_endpoint`, `ping_endpoint`) follows the pool's
configuration: `pm.status_listen` first, because only the pool manager
answers there, so no worker is taken and the answer comes even when the
pool is saturated; else the pool's `listen` socket at `pm.status_path` or
`ping.path`, answered by an idle worker or, once every worker has been busy
for 0.1 s, by the pool manager. Every failure is a `ProbeError` whose text
says what to do about it.
"""

from __future__ import annotations

import grp
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, TextIO, Tuple

from .. import __version__, fastcgi
from ..config import ConfigError, ListenAddress


class ConfigProblem(Exception):
    """The configuration of the running pfm cannot be read."""


class ProbeError(Exception):
    """A pool that cannot be asked, or did not answer; str() is the reason."""


@dataclass(frozen=True)
class Endpoint:
    """Where and what to ask: `path` is the SCRIPT_NAME sent."""

    pool: str
    address: ListenAddress
    path: str
    via: str                        # "pm.status_listen" or "listen"
    expect: Optional[bytes] = None  # the body a ping must answer (ping.response)

    def describe(self) -> str:
        return "%s on %s (%s)" % (self.path, self.address.value, self.via)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: List[Tuple[str, str]]
    body: bytes
    seconds: float


def load_config(path: Optional[str], prefix: Optional[str]) -> Any:
    """The running pfm's configuration, found as `pfm` finds it (-y, else
    PREFIX/etc/pfm.conf with -p, else /etc/pfm/pfm.conf)."""
    from .. import config as cfg
    from ..cli import DEFAULT_CONFIG

    if path is None and prefix:
        path = os.path.join(prefix, "etc", "pfm.conf")
    if path is None:
        if not os.path.exists(DEFAULT_CONFIG):
            raise ConfigProblem("no configuration file: %s does not exist; name the running "
                                "pfm's with -y FILE" % DEFAULT_CONFIG)
        path = DEFAULT_CONFIG
    try:
        return cfg.load(os.path.abspath(path), prefix=prefix, check_app=False)
    except ConfigError as e:
        raise ConfigProblem(str(e)) from None


def select_pools(config: Any, name: Optional[str]) -> List[Any]:
    """Every pool, or the one called `name` (ConfigProblem if there is none)."""
    if name is None:
        return list(config.pools)
    for pool in config.pools:
        if pool.name == name:
            return [pool]
    raise ConfigProblem("no pool '%s' in %s (pools: %s)" % (
        name, config.path, ", ".join(p.name for p in config.pools)))


def status_endpoint(pool: Any) -> Endpoint:
    """Where the pool's status page is served; ProbeError when it is nowhere."""
    if pool.status_listen_address is not None:
        # Without pm.status_path the manager serves the page at any path there.
        return Endpoint(pool.name, pool.status_listen_address, pool.pm_status_path or "/status",
                        "pm.status_listen")
    if pool.pm_status_path:
        return Endpoint(pool.name, pool.listen_address, pool.pm_status_path, "listen")
    raise ProbeError("neither pm.status_path nor pm.status_listen is set, so the pool "
                     "serves no status page; set pm.status_listen = 127.0.0.1:9001 "
                     "(answered by the pool manager even when every worker is busy) or "
                     "pm.status_path = /status, and reload")


def ping_endpoint(pool: Any) -> Endpoint:
    """ping.path where the pool has one, else its status page (a 200 is an
    answer too); ProbeError when the pool serves neither."""
    if pool.ping_path:
        address, via = pool.listen_address, "listen"
        if pool.status_listen_address is not None:
            address, via = pool.status_listen_address, "pm.status_listen"
        return Endpoint(pool.name, address, pool.ping_path, via,
                        expect=(pool.ping_response or "pong").encode())
    try:
        return status_endpoint(pool)
    except ProbeError:
        raise ProbeError("none of ping.path, pm.status_path and pm.status_listen is set, "
                         "so nothing can ask the pool whether it serves; set ping.path = /ping (or "
                         "pm.status_listen) and reload") from None


def _connect_to(address: ListenAddress) -> Tuple[int, Any]:
    """(family, sockaddr) to connect to a listen address; a wildcard means this host."""
    if address.kind == "unix":
        return socket.AF_UNIX, address.path
    host = address.host
    if host in (None, "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if family == socket.AF_INET and not host.replace(".", "").isdigit():
        return socket.AF_UNSPEC, (host, address.port)  # a name: resolved on connect
    return family, (host, address.port)


def _refusal(e: OSError, address: ListenAddress) -> str:
    where = address.value
    if isinstance(e, FileNotFoundError):
        return "no socket at %s: is pfm running with this configuration?" % where
    if isinstance(e, ConnectionRefusedError):
        return "connection refused at %s: is pfm running with this configuration?" % where
    if isinstance(e, PermissionError) and address.kind == "unix":
        try:
            st = os.stat(address.path)
            group = grp.getgrgid(st.st_gid).gr_name
        except (OSError, KeyError):
            group = "the socket's group"
        return ("permission denied on %s: run as root or as a member of group %s "
                "(listen.group)" % (where, group))
    return "cannot connect to %s: %s" % (where, e.strerror or e)


def request_params(endpoint: Endpoint, query: str) -> dict:
    """The CGI variables nginx's stock fastcgi_params would send for the path."""
    uri = endpoint.path + ("?" + query if query else "")
    return {
        "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "pfm/%s" % __version__,
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": endpoint.path, "SCRIPT_FILENAME": endpoint.path,
        "DOCUMENT_URI": endpoint.path, "REQUEST_URI": uri, "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "SERVER_NAME": "localhost",
        "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "0", "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0", "CONTENT_LENGTH": "", "CONTENT_TYPE": "",
        "HTTP_USER_AGENT": "pfm-ctl/%s" % __version__,
    }


def ask(endpoint: Endpoint, query: str = "", timeout: float = 5.0) -> Answer:
    """Send one GET for `endpoint.path?query` and read the whole response
    within `timeout` seconds; ProbeError with the reason otherwise."""
    start = time.monotonic()
    deadline = start + timeout
    family, sockaddr = _connect_to(endpoint.address)
    try:
        if family == socket.AF_UNSPEC:
            sock = socket.create_connection(sockaddr, timeout=timeout)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(sockaddr)
            except OSError:
                sock.close()
                raise
    except socket.timeout:
        raise ProbeError("no connection to %s within %g s" % (endpoint.address.value,
                                                              timeout)) from None
    except OSError as e:
        raise ProbeError(_refusal(e, endpoint.address)) from None
    conn = fastcgi.ClientConnection()
    out: List[bytes] = []
    try:
        with sock:
            sock.sendall(fastcgi.encode_request(request_params(endpoint, query)))
            while True:
                event = conn.next_event()
                if event is fastcgi.NEED_DATA:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    conn.receive_data(sock.recv(65536))
                    continue
                if event is fastcgi.CLOSED:
                    raise ProbeError("%s closed the connection before answering"
                                     % endpoint.describe())
                if isinstance(event, fastcgi.Stdout):
                    out.append(event.data)
                elif isinstance(event, fastcgi.EndRequest):
                    break
    except socket.timeout:
        raise ProbeError("no answer from %s within %g s" % (endpoint.describe(),
                                                            timeout)) from None
    except fastcgi.RemoteProtocolError as e:
        raise ProbeError("%s answered something that is not FastCGI: %s"
                         % (endpoint.describe(), e)) from None
    except OSError as e:
        raise ProbeError("%s: %s" % (endpoint.describe(), e.strerror or e)) from None
    try:
        status, headers, body = fastcgi.split_headers(b"".join(out))
    except fastcgi.RemoteProtocolError as e:
        raise ProbeError("%s answered a malformed response: %s"
                         % (endpoint.describe(), e)) from None
    return Answer(status, headers, body, time.monotonic() - start)


def ask_ok(endpoint: Endpoint, query: str = "", timeout: float = 5.0) -> Answer:
    """ask(), and a status other than 200 is a ProbeError too."""
    answer = ask(endpoint, query, timeout)
    if answer.status != 200:
        first = answer.body.decode("utf-8", "replace").strip().splitlines()[:1]
        raise ProbeError("%s answered %d%s" % (endpoint.describe(), answer.status,
                                               ": " + first[0] if first else ""))
    return answer


def for_each_pool(command: str, config: Any, name: Optional[str], err: TextIO,
                  visit: Callable[[int, Any], None]) -> int:
    """visit(index, pool) for every pool (or the one called `name`); a pool
    whose visit raises ProbeError is reported on `err` and the others go on.
    The exit status: 0, 1 when a pool failed, 78 when `name` is no pool."""
    try:
        pools = select_pools(config, name)
    except ConfigProblem as e:
        err.write("pfm %s: %s\n" % (command, e))
        return 78
    failed = 0
    for index, pool in enumerate(pools):
        try:
            visit(index, pool)
        except ProbeError as e:
            err.write("pfm %s: pool %s: %s\n" % (command, pool.name, e))
            failed += 1
    return 1 if failed else 0
