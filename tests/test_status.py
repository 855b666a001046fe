"""Tests for pfm.status: php-fpm's status page and ping, rendered from hand-made slots.

Pure unit tests: the module renders only, so every input is built here and
every field of every format is checked against the values set. The parsers
are the real ones (json, xml.etree, prometheus_client's OpenMetrics parser).
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from types import SimpleNamespace

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from pfm import status
from pfm.scoreboard import (
    FINISHING,
    IDLE,
    INFO,
    KEEPALIVE,
    READING,
    RUNNING,
    STAGE_NAMES,
    STARTING,
    PoolCounters,
    Scoreboard,
    SlotState,
)

START = 1764331200.0     # 28/Nov/2025:12:00:00 +0000, the pool's start
NOW_WALL = START + 62
NOW_MONO = 5000.0
XHTML = "{http://www.w3.org/1999/xhtml}"


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Dates are local time: pin the zone, and restore it after the test."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def make_pool(pm: str = "dynamic", max_children: int = 4, name: str = "www"):
    return SimpleNamespace(name=name, pm=pm, pm_max_children=max_children,
                           pm_min_spare_servers=1, pm_max_spare_servers=3)


def make_counters(**kw) -> PoolCounters:
    values = dict(start_time=START, accepted_conn=9, listen_queue=0, max_listen_queue=2,
                  idle=0, active=0, total=0, max_active=1, max_children_reached=3,
                  slow_requests=4)
    values.update(kw)
    return PoolCounters(**values)


def make_slot(index: int = 0, pid: int = 31330, stage: int = IDLE, **kw) -> SlotState:
    values = dict(index=index, pid=pid, stage=stage, stage_name=STAGE_NAMES[stage],
                  start_time=START, stage_since=NOW_MONO - 1, heartbeat=NOW_MONO - 1,
                  last_activity=NOW_MONO - 1, requests=5, method="GET", uri="/index.php",
                  query="a=b", script="/var/www/index.php", user="", content_length=0,
                  request_start=NOW_MONO - 2, duration_us=1250, cpu=0.0, memory=2097152)
    values.update(kw)
    return SlotState(**values)


IDLE_SLOT = make_slot()
BUSY_SLOT = make_slot(1, 31331, RUNNING, method="POST", uri="/upload.php", query="",
                      content_length=42, user="alice", script="/var/www/upload.php",
                      request_start=NOW_MONO - 1.5, cpu=0.0, memory=0, requests=7)


def snap(slots=(IDLE_SLOT, BUSY_SLOT), pool=None, counters=None, listen_queue=0,
         listen_queue_len=4096, memory=None):
    return status.snapshot(pool or make_pool(), counters or make_counters(), slots,
                           listen_queue=listen_queue, listen_queue_len=listen_queue_len,
                           now_wall=NOW_WALL, now_mono=NOW_MONO, memory=memory)


def text(s, full=True) -> str:
    return status.render_text(s, full).decode()


def metrics(s, full=False) -> dict:
    """{family name: family} of the OpenMetrics output, through the real parser."""
    body = status.render_openmetrics(s, full).decode()
    return {f.name: f for f in text_string_to_metric_families(body)}


POOL_TEXT = """\
pool:                 www
process manager:      dynamic
start time:           28/Nov/2025:12:00:00 +0000
start since:          62
accepted conn:        9
listen queue:         0
max listen queue:     2
listen queue len:     4096
idle processes:       1
active processes:     1
total processes:      2
max active processes: 1
max children reached: 3
slow requests:        4
max children:         4
min spare servers:    1
max spare servers:    3
busy ratio:           0.25
"""

PROCESS_TEXT = """
************************
pid:                  31330
state:                Idle
start time:           28/Nov/2025:12:00:00 +0000
start since:          62
requests:             5
request duration:     1250
request method:       GET
request URI:          /index.php?a=b
content length:       0
user:                 -
script:               /var/www/index.php
last request cpu:     0.00
last request memory:  2097152
pss:                  -
uss:                  -

