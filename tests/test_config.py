"""pfm/config.py and pfm/settings.py: syntax, value parsers, validation,
includes, the app finder, the -tt dump. Pure unit tests on tmp_path files.

Every error test asserts the whole message, so the file, the line and the
directive a user is pointed to are part of the contract.
"""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from pfm import config as cfg
from pfm import settings
from pfm.config import ConfigError, ListenAddress, parse_listen
from pfm.settings import SETTINGS, UNLIMITED

# A valid pool on lines 1-5; lines appended to it start at line 6.
POOL = """\
[www]
listen = 127.0.0.1:9000
pm = static
pm.max_children = 2
app = wsgiref.simple_server:demo_app
"""


def write(tmp_path, text: str, name: str = "pfm.conf") -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def load(tmp_path, text: str, **kw):
    return cfg.load(write(tmp_path, text), **kw)


def error(tmp_path, text: str, **kw) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        cfg.load(path, **kw)
    return info.value


def assert_error(tmp_path, text: str, line: int, directive, message: str, **kw) -> None:
    """The error is `[file:line] message` and carries its parts as attributes."""
    e = error(tmp_path, text, **kw)
    path = str(tmp_path / "pfm.conf")
    assert str(e) == f"[{path}:{line}] {message}"
    assert (e.file, e.line, e.directive) == (path, line, directive)


# ---- value parsers -------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["yes", "YES", "on", "On", "true", "TRUE", "1", " yes "])
def test_bool_true_words(raw):
    assert settings.parse_bool(raw) is True


@pytest.mark.parametrize("raw", ["no", "No", "off", "false", "FALSE", "0", "none", "", "null"])
def test_bool_false_words(raw):
    assert settings.parse_bool(raw) is False


@pytest.mark.parametrize("raw", ["2", "yess", "y", "enabled"])
def test_bool_invalid(raw):
    with pytest.raises(ValueError, match="^invalid boolean value$"):
        settings.parse_bool(raw)


@pytest.mark.parametrize("raw,value", [("10", 10), ("-1", -1), (" 5 ", 5), ("0", 0)])
def test_int(raw, value):
    assert settings.parse_int(raw) == value


@pytest.mark.parametrize("raw", ["1.5", "abc", "", "1_000", "+3", "\u0663", "10s"])
def test_int_invalid(raw):
    with pytest.raises(ValueError) as info:
        settings.parse_int(raw)
    assert str(info.value) == "is not a valid number (greater or equal than zero)"


@pytest.mark.parametrize("raw,seconds", [
    ("10", 10), ("10s", 10), ("2m", 120), ("1h", 3600), ("1d", 86400), ("0", 0), (" 3m ", 180),
])
def test_time(raw, seconds):
    assert settings.parse_time(raw) == seconds


@pytest.mark.parametrize("raw,message", [
    ("", "invalid time value"),
    ("abc", "invalid time value"),
    ("-5", "invalid time value"),
    ("s", "invalid time value"),
    ("5x", "unknown suffix used in time value"),
    ("1.5m", "unknown suffix used in time value"),
    ("10S", "unknown suffix used in time value"),
    ("10 s", "unknown suffix used in time value"),
])
def test_time_invalid(raw, message):
    with pytest.raises(ValueError) as info:
        settings.parse_time(raw)
    assert str(info.value) == message


@pytest.mark.parametrize("raw,size", [
    ("1024", 1024), ("1K", 1024), ("1k", 1024), ("2M", 2 * 1024 ** 2), ("1g", 1024 ** 3),
    ("0", 0),
])
def test_size(raw, size):
    assert settings.parse_size(raw) == size


@pytest.mark.parametrize("raw,message", [
    ("", "invalid size value"),
    ("M", "invalid size value"),
    ("1KB", "unknown suffix used in size value (use K, M or G)"),
    ("1T", "unknown suffix used in size value (use K, M or G)"),
])
def test_size_invalid(raw, message):
    with pytest.raises(ValueError) as info:
        settings.parse_size(raw)
    assert str(info.value) == message


@pytest.mark.parametrize("raw,mode", [("0660", 0o660), ("660", 0o660), ("0777", 0o777),
                                      ("07777", 0o7777)])
def test_octal(raw, mode):
    assert settings.parse_octal(raw) == mode


@pytest.mark.parametrize("raw", ["0o660", "0888", "rw", "", "17777"])
def test_octal_invalid(raw):
    with pytest.raises(ValueError, match="is not a valid octal mode"):
        settings.parse_octal(raw)


def test_rlimit():
    assert settings.parse_rlimit("unlimited") == UNLIMITED
    assert settings.parse_rlimit("UNLIMITED") == UNLIMITED
    assert settings.parse_rlimit("1024") == 1024
    with pytest.raises(ValueError, match="^must be greater than zero or 'unlimited'$"):
        settings.parse_rlimit("-1")
    with pytest.raises(ValueError, match="is not a valid number"):
        settings.parse_rlimit("lots")


def test_lists():
    assert settings.parse_list(" a, b ,,c ") == ["a", "b", "c"]
    assert settings.parse_list("") == []
    assert settings.parse_pathlist("/a:/b,/c") == ["/a", "/b", "/c"]


def test_enum_and_loglevel_values():
    by_name = settings.GLOBAL_SETTINGS
    assert by_name["log_level"].parse("WARN") == "warning"
    assert by_name["log_level"].parse("Notice") == "notice"
    with pytest.raises(ValueError, match="^invalid value for 'log_level'$"):
        by_name["log_level"].parse("loud")
    assert by_name["syslog.facility"].parse("LOCAL3") == "local3"
    with pytest.raises(ValueError, match="^invalid value$"):
        by_name["syslog.facility"].parse("local9")
    with pytest.raises(ValueError) as info:
        settings.POOL_SETTINGS["pm"].parse("stati")
    assert str(info.value) == "invalid process manager (static, dynamic or ondemand)"


# ---- the settings table -------------------------------------------------------------


def test_table_declares_the_directives():
    names = {(s.section, s.name) for s in SETTINGS}
    for name in ("pid", "error_log", "log_level", "log_limit", "daemonize",
                 "process_control_timeout", "emergency_restart_threshold",
                 "emergency_restart_interval", "process.max", "rlimit_files", "rlimit_core",
                 "syslog.ident", "syslog.facility", "systemd_interval"):
        assert ("global", name) in names, name
    for name in ("prefix", "user", "group", "listen", "listen.backlog", "listen.owner",
                 "listen.group", "listen.mode", "listen.allowed_clients", "listen.acl_users",
                 "listen.acl_groups", "pm", "pm.max_children", "pm.start_servers",
                 "pm.min_spare_servers", "pm.max_spare_servers", "pm.max_spawn_rate",
                 "pm.process_idle_timeout", "pm.max_requests", "pm.max_requests_jitter",
                 "pm.max_memory", "pm.status_path", "pm.status_listen", "ping.path",
                 "ping.response", "access.log", "access.format", "slowlog",
                 "request_slowlog_timeout", "request_slowlog_trace_depth",
                 "request_terminate_timeout", "request_terminate_timeout_track_finished",
                 "catch_workers_output", "decorate_workers_output", "clear_env", "env",
                 "chdir", "chroot", "rlimit_files", "rlimit_core", "process.dumpable",
                 "process.priority", "app", "pythonpath", "virtualenv", "preload",
                 "max_params_bytes"):
        assert ("pool", name) in names, name
    assert ("any", "include") in names


