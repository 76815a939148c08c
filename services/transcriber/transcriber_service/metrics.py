"""The transcriber's Prometheus metrics."""

from prometheus_client import Counter, Gauge, Histogram

JOBS_ACTIVE = Gauge("transcription_worker_jobs_active", "Jobs this worker is working on.")
TRIGGERS_REFUSED = Counter(
    "transcription_worker_triggers_refused_total", "Triggers refused: this worker was full."
)
JOBS_ENDED = Counter(
    "transcription_jobs_ended_total",
    "Attempts that ended, by the status they left the job in and the failure reason.",
    ["status", "reason"],
)
ATTEMPTS = Counter("transcription_job_attempts_total", "Job attempts started by this worker.")
WEBHOOK_DELIVERIES = Counter(
    "transcription_webhook_deliveries_total",
    "Webhook deliveries, by event type and outcome (delivered, failed).",
    ["event", "outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "transcription_webhook_delivery_seconds",
    "Time to a webhook receiver's answer.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHUNK_LATENCY = Histogram(
    "transcription_chunk_seconds",
    "Time for one chunk at the model server, retries included, seen from the worker.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
CHUNKS = Counter(
    "transcription_chunks_total", "Chunks of audio, by source (model, saved).", ["source"]
)
AUDIO_SECONDS = Counter(
    "transcription_audio_seconds_total", "Seconds of media audio transcribed to the end."
)
MODEL_ERRORS = Counter(
    "transcription_model_errors_total", "Chunks the model server failed after every retry."
)
