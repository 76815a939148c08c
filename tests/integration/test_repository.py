"""The job store on real PostgreSQL and on SQLite: CAS transitions, claims, recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import await_only

from factories import make_job, make_jobs, make_tenant, status_of
from transcription_core import lifecycle
from transcription_core import repository as repo
from transcription_core.db import asyncpg_dsn, create_engine
from transcription_core.errors import DuplicateIdempotencyKey
from transcription_core.job import Change, Job, Message, WebhookEvent
from transcription_core.models import utcnow
from transcription_core.status import InvalidTransition, JobStatus

S = JobStatus
SENT = Message(WebhookEvent.SUCCEEDED, "msg_1", "{}")


async def test_insert_logs_the_first_event(engine: AsyncEngine) -> None:
    await make_tenant(engine)
    job = await make_job(engine)
    assert job.status == S.QUEUED and job.attempts == 0
    async with engine.connect() as conn:
        events = await repo.job_events(conn, job.id)
    assert [(e.from_status, e.to_status) for e in events] == [(None, S.QUEUED)]


async def test_a_change_applies_as_a_compare_and_set(engine: AsyncEngine) -> None:
    await make_tenant(engine)
    job = await make_job(engine, status=S.TRIGGERED, attempts=1)
    now = utcnow()
    async with engine.begin() as conn:
        moved = await repo.apply(conn, lifecycle.started(job, 60, now), "w1")
        # The store holds what the change says the job becomes.
        assert moved == lifecycle.started(job, 60, now).after
        assert moved.status == S.PROCESSING
        # A second writer that decided on the old job loses: no row, no overwrite.
        assert await repo.apply(conn, lifecycle.started(job, 60, now), "w2") is None
        # A worker of an older attempt cannot finish a job a newer attempt owns.
        old = replace(moved, attempts=0)
        assert await repo.apply(conn, lifecycle.delivered(old, SENT, now), "old") is None
        # A move the status machine forbids (PROCESSING -> QUEUED) never reaches the row.
        with pytest.raises(InvalidTransition):
            await repo.apply(conn, lifecycle.requeued(moved, now), "w1")
        done = await repo.apply(conn, lifecycle.delivered(moved, SENT, now), "w1")
        assert done == lifecycle.delivered(moved, SENT, now).after
        assert done.completed_at is not None
        events = await repo.job_events(conn, job.id)
    assert [e.to_status for e in events] == [S.QUEUED, S.PROCESSING, S.SUCCEEDED]
    assert events[-1].actor == "w1" and events[-1].attempt == 1


DECIDE: dict[JobStatus, Callable[[Job], Change]] = {
    S.CANCELED: lambda job: lifecycle.cancelled(job, utcnow()),
    S.QUEUED: lambda job: lifecycle.requeued(job, utcnow()),
    S.SUCCEEDED: lambda job: lifecycle.delivered(job, SENT, utcnow()),
}


@pytest.mark.parametrize(
    ("src", "dst", "ok"),
    [
        (S.QUEUED, S.CANCELED, True),
        (S.FAILED, S.CANCELED, True),
        (S.SUCCEEDED, S.CANCELED, False),
        (S.PERMAFAILED, S.QUEUED, True),
        (S.CANCELED, S.QUEUED, False),
        (S.QUEUED, S.SUCCEEDED, False),
    ],
)
async def test_refused_transitions_never_reach_the_row(
    engine: AsyncEngine, src: JobStatus, dst: JobStatus, ok: bool
) -> None:
    await make_tenant(engine)
    job = await make_job(engine, status=src)
    async with engine.begin() as conn:
        if ok:
            assert await repo.apply(conn, DECIDE[dst](job), "t")
        else:
            with pytest.raises(InvalidTransition):
                await repo.apply(conn, DECIDE[dst](job), "t")
    assert await status_of(engine, job.id) == (dst if ok else src)


async def test_idempotency_key_is_unique_per_tenant(engine: AsyncEngine) -> None:
    await make_tenant(engine, "org-a")
    await make_tenant(engine, "org-b")
    new = repo.NewJob(
        tenant="org-a", media_url="https://m/a", webhook_url="https://h/a", idempotency_key="k1"
    )
    async with engine.begin() as conn:
        await repo.insert_job(conn, new)
    with pytest.raises(DuplicateIdempotencyKey):
        async with engine.begin() as conn:
            await repo.insert_job(conn, new)
    async with engine.begin() as conn:  # another tenant may use the same key
        await repo.insert_job(
            conn,
            repo.NewJob(
                tenant="org-b",
                media_url="https://m/a",
                webhook_url="https://h/a",
                idempotency_key="k1",
            ),
        )


async def test_claim_counts_the_attempt_and_respects_the_limit(engine: AsyncEngine) -> None:
    await make_tenant(engine)
    await make_jobs(engine, 5)
    async with engine.begin() as conn:
        claimed = await repo.claim_due_jobs(conn, max_in_flight=3, lease_seconds=60)
    assert len(claimed) == 3
    assert all(c.attempt == 1 and c.from_status == S.QUEUED for c in claimed)
    async with engine.begin() as conn:
        assert await repo.claim_due_jobs(conn, max_in_flight=3, lease_seconds=60) == []
        assert await repo.count_in_flight(conn) == 3
        row = await repo.get_job(conn, claimed[0].id)
    assert row is not None and row.status == S.TRIGGERED and row.lease_expires_at


async def test_a_claim_stores_what_the_lifecycle_decided(engine: AsyncEngine) -> None:
    """One round claims jobs whose changes write different columns (a failure cleared, a
    pending failure message's failure kept): each row ends as ``lifecycle.claimed`` left
    the job, with one event each (on PostgreSQL the round writes them all in one
    statement per set of columns)."""
    await make_tenant(engine)
    plain = await make_job(engine)
    retried = await make_job(
        engine, status=S.FAILED, attempts=1, failure_reason="MODEL_ERROR", failure_detail="x"
    )
    pending = await make_job(
        engine,
        status=S.SEND_FAILED,
        attempts=3,
        failure_reason="MODEL_ERROR",
        failure_detail="why",
        webhook_event=repo.FAILED_EVENT,
        webhook_message_id="msg_1",
        deliveries=1,
    )
    async with engine.begin() as conn:
        claimed = await repo.claim_due_jobs(
            conn, max_in_flight=10, lease_seconds=60, actor="orch-7"
        )
    assert {c.id for c in claimed} == {plain.id, retried.id, pending.id}
    async with engine.connect() as conn:
        for c in claimed:
            row = await repo.get_job(conn, c.id)
            assert row == c.job  # what the lifecycle decided, every column
            events = await repo.job_events(conn, c.id)
            last = events[-1]
            assert (last.from_status, last.to_status, last.attempt, last.actor) == (
                c.from_status,
                S.TRIGGERED,
                c.attempt,
                "orch-7",
            )
            assert last.created_at == row.updated_at
    by_id = {c.id: c.job for c in claimed}
    assert (by_id[retried.id].failure_reason, by_id[retried.id].attempts) == (None, 2)
    assert (by_id[pending.id].failure_reason, by_id[pending.id].attempts) == ("MODEL_ERROR", 4)


async def test_jobs_not_yet_due_are_not_claimed(engine: AsyncEngine) -> None:
    await make_tenant(engine)
    await make_job(engine, status=S.FAILED, attempts=1, due_at=utcnow() + timedelta(hours=1))
    due = await make_job(engine, status=S.FAILED, attempts=1, due_at=utcnow())
    async with engine.begin() as conn:
        claimed = await repo.claim_due_jobs(conn, max_in_flight=10, lease_seconds=60)
    assert [(c.id, c.attempt, c.from_status) for c in claimed] == [(due.id, 2, S.FAILED)]


async def test_claims_are_fair_across_tenants(engine: AsyncEngine) -> None:
    """A tenant's flood does not hold back another tenant's single job past one round."""
    await make_tenant(engine, "org-flood")
    await make_tenant(engine, "org-small")
    await make_jobs(engine, 300, tenant="org-flood")
    small = await make_job(engine, tenant="org-small")
    async with engine.begin() as conn:
        claimed = await repo.claim_due_jobs(conn, max_in_flight=2, lease_seconds=60)
    assert small.id in {c.id for c in claimed}
    assert {c.tenant for c in claimed} == {"org-flood", "org-small"}


async def test_one_freed_slot_at_a_time_goes_round_robin(engine: AsyncEngine) -> None:
    """Under load the orchestrator claims as slots free, often one per round: tenants
    with work take turns, so a tenant's single job goes out within as many rounds as
    there are tenants with work, however much older another tenant's backlog is."""
    await make_tenant(engine, "org-flood")
    await make_tenant(engine, "org-small")
    await make_jobs(engine, 20, tenant="org-flood")
    small = await make_job(engine, tenant="org-small")
    claimed = []
    for in_flight in range(2):
        async with engine.begin() as conn:
            claimed += await repo.claim_due_jobs(
                conn, max_in_flight=in_flight + 1, lease_seconds=60
            )
    assert len(claimed) == 2
    assert small.id in {c.id for c in claimed}


async def test_tenants_take_turns_across_rounds(engine: AsyncEngine) -> None:
    """Round after round, each tenant with work gets one job before any gets two, and
    within a tenant the oldest goes first."""
    for name in ("org-a", "org-b", "org-c"):
        await make_tenant(engine, name)
    jobs_of = {
        name: await make_jobs(engine, 3, tenant=name) for name in ("org-a", "org-b", "org-c")
    }
    claimed = []
    for in_flight in range(6):
        async with engine.begin() as conn:
            claimed += await repo.claim_due_jobs(
                conn, max_in_flight=in_flight + 1, lease_seconds=60
            )
    tenants = [c.tenant for c in claimed]
    assert sorted(tenants[:3]) == sorted(tenants[3:]) == ["org-a", "org-b", "org-c"]
    for name, ids in jobs_of.items():
        assert [c.id for c in claimed if c.tenant == name] == ids[:2]


def _insert_jobs_sql(count: int, tenant: str, status: str) -> str:
    """``count`` jobs of ``tenant`` in ``status`` in one statement, oldest first."""
    return f"""
        INSERT INTO jobs (id, tenant, status, attempts, deliveries, media_url, webhook_url,
                          metadata, due_at, created_at, updated_at, completed_at)
        SELECT gen_random_uuid()::text, '{tenant}', '{status}', 0, 0, 'https://m/a.mp3',
               'https://h/t', '{{}}', now() - interval '1 hour' + i * interval '1 ms',
               now() - interval '1 hour', now(),
               CASE WHEN '{status}' = 'SUCCEEDED' THEN now() END
        FROM generate_series(1, {count}) AS i
    """


async def _rows_read(conn: AsyncConnection) -> int:
    """Rows of ``jobs`` and of its indexes this transaction has read so far."""
    read = await conn.scalar(
        sa.text(
            "SELECT pg_stat_get_xact_tuples_returned('jobs'::regclass) + "
            "coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0) "
            "FROM pg_index WHERE indrelid = 'jobs'::regclass"
        )
    )
    return int(read)


@pytest.mark.postgres
async def test_a_claim_round_reads_only_what_it_takes(pg_engine: AsyncEngine) -> None:
    """The round's cost does not grow with the backlog or the history: with thousands of
    jobs queued and finished it reads a few rows of the table and its indexes, not them all."""
    await make_tenant(pg_engine, "org-flood")
    await make_tenant(pg_engine, "org-small")
    async with pg_engine.begin() as conn:
        await conn.execute(sa.text(_insert_jobs_sql(3000, "org-flood", "QUEUED")))
        await conn.execute(sa.text(_insert_jobs_sql(3000, "org-flood", "SUCCEEDED")))
        await conn.execute(sa.text(_insert_jobs_sql(1, "org-small", "QUEUED")))
        await conn.execute(sa.text("ANALYZE jobs"))
    async with pg_engine.begin() as conn:
        before = await _rows_read(conn)
        claimed = await repo.claim_due_jobs(conn, max_in_flight=2, lease_seconds=60)
        read = await _rows_read(conn) - before
    assert {c.tenant for c in claimed} == {"org-flood", "org-small"}
    assert read < 50


@pytest.mark.postgres
async def test_a_claim_round_plans_once_and_only_for_itself(pg_engine: AsyncEngine) -> None:
    """The round has PostgreSQL reuse its statements' generic plans, inside its own
    transaction only: the connection, back in the pool, plans as configured."""
    await make_tenant(pg_engine)
    await make_jobs(pg_engine, 3)
    show = sa.text("SELECT current_setting('plan_cache_mode')")
    async with pg_engine.connect() as conn:
        async with conn.begin():
            await repo.claim_due_jobs(conn, max_in_flight=1, lease_seconds=60)
            assert await conn.scalar(show) == "force_generic_plan"
        async with conn.begin():
            assert await conn.scalar(show) == "auto"


@pytest.mark.postgres
async def test_a_claim_round_is_three_statements(pg_engine: AsyncEngine) -> None:
    """Round trips are most of a round's time once it reads only what it takes: the lock,
    one pick that also reads the room and the cursor, one write of the jobs, their events
    and the cursor; a fourth only when the tenants with work are fewer than the room."""
    await make_tenant(pg_engine, "org-a")
    await make_tenant(pg_engine, "org-b")
    await make_jobs(pg_engine, 3, tenant="org-a")
    await make_jobs(pg_engine, 1, tenant="org-b")
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    sa.event.listen(pg_engine.sync_engine, "before_cursor_execute", count)
    try:
        async with pg_engine.begin() as conn:
            first = await repo.claim_due_jobs(conn, max_in_flight=1, lease_seconds=60)
        heads = len(statements)
        async with pg_engine.begin() as conn:
            rest = await repo.claim_due_jobs(conn, max_in_flight=4, lease_seconds=60)
    finally:
        sa.event.remove(pg_engine.sync_engine, "before_cursor_execute", count)
    assert (len(first), len(rest)) == (1, 3)
    assert (heads, len(statements) - heads) == (3, 4)


@pytest.mark.postgres
async def test_a_job_requeued_during_a_round_is_not_claimed_twice(
    pg_url: str, pg_engine: AsyncEngine
) -> None:
    """The pick's statements read committed rows each (READ COMMITTED): a job put back in
    the queue between them, older than the head the first one took (a lost lease
    recovered by another orchestrator), moves that head to rank 2, where the second
    statement takes it again (our own lock does not skip it). It is claimed once, with one
    event."""
    await make_tenant(pg_engine, "org-a")
    recovered = await make_job(pg_engine, tenant="org-a", status="PROCESSING", attempts=1)
    head, second = await make_jobs(pg_engine, 2, tenant="org-a")
    older = utcnow() - timedelta(hours=1)
    other = await asyncpg.connect(asyncpg_dsn(pg_url))
    requeued: list[str] = []

    def requeue_after_the_pick(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "claim_room" in statement and not requeued:
            requeued.append(recovered.id)
            await_only(
                other.execute(
                    "UPDATE jobs SET status = 'QUEUED', due_at = $2 WHERE id = $1",
                    recovered.id,
                    older,
                )
            )

    sa.event.listen(pg_engine.sync_engine, "after_cursor_execute", requeue_after_the_pick)
    try:
        async with pg_engine.begin() as conn:
            claimed = await repo.claim_due_jobs(conn, max_in_flight=10, lease_seconds=60)
    finally:
        sa.event.remove(pg_engine.sync_engine, "after_cursor_execute", requeue_after_the_pick)
        await other.close()
    assert requeued
    ids = [c.id for c in claimed]
    assert len(ids) == len(set(ids)), ids
    assert head in ids
    async with pg_engine.connect() as conn:
        events = await repo.job_events(conn, head)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, S.QUEUED),
        (S.QUEUED, S.TRIGGERED),
    ]
    assert await status_of(pg_engine, second) in (S.QUEUED, S.TRIGGERED)


