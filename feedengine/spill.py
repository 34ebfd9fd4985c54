"""The spill file: candle records that could not be written yet, safe on disk (SPEC section 5).

An append-only file of CRC-checked blocks, fsynced per append, drained oldest first::

    file   := magic "FEEDSPL1" | u32 record size | block*
    block  := u32 rows | u32 crc32(rows bytes) | rows (RECORD_DTYPE, little-endian)

A block cut short at the end (a crash while appending) is dropped with a warning and cut off
the file, so the next append starts clean. A bad block anywhere else is an error: the file is
kept for a person to look at, never silently discarded.
"""

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from feedengine.dtypes import RECORD_DTYPE
from feedengine.errors import SpillError

log = logging.getLogger(__name__)

MAGIC = b"FEEDSPL1"
_HEADER = struct.Struct("<8sI")
_BLOCK = struct.Struct("<II")


class SpillFile:
    """Candle records waiting for the database, in ``path``.

    Parameters
    ----------
    path
        The spill file; created on first append.
    """

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = Path(path)
        self.rows = 0
        self._blocks: list[tuple[int, int]] = []  # (offset of rows, count)
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        if len(data) < _HEADER.size:
            log.warning("%s: spill file cut short in its header; starting it anew", self.path)
            self.clear()
            return
        magic, size = _HEADER.unpack_from(data)
        if magic != MAGIC or size != RECORD_DTYPE.itemsize:
            raise SpillError(
                f"{self.path}: not a spill file of this version (magic {magic!r}, "
                f"record size {size}); move it aside to continue"
            )
        pos = _HEADER.size
        while pos < len(data):
            if pos + _BLOCK.size > len(data):
                break
            n, crc = _BLOCK.unpack_from(data, pos)
            end = pos + _BLOCK.size + n * RECORD_DTYPE.itemsize
            if end > len(data):
                break
            if zlib.crc32(data[pos + _BLOCK.size : end]) != crc:
                if end == len(data):
                    break
                raise SpillError(
                    f"{self.path}: spilled block at byte offset {pos} fails its "
                    "CRC; the file is kept, move it aside to continue"
                )
            self._blocks.append((pos + _BLOCK.size, n))
            self.rows += n
            pos = end
        if pos < len(data):
            log.warning(
                "%s: dropping an incomplete spilled block at byte offset %d (a crash "
                "while appending; its rows were never acknowledged)",
                self.path,
                pos,
            )
            with open(self.path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())
        if self.rows:
            log.warning(
                "%s: %d spilled candle rows from an earlier run will be written first",
                self.path,
                self.rows,
            )

    def append(self, records: np.ndarray) -> None:
        """Append records durably (written and fsynced before this returns)."""
        if not len(records):
            return
        payload = np.ascontiguousarray(records, RECORD_DTYPE).tobytes()
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "ab") as f:
            if new:
                f.write(_HEADER.pack(MAGIC, RECORD_DTYPE.itemsize))
            offset = f.tell() + _BLOCK.size
            f.write(_BLOCK.pack(len(records), zlib.crc32(payload)) + payload)
            f.flush()
            os.fsync(f.fileno())
        self._blocks.append((offset, len(records)))
        self.rows += len(records)

    def blocks(self, max_rows: int) -> Iterator[np.ndarray]:
        """Yield the spilled records oldest first, appended blocks merged up to ``max_rows``."""
        if not self._blocks:
            return
        data = np.fromfile(self.path, np.uint8)
        batch: list[np.ndarray] = []
        count = 0
        for offset, n in self._blocks:
            if batch and count + n > max_rows:
                yield np.concatenate(batch)
                batch, count = [], 0
            batch.append(data[offset : offset + n * RECORD_DTYPE.itemsize].view(RECORD_DTYPE))
            count += n
        if batch:
            yield np.concatenate(batch)

    def clear(self) -> None:
        """Forget every spilled row (after they all reached the database)."""
        with open(self.path, "wb") as f:
            f.write(_HEADER.pack(MAGIC, RECORD_DTYPE.itemsize))
            f.flush()
            os.fsync(f.fileno())
        self._blocks.clear()
        self.rows = 0
