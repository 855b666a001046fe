"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

The master takes the socket address out of its environment at start, so no
pool manager, worker or application ever sees it."""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, environ=os.environ):
        address = environ.pop("NOTIFY_SOCKET", "") or ""
        self.env_value = address      # as systemd wrote it (handed on by a re-exec)
        if address.startswith("@"):
            address = "\0" + address[1:]     # abstract namespace
        self.address = address or None
        watchdog = environ.pop("WATCHDOG_USEC", "")
        environ.pop("WATCHDOG_PID", None)
        self.watchdog_interval = int(watchdog) / 2e6 if watchdog.isdigit() else 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        if not self.address:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.address)
            sock.sendall(message.encode("utf-8"))
            return True
        except OSError:
            return False
        finally:
            sock.close()
