"""A synthetic Kite market: one trading session as Kite's binary WebSocket messages.

The simulator produces what a Kite Connect WebSocket would have delivered for a universe of
instruments over one IST trading day (SPEC sections 2-4): binary messages of many packets,
about every :data:`FRAME_MS` milliseconds, and a 1-byte heartbeat after each second without
data. :func:`simulate` writes them to a tick file (SPEC section 3); :func:`messages` yields
them as ``(recv_ns, message)`` for a live ``--simulate`` source or a local Kite server.

The market model
----------------
* Universe: mostly NSE stocks (the first ones real Nifty 50 names, then ``SYM0001`` ...), a
  few indices (``NIFTY 50``, ``NIFTY BANK`` ...), NFO futures, CDS currency futures, MCX and
  NCO commodity futures; or exactly the instruments of a symbols file. Tokens are
  ``exchange_token << 8 | segment`` with exchange tokens hashed from the symbol, so a symbol
  keeps its token from run to run and seed to seed.
* Tick rates are heavy-tailed (log-normal, capped at :data:`MAX_RATE` per second) and
  scaled so the session holds about ``ticks`` ticks; NSE-hours instruments follow a
  U-shaped intraday profile.
* Prices are random walks on each instrument's tick size, kept positive and inside int32
  integer units. Packets carry the day's open/high/low, the previous close, a rising
  cumulative volume, last traded quantity, average price, buy/sell quantities, five depth
  levels each side and open interest for derivatives.
* Trades also happen between two ticks (the volume a tick adds beyond its own trade): they
  reach past both ticks' prices, so the next packet's day high or low can be a price no
  tick had, as Kite's one snapshot a second shows (SPEC section 4, extremes between
  snapshots).
* NSE stocks have a pre-open: quiet indicative ticks from 09:00 (volume 0, last trade on the
  previous day), the auction match at a random second between 09:07 and 09:08 (one full
  packet each, whose last trade time is the match time on the trading date and whose volume
  is the pre-open volume), quiet again until the 09:15 open; after the 15:30 close a few
  ticks without trades until 15:35. Indices and NFO trade 09:15-15:30, CDS 09:00-17:00,
  MCX and NCO 09:00-23:55, all clipped to the simulated window.
* A tick's receive time is its exchange time plus a latency of 50-1500 ms (log-normal),
  never before the instrument's previous tick; it goes out in the next message of the frame
  grid (``start + k * frame_ms``), so with the default 250 ms frames every tick reaches the
  engine within its 2 s grace. Inside a message packets are grouped by kind (full, quote,
  index full, index quote, ltp), then by instrument, each instrument's in exchange order.

Everything is vectorized with numpy, a chunk of :data:`CHUNK_SECONDS` at a time, so memory
stays bounded (about 100 MB) and a 20 M-tick, 3000-instrument day (3.7 GB) is written in
12-20 s on two cores. The same :class:`SimConfig` gives
the same messages (numpy ``Generator(PCG64)`` seeded from ``seed``); the tick file differs
only in the ``created_utc`` header field unless that is fixed too.

The sample file ``samples/sample.ticks`` (45 Nifty stocks, NIFTY 50 and NIFTY BANK, full
mode, 09:00-15:35 on 2024-01-15) is regenerated with::

    .venv/bin/python -m feedengine.simulator --out samples/sample.ticks --instruments 47 \\
        --indices 2 --nfo 0 --cds 0 --mcx 0 --nco 0 --ticks 22000 --mode full --seed 1 \\
        --created-utc 2024-01-15T00:00:00+00:00
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import os
import queue
import sys
import threading
import time as time_module
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import Any, NoReturn

import numpy as np

from feedengine.brokers.kite import wire
from feedengine.brokers.kite.dtypes import DEPTH
from feedengine.brokers.kite.segments import DIVISORS, Segment
from feedengine.sessions import IST
from feedengine.tickfile import TickWriter, make_meta

__all__ = [
    "MODES",
    "SimConfig",
    "SimConfigError",
    "SimStats",
    "instruments",
    "main",
    "messages",
    "read_symbols_file",
    "sim_meta",
    "simulate",
]

# ---------------------------------------------------------------------------------------
# Defaults and model constants
# ---------------------------------------------------------------------------------------

NS = 1_000_000_000
#: A Monday: an ordinary NSE trading day.
DEFAULT_DATE = date(2024, 1, 15)
#: NSE's pre-open starts at 09:00; a few after-close ticks arrive until about 15:35.
DEFAULT_START = time(9, 0)
DEFAULT_END = time(15, 35)
DEFAULT_INSTRUMENTS = 50
#: Default tick budget per instrument: a busy real day is about 20 M ticks over 3000
#: subscribed instruments.
DEFAULT_TICKS_PER_INSTRUMENT = 20_000_000 // 3000
#: Kite batches ticks into a message a few times a second; every 250 ms gives the 100-500
#: packets a message of a 3000-instrument subscription carries.
FRAME_MS = 250
#: Kite sends a 1-byte heartbeat when a second passes without data.
HEARTBEAT_MS = 1000
HEARTBEAT = b"\x00"
#: Session seconds generated at a time. Bounds memory (a 20 M-tick day has ~30 k ticks in
#: 30 s, ~100 MB of working arrays); larger chunks are no faster (they fall out of cache).
CHUNK_SECONDS = 30
#: Chunks generated ahead of the tick file writer (~5 MB of messages each on a busy day).
WRITE_AHEAD_CHUNKS = 8
#: A message's packet count is a big-endian u16.
MAX_PACKETS = 65535
#: Network and exchange latency between a tick's exchange time and its arrival: log-normal
#: around a median, clipped to a range. The upper bound plus one frame stays below the
#: engine's 2 s grace (SPEC section 4), so the simulator produces no late ticks.
LATENCY_MIN_MS, LATENCY_MAX_MS = 50, 1500
LATENCY_MEDIAN_MS = 150.0
LATENCY_SIGMA = 0.7
#: Kite sends at most a few updates a second per instrument; index values once a second.
MAX_RATE = 3.0
INDEX_MAX_RATE = 1.0
#: Spread of per-instrument liquidity (log-normal sigma): the top 10 % of instruments get
#: over half of the ticks, as in a real subscription of a few thousand names.
RATE_SIGMA = 1.6
#: Fraction of ticks in the session that report a trade; the rest are order-book updates.
P_TRADE = 0.75
#: Tick-rate multipliers of the quiet phases (pre-open order entry and buffer, after close).
QUIET_RATE, BUFFER_RATE, AFTER_RATE = 0.02, 0.02, 0.05
#: Share of pre-open order-entry ticks that move the indicative price.
P_QUIET_MOVE = 0.5
#: The unreported trades between two snapshots reach beyond both snapshots' prices by a
#: half-normal number of price steps, in units of the instrument's per-trade step: the
#: next packet's day high/low can show a price no tick had (SPEC section 4).
BETWEEN_REACH = 0.5
#: The pre-open order entry closes at a random second in [09:07, 09:08); the match ticks
#: then arrive over this many seconds.
MATCH_SPREAD_S = 30
#: After-close ticks (no trades) arrive for this long after the close.
AFTER_CLOSE_S = 300
#: U-shaped intraday activity of NSE-hours instruments: extra weight at the open and close
#: decaying with these time constants (seconds).
OPEN_BOOST, OPEN_DECAY_S = 1.5, 1200.0
CLOSE_BOOST, CLOSE_DECAY_S = 0.8, 1800.0
#: Opening gap against the previous close (fraction, normal sigma).
GAP_SIGMA = 0.005
#: Prices never go below this many ticks (keeps five depth levels of bids positive).
FLOOR_TICKS = 40
#: ... nor so high that the asks above them leave int32 (CDS prices < 214 rupees).
CEIL_MARGIN_TICKS = 64
INT32_MAX = 2**31 - 1
#: Cumulative volumes are kept below this (int32 on the wire) with room to spare.
VOLUME_BUDGET = 1_000_000_000
#: Rows of the tables of minor random quantities (order book, trade size, latency ...)
#: that a tick picks with one random draw instead of drawing forty; enough rows that no
#: pattern shows.
DRAW_ROWS = 4096
#: Largest contract size given to a stock future (keeps a day's volume inside int32).
MAX_LOT = 10_000
#: Exchange tokens are hashed into this range (keeps tokens positive as int32).
TOKEN_SPACE = 1 << 22

MODES = ("full", "quote", "ltp", "mixed")

# Packet lengths (SPEC section 2) and the order of kinds inside a message.
PKT_LTP, PKT_INDEX_QUOTE, PKT_INDEX_FULL, PKT_QUOTE, PKT_FULL = (
    wire.PACKET_LTP,
    wire.PACKET_INDEX_QUOTE,
    wire.PACKET_INDEX_FULL,
    wire.PACKET_QUOTE,
    wire.PACKET_FULL,
)
KIND_ORDER = (PKT_FULL, PKT_QUOTE, PKT_INDEX_FULL, PKT_INDEX_QUOTE, PKT_LTP)

# Instrument classes: how an instrument trades through the day.
EQUITY, DERIV, INDEX, CURRENCY, COMMODITY = range(5)
N_CLASSES = 5
# Phases of a class at a time of day.
CLOSED, QUIET, MATCH, BUFFER, NORMAL, AFTER = range(6)


def _hms(h: int, m: int, s: int = 0) -> int:
    return h * 3600 + m * 60 + s


PREOPEN_S = _hms(9, 0)
MATCH_EARLIEST_S = _hms(9, 7)
NSE_OPEN_S, NSE_CLOSE_S = _hms(9, 15), _hms(15, 30)
CDS_OPEN_S, CDS_CLOSE_S = _hms(9, 0), _hms(17, 0)
MCX_OPEN_S, MCX_CLOSE_S = _hms(9, 0), _hms(23, 55)

# ---------------------------------------------------------------------------------------
# Reference data: plausible names, prices (rupees, early 2024) and contract specs
# ---------------------------------------------------------------------------------------

#: Nifty 50 constituents with an approximate price, most liquid first.
NIFTY50: tuple[tuple[str, float], ...] = (
    ("RELIANCE", 2600),
    ("HDFCBANK", 1650),
    ("ICICIBANK", 1000),
    ("INFY", 1600),
    ("TCS", 3800),
    ("ITC", 465),
    ("SBIN", 640),
    ("LT", 3500),
    ("BHARTIARTL", 1050),
    ("KOTAKBANK", 1850),
    ("AXISBANK", 1120),
    ("HINDUNILVR", 2550),
    ("BAJFINANCE", 7300),
    ("ASIANPAINT", 3250),
    ("MARUTI", 10000),
    ("HCLTECH", 1550),
    ("SUNPHARMA", 1350),
    ("TITAN", 3800),
    ("ULTRACEMCO", 10000),
    ("WIPRO", 470),
    ("NTPC", 310),
    ("M&M", 1650),
    ("POWERGRID", 240),
    ("TATAMOTORS", 800),
    ("NESTLEIND", 2500),
    ("JSWSTEEL", 830),
    ("TATASTEEL", 135),
    ("ADANIENT", 3100),
    ("ADANIPORTS", 1150),
    ("ONGC", 230),
    ("COALINDIA", 380),
    ("BAJAJFINSV", 1650),
    ("HDFCLIFE", 630),
    ("GRASIM", 2100),
    ("TECHM", 1300),
    ("SBILIFE", 1450),
    ("BRITANNIA", 5000),
    ("INDUSINDBK", 1650),
    ("CIPLA", 1300),
    ("DRREDDY", 5800),
    ("EICHERMOT", 3900),
    ("DIVISLAB", 3700),
    ("APOLLOHOSP", 5900),
    ("HEROMOTOCO", 4400),
    ("BAJAJ-AUTO", 7000),
    ("BPCL", 470),
    ("HINDALCO", 570),
    ("TATACONSUM", 1150),
    ("UPL", 580),
    ("LTIM", 5800),
)
#: NSE indices with an approximate level.
INDICES: tuple[tuple[str, float], ...] = (
    ("NIFTY 50", 21700),
    ("NIFTY BANK", 47500),
    ("NIFTY FIN SERVICE", 21200),
    ("NIFTY IT", 37000),
    ("NIFTY MIDCAP 50", 13500),
    ("INDIA VIX", 14),
    ("NIFTY NEXT 50", 55000),
    ("NIFTY AUTO", 18800),
    ("NIFTY PHARMA", 17500),
    ("NIFTY FMCG", 56000),
    ("NIFTY METAL", 7900),
    ("NIFTY 100", 21900),
    ("NIFTY ENERGY", 35000),
    ("NIFTY REALTY", 850),
    ("NIFTY PSU BANK", 5900),
)
#: Index futures: underlying, index it tracks, lot size.
INDEX_FUTURES: tuple[tuple[str, str, int], ...] = (
    ("NIFTY", "NIFTY 50", 50),
    ("BANKNIFTY", "NIFTY BANK", 15),
    ("FINNIFTY", "NIFTY FIN SERVICE", 40),
)
#: Currency futures: pair, price (rupees), tick size 0.0025 rupee.
CURRENCIES: tuple[tuple[str, float], ...] = (
    ("USDINR", 83.1),
    ("EURINR", 90.9),
    ("GBPINR", 105.8),
    ("JPYINR", 56.4),
)
CURRENCY_TICK = 0.0025
#: MCX commodity futures: name, price (rupees), tick size (rupees).
MCX_CONTRACTS: tuple[tuple[str, float, float], ...] = (
    ("CRUDEOIL", 6000, 1.0),
    ("GOLD", 62500, 1.0),
    ("SILVER", 72000, 1.0),
    ("NATURALGAS", 220, 0.1),
    ("COPPER", 720, 0.05),
    ("ZINC", 225, 0.05),
    ("ALUMINIUM", 205, 0.05),
    ("LEAD", 185, 0.05),
    ("NICKEL", 1450, 0.1),
    ("GOLDM", 62400, 1.0),
    ("SILVERM", 71900, 1.0),
    ("CRUDEOILM", 6010, 1.0),
)
#: NSE commodity (NCO) futures: name, price, tick size; prices stay inside int32 at the
#: NCO divisor of 10 000.
NCO_CONTRACTS: tuple[tuple[str, float, float], ...] = (
    ("GOLDPETAL", 6250, 1.0),
    ("SILVERMIC", 71800, 1.0),
    ("GOLDGUINEA", 50200, 1.0),
    ("CRUDEOIL", 5990, 1.0),
    ("NATURALGAS", 221, 0.1),
    ("COPPER", 719, 0.05),
)
EQUITY_TICK = 0.05
INDEX_TICK = 0.05
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
#: Exchange names accepted in symbols files, with their segment.
_EXCHANGES = {
    "NSE": Segment.NSE,
    "BSE": Segment.BSE,
    "NFO": Segment.NFO,
    "BFO": Segment.BFO,
    "CDS": Segment.CDS,
    "BCD": Segment.BCD,
    "MCX": Segment.MCX,
    "NCO": Segment.NCO,
    "INDICES": Segment.INDICES,
}
_CLASS_OF_SEGMENT = {
    Segment.NSE: EQUITY,
    Segment.BSE: EQUITY,
    Segment.NFO: DERIV,
    Segment.BFO: DERIV,
    Segment.CDS: CURRENCY,
    Segment.BCD: CURRENCY,
    Segment.MCX: COMMODITY,
    Segment.NCO: COMMODITY,
    Segment.INDICES: INDEX,
}


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


class SimConfigError(ValueError):
    """A simulator configuration or symbols file that cannot be used (one-line message)."""


@dataclass(frozen=True)
class SimConfig:
    """What to simulate.

    Parameters
    ----------
    instruments
        Size of the generated universe (default 50); must be ``None`` with ``symbols``.
    ticks
        Target number of ticks for the whole session (approximate; default
        :data:`DEFAULT_TICKS_PER_INSTRUMENT` per instrument).
    date
        Trading date (IST).
    start, end
        Simulated window, IST wall-clock times on ``date``; ``end`` after ``start``.
    mode
        ``full`` (184-byte packets, 32-byte index full), ``quote`` (44 / 28), ``ltp`` (8) or
        ``mixed`` (full, quote and ltp by turns over the instruments).
    seed
        Seed of the random generator; the same config gives the same messages.
    indices, nfo, cds, mcx, nco
        Instruments of each kind in a generated universe (``None``: a few, growing with
        ``instruments``); the rest are NSE stocks. Must be ``None`` with ``symbols``.
    symbols
        ``(exchange, tradingsymbol)`` pairs: the universe is exactly these (see
        :func:`read_symbols_file`).
    frame_ms
        Message interval: ticks received in a window go out in one message at its end.
        Up to 500 ms every tick still reaches the engine within its 2 s grace.
    chunk_seconds
        Session seconds generated at a time (memory bound; changes the random stream).
    created_utc
        Fixes the tick file's ``created_utc`` header field (default: now), for
        byte-identical files.
    """

    instruments: int | None = None
    ticks: int | None = None
    date: dt.date = DEFAULT_DATE
    start: dt.time = DEFAULT_START
    end: dt.time = DEFAULT_END
    mode: str = "full"
    seed: int = 1
    indices: int | None = None
    nfo: int | None = None
    cds: int | None = None
    mcx: int | None = None
    nco: int | None = None
    symbols: tuple[tuple[str, str], ...] | None = None
    frame_ms: int = FRAME_MS
    chunk_seconds: int = CHUNK_SECONDS
    created_utc: str | None = None

    def __post_init__(self) -> None:
        counts = {
            "indices": self.indices,
            "nfo": self.nfo,
            "cds": self.cds,
            "mcx": self.mcx,
            "nco": self.nco,
        }
        if self.mode not in MODES:
            raise SimConfigError(f"unknown mode {self.mode!r} (choose from {', '.join(MODES)})")
        if self.symbols is not None:
            if not self.symbols:
                raise SimConfigError("the symbols list is empty")
            given = [k for k, v in counts.items() if v is not None]
            if self.instruments is not None or given:
                names = ", ".join(
                    ["instruments", *given] if self.instruments is not None else given
                )
                raise SimConfigError(f"{names} cannot be combined with a symbols list")
        elif self.instruments is not None and self.instruments < 1:
            raise SimConfigError(f"instruments must be at least 1, not {self.instruments}")
        for name, value in counts.items():
            if value is not None and value < 0:
                raise SimConfigError(f"{name} must not be negative, not {value}")
        if self.symbols is None:
            explicit = sum(v for v in counts.values() if v is not None)
            if explicit > self.n_instruments:
                raise SimConfigError(
                    f"{explicit} indices and derivatives do not fit in "
                    f"{self.n_instruments} instruments"
                )
        if self.ticks is not None and self.ticks < 0:
            raise SimConfigError(f"ticks must not be negative, not {self.ticks}")
        if self.end <= self.start:
            raise SimConfigError(f"end {self.end:%H:%M} is not after start {self.start:%H:%M}")
        if not 10 <= self.frame_ms <= 60_000:
            raise SimConfigError(f"frame interval must be 10-60000 ms, not {self.frame_ms}")
        if not 10 <= self.chunk_seconds <= 600:
            raise SimConfigError(f"chunk must be 10-600 s, not {self.chunk_seconds}")
        if self.seed < 0:
            raise SimConfigError(f"seed must not be negative, not {self.seed}")

    @property
    def n_instruments(self) -> int:
        """Number of instruments in the universe."""
        if self.symbols is not None:
            return len(self.symbols)
        return DEFAULT_INSTRUMENTS if self.instruments is None else self.instruments

    @property
    def target_ticks(self) -> int:
        """The session's tick target."""
        if self.ticks is not None:
            return self.ticks
        return DEFAULT_TICKS_PER_INSTRUMENT * self.n_instruments

    def as_json(self) -> dict[str, Any]:
        """The config as JSON-able values (stored in the tick file header)."""
        d = asdict(self)
        d["date"] = self.date.isoformat()
        d["start"] = self.start.strftime("%H:%M:%S")
        d["end"] = self.end.strftime("%H:%M:%S")
        d["instruments"] = self.n_instruments
        d["ticks"] = self.target_ticks
        d["symbols"] = None if self.symbols is None else [list(s) for s in self.symbols]
        del d["created_utc"]
        return d


