"""``python -m fleet``: the same as the ``fleet`` command."""

import sys

from fleet.cli import main

sys.exit(main())
