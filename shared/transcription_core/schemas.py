"""The job resource of the contract: what the API returns and what a webhook carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from transcription_core.job import Job
from transcription_core.options import Task
from transcription_core.status import JobStatus
from transcription_core.storable import JsonObject, dumps


class JobResource(BaseModel):
    id: str
    status: JobStatus
    external_id: str | None
    media_url: str
    webhook_url: str
    language: str | None
    metadata: dict[str, Any]
    attempts: int
    failure_reason: str | None
    failure_detail: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    #: The job's options, as the client gave them (defaults where it gave none).
    task: Task = Task.TRANSCRIBE
    word_timestamps: bool = False
    prompt: str | None = None
    hotwords: str | None = None
    multichannel: bool = False
    diarize: bool = False
    speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    transcript: dict[str, Any] | None = None

    @classmethod
    def from_job(cls, job: Job, transcript: JsonObject | None = None) -> JobResource:
        return cls(
            id=job.id,
            status=job.status,
            external_id=job.external_id,
            media_url=job.media_url,
            webhook_url=job.webhook_url,
            language=job.language,
            metadata=job.metadata,
            attempts=job.attempts,
            failure_reason=job.failure_reason,
            failure_detail=job.failure_detail,
            created_at=job.created_at,
            updated_at=job.updated_at,
            completed_at=job.completed_at,
            task=job.task,
            word_timestamps=job.word_timestamps,
            prompt=job.prompt,
            hotwords=job.hotwords,
            multichannel=job.multichannel,
            diarize=job.diarize,
            speakers=job.speakers,
            min_speakers=job.min_speakers,
            max_speakers=job.max_speakers,
            transcript=transcript,
        )

    def to_json(self) -> str:
        """The resource as JSON, whatever the depth of ``metadata`` (see ``storable``)."""
        try:
            return self.model_dump_json()
        except PydanticSerializationError:  # metadata deeper than pydantic serializes
            fields = self.model_dump(mode="json", exclude={"metadata"})
            fields["metadata"] = self.metadata
            return dumps({name: fields[name] for name in type(self).model_fields})
