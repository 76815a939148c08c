"""``transcription``: the operator's command line, and what every image runs.

``main`` parses the arguments and calls the command: those on the job store are in
:mod:`transcription_cli.operations`, ``serve``, ``run`` and ``config`` in
:mod:`transcription_cli.services`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from transcription_cli import credentials, limit
from transcription_cli.operations import (
    cmd_jobs_redeliver,
    cmd_jobs_show,
    cmd_migrate,
    cmd_purge,
    cmd_queue_depth,
    cmd_requeue,
    cmd_stats,
    cmd_tenants_create,
    cmd_tenants_list,
    failure_reason,
    parse_before,
    parse_duration,
    positive,
)
from transcription_cli.services import SERVICES, cmd_config, cmd_run, cmd_serve


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

    tenants = sub.add_parser(
        "tenants", help="manage tenants, their API keys and webhook secrets (rotation too)"
    )
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
    credentials.add_parsers(tsub)

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
        "--reason",
        type=failure_reason,
        action="append",
        help="only this failure_reason (repeatable)",
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

    p = sub.add_parser(
        "purge",
        help="delete finished jobs, with their events, chunks and transcripts, finished "
        "before a time",
    )
    p.add_argument(
        "--before",
        type=parse_before,
        required=True,
        help="a date or time (2026-10-01, 2026-10-01T12:00Z; UTC unless it says) or a "
        "duration ago (30d)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    p.add_argument(
        "--batch-size", type=positive, default=500, help="jobs per transaction (default 500)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_purge)

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

    limit.add_parser(sub)

    p = sub.add_parser(
        "config",
        help="the settings each service would run with here (`transcription serve`), and "
        "where `transcription run` changes one, its value there",
    )
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print every setting with its default and meaning, as a table",
    )
    p.add_argument(
        "--port-base", type=int, default=8000, help="as for `transcription run` (default 8000)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="as for `transcription run` (default 127.0.0.1)"
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
        "--transcribers",
        type=int,
        default=1,
        help="transcriber processes (WORKER_MAX_JOBS slots each); the first on port +2, "
        "the others from +4",
    )
    p.add_argument(
        "--no-tenant",
        action="store_true",
        help="do not create the 'local' tenant when there is none",
    )
    p.set_defaults(func=cmd_run)
    return parser


#: A reader that stopped reading (``transcription jobs show ID --json | head``): the exit
#: status a shell gives a command killed by SIGPIPE.
BROKEN_PIPE_EXIT = 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader is gone: end quietly, as a Unix tool does, not with a traceback. What
        # is still buffered goes to /dev/null, so the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
    return code


if __name__ == "__main__":
    sys.exit(main())
