"""Reconciliation: make the candle tables equal to Kite's own candles (SPEC section 6).

For each instrument, interval and IST day, Kite's candles are compared with the stored ones:
a candle the table lacks is filled in, one that differs is corrected (the fields that differed
are counted), an equal one is left alone, and a stored candle Kite lacks is kept and reported
as extra. One transaction per instrument and day writes the candles of every interval and a
row per interval in ``feedengine_reconciliations`` (when, and the counts), so a failure leaves
that instrument's day as it was and the others stand. Running it twice changes nothing.
"""

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
from psycopg import sql

from feedengine.database import PostgresSink, StoredCandle
from feedengine.dtypes import RECORD_DTYPE
from feedengine.errors import AuthError, FeedError, SinkUnavailable, UsageError
from feedengine.instruments import Instrument
from feedengine.sessions import IST, NS_PER_DAY, Session, ist_midnight_ns
from feedengine.tables import LOCK_CLASS, decimals, lock_key

log = logging.getLogger(__name__)

#: One row per candle table, instrument and day reconciled: what the last reconciliation
#: found, so that users see which days are Kite-exact.
RECONCILIATIONS = "feedengine_reconciliations"
FIELDS = ("open", "high", "low", "close", "volume")
RECONCILIATIONS_DDL = sql.SQL(
    "CREATE TABLE IF NOT EXISTS {} (candle_table VARCHAR NOT NULL, day DATE NOT NULL, "
    "tradingsymbol VARCHAR NOT NULL, exchange VARCHAR NOT NULL, interval INTEGER NOT NULL, "
    "reconciled_at TIMESTAMPTZ NOT NULL, checked INTEGER NOT NULL, equal INTEGER NOT NULL, "
    "corrected INTEGER NOT NULL, filled INTEGER NOT NULL, extra INTEGER NOT NULL, "
    "corrected_fields VARCHAR NOT NULL, "
    "PRIMARY KEY (candle_table, day, tradingsymbol, exchange))"
).format(sql.Identifier(RECONCILIATIONS))
RECONCILIATIONS_UPSERT = sql.SQL(
    "INSERT INTO {} VALUES (%s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (candle_table, day, tradingsymbol, exchange) DO UPDATE SET "
    "reconciled_at = now(), checked = EXCLUDED.checked, equal = EXCLUDED.equal, "
    "corrected = EXCLUDED.corrected, filled = EXCLUDED.filled, extra = EXCLUDED.extra, "
    "corrected_fields = EXCLUDED.corrected_fields"
).format(sql.Identifier(RECONCILIATIONS))


class CandleHistory(Protocol):
    """Where Kite's candles come from (:class:`feedengine.brokers.kite.history.KiteHistory`)."""

    #: Requests sent so far.
    requests: int

    def candles(
        self, instrument: Instrument, minutes: int, first_day: date, last_day: date
    ) -> np.ndarray:
        """Kite's candles of those IST days: ``bucket_start_ns``, ``open``, ``high``,
        ``low``, ``close`` (integer price units), ``volume``, in time order."""
        ...


@dataclass
class Tally:
    """What a comparison found, for one or many instrument-days of one interval."""

    checked: int = 0
    equal: int = 0
    corrected: int = 0
    filled: int = 0
    extra: int = 0
    fields: Counter[str] = field(default_factory=Counter)

    def add(self, other: "Tally") -> None:
        self.checked += other.checked
        self.equal += other.equal
        self.corrected += other.corrected
        self.filled += other.filled
        self.extra += other.extra
        self.fields.update(other.fields)

    @property
    def changed(self) -> int:
        return self.corrected + self.filled

    def fields_text(self) -> str:
        return ", ".join(f"{name} {self.fields[name]:,}" for name in FIELDS if self.fields[name])


def _units(value: Decimal | None, divisor: int) -> int | None:
    """A stored price in integer units, or None when it is NULL or finer than the unit."""
    if value is None:
        return None
    units = value * divisor
    return int(units) if units == units.to_integral_value() else None


