"""Type stubs of the compiled PGCOPY encoder (ext/pgcopy.pyx)."""

import numpy as np

SIGNATURE: bytes
STAGING_COLUMNS: tuple[str, ...]
TABLE_COLUMNS: tuple[str, ...]
LAYOUT_STAGING: int
LAYOUT_TABLE_WALL: int
LAYOUT_TABLE_INSTANT: int

def encode(records: np.ndarray, layout: int = ..., exchange: bool = ...) -> bytearray: ...
def record_layout() -> tuple[int, dict[str, int]]: ...
