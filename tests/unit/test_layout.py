"""The layout.

The packages depend on each other in one direction: the common package imports no
service, a service imports no other service, and only the command line imports several.
Read from the source with ``ast`` (imports inside functions count), nothing is imported.

The job core: SQL only in the repository, small modules, the tables reachable as
``repo.<table>``.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa
from packaging.requirements import Requirement

from testkit import imports
from transcription_core import repository as repo

ROOT = Path(__file__).resolve().parents[2]
COMMON = CORE = ROOT / "shared" / "transcription_core"
AUDIO = CORE / "audio"
CLI = ROOT / "cli" / "transcription_cli"
SERVICES = {
    "enqueue_service": ROOT / "services" / "enqueue" / "enqueue_service",
    "orchestrator_service": ROOT / "services" / "orchestrator" / "orchestrator_service",
    "transcriber_service": ROOT / "services" / "transcriber" / "transcriber_service",
    "model_server": ROOT / "services" / "model-server" / "model_server",
}
#: A statement built or written by hand.
SQL = re.compile(r"\bsa\.(select|text|insert|update|delete)\(|\.(insert|update|delete)\(\)")
#: Where SQL may be: the repository, the connection set-up (SQLite pragmas), the schema
#: (the partial indexes' predicates) and the migrations (package data since the CLI moved).
SQL_HOMES = (CORE / "repository", CORE / "db.py", CORE / "models.py", CORE / "migrations")


# --- the packages' dependencies -------------------------------------------------------


def imported_packages(package: Path) -> dict[str, set[str]]:
    """Each top-level package the modules under ``package`` import, with the modules."""
    return {
        name: {str(path.relative_to(ROOT)) for path in paths}
        for name, paths in imports.imported_packages(package).items()
    }


def test_the_packages_are_where_the_test_looks() -> None:
    for package in [COMMON, CLI, *SERVICES.values()]:
        assert (package / "__init__.py").is_file(), package


def test_the_common_package_imports_no_service_and_not_the_cli() -> None:
    imports = imported_packages(COMMON)
    above = {name: imports[name] for name in [*SERVICES, "transcription_cli"] if name in imports}
    assert not above, f"transcription_core imports packages that build on it: {above}"


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_the_common_package_of_ours(service: str) -> None:
    imports = imported_packages(SERVICES[service])
    others = {
        name: imports[name]
        for name in [*SERVICES, "transcription_cli"]
        if name != service and name in imports
    }
    assert not others, f"{service} imports {others}"


def test_the_cli_is_what_imports_the_services() -> None:
    assert set(SERVICES) <= set(imported_packages(CLI))


@pytest.mark.parametrize(
    "package", ["transcription_core", "enqueue_service", "orchestrator_service"]
)
def test_only_the_services_that_hear_audio_import_the_audio_package(package: str) -> None:
    """``transcription_core.audio`` needs PyAV, NumPy and faster-whisper (the ``audio``
    extra), which the enqueue and orchestrator images do not install."""
    path = COMMON if package == "transcription_core" else SERVICES[package]
    users = {
        name: sorted(str(p.relative_to(ROOT)) for p in paths)
        for name, paths in imports.imported_modules(path, skip=(AUDIO,)).items()
        if name == "transcription_core.audio" or name.startswith("transcription_core.audio.")
    }
    assert not users, f"{package} imports the audio package: {users}"


# --- the job core ---------------------------------------------------------------------


def sources() -> list[Path]:
    return sorted([*(ROOT / "services").rglob("*.py"), *CORE.rglob("*.py"), *CLI.rglob("*.py")])


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


# --- the Python client ----------------------------------------------------------------

CLIENT = ROOT / "clients" / "python"


def test_the_client_depends_on_httpx_only() -> None:
    """``transcription-client`` is its own distribution: it imports the standard library,
    httpx and itself, nothing of the service, and declares httpx as its one dependency."""
    imported = imported_packages(CLIENT / "transcription_client")
    outside = {
        name: paths
        for name, paths in imported.items()
        if name not in sys.stdlib_module_names and name not in {"httpx", "transcription_client"}
    }
    assert not outside, f"the client imports {outside}"
    declared = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert [Requirement(r).name for r in declared["dependencies"]] == ["httpx"]
    assert (CLIENT / "transcription_client" / "py.typed").is_file()


def test_no_package_of_the_service_imports_the_client() -> None:
    for package in [COMMON, CLI, *SERVICES.values()]:
        assert "transcription_client" not in imported_packages(package), package
