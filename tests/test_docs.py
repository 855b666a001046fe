"""The operator-facing files agree with the code: man pages, conf/, benchmarks/.

* Both man pages render with `groff -man -ww -z` without a single warning
  (groff is required: Debian's groff-base, installed by scripts/setup).
* Every directive of the settings table has its own entry in pfm.conf(5), in
  the right section, with its default, and a line in conf/pfm.conf.
* Every option `pfm --help` prints is in pfm(8).
* The shipped configs are valid: conf/pfm.conf and the pool example pass
  `pfm -t`, the nginx site passes `nginx -t`, the systemd unit's command
  lines parse with pfm's own option parser.
* pfm.conf(5) names every field `pfm.status.snapshot` produces (pool and
  per-process), every OpenMetrics family, every format's Content-Type, and
  every access.format placeholder and modifier `pfm.accesslog` accepts;
  pfm(8) names every systemd notification the master sends.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import string
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

try:
    from pfm.settings import SETTINGS
except ImportError:  # the table lived in pfm/config.py at first
    from pfm.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
MAN8 = ROOT / "man" / "pfm.8"
MAN5 = ROOT / "man" / "pfm.conf.5"
CONF = ROOT / "conf" / "pfm.conf"
POOL_EXAMPLE = ROOT / "conf" / "pool.d" / "www.conf.example"
NGINX_SITE = ROOT / "conf" / "nginx" / "pfm-site.conf"
UNIT = ROOT / "conf" / "systemd" / "pfm.service"
LOGROTATE = ROOT / "conf" / "logrotate.d" / "pfm"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def run_pfm(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "pfm", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def roff_text(source: str) -> str:
    """Roff source as plain words: escapes resolved, request names dropped."""
    text = re.sub(r"\\f[BIRP]", "", source)
    for escape, char in (("\\-", "-"), ("\\(dq", '"'), ("\\(aq", "'"), ("\\(ti", "~"),
                         ("\\(ha", "^"), ("\\e", "\\"), ("\\~", " "), ("\\&", "")):
        text = text.replace(escape, char)
    return re.sub(r"^\.[A-Za-z]+ ?", "", text, flags=re.M)


def man_sections(source: str) -> dict:
    """`.SH NAME` -> that section's source."""
    parts = re.split(r"^\.SH (.*)$", source, flags=re.M)
    return {parts[i].strip('"'): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def subsections(section_source: str) -> dict:
    """`.SS Title` -> that subsection's source (the text before the first is under "")."""
    parts = re.split(r"^\.SS (.*)$", section_source, flags=re.M)
    out = {"": parts[0]}
    out.update({parts[i].strip('"'): parts[i + 1] for i in range(1, len(parts) - 1, 2)})
    return out


def entry_tags(source: str) -> set:
    """The tags of the .TP entries in `source`, as plain text; a tag naming
    several things (`.BR a ", " b`) gives each of them."""
    lines = source.splitlines()
    tags = set()
    for i, line in enumerate(lines[:-1]):
        if re.match(r"\.TP\b", line):
            text = roff_text(lines[i + 1]).replace('"', "").strip()
            tags.add(text)
            tags.update(part.strip() for part in text.split(", ") if part.strip())
    return tags


def directive_entry(section_source: str, name: str):
    """The source of the .TP entry whose tag is `.BI "NAME = "` (or `"env["`)."""
    head = re.compile(r'^\.BI "%s(?: = "|\[")' % re.escape(name), re.M)
    match = head.search(section_source)
    if not match:
        return None
    lines, depth = [], 0
    for line in section_source[match.start():].splitlines():
        if lines and depth == 0 and re.match(r"\.(?:TP|SS|SH|PP)\b", line):
            break
        depth += line.startswith(".RS") - line.startswith(".RE")
        lines.append(line)
    return "\n".join(lines)


def default_spellings(setting) -> set:
    """Ways the page may write a setting's default."""
    value = setting.default
    spellings = {str(value), setting.format(value)}
    if isinstance(value, bool):
        spellings = {setting.format(value)}
    elif setting.type in ("time",) and isinstance(value, int):
        spellings |= {f"{value}s"}
    elif setting.type == "size" and isinstance(value, int) and value:
        for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if value % size == 0:
                spellings.add(f"{value // size}{unit}")
                break
    return spellings


# ---- man pages render cleanly -----------------------------------------------------------


@pytest.mark.parametrize("page", [MAN8, MAN5], ids=lambda p: p.name)
def test_man_page_renders_without_warnings(page):
    groff = shutil.which("groff")
    assert groff, "groff is missing (Debian's groff-base; scripts/setup installs it)"
    result = subprocess.run([groff, "-man", "-ww", "-z", str(page)],
                            capture_output=True, text=True, timeout=60)
    assert result.stderr == "" and result.returncode == 0, result.stderr


# ---- pfm.conf(5) and conf/pfm.conf cover the settings table --------------------------------


def test_settings_table_is_not_empty():
    names = {s.name for s in SETTINGS}
    assert {"listen", "pm", "pm.max_children", "app", "pid", "error_log"} <= names


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s.section}:{s.name}")
def test_every_setting_has_an_entry_in_pfm_conf_5(setting):
    sections = man_sections(MAN5.read_text())
    where = {"global": "GLOBAL DIRECTIVES", "pool": "POOL DIRECTIVES"}.get(setting.section)
    source = sections[where] if where else MAN5.read_text()
    entry = directive_entry(source, setting.name)
    assert entry, f"pfm.conf(5) has no entry '.BI \"{setting.name} = \"' in {where or 'it'}"
    text = roff_text(entry)
    if setting.default not in (None, [], {}, ()):
        assert "Default:" in text, f"{setting.name}: no default given"
        after = text.split("Default:", 1)[1]
        assert any(s in after for s in default_spellings(setting)), (
            f"{setting.name}: the page does not give the default {setting.default!r}")
    if setting.mandatory:
        assert "Mandatory" in text, f"{setting.name} is mandatory"
    if setting.section == "pool" and set(setting.pm) != {"static", "dynamic", "ondemand"}:
        for mode in setting.pm:
            assert mode in text, f"{setting.name}: the page does not say it is for pm = {mode}"


