"""What got in an operator's way in the first hour (issue 17): the limit's pause and where
its value comes from, ``jobs show`` on a long webhook payload, ``config`` under ``run``,
``queue-depth`` with nothing queued, and a reader that closes the pipe early."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from factories import make_job, make_tenant
from transcription_cli.main import BROKEN_PIPE_EXIT
from transcription_cli.main import main as cli
from transcription_core import repository as repo


async def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(cli, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
async def db(engine: AsyncEngine, database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MAX_CONCURRENT_TRANSCRIPTION_JOBS", "7")
    await make_tenant(engine)
    return database_url


def _refused(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transcription_cli", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_limit_set_refuses_what_is_not_a_limit(value: str) -> None:
    result = _refused("limit", "set", "--", value)
    assert result.returncode == 2, result.stdout
    assert "limit pause" in result.stderr or "not a whole number" in result.stderr


async def test_limit_show_says_the_value_in_force_and_where_it_comes_from(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await run_cli(["limit", "show"], capsys)
    assert code == 0 and out.startswith("7 ") and "environment" in out
    code, out, _ = await run_cli(["limit", "show", "--json"], capsys)
    assert json.loads(out) | {"override_set_at": None} == {
        "in_force": 7,
        "source": "environment",
        "paused": False,
        "environment": 7,
        "override": None,
        "override_set_by": None,
        "override_set_at": None,
    }
    assert (await run_cli(["limit", "set", "40", "--actor", "alice"], capsys))[0] == 0
    code, out, _ = await run_cli(["limit", "show"], capsys)
    assert out.startswith("40 ") and "operator:alice" in out and "environment says 7" in out
    shown = json.loads((await run_cli(["limit", "show", "--json"], capsys))[1])
    assert (shown["in_force"], shown["source"], shown["override"]) == (40, "override", 40)
    assert shown["override_set_by"] == "operator:alice" and shown["override_set_at"]


async def test_a_pause_is_explicit_and_resume_puts_back_what_was_in_force(
    db: str, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_cli(["limit", "set", "40"], capsys)
    code, out, _ = await run_cli(["limit", "pause", "--actor", "bob"], capsys)
    assert code == 0 and "paused" in out
    async with engine.connect() as conn:
        assert await repo.get_runtime_setting(conn, repo.LIMIT_SETTING) == "0"
    code, out, _ = await run_cli(["limit", "show"], capsys)
    assert out.startswith("0 ") and "PAUSED" in out and "operator:bob" in out
    assert json.loads((await run_cli(["limit", "show", "--json"], capsys))[1])["paused"]
    code, out, _ = await run_cli(["limit", "resume"], capsys)
    assert code == 0 and "40" in out
    async with engine.connect() as conn:
        assert await repo.get_runtime_setting(conn, repo.LIMIT_SETTING) == "40"
    # Paused from the environment's value, resumed to it: no override left.
    await run_cli(["limit", "reset"], capsys)
    await run_cli(["limit", "pause"], capsys)
    code, out, _ = await run_cli(["limit", "resume"], capsys)
    assert code == 0 and "environment's 7" in out
    async with engine.connect() as conn:
        assert await repo.get_runtime_setting(conn, repo.LIMIT_SETTING) is None
    code, out, _ = await run_cli(["limit", "resume"], capsys)
    assert code == 0 and "not paused" in out


async def test_jobs_show_summarises_a_long_webhook_payload(
    db: str, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "And so, my fellow Americans, ask not what your country can do for you. " * 400
    segments = [{"start": i, "end": i + 1, "text": "word " * 10} for i in range(300)]
    payload = json.dumps(
        {
            "type": "transcription.succeeded",
            "timestamp": "2026-11-28T10:00:00Z",
            "data": {
                "id": "x",
                "status": "SUCCEEDED",
                "transcript": {"text": text, "segments": segments, "duration": 600.0},
            },
        }
    )
    assert len(payload) > 25_000
    job = await make_job(engine, webhook_payload=payload, failure_detail="x" * 5000)
    code, out, _ = await run_cli(["jobs", "show", job.id], capsys)
    assert code == 0
    assert max(len(line) for line in out.splitlines()) < 400
    line = next(line for line in out.splitlines() if line.startswith("webhook_payload"))
    assert f"{len(payload):,} bytes" in line and "transcription.succeeded" in line
    assert "300 segments" in line and "600.0 s" in line and '"And so, my fellow' in line
    assert "--json" in line
    code, out, _ = await run_cli(["jobs", "show", job.id, "--json"], capsys)
    shown = json.loads(out)["job"]
    assert shown["webhook_payload"] == payload and shown["failure_detail"] == "x" * 5000


async def test_queue_depth_has_no_age_without_a_queued_job(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await run_cli(["queue-depth", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["queued"] == 0
    assert data["oldest_queued_at"] is None and data["oldest_queued_age_seconds"] is None


async def test_a_reader_that_stops_early_gets_no_traceback(db: str, engine: AsyncEngine) -> None:
    """``transcription jobs show ID --json | head -1``: the output is larger than a pipe
    holds, so the CLI is still writing when the reader goes."""
    job = await make_job(engine, webhook_payload="{" + '"k": "' + "v" * 1_000_000 + '"}')
    code, stderr = await asyncio.to_thread(_read_one_line_and_close, job.id, db)
    assert code == BROKEN_PIPE_EXIT
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def _read_one_line_and_close(job_id: str, url: str) -> tuple[int, str]:
    with subprocess.Popen(
        [sys.executable, "-m", "transcription_cli", "jobs", "show", job_id, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "DATABASE_URL": url},
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().strip() == b"{"
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        return proc.wait(), stderr


def test_config_shows_what_run_would_use(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALLOW_PRIVATE_URLS", "MODEL_SERVER_URL", "TRANSCRIBER_URL"):
        monkeypatch.delenv(name, raising=False)
    result = _refused("config", "--port-base", "9000")
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "ALLOW_PRIVATE_URLS=False    (under `transcription run`: True)" in lines
    assert (
        "MODEL_SERVER_URL=http://127.0.0.1:8003    (under `transcription run`: "
        "http://127.0.0.1:9003)" in lines
    )
    assert "MAX_ATTEMPTS=3" in lines  # the same under both: said once
    # A value the environment sets, `run` keeps.
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "false")
    lines = [line.strip() for line in _refused("config").stdout.splitlines()]
    assert "ALLOW_PRIVATE_URLS=False" in lines
