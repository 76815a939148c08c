"""The README's local commands work as written from a fresh clone (issue 17, item 3).

A new user's shell does not have ``.venv/bin`` on its PATH: each ``transcription`` line of
the README's shell blocks runs in bash, in a directory laid out as a checkout after
``make install`` (its ``.venv`` is this test's environment), with a PATH that lacks the
environment, after the activation line that the same block (or the first block that has
one) shows. The lines of a block that change nothing outside a fresh SQLite file run as
written, in order, from ``migrate`` on; the others (``serve`` and ``run``, which never
return, and lines with a placeholder such as ``JOB_ID``) with ``--help`` appended.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deployfiles import ROOT

README = (ROOT / "README.md").read_text()
SHELL_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.M | re.S)
ACTIVATE = re.compile(r"^(?:\.|source) \.venv/bin/activate\b")
INVOKES = re.compile(r"^(?:\.venv/bin/)?transcription(?: |$)")
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]*_ID\b|\b[A-Z]+_PREFIX\b")
NEVER_RETURN = ("serve", "run")


def blocks() -> list[list[str]]:
    """Each shell block's command lines, comments dropped."""
    found = []
    for block in SHELL_BLOCK.findall(README):
        lines = [line.split(" #")[0].strip() for line in block.replace("\\\n", " ").splitlines()]
        found.append([line for line in lines if line and not line.startswith("#")])
    return found


def activation() -> str:
    lines = [line for block in blocks() for line in block if ACTIVATE.match(line)]
    assert lines, "the README never says how to put `transcription` on the PATH"
    return lines[0]


def command_lines() -> list[str]:
    return [line for block in blocks() for line in block if INVOKES.match(line)]


def runs_as_written(line: str) -> bool:
    words = line.split()
    return words[1] not in NEVER_RETURN and not PLACEHOLDER.search(line)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout after ``make install``, as far as the commands can tell."""
    root = tmp_path_factory.mktemp("clone")
    (root / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return root


def shell(clone: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.defpath,  # a new user's shell: no .venv/bin
        "HOME": str(clone),
        "USER": "newcomer",
        "DATABASE_URL": f"sqlite+aiosqlite:///{clone / 'transcription.db'}",
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_readme_shows_transcription_commands_and_how_to_reach_them() -> None:
    lines = command_lines()
    assert any(line.startswith("transcription migrate") for line in lines)
    assert ACTIVATE.match(activation())


def test_without_the_activation_a_fresh_shell_has_no_transcription(clone: Path) -> None:
    """What the test guards against: ``command not found`` after ``make run``."""
    assert shell(clone, "transcription --help").returncode == 127


def test_every_line_that_cannot_run_here_parses_as_written(clone: Path) -> None:
    """``serve``, ``run`` and the lines with a placeholder: their ``--help`` (the others
    run as written below)."""
    lines = [line for line in command_lines() if not runs_as_written(line)]
    assert lines
    script = "\n".join([activation(), *(f"{line} --help >/dev/null" for line in lines)])
    result = shell(clone, script)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_lines_that_can_run_here_run_as_written_in_order(clone: Path) -> None:
    for block in blocks():
        lines = [line for line in block if INVOKES.match(line) and runs_as_written(line)]
        if not lines:
            continue
        setup = [activation()]
        if not lines[0].startswith("transcription migrate"):
            setup.append("transcription migrate >/dev/null")
        # -x: the trace names the line that failed.
        result = shell(clone, "\n".join(["set -x", *setup, *lines]))
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        (clone / "transcription.db").unlink(missing_ok=True)
