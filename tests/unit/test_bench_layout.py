"""The benchmarks stay runnable: every scenario is registered with the runner, has its
``main`` and its smallest run, and no module of bench/ imports another by bare name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from bench.__main__ import ALL, SCENARIOS

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_every_scenario_is_registered_and_runnable() -> None:
    modules = {p.stem.replace("_", "-") for p in (BENCH / "scenarios").glob("[!_]*.py")}
    assert modules == set(SCENARIOS)
    assert {name for name, _ in ALL} <= set(SCENARIOS)
    for name in SCENARIOS:
        module = importlib.import_module(f"bench.scenarios.{name.replace('-', '_')}")
        assert callable(module.main), name
        assert isinstance(module.SMOKE, list) and all(isinstance(a, str) for a in module.SMOKE)


def test_no_module_of_bench_imports_another_by_bare_name() -> None:
    local = {p.stem for p in BENCH.rglob("*.py")}
    for path in BENCH.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            bare = [n for n in names if n.split(".")[0] in local]
            assert not bare, f"{path.relative_to(BENCH)} imports {bare}: use bench.<module>"
