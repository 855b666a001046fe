"""The error log in php-fpm's line format.

One `Log` per process tree: the master opens the file, pool managers and
workers inherit the descriptor and append to it. Every line is one write(2) on
an O_APPEND descriptor, so lines from many processes never interleave.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

DEBUG, NOTICE, WARNING, ERROR, ALERT = 10, 20, 30, 40, 50

LEVELS = {"debug": DEBUG, "notice": NOTICE, "warning": WARNING, "warn": WARNING,
          "error": ERROR, "alert": ALERT}
LEVEL_NAMES = {DEBUG: "DEBUG", NOTICE: "NOTICE", WARNING: "WARNING", ERROR: "ERROR",
               ALERT: "ALERT"}


# The C locale's month names, which php-fpm's dates use whatever LC_TIME says
# (strftime's %b would follow it); the status page's dates use them too.
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def timestamp(now: float | None = None) -> str:
    """php-fpm's `28-Nov-2026 18:41:10`, local time, C month names."""
    t = time.localtime(now)
    return "%02d-%s-%04d %02d:%02d:%02d" % (
        t.tm_mday, MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


class Log:
    """Writes `[time] LEVEL: message` lines to a file or to stderr.

    `path=None` means stderr. `also_stderr` mirrors lines to stderr until the
    master is ready, as php-fpm does, so a failing start is visible on the
    terminal even when the log goes to a file.
    """

    def __init__(self, path: str | None = None, level: str = "notice", limit: int = 1024,
                 syslog_ident: str = "pfm", syslog_facility: str = "daemon"):
        self.path = path
        self.level = LEVELS[level.lower()]
        self.limit = limit
        self.also_stderr = False
        self.syslog = path == "syslog"
        if self.syslog:
            import syslog
            syslog.openlog(syslog_ident, syslog.LOG_PID | syslog.LOG_CONS,
                           getattr(syslog, "LOG_" + syslog_facility.upper()))
            self.path = None
        # Our own descriptor even for stderr: a worker's fd 2 may be pointed at
        # a pipe or /dev/null (catch_workers_output) without losing the log.
        self.to_stderr = not path
        self.fd = self._open(path) if self.path else -1 if self.syslog else os.dup(2)

    @staticmethod
    def _open(path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def reopen(self) -> None:
        """Reopen the file in place (logrotate). The descriptor number stays,
        so processes that inherited it write to the new file too. Raises
        OSError (the old file stays in use); stderr and syslog have nothing
        to reopen."""
        if not self.path:
            return
        fd = self._open(self.path)
        os.dup2(fd, self.fd, inheritable=False)
        os.close(fd)

    def close(self) -> None:
        if self.fd > 2:
            os.close(self.fd)
            self.fd = -1

    def write(self, level: int, message: str) -> None:
        if level < self.level:
            return
        line = "[%s] %s: %s" % (timestamp(), LEVEL_NAMES[level], message)
        if len(line) > self.limit:
            line = line[: self.limit - 3] + "..."
        data = (line + "\n").encode("utf-8", "backslashreplace")
        if self.syslog:
            self._syslog(level, message)
        else:
            self._write(self.fd, data)
        if self.also_stderr and not self.to_stderr:
            self._write(2, data)

    def _syslog(self, level: int, message: str) -> None:
        import syslog
        priority = {DEBUG: syslog.LOG_DEBUG, NOTICE: syslog.LOG_NOTICE,
                    WARNING: syslog.LOG_WARNING, ERROR: syslog.LOG_ERR,
                    ALERT: syslog.LOG_ALERT}[level]
        syslog.syslog(priority, "[%s] %s" % (LEVEL_NAMES[level], message[: self.limit]))

    def raw(self, text: str) -> None:
        """A line exactly as given (decorate_workers_output = no)."""
        if self.syslog:
            self._syslog(NOTICE, text)
        else:
            self._write(self.fd, (text + "\n").encode("utf-8", "backslashreplace"))

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        try:
            os.write(fd, data)
        except OSError:
            pass  # a full disk or closed stderr must never take a process down

    def debug(self, message: str) -> None:
        self.write(DEBUG, message)

    def notice(self, message: str) -> None:
        self.write(NOTICE, message)

    def warning(self, message: str) -> None:
        self.write(WARNING, message)

    def error(self, message: str) -> None:
        self.write(ERROR, message)

    def alert(self, message: str) -> None:
        self.write(ALERT, message)

    def exception(self, prefix: str, headline: str, level: int = ERROR) -> None:
        """The exception being handled, as every crash report of pfm's is
        written: `prefix headline`, then its traceback a line each under the
        same prefix (e.g. "[pool www] child 123:"), so grep finds them all."""
        self.write(level, "%s %s" % (prefix, headline))
        for line in traceback.format_exc().rstrip("\n").split("\n"):
            self.write(level, "%s %s" % (prefix, line))


def stderr_line(level: int, message: str) -> None:
    """A log-formatted line on stderr, for errors before any Log exists."""
    sys.stderr.write("[%s] %s: %s\n" % (timestamp(), LEVEL_NAMES[level], message))
    sys.stderr.flush()
