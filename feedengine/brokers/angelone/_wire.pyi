"""Type stubs of the compiled Angel One decoder (ext/angelone/_wire.pyx)."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

NUM_FAULTS: int

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
def fault_codes() -> dict[str, int]: ...
def wire_layout() -> dict[str, Any]: ...
