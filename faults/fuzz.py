"""Drill 8: schemathesis fuzzes the enqueue API from its own OpenAPI document.

The enqueue service runs as a real process on a fresh database (``ALLOW_PRIVATE_URLS``
off, as in production). schemathesis (its ``st`` command, in a subprocess) runs three
times: with a valid tenant key, with a key that does not exist, and with a malformed
``Authorization`` header. The one check is ``not_a_server_error``: whatever comes in,
no 5xx comes out. The number of examples per operation is the profile's
``fuzz_examples``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from faults.drills import Drill
    from faults.stack import Stack


def st_command() -> list[str]:
    found = Path(sys.executable).with_name("st")
    if found.exists():
        return [str(found)]
    path = shutil.which("st") or shutil.which("schemathesis")
    if path is None:
        raise RuntimeError("schemathesis is not installed: pip install schemathesis")
    return [path]


async def _run_st(
    url: str,
    header: str | None,
    examples: int,
    report: Path,
    seed: int,
    timeout: float,
    config: Path | None = None,
    phases: str | None = None,
) -> tuple[int, str, dict[str, Any]]:
    cmd = [*st_command()]
    if config is not None:
        cmd += ["--config-file", str(config)]
    cmd += [
        "run",
        url + "/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        # One worker: with two, hypothesis parses lambdas' source in two threads at once,
        # which CPython 3.11's ast.parse does not survive ("AST constructor recursion
        # depth mismatch", a schemathesis runtime error, not a finding about the API).
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        "--generation-database",
        "none",
    ]
    if phases:
        cmd += ["--phases", phases]
    if header:
        cmd += ["--header", header]
    process = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=report.parent,  # schemathesis keeps a cache folder where it runs
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return 124, f"schemathesis did not finish within {timeout:g} s", {}
    text = out.decode("utf-8", "replace")
    return process.returncode or 0, text, _junit_counts(report)


def _junit_counts(report: Path) -> dict[str, Any]:
    if not report.exists():
        return {}
    text = report.read_text()
    suite = re.search(r"<testsuite [^>]*>", text)
    if suite is None:
        return {}
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', suite.group(0)))
    return {k: attrs[k] for k in ("tests", "failures", "errors", "skipped") if k in attrs}


def _summary(text: str) -> str:
    """The last lines of schemathesis's output that say what it did."""
    keep = [
        line
        for line in text.splitlines()
        if re.search(r"(passed|failed|errored|skipped|Operations|Test cases|Failures|5\d\d)", line)
    ]
    return " | ".join(line.strip() for line in keep[-6:])


PUBLIC_MEDIA = "https://bucket.example.com/v/123.mp4?X-Amz-Signature=abc"
PUBLIC_HOOK = "https://api.example.com/hooks/transcripts"
TRANSCRIPT = {
    "text": "And so my fellow Americans, ask not what your country can do for you.",
    "language": "en",
    "language_probability": 1.0,
    "duration": 11.0,
    "model": "tiny.en",
    "segments": [{"id": 0, "start": 0.0, "end": 10.6, "text": "And so my fellow Americans."}],
}


async def _seed_jobs(stack: Stack) -> dict[str, list[str]]:
    """Real jobs to aim at, per tenant: one QUEUED, one SUCCEEDED with a transcript, one
    PERMAFAILED. Made through the API, then moved on in the database."""
    ids: dict[str, list[str]] = {}
    enqueue = stack.enqueues[0]
    async with httpx.AsyncClient() as http:
        for tenant in stack.tenants.values():
            ids[tenant.tenant] = []
            for i in range(3):
                response = await http.post(
                    enqueue.url + "/v1/jobs",
                    json={
                        "media_url": PUBLIC_MEDIA,
                        "webhook_url": PUBLIC_HOOK,
                        "external_id": f"seed-{i}",
                    },
                    headers={"Authorization": f"Bearer {tenant.api_key}"},
                )
                response.raise_for_status()
                ids[tenant.tenant].append(response.json()["id"])
            _queued, succeeded, failed = ids[tenant.tenant]
            await stack.query(
                "UPDATE jobs SET status = 'SUCCEEDED', attempts = 1, completed_at = now(), "
                "webhook_event = 'transcription.succeeded', webhook_message_id = 'msg_seed' "
                "WHERE id = $1",
                succeeded,
            )
            await stack.query(
                "INSERT INTO transcripts (job_id, content, created_at) VALUES ($1, $2, now())",
                succeeded,
                json.dumps(TRANSCRIPT),
            )
            await stack.query(
                "UPDATE jobs SET status = 'PERMAFAILED', attempts = 1, completed_at = now(), "
                "failure_reason = 'DOWNLOAD_FORBIDDEN', failure_detail = 'HTTP 403' WHERE id = $1",
                failed,
            )
    return ids


