"""Each numpy dtype matches the C struct it stands for, field by field."""

import pytest

from feedengine import _wire
from feedengine.dtypes import KTICK_DTYPE, TICK_DTYPE


@pytest.mark.parametrize(("name", "dtype"), [("Tick", TICK_DTYPE), ("KTick", KTICK_DTYPE)])
def test_dtype_matches_c_struct(name, dtype):
    size, offsets = _wire.struct_layout()[name]
    assert dtype.itemsize == size
    assert {f: dtype.fields[f][1] for f in dtype.names} == offsets
