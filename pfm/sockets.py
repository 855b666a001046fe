"""Listening sockets: bound by the master before any privilege is dropped,
inherited by pool managers and workers across fork.

Every worker of a pool watches the shared socket, non-blocking, in its epoll
set with EPOLLEXCLUSIVE (worker.py), so the kernel wakes one idle worker per
connection (no thundering herd, see design.md).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
from dataclasses import dataclass

BACKLOG_MAX = 65535  # listen(2) clips it to net.core.somaxconn, as php-fpm's -1 does


class SocketError(Exception):
    """A listening socket could not be created; the message is for the log."""


@dataclass(frozen=True)
class Listener:
    """An open listening socket and the address it was asked for."""

    sock: socket.socket
    address: str          # as written in the config
    key: str              # normalized: "127.0.0.1:9000", "::1:9000" or the unix path
    unix_path: str | None

    def fileno(self) -> int:
        return self.sock.fileno()


def bind(addr, backlog: int = -1, mode: int = 0o660, owner: str | None = None,
         group: str | None = None, acl_users=(), acl_groups=()) -> Listener:
    """Create, bind and listen. `addr` is a config.ListenAddress. With ACL
    entries a unix socket gets them instead of an owner and group (php-fpm).

    No receive or send timeout is set here for the connections to inherit:
    accepted unix-socket connections would not (only TCP copies them), so
    the worker bounds its waits itself (peerio.py)."""
    backlog = BACKLOG_MAX if backlog is None or backlog < 0 else backlog
    if addr.kind == "unix":
        listener = _bind_unix(addr.path, backlog, mode, None if acl_users or acl_groups else owner,
                              None if acl_users or acl_groups else group)
        if acl_users or acl_groups:
            from .isolation import set_socket_acl
            try:
                set_socket_acl(addr.path, list(acl_users), list(acl_groups), mode)
            except (OSError, KeyError) as e:
                listener.sock.close()
                raise SocketError("failed to set the ACL of '%s': %s" % (addr.path, e)) from None
        return listener
    return _bind_tcp(addr, backlog)


def _bind_tcp(addr, backlog: int) -> Listener:
    host, port = addr.host, addr.port
    if not host:
        # A bare port listens on every address: dual-stack first, then IPv4 (php-fpm).
        try:
            sock = _tcp_socket(socket.AF_INET6, "::", port, dual_stack=True)
            host = "::"
        except (OSError, SocketError):
            sock = _tcp_socket(socket.AF_INET, "0.0.0.0", port)
            host = "0.0.0.0"
    else:
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise SocketError(f"unable to resolve '{addr.value}': {e.strerror}") from None
        family, _, _, _, sockaddr = infos[0]
        host = sockaddr[0]
        # [::] is every address, IPv4 included, as in php-fpm (test socket-ipv6-any).
        sock = _tcp_socket(family, host, port, dual_stack=host == "::")
    try:
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise SocketError(f"unable to listen on '{addr.value}': {e.strerror} ({e.errno})") from None
    return Listener(sock, addr.value, f"{host}:{port}", None)


def _tcp_socket(family: int, host: str, port: int, dual_stack: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise SocketError(f"unable to bind listening socket for address '{where}': "
                          f"{e.strerror} ({e.errno})") from None
    return sock


def _bind_unix(path: str, backlog: int, mode: int, owner: str | None,
               group: str | None) -> Listener:
    if _someone_listens(path):
        raise SocketError(f"Another pfm instance seems to already listen on {path}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 ^ mode)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise SocketError(f"unable to bind listening socket for address '{path}': "
                          f"{e.strerror} ({e.errno})") from None
    finally:
        os.umask(old_umask)
    try:
        os.chmod(path, mode)
        if owner or group:
            uid, gid = _owner_ids(owner, group)
            os.chown(path, uid, gid)
        sock.listen(backlog)
    except (OSError, KeyError) as e:
        sock.close()
        raise SocketError(f"unable to set up listening socket '{path}': {e}") from None
    return Listener(sock, path, path, path)


def _someone_listens(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError as e:
        return e.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK)
    finally:
        probe.close()


def _owner_ids(owner: str | None, group: str | None) -> tuple[int, int]:
    """Numeric ids are used as they are; a named owner also brings its group."""
    uid = gid = -1
    if owner:
        if owner.isdigit():
            uid = int(owner)
        else:
            pw = pwd.getpwnam(owner)
            uid, gid = pw.pw_uid, pw.pw_gid
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid

