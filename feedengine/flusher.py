"""The flusher thread: drains the candle ring into the sink, spilling when the sink is down.

It owns the sink. Rows wait at most :data:`FLUSH_INTERVAL` before they are written, in blocks
of up to :data:`BATCH_ROWS`; the producer nudges it sooner when the ring fills.

When a write fails because the sink is unavailable, the rows go to the fsynced spill file and
the flusher retries with exponential backoff (:data:`RETRY_FIRST_S` doubling to
:data:`RETRY_CAP_S`). While anything is spilled, new rows are appended behind it, so rows
reach the sink oldest first. A spill found at start is written before anything else.
A replay's bulk load (:mod:`feedengine.bulkload`) commits only when the flusher stops; until
then its rows also wait in an unsynced journal, which a failed load moves to the spill.
Any other error is kept and raised in the producer's thread at its next wait or at
:meth:`Flusher.stop`: nothing vanishes with the thread.
"""

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from feedengine._candles import CandleKernel
from feedengine.dtypes import CANDLE_ROW_DTYPE, RECORD_DTYPE
from feedengine.errors import FeedError, FlusherError, SinkDataError, SinkUnavailable
from feedengine.sink import LoadingSink, Sink
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
    journal
        Given when the sink opened a bulk load (:class:`~feedengine.sink.LoadingSink`): the
        rows handed to it wait here too until the load commits, when the flusher stops;
        if it fails, they go to ``spill`` (required then).
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
        journal: SpillFile | None = None,
    ) -> None:
        self.kernel = kernel
        self.resolve = resolve
        self.sink = sink
        self.spill = spill
        self.flush_interval = flush_interval
        self.batch_rows = batch_rows
        self.retry_first_s = retry_first_s
        self.retry_cap_s = retry_cap_s
        #: Complete candles committed to the sink per interval (minutes).
        self.rows_by_interval = dict.fromkeys(intervals, 0)
        #: While the sink's bulk load is open (``sink.loading``): every row handed to it,
        #: so that a failed load spills them (needs ``spill``); None otherwise.
        self.journal = journal
        #: The load's complete candles per interval, counted as written when it commits.
        self._loaded: dict[int, int] = {}
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
    def rows_written(self) -> int:
        """Complete candles committed to the sink."""
        return sum(self.rows_by_interval.values())

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
                    if self.journal is None:
                        return
                    self._commit_load()  # a failed one is spilled: written on the next turn
                    continue
                self._wake.wait(self.flush_interval)
                self._wake.clear()
        except BaseException as e:  # handed to the producer, never lost
            self._error = e
            with self._drained:
                self._drained.notify_all()

    def _count(self, records: np.ndarray) -> None:
        """Count ``records``' complete candles as written (during a bulk load: when it
        commits)."""
        final = records["minutes"][records["final"] == 1]
        tally = self.rows_by_interval if self.journal is None else self._loaded
        for minutes, count in zip(*np.unique(final, return_counts=True), strict=True):
            tally[int(minutes)] = tally.get(int(minutes), 0) + int(count)
        self.flushes += 1

    def _deliver(self, records: np.ndarray) -> None:
        if self.spilled:
            assert self.spill is not None
            self.spill.append(records)  # behind the older rows, to keep their order
            return
        started = time.perf_counter()
        if self.journal is not None:
            try:
                self.journal.append(records)
            except OSError as e:  # a full disk: the load can no longer be retried whole
                log.warning(
                    "bulk load: cannot keep its journal in %s (%s); committing it now, the "
                    "rest is written the ordinary way",
                    self.journal.path,
                    e.strerror or e,
                )
                self._commit_load(records)
                if self.spilled:  # the load failed: these rows wait behind its rows
                    return
        try:
            self.sink.write(records)
        except (SinkUnavailable, SinkDataError) as e:
            if self.journal is not None:
                self._fail_load(e)
            else:
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

    def _commit_load(self, then: np.ndarray | None = None) -> None:
        """Commit the sink's bulk load; if that fails, spill its rows, and ``then`` (rows
        not handed to it yet) behind them."""
        assert self.journal is not None and isinstance(self.sink, LoadingSink)
        try:
            self.sink.commit_load()
        except (SinkUnavailable, SinkDataError) as e:
            self._fail_load(e, then)
            return
        self.journal.path.unlink(missing_ok=True)
        self.journal = None
        for minutes, count in self._loaded.items():
            self.rows_by_interval[minutes] = self.rows_by_interval.get(minutes, 0) + count
        log.info("bulk load committed: %d candles", sum(self._loaded.values()))
        self._loaded.clear()

    def _fail_load(self, error: Exception, then: np.ndarray | None = None) -> None:
        """The sink's bulk load failed and rolled back: every row handed to it goes to the
        spill, oldest first, then ``then``; they are written the ordinary way."""
        assert self.journal is not None and self.spill is not None
        self.spill.take(self.journal)
        self.journal.path.unlink(missing_ok=True)
        self.journal = None
        self._loaded.clear()
        self._spill(np.empty(0, RECORD_DTYPE) if then is None else then, error)

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
