"""Reference tick-file reader: ``struct`` and ``zlib``, one record at a time."""

import json
import struct
import zlib
from typing import Any


def read(data: bytes) -> tuple[dict[str, Any], list[tuple[int, bytes]], str, int]:
    """Parse a whole tick file image.

    Returns ``(meta, records, outcome, offset)`` where outcome is ``"ok"``, ``"torn"`` (last
    record incomplete, ignored) or the reason a record is corrupt; ``offset`` is the byte
    offset where reading stopped.
    """
    magic, meta_len = struct.unpack_from("<8sI", data, 0)
    assert magic == b"FEEDTKS1"
    meta = json.loads(data[12 : 12 + meta_len])
    pos, last = 12 + meta_len, -(2**63)
    records: list[tuple[int, bytes]] = []
    while pos < len(data):
        if pos + 12 > len(data):
            return meta, records, "torn", pos
        recv_ns, length = struct.unpack_from("<qI", data, pos)
        if length > 2 + 65535 * 186:
            return meta, records, "bad_length", pos
        end = pos + 12 + length + 4
        if end > len(data):
            return meta, records, "torn", pos
        (crc,) = struct.unpack_from("<I", data, end - 4)
        if zlib.crc32(data[pos : end - 4]) != crc:
            return meta, records, ("torn" if end == len(data) else "bad_crc"), pos
        if recv_ns < last:
            return meta, records, "bad_time", pos
        last = recv_ns
        records.append((recv_ns, data[pos + 12 : end - 4]))
        pos = end
    return meta, records, "ok", pos
