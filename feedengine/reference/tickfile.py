"""Reference tick-file reader: ``struct`` and ``zlib``, one record at a time."""

import json
import struct
import zlib
from typing import Any

MAX_PAYLOAD = 2 + 65535 * 186
#: A record found past a suspect one is received at most this long after the last good one.
PLAUSIBLE_GAP_NS = 7 * 86_400 * 10**9


def good_record(data: bytes, pos: int, after_ns: int) -> bool:
    """Whether a whole, CRC-valid record received in ``[after_ns, +a week]`` starts at pos."""
    if pos + 16 > len(data):
        return False
    recv_ns, length = struct.unpack_from("<qI", data, pos)
    end = pos + 12 + length + 4
    if not after_ns <= recv_ns <= after_ns + PLAUSIBLE_GAP_NS or end > len(data):
        return False
    return zlib.crc32(data[pos : end - 4]) == struct.unpack_from("<I", data, end - 4)[0]


def good_record_follows(data: bytes, pos: int, last_ns: int | None) -> bool:
    """Whether any good record starts after the suspect record at ``pos``."""
    if last_ns is None:
        last_ns = struct.unpack_from("<q", data, pos)[0] if pos + 12 <= len(data) else 0
    return any(good_record(data, p, last_ns) for p in range(pos + 1, len(data) - 15))


def read(data: bytes) -> tuple[dict[str, Any], list[tuple[int, bytes]], str, int]:
    """Parse a whole tick file image.

    Returns ``(meta, records, outcome, offset)`` where outcome is ``"ok"``, ``"torn"`` (last
    record incomplete, ignored) or the reason a record is corrupt; ``offset`` is the byte
    offset where reading stopped. Only a final record may be torn: one that runs past the
    end, or fails its CRC right at it, with a good record after it is corrupt.
    """
    magic, meta_len = struct.unpack_from("<8sI", data, 0)
    assert magic == b"FEEDTKS1"
    meta = json.loads(data[12 : 12 + meta_len])
    pos, last = 12 + meta_len, None
    records: list[tuple[int, bytes]] = []
    while pos < len(data):
        if pos + 12 > len(data):
            return meta, records, "torn", pos
        recv_ns, length = struct.unpack_from("<qI", data, pos)
        if length > MAX_PAYLOAD:
            return meta, records, "bad_length", pos
        end = pos + 12 + length + 4
        if end > len(data):
            outcome = "past_end" if good_record_follows(data, pos, last) else "torn"
            return meta, records, outcome, pos
        (crc,) = struct.unpack_from("<I", data, end - 4)
        if zlib.crc32(data[pos : end - 4]) != crc:
            torn = end == len(data) and not good_record_follows(data, pos, last)
            return meta, records, ("torn" if torn else "bad_crc"), pos
        if last is not None and recv_ns < last:
            return meta, records, "bad_time", pos
        last = recv_ns
        records.append((recv_ns, data[pos + 12 : end - 4]))
        pos = end
    return meta, records, "ok", pos
