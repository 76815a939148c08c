"""``python -m transcription_cli``: the ``transcription`` command without its script."""

import sys

from transcription_cli.main import main

sys.exit(main())
