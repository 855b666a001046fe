"""Every configuration directive pfm understands, declared once.

`SETTINGS` is the single table the parser (`pfm/config.py`), the `pfm -tt`
dump, the error messages and the man page's directive list are all built
from, so they cannot drift apart (gunicorn's config module is the model).
A directive is added here and nowhere else: the attribute appears on
`GlobalConfig`/`PoolConfig`, the parser accepts it, the dump prints it.

This module holds declarations and value parsers only: no file access.
"""

from __future__ import annotations

import re
import resource
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

GLOBAL, POOL, ANY = "global", "pool", "any"

PM_MODES = ("static", "dynamic", "ondemand")
LOG_LEVELS = ("debug", "notice", "warning", "error", "alert")
SYSLOG_FACILITIES = (
    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news", "syslog",
    "user", "uucp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
)

# rlimit_* = unlimited is stored as the value setrlimit(2) understands.
UNLIMITED = resource.RLIM_INFINITY

# The largest value of each numeric type that the system calls and shared
# structures it ends up in can hold: a C int (listen(2)'s backlog, counts),
# seconds that fit a C int, a signed 64-bit size, and a limit setrlimit(2)
# takes as a long long (unlimited is stored as -1). A bigger number is a
# config error naming its line, never an OverflowError at start-up.
INT_MAX = 2 ** 31 - 1
TYPE_MAXIMUM = {"int": INT_MAX, "time": INT_MAX, "size": 2 ** 63 - 1,
                "rlimit": 2 ** 63 - 1}
PID_MAX_LIMIT = 4194304   # Linux's ceiling on pids: no pool can have more workers

TRUE_WORDS = frozenset({"1", "yes", "on", "true"})
# "null" is accepted because php's ini scanner maps it to false as well.
FALSE_WORDS = frozenset({"", "0", "no", "off", "false", "none", "null"})

# Value types. Each has a parser (raw text -> value) and a formatter (value ->
# text for the -tt dump); "array" (env[NAME]) and "glob" (include) are handled
# by the reader itself.
TYPES = ("str", "path", "address", "bool", "int", "time", "size", "octal", "enum",
         "loglevel", "list", "pathlist", "rlimit", "array", "glob")

