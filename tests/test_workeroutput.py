"""catch_workers_output: lines, decoration and log_limit wrapping (php-fpm's format)."""

import os
import re

from pfm.log import Log
from pfm.workeroutput import OutputCatcher, wrap


def caught(tmp_path, data: bytes, limit=1024, decorate=True, close=True):
    log = Log(str(tmp_path / "err.log"), "notice", limit)
    r, w = os.pipe()
    os.write(w, data)
    if close:
        os.close(w)
    os.set_blocking(r, False)
    catcher = OutputCatcher(log, "www", 123, "stdout", decorate)
    open_after = catcher.feed(r)
    os.close(r)
    if not close:
        os.close(w)
    log.close()
    return (tmp_path / "err.log").read_text().splitlines(), open_after


def test_each_line_is_a_decorated_warning(tmp_path):
    lines, _ = caught(tmp_path, b"one\ntwo\n")
    assert [re.sub(r"^\[[^]]+\] ", "", x) for x in lines] == [
        'WARNING: [pool www] child 123 said into stdout: "one"',
        'WARNING: [pool www] child 123 said into stdout: "two"']


def test_partial_line_at_close_says_pipe_is_closed(tmp_path):
    lines, open_after = caught(tmp_path, b"tail")
    assert lines[-1].endswith('said into stdout: "tail", pipe is closed')
    assert open_after is False


def test_partial_line_waits_while_the_pipe_is_open(tmp_path):
    lines, open_after = caught(tmp_path, b"no newline yet", close=False)
    assert lines == [] and open_after is True


def test_long_lines_wrap_at_log_limit_and_keep_the_content(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(3000))
    lines, _ = caught(tmp_path, text.encode() + b"\n", limit=600)
    assert all(len(x) <= 600 for x in lines)
    assert all(len(x) == 600 for x in lines[:-1])
    body = "".join(x.split(' said into stdout: "', 1)[1].rstrip('"') for x in lines)
    assert body == text


def test_plain_output_is_not_decorated(tmp_path):
    lines, _ = caught(tmp_path, b"raw line\n", decorate=False)
    assert lines == ["raw line"]


def test_wrap_fits_the_tail_on_the_last_piece():
    pieces = wrap("x" * 25, 20, 10, '"')
    assert all(len(p) <= 10 for p in pieces) and len(pieces[-1]) + 1 <= 10
