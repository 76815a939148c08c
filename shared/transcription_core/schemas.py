"""The job resource of the contract: what the API returns and what a webhook carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from transcription_core.models import JobRow
from transcription_core.status import JobStatus
from transcription_core.storable import dumps


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
    transcript: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: JobRow, transcript: dict[str, Any] | None = None) -> JobResource:
        fields = {name: row[name] for name in cls.model_fields if name not in ("transcript",)}
        fields["metadata"] = row["metadata"] or {}
        return cls(**fields, transcript=transcript)

    def to_json(self) -> str:
        """The resource as JSON, whatever the depth of ``metadata`` (see ``storable``)."""
        try:
            return self.model_dump_json()
        except PydanticSerializationError:  # metadata deeper than pydantic serializes
            fields = self.model_dump(mode="json", exclude={"metadata"})
            fields["metadata"] = self.metadata
            return dumps({name: fields[name] for name in type(self).model_fields})
