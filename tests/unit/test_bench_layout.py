"""The benchmarks stay runnable: every scenario is registered with the runner, has its
``main`` and its smallest run, and no module of bench/ imports another by bare name."""

from __future__ import annotations

import importlib
from pathlib import Path

from bench.__main__ import ALL, SCENARIOS
from testkit import imports

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
    bare = {
        name: sorted(str(path.relative_to(BENCH)) for path in paths)
        for name, paths in imports.imported_modules(BENCH).items()
        if name.split(".")[0] in local
    }
    assert not bare, f"modules of bench import these by bare name (use bench.<module>): {bare}"
