"""Kite exchange segments: the low byte of an instrument token (SPEC section 2)."""

from enum import IntEnum

import numpy as np

from feedengine.sessions import DEFAULT_SESSIONS


class Segment(IntEnum):
    """Segment codes as Kite puts them in ``instrument_token & 0xFF``."""

    NSE = 1
    NFO = 2
    CDS = 3
    BSE = 4
    BFO = 5
    BCD = 6
    MCX = 7
    MCXSX = 8
    INDICES = 9
    NCO = 12


#: Price divisors that differ from the default of 100 (paise): currency derivatives quote
#: to 7 decimals on NSE, 4 on BSE, and NCO commodities to 4.
_SPECIAL_DIVISORS = {Segment.CDS: 10_000_000, Segment.BCD: 10_000, Segment.NCO: 10_000}
DEFAULT_DIVISOR = 100

#: Divisor by segment code, all 256 codes, for vectorized lookups.
DIVISORS = np.full(256, DEFAULT_DIVISOR, dtype=np.int64)
for _seg, _div in _SPECIAL_DIVISORS.items():
    DIVISORS[_seg] = _div


def segment_of(token: int) -> int:
    """The segment code of an instrument token."""
    return token & 0xFF


def exchange_of_segment(segment: int) -> str:
    """The exchange name of a segment code (``"INDICES"`` for index tokens)."""
    try:
        return Segment(segment).name
    except ValueError:
        return f"SEG{segment}"


def exchange_for(segment: int, exchange: str | None = None) -> str:
    """The session key of an instrument: its exchange when known, else its segment's."""
    if exchange:
        exchange = exchange.upper()
        if exchange in DEFAULT_SESSIONS:
            return exchange
    try:
        return Segment(segment).name
    except ValueError:
        return "NSE"
