"""access.format: php-fpm's placeholders render as documented; bad formats are refused."""

import pytest

from pfm.accesslog import Entry, compile_format


def entry(**over):
    values = dict(params={"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/x", "QUERY_STRING": "a=1",
                          "CONTENT_LENGTH": "12", "HTTP_HOST": "example.org",
                          "SCRIPT_FILENAME": "/srv/app.py", "REMOTE_USER": "ann"},
                  status=404, headers=[("Content-Type", "text/plain")], peer="127.0.0.1",
                  started=0.0, ended=1.0, duration=0.25, cpu=(0.05, 0.05),
                  memory=3 * 1024 * 1024, pid=42, pool="www")
    values.update(over)
    return Entry(**values)


@pytest.mark.parametrize("fmt, expected", [
    ('%R - %u "%m %r%Q%q" %s', '127.0.0.1 - ann "GET /x?a=1" 404'),
    ("%d|%{seconds}d|%{milli}d|%{micro}d", "0.250|0.250|250.000|250000"),
    ("%C|%{user}C|%{system}C", "40.00|20.00|20.00"),
    ("%M|%{kilo}M|%{mega}M", "3145728|3072|3"),
    ("%{HTTP_HOST}e %{MISSING}e", "example.org -"),
    ("%{Content-Type}o %{X-None}o", "text/plain -"),
    ("%f %l %n %p %%", "/srv/app.py 12 www 42 %"),
    ("%{%Y}t", "1970"),
])
def test_placeholders_render_like_php_fpm(fmt, expected):
    assert compile_format(fmt).render(entry()) == (expected + "\n").encode()


def test_query_marker_is_empty_without_query():
    e = entry(params={"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/"})
    assert compile_format('"%m %r%Q%q" %u').render(e) == b'"GET /" -\n'


def test_line_is_capped_at_php_fpm_buffer():
    e = entry(params={"SCRIPT_NAME": "/" + "a" * 5000})
    assert len(compile_format("%r").render(e)) == 1024


def test_only_what_the_format_needs_is_measured():
    assert compile_format("%s").needs == set()
    assert compile_format("%C %M %{X}o").needs == {"cpu", "memory", "headers"}


@pytest.mark.parametrize("fmt, message", [
    ("%Z", "Invalid token in the access.format (%Z)"),
    ("%{abc", "missing closing embrace in the access.format"),
    ("%{x}s", "embrace is not allowed for modifier %s"),
    ("%e", "the name of the environment variable must be set between embraces for %e"),
    ("%o", "the name of the header must be set between embraces for %o"),
    ("%{x}C", "only 'total', 'user' or 'system' are allowed as a modifier for %C ('x')"),
    ("%{x}d", "only 'seconds', 'milli', 'milliseconds', 'micro' or 'microseconds' are "
              "allowed as a modifier for %d ('x')"),
    ("%{x}M", "only 'bytes', 'kilo', 'kilobytes', 'mega' or 'megabytes' are allowed as a "
              "modifier for %M ('x')"),
])
def test_bad_formats_are_refused_with_php_fpm_messages(fmt, message):
    with pytest.raises(ValueError) as err:
        compile_format(fmt)
    assert str(err.value) == message