************************
pid:                  31331
state:                Running
start time:           28/Nov/2025:12:00:00 +0000
start since:          62
requests:             7
request duration:     1500000
request method:       POST
request URI:          /upload.php
content length:       42
user:                 alice
script:               /var/www/upload.php
last request cpu:     0.00
last request memory:  0
pss:                  -
uss:                  -
"""


# ---- the snapshot -------------------------------------------------------------------


def test_snapshot_keys_follow_php_fpm_order_then_pfm_extras():
    s = snap()
    assert list(s) == [
        "pool", "process manager", "start time", "start since", "accepted conn",
        "listen queue", "max listen queue", "listen queue len", "idle processes",
        "active processes", "total processes", "max active processes",
        "max children reached", "slow requests",
        "max children", "min spare servers", "max spare servers", "busy ratio", "processes"]
    assert [list(p) for p in s["processes"]] == [list(status.PROCESS_FIELDS)] * 2


def test_idle_active_total_come_from_slots_even_when_counters_disagree():
    s = snap(counters=make_counters(idle=9, active=9, total=18))
    assert (s["idle processes"], s["active processes"], s["total processes"]) == (1, 1, 2)
    keepalive = make_slot(2, 31332, KEEPALIVE)
    reserved = make_slot(3, 0, STARTING, start_time=0.0)
    s = snap(slots=[IDLE_SLOT, BUSY_SLOT, keepalive, reserved])
    assert (s["idle processes"], s["active processes"], s["total processes"]) == (2, 2, 4)


def test_pool_history_comes_from_the_counters():
    s = snap()
    assert s["start time"] == int(START) and s["start since"] == 62
    assert s["accepted conn"] == 9 and s["max listen queue"] == 2
    assert s["max active processes"] == 1 and s["max children reached"] == 3
    assert s["slow requests"] == 4


def test_unknown_listen_queue_is_none_and_so_is_its_maximum():
    s = snap(listen_queue=None, listen_queue_len=None)
    assert s["listen queue"] is None and s["max listen queue"] is None
    assert s["listen queue len"] is None


def test_busy_ratio_is_active_over_max_children():
    assert snap()["busy ratio"] == 0.25
    busy = [make_slot(i, 100 + i, RUNNING) for i in range(3)]
    assert snap(slots=busy, pool=make_pool(max_children=4))["busy ratio"] == 0.75
    assert snap(slots=[], pool=make_pool(max_children=4))["busy ratio"] == 0.0


def test_busy_ratio_stays_at_one_while_a_replacement_overlaps():
    busy = [make_slot(i, 100 + i, RUNNING) for i in range(3)]
    assert snap(slots=busy, pool=make_pool(max_children=2))["busy ratio"] == 1.0


def test_spare_server_limits_only_with_pm_dynamic():
    for pm in ("static", "ondemand"):
        s = snap(pool=make_pool(pm))
        assert "min spare servers" not in s and "max spare servers" not in s
        assert s["max children"] == 4
        assert "spare" not in text(s)
        assert b"spare" not in status.render_json(s, True)
        assert b"spare" not in status.render_openmetrics(s, True)


def test_request_duration_is_last_request_when_idle_else_elapsed():
    slots = [
        make_slot(0, 1, IDLE, duration_us=1250),
        make_slot(1, 2, KEEPALIVE, duration_us=777),
        make_slot(2, 3, RUNNING, request_start=NOW_MONO - 0.25),
        make_slot(3, 4, FINISHING, request_start=NOW_MONO - 0.5),
        # Before Running, request_start is still the previous request's: the stage start counts.
        make_slot(4, 5, READING, request_start=NOW_MONO - 100, stage_since=NOW_MONO - 0.125),
        make_slot(6, 6, INFO, request_start=NOW_MONO - 100, stage_since=NOW_MONO - 0.0625),
        make_slot(5, 0, STARTING, start_time=0.0, request_start=0.0),
    ]
    got = [p["request duration"] for p in snap(slots=slots)["processes"]]
    assert got == [1250, 777, 250000, 500000, 125000, 62500, 0]


def test_last_request_cpu_and_memory_show_only_when_idle():
    idle = make_slot(0, 1, IDLE, cpu=12.345, memory=1000)
    running = make_slot(1, 2, RUNNING, cpu=50.0, memory=2000)
    a, b = snap(slots=[idle, running])["processes"]
    assert (a["last request cpu"], a["last request memory"]) == (12.345, 1000)
    assert (b["last request cpu"], b["last request memory"]) == (0.0, 0)
    assert "last request cpu:     12.35\n" in text(snap(slots=[idle]))


def test_worker_retiring_after_its_last_request_shows_that_request():
    """A stage after the request (pm.max_requests reached, waiting for its
    replacement) keeps the finished request's numbers; it is not idle."""
    retiring = make_slot(0, 1, IDLE, duration_us=900, cpu=3.0, memory=512,
                         request_start=NOW_MONO - 100)
    retiring = replace(retiring, stage=7, stage_name="Retiring")
    s = snap(slots=[retiring])
    p = s["processes"][0]
    assert (p["state"], p["request duration"], p["last request cpu"],
            p["last request memory"]) == ("Retiring", 900, 3.0, 512)
    assert (s["idle processes"], s["active processes"]) == (0, 1)


