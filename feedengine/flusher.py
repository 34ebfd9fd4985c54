"""The flusher thread: drains the candle ring into the sink.

It owns the sink. Rows wait at most :data:`FLUSH_INTERVAL` before they are written, in blocks
of up to :data:`BATCH_ROWS`; the producer nudges it sooner when the ring fills. An error in the
thread is kept and raised in the producer's thread at its next wait or at :meth:`stop`.
"""

import logging
import threading

import numpy as np

from feedengine._candles import CandleKernel
from feedengine.dtypes import CANDLE_ROW_DTYPE
from feedengine.sink import Sink

log = logging.getLogger(__name__)

#: Longest a completed candle waits in the ring before the flusher writes it (seconds).
FLUSH_INTERVAL = 0.2
#: Rows per sink write: one COPY/transaction; big enough to amortize a round trip.
BATCH_ROWS = 8192


class FlusherError(RuntimeError):
    """The flusher thread failed; the cause is chained."""


class Flusher:
    """Drain ``kernel``'s candle ring into ``sink`` on a thread of its own.

    Parameters
    ----------
    kernel
        The producer's candle kernel (only its ring is touched, which is thread-safe).
    sink
        An opened sink; the flusher is its only user while running.
    intervals
        Interval minutes by index, for the per-interval row counts.
    """

    def __init__(
        self,
        kernel: CandleKernel,
        sink: Sink,
        intervals: tuple[int, ...],
        flush_interval: float = FLUSH_INTERVAL,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.kernel = kernel
        self.sink = sink
        self.flush_interval = flush_interval
        self.rows_written = 0
        self.flushes = 0
        self.rows_by_interval = dict.fromkeys(intervals, 0)
        self._intervals = intervals
        self.batch_rows = batch_rows
        self._buf = np.empty(batch_rows, CANDLE_ROW_DTYPE)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._drained = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                stopping = self._stop.is_set()
                n = self.kernel.drain(self._buf)
                if n:
                    self._write(self._buf[:n])
                    with self._drained:
                        self._drained.notify_all()
                    if n == len(self._buf):
                        continue
                if stopping and self.kernel.pending == 0:
                    return
                self._wake.wait(self.flush_interval)
                self._wake.clear()
        except BaseException as e:  # handed to the producer, never lost
            self._error = e
            with self._drained:
                self._drained.notify_all()

    def _write(self, rows: np.ndarray) -> None:
        self.sink.write(rows)
        self.flushes += 1
        final = rows[rows["final"] == 1]
        self.rows_written += len(final)
        counts = np.bincount(final["interval"], minlength=len(self._intervals))
        for minutes, count in zip(self._intervals, counts.tolist(), strict=True):
            self.rows_by_interval[minutes] += count
        log.debug("flushed %d candle rows", len(rows))

    def check(self) -> None:
        """Raise :class:`FlusherError` if the thread has failed."""
        if self._error is not None:
            raise FlusherError(f"candle flusher failed: {self._error}") from self._error

    def nudge(self) -> None:
        """Ask for a flush now rather than at the next interval."""
        self._wake.set()

    def wait_for_space(self) -> None:
        """Block briefly until the flusher has drained rows (the ring was full)."""
        self.check()
        self._wake.set()
        with self._drained:
            self._drained.wait(self.flush_interval)
        self.check()

    def stop(self) -> None:
        """Write every row still in the ring, stop the thread, raise its error if any."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self.check()