async def test_trigger_refused_returns_the_job_uncounted(engine: AsyncEngine) -> None:
    await make_tenant(engine)
    (job_id,) = await make_jobs(engine, 1)
    async with engine.begin() as conn:
        (claimed,) = await repo.claim_due_jobs(conn, max_in_flight=1, lease_seconds=60)
        assert await repo.return_to_queue(conn, claimed, "transcriber answered 503")
        row = await repo.get_job(conn, job_id)
    assert row is not None and row.status == S.QUEUED and row.attempts == 0


async def test_expired_lease_is_retried_then_permafailed(engine: AsyncEngine) -> None:
    """Three lost attempts, then a failure message whose deliveries are lost too."""
    await make_tenant(engine)
    (job_id,) = await make_jobs(engine, 1)
    expected = [S.FAILED, S.FAILED, S.SEND_FAILED, S.SEND_FAILED, S.PERMAFAILED]
    for attempt, to_status in enumerate(expected, start=1):
        async with engine.begin() as conn:
            (claimed,) = await repo.claim_due_jobs(conn, max_in_flight=1, lease_seconds=0)
            assert claimed.attempt == attempt
            recovered = await repo.recover_expired_leases(
                conn, max_attempts=3, backoff_seconds=0, delivery_schedule=(0.0,)
            )
        assert [(r.id, r.to_status) for r in recovered] == [(job_id, to_status)]
        if attempt == 3:  # out of attempts: a transcription.failed message is pending
            async with engine.connect() as conn:
                row = await repo.get_job(conn, job_id)
            assert row is not None and row.webhook_event == repo.FAILED_EVENT
            assert row.webhook_message_id.startswith("msg_")
    async with engine.connect() as conn:
        row = await repo.get_job(conn, job_id)
        events = await repo.job_events(conn, job_id)
    assert row is not None
    assert (row.status, row.failure_reason, row.attempts) == (
        S.PERMAFAILED,
        "WORKER_LOST",
        5,
    )
    assert [e.to_status for e in events] == [S.QUEUED] + [
        status for to_status in expected for status in (S.TRIGGERED, to_status)
    ]


