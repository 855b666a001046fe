"""testapps.app behind a module that takes a second to import, as big
applications do: connections made meanwhile wait in the listen backlog
before any worker is in its accept loop."""

import time

time.sleep(1.0)

from testapps import app  # noqa: E402,F401
