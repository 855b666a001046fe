"""How many connections wait in a listening socket's accept queue.

TCP: getsockopt(TCP_INFO) on the listening socket, where Linux reports the
queue in tcpi_unacked and the backlog in tcpi_sacked (php-fpm reads the same).
Unix sockets: php-fpm always says 0; Linux exposes the queue through the
sock_diag netlink interface (UNIX_DIAG_RQLEN), which is read here. None means
unknown, never a false 0.
"""

from __future__ import annotations

import os
import socket
import struct

_TCP_INFO_LEN = 104
_TCPI_UNACKED = 24        # offset of tcpi_unacked (u32) in struct tcp_info
_TCPI_SACKED = 28

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_DONE, _NLMSG_ERROR = 3, 2
_TCP_LISTEN = 10
_UDIAG_SHOW_RQLEN = 0x10
_UNIX_DIAG_RQLEN = 4
_NLMSG = struct.Struct("=IHHII")                # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")     # family, proto, pad, states, ino, show, cookie
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")      # family, type, state, pad, ino, cookie
_RTATTR = struct.Struct("=HH")


def queue(sock: socket.socket) -> tuple[int | None, int | None]:
    """(connections waiting, backlog), each None where Linux does not say."""
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
            return (struct.unpack_from("=I", info, _TCPI_UNACKED)[0],
                    struct.unpack_from("=I", info, _TCPI_SACKED)[0])
        if sock.family == socket.AF_UNIX:
            return _unix_queue(os.fstat(sock.fileno()).st_ino)
    except OSError:
        pass
    return None, None


def _unix_queue(inode: int) -> tuple[int | None, int | None]:
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                       _NETLINK_SOCK_DIAG)
    try:
        req = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, 0,
                                  _UDIAG_SHOW_RQLEN, 0, 0)
        nl.send(_NLMSG.pack(_NLMSG.size + len(req), _SOCK_DIAG_BY_FAMILY,
                            _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + req)
        nl.settimeout(1.0)
        while True:
            data = nl.recv(65536)
            off = 0
            while off + _NLMSG.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
                if kind in (_NLMSG_DONE, _NLMSG_ERROR) or length < _NLMSG.size:
                    return None, None
                found = _parse_unix_msg(data, off + _NLMSG.size, off + length, inode)
                if found is not None:
                    return found
                off += (length + 3) & ~3
    finally:
        nl.close()


def _parse_unix_msg(data: bytes, start: int, end: int, inode: int):
    _fam, _type, _state, _pad, ino, _c0, _c1 = _UNIX_DIAG_MSG.unpack_from(data, start)
    if ino != inode:
        return None
    off = start + _UNIX_DIAG_MSG.size
    while off + _RTATTR.size <= end:
        rta_len, rta_type = _RTATTR.unpack_from(data, off)
        if rta_len < _RTATTR.size:
            break
        if rta_type == _UNIX_DIAG_RQLEN:
            return struct.unpack_from("=II", data, off + _RTATTR.size)
        off += (rta_len + 3) & ~3
    return None, None
