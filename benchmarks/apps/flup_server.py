"""flup6's prefork FastCGI server as a benchmark peer.

    python flup_server.py SOCKET MODULE:CALLABLE WORKERS [PYTHONPATH]

Imports the application once, then serves it on the UNIX socket with
flup.server.fcgi_fork, keeping exactly WORKERS children (minSpare = maxSpare =
maxChildren), none recycled. Stops on SIGTERM, SIGINT or SIGHUP.
"""

import importlib
import sys


def main(argv):
    sock, target, workers = argv[1], argv[2], int(argv[3])
    if len(argv) > 4:
        sys.path.insert(0, argv[4])
    module, _, name = target.partition(":")
    app = getattr(importlib.import_module(module), name or "app")
    from flup.server.fcgi_fork import WSGIServer
    server = WSGIServer(app, bindAddress=sock, umask=0o077, multiplexed=False, debug=False,
                        minSpare=workers, maxSpare=workers, maxChildren=workers,
                        maxRequests=0)
    return 0 if server.run() is not False else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
