"""Transcripts, and the chunks of one in the making (so a retried job resumes)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core.models import utcnow
from transcription_core.repository.tables import chunks, transcripts, upsert
from transcription_core.storable import JsonObject


async def save_transcript(conn: AsyncConnection, job_id: str, content: JsonObject) -> None:
    await conn.execute(
        upsert(conn, transcripts, {"job_id": job_id}, {"content": content, "created_at": utcnow()})
    )


async def get_transcript(conn: AsyncConnection, job_id: str) -> JsonObject | None:
    content: JsonObject | None = await conn.scalar(
        sa.select(transcripts.c.content).where(transcripts.c.job_id == job_id)
    )
    return content


async def has_transcript(conn: AsyncConnection, job_id: str) -> bool:
    found = await conn.scalar(sa.select(sa.literal(1)).where(transcripts.c.job_id == job_id))
    return found is not None


@dataclass(frozen=True)
class SavedChunk:
    """One transcribed chunk of a job's audio: where it lies and what the model said."""

    index: int
    start: float
    end: float
    result: JsonObject


async def save_chunk(
    conn: AsyncConnection,
    job_id: str,
    index: int,
    start: float,
    end: float,
    result: JsonObject,
) -> None:
    await conn.execute(
        upsert(
            conn,
            chunks,
            {"job_id": job_id, "index": index},
            {"start": start, "end": end, "result": result, "created_at": utcnow()},
        )
    )


async def saved_chunks(conn: AsyncConnection, job_id: str) -> list[SavedChunk]:
    result = await conn.execute(
        sa.select(chunks.c.index, chunks.c.start, chunks.c.end, chunks.c.result)
        .where(chunks.c.job_id == job_id)
        .order_by(chunks.c.index)
    )
    return [SavedChunk(*row) for row in result.all()]
