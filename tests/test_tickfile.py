"""Tick files: writer, mmap reader, CRC scanner, torn tails and corruption (SPEC section 3)."""

import json
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from feedengine import _tickfile
from feedengine.errors import TickFileError
from feedengine.reference import tickfile as ref
from feedengine.tickfile import MAGIC, TickReader, TickWriter, make_meta

INSTRUMENTS = [{"instrument_token": 408065, "tradingsymbol": "INFY", "exchange": "NSE"}]


def write_file(path, records, meta=None):
    with TickWriter(path, meta or make_meta("test", INSTRUMENTS)) as w:
        for recv_ns, payload in records:
            w.write(recv_ns, payload)
    return path


def read_all(path, batch_records=4096):
    reader = TickReader(path)
    out = [
        (int(b.recv_ns[i]), bytes(b.message(i)))
        for b in reader.batches(batch_records)
        for i in range(len(b))
    ]
    return reader, out


record_lists = st.lists(st.tuples(st.integers(0, 2**40), st.binary(max_size=300)), max_size=40).map(
    lambda rs: sorted(rs, key=lambda r: r[0])
)


# Lengths either side of the carry-less path's minimum (64), its 16-byte blocks and its
# four-lane (64-byte) loop, with every start offset into a buffer a 16-byte block can have.
CRC_BOUNDARY_LENGTHS = [0, 1, 15, 16, 31, 32, 63, 64, 65, 127, 128, 129, 255, 256, 4095, 4096, 4097]
CRC_BUFFER = np.random.default_rng(14).integers(0, 256, 5000 + 16, dtype=np.uint8)


def crc_examples(test):
    for length in CRC_BOUNDARY_LENGTHS:
        for offset in (0, 1, 7, 15):
            test = example(length, offset, 0xFFFFFFFF if offset % 2 else 0)(test)
    return test


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "table"])
@settings(max_examples=200, deadline=None)
@crc_examples
@given(st.integers(0, 5000), st.integers(0, 16), st.integers(0, 2**32 - 1))
def test_crc32_equals_zlib(simd, length, offset, start):
    data = CRC_BUFFER[offset : offset + length]
    assert _tickfile.crc32(data, start, simd=simd) == zlib.crc32(data, start)


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "table"])
def test_crc32_of_a_large_buffer_equals_zlib(simd):
    data = np.random.default_rng(15).integers(0, 256, 10_000_003, dtype=np.uint8)[3:]
    assert _tickfile.crc32(data, 0x9E3779B9, simd=simd) == zlib.crc32(data, 0x9E3779B9)


@settings(max_examples=60, deadline=None)
@given(record_lists, st.integers(1, 7))
def test_round_trip_any_batch_size(tmp_path_factory, records, batch):
    path = write_file(tmp_path_factory.mktemp("t") / "a.ticks", records)
    reader, got = read_all(path, batch)
    assert got == records
    assert reader.meta["instruments"] == INSTRUMENTS and reader.meta["format"] == 1
    assert reader.torn_tail_offset is None
    _meta, ref_records, outcome, _ = ref.read(path.read_bytes())
    assert ref_records == records and outcome == "ok"


def test_layout_is_the_documented_one(tmp_path):
    path = write_file(tmp_path / "a.ticks", [(5, b"\x00")])
    data = path.read_bytes()
    assert data[:8] == MAGIC
    (meta_len,) = struct.unpack_from("<I", data, 8)
    assert json.loads(data[12 : 12 + meta_len])["source"] == "test"
    rec = data[12 + meta_len :]
    assert rec[:12] == struct.pack("<qI", 5, 1) and rec[12:13] == b"\x00"
    assert struct.unpack("<I", rec[13:])[0] == zlib.crc32(rec[:13])


@settings(max_examples=60, deadline=None)
@given(record_lists.filter(bool), st.data())
def test_torn_tail_is_dropped_with_warning(tmp_path_factory, records, data):
    path = write_file(tmp_path_factory.mktemp("t") / "a.ticks", records)
    whole = path.read_bytes()
    last_len = 12 + len(records[-1][1]) + 4
    cut = data.draw(st.integers(1, last_len - 1))
    path.write_bytes(whole[:-cut])
    reader, got = read_all(path)
    assert got == records[:-1]
    assert reader.torn_tail_offset == len(whole) - last_len
    assert ref.read(path.read_bytes())[2] == "torn"


def test_last_record_failing_crc_is_torn(tmp_path, caplog):
    path = write_file(tmp_path / "a.ticks", [(1, b"abc"), (2, b"defg")])
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # inside the last payload
    path.write_bytes(bytes(data))
    reader, got = read_all(path)
    assert got == [(1, b"abc")]
    assert "incomplete" in caplog.text and str(reader.torn_tail_offset) in caplog.text