def test_table_is_consistent():
    seen = set()
    for s in SETTINGS:
        assert (s.section, s.name) not in seen
        seen.add((s.section, s.name))
        assert s.type in settings.TYPES
        assert s.attr.isidentifier()
        assert s.description.endswith(".") and len(s.description) > 20, s.name
        assert set(s.pm) <= set(settings.PM_MODES) and s.pm
        if s.choices:
            assert s.default is None or s.default in s.choices
    assert settings.POOL_SETTINGS["pm.max_children"].attr == "pm_max_children"
    assert settings.POOL_SETTINGS["env"].display == "env[NAME]"
    assert settings.POOL_SETTINGS["pm.min_spare_servers"].pm == ("dynamic",)
    assert settings.POOL_SETTINGS["pm.process_idle_timeout"].pm == ("ondemand",)
    assert settings.POOL_SETTINGS["request_slowlog_timeout"].unit == "seconds"


def test_dataclasses_come_from_the_table():
    pool_fields = set(cfg.PoolConfig.__dataclass_fields__)
    global_fields = set(cfg.GlobalConfig.__dataclass_fields__)
    for s in SETTINGS:
        if s.stored:
            assert s.attr in (global_fields if s.section == "global" else pool_fields)
    assert {"name", "app_module", "app_callable", "source", "listen_address"} <= pool_fields
    assert "include" not in pool_fields | global_fields


def test_defaults():
    g = cfg.GlobalConfig()
    assert (g.pid, g.error_log, g.log_level, g.log_limit, g.daemonize) == (
        None, None, "notice", 1024, True)
    assert (g.syslog_ident, g.syslog_facility, g.systemd_interval) == ("pfm", "daemon", 10)
    p = cfg.PoolConfig(name="x")
    assert (p.listen_backlog, p.listen_mode, p.pm_max_spawn_rate) == (-1, 0o660, 32)
    assert (p.pm_process_idle_timeout, p.ping_response, p.clear_env) == (10, "pong", True)
    assert (p.request_slowlog_trace_depth, p.max_params_bytes, p.preload) == (20, 1 << 20, False)
    assert p.env == {} and p.pythonpath == [] and p.listen_allowed_clients == []
    assert cfg.PoolConfig(name="y").env is not p.env


# ---- syntax ---------------------------------------------------------------------------


def test_minimal_file(tmp_path):
    config = load(tmp_path, POOL)
    assert config.path == str(tmp_path / "pfm.conf")
    [pool] = config.pools
    assert pool.name == "www"
    assert pool.listen == "127.0.0.1:9000"
    assert pool.listen_address == ListenAddress("tcp", "127.0.0.1", 9000, None, "127.0.0.1:9000")
    assert (pool.pm, pool.pm_max_children) == ("static", 2)
    assert (pool.app_module, pool.app_callable) == ("wsgiref.simple_server", "demo_app")
    assert pool.source["pm"] == (str(tmp_path / "pfm.conf"), 3)
    assert pool.source[cfg.HEADER] == (str(tmp_path / "pfm.conf"), 1)
    assert config.warnings == []


def test_comments_and_blank_lines(tmp_path):
    config = load(tmp_path, """\
        ; a comment
        # a hash comment

        [global]
        log_limit = 4096 ; trailing comment
        systemd_interval = 30s;no space before it
        """ + POOL)
    assert config.global_.log_limit == 4096
    assert config.global_.systemd_interval == 30


def test_quoting(tmp_path):
    config = load(tmp_path, POOL + """\
        access.format = "%R ; %u \\"%m\\" %s" ; comment
        ping.response = 'it is ${HOME} ; here'
        env[A] = "  spaced  "
        env[B] = "back\\\\slash \\$keep \\n"
        """, environ={"HOME": "/home/x"})
    [pool] = config.pools
    assert pool.access_format == '%R ; %u "%m" %s'
    assert pool.ping_response == "it is ${HOME} ; here"
    assert pool.env["A"] == "  spaced  "
    assert pool.env["B"] == "back\\slash $keep \\n"


def test_quoted_boolean_is_still_a_boolean(tmp_path):
    [pool] = load(tmp_path, POOL + 'catch_workers_output = "yes"\n').pools
    assert pool.catch_workers_output is True


def test_missing_closing_quote(tmp_path):
    assert_error(tmp_path, POOL + 'ping.response = "pong\n', 6, "ping.response",
                 "syntax error in the value of 'ping.response': missing closing quote")


def test_text_after_closing_quote(tmp_path):
    assert_error(tmp_path, POOL + "ping.response = 'a' b\n", 6, "ping.response",
                 "syntax error in the value of 'ping.response': unexpected text after the "
                 "closing quote: 'b'")


def test_line_without_equals(tmp_path):
    assert_error(tmp_path, POOL + "pm.max_requests\n", 6, None,
                 "syntax error: expected 'name = value' or '[section]'")


@pytest.mark.parametrize("header", ["[]", "[www", "[www] extra"])
def test_bad_section_header(tmp_path, header):
    assert_error(tmp_path, POOL + header + "\n", 6, None,
                 "syntax error: a section header is written [name]")


def test_global_section_is_case_insensitive_and_keys_before_sections_are_global(tmp_path):
    config = load(tmp_path, """\
        log_limit = 2048
        [GLOBAL]
        daemonize = no
        [Global]
        log_level = error
        """ + POOL)
    g = config.global_
    assert (g.log_limit, g.daemonize, g.log_level) == (2048, False, "error")
    assert [p.name for p in config.pools] == ["www"]


def test_directive_names_are_case_insensitive(tmp_path):
    [pool] = load(tmp_path, POOL + "PM.Max_Requests = 7\nCLEAR_ENV = No\n").pools
    assert pool.pm_max_requests == 7
    assert pool.clear_env is False
    assert pool.source["pm.max_requests"][1] == 6


def test_later_value_replaces_earlier(tmp_path):
    [pool] = load(tmp_path, POOL + "pm.max_requests = 1\npm.max_requests = 2\n").pools
    assert pool.pm_max_requests == 2
    assert pool.source["pm.max_requests"][1] == 7


