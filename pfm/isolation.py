"""What separates one pool from another: limits, filesystem root, the user it
runs as and the environment its application sees. Applied in the pool
manager, before the application is imported, so app code never runs with the
master's rights; the workers inherit all of it across fork.

The order is php-fpm's (fpm_unix_init_child): rlimits, chroot, chdir,
priority, setgid + initgroups + setuid, dumpable.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import resource
import struct

_PR_SET_DUMPABLE = 4


class IsolationError(Exception):
    """The pool cannot be set up as configured; the manager exits 70.
    `directive` is the one at fault, for the config check's file:line."""

    def __init__(self, message: str, directive: str = "user"):
        super().__init__(message)
        self.directive = directive


def apply_limits(values) -> None:
    """rlimit_files and rlimit_core of [global] (the master's, php-fpm's
    fpm_unix_init_main) or of a pool (its manager's, inherited by its workers)."""
    for name, res in (("rlimit_files", resource.RLIMIT_NOFILE),
                      ("rlimit_core", resource.RLIMIT_CORE)):
        value = getattr(values, name, None)
        if value is not None:
            try:
                resource.setrlimit(res, (value, value))
            except (ValueError, OSError) as e:
                shown = "unlimited" if value == resource.RLIM_INFINITY else value
                raise IsolationError("failed to set %s to %s: %s" % (
                    name, shown, getattr(e, "strerror", None) or e), name) from None


def apply_limits_and_identity(pool) -> None:
    root = os.geteuid() == 0
    apply_limits(pool)
    if root and pool.chroot:
        try:
            os.chroot(pool.chroot)
        except OSError as e:
            raise IsolationError("failed to chroot(%s): %s" % (pool.chroot, e.strerror),
                                 "chroot") from None
        os.chdir("/")
    if root and pool.process_priority is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, pool.process_priority)
        except OSError as e:
            raise IsolationError("unable to set priority: %s" % e.strerror,
                                 "process.priority") from None
    drop_privileges(pool)
    if pool.process_dumpable:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def drop_privileges(pool) -> None:
    """setgid, initgroups, setuid to the pool's user when the master is root."""
    if os.geteuid() != 0 or not pool.user:
        return
    uid, gid, name = resolve_user(pool.user)
    if pool.group:
        gid = resolve_group(pool.group)
    try:
        os.setgid(gid)
        if name:
            os.initgroups(name, gid)
        else:
            os.setgroups([gid])
        os.setuid(uid)
    except OSError as e:
        raise IsolationError("failed to become user '%s': %s" % (pool.user, e.strerror)) from None


def resolve_user(user: str) -> tuple[int, int, str | None]:
    """(uid, gid, name). A numeric uid absent from passwd is allowed (php-fpm)."""
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if user.isdigit():
            return int(user), int(user), None
        raise
    return pw.pw_uid, pw.pw_gid, pw.pw_name


def resolve_group(group: str) -> int:
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def runs_as_root(pool) -> bool:
    """Would this pool's workers run with uid or gid 0 (the master being root)?"""
    if os.geteuid() != 0:
        return False
    if not pool.user:
        return True
    uid, gid, _ = resolve_user(pool.user)
    if pool.group:
        gid = resolve_group(pool.group)
    return uid == 0 or gid == 0


def root_pool_errors(config) -> list:
    """php-fpm's refusal to run a pool as root without -R: (level, message) pairs."""
    from .log import ALERT, ERROR
    if os.geteuid() != 0:
        return []
    errors = []
    for pool in config.pools:
        if not pool.user:
            errors.append((ALERT, "[pool %s] user has not been defined" % pool.name))
        elif runs_as_root(pool):
            errors.append((ERROR, "[pool %s] please specify user and group other than root"
                           % pool.name))
    return errors


def apply_environment(pool) -> None:
    """clear_env, env[NAME], and USER/HOME of the pool's user (php-fpm)."""
    if pool.clear_env:
        os.environ.clear()
    env = pool.env or {}
    os.environ.update(env)
    try:
        pw = pwd.getpwuid(os.getuid())
    except KeyError:
        return
    if "USER" not in env:
        os.environ["USER"] = pw.pw_name
    if "HOME" not in env:
        os.environ["HOME"] = pw.pw_dir


# ---- POSIX ACLs on a unix socket (listen.acl_users / listen.acl_groups) -------------

_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF


def set_socket_acl(path: str, users: list[str], groups: list[str], mode: int) -> None:
    """Grant rw on the socket file to each listed user and group, as
    `setfacl -m u:NAME:rw,g:NAME:rw` would, through the system.posix_acl_access
    extended attribute (no libacl needed)."""
    owner = (mode >> 6) & 7
    group = (mode >> 3) & 7
    other = mode & 7
    entries = [(_USER_OBJ, owner, _UNDEFINED_ID)]
    entries += sorted((_USER, 6, resolve_user(u)[0]) for u in users)
    entries.append((_GROUP_OBJ, group, _UNDEFINED_ID))
    entries += sorted((_GROUP, 6, resolve_group(g)) for g in groups)
    entries.append((_MASK, 6 | group, _UNDEFINED_ID))
    entries.append((_OTHER, other, _UNDEFINED_ID))
    blob = struct.pack("<I", _ACL_VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)
    os.setxattr(path, "system.posix_acl_access", blob)
