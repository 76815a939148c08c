"""What a package imports, read from its source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_packages(package: Path) -> dict[str, set[Path]]:
    """Each top-level package the modules under ``package`` import (absolute imports
    only), with the files that import it."""
    found: dict[str, set[Path]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path)
    return found
