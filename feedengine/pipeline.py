"""The pipeline: source → compiled decoder → candle kernel → flusher → sink.

The calling thread reads message batches from the source, decodes each batch in one call
into a preallocated tick buffer and applies it to the kernel; the flusher thread writes the
completed candles. Per-tick work is all C, without the GIL.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feedengine import brokers
from feedengine.candles import CandleEngine
from feedengine.decoder import Decoder
from feedengine.dtypes import KTICK_DTYPE
from feedengine.errors import SinkUnavailable
from feedengine.flusher import BATCH_ROWS, REPLAY_BATCH_ROWS, RETRY_FIRST_S, Flusher
from feedengine.freshness import Staleness
from feedengine.sink import LoadingSink, Sink
from feedengine.source import Gap, MessageBatch, Source
from feedengine.spill import SpillFile

log = logging.getLogger(__name__)

#: How often a live run hands on the spans of ticks that came too late (seconds).
LATE_CHECK_S = 10.0
#: The bulk load's journal is the spill file's name with this suffix.
JOURNAL_SUFFIX = ".load"
#: Decoded ticks per kernel call; at least 65535 so that any single message fits (a Kite
#: message holds up to 65535 packets).
TICK_BUFFER = 1 << 16


@dataclass
class Summary:
    """What a run did, for the final report."""

    messages: int = 0
    ticks: int = 0
    wall_s: float = 0.0
    finished: bool = False
    spilled: int = 0
    candles: dict[int, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.wall_s if self.wall_s > 0 else 0.0

    def lines(self) -> list[str]:
        """The human-readable report."""
        c = self.counters
        late = ", ".join(f"{k[5:]} {v:,}" for k, v in c.items() if k.startswith("late_"))
        out = [
            f"messages read      {self.messages:,}",
            f"ticks decoded      {self.ticks:,}",
            "candles written    " + ", ".join(f"{m}m {n:,}" for m, n in self.candles.items()),
            f"pre-open ticks     {c.get('preopen', 0):,}",
            f"after-close ticks  {c.get('after_close', 0):,}",
            f"late ticks         {late}",
            f"unknown tokens     {c.get('unknown', 0):,} ticks",
            f"wall time          {self.wall_s:.2f} s",
            f"throughput         {self.ticks_per_s:,.0f} ticks/s",
        ]
        if any(self.faults.values()):
            out.append(
                "malformed messages "
                + ", ".join(f"{k.lower()} {v}" for k, v in self.faults.items() if v)
            )
        if not self.finished:
            out.append("stopped early      open candles written as in progress and checkpointed")
        if self.spilled:
            out.append(
                f"NOT WRITTEN        {self.spilled:,} candle rows remain in the spill "
                "file; they are written first on the next run"
            )
        return out


class Pipeline:
    """Run a source through the engine into a sink.

    Parameters
    ----------
    engine
        The candle engine (instruments, intervals, sessions).
    sink
        Where candles go; opened and closed by :meth:`run`.
    checkpoint
        Kernel checkpoint file: loaded at start if present, written at a graceful stop.
    spill
        Where candles wait while the sink is unavailable (None: a failed write is fatal).
    retry_first_s
        First retry delay after a failed write (doubles up to 30 s).
    """

    def __init__(
        self,
        engine: CandleEngine,
        sink: Sink,
        checkpoint: Path | None = None,
        spill: SpillFile | None = None,
        retry_first_s: float = RETRY_FIRST_S,
    ) -> None:
        self.engine = engine
        self.retry_first_s = retry_first_s
        self.sink = sink
        self.checkpoint = checkpoint
        self.spill = spill
        self.stop_event = threading.Event()
        self.summary = Summary()
        self.flusher: Flusher | None = None
        #: starting | running | stopping: what the heartbeat reports.
        self.state = "starting"
        #: Called after every batch (the replay progress bar) and when stopping begins.
        self.on_batch: Callable[[], None] | None = None
        self.on_stopping: Callable[[], None] | None = None
        self._source: Source | None = None
        self._stop_reason: str | None = None
        #: Called with each gap in a live stream, and the spans of late ticks: the
        #: historian repairs them.
        self.on_gap: Callable[[Gap], None] | None = None
        self.late_check_s = LATE_CHECK_S
        self._late_checked = 0.0
        self._live = False
        #: How far behind the exchange live ticks arrive (live runs only).
        self.staleness = Staleness()
        self._last_tick_wall: float | None = None
        self._decoder: Decoder | None = None
        #: Handed to the flusher (:attr:`Flusher.on_flushed`): the metrics' histograms.
        self.on_flushed: Callable[[float, np.ndarray], None] | None = None
        self._ticks = np.empty(TICK_BUFFER, KTICK_DTYPE)

    def stop(self, reason: str | None = None) -> None:
        """Ask :meth:`run` to stop after the current batch (thread- and signal-safe).

        ``reason`` is logged by :meth:`run`'s thread when it begins to stop.
        """
        if reason is not None:
            self._stop_reason = reason
        self.stop_event.set()

    @property
    def decoder(self) -> Decoder | None:
        """The running source's decoder (None before :meth:`run`): its fault counts."""
        return self._decoder

    @property
    def seconds_since_last_tick(self) -> float | None:
        """Since the last decoded tick (None before the first)."""
        last = self._last_tick_wall
        return None if last is None else time.time() - last

    def status(self) -> dict[str, Any]:
        """Counters for the heartbeat and the status line (any thread).

        Besides the totals: ``late_ticks`` (cumulative per interval, the heartbeat takes
        the last minute's), ``grace_s``, ``staleness_s`` (live ticks' receive minus
        exchange time over the last minute: ``p50``, ``max``, ``ticks``; None without
        any) and the source's ``recording`` state (None when not recording).
        """
        flusher = self.flusher
        engine = self.engine
        lag = self.seconds_since_last_tick
        connections = getattr(self._source, "status", [])
        return {
            "state": self.state,
            "ticks_total": self.summary.ticks,
            "candles_written": flusher.rows_written if flusher else 0,
            "rows_pending": engine.kernel.pending,
            "rows_spilled": flusher.spilled if flusher else 0,
            "seconds_since_last_tick": None if lag is None else round(lag, 3),
            "database_ok": bool(flusher is None or (flusher.sink_ok and not flusher.spilled)),
            "connections": [c.as_dict() for c in connections],
            "late_ticks": {
                f"{m}m": n
                for m, n in zip(engine.intervals, engine.kernel.late.tolist(), strict=True)
            },
            "grace_s": engine.config.grace_s,
            "staleness_s": self.staleness.summary() if self._live else None,
            "recording": getattr(self._source, "recording", None),
        }

    def run(
        self,
        source: Source,
        *,
        live: bool = False,
        finalize: bool = True,
        clock: Callable[[], int] = time.time_ns,
        load: bool = False,
    ) -> Summary:
        """Process ``source`` until it ends or :meth:`stop` is called.

        A replay that reaches its end finalizes every open candle (unless ``finalize`` is
        False: another file continues it). A stopped run, a live one, or an unfinalized
        replay writes its open candles as in-progress rows and checkpoints the kernel and
        the source position, so a restart resumes them.

        With ``load`` (a replay as fast as possible) a sink that can
        (:class:`~feedengine.sink.LoadingSink`) loads every candle into tables that do not
        exist yet in one transaction, committed when the run ends; it needs the spill,
        empty, to fall back on.
        """
        engine = self.engine
        broker = brokers.get(source.broker)
        decoder = self._decoder = broker.decoder(engine.slot_table)
        journal = None
        try:
            sink = self.sink
            if (
                load
                and self.spill is not None
                and not self.spill.rows
                and isinstance(sink, LoadingSink)
            ):
                if sink.open_load(engine.intervals, engine.instruments):
                    path = self.spill.path.with_name(self.spill.path.name + JOURNAL_SUFFIX)
                    path.unlink(missing_ok=True)  # a crashed load's, never committed
                    journal = SpillFile(path, durable=False)
            else:
                sink.open(engine.intervals, engine.instruments)
            sink_ok = True
        except SinkUnavailable as e:
            log.error("database unavailable at start (%s); candles will be spilled and retried", e)
            sink_ok = False
        except BaseException:
            self.sink.close()  # it may hold a connection and a thread
            raise
        flusher = self.flusher = Flusher(
            engine.kernel,
            engine.resolve,
            self.sink,
            engine.intervals,
            spill=self.spill,
            batch_rows=self._batch_rows(live),
            retry_first_s=self.retry_first_s,
            sink_ok=sink_ok,
            journal=journal,
        )
        flusher.on_flushed = self.on_flushed
        if self.checkpoint is not None and self.checkpoint.exists():
            if engine.load_checkpoint(self.checkpoint, source.resume):
                log.info("resumed open candles from checkpoint %s", self.checkpoint)
            else:
                log.info("checkpoint %s belongs to another run; starting afresh", self.checkpoint)
        flusher.start()
        started = time.perf_counter()
        ended = False
        self._source = source
        self._live = live
        try:
            source.start()
            self.state = "running"
            take_gaps: Callable[[], list[Gap]] | None = getattr(source, "take_gaps", None)
            for batch in source.batches():
                if take_gaps is not None:
                    self._gaps(take_gaps())
                self._apply(batch, flusher, decoder, broker.label)
                if live:
                    engine.advance_clock(clock(), flusher.wait_for_space)
                    if engine.kernel.pending:
                        flusher.nudge()  # a closed candle is written now, not in 200 ms
                    self._late_spans()
                if self.on_batch is not None:
                    self.on_batch()
                if self.stop_event.is_set():
                    break
            else:
                ended = not live
            if self._stop_reason is not None:
                log.info("%s", self._stop_reason)
            self.state = "stopping"
            log.debug("source ended after %.2f s", time.perf_counter() - started)
            if self.on_stopping is not None:
                self.on_stopping()
            self.summary.finished = ended and finalize
            if self.summary.finished:
                engine.finalize(flusher.wait_for_space)
            else:
                engine.snapshot_open(flusher.wait_for_space)
        finally:
            source.stop()
            try:
                flusher.stop()
            finally:
                self.sink.close()
                self.summary.wall_s = time.perf_counter() - started
        if self.checkpoint is not None:
            if self.summary.finished:
                self.checkpoint.unlink(missing_ok=True)
            else:
                engine.save_checkpoint(self.checkpoint, source.position())
                log.info("checkpointed open candles to %s", self.checkpoint)
        self.summary.spilled = flusher.spilled
        self.summary.candles = dict(flusher.rows_by_interval)
        self.summary.counters = engine.counters()
        self.summary.faults = decoder.fault_counts()
        return self.summary

    def _gaps(self, gaps: list[Gap]) -> None:
        """Before anything received after a gap: its instruments' next candles count their
        volume from their own first tick, not from before the gap; then it is handed on."""
        for gap in gaps:
            self.engine.mark_gap(gap.keys)
            if self.on_gap is not None:
                self.on_gap(gap)

    def _late_spans(self) -> None:
        """Now and then, hand on the spans in which ticks arrived too late for their
        candles (their buckets may have no candle at all)."""
        now = time.monotonic()
        if self.on_gap is None or now - self._late_checked < self.late_check_s:
            return
        self._late_checked = now
        gap = self.engine.take_late()
        if gap is not None:
            self.on_gap(gap)

    def _batch_rows(self, live: bool) -> int:
        """Rows per sink write: :data:`REPLAY_BATCH_ROWS` in a replay whose candle ring holds
        four such blocks, :data:`BATCH_ROWS` otherwise."""
        if live:
            return BATCH_ROWS
        return max(BATCH_ROWS, min(REPLAY_BATCH_ROWS, self.engine.config.ring_rows // 4))

    def _apply(self, batch: MessageBatch, flusher: Flusher, decoder: Decoder, label: str) -> None:
        first_bad = np.full(1, -1, np.int64)
        before = decoder.counts.copy()
        rec, n = 0, len(batch)
        while rec < n:
            rec, end = decoder.decode(batch, rec, self._ticks, first_bad)
            self.engine.process(self._ticks[:end], flusher.wait_for_space)
            self.summary.ticks += end
            if end:
                self._last_tick_wall = time.time()
                if self._live:
                    self.staleness.add(self._ticks[:end])
            if self.engine.kernel.pending >= flusher.batch_rows:
                flusher.nudge()
        self.summary.messages += n
        if first_bad[0] >= 0:
            log.warning(
                "malformed %s messages in this batch (%s); first received at %d ns; "
                "their good packets were kept",
                label,
                decoder.fault_counts(before),
                int(batch.recv_ns[first_bad[0]]),
            )
        flusher.check()
