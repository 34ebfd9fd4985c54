"""Type stubs of the compiled tick-file scanner (ext/tickfile.pyx)."""

import numpy as np
from numpy.typing import NDArray

SCAN_CODES: dict[str, int]
MAX_PAYLOAD: int

def crc32(data: bytes | memoryview, value: int = 0, simd: bool = True) -> int: ...
def find_good_record(buf: NDArray[np.uint8], pos: int, last_recv_ns: int) -> int: ...
def scan_records(
    buf: NDArray[np.uint8],
    pos: int,
    last_recv_ns: int,
    recv_ns: NDArray[np.int64],
    offsets: NDArray[np.int64],
    lengths: NDArray[np.int64],
    max_bytes: int = -1,
) -> tuple[int, int, int]: ...
