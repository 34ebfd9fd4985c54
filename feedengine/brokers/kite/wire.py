"""Decode (and encode) Kite's binary WebSocket messages as numpy rows (SPEC section 2).

``decode`` turns one message into an array of :data:`~feedengine.dtypes.TICK_DTYPE` rows,
one per packet, with field names as ``kiteconnect`` uses them. Prices stay integers in units
of ``1/divisor(segment)``: :func:`to_kite` gives kiteconnect-style dicts with rupee floats.
The engine uses the batch decoder (``feedengine.decoder``), which fills the neutral kernel
rows; :func:`decode_kernel_into` does the same for one message.

A malformed message (unknown packet length, a length past the end, truncated, empty) keeps
its well-formed packets before the fault; the fault is returned, logged and never raised.
"""

import logging
from datetime import datetime
from enum import IntEnum
from typing import Any

import numpy as np

from feedengine.brokers.kite import _wire
from feedengine.brokers.kite.dtypes import DEPTH, TICK_DTYPE
from feedengine.brokers.kite.segments import DIVISORS
from feedengine.dtypes import KTICK_DTYPE
from feedengine.sessions import IST
from feedengine.slots import SlotTable

log = logging.getLogger(__name__)

__all__ = [
    "KTICK_DTYPE",
    "NEED_SPACE",
    "TICK_DTYPE",
    "Fault",
    "Mode",
    "decode",
    "decode_checked",
    "decode_kernel_into",
    "encode",
    "to_kite",
]


class Fault(IntEnum):
    """Why a message stopped decoding (``ext/feedtypes.pxd``)."""

    NONE = 0
    EMPTY = 1
    TRUNCATED = 2
    PAST_END = 3
    BAD_LENGTH = 4
    TRAILING = 5


class Mode(IntEnum):
    """Subscription mode of a packet, as Kite names them."""

    LTP = 1
    QUOTE = 2
    FULL = 3


#: Returned by the ``*_into`` decoders instead of a fault when the buffer is too small.
NEED_SPACE: int = _wire.NEED_SPACE_CODE

#: Packet body length of each kind Kite sends.
PACKET_LTP, PACKET_INDEX_QUOTE, PACKET_INDEX_FULL, PACKET_QUOTE, PACKET_FULL = 8, 28, 32, 44, 184


def _as_bytes(message: bytes | bytearray | memoryview) -> memoryview:
    return memoryview(message).cast("B")


def decode_checked(
    message: bytes | bytearray | memoryview, recv_ns: int = 0
) -> tuple[np.ndarray, Fault]:
    """Decode one message; return its rows and how it ended.

    Parameters
    ----------
    message
        One binary WebSocket message exactly as Kite sent it.
    recv_ns
        Receive time (Unix ns) stored in every row.

    Returns
    -------
    (numpy.ndarray, Fault)
        One ``TICK_DTYPE`` row per well-formed packet before any fault, and the fault.
    """
    buf = _as_bytes(message)
    out = np.empty(_wire.max_rows(buf), dtype=TICK_DTYPE)
    written, fault = _wire.decode_into(buf, recv_ns, out, 0)
    return out[:written], Fault(fault)


def decode(message: bytes | bytearray | memoryview, recv_ns: int = 0) -> np.ndarray:
    """Decode one message into ``TICK_DTYPE`` rows; a fault is logged, never raised.

    Heartbeats (1-byte messages) give no rows.
    """
    rows, fault = decode_checked(message, recv_ns)
    if fault:
        log.warning(
            "malformed Kite message (%d bytes): %s after %d packets",
            len(_as_bytes(message)),
            fault.name,
            len(rows),
        )
    return rows


def decode_kernel_into(
    message: bytes | bytearray | memoryview,
    recv_ns: int,
    out: np.ndarray,
    start: int,
    table: SlotTable,
) -> tuple[int, int]:
    """Append a message's neutral ``KTICK_DTYPE`` rows to ``out[start:]``.

    Slots are looked up in ``table``. Returns ``(rows written, code)``: a :class:`Fault`
    value, or :data:`NEED_SPACE` (nothing written) when ``out`` lacks room for the
    message's upper bound of rows.
    """
    result: tuple[int, int] = _wire.decode_kernel_into(
        _as_bytes(message), recv_ns, out, start, table.keys, table.slots, table.shift
    )
    return result


def _price(value: int, div: int) -> float:
    return value / div


def _timestamp(seconds: int) -> datetime | None:
    return datetime.fromtimestamp(seconds, IST) if seconds else None


