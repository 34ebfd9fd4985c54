"""Hypothesis strategies for Kite packets and messages, well-formed and not."""

import struct

from hypothesis import strategies as st

from feedengine.brokers.kite import reference as ref

SEGMENTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12]
INT32 = st.integers(-(2**31), 2**31 - 1)
INT16 = st.integers(-(2**15), 2**15 - 1)


@st.composite
def tokens(draw, segments=SEGMENTS):
    return (draw(st.integers(0, 2**24 - 1)) << 8) | draw(st.sampled_from(segments))


@st.composite
def tick_dicts(draw, lengths=ref.KNOWN_LENGTHS, segments=SEGMENTS, non_negative=False):
    """A tick dict (reference layout) whose packet encodes every field it carries."""
    int32 = st.integers(0, 2**31 - 1) if non_negative else INT32
    int16 = st.integers(0, 2**15 - 1) if non_negative else INT16
    t = ref.empty_tick()
    t["packet_length"] = draw(st.sampled_from(lengths))
    t["instrument_token"] = draw(tokens(segments))
    for name in (
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
        "change",
        "oi",
        "oi_day_high",
        "oi_day_low",
        "exchange_timestamp",
        "last_trade_time",
    ):
        t[name] = draw(int32)
    for side in ("bid", "ask"):
        t[f"{side}_quantity"] = draw(st.lists(int32, min_size=5, max_size=5))
        t[f"{side}_price"] = draw(st.lists(int32, min_size=5, max_size=5))
        t[f"{side}_orders"] = draw(st.lists(int16, min_size=5, max_size=5))
    return t


@st.composite
def packets(draw, non_negative=False):
    return ref.encode_packet(draw(tick_dicts(non_negative=non_negative)))


@st.composite
def messages(draw, max_packets=40):
    """A well-formed message of mixed packet kinds and segments."""
    return ref.encode_message(draw(st.lists(packets(), max_size=max_packets)))


@st.composite
def malformed_messages(draw):
    """A message broken in one of the ways SPEC section 2 names (or random bytes)."""
    good = draw(st.lists(packets(), max_size=8))
    kind = draw(
        st.sampled_from(
            ["truncate", "bad_length", "past_end", "count", "trailing", "random", "empty"]
        )
    )
    msg = ref.encode_message(good)
    if kind == "truncate":
        return msg[: draw(st.integers(0, max(0, len(msg) - 1)))]
    if kind == "bad_length":
        n = draw(st.integers(0, 400).filter(lambda v: v not in ref.KNOWN_LENGTHS))
        body = draw(st.binary(min_size=n, max_size=n))
        return struct.pack(">H", len(good) + 1) + msg[2:] + struct.pack(">H", n) + body
    if kind == "past_end":
        return struct.pack(">H", len(good) + 1) + msg[2:] + struct.pack(">H", 184) + b"\x01" * 20
    if kind == "count":
        return struct.pack(">H", draw(st.integers(0, 65535))) + msg[2:]
    if kind == "trailing":
        return msg + draw(st.binary(min_size=1, max_size=20))
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=600))
