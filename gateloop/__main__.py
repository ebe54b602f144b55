"""``python -m gateloop`` is the ``gateloop`` command."""

import sys

from gateloop.cli import main

sys.exit(main())
