"""Sample a running server with py-spy and say where its CPU time goes.

``record()`` runs ``py-spy record --subprocesses --nonblocking -f raw`` against a process
(and uvicorn's workers under it) while the caller drives load; ``summarise()`` reads the
collapsed stacks and reports, as shares of all samples:

- *inclusive* time of the stages of the enqueue path (a sample counts for every stage
  whose frame is on its stack, so the stages overlap where they nest);
- *self* time by package (the innermost Python frame's file decides), which adds to 100 %.

py-spy samples only threads that are running Python (not idle in epoll), so the shares
are of the process's busy CPU time, not of wall time. py-spy: ``.venv/bin/pip install
py-spy``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Stages of ``POST /v1/jobs``: (label, a pattern matching one rendered frame
#: "Class.function (package/file.py:line)"). SQLAlchemy runs its sync layers in a
#: greenlet whose stack py-spy sees detached from the request's coroutine chain, so the
#: database stages match frames that appear on either side (``_async_ping``,
#: ``Transaction.__commit``, ...), not only the callers in our code.
STAGES: tuple[tuple[str, str], ...] = (
    ("ASGI app under uvicorn (coroutine side only)", r"^RequestResponseCycle\.run_asgi "),
    ("uvicorn HTTP parsing (httptools callbacks)", r"^HttpToolsProtocol\."),
    ("fastapi solve_dependencies", r"^solve_dependencies "),
    (
        "sync dependencies through the thread pool (_engine, _settings)",
        r"^run_in_threadpool |run_sync_in_worker_thread ",
    ),
    ("authenticate (cached API key)", r"^authenticate \(enqueue_service"),
    (
        "body: read, JSON parse, JobCreate validation",
        r"^Request\.(body|json) |^request_body_to_args |^_validate_value_with_model_field ",
    ),
    ("validate_job (URL checks, metadata size)", r"^validate_job "),
    ("request hash (canonical_json + sha256)", r"canonical_json "),
    ("database round trips, client side (asyncpg)", r"\(asyncpg/"),
    ("  pool pre-ping: BEGIN; ; ROLLBACK per checkout", r"_async_ping "),
    ("  BEGIN", r"_start_transaction "),
    ("  the INSERT statement(s)", r"^PreparedStatement\.|_prepare \(sqlalchemy"),
    ("  COMMIT", r"^Transaction\.__commit "),
    (
        "  new connections (pool overflow churn; TLS attempt)",
        r"^connect \(asyncpg/connection|^_create_ssl_connection ",
    ),
    (
        "SQLAlchemy statement building and cache-key generation",
        r"^ValuesBase\.values |^values \(<sqlalchemy|_generate_cache_key |_get_crud_kv_pairs ",
    ),
    (
        "response: JobResource.from_row + model_dump_json",
        r"^JobResource\.from_(row|job) |^_job_json ",
    ),
    ("prometheus_client (request metrics)", r"prometheus_client/"),
)

#: A sample whose innermost frame is one of these, on a thread-pool thread, is an idle
#: worker waiting for work (py-spy's idle detection misses some in --nonblocking mode;
#: ``_worker`` itself is innermost while it waits in the C ``SimpleQueue.get``).
IDLE = re.compile(r"^(Condition\.wait|Queue\.get|Event\.wait|Thread\.join|_worker) ")

#: Packages by the innermost frame's path, first match wins.
PACKAGES: tuple[tuple[str, str], ...] = (
    ("sqlalchemy", "sqlalchemy/"),
    ("asyncpg", "asyncpg/"),
    ("pydantic", "pydantic"),
    ("fastapi", "fastapi/"),
    ("starlette", "starlette/"),
    ("uvicorn", "uvicorn/"),
    ("prometheus_client", "prometheus_client/"),
    ("greenlet", "greenlet"),
    ("anyio", "anyio/"),
    ("project (enqueue_service, transcription_core)", "enqueue_service/|transcription_core/"),
    ("httpx / httpcore / h11", "httpx/|httpcore/|h11/"),
    ("asyncio / uvloop", "asyncio/|uvloop"),
    ("stdlib (json, hashlib, uuid, urllib, ...)", "/lib/python3"),
)


@contextlib.contextmanager
def record(pid: int, out: Path, seconds: float, rate: int = 200) -> Iterator[None]:
    """Sample ``pid`` and its children for ``seconds`` while the body runs."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--subprocesses", "--nonblocking", "-r", str(rate)]
    cmd += ["-d", str(int(seconds + 0.999)), "-f", "raw", "-o", str(out), "-p", str(pid)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        _, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"py-spy failed ({proc.returncode}): {err.decode()[-2000:]}")


