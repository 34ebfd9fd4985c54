"""The numpy dtype of Kite's fully decoded packet (``Tick`` in ``ext/kite/_wire.pyx``).

``tests/test_dtypes.py`` checks itemsize and every offset against the compiled struct.
"""

import numpy as np

#: Depth levels per side in a full packet (Kite sends 5 bids then 5 asks).
DEPTH = 5

#: One decoded Kite packet, with field names as ``kiteconnect`` uses them. Prices are
#: integer units of ``1/divisor(segment)``; timestamps are Unix seconds, 0 when the packet
#: has none.
TICK_DTYPE = np.dtype(
    [
        ("recv_ns", np.int64),
        ("last_trade_time", np.int64),
        ("exchange_timestamp", np.int64),
        ("instrument_token", np.uint32),
        ("last_price", np.int32),
        ("last_traded_quantity", np.int32),
        ("average_traded_price", np.int32),
        ("volume_traded", np.int32),
        ("total_buy_quantity", np.int32),
        ("total_sell_quantity", np.int32),
        ("open", np.int32),
        ("high", np.int32),
        ("low", np.int32),
        ("close", np.int32),
        ("change", np.int32),
        ("oi", np.int32),
        ("oi_day_high", np.int32),
        ("oi_day_low", np.int32),
        ("bid_quantity", np.int32, (DEPTH,)),
        ("bid_price", np.int32, (DEPTH,)),
        ("ask_quantity", np.int32, (DEPTH,)),
        ("ask_price", np.int32, (DEPTH,)),
        ("bid_orders", np.int16, (DEPTH,)),
        ("ask_orders", np.int16, (DEPTH,)),
        ("packet_length", np.uint16),
        ("mode", np.uint8),
        ("segment", np.uint8),
        ("tradable", np.uint8),
    ],
    align=True,
)
