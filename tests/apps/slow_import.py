"""testapps.app behind a module that takes a second to import, as big
applications do: connections made meanwhile wait in the listen backlog
before any worker is in its accept loop. $SLOW_IMPORT_SECONDS sets another
delay."""

import os
import time

time.sleep(float(os.environ.get("SLOW_IMPORT_SECONDS", "1.0")))

from testapps import app  # noqa: E402,F401