def failure(row: Job | None) -> tuple[str | None, str | None]:
    assert row is not None
    return row.failure_reason, row.failure_detail


async def test_a_retry_starts_without_the_failure_it_retries(engine: AsyncEngine) -> None:
    """The failure fields describe the job now: a retry that starts (claimed, then
    processing) shows no failure, and neither does its success."""
    await make_tenant(engine)
    job = await make_job(
        engine,
        status=S.FAILED,
        attempts=1,
        failure_reason="DOWNLOAD_FAILED",
        failure_detail="the media URL answered HTTP 503",
    )
    async with engine.begin() as conn:
        (_claimed,) = await repo.claim_due_jobs(conn, max_in_flight=1, lease_seconds=60)
        assert failure(await repo.get_job(conn, job.id)) == (None, None)
        processing = await repo.start(conn, job.id, 2, 60, "w")
        assert failure(processing) == (None, None)


@pytest.mark.parametrize(
    ("event", "kept"),
    [(repo.FAILED_EVENT, True), (repo.SUCCEEDED_EVENT, False)],
    ids=["failure-message-pending", "transcript-delivery"],
)
async def test_a_pending_failure_message_keeps_its_failure(
    engine: AsyncEngine, event: str, kept: bool
) -> None:
    """A job whose transcription.failed message is still to be delivered needs its
    failure (the message carries it) while it is retried, even back in the queue; a
    delivery retry of a transcript does not (WEBHOOK_FAILED is only why it waited)."""
    await make_tenant(engine)
    reason = "MODEL_ERROR" if kept else "WEBHOOK_FAILED"
    job = await make_job(
        engine,
        status=S.SEND_FAILED,
        attempts=3,
        failure_reason=reason,
        failure_detail="why",
        webhook_event=event,
        webhook_message_id="msg_1",
        deliveries=1,
    )
    expected = (reason, "why") if kept else (None, None)
    async with engine.begin() as conn:
        (claimed,) = await repo.claim_due_jobs(conn, max_in_flight=1, lease_seconds=60)
        assert failure(await repo.get_job(conn, job.id)) == expected
        assert await repo.return_to_queue(conn, claimed, "transcriber answered 503")
        assert failure(await repo.get_job(conn, job.id)) == expected


