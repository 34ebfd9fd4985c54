"""Running sums, extremes and forward fills over rows grouped by instrument, vectorized."""

from __future__ import annotations

import numpy as np

__all__ = ["Groups"]


class Groups:
    """Rows grouped by instrument: ``counts[i]`` consecutive rows of instrument ``i``.

    Parameters
    ----------
    counts
        Rows per instrument, in instrument order.

    Attributes
    ----------
    inst
        Per row, its instrument.
    members
        Instruments with at least one row.
    starts, lasts
        Per member, its first and last row.
    rank
        Per row, the index of its instrument in ``members``.
    first
        Per row, the first row of its group.
    size
        Number of rows.
    """

    def __init__(self, counts: np.ndarray) -> None:
        n = len(counts)
        self.inst = np.repeat(np.arange(n), counts)
        self.members = np.flatnonzero(counts)
        sizes = counts[self.members]
        self.starts = np.cumsum(sizes) - sizes
        self.lasts = self.starts + sizes - 1
        self.rank = np.repeat(np.arange(len(sizes)), sizes)
        self.first = self.starts[self.rank]
        self.size = int(sizes.sum())

    def cumsum(self, x: np.ndarray) -> np.ndarray:
        """Running sum of ``x`` inside each group."""
        cs = np.cumsum(x)
        return cs - (cs[self.first] - x[self.first])

    def cummax(self, x: np.ndarray) -> np.ndarray:
        """Running maximum of integer ``x`` inside each group."""
        if not len(x):
            return x.astype(np.int64)
        x = x.astype(np.int64)
        lo = int(x.min())
        span = int(x.max()) - lo + 1
        if span * (int(self.rank[-1]) + 1) >= 2**62:
            raise OverflowError("values span too wide for a grouped running maximum")
        offset = self.rank * span
        result: np.ndarray = np.maximum.accumulate(x - lo + offset) - offset + lo
        return result

    def cummin(self, x: np.ndarray) -> np.ndarray:
        """Running minimum of integer ``x`` inside each group."""
        return -self.cummax(-x.astype(np.int64))

    def ffill(self, values: np.ndarray, mask: np.ndarray, carry: np.ndarray) -> np.ndarray:
        """Per row, ``values`` at the latest row of its group where ``mask`` (itself
        included); ``carry`` (per row) when there is none."""
        pos = np.where(mask, np.arange(len(mask)), -1)
        last = np.maximum.accumulate(pos) if len(pos) else pos
        return np.where(last >= self.first, values[np.maximum(last, 0)], carry)