@dataclass(frozen=True)
class SimStats:
    """What :func:`simulate` wrote.

    Attributes
    ----------
    path
        The tick file.
    instruments
        Instruments in the universe.
    ticks
        Packets written (all messages).
    messages
        Records written, heartbeats included.
    heartbeats
        1-byte heartbeat messages among them.
    bytes
        Size of the file.
    seconds
        Wall-clock time taken.
    """

    path: str
    instruments: int
    ticks: int
    messages: int
    heartbeats: int
    bytes: int
    seconds: float


def read_symbols_file(path: os.PathLike[str] | str) -> tuple[tuple[str, str], ...]:
    """Read a symbols file: one ``EXCHANGE:SYMBOL`` or ``SYMBOL`` (NSE) a line.

    Blank lines and ``#`` comments are skipped; names are upper-cased and duplicates
    dropped.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    tuple of (str, str)
        ``(exchange, tradingsymbol)`` pairs in file order.

    Raises
    ------
    SimConfigError
        The file cannot be read, names an unknown exchange, or lists no symbol.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SimConfigError(f"cannot read symbols file {path}: {reason}") from None
    seen: dict[tuple[str, str], None] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        exchange, sep, symbol = line.partition(":")
        if not sep:
            exchange, symbol = "NSE", line
        exchange, symbol = exchange.strip().upper(), symbol.strip().upper()
        if exchange not in _EXCHANGES:
            raise SimConfigError(
                f"{path}:{lineno}: unknown exchange {exchange!r} (one of {', '.join(_EXCHANGES)})"
            )
        if not symbol:
            raise SimConfigError(f"{path}:{lineno}: no symbol after {exchange}:")
        seen.setdefault((exchange, symbol), None)
    if not seen:
        raise SimConfigError(f"symbols file {path} lists no symbol")
    return tuple(seen)


# ---------------------------------------------------------------------------------------
# The universe
# ---------------------------------------------------------------------------------------


@dataclass
class _Spec:
    """One instrument before randomness: what the names and tables say."""

    symbol: str
    exchange: str
    segment: int
    klass: int
    price: float  # rupees, the previous close before a little per-seed noise
    tick: float  # rupees
    lot: int  # units of a contract (1 for cash and indices)
    itype: str  # Kite's instrument_type


def _hashed_price(name: str) -> float:
    """A plausible price (log-normal around 250 rupees) for a name the tables lack, the
    same in every run."""
    u = (zlib.crc32(name.encode()) + 0.5) / 2**32
    return min(20_000.0, max(5.0, 250.0 * math.exp(1.1 * NormalDist().inv_cdf(u))))


def _future_lot(price: float) -> int:
    """Contract size of a stock future: about five lakh rupees."""
    return int(min(MAX_LOT, max(1, round(500_000 / price))))


def _contract(day: date, months_ahead: int) -> str:
    """``24JAN``-style expiry code ``months_ahead`` months after ``day``'s month."""
    m = day.month - 1 + months_ahead
    return f"{(day.year + m // 12) % 100:02d}{_MONTHS[m % 12]}"


