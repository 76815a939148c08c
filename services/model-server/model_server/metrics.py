"""The model server's Prometheus metrics (requests by route and status come from
``transcription_core.http``). Throughput is ``rate(audio_seconds) / rate(compute_seconds)``:
seconds of audio transcribed per second the model was busy."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZE = Histogram(
    "transcription_model_batch_size",
    "Chunks decoded together in one model call.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256),
)
CHUNK_LATENCY = Histogram(
    "transcription_model_chunk_latency_seconds",
    "Time from a chunk's arrival in the queue to its transcript.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
AUDIO_SECONDS = Counter("transcription_model_audio_seconds_total", "Seconds of audio transcribed.")
COMPUTE_SECONDS = Counter(
    "transcription_model_compute_seconds_total", "Seconds the model spent decoding batches."
)
QUEUED_CHUNKS = Gauge(
    "transcription_model_queued_chunks", "Chunks waiting for the model (the running batch aside)."
)
REJECTED_CHUNKS = Counter(
    "transcription_model_rejected_chunks_total",
    "Chunks refused with 503 because the queue was full.",
)
MODEL_INFO = Gauge(
    "transcription_model_info",
    "1 for the model this server has loaded.",
    ["model", "device", "compute_type"],
)


class ModelMetrics:
    """Feeds the batcher's reports into the metrics above."""

    def queue_depth(self, queued: int) -> None:
        QUEUED_CHUNKS.set(queued)

    def batch_done(
        self, size: int, audio_seconds: float, compute_seconds: float, latencies: list[float]
    ) -> None:
        BATCH_SIZE.observe(size)
        AUDIO_SECONDS.inc(audio_seconds)
        COMPUTE_SECONDS.inc(compute_seconds)
        for latency in latencies:
            CHUNK_LATENCY.observe(latency)

    def rejected(self) -> None:
        REJECTED_CHUNKS.inc()