def test_request_uri_gets_the_query_only_when_there_is_one():
    a, b = snap()["processes"]
    assert a["request uri"] == "/index.php?a=b"
    assert b["request uri"] == "/upload.php"


def test_missing_method_user_and_script_show_a_dash():
    s = snap(slots=[make_slot(method="", user="", script="", uri="", query="")])
    p = s["processes"][0]
    assert (p["request method"], p["user"], p["script"], p["request uri"]) == ("-", "-", "-", "")


def test_pss_and_uss_come_from_the_memory_map_and_are_unknown_otherwise():
    s = snap(memory={31330: (4096, 1024)})
    a, b = s["processes"]
    assert (a["pss"], a["uss"]) == (4096, 1024)
    assert (b["pss"], b["uss"]) == (None, None)
    assert all(p["pss"] is None for p in snap(memory=None)["processes"])


def test_reserved_slot_is_listed_with_unknown_start():
    reserved = make_slot(0, 0, STARTING, start_time=0.0)
    s = snap(slots=[reserved])
    p = s["processes"][0]
    assert (p["pid"], p["state"], p["start time"], p["start since"]) == (0, "Starting", None, None)
    assert "start time:           -\n" in text(s)


def test_snapshot_of_a_real_scoreboard():
    board = Scoreboard.create(3, start_time=START)
    for pid in (11, 12):
        slot = board.slot(board.assign_slot(NOW_MONO - 10))
        slot.claim(pid, START + 1, NOW_MONO - 10)
        slot.set_stage(IDLE, NOW_MONO - 9)
    busy = board.slot(1)
    busy.request_start("GET", "/slow.php", 'x="1"', 0, NOW_MONO - 3, script="/srv/slow.php")
    counters, slots = board.snapshot()
    s = status.snapshot(make_pool(), counters, slots, listen_queue=None, listen_queue_len=0,
                        now_wall=NOW_WALL, now_mono=NOW_MONO)
    assert (s["idle processes"], s["active processes"], s["total processes"]) == (1, 1, 2)
    assert s["accepted conn"] == 1
    p = s["processes"][1]
    assert (p["pid"], p["state"], p["request duration"]) == (12, "Running", 3000000)
    assert json.loads(status.render_json(s, True))["processes"][1]["request uri"] == \
        '/slow.php?x="1"'
    board.close()


# ---- plain text ---------------------------------------------------------------------


def test_text_pool_fields_match_php_fpm_layout():
    assert text(snap(), full=False) == POOL_TEXT


def test_text_full_puts_a_star_line_before_each_process_block():
    assert text(snap(), full=True) == POOL_TEXT + PROCESS_TEXT


def test_text_labels_are_padded_to_22_columns():
    for line in text(snap()).splitlines():
        if line and not line.startswith("*"):
            label, _, _ = line.partition(":")
            assert line[21] == " " and line[22] != " ", line


def test_text_unknown_listen_queue_shows_a_dash():
    out = text(snap(listen_queue=None, listen_queue_len=None), full=False)
    assert "listen queue:         -\n" in out
    assert "max listen queue:     -\n" in out
    assert "listen queue len:     -\n" in out


def test_text_control_characters_cannot_start_a_line():
    s = snap(slots=[make_slot(uri="/a\nstate:                Idle", query="")])
    out = text(s)
    assert "request URI:          /a\\x0astate:                Idle\n" in out
    assert [line for line in out.splitlines() if line.startswith("state:")] == \
        ["state:                Idle"]


def test_start_time_is_a_local_date_with_its_offset(monkeypatch):
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()
    assert "start time:           28/Nov/2025:07:00:00 -0500\n" in text(snap(), False)
    assert status.format_time(START) == "28/Nov/2025:07:00:00 -0500"


