"""Measuring a run: CPU seconds by process group (from /proc), resident memory of a
process, waiting for a quiet machine, and percentiles.

Others share the machine: :func:`wait_for_quiet` waits (a while) for it to be idle before a
measured run, and :class:`CpuMeter` reports what the rest of the machine used during it
(``other``), so a reader can tell a run that had the cores from one that shared them.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu() -> dict[int, tuple[str, float]]:
    """``pid -> (comm, user+system CPU seconds)`` of every process now."""
    result = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            result[int(entry.name)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return result


def _machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat, not idle or iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _rusage_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def wait_for_quiet(max_seconds: float, threshold: float = 0.3) -> float:
    """Wait (at most ``max_seconds``) until the machine is busy below ``threshold`` cores
    for one second, before a measured run: others share this machine. The last level."""
    deadline = time.monotonic() + max_seconds
    while True:
        before = _machine_busy_seconds()
        time.sleep(1.0)
        busy = _machine_busy_seconds() - before
        if busy < threshold or time.monotonic() >= deadline:
            return round(busy, 2)


@dataclass
class CpuMeter:
    """CPU seconds spent over a window, by group.

    - each name in ``groups``: the pids of a server (running at ``stop()``);
    - ``postgres``: the backends connected to ``database`` (this benchmark's);
    - ``postgres (shared)``: the other postgres processes (WAL writer, checkpointer, ...,
      and other databases' backends);
    - ``load generator``: this process plus the children it waited for in the window
      (wrk, the paced workers), from getrusage;
    - ``other``: the rest of the machine's busy time (/proc/stat), other people's work
      included; a large value means the run shared the CPU and its numbers are low.
    """

    groups: dict[str, set[int]] = field(default_factory=dict)
    database: str = ""
    _start: dict[int, tuple[str, float]] = field(default_factory=dict)
    _own0: float = 0.0
    _machine0: float = 0.0
    _t0: float = 0.0

    def start(self) -> None:
        self._start = _proc_cpu()
        self._own0 = _rusage_seconds()
        self._machine0 = _machine_busy_seconds()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        end = _proc_cpu()
        machine = _machine_busy_seconds() - self._machine0
        wall = time.monotonic() - self._t0
        totals: dict[str, float] = {name: 0.0 for name in self.groups}
        totals.update({"postgres": 0.0, "postgres (shared)": 0.0, "load generator": 0.0})
        me = os.getpid()
        for pid, (comm, seconds) in end.items():
            if pid == me:
                continue
            used = seconds - self._start.get(pid, (comm, 0.0))[1]
            group = next((n for n, pids in self.groups.items() if pid in pids), None)
            if group is None and comm == "postgres":
                mine = self.database and f" {self.database} " in _cmdline(pid)
                group = "postgres" if mine else "postgres (shared)"
            if group is not None:
                totals[group] += used
        totals["load generator"] = _rusage_seconds() - self._own0
        totals["other"] = max(machine - sum(totals.values()), 0.0)
        return {
            "wall_seconds": round(wall, 2),
            "machine_busy_cores": round(machine / wall, 2),
            "cpu_seconds": {k: round(v, 2) for k, v in totals.items()},
            "cores_busy": {k: round(v / wall, 2) for k, v in totals.items()},
        }


# --- numbers ----------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (``q`` in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def summarise_ms(values_seconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values_seconds)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1000, 2),
        "p90_ms": round(percentile(ordered, 90) * 1000, 2),
        "p99_ms": round(percentile(ordered, 99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 2),
    }


# --- memory ---------------------------------------------------------------------------


def rss_kib(pid: int | None = None, field: str = "VmRSS") -> int:
    """``VmRSS`` / ``VmHWM`` / ``RssAnon`` ... of a process (this one by default), in KiB
    (0 once it is gone)."""
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid or 'self'}/status").read_text()
        for line in status.splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(pid: int | None = None) -> None:
    """Reset a process's VmHWM to its current RSS (Linux: write 5 to clear_refs)."""
    Path(f"/proc/{pid or 'self'}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    return 0.0