def test_php_only_directives_are_named_in_pfm_conf_5():
    text = roff_text(MAN5.read_text())
    for name in ("php_value", "php_admin_value", "php_flag", "php_admin_flag",
                 "security.limit_extensions"):
        assert name in text


def test_every_setting_is_in_conf_pfm_conf():
    text = CONF.read_text()
    first_pool = re.search(r"^\[(?!global\])[^\]]+\]", text, re.M)
    assert first_pool, "conf/pfm.conf has no pool section"
    parts = {"global": text[:first_pool.start()], "pool": text[first_pool.start():]}
    missing = []
    for s in SETTINGS:
        part = parts.get(s.section, text)
        pattern = r"^;?\s*%s\s*(=|\[)" % re.escape(s.name)
        if not re.search(pattern, part, re.M):
            missing.append(f"{s.section}:{s.name}")
    assert not missing, f"conf/pfm.conf lacks a (commented) line for: {missing}"


def test_conf_pfm_conf_passes_pfm_test():
    result = run_pfm("-t", "-y", str(CONF))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_pool_example_passes_pfm_test(shared_dir):
    # the example's /srv/$pool becomes a directory holding the module it names;
    # -t imports it as the example's user (www-data), so it must be readable
    tmp_path = shared_dir
    home = tmp_path / "www" / "myproject"
    home.mkdir(parents=True)
    (home / "__init__.py").write_text("")
    (home / "wsgi.py").write_text("def application(environ, start_response):\n"
                                  "    return []\n")
    (tmp_path / "pool.d").mkdir()
    example = POOL_EXAMPLE.read_text().replace("/srv/$pool", f"{tmp_path}/$pool")
    (tmp_path / "pool.d" / "www.conf").write_text(example)
    (tmp_path / "pfm.conf").write_text("[global]\ninclude = pool.d/*.conf\n")
    result = run_pfm("-t", "-y", str(tmp_path / "pfm.conf"))
    assert result.returncode == 0, result.stderr


