"""Each numpy dtype matches the C struct it stands for, field by field; records are copied
whole."""

import numpy as np
import pytest

from feedengine import _candles, _pgcopy
from feedengine.brokers.kite import _wire
from feedengine.brokers.kite.dtypes import TICK_DTYPE
from feedengine.dtypes import (
    BAR_DTYPE,
    CANDLE_ROW_DTYPE,
    KTICK_DTYPE,
    RECORD_DTYPE,
    SLOT_DTYPE,
    records_where,
)

LAYOUTS = {
    **_wire.struct_layout(),
    **_candles.struct_layout(),
    "CandleRecord": _pgcopy.record_layout(),
}


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("Tick", TICK_DTYPE),
        ("KTick", KTICK_DTYPE),
        ("SlotState", SLOT_DTYPE),
        ("Bar", BAR_DTYPE),
        ("CandleRow", CANDLE_ROW_DTYPE),
        ("CandleRecord", RECORD_DTYPE),
    ],
)
def test_dtype_matches_c_struct(name, dtype):
    size, offsets = LAYOUTS[name]
    assert dtype.itemsize == size
    assert {f: dtype.fields[f][1] for f in dtype.names} == offsets


def test_records_where_is_boolean_indexing():
    r = np.zeros(7, RECORD_DTYPE)
    r["minutes"] = [1, 5, 1, 15, 1, 5, 1]
    r["symbol"] = [f"S{i}".encode() for i in range(7)]
    r["close"] = np.arange(7)
    for mask in (r["minutes"] == 1, r["minutes"] == 30, np.ones(7, bool)):
        got = records_where(r, mask)
        assert got.dtype == RECORD_DTYPE and got.tobytes() == r[mask].tobytes()
    assert records_where(r[::2], r[::2]["minutes"] == 1).tobytes() == r[::2].tobytes()
