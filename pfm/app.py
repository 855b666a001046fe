"""Finding and importing the pool's WSGI application, and preparing the
interpreter for it (pythonpath, virtualenv, chdir)."""

from __future__ import annotations

import glob
import importlib
import os
import site
import sys


def prepare_path(pythonpath: list[str], virtualenv: str | None, chdir: str | None) -> None:
    """Make the app importable the way the config says, before any import."""
    if chdir:
        os.chdir(chdir)
    for entry in reversed(pythonpath or []):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if virtualenv:
        for sp in sorted(glob.glob(os.path.join(virtualenv, "lib", "python*", "site-packages"))):
            site.addsitedir(sp)
    if "" not in sys.path and (chdir or os.getcwd()) not in sys.path:
        sys.path.append(chdir or os.getcwd())


def load(module: str, callable_name: str):
    """Import `module` and return its `callable_name` (dotted attributes allowed)."""
    obj = importlib.import_module(module)
    for part in callable_name.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{module}:{callable_name} is not callable")
    return obj
