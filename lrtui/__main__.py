"""``python -m lrtui``: the same as the ``lrtui`` command."""

import sys

from lrtui.cli import main

if __name__ == "__main__":
    sys.exit(main())