# ---- pfm.conf(5) covers the status page, the access log and the slow log --------------------


def _status_snapshots():
    """Snapshots of a real scoreboard with one claimed, busy slot, for each pm."""
    from pfm import status
    from pfm.scoreboard import Scoreboard

    board = Scoreboard.create(2)
    try:
        slot = board.slot(board.assign_slot())
        pid = os.getpid()
        slot.claim(pid, time.time(), time.monotonic())
        slot.request_start("GET", "/status", "full", 0, time.monotonic(), "/srv/www/status")
        counters, slots = board.snapshot()
    finally:
        board.close()
    assert [s.pid for s in slots] == [pid]
    snaps = []
    for pm in ("static", "dynamic", "ondemand"):
        pool = SimpleNamespace(name="www", pm=pm, pm_max_children=2, pm_min_spare_servers=1,
                               pm_max_spare_servers=2)
        snaps.append(status.snapshot(pool, counters, slots, listen_queue=1,
                                     listen_queue_len=128, now_wall=time.time(),
                                     now_mono=time.monotonic(), memory={pid: (4096, 2048)}))
    return snaps


def _status_page() -> dict:
    sections = man_sections(MAN5.read_text())
    assert "STATUS PAGE" in sections, "pfm.conf(5) has no STATUS PAGE section"
    return subsections(sections["STATUS PAGE"])


def test_status_page_names_every_pool_field():
    keys = {k for snap in _status_snapshots() for k in snap if k != "processes"}
    assert {"accepted conn", "busy ratio", "min spare servers"} <= keys
    tags = entry_tags(_status_page()["Pool fields"])
    missing = sorted(keys - tags)
    assert not missing, f"STATUS PAGE, Pool fields: no entry for {missing}"


def test_status_page_names_every_process_field():
    snaps = _status_snapshots()
    keys = {k for snap in snaps for proc in snap["processes"] for k in proc}
    assert {"pid", "state", "pss", "uss"} <= keys
    tags = entry_tags(_status_page()["Per-process fields"])
    missing = sorted(keys - tags)
    assert not missing, f"STATUS PAGE, Per-process fields: no entry for {missing}"


def test_status_page_names_every_openmetrics_family():
    from pfm import status

    families = set()
    for snap in _status_snapshots():
        text = status.render_openmetrics(snap, True).decode()
        families |= set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert {"pfm_up", "pfm_busy_ratio", "pfm_process_pss_bytes"} <= families
    tags = entry_tags(_status_page()["OpenMetrics"])
    missing = sorted(families - tags)
    assert not missing, f"STATUS PAGE, OpenMetrics: no entry for {missing}"


def test_status_page_gives_every_format_and_content_type():
    from pfm import status

    text = roff_text(man_sections(MAN5.read_text())["STATUS PAGE"])
    for fmt, content_type in status.CONTENT_TYPES.items():
        assert content_type in text, f"STATUS PAGE does not give {content_type}"
        if fmt != "text":
            assert status.choose_format(fmt) == (fmt, False)
            assert f"?{fmt}" in text, f"STATUS PAGE does not name ?{fmt}"
    assert status.choose_format("json&full") == ("json", True)
    assert "&full" in text
    assert "scrape_configs:" in text and "metrics_path: /status" in text


def _accepted_letters():
    """Letters that access.format accepts, alone or with an argument."""
    from pfm.accesslog import compile_format

    letters = []
    for letter in string.ascii_letters:
        for fmt in (f"%{letter}", f"%{{HTTP_HOST}}{letter}"):
            try:
                compile_format(fmt)
            except ValueError:
                continue
            letters.append(letter)
            break
    return letters