# ---- JSON ---------------------------------------------------------------------------


def test_json_matches_php_fpm_shape_byte_for_byte():
    body = status.render_json(snap(slots=[IDLE_SLOT]), True).decode()
    assert body == (
        '{"pool":"www","process manager":"dynamic","start time":1764331200,'
        '"start since":62,"accepted conn":9,"listen queue":0,"max listen queue":2,'
        '"listen queue len":4096,"idle processes":1,"active processes":0,'
        '"total processes":1,"max active processes":1,"max children reached":3,'
        '"slow requests":4,"max children":4,"min spare servers":1,"max spare servers":3,'
        '"busy ratio":0.00, "processes":[{"pid":31330,"state":"Idle",'
        '"start time":1764331200,"start since":62,"requests":5,"request duration":1250,'
        '"request method":"GET","request uri":"/index.php?a=b","content length":0,'
        '"user":"-","script":"/var/www/index.php","last request cpu":0.00,'
        '"last request memory":2097152,"pss":null,"uss":null}]}')


def test_json_separates_process_objects_with_a_comma():
    body = status.render_json(snap(), True).decode()
    assert '"uss":null},{"pid":31331' in body
    data = json.loads(body)
    assert [p["pid"] for p in data["processes"]] == [31330, 31331]
    assert data["processes"][1] == {
        "pid": 31331, "state": "Running", "start time": 1764331200, "start since": 62,
        "requests": 7, "request duration": 1500000, "request method": "POST",
        "request uri": "/upload.php", "content length": 42, "user": "alice",
        "script": "/var/www/upload.php", "last request cpu": 0.0, "last request memory": 0,
        "pss": None, "uss": None}


def test_json_without_full_ends_after_the_pool_fields():
    body = status.render_json(snap(), False).decode()
    assert body.endswith('"busy ratio":0.25}')
    assert '"processes"' not in body
    assert json.loads(body) == {k: v for k, v in snap().items() if k != "processes"}


def test_json_escapes_the_query_bug64539():
    s = snap(slots=[make_slot(query='a=b"c')])
    body = status.render_json(s, True).decode()
    assert '"request uri":"/index.php?a=b\\"c"' in body
    assert json.loads(body)["processes"][0]["request uri"] == '/index.php?a=b"c'


def test_json_escapes_every_string():
    nasty = make_slot(method='G"T', uri="/a\\b\n", query="", user='u"\x01', script="/é/\t")
    s = snap(slots=[nasty], pool=make_pool(name='w"w'))
    data = json.loads(status.render_json(s, True))
    assert data["pool"] == 'w"w'
    p = data["processes"][0]
    assert (p["request method"], p["request uri"], p["user"], p["script"]) == \
        ('G"T', "/a\\b\n", 'u"\x01', "/é/\t")


def test_json_unknown_listen_queue_is_null():
    data = json.loads(status.render_json(snap(listen_queue=None, listen_queue_len=None), False))
    assert data["listen queue"] is None and data["max listen queue"] is None
    assert data["listen queue len"] is None


def test_json_busy_ratio_has_two_decimals():
    busy = [make_slot(i, 100 + i, RUNNING) for i in range(1)]
    body = status.render_json(snap(slots=busy, pool=make_pool(max_children=3)), False)
    assert body.endswith(b'"busy ratio":0.33}')


# ---- XML ----------------------------------------------------------------------------


def test_xml_is_well_formed_with_every_pool_field():
    body = status.render_xml(snap(), False).decode()
    assert body.startswith('<?xml version="1.0" ?>\n<status>\n<pool>www</pool>\n'
                           "<process-manager>dynamic</process-manager>\n")
    assert body.endswith("<busy-ratio>0.25</busy-ratio>\n</status>")
    root = ET.fromstring(body)
    assert root.tag == "status"
    assert [(e.tag, e.text) for e in root] == [
        ("pool", "www"), ("process-manager", "dynamic"), ("start-time", "1764331200"),
        ("start-since", "62"), ("accepted-conn", "9"), ("listen-queue", "0"),
        ("max-listen-queue", "2"), ("listen-queue-len", "4096"), ("idle-processes", "1"),
        ("active-processes", "1"), ("total-processes", "2"), ("max-active-processes", "1"),
        ("max-children-reached", "3"), ("slow-requests", "4"), ("max-children", "4"),
        ("min-spare-servers", "1"), ("max-spare-servers", "3"), ("busy-ratio", "0.25")]


