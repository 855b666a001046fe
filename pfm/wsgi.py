"""WSGI (PEP 3333) on top of FastCGI params: the environ, wsgi.input,
start_response and the response header block.

No sockets here: the worker hands in a `pull` callable that yields the next
chunk of the request body, and a `send` callable for output bytes.
"""

from __future__ import annotations

import sys
from typing import Callable

# nginx passes every request header as HTTP_*, Content-Type and Content-Length
# included; CGI (and so PEP 3333) has them only without the prefix.
_DROP = ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH")

# What a request without them (cgi-fcgi, a bare client) still needs to be valid WSGI.
_DEFAULTS = {"REQUEST_METHOD": "GET", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
             "SERVER_PROTOCOL": "HTTP/1.0", "QUERY_STRING": ""}


def make_environ(params: dict[str, str], base: dict) -> dict:
    """The environ for one request: `base` (the per-worker constant keys) plus
    the params, with SCRIPT_NAME/PATH_INFO split as WSGI means them.

    nginx's stock `fastcgi_params` sends SCRIPT_NAME=$fastcgi_script_name (the
    whole decoded path) and no PATH_INFO. For WSGI the application is then
    mounted at the root: SCRIPT_NAME '' and PATH_INFO the path. When nginx sends
    a PATH_INFO (fastcgi_split_path_info, or a mount point set by hand), the
    pair is used as given, minus a trailing PATH_INFO repeated in SCRIPT_NAME.
    """
    # The base's wsgi.* and pfm.* keys win over params of the same name: what
    # a FastCGI peer sends is CGI variables, never the server's own objects.
    environ = params.copy()
    environ.update(base)
    for key in _DROP:
        environ.pop(key, None)
    for key, value in _DEFAULTS.items():
        if key not in environ:
            environ[key] = value
    script_name = environ.get("SCRIPT_NAME", "")
    path_info = environ.get("PATH_INFO", "")
    if path_info:
        if script_name.endswith(path_info):
            script_name = script_name[: len(script_name) - len(path_info)]
    else:
        path_info, script_name = script_name, ""
        if not path_info:
            uri = environ.get("REQUEST_URI", "")
            path_info = uri.split("?", 1)[0] if uri else ""
    environ["SCRIPT_NAME"] = script_name.rstrip("/")
    environ["PATH_INFO"] = path_info
    https = environ.get("HTTPS", "off").lower() in ("on", "1")
    if https or environ.get("REQUEST_SCHEME") == "https":
        environ["wsgi.url_scheme"] = "https"
    return environ


class InputStream:
    """wsgi.input: reads the request body from FCGI_STDIN records as the
    application asks for it, so a large upload never sits in memory whole."""

    __slots__ = ("_pull", "_buf", "_eof")

    def __init__(self, pull: Callable[[], bytes], data: bytes = b"", eof: bool = False):
        self._pull = pull      # returns the next non-empty chunk, or b"" at the end
        self._buf = data       # what the worker read ahead before the app ran
        self._eof = eof        # ... and whether that was the whole body

    def _more(self) -> bool:
        if self._eof:
            return False
        chunk = self._pull()
        if not chunk:
            self._eof = True
            return False
        self._buf = self._buf + chunk if self._buf else chunk
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buf]
            self._buf = b""
            while not self._eof:
                chunk = self._pull()
                if not chunk:
                    self._eof = True
                    break
                parts.append(chunk)
            return b"".join(parts)
        while len(self._buf) < size and self._more():
            pass
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl >= 0:
                end = nl + 1
                break
            if size is not None and 0 <= size <= len(self._buf):
                end = size
                break
            start = len(self._buf)
            if not self._more():
                end = len(self._buf)
                break
        if size is not None and 0 <= size < end:
            end = size
        line, self._buf = self._buf[:end], self._buf[end:]
        return line

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drain(self) -> None:
        """Consume what the application left unread, keeping the connection in step."""
        self._buf = b""
        while self._more():
            self._buf = b""


class ErrorStream:
    """wsgi.errors: text lines go to the pfm error log, tagged with the pool and pid."""

    def __init__(self, emit: Callable[[str], None]):
        self._emit = emit
        self._partial = ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("wsgi.errors.write() takes str, not %s" % type(text).__name__)
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._emit(line)
        return len(text)

    def writelines(self, seq) -> None:
        for text in seq:
            self.write(text)

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = ""


class FileWrapper:
    """wsgi.file_wrapper: iterates a file in blocks and closes it with the response."""

    def __init__(self, filelike, blksize: int = 65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read, size = self.filelike.read, self.blksize
        while True:
            data = read(size)
            if not data:
                return
            yield data


# The largest CONTENT_LENGTH taken: what a signed 64-bit field holds (the
# scoreboard's; nginx's own off_t). More is a crafted request, not an upload.
MAX_CONTENT_LENGTH = (1 << 63) - 1


def content_length(value: str) -> int | None:
    """CONTENT_LENGTH as a number, or None if it is not one: HTTP allows
    ASCII digits only (RFC 9110, 8.6), where int() would also take a sign,
    spaces, underscores and any unicode decimal digit. nginx never forwards
    another, so only a crafted request has one."""
    if not (value.isdigit() and value.isascii()):
        return None
    if len(value) > 19:                   # beyond 2**63 (and int()'s 4300-digit limit)
        value = value.lstrip("0")
        if len(value) > 19:
            return None
    n = int(value or "0")
    return n if n <= MAX_CONTENT_LENGTH else None


def header_block(status: str, headers: list[tuple[str, str]]) -> bytes:
    """The CGI response header block nginx reads from FCGI_STDOUT."""
    lines = ["Status: ", status, "\r\n"]
    for name, value in headers:
        lines += (name, ": ", value, "\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def check_headers(status: str, headers) -> None:
    """PEP 3333's rules that a broken app would otherwise push onto nginx."""
    if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit() \
            or status[3] != " ":
        raise ValueError("WSGI status must be a str like '200 OK', got %r" % (status,))
    if type(headers) is not list:
        raise TypeError("WSGI response headers must be a list, got %s" % type(headers).__name__)
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise TypeError("WSGI response header must be a (name, value) tuple: %r" % (item,))
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise TypeError("WSGI header names and values must be str: %r" % (item,))
        if "\n" in value or "\r" in value or ":" in name or "\n" in name:
            raise ValueError("WSGI header contains a line break or bad name: %r" % (item,))


def reraise(exc_info) -> None:
    """start_response(..., exc_info) after the headers went out: PEP 3333 says re-raise."""
    raise exc_info[1].with_traceback(exc_info[2])


def base_environ(pool: str, errors) -> dict:
    """The keys that are the same for every request a worker serves."""
    return {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": errors,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
        "pfm.pool": pool,
        "pfm.python": sys.version.split()[0],
    }
