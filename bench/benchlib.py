"""What the benchmarks share: the machine's description, a scratch PostgreSQL database,
server processes on loopback, CPU accounting from /proc, percentiles and result files.

Nothing here leaves the machine: servers listen on 127.0.0.1, and the scratch database
(``bench_<random>`` on the admin server) is dropped when the benchmark ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
import timeit
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from transcription_core import migrate
from transcription_core.db import asyncpg_dsn

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
#: Where the scratch databases are created: BENCH_DATABASE_URL, else TEST_DATABASE_URL.
ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL", os.environ.get("TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
)
PACKAGES = ("fastapi", "starlette", "uvicorn", "pydantic", "sqlalchemy", "asyncpg", "httpx")

JOB_BODY = {
    "media_url": "https://bucket.example.com/v/123.mp4?X-Amz-Signature=abc",
    "webhook_url": "https://api.example.com/hooks/transcripts",
    "external_id": "post-123",
    "language": "en",
    "metadata": {"creator": 42},
}


# --- the machine ----------------------------------------------------------------------


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


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


async def postgres_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def python_speed_us() -> float:
    """Microseconds for ``sum(range(1000))``, best of 5: a rough single-core speed, to
    compare machines (a recent desktop CPU takes about 8 to 10)."""
    timer = timeit.Timer("sum(range(1000))")
    loops, _ = timer.autorange()
    return round(min(timer.repeat(5, loops)) / loops * 1e6, 1)


def machine_info(pg_version: str) -> dict[str, Any]:
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except (OSError, ValueError):
        nproc = os.cpu_count() or 0
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": nproc,
        "cpu_model": _cpu_model(),
        "memory_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_speed_sum_range_1000_us": python_speed_us(),
        "postgresql": pg_version,
        "git_commit": _git_commit(),
        "loadavg_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "packages": {p: _version(p) for p in PACKAGES},
    }


def machine_markdown(info: dict[str, Any]) -> str:
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


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so ``finally`` blocks stop the servers this
    benchmark started (they run in sessions of their own) and drop its database."""

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, handler)


# --- a scratch database ---------------------------------------------------------------


def database_name(url: str) -> str:
    return str(make_url(url).database)


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def _admin(sql: str, wait_seconds: float = 60.0) -> None:
    """Run ``sql`` on the admin database, waiting (up to ``wait_seconds``) for PostgreSQL
    to accept connections: a shared server may be restarting."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            conn = await asyncpg.connect(asyncpg_dsn(ADMIN_URL), timeout=10)
            break
        except (OSError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def scratch_database(prefix: str = "bench") -> Iterator[str]:
    """A new, migrated database ``bench_<random>``, dropped on the way out."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = with_database(ADMIN_URL, name)
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- servers on loopback --------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A service started as its own process group, stopped with SIGTERM (then SIGKILL)."""

    command: list[str]
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def pids(self) -> set[int]:
        """The server process and all its descendants (uvicorn's workers)."""
        return descendants(self.proc.pid) | {self.proc.pid}

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def start_server(
    command: Sequence[str], env: dict[str, str], port: int, log_path: Path, timeout: float = 30
) -> Server:
    """Start ``command`` and wait until ``GET /healthz`` on ``port`` answers 200."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    proc = subprocess.Popen(
        list(command), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    server = Server(list(command), url, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{command[0]} exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{command} did not become healthy within {timeout} s; see {log_path}")


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# --- CPU accounting -------------------------------------------------------------------

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


# --- numbers and files ----------------------------------------------------------------


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


def write_results(out_dir: Path, name: str, data: dict[str, Any], markdown: str) -> list[Path]:
    """``<out_dir>/<name>-<YYYY-MM-DD>.json`` and ``.md``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    json_path = out_dir / f"{name}-{day}.json"
    md_path = out_dir / f"{name}-{day}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return [json_path, md_path]


def shared_machine_note(cpus: Sequence[dict[str, Any]], limit: float = 0.25) -> str | None:
    """A warning when other processes used more than ``limit`` cores during a run."""
    worst = max((c["cores_busy"].get("other", 0.0) for c in cpus), default=0.0)
    if worst <= limit:
        return None
    return (
        f"**Shared machine:** other processes used up to {worst:.2f} of its "
        f"{os.cpu_count()} cores during these runs (column or line `other`), so the rates "
        "here are lower, and the latencies higher, than this machine gives when the "
        "benchmark has it alone. CPU time per request is the steadier figure."
    )


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"