def _stacks(path: Path) -> Iterator[tuple[list[str], int]]:
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


ORCHESTRATOR_STAGES: tuple[tuple[str, str], ...] = (
    ("Orchestrator.run_round (coroutine side)", r"^Orchestrator\.run_round "),
    ("  recover_expired_leases transaction", r"^recover_expired_leases "),
    ("  in_flight_limit (runtime setting read)", r"^in_flight_limit "),
    ("  claim_due_jobs transaction", r"^claim_due_jobs "),
    ("  triggers (httpx POST to the transcriber)", r"^TranscriberClient\.trigger "),
    ("  _refresh_gauges (queue_depth + next_due_at)", r"^Orchestrator\._refresh_gauges "),
    ("database round trips, client side (asyncpg)", r"\(asyncpg/"),
    ("  pool pre-ping: BEGIN; ; ROLLBACK per checkout", r"_async_ping "),
    ("  COMMIT", r"^Transaction\.__commit "),
    ("SQLAlchemy compile + cache-key generation", r"_generate_cache_key |_compile_w_cache "),
    ("httpx / httpcore (trigger client)", r"\(httpx/|\(httpcore/"),
    ("LISTEN callback", r"listen_forever|_process_notification"),
)


def summarise(
    path: Path, top: int = 15, stages: tuple[tuple[str, str], ...] = STAGES
) -> dict[str, Any]:
    """Shares of the busy samples: idle thread-pool workers and samples without a Python
    frame are counted apart and left out of the denominator."""
    busy = idle = native = 0
    counts: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    compiled = [(label, re.compile(pattern)) for label, pattern in stages]
    for frames, count in _stacks(path):
        python = [f for f in frames if re.search(r"\.py:\d+\)$", f)]
        if not python:
            native += count
            continue
        leaf = python[-1]
        if IDLE.search(leaf) and any(f.startswith("Thread._bootstrap ") for f in python):
            idle += count
            continue
        busy += count
        for label, pattern in compiled:
            if any(pattern.search(f) for f in python):
                counts[label] += count
        leaves[re.sub(r":\d+\)$", ")", leaf)] += count
        package = next((n for n, p in PACKAGES if re.search(p, leaf)), "other")
        packages[package] += count

    def share(n: int) -> float:
        return round(100 * n / busy, 1) if busy else 0.0

    return {
        "samples": busy + idle + native,
        "busy_samples": busy,
        "idle_thread_pool_samples": idle,
        "samples_without_python_frames": native,
        "stages_inclusive_percent": {label: share(counts[label]) for label, _ in stages},
        "self_by_package_percent": {k: share(v) for k, v in packages.most_common()},
        "top_self_frames_percent": {k: share(v) for k, v in leaves.most_common(top)},
    }


def markdown(summary: dict[str, Any], title: str) -> str:
    lines = [
        f"## {title} (py-spy: {summary['busy_samples']} busy samples)",
        "",
        "| stage (inclusive) | % of server CPU |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary["stages_inclusive_percent"].items()]
    lines += ["", "| package (self time) | % |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in summary["self_by_package_percent"].items()]
    lines += ["", "| hottest frames (self) | % |", "| --- | --- |"]
    lines += [f"| `{k}` | {v} |" for k, v in summary["top_self_frames_percent"].items()]
    return "\n".join(lines)
