"""Fixtures of the fault drills: one migrated template with the drill tenants and one
real model server (tiny.en) for the whole session; each drill copies the template.

The drills live in the top-level ``faults`` package (``python -m faults`` runs them with
full durations); this folder runs them with the short ``ci`` profile.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import asyncpg
import pytest

from faults import db
from faults.drills import PROFILES, RunContext, start_model_server
from testkit.procs import Processes

REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES", "") not in ("", "0", "false")


def _pg_restart() -> str:
    """``FAULTS_PG_RESTART``: ``1``/``always`` restart the real server in the PostgreSQL
    drill, ``auto`` only when no other client is connected; unset or ``0``, the drill cuts
    off its own database instead (safe on a server other tests share)."""
    value = os.environ.get("FAULTS_PG_RESTART", "").strip().lower()
    return {"1": "always", "true": "always", "always": "always", "auto": "auto"}.get(value, "never")


@pytest.fixture(scope="session")
def fault_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunContext]:
    try:
        asyncio.run(db.admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL not reachable for the fault drills: {exc}"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " (REQUIRE_POSTGRES is set)", pytrace=False)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("faults")
    procs = Processes()
    template = db.Template()
    try:
        asyncio.run(template.create())
        model = asyncio.run(start_model_server(workdir, procs))
        yield RunContext(
            PROFILES["ci"],
            template,
            model.url,
            workdir,
            pg_restart=_pg_restart(),
        )
    finally:
        procs.close()
        asyncio.run(template.close())
