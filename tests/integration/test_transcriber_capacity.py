"""``GET /v1/capacity``: a replica's job slots and whether the model tier behind it is full,
for a dispatcher to read (the same facts as the ``transcription_model_*`` metrics)."""

from __future__ import annotations

import httpx

from testkit.asgi import serve_app
from transcriber_service.app import create_app
from transcriber_service.settings import TranscriberSettings


async def test_capacity_reports_the_slots_and_a_saturated_model_tier(pg_url: str) -> None:
    settings = TranscriberSettings(database_url=pg_url, worker_max_jobs=2, chunk_concurrency=4)
    app = create_app(settings)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        idle = (await http.get("/v1/capacity")).json()
        assert idle == {
            "jobs": {"running": 0, "max": 2},
            "model": {"window": 8, "maximum": 8, "in_flight": 0, "saturated": False},
        }
        capacity = app.state.model_capacity
        held = [await capacity.acquire() for _ in range(6)]
        capacity.queue_full(held.pop())  # the model tier said "queue full" with 6 chunks out
        busy = (await http.get("/v1/capacity")).json()
        assert busy["model"] == {"window": 3, "maximum": 8, "in_flight": 5, "saturated": True}
        metrics = (await http.get("/metrics")).text
        assert "transcription_model_saturated 1.0" in metrics
        assert "transcription_model_window 3.0" in metrics
        for slot in held:
            capacity.release(slot)
