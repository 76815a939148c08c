"""The speech fixtures in ``tests/data`` (see its README) and their reference transcripts.

The references are what is said, as tests/data/README.md gives it: the MIT licence's
first paragraph as it is read in ``multilingual.mp3`` (without "(the Software)", as
faster-whisper's own test of that file expects); for ``hotwords.mp3``, whose README says
only that it contains "ComfyUI", the sentence Whisper base hears with ``hotwords="ComfyUI"``.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"

JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
#: The English half of multilingual.mp3 (its first 30 s).
MIT_TEXT = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
    "software and associated documentation files to deal in the software without "
    "restriction, including without limitation the rights to use, copy, modify, merge, "
    "publish, distribute, sublicense, and/or sell copies of the software, and to permit "
    "persons to whom the software is furnished to do so, subject to the following "
    "conditions: The above copyright notice and this permission notice shall be included "
    "in all copies or substantial portions of the software."
)
#: stereo_diarization.wav, left and right channels.
LEFT_TEXT = (
    "He began a confused complaint against the wizard, who had vanished behind the curtain "
    "on the left."
)
RIGHT_TEXT = "The horizon seems extremely distant."
HOTWORDS_TEXT = "Then you go into your ComfyUI folder again in the ComfyUI."
