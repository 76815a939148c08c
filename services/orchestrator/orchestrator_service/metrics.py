"""The orchestrator's Prometheus metrics (the queue gauges are refreshed every second, less
often when counting them is slow: ``service.gauge_interval``)."""

from prometheus_client import Counter, Gauge

QUEUE_DEPTH = Gauge("transcription_queue_depth", "Jobs in status QUEUED.")
OLDEST_QUEUED_AGE = Gauge(
    "transcription_oldest_queued_age_seconds", "Age of the oldest QUEUED job (0 when none)."
)
JOBS_IN_FLIGHT = Gauge("transcription_jobs_in_flight", "Jobs TRIGGERED or PROCESSING.")
JOBS_WAITING_RETRY = Gauge(
    "transcription_jobs_waiting_retry", "Jobs FAILED or SEND_FAILED, waiting for their retry."
)
MOST_TRIGGERS = Gauge(
    "transcription_job_most_triggers",
    "The most triggers any job not yet finished had since it was enqueued, requeued or "
    "redelivered.",
)
TRIGGER_LIMIT = Gauge(
    "transcription_job_trigger_limit",
    "The most triggers a job gets (retry.trigger_limit of MAX_ATTEMPTS and the webhook "
    "schedule); a due job at it is stopped instead.",
)
IN_FLIGHT_LIMIT = Gauge(
    "transcription_in_flight_limit",
    "The budget in force: MAX_CONCURRENT_TRANSCRIPTION_JOBS or its runtime override.",
)
REPLICAS = Gauge(
    "transcription_transcriber_replicas",
    "Transcriber replicas that reported within a lease and take work (not shutting down).",
)
SLOTS = Gauge(
    "transcription_transcriber_slots",
    "Job slots of those replicas (their WORKER_MAX_JOBS, summed).",
)
FREE_SLOTS = Gauge(
    "transcription_transcriber_free_slots",
    "Slots the orchestrator may fill now: free, on replicas not held back by the model tier.",
)
MODEL_SATURATED_REPLICAS = Gauge(
    "transcription_transcribers_model_saturated",
    "Replicas running jobs that report the model tier saturated: they get no new job.",
)
TRIGGERS = Counter(
    "transcription_triggers_total", "Triggers sent to the transcriber, by outcome.", ["outcome"]
)
RECOVERED = Counter(
    "transcription_jobs_recovered_total",
    "In-flight jobs whose lease expired (WORKER_LOST), by the status they went to.",
    ["to_status"],
)
ROUNDS = Counter("transcription_orchestrator_rounds_total", "Claim rounds run.")
STOPPED = Counter(
    "transcription_jobs_stopped_total",
    "Jobs stopped (PERMAFAILED) at the trigger limit instead of being triggered once more: "
    "something retried them beyond the policy.",
)
PURGED = Counter(
    "transcription_jobs_purged_total",
    "Finished jobs deleted with their events, chunks and transcripts, RETENTION_DAYS after "
    "they finished.",
)
