"""The packages depend on each other in one direction: the common package imports no
service, a service imports no other service, and only the command line imports several.
Read from the source with ``ast`` (imports inside functions count), nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMON = ROOT / "shared" / "transcription_core"
CLI = ROOT / "cli" / "transcription_cli"
SERVICES = {
    "enqueue_service": ROOT / "services" / "enqueue" / "enqueue_service",
    "orchestrator_service": ROOT / "services" / "orchestrator" / "orchestrator_service",
    "transcriber_service": ROOT / "services" / "transcriber" / "transcriber_service",
    "model_server": ROOT / "services" / "model-server" / "model_server",
}


def imported_packages(package: Path) -> dict[str, set[str]]:
    """Each top-level package the modules under ``package`` import, with the modules."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


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