def _class_counts(config: SimConfig) -> dict[str, int]:
    """Indices and derivatives of a generated universe: as configured, else a few."""
    n = config.n_instruments
    auto = {
        "indices": min(len(INDICES), max(1, n // 25)),
        "nfo": max(1, n // 25),
        "cds": max(1, n // 500),
        "mcx": max(1, n // 250),
        "nco": max(1, n // 1000),
    }
    given = {
        "indices": config.indices,
        "nfo": config.nfo,
        "cds": config.cds,
        "mcx": config.mcx,
        "nco": config.nco,
    }
    counts = {k: auto[k] if v is None else v for k, v in given.items()}
    free = [k for k in counts if given[k] is None]
    # Small universes stay at least half stocks: trim the automatic counts.
    while sum(counts.values()) > n // 2 and any(counts[k] for k in free):
        largest = max((k for k in free if counts[k]), key=counts.__getitem__)
        counts[largest] -= 1
    return counts


def _generated_specs(config: SimConfig) -> list[_Spec]:
    counts = _class_counts(config)
    n_other = sum(counts.values())
    n_stock = config.n_instruments - n_other
    day = config.date
    specs: list[_Spec] = []
    stock_names = [name for name, _ in NIFTY50[:n_stock]]
    stock_names += [f"SYM{i:04d}" for i in range(1, n_stock - len(stock_names) + 1)]
    prices = dict(NIFTY50)
    for name in stock_names:
        prices.setdefault(name, _hashed_price(name))
        specs.append(_Spec(name, "NSE", Segment.NSE, EQUITY, prices[name], EQUITY_TICK, 1, "EQ"))
    for k in range(counts["indices"]):
        name, level = INDICES[k] if k < len(INDICES) else (f"NIFTY INDEX {k + 1:02d}", 10000.0)
        specs.append(_Spec(name, "NSE", Segment.INDICES, INDEX, level, INDEX_TICK, 1, "INDEX"))
    levels = dict(INDICES)
    underlyings = [(u, levels[i], lot) for u, i, lot in INDEX_FUTURES]
    underlyings += [(name, prices[name], _future_lot(prices[name])) for name in stock_names]
    for k in range(counts["nfo"]):
        # Near month of every underlying, then the next months.
        u, price, lot = underlyings[k % len(underlyings)]
        months = k // len(underlyings)
        specs.append(
            _Spec(
                f"{u}{_contract(day, months)}FUT",
                "NFO",
                Segment.NFO,
                DERIV,
                price * (1 + 0.004 * (months + 1)),
                EQUITY_TICK,
                lot,
                "FUT",
            )
        )
    for exchange, segment, table, count in (
        ("CDS", Segment.CDS, [(c, p, CURRENCY_TICK) for c, p in CURRENCIES], counts["cds"]),
        ("MCX", Segment.MCX, list(MCX_CONTRACTS), counts["mcx"]),
        ("NCO", Segment.NCO, list(NCO_CONTRACTS), counts["nco"]),
    ):
        klass = _CLASS_OF_SEGMENT[segment]
        for k in range(count):
            name, price, tick = table[k % len(table)]
            specs.append(
                _Spec(
                    f"{name}{_contract(day, k // len(table))}FUT",
                    exchange,
                    segment,
                    klass,
                    price,
                    tick,
                    1,
                    "FUT",
                )
            )
    return specs


def _file_specs(symbols: Sequence[tuple[str, str]]) -> list[_Spec]:
    stock_prices = dict(NIFTY50)
    levels = dict(INDICES)
    index_futures = {u: (levels[i], lot) for u, i, lot in INDEX_FUTURES}
    specs = []
    for exchange, symbol in symbols:
        segment = _EXCHANGES[exchange]
        if segment in (Segment.NSE, Segment.BSE) and symbol in levels:
            segment = Segment.INDICES
        klass = _CLASS_OF_SEGMENT[segment]
        price: float | None = None
        tick, lot, itype = EQUITY_TICK, 1, "EQ"
        if klass == EQUITY:
            price = stock_prices.get(symbol)
        elif klass == INDEX:
            price, tick, itype = levels.get(symbol), INDEX_TICK, "INDEX"
            exchange = "NSE" if exchange == "INDICES" else exchange
        elif klass == DERIV:
            itype = "FUT"
            for u, (level, ulot) in index_futures.items():
                if symbol.startswith(u) and symbol[len(u) : len(u) + 2].isdigit():
                    price, lot = level, ulot
            if price is None:
                # A stock future (NAME24JANFUT) is priced like its stock.
                base = symbol[: -len("24JANFUT")] if symbol.endswith("FUT") else symbol
                price = stock_prices.get(base) or _hashed_price(base)
                lot = _future_lot(price)
        else:
            itype = "FUT"
            table = (
                [(c, p, CURRENCY_TICK) for c, p in CURRENCIES]
                if klass == CURRENCY
                else [*MCX_CONTRACTS, *NCO_CONTRACTS]
            )
            tick = CURRENCY_TICK if klass == CURRENCY else 1.0
            for name, p, t in sorted(table, key=lambda r: -len(r[0])):
                if symbol.startswith(name):
                    price, tick = p, t
                    break
        if price is None:
            price = _hashed_price(symbol)
        specs.append(_Spec(symbol, exchange, segment, klass, price, tick, lot, itype))
    return specs


def _tokens(specs: Sequence[_Spec]) -> list[int]:
    """Distinct tokens, ``exchange_token << 8 | segment``, hashed from the names."""
    used: set[int] = set()
    tokens = []
    for s in specs:
        key = f"{s.exchange}:{s.symbol}:{s.segment}".encode()
        exchange_token = zlib.crc32(key) % (TOKEN_SPACE - 1) + 1
        while (exchange_token << 8 | s.segment) in used:
            exchange_token = exchange_token % (TOKEN_SPACE - 1) + 1
        token = exchange_token << 8 | s.segment
        used.add(token)
        tokens.append(token)
    return tokens


def _specs(config: SimConfig) -> list[_Spec]:
    return _file_specs(config.symbols) if config.symbols is not None else _generated_specs(config)


def instruments(config: SimConfig) -> list[dict[str, Any]]:
    """The simulated universe, as the tick file's ``instruments`` list.

    Parameters
    ----------
    config
        The simulation.

    Returns
    -------
    list of dict
        Per instrument, in universe order: ``instrument_token``, ``exchange_token``,
        ``tradingsymbol``, ``exchange``, ``segment`` (Kite's name: ``NSE``, ``INDICES``,
        ``NFO-FUT`` ...), ``instrument_type``, ``tick_size`` (rupees) and ``lot_size``.
        Does not depend on the seed.
    """
    specs = _specs(config)
    result = []
    for s, token in zip(specs, _tokens(specs), strict=True):
        seg_name = Segment(s.segment).name
        if s.klass in (DERIV, CURRENCY, COMMODITY):
            seg_name = f"{s.exchange}-FUT"
        result.append(
            {
                "instrument_token": token,
                "exchange_token": token >> 8,
                "tradingsymbol": s.symbol,
                "exchange": s.exchange,
                "segment": seg_name,
                "instrument_type": s.itype,
                "tick_size": s.tick,
                "lot_size": s.lot,
            }
        )
    return result


def sim_meta(config: SimConfig) -> dict[str, Any]:
    """The tick file header of a simulated session (SPEC section 3).

    Parameters
    ----------
    config
        The simulation.

    Returns
    -------
    dict
        :func:`feedengine.tickfile.make_meta` with ``source`` ``"simulator"``, the
        :func:`instruments`, ``simulator`` (the config as JSON) and ``created_utc`` fixed
        to ``config.created_utc`` when set.
    """
    extra: dict[str, Any] = {"simulator": config.as_json()}
    if config.created_utc is not None:
        extra["created_utc"] = config.created_utc
    return make_meta("simulator", instruments(config), **extra)


# ---------------------------------------------------------------------------------------
# Wire packing: packets built field-major, many messages at once
# ---------------------------------------------------------------------------------------

#: The 4-byte words of each packet kind, in wire order (the decoder's own table). A full
#: packet continues with 10 depth entries of three words: quantity, price, orders << 16 (an
#: int16 and 2 bytes of padding).
_WORDS = wire.PACKET_WORDS
#: First depth word of a full packet (byte offset 64).
DEPTH_WORD = 16
DEPTH_WORDS = 3


def _records(body: np.ndarray, plen: int) -> np.ndarray:
    """Packets from their words: ``body[w, i]`` is word ``w`` of packet ``i``.

    Returns an ``(n, plen + 2)`` uint8 array: each row a big-endian u16 length and the packet.
    """
    n = body.shape[1]
    out = np.empty((n, plen + 2), dtype=np.uint8)
    out[:, 0] = plen >> 8
    out[:, 1] = plen & 0xFF
    # One pass: transpose, byte swap and copy (into an unaligned view).
    out[:, 2:].view(">i4")[...] = body.T
    return out


def _void(records: np.ndarray) -> np.ndarray:
    """Records as one opaque item each: numpy moves them as memcpy, not field by field."""
    return records.view(np.dtype((np.void, records.shape[1]))).reshape(len(records))


def _take(records: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``records[index]`` for packet records, fast."""
    width = records.shape[1]
    return _void(records)[index].view(np.uint8).reshape(len(index), width)


def _concat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Packet records of ``a`` then ``b``."""
    width = b.shape[1]
    return np.concatenate((_void(a), _void(b))).view(np.uint8).reshape(len(a) + len(b), width)


def _frame_messages(kinds: dict[int, tuple[np.ndarray, np.ndarray]]) -> list[tuple[int, bytes]]:
    """Messages of packets sorted by frame: ``[(frame, message), ...]`` in frame order.

    ``kinds[plen]`` holds ``(records, frames)`` of one packet kind, sorted by frame. A
    frame's packets form one message (several when more than :data:`MAX_PACKETS`), kinds
    in :data:`KIND_ORDER`.
    """
    present = [(plen, *kinds[plen]) for plen in KIND_ORDER if plen in kinds]
    if not present:
        return []
    uframes = np.unique(np.concatenate([frames for _, _, frames in present]))
    blocks = []  # per kind: (bytes, packet size, first row per frame, end row per frame)
    for plen, records, frames in present:
        lo = np.searchsorted(frames, uframes, "left").tolist()
        hi = np.searchsorted(frames, uframes, "right").tolist()
        blocks.append((records.reshape(-1).data, plen + 2, lo, hi))
    out = []
    for j, f in enumerate(uframes.tolist()):
        parts = [(mv, size, lo[j], hi[j]) for mv, size, lo, hi in blocks if hi[j] > lo[j]]
        count = sum(b - a for _, _, a, b in parts)
        if count <= MAX_PACKETS:
            out.append(
                (
                    f,
                    b"".join(
                        [
                            count.to_bytes(2, "big"),
                            *(mv[a * size : b * size] for mv, size, a, b in parts),
                        ]
                    ),
                )
            )
            continue
        # An oversized frame: messages of at most MAX_PACKETS packets.
        pieces: list[memoryview] = []
        n = 0
        for mv, size, a, b in parts:
            while a < b:
                take = min(b - a, MAX_PACKETS - n)
                pieces.append(mv[a * size : (a + take) * size])
                n += take
                a += take
                if n == MAX_PACKETS:
                    out.append((f, b"".join([n.to_bytes(2, "big"), *pieces])))
                    pieces, n = [], 0
        if n:
            out.append((f, b"".join([n.to_bytes(2, "big"), *pieces])))
    return out


# ---------------------------------------------------------------------------------------
# Grouped array helpers: rows grouped by instrument, in time order inside each group
# ---------------------------------------------------------------------------------------


class _Groups:
    """Rows grouped by instrument (``counts[i]`` consecutive rows of instrument ``i``)."""

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


# ---------------------------------------------------------------------------------------
# The session
# ---------------------------------------------------------------------------------------


def _class_phase(klass: int, sod: float, match_s: int) -> int:
    """Phase of an instrument class at ``sod`` seconds of the IST day."""
    if klass == EQUITY:
        if PREOPEN_S <= sod < match_s:
            return QUIET
        if match_s <= sod < match_s + MATCH_SPREAD_S:
            return MATCH
        if match_s + MATCH_SPREAD_S <= sod < NSE_OPEN_S:
            return BUFFER
    if klass in (EQUITY, DERIV, INDEX):
        if NSE_OPEN_S <= sod < NSE_CLOSE_S:
            return NORMAL
        if NSE_CLOSE_S <= sod < NSE_CLOSE_S + AFTER_CLOSE_S:
            return AFTER
        return CLOSED
    open_s, close_s = (CDS_OPEN_S, CDS_CLOSE_S) if klass == CURRENCY else (MCX_OPEN_S, MCX_CLOSE_S)
    return NORMAL if open_s <= sod < close_s else CLOSED


def _u_shape(sod: float) -> float:
    """Unnormalized intraday activity of NSE-hours instruments at ``sod``."""
    return (
        1
        + OPEN_BOOST * math.exp(-(sod - NSE_OPEN_S) / OPEN_DECAY_S)
        + CLOSE_BOOST * math.exp(-(NSE_CLOSE_S - sod) / CLOSE_DECAY_S)
    )


@dataclass
class _Chunk:
    start_ns: int
    end_ns: int
    phase: np.ndarray  # per class
    mult: np.ndarray  # per class: rate multiplier


@dataclass
class _State:
    """Per instrument, the market after the last generated tick."""

    price: np.ndarray
    volume: np.ndarray
    ltq: np.ndarray
    ltt: np.ndarray
    vwap_num: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    traded: np.ndarray
    matched: np.ndarray
    oi: np.ndarray
    oi_high: np.ndarray
    oi_low: np.ndarray
    last_recv: np.ndarray


@dataclass
class _Draws:
    """Tables of independent random draws, indexed by one random integer per tick.

    A tick takes every minor random quantity (its order book, trade size, latency ...)
    from one row: one draw per tick instead of about forty, and the columns are drawn
    independently, so a tick's quantities are independent of each other.
    """

    gaps: np.ndarray  # (10, S) int32 ticks from the price: 5 bid levels, 5 ask levels
    qty: np.ndarray  # (10, S) int32 depth quantity in depth lots (>= 1)
    orders: np.ndarray  # (10, S) int32 order counts << 16 (<= qty)
    side: np.ndarray  # (2, S) int32 total buy / sell quantity, in book lots
    u_trade: np.ndarray  # (S,) uniform: trade or not
    u_round: np.ndarray  # (S,) uniform: stochastic rounding of price steps
    ltq: np.ndarray  # (S,) trade size multiplier (log-normal)
    others: np.ndarray  # (S,) volume of the unreported trades since the last tick
    latency: np.ndarray  # (S,) int64 ns
    oi_z: np.ndarray  # (S,) standard normal: open-interest change
    reach_up: np.ndarray  # (S,) how far the trades between snapshots go above both ticks
    reach_down: np.ndarray  # (S,) ... and below


def _draw_tables(rng: np.random.Generator, between_rng: np.random.Generator) -> _Draws:
    s = DRAW_ROWS
    level = np.tile(1 + 0.25 * np.arange(DEPTH), 2)[:, None]
    gap_choices = np.array([1, 1, 1, 1, 2, 2, 3])
    gaps = np.concatenate(
        [
            np.cumsum(rng.choice(gap_choices, (DEPTH, s)), axis=0),
            np.cumsum(rng.choice(gap_choices, (DEPTH, s)), axis=0),
        ]
    )
    qty = np.maximum(1, np.round(rng.lognormal(0.0, 0.8, (2 * DEPTH, s)) * level * 2))
    orders = np.minimum(1 + rng.poisson(2.0, (2 * DEPTH, s)), qty)
    latency_ms = np.clip(
        rng.lognormal(math.log(LATENCY_MEDIAN_MS), LATENCY_SIGMA, s), LATENCY_MIN_MS, LATENCY_MAX_MS
    )
    return _Draws(
        gaps=gaps.astype(np.int32),
        qty=qty.astype(np.int32),
        orders=(orders.astype(np.int32) << 16),
        side=np.round(rng.lognormal(0.0, 0.3, (2, s)) * 100).astype(np.int32),
        u_trade=rng.random(s),
        u_round=rng.random(s),
        ltq=rng.lognormal(0.0, 0.8, s),
        others=1.5 * rng.standard_exponential(s),
        latency=np.round(latency_ms * 1e6).astype(np.int64),
        oi_z=rng.standard_normal(s),
        reach_up=BETWEEN_REACH * np.abs(between_rng.standard_normal(s)),
        reach_down=BETWEEN_REACH * np.abs(between_rng.standard_normal(s)),
    )


@dataclass
class _Session:
    """A simulation in progress: universe arrays, market state, random streams."""

    config: SimConfig
    specs: list[_Spec]
    tokens: np.ndarray
    segment: np.ndarray
    klass: np.ndarray
    tick: np.ndarray
    plen: np.ndarray
    prev_close: np.ndarray
    floor: np.ndarray
    ceil: np.ndarray
    unit: np.ndarray
    size: np.ndarray  # typical trade size, in units
    book_size: np.ndarray
    has_oi: np.ndarray
    has_volume: np.ndarray
    rate: np.ndarray = field(init=False)
    sigma: np.ndarray = field(init=False)
    preopen_volume: np.ndarray = field(init=False)
    depth_lot: np.ndarray = field(init=False)
    book_lot: np.ndarray = field(init=False)
    chunks: list[_Chunk] = field(init=False)
    match_s: int = field(init=False)
    state: _State = field(init=False)
    draws: _Draws = field(init=False)
    rng: np.random.Generator = field(init=False)
    origin_ns: int = field(init=False)
    end_ns: int = field(init=False)
    day_ns: int = field(init=False)


def _packet_lengths(klass: np.ndarray, mode: str) -> np.ndarray:
    index = klass == INDEX
    full = np.where(index, PKT_INDEX_FULL, PKT_FULL)
    quote = np.where(index, PKT_INDEX_QUOTE, PKT_QUOTE)
    ltp = np.full(len(klass), PKT_LTP)
    if mode == "full":
        return full.astype(np.uint16)
    if mode == "quote":
        return quote.astype(np.uint16)
    if mode == "ltp":
        return ltp.astype(np.uint16)
    turn = np.arange(len(klass)) % 3
    return np.choose(turn, [full, quote, ltp]).astype(np.uint16)


def _prev_trading_day(day: date) -> date:
    prev = day - timedelta(days=1)
    while prev.weekday() >= 5:
        prev -= timedelta(days=1)
    return prev


def _build(config: SimConfig) -> _Session:
    specs = _specs(config)
    n = len(specs)
    # The third stream (the reach of the trades between snapshots) was added later; its own
    # stream left every other draw of a seed, so every tick's time and price, as it was.
    universe_seq, tick_seq, between_seq = np.random.SeedSequence(config.seed).spawn(3)
    urng = np.random.Generator(np.random.PCG64(universe_seq))
    segment = np.array([s.segment for s in specs], dtype=np.int64)
    klass = np.array([s.klass for s in specs], dtype=np.int64)
    div = DIVISORS[segment]
    tick = np.maximum(1, np.round(np.array([s.tick for s in specs]) * div)).astype(np.int64)
    # Previous closes: the specs' prices with a little noise.
    rupees = np.array([s.price for s in specs]) * (1 + urng.normal(0, 0.02, n))
    floor = FLOOR_TICKS * tick
    ceil = (INT32_MAX - CEIL_MARGIN_TICKS * tick) // tick * tick
    prev_close = np.clip(np.round(rupees * div / tick).astype(np.int64) * tick, floor, ceil)
    lot = np.array([s.lot for s in specs], dtype=np.int64)
    is_equity = klass == EQUITY
    # Typical trade: about 20 000 rupees of a stock; a few lots of a contract.
    size = np.where(is_equity, np.clip(np.round(20_000 / rupees), 1, 5_000), 2.0)
    unit = np.where(is_equity, 1, lot)
    session = _Session(
        config=config,
        specs=specs,
        tokens=np.array(_tokens(specs), dtype=np.uint32),
        segment=segment,
        klass=klass,
        tick=tick,
        plen=_packet_lengths(klass, config.mode),
        prev_close=prev_close,
        floor=floor,
        ceil=ceil,
        unit=unit,
        size=size.astype(np.float64),
        book_size=urng.uniform(50, 500, n),
        has_oi=np.isin(klass, [DERIV, CURRENCY, COMMODITY]),
        has_volume=klass != INDEX,
    )
    _schedule(session, tick_seq)
    _calibrate(session, urng)
    _init_state(session, urng, np.random.Generator(np.random.PCG64(between_seq)))
    return session


def _schedule(s: _Session, tick_seq: np.random.SeedSequence) -> None:
    """Cut the window into chunks, each inside one phase of every class."""
    c = s.config
    s.rng = np.random.Generator(np.random.PCG64(tick_seq))
    s.match_s = MATCH_EARLIEST_S + int(s.rng.integers(0, 60))
    s.day_ns = int(datetime.combine(c.date, time(0), IST).timestamp()) * NS
    start_s = c.start.hour * 3600 + c.start.minute * 60 + c.start.second
    end_s = c.end.hour * 3600 + c.end.minute * 60 + c.end.second
    s.origin_ns = s.day_ns + start_s * NS
    s.end_ns = s.day_ns + end_s * NS
    marks = {start_s, end_s}
    for b in (
        PREOPEN_S,
        s.match_s,
        s.match_s + MATCH_SPREAD_S,
        NSE_OPEN_S,
        NSE_CLOSE_S,
        NSE_CLOSE_S + AFTER_CLOSE_S,
        CDS_CLOSE_S,
        MCX_CLOSE_S,
    ):
        if start_s < b < end_s:
            marks.add(b)
    bounds = sorted(marks)
    u_norm = np.mean([_u_shape(t + 0.5) for t in range(NSE_OPEN_S, NSE_CLOSE_S)])
    chunks = []
    for a, b in itertools.pairwise(bounds):
        pieces = max(1, math.ceil((b - a) / c.chunk_seconds))
        edges = np.linspace(a, b, pieces + 1).round().astype(np.int64).tolist()
        for lo, hi in itertools.pairwise(edges):
            mid = (lo + hi) / 2
            phase = np.array([_class_phase(k, mid, s.match_s) for k in range(N_CLASSES)])
            mult = np.zeros(N_CLASSES)
            for k in range(N_CLASSES):
                mult[k] = {
                    QUIET: QUIET_RATE,
                    BUFFER: BUFFER_RATE,
                    AFTER: AFTER_RATE,
                    NORMAL: (_u_shape(mid) / u_norm if k in (EQUITY, DERIV, INDEX) else 1.0),
                }.get(int(phase[k]), 0.0)
            chunks.append(_Chunk(s.day_ns + lo * NS, s.day_ns + hi * NS, phase, mult))
    s.chunks = chunks


def _calibrate(s: _Session, urng: np.random.Generator) -> None:
    """Heavy-tailed tick rates scaled so the session holds about ``ticks`` ticks."""
    n = len(s.klass)
    weight = urng.lognormal(0.0, RATE_SIGMA, n)
    equity = np.flatnonzero(s.klass == EQUITY)
    # Stocks in universe order are in liquidity order (the Nifty names first).
    weight[equity] = np.sort(weight[equity])[::-1]
    # Indices and futures are among the liquid instruments (top decile and quintile).
    weight[s.klass == INDEX] = np.quantile(weight, 0.9)
    futures = np.isin(s.klass, [DERIV, CURRENCY, COMMODITY])
    weight[futures] = np.quantile(weight, 0.8) * urng.lognormal(0.0, 0.7, int(futures.sum()))
    cap = np.where(s.klass == INDEX, INDEX_MAX_RATE, MAX_RATE)
    exposure = np.zeros(N_CLASSES)  # rate-weighted seconds per class
    normal = np.zeros(N_CLASSES)  # ... of the normal session alone
    matches = 0
    for ch in s.chunks:
        dur = (ch.end_ns - ch.start_ns) / NS
        exposure += ch.mult * dur
        normal += np.where(ch.phase == NORMAL, ch.mult * dur, 0.0)
        if ch.phase[EQUITY] == MATCH:
            matches = int((s.klass == EQUITY).sum())
    expo = exposure[s.klass]
    target = max(0, s.config.target_ticks - matches)

    def expected(scale: float) -> float:
        return float((np.minimum(scale * weight, cap) * expo).sum())

    lo, hi = 0.0, 1.0
    while expected(hi) < target and hi < 1e12:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected(mid) < target else (lo, mid)
    s.rate = np.minimum(hi * weight, cap) if target else np.zeros(n)
    # Price moves: a daily volatility spread over the expected number of trades.
    vol = np.select(
        [s.klass == INDEX, s.klass == CURRENCY],
        [urng.uniform(0.006, 0.012, n), urng.uniform(0.002, 0.004, n)],
        urng.uniform(0.01, 0.025, n),
    )
    trades = np.maximum(1.0, s.rate * normal[s.klass] * P_TRADE)
    s.sigma = s.prev_close / s.tick * vol / np.sqrt(trades)
    # Trade sizes small enough that the day's volume stays inside int32.
    mean_trade = 3.0  # ticks' mean size in units of ``size``: ltq ~1.4 plus the trades between
    budget = VOLUME_BUDGET / (trades * mean_trade * s.unit)
    s.size = np.maximum(0.05, np.minimum(s.size, budget))
    day_volume = trades * mean_trade * s.size * s.unit
    s.preopen_volume = (
        np.maximum(1, np.round(day_volume * urng.uniform(0.005, 0.02, n) / s.unit)).astype(np.int64)
        * s.unit
    )


def _init_state(s: _Session, urng: np.random.Generator, between_rng: np.random.Generator) -> None:
    n = len(s.klass)
    gap = np.round(s.prev_close * urng.normal(0, GAP_SIGMA, n) / s.tick).astype(np.int64)
    price = np.clip(s.prev_close + gap * s.tick, s.floor, s.ceil)
    prev_day = _prev_trading_day(s.config.date)
    prev_close_s = np.select(
        [s.klass == CURRENCY, s.klass == COMMODITY], [CDS_CLOSE_S, MCX_CLOSE_S], NSE_CLOSE_S
    )
    prev_day_s = int(datetime.combine(prev_day, time(0), IST).timestamp())
    ltt = prev_day_s + prev_close_s - urng.integers(1, 300, n)
    ltt[s.klass == INDEX] = 0
    oi_units = np.round(
        np.minimum(urng.lognormal(math.log(2000), 1.0, n) * s.size, VOLUME_BUDGET / 4 / s.unit)
    )
    oi = np.where(s.has_oi, oi_units * s.unit, 0).astype(np.int64)
    zeros = np.zeros(n, dtype=np.int64)
    s.state = _State(
        price=price,
        volume=zeros.copy(),
        ltq=zeros.copy(),
        ltt=ltt.astype(np.int64),
        vwap_num=np.zeros(n),
        open=zeros.copy(),
        high=zeros.copy(),
        low=zeros.copy(),
        traded=np.zeros(n, bool),
        matched=np.zeros(n, bool),
        oi=oi,
        oi_high=oi.copy(),
        oi_low=oi.copy(),
        last_recv=np.full(n, s.origin_ns, dtype=np.int64),
    )
    s.draws = _draw_tables(s.rng, between_rng)
    s.depth_lot = np.maximum(1, np.round(s.size)).astype(np.int64) * s.unit
    # total buy/sell quantities: a few hundred typical trades (draw tables are in 1/100s).
    s.book_lot = np.maximum(1, np.round(s.book_size * s.size * s.unit / 100)).astype(np.int64)


def _generate(s: _Session, ch: _Chunk) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The ticks of one chunk, packed: ``{packet length: (records, recv_ns)}``.

    Records are ``(n, length + 2)`` uint8 rows (u16 length prefix and packet), grouped by
    instrument in exchange-time order.
    """
    rng, st, dr = s.rng, s.state, s.draws
    dur_ns = ch.end_ns - ch.start_ns
    phase = ch.phase[s.klass]
    counts = rng.poisson(s.rate * ch.mult[s.klass] * (dur_ns / NS))
    match = phase == MATCH
    counts[match] = ~st.matched[match]
    st.matched |= match
    g = _Groups(counts)
    k = g.size
    if not k:
        return {}
    inst = g.inst
    # Exchange times: one tick in each of n equal slices of the chunk, at a random point:
    # increasing inside each instrument's group without a sort.
    slot = np.arange(k) - g.first
    true_ns = ch.start_ns + ((slot + rng.random(k)) * (dur_ns / counts[inst])).astype(np.int64)
    ts = true_ns // NS
    draw = rng.integers(0, DRAW_ROWS, k)
    # What each tick does, by the phase of its instrument.
    index = s.klass == INDEX
    p_trade = np.select(
        [phase == NORMAL, phase == MATCH], [np.where(index, 1.0, P_TRADE), 1.0], 0.0
    )
    p_move = np.select([phase == NORMAL, phase == QUIET], [p_trade, P_QUIET_MOVE], 0.0)
    u = dr.u_trade[draw]
    trade = u < p_trade[inst]
    move = u < p_move[inst]
    # Price: a random walk on the tick grid (stochastic rounding keeps small steps alive).
    z = rng.standard_normal(k, dtype=np.float32)
    sigma = s.sigma[inst]
    steps = np.floor(z * sigma + dr.u_round[draw]).astype(np.int64)
    steps[~move] = 0
    tick = s.tick[inst]
    price = np.clip(st.price[inst] + g.cumsum(steps) * tick, s.floor[inst], s.ceil[inst])
    # Volume: the tick's own trade plus the unreported trades since the previous tick.
    unit = s.unit[inst]
    size = s.size[inst]
    ltq_new = np.maximum(1, np.round(size * dr.ltq[draw])).astype(np.int64)
    others = np.floor(size * dr.others[draw]).astype(np.int64)
    dvol = (ltq_new + others) * unit
    volume_trade = trade & s.has_volume[inst]
    dvol[~volume_trade] = 0
    at_match = match[inst]
    if at_match.any():
        dvol[at_match] = s.preopen_volume[inst[at_match]]
        ltq_new[at_match] = s.preopen_volume[inst[at_match]] // unit[at_match]
    volume = np.minimum(st.volume[inst] + g.cumsum(dvol), INT32_MAX)
    ltq = g.ffill(ltq_new * unit, volume_trade, st.ltq[inst])
    trade_time = np.where(at_match, s.day_ns // NS + s.match_s, ts)
    ltt = g.ffill(trade_time, volume_trade, st.ltt[inst])
    vwap_num = st.vwap_num[inst] + g.cumsum(price * dvol.astype(np.float64))
    avg = np.round(vwap_num / np.maximum(volume, 1)).astype(np.int64)
    # The unreported trades since the previous tick (its volume's ``others``) went beyond
    # the prices of both ticks; only the day high/low show them.
    between = trade & (others > 0) & ~at_match
    prev = np.empty_like(price)
    prev[1:] = price[:-1]
    prev[g.starts] = st.price[g.members]
    # One-dimensional tables: gathering columns of a (2, S) table took 10 times as long.
    up = np.floor(dr.reach_up[draw] * sigma).astype(np.int64) * tick
    down = np.floor(dr.reach_down[draw] * sigma).astype(np.int64) * tick
    top = np.where(between, np.maximum(prev, price) + up, price)
    bottom = np.where(between, np.minimum(prev, price) - down, price)
    # Day open/high/low: from the day's first trade on; 0 before it.
    traded_before = st.traded[inst]
    has_traded = traded_before | (g.cumsum(trade.astype(np.int64)) > 0)
    first_trade = np.minimum.reduceat(np.where(trade, np.arange(k), k), g.starts)
    first_price = price[np.minimum(first_trade, k - 1)][g.rank]
    day_open = np.where(traded_before, st.open[inst], first_price)
    high = np.maximum(g.cummax(np.where(trade, np.minimum(top, s.ceil[inst]), 0)), st.high[inst])
    low = np.minimum(
        g.cummin(np.where(trade, np.maximum(bottom, s.floor[inst]), INT32_MAX)),
        np.where(traded_before, st.low[inst], INT32_MAX),
    )
    not_yet = ~has_traded
    day_open[not_yet] = 0
    high[not_yet] = 0
    low[not_yet] = 0
    # Open interest of derivatives: a walk on trades.
    oi_step = np.round(dr.oi_z[draw] * size * 2).astype(np.int64) * unit
    oi_step[~(trade & s.has_oi[inst])] = 0
    oi = np.maximum(st.oi[inst] + g.cumsum(oi_step), np.where(s.has_oi[inst], unit, 0))
    oi_high = np.maximum(g.cummax(oi), st.oi_high[inst])
    oi_low = np.minimum(g.cummin(oi), st.oi_low[inst])
    # Arrival: a latency, never overtaking the instrument's previous tick.
    recv = g.cummax(true_ns - ch.start_ns + dr.latency[draw]) + ch.start_ns
    recv = np.maximum(recv, st.last_recv[inst])

    close = s.prev_close[inst]
    columns = {
        "instrument_token": s.tokens[inst],
        "last_price": price,
        "last_traded_quantity": ltq,
        "average_traded_price": avg,
        "volume_traded": volume,
        "open": day_open,
        "high": high,
        "low": low,
        "close": close,
        "change": price - close,
        "last_trade_time": ltt,
        "oi": oi,
        "oi_day_high": oi_high,
        "oi_day_low": oi_low,
        "exchange_timestamp": ts,
    }
    book_lot = s.book_lot[inst]
    plen_row = s.plen[inst]
    kinds = np.unique(s.plen[g.members]).tolist()
    packed = {}
    for plen in kinds:
        sel = slice(None) if len(kinds) == 1 else np.flatnonzero(plen_row == plen)
        words = _WORDS[plen]
        body = np.empty((plen // 4, len(recv[sel])), dtype=np.int32)
        for w, name in enumerate(words):
            if name == "total_buy_quantity":
                np.multiply(dr.side[0, draw[sel]], book_lot[sel], out=body[w], casting="unsafe")
            elif name == "total_sell_quantity":
                np.multiply(dr.side[1, draw[sel]], book_lot[sel], out=body[w], casting="unsafe")
            else:
                body[w] = columns[name][sel]
        if plen == PKT_FULL:
            d = draw[sel]
            depth = body[DEPTH_WORD:].reshape(2 * DEPTH, DEPTH_WORDS, -1)
            np.multiply(dr.qty[:, d], s.depth_lot[inst[sel]], out=depth[:, 0], casting="unsafe")
            offsets = dr.gaps[:, d] * tick[sel].astype(np.int32)
            offsets[:DEPTH] *= -1
            np.add(offsets, price[sel].astype(np.int32), out=depth[:, 1])
            depth[:, 2] = dr.orders[:, d]
        packed[plen] = (_records(body, plen), recv[sel])
    # Carry the state to the next chunk.
    last, who = g.lasts, g.members
    st.price[who] = price[last]
    st.volume[who] = volume[last]
    st.ltq[who] = ltq[last]
    st.ltt[who] = ltt[last]
    st.vwap_num[who] = vwap_num[last]
    st.traded[who] = has_traded[last]
    st.open[who] = day_open[last]
    st.high[who] = high[last]
    st.low[who] = low[last]
    st.oi[who] = oi[last]
    st.oi_high[who] = oi_high[last]
    st.oi_low[who] = oi_low[last]
    st.last_recv[who] = recv[last]
    return packed


def messages(config: SimConfig) -> Iterator[tuple[int, bytes]]:
    """The simulated session as Kite WebSocket messages, in receive order.

    Parameters
    ----------
    config
        The simulation.

    Yields
    ------
    (int, bytes)
        ``(recv_ns, message)``: Unix-epoch nanoseconds (non-decreasing) and one binary
        message (many packets, or the 1-byte heartbeat ``b"\\x00"``). Generated a chunk at
        a time: memory stays bounded whatever the session size.
    """
    for batch in _message_batches(config):
        yield from batch


def _message_batches(config: SimConfig) -> Iterator[list[tuple[int, bytes]]]:
    """:func:`messages`, a generated chunk at a time."""
    s = _build(config)
    frame_ns = config.frame_ms * 1_000_000
    heartbeat_ns = HEARTBEAT_MS * 1_000_000
    last_ns = s.origin_ns
    # Packets generated but not yet sent (received after the chunk's end), per kind.
    pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for j, ch in enumerate(s.chunks):
        for plen, (records, recv) in _generate(s, ch).items():
            if plen in pending:
                old_records, old_recv = pending[plen]
                records, recv = _concat(old_records, records), np.concatenate((old_recv, recv))
            pending[plen] = (records, recv)
        final = j == len(s.chunks) - 1
        # Frame f goes out at origin + f * frame: the first grid point at or after arrival.
        due_frame = (ch.end_ns - s.origin_ns) // frame_ns
        ready: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for plen in list(pending):
            records, recv = pending.pop(plen)
            frames = -((s.origin_ns - recv) // frame_ns)
            base = int(frames.min())
            if int(frames.max()) - base > np.iinfo(np.uint16).max:
                raise AssertionError("chunk too long for the frame sort")
            # A stable radix sort: packets of an instrument keep their order.
            order = np.argsort((frames - base).astype(np.uint16), kind="stable")
            frames = frames[order]
            cut = len(frames) if final else int(np.searchsorted(frames, due_frame, "right"))
            if cut < len(frames):
                pending[plen] = (_take(records, order[cut:]), recv[order[cut:]])
            if cut:
                ready[plen] = (_take(records, order[:cut]), frames[:cut])
        batch: list[tuple[int, bytes]] = []
        for f, msg in _frame_messages(ready):
            msg_ns = s.origin_ns + f * frame_ns
            while last_ns + heartbeat_ns < msg_ns:
                last_ns += heartbeat_ns
                batch.append((last_ns, HEARTBEAT))
            last_ns = msg_ns
            batch.append((msg_ns, msg))
        if batch:
            yield batch
    tail = []
    while last_ns + heartbeat_ns <= s.end_ns:
        last_ns += heartbeat_ns
        tail.append((last_ns, HEARTBEAT))
    if tail:
        yield tail


def simulate(path: os.PathLike[str] | str, config: SimConfig) -> SimStats:
    """Write a simulated session to a tick file.

    Generation runs in a background thread, a few chunks ahead of the writer (numpy and the
    file writes release the GIL, so the two overlap on two cores).

    Parameters
    ----------
    path
        Tick file to create (replaced if it exists).
    config
        The simulation.

    Returns
    -------
    SimStats
        Counts, size and time taken.

    Raises
    ------
    OSError
        The file cannot be written.
    """
    t0 = time_module.perf_counter()
    n_msgs = n_ticks = n_heartbeats = 0
    batches: queue.Queue[list[tuple[int, bytes]] | BaseException | None] = queue.Queue(
        maxsize=WRITE_AHEAD_CHUNKS
    )
    stop = threading.Event()

    def hand_over(item: list[tuple[int, bytes]] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in _message_batches(config):
                if not hand_over(batch):
                    return
            hand_over(None)
        except BaseException as e:  # handed to the writer, which re-raises it
            hand_over(e)

    with TickWriter(path, sim_meta(config)) as writer:
        producer = threading.Thread(target=produce, name="simulator", daemon=True)
        producer.start()
        try:
            while (item := batches.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                for recv_ns, msg in item:
                    writer.write(recv_ns, msg)
                    if len(msg) == 1:
                        n_heartbeats += 1
                    else:
                        n_ticks += (msg[0] << 8) | msg[1]
                n_msgs += len(item)
        finally:
            stop.set()
            producer.join()
    return SimStats(
        path=str(path),
        instruments=config.n_instruments,
        ticks=n_ticks,
        messages=n_msgs,
        heartbeats=n_heartbeats,
        bytes=os.path.getsize(path),
        seconds=time_module.perf_counter() - t0,
    )


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line and no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad date {text!r} (expected YYYY-MM-DD)") from None


def _clock(text: str) -> time:
    try:
        return datetime.strptime(text, "%H:%M:%S" if text.count(":") == 2 else "%H:%M").time()
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad time {text!r} (expected HH:MM)") from None


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m feedengine.simulator",
        description="Write a synthetic Kite trading session (IST) to a tick file.",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="tick file to write")
    p.add_argument(
        "--instruments",
        type=_count,
        metavar="N",
        help=f"universe size (default {DEFAULT_INSTRUMENTS})",
    )
    p.add_argument(
        "--symbols-file",
        metavar="PATH",
        help="universe from a file: EXCHANGE:SYMBOL or SYMBOL (NSE) a line",
    )
    p.add_argument(
        "--ticks",
        type=_count,
        metavar="N",
        help=f"target ticks for the session (default "
        f"{DEFAULT_TICKS_PER_INSTRUMENT} per instrument)",
    )
    for name, what in (
        ("indices", "indices"),
        ("nfo", "NFO futures"),
        ("cds", "CDS currency futures"),
        ("mcx", "MCX futures"),
        ("nco", "NCO futures"),
    ):
        p.add_argument(
            f"--{name}", type=_count, metavar="N", help=f"{what} in the universe (default: a few)"
        )
    p.add_argument("--mode", default="full", choices=MODES, help="packet mode (default full)")
    p.add_argument(
        "--date",
        type=_date,
        default=DEFAULT_DATE,
        metavar="YYYY-MM-DD",
        help=f"trading date YYYY-MM-DD (default {DEFAULT_DATE})",
    )
    p.add_argument(
        "--start",
        type=_clock,
        default=DEFAULT_START,
        metavar="HH:MM",
        help=f"IST start HH:MM (default {DEFAULT_START:%H:%M})",
    )
    p.add_argument(
        "--end",
        type=_clock,
        default=DEFAULT_END,
        metavar="HH:MM",
        help=f"IST end HH:MM (default {DEFAULT_END:%H:%M})",
    )
    p.add_argument("--seed", type=_count, default=1, metavar="N", help="random seed (default 1)")
    p.add_argument(
        "--frame-ms",
        type=_count,
        default=FRAME_MS,
        metavar="MS",
        help=f"message interval in ms (default {FRAME_MS})",
    )
    p.add_argument(
        "--chunk-seconds",
        type=_count,
        default=CHUNK_SECONDS,
        metavar="S",
        help=f"session seconds generated at a time (default {CHUNK_SECONDS})",
    )
    p.add_argument(
        "--created-utc", metavar="ISO", help="fix the header's created_utc (byte-identical files)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m feedengine.simulator --out FILE [options]``.

    Parameters
    ----------
    argv
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 after a one-line summary on stdout; 1 after a one-line error on
        stderr (bad configuration, unreadable symbols file, unwritable output). Bad usage
        exits with status 2 and a one-line error, as argparse does.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    prog = "python -m feedengine.simulator"
    if args.symbols_file:
        clash = [
            f"--{name}"
            for name in ("instruments", "indices", "nfo", "cds", "mcx", "nco")
            if getattr(args, name) is not None
        ]
        if clash:
            parser.error(
                f"{', '.join(clash)} cannot be combined with --symbols-file "
                "(the file lists the whole universe)"
            )
    try:
        symbols = read_symbols_file(args.symbols_file) if args.symbols_file else None
        config = SimConfig(
            instruments=args.instruments,
            ticks=args.ticks,
            date=args.date,
            start=args.start,
            end=args.end,
            mode=args.mode,
            seed=args.seed,
            indices=args.indices,
            nfo=args.nfo,
            cds=args.cds,
            mcx=args.mcx,
            nco=args.nco,
            symbols=symbols,
            frame_ms=args.frame_ms,
            chunk_seconds=args.chunk_seconds,
            created_utc=args.created_utc,
        )
        stats = simulate(args.out, config)
    except SimConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{prog}: error: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    print(
        f"{stats.path}: {stats.ticks:,} ticks of {stats.instruments:,} instruments in "
        f"{stats.messages:,} messages ({stats.heartbeats:,} heartbeats), "
        f"{stats.bytes / 1e6:,.1f} MB, {stats.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
