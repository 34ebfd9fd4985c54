"""Reference PGCOPY encoder: ``struct`` and ``Decimal``, one record at a time."""

import struct
from decimal import Decimal

import numpy as np

PG_EPOCH_US = 946_684_800 * 1_000_000
IST_OFFSET_US = (5 * 3600 + 30 * 60) * 1_000_000


def numeric(value: Decimal, dscale: int) -> bytes:
    """PostgreSQL NUMERIC binary of an exact decimal, as ``numeric_send`` writes it."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).lstrip("0") or "0"
    if text == "0":
        return struct.pack(">hhHh", 0, 0, 0, dscale)
    # Split the integer and fraction parts into base-10000 groups around the point.
    frac_len = -exponent
    whole = text[:-frac_len] if frac_len else text
    frac = text[-frac_len:] if frac_len else ""
    frac = frac.rjust(frac_len, "0")
    whole = whole.rjust((len(whole) + 3) // 4 * 4, "0") if whole else ""
    frac = frac.ljust((len(frac) + 3) // 4 * 4, "0")
    groups = [int(whole[i : i + 4]) for i in range(0, len(whole), 4)]
    weight = len(groups) - 1
    groups += [int(frac[i : i + 4]) for i in range(0, len(frac), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    return struct.pack(
        f">hhHh{len(groups)}H", len(groups), weight, 0x4000 if sign else 0, dscale, *groups
    )


def _field(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def encode(records: np.ndarray, layout: int = 0, exchange: bool = True) -> bytes:
    """The PGCOPY stream of ``RECORD_DTYPE`` records: layout 0 for the staging table, 1 for
    a candle table with TIMESTAMP (IST wall clock), 2 with TIMESTAMPTZ (the instant); the
    exchange after the symbol unless ``exchange`` is False."""
    out = [b"PGCOPY\n\xff\r\n\x00", struct.pack(">ii", 0, 0)]
    for r in records.tolist():
        start_ns, volume, o, h, lo, c, minutes, decimals, _final, symbol, exch = r
        utc_us = start_ns // 1000 - PG_EPOCH_US
        wall, instant = struct.pack(">q", utc_us + IST_OFFSET_US), struct.pack(">q", utc_us)
        texts = [symbol.rstrip(b"\x00")] + ([exch.rstrip(b"\x00")] if exchange else [])
        if layout == 0:
            fields = [struct.pack(">h", minutes), *texts, wall, instant]
        else:
            fields = [wall if layout == 1 else instant, *texts]
        fields += [numeric(Decimal(p).scaleb(-decimals), decimals) for p in (o, h, lo, c)]
        fields.append(struct.pack(">q", volume))
        out.append(struct.pack(">h", len(fields)) + b"".join(map(_field, fields)))
    out.append(struct.pack(">h", -1))
    return b"".join(out)
