"""How far behind the exchange a live stream runs: tick staleness over a trailing minute.

A tick's staleness is its receive time minus its exchange timestamp (only full-mode packets
carry one). Kite's exchange timestamps are whole seconds, cut down, so a staleness reads up
to 1 s more than the true delay. Each decoded batch is binned with numpy into the histogram
of the current second; the last :data:`WINDOW_S` seconds of histograms give the median and
the maximum. No Python work per tick.

Exchange timestamps hours away from the receive clock are not lag but another day (a
recording served as live) or a wrong clock: every such tick is late for its candle, so this
is said once, clearly.
"""

import logging
import threading
import time
from datetime import datetime

import numpy as np

from feedengine.sessions import IST, NS_PER_S

log = logging.getLogger(__name__)

#: Trailing window of the statistics (seconds).
WINDOW_S = 60
#: Histogram bin edges (seconds of staleness): 50 ms steps up to 5 s, where the 2 s grace
#: sits; 1 s steps up to a minute; minutes up to an hour. A median is read as its bin's
#: upper edge.
EDGES_S = np.concatenate(
    [np.arange(0.0, 5.0, 0.05), np.arange(5.0, 60.0, 1.0), np.arange(60.0, 3600.0, 60.0)]
)
#: Exchange timestamps this far from the receive clock are a wrong day or clock (seconds).
SKEW_S = 3600.0


class Staleness:
    """Staleness of live ticks over the last :data:`WINDOW_S` seconds (thread-safe).

    Parameters
    ----------
    window_s
        Seconds the statistics cover.
    """

    def __init__(self, window_s: int = WINDOW_S) -> None:
        self.window_s = window_s
        self._hist = np.zeros((window_s, len(EDGES_S) + 1), np.int64)
        self._max = np.zeros(window_s)
        self._second = np.full(window_s, -1, np.int64)  # the second each row counts
        self._lock = threading.Lock()
        self.skew_warned = False

    def add(self, ticks: np.ndarray) -> None:
        """Count a batch of neutral tick rows (``recv_ns``, ``event_ns`` fields).

        A row without an exchange time has the receive time as its event time: it says
        nothing of staleness and is left out.
        """
        stamped = ticks["event_ns"] != ticks["recv_ns"]
        if not stamped.any():
            return
        stale = (ticks["recv_ns"][stamped] - ticks["event_ns"][stamped]) * 1e-9
        if not self.skew_warned and np.abs(stale).min() > SKEW_S:
            self._warn_skew(stale, int(ticks["event_ns"][stamped][0]) // NS_PER_S)
        counts = np.bincount(
            np.searchsorted(EDGES_S, stale, side="right"), minlength=len(EDGES_S) + 1
        )
        second = int(time.monotonic())
        row = second % self.window_s
        with self._lock:
            if self._second[row] != second:
                self._second[row] = second
                self._hist[row] = 0
                self._max[row] = 0.0
            self._hist[row] += counts
            self._max[row] = max(self._max[row], float(stale.max()))

    def summary(self) -> dict[str, float | int] | None:
        """``{"p50": s, "max": s, "ticks": n}`` over the window; None without stamped ticks."""
        now = int(time.monotonic())
        with self._lock:
            rows = (self._second > now - self.window_s) & (self._second >= 0)
            hist = self._hist[rows].sum(axis=0)
            worst = float(self._max[rows].max()) if rows.any() else 0.0
        n = int(hist.sum())
        if n == 0:
            return None
        k = int(np.searchsorted(np.cumsum(hist), (n + 1) // 2))
        # Bin 0 holds negative staleness (a receive clock behind the exchange's): 0 s.
        median = 0.0 if k == 0 else worst if k == len(EDGES_S) else float(EDGES_S[k])
        return {"p50": round(min(median, worst), 3), "max": round(worst, 3), "ticks": n}

    def _warn_skew(self, stale: np.ndarray, exchange_s: int) -> None:
        self.skew_warned = True
        hours = float(np.median(stale)) / 3600
        log.warning(
            "exchange timestamps are %.0f hours %s this machine's clock (ticks of %s IST): "
            "every such tick is late for its candle and makes none. A recording served as "
            "live, or a wrong system clock?",
            abs(hours),
            "behind" if hours > 0 else "ahead of",
            datetime.fromtimestamp(exchange_s, IST).date(),
        )