def test_access_log_format_documents_every_placeholder():
    sections = man_sections(MAN5.read_text())
    assert "ACCESS LOG FORMAT" in sections, "pfm.conf(5) has no ACCESS LOG FORMAT section"
    source = sections["ACCESS LOG FORMAT"]
    tags = entry_tags(source)
    letters = _accepted_letters()
    assert set("CdefilmMnopPqQrRsStTu") - set("iS") <= set(letters), letters
    missing = [f"%{letter}" for letter in letters
               if not any(re.fullmatch(r"%%(\{[^}]*\})?%s" % letter, tag) for tag in tags)]
    assert not missing, f"ACCESS LOG FORMAT: no entry for {missing}"
    assert "%%" in tags, "ACCESS LOG FORMAT: no entry for %%"


def test_access_log_format_documents_every_modifier():
    """The words %C, %d and %M accept (their error message lists them) are
    each written as %{word}X in the section."""
    from pfm.accesslog import compile_format

    text = roff_text(man_sections(MAN5.read_text())["ACCESS LOG FORMAT"])
    checked = 0
    for letter in _accepted_letters():
        try:
            compile_format("%{zzbogus}" + letter)
            continue
        except ValueError as e:
            words = set(re.findall(r"'([a-z]+)'", str(e))) - {"zzbogus"}
        for word in words:
            checked += 1
            assert f"%{{{word}}}{letter}" in text, f"ACCESS LOG FORMAT lacks %{{{word}}}{letter}"
    assert checked >= 13


def test_slow_log_section_shows_the_entry_and_the_log_lines():
    text = roff_text(man_sections(MAN5.read_text())["SLOW LOG AND TIMEOUTS"])
    for needle in ("]  [pool www] pid ", "script_filename = ", "request = GET",
                   "executing too slow", "execution timed out", "terminating",
                   "innermost first", "ptrace", "kept-alive"):
        assert needle in text, needle


def test_nginx_site_keeps_the_status_page_private():
    site = NGINX_SITE.read_text()
    block = re.search(r"location = /status \{(.*?)\}", site, re.S)
    assert block, "the nginx site has no status location"
    assert "allow 127.0.0.1;" in block.group(1) and "deny all;" in block.group(1)
    assert not re.search(r"keepalive.*(at or below|<=|no more than).*max_children", site,
                         re.I | re.S), "keep-alive no longer needs keepalive <= max_children"


# ---- pfm(8) covers the command line ---------------------------------------------------------


def test_every_option_of_pfm_help_is_in_pfm_8():
    result = run_pfm("--help")
    assert result.returncode == 0, result.stderr
    help_text = result.stdout + result.stderr
    long_flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text))
    short_flags = set(re.findall(r"(?<![\w-])-[a-zA-Z](?![\w-])", help_text))
    assert {"--fpm-config", "--test", "--nodaemonize", "--app"} <= long_flags
    page = roff_text(MAN8.read_text())
    missing = sorted(f for f in long_flags | short_flags
                     if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(f), page))
    assert not missing, f"pfm(8) does not document: {missing}"


