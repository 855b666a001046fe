"""testapps.app behind an import that never returns while the file named by
the environment variable HANG_MARKER exists (set it with env[HANG_MARKER]):
started without the file the pool boots and passes pfm's app check; created
afterwards, every later import (a restarted manager with preload, a new
worker without) hangs, as an import waiting on a dead database would. A
process that hangs says so in the file HANG_MARKER.PID."""

import os
import time

_marker = os.environ.get("HANG_MARKER", "")
if _marker and os.path.exists(_marker):
    with open("%s.%d" % (_marker, os.getpid()), "w"):
        pass
    while True:
        time.sleep(0.1)

from testapps import app  # noqa: E402,F401
