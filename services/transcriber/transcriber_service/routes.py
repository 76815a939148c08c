"""The worker's HTTP API: the orchestrator's triggers, and what this replica has room for."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from transcriber_service.model_capacity import ModelCapacity
from transcriber_service.replica import ReplicaReporter
from transcriber_service.service import Worker
from transcription_core.repository.replicas import ReplicaAnswer

router = APIRouter(prefix="/v1")


class Trigger(BaseModel):
    job_id: str = Field(max_length=64)
    attempt: int = Field(ge=1)


class JobSlots(BaseModel):
    running: int
    max: int


class ModelWindow(BaseModel):
    window: int = Field(description="Chunks this replica may have at the model tier now.")
    maximum: int = Field(description="CHUNK_CONCURRENCY x WORKER_MAX_JOBS.")
    in_flight: int
    saturated: bool = Field(
        description="The model tier answered queue full and the window has not grown back."
    )


class Capacity(BaseModel):
    jobs: JobSlots
    model: ModelWindow


@router.post(
    "/triggers",
    status_code=202,
    responses={503: {"description": "this worker is full", "model": ReplicaAnswer}},
)
async def trigger(body: Trigger, request: Request) -> JSONResponse:
    """Take a job: 202 at once (the work runs in the background), 503 when full; either
    way the answer says what this replica runs now."""
    taken = request.app.state.worker.accept(body.job_id, body.attempt)
    reporter: ReplicaReporter = request.app.state.replica
    answer = ReplicaAnswer.of(reporter.state())
    if taken:
        return JSONResponse(answer.model_dump(), status_code=202)
    return JSONResponse(answer.model_dump(), status_code=503, headers={"Retry-After": "1"})


@router.get("/capacity")
async def capacity(request: Request) -> Capacity:
    """This replica's job slots, and whether the model tier behind it is full: what a
    dispatcher can take into account (also the ``transcription_model_*`` metrics)."""
    worker: Worker = request.app.state.worker
    model: ModelCapacity = request.app.state.model_capacity
    return Capacity(
        jobs=JobSlots(running=len(worker.active), max=worker.settings.worker_max_jobs),
        model=ModelWindow(
            window=model.aimd.limit,
            maximum=model.aimd.maximum,
            in_flight=model.in_flight,
            saturated=model.saturated,
        ),
    )
