"""A service's Prometheus metrics read back, and the model server's batching from them.

Only httpx and prometheus_client: ``bench gpu`` uses it on machines with nothing of the
rest of the testing kit (``bench.stack`` re-exports it).
"""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def metrics(url: str) -> dict[str, float]:
    """A service's ``/metrics`` as ``{"name{label=value,...}": value}``."""
    text = httpx.get(url + "/metrics", timeout=10).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 4) for k, v in after.items()}


def model_server_summary(delta: dict[str, float]) -> dict[str, Any]:
    """Batches, chunks, mean batch size, audio and compute seconds from a metrics delta."""
    batches = delta.get("transcription_model_batch_size_count", 0.0)
    chunks = delta.get("transcription_model_batch_size_sum", 0.0)
    audio = delta.get("transcription_model_audio_seconds_total", 0.0)
    compute = delta.get("transcription_model_compute_seconds_total", 0.0)
    sizes = {
        k.split("le=")[1].rstrip("}"): v
        for k, v in delta.items()
        if k.startswith("transcription_model_batch_size_bucket")
    }
    return {
        "batches": int(batches),
        "chunks": int(chunks),
        "mean_batch_size": round(chunks / batches, 2) if batches else None,
        "batch_size_cumulative_buckets": sizes,
        "audio_seconds": round(audio, 1),
        "compute_seconds": round(compute, 2),
        "audio_seconds_per_compute_second": round(audio / compute, 1) if compute else None,
        "rejected_chunks": int(delta.get("transcription_model_rejected_chunks_total", 0.0)),
    }
