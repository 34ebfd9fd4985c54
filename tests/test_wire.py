"""The compiled Kite decoder against the reference decoder, kiteconnect and real packets."""

import base64
import json
import struct
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from feedengine.brokers.kite import _wire, wire
from feedengine.brokers.kite import reference as ref
from feedengine.brokers.kite.dtypes import TICK_DTYPE
from feedengine.brokers.kite.segments import DIVISORS
from feedengine.dtypes import KTICK_DTYPE
from feedengine.sessions import IST, NS_PER_S
from feedengine.slots import SlotTable
from tests.strategies import malformed_messages, messages, packets, tick_dicts

#: Real Kite captures and their expected values (see the README there), copied from the
#: project's shared fixtures so that any checkout runs the tests.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kite"


def rows_as_dicts(rows: np.ndarray) -> list[dict]:
    return [{name: (row[name].tolist()) for name in TICK_DTYPE.names} for row in rows]


def fixture_message(name: str) -> bytes:
    packet = base64.b64decode((FIXTURES / f"{name}.packet").read_text())
    return struct.pack(">HH", 1, len(packet)) + packet


def fixture_json(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- the real packets -------------------------------------------------------------------


def assert_matches_fixture(got: dict, want: dict) -> None:
    for key, value in want.items():
        name = FIXTURE_NAMES.get(key, key)
        if name in ("exchange_timestamp", "last_trade_time"):
            assert got[name] == parse_time(value), key
        elif key == "change":
            assert got[key] == pytest.approx(value, abs=1e-9)
        else:
            assert got[name] == value, key


def test_full_fixture_every_field():
    got = wire.to_kite(wire.decode(fixture_message("ticker_full")))
    assert len(got) == 1
    assert_matches_fixture(got[0], fixture_json("ticker_full"))


def test_quote_fixture_every_field():
    got = wire.to_kite(wire.decode(fixture_message("ticker_quote")))[0]
    want = fixture_json("ticker_quote")
    # A quote packet carries no change field; the fixture's 5.9 is the full fixture's value
    # copied over (its own last price and close give 1573.15 - 1567.8 = 5.35).
    assert want.pop("change") == fixture_json("ticker_full")["change"]
    assert got["change"] == pytest.approx(want["last_price"] - want["ohlc"]["close"])
    assert_matches_fixture(got, want)


def test_ltp_fixture():
    # The ltp fixture has no packet: an ltp packet is the first 8 bytes of any quote packet.
    packet = base64.b64decode((FIXTURES / "ticker_quote.packet").read_text())[:8]
    got = wire.to_kite(wire.decode(struct.pack(">HH", 1, 8) + packet))
    assert got == [fixture_json("ticker_ltp")]


def test_fixture_raw_units_and_kernel_rows():
    message = fixture_message("ticker_full")
    full = wire.decode(message, recv_ns=7)[0]
    assert full["last_price"] == 157370 and full["segment"] == 1 and full["mode"] == 3
    kt = np.zeros(1, KTICK_DTYPE)
    table = SlotTable.build([999, int(full["instrument_token"])])
    assert wire.decode_kernel_into(message, 7, kt, 0, table) == (1, wire.Fault.NONE)
    row = kt[0]
    assert (row["recv_ns"], row["slot"], row["price"]) == (7, 1, full["last_price"])
    assert row["event_ns"] == full["exchange_timestamp"] * NS_PER_S
    assert (row["volume"], row["has_volume"]) == (full["volume_traded"], 1)
    assert (row["day_high"], row["day_low"], row["has_day_range"]) == (157500, 156105, 1)
    # Its last trade is of the same IST date as its exchange time.
    assert row["auction"] == 1


# --- against the reference ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(messages(), st.integers(0, 2**62))
def test_decoder_equals_reference(message, recv_ns):
    rows, fault = wire.decode_checked(message, recv_ns)
    ref_rows, ref_fault = ref.decode(message, recv_ns)
    assert fault == ref_fault == wire.Fault.NONE
    assert rows_as_dicts(rows) == ref_rows


@settings(max_examples=500, deadline=None)
@given(malformed_messages())
def test_malformed_keeps_good_packets_and_reports(message):
    rows, fault = wire.decode_checked(message)
    ref_rows, ref_fault = ref.decode(message)
    assert fault == ref_fault
    assert rows_as_dicts(rows) == ref_rows


@pytest.mark.parametrize(
    ("message", "fault", "rows"),
    [
        (b"", wire.Fault.EMPTY, 0),
        (b"\x00", wire.Fault.NONE, 0),  # heartbeat
        (b"\x00\x01", wire.Fault.TRUNCATED, 0),
        (b"\x00\x01\x00", wire.Fault.TRUNCATED, 0),
        (b"\x00\x01\x00\x08" + b"\x00" * 7, wire.Fault.PAST_END, 0),
        (b"\x00\x01\x00\x09" + b"\x00" * 9, wire.Fault.BAD_LENGTH, 0),
        (b"\x00\x01\x00\x08" + b"\x00" * 9, wire.Fault.TRAILING, 1),
        (b"\xff\xff\x00\x08" + b"\x00" * 8, wire.Fault.TRUNCATED, 1),
        (b"\x00\x00", wire.Fault.NONE, 0),
    ],
)
def test_fault_cases(message, fault, rows, caplog):
    got, got_fault = wire.decode_checked(message)
    assert (got_fault, len(got)) == (fault, rows)
    wire.decode(message)
    assert bool(caplog.records) == (fault != wire.Fault.NONE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(message):
    rows, _fault = wire.decode_checked(message)
    assert len(rows) <= _wire.max_rows(message)


def test_signed_fields_and_segment_divisors():
    t = ref.empty_tick()
    t.update(
        packet_length=184,
        instrument_token=(77 << 8) | 12,
        last_price=-5,
        change=0,
        close=7,
        volume_traded=-1,
        oi=-(2**31),
    )
    rows = wire.decode(ref.encode_message([ref.encode_packet(t)]))
    assert rows[0]["last_price"] == -5 and rows[0]["volume_traded"] == -1
    assert rows[0]["oi"] == -(2**31) and rows[0]["change"] == -12
    assert wire.to_kite(rows)[0]["last_price"] == -5 / 10_000  # NCO divides by 10^4
    assert [DIVISORS[s] for s in (1, 3, 6, 9, 12)] == [100, 10**7, 10**4, 100, 10**4]


# --- kernel rows and buffers -------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(messages(), st.integers(0, 2**62), st.data())
def test_kernel_rows_equal_the_reference_mapping(message, recv_ns, data):
    """The compiled decoder's neutral rows are the reference's reading of each packet."""
    full = wire.decode(message, recv_ns)
    tokens = sorted({int(t) for t in full["instrument_token"] if t})
    known = data.draw(st.lists(st.sampled_from(tokens), unique=True) if tokens else st.just([]))
    table = SlotTable.build(known)
    out = np.zeros(len(full) + 3, KTICK_DTYPE)
    n, fault = wire.decode_kernel_into(message, recv_ns, out, 3, table)
    assert (n, fault) == (len(full), wire.Fault.NONE)
    slot = {t: i for i, t in enumerate(known)}
    want = [ref.kernel_row(d, slot.get(d["instrument_token"], -1)) for d in rows_as_dicts(full)]
    assert [dict(zip(KTICK_DTYPE.names, r, strict=True)) for r in out[3:].tolist()] == want


def test_need_space_writes_nothing():
    message = ref.encode_message([ref.encode_packet(ref.empty_tick() | {"packet_length": 8})] * 5)
    out = np.zeros(4, KTICK_DTYPE)
    table = SlotTable.build([1])
    assert wire.decode_kernel_into(message, 0, out, 0, table) == (0, wire.NEED_SPACE)
    assert wire.decode_kernel_into(message, 0, np.zeros(5, KTICK_DTYPE), 0, table) == (5, 0)
    with pytest.raises(IndexError):
        wire.decode_kernel_into(message, 0, out, 9, table)


def test_decode_records_batches_many_messages():
    msgs = [
        ref.encode_message(
            [
                ref.encode_packet(
                    ref.empty_tick()
                    | {"packet_length": 44, "instrument_token": 256 * i + 1, "volume_traded": i}
                )
            ]
            * (i % 4)
        )
        for i in range(50)
    ] + [b"", b"\x00"]
    buf = np.frombuffer(b"".join(msgs), np.uint8)
    lengths = np.array([len(m) for m in msgs], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    recv = np.arange(len(msgs), dtype=np.int64)
    faults = np.zeros(_wire.NUM_FAULTS, np.int64)
    first_bad = np.full(1, -1, np.int64)
    out = np.zeros(10, KTICK_DTYPE)
    table = SlotTable.build([256 * i + 1 for i in range(0, 50, 2)])
    got, slots, rec = [], [], 0
    while rec < len(msgs):
        rec, end = _wire.decode_records(
            buf, offsets, lengths, recv, rec, out, 0, faults, first_bad, *table_args(table)
        )
        got.extend(out[:end]["volume"].tolist())
        slots.extend(out[:end]["slot"].tolist())
    assert got == [i for i in range(50) for _ in range(i % 4)]
    assert slots == [i // 2 if i % 2 == 0 else -1 for i in range(50) for _ in range(i % 4)]
    assert faults[wire.Fault.EMPTY] == 1 and first_bad[0] == 50


def table_args(table):
    return table.keys, table.slots, table.shift


def test_slot_table_agrees_with_the_compiled_lookup():
    keys = [(i << 8) | 1 for i in range(1, 3000, 7)] + [2**63 + 5, 2**64 - 1]
    table = SlotTable.build(keys)
    assert [table.slot(k) for k in keys] == list(range(len(keys)))
    assert table.slot(12345) == -1
    with pytest.raises(ValueError, match="distinct"):
        SlotTable.build([5, 5])
    with pytest.raises(ValueError, match="from 1"):
        SlotTable.build([0])


# --- the vectorized encoder ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(messages())
def test_encode_is_inverse_of_decode(message):
    assert wire.encode(wire.decode(message)) == message


@settings(max_examples=100, deadline=None)
@given(st.lists(tick_dicts(), max_size=20))
def test_encode_equals_reference_encoder(ticks):
    rows = np.zeros(len(ticks), TICK_DTYPE)
    for row, t in zip(rows, ticks, strict=True):
        for name in TICK_DTYPE.names:
            row[name] = t[name]
    assert wire.encode(rows) == ref.encode_message([ref.encode_packet(t) for t in ticks])


# --- against kiteconnect's own parser, where it is right ---------------------------------

FIXTURE_NAMES = {
    "last_quantity": "last_traded_quantity",
    "average_price": "average_traded_price",
    "volume": "volume_traded",
    "buy_quantity": "total_buy_quantity",
    "sell_quantity": "total_sell_quantity",
    "timestamp": "exchange_timestamp",
}


@settings(max_examples=200, deadline=None)
@given(st.lists(packets(non_negative=True), max_size=20))
def test_agrees_with_kiteconnect_on_non_negative_fields(pkts):
    # kiteconnect reads fields unsigned (right only for non-negative values), reports change
    # as a percentage and timestamps as naive local datetimes; everything else must agree.
    message = ref.encode_message(pkts)
    ours = wire.to_kite(wire.decode(message))
    theirs = KiteTicker("key", "token")._parse_binary(message)
    assert len(ours) == len(theirs)
    for mine, kite in zip(ours, theirs, strict=True):
        assert mine.keys() == kite.keys()
        for key in ("last_trade_time", "exchange_timestamp"):
            if key in kite:
                seconds = kite.pop(key).timestamp()
                assert mine.pop(key) == (datetime.fromtimestamp(seconds, IST) if seconds else None)
        mine.pop("change", None), kite.pop("change", None)
        assert mine == kite