def to_kite(ticks: np.ndarray) -> list[dict[str, Any]]:
    """Convert ``TICK_DTYPE`` rows to dicts shaped like ``KiteTicker``'s ticks.

    Same keys as kiteconnect's Python client. Prices become rupee floats, timestamps
    timezone-aware IST datetimes (``None`` when absent),
    ``change`` the absolute change from the previous close (kiteconnect's Python client
    gives a percentage instead; its Go client and the reference fixtures the absolute value).
    For display and comparisons only: the engine never builds these.
    """
    result = []
    for t in ticks:
        div = int(DIVISORS[t["segment"]])
        n = int(t["packet_length"])
        d: dict[str, Any] = {
            "tradable": bool(t["tradable"]),
            "mode": Mode(int(t["mode"])).name.lower(),
            "instrument_token": int(t["instrument_token"]),
            "last_price": _price(int(t["last_price"]), div),
        }
        if n != PACKET_LTP:
            d["ohlc"] = {k: _price(int(t[k]), div) for k in ("open", "high", "low", "close")}
            d["change"] = _price(int(t["change"]), div)
        if n in (PACKET_QUOTE, PACKET_FULL):
            for name in (
                "last_traded_quantity",
                "volume_traded",
                "total_buy_quantity",
                "total_sell_quantity",
            ):
                d[name] = int(t[name])
            d["average_traded_price"] = _price(int(t["average_traded_price"]), div)
        if n == PACKET_FULL:
            d["last_trade_time"] = _timestamp(int(t["last_trade_time"]))
            d["oi"] = int(t["oi"])
            d["oi_day_high"] = int(t["oi_day_high"])
            d["oi_day_low"] = int(t["oi_day_low"])
            d["depth"] = {
                side: [
                    {
                        "quantity": int(t[f"{prefix}_quantity"][i]),
                        "price": _price(int(t[f"{prefix}_price"][i]), div),
                        "orders": int(t[f"{prefix}_orders"][i]),
                    }
                    for i in range(DEPTH)
                ]
                for side, prefix in (("buy", "bid"), ("sell", "ask"))
            }
        if n in (PACKET_FULL, PACKET_INDEX_FULL):
            d["exchange_timestamp"] = _timestamp(int(t["exchange_timestamp"]))
        result.append(d)
    return result


# Big-endian wire layouts, length prefix included, for the vectorized encoder.
_INDEX_WORDS = ("instrument_token", "last_price", "high", "low", "open", "close", "change")
_QUOTE_WORDS = (
    "instrument_token",
    "last_price",
    "last_traded_quantity",
    "average_traded_price",
    "volume_traded",
    "total_buy_quantity",
    "total_sell_quantity",
    "open",
    "high",
    "low",
    "close",
)

#: The big-endian 32-bit words of each packet kind, in wire order (SPEC section 2). A full
#: packet continues with 10 depth entries of 12 bytes: quantity, price, orders (int16), pad.
PACKET_WORDS: dict[int, tuple[str, ...]] = {
    PACKET_LTP: ("instrument_token", "last_price"),
    PACKET_INDEX_QUOTE: _INDEX_WORDS,
    PACKET_INDEX_FULL: (*_INDEX_WORDS, "exchange_timestamp"),
    PACKET_QUOTE: _QUOTE_WORDS,
    PACKET_FULL: (
        *_QUOTE_WORDS,
        "last_trade_time",
        "oi",
        "oi_day_high",
        "oi_day_low",
        "exchange_timestamp",
    ),
}

# Big-endian wire layouts, length prefix included, for the vectorized encoder.
_DEPTH_ENTRY = [("quantity", ">i4"), ("price", ">i4"), ("orders", ">i2"), ("pad", ">i2")]
_WIRE = {
    plen: np.dtype(
        [("length", ">u2")]
        + [(w, ">u4" if w == "instrument_token" else ">i4") for w in words]
        + ([("depth", _DEPTH_ENTRY, (2 * DEPTH,))] if plen == PACKET_FULL else [])
    )
    for plen, words in PACKET_WORDS.items()
}


def _packets(ticks: np.ndarray, rows: np.ndarray | None, plen: int) -> np.ndarray:
    """Rows of one packet kind as big-endian wire records (length prefix included)."""
    wire = _WIRE[plen]
    n = len(ticks) if rows is None else len(rows)
    packets = np.zeros(n, dtype=wire)
    packets["length"] = plen

    def column(name: str) -> np.ndarray:
        # Index one field at a time: fancy-indexing a whole structured array copies it
        # field by field per row, far slower.
        col: np.ndarray = ticks[name]
        return col if rows is None else col[rows]

    for name in wire.names or ():
        if name not in ("length", "depth"):
            packets[name] = column(name)
    if plen == PACKET_FULL:
        for field in ("quantity", "price", "orders"):
            packets["depth"][field][:, :DEPTH] = column(f"bid_{field}")
            packets["depth"][field][:, DEPTH:] = column(f"ask_{field}")
    return packets


def encode(ticks: np.ndarray) -> bytes:
    """Encode ``TICK_DTYPE`` rows as one Kite message, in row order (vectorized).

    Each row's ``packet_length`` picks its packet kind; fields a kind does not carry are
    ignored, and ``change`` is written only by index packets, whose wire format has it.
    """
    lengths = ticks["packet_length"].astype(np.int64)
    kinds = np.unique(lengths).tolist()
    unknown = set(kinds) - set(_WIRE)
    if unknown:
        raise ValueError(f"no Kite packet has length {sorted(unknown)}")
    header = np.array(len(ticks), ">u2").tobytes()
    if len(kinds) <= 1:  # one kind (the usual message): the records are the message
        return header + (_packets(ticks, None, kinds[0]).tobytes() if kinds else b"")
    ends = np.cumsum(lengths + 2) + 2
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    out[:2] = np.frombuffer(header, np.uint8)
    starts = ends - lengths - 2
    for plen in kinds:
        rows = np.flatnonzero(lengths == plen)
        raw = _packets(ticks, rows, plen).view(np.uint8).reshape(len(rows), plen + 2)
        out[starts[rows, None] + np.arange(plen + 2)] = raw
    return out.tobytes()