def compare(
    stored: Sequence[StoredCandle], kite: np.ndarray, divisor: int
) -> tuple[Tally, np.ndarray, list[int]]:
    """Compare one instrument-day-interval.

    Returns
    -------
    (Tally, numpy.ndarray, list of int)
        The counts, the indices of ``kite``'s rows to write (filled or corrected), and the
        bucket starts of the stored candles Kite lacks.
    """
    have = {row[0]: row for row in stored}
    tally = Tally(checked=len(kite))
    write = []
    for i, (start, *values) in enumerate(
        zip(*(kite[name].tolist() for name in ("bucket_start_ns", *FIELDS)), strict=True)
    ):
        row = have.pop(start, None)
        if row is None:
            tally.filled += 1
            write.append(i)
            continue
        mine = [_units(p, divisor) for p in row[1:5]] + [row[5]]
        differ = [name for name, a, b in zip(FIELDS, mine, values, strict=True) if a != b]
        if differ:
            tally.corrected += 1
            tally.fields.update(differ)
            write.append(i)
        else:
            tally.equal += 1
    tally.extra = len(have)
    return tally, np.array(write, np.int64), sorted(have)


def to_records(kite: np.ndarray, instrument: Instrument, minutes: int) -> np.ndarray:
    """Kite's candles as ``RECORD_DTYPE`` records of ``instrument`` (complete candles)."""
    out = np.zeros(len(kite), RECORD_DTYPE)
    for name in ("bucket_start_ns", *FIELDS):
        out[name] = kite[name]
    out["minutes"] = minutes
    out["decimals"] = decimals(instrument)
    out["final"] = 1
    out["symbol"] = instrument.tradingsymbol.encode()
    out["exchange"] = instrument.exchange.encode()
    return out


def parse_days(text: str, today: date) -> tuple[date, date]:
    """``YYYY-MM-DD`` or ``YYYY-MM-DD..YYYY-MM-DD`` as (first, last) IST days.

    Raises
    ------
    UsageError
        A malformed day, a range that ends before it starts, or a day after ``today``.
    """
    parts = text.split("..")
    try:
        if len(parts) > 2:
            raise ValueError
        first, last = date.fromisoformat(parts[0]), date.fromisoformat(parts[-1])
    except ValueError:
        raise UsageError(
            f"--reconcile: bad day {text!r}: expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
        ) from None
    if last < first:
        raise UsageError(f"--reconcile: {text} ends before it starts")
    if last > today:
        raise UsageError(f"--reconcile: {last} is in the future (today is {today} in IST)")
    return first, last


def refuse_open_sessions(
    last_day: date, sessions: Iterable[Session], now: datetime, margin_min: float
) -> None:
    """Refuse a day whose sessions have not all closed ``margin_min`` minutes ago: Kite's
    candles of a session are final only after it closes.

    Raises
    ------
    UsageError
        Naming the day and when it can be reconciled.
    """
    closes = [s.close for s in sessions]
    if not closes or last_day < now.astimezone(IST).date():
        return
    ready = datetime.combine(last_day, max(closes), IST) + timedelta(minutes=margin_min)
    if now < ready:
        raise UsageError(
            f"--reconcile: the session of {last_day} has not closed; reconcile it after "
            f"{ready:%H:%M} IST"
        )


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def day_range_ns(day: date) -> tuple[int, int]:
    """The instants ``[IST midnight of day, the next IST midnight)``."""
    start = ist_midnight_ns((day - date(1970, 1, 1)).days)
    return start, start + NS_PER_DAY


@dataclass
class Failure:
    instrument: Instrument
    day: date | None
    reason: str

    def __str__(self) -> str:
        when = f" {self.day}" if self.day else ""
        return f"{self.instrument.exchange}:{self.instrument.tradingsymbol}{when} ({self.reason})"


