"""The local Kite server's historical candles: the engine's candles of the market it plays.

A :class:`CandleBook` runs a :class:`~feedengine.candles.CandleEngine` over the messages
the server plays, in every interval Kite serves (``minute`` ... ``60minute``, and ``day``:
the session's candle stamped at IST midnight, as Kite stamps daily candles), with a grace
long enough that no tick is late, and answers ``/instruments/historical`` in Kite's JSON.
Tests may replace or remove a served candle (:meth:`CandleBook.override`) to make a stored
candle differ from Kite's.
"""

from collections.abc import Iterable
from enum import Enum
from typing import Any

import numpy as np
import orjson

from feedengine.brokers.kite import wire
from feedengine.brokers.kite.history import DAY_INTERVAL, HISTORY_DTYPE, KITE_INTERVALS
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.dtypes import CANDLE_ROW_DTYPE, KTICK_DTYPE
from feedengine.sessions import IST_OFFSET_NS, NS_PER_DAY

#: The ``day`` candles: one bucket longer than any session, so the session's whole candle.
DAY_MINUTES = 24 * 60
#: Minutes of each interval name the server serves.
SERVED_MINUTES: dict[str, int] = {name: m for m, name in KITE_INTERVALS.items()} | {
    DAY_INTERVAL: DAY_MINUTES
}
#: Grace of the book's engine: a tick an hour late still counts (Kite's candles are the
#: exchange's, so no tick is ever late for them).
BOOK_GRACE_S = 3600.0
#: Rows drained from the engine's ring at a time.
DRAIN_ROWS = 1 << 14
#: Initial tick buffer of the decoder (rows); doubled when a message needs more.
TICK_ROWS = 4096

#: One candle in integer units: (open, high, low, close, volume).
Candle = tuple[int, int, int, int, int]


class HistoryMode(Enum):
    """Which candles the local Kite server serves."""

    PLAYED = "played"  # of the ticks played so far, forming candles included (a live day)
    DAY = "day"  # of the whole stream, computed at start (a past day)
    NONE = "none"  # no history: every request is refused (HTTP 400)


