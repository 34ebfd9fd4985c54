"""Angel One's wire: the compiled decoder against the reference, the encoder, and the SDK.

The official SDK (``smartapi-python``'s ``SmartWebSocketV2._parse_binary_data``) is the
differential oracle for the full decode, where it is right. Its package runs a request to a
public IP service when imported (``SmartApi/__init__`` imports ``smartConnect``), so its
WebSocket module is loaded here by file path: that module imports only the standard library,
``websocket`` and ``logzero``, and no test touches the network.
"""

import importlib.util
import logging
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedengine.brokers.angelone import _wire as _angelone_wire
from feedengine.brokers.angelone import reference as ref
from feedengine.brokers.angelone import wire
from feedengine.brokers.angelone.wire import (
    BEST_LEVELS,
    DEPTH_LEVELS,
    MAX_TIMESTAMP_MS,
    PACKET_SIZE,
    WIRE_DTYPES,
    ExchangeType,
    Fault,
    Mode,
)
from feedengine.dtypes import KTICK_DTYPE
from feedengine.slots import SlotTable


def load_sdk() -> ModuleType:
    """``SmartApi/smartWebSocketV2.py`` alone, without running the package's ``__init__``."""
    spec = importlib.util.find_spec("SmartApi")  # locates the package; executes nothing
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "smartWebSocketV2.py"
    module_spec = importlib.util.spec_from_file_location("smartapi_ws_v2_oracle", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


SDK = load_sdk()
# Its __init__ writes a log folder into the working directory: the parser needs no state.
PARSER = SDK.SmartWebSocketV2.__new__(SDK.SmartWebSocketV2)

I64 = st.integers(-(2**63), 2**63 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
I16 = st.integers(-(2**15), 2**15 - 1)
EDGES = [
    0,
    1,
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**63 - 1,
    -(2**63),
    MAX_TIMESTAMP_MS,
    MAX_TIMESTAMP_MS + 1,
]
#: Integers weighted to the values where the row's checks change their answer.
EDGY_I64 = st.one_of(st.sampled_from(EDGES), I32, I64)
TIMESTAMPS = st.one_of(st.sampled_from(EDGES), st.integers(1_600_000_000_000, 1_900_000_000_000))
FLOATS = st.floats(allow_nan=False)
#: Tokens Angel sends, and tokens no instrument can have.
TOKEN_POOL = ["2885", "1594", "11536", "99926000", "0042", "4294967295", "4294967296", ""]
TOKENS = st.one_of(
    st.sampled_from(TOKEN_POOL),
    st.integers(0, 2**33).map(str),
    st.text(st.characters(max_codepoint=255, exclude_characters="\0"), max_size=25),
)
DOCUMENTED = [int(e) for e in ExchangeType]
EXCHANGES = st.one_of(st.sampled_from(DOCUMENTED), st.integers(0, 255))
#: The slot table's candidates: every pool token on every exchange that has a key.
KEY_POOL = sorted(
    {k for e in DOCUMENTED for t in TOKEN_POOL if (k := wire.instrument_key(e, t)) is not None}
)


def levels(draw: Any, dtype: np.dtype, n: int, flag: int | None = None) -> list[dict]:
    ints = {"<i2": I16, "<i4": I32, "<i8": I64}
    out = []
    for _ in range(n):
        level = {name: draw(ints[dtype.fields[name][0].str]) for name in dtype.names}
        if flag is not None:
            level["flag"] = flag
        out.append(level)
    return out


@st.composite
def ticks(draw, modes=tuple(Mode), exchanges=EXCHANGES, valid_flags=False) -> dict:
    """A packet's fields by the SDK's names, every field the mode carries drawn."""
    mode = draw(st.sampled_from(modes))
    dtype = WIRE_DTYPES[mode]
    tick: dict[str, Any] = {
        "subscription_mode": int(mode),
        "exchange_type": draw(exchanges),
        "token": draw(TOKENS),
    }
    for name in dtype.names:
        kind = dtype.fields[name][0]
        if name in tick or kind.subdtype is not None:
            continue
        if name == "exchange_timestamp":
            tick[name] = draw(TIMESTAMPS)
        else:
            tick[name] = draw(FLOATS if kind.kind == "f" else EDGY_I64)
    if mode == Mode.SNAP_QUOTE:
        bf = wire.BEST_FIVE_DTYPE
        tick["best_5_buy_data"] = levels(draw, bf, BEST_LEVELS, 1 if valid_flags else None)
        tick["best_5_sell_data"] = levels(draw, bf, BEST_LEVELS, 0 if valid_flags else None)
    if mode == Mode.DEPTH:
        for side in ("buy", "sell"):
            tick[f"depth_20_{side}_data"] = levels(draw, wire.DEPTH_LEVEL_DTYPE, DEPTH_LEVELS)
    else:
        tick["subscription_mode_val"] = mode.name
    return tick


@st.composite
def messages(draw) -> bytes:
    """Any message: well-formed packets, cut or extended ones, flipped bytes, text, noise."""
    packet = wire.encode(draw(ticks()))
    kind = draw(st.sampled_from(["packet", "cut", "extended", "flipped", "text", "noise"]))
    if kind == "cut":
        return packet[: draw(st.integers(0, len(packet) - 1))]
    if kind == "extended":
        return packet + draw(st.binary(min_size=1, max_size=8))
    if kind == "flipped":
        at = draw(st.integers(0, len(packet) - 1))
        return packet[:at] + bytes([draw(st.integers(0, 255))]) + packet[at + 1 :]
    if kind == "text":
        return draw(st.sampled_from([b"pong", b'{"errorCode":"E1002","errorMessage":"x"}']))
    if kind == "noise":
        return draw(st.binary(max_size=500))
    return packet


def compiled(
    msgs: list[bytes], recv: list[int], keys: list[int]
) -> tuple[list[dict], list[int], int]:
    rows, faults, first_bad = wire.decode_batch(msgs, recv, SlotTable.build(keys))
    return (
        [{n: row[n].item() for n in KTICK_DTYPE.names} for row in rows],
        faults.tolist(),
        first_bad,
    )


def reference(
    msgs: list[bytes], recv: list[int], keys: list[int]
) -> tuple[list[dict], list[int], int]:
    return ref.decode_records(msgs, recv, {k: i for i, k in enumerate(keys)})


def packet(**fields: Any) -> bytes:
    fields.setdefault("subscription_mode", Mode.QUOTE)
    fields.setdefault("exchange_type", ExchangeType.NSE_CM)
    fields.setdefault("token", "2885")
    return wire.encode(fields)


# --- the layout, defined once and compiled in --------------------------------------------


def test_packet_sizes():
    assert PACKET_SIZE == {Mode.LTP: 51, Mode.QUOTE: 123, Mode.SNAP_QUOTE: 379, Mode.DEPTH: 443}


def test_compiled_layout_equals_python_constants():
    layout = _angelone_wire.wire_layout()
    assert layout["sizes"] == {int(m): size for m, size in PACKET_SIZE.items()}
    assert layout["offsets"] == {
        "subscription_mode": wire.OFFSET_MODE,
        "exchange_type": wire.OFFSET_EXCHANGE_TYPE,
        "token": wire.OFFSET_TOKEN,
        "exchange_timestamp": wire.OFFSET_EXCHANGE_TIMESTAMP,
        "last_traded_price": wire.OFFSET_LAST_TRADED_PRICE,
        "volume_trade_for_the_day": wire.OFFSET_VOLUME,
        "high_price_of_the_day": wire.OFFSET_DAY_HIGH,
        "low_price_of_the_day": wire.OFFSET_DAY_LOW,
    }
    assert layout["token_bytes"] == wire.TOKEN_BYTES
    assert layout["exchanges"] == DOCUMENTED
    assert layout["max_timestamp_ms"] == MAX_TIMESTAMP_MS


def test_compiled_faults_equal_the_enum():
    assert _angelone_wire.fault_codes() == {f.name: f.value for f in Fault}
    assert len(Fault) == _angelone_wire.NUM_FAULTS


def test_price_decimals():
    # Angel's WebSocket 2.0 documentation: currencies divide by 10^7, the rest by 100.
    assert wire.PRICE_DECIMALS[ExchangeType.CDE_FO] == 7
    assert {d for e, d in wire.PRICE_DECIMALS.items() if e != ExchangeType.CDE_FO} == {2}


# --- compiled against the reference ------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    st.lists(messages(), max_size=30),
    st.lists(st.sampled_from(KEY_POOL), unique=True),
    st.integers(0, 2**62),
)
def test_compiled_equals_reference(msgs, keys, recv0):
    recv = [recv0 + i for i in range(len(msgs))]
    assert compiled(msgs, recv, keys) == reference(msgs, recv, keys)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(message):
    assert compiled([message], [5], KEY_POOL) == reference([message], [5], KEY_POOL)


@pytest.mark.parametrize("mode", list(Mode))
def test_truncation_at_every_length(mode):
    full = packet(subscription_mode=mode, exchange_timestamp=1, last_traded_price=7)
    size = PACKET_SIZE[mode]
    cuts = [full[:n] for n in range(size)] + [full + b"\0", full + b"\0" * 400]
    rows, faults, first_bad = compiled(cuts, list(range(len(cuts))), KEY_POOL)
    assert (rows, faults, first_bad) == reference(cuts, list(range(len(cuts))), KEY_POOL)
    assert rows == [] and first_bad == 0
    assert faults[Fault.EMPTY] == 1
    assert faults[Fault.TRUNCATED] == size - 1 and faults[Fault.TRAILING] == 2


@pytest.mark.parametrize("mode", list(Mode))
def test_every_exchange_byte(mode):
    msgs = [packet(subscription_mode=mode, exchange_type=e) for e in range(256)]
    rows, faults, _ = compiled(msgs, [0] * 256, KEY_POOL)
    assert (rows, faults, _) == reference(msgs, [0] * 256, KEY_POOL)
    assert faults[Fault.BAD_EXCHANGE] == 256 - len(DOCUMENTED)
    # Depth packets give no row and are no fault; the candle modes give one row each.
    assert len(rows) == (0 if mode == Mode.DEPTH else len(DOCUMENTED))
    if mode != Mode.DEPTH:
        keys = [wire.instrument_key(e, "2885") for e in DOCUMENTED]
        assert [r["slot"] for r in rows] == [KEY_POOL.index(k) for k in keys]


def test_every_mode_byte():
    msgs = [packet(exchange_type=1) for _ in range(256)]
    msgs = [bytes([m]) + p[1:] for m, p in enumerate(msgs)]
    _, faults, _ = result = compiled(msgs, [0] * 256, KEY_POOL)
    assert result == reference(msgs, [0] * 256, KEY_POOL)
    # 252 bytes are no mode; modes 1, 3 and 4 have a quote packet's length, not theirs.
    assert faults[Fault.BAD_MODE] == 252
    assert faults[Fault.TRUNCATED] == 2 and faults[Fault.TRAILING] == 1


@pytest.mark.parametrize(
    ("fields", "fault"),
    [
        ({"exchange_timestamp": 0}, Fault.NONE),
        ({"exchange_timestamp": MAX_TIMESTAMP_MS}, Fault.NONE),
        ({"exchange_timestamp": MAX_TIMESTAMP_MS + 1}, Fault.TIME_RANGE),
        ({"exchange_timestamp": 2**63 - 1}, Fault.TIME_RANGE),
        ({"exchange_timestamp": -1}, Fault.TIME_RANGE),
        ({"exchange_timestamp": -(2**63)}, Fault.TIME_RANGE),
        ({"last_traded_price": 2**31 - 1}, Fault.NONE),
        ({"last_traded_price": -(2**31)}, Fault.NONE),
        ({"last_traded_price": 2**31}, Fault.PRICE_RANGE),
        ({"last_traded_price": -(2**31) - 1}, Fault.PRICE_RANGE),
        ({"last_traded_price": 2**63 - 1}, Fault.PRICE_RANGE),
        ({"high_price_of_the_day": 2**31}, Fault.PRICE_RANGE),
        ({"low_price_of_the_day": -(2**63)}, Fault.PRICE_RANGE),
        ({"volume_trade_for_the_day": 2**63 - 1}, Fault.NONE),
        # A quote's other prices never reach the row.
        ({"open_price_of_the_day": 2**63 - 1, "closed_price": -(2**63)}, Fault.NONE),
        ({"exchange_timestamp": -1, "last_traded_price": 2**40}, Fault.TIME_RANGE),
    ],
)
def test_boundary_values(fields, fault):
    message = packet(**fields)
    result = compiled([message], [99], KEY_POOL)
    assert result == reference([message], [99], KEY_POOL)
    rows, faults, _ = result
    assert faults[fault] == (fault != Fault.NONE)
    assert len(rows) == (fault == Fault.NONE)
    assert wire.decode_checked(message)[1] == fault


def test_ltp_ignores_quote_offsets():
    # An LTP packet is 51 bytes: nothing past the price is read, so no day range or volume.
    rows, _, _ = compiled([packet(subscription_mode=Mode.LTP, last_traded_price=5)], [3], [])
    assert rows == [
        {
            "recv_ns": 3,
            "event_ns": 3,
            "volume": 0,
            "slot": -1,
            "price": 5,
            "day_high": 0,
            "day_low": 0,
            "has_volume": 0,
            "has_day_range": 0,
            "auction": 0,
        }
    ]


def test_row_mapping():
    message = packet(
        subscription_mode=Mode.SNAP_QUOTE,
        exchange_type=ExchangeType.CDE_FO,
        token="1594",
        exchange_timestamp=1_710_909_637_123,
        last_traded_price=831_234_567,
        volume_trade_for_the_day=31_509,
        high_price_of_the_day=832_000_000,
        low_price_of_the_day=829_000_000,
        last_traded_timestamp=1_710_909_630,
    )
    keys = [wire.instrument_key(ExchangeType.NSE_CM, "1594"), wire.instrument_key(13, "1594")]
    rows, faults, first_bad = compiled([message], [42], keys)
    assert (faults, first_bad) == ([0] * len(Fault), -1)
    assert rows == [
        {
            "recv_ns": 42,
            "event_ns": 1_710_909_637_123_000_000,
            "volume": 31_509,
            "slot": 1,
            "price": 831_234_567,
            "day_high": 832_000_000,
            "day_low": 829_000_000,
            "has_volume": 1,
            "has_day_range": 1,
            "auction": 0,
        }
    ]


@pytest.mark.parametrize(
    ("raw", "slot"),
    [
        (b"2885", 0),
        (b"0002885", 0),  # leading zeros: the same number
        (b"2885\0\0\x07", 0),  # the token ends at its first NUL, as the SDK reads it
        (b"4294967295", 1),
        (b"4294967296", -1),  # past 32 bits
        (b"9" * 25, -1),
        (b"", -1),
        (b"\0" + b"2885", -1),
        (b"28a5", -1),
        (b"-2885", -1),
        (b" 2885", -1),
        ("²885".encode("latin-1"), -1),
        (b"\xff" * 25, -1),
    ],
)
def test_tokens(raw, slot):
    message = bytearray(packet())
    message[2:27] = raw.ljust(25, b"\0")
    keys = [wire.instrument_key(1, "2885"), wire.instrument_key(1, "4294967295")]
    rows, _, _ = result = compiled([bytes(message)], [0], keys)
    assert result == reference([bytes(message)], [0], keys)
    assert rows[0]["slot"] == slot


def test_instrument_key():
    assert wire.instrument_key(1, "2885") == (1 << 32) | 2885
    assert wire.instrument_key(13, "4294967295") == (13 << 32) | (2**32 - 1)
    for token in ("", "4294967296", "12a", "1" * 26, "٣", "+1"):
        assert wire.instrument_key(1, token) is None


# --- batches and a full buffer ---------------------------------------------------------


def batch(msgs: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lengths = np.array([len(m) for m in msgs], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    recv = np.arange(len(msgs), dtype=np.int64) * 1000
    return np.frombuffer(b"".join(msgs), np.uint8), offsets, lengths, recv


@settings(max_examples=100, deadline=None)
@given(st.lists(messages(), max_size=40), st.integers(1, 5), st.integers(0, 3))
def test_full_buffer_resumes(msgs, cap, start):
    table = SlotTable.build(KEY_POOL)
    buf, offsets, lengths, recv = batch(msgs)
    faults = np.zeros(len(Fault), np.int64)
    first_bad = np.full(1, -1, np.int64)
    out = np.zeros(start + cap, KTICK_DTYPE)
    got: list[dict] = []
    rec = 0
    while rec < len(msgs):
        rec, end = wire.decode_records(
            buf, offsets, lengths, recv, rec, out, start, faults, first_bad,
            table.keys, table.slots, table.shift,
        )  # fmt: skip
        assert start <= end <= start + cap
        got.extend({n: r[n].item() for n in KTICK_DTYPE.names} for r in out[start:end])
    rows, counts, bad = reference(msgs, recv.tolist(), KEY_POOL)
    assert (got, faults.tolist(), int(first_bad[0])) == (rows, counts, bad)


def test_full_buffer_still_takes_messages_without_rows():
    good, depth = packet(), packet(subscription_mode=Mode.DEPTH)
    msgs = [good, b"", depth, b"pong", good, good]
    table = SlotTable.build([])
    buf, offsets, lengths, recv = batch(msgs)
    faults = np.zeros(len(Fault), np.int64)
    first_bad = np.full(1, -1, np.int64)
    out = np.zeros(1, KTICK_DTYPE)
    args = (buf, offsets, lengths, recv)
    tail = (faults, first_bad, table.keys, table.slots, table.shift)
    # The row fills the buffer; the empty, depth and text messages need no room, the next
    # good packet does: the call stops before it.
    assert wire.decode_records(*args, 0, out, 0, *tail) == (4, 1)
    assert wire.decode_records(*args, 4, out, 1, *tail) == (4, 1)  # no room at all
    assert wire.decode_records(*args, 4, out, 0, *tail) == (5, 1)
    assert wire.decode_records(*args, 5, out, 0, *tail) == (6, 1)
    assert faults[Fault.EMPTY] == 1 and faults[Fault.BAD_MODE] == 1 and first_bad[0] == 1


def test_decode_records_checks_its_arguments():
    table = SlotTable.build([wire.instrument_key(1, "2885")])
    buf, offsets, lengths, recv = batch([packet()])
    faults = np.zeros(len(Fault), np.int64)
    first_bad = np.full(1, -1, np.int64)
    out = np.zeros(1, KTICK_DTYPE)

    def call(**kw: Any) -> tuple[int, int]:
        a: dict[str, Any] = dict(
            buf=buf, offsets=offsets, lengths=lengths, recv_ns=recv, first=0, out=out,
            start=0, faults=faults, fault_record=first_bad, keys=table.keys,
            slots=table.slots, shift=table.shift,
        )  # fmt: skip
        a.update(kw)
        return wire.decode_records(*a.values())

    assert call() == (1, 1)
    full = np.ones(16, np.uint64)  # no empty entry: a miss would probe for ever
    with pytest.raises(ValueError, match="no empty entry"):
        call(keys=full, slots=np.zeros(16, np.int32), shift=60)
    with pytest.raises(ValueError, match="2\\*\\*"):
        call(shift=61)
    with pytest.raises(ValueError, match="2\\*\\*"):
        call(slots=table.slots[:8])
    with pytest.raises(TypeError, match="dtype"):
        call(out=np.zeros(1, np.int64))
    with pytest.raises(IndexError, match="outside the buffer"):
        call(lengths=lengths + 1)
    with pytest.raises(IndexError, match="start"):
        call(start=2)
    with pytest.raises(ValueError, match="disagree"):
        call(faults=np.zeros(3, np.int64))


# --- the encoder and the full decode --------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(ticks())
def test_encode_then_decode(tick):
    message = wire.encode(tick)
    assert len(message) == PACKET_SIZE[Mode(tick["subscription_mode"])]
    assert wire.decode_checked(message)[0] == tick


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(Mode)), st.data())
def test_decode_then_encode_is_the_same_bytes(mode, data):
    # Any bytes after a NUL-padded token, NaN payloads in the float fields included.
    token = data.draw(st.sampled_from(TOKEN_POOL)).encode().ljust(25, b"\0")
    body = data.draw(st.binary(min_size=PACKET_SIZE[mode] - 27, max_size=PACKET_SIZE[mode] - 27))
    message = bytes([mode, data.draw(st.integers(0, 255))]) + token + body
    tick = wire.decode(message)
    assert tick is not None
    assert wire.encode(tick) == message


@settings(max_examples=50, deadline=None)
@given(st.lists(ticks(modes=(Mode.QUOTE,)), min_size=1, max_size=10))
def test_encode_records_equals_encode(quote_ticks):
    records = np.zeros(len(quote_ticks), WIRE_DTYPES[Mode.QUOTE])
    for name in records.dtype.names:
        values = [t[name] for t in quote_ticks]
        records[name] = [v.encode("latin-1") for v in values] if name == "token" else values
    assert wire.encode_records(records) == [wire.encode(t) for t in quote_ticks]
    with pytest.raises(ValueError, match="no Angel One packet"):
        wire.encode_records(np.zeros(2, np.int64))


def test_encode_refuses_what_the_wire_cannot_carry():
    with pytest.raises(ValueError, match="longer than 25"):
        packet(token="1" * 26)
    with pytest.raises(ValueError, match="levels"):
        packet(subscription_mode=Mode.SNAP_QUOTE, best_5_buy_data=[{}] * 6)
    with pytest.raises(OverflowError):
        packet(last_traded_price=2**63)
    with pytest.raises(ValueError):
        packet(subscription_mode=5)


@pytest.mark.parametrize(
    ("message", "fault", "has_fields"),
    [
        (b"", Fault.EMPTY, False),
        (b"pong", Fault.BAD_MODE, False),
        (b"\x02" + b"\0" * 50, Fault.TRUNCATED, False),
        (b"\x01" + b"\0" * 51, Fault.TRAILING, False),
        (b"\x04\x01" + b"\0" * 441, Fault.NONE, True),  # depth: fields, no row, no fault
        (b"\x01\x06" + b"\0" * 49, Fault.BAD_EXCHANGE, True),
    ],
)
def test_decode_faults_are_logged_not_raised(message, fault, has_fields, caplog):
    with caplog.at_level(logging.WARNING):
        tick = wire.decode(message)
    assert (tick is not None) == has_fields
    assert wire.decode_checked(message)[1] == fault
    assert bool(caplog.records) == (fault != Fault.NONE)


# --- against the SDK, where it is right -------------------------------------------------


def as_the_sdk_reads(tick: dict) -> dict:
    """What ``_parse_binary_data`` gives for a valid packet of ``tick``: ours, with its
    misreadings applied (each is pinned in ``test_where_the_sdk_is_wrong``)."""
    want = dict(tick)
    if tick["subscription_mode"] == Mode.SNAP_QUOTE:
        # It unpacks the float64 open-interest change as int64: the float's bit pattern.
        pct = tick["open_interest_change_percentage"]
        want["open_interest_change_percentage"] = struct.unpack("<q", struct.pack("<d", pct))[0]
        for side in ("best_5_buy_data", "best_5_sell_data"):
            # It unpacks the int16 flag and order count as unsigned.
            want[side] = [
                lv | {"flag": lv["flag"] & 0xFFFF, "no of orders": lv["no of orders"] & 0xFFFF}
                for lv in tick[side]
            ]
    if tick["subscription_mode"] == Mode.DEPTH:
        # It reads the exchange timestamp at 35, the packet received time, not at 27.
        want["exchange_timestamp"] = tick["packet_received_time"]
    return want


#: A real QUOTE tick of BSE's RELIANCE (500325) as the SDK printed it, posted on Angel's
#: SmartAPI forum (topic 4455, "Wrong LTP data"), logged at 10:10:37 IST on 20 March 2024.
FORUM_QUOTE = {
    "subscription_mode": 2,
    "exchange_type": 3,
    "token": "500325",
    "sequence_number": 3512686,
    "exchange_timestamp": 1710909637000,
    "last_traded_price": 286315,
    "subscription_mode_val": "QUOTE",
    "last_traded_quantity": 1,
    "average_traded_price": 286121,
    "volume_trade_for_the_day": 31509,
    "total_buy_quantity": 33072.0,
    "total_sell_quantity": 187950.0,
    "open_price_of_the_day": 285105,
    "high_price_of_the_day": 287390,
    "low_price_of_the_day": 284805,
    "closed_price": 285075,
}


def test_real_quote_from_the_forum():
    message = wire.encode(FORUM_QUOTE)
    assert wire.decode(message) == FORUM_QUOTE == PARSER._parse_binary_data(message)
    rows, _, _ = compiled([message], [1], [wire.instrument_key(3, "500325")])
    # Its exchange timestamp is Unix ms: 04:40:37 UTC, the 10:10:37 IST of the log line;
    # its prices are paise (RELIANCE traded near 2863 rupees that morning).
    assert rows[0]["event_ns"] == 1710909637 * 10**9
    assert (rows[0]["slot"], rows[0]["price"], rows[0]["volume"]) == (0, 286315, 31509)
    assert (rows[0]["day_high"], rows[0]["day_low"]) == (287390, 284805)


def test_sdk_is_loaded_alone():
    """Loading the oracle runs nothing of the package (its __init__ GETs api.ipify.org);
    in a process of its own, as other tests log in through the package (neutralised)."""
    code = (
        "import sys; from tests.test_angelone_wire import SDK; "
        "assert SDK.SmartWebSocketV2.LITTLE_ENDIAN_BYTE_ORDER == '<'; "
        "print(sorted(m for m in sys.modules if m.startswith('SmartApi')))"
    )
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@settings(max_examples=300, deadline=None)
@given(ticks(exchanges=st.sampled_from(DOCUMENTED), valid_flags=True))
def test_agrees_with_the_sdk(tick):
    message = wire.encode(tick)
    assert PARSER._parse_binary_data(message) == as_the_sdk_reads(wire.decode(message))


def test_where_the_sdk_is_wrong():
    """Angel's Java and JavaScript SDKs (and the packet sizes) against the Python SDK."""
    snap = packet(
        subscription_mode=Mode.SNAP_QUOTE,
        open_interest_change_percentage=-2.5,
        best_5_buy_data=[{"price": 101, "no of orders": -1}],
        best_5_sell_data=[{"price": 201}],
    )
    theirs = PARSER._parse_binary_data(snap)
    # 1. The OI change is a float64 (Java getDouble, JavaScript doublele); it reads int64.
    assert theirs["open_interest_change_percentage"] == struct.unpack("<q", snap[139:147])[0]
    assert wire.decode(snap)["open_interest_change_percentage"] == -2.5
    # 2. Order counts are int16 (Java getShort, JavaScript int16); it reads them unsigned.
    assert theirs["best_5_buy_data"][0]["no of orders"] == 0xFFFF
    # 3. It sorts best-five levels by flag, not by position: a level whose flag says the
    #    other side moves, and a side's list need not have five entries.
    mixed = bytearray(snap)
    mixed[147:149] = b"\0\0"  # the first buy level's flag set to "sell"
    theirs = PARSER._parse_binary_data(bytes(mixed))
    assert len(theirs["best_5_buy_data"]) == 4 and len(theirs["best_5_sell_data"]) == 6
    assert wire.decode(bytes(mixed))["best_5_buy_data"][0]["price"] == 101  # still first buy
    # 4. Depth packets: the Java and JavaScript SDKs read the exchange timestamp at 27 and
    #    the packet received time at 35; it reads both at 35 and drops 27..35.
    depth = packet(subscription_mode=Mode.DEPTH, exchange_timestamp=7, packet_received_time=9)
    assert PARSER._parse_binary_data(depth)["exchange_timestamp"] == 9
    assert wire.decode(depth)["exchange_timestamp"] == 7
    # 5. No length checks: a short packet raises, trailing bytes and a wrong mode's length
    #    pass unnoticed, and an unknown mode gives a half-filled dict.
    with pytest.raises(struct.error):
        PARSER._parse_binary_data(snap[:200])
    assert PARSER._parse_binary_data(snap + b"junk")["subscription_mode"] == Mode.SNAP_QUOTE
    ltp_as_quote = bytes([Mode.LTP]) + snap[1:]
    assert PARSER._parse_binary_data(ltp_as_quote)["subscription_mode_val"] == "LTP"
    assert wire.decode_checked(ltp_as_quote) == (None, Fault.TRAILING)
    assert PARSER._parse_binary_data(b"\x09" + snap[1:51])["subscription_mode_val"] is None
    # 6. Text frames are dropped: its WebSocketApp routes frames to _on_data, which parses
    #    binary frames (type 2) only, so an error sent as text never reaches the user.
    seen: list = []
    PARSER.on_data = lambda app, data: seen.append(data)
    PARSER._on_data(None, '{"errorCode":"E1002"}', 1, True)
    PARSER._on_data(None, snap, 2, True)
    assert len(seen) == 1