def test_pool_reopened_by_name_merges(tmp_path):
    config = load(tmp_path, POOL + """\
        [api]
        listen = 9001
        pm = static
        pm.max_children = 1
        app = wsgiref.simple_server
        [WWW]
        pm.max_requests = 50
        """)
    assert [p.name for p in config.pools] == ["www", "api"]
    www = config.pool("www")
    assert (www.pm_max_children, www.pm_max_requests) == (2, 50)
    assert www.source["pm.max_requests"][1] == 12
    api = config.pool("api")
    assert (api.app_module, api.app_callable) == ("wsgiref.simple_server", "app")
    assert api.listen_address == ListenAddress("tcp", None, 9001, None, "9001")


def test_empty_string_value_means_the_default(tmp_path):
    [pool] = load(tmp_path, POOL + "ping.response =\nuser =\n").pools
    assert (pool.ping_response, pool.user) == ("pong", None)


def test_file_that_cannot_be_read(tmp_path):
    path = str(tmp_path / "missing.conf")
    with pytest.raises(ConfigError) as info:
        cfg.load(path)
    assert str(info.value) == (f"failed to open configuration file '{path}': "
                               "No such file or directory (2)")
    assert (info.value.file, info.value.line) == (path, None)


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "pfm.conf"
    path.write_bytes(b"[www]\nlisten = \xff\n")
    with pytest.raises(ConfigError) as info:
        cfg.load(str(path))
    assert str(info.value) == f"failed to open configuration file '{path}': not UTF-8"


def test_global_prefix_must_be_a_directory(tmp_path):
    path = write(tmp_path, POOL)
    with pytest.raises(ConfigError) as info:
        cfg.load(path, prefix=str(tmp_path / "nope"))
    assert str(info.value) == (f"the global prefix '{tmp_path / 'nope'}' does not exist or is "
                               "not a directory")


# ---- values in context: parse errors carry file, line and directive --------------------


def test_invalid_number(tmp_path):
    assert_error(tmp_path, POOL + "pm.max_requests = lots\n", 6, "pm.max_requests",
                 "unable to parse value for entry 'pm.max_requests': is not a valid number "
                 "(greater or equal than zero)")


def test_invalid_max_children_reports_its_own_line(tmp_path):
    assert_error(tmp_path, POOL.replace("pm.max_children = 2", "pm.max_children = two"), 4,
                 "pm.max_children", "unable to parse value for entry 'pm.max_children': is not "
                 "a valid number (greater or equal than zero)")


def test_invalid_boolean(tmp_path):
    assert_error(tmp_path, "[global]\ndaemonize = maybe\n" + POOL, 2, "daemonize",
                 "unable to parse value for entry 'daemonize': invalid boolean value")


def test_invalid_time(tmp_path):
    assert_error(tmp_path, POOL + "request_terminate_timeout = 30x\n", 6,
                 "request_terminate_timeout", "unable to parse value for entry "
                 "'request_terminate_timeout': unknown suffix used in time value")


def test_empty_time(tmp_path):
    assert_error(tmp_path, POOL + "request_terminate_timeout =\n", 6,
                 "request_terminate_timeout", "unable to parse value for entry "
                 "'request_terminate_timeout': invalid time value")


def test_invalid_process_manager(tmp_path):
    assert_error(tmp_path, POOL.replace("pm = static", "pm = statik"), 3, "pm",
                 "unable to parse value for entry 'pm': invalid process manager (static, "
                 "dynamic or ondemand)")


def test_invalid_log_level(tmp_path):
    assert_error(tmp_path, "log_level = loud\n" + POOL, 1, "log_level",
                 "unable to parse value for entry 'log_level': invalid value for 'log_level'")


def test_typed_values(tmp_path):
    config = load(tmp_path, """\
        [global]
        log_level = warn
        process_control_timeout = 1m
        emergency_restart_interval = 1h
        rlimit_files = 4096
        rlimit_core = unlimited
        """ + POOL + """\
        listen.mode = 0600
        listen.allowed_clients = 127.0.0.1, ::1
        pm.max_memory = 256M
        max_params_bytes = 64K
        request_terminate_timeout = 2m
        pythonpath = /srv/a:/srv/b,/srv/c
        process.priority = -5
        """)
    g = config.global_
    assert (g.log_level, g.process_control_timeout, g.emergency_restart_interval) == (
        "warning", 60, 3600)
    assert (g.rlimit_files, g.rlimit_core) == (4096, UNLIMITED)
    [p] = config.pools
    assert (p.listen_mode, p.pm_max_memory, p.max_params_bytes) == (0o600, 256 << 20, 64 << 10)
    assert p.listen_allowed_clients == ["127.0.0.1", "::1"]
    assert p.request_terminate_timeout == 120
    assert p.pythonpath == ["/srv/a", "/srv/b", "/srv/c"]
    assert p.process_priority == -5


# ---- unknown and refused directives --------------------------------------------------


def test_unknown_entry_with_suggestion(tmp_path):
    assert_error(tmp_path, POOL + "pm.max_child = 5\n", 6, "pm.max_child",
                 "unknown entry 'pm.max_child' (did you mean 'pm.max_children'?)")


def test_unknown_entry_without_suggestion(tmp_path):
    assert_error(tmp_path, POOL + "frobnicate = 1\n", 6, "frobnicate",
                 "unknown entry 'frobnicate'")


def test_pool_directive_in_global(tmp_path):
    assert_error(tmp_path, "[global]\npm = static\n" + POOL, 2, "pm",
                 "unknown entry 'pm' ('pm' belongs in a pool section)")


def test_global_directive_in_pool(tmp_path):
    assert_error(tmp_path, POOL + "pid = /run/pfm.pid\n", 6, "pid",
                 "unknown entry 'pid' ('pid' belongs in [global])")


def test_unknown_array(tmp_path):
    assert_error(tmp_path, POOL + "evn[FOO] = bar\n", 6, "evn",
                 "unknown directive 'evn' (did you mean 'env'?)")


def test_php_value_is_refused(tmp_path):
    assert_error(tmp_path, POOL + "php_value[display_errors] = off\n", 6,
                 "php_value[display_errors]",
                 "'php_value' is a PHP setting; pfm runs Python applications and has no php.ini")


def test_php_admin_value_suggests_the_pfm_equivalent(tmp_path):
    assert_error(tmp_path, POOL + "php_admin_value[memory_limit] = 128M\n", 6,
                 "php_admin_value[memory_limit]",
                 "'php_admin_value' is a PHP setting; pfm runs Python applications and has no "
                 "php.ini (memory_limit: pm.max_memory replaces a worker that grows past a size)")


def test_php_flag_in_global_is_still_a_php_setting(tmp_path):
    assert_error(tmp_path, "php_admin_flag[log_errors] = on\n" + POOL, 1,
                 "php_admin_flag[log_errors]",
                 "'php_admin_flag' is a PHP setting; pfm runs Python applications and has no "
                 "php.ini")


