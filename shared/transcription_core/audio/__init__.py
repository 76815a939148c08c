"""Audio, for the services that hear it (the transcriber and the model server).

* :mod:`~transcription_core.audio.pcm`: the constants (16 kHz mono s16le) and PCM helpers;
* :mod:`~transcription_core.audio.decode`: bounded PyAV decoding of any media's audio, for
  a job's media file and a model server request body alike;
* :mod:`~transcription_core.audio.pcm_file`: that decoding into a PCM file on disk, for a
  job's media and a file uploaded to the model server's OpenAI endpoint alike;
* :mod:`~transcription_core.audio.chunking`: speech cut at pauses into chunks of ≤ 30 s,
  for the worker's jobs and the model server's OpenAI endpoint alike.

These modules import PyAV, NumPy and faster-whisper's VAD, which only the ``audio`` extra
installs (the transcriber's and the model server's extras pull it in): the rest of
``transcription_core``, and the enqueue and orchestrator services, never import this
package (``tests/unit/test_layout.py`` and ``tests/deploy/test_packaging.py`` check it).
"""
