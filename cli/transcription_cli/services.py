"""The commands that start or read the services: ``serve`` (one, what a container runs),
``run`` (all four on this machine) and ``config`` (their settings). The only module that
imports the service packages, each only when a command needs it.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from pydantic_settings import BaseSettings

from transcription_cli.operations import database_url, ensure_local_tenant, redacted

SERVICES = ("enqueue", "orchestrator", "transcriber", "model-server")


def service_settings() -> dict[str, type[BaseSettings]]:
    """Each service's settings class, by service name."""
    from enqueue_service.settings import EnqueueSettings
    from model_server.settings import ModelServerSettings
    from orchestrator_service.settings import OrchestratorSettings
    from transcriber_service.settings import TranscriberSettings

    return {
        "enqueue": EnqueueSettings,
        "orchestrator": OrchestratorSettings,
        "transcriber": TranscriberSettings,
        "model-server": ModelServerSettings,
    }


def settings_table() -> str:
    """Every setting of every service as a Markdown table (the README's is this)."""
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for service, cls in service_settings().items():
        for name, info in cls.model_fields.items():
            env = name.upper()
            default = info.default if info.default is not None else ""
            if env in rows:
                rows[env][2].append(service)
            else:
                rows[env] = (
                    f"`{default}`" if default != "" else "",
                    info.description or "",
                    [service],
                )
    lines = ["| variable | default | services | what it does |", "| --- | --- | --- | --- |"]
    for env, (default, description, services) in sorted(rows.items()):
        used = "all" if len(services) == 4 else ", ".join(services)
        lines.append(f"| `{env}` | {default} | {used} | {description} |")
    return "\n".join(lines)


def run_environment(host: str, port_base: int) -> dict[str, str]:
    """What ``transcription run`` adds to the environment of the services it starts: loopback
    URLs allowed (unless the environment says otherwise) and the peers' local addresses."""
    ports = dict(zip(SERVICES, range(port_base, port_base + 4), strict=True))
    env = {"ALLOW_PRIVATE_URLS": os.environ.get("ALLOW_PRIVATE_URLS", "true")}
    env["TRANSCRIBER_URL"] = f"http://{host}:{ports['transcriber']}"
    env["MODEL_SERVER_URL"] = f"http://{host}:{ports['model-server']}"
    # Speaker labels where this Python has the diarize extra (unless the environment says).
    from transcription_core.speakers import diarization_installed

    default = "true" if diarization_installed() else "false"
    env["DIARIZATION"] = os.environ.get("DIARIZATION", default)
    return env


def _values(cls: type[BaseSettings], overlay: dict[str, str]) -> dict[str, str]:
    """The settings ``cls`` reads from this environment with ``overlay`` on top."""
    saved = dict(os.environ)
    os.environ.update(overlay)
    try:
        settings = cls()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    values = {}
    for name in cls.model_fields:
        value = getattr(settings, name)
        values[name.upper()] = redacted(str(value)) if name == "database_url" else str(value)
    return values


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_table())
        return 0
    under_run = run_environment(args.host, args.port_base)
    for service, cls in service_settings().items():
        here, run = _values(cls, {}), _values(cls, under_run)
        print(f"[{service}]")
        for env, value in here.items():
            differs = f"    (under `transcription run`: {run[env]})" if run[env] != value else ""
            print(f"  {env}={value}{differs}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.service != "enqueue" and args.workers != 1:
        print(
            f"--workers is for the enqueue API only: run more {args.service} replicas "
            "instead (each holds its own jobs, model or claim loop)",
            file=sys.stderr,
        )
        return 2
    try:
        serve = _serve_function(args.service, args.workers)
    except ModuleNotFoundError as exc:  # an image built without this service's extra
        print(
            f"error: {args.service} needs {exc.name}, which is not installed here: "
            f"install transcription-service[{args.service}]",
            file=sys.stderr,
        )
        return 2
    serve(args.host, args.port)
    return 0


def _serve_function(service: str, workers: int = 1) -> Callable[[str, int], None]:
    """The ``serve`` of a service; only the enqueue API runs several worker processes."""
    if service == "enqueue":
        from enqueue_service.app import serve as serve_enqueue

        return functools.partial(serve_enqueue, workers=workers)
    if service == "orchestrator":
        from orchestrator_service.app import serve as serve_orchestrator

        return serve_orchestrator
    if service == "transcriber":
        from transcriber_service.app import serve as serve_transcriber

        return serve_transcriber
    from model_server.app import serve as serve_model_server

    return serve_model_server


def cmd_run(args: argparse.Namespace) -> int:
    """All four services on this machine, each in its own process (the transcriber in
    ``--transcribers`` of them)."""
    from transcription_core import migrate

    base = args.port_base
    ports = dict(zip(SERVICES, range(base, base + 4), strict=True))
    # More transcriber processes after the model server's port: each reports its own
    # address and slots, and the orchestrator triggers the one that has room.
    servers = list(ports.items())
    servers += [("transcriber", base + 3 + n) for n in range(1, args.transcribers)]
    env = {**os.environ, **run_environment(args.host, base)}
    os.environ.update(env)
    url = database_url()
    migrate.upgrade(url)
    if not args.no_tenant:
        ensure_local_tenant()
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, port in servers:
        cmd = [
            sys.executable,
            "-m",
            "transcription_cli",
            "serve",
            name,
            "--host",
            args.host,
            "--port",
            str(port),
        ]
        procs.append(subprocess.Popen(cmd, env=env))
        print(f"{name:<13} http://{args.host}:{port}", flush=True)
    print(f"database      {redacted(url)}\nCtrl-C stops them all.", flush=True)
    code = 0
    while not stopping:
        for proc in procs:
            if proc.poll() is not None:
                print(f"a service exited with {proc.returncode}; stopping", file=sys.stderr)
                code = proc.returncode or 1
                stopping = True
        time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return code
