"""Every SQL statement of the job store, one module per topic.

    tables.py       the tables as SQLAlchemy Core handles
    tenancy.py      tenants, API keys, webhook secrets
    history.py      a job's history (``job_events``): appended, read, counted
    enqueue.py      the insert (SQLAlchemy, and asyncpg for the enqueue API), the
                    announcement of new jobs, idempotency keys
    reads.py        one job, and a tenant's jobs page by page
    transitions.py  status changes: a lifecycle ``Change`` applied as one compare-and-set;
                    the worker's start, lease and message; cancel, redelivery, requeue
    claims.py       the orchestrator's rounds: claim, stop at the bound, refused
                    triggers, expired leases
    operators.py    queue depth, the most triggers, stats, requeue candidates
    results.py      transcripts, and the chunks of one in the making
    runtime.py      settings changed at run time; the readiness probe

The modules are named apart from the tables (``repo.jobs`` is the table).
Functions take an open ``AsyncConnection`` and never commit: the caller owns the
transaction (``async with engine.begin() as conn``), one commit point per request or
round. They take and return typed values (``job.Job``, ``job.NewJob``, ...), never rows.
What a status change writes is decided in ``lifecycle.py``; the repository applies it
(``transitions.py``). Everything is importable from here:
``from transcription_core import repository as repo; repo.get_job(...)``.
"""

from __future__ import annotations

from transcription_core.job import NewJob, WebhookEvent, new_message_id
from transcription_core.lifecycle import TRIGGER_REFUSED
from transcription_core.repository.claims import (
    CLAIM_LOCK_KEY,
    ClaimedJob,
    RecoveredJob,
    StoppedJob,
    claim_due_jobs,
    count_in_flight,
    next_due_at,
    recover_expired_leases,
    return_to_queue,
)
from transcription_core.repository.enqueue import (
    NOTIFY_CHANNEL,
    NOTIFY_SQL,
    PG_INSERT_JOB_SQL,
    SLOT_FREED,
    insert_job,
    insert_job_asyncpg,
    job_by_idempotency_key,
    notify_new_jobs,
    notify_slot_freed,
    release_idempotency_key,
)
from transcription_core.repository.history import (
    LoggedEvent,
    coalesce_refusals,
    job_events,
    log_events,
    refusal_count,
    triggers_since_start,
)
from transcription_core.repository.operators import (
    QueueDepth,
    Stats,
    most_triggers,
    queue_depth,
    requeue_candidates,
    stats,
)
from transcription_core.repository.reads import decode_cursor, encode_cursor, get_job, list_jobs
from transcription_core.repository.results import (
    SavedChunk,
    get_transcript,
    has_transcript,
    save_chunk,
    save_transcript,
    saved_chunks,
)
from transcription_core.repository.runtime import (
    LIMIT_BEFORE_PAUSE_SETTING,
    LIMIT_SETTING,
    RuntimeValue,
    delete_runtime_setting,
    get_runtime_setting,
    ping,
    runtime_setting,
    set_runtime_setting,
)
from transcription_core.repository.tables import (
    api_keys,
    chunks,
    events,
    jobs,
    runtime_settings,
    tenants,
    transcripts,
)
from transcription_core.repository.tenancy import (
    API_KEY_PREFIX,
    KEY_PREFIX_CHARS,
    ApiKeyInfo,
    NewTenant,
    RotatedSecret,
    add_api_key,
    create_tenant,
    hash_api_key,
    list_api_keys,
    list_tenants,
    new_webhook_secret,
    revoke_api_keys,
    rotate_webhook_secret,
    tenant_exists,
    tenant_for_api_key,
    tenant_webhook_secret,
    tenant_webhook_secrets,
)
from transcription_core.repository.transitions import (
    apply,
    apply_locked,
    cancel,
    renew_lease,
    request_redelivery,
    requeue,
    set_webhook_message,
    start,
)

#: The webhook message types, by their earlier names.
SUCCEEDED_EVENT = WebhookEvent.SUCCEEDED
FAILED_EVENT = WebhookEvent.FAILED

__all__ = [
    "API_KEY_PREFIX",
    "CLAIM_LOCK_KEY",
    "FAILED_EVENT",
    "KEY_PREFIX_CHARS",
    "LIMIT_BEFORE_PAUSE_SETTING",
    "LIMIT_SETTING",
    "NOTIFY_CHANNEL",
    "NOTIFY_SQL",
    "PG_INSERT_JOB_SQL",
    "SLOT_FREED",
    "SUCCEEDED_EVENT",
    "TRIGGER_REFUSED",
    "ApiKeyInfo",
    "ClaimedJob",
    "LoggedEvent",
    "NewJob",
    "NewTenant",
    "QueueDepth",
    "RecoveredJob",
    "RotatedSecret",
    "RuntimeValue",
    "SavedChunk",
    "Stats",
    "StoppedJob",
    "add_api_key",
    "api_keys",
    "apply",
    "apply_locked",
    "cancel",
    "chunks",
    "claim_due_jobs",
    "coalesce_refusals",
    "count_in_flight",
    "create_tenant",
    "decode_cursor",
    "delete_runtime_setting",
    "encode_cursor",
    "events",
    "get_job",
    "get_runtime_setting",
    "get_transcript",
    "has_transcript",
    "hash_api_key",
    "insert_job",
    "insert_job_asyncpg",
    "job_by_idempotency_key",
    "job_events",
    "jobs",
    "list_api_keys",
    "list_jobs",
    "list_tenants",
    "log_events",
    "most_triggers",
    "new_message_id",
    "new_webhook_secret",
    "next_due_at",
    "notify_new_jobs",
    "notify_slot_freed",
    "ping",
    "queue_depth",
    "recover_expired_leases",
    "refusal_count",
    "release_idempotency_key",
    "renew_lease",
    "request_redelivery",
    "requeue",
    "requeue_candidates",
    "return_to_queue",
    "revoke_api_keys",
    "rotate_webhook_secret",
    "runtime_setting",
    "runtime_settings",
    "save_chunk",
    "save_transcript",
    "saved_chunks",
    "set_runtime_setting",
    "set_webhook_message",
    "start",
    "stats",
    "tenant_exists",
    "tenant_for_api_key",
    "tenant_webhook_secret",
    "tenant_webhook_secrets",
    "tenants",
    "transcripts",
    "triggers_since_start",
]
