"""The answer of the model server's ``POST /v1/predict``: one schema, which the model
server writes and the transcriber's client reads, mapped to and from a
:class:`~transcription_core.transcript.Transcript`.

Times are seconds from the start of the chunk, rounded to the millisecond; scores to four
places.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from transcription_core.transcript import Segment, Transcript, Word

#: The content type of a chunk's samples: raw 16 kHz mono signed 16-bit little-endian PCM.
PCM_CONTENT_TYPE = "audio/x-pcm-s16le"


class PredictWord(BaseModel):
    start: float
    end: float
    word: str
    probability: float


class PredictSegment(BaseModel):
    start: float = Field(description="Seconds from the start of the chunk.")
    end: float
    text: str
    words: list[PredictWord] | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


class PredictResponse(BaseModel):
    segments: list[PredictSegment]
    language: str
    language_probability: float
    duration: float = Field(description="Seconds of audio in the chunk.")
    model: str

    @classmethod
    def from_transcript(cls, transcript: Transcript, model: str) -> PredictResponse:
        return cls(
            segments=[
                PredictSegment(
                    start=round(s.start, 3),
                    end=round(s.end, 3),
                    text=s.text,
                    words=(
                        None
                        if s.words is None
                        else [
                            PredictWord(
                                start=round(w.start, 3),
                                end=round(w.end, 3),
                                word=w.word,
                                probability=round(float(w.probability), 4),
                            )
                            for w in s.words
                        ]
                    ),
                    avg_logprob=_score(s.avg_logprob),
                    no_speech_prob=_score(s.no_speech_prob),
                )
                for s in transcript.segments
            ],
            language=transcript.language or "en",
            language_probability=round(transcript.language_probability, 4),
            duration=round(transcript.duration, 3),
            model=model,
        )

    def to_transcript(self) -> Transcript:
        return Transcript(
            segments=[
                Segment(
                    start=s.start,
                    end=s.end,
                    text=s.text,
                    words=(
                        None
                        if s.words is None
                        else [Word(w.start, w.end, w.word, w.probability) for w in s.words]
                    ),
                    avg_logprob=s.avg_logprob,
                    no_speech_prob=s.no_speech_prob,
                )
                for s in self.segments
            ],
            language=self.language,
            language_probability=self.language_probability,
            duration=self.duration,
            model=self.model,
        )


def _score(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
