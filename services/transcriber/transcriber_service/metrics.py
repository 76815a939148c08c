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
DIARIZE_SECONDS = Histogram(
    "transcription_diarize_seconds",
    "Time to find the speakers of one `diarize` job's audio (after any wait for a slot).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
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
MODEL_BUSY_ANSWERS = Counter(
    "transcription_model_busy_answers_total",
    "Answers from the model tier saying its queue is full (a 429, or a 503 queue-full): "
    "the chunk waits and is sent again, spending no attempt. By HTTP status.",
    ["status"],
)
MODEL_CAPACITY_WAIT = Histogram(
    "transcription_model_capacity_wait_seconds",
    "Time one chunk waited for model capacity: for room in this transcriber's window, "
    "and after queue-full answers.",
    buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800),
)
MODEL_WINDOW = Gauge(
    "transcription_model_window",
    "Chunks this transcriber may have at the model tier at once (AIMD: halved on a "
    "queue-full answer, one more per window of successes, up to CHUNK_CONCURRENCY x "
    "WORKER_MAX_JOBS).",
)
MODEL_IN_FLIGHT = Gauge(
    "transcription_model_chunks_in_flight", "Chunks this transcriber has at the model tier."
)
MODEL_SATURATED = Gauge(
    "transcription_model_saturated",
    "1 while this transcriber's window is below its maximum because the model tier "
    "answered queue full; else 0.",
)
