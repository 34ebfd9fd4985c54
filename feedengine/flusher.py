"""The flusher thread: drains the candle ring into the sink, spilling when the sink is down.

It owns the sink. Rows wait at most :data:`FLUSH_INTERVAL` before they are written, in blocks
of up to :data:`BATCH_ROWS`; the producer nudges it sooner when the ring fills.

When a write fails because the sink is unavailable, the rows go to the fsynced spill file and
the flusher retries with exponential backoff (:data:`RETRY_FIRST_S` doubling to
:data:`RETRY_CAP_S`). While anything is spilled, new rows are appended behind it, so rows
reach the sink oldest first. A spill found at start is written before anything else.
Any other error is kept and raised in the producer's thread at its next wait or at
:meth:`Flusher.stop`: nothing vanishes with the thread.
"""

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from feedengine._candles import CandleKernel
from feedengine.dtypes import CANDLE_ROW_DTYPE
from feedengine.errors import FeedError, FlusherError, SinkDataError, SinkUnavailable
from feedengine.sink import Sink
from feedengine.spill import SpillFile

log = logging.getLogger(__name__)

#: Longest a completed candle waits in the ring before the flusher writes it (seconds).
FLUSH_INTERVAL = 0.2
#: Rows per sink write: one COPY and transaction; big enough to amortize a round trip.
BATCH_ROWS = 8192
#: Rows per sink write in a replay, where no one waits for a candle: fewer, larger
#: transactions (a quarter of the default candle ring).
REPLAY_BATCH_ROWS = 32768
#: First retry after a failed write, doubling on each failure up to the cap (seconds).
RETRY_FIRST_S = 1.0
RETRY_CAP_S = 30.0


class Flusher:
    """Drain ``kernel``'s candle ring into ``sink`` on a thread of its own.

    Parameters
    ----------
    kernel
        The producer's candle kernel (only its ring is touched, which is thread-safe).
    resolve
        Turns kernel rows into storable records (``CandleEngine.resolve``).
    sink
        An opened sink; the flusher is its only user while running.
    intervals
        Interval minutes by index, for the per-interval row counts.
    spill
        Where rows wait while the sink is unavailable; without one, a failed write is fatal.
    sink_ok
        Whether the sink opened (False: it was unavailable at start).
    """

    def __init__(
        self,
        kernel: CandleKernel,
        resolve: Callable[[np.ndarray], np.ndarray],
        sink: Sink,
        intervals: tuple[int, ...],
        spill: SpillFile | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        batch_rows: int = BATCH_ROWS,
        retry_first_s: float = RETRY_FIRST_S,
        retry_cap_s: float = RETRY_CAP_S,
        sink_ok: bool = True,
    ) -> None:
        self.kernel = kernel
        self.resolve = resolve
        self.sink = sink
        self.spill = spill
        self.flush_interval = flush_interval
        self.batch_rows = batch_rows
        self.retry_first_s = retry_first_s
        self.retry_cap_s = retry_cap_s
        #: Complete candles committed to the sink, in total and per interval (minutes).
        self.rows_written = 0
        self.rows_by_interval = dict.fromkeys(intervals, 0)
        self.flushes = 0
        self.failures = 0
        #: Called on this thread after each committed block with ``(seconds the write took,
        #: its records)``: the metrics' histograms (per flush, never per tick).
        self.on_flushed: Callable[[float, np.ndarray], None] | None = None
        #: Whether the sink took the last write, or opened when none was tried yet (the
        #: heartbeat's "database ok").
        self.sink_ok = sink_ok
        self._buf = np.empty(batch_rows, CANDLE_ROW_DTYPE)
        self._retry_delay = retry_first_s
        self._retry_at = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._drained = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flusher", daemon=True)

    @property
    def spilled(self) -> int:
        """Rows waiting in the spill file."""
        return self.spill.rows if self.spill is not None else 0

    def start(self) -> None:
        self._thread.start()

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.spilled:
                self._drain_spill()
            while True:
                stopping = self._stop.is_set()
                n = self.kernel.drain(self._buf)
                if n:
                    self._deliver(self.resolve(self._buf[:n]))
                    with self._drained:
                        self._drained.notify_all()
                    if n == len(self._buf):
                        continue
                if self.spilled and (stopping or time.monotonic() >= self._retry_at):
                    self._drain_spill()  # stopping: one last try, whatever the backoff
                if stopping and self.kernel.pending == 0:
                    return
                self._wake.wait(self.flush_interval)
                self._wake.clear()
        except BaseException as e:  # handed to the producer, never lost
            self._error = e
            with self._drained:
                self._drained.notify_all()

    def _count(self, records: np.ndarray) -> None:
        final = records[records["final"] == 1]
        self.rows_written += len(final)
        for minutes, count in zip(*np.unique(final["minutes"], return_counts=True), strict=True):
            self.rows_by_interval[int(minutes)] = self.rows_by_interval.get(int(minutes), 0) + int(
                count
            )
        self.flushes += 1

    def _deliver(self, records: np.ndarray) -> None:
        if self.spilled:
            assert self.spill is not None
            self.spill.append(records)  # behind the older rows, to keep their order
            return
        started = time.perf_counter()
        try:
            self.sink.write(records)
        except (SinkUnavailable, SinkDataError) as e:
            self._spill(records, e)
            return
        self._flushed(records, started)
        self.sink_ok = True
        log.debug("flushed %d candle rows", len(records))

    def _spill(self, records: np.ndarray, error: Exception) -> None:
        if self.spill is None:
            raise error
        self.spill.append(records)
        self.sink_ok = False
        self.failures += 1
        if isinstance(error, SinkDataError):
            raise error  # retrying cannot help; the rows are safe in the spill
        self._retry_at = time.monotonic() + self._retry_delay
        log.error(
            "candle write failed (%s); %d rows spilled to %s, retrying in %.0f s",
            error,
            self.spilled,
            self.spill.path,
            self._retry_delay,
        )
        self._retry_delay = min(self._retry_delay * 2, self.retry_cap_s)

    def _write(self, records: np.ndarray) -> None:
        started = time.perf_counter()
        self.sink.write(records)
        self._flushed(records, started)

    def _flushed(self, records: np.ndarray, started: float) -> None:
        self._count(records)
        if self.on_flushed is not None:
            self.on_flushed(time.perf_counter() - started, records)

    def _drain_spill(self) -> None:
        assert self.spill is not None
        total = self.spilled
        try:
            self.spill.drain(self._write, self.batch_rows)
        except SinkUnavailable as e:
            self.failures += 1
            self._retry_at = time.monotonic() + self._retry_delay
            log.error(
                "database still unavailable (%s); %d rows spilled, retrying in %.0f s",
                e,
                self.spilled,
                self._retry_delay,
            )
            self._retry_delay = min(self._retry_delay * 2, self.retry_cap_s)
            return
        self.sink_ok = True
        self._retry_delay = self.retry_first_s
        log.info("database back: wrote %d spilled candle rows", total)

    # --- the producer's side -------------------------------------------------------------

    def check(self) -> None:
        """Raise the thread's error, if it failed: a :class:`FeedError` as it is (its message
        names the problem), anything else (a bug) as :class:`FlusherError`."""
        error = self._error
        if isinstance(error, FeedError):
            raise error
        if error is not None:
            raise FlusherError(f"candle flusher failed: {type(error).__name__}: {error}") from error

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
