"""Property-based fuzzing (hypothesis) of the config reader, pfm/config.py load().

* Arbitrary ini-like text (section headers, directives of the settings table
  and misspelt ones, arrays, quotes, ${VAR}, $pool, includes, comments, odd
  characters and line ends), and arbitrary bytes: load() raises nothing but
  ConfigError. When the error has a line, `str()` starts with `[file:line]`,
  the file is one that was written, and the line it names (counted as
  php-fpm's ini scanner counts them) is the directive at fault or the header
  of its section: never a blank line or a comment.
* Valid configurations generated from pfm/settings.py SETTINGS (every stored
  setting has a generator: a new setting without one fails the test), with
  each value spelt in one of its accepted forms (units, cases, quotes,
  directives split over an include): every value loads as the typed value it
  was generated from, and dump() (`pfm -tt`) written back as a file loads to
  the same dump.

Bounded for CI: max_examples and a deadline on every test (see FUZZ).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

from harness import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from pfm import config as cfg
from pfm.config import ConfigError
from pfm.settings import SETTINGS, UNLIMITED

FUZZ = fuzz_settings(max_examples=120, deadline_ms=3000)
FUZZ_SMALL = fuzz_settings(max_examples=80, deadline_ms=3000)   # a whole config per example

# What ${VAR} sees: an empty value, one with ini syntax in it, and one that
# os.environ gives for bytes that are not UTF-8 (surrogate escapes).
ENVIRON = {"HOME": "/root", "EMPTY": "", "ODD": 'a;b "c" $pool', "BAD": "caf\udce9"}

# php-fpm's ini scanner ends a line at \r\n, \r or \n, and only there.
LINE_END = re.compile(r"\r\n|\r|\n")

STORED = [s for s in SETTINGS if s.stored]


def write_files(directory: str, files: dict[str, str]) -> dict[str, str]:
    """Write {relative name: text}; returns {absolute path: text}."""
    out = {}
    for name, text in files.items():
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        out[path] = text
    return out


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def check_located(error: ConfigError, files: dict[str, str]) -> None:
    """The error names a file that was read and a line that explains it."""
    message = str(error)
    assert error.message and message
    if not error.line:
        return
    assert error.file in files, (error.file, list(files))
    assert message.startswith("[%s:%d] " % (error.file, error.line)), message
    lines = LINE_END.split(files[error.file])
    assert 1 <= error.line <= len(lines), (error.line, len(lines))
    line = lines[error.line - 1].strip()
    assert line and line[0] not in ";#", "error %r points at %r" % (message, line)
    if "expected 'name = value'" in message:
        assert not line.partition("=")[0].strip() or "=" not in line, (message, line)
        assert not line.startswith("["), (message, line)
    if "section header" in message:
        assert line.startswith("["), (message, line)
    if error.directive and not line.startswith("["):
        assert squash(error.directive) in squash(line), (message, line)


# ---- arbitrary ini-like text --------------------------------------------------------------

odd_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n")
free_text = st.text(odd_chars, max_size=24).filter(lambda t: "include" not in t.lower())
KEY_WORDS = [s.name for s in SETTINGS if s.stored] + [
    "env[A]", "env[]", "env[ B ]", "env[a=b]", "ENV[x]", "php_value[memory_limit]",
    "php_admin_flag[x]", "other[x]", "memory_limit", "opcache.enable", "security.limit_extensions",
    "events.mechanism", "pm.max_childs", "listen.alowed_clients", "=", "[x]"]
VALUE_WORDS = [
    "", "0", "1", "-1", "5", "99999999999", "1e23", "18446744073709551616", "²", "1.5m", "10s",
    "2m", "1h", "3d", "5x", "2K", "3M", "1G", "4KB", "0660", "0999", "777777", "unlimited",
    "yes", "no", "on", "Off", "TRUE", "none", "null", "maybe", "static", "dynamic", "ondemand",
    "weird", "127.0.0.1:9000", "[::1]:9001", "9002", "*:9003", ":9004", "[::1", "1.2.3.4:0",
    "host:99999", "/tmp/x.sock", "rel.sock", "$pool.sock", "/", "/status", "status", "/a b",
    "wsgiref.simple_server:demo_app", "json", "no.such.module", "mod:", "1mod", "root",
    "nobody", "0", "nosuchuser", "\"quoted ; value\"", "'single ; quoted'", "\"unclosed",
    "\"a\" tail", "\"esc \\\" \\\\ \\$ ${HOME}\"", "${HOME}", "${BAD}/x.sock", "${NOPE:-fb}",
    "${EMPTY:-fb}", "${ODD}", "$HOME", "; comment", "a;b", "%R %t %{x}e", "%{bad", "%Q",
    "%{mili}d", "/dev/null", "syslog", "a,b,,c", "1.2.3.4,::1", "nonsense-ip",
    # Characters a reader must not trip over: NUL, and what str.splitlines()
    # (but no ini scanner) takes for a line end.
    "a\x00b", "/tmp/a\x00b", "nobody\x00", "x\u2028y", "x\x85y = z", "x\x1cy", "\x0c",
]
INCLUDES = ["inc/*.conf", "inc/a.conf", "nothing/*.conf", "", "pfm.conf", "inc"]


def random_case(word: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(word, flips + [False] * len(word)))


@st.composite
def ini_lines(draw):
    kind = draw(st.sampled_from(["header", "directive", "directive", "directive",
                                 "directive", "include", "comment", "blank", "raw"]))
    if kind == "header":
        name = draw(st.one_of(st.sampled_from(["www", "global", "Global", "api", "WWW", "",
                                               " ", "a]b", "$pool"]), free_text))
        return "[%s]%s" % (name, draw(st.sampled_from(["", " ; c", " x", "]"])))
    if kind == "include":
        return "include = %s" % draw(st.sampled_from(INCLUDES))
    if kind == "comment":
        return draw(st.sampled_from([";", "#"])) + draw(free_text)
    if kind == "blank":
        return draw(st.sampled_from(["", "  ", "\t"]))
    if kind == "raw":
        return draw(free_text)
    key = draw(st.one_of(st.sampled_from(KEY_WORDS), free_text))
    key = random_case(key, draw(st.lists(st.booleans(), max_size=len(key))))
    value = draw(st.one_of(
        st.sampled_from(VALUE_WORDS),
        st.lists(st.sampled_from(VALUE_WORDS), min_size=2, max_size=3).map(" ".join),
        free_text))
    return "%s%s%s" % (key, draw(st.sampled_from([" = ", "=", " =", "  =  ", " "])), value)


ini_texts = st.tuples(st.lists(ini_lines(), max_size=16),
                      st.sampled_from(["\n", "\r\n", "\r"])).map(lambda t: t[1].join(t[0]))


@st.composite
def near_valid_texts(draw):
    """A valid pool with a few random lines put anywhere in it: most of the
    file is right, so the reader's later checks (pools, paths, users, the
    app) run on the random values too."""
    lines = ["[www]"] + BASE_POOL
    for _ in range(draw(st.integers(1, 4))):
        lines.insert(draw(st.integers(0, len(lines))), draw(ini_lines()))
    return "\n".join(lines) + "\n"


@FUZZ
@given(st.one_of(ini_texts, near_valid_texts()), ini_texts, ini_texts)
def test_any_ini_text_gives_a_config_or_a_located_config_error(main, inc_a, inc_b):
    """Arbitrary ini-like text in the main file and two includable files:
    a Config, or a ConfigError whose file:line points at a line that explains it."""
    with tempfile.TemporaryDirectory(prefix="pfmfz-") as d:
        files = write_files(d, {"pfm.conf": main, "inc/a.conf": inc_a, "inc/b.conf": inc_b})
        try:
            config = cfg.load(os.path.join(d, "pfm.conf"), environ=ENVIRON)
        except ConfigError as e:
            check_located(e, files)
            return
        assert config.pools
        cfg.dump(config)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_give_a_config_or_a_config_error(blob):
    """Not UTF-8, NULs, a BOM, anything: ConfigError at worst."""
    with tempfile.TemporaryDirectory(prefix="pfmfz-") as d:
        path = os.path.join(d, "pfm.conf")
        with open(path, "wb") as f:
            f.write(blob)
        try:
            cfg.load(path, environ=ENVIRON)
        except ConfigError as e:
            check_located(e, {path: blob.decode("utf-8-sig", "replace")})


HOSTILE_VALUES = [
    "", " ", "a\x00b", "${BAD}", "${BAD}/x.sock", "x\u2028y", "x\x85y", "x\x0cy",
    "99999999999999999999999", "-1", "-99999999999999999999", "1e23", "\u00b2", "\u0661\u0662",
    '"unclosed', "'", '"a" tail', "$pool", "${NOPE}", "/", "..", "a" * 5000, "\ufeff1",
]
BASE_POOL = ["listen = 127.0.0.1:9000", "pm = dynamic", "pm.max_children = 4",
             "pm.min_spare_servers = 1", "pm.max_spare_servers = 2", "app = json"]


def test_every_directive_takes_hostile_values_with_a_config_error_at_worst():
    """Systematically, not at random: each directive of the table, in its own
    section of an otherwise valid file (so validation runs all the way), with
    each hostile value: NULs, lone line-break characters, a ${VAR} holding
    undecodable bytes, huge and non-ASCII numbers, broken quotes."""
    with tempfile.TemporaryDirectory(prefix="pfmfz-") as d:
        path = os.path.join(d, "pfm.conf")
        names = [s.name for s in STORED if s.type != "array"] + ["env[X]", "env[\x00]"]
        for name in names:
            in_global = any(s.name == name and s.section == "global" for s in STORED)
            for value in HOSTILE_VALUES:
                line = "%s = %s" % (name, value)
                lines = ["[global]"] + [line] * in_global + ["[www]"] + BASE_POOL \
                    + [line] * (not in_global)
                files = write_files(d, {"pfm.conf": "\n".join(lines) + "\n"})
                try:
                    cfg.load(path, environ=ENVIRON)
                except ConfigError as e:
                    check_located(e, files)


# ---- valid configurations from the settings table ---------------------------------------------

plain_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="$"),
                     min_size=1, max_size=16).filter(lambda t: t != "undefined")
path_parts = st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True).filter(
    lambda p: p not in (".", ".."))
rel_paths = st.lists(path_parts, min_size=1, max_size=3).map("/".join)
tokens = st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True)
PM_SIZES = ("pm.max_children", "pm.start_servers", "pm.min_spare_servers", "pm.max_spare_servers")
USERS = ["root", "nobody", "0", "65534"]
GROUPS = ["root", "nogroup", "0", "65534"]
FORMATS = ['%R - %u %t "%m %r" %s', "%m %r%Q%q %s %d", "%{mili}d %{kilo}M %C%%",
           "%{REMOTE_ADDR}e %{Content-Type}o %n %p", "%{%Y-%m-%d %H:%M:%S}t %T", "plain"]
MODULES = ["wsgiref.simple_server:demo_app", "json", "xml.dom.minidom:parseString",
           "email.mime.text:x.y"]


class Gen:
    """One generated configuration: the text of its files and what each value
    must load as. `expect` maps (section, attribute) to the typed value."""

    def __init__(self, draw, directory: str):
        self.draw = draw
        self.dir = directory
        self.expect: dict[tuple[str, str], object] = {}
        self.addresses: set[str] = set()
        self.port = 9000

    # -- spelling ---------------------------------------------------------------

    def line(self, name: str, text: str) -> str:
        """`name = text`, the name in any case, the value bare or quoted."""
        draw = self.draw
        word, bracket, key = name.partition("[")    # env[KEY]: the key keeps its case
        name = random_case(word, draw(st.lists(st.booleans(), max_size=len(word)))) \
            + bracket + key
        safe_bare = text == text.strip() and not re.search(r"""[;"'$\\]""", text) and text
        how = draw(st.sampled_from(["bare", "double", "single"]))
        if how == "bare" and safe_bare:
            value = text
        elif how == "single" and "'" not in text and "$pool" not in text:
            value = "'%s'" % text
        else:
            value = '"%s"' % re.sub(r'(["\\$])', r"\\\1", text)
        return "%s%s%s" % (name, draw(st.sampled_from([" = ", "=", "  =\t"])), value)

    def spell(self, setting, value) -> str:
        """One accepted spelling of a typed value."""
        draw, kind = self.draw, setting.type
        if kind == "bool":
            words = ["yes", "On", "TRUE", "1"] if value else ["no", "off", "False", "0", "none"]
            return draw(st.sampled_from(words))
        if kind == "time":
            forms = [str(value), "%ds" % value]
            forms += ["%d%s" % (value // n, u) for u, n in (("m", 60), ("h", 3600), ("d", 86400))
                      if value and value % n == 0]
            return draw(st.sampled_from(forms))
        if kind == "size":
            forms = [str(value)]
            forms += ["%d%s" % (value // n, u) for u, n in (("k", 1024), ("K", 1024),
                                                            ("M", 1 << 20), ("g", 1 << 30))
                      if value and value % n == 0]
            return draw(st.sampled_from(forms))
        if kind == "octal":
            return draw(st.sampled_from(["%o" % value, "0%o" % value]))
        if kind == "rlimit" and value == UNLIMITED:
            return draw(st.sampled_from(["unlimited", "Unlimited"]))
        if kind in ("enum", "loglevel"):
            word = "warn" if value == "warning" and draw(st.booleans()) else value
            return draw(st.sampled_from([word, word.upper()]))
        if kind in ("list", "pathlist"):
            return draw(st.sampled_from([",", ", ", " , "] + [":"] * (kind == "pathlist"))) \
                .join(value)
        return str(value)

    # -- values -----------------------------------------------------------------

    def address(self, home: str) -> tuple[str, str]:
        """(as written, as loaded): a fresh TCP or unix address."""
        self.port += 1
        kind = self.draw(st.sampled_from(["v4", "v6", "port", "unix-rel", "unix-abs"]))
        if kind == "v4":
            written = "127.0.0.1:%d" % self.port
        elif kind == "v6":
            written = "[::1]:%d" % self.port
        elif kind == "port":
            written = "%d" % self.port
        elif kind == "unix-rel":
            written = "s%d.sock" % self.port
        else:
            written = os.path.join(self.dir, "s%d.sock" % self.port)
        loaded = written if kind in ("v4", "v6", "port") else \
            os.path.normpath(os.path.join(home, written))
        return written, loaded

    def value(self, setting, section: str, home: str, pool: dict):
        """(typed value, as loaded) for a setting that is not special-cased."""
        draw, kind = self.draw, setting.type
        low = setting.minimum if setting.minimum is not None else 0
        high = setting.maximum if setting.maximum is not None else 10 ** 6
        if kind == "bool":
            v = draw(st.booleans())
        elif kind in ("time", "size"):
            # A multiple of a unit now and then, so that 2m or 3K get written.
            unit = draw(st.sampled_from([1, 60, 3600, 86400] if kind == "time"
                                        else [1, 1024, 1 << 20, 1 << 30]))
            v = draw(st.integers(max(low, 0), 1000)) * unit
        elif kind == "int":
            v = draw(st.integers(low, high))
        elif kind == "octal":
            v = draw(st.integers(0, 0o7777))
        elif kind == "rlimit":
            v = draw(st.one_of(st.just(UNLIMITED), st.integers(0, 10 ** 9)))
        elif kind in ("enum", "loglevel"):
            v = draw(st.sampled_from(setting.choices))
        elif kind == "list":
            v = draw(st.lists(tokens, min_size=1, max_size=3))
        elif kind == "pathlist":
            v = draw(st.lists(rel_paths, min_size=1, max_size=3))
            return v, [os.path.normpath(os.path.join(home, p)) for p in v]
        elif kind == "path":
            v = draw(st.one_of(rel_paths, rel_paths.map(lambda p: os.path.join(self.dir, p))))
            return v, os.path.normpath(os.path.join(home, v))
        elif kind == "str":
            v = draw(plain_text)
        else:
            raise AssertionError("no generator for %s (type %s): add one" % (setting.name, kind))
        return v, v

    def special(self, name: str, section: str, home: str, pool: dict):
        """(text to write or None, loaded value) for settings with rules of their own;
        None for a setting that takes the generic path."""
        draw = self.draw
        if name in ("user", "listen.owner"):
            v = draw(st.sampled_from(USERS))
            return v, v
        if name in ("group", "listen.group"):
            v = draw(st.sampled_from(GROUPS))
            return v, v
        if name in ("listen.acl_users", "listen.acl_groups"):
            v = draw(st.lists(st.sampled_from(USERS if "users" in name else GROUPS),
                              min_size=1, max_size=2))
            return v, v
        if name == "listen.allowed_clients":
            v = draw(st.lists(st.sampled_from(["127.0.0.1", "::1", "10.1.2.3", "fe80::1"]),
                              min_size=1, max_size=3))
            return v, v
        if name in ("listen", "pm.status_listen"):
            return self.address(home)
        if name in ("pm.status_path", "ping.path"):
            v = "/" + draw(st.from_regex(r"[A-Za-z0-9/_.~-]{1,10}", fullmatch=True))
            return v, v
        if name == "access.format":
            v = draw(st.sampled_from(FORMATS))
            return v, v
        if name == "app":
            v = draw(st.sampled_from(MODULES))
            return v, v if ":" in v else v + ":app"
        if name == "error_log" and draw(st.booleans()):
            return "syslog", "syslog"
        if name == "prefix":
            return self.dir + "/p", self.dir + "/p"
        if name == "chroot":
            return self.dir, self.dir
        if name == "chdir":
            v = "/" if pool.get("chroot") else draw(st.sampled_from(["/", self.dir]))
            return v, v
        if name == "virtualenv":
            return sys.prefix, sys.prefix
        if name == "process.max":
            v = draw(st.sampled_from([0, 100000]))
            return v, v
        return None

    # -- sections ---------------------------------------------------------------

    def section(self, section: str, pool_name: str | None) -> list[str]:
        """The lines of one section, each setting present or not."""
        draw = self.draw
        chosen: dict[str, object] = {}
        names = [s.name for s in STORED if s.section == section]
        rules = {"listen": True, "pm": True, "app": True}
        if section == "pool":
            pm = draw(st.sampled_from(["static", "dynamic", "ondemand"]))
            chosen["pm"] = pm
            if draw(st.booleans()):
                chosen["prefix"] = True
            if draw(st.booleans()):
                chosen["chroot"] = True
            elif draw(st.booleans()):
                chosen["virtualenv"] = True
        home = self.dir + "/p" if "prefix" in chosen else self.dir
        lines: list[str] = []
        loaded: dict[str, object] = {}
        for name in names:
            setting = next(s for s in STORED if s.name == name)
            if name in PM_SIZES:
                continue    # pm_lines() sets these together
            if name in ("chroot", "virtualenv", "prefix"):
                if name not in chosen:
                    continue
            elif not (rules.get(name) or draw(st.integers(0, 2)) == 0):
                continue
            if setting.type == "array":
                env = draw(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}",
                                                         fullmatch=True),
                                           plain_text, min_size=1, max_size=3))
                lines += [self.line("env[%s]" % k, v) for k, v in env.items()]
                loaded[name] = env
                continue
            got = self.special(name, section, home, chosen)
            if got is None:
                typed, loaded_value = self.value(setting, section, home, chosen)
                text = self.spell(setting, typed)
            else:
                text, loaded_value = got
                text = self.spell(setting, text) if isinstance(text, list) else str(text)
            if name == "pm":
                text, loaded_value = self.spell(setting, chosen["pm"]), chosen["pm"]
            chosen[name] = loaded_value
            loaded[name] = loaded_value
            lines.append(self.line(name, text))
        if section == "pool":
            lines += self.pm_lines(chosen, loaded)
            self.slowlog_rules(chosen, loaded, lines, home)
        for name, value in loaded.items():
            self.expect[(pool_name or "global", name)] = value
        return lines

    def pm_lines(self, chosen: dict, loaded: dict) -> list[str]:
        """pm.max_children and the dynamic spares, consistent with each other."""
        draw = self.draw
        most = draw(st.integers(1, 64))
        values = {"pm.max_children": most}
        if chosen["pm"] == "dynamic":
            low = draw(st.integers(1, most))
            high = draw(st.integers(low, most))
            values["pm.min_spare_servers"], values["pm.max_spare_servers"] = low, high
            if draw(st.booleans()):
                values["pm.start_servers"] = draw(st.integers(low, high))
            else:
                loaded["pm.start_servers"] = low + (high - low) // 2
        loaded.update(values)
        return [self.line(name, str(v)) for name, v in values.items()]

    def slowlog_rules(self, chosen: dict, loaded: dict, lines: list[str], home: str) -> None:
        """request_slowlog_timeout needs a slowlog and may not exceed the terminate timeout."""
        slow = loaded.get("request_slowlog_timeout", 0)
        terminate = loaded.get("request_terminate_timeout", 0)
        if slow and terminate and slow > terminate:
            lines.append(self.line("request_terminate_timeout", str(slow)))
            loaded["request_terminate_timeout"] = slow
        if slow and "slowlog" not in loaded:
            lines.append(self.line("slowlog", "slow.log"))
            loaded["slowlog"] = os.path.join(home, "slow.log")