async def test_a_redelivered_failure_message_keeps_its_failure(engine: AsyncEngine) -> None:
    await make_tenant(engine)
    job = await make_job(
        engine,
        status=S.PERMAFAILED,
        attempts=3,
        failure_reason="MODEL_ERROR",
        failure_detail="the model server answered 500",
        webhook_event=repo.FAILED_EVENT,
        webhook_message_id="msg_1",
    )
    async with engine.begin() as conn:
        redelivered = await repo.request_redelivery(conn, job, "client")
    assert failure(redelivered) == ("MODEL_ERROR", "the model server answered 500")


async def test_a_canceled_job_shows_no_failure(engine: AsyncEngine) -> None:
    await make_tenant(engine)
    job = await make_job(
        engine, status=S.FAILED, attempts=1, failure_reason="MODEL_ERROR", failure_detail="500"
    )
    async with engine.begin() as conn:
        canceled = await repo.cancel(conn, job.id, actor="c")
    assert failure(canceled) == (None, None)


async def test_renew_lease_fails_once_the_lease_is_lost(engine: AsyncEngine) -> None:
    await make_tenant(engine)
    await make_jobs(engine, 1)
    async with engine.begin() as conn:
        (claimed,) = await repo.claim_due_jobs(conn, max_in_flight=1, lease_seconds=60)
        assert await repo.renew_lease(conn, claimed.id, claimed.attempt, 60)
        assert not await repo.renew_lease(conn, claimed.id, claimed.attempt + 1, 60)
        await repo.cancel(conn, claimed.id, actor="client")
        assert not await repo.renew_lease(conn, claimed.id, claimed.attempt, 60)