def test_xml_full_lists_every_process_field():
    body = status.render_xml(snap(memory={31331: (10, 5)}), True).decode()
    assert body.endswith("</process>\n</processes>\n</status>")
    procs = ET.fromstring(body).find("processes")
    assert [[(e.tag, e.text) for e in p] for p in procs] == [
        [("pid", "31330"), ("state", "Idle"), ("start-time", "1764331200"),
         ("start-since", "62"), ("requests", "5"), ("request-duration", "1250"),
         ("request-method", "GET"), ("request-uri", "/index.php?a=b"),
         ("content-length", "0"), ("user", "-"), ("script", "/var/www/index.php"),
         ("last-request-cpu", "0.00"), ("last-request-memory", "2097152"),
         ("pss", "-"), ("uss", "-")],
        [("pid", "31331"), ("state", "Running"), ("start-time", "1764331200"),
         ("start-since", "62"), ("requests", "7"), ("request-duration", "1500000"),
         ("request-method", "POST"), ("request-uri", "/upload.php"),
         ("content-length", "42"), ("user", "alice"), ("script", "/var/www/upload.php"),
         ("last-request-cpu", "0.00"), ("last-request-memory", "0"),
         ("pss", "10"), ("uss", "5")]]


def test_xml_escapes_markup_and_replaces_characters_xml_forbids():
    nasty = make_slot(uri="/<a>&", query='b="c"\x01', user="</user>", script="/s\x7f")
    s = snap(slots=[nasty], pool=make_pool(name="w&w"))
    body = status.render_xml(s, True).decode()
    assert "<request-uri>/&lt;a&gt;&amp;?b=&quot;c&quot;\ufffd</request-uri>" in body
    root = ET.fromstring(body)
    assert root.findtext("pool") == "w&w"
    proc = root.find("processes/process")
    assert proc.findtext("request-uri") == '/<a>&?b="c"\ufffd'
    assert proc.findtext("user") == "</user>"
    assert proc.findtext("script") == "/s\x7f"


def test_xml_unknown_listen_queue_shows_a_dash():
    root = ET.fromstring(status.render_xml(snap(listen_queue=None), False))
    assert root.findtext("listen-queue") == "-" and root.findtext("max-listen-queue") == "-"


def test_xml_without_full_has_no_processes():
    assert ET.fromstring(status.render_xml(snap(), False)).find("processes") is None


# ---- HTML ---------------------------------------------------------------------------


def test_html_is_xhtml_with_pfm_title_and_a_row_per_pool_field():
    body = status.render_html(snap(), False).decode()
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html PUBLIC '
                           '"-//W3C//DTD XHTML 1.0 Strict//EN"')
    root = ET.fromstring(body)
    assert root.findtext(f"{XHTML}head/{XHTML}title") == "pfm status page"
    tables = root.findall(f"{XHTML}body/{XHTML}table")
    assert len(tables) == 1
    rows = [(r.findtext(f"{XHTML}th"), r.findtext(f"{XHTML}td")) for r in tables[0]]
    assert rows == [
        ("pool", "www"), ("process manager", "dynamic"),
        ("start time", "28/Nov/2025:12:00:00 +0000"), ("start since", "62"),
        ("accepted conn", "9"), ("listen queue", "0"), ("max listen queue", "2"),
        ("listen queue len", "4096"), ("idle processes", "1"), ("active processes", "1"),
        ("total processes", "2"), ("max active processes", "1"),
        ("max children reached", "3"), ("slow requests", "4"), ("max children", "4"),
        ("min spare servers", "1"), ("max spare servers", "3"), ("busy ratio", "0.25")]


def test_html_full_adds_a_bordered_table_with_a_row_per_process():
    root = ET.fromstring(status.render_html(snap(memory={31330: (8, 4)}), True))
    tables = root.findall(f"{XHTML}body/{XHTML}table")
    assert len(tables) == 2 and tables[1].get("border") == "1"
    header, *rows = list(tables[1])
    assert [th.text for th in header] == [
        "pid", "state", "start time", "start since", "requests", "request duration",
        "request method", "request uri", "content length", "user", "script",
        "last request cpu", "last request memory", "pss", "uss"]
    assert [[td.text for td in r] for r in rows] == [
        ["31330", "Idle", "28/Nov/2025:12:00:00 +0000", "62", "5", "1250", "GET",
         "/index.php?a=b", "0", "-", "/var/www/index.php", "0.00", "2097152", "8", "4"],
        ["31331", "Running", "28/Nov/2025:12:00:00 +0000", "62", "7", "1500000", "POST",
         "/upload.php", "42", "alice", "/var/www/upload.php", "0.00", "0",
         "-", "-"]]