@st.composite
def valid_configs(draw, directory: str):
    gen = Gen(draw, directory)
    names = draw(st.lists(tokens.filter(lambda n: n.lower() != "global"), min_size=1,
                          max_size=3, unique_by=str.lower))
    main = ["[global]"] + gen.section("global", None)
    included: list[str] = []
    for name in names:
        lines = gen.section("pool", name)
        cut = draw(st.integers(0, len(lines)))
        if cut < len(lines) and draw(st.booleans()):
            # The rest of this pool's lines come from an included file (which
            # starts in the section of its include line).
            included_name = "inc/%s.conf" % name
            included.append((included_name, "\n".join(lines[cut:]) + "\n"))
            lines = lines[:cut] + ["include = %s" % included_name]
        main += ["", "[%s]" % name] + lines
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return {"pfm.conf": eol.join(main) + eol, **dict(included)}, gen.expect, names


def reload_dump(lines: list[str]) -> str:
    """The -tt dump written back as a config file (values double-quoted)."""
    out = []
    for line in lines:
        if line.startswith("\t"):
            name, _, value = line[1:].partition(" = ")
            if value != "undefined":
                out.append('%s = "%s"' % (name, re.sub(r'(["\\$])', r"\\\1", value)))
        elif line.strip():
            out.append(line)
    return "\n".join(out) + "\n"