def test_security_limit_extensions_is_refused(tmp_path):
    assert_error(tmp_path, POOL + "security.limit_extensions = .php\n", 6,
                 "security.limit_extensions",
                 "'security.limit_extensions' is a PHP setting; pfm runs Python applications "
                 "and has no scripts to restrict (choose which requests reach the pool in nginx)")


@pytest.mark.parametrize("line,message", [
    ("max_execution_time = 30", "'max_execution_time' is a PHP setting; pfm runs Python "
     "applications and has no php.ini (use request_terminate_timeout)"),
    ("opcache.enable = 1", "'opcache.enable' is a PHP setting; pfm runs Python applications "
     "and has no php.ini"),
    ("events.mechanism = epoll", "'events.mechanism' is not supported by pfm: its workers "
     "block in accept() and need no event mechanism"),
])
def test_php_ini_and_unsupported_names(tmp_path, line, message):
    directive = line.split(" =")[0]
    assert_error(tmp_path, POOL + line + "\n", 6, directive, message)


# ---- env[], $pool, ${VAR} ---------------------------------------------------------------


def test_env_array(tmp_path):
    [pool] = load(tmp_path, POOL + """\
        env[PATH] = /usr/bin:/bin
        env[path] = lower
        env[FROM_MASTER] = $SECRET
        env[MISSING] = $NOT_SET_ANYWHERE
        env[POOL] = $pool
        """, environ={"SECRET": "s3"}).pools
    assert pool.env == {"PATH": "/usr/bin:/bin", "path": "lower", "FROM_MASTER": "s3",
                        "MISSING": "", "POOL": "www"}
    assert pool.source["env[FROM_MASTER]"][1] == 8


def test_env_empty_value(tmp_path):
    assert_error(tmp_path, POOL + "env[X] =\n", 6, "env[X]",
                 "unable to parse value for entry 'env[X]': empty value")


def test_env_without_key(tmp_path):
    assert_error(tmp_path, POOL + "env[] = 1\n", 6, "env",
                 "You must provide a key for field 'env'")


def test_env_without_brackets(tmp_path):
    assert_error(tmp_path, POOL + "ENV = 1\n", 6, "env",
                 "You must provide a key for field 'env': env[NAME] = value")


def test_env_in_global(tmp_path):
    assert_error(tmp_path, "[global]\nenv[X] = 1\n" + POOL, 2, "env",
                 "Array are not allowed in the global section")


def test_pool_variable(tmp_path):
    [pool] = load(tmp_path, POOL + """\
        access.log = /var/log/$pool.access.log
        ping.response = $pool says pong
        slowlog = '/var/log/$pool.slow.log'
        """).pools
    assert pool.access_log == "/var/log/www.access.log"
    assert pool.ping_response == "www says pong"
    assert pool.slowlog == "/var/log/www.slow.log"


def test_pool_variable_in_global(tmp_path):
    assert_error(tmp_path, "error_log = /var/log/$pool.log\n" + POOL, 1, "error_log",
                 "Can't use '$pool' when the pool is not defined")


def test_environment_variables(tmp_path):
    env = {"PORT": "9100", "EMPTY": "", "NAME": "app"}
    [pool] = load(tmp_path, """\
        [www]
        listen = 127.0.0.1:${PORT}
        pm = static
        pm.max_children = ${WORKERS:-3}
        app = wsgiref.simple_server:demo_${NAME}
        ping.response = "[${MISSING}] [${EMPTY:-fallback}] [${NAME:-unused}] [\\${PORT}]"
        """, environ=env).pools
    assert pool.listen == "127.0.0.1:9100"
    assert pool.pm_max_children == 3
    assert pool.app_callable == "demo_app"
    assert pool.ping_response == "[] [fallback] [app] [${PORT}]"


def test_single_quotes_do_not_expand(tmp_path):
    assert_error(tmp_path, POOL + "ping.path = '/${X}'\n", 6, "ping.path",
                 "[pool www] the ping path '/${X}' must contain only the following characters "
                 "'[alphanum]/_-.~'", environ={"X": "ok"})


# ---- include ------------------------------------------------------------------------------


def test_include_order_and_directories_skipped(tmp_path):
    for name, port in (("b.conf", 9002), ("a.conf", 9001)):
        write(tmp_path, f"[{name[0]}]\nlisten = {port}\npm = static\npm.max_children = 1\n"
                        "app = wsgiref.simple_server\n", f"pool.d/{name}")
    (tmp_path / "pool.d" / "c.conf").mkdir()
    config = load(tmp_path, "include = pool.d/*.conf\n")
    assert [p.name for p in config.pools] == ["a", "b"]
    assert config.pool("b").source["listen"] == (str(tmp_path / "pool.d" / "b.conf"), 2)


def test_include_relative_to_prefix(tmp_path):
    prefix = tmp_path / "prefix"
    write(tmp_path, POOL, "prefix/etc/www.conf")
    write(tmp_path, POOL.replace("[www]", "[other]").replace("9000", "9999"), "etc/www.conf")
    config = cfg.load(write(tmp_path, "include = etc/*.conf\n", "conf/pfm.conf"),
                      prefix=str(prefix))
    assert [p.name for p in config.pools] == ["www"]
    assert config.prefix == str(prefix)


def test_include_absolute_pattern(tmp_path):
    write(tmp_path, POOL, "elsewhere/www.conf")
    config = load(tmp_path, f"include = {tmp_path}/elsewhere/*.conf\n")
    assert [p.name for p in config.pools] == ["www"]


def test_include_without_match_warns(tmp_path):
    config = load(tmp_path, POOL + "include = nothing/*.conf\n")
    path = tmp_path / "pfm.conf"
    assert config.warnings == [f"Nothing matches the include pattern '{tmp_path}/nothing/*.conf' "
                               f"from {path} at line 6."]


def test_include_recursion_limit(tmp_path):
    assert_error(tmp_path, "include = pfm.conf\n" + POOL, 1, "include",
                 "failed to include more than 5 files recursively")


def test_include_unreadable_file(tmp_path):
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "d" / "gone", tmp_path / "d" / "broken.conf")
    e = error(tmp_path, POOL + "include = d/*.conf\n")
    assert str(e) == (f"[{tmp_path / 'pfm.conf'}:6] Unable to include {tmp_path}/d/broken.conf: "
                      "No such file or directory (2)")


def test_error_in_included_file_names_that_file(tmp_path):
    inc = write(tmp_path, "\n\npm.max_requests = x\n", "inc/extra.conf")
    e = error(tmp_path, POOL + "include = inc/extra.conf\n")
    assert (e.file, e.line, e.directive) == (inc, 3, "pm.max_requests")


