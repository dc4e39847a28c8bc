"""``python -m lrtui``: the same as the ``lrtui`` command."""

import sys

from lrtui.cli import main

sys.exit(main())
