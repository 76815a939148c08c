"""The run's report: the machine, then each drill's outcome, as Markdown and JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from faults.drills import DrillResult, Profile

PACKAGES = (
    "faster-whisper",
    "ctranslate2",
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "asyncpg",
    "httpx",
    "schemathesis",
    "standardwebhooks",
)


def _run(cmd: list[str]) -> str:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    postgres = "unknown"
    try:
        postgres = (
            subprocess.run(
                ["psql", "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
            or postgres
        )
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    commit = os.environ.get("FAULTS_COMMIT", "")
    changes = ""
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    try:
        commit = commit or _run([*git, "rev-parse", "--short", "HEAD"])
        # The drills run the working tree: say so when its service code is not the commit's.
        changes = _run([*git, "status", "--porcelain", "--", "services", "shared", "cli"])
    except OSError:
        pass
    if changes:
        commit += " + uncommitted changes in services/shared/cli"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "memory": memory,
        "cpu": cpu,
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postgres": postgres,
        "packages": versions,
        "commit": commit,
    }


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(
    info: dict[str, Any], profile: Profile, results: list[DrillResult], seconds: float
) -> str:
    passed = sum(r.passed for r in results)
    out = [
        f"# Fault drills, {info['date']}",
        "",
        f"Profile `{profile.name}`; {passed}/{len(results)} drills passed in {seconds:.0f} s.",
        "",
        "Machine: "
        f"{info['nproc']} CPUs ({info['cpu']}), {info['memory']} memory, "
        f"load average at start {', '.join(f'{x:.1f}' for x in info['load_average_at_start'])}; "
        f"Python {info['python']}, {info['postgres']}, commit {info['commit']}.",
        "",
        "| drill | result | jobs | outcomes | duplicates | lost jobs / transcripts | "
        "settle (s) | time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        v = r.verdict
        outcomes = ", ".join(f"{k} {n}" for k, n in sorted(v.get("by_status", {}).items()))
        reasons = v.get("by_reason") or {}
        if reasons:
            outcomes += " (" + ", ".join(f"{k} {n}" for k, n in sorted(reasons.items())) + ")"
        lost = f"{v.get('lost_jobs', '-')} / {v.get('lost_transcripts', '-')}"
        out.append(
            f"| {r.name} | {'PASS' if r.passed else '**FAIL**'} | {v.get('jobs', '-')} | "
            f"{_cell(outcomes) or '-'} | {v.get('duplicate_deliveries', '-')} | {lost} | "
            f"{r.settle_seconds if r.settle_seconds is not None else '-'} | {r.seconds:.0f} |"
        )
    out.append("")
    for r in results:
        out += [
            f"## {r.name}: {r.title}",
            "",
            f"**{'PASS' if r.passed else 'FAIL'}**, {r.seconds:.0f} s.",
            "",
        ]
        if r.timeline:
            out.append("Timeline: " + "; ".join(f"{t:g} s {what}" for t, what in r.timeline) + ".")
            out.append("")
        if r.checks:
            out += ["| check | ok | detail |", "| --- | --- | --- |"]
            out += [
                f"| {_cell(n)} | {'yes' if ok else '**no**'} | {_cell(dt)} |"
                for n, ok, dt in r.checks
            ]
            out.append("")
        v = r.verdict
        if "by_status" in v:
            out.append(
                f"Jobs {v['jobs']}: {v['by_status']}; failure reasons {v['by_reason']}; "
                f"attempts {v['attempts']}; WORKER_LOST events {v['worker_lost_events']}; "
                f"deliveries {v['deliveries_total']} ({v['deliveries_2xx']} answered 2xx, "
                f"{v['duplicate_deliveries']} repeats of a webhook-id, "
                f"{v['jobs_delivered_more_than_once']} jobs delivered more than once); "
                f"client answers {v['client_answers']}."
            )
            out.append("")
            out.append(f"Transitions: {v['transitions']}.")
            out.append("")
        if r.numbers:
            out.append("Numbers: `" + json.dumps(r.numbers, default=str) + "`")
            out.append("")
        for kind, items in v.get("violations", {}).items():
            out.append(f"- **{kind}** ({len(items)}): " + "; ".join(items[:5]))
        if r.error:
            out += ["", "```", r.error.strip()[-3000:], "```"]
        out.append("")
    return "\n".join(out)


def write(
    directory: Path,
    info: dict[str, Any],
    profile: Profile,
    results: list[DrillResult],
    seconds: float,
    tag: str = "",
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    suffix = "" if profile.name == "full" else f"-{profile.name}"
    suffix += f"-{tag}" if tag else ""
    md = directory / f"{stamp}{suffix}.md"
    js = directory / f"{stamp}{suffix}.json"
    md.write_text(markdown(info, profile, results, seconds))
    js.write_text(
        json.dumps(
            {
                "machine": info,
                "profile": profile.__dict__,
                "seconds": round(seconds, 1),
                "drills": [r.__dict__ for r in results],
            },
            indent=2,
            default=str,
        )
    )
    return md, js
