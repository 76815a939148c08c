"""Short one-line views of long values, for the text output of ``transcription jobs show``
(``--json`` prints every value whole)."""

from __future__ import annotations

import json
from typing import Any

#: Longest value printed whole on its line; a longer one is cut and says how long it is.
MAX_VALUE_CHARS = 200
#: How much of a transcript's text the summary of a webhook payload quotes.
QUOTE_CHARS = 60


def one_line(value: Any) -> str:
    """``value`` on one line of at most about ``MAX_VALUE_CHARS`` characters."""
    text = " ".join(str(value).split()) if value is not None else "None"
    if len(text) <= MAX_VALUE_CHARS:
        return text
    return f"{text[:MAX_VALUE_CHARS]}... ({len(text):,} characters; --json for all)"


def webhook_payload(payload: object) -> str:
    """What a stored webhook message is, in one line: its size, event, job status and
    transcript (segments, duration, the first words), never the whole body."""
    if not isinstance(payload, str):
        return str(payload)
    size = f"{len(payload.encode()):,} bytes"
    try:
        message = json.loads(payload)
    except ValueError:
        return f"{size}, not JSON (--json for all)"
    if not isinstance(message, dict):
        return f"{size} (--json for all)"
    parts = [size, str(message.get("type", "?"))]
    data = message.get("data")
    if isinstance(data, dict):
        parts.append(f"status {data.get('status', '?')}")
        transcript = data.get("transcript")
        if isinstance(transcript, dict):
            parts.append(_transcript(transcript))
        elif data.get("failure_reason"):
            parts.append(f"failure_reason {data['failure_reason']}")
    return ", ".join(parts) + " (--json for all)"


def _transcript(transcript: dict[str, Any]) -> str:
    segments = transcript.get("segments")
    said = []
    if isinstance(segments, list):
        said.append(f"{len(segments)} segments")
    duration = transcript.get("duration")
    if isinstance(duration, int | float):
        said.append(f"{duration:.1f} s")
    text = transcript.get("text")
    if isinstance(text, str) and text.strip():
        words = " ".join(text.split())
        cut = words if len(words) <= QUOTE_CHARS else words[:QUOTE_CHARS] + "..."
        said.append(f'"{cut}"')
    return "transcript: " + (" ".join(said) if said else "present")
