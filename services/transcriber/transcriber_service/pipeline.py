"""One job's media to a transcript: download, decode, chunk, transcribe, assemble.

Memory stays flat whatever the media's size: the download streams to a file, PyAV
decodes to a 16 kHz PCM file, chunking reads that file in windows, and each chunk's
samples are read back from it when the chunk is sent. Each finished chunk of a media of
several is saved at once, so a retried job starts where the last attempt stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from transcriber_service import metrics
from transcriber_service.download import download_to_file
from transcriber_service.errors import JobFailure, MediaError
from transcriber_service.media import DecodedAudio, decode_to_pcm_file
from transcriber_service.model_client import ModelServerClient, ModelServerError
from transcriber_service.settings import TranscriberSettings
from transcriber_service.workdir import attempt_dir, jobs_root
from transcription_core import repository as repo
from transcription_core.audio.chunking import (
    Chunk,
    SpeechAnalysis,
    analyse_pcm,
    chunks_from_analysis,
    plan_chunks,
)
from transcription_core.audio.context import format_context, lanes
from transcription_core.audio.pcm import read_pcm
from transcription_core.job import Job
from transcription_core.speakers import SpeakerHint, diarization_installed, label_transcript
from transcription_core.status import FailureReason
from transcription_core.storable import JsonObject
from transcription_core.transcript import Segment, Transcript

log = logging.getLogger(__name__)

#: A saved chunk is reused only if its boundaries are these close to the new plan's.
_SAME_BOUNDARY_S = 0.001
#: A multichannel job's chunks of channel ``c`` are numbered from ``c * CHANNEL_STRIDE``.
CHANNEL_STRIDE = 1_000_000


class Pipeline:
    def __init__(
        self,
        engine: AsyncEngine,
        media_http: httpx.AsyncClient,
        model: ModelServerClient,
        settings: TranscriberSettings,
    ) -> None:
        self.engine = engine
        self.media_http = media_http
        self.model = model
        self.settings = settings
        self._diarize_gate = asyncio.Semaphore(settings.diarize_concurrency)
        self._diarizer_loading = asyncio.Lock()
        self._diarizer: Any = None

    async def transcribe(self, job: Job, saved: Sequence[repo.SavedChunk] = ()) -> JsonObject:
        """The transcript of ``job``'s media, as the API shows it (and it is stored);
        raises :class:`JobFailure`. ``saved``: the chunks earlier attempts saved (read
        with the attempt's start), reused where they still fit."""
        saved_by_index = {row.index: row for row in saved}
        settings = self.settings
        with attempt_dir(jobs_root(settings.work_dir), job.id) as tmp:
            media = tmp / "media"
            await download_to_file(
                self.media_http,
                job.media_url,
                media,
                max_bytes=settings.max_download_bytes,
                allow_private=settings.allow_private_urls,
                allowed_networks=settings.private_networks_allowed,
                max_redirects=settings.download_max_redirects,
                total_timeout_s=settings.download_total_timeout_seconds,
                min_bytes_per_second=settings.download_min_bytes_per_second,
                rate_window_s=settings.download_min_rate_window_seconds,
            )
            pcm = tmp / "audio.pcm"
            decoded = await asyncio.to_thread(
                decode_to_pcm_file, media, pcm, max_duration_s=settings.max_media_seconds
            )
            if job.multichannel and decoded.source_channels > 1:
                pcm.unlink()
                transcript = await self._each_channel(job, media, decoded, saved_by_index)
            else:
                media.unlink()
                analysis = await asyncio.to_thread(analyse_pcm, pcm)
                chunks = await asyncio.to_thread(chunks_from_analysis, analysis)
                if not chunks:
                    raise MediaError(FailureReason.NO_AUDIO_FOUND, "no speech found in the audio")
                results = await self._transcribe_chunks(job, pcm, chunks, saved_by_index)
                transcript = assemble(results, chunks, decoded.duration_s, job.language)
                if job.diarize:
                    transcript = await self._diarize(job, pcm, analysis, transcript)
                if job.multichannel:  # one channel: channel 0
                    transcript = _on_channel(transcript, 0)
        metrics.AUDIO_SECONDS.inc(decoded.duration_s)
        return transcript.to_json()

    async def _diarize(
        self, job: Job, pcm: Path, analysis: SpeechAnalysis, transcript: Transcript
    ) -> Transcript:
        """``diarize``: the speakers' turns found in the audio (at most
        DIARIZE_CONCURRENCY jobs at once, each in a thread), and the transcript labelled
        with them (``transcription_core.speakers``)."""
        diarizer = await self._load_diarizer()
        hint = SpeakerHint(job.speakers, job.min_speakers, job.max_speakers)
        async with self._diarize_gate:
            started = time.perf_counter()
            turns = await asyncio.to_thread(
                diarizer.turns, pcm, analysis, hint, self.settings.diarize_max_speakers
            )
        metrics.DIARIZE_SECONDS.observe(time.perf_counter() - started)
        return label_transcript(transcript, turns)

    async def _load_diarizer(self) -> Any:
        """The speaker model, loaded at the first ``diarize`` job of this replica."""
        async with self._diarizer_loading:
            if self._diarizer is None:
                if not diarization_installed():
                    raise JobFailure(
                        FailureReason.MODEL_ERROR,
                        "diarization is not installed on this transcriber (the diarize "
                        "extra); its deployment's DIARIZATION setting says otherwise",
                    )
                from transcriber_service.diarization import Diarizer

                self._diarizer = await asyncio.to_thread(Diarizer, self.settings.diarize_threads)
            return self._diarizer

    async def _each_channel(
        self,
        job: Job,
        media: Path,
        decoded: DecodedAudio,
        saved: Mapping[int, repo.SavedChunk],
    ) -> Transcript:
        """``multichannel``: each channel decoded, chunked and transcribed on its own (its
        chunks numbered from ``channel * CHANNEL_STRIDE``), the segments labelled with it."""
        channels = decoded.source_channels
        if channels > self.settings.max_channels:
            raise MediaError(
                FailureReason.MEDIA_TOO_LARGE,
                f"the audio has {channels} channels, over the limit of "
                f"{self.settings.max_channels} for a multichannel job (MAX_CHANNELS)",
            )
        parts: list[Transcript] = []
        for channel in range(channels):
            pcm = media.with_name(f"channel{channel}.pcm")
            await asyncio.to_thread(
                decode_to_pcm_file,
                media,
                pcm,
                max_duration_s=self.settings.max_media_seconds,
                channel=channel,
            )
            planned = await asyncio.to_thread(plan_chunks, pcm)
            chunks = [replace(c, index=channel * CHANNEL_STRIDE + c.index) for c in planned]
            if chunks:
                results = await self._transcribe_chunks(job, pcm, chunks, saved)
                heard = assemble(results, chunks, decoded.duration_s, job.language)
                parts.append(_on_channel(heard, channel))
            pcm.unlink()
        if not parts:
            raise MediaError(FailureReason.NO_AUDIO_FOUND, "no speech found on any channel")
        return merge_channels(parts)

    async def _transcribe_chunks(
        self, job: Job, pcm: Path, chunks: list[Chunk], saved: Mapping[int, repo.SavedChunk]
    ) -> dict[int, dict[str, Any]]:
        """Each chunk's result: saved by an earlier attempt, or from the model (and then
        saved at once, so a retry resumes, unless it is the plan's only chunk: the
        transcript, saved next, holds all of it)."""
        keep = len(chunks) > 1
        results: dict[int, dict[str, Any]] = {}
        todo = []
        options = job.decode_options.key()
        for chunk in chunks:
            row = saved.get(chunk.index)
            if (
                row is not None
                and abs(row.start - chunk.start_s) < _SAME_BOUNDARY_S
                and abs(row.end - chunk.end_s) < _SAME_BOUNDARY_S
                and row.result.get("options") == options  # made with this job's options
            ):
                results[chunk.index] = row.result
                metrics.CHUNKS.labels("saved").inc()
            else:
                todo.append(chunk)
        language = job.language
        if language is None and todo:
            # Detect once, on the first chunk to do (or take what a saved chunk found),
            # and hold the rest of the media to it.
            if results:
                language = next(iter(results.values()))["language"]
            else:
                first = todo.pop(0)
                results[first.index] = await self._one_chunk(job, pcm, first, None, None, keep)
                language = results[first.index]["language"]
        gate = asyncio.Semaphore(self.settings.chunk_concurrency)

        async def limited(chunk: Chunk, context: str | None = None) -> None:
            async with gate:
                results[chunk.index] = await self._one_chunk(
                    job, pcm, chunk, language, context, keep
                )

        if self.settings.context_lanes == 0:
            await _gather_or_cancel(limited(chunk) for chunk in todo)
            return results

        async def lane(run: list[Chunk]) -> None:
            # In order: each chunk goes with the lane's last segments as its context.
            heard: list[tuple[float, float, str]] = []
            for chunk in run:
                if chunk.index not in results:  # not saved, nor the detection chunk
                    await limited(chunk, format_context(heard))
                heard = [
                    (s["start"], s["end"], s["text"]) for s in results[chunk.index]["segments"]
                ]

        await _gather_or_cancel(lane(run) for run in lanes(chunks, self.settings.context_lanes))
        return results

    async def _one_chunk(
        self,
        job: Job,
        pcm: Path,
        chunk: Chunk,
        language: str | None,
        context: str | None,
        keep: bool,
    ) -> dict[str, Any]:
        samples = await asyncio.to_thread(read_pcm, pcm, chunk.start_sample, chunk.end_sample)
        started = time.perf_counter()
        options = job.decode_options
        try:
            prediction = await self.model.predict(
                samples,
                language=language,
                beam_size=self.settings.beam_size,
                word_timestamps=options.word_timestamps,
                initial_prompt=options.prompt,
                task=options.task,
                hotwords=options.hotwords,
                context=context,
            )
        except ModelServerError as exc:
            metrics.MODEL_ERRORS.inc()
            raise JobFailure(
                FailureReason.MODEL_ERROR,
                f"the model server failed chunk {chunk.index} "
                f"({chunk.start_s:.1f}-{chunk.end_s:.1f} s): {exc}",
            ) from exc
        metrics.CHUNK_LATENCY.observe(time.perf_counter() - started)
        metrics.CHUNKS.labels("model").inc()
        result: JsonObject = {
            "options": options.key(),
            "detected": language is None,
            "language": prediction.language,
            "language_probability": prediction.language_probability,
            "model": prediction.model,
            "segments": [segment.to_json() for segment in prediction.segments],
        }
        if keep:
            async with self.engine.begin() as conn:
                await repo.save_chunk(conn, job.id, chunk.index, chunk.start_s, chunk.end_s, result)
        return result


async def _gather_or_cancel(coros: Any) -> None:
    """Run all; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def assemble(
    results: Mapping[int, Mapping[str, Any]],
    chunks: list[Chunk],
    duration: float,
    requested_language: str | None,
) -> Transcript:
    """The job's transcript from its chunks' saved results: segments on the media's own
    timeline, in order, none past its chunk's end, empty ones left out."""
    segments: list[Segment] = []
    languages: dict[str, float] = {}
    probability = None
    model = ""
    for chunk in sorted(chunks, key=lambda c: c.index):
        result = results[chunk.index]
        heard = Transcript.from_json(result)
        model = heard.model or model
        if heard.language is not None:
            languages[heard.language] = languages.get(heard.language, 0) + chunk.duration_s
        if result.get("detected") and probability is None:
            probability = heard.language_probability
        for seg in heard.segments:
            text = seg.text.strip()
            if text:
                segments.append(_on_media_timeline(seg, chunk, text))
    return Transcript(
        segments=segments,
        language=requested_language or max(languages, key=languages.__getitem__, default=None),
        language_probability=1.0 if probability is None else round(probability, 4),
        duration=round(duration, 3),
        model=model,
    )


def _on_media_timeline(segment: Segment, chunk: Chunk, text: str) -> Segment:
    """A chunk's segment (and its words) moved to the media's timeline, to the
    millisecond, none past the chunk's end."""

    def clamp(seconds: float, floor: float = 0.0) -> float:
        return max(round(min(seconds, chunk.end_s), 3), floor)

    moved = segment.shifted(chunk.start_s)
    start = clamp(moved.start)
    words = None
    if moved.words is not None:
        words = []
        for word in moved.words:
            word_start = clamp(word.start)
            words.append(replace(word, start=word_start, end=clamp(word.end, word_start)))
    return replace(moved, start=start, end=clamp(moved.end, start), text=text, words=words)


def _on_channel(transcript: Transcript, channel: int) -> Transcript:
    return replace(transcript, segments=[replace(s, channel=channel) for s in transcript.segments])


def merge_channels(parts: list[Transcript]) -> Transcript:
    """The channels' transcripts as one, segments in order of time (then of channel); the
    language is the one heard longest."""
    segments = sorted(
        (s for part in parts for s in part.segments), key=lambda s: (s.start, s.channel or 0)
    )
    spoken: dict[str, float] = {}
    for part in parts:
        if part.language is not None:
            length = sum(s.end - s.start for s in part.segments)
            spoken[part.language] = spoken.get(part.language, 0.0) + length
    language = max(spoken, key=spoken.__getitem__, default=parts[0].language)
    first = next((p for p in parts if p.language == language), parts[0])
    return Transcript(
        segments=segments,
        language=language,
        language_probability=first.language_probability,
        duration=parts[0].duration,
        model=first.model,
    )
