"""Finding and importing the pool's WSGI application, and preparing the
interpreter for it (pythonpath, virtualenv, chdir)."""

from __future__ import annotations

import importlib
import os
import sys

# Names a WSGI callable usually has, for the hint when the configured one is missing.
_USUAL_NAMES = ("application", "app", "wsgi_app", "api")


class AppError(Exception):
    """The module imported, but the configured callable is not there or not callable."""


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
    return find_callable(importlib.import_module(module), module, callable_name)


def find_callable(module_object, module: str, callable_name: str):
    """`callable_name` in the imported module; AppError says what is wrong."""
    obj = module_object
    for part in callable_name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppError(missing_callable(module_object, module, callable_name)) from None
    if not callable(obj):
        raise AppError("'%s:%s' is %s, not a callable" % (module, callable_name,
                                                          type(obj).__name__))
    return obj


def missing_callable(module_object, module: str, callable_name: str) -> str:
    """"module 'mysite.wsgi' has no callable 'app'", with the name it does
    have: Django's wsgi.py calls it `application`, so `app = mysite.wsgi`
    (which means mysite.wsgi:app) is the usual mistake."""
    message = "module '%s' has no callable '%s'" % (module, callable_name)
    found = [name for name in _USUAL_NAMES
             if name != callable_name and callable(getattr(module_object, name, None))]
    if not found:
        return message
    hint = "write app = %s:%s" % (module, found[0])
    if found[0] == "application":
        hint += " (Django's wsgi.py names it 'application')"
    return "%s; it has '%s': %s" % (message, found[0], hint)
