"""The README stays true: its settings table is the settings classes' own."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "update_readme_settings", ROOT / "scripts" / "update_readme_settings.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    assert module.render(readme) == readme, "run `make docs` to refresh the settings table"


def test_readme_names_every_operator_command() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in (
        "migrate",
        "tenants create",
        "queue-depth",
        "stats --since",
        "requeue --since",
        "jobs show",
        "limit set",
        "run",
    ):
        assert f"transcription {command}" in readme
