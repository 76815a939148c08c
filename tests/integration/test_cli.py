"""The operator's commands on a database seeded with jobs in every status."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from factories import make_job, make_tenant
from transcription_cli.main import main as cli
from transcription_core import repository as repo
from transcription_core.models import utcnow
from transcription_core.status import JobStatus

S = JobStatus


async def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(cli, args)
    return code, capsys.readouterr().out


@pytest.fixture
async def seeded(
    engine: AsyncEngine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Two QUEUED (one 10 min old), one of each other status, and PERMAFAILED ones by reason."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    await make_tenant(engine)
    now = utcnow()
    ids = {}
    ids["old_queued"] = (await make_job(engine, created_at=now - timedelta(minutes=10))).id
    ids["queued"] = (await make_job(engine)).id
    for status in (S.TRIGGERED, S.PROCESSING, S.SUCCEEDED, S.FAILED, S.SEND_FAILED, S.CANCELED):
        ids[status] = (await make_job(engine, status=status, attempts=1)).id
    for reason in ("MODEL_ERROR", "WEBHOOK_FAILED", "DOWNLOAD_FORBIDDEN", "DOWNLOAD_NOT_FOUND"):
        ids[reason] = (
            await make_job(
                engine, status=S.PERMAFAILED, attempts=3, failure_reason=reason, completed_at=now
            )
        ).id
    ids["old_model_error"] = (
        await make_job(
            engine,
            status=S.PERMAFAILED,
            attempts=3,
            failure_reason="MODEL_ERROR",
            completed_at=now - timedelta(days=2),
            updated_at=now - timedelta(days=2),
            created_at=now - timedelta(days=2),
        )
    ).id
    return ids


async def test_queue_depth(seeded: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out = await run_cli(["queue-depth", "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert (data["queued"], data["in_flight"], data["waiting_retry"]) == (2, 2, 2)
    assert 590 <= data["oldest_queued_age_seconds"] <= 900
    code, out = await run_cli(["queue-depth"], capsys)
    assert code == 0
    assert "queued:        2" in out and "oldest queued: 10m" in out


async def test_stats(seeded: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out = await run_cli(["stats", "--since", "1h", "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert data["by_status"] == {
        "QUEUED": 2,
        "TRIGGERED": 1,
        "PROCESSING": 1,
        "SUCCEEDED": 1,
        "FAILED": 1,
        "SEND_FAILED": 1,
        "CANCELED": 1,
        "PERMAFAILED": 4,
    }
    assert data["by_failure_reason"] == {
        "MODEL_ERROR": 1,
        "WEBHOOK_FAILED": 1,
        "DOWNLOAD_FORBIDDEN": 1,
        "DOWNLOAD_NOT_FOUND": 1,
    }
    code, out = await run_cli(["stats", "--since", "3d", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["by_failure_reason"]["MODEL_ERROR"] == 2


async def test_requeue_dry_run_then_for_real(
    seeded: dict[str, str], engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = await run_cli(["requeue", "--since", "1h", "--dry-run", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["dry_run"] and data["count"] == 2
    assert {j["id"] for j in data["jobs"]} == {seeded["MODEL_ERROR"], seeded["WEBHOOK_FAILED"]}
    async with engine.connect() as conn:  # a dry run moves nothing
        job = await repo.get_job(conn, seeded["MODEL_ERROR"])
    assert job is not None and job.status == S.PERMAFAILED

    code, out = await run_cli(
        ["requeue", "--since", "1h", "--reason", "model_error", "--actor", "bob"], capsys
    )
    assert code == 0 and "requeued 1 job(s)" in out
    async with engine.connect() as conn:
        job = await repo.get_job(conn, seeded["MODEL_ERROR"])
        events = await repo.job_events(conn, seeded["MODEL_ERROR"])
        forbidden = await repo.get_job(conn, seeded["DOWNLOAD_FORBIDDEN"])
    assert job is not None and (job.status, job.attempts) == (S.QUEUED, 0)
    assert job.failure_reason is None
    assert (events[-1].from_status, events[-1].actor) == (S.PERMAFAILED, "operator:bob")
    assert forbidden is not None and forbidden.status == S.PERMAFAILED

    code, out = await run_cli(
        ["requeue", "--since", "1h", "--include-download-errors", "--dry-run", "--json"], capsys
    )
    assert json.loads(out)["count"] == 3


async def test_tenants_and_jobs_show(
    seeded: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = await run_cli(["tenants", "create", "org-new", "--json"], capsys)
    created = json.loads(out)
    assert code == 0 and created["tenant"] == "org-new"
    assert created["api_key"].startswith("tsk_") and created["webhook_secret"].startswith("whsec_")
    code, _ = await run_cli(["tenants", "create", "org-new"], capsys)
    assert code == 1
    code, out = await run_cli(["jobs", "show", seeded["queued"], "--json"], capsys)
    shown = json.loads(out)
    assert code == 0
    assert shown["job"]["id"] == seeded["queued"]
    assert [e["to_status"] for e in shown["events"]] == ["QUEUED"]
    code, out = await run_cli(["jobs", "show", seeded["queued"]], capsys)
    assert code == 0
    assert "-> QUEUED" in out


def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["requeue", "--help"],
        ["limit", "set", "--help"],
        ["run", "--help"],
        ["serve", "--help"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "transcription_cli", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0 and "usage: transcription" in result.stdout


def test_bad_arguments_are_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "transcription_cli", "requeue", "--since", "soon"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "not a duration" in result.stderr


async def test_an_operator_can_redeliver_a_finished_job(
    seeded: dict[str, str], engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = await run_cli(["jobs", "redeliver", seeded["WEBHOOK_FAILED"]], capsys)
    assert code == 0 and "will be sent again" in out
    async with engine.connect() as conn:
        job = await repo.get_job(conn, seeded["WEBHOOK_FAILED"])
        events = await repo.job_events(conn, seeded["WEBHOOK_FAILED"])
    assert job is not None and job.status == S.SEND_FAILED and job.deliveries == 0
    assert events[-1].actor.startswith("operator:")
    code, _ = await run_cli(["jobs", "redeliver", seeded["queued"]], capsys)
    assert code == 1


def test_workers_is_for_the_enqueue_api_only() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "transcription_cli", "serve", "orchestrator", "--workers", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "enqueue API only" in result.stderr


@pytest.mark.parametrize(
    ("service", "lacking"), [("transcriber", "av"), ("model-server", "ctranslate2")]
)
def test_serve_names_the_extra_an_image_without_the_service_lacks(
    service: str, lacking: str
) -> None:
    """The control image has neither the transcriber's nor the model server's extra."""
    hide = f"import sys; sys.modules[{lacking!r}] = None; "
    run = "from transcription_cli.main import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", hide + run, "serve", service, "--port", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"transcription-service[{service}]" in result.stderr
    assert lacking in result.stderr and "Traceback" not in result.stderr


@pytest.mark.postgres
async def test_the_enqueue_api_serves_from_several_workers(
    pg_engine: AsyncEngine, pg_url: str
) -> None:
    """``transcription serve enqueue --workers 2``: two processes on one port, each with
    its own pools; jobs POSTed through it are stored."""
    import os
    import socket

    import httpx

    tenant = await make_tenant(pg_engine)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "transcription_cli", "serve", "enqueue", "--host",
        "127.0.0.1", "--port", str(port), "--workers", "2",
        env={**os.environ, "DATABASE_URL": pg_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            # Two workers import the app on a machine that may be busy: wait long.
            for _ in range(1800):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.returncode is None, "the server exited during start-up"
                await asyncio.sleep(0.1)
            else:
                pytest.fail("enqueue --workers 2 not ready within 180 s")
            headers = {"Authorization": f"Bearer {tenant.api_key}"}
            body = {
                "media_url": "https://m.example.com/a.mp3",
                "webhook_url": "https://h.example.com/t",
            }
            answers = await asyncio.gather(
                *(http.post("/v1/jobs", json=body, headers=headers) for _ in range(20))
            )
        assert [a.status_code for a in answers] == [202] * 20
        async with pg_engine.connect() as conn:
            assert (await repo.queue_depth(conn)).queued == 20
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), timeout=30)
