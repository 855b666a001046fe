"""A private redis-server for the job-queue tests: Debian's binary, started on a
free loopback port and a unix socket in a temporary directory, stopped at the end.

It never touches another Redis: nothing persists (no RDB, no AOF), it binds
127.0.0.1 only, and it carries the test session's mark in its environment so
the session finalizer finds it if a teardown was skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import harness

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, workdir: Path):
        self.dir = workdir
        self.socket = str(workdir / "redis.sock")
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    @property
    def unix_url(self) -> str:
        return "redis+unix://%s?db=0" % self.socket

    def start(self, attempts: int = 3, port: int = 0) -> "RedisServer":
        """Start on `port` (a restart), or on a free port."""
        assert os.path.exists(REDIS_SERVER), (
            "redis-server is missing (Debian's redis-server; scripts/setup installs it)")
        for _ in range(attempts):  # a free port can be taken before redis binds it
            self.port = port or harness.free_port()
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--unixsocket", self.socket, "--unixsocketperm", "700",
                 "--dir", str(self.dir), "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--logfile", str(self.dir / "redis.log")],
                env=harness.test_env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if self._wait_ready(10.0):
                return self
            self.stop()
        raise AssertionError("redis-server did not start:\n" + self.log())

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.ping():
                return True
            time.sleep(0.02)
        return False

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log(self) -> str:
        return harness.read_text(self.dir / "redis.log")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
