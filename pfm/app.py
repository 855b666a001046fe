"""Finding and importing the pool's WSGI application, and preparing the
interpreter for it (pythonpath, virtualenv, chdir)."""

from __future__ import annotations

import ast
import importlib
import os
import sys
from typing import Optional, Tuple


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
    """Import `module` and return its `callable_name` (dotted attributes allowed),
    or what the factory call `callable_name` = `create_app(...)` returns."""
    obj = importlib.import_module(module)
    factory = parse_factory(callable_name)
    for part in (factory[0] if factory else callable_name).split("."):
        obj = getattr(obj, part)
    if factory:
        obj = obj(*factory[1], **factory[2])
        if not callable(obj):
            raise TypeError(f"{module}:{callable_name} returned {type(obj).__name__}, "
                            "not a WSGI callable")
    if not callable(obj):
        raise TypeError(f"{module}:{callable_name} is not callable")
    return obj


def parse_factory(callable_name: str) -> Optional[Tuple[str, tuple, dict]]:
    """An application factory, as gunicorn spells it: `create_app()` or
    `create_app("prod", debug=False)` gives ("create_app", args, kwargs);
    a plain attribute gives None. Only a dotted name called with literal
    arguments is accepted (ValueError otherwise): the spec is read by
    `pfm -t` without running anything, so it cannot hold code."""
    if not callable_name.rstrip().endswith(")"):
        return None
    try:
        call = ast.parse(callable_name.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"'{callable_name}' is not a call such as create_app()") from None
    if not isinstance(call, ast.Call):
        raise ValueError(f"'{callable_name}' is not a call such as create_app()")
    parts = []
    func = call.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise ValueError(f"'{callable_name}': only a name can be called, as in create_app()")
    parts.append(func.id)
    try:
        args = tuple(ast.literal_eval(a) for a in call.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    except ValueError:
        raise ValueError(f"'{callable_name}': a factory's arguments must be literals "
                         "(strings, numbers, True/False/None, lists, dicts)") from None
    if any(k.arg is None for k in call.keywords):
        raise ValueError(f"'{callable_name}': **kwargs are not allowed")
    return ".".join(reversed(parts)), args, kwargs
