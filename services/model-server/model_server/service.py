"""The model server's use cases: one chunk (``/v1/predict``) and one whole file (OpenAI)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from model_server.batching import Batcher
from model_server.decoding import DEFAULT_TEMPERATURES, BatchOptions, ChunkRequest
from model_server.model import LoadedModel
from transcription_core.audio.chunking import Chunk, plan_chunks
from transcription_core.audio.pcm import SAMPLE_RATE, pcm_num_samples, read_pcm_float32
from transcription_core.errors import InvalidRequest
from transcription_core.options import Task, capability_problem
from transcription_core.transcript import Segment, Transcript

#: Longest chunk a file is cut into: one Whisper window.
CHUNK_SECONDS = 30.0


class ModelService:
    def __init__(self, model: LoadedModel, batcher: Batcher) -> None:
        self.model = model
        self.batcher = batcher

    @property
    def model_name(self) -> str:
        return self.model.name

    async def transcribe_chunk(
        self,
        audio: np.ndarray,
        *,
        language: str | None,
        beam_size: int = 5,
        word_timestamps: bool = False,
        initial_prompt: str | None = None,
        task: str = "transcribe",
        hotwords: str | None = None,
        context: tuple[tuple[float, float, str], ...] = (),
    ) -> Transcript:
        self.check_capability(task, language)
        return await self.batcher.submit(
            ChunkRequest(audio, language, initial_prompt, word_timestamps, task, hotwords, context),
            BatchOptions(beam_size=beam_size),
        )

    def check_capability(self, task: str, language: str | None) -> None:
        """Refuse (422) what an English-only model cannot do: translate, or hear another
        language. The enqueue service refuses such jobs first (``MODEL``); this is for a
        deployment whose settings disagree, and for the OpenAI endpoint."""
        problem = capability_problem(
            self.model.name, Task(task), language, english=not self.model.multilingual
        )
        if problem is not None:
            field = "task" if task == Task.TRANSLATE else "language"
            raise InvalidRequest(problem, errors=[{"field": field, "message": problem}])

    async def transcribe_file(
        self,
        audio: np.ndarray | Path,
        *,
        language: str | None,
        prompt: str | None = None,
        temperature: float = 0.0,
        task: str = "transcribe",
    ) -> Transcript:
        """Cut the file into ≤ 30 s chunks and decode them through the batcher; every
        segment with its words (which the caller shows or not).

        A file that fits one window is one chunk, whole; a longer one is cut at pauses by
        the worker's chunker (:mod:`transcription_core.audio.chunking`), and stretches
        without speech between its chunks are not transcribed (no speech: no segments).
        A file whose language is not given takes the language detected in its first chunk
        (as ``transcribe()`` takes it from the first 30 s). Chunks are submitted a batch at
        a time, so one long file never fills the queue; the first batch is refused with
        503 if the queue is full, later ones wait for room.

        ``audio``: float32 samples, or a 16 kHz mono s16le PCM file, which is planned
        window by window and whose chunks are read a batch at a time: then only the
        samples of the batch in flight are in memory, however long the file.
        """
        self.check_capability(task, language)
        num_samples = pcm_num_samples(audio) if isinstance(audio, Path) else audio.shape[0]
        duration = num_samples / SAMPLE_RATE
        if num_samples <= CHUNK_SECONDS * SAMPLE_RATE:
            pieces = [Chunk(0, 0, num_samples)]
        else:
            pieces = await asyncio.to_thread(plan_chunks, audio, max_chunk_s=CHUNK_SECONDS)
        options = BatchOptions(
            beam_size=5,
            # OpenAI: 0 means "raise the temperature when decoding fails".
            temperatures=DEFAULT_TEMPERATURES if temperature == 0 else (temperature,),
        )

        async def requests(window: list[Chunk]) -> list[ChunkRequest]:
            if isinstance(audio, Path):
                chunks = await asyncio.to_thread(_read_chunks, audio, window)
            else:
                chunks = [audio[p.start_sample : p.end_sample] for p in window]
            # Words are always aligned: they give the segments times to the word (a
            # segment's start and end are its first word's and last word's), as precise
            # as the job API's; they are shown only when asked for.
            return [ChunkRequest(samples, language, prompt, True, task) for samples in chunks]

        results: list[Transcript] = []
        remaining = list(pieces)
        if language is None and self.model.multilingual and remaining:
            (first_request,) = await requests([remaining.pop(0)])
            first = await self.batcher.submit(first_request, options)
            del first_request
            results.append(first)
            language = first.language
        step = self.batcher.max_batch_size
        for start in range(0, len(remaining), step):
            window = remaining[start : start + step]
            admitted = bool(results) or start > 0
            batch = await requests(window)
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [
                        group.create_task(
                            self.batcher.submit(chunk, options, wait_for_room=admitted)
                        )
                        for chunk in batch
                    ]
            except ExceptionGroup as failed:
                raise failed.exceptions[0] from None  # e.g. QueueFull: the others are cancelled
            results.extend(task.result() for task in tasks)
            del batch, tasks  # this batch's samples, before the next one is read

        segments: list[Segment] = []
        for piece, result in zip(pieces, results, strict=True):
            offset = piece.start_s
            segments.extend(segment.shifted(offset) for segment in result.segments)
        first_result = results[0] if results else None
        return Transcript(
            segments=segments,
            language=first_result.language if first_result else (language or "en"),
            language_probability=first_result.language_probability if first_result else 0.0,
            duration=duration,
            model=self.model_name,
        )


def _read_chunks(pcm: Path, pieces: list[Chunk]) -> list[np.ndarray]:
    """The pieces' samples of a PCM file, as float32 (only their spans are read)."""
    return [read_pcm_float32(pcm, piece.start_sample, piece.end_sample) for piece in pieces]
