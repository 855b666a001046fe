"""Finding and importing the pool's WSGI application, and preparing the
interpreter for it (pythonpath, virtualenv, chdir)."""

from __future__ import annotations

import importlib
import os
import sys


def prepare_path(pool, search_path: list[str]) -> None:
    """Make the app importable exactly where `pfm -t` found it: `search_path`
    is config.app_search_path(pool) (pythonpath, chdir, the virtualenv's
    site-packages), computed before any chroot."""
    if pool.chdir:
        os.chdir(pool.chdir)
    for entry in reversed(search_path):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def load(module: str, callable_name: str):
    """Import `module` and return its `callable_name` (dotted attributes allowed)."""
    obj = importlib.import_module(module)
    for part in callable_name.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{module}:{callable_name} is not callable")
    return obj
