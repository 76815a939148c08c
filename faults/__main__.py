"""``python -m faults``: see :mod:`faults.run`."""

import sys

from faults.run import main

sys.exit(main())
