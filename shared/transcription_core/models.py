"""The job store's tables, as SQLAlchemy 2 declarative models.

The repository (``repository/``) issues every statement about these tables; services
never build SQL of their own. Times are stored in UTC; on SQLite, which has no time zone
type, :class:`UTCDateTime` stores naive UTC and hands back aware datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from transcription_core.status import CLAIMABLE, IN_FLIGHT, sql_in

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always an aware UTC datetime in Python."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Tenant(Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    webhook_secret: Mapped[str] = mapped_column(sa.String(128))
    #: The secret before the last rotation: webhooks are signed with it too (a second
    #: signature) until ``previous_webhook_secret_expires_at``.
    previous_webhook_secret: Mapped[str | None] = mapped_column(sa.String(128))
    previous_webhook_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """A tenant's API key, stored as the SHA-256 of the key (keys are long and random)."""

    __tablename__ = "api_keys"

    key_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(sa.ForeignKey("tenants.name", ondelete="CASCADE"))
    key_prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.UniqueConstraint("tenant", "idempotency_key"),
        # Partial indexes hold only the few rows the hot queries read (jobs to claim, jobs
        # in flight), never the history of finished jobs (migration 0004).
        sa.Index(
            "ix_jobs_claimable_tenant_due_at_id",
            "tenant",
            "due_at",
            "id",
            postgresql_where=sa.text(sql_in(CLAIMABLE)),
            sqlite_where=sa.text(sql_in(CLAIMABLE)),
        ),
        sa.Index(
            "ix_jobs_claimable_due_at",
            "due_at",
            postgresql_where=sa.text(sql_in(CLAIMABLE)),
            sqlite_where=sa.text(sql_in(CLAIMABLE)),
        ),
        sa.Index(
            "ix_jobs_in_flight_lease_expires_at",
            "lease_expires_at",
            postgresql_where=sa.text(sql_in(IN_FLIGHT)),
            sqlite_where=sa.text(sql_in(IN_FLIGHT)),
        ),
        sa.Index("ix_jobs_tenant_created_at_id", "tenant", "created_at", "id"),
        sa.Index("ix_jobs_tenant_external_id", "tenant", "external_id"),
        sa.Index("ix_jobs_status_completed_at", "status", "completed_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(sa.ForeignKey("tenants.name"))
    status: Mapped[str] = mapped_column(sa.String(16))
    #: Transcription attempts started (counted when the orchestrator claims the job).
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: Webhook deliveries tried for the current message.
    deliveries: Mapped[int] = mapped_column(sa.Integer, default=0)
    external_id: Mapped[str | None] = mapped_column(sa.String(256))
    media_url: Mapped[str] = mapped_column(sa.Text)
    webhook_url: Mapped[str] = mapped_column(sa.Text)
    language: Mapped[str | None] = mapped_column(sa.String(16))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(256))
    #: SHA-256 of the request body, to tell a replay from a conflicting reuse of a key.
    request_hash: Mapped[str | None] = mapped_column(sa.String(64))
    failure_reason: Mapped[str | None] = mapped_column(sa.String(32))
    failure_detail: Mapped[str | None] = mapped_column(sa.Text)
    #: When a claimable job may next be claimed.
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: When the worker holding an in-flight job is presumed lost.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The pending or last webhook message: its type (``transcription.succeeded`` or
    #: ``transcription.failed``) and its Standard Webhooks ``webhook-id``, the same on
    #: every retry of that message.
    webhook_event: Mapped[str | None] = mapped_column(sa.String(64))
    webhook_message_id: Mapped[str | None] = mapped_column(sa.String(64))
    #: The message's JSON body, fixed when it is first sent: every retry of one
    #: ``webhook-id`` carries the same content.
    webhook_payload: Mapped[str | None] = mapped_column(sa.Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The client's options, fixed at enqueue (``transcription_core.options``; migration
    #: 0006). A job enqueued before them has the defaults.
    task: Mapped[str] = mapped_column(sa.String(16), server_default="transcribe")
    word_timestamps: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    prompt: Mapped[str | None] = mapped_column(sa.Text)
    hotwords: Mapped[str | None] = mapped_column(sa.Text)
    multichannel: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    #: ``diarize`` and its speaker-count hint (migration 0008).
    diarize: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    speakers: Mapped[int | None] = mapped_column(sa.SmallInteger)
    min_speakers: Mapped[int | None] = mapped_column(sa.SmallInteger)
    max_speakers: Mapped[int | None] = mapped_column(sa.SmallInteger)


class JobEvent(Base):
    """The append-only log of every status change of every job."""

    __tablename__ = "job_events"
    __table_args__ = (sa.Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(sa.String(16))
    to_status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(32))
    detail: Mapped[str | None] = mapped_column(sa.Text)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    actor: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Transcript(Base):
    __tablename__ = "transcripts"

    job_id: Mapped[str] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    content: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class JobChunk(Base):
    """One transcribed chunk of a job's audio, kept so a retried job resumes where it stopped."""

    __tablename__ = "job_chunks"

    job_id: Mapped[str] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    start: Mapped[float] = mapped_column(sa.Float)
    end: Mapped[float] = mapped_column(sa.Float)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RuntimeSetting(Base):
    """Settings an operator changes without a redeploy (read by services every round), and
    the claim's place in its round-robin over tenants (``repository.CLAIM_CURSOR_SETTING``)."""

    __tablename__ = "runtime_settings"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(sa.String(64))


class TranscriberReplica(Base):
    """One running transcriber process: what it can take and what it runs, as it last
    reported (``transcriber_service.replica``). The orchestrator triggers only what
    these rows have room for, at the replica's own ``url``."""

    __tablename__ = "transcriber_replicas"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    #: Where this replica takes triggers; empty: through the orchestrator's TRANSCRIBER_URL.
    url: Mapped[str] = mapped_column(sa.Text)
    #: WORKER_MAX_JOBS of the replica.
    slots: Mapped[int] = mapped_column(sa.Integer)
    running: Mapped[int] = mapped_column(sa.Integer)
    #: False once it shuts down: it finishes or hands back what it runs, takes nothing new.
    accepting: Mapped[bool] = mapped_column(sa.Boolean)
    #: The model tier answered this replica "queue full" and its window has not grown back.
    model_saturated: Mapped[bool] = mapped_column(sa.Boolean)
    #: Bumped by the replica at every change of ``running`` or ``accepting``; a trigger's
    #: answer carries it too, so the freshest of the row and the answer wins.
    version: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())


def utcnow() -> datetime:
    return datetime.now(UTC)
