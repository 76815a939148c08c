"""``transcription``: the operator's command line.

Every command reads ``DATABASE_URL`` (unset: the SQLite file ``transcription.db`` in the
working directory). Read-only commands take ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic_settings import BaseSettings
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core import repository as repo
from transcription_core.db import create_engine
from transcription_core.errors import TenantExists
from transcription_core.models import utcnow
from transcription_core.settings import DatabaseSettings
from transcription_core.status import FailureReason

SERVICES = ("enqueue", "orchestrator", "transcriber", "model-server")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``2d``, ``1w``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration like 30m, 1h or 2d: {text!r}")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def _reason(text: str) -> str:
    try:
        return FailureReason(text.upper()).value
    except ValueError:
        choices = ", ".join(r.value for r in FailureReason)
        raise argparse.ArgumentTypeError(f"unknown reason {text!r}; one of {choices}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=_json_default))


def _database_url() -> str:
    return DatabaseSettings().database_url


def _with_db(work: Callable[[AsyncConnection], Awaitable[int]], write: bool = False) -> int:
    async def main() -> int:
        engine = create_engine(_database_url(), "transcription-cli", 1)
        try:
            ctx = engine.begin() if write else engine.connect()
            async with ctx as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _age(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = int((utcnow() - when).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


# --- commands -------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from transcription_core import migrate

    url = _database_url()
    migrate.upgrade(url, args.revision)
    print(f"database at revision {args.revision}: {_redacted(url)}")
    return 0


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_tenants_create(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        try:
            new = await repo.create_tenant(conn, args.name)
        except TenantExists as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if args.json:
            _print_json(
                {"tenant": new.tenant, "api_key": new.api_key, "webhook_secret": new.webhook_secret}
            )
        else:
            print(f"tenant:         {new.tenant}")
            print(f"api key:        {new.api_key}")
            print(f"webhook secret: {new.webhook_secret}")
            print("Store both now: they are not shown again.")
        return 0

    return _with_db(work, write=True)


def cmd_tenants_list(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        names = await repo.list_tenants(conn)
        if args.json:
            _print_json({"tenants": names})
        else:
            print("\n".join(names) if names else "no tenants")
        return 0

    return _with_db(work)


def cmd_queue_depth(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        depth = await repo.queue_depth(conn)
        age = (utcnow() - depth.oldest_queued_at).total_seconds() if depth.oldest_queued_at else 0
        if args.json:
            _print_json(
                {
                    "queued": depth.queued,
                    "oldest_queued_at": depth.oldest_queued_at,
                    "oldest_queued_age_seconds": round(max(age, 0.0), 3),
                    "in_flight": depth.in_flight,
                    "waiting_retry": depth.waiting_retry,
                }
            )
        else:
            print(f"queued:        {depth.queued}")
            print(f"oldest queued: {_age(depth.oldest_queued_at)}")
            print(f"in flight:     {depth.in_flight}")
            print(f"waiting retry: {depth.waiting_retry}")
        return 0

    return _with_db(work)


def cmd_stats(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        result = await repo.stats(conn, utcnow() - args.since)
        if args.json:
            _print_json(
                {
                    "since": result.since,
                    "by_status": result.by_status,
                    "by_failure_reason": result.by_failure_reason,
                }
            )
            return 0
        print(f"jobs created or changed since {result.since:%Y-%m-%d %H:%M:%S} UTC")
        print("by status:")
        for status, count in sorted(result.by_status.items()):
            print(f"  {status:<14} {count}")
        print("by failure_reason:")
        for reason, count in sorted(result.by_failure_reason.items()):
            print(f"  {reason:<20} {count}")
        if not result.by_failure_reason:
            print("  (none)")
        return 0

    return _with_db(work)


def cmd_requeue(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        candidates = await repo.requeue_candidates(
            conn,
            since=utcnow() - args.since,
            reasons=args.reason,
            include_download_errors=args.include_download_errors,
            limit=args.limit,
        )
        moved = []
        if not args.dry_run:
            for job in candidates:
                if await repo.requeue(conn, job, actor=f"operator:{args.actor}"):
                    moved.append(job)
        listed = candidates if args.dry_run else moved
        if args.json:
            _print_json(
                {
                    "dry_run": args.dry_run,
                    "count": len(listed),
                    "jobs": [
                        {
                            "id": j["id"],
                            "tenant": j["tenant"],
                            "failure_reason": j["failure_reason"],
                        }
                        for j in listed
                    ],
                }
            )
            return 0
        verb = "would requeue" if args.dry_run else "requeued"
        for job in listed:
            print(f"{job['id']}  {job['tenant']:<20} {job['failure_reason']}")
        print(f"{verb} {len(listed)} job(s)")
        return 0

    return _with_db(work, write=not args.dry_run)


def cmd_jobs_show(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        job = await repo.get_job(conn, args.job_id)
        if job is None:
            print(f"error: no job {args.job_id}", file=sys.stderr)
            return 1
        events = await repo.job_events(conn, args.job_id)
        job_data = {k: v for k, v in job.items() if k not in ("request_hash",)}
        if args.json:
            _print_json({"job": job_data, "events": [dict(e) for e in events]})
            return 0
        for key, value in job_data.items():
            print(f"{key:<20} {value}")
        print("events:")
        for e in events:
            reason = f" {e['reason']}" if e["reason"] else ""
            detail = f" ({e['detail']})" if e["detail"] else ""
            print(
                f"  {e['created_at']:%Y-%m-%d %H:%M:%S}  {e['from_status'] or '-':>11} -> "
                f"{e['to_status']:<11} attempt {e['attempt']}  by {e['actor']}{reason}{detail}"
            )
        return 0

    return _with_db(work)


def cmd_jobs_redeliver(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        job = await repo.get_job(conn, args.job_id)
        if job is None or job["status"] not in ("SUCCEEDED", "PERMAFAILED"):
            state = "no such job" if job is None else f"the job is {job['status']}"
            print(f"error: {state}; only a finished job can be redelivered", file=sys.stderr)
            return 1
        moved = await repo.request_redelivery(conn, job, actor=f"operator:{args.actor}")
        if moved is None:
            print("error: the job changed meanwhile; try again", file=sys.stderr)
            return 1
        print(
            f"{args.job_id}: {moved['webhook_event']} will be sent again "
            f"(webhook-id {moved['webhook_message_id']})"
        )
        return 0

    return _with_db(work, write=True)


def cmd_limit(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        actor = f"operator:{args.actor}"
        if args.limit_command == "set":
            await repo.set_runtime_setting(conn, repo.LIMIT_SETTING, str(args.value), actor)
            print(f"MAX_CONCURRENT_TRANSCRIPTION_JOBS is now {args.value} (from the next round)")
        elif args.limit_command == "reset":
            await repo.delete_runtime_setting(conn, repo.LIMIT_SETTING)
            print("MAX_CONCURRENT_TRANSCRIPTION_JOBS override removed: the environment's value")
        else:
            value = await repo.get_runtime_setting(conn, repo.LIMIT_SETTING)
            if args.json:
                _print_json({"override": None if value is None else int(value)})
            else:
                print(value if value is not None else "no override: the environment's value")
        return 0

    return _with_db(work, write=args.limit_command != "show")


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


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_table())
        return 0
    for service, cls in service_settings().items():
        settings = cls()
        print(f"[{service}]")
        for name in cls.model_fields:
            value = getattr(settings, name)
            if name == "database_url":
                value = _redacted(str(value))
            print(f"  {name.upper()}={value}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.service == "enqueue":
        from enqueue_service.app import serve as serve_enqueue

        serve_enqueue(args.host, args.port, workers=args.workers)
        return 0
    if args.workers != 1:
        print(
            f"--workers is for the enqueue API only: run more {args.service} replicas "
            "instead (each holds its own jobs, model or claim loop)",
            file=sys.stderr,
        )
        return 2
    serve = _serve_function(args.service)
    serve(args.host, args.port)
    return 0


def _serve_function(service: str) -> Callable[[str, int], None]:
    """The ``serve`` of a service that runs as one process (all but the enqueue API)."""
    if service == "orchestrator":
        from orchestrator_service.app import serve as serve_orchestrator

        return serve_orchestrator
    if service == "transcriber":
        from transcriber_service.app import serve as serve_transcriber

        return serve_transcriber
    from model_server.app import serve as serve_model_server

    return serve_model_server


def cmd_run(args: argparse.Namespace) -> int:
    """All four services on this machine, each in its own process."""
    from transcription_core import migrate

    base = args.port_base
    ports = dict(zip(SERVICES, range(base, base + 4), strict=True))
    env = dict(os.environ)
    env.setdefault("ALLOW_PRIVATE_URLS", "true")
    env["TRANSCRIBER_URL"] = f"http://{args.host}:{ports['transcriber']}"
    env["MODEL_SERVER_URL"] = f"http://{args.host}:{ports['model-server']}"
    os.environ.update(env)
    url = _database_url()
    migrate.upgrade(url)
    if not args.no_tenant:
        _ensure_local_tenant()
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, port in ports.items():
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
    print(f"database      {_redacted(url)}\nCtrl-C stops all four.", flush=True)
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


def _ensure_local_tenant() -> None:
    async def work(conn: AsyncConnection) -> int:
        if await repo.list_tenants(conn):
            return 0
        new = await repo.create_tenant(conn, "local")
        print("created tenant 'local' for this local run:")
        print(f"  api key:        {new.api_key}")
        print(f"  webhook secret: {new.webhook_secret}")
        return 0

    _with_db(work, write=True)


# --- the parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transcription",
        description="Operate the transcription service. Reads DATABASE_URL "
        "(default: the SQLite file transcription.db in the working directory).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="bring the database schema to the current version")
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p.set_defaults(func=cmd_migrate)

    tenants = sub.add_parser("tenants", help="manage tenants and their API keys")
    tsub = tenants.add_subparsers(dest="tenants_command", required=True, metavar="ACTION")
    p = tsub.add_parser(
        "create", help="create a tenant; prints its API key and webhook secret once"
    )
    p.add_argument("name", help="the tenant's namespace, such as org-k9p2lbe")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_tenants_create)
    p = tsub.add_parser("list", help="list tenants")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_tenants_list)

    p = sub.add_parser("queue-depth", help="QUEUED jobs and the age of the oldest")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_queue_depth)

    p = sub.add_parser("stats", help="jobs by status and by failure_reason")
    p.add_argument(
        "--since",
        type=parse_duration,
        default=parse_duration("1h"),
        help="window such as 30m, 1h, 2d (default 1h)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "requeue",
        help="PERMAFAILED jobs back to QUEUED (403/404 download failures only if asked)",
    )
    p.add_argument(
        "--since",
        type=parse_duration,
        required=True,
        help="jobs that ended within this window, such as 1h",
    )
    p.add_argument(
        "--reason", type=_reason, action="append", help="only this failure_reason (repeatable)"
    )
    p.add_argument(
        "--include-download-errors",
        action="store_true",
        help="also requeue DOWNLOAD_FORBIDDEN and DOWNLOAD_NOT_FOUND jobs",
    )
    p.add_argument("--limit", type=int, help="requeue at most this many")
    p.add_argument("--dry-run", action="store_true", help="show what would move; change nothing")
    p.add_argument(
        "--actor",
        default=os.environ.get("USER", "operator"),
        help="who is requeueing, for the event log (default: $USER)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_requeue)

    jobs = sub.add_parser("jobs", help="inspect jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    p = jsub.add_parser("show", help="a job and its whole event history")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_jobs_show)

    p = jsub.add_parser("redeliver", help="send a finished job's webhook again (same webhook-id)")
    p.add_argument("job_id")
    p.add_argument(
        "--actor",
        default=os.environ.get("USER", "operator"),
        help="who asks, for the event log (default: $USER)",
    )
    p.set_defaults(func=cmd_jobs_redeliver)

    limit = sub.add_parser(
        "limit", help="MAX_CONCURRENT_TRANSCRIPTION_JOBS at run time, without a redeploy"
    )
    lsub = limit.add_subparsers(dest="limit_command", required=True, metavar="ACTION")
    p = lsub.add_parser("show", help="the override in force, if any")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = lsub.add_parser("set", help="override the limit; the orchestrator applies it next round")
    p.add_argument("value", type=int, help="jobs TRIGGERED or PROCESSING at most")
    p = lsub.add_parser("reset", help="remove the override")
    for action in lsub.choices.values():
        action.add_argument(
            "--actor",
            default=os.environ.get("USER", "operator"),
            help="who changes it, for the record (default: $USER)",
        )
        action.set_defaults(func=cmd_limit)

    p = sub.add_parser("config", help="the settings each service would run with here")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print every setting with its default and meaning, as a table",
    )
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("serve", help="run one service (what a container runs)")
    p.add_argument("service", choices=SERVICES)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8080")),
        help="port (default $PORT or 8080)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="enqueue only: processes sharing the port, up to one per core (default 1; "
        "on Kubernetes scale replicas instead)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "run", help="all four services on this machine, on the embedded database by default"
    )
    p.add_argument(
        "--port-base",
        type=int,
        default=8000,
        help="enqueue on this port, orchestrator +1, transcriber +2, model server +3",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument(
        "--no-tenant",
        action="store_true",
        help="do not create the 'local' tenant when there is none",
    )
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
