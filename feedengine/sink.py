"""Where completed candles go: the sink interface and the in-memory and CSV sinks.

The flusher hands a sink blocks of ``RECORD_DTYPE`` candle records; a sink writes each block as one
unit (one transaction for a database) and raises on failure, so the flusher can spill and
retry. Writing the same candle again replaces it (the database upserts, the memory sink
overwrites; the CSV sink is an append-only log, the last line for a candle wins).
"""

import csv
import os
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol, TextIO, runtime_checkable

import numpy as np

from feedengine.errors import SinkDataError, SinkUnavailable
from feedengine.instruments import Instrument
from feedengine.sessions import IST, NS_PER_S

#: One candle as Python values:
#: (minutes, symbol, exchange, IST bucket start, o, h, l, c, volume).
CandleTuple = tuple[int, str, str, datetime, Decimal, Decimal, Decimal, Decimal, int]


def candle_tuples(records: np.ndarray) -> list[CandleTuple]:
    """``RECORD_DTYPE`` records as Python values with exact decimal prices (not for hot paths)."""
    out: list[CandleTuple] = []
    for r in records.tolist():
        start_ns, volume, o, h, lo, c, minutes, decimals, _final, symbol, exchange = r
        div = 10**decimals
        po, ph, pl, pc = (Decimal(price_text(p, div)) for p in (o, h, lo, c))
        start = datetime.fromtimestamp(start_ns // NS_PER_S, IST)
        out.append((minutes, symbol.decode(), exchange.decode(), start, po, ph, pl, pc, volume))
    return out


def price_text(units: int, div: int) -> str:
    """Exact decimal text of a price in integer units: ``price_text(157370, 100) == "1573.70"``.

    ``div`` is a power of ten, so the text has exactly its number of decimals.
    """
    places = len(str(div)) - 1
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), div)
    return f"{sign}{whole}.{frac:0{places}d}" if places else f"{sign}{whole}"


class Sink(Protocol):
    """A destination for candle rows."""

    def open(self, intervals: tuple[int, ...], instruments: Sequence[Instrument]) -> None:
        """Prepare to receive the candles of these intervals and instruments (connect,
        create tables, check that the instruments' candles can be kept apart).

        Raises :class:`~feedengine.errors.SinkUnavailable` when the destination cannot be
        reached now (the run goes on, spilling), any other ``FeedError`` when it cannot be
        used at all.
        """
        ...

    def write(self, records: np.ndarray) -> int:
        """Write one block of ``RECORD_DTYPE`` records as a unit; raise if it did not happen.
        Returns how many candles were written."""
        ...

    def close(self) -> None:
        """Release resources; rows written before stay written."""
        ...


@runtime_checkable
class LoadingSink(Sink, Protocol):
    """A sink that can also load a whole replay into new tables, committed at its end
    (:class:`~feedengine.database.PostgresSink`, :mod:`feedengine.bulkload`)."""

    @property
    def loading(self) -> bool:
        """Whether a load is open: rows written since it began are not committed yet."""
        ...

    def open_load(self, intervals: tuple[int, ...], instruments: Sequence[Instrument]) -> bool:
        """Begin a load when none of the destination's tables exists (True); otherwise
        :meth:`~Sink.open` and return False."""
        ...

    def commit_load(self) -> None:
        """Commit every row written since the load began; raise if that did not happen
        (the load is then over and its rows must be written again)."""
        ...


class MemorySink:
    """Keeps the latest version of each candle in a dict (tests): keyed by (minutes, symbol,
    exchange, IST bucket start)."""

    def __init__(self) -> None:
        self.candles: dict[tuple[int, str, str, datetime], tuple[Decimal | int, ...]] = {}
        self.writes = 0

    def open(self, intervals: tuple[int, ...], instruments: Sequence[Instrument]) -> None:
        pass

    def write(self, records: np.ndarray) -> int:
        for minutes, symbol, exchange, start, o, h, lo, c, volume in candle_tuples(records):
            self.candles[(minutes, symbol, exchange, start)] = (o, h, lo, c, volume)
        self.writes += 1
        return len(records)

    def close(self) -> None:
        pass


class CsvSink:
    """Appends rows to a CSV file:
    ``datetime,tradingsymbol,interval,open,high,low,close,volume,exchange``.

    ``datetime`` is the IST wall-clock bucket start. Re-emitted candles (in-progress
    snapshots, late updates) appear again; the last line of a candle is its value. The
    exchange comes last, so that readers of the earlier columns by position keep working.
    """

    HEADER = (
        "datetime",
        "tradingsymbol",
        "interval",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "exchange",
    )

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None

    def open(self, intervals: tuple[int, ...], instruments: Sequence[Instrument]) -> None:
        """Open the file for appending.

        Raises
        ------
        SinkDataError
            The file cannot be written (a missing folder, no permission), or it has other
            columns (an earlier version's, without the exchange): retrying cannot help.
        """
        try:
            self._file = open(self.path, "a+", newline="")  # noqa: SIM115 - closed by close()
            if self._file.tell() == 0:
                csv.writer(self._file).writerow(self.HEADER)
                return
            self._file.seek(0)
            header = next(csv.reader([self._file.readline()]), [])
        except OSError as e:
            raise SinkDataError(f"cannot write CSV file {self.path}: {e.strerror}") from None
        if tuple(header) != self.HEADER:
            self.close()
            raise SinkDataError(
                f"CSV file {self.path} has the columns {','.join(header)}, not "
                f"{','.join(self.HEADER)}: move it aside or name another file"
            )

    def write(self, records: np.ndarray) -> int:
        assert self._file is not None, "open() first"
        writer = csv.writer(self._file)
        try:
            for minutes, symbol, exchange, start, o, h, lo, c, volume in candle_tuples(records):
                dt = start.strftime("%Y-%m-%d %H:%M:%S")
                writer.writerow((dt, symbol, minutes, o, h, lo, c, volume, exchange))
            self._file.flush()
        except OSError as e:  # a full disk: the rows are spilled and retried
            raise SinkUnavailable(f"cannot write CSV file {self.path}: {e.strerror}") from None
        return len(records)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