async def test_list_jobs_paginates_newest_first(engine: AsyncEngine) -> None:
    await make_tenant(engine)
    ids = await make_jobs(engine, 7)
    seen: list[str] = []
    cursor = None
    async with engine.connect() as conn:
        while True:
            page, cursor = await repo.list_jobs(conn, "org-test", limit=3, cursor=cursor)
            seen += [r.id for r in page]
            if cursor is None:
                break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    with pytest.raises(ValueError):
        repo.decode_cursor("garbage!")


@pytest.mark.postgres
async def test_concurrent_claimers_never_exceed_the_limit(pg_url: str) -> None:
    """4 claimers, limit 5, 200 jobs: in flight never above 5 while they drain."""
    engines = [create_engine(pg_url, f"claimer-{n}") for n in range(5)]
    observer = engines[-1]
    try:
        await make_tenant(observer)
        await make_jobs(observer, 200)
        finished = 0
        peak = 0

        async def claimer(engine: AsyncEngine) -> None:
            nonlocal finished, peak
            while finished < 200:
                async with engine.begin() as conn:
                    claimed = await repo.claim_due_jobs(conn, max_in_flight=5, lease_seconds=60)
                async with engine.connect() as conn:
                    peak = max(peak, await repo.count_in_flight(conn))
                for job in claimed:
                    async with engine.begin() as conn:
                        started = await repo.start(conn, job.id, job.attempt, 60, "w")
                    assert started is not None
                    await asyncio.sleep(0.001)
                    async with engine.begin() as conn:
                        await repo.apply(conn, lifecycle.delivered(started, SENT, utcnow()), "w")
                    finished += 1
                if not claimed:
                    await asyncio.sleep(0.002)

        async def sampler() -> None:
            nonlocal peak
            while finished < 200:
                async with observer.connect() as conn:
                    peak = max(peak, await repo.count_in_flight(conn))
                await asyncio.sleep(0)

        await asyncio.wait_for(
            asyncio.gather(*(claimer(e) for e in engines[:4]), sampler()), timeout=120
        )
        async with observer.connect() as conn:
            counts = dict(
                (
                    await conn.execute(
                        sa.select(repo.jobs.c.status, sa.func.count()).group_by(repo.jobs.c.status)
                    )
                ).all()
            )
            triggered_twice = await conn.scalar(
                sa.select(sa.func.count()).select_from(repo.jobs).where(repo.jobs.c.attempts > 1)
            )
        assert counts == {S.SUCCEEDED: 200}
        assert triggered_twice == 0
        assert 1 <= peak <= 5
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.mark.postgres
async def test_the_asyncpg_insert_writes_what_it_returns(
    pg_engine: AsyncEngine, pg_url: str
) -> None:
    """The enqueue API's hot path: the job it answers with is the job stored, with its
    QUEUED event; a taken Idempotency-Key is DuplicateIdempotencyKey."""
    import asyncpg

    from transcription_core.db import asyncpg_dsn

    await make_tenant(pg_engine)
    new = repo.NewJob(
        tenant="org-test",
        media_url="https://m.example.com/a.mp3",
        webhook_url="https://h.example.com/t",
        external_id="post-1",
        metadata={"creator": 42, "tags": ["a"]},
        idempotency_key="k-1",
        request_hash="ab" * 32,
    )
    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        returned = await repo.insert_job_asyncpg(conn, new)
        with pytest.raises(DuplicateIdempotencyKey):
            await repo.insert_job_asyncpg(conn, new)
    finally:
        await conn.close()
    async with pg_engine.connect() as sa_conn:
        stored = await repo.get_job(sa_conn, returned.id)
        events = await repo.job_events(sa_conn, returned.id)
    assert stored == returned
    assert [(e.from_status, e.to_status, e.attempt) for e in events] == [(None, S.QUEUED, 0)]
    assert events[0].created_at == returned.created_at


