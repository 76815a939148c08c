"""The error tree documented in ``errors.py`` is the code's: every project error under
one root, each with the parent, module and HTTP status the tree gives it."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

from transcription_core import errors
from transcription_core.errors import ProblemError, TranscriptionError

PACKAGES = (
    "transcription_core",
    "enqueue_service",
    "orchestrator_service",
    "transcriber_service",
    "model_server",
)
LINE = re.compile(
    r"^(?P<indent>[│├└─ ]*)(?P<name>\w+)(?:\s+(?P<status>\d{3})\b)?(?:\s+\((?P<module>[\w.]+)\))?"
)


def all_errors() -> dict[str, type[TranscriptionError]]:
    """Every subclass of the root, once every module of every package is imported."""
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    found: dict[str, type[TranscriptionError]] = {}
    todo: list[type[TranscriptionError]] = [TranscriptionError]
    while todo:
        cls = todo.pop()
        assert found.get(cls.__name__, cls) is cls, f"two errors named {cls.__name__}"
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def documented() -> list[tuple[str, str | None, int | None, str]]:
    """(name, parent, status, module) for each line of the docstring's tree."""
    doc = errors.__doc__ or ""
    lines = doc[doc.index("TranscriptionError\n") :].strip().splitlines()
    tree: list[tuple[str, str | None, int | None, str]] = []
    parents: list[str] = []
    for line in lines:
        match = LINE.match(line)
        assert match, line
        depth = len(match["indent"]) // 4
        del parents[depth:]
        status = int(match["status"]) if match["status"] else None
        module = match["module"] or errors.__name__
        tree.append((match["name"], parents[-1] if parents else None, status, module))
        parents.append(match["name"])
    return tree


def test_every_project_error_is_in_the_documented_tree() -> None:
    assert {name for name, *_ in documented()} == set(all_errors())


@pytest.mark.parametrize(("name", "parent", "status", "module"), documented())
def test_each_documented_error_is_where_the_tree_says(
    name: str, parent: str | None, status: int | None, module: str
) -> None:
    cls = all_errors()[name]
    assert cls.__module__ == module
    bases = [base.__name__ for base in cls.__bases__ if issubclass(base, TranscriptionError)]
    assert bases == ([parent] if parent else [])
    if issubclass(cls, ProblemError):
        assert cls.status_code == status, "a client error's status is in the tree"
        assert cls.type.startswith("/problems/") or cls is ProblemError
    else:
        assert status is None
