"""The verdict of a drill, from the database and the webhook receiver's log alone.

What must hold after every drill (each failure is listed by job):

* every job the client got a 200/202 for is in ``jobs`` (none lost), exactly one job per
  Idempotency-Key (no duplicate), and nothing else is there (no phantom);
* every job is terminal, with the status (and ``failure_reason``) its input calls for;
* every SUCCEEDED job has its transcript stored, and the receiver answered 2xx to at
  least one ``transcription.succeeded`` message for it, signed with its tenant's secret,
  whose transcript is the stored one (no transcript lost or altered);
* every PERMAFAILED job had its ``transcription.failed`` message delivered, under one
  ``webhook-id``, with the expected reason;
* no client ever heard both outcomes for one job, and one ``webhook-id`` always carries
  the same content (same type, job, status, reason, transcript), byte for byte; repeats
  of one id are allowed (at-least-once) and counted;
* every signature verifies (``standardwebhooks.Webhook(secret).verify``);
* each job's ``job_events`` form one chain of transitions the status machine allows,
  ending at the job's status.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from faults.peers import Delivery
from faults.stack import TERMINAL, Stack
from transcription_core import repository as repo
from transcription_core.status import JobStatus, can_transition

JFK = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
HOTWORDS = "Then you go into your comfy eye folder again in the comfy eye."
REFERENCES = {"jfk.flac": JFK, "hotwords.mp3": HOTWORDS}
MIN_SIMILARITY = 0.7
SUCCEEDED_EVENT = "transcription.succeeded"
FAILED_EVENT = "transcription.failed"


def words(text: str) -> list[str]:
    cleaned = "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text)
    return cleaned.split()


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(a=words(a), b=words(b)).ratio()


@dataclass
class Verdict:
    jobs: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    transitions: dict[str, int] = field(default_factory=dict)
    #: Triggers refused by a full or unreachable replica (each event may count several).
    refused_triggers: int = 0
    worker_lost: int = 0
    deliveries_total: int = 0
    deliveries_2xx: int = 0
    duplicate_deliveries: int = 0
    jobs_delivered_more_than_once: int = 0
    client_retries: int = 0
    client_answers: dict[str, int] = field(default_factory=dict)
    #: The violations, by kind: each a list of "job: what".
    violations: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def fail(self, kind: str, message: str) -> None:
        self.violations[kind].append(message)

    @property
    def lost_jobs(self) -> int:
        return len(self.violations.get("job lost", []))

    @property
    def lost_transcripts(self) -> int:
        return len(self.violations.get("transcript lost", [])) + len(
            self.violations.get("transcript not delivered", [])
        )

    @property
    def passed(self) -> bool:
        return not any(self.violations.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "by_status": self.by_status,
            "by_reason": self.by_reason,
            "attempts": {str(k): v for k, v in sorted(self.attempts.items())},
            "transitions": self.transitions,
            "refused_triggers": self.refused_triggers,
            "worker_lost_events": self.worker_lost,
            "deliveries_total": self.deliveries_total,
            "deliveries_2xx": self.deliveries_2xx,
            "duplicate_deliveries": self.duplicate_deliveries,
            "jobs_delivered_more_than_once": self.jobs_delivered_more_than_once,
            "lost_jobs": self.lost_jobs,
            "lost_transcripts": self.lost_transcripts,
            "client_retries": self.client_retries,
            "client_answers": self.client_answers,
            "violations": {k: v for k, v in self.violations.items() if v},
            "passed": self.passed,
        }


def _content_key(payload: dict[str, Any]) -> str:
    data = payload.get("data", {})
    return json.dumps(
        [
            payload.get("type"),
            data.get("id"),
            data.get("status"),
            data.get("failure_reason"),
            data.get("transcript"),
        ],
        sort_keys=True,
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def verify(stack: Stack, *, quality: bool = True) -> Verdict:
    v = Verdict()
    jobs = {
        r["id"]: dict(r)
        for r in await stack.query(
            "SELECT id, tenant, status, failure_reason, attempts, external_id FROM jobs"
        )
    }
    transcripts = {
        r["job_id"]: _json(r["content"])
        for r in await stack.query("SELECT job_id, content FROM transcripts")
    }
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in await stack.query(
        "SELECT job_id, from_status, to_status, reason, detail, attempt FROM job_events ORDER BY id"
    ):
        events[r["job_id"]].append(dict(r))

    v.jobs = len(jobs)
    v.by_status = dict(Counter(j["status"] for j in jobs.values()))
    v.by_reason = dict(Counter(j["failure_reason"] for j in jobs.values() if j["failure_reason"]))
    v.attempts = dict(Counter(j["attempts"] for j in jobs.values()))

    # --- the client's view: every accepted job is there, once --------------------------
    answers: Counter[str] = Counter()
    specs = {}
    for sub in stack.submissions:
        answers.update(sub.answers)
        v.client_retries += max(len(sub.answers) - 1, 0)
        if sub.job_id is None:
            v.fail("never accepted", f"{sub.spec.key}: answers {sub.answers}")
            continue
        specs[sub.job_id] = sub.spec
        if sub.job_id not in jobs:
            v.fail("job lost", f"{sub.job_id} ({sub.spec.key}) was accepted but is not stored")
    v.client_answers = dict(answers)
    by_key = Counter(j["external_id"] for j in jobs.values())
    for key, count in by_key.items():
        if count > 1:
            v.fail("duplicate job", f"{count} jobs for Idempotency-Key {key}")
    for job_id, job in jobs.items():
        if job_id not in specs:
            v.fail("phantom job", f"{job_id} ({job['external_id']}) was never accepted")

    # --- the receiver's view ------------------------------------------------------------
    deliveries: list[Delivery] = stack.receiver.deliveries
    v.deliveries_total = len(deliveries)
    ok = [d for d in deliveries if 200 <= d.answered < 300]
    v.deliveries_2xx = len(ok)
    by_id: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        if not d.signature_ok:
            v.fail("bad signature", f"{d.job_id} webhook-id {d.webhook_id}: {d.signature_error}")
        by_id[d.webhook_id].append(d)
    for message_id, group in by_id.items():
        contents = {_content_key(d.payload()) for d in group}
        if len(contents) > 1:
            v.fail(
                "same webhook-id, different content",
                f"{group[0].job_id} webhook-id {message_id}: {len(contents)} versions",
            )
        elif len({d.body for d in group}) > 1:
            # Same content, other bytes (a new timestamp, say): the sender promises the
            # very same body on every retry of one message.
            v.fail(
                "same webhook-id, different body",
                f"{group[0].job_id} webhook-id {message_id}: {len({d.body for d in group})}",
            )
        v.duplicate_deliveries += max(sum(1 for d in group if 200 <= d.answered < 300) - 1, 0)
    delivered_by_job: dict[str, list[Delivery]] = defaultdict(list)
    for d in ok:
        if d.job_id is not None:
            delivered_by_job[d.job_id].append(d)
    v.jobs_delivered_more_than_once = sum(1 for g in delivered_by_job.values() if len(g) > 1)

    # --- each job's end ---------------------------------------------------------------
    for job_id, job in jobs.items():
        spec = specs.get(job_id)
        status, reason = job["status"], job["failure_reason"]
        label = f"{job_id} ({job['external_id']})"
        if status not in TERMINAL:
            v.fail("job lost", f"{label} is still {status} after the drill settled")
            continue
        if spec is not None and (
            status != spec.expect_status
            or (spec.expect_reason is not None and reason != spec.expect_reason)
        ):
            v.fail(
                "wrong outcome",
                f"{label}: {status}/{reason}, expected {spec.expect_status}/{spec.expect_reason}",
            )
        got = delivered_by_job.get(job_id, [])
        kinds = {d.type for d in got}
        if len(kinds) > 1:
            v.fail("both outcomes delivered", f"{label}: {sorted(k or '' for k in kinds)}")
        if status == "SUCCEEDED":
            stored = transcripts.get(job_id)
            if stored is None:
                v.fail("transcript lost", f"{label}: SUCCEEDED with no stored transcript")
            succeeded = [d for d in got if d.type == SUCCEEDED_EVENT]
            if not succeeded:
                v.fail("transcript not delivered", f"{label}: SUCCEEDED, no 2xx delivery")
            if len({d.webhook_id for d in succeeded}) > 1:
                texts = {json.dumps(d.payload()["data"]["transcript"]) for d in succeeded}
                if len(texts) > 1:
                    v.fail("delivered twice, different content", f"{label}: {len(texts)} texts")
            for d in succeeded:
                data = d.payload()["data"]
                if data.get("status") != "SUCCEEDED" or data.get("transcript") != stored:
                    v.fail("delivered transcript differs", f"{label} webhook-id {d.webhook_id}")
                    break
            if quality and stored is not None and spec is not None:
                score = similarity(stored.get("text", ""), REFERENCES.get(spec.file, ""))
                if score < MIN_SIMILARITY:
                    v.fail("transcript wrong", f"{label}: {stored.get('text')!r} ({score:.2f})")
        elif status == "PERMAFAILED":
            failed = [d for d in got if d.type == FAILED_EVENT]
            if not failed:
                v.fail("failure not delivered", f"{label}: PERMAFAILED/{reason}, no 2xx message")
            elif len({d.webhook_id for d in failed}) != 1:
                v.fail("failure delivered under several ids", f"{label}")
            for d in failed:
                if d.payload()["data"].get("failure_reason") != reason:
                    v.fail("failure message differs", f"{label} webhook-id {d.webhook_id}")
                    break

        # --- the event log -------------------------------------------------------------
        chain = events.get(job_id, [])
        previous = None
        for event in chain:
            if event["from_status"] != previous:
                v.fail(
                    "broken event chain",
                    f"{label}: {event['from_status']}->{event['to_status']} after {previous}",
                )
                break
            if previous is not None and not can_transition(
                JobStatus(previous), JobStatus(event["to_status"])
            ):
                v.fail("forbidden transition", f"{label}: {previous}->{event['to_status']}")
            previous = event["to_status"]
        if previous != status:
            v.fail("broken event chain", f"{label}: events end at {previous}, job is {status}")

    transitions: Counter[str] = Counter()
    for chain in events.values():
        for event in chain:
            transitions[f"{event['from_status']}->{event['to_status']}"] += 1
            if event["reason"] == repo.TRIGGER_REFUSED:
                v.refused_triggers += repo.refusal_count(event["detail"])
            # A recovered lease: in flight -> FAILED/SEND_FAILED/PERMAFAILED, WORKER_LOST.
            # (Later events of the job may repeat the reason; they are not losses.)
            if (
                event["reason"] == "WORKER_LOST"
                and event["from_status"] in ("TRIGGERED", "PROCESSING")
                and event["to_status"] in ("FAILED", "SEND_FAILED", "PERMAFAILED")
            ):
                v.worker_lost += 1
    v.transitions = dict(transitions.most_common())
    return v
