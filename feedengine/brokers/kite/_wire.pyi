"""Type stubs of the compiled decoder (ext/kite/_wire.pyx)."""

import numpy as np
from numpy.typing import NDArray

NUM_FAULTS: int
NEED_SPACE_CODE: int

def max_rows(message: bytes | memoryview) -> int: ...
def decode_into(
    message: bytes | memoryview, recv_ns: int, out: np.ndarray, start: int
) -> tuple[int, int]: ...
def decode_kernel_into(
    message: bytes | memoryview,
    recv_ns: int,
    out: np.ndarray,
    start: int,
    keys: NDArray[np.uint64],
    slots: NDArray[np.int32],
    shift: int,
) -> tuple[int, int]: ...
def decode_records(
    buf: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    lengths: NDArray[np.int64],
    recv_ns: NDArray[np.int64],
    first: int,
    out: np.ndarray,
    start: int,
    faults: NDArray[np.int64],
    fault_record: NDArray[np.int64],
    keys: NDArray[np.uint64],
    slots: NDArray[np.int32],
    shift: int,
) -> tuple[int, int]: ...
def struct_layout() -> dict[str, tuple[int, dict[str, int]]]: ...
