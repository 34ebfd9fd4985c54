"""Kite exchange segments: the low byte of an instrument token (SPEC section 2)."""

from datetime import timedelta, timezone
from enum import IntEnum

import numpy as np

#: India Standard Time: sessions, buckets and candle stamps are all IST wall-clock times.
IST = timezone(timedelta(hours=5, minutes=30), "IST")


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


def price_text(units: int, div: int) -> str:
    """Exact decimal text of a price in integer units: ``price_text(157370, 100) == "1573.70"``.

    ``div`` is a power of ten, so the text has exactly its number of decimals.
    """
    places = len(str(div)) - 1
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), div)
    return f"{sign}{whole}.{frac:0{places}d}" if places else f"{sign}{whole}"
