"""The numpy dtypes of the C structs in ``ext/feedtypes.pxd``, each defined once.

``align=True`` gives numpy the C compiler's layout (natural alignment, trailing padding);
``tests/test_dtypes.py`` checks itemsize and every offset against the compiled structs.
"""

import numpy as np

#: Depth levels per side in a full packet.
DEPTH = 5

#: One decoded Kite packet (``Tick`` in feedtypes.pxd). Prices are integer units of
#: ``1/divisor(segment)``; timestamps are Unix seconds, 0 when the packet has none.
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

#: The candle kernel's lean tick row (``KTick`` in feedtypes.pxd). ``day_high`` and
#: ``day_low`` are the day's range as the packet reports it, valid when ``has_day_range``.
KTICK_DTYPE = np.dtype(
    [
        ("recv_ns", np.int64),
        ("exchange_timestamp", np.int32),
        ("last_trade_time", np.int32),
        ("instrument_token", np.uint32),
        ("last_price", np.int32),
        ("volume_traded", np.int32),
        ("day_high", np.int32),
        ("day_low", np.int32),
        ("packet_length", np.uint16),
        ("segment", np.uint8),
        ("has_volume", np.uint8),
        ("has_day_range", np.uint8),
    ],
    align=True,
)

#: Per-instrument kernel state (``SlotState``).
SLOT_DTYPE = np.dtype(
    [
        ("day_start_ns", np.int64),
        ("open_ns", np.int64),
        ("close_ns", np.int64),
        ("preopen_day", np.int64),
        ("extremes_day_ns", np.int64),
        ("token", np.uint32),
        ("open_s", np.int32),
        ("close_s", np.int32),
        ("preopen_price", np.int32),
        ("day_high", np.int32),
        ("day_low", np.int32),
    ],
    align=True,
)

#: Per-instrument, per-interval candle state (``Bar``).
BAR_DTYPE = np.dtype(
    [
        ("start_ns", np.int64),
        ("end_ns", np.int64),
        ("base", np.int64),
        ("last", np.int64),
        ("next_base", np.int64),
        ("open", np.int32),
        ("high", np.int32),
        ("low", np.int32),
        ("close", np.int32),
        ("state", np.uint8),
    ],
    align=True,
)

#: A candle row in the ring the flusher drains (``CandleRow``).
CANDLE_ROW_DTYPE = np.dtype(
    [
        ("bucket_start_ns", np.int64),
        ("volume", np.int64),
        ("slot", np.int32),
        ("open", np.int32),
        ("high", np.int32),
        ("low", np.int32),
        ("close", np.int32),
        ("interval", np.uint16),
        ("final", np.uint8),
    ],
    align=True,
)

#: Bytes of a trading symbol in a candle record (``SYMBOL_BYTES`` in feedtypes.pxd).
SYMBOL_BYTES = 40
#: Bytes of an exchange code in a candle record (``EXCHANGE_BYTES`` in feedtypes.pxd).
EXCHANGE_BYTES = 12

#: A candle resolved for storage (``CandleRecord``): sinks and the spill file take these.
RECORD_DTYPE = np.dtype(
    [
        ("bucket_start_ns", np.int64),
        ("volume", np.int64),
        ("open", np.int32),
        ("high", np.int32),
        ("low", np.int32),
        ("close", np.int32),
        ("minutes", np.int16),
        ("decimals", np.uint8),
        ("final", np.uint8),
        ("symbol", f"S{SYMBOL_BYTES}"),
        ("exchange", f"S{EXCHANGE_BYTES}"),
    ],
    align=True,
)
