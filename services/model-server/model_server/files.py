"""Where a file uploaded to the OpenAI endpoints is decoded: a PCM file on disk, one at a
time per request and at most ``MAX_CONCURRENT_FILES`` at once.

Decoding a whole file into memory would make one request's memory follow the file's length
(4 h of float32: 0.9 GB, and the chunker's working copies on top). Instead the upload is
decoded into a temporary 16 kHz mono s16le PCM file (32 KB a second of audio, so at most
``MAX_FILE_SECONDS`` x 32 KB: 461 MB for 4 h), the chunks are planned from it window by
window and read back a batch at a time (:meth:`ModelService.transcribe_file`). Disk is
bounded by the settings too: at most ``MAX_CONCURRENT_FILES`` such files exist at once
(more requests wait their turn), each in its own directory under ``WORK_DIR``'s
``model-server-files`` (the system's temporary directory when empty), removed when the
request ends however it ends: an answer, a refusal, an error, or the client gone (a
decoding thread that is still writing is waited for before the file is removed and the
next request let in).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

from model_server.audio import decode_media_to_pcm
from model_server.settings import ModelServerSettings
from transcription_core.settings import work_root


class UploadedFiles:
    """Decodes uploads into PCM files, at most ``max_concurrent_files`` at once."""

    def __init__(self, settings: ModelServerSettings) -> None:
        self.max_seconds = settings.max_file_seconds
        self.work_dir = work_root(settings.work_dir) / "model-server-files"
        self._slots = asyncio.Semaphore(settings.max_concurrent_files)

    @asynccontextmanager
    async def decoded(self, upload: BinaryIO) -> AsyncIterator[Path]:
        """The upload decoded into a PCM file (refused with 413 or 422 as
        :func:`~model_server.audio.decode_media` refuses it), removed on exit."""
        async with self._slots:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
                pcm = Path(tmp) / "audio.pcm"
                decoding = asyncio.ensure_future(
                    asyncio.to_thread(
                        decode_media_to_pcm,
                        upload,
                        pcm,
                        max_seconds=self.max_seconds,
                        limit_name="MAX_FILE_SECONDS",
                    )
                )
                try:
                    await asyncio.shield(decoding)
                except asyncio.CancelledError:
                    # The thread cannot be stopped: let it finish (it is bounded by the
                    # limit) before its file is removed and the slot given up.
                    await asyncio.wait([decoding])
                    if not decoding.cancelled():
                        decoding.exception()  # retrieved: not logged as never retrieved
                    raise
                yield pcm