@dataclass
class Report:
    """A reconciliation's outcome, per interval, for the user."""

    first_day: date
    last_day: date
    intervals: tuple[int, ...]
    instruments: int = 0
    tallies: dict[int, Tally] = field(default_factory=dict)
    extras: list[tuple[Instrument, int, int]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    requests: int = 0

    def lines(self, max_extras: int = 10) -> list[str]:
        span = (
            f"{self.first_day}"
            if self.first_day == self.last_day
            else f"{self.first_day}..{self.last_day}"
        )
        out = [
            f"reconciled {span} against Kite: {self.instruments:,} instruments, "
            f"{len(self.intervals)} intervals, {self.requests:,} requests",
            f"{'interval':<9}{'checked':>10}{'equal':>10}{'corrected':>11}{'filled':>9}"
            f"{'extra':>8}  fields corrected",
        ]
        for minutes in self.intervals:
            t = self.tallies.get(minutes, Tally())
            out.append(
                f"{f'{minutes}m':<9}{t.checked:>10,}{t.equal:>10,}{t.corrected:>11,}"
                f"{t.filled:>9,}{t.extra:>8,}  {t.fields_text() or '-'}"
            )
        for inst, minutes, start in self.extras[:max_extras]:
            stamp = datetime.fromtimestamp(start // 10**9, IST)
            out.append(
                f"extra: {inst.exchange}:{inst.tradingsymbol} {minutes}m {stamp:%Y-%m-%d %H:%M} "
                "is stored but not among Kite's candles (kept)"
            )
        if len(self.extras) > max_extras:
            out.append(f"extra: ... and {len(self.extras) - max_extras:,} more")
        for failure in self.failures:
            out.append(f"NOT reconciled: {failure}")
        return out


def _bookkeeping(
    tables: Callable[[int], str], day: date, instrument: Instrument, tallies: dict[int, Tally]
) -> Callable[[Any], None]:
    """The statements recording one instrument-day in :data:`RECONCILIATIONS`."""

    def record(cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, lock_key(RECONCILIATIONS)))
        cur.execute(RECONCILIATIONS_DDL)
        for minutes, t in tallies.items():
            cur.execute(
                RECONCILIATIONS_UPSERT,
                (
                    tables(minutes),
                    day,
                    instrument.tradingsymbol,
                    instrument.exchange,
                    minutes,
                    t.checked,
                    t.equal,
                    t.corrected,
                    t.filled,
                    t.extra,
                    t.fields_text(),
                ),
            )

    return record


def reconcile(
    history: CandleHistory,
    sink: PostgresSink,
    instruments: Iterable[Instrument],
    intervals: tuple[int, ...],
    first_day: date,
    last_day: date,
) -> Report:
    """Make the tables of ``intervals`` equal to Kite's candles for these instruments and
    IST days; return what was found and done.

    An instrument whose history cannot be had, or a day that cannot be written, is a
    :class:`Failure` in the report (nothing of it written); the others go on.

    Raises
    ------
    AuthError
        Kite refused the credentials (nothing more can succeed).
    SinkUnavailable
        The database cannot be reached.
    """
    report = Report(first_day, last_day, intervals)
    report.tallies = {m: Tally() for m in intervals}
    sent = history.requests
    for instrument in instruments:
        report.instruments += 1
        divisor = 10**instrument.decimals
        try:
            kite = {m: history.candles(instrument, m, first_day, last_day) for m in intervals}
        except AuthError:
            raise
        except FeedError as e:
            report.failures.append(Failure(instrument, None, str(e)))
            log.warning("reconcile: %s", report.failures[-1])
            continue
        for day in days_between(first_day, last_day):
            start, end = day_range_ns(day)
            records, tallies, extras = [], {}, []
            for minutes, rows in kite.items():
                theirs = rows[(rows["bucket_start_ns"] >= start) & (rows["bucket_start_ns"] < end)]
                mine = sink.stored(minutes, instrument, start, end)
                if not len(theirs) and not mine:
                    continue
                tally, write, extra = compare(mine, theirs, divisor)
                tallies[minutes] = tally
                records.append(to_records(theirs[write], instrument, minutes))
                extras += [(instrument, minutes, s) for s in extra]
            if not tallies:
                continue
            try:
                sink.write(
                    np.concatenate(records),
                    also=_bookkeeping(sink.tables, day, instrument, tallies),
                )
            except SinkUnavailable:
                raise
            except FeedError as e:
                report.failures.append(Failure(instrument, day, str(e)))
                log.warning("reconcile: %s", report.failures[-1])
                continue
            for minutes, tally in tallies.items():
                report.tallies[minutes].add(tally)
            report.extras += extras
    report.requests = history.requests - sent
    return report
