"""Verifying the service's webhooks (the Standard Webhooks scheme) and reading them.

The service signs each message with the tenant's secret (``whsec_`` + base64): the
``webhook-signature`` header holds ``v1,`` + base64 HMAC-SHA256 of
``{webhook-id}.{webhook-timestamp}.{body}``, and may hold several such signatures,
separated by spaces (while a secret is rotated, one per secret). A message verifies when
one of them matches one of the secrets given and its timestamp is within ``tolerance``
seconds of now (either way: an old message replayed is refused).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence

from transcription_client.errors import WebhookVerificationError
from transcription_client.models import WebhookEvent

#: The Standard Webhooks default: five minutes.
DEFAULT_TOLERANCE_SECONDS = 300
SECRET_PREFIX = "whsec_"


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> WebhookEvent:
    """The event in a webhook request, once its signature and timestamp verify.

    ``headers`` are the request's (any mapping; names in any case), ``body`` its raw
    bytes, exactly as received (not re-encoded JSON). ``secret`` is the tenant's webhook
    secret, or several (old and new, while rotating). Raises
    :class:`~transcription_client.errors.WebhookVerificationError` when the message does
    not verify: answer it 4xx and do not act on it.
    """
    raw_body = body.encode() if isinstance(body, str) else bytes(body)
    lower = {name.lower(): value for name, value in headers.items()}
    message_id = _header(lower, "webhook-id")
    timestamp = _timestamp(_header(lower, "webhook-timestamp"), tolerance, now)
    signatures = _header(lower, "webhook-signature")
    keys = [_key(s) for s in ([secret] if isinstance(secret, str) else secret)]
    if not keys:
        raise ValueError("no webhook secret given")
    signed = f"{message_id}.{timestamp}.".encode() + raw_body
    expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in keys]
    if not any(hmac.compare_digest(given, want) for given in _v1(signatures) for want in expected):
        raise WebhookVerificationError("no signature matches")
    try:
        payload = json.loads(raw_body)
    except ValueError as exc:
        raise WebhookVerificationError("the signed body is not JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookVerificationError("the signed body is not a JSON object")
    return WebhookEvent.from_json(payload, webhook_id=message_id)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise WebhookVerificationError(f"the {name} header is missing")
    return value


def _timestamp(value: str, tolerance: float, now: float | None) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise WebhookVerificationError(f"webhook-timestamp is not unix seconds: {value[:32]!r}")
    timestamp = int(value)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("the message is too old (webhook-timestamp)")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("the message is from the future (webhook-timestamp)")
    return timestamp


def _key(secret: str) -> bytes:
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret is empty: it would verify anyone's signature")
    return key


def _v1(header: str) -> list[bytes]:
    """The ``v1`` signatures of a ``webhook-signature`` header; others are skipped."""
    found = []
    for part in header.split():
        version, _, signature = part.partition(",")
        if version != "v1":
            continue
        try:
            found.append(base64.b64decode(signature, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found
