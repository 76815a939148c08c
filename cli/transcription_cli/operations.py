"""The operator's commands on the job store: ``migrate``, ``tenants``, ``queue-depth``,
``stats``, ``requeue``, ``purge``, ``jobs`` (``limit`` is in :mod:`transcription_cli.limit`).

Every command reads ``DATABASE_URL`` (unset: the SQLite file ``transcription.db`` in the
working directory). Read-only commands take ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_cli import summary
from transcription_core import repository as repo
from transcription_core.db import create_engine
from transcription_core.errors import TenantExists
from transcription_core.models import utcnow
from transcription_core.repository import retention
from transcription_core.settings import DatabaseSettings
from transcription_core.status import FailureReason, InvalidTransition

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``2d``, ``1w``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration like 30m, 1h or 2d: {text!r}")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def parse_before(text: str) -> datetime:
    """``30d`` (that long ago), or an ISO 8601 date or time (UTC unless it says)."""
    try:
        return utcnow() - parse_duration(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date like 2026-10-01, a time like 2026-10-01T12:00Z or a duration like "
            f"30d: {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return value


def failure_reason(text: str) -> str:
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


def database_url() -> str:
    return DatabaseSettings().database_url


def _with_db(work: Callable[[AsyncConnection], Awaitable[int]], write: bool = False) -> int:
    async def main() -> int:
        engine = create_engine(database_url(), "transcription-cli", 1)
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

    url = database_url()
    migrate.upgrade(url, args.revision)
    print(f"database at revision {args.revision}: {redacted(url)}")
    return 0


def redacted(url: str) -> str:
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
        oldest = depth.oldest_queued_at
        # No queued job has no age: null, as oldest_queued_at is (0 would read "just queued").
        age = None if oldest is None else round(max((utcnow() - oldest).total_seconds(), 0.0), 3)
        if args.json:
            _print_json(
                {
                    "queued": depth.queued,
                    "oldest_queued_at": depth.oldest_queued_at,
                    "oldest_queued_age_seconds": age,
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
                        {"id": j.id, "tenant": j.tenant, "failure_reason": j.failure_reason}
                        for j in listed
                    ],
                }
            )
            return 0
        verb = "would requeue" if args.dry_run else "requeued"
        for job in listed:
            print(f"{job.id}  {job.tenant:<20} {job.failure_reason}")
        print(f"{verb} {len(listed)} job(s)")
        return 0

    return _with_db(work, write=not args.dry_run)


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete finished jobs (and their events, chunks, transcripts) finished before a time."""

    async def main() -> int:
        engine = create_engine(database_url(), "transcription-cli", 1)
        try:
            if args.dry_run:
                async with engine.connect() as conn:
                    count = await retention.count_finished_before(conn, args.before)
            else:
                count = await retention.purge(engine, args.before, batch_size=args.batch_size)
        finally:
            await engine.dispose()
        if args.json:
            _print_json({"dry_run": args.dry_run, "before": args.before, "count": count})
        else:
            verb = "would delete" if args.dry_run else "deleted"
            when = f"{args.before:%Y-%m-%d %H:%M:%S} UTC"
            print(f"{verb} {count} finished job(s) (finished before {when})")
        return 0

    return asyncio.run(main())


def cmd_jobs_show(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        job = await repo.get_job(conn, args.job_id)
        if job is None:
            print(f"error: no job {args.job_id}", file=sys.stderr)
            return 1
        events = await repo.job_events(conn, args.job_id)
        job_data = {k: v for k, v in job.columns().items() if k not in ("request_hash",)}
        if args.json:
            _print_json({"job": job_data, "events": [dataclasses.asdict(e) for e in events]})
            return 0
        for key, value in job_data.items():
            shown = summary.webhook_payload(value) if key == "webhook_payload" else value
            print(f"{key:<20} {summary.one_line(shown)}")
        print("events:")
        for e in events:
            reason = f" {e.reason}" if e.reason else ""
            detail = f" ({summary.one_line(e.detail)})" if e.detail else ""
            print(
                f"  {e.created_at:%Y-%m-%d %H:%M:%S}  {e.from_status or '-':>11} -> "
                f"{e.to_status:<11} attempt {e.attempt}  by {e.actor}{reason}{detail}"
            )
        return 0

    return _with_db(work)


def cmd_jobs_redeliver(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        job = await repo.get_job(conn, args.job_id)
        refused = "only a finished job can be redelivered"
        if job is None:
            print(f"error: no such job; {refused}", file=sys.stderr)
            return 1
        try:
            moved = await repo.request_redelivery(conn, job, actor=f"operator:{args.actor}")
        except InvalidTransition:
            print(f"error: the job is {job.status}; {refused}", file=sys.stderr)
            return 1
        if moved is None:
            print("error: the job changed meanwhile; try again", file=sys.stderr)
            return 1
        print(
            f"{args.job_id}: {moved.webhook_event} will be sent again "
            f"(webhook-id {moved.webhook_message_id})"
        )
        return 0

    return _with_db(work, write=True)


def ensure_local_tenant() -> None:
    async def work(conn: AsyncConnection) -> int:
        if await repo.list_tenants(conn):
            return 0
        new = await repo.create_tenant(conn, "local")
        print("created tenant 'local' for this local run:")
        print(f"  api key:        {new.api_key}")
        print(f"  webhook secret: {new.webhook_secret}")
        return 0

    _with_db(work, write=True)
