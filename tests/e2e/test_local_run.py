"""`transcription run`, as a newcomer runs it: four processes on the embedded SQLite."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from stack import DATA, JFK_REFERENCE, words

pytestmark = [pytest.mark.model, pytest.mark.slow]


def free_port_block(size: int = 4) -> int:
    for _ in range(50):
        base = random.randint(20_000, 60_000)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no block of free ports")


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler] | partial) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_transcription_run_transcribes_jfk(tmp_path: Path) -> None:
    base = free_port_block()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "transcription_cli", "run", "--port-base", str(base)],
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
        while not all(_ready(f"http://127.0.0.1:{base + n}") for n in range(4)):
            assert process.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
            time.sleep(0.3)
        key = re.search(r"api key:\s+(tsk_\S+)", "".join(output))
        secret = re.search(r"webhook secret:\s+(whsec_\S+)", "".join(output))
        assert key and secret, "".join(output)
        assert (tmp_path / "transcription.db").exists()
        with (
            http_server(partial(QuietFiles, directory=str(DATA))) as media,
            http_server(Receiver) as hooks,
        ):
            auth = {"Authorization": f"Bearer {key[1]}"}
            job = httpx.post(
                f"{api}/v1/jobs",
                headers=auth,
                json={"media_url": f"{media}/jfk.flac", "webhook_url": f"{hooks}/hook"},
            ).json()
            deadline = time.monotonic() + 120
            while (state := httpx.get(f"{api}/v1/jobs/{job['id']}", headers=auth).json())[
                "status"
            ] not in ("SUCCEEDED", "PERMAFAILED"):
                assert time.monotonic() < deadline, state
                time.sleep(0.2)
        assert state["status"] == "SUCCEEDED", state
        assert words(state["transcript"]["text"]) == words(JFK_REFERENCE)
        ((headers, body),) = Receiver.received
        payload = Webhook(secret[1]).verify(body, {k.lower(): v for k, v in headers.items()})
        assert payload["data"]["id"] == job["id"]
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
