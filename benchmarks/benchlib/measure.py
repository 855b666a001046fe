"""CPU time and memory of a process tree, read from /proc."""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_table() -> Dict[int, Tuple[int, int]]:
    """pid -> (ppid, clock ticks of utime+stime+cutime+cstime)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()
        # fields[0] is stat's 3rd field (state): ppid is the 4th, utime..cstime the 14th-17th
        table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return table


def title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def role(pid: int, root: int) -> str:
    """master, manager or worker: the tree's root is the master (pfm's,
    php-fpm's, uWSGI's, gunicorn's arbiter, flup's parent); a process titled
    `... manager` is a pfm pool manager; anything else is a worker."""
    if pid == root:
        return "master"
    name = title(pid)
    if "master process" in name:
        return "master"
    return "manager" if name.endswith(" manager") else "worker"


def tree(root: int, table: Dict[int, Tuple[int, int]] = None) -> List[int]:
    """root and all its living descendants."""
    table = proc_table() if table is None else table
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return out


def tree_cpu(root: int) -> Dict[str, float]:
    """CPU seconds used by a process and all its descendants, living or reaped
    (a reaped child's time counts for its parent), by role."""
    table = proc_table()
    by_role: Dict[str, float] = {}
    for pid in tree(root, table):
        name = role(pid, root)
        by_role[name] = by_role.get(name, 0.0) + table[pid][1] / CLK_TCK
    return by_role


def workers(root: int) -> List[int]:
    return [pid for pid in tree(root) if role(pid, root) == "worker"]


def smaps(pid: int) -> Dict[str, int]:
    """/proc/PID/smaps_rollup in KiB: Rss, Pss, Uss (Private_Clean + Private_Dirty)."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return {}
    out["Uss"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def tree_memory(root: int) -> Dict[str, object]:
    """PSS and USS (KiB) of a tree: total, and each worker's."""
    total_pss = total_uss = 0
    per_worker = []
    for pid in tree(root):
        m = smaps(pid)
        if not m:
            continue
        total_pss += m.get("Pss", 0)
        total_uss += m.get("Uss", 0)
        if role(pid, root) == "worker":
            per_worker.append((pid, m.get("Pss", 0), m.get("Uss", 0), m.get("Rss", 0)))
    return {"total_pss": total_pss, "total_uss": total_uss, "workers": per_worker}