class CandleBook:
    """The candles of a stream of Kite messages, in every interval Kite serves.

    Parameters
    ----------
    instruments
        The instruments of the stream; ticks of other tokens make no candle.
    """

    def __init__(self, instruments: list[KiteInstrument]) -> None:
        self.tokens = {i.instrument_token: slot for slot, i in enumerate(instruments)}
        self.engine = CandleEngine(
            instruments,
            CandleConfig(intervals=tuple(SERVED_MINUTES.values()), grace_s=BOOK_GRACE_S),
        )
        self._interval_index = {m: k for k, m in enumerate(self.engine.intervals)}
        self._divisors = self.engine.divisors
        self._ticks = np.empty(TICK_ROWS, KTICK_DTYPE)
        self._drain_buf = np.empty(DRAIN_ROWS, CANDLE_ROW_DTYPE)
        self._final: list[np.ndarray] = []
        self._forming: list[np.ndarray] = []
        self._merged: np.ndarray | None = None
        self._overrides: dict[tuple[int, int, int], Candle | None] = {}

    @classmethod
    def of_stream(
        cls, instruments: list[KiteInstrument], messages: Iterable[tuple[int, bytes]]
    ) -> "CandleBook":
        """The book of a whole stream, its last candles finalized."""
        book = cls(instruments)
        for recv_ns, message in messages:
            book.add(recv_ns, message)
        book.engine.finalize(book._drain)
        book._drain()
        return book

    def add(self, recv_ns: int, message: bytes) -> None:
        """Apply one message as received at ``recv_ns``."""
        while True:
            n, code = wire.decode_kernel_into(
                message, recv_ns, self._ticks, 0, self.engine.slot_table
            )
            if code != wire.NEED_SPACE:
                break
            self._ticks = np.empty(2 * len(self._ticks), KTICK_DTYPE)
        if n:
            self.engine.process(self._ticks[:n], self._drain)

    def override(
        self, token: int, minutes: int, bucket_start_ns: int, candle: Candle | None
    ) -> None:
        """Serve ``candle`` (integer units) for that bucket instead of the engine's, or no
        candle at all when it is None. ``bucket_start_ns`` as served (``day``: IST midnight)."""
        self._overrides[(token, minutes, bucket_start_ns)] = candle

    def candles(self, token: int, minutes: int, start_ns: int, end_ns: int) -> np.ndarray:
        """The served :data:`HISTORY_DTYPE` candles of ``token`` starting in
        ``[start_ns, end_ns]``, oldest first. ``minutes`` is one of :data:`SERVED_MINUTES`."""
        rows = self._rows()
        rows = rows[
            (rows["slot"] == self.tokens[token])
            & (rows["interval"] == self._interval_index[minutes])
        ]
        out = np.empty(len(rows), HISTORY_DTYPE)
        for name in ("bucket_start_ns", "volume", "open", "high", "low", "close"):
            out[name] = rows[name]
        if minutes == DAY_MINUTES:
            t = out["bucket_start_ns"]
            out["bucket_start_ns"] = t - (t + IST_OFFSET_NS) % NS_PER_DAY
        mine = {k[2]: v for k, v in self._overrides.items() if k[:2] == (token, minutes)}
        if mine:
            out = out[~np.isin(out["bucket_start_ns"], list(mine))]
            added = [(t, v, o, h, lo, c) for t, (o, h, lo, c, v) in _present(mine)]
            out = np.concatenate([out, np.array(added, HISTORY_DTYPE)])
        t = out["bucket_start_ns"]
        return np.sort(out[(t >= start_ns) & (t <= end_ns)], order="bucket_start_ns")

    def kite_json(self, token: int, minutes: int, start_ns: int, end_ns: int) -> bytes:
        """The body of Kite's answer: ``{"status": "success", "data": {"candles": [...]}}``,
        each candle ``["2025-07-10T09:15:00+0530", open, high, low, close, volume]``."""
        rows = self.candles(token, minutes, start_ns, end_ns)
        divisor = int(self._divisors[self.tokens[token]])
        ist = (rows["bucket_start_ns"] + IST_OFFSET_NS).astype("datetime64[ns]")
        stamps = [f"{s}+0530" for s in np.datetime_as_string(ist, unit="s").tolist()]
        prices = [_kite_numbers(rows[name], divisor) for name in ("open", "high", "low", "close")]
        candles = [list(c) for c in zip(stamps, *prices, rows["volume"].tolist(), strict=True)]
        return orjson.dumps({"status": "success", "data": {"candles": candles}})

    # --- the engine's rows --------------------------------------------------------------

    def _drain(self) -> None:
        kernel = self.engine.kernel
        while n := kernel.drain(self._drain_buf):
            rows = self._drain_buf[:n]
            final = rows["final"].astype(bool)
            if final.any():
                self._final.append(rows[final].copy())
                self._merged = None
            self._forming.append(rows[~final].copy())

    def _rows(self) -> np.ndarray:
        """Every candle so far: the completed ones and the forming ones (still open)."""
        self._drain()
        self._forming.clear()
        self.engine.snapshot_open(self._drain)
        self._drain()
        if self._merged is None:
            self._merged = np.concatenate([*self._final, _NO_ROWS])
            self._final = [self._merged]
        return np.concatenate([self._merged, *self._forming])


_NO_ROWS = np.empty(0, CANDLE_ROW_DTYPE)


def _present(candles: dict[int, Candle | None]) -> Iterable[tuple[int, Candle]]:
    """The (bucket start, candle) pairs that add or replace a candle, not remove one."""
    return ((t, c) for t, c in candles.items() if c is not None)


def _kite_numbers(units: np.ndarray, divisor: int) -> list[Any]:
    """Prices as Kite writes them: shortest decimals, whole ones without a point (1705).

    ``units / divisor`` is the double nearest the exact decimal (IEEE division rounds
    correctly), whose shortest round-trip text is that decimal.
    """
    whole = units % divisor == 0
    out = (units / divisor).astype(object)
    out[whole] = (units[whole] // divisor).astype(object)
    return list(out)
