"""The Python client's distribution, ``transcription-client``, built as a user's pip
builds it: the package with its ``py.typed`` and nothing of the service, httpx its one
requirement, the README its description."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from deployfiles import ROOT

CLIENT = ROOT / "clients" / "python"


@pytest.mark.slow
def test_the_client_wheel_holds_the_typed_package_and_requires_httpx_only(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(
        CLIENT, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    )
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*pip_wheel, "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("transcription_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    package = {n for n in names if not n.startswith("transcription_client-")}
    expected = {
        f"transcription_client/{p.relative_to(CLIENT / 'transcription_client').as_posix()}"
        for p in (CLIENT / "transcription_client").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert package == expected and "transcription_client/py.typed" in package
    assert metadata["Name"] == "transcription-client"
    assert [r.split(">")[0] for r in metadata.get_all("Requires-Dist")] == ["httpx"]
    assert "verify_webhook" in metadata.get_payload()  # the README is the description
