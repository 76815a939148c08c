"""``transcription limit``: MAX_CONCURRENT_TRANSCRIPTION_JOBS at run time, without a redeploy.

``set N`` (N at least 1) overrides the environment's value; ``pause`` stops the dispatch of
new jobs (the override becomes 0: queued jobs wait, and so the transcribers' scaler scales
them down) and ``resume``
puts back what was in force before the pause; ``reset`` removes any override. ``show``
prints the value in force and where it comes from. The orchestrator reads the override at
every round.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_cli.operations import _print_json, _with_db
from transcription_core import repository as repo

NAME = "MAX_CONCURRENT_TRANSCRIPTION_JOBS"


def add_parser(sub: Any) -> None:
    """The ``limit`` command and its actions, on the main parser's subparsers."""
    limit = sub.add_parser("limit", help=f"{NAME} at run time, without a redeploy")
    lsub = limit.add_subparsers(dest="limit_command", required=True, metavar="ACTION")
    p = lsub.add_parser("show", help="the value in force and where it comes from")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = lsub.add_parser("set", help="override the limit; the orchestrator applies it next round")
    p.add_argument(
        "value", type=at_least_one, help="jobs TRIGGERED or PROCESSING at most (1 or more)"
    )
    lsub.add_parser(
        "pause",
        help="dispatch no new job (the limit becomes 0): queued jobs wait until `limit resume`",
    )
    lsub.add_parser("resume", help="end a pause: the limit in force before it applies again")
    lsub.add_parser("reset", help="remove the override (and any pause): the environment's value")
    for action in lsub.choices.values():
        action.add_argument(
            "--actor",
            default=os.environ.get("USER", "operator"),
            help="who changes it, for the record (default: $USER)",
        )
        action.set_defaults(func=cmd_limit)


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"the limit must be at least 1 (got {value}); to stop dispatching new jobs, "
            "run `transcription limit pause`"
        )
    return value


def configured() -> int:
    """The environment's value: what the orchestrator uses without an override."""
    from orchestrator_service.settings import OrchestratorSettings

    return OrchestratorSettings().max_concurrent_transcription_jobs


def cmd_limit(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        actor = f"operator:{args.actor}"
        action = args.limit_command
        if action == "show":
            return await _show(conn, args.json)
        current = await repo.get_runtime_setting(conn, repo.LIMIT_SETTING)
        paused = current is not None and _int(current) == 0
        if action == "set":
            await repo.set_runtime_setting(conn, repo.LIMIT_SETTING, str(args.value), actor)
            await repo.delete_runtime_setting(conn, repo.LIMIT_BEFORE_PAUSE_SETTING)
            print(f"{NAME} is now {args.value} (from the orchestrator's next round)")
        elif action == "pause":
            if paused:
                print("already paused: no new job is dispatched")
                return 0
            if current is not None:
                await repo.set_runtime_setting(
                    conn, repo.LIMIT_BEFORE_PAUSE_SETTING, current, actor
                )
            await repo.set_runtime_setting(conn, repo.LIMIT_SETTING, "0", actor)
            print(
                "paused: no new job is dispatched from the orchestrator's next round. "
                "`transcription limit resume` ends the pause."
            )
        elif action == "resume":
            if not paused:
                print(f"not paused: {NAME} stays as it is (`transcription limit show`)")
                return 0
            before = await repo.get_runtime_setting(conn, repo.LIMIT_BEFORE_PAUSE_SETTING)
            await repo.delete_runtime_setting(conn, repo.LIMIT_BEFORE_PAUSE_SETTING)
            if before is None:
                await repo.delete_runtime_setting(conn, repo.LIMIT_SETTING)
                print(f"resumed: {NAME} is the environment's {configured()} again")
            else:
                await repo.set_runtime_setting(conn, repo.LIMIT_SETTING, before, actor)
                print(f"resumed: {NAME} is the override {before} again")
        else:
            await repo.delete_runtime_setting(conn, repo.LIMIT_SETTING)
            await repo.delete_runtime_setting(conn, repo.LIMIT_BEFORE_PAUSE_SETTING)
            print(f"{NAME} override removed: the environment's {configured()} applies")
        return 0

    return _with_db(work, write=args.limit_command != "show")


async def _show(conn: AsyncConnection, as_json: bool) -> int:
    environment = configured()
    override = await repo.runtime_setting(conn, repo.LIMIT_SETTING)
    value = None if override is None else _int(override.value)
    if override is None or value is None:
        in_force, source = environment, "environment"
    else:
        in_force, source = value, "override"
    if as_json:
        _print_json(
            {
                "in_force": in_force,
                "source": source,
                "paused": in_force == 0,
                "environment": environment,
                "override": value,
                "override_set_by": override.updated_by if override else None,
                "override_set_at": override.updated_at if override else None,
            }
        )
        return 0
    if source == "environment":
        if override is not None:
            print(f"ignored override {override.value!r}: not a whole number", file=sys.stderr)
        print(f"{in_force}  (the environment's {NAME}; no override)")
        return 0
    assert override is not None
    when = f"{override.updated_at:%Y-%m-%d %H:%M:%S} UTC"
    origin = f"override set by {override.updated_by} at {when}; the environment says {environment}"
    if in_force == 0:
        print(f"0  PAUSED: no new job is dispatched ({origin}; `limit resume` ends it)")
    else:
        print(f"{in_force}  ({origin})")
    return 0


def _int(text: str) -> int | None:
    try:
        return max(int(text), 0)
    except ValueError:
        return None