def test_included_file_starts_in_the_including_section(tmp_path):
    write(tmp_path, "pm.max_requests = 9\n[api]\nlisten = 9001\n", "inc/www-extra.conf")
    config = load(tmp_path, POOL.replace("pm = static\n", "include = inc/*.conf\npm = static\n")
                  + "[api]\npm = static\npm.max_children = 1\napp = wsgiref.simple_server\n")
    www, api = config.pools
    assert www.pm_max_requests == 9  # first line of the include went to [www]
    assert www.pm == "static"  # and [www] resumed after the include, not [api]
    assert api.listen == "9001"


# ---- pool validation ------------------------------------------------------------------------


def test_no_pool(tmp_path):
    e = error(tmp_path, "[global]\ndaemonize = no\n")
    assert str(e) == "No pool defined. at least one pool section must be specified in config file"
    assert e.file == str(tmp_path / "pfm.conf")


def test_no_listen_names_the_section_header(tmp_path):
    assert_error(tmp_path, "[global]\n\n[www]\npm = static\n", 3, "listen",
                 "[pool www] no listen address have been defined!")


def test_no_process_manager(tmp_path):
    assert_error(tmp_path, "\n[www]\nlisten = 9000\n", 2, "pm",
                 "[pool www] the process manager is missing (static, dynamic or ondemand)")


def test_no_max_children(tmp_path):
    assert_error(tmp_path, "[www]\nlisten = 9000\npm = static\n", 1, "pm.max_children",
                 "[pool www] pm.max_children must be a positive value")


def test_zero_max_children(tmp_path):
    assert_error(tmp_path, POOL.replace("pm.max_children = 2", "pm.max_children = 0"), 4,
                 "pm.max_children", "[pool www] pm.max_children(0) must be a positive value")


def test_no_app(tmp_path):
    assert_error(tmp_path, "[www]\nlisten = 9000\npm = static\npm.max_children = 1\n", 1, "app",
                 "[pool www] no application has been defined! (app = package.module:callable)")


DYNAMIC = """\
[www]
listen = 9000
pm = dynamic
pm.max_children = 10
app = wsgiref.simple_server
"""


def test_dynamic_start_servers_default_is_a_notice(tmp_path):
    config = load(tmp_path, DYNAMIC + "pm.min_spare_servers = 1\npm.max_spare_servers = 4\n")
    assert config.pools[0].pm_start_servers == 2
    assert config.warnings == ["[pool www] pm.start_servers is not set. It's been set to 2."]


def test_dynamic_min_spare_missing(tmp_path):
    assert_error(tmp_path, DYNAMIC + "pm.max_spare_servers = 3\n", 1, "pm.min_spare_servers",
                 "[pool www] pm.min_spare_servers must be set with pm = dynamic")


def test_dynamic_min_spare_not_positive(tmp_path):
    assert_error(tmp_path, DYNAMIC + "pm.min_spare_servers = 0\npm.max_spare_servers = 3\n", 6,
                 "pm.min_spare_servers", "[pool www] pm.min_spare_servers(0) must be a positive "
                 "value")


def test_dynamic_min_greater_than_max(tmp_path):
    assert_error(tmp_path, DYNAMIC + "\npm.min_spare_servers = 5\npm.max_spare_servers = 3\n", 7,
                 "pm.min_spare_servers", "[pool www] pm.min_spare_servers(5) must not be greater "
                 "than pm.max_spare_servers(3)")


def test_dynamic_spare_above_max_children(tmp_path):
    assert_error(tmp_path, DYNAMIC + "pm.min_spare_servers = 1\npm.max_spare_servers = 11\n", 7,
                 "pm.max_spare_servers", "[pool www] pm.max_spare_servers(11) cannot be greater "
                 "than pm.max_children(10)")


def test_dynamic_start_servers_out_of_range(tmp_path):
    assert_error(tmp_path, DYNAMIC + "pm.start_servers = 5\npm.min_spare_servers = 1\n"
                 "pm.max_spare_servers = 3\n", 6, "pm.start_servers",
                 "[pool www] pm.start_servers(5) must not be less than pm.min_spare_servers(1) "
                 "and not greater than pm.max_spare_servers(3)")


def test_dynamic_max_spawn_rate(tmp_path):
    assert_error(tmp_path, DYNAMIC + "pm.min_spare_servers = 1\npm.max_spare_servers = 3\n"
                 "pm.start_servers = 2\npm.max_spawn_rate = 0\n", 9, "pm.max_spawn_rate",
                 "[pool www] pm.max_spawn_rate(0) must be a positive value")


def test_ondemand_idle_timeout(tmp_path):
    assert_error(tmp_path, DYNAMIC.replace("dynamic", "ondemand")
                 + "pm.process_idle_timeout = 0\n", 6, "pm.process_idle_timeout",
                 "[pool www] pm.process_idle_timeout(0s) must be greater than 0s")


def test_settings_without_effect_in_the_pm_mode_warn(tmp_path):
    config = load(tmp_path, POOL + "pm.max_spare_servers = 3\npm.process_idle_timeout = 0\n")
    path = tmp_path / "pfm.conf"
    assert config.warnings == [
        f"[{path}:6] [pool www] pm.max_spare_servers has no effect with pm = static",
        f"[{path}:7] [pool www] pm.process_idle_timeout has no effect with pm = static",
    ]


def test_slowlog_needed_for_slowlog_timeout(tmp_path):
    assert_error(tmp_path, POOL + "request_slowlog_timeout = 5s\n", 6, "request_slowlog_timeout",
                 "[pool www] 'slowlog' must be specified for use with 'request_slowlog_timeout'")


def test_slowlog_timeout_above_terminate_timeout(tmp_path):
    assert_error(tmp_path, POOL + "slowlog = slow.log\nrequest_terminate_timeout = 30\n"
                 "request_slowlog_timeout = 1m\n", 8, "request_slowlog_timeout",
                 "[pool www] 'request_slowlog_timeout' (60) can't be greater than "
                 "'request_terminate_timeout' (30)")


def test_slowlog_timeout_without_terminate_timeout_is_fine(tmp_path):
    [pool] = load(tmp_path, POOL + "slowlog = slow.log\nrequest_slowlog_timeout = 1m\n").pools
    assert pool.slowlog == str(tmp_path / "slow.log")


def test_log_limit_minimum(tmp_path):
    assert_error(tmp_path, "[global]\nlog_limit = 100\n" + POOL, 2, "log_limit",
                 "log_limit(100) must be greater or equal than 512")


def test_process_priority_range(tmp_path):
    assert_error(tmp_path, POOL + "process.priority = 21\n", 6, "process.priority",
                 "[pool www] process.priority must be included into [-19,20]")


def test_process_max_negative(tmp_path):
    assert_error(tmp_path, "process.max = -1\n" + POOL, 1, "process.max",
                 "process.max(-1) must be greater or equal than 0")


