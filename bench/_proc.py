"""What the benches read from ``/proc`` about a server and its process tree (the model processes
it starts): CPU time, minor page faults and resident memory.

CPU time per request survives a loaded machine far better than throughput, so most benches take
it from here, before and after a run; one reader keeps them counting the same thing.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (the children of each of its threads, recursively)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found.extend(children)
                pending.extend(children)
        except OSError:
            continue
    return found


def stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, user + system, and minor page faults) of one process, its threads included.

    :raises OSError: the process is gone.
    """
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[7])  # utime, stime, minflt


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (its threads included); 0 when it is gone."""
    try:
        return stat(pid)[0]
    except (OSError, ValueError):
        return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live descendants."""
    return sum(cpu_seconds(p) for p in [pid, *descendants(pid)])


def split_cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU seconds of the process, CPU seconds of its descendants: the model processes)."""
    return cpu_seconds(pid), sum(cpu_seconds(p) for p in descendants(pid))


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, in MiB (0 when it is gone)."""
    total = 0
    for current in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])
        except (OSError, StopIteration):
            continue
    return total / 1024
