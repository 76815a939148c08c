"""``transcription tenants keys | rotate-key | revoke-key | rotate-webhook-secret``: a
tenant's credentials rotated without a gap, and a leaked one stopped.

An API key rotation adds a key (printed once); the old keys keep working until revoked,
so the client switches first and the operator revokes after (``--revoke-others`` revokes
them at once, for a leaked key). A revoked key is refused from the next lookup: at most
``API_KEY_CACHE_SECONDS`` later on an enqueue replica that had it cached. A webhook secret
rotation signs every message with the new and the old secret (two signatures in
``webhook-signature``) for ``--overlap``, so the receiver can switch at any time in it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_cli.operations import _print_json, _with_db, parse_duration
from transcription_core import repository as repo

#: How long a rotated webhook secret signs too, unless --overlap says.
DEFAULT_OVERLAP = "24h"


def add_parsers(tsub: Any) -> None:
    """The credential actions, on ``tenants``' subparsers."""
    p = tsub.add_parser("keys", help="a tenant's API keys: first characters, created, revoked")
    p.add_argument("name", help="the tenant")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_keys)

    p = tsub.add_parser(
        "rotate-key",
        help="add an API key (printed once); the old ones work until revoked",
    )
    p.add_argument("name", help="the tenant")
    p.add_argument(
        "--revoke-others",
        action="store_true",
        help="revoke every other key of the tenant at once (a leaked key)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_rotate_key)

    p = tsub.add_parser("revoke-key", help="revoke one API key, named as `tenants keys` lists it")
    p.add_argument("name", help="the tenant")
    p.add_argument("key", help="the key's first 12 characters (tsk_...), or the whole key")
    p.set_defaults(func=cmd_revoke_key)

    p = tsub.add_parser(
        "rotate-webhook-secret",
        help="a new webhook secret (printed once); the old one signs too during --overlap",
    )
    p.add_argument("name", help="the tenant")
    p.add_argument(
        "--overlap",
        type=_overlap,
        default=parse_duration(DEFAULT_OVERLAP),
        help="how long each webhook carries a signature with the old secret too, such as "
        f"1h or 7d; 0 stops the old secret at once (default {DEFAULT_OVERLAP})",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_rotate_webhook_secret)


def _overlap(text: str) -> timedelta:
    return timedelta(0) if text.strip() == "0" else parse_duration(text)


def _no_tenant(name: str) -> int:
    print(f"error: no tenant {name!r} (`transcription tenants list`)", file=sys.stderr)
    return 1


def cmd_keys(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        if not await repo.tenant_exists(conn, args.name):
            return _no_tenant(args.name)
        keys = await repo.list_api_keys(conn, args.name)
        if args.json:
            _print_json(
                {
                    "tenant": args.name,
                    "keys": [
                        {"prefix": k.prefix, "created_at": k.created_at, "revoked_at": k.revoked_at}
                        for k in keys
                    ],
                }
            )
            return 0
        for k in keys:
            state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M:%S}" if k.revoked_at else "active"
            print(f"{k.prefix}...  created {k.created_at:%Y-%m-%d %H:%M:%S}  {state}")
        if not keys:
            print("no keys")
        return 0

    return _with_db(work)


def cmd_rotate_key(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        if not await repo.tenant_exists(conn, args.name):
            return _no_tenant(args.name)
        api_key = await repo.add_api_key(conn, args.name)
        revoked = 0
        if args.revoke_others:
            revoked = await repo.revoke_api_keys(conn, args.name, keep=api_key)
        if args.json:
            _print_json({"tenant": args.name, "api_key": api_key, "revoked": revoked})
            return 0
        print(f"tenant:      {args.name}")
        print(f"new api key: {api_key}")
        print("Store it now: it is not shown again.")
        if args.revoke_others:
            print(f"revoked {revoked} other key(s): refused within API_KEY_CACHE_SECONDS")
        else:
            print(
                "The other keys still work: once the client uses the new one, revoke them "
                f"(`transcription tenants revoke-key {args.name} tsk_...`)."
            )
        return 0

    return _with_db(work, write=True)


def cmd_revoke_key(args: argparse.Namespace) -> int:
    prefix_chars = repo.KEY_PREFIX_CHARS
    if not args.key.startswith(repo.API_KEY_PREFIX) or len(args.key) < prefix_chars:
        print(
            f"error: name the key by its first {prefix_chars} characters as "
            f"`transcription tenants keys {args.name}` lists them, or give the whole key",
            file=sys.stderr,
        )
        return 2

    async def work(conn: AsyncConnection) -> int:
        if not await repo.tenant_exists(conn, args.name):
            return _no_tenant(args.name)
        revoked = await repo.revoke_api_keys(conn, args.name, prefix=args.key)
        if revoked == 0:
            print(
                f"error: {args.name} has no active key {args.key[:prefix_chars]}...",
                file=sys.stderr,
            )
            return 1
        active = [k for k in await repo.list_api_keys(conn, args.name) if k.revoked_at is None]
        print(
            f"revoked {revoked} key(s) of {args.name}: refused within API_KEY_CACHE_SECONDS; "
            f"{len(active)} active key(s) left"
        )
        if not active:
            print(f"the tenant has no key now: `transcription tenants rotate-key {args.name}`")
        return 0

    return _with_db(work, write=True)


def cmd_rotate_webhook_secret(args: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection) -> int:
        rotated = await repo.rotate_webhook_secret(conn, args.name, args.overlap)
        if rotated is None:
            return _no_tenant(args.name)
        until = rotated.previous_valid_until
        if args.json:
            _print_json(
                {
                    "tenant": args.name,
                    "webhook_secret": rotated.webhook_secret,
                    "previous_secret_signs_until": until,
                }
            )
            return 0
        print(f"tenant:             {args.name}")
        print(f"new webhook secret: {rotated.webhook_secret}")
        print("Store it now: it is not shown again.")
        if until is None:
            print("The old secret signs no more webhook.")
        else:
            print(
                f"Until {until:%Y-%m-%d %H:%M:%S} UTC each webhook carries two signatures, "
                "with the new and the old secret: the receiver verifies with either."
            )
        return 0

    return _with_db(work, write=True)
