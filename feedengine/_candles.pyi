"""Type stubs of the compiled candle kernel (ext/candles.pyx)."""

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

COUNTER_NAMES: tuple[str, ...]

class CandleKernel:
    slots: np.ndarray
    bars: np.ndarray
    ring: np.ndarray
    counters: np.ndarray
    late: np.ndarray
    intervals: tuple[int, ...]
    interval_ns: tuple[int, ...]
    n_slots: int
    n_intervals: int
    grace_ns: int
    clock_ns: int
    pending: int
    capacity: int
    def __init__(
        self,
        tokens: ArrayLike,
        open_s: ArrayLike,
        close_s: ArrayLike,
        intervals: list[int],
        grace_ns: int = ...,
        ring_capacity: int = ...,
    ) -> None: ...
    def drain(self, out: np.ndarray) -> int: ...
    def process(self, ticks: np.ndarray, start: int = 0, end: int = -1) -> int: ...
    def advance_clock(self, now_ns: int) -> bool: ...
    def finalize(self) -> bool: ...
    def snapshot_open(self, start: int = 0) -> int: ...
    def mark_gap(self, slots: ArrayLike) -> None: ...
    def take_late(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def state(self) -> dict[str, Any]: ...
    def restore(self, state: dict[str, Any]) -> None: ...

def struct_layout() -> dict[str, tuple[int, dict[str, int]]]: ...
