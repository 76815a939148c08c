"""Service processes for the drills, each in a process group of its own.

Every process is started with ``start_new_session`` (its own process group, so a
SIGKILL reaches anything it spawned) and with ``PR_SET_PDEATHSIG`` set to SIGKILL, so it
dies with the drill even if the drill itself is killed. :class:`Processes` kills every
group it started when it is closed: drills use it in ``finally`` blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Service:
    """One ``transcription serve NAME`` process on 127.0.0.1:``port``."""

    def __init__(self, name: str, service: str, port: int, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.service = service
        self.port = port
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.port_retries = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.alive:
            return
        self.starts += 1
        cmd = [
            sys.executable,
            "-m",
            "transcription_cli",
            "serve",
            self.service,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log.open("ab") as out:
            out.write(f"\n=== start #{self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            self.process = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    async def wait_ready(self, timeout: float = 90.0, path: str = "/healthz") -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if not self.alive:
                    tail = self.log_tail()
                    if "address already in use" in tail and self.port_retries < 3:
                        # free_port() only found a port that was free a moment ago.
                        from faults.peers import free_port

                        self.port_retries += 1
                        self.port = free_port()
                        self.start()
                        continue
                    raise RuntimeError(
                        f"{self.name} exited during start-up; see {self.log}:\n{tail}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url + path)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready within {timeout} s; see {self.log}")
                await asyncio.sleep(0.2)

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of this service's log (for error messages)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal_group(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group, as the OOM killer or a node loss would."""
        if self.alive:
            self.kills += 1
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        self.signal_group(signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        # Anything left in the group (there should be nothing) goes too.
        self.signal_group(signal.SIGKILL)


class Processes:
    """Every service a drill started; ``close()`` kills them all, whatever happened."""

    def __init__(self) -> None:
        self.services: list[Service] = []

    def add(self, service: Service) -> Service:
        self.services.append(service)
        return service

    def close(self) -> None:
        for service in self.services:
            service.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for service in self.services:
            if service.process is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for service in self.services:
            service.kill()