def test_process_max_below_initial_children(tmp_path):
    assert_error(tmp_path, "\nprocess.max = 1\n" + POOL, 2, "process.max",
                 "process.max (1) must not be less than the total number of children that start "
                 "initially across all pools (2)")


def test_listen_port_out_of_range(tmp_path):
    assert_error(tmp_path, POOL.replace("127.0.0.1:9000", "127.0.0.1:69002"), 2, "listen",
                 "[pool www] invalid port value '69002'")


def test_listen_address_used_twice(tmp_path):
    assert_error(tmp_path, POOL + "[api]\npm = static\npm.max_children = 1\napp = wsgiref\n"
                 "listen = 127.0.0.1:9000\n", 10, "listen",
                 "[pool api] unable to set listen address as it's already used in another "
                 "pool 'www'")


def test_status_listen(tmp_path):
    config = load(tmp_path, POOL + "pm.status_listen = 127.0.0.1:9001\n")
    assert config.pools[0].status_listen_address.port == 9001


def test_status_listen_same_as_listen(tmp_path):
    assert_error(tmp_path, POOL + "pm.status_listen = 127.0.0.1:9000\n", 6, "pm.status_listen",
                 "[pool www] pm.status_listen must differ from listen")


def test_listen_clashing_with_status_listen_of_another_pool(tmp_path):
    assert_error(tmp_path, POOL + "pm.status_listen = 9001\n[api]\nlisten = *:9001\n"
                 "pm = static\npm.max_children = 1\napp = wsgiref\n", 8, "listen",
                 "[pool api] unable to set listen address as it's already used in another "
                 "pool 'www'")


def test_unix_socket_relative_to_prefix(tmp_path):
    (tmp_path / "run").mkdir()
    [pool] = load(tmp_path, POOL.replace("127.0.0.1:9000", "run/$pool.sock")).pools
    assert pool.listen == str(tmp_path / "run" / "www.sock")
    assert pool.listen_address == ListenAddress("unix", path=pool.listen, value=pool.listen)


def test_unix_socket_relative_to_pool_prefix(tmp_path):
    (tmp_path / "pools" / "www").mkdir(parents=True)
    [pool] = load(tmp_path, POOL.replace("127.0.0.1:9000", "www.sock")
                  + "prefix = pools/$pool\naccess.log = access.log\n").pools
    assert pool.prefix == str(tmp_path / "pools" / "www")
    assert pool.listen == str(tmp_path / "pools" / "www" / "www.sock")
    assert pool.access_log == str(tmp_path / "pools" / "www" / "access.log")


def test_unix_socket_path_too_long(tmp_path):
    long_path = "/tmp/" + "x" * 110 + ".sock"
    assert_error(tmp_path, POOL.replace("127.0.0.1:9000", long_path), 2, "listen",
                 f"[pool www] cannot bind to UNIX socket '{long_path}' as path is too long "
                 f"(found length: {len(long_path)}, maximal length: 107)")


def test_pool_prefix_must_exist(tmp_path):
    assert_error(tmp_path, POOL + "prefix = nope\n", 6, "prefix",
                 f"[pool www] the prefix '{tmp_path / 'nope'}' does not exist or is not a "
                 "directory")


def test_allowed_clients_must_be_addresses(tmp_path):
    assert_error(tmp_path, POOL + "listen.allowed_clients = 127.0.0.1, localhost\n", 6,
                 "listen.allowed_clients",
                 "[pool www] Wrong IP address 'localhost' in listen.allowed_clients")


def test_allowed_clients_on_unix_socket_warns(tmp_path):
    config = load(tmp_path, POOL.replace("127.0.0.1:9000", "/tmp/x.sock")
                  + "listen.allowed_clients = 127.0.0.1\n")
    assert config.warnings == [f"[{tmp_path / 'pfm.conf'}:6] [pool www] listen.allowed_clients "
                               "has no effect on a UNIX socket"]


@pytest.mark.parametrize("directive,value,message", [
    ("pm.status_path", "status", "the status path 'status' must start with a '/'"),
    ("pm.status_path", "/", "the status path '/' is not long enough"),
    ("ping.path", "/pi ng", "the ping path '/pi ng' must contain only the following characters "
     "'[alphanum]/_-.~'"),
])
def test_status_and_ping_paths(tmp_path, directive, value, message):
    assert_error(tmp_path, POOL + f"{directive} = {value}\n", 6, directive,
                 f"[pool www] {message}")


def test_status_path_slash_is_fine_with_status_listen(tmp_path):
    [pool] = load(tmp_path, POOL + "pm.status_path = /\npm.status_listen = 9101\n").pools
    assert pool.pm_status_path == "/"


def test_chroot_must_be_absolute(tmp_path):
    assert_error(tmp_path, POOL + "chroot = jail\n", 6, "chroot",
                 "[pool www] the chroot path 'jail' must start with a '/'")


def test_chroot_prefix_variable(tmp_path):
    (tmp_path / "jail").mkdir()
    [pool] = load(tmp_path, POOL + "chroot = $prefix/jail\n").pools
    assert pool.chroot == str(tmp_path / "jail")
    assert_error(tmp_path, POOL + "chroot = /x/$prefix\n", 6, "chroot",
                 "[pool www] '$prefix' must be use at the beginning of the value")


def test_chdir_must_be_absolute_and_exist(tmp_path):
    assert_error(tmp_path, POOL + "chdir = srv\n", 6, "chdir",
                 "[pool www] the chdir path 'srv' must start with a '/'")
    assert_error(tmp_path, POOL + f"chdir = {tmp_path}/nope\n", 6, "chdir",
                 f"[pool www] the chdir path '{tmp_path}/nope' does not exist or is not a "
                 "directory")


def test_chdir_within_chroot(tmp_path):
    (tmp_path / "jail" / "srv").mkdir(parents=True)
    [pool] = load(tmp_path, POOL + f"chroot = {tmp_path}/jail\nchdir = /srv\n").pools
    assert pool.chdir == "/srv"
    assert_error(tmp_path, POOL + f"chroot = {tmp_path}/jail\nchdir = /app\n", 7, "chdir",
                 f"[pool www] the chdir path '/app' within the chroot path '{tmp_path}/jail' "
                 f"('{tmp_path}/jail/app') does not exist or is not a directory")


def test_unknown_user(tmp_path):
    assert_error(tmp_path, POOL + "user = no-such-user-pfm\n", 6, "user",
                 "[pool www] cannot get uid for user 'no-such-user-pfm'")


def test_unknown_listen_group(tmp_path):
    assert_error(tmp_path, POOL + "listen.group = no-such-group-pfm\n", 6, "listen.group",
                 "[pool www] cannot get gid for group 'no-such-group-pfm'")


