"""What a package imports, read from its source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(package: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, set[Path]]:
    """Each module the modules under ``package`` (but those under ``skip``) import by
    absolute name (``from a.b import c`` counts as ``a.b``), with the files that import it."""
    found: dict[str, set[Path]] = {}
    for path in sorted(package.rglob("*.py")):
        if any(path.is_relative_to(folder) for folder in skip):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name, set()).add(path)
    return found


def imported_packages(package: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, set[Path]]:
    """Each top-level package the modules under ``package`` (but those under ``skip``)
    import (absolute imports only), with the files that import it."""
    found: dict[str, set[Path]] = {}
    for name, paths in imported_modules(package, skip=skip).items():
        found.setdefault(name.split(".")[0], set()).update(paths)
    return found