_DIGITS = re.compile(r"-?[0-9]+")
_NUMBER_SUFFIX = re.compile(r"([0-9]+)(.*)")
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# K/M/G as in php.ini's shorthand (memory_limit = 128M): binary multiples,
# case-insensitive. KB/MB/GB are refused rather than guessed (1000 or 1024?).
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def parse_bool(raw: str) -> bool:
    """yes/on/true/1 or no/off/false/none/0/empty, any case (php's ini words)."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("invalid boolean value")


def parse_int(raw: str) -> int:
    """An optional '-' then digits only; ranges are checked after parsing (php-fpm)."""
    text = raw.strip()
    if not _DIGITS.fullmatch(text):
        raise ValueError("is not a valid number (greater or equal than zero)")
    return int(text)


def parse_time(raw: str) -> int:
    """Whole seconds from `N`, `Ns`, `Nm`, `Nh` or `Nd` (php-fpm's units).

    Stricter than php-fpm, which reads the number with atoi() so `1.5m` is 60 s:
    here `1.5m` is refused instead of silently truncated.
    """
    match = _NUMBER_SUFFIX.fullmatch(raw.strip())
    if not match:
        raise ValueError("invalid time value")
    unit = _TIME_UNITS.get(match.group(2))
    if unit is None:
        raise ValueError("unknown suffix used in time value")
    return int(match.group(1)) * unit


def parse_size(raw: str) -> int:
    """Bytes from `N`, `NK`, `NM` or `NG` (×1024 each, any case)."""
    match = _NUMBER_SUFFIX.fullmatch(raw.strip())
    if not match:
        raise ValueError("invalid size value")
    unit = _SIZE_UNITS.get(match.group(2).lower())
    if unit is None:
        raise ValueError("unknown suffix used in size value (use K, M or G)")
    return int(match.group(1)) * unit


def parse_octal(raw: str) -> int:
    """File mode bits such as 0660 (the leading 0 is optional)."""
    text = raw.strip()
    if not re.fullmatch(r"[0-7]{1,5}", text) or int(text, 8) > 0o7777:
        raise ValueError("is not a valid octal mode (e.g. 0660)")
    return int(text, 8)


def parse_rlimit(raw: str) -> int:
    """A count, or `unlimited` (stored as resource.RLIM_INFINITY)."""
    text = raw.strip()
    if text.lower() == "unlimited":
        return UNLIMITED
    value = parse_int(text)
    if value < 0:
        raise ValueError("must be greater than zero or 'unlimited'")
    return value


def parse_list(raw: str) -> List[str]:
    """Comma-separated items, blanks dropped."""
    return [item.strip() for item in raw.split(",") if item.strip()]


def parse_pathlist(raw: str) -> List[str]:
    """Directories separated by ':' (as PYTHONPATH) or ',' (as other pfm lists)."""
    return [item.strip() for item in re.split(r"[,:]", raw) if item.strip()]


@dataclass(frozen=True)
class Setting:
    """One directive: how it is written, parsed, defaulted and documented."""

    name: str                 # as written in the file, e.g. "pm.max_children"
    section: str              # GLOBAL, POOL, or ANY (only `include`)
    type: str                 # one of TYPES
    default: Any
    description: str          # one sentence or two of prose, for pfm.conf(5)
    pm: Tuple[str, ...] = PM_MODES  # the pm modes a pool setting has an effect with
    choices: Tuple[str, ...] = ()   # for "enum" and "loglevel"
    mandatory: bool = False
    minimum: Optional[int] = None   # checked after parsing, only when the setting applies
    maximum: Optional[int] = None
    invalid: str = "invalid value"  # parse error for an enum value outside `choices`

    @property
    def attr(self) -> str:
        """Python attribute name: `pm.max_children` -> `pm_max_children`."""
        return self.name.replace(".", "_")

    @property
    def display(self) -> str:
        """The name as a user writes it: `env[NAME]` for arrays."""
        return f"{self.name}[NAME]" if self.type == "array" else self.name

    @property
    def limit(self) -> Optional[int]:
        """The largest value accepted: `maximum`, else what the type can hold."""
        return self.maximum if self.maximum is not None else TYPE_MAXIMUM.get(self.type)

    @property
    def unit(self) -> Optional[str]:
        """The unit a bare number means, for documentation."""
        return {"time": "seconds", "size": "bytes"}.get(self.type)

    @property
    def stored(self) -> bool:
        """Whether the setting becomes a config attribute (`include` does not)."""
        return self.type != "glob"

    @property
    def python_type(self) -> Any:
        """The attribute's type on GlobalConfig/PoolConfig."""
        if self.type in ("list", "pathlist"):
            return List[str]
        if self.type == "array":
            return Dict[str, str]
        base = {"bool": bool, "int": int, "time": int, "size": int, "octal": int,
                "rlimit": int}.get(self.type, str)
        return base if self.default is not None else Optional[base]

    def parse(self, raw: str) -> Any:
        """Turn the text of a value into its typed value; raises ValueError
        with php-fpm's wording. An empty string/path value means the default."""
        kind = self.type
        if kind in ("str", "path", "address"):
            return raw if raw != "" else self.default
        if kind in ("enum", "loglevel"):
            word = raw.strip().lower()
            if kind == "loglevel" and word == "warn":
                word = "warning"
            if word not in self.choices:
                raise ValueError(self.invalid)
            return word
        return _PARSERS[kind](raw)

    def format(self, value: Any) -> str:
        """The value as `pfm -tt` prints it (php-fpm's dump conventions)."""
        if value is None or value == [] or value == {}:
            return "undefined"
        kind = self.type
        if kind == "bool":
            return "yes" if value else "no"
        if kind == "time":
            return f"{value}s"
        if kind == "octal":
            return f"{value:04o}"
        if kind == "loglevel":
            return value.upper()
        if kind == "rlimit" and value == UNLIMITED:
            return "unlimited"
        if kind in ("list", "pathlist"):
            return ",".join(value)
        return str(value)


_PARSERS = {
    "bool": parse_bool, "int": parse_int, "time": parse_time, "size": parse_size,
    "octal": parse_octal, "rlimit": parse_rlimit, "list": parse_list,
    "pathlist": parse_pathlist,
}

_DYNAMIC = ("dynamic",)
_ONDEMAND = ("ondemand",)


def _g(name: str, type_: str, default: Any, description: str, **kw: Any) -> Setting:
    return Setting(name, GLOBAL, type_, default, description, **kw)


def _p(name: str, type_: str, default: Any, description: str, **kw: Any) -> Setting:
    return Setting(name, POOL, type_, default, description, **kw)


SETTINGS: Tuple[Setting, ...] = (
    # ---- [global] -------------------------------------------------------------
    _g("pid", "path", None,
       "Path of the PID file the master writes once it has started and removes when it "
       "exits. Unset: no PID file."),
    _g("error_log", "path", None,
       "Where the master and its pools log: the path of a file, or syslog to send the "
       "messages to syslog(3). Unset: standard error."),
    _g("syslog.ident", "str", "pfm",
       "Name prepended to every message when error_log = syslog."),
    _g("syslog.facility", "enum", "daemon",
       "Syslog facility of the messages when error_log = syslog: auth, authpriv, cron, "
       "daemon, ftp, kern, lpr, mail, news, syslog, user, uucp or local0 to local7.",
       choices=SYSLOG_FACILITIES),
    _g("log_level", "loglevel", "notice",
       "Least severe level of message written to the error log: alert, error, warning "
       "(or warn), notice or debug.",
       choices=LOG_LEVELS, invalid="invalid value for 'log_level'"),
    _g("log_limit", "int", 1024,
       "Longest log line in bytes, prefix included; longer worker output is wrapped onto "
       "several lines and longer messages are cut. At least 512.",
       minimum=512),
    _g("emergency_restart_threshold", "int", 0,
       "Reload the master gracefully when this many workers have died of SIGSEGV or SIGBUS "
       "within emergency_restart_interval. 0 disables emergency restarts.",
       minimum=0),
    _g("emergency_restart_interval", "time", 0,
       "Time window counted by emergency_restart_threshold. 0 disables emergency restarts.",
       minimum=0),
    _g("process_control_timeout", "time", 0,
       "Time the pools are given to stop gracefully on a reload or a graceful stop before "
       "their workers are killed."),
    _g("process.max", "int", 0,
       "Most worker processes across all pools together. 0 means no limit.",
       minimum=0),
    _g("daemonize", "bool", True,
       "Detach from the terminal and run in the background. The -F and -D options "
       "override it."),
    _g("rlimit_files", "rlimit", None,
       "Open file descriptor limit (RLIMIT_NOFILE) of the master, inherited by the pools, "
       "or unlimited. Unset: the limit pfm was started with."),
    _g("rlimit_core", "rlimit", None,
       "Largest core file (RLIMIT_CORE) of the master in bytes, inherited by the pools, "
       "or unlimited. Unset: the limit pfm was started with."),
    _g("systemd_interval", "time", 10,
       "How often the master reports its status to systemd when the unit has "
       "Type=notify. 0 disables the reports.",
       minimum=0),
    Setting("include", ANY, "glob", None,
            "Read the files matching this glob pattern at this point, in alphabetical "
            "order; each starts in the section the include appears in. A relative pattern "
            "is taken from the prefix given with -p, or else from the directory of the "
            "main configuration file. Allowed in any section."),

    # ---- pools ----------------------------------------------------------------
    _p("prefix", "path", None,
       "Directory the pool's relative paths start from (its UNIX socket, access.log, "
       "slowlog, pythonpath, virtualenv, and $prefix in chroot). Itself relative to the "
       "global prefix. Unset: the global prefix."),
    _p("user", "str", None,
       "User (name or uid) the pool's processes run as. Required when the master runs as "
       "root; ignored otherwise."),
    _p("group", "str", None,
       "Group (name or gid) the pool's processes run as. Unset: the user's primary group."),
    _p("listen", "address", None,
       "Address the pool accepts FastCGI connections on: ip:port, [ipv6]:port, a port "
       "alone for every address, or the path of a UNIX socket.",
       mandatory=True),
    _p("listen.backlog", "int", -1,
       "Length of the queue of connections waiting for a worker, as passed to listen(2). "
       "-1 means the system maximum (net.core.somaxconn).",
       minimum=-1),
    _p("listen.owner", "str", None,
       "Owner (name or uid) of the UNIX socket. Unset: the user the master runs as."),
    _p("listen.group", "str", None,
       "Group (name or gid) of the UNIX socket. Unset: the group of listen.owner, or the "
       "master's."),
    _p("listen.mode", "octal", 0o660,
       "Permission bits of the UNIX socket."),
    _p("listen.acl_users", "list", [],
       "Comma-separated users given read and write access to the UNIX socket through a "
       "POSIX ACL. When ACLs are set, listen.owner and listen.group are ignored."),
    _p("listen.acl_groups", "list", [],
       "Comma-separated groups given read and write access to the UNIX socket through a "
       "POSIX ACL."),
    _p("listen.allowed_clients", "list", [],
       "Comma-separated IPv4 or IPv6 addresses that may connect to a TCP socket; other "
       "clients are disconnected at once. Unset: any client."),
    _p("pm", "enum", None,
       "How the number of workers is managed: static keeps pm.max_children workers; "
       "dynamic keeps between pm.min_spare_servers and pm.max_spare_servers idle workers; "
       "ondemand forks workers as connections arrive and stops them after "
       "pm.process_idle_timeout of idleness.",
       choices=PM_MODES, mandatory=True,
       invalid="invalid process manager (static, dynamic or ondemand)"),
    _p("pm.max_children", "int", None,
       "Number of workers with pm = static; the most workers otherwise. It bounds the "
       "number of requests served at the same time.",
       mandatory=True, minimum=1, maximum=PID_MAX_LIMIT),
    _p("pm.start_servers", "int", None,
       "Workers forked at start-up with pm = dynamic. Unset: halfway between "
       "pm.min_spare_servers and pm.max_spare_servers.",
       pm=_DYNAMIC, minimum=1),
    _p("pm.min_spare_servers", "int", None,
       "Fewest idle workers with pm = dynamic; more are forked when fewer are idle. "
       "Required with pm = dynamic.",
       pm=_DYNAMIC, minimum=1),
    _p("pm.max_spare_servers", "int", None,
       "Most idle workers with pm = dynamic; idle workers above this number are stopped. "
       "Required with pm = dynamic.",
       pm=_DYNAMIC, minimum=1),
    _p("pm.max_spawn_rate", "int", 32,
       "Most workers forked in one second with pm = dynamic; the rate doubles each second "
       "the pool stays short of idle workers, up to this cap.",
       pm=_DYNAMIC, minimum=1),
    _p("pm.process_idle_timeout", "time", 10,
       "Time after which an idle worker is stopped with pm = ondemand.",
       pm=_ONDEMAND, minimum=1),
    _p("pm.max_requests", "int", 0,
       "Requests a worker serves before it is replaced by a fresh one, which bounds the "
       "damage of memory leaks. 0 means never.",
       minimum=0),
    _p("pm.max_requests_jitter", "int", 0,
       "Up to this many requests are added at random to pm.max_requests for each worker, "
       "so that workers started together are not all replaced together.",
       minimum=0),
    _p("pm.max_memory", "size", 0,
       "Resident memory (K, M or G) above which a worker is replaced once its current "
       "request is done. 0 means no limit.",
       minimum=0),
    _p("pm.status_path", "str", None,
       "URI of the pool's status page, such as /status. Unset: no status page."),
    _p("pm.status_listen", "address", None,
       "Extra address on which the pool manager itself serves the status page (at "
       "pm.status_path, or at any path when that is unset) and ping.path, so that they "
       "answer even when every worker is busy."),
    _p("ping.path", "str", None,
       "URI that answers ping.response, for monitoring. Unset: no ping page."),
    _p("ping.response", "str", "pong",
       "Body of the answer to ping.path."),
    _p("access.log", "path", None,
       "File the workers append one line per request to. Unset: no access log."),
    _p("access.format", "str", '%R - %u %t "%m %r" %s',
       "Format of an access log line, with php-fpm's % placeholders."),
    _p("slowlog", "path", None,
       "File receiving the Python stack of every request that runs longer than "
       "request_slowlog_timeout. Required when request_slowlog_timeout is set."),
    _p("request_slowlog_timeout", "time", 0,
       "Time after which a running request's Python stack is written to slowlog. "
       "0 disables the slow log.",
       minimum=0),
    _p("request_slowlog_trace_depth", "int", 20,
       "Most stack frames written in one slowlog entry.",
       minimum=1),
    _p("request_terminate_timeout", "time", 0,
       "Time after which a worker still busy with one request is killed. "
       "0 disables it.",
       minimum=0),
    _p("request_terminate_timeout_track_finished", "bool", False,
       "Keep applying request_terminate_timeout after the application has finished the "
       "response early with pfm.finish_request."),
    _p("catch_workers_output", "bool", False,
       "Send what workers write to stdout and stderr to the error log. Unset: it is "
       "discarded (/dev/null)."),
    _p("decorate_workers_output", "bool", True,
       "Prefix each line of caught worker output with the pool, the worker's pid and the "
       "stream, as php-fpm does; no writes it as it is."),
    _p("clear_env", "bool", True,
       "Start workers with an empty environment plus the env[] entries (and USER and "
       "HOME); no passes the master's environment on."),
    _p("env", "array", {},
       "Environment variable NAME of the workers. A value of the form $VAR alone is "
       "replaced by the master's VAR when the configuration is loaded."),
    _p("chdir", "path", None,
       "Absolute directory the workers change into when they start (inside the chroot "
       "when chroot is set). Unset: the master's working directory."),
    _p("chroot", "path", None,
       "Directory the workers chroot(2) into when they start; root only. Absolute, or "
       "starting with $prefix."),
    _p("rlimit_files", "rlimit", None,
       "Open file descriptor limit (RLIMIT_NOFILE) of the workers, or unlimited. "
       "Unset: the master's."),
    _p("rlimit_core", "rlimit", None,
       "Largest core file (RLIMIT_CORE) of the workers in bytes, or unlimited. "
       "Unset: the master's."),
    _p("process.dumpable", "bool", False,
       "Allow core dumps and ptrace of workers that changed user (PR_SET_DUMPABLE)."),
    _p("process.priority", "int", None,
       "Nice value of the workers, from -19 (favoured) to 20; root only. Unset: the "
       "master's.",
       minimum=-19, maximum=20),
    _p("app", "str", None,
       "The WSGI application, as package.module:callable; without :callable the module's "
       "attribute app is used (Flask's habit; write :application for Django's wsgi.py). "
       "An application factory is called as gunicorn calls it: package.module:create_app() "
       "or create_app('prod', debug=False), with literal arguments only.",
       mandatory=True),
    _p("pythonpath", "pathlist", [],
       "Directories put in front of sys.path before the application is imported, "
       "separated by colons or commas."),
    _p("virtualenv", "path", None,
       "Virtual environment (made for the Python that runs pfm) whose site-packages are "
       "added to sys.path after pythonpath and chdir."),
    _p("preload", "bool", False,
       "Import the application once in the pool manager before the workers are forked, so "
       "they share its memory copy-on-write; code changes then need a reload."),
    _p("app_check_timeout", "time", 60,
       "Longest time the application may take to import when pfm checks it: pfm -t, the "
       "start and every reload import each pool's application in a child process set up "
       "as the pool's workers are, and report an import that takes longer as an error "
       "(a reload then leaves the running pools serving).",
       minimum=1),
    _p("max_params_bytes", "size", 1024 ** 2,
       "Largest total size (K, M or G) of one request's FastCGI parameters, that is its "
       "HTTP headers and CGI variables; bigger requests are refused.",
       minimum=1),
)

GLOBAL_SETTINGS: Dict[str, Setting] = {
    s.name: s for s in SETTINGS if s.section in (GLOBAL, ANY)}
POOL_SETTINGS: Dict[str, Setting] = {s.name: s for s in SETTINGS if s.section in (POOL, ANY)}

# ---- directives refused with an explanation ------------------------------------

_NO_PHP_INI = "is a PHP setting; pfm runs Python applications and has no php.ini"

# What to use instead of a php.ini setting, where pfm has something.
PHP_INI_ALTERNATIVES: Dict[str, str] = {
    "memory_limit": "pm.max_memory replaces a worker that grows past a size",
    "max_execution_time": "use request_terminate_timeout",
    "include_path": "use pythonpath",
    "open_basedir": "use chroot",
    "error_log": "log to stderr from the application and set catch_workers_output = yes",
    "date.timezone": "use env[TZ]",
    "upload_max_filesize": "limit request bodies in nginx with client_max_body_size",
    "post_max_size": "limit request bodies in nginx with client_max_body_size",
}

# Array directives of php-fpm that configure PHP itself.
PHP_ARRAYS = ("php_value", "php_admin_value", "php_flag", "php_admin_flag")

# php.ini names people paste into pool files; any `opcache.*` or `session.*` too.
PHP_INI_NAMES = frozenset({
    "memory_limit", "max_execution_time", "max_input_time", "include_path", "open_basedir",
    "date.timezone", "upload_max_filesize", "post_max_size", "display_errors",
    "display_startup_errors", "error_reporting", "log_errors", "error_log",
    "short_open_tag", "extension", "zend_extension", "disable_functions", "auto_prepend_file",
    "auto_append_file", "default_charset", "allow_url_fopen", "expose_php",
})
PHP_INI_PREFIXES = ("opcache.", "session.", "xdebug.", "apc.", "mbstring.")

# php-fpm directives pfm deliberately does not implement, and why.
UNSUPPORTED: Dict[str, str] = {
    "security.limit_extensions":
        "is a PHP setting; pfm runs Python applications and has no scripts to restrict "
        "(choose which requests reach the pool in nginx)",
    "events.mechanism":
        "is not supported by pfm: its workers block in accept() and need no event mechanism",
    "log_buffering": "is not supported by pfm: each log line is always written at once",
    "apparmor_hat": "is not supported by pfm",
    "listen.setfib": "is not supported by pfm (FreeBSD only)",
    "process.cpu_list": "is not supported by pfm",
    "proctitle_prefix": "is not supported by pfm: process titles always start with 'pfm: '",
    "access.suppress_path": "is not supported by pfm",
}


def php_only_message(name: str, key: Optional[str] = None) -> Optional[str]:
    """The explanation for a PHP-only directive, or None if `name` is not one.

    `key` is the array key of php_value[KEY] and friends: when pfm has an
    equivalent of that php.ini setting, the message names it.
    """
    lowered = name.lower()
    if lowered in PHP_ARRAYS:
        message = f"'{lowered}' {_NO_PHP_INI}"
        alternative = PHP_INI_ALTERNATIVES.get((key or "").lower())
        return f"{message} ({key}: {alternative})" if alternative else message
    if lowered in PHP_INI_NAMES or lowered.startswith(PHP_INI_PREFIXES):
        message = f"'{lowered}' {_NO_PHP_INI}"
        alternative = PHP_INI_ALTERNATIVES.get(lowered)
        return f"{message} ({alternative})" if alternative else message
    if lowered in UNSUPPORTED:
        return f"'{lowered}' {UNSUPPORTED[lowered]}"
    return None
