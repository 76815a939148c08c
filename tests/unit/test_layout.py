"""The job core's layout: SQL only in the repository, small modules, the tables reachable
as ``repo.<table>``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from transcription_core import repository as repo

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "shared" / "transcription_core"
#: A statement built or written by hand.
SQL = re.compile(r"\bsa\.(select|text|insert|update|delete)\(|\.(insert|update|delete)\(\)")
#: Where SQL may be: the repository, the connection set-up (SQLite pragmas), and the
#: schema (the partial indexes' predicates).
SQL_HOMES = (CORE / "repository", CORE / "db.py", CORE / "models.py")


def sources() -> list[Path]:
    return sorted([*(ROOT / "services").rglob("*.py"), *CORE.rglob("*.py")])


def test_every_sql_statement_is_in_the_repository() -> None:
    outside = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sources()
        if not any(path.is_relative_to(home) for home in SQL_HOMES)
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if SQL.search(line)
    ]
    assert outside == []


@pytest.mark.parametrize(
    "path",
    [
        *sorted((CORE / "repository").glob("*.py")),
        CORE / "job.py",
        CORE / "lifecycle.py",
        CORE / "status.py",
        CORE / "retry.py",
        CORE / "errors.py",
        ROOT / "services/transcriber/transcriber_service/service.py",
        ROOT / "services/enqueue/enqueue_service/service.py",
    ],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_a_core_module_reads_in_one_sitting(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 400


@pytest.mark.parametrize(
    "name", ["jobs", "events", "tenants", "api_keys", "transcripts", "chunks", "runtime_settings"]
)
def test_the_tables_are_not_shadowed_by_the_modules(name: str) -> None:
    assert isinstance(getattr(repo, name), sa.Table)
