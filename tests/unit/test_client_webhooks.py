"""The client's ``verify_webhook`` against messages signed by the ``standardwebhooks``
package (the reference implementation) and by the service's own signer."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from transcriber_service.webhooks import message_body, sign
from transcription_client import JobStatus, WebhookVerificationError, verify_webhook

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
OTHER = "whsec_" + base64.b64encode(os.urandom(32)).decode()
JOB = {
    "id": "job-1",
    "status": "SUCCEEDED",
    "external_id": "post-1",
    "media_url": "https://bucket.example.com/a.mp4",
    "webhook_url": "https://api.example.com/hooks",
    "language": None,
    "metadata": {"k": "v"},
    "attempts": 1,
    "failure_reason": None,
    "failure_detail": None,
    "created_at": "2026-11-24T10:00:00Z",
    "updated_at": "2026-11-24T10:01:00Z",
    "completed_at": "2026-11-24T10:01:00Z",
    "word_timestamps": True,  # a field this client does not name: kept in raw
    "transcript": {
        "text": "And so my fellow Americans",
        "language": "en",
        "language_probability": 0.98,
        "duration": 11.0,
        "model": "tiny.en",
        "segments": [
            {
                "id": 0,
                "start": 0.0,
                "end": 10.6,
                "text": "And so my fellow Americans",
                "words": [{"word": " And", "start": 0.0, "end": 0.4, "probability": 0.9}],
                "speaker": 1,
            }
        ],
    },
}
BODY = message_body("transcription.succeeded", JOB)


def signed(secret: str = SECRET, body: bytes = BODY, at: int | None = None) -> dict[str, str]:
    """Headers of a message signed by the standardwebhooks package."""
    timestamp = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    signature = Webhook(secret).sign("msg_1", timestamp, body.decode())
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }


def test_a_message_signed_by_standardwebhooks_verifies_and_reads_as_the_typed_event() -> None:
    event = verify_webhook(signed(), BODY, SECRET)
    assert event.type == "transcription.succeeded" and event.webhook_id == "msg_1"
    assert event.timestamp.tzinfo is not None
    job = event.job
    assert job.id == "job-1" and job.status is JobStatus.SUCCEEDED and job.terminal
    assert job.metadata == {"k": "v"} and job.raw["word_timestamps"] is True
    assert job.transcript is not None and job.transcript.model == "tiny.en"
    (segment,) = job.transcript.segments
    assert segment.speaker == 1 and segment.channel is None
    assert segment.words is not None and segment.words[0].word == " And"


def test_the_services_own_signature_verifies_with_standardwebhooks_and_the_client() -> None:
    at = int(time.time())
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(at),
        "webhook-signature": sign(SECRET, "msg_2", at, BODY),
    }
    Webhook(SECRET).verify(BODY, headers)
    assert verify_webhook(headers, BODY, SECRET).webhook_id == "msg_2"


def test_header_names_in_any_case_and_a_str_body_verify() -> None:
    headers = {name.title(): value for name, value in signed().items()}
    assert verify_webhook(headers, BODY.decode(), SECRET).job.id == "job-1"


def test_one_matching_signature_of_several_is_enough() -> None:
    headers = signed(SECRET)
    other = signed(OTHER)["webhook-signature"]
    for both in (
        f"{other} {headers['webhook-signature']}",
        f"{headers['webhook-signature']} {other}",
    ):
        assert verify_webhook({**headers, "webhook-signature": both}, BODY, SECRET)


def test_other_versions_and_garbage_among_the_signatures_are_skipped() -> None:
    headers = signed()
    noise = "v1a,c2lnbmF0dXJl v2,abc v1,!!notbase64!! justtext"
    headers["webhook-signature"] = f"{noise} {headers['webhook-signature']}"
    assert verify_webhook(headers, BODY, SECRET)


def test_while_rotating_the_receiver_accepts_either_of_its_secrets() -> None:
    assert verify_webhook(signed(OTHER), BODY, [SECRET, OTHER])
    assert verify_webhook(signed(SECRET), BODY, (SECRET, OTHER))
    # A secret without its whsec_ prefix is the same key.
    assert verify_webhook(signed(), BODY, SECRET.removeprefix("whsec_"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, b: (h, b + b" "), "no signature matches"),
        (lambda h, b: ({**h, "webhook-id": "msg_other"}, b), "no signature matches"),
        (lambda h, b: (signed(OTHER), b), "no signature matches"),
        (lambda h, b: ({**h, "webhook-signature": "v1a,abc"}, b), "no signature matches"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "webhook-id"),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
            "webhook-signature",
        ),
        (lambda h, b: ({**h, "webhook-timestamp": "12.5"}, b), "unix seconds"),
        (lambda h, b: ({**h, "webhook-timestamp": "١٢٣"}, b), "unix seconds"),
        (lambda h, b: ({**h, "webhook-timestamp": "9" * 5000}, b), "unix seconds"),
        (lambda h, b: (signed(at=int(time.time()) - 301), b), "too old"),
        (lambda h, b: (signed(at=int(time.time()) + 301), b), "future"),
    ],
    ids=[
        "body changed",
        "id changed",
        "other secret",
        "no v1 signature",
        "no id",
        "no signature",
        "fractional timestamp",
        "non-ascii digits",
        "thousands of digits",
        "too old",
        "too new",
    ],
)
def test_a_message_that_does_not_verify_is_refused(change, message: str) -> None:
    headers, body = change(signed(), BODY)
    with pytest.raises(WebhookVerificationError, match=message):
        verify_webhook(headers, body, SECRET)


def test_the_tolerance_is_the_callers() -> None:
    old = int(time.time()) - 3600
    headers = signed(at=old)
    assert verify_webhook(headers, BODY, SECRET, tolerance=7200)
    assert verify_webhook(headers, BODY, SECRET, now=old + 10)


def test_a_signed_body_that_is_not_a_json_object_is_refused() -> None:
    for body in (b"not json", b"[1, 2]"):
        with pytest.raises(WebhookVerificationError, match="JSON"):
            verify_webhook(signed(body=body), body, SECRET)


def test_a_secret_that_is_not_base64_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        verify_webhook(signed(), BODY, "whsec_not base64!")
    with pytest.raises(ValueError, match="empty"):
        verify_webhook(signed(), BODY, "whsec_")
    with pytest.raises(ValueError, match="no webhook secret"):
        verify_webhook(signed(), BODY, [])


def test_the_event_keeps_the_whole_payload() -> None:
    event = verify_webhook(signed(), BODY, SECRET)
    assert event.raw == json.loads(BODY)


def test_labels_and_fields_the_client_does_not_know_yet_still_read() -> None:
    segment = {
        **JOB["transcript"]["segments"][0],
        "speaker": "SPEAKER_00",
        "channel": 1,
        "avg_logprob": -0.2,
    }
    job = {**JOB, "transcript": {**JOB["transcript"], "segments": [segment], "new": 1}}
    body = message_body("transcription.succeeded", job)
    event = verify_webhook(signed(body=body), body, SECRET)
    assert event.job.transcript is not None
    (read,) = event.job.transcript.segments
    assert read.speaker == "SPEAKER_00" and read.channel == 1
    assert read.raw["avg_logprob"] == -0.2 and event.job.transcript.raw["new"] == 1