def test_html_escapes_every_string():
    nasty = make_slot(uri="/<script>", query="x='1'&y", user="<b>")
    body = status.render_html(snap(slots=[nasty], pool=make_pool(name="<p>")), True).decode()
    assert "<script>" not in body and "<b>" not in body and "<p>" not in body
    root = ET.fromstring(body)
    cells = [td.text for td in root.iter(f"{XHTML}td")]
    assert "<p>" in cells and "/<script>?x='1'&y" in cells and "<b>" in cells


def test_html_unknown_listen_queue_shows_a_dash():
    body = status.render_html(snap(listen_queue=None), False).decode()
    assert "<tr><th>listen queue</th><td>-</td></tr>" in body


# ---- OpenMetrics --------------------------------------------------------------------


POOL_METRICS = {
    "pfm_start_since": ("counter", 62), "pfm_accepted_connections": ("counter", 9),
    "pfm_listen_queue": ("gauge", 0), "pfm_max_listen_queue": ("counter", 2),
    "pfm_listen_queue_length": ("gauge", 4096), "pfm_idle_processes": ("gauge", 1),
    "pfm_active_processes": ("gauge", 1), "pfm_total_processes": ("gauge", 2),
    "pfm_max_active_processes": ("counter", 1), "pfm_max_children_reached": ("counter", 3),
    "pfm_slow_requests": ("counter", 4), "pfm_max_children": ("gauge", 4),
    "pfm_min_spare_servers": ("gauge", 1), "pfm_max_spare_servers": ("gauge", 3),
    "pfm_busy_ratio": ("gauge", 0.25),
}


def test_openmetrics_parses_with_every_pool_metric_labelled_by_pool():
    fams = metrics(snap())
    assert list(fams) == ["pfm_up"] + list(POOL_METRICS)
    (up,) = fams["pfm_up"].samples
    assert (up.name, up.labels, up.value) == ("pfm_up", {"pool": "www", "pm": "dynamic"}, 1)
    for name, (kind, value) in POOL_METRICS.items():
        fam = fams[name]
        assert fam.type == kind and fam.documentation, name
        (sample,) = fam.samples
        assert sample.labels == {"pool": "www"} and sample.value == value, name


def test_openmetrics_counter_samples_end_in_total():
    body = status.render_openmetrics(snap(), True).decode()
    fams = metrics(snap(), full=True)
    for fam in fams.values():
        for sample in fam.samples:
            if fam.type == "counter":
                assert sample.name == fam.name + "_total"
                assert "\n%s{" % fam.name not in body
            else:
                assert sample.name == fam.name


