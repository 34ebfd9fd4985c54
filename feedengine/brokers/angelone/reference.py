"""Reference Angel One decoder: ``struct`` and dicts, one message at a time.

Plain Python, written for clarity: it turns messages into the broker-neutral tick rows
(``KTICK_DTYPE`` fields, as dicts) with the checks in the order the compiled decoder in
``ext/angelone/_wire.pyx`` makes them, and resolves slots with a plain dict. The tests hold
the compiled decoder to it on random, adversarial and encoded input.
"""

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from feedengine.brokers.angelone.wire import (
    MAX_TIMESTAMP_MS,
    OFFSET_DAY_HIGH,
    OFFSET_DAY_LOW,
    OFFSET_EXCHANGE_TIMESTAMP,
    OFFSET_EXCHANGE_TYPE,
    OFFSET_LAST_TRADED_PRICE,
    OFFSET_MODE,
    OFFSET_TOKEN,
    OFFSET_VOLUME,
    PACKET_SIZE,
    TOKEN_BYTES,
    ExchangeType,
    Fault,
    Mode,
    instrument_key,
)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _i64(message: bytes, offset: int) -> int:
    return int(struct.unpack_from("<q", message, offset)[0])


def _token(message: bytes) -> str:
    raw = message[OFFSET_TOKEN : OFFSET_TOKEN + TOKEN_BYTES]
    return raw.split(b"\0", 1)[0].decode("latin-1")


def decode_message(
    message: bytes, recv_ns: int, slots: Mapping[int, int]
) -> tuple[dict[str, Any] | None, Fault]:
    """Decode one message into a neutral tick row.

    Parameters
    ----------
    message
        One binary WebSocket message.
    recv_ns
        Its receive time (Unix ns).
    slots
        Instrument key (:func:`~feedengine.brokers.angelone.wire.instrument_key`) to slot.

    Returns
    -------
    (dict or None, Fault)
        The row (``KTICK_DTYPE`` field names) or None, and the fault. A depth packet of its
        right length gives no row and no fault.
    """
    n = len(message)
    if n == 0:
        return None, Fault.EMPTY
    try:
        mode = Mode(message[OFFSET_MODE])
    except ValueError:
        return None, Fault.BAD_MODE
    if n < PACKET_SIZE[mode]:
        return None, Fault.TRUNCATED
    if n > PACKET_SIZE[mode]:
        return None, Fault.TRAILING
    try:
        exchange = ExchangeType(message[OFFSET_EXCHANGE_TYPE])
    except ValueError:
        return None, Fault.BAD_EXCHANGE
    if mode == Mode.DEPTH:
        return None, Fault.NONE
    timestamp_ms = _i64(message, OFFSET_EXCHANGE_TIMESTAMP)
    if not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
        return None, Fault.TIME_RANGE
    quote = mode != Mode.LTP
    price = _i64(message, OFFSET_LAST_TRADED_PRICE)
    high = _i64(message, OFFSET_DAY_HIGH) if quote else 0
    low = _i64(message, OFFSET_DAY_LOW) if quote else 0
    if not all(INT32_MIN <= v <= INT32_MAX for v in (price, high, low)):
        return None, Fault.PRICE_RANGE
    key = instrument_key(exchange, _token(message))
    row = {
        "recv_ns": recv_ns,
        "event_ns": timestamp_ms * 1_000_000 if timestamp_ms else recv_ns,
        "volume": _i64(message, OFFSET_VOLUME) if quote else 0,
        "slot": -1 if key is None else slots.get(key, -1),
        "price": price,
        "day_high": high,
        "day_low": low,
        "has_volume": int(quote),
        "has_day_range": int(quote),
        "auction": 0,
    }
    return row, Fault.NONE


def decode_records(
    messages: Sequence[bytes], recv_ns: Sequence[int], slots: Mapping[int, int]
) -> tuple[list[dict[str, Any]], list[int], int]:
    """Decode messages in order; return ``(rows, fault counts by code, first faulty index)``.

    The first faulty index is -1 when no message has a fault.
    """
    rows: list[dict[str, Any]] = []
    counts = [0] * len(Fault)
    first_bad = -1
    for i, (message, recv) in enumerate(zip(messages, recv_ns, strict=True)):
        row, fault = decode_message(message, recv, slots)
        if row is not None:
            rows.append(row)
        if fault:
            counts[fault] += 1
            if first_bad < 0:
                first_bad = i
    return rows, counts, first_bad
