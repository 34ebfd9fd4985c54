"""The spill file: candle records that could not be written yet, safe on disk (SPEC section 5).

An append-only file of CRC-checked blocks, fsynced per append, drained oldest first::

    file   := magic "FEEDSPL1" | u32 record size | block*
    block  := u32 rows | u32 crc32(rows bytes) | rows (RECORD_DTYPE, little-endian)

A block cut short at the end (a crash while appending) is dropped with a warning and cut off
the file, so the next append starts clean. A bad block anywhere else is an error: the file is
kept for a person to look at, never silently discarded.

The file is streamed, never read whole: a long outage spills hundreds of megabytes (six
hours of 9,000 instruments x 3 intervals is about 330 MB), and memory stays at one batch.
"""

import logging
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from io import BufferedReader
from pathlib import Path

import numpy as np

from feedengine.dtypes import RECORD_DTYPE
from feedengine.errors import SpillError

log = logging.getLogger(__name__)

MAGIC = b"FEEDSPL1"
_HEADER = struct.Struct("<8sI")
_BLOCK = struct.Struct("<II")
#: Rows per block at most (an append of more is split): the flusher's batch, so that
#: reading one block never needs more memory than one batch.
MAX_BLOCK_ROWS = 8192
#: Bytes read at a time while a block's CRC is checked at load.
_CHUNK_BYTES = 1 << 20


class SpillFile:
    """Candle records waiting for the database, in ``path``.

    Parameters
    ----------
    path
        The spill file; created on first append.

    Raises
    ------
    SpillError
        From the constructor, when the file is not a spill file of this version or is
        damaged before its end.
    """

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = Path(path)
        #: Rows waiting: appended and not yet drained.
        self.rows = 0
        self._blocks: deque[tuple[int, int]] = deque()  # (offset of rows, count), oldest first
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                log.warning("%s: spill file cut short in its header; starting it anew", self.path)
                self.clear()
                return
            magic, itemsize = _HEADER.unpack(header)
            if magic != MAGIC or itemsize != RECORD_DTYPE.itemsize:
                raise SpillError(
                    f"{self.path}: not a spill file of this version (magic {magic!r}, "
                    f"record size {itemsize}); move it aside to continue"
                )
            pos = self._scan(f, _HEADER.size, size)
        if pos < size:
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

    def _scan(self, f: BufferedReader, pos: int, size: int) -> int:
        """Check and index the blocks from ``pos``; return where the good blocks end."""
        while pos + _BLOCK.size <= size:
            n, crc = _BLOCK.unpack(f.read(_BLOCK.size))
            end = pos + _BLOCK.size + n * RECORD_DTYPE.itemsize
            if end > size:
                break
            left, actual = end - pos - _BLOCK.size, 0
            while left:
                chunk = f.read(min(left, _CHUNK_BYTES))
                actual = zlib.crc32(chunk, actual)
                left -= len(chunk)
            if actual != crc:
                if end == size:
                    break  # the last block, torn by a crash while appending
                raise SpillError(
                    f"{self.path}: spilled block at byte offset {pos} fails its "
                    "CRC; the file is kept, move it aside to continue"
                )
            self._blocks.append((pos + _BLOCK.size, n))
            self.rows += n
            pos = end
        return pos

    def append(self, records: np.ndarray) -> None:
        """Append records durably (written and fsynced before this returns)."""
        if not len(records):
            return
        records = np.ascontiguousarray(records, RECORD_DTYPE)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "ab") as f:
            if new:
                f.write(_HEADER.pack(MAGIC, RECORD_DTYPE.itemsize))
            for lo in range(0, len(records), MAX_BLOCK_ROWS):
                payload = records[lo : lo + MAX_BLOCK_ROWS].tobytes()
                n = len(payload) // RECORD_DTYPE.itemsize
                f.write(_BLOCK.pack(n, zlib.crc32(payload)))
                self._blocks.append((f.tell(), n))
                f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        self.rows += len(records)

    def _batch(self, f: BufferedReader, first: int, max_rows: int) -> tuple[np.ndarray, int]:
        """``(records, blocks)``: the waiting blocks from index ``first`` merged up to
        ``max_rows`` rows (one block at least), each checked against its CRC."""
        count, total = 0, 0
        while first + count < len(self._blocks) and (
            count == 0 or total + self._blocks[first + count][1] <= max_rows
        ):
            total += self._blocks[first + count][1]
            count += 1
        out = np.empty(total, RECORD_DTYPE)
        row = 0
        for j in range(first, first + count):
            offset, n = self._blocks[j]
            f.seek(offset - _BLOCK.size)
            _, crc = _BLOCK.unpack(f.read(_BLOCK.size))
            view = out[row : row + n].view(np.uint8).data
            if f.readinto(view) != len(view) or zlib.crc32(view) != crc:
                raise SpillError(
                    f"{self.path}: spilled block at byte offset {offset - _BLOCK.size} "
                    "changed or was cut since it was written; the file is kept, move it "
                    "aside to continue"
                )
            row += n
        return out, count

    def blocks(self, max_rows: int) -> Iterator[np.ndarray]:
        """Yield the waiting records oldest first, appended blocks merged up to ``max_rows``
        (a block of more is yielded whole); they stay in the spill (see :meth:`drain`)."""
        if not self._blocks:
            return
        with open(self.path, "rb") as f:
            first = 0
            while first < len(self._blocks):
                records, count = self._batch(f, first, max_rows)
                yield records
                first += count

    def drain(self, write: Callable[[np.ndarray], None], max_rows: int) -> None:
        """Hand the waiting records to ``write`` oldest first, in batches as :meth:`blocks`.

        Each batch ``write`` returns from is gone from the spill, so after ``write`` raises
        a later drain continues with the batch that failed; once every batch is written the
        file is emptied. (A restart reads the file from its start again: the rows are
        idempotent upserts, so that costs time, not correctness.)

        Raises
        ------
        SpillError
            A block no longer matches its CRC.
        Exception
            Whatever ``write`` raises; that batch stays in the spill.
        """
        if self._blocks:
            with open(self.path, "rb") as f:
                while self._blocks:
                    records, count = self._batch(f, 0, max_rows)
                    write(records)
                    for _ in range(count):
                        self._blocks.popleft()
                    self.rows -= len(records)
        self.clear()

    def clear(self) -> None:
        """Forget every spilled row (after they all reached the database)."""
        with open(self.path, "wb") as f:
            f.write(_HEADER.pack(MAGIC, RECORD_DTYPE.itemsize))
            f.flush()
            os.fsync(f.fileno())
        self._blocks.clear()
        self.rows = 0
