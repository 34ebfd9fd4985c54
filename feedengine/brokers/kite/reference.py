"""Reference Kite decoder and encoder: ``struct`` and dicts, one packet at a time."""

import struct
from typing import Any

from feedengine.brokers.kite.segments import Segment
from feedengine.sessions import NS_PER_S, ist_day

LTP, INDEX_QUOTE, INDEX_FULL, QUOTE, FULL = 8, 28, 32, 44, 184
KNOWN_LENGTHS = (LTP, INDEX_QUOTE, INDEX_FULL, QUOTE, FULL)
DEPTH = 5

# Fault codes, as in ext/kite/_wire.pyx.
FAULT_NONE, FAULT_EMPTY, FAULT_TRUNCATED, FAULT_PAST_END, FAULT_BAD_LENGTH, FAULT_TRAILING = range(
    6
)

_FIELDS_44 = (
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


def _i32(p: bytes, off: int) -> int:
    return int(struct.unpack_from(">i", p, off)[0])


def _wrap32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


def empty_tick() -> dict[str, Any]:
    """A tick with every field zero, as the compiled decoder starts each row."""
    tick: dict[str, Any] = dict.fromkeys(
        (
            "recv_ns",
            "last_trade_time",
            "exchange_timestamp",
            "instrument_token",
            "packet_length",
            "mode",
            "segment",
            "tradable",
            "change",
            "oi",
            "oi_day_high",
            "oi_day_low",
            *_FIELDS_44,
        ),
        0,
    )
    for side in ("bid", "ask"):
        for f in ("quantity", "price", "orders"):
            tick[f"{side}_{f}"] = [0] * DEPTH
    return tick


def decode_packet(p: bytes, recv_ns: int = 0) -> dict[str, Any]:
    """Decode one packet body whose length is one of ``KNOWN_LENGTHS``."""
    n = len(p)
    t = empty_tick()
    t["recv_ns"] = recv_ns
    t["instrument_token"] = struct.unpack_from(">I", p, 0)[0]
    t["segment"] = t["instrument_token"] & 0xFF
    t["tradable"] = int(t["segment"] != Segment.INDICES)
    t["packet_length"] = n
    t["mode"] = 1 if n == LTP else 2 if n in (QUOTE, INDEX_QUOTE) else 3
    t["last_price"] = _i32(p, 4)
    if n in (INDEX_QUOTE, INDEX_FULL):
        for name, off in (("high", 8), ("low", 12), ("open", 16), ("close", 20), ("change", 24)):
            t[name] = _i32(p, off)
        if n == INDEX_FULL:
            t["exchange_timestamp"] = _i32(p, 28)
    elif n in (QUOTE, FULL):
        for i, name in enumerate(_FIELDS_44):
            t[name] = _i32(p, 4 + 4 * i)
        t["change"] = _wrap32(t["last_price"] - t["close"])
        if n == FULL:
            t["last_trade_time"] = _i32(p, 44)
            t["oi"], t["oi_day_high"], t["oi_day_low"] = (_i32(p, 48), _i32(p, 52), _i32(p, 56))
            t["exchange_timestamp"] = _i32(p, 60)
            for i in range(2 * DEPTH):
                side, level = ("bid", i) if i < DEPTH else ("ask", i - DEPTH)
                qty, price, orders = struct.unpack_from(">iih", p, 64 + 12 * i)
                t[f"{side}_quantity"][level] = qty
                t[f"{side}_price"][level] = price
                t[f"{side}_orders"][level] = orders
    return t


def decode(message: bytes, recv_ns: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Decode a whole message; return ``(ticks, fault code)``."""
    n = len(message)
    if n == 0:
        return [], FAULT_EMPTY
    if n == 1:
        return [], FAULT_NONE
    (count,) = struct.unpack_from(">H", message, 0)
    pos = 2
    ticks: list[dict[str, Any]] = []
    for _ in range(count):
        if pos + 2 > n:
            return ticks, FAULT_TRUNCATED
        (plen,) = struct.unpack_from(">H", message, pos)
        pos += 2
        if pos + plen > n:
            return ticks, FAULT_PAST_END
        if plen not in KNOWN_LENGTHS:
            return ticks, FAULT_BAD_LENGTH
        ticks.append(decode_packet(message[pos : pos + plen], recv_ns))
        pos += plen
    return ticks, (FAULT_TRAILING if pos != n else FAULT_NONE)


def encode_packet(t: dict[str, Any]) -> bytes:
    """Encode a tick dict as a packet of ``t["packet_length"]`` bytes (no length prefix)."""
    n = t["packet_length"]
    head = struct.pack(">Ii", t["instrument_token"], t["last_price"])
    if n == LTP:
        return head
    if n in (INDEX_QUOTE, INDEX_FULL):
        body = struct.pack(">5i", t["high"], t["low"], t["open"], t["close"], t["change"])
        tail = struct.pack(">i", t["exchange_timestamp"]) if n == INDEX_FULL else b""
        return head + body + tail
    if n not in (QUOTE, FULL):
        raise ValueError(f"no Kite packet has length {n}")
    body = struct.pack(">9i", *(t[f] for f in _FIELDS_44[1:]))
    if n == QUOTE:
        return head + body
    extra = struct.pack(
        ">5i",
        t["last_trade_time"],
        t["oi"],
        t["oi_day_high"],
        t["oi_day_low"],
        t["exchange_timestamp"],
    )
    depth = b"".join(
        struct.pack(
            ">iih2x", t[f"{side}_quantity"][i], t[f"{side}_price"][i], t[f"{side}_orders"][i]
        )
        for side in ("bid", "ask")
        for i in range(DEPTH)
    )
    return head + body + extra + depth


def encode_message(packets: list[bytes]) -> bytes:
    """Frame packets as one binary WebSocket message."""
    parts = [struct.pack(">H", len(packets))]
    for p in packets:
        parts.append(struct.pack(">H", len(p)))
        parts.append(p)
    return b"".join(parts)


def kernel_row(tick: dict[str, Any], slot: int) -> dict[str, Any]:
    """The neutral kernel row (``KTICK_DTYPE`` fields) of a decoded tick in ``slot``.

    SPEC section 4's reading of a Kite packet: the exchange timestamp of full and
    index-full packets is the event time (else the receive time); quote and full packets of
    tradable segments carry the cumulative volume; every packet but ltp the day's range; a
    full packet whose last trade is of the event's IST date carries the auction's price.
    """
    plen = tick["packet_length"]
    recv = int(tick["recv_ns"])
    ets = int(tick["exchange_timestamp"]) if plen in (FULL, INDEX_FULL) else 0
    event = ets * NS_PER_S if ets else recv
    ltt = int(tick["last_trade_time"]) if plen == FULL else 0
    has_volume = plen in (QUOTE, FULL) and tick["instrument_token"] & 0xFF != Segment.INDICES
    return {
        "recv_ns": recv,
        "event_ns": event,
        "volume": int(tick["volume_traded"]) if has_volume else 0,
        "slot": slot,
        "price": int(tick["last_price"]),
        "day_high": int(tick["high"]) if plen != LTP else 0,
        "day_low": int(tick["low"]) if plen != LTP else 0,
        "has_volume": int(has_volume),
        "has_day_range": int(plen != LTP),
        "auction": int(bool(ltt) and ist_day(ltt * NS_PER_S) == ist_day(event)),
    }
