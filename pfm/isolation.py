"""What separates one pool from another: the user it runs as and the
environment its application sees. Applied in the pool manager, before the
application is imported, so app code never runs with the master's rights."""

from __future__ import annotations

import grp
import os
import pwd


def drop_privileges(pool) -> None:
    """setgid, initgroups, setuid to the pool's user when the master is root."""
    if os.geteuid() != 0 or not pool.user:
        return
    pw = _passwd(pool.user)
    uid = pw.pw_uid if pw else int(pool.user)
    gid = pw.pw_gid if pw else uid
    if pool.group:
        gid = int(pool.group) if pool.group.isdigit() else grp.getgrnam(pool.group).gr_gid
    os.setgid(gid)
    if pw:
        os.initgroups(pw.pw_name, gid)
    else:
        os.setgroups([gid])
    os.setuid(uid)


def _passwd(user: str):
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if user.isdigit():
            return None
        raise


def apply_environment(pool) -> None:
    """clear_env, env[NAME], and USER/HOME of the pool's user (php-fpm)."""
    if pool.clear_env:
        os.environ.clear()
    os.environ.update(pool.env or {})
    try:
        pw = pwd.getpwuid(os.getuid())
    except KeyError:
        return
    env = pool.env or {}
    if "USER" not in env:
        os.environ["USER"] = pw.pw_name
    if "HOME" not in env:
        os.environ["HOME"] = pw.pw_dir
