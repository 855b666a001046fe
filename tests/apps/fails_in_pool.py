"""An application whose import passes pfm's app check but raises in the
pool's own processes (a preloading manager, or a worker): it stands for what
the check cannot see, such as a resource only the running pool takes or a
deploy that changed between the check and the start. The tests use it to
see how pfm treats a manager or workers that cannot boot."""

from setproctitle import getproctitle

if "app check" not in getproctitle():
    raise RuntimeError("fails_in_pool refuses to import outside the app check")

from testapps import app  # noqa: E402,F401