def test_pfm_8_documents_signals_and_exit_statuses():
    sections = man_sections(MAN8.read_text())
    signals = roff_text(sections["SIGNALS"])
    for sig in ("SIGINT", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGUSR2"):
        assert sig in signals
    statuses = roff_text(sections["EXIT STATUS"])
    for status in ("0", "64", "70", "78"):
        assert re.search(r"^%s$" % status, statuses, re.M), status


def test_pfm_8_names_every_systemd_notification():
    master = (ROOT / "pfm" / "master.py").read_text()
    names = set(re.findall(r'(?:\\n|")([A-Z][A-Z_]*)=', master))
    assert {"READY", "RELOADING", "STOPPING", "STATUS"} <= names
    text = roff_text(man_sections(MAN8.read_text())["SYSTEMD"])
    missing = sorted(n for n in names if f"{n}=" not in text)
    assert not missing, f"pfm(8), SYSTEMD: no {missing}"


def test_pfm_8_documents_the_profile_directory_and_worker_signals():
    from pfm import worker

    assert "PFM_PROFILE_DIR" in (ROOT / "pfm" / "worker.py").read_text()
    assert hasattr(worker, "PROFILE_DIR")
    sections = man_sections(MAN8.read_text())
    env = roff_text(sections["ENVIRONMENT"])
    assert "PFM_PROFILE_DIR" in env and re.search(r"worker-\s*PID\s*\.prof", env)
    signals = subsections(sections["SIGNALS"])
    assert {"Master", "Pool managers", "Workers"} <= set(signals)
    assert "SIGRTMIN+1" in roff_text(signals["Workers"])


# ---- the other shipped files --------------------------------------------------------------


def test_nginx_site_passes_nginx_t(tmp_path):
    assert os.access(NGINX, os.X_OK), "nginx is missing (scripts/setup installs it)"
    shutil.copy("/etc/nginx/fastcgi_params", tmp_path / "fastcgi_params")
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
                    f"events {{}}\nhttp {{\n    include {NGINX_SITE};\n}}\n")
    result = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf),
                             "-e", str(tmp_path / "error.log")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_systemd_unit_command_lines_parse():
    from pfm.cli import build_parser

    unit = UNIT.read_text()
    assert re.search(r"^Type=notify$", unit, re.M)
    assert re.search(r"^ExecReload=/bin/kill -USR2 \$MAINPID$", unit, re.M)
    commands = re.findall(r"^Exec(?:Start|Reload)=(\S*/pfm) (.*)$", unit, re.M)
    assert commands, "no pfm command line in the unit"
    for _, args in commands:
        parsed = build_parser().parse_args(args.split())
        assert parsed.config == "/etc/pfm/pfm.conf"
    start = re.search(r"^ExecStart=\S+ (.*)$", unit, re.M).group(1).split()
    assert build_parser().parse_args(start).nodaemonize, "Type=notify needs the foreground"


def test_logrotate_signals_the_configured_pid_file():
    pid = re.search(r"^pid\s*=\s*(\S+)", CONF.read_text(), re.M).group(1)
    rotate = LOGROTATE.read_text()
    assert f'kill -USR1 "$(cat {pid})"' in rotate
    log_dir = os.path.dirname(re.search(r"^error_log\s*=\s*(\S+)", CONF.read_text(),
                                        re.M).group(1))
    assert re.search(r"^%s/\*\.log \{" % re.escape(log_dir), rotate, re.M)


# ---- the benchmark seed -------------------------------------------------------------------


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_benchmark_hello_app_answers_the_same_14_bytes_as_php():
    from wsgiref.validate import validator

    hello = _load(ROOT / "benchmarks" / "apps" / "hello.py", "bench_hello")
    php = (ROOT / "benchmarks" / "apps" / "hello.php").read_text()
    assert '"Hello, world!\\n"' in php
    seen = []
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
               "SERVER_NAME": "localhost", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": (1, 0),
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
               "wsgi.errors": sys.stderr, "wsgi.multithread": False,
               "wsgi.multiprocess": True, "wsgi.run_once": False}
    body = validator(hello.app)(environ, lambda status, headers: seen.append(status))
    data = b"".join(body)
    body.close()
    assert seen == ["200 OK"] and data == b"Hello, world!\n" and len(data) == 14


def test_benchmark_reads_wrk_output():
    bench = _load(ROOT / "benchmarks" / "run_hello.py", "bench_run_hello")
    sample = """Running 5s test @ http://127.0.0.1:8081/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.00us  120.00us   5.00ms   90.00%
    Req/Sec    19.50k     1.00k   21.00k    70.00%
  Latency Distribution
     50%  390.00us
     75%  450.00us
     90%  520.00us
     99%    1.25ms
  97000 requests in 5.00s, 15.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  19400.00
Transfer/sec:      3.00MB
"""
    rps, p99, requests, errors, non2xx = bench.parse_wrk(sample)
    assert (rps, p99, requests, errors, non2xx) == (19400.0, 1.25, 97000, 3, 4)
