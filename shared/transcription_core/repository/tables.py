"""The job store's tables as SQLAlchemy Core handles, for the repository's statements."""

from __future__ import annotations

from typing import cast

import sqlalchemy as sa

from transcription_core import models

jobs = cast(sa.Table, models.Job.__table__)
events = cast(sa.Table, models.JobEvent.__table__)
tenants = cast(sa.Table, models.Tenant.__table__)
api_keys = cast(sa.Table, models.ApiKey.__table__)
transcripts = cast(sa.Table, models.Transcript.__table__)
chunks = cast(sa.Table, models.JobChunk.__table__)
runtime_settings = cast(sa.Table, models.RuntimeSetting.__table__)
