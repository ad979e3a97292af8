"""``python -m scdgm``: the command line of :mod:`scdgm.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
