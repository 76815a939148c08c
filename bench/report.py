"""The one writer of benchmark results, and what every report says about the machine.

:func:`write` writes ``<out>/<name>-<YYYY-MM-DD>.json`` (every number) and ``.md`` (a
summary), and makes sure both carry the machine the run ran on (``testkit.machine``:
cores, CPU model, memory, kernel, Python, PostgreSQL, package versions, the commit, load
averages at the start and at the end) and which service code ran. A scenario calls
:func:`machine` when it starts (the load average then) and :func:`write` when it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from testkit.machine import describe, loadavg, markdown, postgres_version

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
#: Scratch space (service logs, cached media, smoke runs' results); not committed.
TMP = RESULTS / "tmp"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def code_info() -> dict[str, Any]:
    """Which service code ran: the working tree, or a snapshot put first on PYTHONPATH
    (see "a snapshot" in bench/README.md); no path of this machine."""
    import transcription_core

    where = Path(transcription_core.__file__).resolve().parents[2]
    commit_file = where / "COMMIT"
    snapshot = commit_file.read_text().strip() if commit_file.is_file() else None
    return {
        "service_code": "a snapshot" if snapshot else "the working tree",
        "snapshot_commit": snapshot,
    }


def machine(postgres: bool = True) -> dict[str, Any]:
    """The machine now, with the scratch databases' PostgreSQL (unless ``postgres`` is
    false: a benchmark that uses none)."""
    version = "not used"
    if postgres:
        from bench.database import ADMIN_URL

        version = asyncio.run(postgres_version(ADMIN_URL))
    info = describe(version)
    info["code"] = code_info()
    return info


machine_markdown = markdown


def write(
    out: Path, name: str, data: dict[str, Any], summary: str, *, also: Sequence[Path] = ()
) -> list[Path]:
    """``<out>/<name>-<YYYY-MM-DD>.json`` and ``.md``; returns their paths (and ``also``:
    plots written beside them). ``data["machine"]`` is added if the scenario has none, and
    the Markdown gets a Machine section unless the summary already describes it."""
    info = data.setdefault("machine", machine(postgres=False))
    data.setdefault("loadavg_at_end", loadavg())
    if markdown(info) not in summary:
        summary = "\n".join(
            [
                summary.rstrip(),
                "",
                "## Machine",
                "",
                markdown(info),
                f"- load average (1, 5, 15 min) at start {info['loadavg_at_start']}, "
                f"at end {data['loadavg_at_end']}",
                f"- service code: {info.get('code', code_info())['service_code']}",
            ]
        )
    out.mkdir(parents=True, exist_ok=True)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    json_path = out / f"{name}-{day}.json"
    md_path = out / f"{name}-{day}.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text(summary.rstrip() + "\n")
    paths = [json_path, md_path, *also]
    log(f"wrote {', '.join(str(p) for p in paths)}")
    return paths


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


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


def machine_section(info: dict[str, Any], cpus: Sequence[dict[str, Any]] = ()) -> list[str]:
    """A report's Machine section, as lines; with a warning when other processes used
    the cores during the runs whose CPU accounting ``cpus`` gives."""
    note = shared_machine_note(cpus)
    return [
        "## Machine",
        "",
        markdown(info),
        f"- load average when the run started: {info['loadavg_at_start']}",
        "",
        *([note, ""] if note else []),
    ]
