"""The session clock: what each kind of instrument does at each time of the IST day, and the
simulated window cut into chunks that each lie inside one phase of every kind.

NSE stocks have a pre-open: quiet indicative ticks from 09:00, the auction match at a random
second between 09:07 and 09:08, quiet again until the 09:15 open; after the 15:30 close a few
ticks without trades until 15:35. Indices and NFO trade 09:15-15:30, CDS 09:00-17:00, MCX and
NCO 09:00-23:55. NSE-hours instruments follow a U-shaped intraday activity profile.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import date
from enum import IntEnum

import numpy as np

from feedengine.market.config import SimConfig
from feedengine.market.universe import Kind
from feedengine.sessions import IST_OFFSET_NS, NS_PER_DAY, NS_PER_S

__all__ = [
    "Chunk",
    "Phase",
    "Schedule",
    "close_s_of",
    "day_start_ns",
    "schedule",
]

#: The pre-open order entry closes at a random second in [09:07, 09:08); the match ticks
#: then arrive over this many seconds.
MATCH_SPREAD_S = 30
#: After-close ticks (no trades) arrive for this long after the close.
AFTER_CLOSE_S = 300
#: U-shaped intraday activity of NSE-hours instruments: extra weight at the open and close
#: decaying with these time constants (seconds).
OPEN_BOOST, OPEN_DECAY_S = 1.5, 1200.0
CLOSE_BOOST, CLOSE_DECAY_S = 0.8, 1800.0
#: Tick-rate multipliers of the quiet phases (pre-open order entry and buffer, after close).
QUIET_RATE, BUFFER_RATE, AFTER_RATE = 0.02, 0.02, 0.05


def _hms(h: int, m: int, s: int = 0) -> int:
    return h * 3600 + m * 60 + s


PREOPEN_S = _hms(9, 0)
MATCH_EARLIEST_S = _hms(9, 7)
NSE_OPEN_S, NSE_CLOSE_S = _hms(9, 15), _hms(15, 30)
CDS_OPEN_S, CDS_CLOSE_S = _hms(9, 0), _hms(17, 0)
MCX_OPEN_S, MCX_CLOSE_S = _hms(9, 0), _hms(23, 55)


class Phase(IntEnum):
    """What a kind of instrument does at a time of day.

    Attributes
    ----------
    CLOSED
        No ticks.
    QUIET
        Pre-open order entry: indicative prices, no trade.
    MATCH
        The pre-open auction's match: one tick per stock.
    BUFFER
        Between the match and the open: no trade.
    NORMAL
        The session.
    AFTER
        After the close: ticks without trades.
    """

    CLOSED = 0
    QUIET = 1
    MATCH = 2
    BUFFER = 3
    NORMAL = 4
    AFTER = 5


# Members as plain ints for the loops below: looking an enum member up costs 0.17 us on
# Python 3.11 (a day's schedule took 64 ms with members, 21 ms with ints).
_EQUITY, _DERIV, _INDEX, _CURRENCY, _COMMODITY = (int(k) for k in Kind)
_CLOSED, _QUIET, _MATCH, _BUFFER, _NORMAL, _AFTER = (int(p) for p in Phase)
_NSE_HOURS = (_EQUITY, _DERIV, _INDEX)
_QUIET_RATES = {_QUIET: QUIET_RATE, _BUFFER: BUFFER_RATE, _AFTER: AFTER_RATE}


@dataclass(frozen=True)
class Chunk:
    """Session seconds generated at once.

    Attributes
    ----------
    start_ns, end_ns
        The span, Unix ns.
    phase
        Per :class:`Kind`, its :class:`Phase` throughout the span.
    mult
        Per :class:`Kind`, the multiplier of its tick rate.
    """

    start_ns: int
    end_ns: int
    phase: np.ndarray
    mult: np.ndarray


@dataclass(frozen=True)
class Schedule:
    """The simulated window.

    Attributes
    ----------
    chunks
        The window cut into :class:`Chunk` s, in time order.
    match_s
        Second of the IST day of the pre-open auction's match.
    day_ns
        IST midnight of the trading date, Unix ns.
    origin_ns, end_ns
        Start and end of the window, Unix ns.
    """

    chunks: list[Chunk]
    match_s: int
    day_ns: int
    origin_ns: int
    end_ns: int


def day_start_ns(day: date) -> int:
    """IST midnight of ``day``, Unix ns."""
    return (day - date(1970, 1, 1)).days * NS_PER_DAY - IST_OFFSET_NS


def _phase_of(kind: int, sod: float, match_s: int) -> int:
    """The :class:`Phase` of a :class:`Kind` of instrument at ``sod`` seconds of the IST day."""
    if kind == _EQUITY:
        if PREOPEN_S <= sod < match_s:
            return _QUIET
        if match_s <= sod < match_s + MATCH_SPREAD_S:
            return _MATCH
        if match_s + MATCH_SPREAD_S <= sod < NSE_OPEN_S:
            return _BUFFER
    if kind in _NSE_HOURS:
        if NSE_OPEN_S <= sod < NSE_CLOSE_S:
            return _NORMAL
        if NSE_CLOSE_S <= sod < NSE_CLOSE_S + AFTER_CLOSE_S:
            return _AFTER
        return _CLOSED
    open_s, close_s = (CDS_OPEN_S, CDS_CLOSE_S) if kind == _CURRENCY else (MCX_OPEN_S, MCX_CLOSE_S)
    return _NORMAL if open_s <= sod < close_s else _CLOSED


def close_s_of(kind: np.ndarray) -> np.ndarray:
    """Per :class:`Kind`, the second of the IST day at which its session closes."""
    return np.select(
        [kind == _CURRENCY, kind == _COMMODITY], [CDS_CLOSE_S, MCX_CLOSE_S], NSE_CLOSE_S
    )


def _u_shape(sod: float) -> float:
    """Unnormalized intraday activity of NSE-hours instruments at ``sod``."""
    return (
        1
        + OPEN_BOOST * math.exp(-(sod - NSE_OPEN_S) / OPEN_DECAY_S)
        + CLOSE_BOOST * math.exp(-(NSE_CLOSE_S - sod) / CLOSE_DECAY_S)
    )


def schedule(config: SimConfig, rng: np.random.Generator) -> Schedule:
    """Cut the simulated window into chunks, each inside one phase of every kind.

    Parameters
    ----------
    config
        The simulation.
    rng
        The tick stream; its first draw is the second of the auction's match.

    Returns
    -------
    Schedule
        The chunks, at most ``config.chunk_seconds`` long each.
    """
    match_s = MATCH_EARLIEST_S + int(rng.integers(0, 60))
    day_ns = day_start_ns(config.date)
    start_s = _hms(config.start.hour, config.start.minute, config.start.second)
    end_s = _hms(config.end.hour, config.end.minute, config.end.second)
    marks = {start_s, end_s}
    for b in (
        PREOPEN_S,
        match_s,
        match_s + MATCH_SPREAD_S,
        NSE_OPEN_S,
        NSE_CLOSE_S,
        NSE_CLOSE_S + AFTER_CLOSE_S,
        CDS_CLOSE_S,
        MCX_CLOSE_S,
    ):
        if start_s < b < end_s:
            marks.add(b)
    u_norm = np.mean([_u_shape(t + 0.5) for t in range(NSE_OPEN_S, NSE_CLOSE_S)])
    kinds = range(len(Kind))
    chunks = []
    for a, b in itertools.pairwise(sorted(marks)):
        pieces = max(1, math.ceil((b - a) / config.chunk_seconds))
        edges = np.linspace(a, b, pieces + 1).round().astype(np.int64).tolist()
        for lo, hi in itertools.pairwise(edges):
            mid = (lo + hi) / 2
            phases = [_phase_of(k, mid, match_s) for k in kinds]
            mult = np.zeros(len(Kind))
            for k, phase in enumerate(phases):
                if phase == _NORMAL:
                    mult[k] = _u_shape(mid) / u_norm if k in _NSE_HOURS else 1.0
                else:
                    mult[k] = _QUIET_RATES.get(phase, 0.0)
            start_ns, end_ns = day_ns + lo * NS_PER_S, day_ns + hi * NS_PER_S
            chunks.append(Chunk(start_ns, end_ns, np.array(phases), mult))
    return Schedule(
        chunks=chunks,
        match_s=match_s,
        day_ns=day_ns,
        origin_ns=day_ns + start_s * NS_PER_S,
        end_ns=day_ns + end_s * NS_PER_S,
    )
