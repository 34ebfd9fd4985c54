"""``python -m feedengine``."""

import sys

from feedengine.cli import main

if __name__ == "__main__":
    sys.exit(main())
