"""Interim copy of the broker-neutral tick row's dtype (``KTICK_DTYPE``, issue 12).

The neutral row is being put into ``feedengine.dtypes`` on main while this branch is built;
until it lands there, the Angel One decoder uses this identical copy (its C struct is in
``ext/angelone_interim.pxd``). At the merge: delete this module and import ``KTICK_DTYPE``
from ``feedengine.dtypes``.
"""

import numpy as np

#: The broker-neutral tick row (``KTick``): every decoder fills it, the candle kernel reads
#: only it. ``event_ns`` is the exchange's time or, without one, the receive time;
#: ``price``, ``day_high`` and ``day_low`` are integer units of the instrument's price scale;
#: ``volume`` (cumulative for the day) is valid when ``has_volume``, the day's range when
#: ``has_day_range``; ``auction`` says that before the open this price is the pre-open
#: auction's. ``slot`` is -1 for an instrument not in the map.
KTICK_DTYPE = np.dtype(
    [
        ("recv_ns", np.int64),
        ("event_ns", np.int64),
        ("volume", np.int64),
        ("slot", np.int32),
        ("price", np.int32),
        ("day_high", np.int32),
        ("day_low", np.int32),
        ("has_volume", np.uint8),
        ("has_day_range", np.uint8),
        ("auction", np.uint8),
    ],
    align=True,
)
