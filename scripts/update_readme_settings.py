"""Regenerate the settings table in README.md from the services' settings classes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from transcription_cli.services import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- settings-table:start -->\n).*?(<!-- settings-table:end -->)", re.S)


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m[1] + settings_table() + "\n" + m[2], text)


if __name__ == "__main__":
    current = README.read_text()
    updated = render(current)
    if "--check" in sys.argv:
        sys.exit(0 if updated == current else "README.md settings table is stale: make docs")
    README.write_text(updated)
