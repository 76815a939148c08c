"""The worker's HTTP API: the orchestrator's triggers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

router = APIRouter(prefix="/v1")


class Trigger(BaseModel):
    job_id: str = Field(max_length=64)
    attempt: int = Field(ge=1)


@router.post("/triggers", status_code=202, responses={503: {"description": "this worker is full"}})
async def trigger(body: Trigger, request: Request) -> Response:
    """Take a job: 202 at once (the work runs in the background), 503 when full."""
    if request.app.state.worker.accept(body.job_id, body.attempt):
        return Response(status_code=202)
    return Response(status_code=503, headers={"Retry-After": "1"})