def _config(path: Path, job_ids: list[str]) -> Path:
    """Point schemathesis at real jobs part of the time, and at URLs the API accepts."""
    quoted = ", ".join(json.dumps(i) for i in job_ids)
    path.write_text(
        "[dictionaries.jobs]\n"
        f"values = [{quoted}]\n"
        "[dictionaries.media]\n"
        f'values = [{json.dumps(PUBLIC_MEDIA)}, "http://media.example.org/a.mp3"]\n'
        "[dictionaries.hooks]\n"
        f"values = [{json.dumps(PUBLIC_HOOK)}]\n"
        "[parameters]\n"
        '"path.job_id" = { dictionary = "jobs", probability = 0.7 }\n'
        '"body.media_url" = { dictionary = "media", probability = 0.5 }\n'
        '"body.webhook_url" = { dictionary = "hooks", probability = 0.5 }\n'
    )
    return path


async def _tenant_isolation(stack: Stack, ids: dict[str, list[str]]) -> list[str]:
    """Another tenant's job ids answer 404 on every job route, whatever the job's state."""
    wrong = []
    enqueue = stack.enqueues[0]
    tenants = list(stack.tenants.values())
    async with httpx.AsyncClient() as http:
        for owner, other in ((tenants[0], tenants[1]), (tenants[1], tenants[0])):
            headers = {"Authorization": f"Bearer {other.api_key}"}
            for job_id in ids[owner.tenant]:
                for method, path in (
                    ("GET", f"/v1/jobs/{job_id}"),
                    ("GET", f"/v1/jobs/{job_id}/transcript"),
                    ("POST", f"/v1/jobs/{job_id}/cancel"),
                    ("POST", f"/v1/jobs/{job_id}/redeliver"),
                    ("DELETE", f"/v1/jobs/{job_id}"),
                ):
                    response = await http.request(method, enqueue.url + path, headers=headers)
                    if response.status_code != 404:
                        wrong.append(f"{method} {path} as {other.tenant}: {response.status_code}")
    return wrong


async def fuzz_enqueue(d: Drill, stack: Stack) -> None:
    enqueue = stack.enqueues[0]
    tenants = list(stack.tenants.values())
    async with httpx.AsyncClient() as http:
        schema = (await http.get(enqueue.url + "/openapi.json")).json()
    operations = sum(
        1
        for item in schema["paths"].values()
        for m in item
        if m in ("get", "post", "put", "delete")
    )
    ids = await _seed_jobs(stack)
    wrong = await _tenant_isolation(stack, ids)
    d.require("another tenant's jobs answer 404 on every route", not wrong, "; ".join(wrong[:3]))
    every_id = ids[tenants[0].tenant] + ids[tenants[1].tenant]
    config = _config(d.workdir / "schemathesis.toml", every_id)
    examples = d.profile.fuzz_examples
    runs = [
        ("valid key", f"Authorization: Bearer {tenants[0].api_key}", examples, None),
        ("unknown key", "Authorization: Bearer tsk_not-a-key-at-all", 10, "coverage,fuzzing"),
        ("malformed header", "Authorization: Basic Zm9vOmJhcg==", 10, "coverage,fuzzing"),
    ]
    results: dict[str, dict[str, Any]] = {}
    for i, (label, header, n, phases) in enumerate(runs):
        d.mark(f"schemathesis, {label}, {n} examples per operation")
        started = time.monotonic()
        report = d.workdir / f"schemathesis-{i}.xml"
        code, text, counts = await _run_st(
            enqueue.url,
            header,
            n,
            report,
            seed=1000 + i,
            timeout=300,
            config=config,
            phases=phases,
        )
        (d.workdir / f"schemathesis-{i}.log").write_text(text)
        summary = _summary(text)
        results[label] = {
            "exit_code": code,
            "seconds": round(time.monotonic() - started, 1),
            "junit": counts,
            "summary": summary,
        }
        d.require(
            f"no 5xx with {label} (schemathesis exit 0)",
            code == 0,
            summary[-300:],
        )
    rows = await stack.query("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    log = enqueue.log.read_text(errors="replace")
    tracebacks = log.count("Traceback (most recent call last)")
    d.require(
        "no traceback in the enqueue service's log", tracebacks == 0, f"{tracebacks} tracebacks"
    )
    jobs = {r["status"]: r["n"] for r in rows}
    d.result.numbers.update(operations=operations, runs=results, jobs_after_fuzzing=jobs)
    d.result.verdict = {"passed": True, "jobs_after_fuzzing": jobs}
    (d.workdir / "schemathesis.json").write_text(json.dumps(results, indent=2))
