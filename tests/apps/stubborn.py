"""An application that ignores SIGTERM, SIGQUIT and SIGINT when imported (as
some libraries do, installing their own handlers): pfm must still stop its
workers - by SIGKILL after the grace period - and none may outlive its
manager or master."""

import signal

import testapps

for _sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
    signal.signal(_sig, signal.SIG_IGN)

app = testapps.app