def test_openmetrics_has_help_and_type_for_every_metric_and_ends_with_eof():
    body = status.render_openmetrics(snap(), True).decode()
    assert body.endswith("\n# EOF\n")
    names = {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE")}
    helps = {line.split()[2] for line in body.splitlines() if line.startswith("# HELP")}
    assert names == helps == set(metrics(snap(), full=True))


def test_openmetrics_unknown_listen_queue_has_no_sample():
    fams = metrics(snap(listen_queue=None, listen_queue_len=None))
    assert "pfm_listen_queue" not in fams and "pfm_max_listen_queue" not in fams
    assert "pfm_listen_queue_length" not in fams
    assert "pfm_idle_processes" in fams


def test_openmetrics_without_full_has_no_process_metrics():
    assert not [n for n in metrics(snap()) if n.startswith("pfm_process_")]


def test_openmetrics_full_adds_per_process_metrics_labelled_by_pid():
    reserved = make_slot(2, 0, STARTING, start_time=0.0)
    s = snap(slots=[IDLE_SLOT, BUSY_SLOT, reserved], memory={31330: (8192, 4096)})
    fams = metrics(s, full=True)

    def values(name):
        assert all(x.labels["pool"] == "www" for x in fams[name].samples)
        return {x.labels["pid"]: x.value for x in fams[name].samples}

    assert values("pfm_process_active") == {"31330": 0, "31331": 1}
    assert values("pfm_process_start_since") == {"31330": 62, "31331": 62}
    assert values("pfm_process_requests") == {"31330": 5, "31331": 7}
    assert fams["pfm_process_requests"].type == "counter"
    assert values("pfm_process_request_duration_microseconds") == \
        {"31330": 1250, "31331": 1500000}
    assert values("pfm_process_last_request_cpu") == {"31330": 0.0, "31331": 0.0}
    assert values("pfm_process_last_request_memory_bytes") == {"31330": 2097152, "31331": 0}
    assert values("pfm_process_pss_bytes") == {"31330": 8192}
    assert values("pfm_process_uss_bytes") == {"31330": 4096}


def test_openmetrics_escapes_the_pool_label():
    fams = metrics(snap(pool=make_pool(name='a"b\\c\nd')))
    assert fams["pfm_idle_processes"].samples[0].labels == {"pool": 'a"b\\c\nd'}


# ---- format selection and responses -------------------------------------------------


@pytest.mark.parametrize("query, expected", [
    ("", ("text", False)),
    ("full", ("text", True)),
    ("json", ("json", False)),
    ("json&full", ("json", True)),
    ("full&html", ("html", True)),
    ("json&xml", ("xml", False)),
    ("openmetrics&json", ("json", False)),
    ("openmetrics&xml&html", ("html", False)),
    ("openmetrics", ("openmetrics", False)),
    ("json=0&full=no", ("json", True)),    # presence of the key, not its value
    ("a=json", ("text", False)),           # a value is not a key
    ("jsonp&fully", ("text", False)),      # whole keys only
    ("%6Ason", ("json", False)),           # keys are URL-decoded, as PHP's $_GET
    ("&&xml&", ("xml", False)),
])
def test_choose_format_uses_key_presence_with_php_fpm_precedence(query, expected):
    assert status.choose_format(query) == expected


def test_content_types_are_php_fpm_values():
    assert status.CONTENT_TYPES == {
        "text": "text/plain", "html": "text/html", "xml": "text/xml",
        "json": "application/json",
        "openmetrics": "application/openmetrics-text; version=1.0.0; charset=utf-8"}


def respond(query="", method="GET"):
    return status.status_response(make_pool(), make_counters(), [IDLE_SLOT, BUSY_SLOT],
                                  listen_queue=0, listen_queue_len=4096, now_wall=NOW_WALL,
                                  now_mono=NOW_MONO, query_string=query, method=method)


NO_CACHE = [("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("Cache-Control", "no-cache, no-store, must-revalidate, max-age=0")]


@pytest.mark.parametrize("fmt", ["text", "html", "xml", "json", "openmetrics"])
def test_status_response_renders_the_chosen_format_never_cached(fmt):
    full_query = "full" if fmt == "text" else fmt + "&full"
    st, headers, body = respond(full_query)
    assert st == "200 OK"
    assert headers == [("Content-Type", status.CONTENT_TYPES[fmt])] + NO_CACHE
    assert body == status.RENDERERS[fmt](snap(), True)


def test_status_response_to_head_has_headers_only():
    st, headers, body = respond("json", method="HEAD")
    assert st == "200 OK" and body == b""
    assert headers[0] == ("Content-Type", "application/json")


def test_ping_answers_its_text_without_a_newline():
    assert status.ping_response("pong") == ("200 OK", [("Content-Type", "text/plain")] +
                                            NO_CACHE, b"pong")
    assert status.ping_response("pong", "HEAD")[2] == b""


def test_internal_error_is_php_fpm_500():
    st, headers, body = status.internal_error_response()
    assert st.startswith("500 ")
    assert body == b"Internal error. Please review log file for errors."
    assert headers == [("Content-Type", "text/plain")] + NO_CACHE


def test_renderers_take_a_copy_safe_snapshot():
    """A snapshot is plain data: rendering twice gives the same bytes, and a
    changed slot after the snapshot does not change it."""
    slots = [IDLE_SLOT]
    s = snap(slots=slots)
    first = status.render_json(s, True)
    slots[0] = replace(IDLE_SLOT, requests=99)
    assert status.render_json(s, True) == first
