"""Reading pfm.conf (php-fpm.conf syntax) into plain dataclasses.

The directives themselves are declared once, in `pfm/settings.py`; this
module reads the file, types each value with the setting's parser, then
validates pools the way php-fpm's post-processing does. It stops at the
first error, and every error names the file, the line and the directive
(`ConfigError`). Warnings and notices are collected in `Config.warnings`,
never printed: the caller decides where they go.

Nothing here imports or runs application code: the `app` check locates the
module with importlib's path finders only.

Deliberate differences from php-fpm, each for predictability:

* A relative `include` pattern is taken from the prefix given to `load()`
  (`-p`), or else from the directory of the main configuration file, not
  from php's install prefix. That same "global prefix" is where relative
  `pid` and `error_log` paths start from.
* An included file starts in the section the `include` line is in, and the
  including file continues in its own section afterwards (php-fpm continues
  in whatever section the included file ended in).
* Quoting: "..." keeps `;` and spaces and expands ${VAR} (with \\" \\\\ \\$
  escapes, as php's ini scanner); '...' is taken literally. A quoted "yes"
  is still a boolean (php-fpm rejects it). Bare words are never turned into
  "1"/"" as php's scanner does: `user = none` is the user "none".
* Directive and array names are case-insensitive, `include` too.
* `1.5m` is an error rather than 60 seconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import grp
import ipaddress
import os
import pwd
import re
import sys
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec, PathFinder
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .accesslog import compile_format
from .settings import (
    GLOBAL,
    GLOBAL_SETTINGS,
    POOL,
    POOL_SETTINGS,
    SETTINGS,
    Setting,
    php_only_message,
)

MAX_INCLUDE_DEPTH = 5  # php-fpm: "failed to include more than 5 files recursively"
UNIX_PATH_MAX = 107  # sizeof(sun_path) on Linux is 108, with the terminating NUL
HEADER = "[section]"  # key of a section's header line in `source` maps
COMMAND_LINE = "<command line>"  # the `file` of settings given by quick_config()
DEFAULT_CALLABLE = "app"  # `app = mymod` means `mymod:app` (Flask's convention)

_SECTION_RE = re.compile(r"\[([^\]]*)\]\s*(?:;.*)?")
# Lines end where php's ini scanner ends them, and so where editors do:
# str.splitlines() also breaks at \x0b, \x0c, \x1c-\x1e, \x85, U+2028 and
# U+2029, which would cut a value and make every later line number wrong.
_LINE_END = re.compile(r"\r\n|\r|\n")
_ARRAY_RE = re.compile(r"([A-Za-z0-9_.]+)\s*\[([^\]]*)\]")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_APP_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?")
_URI_RE = re.compile(r"[A-Za-z0-9/_.~-]*")

Source = Tuple[str, int]


class ConfigError(Exception):
    """A configuration error, located.

    `str()` is php-fpm's form: `[/etc/pfm.conf:12] unable to parse value for
    entry 'pm.max_children': is not a valid number (greater or equal than
    zero)`. Without a line (a file that cannot be opened, no pool at all),
    the message stands alone and names what it is about itself. Errors in
    quick_config() settings have neither file nor line: there is no file.
    """

    def __init__(self, message: str, file: Optional[str] = None, line: Optional[int] = None,
                 directive: Optional[str] = None, pool: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = None if file == COMMAND_LINE else file
        self.line = line or None  # line 0 means "not from a line"
        self.directive = directive
        self.pool = pool

    def __str__(self) -> str:
        if self.file and self.line:
            return f"[{self.file}:{self.line}] {self.message}"
        return self.message


# ---- listen addresses -------------------------------------------------------------


@dataclass(frozen=True)
class ListenAddress:
    """Where a pool listens. `host` None means every address (a bare port),
    which php-fpm binds dual-stack on :: first, then on 0.0.0.0."""

    kind: str  # "tcp" or "unix"
    host: Optional[str] = None
    port: Optional[int] = None
    path: Optional[str] = None
    value: str = ""  # the address as written

    def __str__(self) -> str:
        return self.value


def parse_listen(value: str) -> ListenAddress:
    """Parse `127.0.0.1:9000`, `[::1]:9000`, `9000`, `*:9000`, `/run/pfm.sock` or
    `unix:/run/pfm.sock`.

    As php-fpm: a value with a ':' or all digits is TCP, anything else the
    path of a UNIX socket; except that a value starting with '/' is always a
    path here, even with a ':' in it. An unbracketed IPv6 host (`::1:9000`)
    splits at the last ':', as php-fpm does. Raises ValueError.
    """
    text = value.strip()
    if text.startswith("unix:"):  # nginx's spelling (fastcgi_pass unix:/path), also accepted
        text = text[len("unix:"):]
        if not text:
            raise ValueError("invalid listen address 'unix:': a socket path must follow")
        return ListenAddress("unix", path=text, value=text)
    if not text:
        raise ValueError("no listen address have been defined!")
    if text.startswith("/") or (":" not in text and not text.isdigit()):
        return ListenAddress("unix", path=text, value=text)
    if text.isdigit():
        host, port_text = None, text
    elif text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise ValueError(f"invalid listen address '{text}'")
        host, port_text = text[1:end], text[end + 2:]
    else:
        host, _, port_text = text.rpartition(":")
    if host == "*":
        host = None
    elif host == "":
        raise ValueError(f"invalid listen address '{text}'")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port value '{port_text}'")
    return ListenAddress("tcp", host=host, port=int(port_text), value=text)


# ---- the configuration objects -----------------------------------------------------


def _make_config_class(name: str, section: str, first: list, last: list, doc: str) -> type:
    """A dataclass whose attributes are the settings of `section`, in table order.

    Generated so that adding a directive to SETTINGS is the whole change.
    """
    fields: list = list(first)
    lines = [doc, "", "Attributes (see pfm/settings.py):"]
    for s in SETTINGS:
        if s.section not in (section, "any") or not s.stored:
            continue
        default = s.default
        if isinstance(default, (list, dict)):
            spec = field(default_factory=type(default))
        else:
            spec = field(default=default)
        fields.append((s.attr, s.python_type, spec))
        lines.append(f"    {s.attr}: {s.display} -- {s.description}")
    fields.extend(last)
    cls = dataclasses.make_dataclass(name, fields, namespace={"__doc__": "\n".join(lines)})
    cls.__module__ = __name__
    return cls


GlobalConfig = _make_config_class(
    "GlobalConfig", GLOBAL, [],
    [("source", Dict[str, Source], field(default_factory=dict))],
    "The [global] section. `source` maps each directive set in a file to its "
    "(file, line).")

PoolConfig = _make_config_class(
    "PoolConfig", POOL, [("name", str)],
    [("app_module", str, field(default="")),
     ("app_callable", str, field(default=DEFAULT_CALLABLE)),
     ("listen_address", Optional[ListenAddress], field(default=None)),
     ("status_listen_address", Optional[ListenAddress], field(default=None)),
     ("source", Dict[str, Source], field(default_factory=dict))],
    "One pool. Paths are absolute once loaded; `listen_address` is `listen` "
    "parsed; `app_module`/`app_callable` are `app` split. `source` maps each "
    "directive set in a file (`env[NAME]` for env entries, HEADER for the "
    "section header) to its (file, line).")


@dataclass
class Config:
    """The whole configuration, validated: what the master runs."""

    path: Optional[str]  # the main file; None for quick_config() and the demo
    prefix: Optional[str]  # the -p prefix given to load()
    global_: Any  # GlobalConfig
    pools: List[Any]  # [PoolConfig]
    warnings: List[str] = field(default_factory=list)

    def pool(self, name: str) -> Any:
        """The pool called `name` (KeyError if there is none)."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


# ---- reading files ------------------------------------------------------------------


class _Section:
    """Typed values of one section as read so far, with where each came from."""

    def __init__(self, name: str, header: Optional[Source], is_global: bool = False) -> None:
        self.name = name
        self.is_global = is_global
        self.values: Dict[str, Any] = {}
        self.env: Dict[str, str] = {}
        self.source: Dict[str, Source] = {}
        if header:
            self.source[HEADER] = header


class _Reader:
    """php-fpm.conf syntax, line by line, into `_Section`s."""

    def __init__(self, base: str, environ: Mapping[str, str]) -> None:
        self.base = base  # where relative include patterns start
        self.environ = environ
        self.global_ = _Section(GLOBAL, None, is_global=True)
        self.pools: Dict[str, _Section] = {}  # by lower-cased name, in order of appearance
        self.warnings: List[str] = []

    def read_file(self, path: str, section: _Section, depth: int = 0,
                  origin: Optional[Source] = None) -> None:
        """Read `path` starting in `section`; `origin` is the include line."""
        try:
            with open(path, encoding="utf-8-sig") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = f"{e.strerror} ({e.errno})" if isinstance(e, OSError) else "not UTF-8"
            if origin is None:
                raise ConfigError(f"failed to open configuration file '{path}': {reason}",
                                  path) from None
            raise ConfigError(f"Unable to include {path}: {reason}", origin[0], origin[1],
                              "include") from None
        for lineno, raw in enumerate(_LINE_END.split(text), 1):
            section = self._line(path, lineno, raw.strip(), section, depth)

    def _line(self, path: str, lineno: int, line: str, section: _Section,
              depth: int) -> _Section:
        """Handle one line; returns the section the next line is in."""
        if not line or line[0] in ";#":
            return section
        if "\0" in line:
            # No user, path or name can hold one; os and pwd calls would raise ValueError.
            raise ConfigError("syntax error: a NUL character in the line", path, lineno)
        if line[0] == "[":
            match = _SECTION_RE.fullmatch(line)
            name = match.group(1).strip() if match else ""
            if not name:
                raise ConfigError("syntax error: a section header is written [name]",
                                  path, lineno)
            return self.open_section(name, (path, lineno))
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("syntax error: expected 'name = value' or '[section]'",
                              path, lineno)
        try:
            value = _scan_value(rest, self.environ)
        except ValueError as e:
            raise ConfigError(f"syntax error in the value of '{key}': {e}", path, lineno,
                              key) from None
        self.assign(section, key, value, (path, lineno), depth)
        return section

    def open_section(self, name: str, where: Source) -> _Section:
        """[global], a new pool, or an existing pool re-opened (names case-insensitive)."""
        if name.lower() == GLOBAL:
            self.global_.source.setdefault(HEADER, where)
            return self.global_
        pool = self.pools.get(name.lower())
        if pool is None:
            pool = self.pools[name.lower()] = _Section(name, where)
        return pool

    def assign(self, section: _Section, key: str, value: str, where: Source,
               depth: int = 0) -> None:
        """Apply `key = value` (value already unquoted and ${VAR}-expanded)."""
        array = _ARRAY_RE.fullmatch(key)
        if array:
            self._assign_array(section, array.group(1).lower(), array.group(2).strip(),
                               value, where)
            return
        name = key.lower()
        settings = GLOBAL_SETTINGS if section.is_global else POOL_SETTINGS
        setting = settings.get(name)
        if setting is None:
            raise ConfigError(_unknown_entry(name, section), where[0], where[1], name)
        value = self._pool_variable(section, name, value, where)
        if setting.type == "glob":
            self._include(section, value, where, depth)
            return
        if setting.type == "array":
            raise ConfigError(f"You must provide a key for field '{name}': {name}[NAME] = value",
                              where[0], where[1], name)
        try:
            typed = setting.parse(value)
        except ValueError as e:
            raise ConfigError(f"unable to parse value for entry '{name}': {e}",
                              where[0], where[1], name) from None
        section.values[setting.attr] = typed
        section.source[name] = where  # a later line replaces an earlier one silently

    def _assign_array(self, section: _Section, name: str, key: str, value: str,
                      where: Source) -> None:
        php = php_only_message(name, key)
        if php:
            raise ConfigError(php, where[0], where[1], f"{name}[{key}]")
        if section.is_global:
            raise ConfigError("Array are not allowed in the global section", where[0],
                              where[1], name)
        if name != "env":
            hint = " (did you mean 'env'?)" if difflib.get_close_matches(name, ["env"]) else ""
            raise ConfigError(f"unknown directive '{name}'{hint}", where[0], where[1], name)
        directive = f"env[{key}]"
        if not key:
            raise ConfigError("You must provide a key for field 'env'", where[0], where[1],
                              "env")
        if "=" in key:
            raise ConfigError(f"invalid environment variable name '{key}'", where[0],
                              where[1], directive)
        if value == "":
            raise ConfigError(f"unable to parse value for entry '{directive}': empty value",
                              where[0], where[1], directive)
        value = self._pool_variable(section, directive, value, where)
        if value.startswith("$"):
            # php-fpm: a value "$VAR" is the master's VAR, taken at start-up.
            value = self.environ.get(value[1:], "")
        section.env[key] = value
        section.source[directive] = where

    @staticmethod
    def _pool_variable(section: _Section, name: str, value: str, where: Source) -> str:
        """Replace `$pool` with the pool's name (php-fpm)."""
        if "$pool" not in value:
            return value
        if section.is_global:
            raise ConfigError("Can't use '$pool' when the pool is not defined", where[0],
                              where[1], name)
        return value.replace("$pool", section.name)

    def _include(self, section: _Section, pattern: str, where: Source, depth: int) -> None:
        """include = GLOB: matching files in alphabetical order, directories skipped."""
        if not pattern.strip():
            raise ConfigError("unable to parse value for entry 'include': empty value",
                              where[0], where[1], "include")
        if depth >= MAX_INCLUDE_DEPTH:
            raise ConfigError(f"failed to include more than {MAX_INCLUDE_DEPTH} files "
                              "recursively", where[0], where[1], "include")
        pattern = os.path.join(self.base, pattern.strip())
        files = sorted(p for p in glob.glob(pattern) if not os.path.isdir(p))
        if not files:
            self.warnings.append(f"Nothing matches the include pattern '{pattern}' "
                                 f"from {where[0]} at line {where[1]}.")
        for path in files:
            self.read_file(path, section, depth + 1, where)


def _scan_value(text: str, environ: Mapping[str, str]) -> str:
    """The value part of a line: quotes, trailing `;` comment, ${VAR}."""
    text = text.strip()
    if not text or text[0] not in "\"'":
        return _expand(text.split(";", 1)[0].rstrip(), environ, escapes=False)
    quote = text[0]
    i = 1
    while i < len(text) and text[i] != quote:
        i += 2 if quote == '"' and text[i] == "\\" else 1
    if i >= len(text):
        raise ValueError("missing closing quote")
    tail = text[i + 1:].strip()
    if tail and not tail.startswith(";"):
        raise ValueError(f"unexpected text after the closing quote: {tail!r}")
    body = text[1:i]
    return _expand(body, environ, escapes=True) if quote == '"' else body


def _expand(text: str, environ: Mapping[str, str], escapes: bool) -> str:
    """${VAR} and ${VAR:-fallback} (fallback when unset or empty); missing -> "".

    With `escapes` (double quotes), \\" \\\\ and \\$ stand for the character
    itself, so \\${X} is kept literally, as php's ini scanner does.
    """
    out: List[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if escapes and c == "\\" and text[i + 1:i + 2] in ('"', "\\", "$"):
            out.append(text[i + 1])
            i += 2
            continue
        match = _VAR_RE.match(text, i) if c == "$" else None
        if match:
            value = environ.get(match.group(1), "")
            if not value and match.group(2) is not None:
                value = match.group(2)
            out.append(value)
            i = match.end()
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _unknown_entry(name: str, section: _Section) -> str:
    """`unknown entry 'x'`, with the best explanation we have."""
    other = POOL_SETTINGS if section.is_global else GLOBAL_SETTINGS
    if name in other:
        where = "a pool section" if section.is_global else "[global]"
        return f"unknown entry '{name}' ('{name}' belongs in {where})"
    php = php_only_message(name)
    if php:
        return php
    names = GLOBAL_SETTINGS if section.is_global else POOL_SETTINGS
    close = difflib.get_close_matches(name, list(names), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown entry '{name}'{hint}"


# ---- validation ---------------------------------------------------------------------


class _Checker:
    """Raises errors located at the directive at fault (or the section header)."""

    def __init__(self, section: _Section, main: Optional[str]) -> None:
        self.source = section.source
        self.pool = None if section.is_global else section.name
        self.main = main

    def where(self, directive: str) -> Tuple[Optional[str], Optional[int]]:
        file, line = self.source.get(directive) or self.source.get(HEADER) or (self.main, 0)
        return file, line

    def fail(self, directive: str, message: str) -> ConfigError:
        if self.pool is not None:
            message = f"[pool {self.pool}] {message}"
        file, line = self.where(directive)
        return ConfigError(message, file, line, directive, self.pool)

    def note(self, directive: str, message: str) -> str:
        """A warning located like an error."""
        return str(self.fail(directive, message))


def _check_range(check: _Checker, values: Any, setting: Setting) -> None:
    value = getattr(values, setting.attr)
    if value is None:
        return
    low, high, name = setting.minimum, setting.maximum, setting.name
    if low is not None and high is not None:
        if not low <= value <= high:
            raise check.fail(name, f"{name} must be included into [{low},{high}]")
    elif low is not None and value < low:
        if setting.type == "time":
            raise check.fail(name, f"{name}({value}s) must be greater than {low - 1}s")
        if low == 1:
            raise check.fail(name, f"{name}({value}) must be a positive value")
        raise check.fail(name, f"{name}({value}) must be greater or equal than {low}")
    if setting.limit is not None and value > setting.limit:
        raise check.fail(name, f"{name}({value}) is too large: at most {setting.limit}")


def _resolve(base: str, path: Optional[str]) -> Optional[str]:
    """`path` made absolute against `base` (None stays None)."""
    if path is None:
        return None
    return os.path.normpath(os.path.join(base, path))


def _build_global(section: _Section, base: str, main: Optional[str]) -> Any:
    check = _Checker(section, main)
    g = GlobalConfig(**section.values, source=dict(section.source))
    for s in GLOBAL_SETTINGS.values():
        if s.stored:
            _check_range(check, g, s)
    g.pid = _resolve(base, g.pid)
    if g.error_log is not None and g.error_log != "syslog":
        g.error_log = _resolve(base, g.error_log)
    _check_files(check, g, ("pid", "error_log"))
    return g


def _check_files(check: _Checker, values: Any, names: Sequence[str]) -> None:
    """A file pfm writes (log, pid) cannot be an existing directory. A missing
    directory is not checked here: systemd may create it (LogsDirectory=)."""
    for name in names:
        path = getattr(values, name.replace(".", "_"))
        if path and path != "syslog" and os.path.isdir(path):
            raise check.fail(name, f"{name} '{path}' is a directory, not a file")


def _build_pool(section: _Section, base: str, main: Optional[str], warnings: List[str],
                check_app: bool = True) -> Any:
    """PoolConfig from a section, validated in php-fpm's order."""
    check = _Checker(section, main)
    pool = PoolConfig(name=section.name, **section.values, env=dict(section.env),
                      source=dict(section.source))
    _check_paths(check, pool, base)
    _check_listen(check, pool, pool.prefix or base, warnings)
    _check_pm(check, pool, warnings)
    for s in POOL_SETTINGS.values():
        if s.stored and pool.pm in s.pm:
            _check_range(check, pool, s)
    _check_uris(check, pool)
    if pool.access_format:
        try:
            compile_format(pool.access_format)
        except ValueError as e:
            raise check.fail("access.format", str(e)) from None
    if pool.request_slowlog_timeout:
        if not pool.slowlog:
            raise check.fail("request_slowlog_timeout", "'slowlog' must be specified for use "
                             "with 'request_slowlog_timeout'")
        if pool.request_terminate_timeout and (
                pool.request_slowlog_timeout > pool.request_terminate_timeout):
            raise check.fail("request_slowlog_timeout", "'request_slowlog_timeout' "
                             f"({pool.request_slowlog_timeout}) can't be greater than "
                             f"'request_terminate_timeout' ({pool.request_terminate_timeout})")
    _check_identities(check, pool)
    _check_app(check, pool, check_app)
    return pool


def _check_paths(check: _Checker, pool: Any, base: str) -> None:
    """Relative paths start from the pool's prefix, itself relative to `base`.

    `chroot` must be absolute or start with $prefix; `chdir` must be absolute
    (it is a path inside the chroot when there is one).
    """
    if pool.prefix is not None:
        pool.prefix = _resolve(base, pool.prefix)
        if not os.path.isdir(pool.prefix):
            raise check.fail("prefix", f"the prefix '{pool.prefix}' does not exist or is not "
                             "a directory")
    home = pool.prefix or base
    pool.access_log = _resolve(home, pool.access_log)
    pool.slowlog = _resolve(home, pool.slowlog)
    pool.virtualenv = _resolve(home, pool.virtualenv)
    pool.pythonpath = [_resolve(home, p) for p in pool.pythonpath]
    _check_files(check, pool, ("access.log", "slowlog"))
    if pool.chroot is not None:
        if pool.chroot.startswith("$prefix"):
            pool.chroot = home + pool.chroot[len("$prefix"):]
        elif "$prefix" in pool.chroot:
            raise check.fail("chroot", "'$prefix' must be use at the beginning of the value")
        if not pool.chroot.startswith("/"):
            raise check.fail("chroot", f"the chroot path '{pool.chroot}' must start with a '/'")
        pool.chroot = os.path.normpath(pool.chroot)
        if not os.path.isdir(pool.chroot):
            raise check.fail("chroot", f"the chroot path '{pool.chroot}' does not exist or is "
                             "not a directory")
    if pool.chdir is not None:
        if not pool.chdir.startswith("/"):
            raise check.fail("chdir", f"the chdir path '{pool.chdir}' must start with a '/'")
        outside = outside_path(pool, pool.chdir)
        if not os.path.isdir(outside):
            within = f" within the chroot path '{pool.chroot}' ('{outside}')" if pool.chroot \
                else ""
            raise check.fail("chdir", f"the chdir path '{pool.chdir}'{within} does not exist "
                             "or is not a directory")
    if pool.virtualenv is not None and not _site_packages(outside_path(pool, pool.virtualenv)):
        version = "%d.%d" % sys.version_info[:2]
        raise check.fail("virtualenv", f"the virtualenv '{pool.virtualenv}' has no "
                         f"lib/python{version}/site-packages (is it a virtualenv of the "
                         "Python that runs pfm?)")


def outside_path(pool: Any, path: str) -> str:
    """Where a worker-side path is seen from the master (under the chroot)."""
    if not pool.chroot:
        return path
    return os.path.join(pool.chroot, path.lstrip("/"))


def _check_listen(check: _Checker, pool: Any, home: str, warnings: List[str]) -> None:
    """listen and pm.status_listen parsed; a relative UNIX socket path starts from `home`."""
    for name in ("listen", "pm.status_listen"):
        value = getattr(pool, name.replace(".", "_"))
        if value is None:
            if name == "listen":
                raise check.fail(name, "no listen address have been defined!")
            continue
        try:
            address = parse_listen(value)
        except ValueError as e:
            raise check.fail(name, str(e)) from None
        if address.kind == "unix":
            path = os.path.normpath(os.path.join(home, address.path))
            # fsencode: a ${VAR} from the environment may hold undecodable bytes.
            if len(os.fsencode(path)) > UNIX_PATH_MAX:
                raise check.fail(name, f"cannot bind to UNIX socket '{path}' as path is too "
                                 f"long (found length: {len(os.fsencode(path))}, maximal length: "
                                 f"{UNIX_PATH_MAX})")
            if os.path.isdir(path):
                raise check.fail(name, f"{name} '{path}' is a directory, not a UNIX socket")
            address = ListenAddress("unix", path=path, value=path)
            setattr(pool, name.replace(".", "_"), path)
        if name == "listen":
            pool.listen_address = address
        else:
            pool.status_listen_address = address
    for client in pool.listen_allowed_clients:
        try:
            ipaddress.ip_address(client)
        except ValueError:
            raise check.fail("listen.allowed_clients", f"Wrong IP address '{client}' in "
                             "listen.allowed_clients") from None
    if pool.listen_allowed_clients and pool.listen_address.kind == "unix":
        warnings.append(check.note("listen.allowed_clients", "listen.allowed_clients has no "
                                   "effect on a UNIX socket"))


def _check_pm(check: _Checker, pool: Any, warnings: List[str]) -> None:
    """The process manager settings, as php-fpm checks them."""
    if pool.pm is None:
        raise check.fail("pm", "the process manager is missing (static, dynamic or ondemand)")
    if pool.pm_max_children is None or pool.pm_max_children < 1:
        shown = "" if pool.pm_max_children is None else f"({pool.pm_max_children})"
        raise check.fail("pm.max_children", f"pm.max_children{shown} must be a positive value")
    for s in POOL_SETTINGS.values():
        if s.name in check.source and pool.pm not in s.pm:
            warnings.append(check.note(s.name, f"{s.name} has no effect with pm = {pool.pm}"))
    if pool.pm != "dynamic":
        return
    low, high, most = pool.pm_min_spare_servers, pool.pm_max_spare_servers, pool.pm_max_children
    for name, value in (("pm.min_spare_servers", low), ("pm.max_spare_servers", high)):
        if value is None:
            raise check.fail(name, f"{name} must be set with pm = dynamic")
        if value < 1:
            raise check.fail(name, f"{name}({value}) must be a positive value")
        if value > most:
            raise check.fail(name, f"{name}({value}) cannot be greater than "
                             f"pm.max_children({most})")
    if low > high:
        raise check.fail("pm.min_spare_servers", f"pm.min_spare_servers({low}) must not be "
                         f"greater than pm.max_spare_servers({high})")
    if pool.pm_start_servers is None:
        pool.pm_start_servers = low + (high - low) // 2
        warnings.append(f"[pool {pool.name}] pm.start_servers is not set. It's been set to "
                        f"{pool.pm_start_servers}.")
    elif not low <= pool.pm_start_servers <= high:
        raise check.fail("pm.start_servers", f"pm.start_servers({pool.pm_start_servers}) must "
                         f"not be less than pm.min_spare_servers({low}) and not greater than "
                         f"pm.max_spare_servers({high})")


def _check_uris(check: _Checker, pool: Any) -> None:
    """status and ping paths: '/...', at least 2 characters, [alnum]/_-.~ only."""
    for name, label in (("pm.status_path", "status path"), ("ping.path", "ping path")):
        value = getattr(pool, name.replace(".", "_"))
        if value is None:
            continue
        if not value.startswith("/"):
            raise check.fail(name, f"the {label} '{value}' must start with a '/'")
        if len(value) < 2 and not (name == "pm.status_path" and pool.pm_status_listen):
            raise check.fail(name, f"the {label} '{value}' is not long enough")
        if not _URI_RE.fullmatch(value):
            raise check.fail(name, f"the {label} '{value}' must contain only the following "
                             "characters '[alphanum]/_-.~'")


def _check_identities(check: _Checker, pool: Any) -> None:
    """Users and groups must exist (numeric ids are taken as they are), as `php-fpm -t`."""
    users = [("user", pool.user), ("listen.owner", pool.listen_owner)]
    users += [("listen.acl_users", u) for u in pool.listen_acl_users]
    groups = [("group", pool.group), ("listen.group", pool.listen_group)]
    groups += [("listen.acl_groups", g) for g in pool.listen_acl_groups]
    for lookup, kind, entries in ((pwd.getpwnam, "uid for user", users),
                                  (grp.getgrnam, "gid for group", groups)):
        for name, value in entries:
            if value is None or value.isdigit():
                continue
            try:
                lookup(value)
            except KeyError:
                raise check.fail(name, f"cannot get {kind} '{value}'") from None


# ---- the application ---------------------------------------------------------------


def app_search_path(pool: Any) -> List[str]:
    """Directories a worker puts in front of sys.path before importing the app:
    pythonpath, then chdir, then the virtualenv's site-packages (with the plain
    directory lines of its .pth files). Paths are as the worker sees them
    (inside the chroot). The config check searches these, then sys.path."""
    path = list(pool.pythonpath)
    if pool.chdir:
        path.append(pool.chdir)
    if pool.virtualenv:
        for site_dir in _site_packages(outside_path(pool, pool.virtualenv)):
            inside = "/" + os.path.relpath(site_dir, pool.chroot) if pool.chroot else site_dir
            path.append(inside)
            path.extend(_pth_dirs(site_dir, inside, pool.chroot))
    return path


def _site_packages(venv: str) -> List[str]:
    version = "python%d.%d" % sys.version_info[:2]
    site_dir = os.path.join(venv, "lib", version, "site-packages")
    return [site_dir] if os.path.isdir(site_dir) else []


def _pth_dirs(site_dir: str, inside: str, chroot: Optional[str]) -> List[str]:
    """Directory lines of *.pth files (what site.addsitedir adds, minus `import` lines).

    `site_dir` is the directory seen from the master, `inside` the same one
    seen from a worker (they differ under a chroot); the result is as the
    worker sees it."""
    dirs = []
    for pth in sorted(glob.glob(os.path.join(site_dir, "*.pth"))):
        try:
            with open(pth, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            line = line.strip()
            if not line or line.startswith(("#", "import ", "import\t")):
                continue
            seen_by_worker = os.path.normpath(os.path.join(inside, line))
            seen_by_master = seen_by_worker
            if chroot:
                seen_by_master = os.path.join(chroot, seen_by_worker.lstrip("/"))
            if os.path.isdir(seen_by_master):
                dirs.append(seen_by_worker)
    return dirs


def find_module_spec(name: str, search_path: Sequence[str]) -> ModuleSpec:
    """Locate module `name` as `import` would, without running any of its code.

    The top-level package is looked up with PathFinder in `search_path`, then
    each submodule in its parent's `submodule_search_locations`; no package
    `__init__` is executed. Meta-path finders other than PathFinder (editable
    installs of the master's own interpreter) are asked for the top level
    too. Raises ModuleNotFoundError naming the first missing part and where
    it was looked for.
    """
    parts = name.split(".")
    PathFinder.invalidate_caches()  # files may have appeared since the last lookup
    spec = PathFinder.find_spec(parts[0], list(search_path))
    if spec is None:
        spec = _meta_path_spec(parts[0])
    if spec is None:
        raise ModuleNotFoundError(f"no module named '{parts[0]}' (searched: "
                                  f"{', '.join(search_path)})", name=parts[0])
    for i in range(1, len(parts)):
        parent, fullname = ".".join(parts[:i]), ".".join(parts[:i + 1])
        locations = spec.submodule_search_locations
        if locations is None:
            raise ModuleNotFoundError(f"no module named '{fullname}'; '{parent}' is not a "
                                      "package", name=fullname)
        locations = list(locations)
        spec = _find_submodule(fullname, locations)
        if spec is None:
            raise ModuleNotFoundError(f"no module named '{fullname}' (searched: "
                                      f"{', '.join(locations)})", name=fullname)
    return spec


def _find_submodule(fullname: str, locations: List[str]) -> Optional[ModuleSpec]:
    """PathFinder.find_spec(fullname, locations) without its namespace step.

    PathFinder builds a namespace package's path from its parent in
    sys.modules, so it fails (KeyError) for a namespace package inside a
    package that was never imported. The path-entry finders it consults
    are asked directly instead, and namespace portions collected here.
    """
    portions: List[str] = []
    for entry in locations:
        finder = _path_entry_finder(entry)
        spec = finder.find_spec(fullname) if finder is not None else None
        if spec is None:
            continue
        if spec.loader is not None:
            return spec
        portions.extend(spec.submodule_search_locations or [])
    if not portions:
        return None
    spec = ModuleSpec(fullname, None, is_package=True)
    spec.submodule_search_locations = portions
    return spec


def _path_entry_finder(entry: str) -> Any:
    for hook in sys.path_hooks:
        try:
            return hook(entry)
        except ImportError:
            continue
    return None


def _meta_path_spec(top: str) -> Optional[ModuleSpec]:
    if top in sys.builtin_module_names:
        return ModuleSpec(top, None, origin="built-in")
    for finder in sys.meta_path:
        if finder is PathFinder or not hasattr(finder, "find_spec"):
            continue
        try:
            spec = finder.find_spec(top, None)
        except Exception:  # a third-party finder's bug must not hide the real answer
            continue
        if spec is not None:
            return spec
    return None


def _check_app(check: _Checker, pool: Any, find: bool) -> None:
    """`app = package.module[:callable]`, and the module must be findable."""
    if pool.app is None:
        raise check.fail("app", "no application has been defined! "
                         "(app = package.module:callable)")
    app = pool.app.strip()
    if not _APP_RE.fullmatch(app) and not _is_factory_spec(check, app):
        raise check.fail("app", f"app '{pool.app}': must be of the form "
                         "'package.module:callable' or 'package.module:factory()'")
    module, _, attribute = app.partition(":")
    pool.app_module, pool.app_callable = module, attribute or DEFAULT_CALLABLE
    pool.app = f"{module}:{pool.app_callable}"  # the effective value, for the -tt dump
    if not find:
        return
    # '' in sys.path (python -m pfm) is the working directory, where the worker looks too.
    search = [outside_path(pool, p) for p in app_search_path(pool)]
    search += [p or os.getcwd() for p in sys.path]
    try:
        find_module_spec(module, list(dict.fromkeys(search)))
    except ModuleNotFoundError as e:
        raise check.fail("app", f"app '{app}': {e}") from None


def _is_factory_spec(check: _Checker, app: str) -> bool:
    """`package.module:create_app(...)`, gunicorn's application factory
    (parsed by pfm/app.py, never called here)."""
    from .app import parse_factory

    module, sep, attribute = app.partition(":")
    if not sep or not _APP_RE.fullmatch(module):
        return False
    try:
        return parse_factory(attribute) is not None
    except ValueError as e:
        raise check.fail("app", f"app '{app}': {e}") from None


# ---- building a Config ----------------------------------------------------------------


def _finish(reader: _Reader, path: Optional[str], prefix: Optional[str], base: str,
            check_app: bool = True) -> Config:
    """Global then pool validation, then the checks across pools."""
    warnings = list(reader.warnings)
    g = _build_global(reader.global_, base, path)
    if not reader.pools:
        raise ConfigError("No pool defined. at least one pool section must be specified in "
                          "config file", path)
    pools = [_build_pool(section, base, path, warnings, check_app)
             for section in reader.pools.values()]
    seen: Dict[str, str] = {}
    for pool, section in zip(pools, reader.pools.values()):
        check = _Checker(section, path)
        for name, address in (("listen", pool.listen_address),
                              ("pm.status_listen", pool.status_listen_address)):
            if address is None:
                continue
            key = _address_key(address)
            if key in seen and seen[key] == pool.name:
                raise check.fail(name, f"{name} must differ from listen")
            if key in seen:
                raise check.fail(name, "unable to set listen address as it's already used in "
                                 f"another pool '{seen[key]}'")
            seen[key] = pool.name
    if g.process_max:
        initial = sum(p.pm_max_children if p.pm == "static" else
                      p.pm_start_servers if p.pm == "dynamic" else 0 for p in pools)
        if g.process_max < initial:
            raise _Checker(reader.global_, path).fail(
                "process.max", f"process.max ({g.process_max}) must not be less than the total "
                f"number of children that start initially across all pools ({initial})")
    return Config(path, prefix, g, pools, warnings)


def _address_key(address: ListenAddress) -> str:
    if address.kind == "unix":
        return address.path or ""
    host = address.host or "*"
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        host = host.lower()
    return f"{host}:{address.port}"


def load(path: str, prefix: Optional[str] = None,
         environ: Optional[Mapping[str, str]] = None, check_app: bool = True) -> Config:
    """Read, type and validate the configuration file `path`.

    `prefix` is the -p prefix: relative include patterns, pid, error_log and
    pool prefixes start from it, or from the directory of `path` without one.
    `environ` feeds ${VAR} and env[X] = $VAR (default os.environ).
    `check_app` False skips looking for the applications (`pfm status`, `top`
    and `ping` only need the pools' addresses, and may run as an operator who
    cannot read the application's code). Raises ConfigError at the first error.
    """
    path = os.path.abspath(path)
    if prefix is not None and not os.path.isdir(prefix):
        raise ConfigError(f"the global prefix '{prefix}' does not exist or is not a directory")
    base = os.path.abspath(prefix) if prefix is not None else os.path.dirname(path)
    reader = _Reader(base, os.environ if environ is None else environ)
    reader.read_file(path, reader.global_)
    return _finish(reader, path, prefix, base, check_app)


def _from_values(pool_values: Mapping[str, Any], global_values: Mapping[str, Any],
                 check_app: bool = True) -> Config:
    """A one-pool Config from attribute names (`pm_max_children=4`), as if written
    in a file: values are turned into text and go through the same parsers."""
    reader = _Reader(os.getcwd(), os.environ)
    pool = reader.open_section("www", (COMMAND_LINE, 0))
    for values, section in ((global_values, reader.global_), (pool_values, pool)):
        for attr, value in values.items():
            if value is None:
                continue
            if attr == "env" and section is pool:
                for key, item in dict(value).items():
                    reader.assign(pool, f"env[{key}]", str(item), (COMMAND_LINE, 0))
                continue
            reader.assign(section, _directive(attr), _as_text(value), (COMMAND_LINE, 0))
    return _finish(reader, None, None, os.getcwd(), check_app)


_BY_ATTR = {s.attr: s.name for s in SETTINGS}


def _directive(attr: str) -> str:
    if attr not in _BY_ATTR:
        raise ConfigError(f"unknown setting '{attr}'", COMMAND_LINE, None, attr)
    return _BY_ATTR[attr]


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def quick_config(app: str, listen: str, workers: int = 2, **overrides: Any) -> Config:
    """One pool 'www' from the command line (`pfm --app mod:app --listen ADDR`).

    Foreground, log on stderr, pm = static with `workers` workers, the current
    directory on the pythonpath (as gunicorn does) and the caller's
    environment passed on (clear_env = no). `overrides` are attribute names,
    e.g. `pm_max_requests=100` or `log_level="debug"`; a name both sections
    have (rlimit_files, rlimit_core) goes to the pool. Raises ConfigError.
    """
    pool_values: Dict[str, Any] = {"listen": listen, "pm": "static", "pm_max_children": workers,
                                   "app": app, "clear_env": False, "pythonpath": [os.getcwd()]}
    global_values: Dict[str, Any] = {"daemonize": False}
    pool_attrs = {s.attr for s in POOL_SETTINGS.values()}
    for attr, value in overrides.items():
        if attr in pool_attrs:
            pool_values[attr] = value
        else:
            global_values[attr] = value
    return _from_values(pool_values, global_values)


def builtin_demo_config() -> Config:
    """What `pfm` runs with no configuration file: the demo app (pfm.demo:app)
    in one static pool of 2 workers on 127.0.0.1:9000, in the foreground,
    logging to stderr."""
    return _from_values({"listen": "127.0.0.1:9000", "pm": "static", "pm_max_children": 2,
                         "app": "pfm.demo:app"}, {"daemonize": False}, check_app=False)


# ---- pfm -tt --------------------------------------------------------------------------


def dump(config: Config) -> List[str]:
    """The effective configuration as `php-fpm -tt` prints it: `[global]`, then
    tab-indented `key = value` lines, a line with a single space after each
    section, then one block per pool. The caller logs each line as a NOTICE."""
    lines = ["[global]"]
    for s in SETTINGS:
        if s.section == GLOBAL and s.stored:
            lines.append(f"\t{s.name} = {s.format(getattr(config.global_, s.attr))}")
    lines.append(" ")
    for pool in config.pools:
        lines.append(f"[{pool.name}]")
        for s in SETTINGS:
            if s.section != POOL or not s.stored:
                continue
            if s.type == "array":
                lines.extend(f"\t{s.name}[{k}] = {v}" for k, v in getattr(pool, s.attr).items())
            else:
                lines.append(f"\t{s.name} = {s.format(getattr(pool, s.attr))}")
        lines.append(" ")
    return lines
