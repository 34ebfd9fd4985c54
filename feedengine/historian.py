"""The historian: Kite's own candles for what the live feed missed, and after each close.

A thread of its own, with its own database connection and the process's shared limit on
historical requests, so the live path never waits for it (SPEC section 6):

- **Gap repair.** When the service starts mid-session, when a connection comes back after a
  minute or more without a message, or when ticks arrived too late for their candles, the
  instruments' candles of that span are fetched and the buckets that have no candle are
  filled. A candle the engine built live is never replaced mid-session (a fill inserts only
  what a table lacks, and only buckets the engine's clock has closed). A span whose last
  buckets have not closed yet is looked at again once they have.
- **Reconciliation after the close.** ``RECONCILE_AFTER_CLOSE`` minutes after each session's
  close, that session's instruments are reconciled with Kite's candles
  (:func:`feedengine.reconcile.reconcile`), while later sessions (MCX until 23:55) trade on.

Kite refusing the access token stops the historian with one error line, not the feed; any
other failure is one line, counted, and the next job goes on.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from feedengine.database import PostgresSink
from feedengine.errors import AuthError, FeedError
from feedengine.instruments import Instrument
from feedengine.reconcile import CandleHistory, reconcile, to_records
from feedengine.sessions import (
    IST,
    IST_OFFSET_NS,
    NS_PER_DAY,
    NS_PER_MIN,
    NS_PER_S,
    Session,
    ist_day,
    ist_midnight_ns,
)
from feedengine.source import Gap

log = logging.getLogger(__name__)

#: Repairs waiting at most; beyond it a gap is logged and left to the reconciliation after
#: the close (a feed that drops this often has a bigger problem to report).
MAX_PENDING_REPAIRS = 256
#: Longest the thread sleeps before it looks at the clock for a due reconciliation (s).
TICK_S = 1.0
#: Saturdays and Sundays have no sessions: nothing to reconcile.
WEEKEND = (5, 6)


@dataclass(frozen=True)
class Repair:
    """Fill the buckets of ``instruments`` overlapping ``[start_ns, end_ns)`` that have no
    candle."""

    instruments: tuple[Instrument, ...]
    start_ns: int
    end_ns: int
    reason: str
    #: Not before this instant (Unix ns): set when the span's last buckets were still open.
    not_before: int = 0


class Historian:
    """Repairs gaps and reconciles closed sessions on a thread of its own.

    Parameters
    ----------
    history
        Kite's candles (:class:`feedengine.brokers.kite.history.KiteHistory`).
    sink
        A database sink of the historian's own (its own connection).
    instruments, intervals
        What the service builds candles for.
    sessions
        Session by exchange name.
    reconcile_after_min
        Minutes after a session's close to reconcile it; 0 turns it off.
    grace_s
        The engine's grace: a bucket is closed once its end + grace has passed.
    clock
        Now, Unix ns.
    """

    def __init__(
        self,
        history: CandleHistory,
        sink: PostgresSink,
        instruments: Sequence[Instrument],
        intervals: tuple[int, ...],
        sessions: dict[str, Session],
        reconcile_after_min: float,
        grace_s: float,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.history = history
        self.sink = sink
        self.intervals = intervals
        self.grace_ns = int(grace_s * NS_PER_S)
        self.reconcile_after_min = reconcile_after_min
        self.clock = clock
        self._session_of = {i.key: sessions[i.market] for i in instruments}
        self._by_key = {i.key: i for i in instruments}
        self._by_session: dict[Session, list[Instrument]] = {}
        for inst in instruments:
            self._by_session.setdefault(self._session_of[inst.key], []).append(inst)
        self._jobs: queue.Queue[Repair] = queue.Queue(MAX_PENDING_REPAIRS)
        #: Repairs waiting for their last buckets to close (the thread's own).
        self._deferred: list[Repair] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="historian", daemon=True)
        self._done: set[tuple[Session, date]] = set()
        #: What it did, for the heartbeat.
        self.gaps_repaired = 0
        self.candles_filled = 0
        self.sessions_reconciled = 0
        self.candles_corrected = 0
        self.failures = 0
        self.stopped_reason: str | None = None

    # --- the service's side --------------------------------------------------------------

    def start(self) -> None:
        """Start the thread, with a repair of today's sessions that opened before now."""
        now = self.clock()
        today = ist_day(now)
        for session, insts in self._by_session.items():
            opened = ist_midnight_ns(today) + session.open_s * NS_PER_S
            if opened < now:
                self.repair(Repair(tuple(insts), opened, now, "the service started mid-session"))
        self._thread.start()

    def repair_gap(self, gap: Gap) -> None:
        """Queue the repair of a source's gap (any thread)."""
        instruments = tuple(self._by_key[t] for t in gap.keys if t in self._by_key)
        if instruments:
            self.repair(Repair(instruments, gap.start_ns, gap.end_ns, gap.reason))

    def repair(self, job: Repair) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            log.error(
                "historian: %d repairs waiting; %s left to the reconciliation after the close",
                MAX_PENDING_REPAIRS,
                job.reason,
            )

    def status(self) -> dict[str, Any]:
        return {
            "gaps_repaired": self.gaps_repaired,
            "candles_filled": self.candles_filled,
            "sessions_reconciled": self.sessions_reconciled,
            "candles_corrected": self.candles_corrected,
            "failures": self.failures,
            "pending": self._jobs.qsize() + len(self._deferred),
            "stopped": self.stopped_reason,
        }

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sink.close()

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=TICK_S)
            except queue.Empty:
                job = None
            try:
                now = self.clock()
                due = [j for j in self._deferred if j.not_before <= now]
                self._deferred = [j for j in self._deferred if j.not_before > now]
                for j in [job, *due] if job is not None else due:
                    self._repair(j)
                self._reconcile_due()
            except AuthError as e:
                self.stopped_reason = str(e)
                log.error("historian: %s; gap repair and reconciliation stop, the feed goes on", e)
                return
            except FeedError as e:
                self.failures += 1
                log.error("historian: %s", e)
            except Exception as e:  # a bug: said in one line, and the feed goes on
                self.failures += 1
                log.error("historian: %s: %s", type(e).__name__, e, exc_info=log.isEnabledFor(10))

    def _repair(self, job: Repair) -> None:
        now = self.clock()
        still_open = self._last_bucket_closes(job) + self.grace_ns
        deferred = still_open > now and not job.not_before
        if deferred:
            # The gap's last buckets are still open (a bucket that ends within the grace
            # before the link came back): fill what has closed now, the rest when it has.
            # Seen as a 1-minute candle missing for good when the gap ended 1 s after it.
            self._deferred.append(
                Repair(job.instruments, job.start_ns, job.end_ns, job.reason, still_open)
            )
        first = date(1970, 1, 1) + timedelta(days=ist_day(job.start_ns))
        last = date(1970, 1, 1) + timedelta(days=ist_day(max(job.start_ns, job.end_ns - 1)))
        records = []
        for inst in job.instruments:
            session = self._session_of[inst.key]
            for minutes in self.intervals:
                rows = self.history.candles(inst, minutes, first, last)
                starts = rows["bucket_start_ns"]
                day_close = (
                    (starts + IST_OFFSET_NS) // NS_PER_DAY * NS_PER_DAY
                    - IST_OFFSET_NS
                    + session.close_s * NS_PER_S
                )
                ends = np.minimum(starts + minutes * NS_PER_MIN, day_close)
                inside = (
                    (ends > job.start_ns) & (starts < job.end_ns) & (ends + self.grace_ns <= now)
                )
                if inside.any():
                    records.append(to_records(rows[inside], inst, minutes))
        filled = self.sink.write(np.concatenate(records), fill=True) if records else 0
        self.gaps_repaired += not deferred
        self.candles_filled += filled
        log.info(
            "gap repair (%s): filled %d candles of %d instruments between %s and %s",
            job.reason,
            filled,
            len(job.instruments),
            _clock_text(job.start_ns),
            _clock_text(job.end_ns),
        )

    def _last_bucket_closes(self, job: Repair) -> int:
        """The end of the latest bucket of any interval that lies inside the job's span.

        A bucket that reaches past the span's end is the live engine's (it has the ticks
        after the span); one that ended inside it has no candle until the repair fills it.
        """
        t = max(job.start_ns, job.end_ns - 1)
        latest = job.start_ns
        for session in {self._session_of[i.key] for i in job.instruments}:
            day_start = ist_midnight_ns(ist_day(t))
            open_ns = day_start + session.open_s * NS_PER_S
            close_ns = day_start + session.close_s * NS_PER_S
            if not open_ns <= t < close_ns:
                continue
            for minutes in self.intervals:
                length = minutes * NS_PER_MIN
                start = open_ns + (t - open_ns) // length * length
                end = min(start + length, close_ns)
                latest = max(latest, end if end <= job.end_ns else start)
        return latest

    def _due(self, session: Session, day: date) -> int:
        close = datetime.combine(day, session.close, IST)
        return int((close + timedelta(minutes=self.reconcile_after_min)).timestamp()) * NS_PER_S

    def _reconcile_due(self) -> None:
        if self.reconcile_after_min <= 0:
            return
        now = self.clock()
        today = date(1970, 1, 1) + timedelta(days=ist_day(now))
        if today.weekday() in WEEKEND:
            return
        for session, insts in self._by_session.items():
            if (session, today) in self._done or now < self._due(session, today):
                continue
            self._done.add((session, today))
            log.info(
                "reconciling today's %s-%s session with Kite's candles: %d instruments",
                session.open.strftime("%H:%M"),
                session.close.strftime("%H:%M"),
                len(insts),
            )
            report = reconcile(self.history, self.sink, insts, self.intervals, today, today)
            self.sessions_reconciled += 1
            self.candles_corrected += sum(t.changed for t in report.tallies.values())
            self.failures += len(report.failures)
            for line in report.lines():
                log.info("%s", line)


def _clock_text(ns: int) -> str:
    return f"{datetime.fromtimestamp(ns / 1e9, IST):%Y-%m-%d %H:%M:%S}"