@pytest.mark.parametrize("where", ["payload", "crc", "length", "time"])
def test_corrupt_record_before_good_ones_names_offset(tmp_path, where):
    records = [(1, b"first"), (2, b"second"), (3, b"third")]
    path = write_file(tmp_path / "a.ticks", records)
    data = bytearray(path.read_bytes())
    second = len(data) - (12 + 5 + 4) - (12 + 6 + 4)
    if where == "payload":
        data[second + 12] ^= 1
    elif where == "crc":
        data[second + 12 + 6] ^= 1
    elif where == "length":
        data[second + 8 : second + 12] = struct.pack("<I", 0x7FFFFFFF)
    else:
        data[second : second + 8] = struct.pack("<q", 0)
        data[second + 18 : second + 22] = struct.pack(
            "<I", zlib.crc32(bytes(data[second : second + 18]))
        )
    path.write_bytes(bytes(data))
    with pytest.raises(TickFileError) as err:
        read_all(path)
    assert err.value.offset == second and f"byte offset {second}" in str(err.value)
    assert ref.read(bytes(data))[3] == second


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no FEEDTKS1 magic"),
        (b"NOTTICKS\x00\x00\x00\x00", "no FEEDTKS1 magic"),
        (MAGIC + struct.pack("<I", 100) + b"{}", "runs past the end"),
        (MAGIC + struct.pack("<I", 3) + b"{x}", "not JSON"),
        (MAGIC + struct.pack("<I", 13) + b'{"format": 2}', "unsupported tick file format 2"),
    ],
)
def test_bad_header_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.ticks"
    path.write_bytes(content)
    with pytest.raises(TickFileError, match=message):
        TickReader(path)


def test_writer_clamps_backwards_time_and_rejects_oversize(tmp_path):
    path = tmp_path / "a.ticks"
    with TickWriter(path, make_meta("test", [])) as w:
        w.write(10, b"a")
        w.write(5, b"b")
        with pytest.raises(ValueError, match="larger than any Kite message"):
            w.write(11, bytes(_tickfile.MAX_PAYLOAD + 1))
    assert w.clamped == 1
    assert [t for t, _ in TickReader(path).messages()] == [10, 10]


def test_a_header_that_cannot_be_made_leaves_the_file_as_it_was(tmp_path):
    """The file used to be truncated first: a bad meta destroyed the previous recording."""
    path = tmp_path / "a.ticks"
    write_file(path, [(1, b"old")])
    before = path.read_bytes()
    with pytest.raises(TypeError):
        TickWriter(path, {"format": 1, "instruments": {1, 2}})  # a set: not JSON
    assert path.read_bytes() == before


def test_writer_flushes_within_a_second(tmp_path):
    path = tmp_path / "a.ticks"
    w = TickWriter(path, make_meta("test", []), flush_interval=0.05)
    try:
        w.write(1, b"x" * 10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(read_all(path)[1]) < 1:
            time.sleep(0.02)
        assert read_all(path)[1] == [(1, b"x" * 10)]
    finally:
        w.close()
    w.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        w.write(2, b"y")


def test_batches_are_large_and_views_outlive_reader(tmp_path):
    path = write_file(tmp_path / "a.ticks", [(i, bytes([i % 256]) * 10) for i in range(10_000)])
    batches = list(TickReader(path).batches())
    assert [len(b) for b in batches] == [4096, 4096, 1808]
    assert bytes(batches[-1].message(1807)) == bytes([9999 % 256]) * 10
    assert np.all(np.diff(np.concatenate([b.recv_ns for b in batches])) == 1)


@settings(max_examples=60, deadline=None)
@given(record_lists.filter(lambda r: len(r) >= 2), st.data())
def test_length_past_the_end_with_good_records_after_is_corruption(tmp_path_factory, records, data):
    """Regression: a corrupt length mid-file was taken for a torn tail, silently dropping
    every record after it (half a day in the field)."""
    path = write_file(tmp_path_factory.mktemp("t") / "a.ticks", records)
    whole = bytearray(path.read_bytes())
    starts = [len(whole)]
    for _, payload in reversed(records):
        starts.insert(0, starts[0] - (12 + len(payload) + 4))
    victim = data.draw(st.integers(0, len(records) - 2))
    pos = starts[victim]
    # Either past the end of the file, or ending exactly at it (then its CRC fails there).
    to_end = len(whole) - pos - 16
    length = data.draw(st.sampled_from([to_end, to_end + 1, to_end + 1000]))
    whole[pos + 8 : pos + 12] = struct.pack("<I", length)
    path.write_bytes(bytes(whole))
    with pytest.raises(TickFileError, match=f"byte offset {pos}") as err:
        read_all(path)
    assert err.value.offset == pos
    _, got, outcome, offset = ref.read(bytes(whole))
    assert outcome in ("past_end", "bad_crc") and offset == pos
    assert got == records[:victim]


def test_corrupt_length_mid_file_names_the_offset_in_a_replay(tmp_path):
    records = [(i, bytes([i]) * 50) for i in range(1, 200)]
    path = write_file(tmp_path / "a.ticks", records)
    data = bytearray(path.read_bytes())
    pos = len(data) - 150 * (12 + 50 + 4)
    data[pos + 8 : pos + 12] = struct.pack("<I", 1_000_000)
    path.write_bytes(bytes(data))
    with pytest.raises(TickFileError, match="runs past the end of the file, yet good records"):
        read_all(path)