def test_numeric_and_existing_identities(tmp_path):
    import pwd
    me = pwd.getpwuid(os.getuid()).pw_name
    [pool] = load(tmp_path, POOL + f"user = {me}\ngroup = 12345\nlisten.owner = 54321\n").pools
    assert (pool.user, pool.group, pool.listen_owner) == (me, "12345", "54321")


# ---- relative paths -------------------------------------------------------------------------


def test_global_paths_relative_to_config_directory(tmp_path):
    g = load(tmp_path, "pid = run/pfm.pid\nerror_log = log/pfm.log\n" + POOL).global_
    assert g.pid == str(tmp_path / "run" / "pfm.pid")
    assert g.error_log == str(tmp_path / "log" / "pfm.log")


def test_global_paths_relative_to_prefix(tmp_path):
    (tmp_path / "p").mkdir()
    g = load(tmp_path, "pid = pfm.pid\nerror_log = syslog\n" + POOL,
             prefix=str(tmp_path / "p")).global_
    assert g.pid == str(tmp_path / "p" / "pfm.pid")
    assert g.error_log == "syslog"


# ---- the application -----------------------------------------------------------------------


def make_package(root, trap: bool = True):
    """mypkg/web/wsgi.py, whose package __init__ exits if it is ever run."""
    pkg = root / "mypkg"
    (pkg / "web").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise SystemExit('the app finder ran package code')\n"
                                     if trap else "")
    (pkg / "web" / "__init__.py").write_text("raise SystemExit(1)\n" if trap else "")
    (pkg / "web" / "wsgi.py").write_text("raise SystemExit(2)\n" if trap else "app = None\n")
    (pkg / "single.py").write_text("raise SystemExit(3)\n")
    return root


def test_app_found_without_running_its_code(tmp_path):
    code = make_package(tmp_path / "code")
    [pool] = load(tmp_path, POOL.replace("wsgiref.simple_server:demo_app", "mypkg.web.wsgi")
                  + f"pythonpath = {code}\n").pools
    assert (pool.app_module, pool.app_callable) == ("mypkg.web.wsgi", "app")
    assert pool.app == "mypkg.web.wsgi:app"
    assert "mypkg" not in sys.modules


def test_app_found_in_chdir(tmp_path):
    code = make_package(tmp_path / "code")
    [pool] = load(tmp_path, POOL.replace("wsgiref.simple_server:demo_app",
                                         "mypkg.single:application") + f"chdir = {code}\n").pools
    assert pool.app_callable == "application"


def test_app_found_in_virtualenv(tmp_path):
    version = "python%d.%d" % sys.version_info[:2]
    site = tmp_path / "venv" / "lib" / version / "site-packages"
    make_package(site)
    extra = make_package(tmp_path / "extra").joinpath("mypkg")
    extra.rename(tmp_path / "extra" / "otherpkg")
    (site / "extra.pth").write_text(f"# comment\nimport os\n{tmp_path / 'extra'}\n")
    config = load(tmp_path, POOL.replace("wsgiref.simple_server:demo_app", "mypkg.web.wsgi:app")
                  + "virtualenv = venv\n[two]\nlisten = 9001\npm = static\npm.max_children = 1\n"
                  "app = otherpkg.single\nvirtualenv = venv\n")
    pool = config.pool("www")
    assert pool.virtualenv == str(tmp_path / "venv")
    assert cfg.app_search_path(pool) == [str(site), str(tmp_path / "extra")]


def test_app_search_path_order_and_chroot(tmp_path):
    version = "python%d.%d" % sys.version_info[:2]
    jail = tmp_path / "jail"
    site = jail / "venv" / "lib" / version / "site-packages"
    make_package(site)
    (jail / "srv" / "lib").mkdir(parents=True)
    (site / "local.pth").write_text("/srv/lib\n../../../../srv/missing\n")
    [pool] = load(tmp_path, POOL.replace("wsgiref.simple_server:demo_app", "mypkg.web.wsgi")
                  + f"chroot = {jail}\nchdir = /srv\nvirtualenv = /venv\n"
                  "pythonpath = /opt/a\n").pools
    assert cfg.app_search_path(pool) == ["/opt/a", "/srv", f"/venv/lib/{version}/site-packages",
                                         "/srv/lib"]


def test_virtualenv_without_site_packages(tmp_path):
    (tmp_path / "venv").mkdir()
    version = "%d.%d" % sys.version_info[:2]
    assert_error(tmp_path, POOL + "virtualenv = venv\n", 6, "virtualenv",
                 f"[pool www] the virtualenv '{tmp_path}/venv' has no lib/python{version}/"
                 "site-packages (is it a virtualenv of the Python that runs pfm?)")


def test_app_module_missing(tmp_path):
    code = make_package(tmp_path / "code")
    e = error(tmp_path, POOL.replace("wsgiref.simple_server:demo_app", "mypkg.bar:app")
              + f"pythonpath = {code}\n")
    assert str(e) == (f"[{tmp_path / 'pfm.conf'}:5] [pool www] app 'mypkg.bar:app': no module "
                      f"named 'mypkg.bar' (searched: {code}/mypkg)")
    assert (e.directive, e.pool) == ("app", "www")


def test_app_top_level_missing_lists_the_search_path(tmp_path):
    e = error(tmp_path, POOL.replace("wsgiref.simple_server:demo_app", "nosuchpkg_pfm.web")
              + f"pythonpath = {tmp_path}/a:{tmp_path}/b\n")
    assert str(e).startswith(f"[{tmp_path / 'pfm.conf'}:5] [pool www] app 'nosuchpkg_pfm.web': "
                             f"no module named 'nosuchpkg_pfm' (searched: {tmp_path}/a, "
                             f"{tmp_path}/b, ")
    assert sys.path[-1] in str(e)


def test_app_parent_is_not_a_package(tmp_path):
    code = make_package(tmp_path / "code")
    assert_error(tmp_path, POOL.replace("wsgiref.simple_server:demo_app", "mypkg.single.x")
                 + f"pythonpath = {code}\n", 5, "app",
                 "[pool www] app 'mypkg.single.x': no module named 'mypkg.single.x'; "
                 "'mypkg.single' is not a package")


@pytest.mark.parametrize("app", ["mod:", ":app", "my-mod:app", "mod:create_app(", "a..b",
                                 "my-mod:create_app()"])
def test_app_form(tmp_path, app):
    # mod:create_app() is an application factory since issue 13 (tests/test_app_factory.py)
    assert_error(tmp_path, POOL.replace("wsgiref.simple_server:demo_app", app), 5, "app",
                 f"[pool www] app '{app}': must be of the form 'package.module:callable' "
                 "or 'package.module:factory()'")


