"""error_log = syslog: php-fpm's `[LEVEL] message` lines reach syslog(3)."""

import os
import socket
import time

import harness
import pytest

DEV_LOG = "/dev/log"


@pytest.fixture
def dev_log():
    """A syslog socket of the test's own at /dev/log (none runs here; as root
    the test can make one). A machine with a real syslog daemon is not touched:
    there the test fails rather than read another's log."""
    if os.path.exists(DEV_LOG):
        pytest.fail("/dev/log exists: a real syslog daemon runs; this test needs its own")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(DEV_LOG)
    except PermissionError:
        pytest.fail("binding /dev/log needs root (CI runs as root)")
    sock.settimeout(0.2)
    yield sock
    sock.close()
    os.unlink(DEV_LOG)


@pytest.mark.timeout(30)
def test_error_log_to_syslog(pfm_factory, dev_log):
    """error_log = syslog, syslog.ident and syslog.facility: the start-up
    lines arrive as `<PRI>... pfm-test[PID]: [NOTICE] ready to handle
    connections` with the local0 facility, and the pool serves."""
    p = pfm_factory(global_={"error_log": "syslog", "syslog.ident": "pfm-test",
                             "syslog.facility": "local0"}, start=False)
    p.start(wait=False)
    harness.wait_serving(p.address())
    got = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(b"ready to handle" in m for m in got):
        try:
            got.append(dev_log.recv(65536))
        except socket.timeout:
            pass
    ready = [m for m in got if b"ready to handle connections" in m]
    assert ready, got
    message = ready[0].decode()
    pri = int(message[1:message.index(">")])
    assert pri >> 3 == 16 and pri & 7 == 5, message       # local0, notice
    assert "pfm-test[%d]: [NOTICE] ready to handle connections" % p.pid in message
    assert harness.fcgi_get(p.address(), "/pid").status == 200
