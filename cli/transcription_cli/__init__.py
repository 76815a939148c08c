"""``transcription``, the operator's command line, and what every image runs.

The one package that imports several services: ``transcription serve NAME`` starts one,
``transcription run`` all four, ``transcription config`` reads their settings. The services
import only ``transcription_core``, and ``transcription_core`` imports none of them
(tests/unit/test_layout.py checks both).
"""
