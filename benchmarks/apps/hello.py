"""The benchmark's hello world: the same 14 bytes as benchmarks/apps/hello.php.

Kept as small as a WSGI application can be, so that what is measured is the
server's own cost per request (accept, FastCGI, environ, response), not the
application's.
"""

BODY = b"Hello, world!\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


application = app
