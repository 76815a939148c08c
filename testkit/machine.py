"""The machine a run ran on, for the reports of benchmarks and fault drills.

:func:`describe` gives cores, CPU model, memory, kernel, Python (and a rough single-core
speed), PostgreSQL, the git commit (and whether the service code has uncommitted
changes), the load averages at that moment and the versions of the packages that matter;
:func:`markdown` says it in a few lines.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import timeit
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "sqlalchemy",
    "asyncpg",
    "httpx",
    "faster-whisper",
    "ctranslate2",
    "av",
)


def loadavg() -> str:
    """``/proc/loadavg``'s 1, 5 and 15 minute load averages (others may share the machine)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def git_commit() -> str | None:
    """HEAD's short hash, and a note when the service code differs from it (the run used
    the working tree)."""
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    if _git("status", "--porcelain", "--", "services", "shared", "cli"):
        commit += " + uncommitted changes in services/shared/cli"
    return commit


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def python_speed_us() -> float:
    """Microseconds for ``sum(range(1000))``, best of 5: a rough single-core speed, to
    compare machines (a recent desktop CPU takes about 8 to 10)."""
    timer = timeit.Timer("sum(range(1000))")
    loops, _ = timer.autorange()
    return round(min(timer.repeat(5, loops)) / loops * 1e6, 1)


async def postgres_version(url: str) -> str:
    """``SHOW server_version`` of the server at ``url`` (a SQLAlchemy URL)."""
    import asyncpg

    from transcription_core.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def describe(postgres: str = "not used", packages: Sequence[str] = PACKAGES) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_speed_sum_range_1000_us": python_speed_us(),
        "postgresql": postgres,
        "git_commit": git_commit(),
        "loadavg_at_start": loadavg(),
        "packages": {p: _version(p) for p in packages},
    }


def markdown(info: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    return "\n".join(
        [
            f"- date: {info['date']} (commit {info['git_commit']})",
            f"- CPU: {info['nproc']} cores (nproc), {info['cpu_model']}",
            f"- memory: {info['memory_gib']} GiB; kernel {info['kernel']}",
            f"- Python {info['python']} (`sum(range(1000))`: "
            f"{info['python_speed_sum_range_1000_us']} µs), PostgreSQL {info['postgresql']}",
            f"- {packages}",
        ]
    )
