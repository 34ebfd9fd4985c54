"""Type stubs of the compiled PGCOPY encoder (ext/pgcopy.pyx)."""

import numpy as np

SIGNATURE: bytes
STAGING_COLUMNS: tuple[str, ...]

def encode(records: np.ndarray, first_seq: int = 0) -> bytearray: ...
def record_layout() -> tuple[int, dict[str, int]]: ...
