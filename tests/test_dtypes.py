"""Each numpy dtype matches the C struct it stands for, field by field."""

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