@pytest.mark.postgres
async def test_inserting_a_job_notifies_nobody_until_notify_new_jobs(
    pg_engine: AsyncEngine, pg_url: str
) -> None:
    """A NOTIFY inside the inserting transaction would serialise every enqueue on
    PostgreSQL's notify lock (migration 0002): the writer announces after commit."""
    import asyncpg

    from transcription_core.db import asyncpg_dsn

    await make_tenant(pg_engine)
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        await listener.add_listener(repo.NOTIFY_CHANNEL, lambda *args: heard.put_nowait(args[2]))
        await make_job(pg_engine)
        await asyncio.sleep(0.3)
        assert heard.empty()
        async with pg_engine.begin() as conn:
            await repo.notify_new_jobs(conn)
        await asyncio.wait_for(heard.get(), timeout=5)
    finally:
        await listener.close()


async def test_a_transcript_or_chunk_saved_again_replaces_the_first(engine: AsyncEngine) -> None:
    """One statement each (an upsert): the second save of the same job (and chunk
    index) replaces the first, on both stores."""
    await make_tenant(engine)
    job = await make_job(engine)
    async with engine.begin() as conn:
        await repo.save_transcript(conn, job.id, {"text": "first"})
        await repo.save_chunk(conn, job.id, 0, 0.0, 30.0, {"n": 1})
        await repo.save_chunk(conn, job.id, 1, 30.0, 40.0, {"n": 2})
    async with engine.begin() as conn:
        await repo.save_transcript(conn, job.id, {"text": "second"})
        await repo.save_chunk(conn, job.id, 0, 0.0, 29.5, {"n": 3})
    async with engine.connect() as conn:
        assert await repo.get_transcript(conn, job.id) == {"text": "second"}
        saved = await repo.saved_chunks(conn, job.id)
    assert [(c.index, c.end, c.result) for c in saved] == [(0, 29.5, {"n": 3}), (1, 40.0, {"n": 2})]
