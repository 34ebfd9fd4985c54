"""``python -m feedengine`` and the ``feedengine`` command."""

import os
import sys

# numpy's OpenBLAS starts a thread per core at import that spins for work feedengine never
# gives it (no linear algebra here): 1 % of a 2-core machine's samples in a replay. Set
# before anything imports numpy; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from feedengine.cli import main

if __name__ == "__main__":
    sys.exit(main())