@FUZZ_SMALL
@given(st.data())
def test_valid_configs_load_as_generated_and_round_trip_through_dump(data):
    with tempfile.TemporaryDirectory(prefix="pfmfz-") as d:
        os.makedirs(os.path.join(d, "p"))
        files, expect, names = data.draw(valid_configs(d))
        write_files(d, files)
        path = os.path.join(d, "pfm.conf")
        config = cfg.load(path, environ=ENVIRON)
        assert [p.name for p in config.pools] == names
        for (section, name), value in expect.items():
            target = config.global_ if section == "global" else config.pool(section)
            attr = name.replace(".", "_")
            assert getattr(target, attr) == value, (section, name, files)
        first = cfg.dump(config)
        with open(path, "w") as f:
            f.write(reload_dump(first))
        again = cfg.load(path, environ=ENVIRON)
        assert cfg.dump(again) == first
        for before, after in [(config.global_, again.global_)] + list(zip(config.pools,
                                                                           again.pools)):
            for s in STORED:
                if hasattr(before, s.attr):
                    assert getattr(after, s.attr) == getattr(before, s.attr), s.name


# ---- regressions the fuzzing found -------------------------------------------------------------


def test_a_nul_character_is_a_syntax_error_at_its_line(tmp_path):
    """`user = nobody\\0` raised ValueError from pwd (a traceback at -t)."""
    path = tmp_path / "pfm.conf"
    path.write_text("[www]\n" + "\n".join(BASE_POOL) + "\nuser = nobody\x00\n")
    try:
        cfg.load(str(path))
    except ConfigError as e:
        assert str(e) == "[%s:8] syntax error: a NUL character in the line" % path
    else:
        raise AssertionError("a NUL was accepted")


