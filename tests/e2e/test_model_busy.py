"""A busy model server slows a job down; it never fails it.

The real model server with a queue of two chunks and batches of two, the transcriber
sending up to 16 chunks of a job at once, jobs allowed two attempts, on real PostgreSQL:
the model server answers 503 "queue full" to most of the first chunks, and the job still
ends SUCCEEDED on its first attempt. The recording is JFK played 16 times (176 s, six
or seven chunks): enough for the queue to overflow, short enough for 2 cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack import running_stack
from testkit.media import JFK, make_media
from testkit.procs import model_server
from testkit.text import words
from transcriber_service import metrics

pytestmark = [pytest.mark.model, pytest.mark.slow]

BUSY = {"chunk_concurrency": 16, "max_attempts": 2}


@pytest.fixture(scope="module")
def busy_model_server() -> Iterator[str]:
    with model_server(MODEL="tiny.en", MAX_BATCH_SIZE="2", MAX_QUEUED_CHUNKS="2") as server:
        yield server.url


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_media("flac", tmp_path_factory.mktemp("busy"), JFK, repeat=16)


def rejected(model_server_url: str) -> float:
    """Chunks the model server refused because its queue was full, from its metrics."""
    for line in httpx.get(model_server_url + "/metrics").text.splitlines():
        if line.startswith("transcription_model_rejected_chunks_total "):
            return float(line.split()[1])
    return 0.0


async def test_a_full_model_queue_slows_the_job_down_and_it_succeeds_on_its_first_attempt(
    pg_url: str, busy_model_server: str, recording: Path
) -> None:
    before = rejected(busy_model_server)
    waited_before = metrics.MODEL_BUSY_ANSWERS.labels("503")._value.get()
    async with running_stack(
        pg_url,
        busy_model_server,
        transcriber=BUSY,
        orchestrator=BUSY,
        media_root=recording.parent,
    ) as stack:
        job_id = (await stack.enqueue(recording.name, language="en"))["id"]
        done = await stack.wait_status(job_id, "SUCCEEDED", "PERMAFAILED", timeout=300)
        assert (done["status"], done["attempts"]) == ("SUCCEEDED", 1), done
        assert words(done["transcript"]["text"]).count("country") >= 16 * 2 - 2
        statuses = [e.to_status for e in await stack.events(job_id)]
        assert statuses == ["QUEUED", "TRIGGERED", "PROCESSING", "SUCCEEDED"]
    assert rejected(busy_model_server) > before  # the queue did overflow ...
    assert metrics.MODEL_BUSY_ANSWERS.labels("503")._value.get() > waited_before  # ... waited
