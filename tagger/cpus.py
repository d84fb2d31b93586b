"""How many CPUs this process may use: what worker counts and model thread budgets are sized by.

``os.cpu_count()`` is the host's count; a container limited to N CPUs (``--cpus N``: a CFS
quota) or a process pinned to some cores (``taskset``, cpusets) may use fewer, and N workers
each sized for the whole host would oversubscribe it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

#: where the cgroup file systems are mounted (inside a container: its own cgroup's view)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def quota(root: Path = CGROUP_ROOT) -> Optional[float]:
    """The CPU quota of this cgroup in CPUs (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``
    over ``cpu.cfs_period_us``); None when there is none or it cannot be read."""
    try:
        text = (root / "cpu.max").read_text()
    except OSError:
        pass
    else:
        try:
            limit, period = text.split()[:2]
            return None if limit == "max" else int(limit) / int(period)
        except (ValueError, ZeroDivisionError):
            return None
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            limit = int((root / folder / "cpu.cfs_quota_us").read_text())
            period = int((root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return limit / period if limit > 0 and period > 0 else None
    return None


def usable(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup's quota rounded up
    (1.5 CPUs of quota: 2 processes), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    limit = quota(root)
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)
