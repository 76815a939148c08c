"""HTTP routes: ``POST /v1/predict`` (one chunk, for the transcriber), and compatible
with OpenAI's API: ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations`` (a
whole file) and ``GET /v1/models`` (the served model)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response
from pydantic import AfterValidator

from model_server.audio import (
    decode_media,
    is_pcm,
    pcm_to_float32,
)
from model_server.errors import AudioTooLong, ModelNotReady
from model_server.files import UploadedFiles
from model_server.schemas import (
    Granularity,
    ModelCard,
    ModelList,
    PredictParams,
    ResponseFormat,
    TranscriptionJson,
    TranscriptionVerbose,
    VerboseSegment,
    VerboseWord,
    validate_language,
)
from model_server.service import ModelService
from model_server.settings import ModelServerSettings
from transcription_core.audio.pcm import SAMPLE_RATE
from transcription_core.errors import InvalidRequest, NotFound
from transcription_core.predict import PCM_CONTENT_TYPE, PredictResponse
from transcription_core.transcript import Segment, Transcript

router = APIRouter()

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}


def get_service(request: Request) -> ModelService:
    service: ModelService | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ModelNotReady("the model is not loaded yet")
    return service


def get_settings(request: Request) -> ModelServerSettings:
    settings: ModelServerSettings = request.app.state.settings
    return settings


def get_files(request: Request) -> UploadedFiles:
    files: UploadedFiles = request.app.state.files
    return files


ServiceDep = Annotated[ModelService, Depends(get_service)]
SettingsDep = Annotated[ModelServerSettings, Depends(get_settings)]
FilesDep = Annotated[UploadedFiles, Depends(get_files)]


@router.post(
    "/v1/predict",
    summary="Transcribe one chunk of audio",
    response_model=PredictResponse,
    responses={413: _PROBLEM, 422: _PROBLEM, 503: _PROBLEM},
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": f"`{PCM_CONTENT_TYPE}`: raw 16 kHz mono signed 16-bit "
            "little-endian PCM. Any other content type: an audio or video file.",
            "content": {PCM_CONTENT_TYPE: _BINARY, "application/octet-stream": _BINARY},
        }
    },
)
async def predict(
    request: Request,
    params: Annotated[PredictParams, Query()],
    service: ServiceDep,
    settings: SettingsDep,
) -> PredictResponse:
    """Times in the answer are seconds from the start of the chunk. Concurrent chunks
    are decoded together; a full queue answers 503 with Retry-After."""
    body = await request.body()
    content_type = request.headers.get("content-type")
    if is_pcm(content_type):
        _check_duration(len(body) // 2, settings.max_chunk_seconds, "MAX_CHUNK_SECONDS")
        audio = pcm_to_float32(body, content_type)
    else:
        audio = await asyncio.to_thread(
            decode_media,
            body,
            max_seconds=settings.max_chunk_seconds,
            limit_name="MAX_CHUNK_SECONDS",
        )
    result = await service.transcribe_chunk(
        audio,
        language=params.language,
        beam_size=params.beam_size,
        word_timestamps=params.word_timestamps,
        initial_prompt=params.initial_prompt,
        task=params.task,
        hotwords=params.hotwords,
        context=params.context_segments(),
    )
    return PredictResponse.from_transcript(result, service.model_name)


@router.get("/v1/models", summary="The served model (OpenAI-compatible)")
async def list_models(service: ServiceDep) -> ModelList:
    return ModelList(data=[ModelCard(id=service.model_name)])


@router.get("/v1/models/{model}", summary="The served model, by its id", responses={404: _PROBLEM})
async def get_model(model: str, service: ServiceDep) -> ModelCard:
    if model != service.model_name:
        raise NotFound(f"this server serves {service.model_name}, not {model}")
    return ModelCard(id=service.model_name)


@router.post(
    "/v1/audio/transcriptions",
    summary="Transcribe a file (OpenAI-compatible)",
    responses={
        200: {
            "content": {
                "application/json": {},
                "text/plain": {},
                "text/vtt": {},
            },
            "description": "`json`: {text}; `verbose_json`: with segments (and words); "
            "`text`, `srt`, `vtt`: plain text.",
        },
        413: _PROBLEM,
        422: _PROBLEM,
        503: _PROBLEM,
    },
)
async def create_transcription(
    service: ServiceDep,
    files: FilesDep,
    file: Annotated[UploadFile, File(description="The audio or video file.")],
    model: Annotated[str | None, Form(description="Accepted and ignored.")] = None,
    language: Annotated[
        str | None,
        Form(description="Language code; omit to detect."),
        AfterValidator(validate_language),
    ] = None,
    prompt: Annotated[str | None, Form(max_length=4000)] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
    timestamp_granularities: Annotated[
        list[Granularity] | None, Form(alias="timestamp_granularities[]")
    ] = None,
    stream: Annotated[bool, Form(description="Must be false: no streaming.")] = False,
) -> Any:
    """What the ``openai`` client's ``audio.transcriptions.create`` sends; the whole file
    is transcribed before the answer. It is decoded to a PCM file on disk and read back a
    batch of chunks at a time (``MAX_CONCURRENT_FILES`` at once; more wait)."""
    if stream:
        raise InvalidRequest(
            "streaming is not supported", errors=[{"field": "stream", "message": "must be false"}]
        )
    words = "word" in (timestamp_granularities or [])
    async with files.decoded(file.file) as pcm:
        transcript = await service.transcribe_file(
            pcm,
            language=language,
            prompt=prompt,
            temperature=temperature,
        )
    return _render(transcript, response_format, words)


@router.post(
    "/v1/audio/translations",
    summary="Translate a file's speech to English text (OpenAI-compatible)",
    responses={
        200: {"content": {"application/json": {}, "text/plain": {}, "text/vtt": {}}},
        413: _PROBLEM,
        422: _PROBLEM,
        503: _PROBLEM,
    },
)
async def create_translation(
    service: ServiceDep,
    files: FilesDep,
    file: Annotated[UploadFile, File(description="The audio or video file.")],
    model: Annotated[str | None, Form(description="Accepted and ignored.")] = None,
    prompt: Annotated[str | None, Form(max_length=4000)] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
) -> Any:
    """What the ``openai`` client's ``audio.translations.create`` sends: the speech, in
    whatever language, as English text. A multilingual model only (422 otherwise)."""
    service.check_capability("translate", None)
    async with files.decoded(file.file) as pcm:
        transcript = await service.transcribe_file(
            pcm, language=None, prompt=prompt, temperature=temperature, task="translate"
        )
    return _render(transcript, response_format, False, task="translate")


def _render(
    transcript: Transcript,
    response_format: ResponseFormat,
    words: bool,
    task: Literal["transcribe", "translate"] = "transcribe",
) -> Any:
    """The transcript in OpenAI's shapes (segments numbered from 0, as OpenAI does)."""
    segments = transcript.segments
    if response_format == "text":
        return PlainTextResponse(transcript.render("text") + "\n")
    if response_format == "srt":
        return PlainTextResponse(transcript.render("srt"))
    if response_format == "vtt":
        return Response(transcript.render("vtt"), media_type="text/vtt; charset=utf-8")
    if response_format == "json":
        return TranscriptionJson(text=transcript.text)
    return TranscriptionVerbose(
        task=task,
        language=transcript.language or "en",
        duration=round(transcript.duration, 3),
        text=transcript.text,
        segments=[_verbose(n, s) for n, s in enumerate(segments)],
        words=(
            [
                VerboseWord(word=w.word, start=round(w.start, 3), end=round(w.end, 3))
                for s in segments
                for w in s.words or []
            ]
            if words
            else None
        ),
    )


def _check_duration(samples: int, limit_seconds: float, setting: str) -> None:
    """For PCM, whose length is its size: before converting it."""
    seconds = samples / SAMPLE_RATE
    if seconds > limit_seconds:
        raise AudioTooLong(
            f"the audio lasts {seconds:.1f} s, over the {limit_seconds:g} s limit ({setting})"
        )


def _verbose(number: int, segment: Segment) -> VerboseSegment:
    decoding = segment.decoding
    assert decoding is not None, "the decoder describes every segment"
    return VerboseSegment(
        id=number,
        seek=decoding.seek,
        start=round(segment.start, 3),
        end=round(segment.end, 3),
        text=segment.text,
        tokens=decoding.tokens,
        temperature=decoding.temperature,
        avg_logprob=float(segment.avg_logprob or 0.0),
        compression_ratio=float(decoding.compression_ratio),
        no_speech_prob=float(segment.no_speech_prob or 0.0),
    )
