"""Type stubs of the compiled PGCOPY encoder (ext/pgcopy.pyx)."""

import numpy as np

SIGNATURE: bytes
STAGING_COLUMNS: tuple[str, ...]

def encode(records: np.ndarray) -> bytearray: ...
def record_layout() -> tuple[int, dict[str, int]]: ...