def test_find_module_spec_builtin_and_namespace(tmp_path):
    assert cfg.find_module_spec("sys", []).name == "sys"
    (tmp_path / "nspkg" / "inner").mkdir(parents=True)
    (tmp_path / "nspkg" / "inner" / "mod.py").write_text("raise SystemExit\n")
    spec = cfg.find_module_spec("nspkg.inner.mod", [str(tmp_path)])
    assert spec.origin == str(tmp_path / "nspkg" / "inner" / "mod.py")
    assert "nspkg" not in sys.modules


# ---- listen addresses --------------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("127.0.0.1:9000", ListenAddress("tcp", "127.0.0.1", 9000, None, "127.0.0.1:9000")),
    ("[::1]:9000", ListenAddress("tcp", "::1", 9000, None, "[::1]:9000")),
    ("::1:9000", ListenAddress("tcp", "::1", 9000, None, "::1:9000")),
    ("9000", ListenAddress("tcp", None, 9000, None, "9000")),
    ("*:9000", ListenAddress("tcp", None, 9000, None, "*:9000")),
    ("localhost:80", ListenAddress("tcp", "localhost", 80, None, "localhost:80")),
    ("/run/pfm.sock", ListenAddress("unix", None, None, "/run/pfm.sock", "/run/pfm.sock")),
    ("/run/odd:name.sock", ListenAddress("unix", None, None, "/run/odd:name.sock",
                                         "/run/odd:name.sock")),
    ("pfm.sock", ListenAddress("unix", None, None, "pfm.sock", "pfm.sock")),
])
def test_parse_listen(value, expected):
    assert parse_listen(value) == expected
    assert str(parse_listen(value)) == value


@pytest.mark.parametrize("value,message", [
    ("127.0.0.1:69002", "invalid port value '69002'"),
    ("127.0.0.1:0", "invalid port value '0'"),
    ("127.0.0.1:http", "invalid port value 'http'"),
    ("127.0.0.1:", "invalid port value ''"),
    ("[::1]", "invalid listen address '[::1]'"),
    ("[::1:9000", "invalid listen address '[::1:9000'"),
    (":9000", "invalid listen address ':9000'"),
    ("", "no listen address have been defined!"),
])
def test_parse_listen_errors(value, message):
    with pytest.raises(ValueError) as info:
        parse_listen(value)
    assert str(info.value) == message


# ---- dump, demo, quick mode ------------------------------------------------------------


def test_dump_format(tmp_path):
    config = load(tmp_path, "[global]\nlog_level = warning\n" + POOL
                  + "request_terminate_timeout = 2m\nenv[A] = b\nrlimit_core = unlimited\n")
    lines = cfg.dump(config)
    assert lines[0] == "[global]"
    assert "\tlog_level = WARNING" in lines
    assert "\tpid = undefined" in lines
    assert "\tsystemd_interval = 10s" in lines
    assert "\tdaemonize = yes" in lines
    www = lines.index("[www]")
    assert lines[www - 1] == " "
    assert lines[-1] == " "
    pool_lines = lines[www + 1:-1]
    assert pool_lines[:4] == ["\tprefix = undefined", "\tuser = undefined",
                              "\tgroup = undefined", "\tlisten = 127.0.0.1:9000"]
    for line in ("\trequest_terminate_timeout = 120s", "\tlisten.mode = 0660", "\tenv[A] = b",
                 "\trlimit_core = unlimited", "\tapp = wsgiref.simple_server:demo_app",
                 "\tpm = static", "\tclear_env = yes", "\tmax_params_bytes = 1048576"):
        assert line in pool_lines
    assert all(line.startswith("\t") and " = " in line for line in pool_lines)
    assert not any("include" in line for line in lines)


def test_builtin_demo_config():
    config = cfg.builtin_demo_config()
    assert config.path is None and config.warnings == []
    assert (config.global_.daemonize, config.global_.error_log) == (False, None)
    [pool] = config.pools
    assert pool.name == "www"
    assert pool.listen_address == ListenAddress("tcp", "127.0.0.1", 9000, None, "127.0.0.1:9000")
    assert (pool.pm, pool.pm_max_children) == ("static", 2)
    assert (pool.app_module, pool.app_callable) == ("pfm.demo", "app")
    assert cfg.dump(config)[0] == "[global]"


def test_quick_config(tmp_path, monkeypatch):
    make_package(tmp_path, trap=False)
    monkeypatch.chdir(tmp_path)
    config = cfg.quick_config("mypkg.web.wsgi", "/tmp/pfm-test.sock", 3, pm_max_requests=100,
                              log_level="debug", env={"A": "1"}, preload=True)
    assert config.path is None
    assert (config.global_.daemonize, config.global_.log_level) == (False, "debug")
    [pool] = config.pools
    assert (pool.pm, pool.pm_max_children, pool.pm_max_requests) == ("static", 3, 100)
    assert pool.listen_address.kind == "unix"
    assert (pool.app_module, pool.app_callable) == ("mypkg.web.wsgi", "app")
    assert pool.pythonpath == [str(tmp_path)]
    assert pool.clear_env is False and pool.preload is True
    assert pool.env == {"A": "1"}


def test_quick_config_errors_have_no_file_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        cfg.quick_config("nosuchmodule_pfm:app", "127.0.0.1:9000")
    assert str(info.value).startswith("[pool www] app 'nosuchmodule_pfm:app': no module named "
                                      "'nosuchmodule_pfm' (searched: ")
    assert (info.value.file, info.value.line, info.value.directive) == (None, None, "app")
    with pytest.raises(ConfigError) as info:
        cfg.quick_config("wsgiref.simple_server", "127.0.0.1:99999")
    assert str(info.value) == "[pool www] invalid port value '99999'"
    with pytest.raises(ConfigError) as info:
        cfg.quick_config("wsgiref.simple_server", "9000", bogus=1)
    assert str(info.value) == "unknown setting 'bogus'"
    with pytest.raises(ConfigError) as info:
        cfg.quick_config("wsgiref.simple_server", "9000", 0)
    assert str(info.value) == "[pool www] pm.max_children(0) must be a positive value"


def test_config_error_from_a_message_only():
    e = ConfigError("something is wrong")
    assert str(e) == "something is wrong"
    assert (e.file, e.line, e.directive, e.pool) == (None, None, None, None)


def test_bad_access_format_names_file_line_and_directive(tmp_path):
    """pfm -t reports an access.format php-fpm would refuse, where it is written."""
    conf = tmp_path / "pfm.conf"
    conf.write_text("[www]\nlisten = 127.0.0.1:9000\npm = static\npm.max_children = 1\n"
                    "app = pfm.demo:app\naccess.format = %m %Z\n")
    with pytest.raises(ConfigError) as err:
        cfg.load(str(conf))
    assert str(err.value) == (f"[{conf}:6] [pool www] Invalid token in the access.format (%Z)")
    assert err.value.directive == "access.format"
