"""`transcription run`, as `make run` runs it: the four services, two transcriber
processes, on the embedded SQLite."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from testkit.data import JFK_TEXT
from testkit.media_server import MediaServer
from testkit.ports import free_port_block
from testkit.rawhttp import InThread
from testkit.text import words
from testkit.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_transcription_run_transcribes_jfk(tmp_path: Path) -> None:
    base = free_port_block(5)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transcription_cli",
            "run",
            "--port-base",
            str(base),
            "--transcribers",
            "2",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(
        target=lambda: output.extend(iter(process.stdout.readline, "")),
        daemon=True,  # type: ignore[union-attr]
    )
    reader.start()
    api = f"http://127.0.0.1:{base}"
    try:
        deadline = time.monotonic() + 120
        while not all(_ready(f"http://127.0.0.1:{base + n}") for n in range(5)):
            assert process.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
            time.sleep(0.3)
        key = re.search(r"api key:\s+(tsk_\S+)", "".join(output))
        secret = re.search(r"webhook secret:\s+(whsec_\S+)", "".join(output))
        assert key and secret, "".join(output)
        assert (tmp_path / "transcription.db").exists()
        media, hooks = MediaServer(), WebhookReceiver(secrets={"local": secret[1]})
        with InThread(media, hooks):
            auth = {"Authorization": f"Bearer {key[1]}"}
            job = httpx.post(
                f"{api}/v1/jobs",
                headers=auth,
                json={
                    "media_url": media.media_url("jfk", "ok", "jfk.flac"),
                    "webhook_url": hooks.hook_url("local"),
                },
            ).json()
            deadline = time.monotonic() + 120
            while (state := httpx.get(f"{api}/v1/jobs/{job['id']}", headers=auth).json())[
                "status"
            ] not in ("SUCCEEDED", "PERMAFAILED"):
                assert time.monotonic() < deadline, state
                time.sleep(0.2)
        assert state["status"] == "SUCCEEDED", state
        assert words(state["transcript"]["text"]) == words(JFK_TEXT)
        (delivery,) = hooks.deliveries
        assert delivery.signature_ok, delivery.signature_error
        assert delivery.job_id == job["id"]
        # Both transcribers report their slots; the orchestrator triggers only into room.
        metrics = httpx.get(f"http://127.0.0.1:{base + 1}/metrics").text
        assert "transcription_transcriber_slots 4.0" in metrics, metrics
        assert 'transcription_triggers_total{outcome="refused"}' not in metrics
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=10)  # to the end of the output, then close the pipe
        process.stdout.close()  # type: ignore[union-attr]
    assert process.returncode == 0, "".join(output)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