def test_lines_end_only_at_cr_and_lf_so_line_numbers_match_the_editors(tmp_path):
    """str.splitlines() cut `ping.response = a\\x85b` in two, and every later
    error named the wrong line."""
    path = tmp_path / "pfm.conf"
    path.write_text("[www]\n" + "\n".join(BASE_POOL) + "\nping.response = a\x85b\u2028c\x0c\n"
                    "pm.max_children = many\n", encoding="utf-8")
    try:
        cfg.load(str(path))
    except ConfigError as e:
        assert (e.line, e.directive) == (9, "pm.max_children")
    else:
        raise AssertionError("pm.max_children = many was accepted")
    path.write_text("[www]\n" + "\n".join(BASE_POOL) + "\nping.response = a\x85b\u2028c\r\n",
                    encoding="utf-8")
    assert cfg.load(str(path)).pool("www").ping_response == "a\x85b\u2028c"


def test_a_unix_socket_path_with_undecodable_bytes_is_measured_not_crashed_on(tmp_path):
    """listen = ${DIR}/x.sock where DIR came from non-UTF-8 bytes raised UnicodeEncodeError."""
    path = tmp_path / "pfm.conf"
    path.write_text("[www]\n" + "\n".join(BASE_POOL[1:]) + "\nlisten = ${BAD}/x.sock\n")
    pool = cfg.load(str(path), environ={"BAD": "/tmp/caf\udce9"}).pool("www")
    assert pool.listen == "/tmp/caf\udce9/x.sock"
    path.write_text("[www]\n" + "\n".join(BASE_POOL[1:]) + "\nlisten = ${BAD}/x.sock\n")
    try:
        cfg.load(str(path), environ={"BAD": "/tmp/" + "\udce9" * 120})
    except ConfigError as e:
        assert "path is too long (found length: 132, maximal length: 107)" in str(e)
    else:
        raise AssertionError("a 132-byte socket path was accepted")
