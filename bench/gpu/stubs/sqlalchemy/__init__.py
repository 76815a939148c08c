"""Stand-in for sqlalchemy on a machine without it (see bench/gpu/stubs/README.md)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_bench_standin", Path(__file__).resolve().parents[1] / "_standin.py"
)
assert _spec is not None and _spec.loader is not None
_standin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_standin)
_standin.install(__name__)
__path__ = []  # submodules come from the stand-in's finder
__version__ = "stand-in"
