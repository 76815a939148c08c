"""Service processes, each in a process group of its own, that die with their parent.

A :class:`Service` is one ``python -m transcription_cli serve NAME`` process on 127.0.0.1 (or any
command given as ``argv``), started with ``start_new_session`` (its own process group, so
a SIGKILL reaches anything it spawned: uvicorn's workers) and with ``PR_SET_PDEATHSIG``
set to SIGKILL, so it dies with the test, drill or benchmark even if that is killed. Its
output goes to its ``log``. :class:`Processes` kills every group it started when it is
closed: use it in ``finally`` blocks. :func:`model_server` is one model server process,
ready, as a context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from testkit.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1


def transcription_argv() -> list[str]:
    """The ``transcription`` command of this environment: ``python -m transcription_cli``
    with this Python, so no console script need be on the PATH."""
    return [sys.executable, "-m", "transcription_cli"]


def serve_argv(service: str, port: int) -> list[str]:
    return [*transcription_argv(), "serve", service, "--host", "127.0.0.1", "--port", str(port)]


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Service:
    """One server process on 127.0.0.1:``port``: ``transcription serve SERVICE``, or
    ``argv(port)``. ``env`` is added to this process's environment."""

    def __init__(
        self,
        name: str,
        service: str,
        port: int,
        env: dict[str, str],
        log: Path,
        *,
        argv: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.name = name
        self.service = service
        self.port = port
        self.env = env
        self.log = log
        self.argv = argv or (lambda port: serve_argv(service, port))
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.port_retries = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return self.argv(self.port)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def pids(self) -> set[int]:
        """The process and all its descendants (uvicorn's workers)."""
        return descendants(self.pid) | {self.pid}

    def start(self) -> None:
        if self.alive:
            return
        self.starts += 1
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n=== start #{self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def _ready(self, answered: httpx.Response | None) -> bool:
        """Whether the answer says ready; raises if the process died (restarting it on
        another port when its port was taken meanwhile). An answer from another service
        (one that took the port first) is not ready: this process will fail to bind."""
        if not self.alive:
            tail = self.log_tail()
            if "address already in use" in tail and self.port_retries < 3:
                # free_port() only found a port that was free a moment ago.
                self.port_retries += 1
                self.port = free_port()
                self.start()
                return False
            raise RuntimeError(f"{self.name} exited during start-up; see {self.log}:\n{tail}")
        if answered is None or answered.status_code != 200:
            return False
        with contextlib.suppress(ValueError, AttributeError):
            named = answered.json().get("service")
            if named is not None and named != self.service:
                return False
        return True

    async def wait_ready(self, timeout: float = 90.0, path: str = "/healthz") -> None:
        """Until ``GET path`` answers 200 (``/readyz``: the model is loaded)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                answered = None
                with contextlib.suppress(httpx.HTTPError):
                    answered = await http.get(self.url + path)
                if self._ready(answered):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready within {timeout} s; see {self.log}")
                await asyncio.sleep(0.2)

    def wait_ready_blocking(self, timeout: float = 90.0, path: str = "/healthz") -> None:
        """:meth:`wait_ready` for a caller that may not block an event loop or has none."""
        deadline = time.monotonic() + timeout
        while True:
            answered = None
            with contextlib.suppress(httpx.HTTPError):
                answered = httpx.get(self.url + path, timeout=2)
            if self._ready(answered):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready within {timeout} s; see {self.log}")
            time.sleep(0.2)

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
    """Every service started here; ``close()`` kills them all, whatever happened."""

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


@contextlib.contextmanager
def model_server(log: Path | None = None, timeout: float = 180, **env: str) -> Iterator[Service]:
    """A real model server process (``env``: its settings), ready: its model loaded."""
    with contextlib.ExitStack() as stack:
        if log is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="model-server-"))
            log = Path(folder) / "model-server.log"
        service = Service("model-server", "model-server", free_port(), env, log)
        stack.callback(service.stop)
        service.start()
        service.wait_ready_blocking(timeout, path="/readyz")
        yield service


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
