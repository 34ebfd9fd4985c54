"""The spill file: candle records that could not be written yet, safe on disk (SPEC section 5).

An append-only file of CRC-checked blocks, fsynced per append, drained oldest first::

    file   := magic "FEEDSPL2" | u32 record size | block*
    block  := u32 rows | u32 crc32(rows bytes) | rows (RECORD_DTYPE, little-endian)

The previous version's file (magic ``FEEDSPL1``, 80-byte records without the exchange) is
converted when it is opened: each row gets the exchange of the run's one instrument with its
symbol. When a symbol is not among the run's instruments, or is on two of their exchanges,
the file is kept as it is and the run stops, saying which symbols and what to do.

A block cut short at the end (a crash while appending) is dropped with a warning and cut off
the file, so the next append starts clean. A bad block anywhere else is an error: the file is
kept for a person to look at, never silently discarded.

The file is streamed, never read whole: a long outage spills hundreds of megabytes (six
hours of 9,000 instruments x 3 intervals is about 330 MB), and memory stays at one batch.
"""

import contextlib
import logging
import os
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from io import BufferedReader
from pathlib import Path

import numpy as np

from feedengine._tickfile import crc32  # zlib's CRC-32, 5x faster (PCLMULQDQ)
from feedengine.dtypes import RECORD_DTYPE
from feedengine.errors import SpillError
from feedengine.instruments import Instrument

log = logging.getLogger(__name__)

MAGIC = b"FEEDSPL2"
#: The previous version's spill file, read and converted at open.
MAGIC_V1 = b"FEEDSPL1"
#: Its records: this version's without the exchange.
RECORD_V1_DTYPE = np.dtype(
    [(name, RECORD_DTYPE[name]) for name in RECORD_DTYPE.names or () if name != "exchange"],
    align=True,
)
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
    instruments
        The run's instruments: they give the exchange of the rows of a previous version's
        spill file.

    Raises
    ------
    SpillError
        From the constructor, when the file is not a spill file, is damaged before its end,
        or is the previous version's and its rows' exchanges cannot be told.
    """

    def __init__(
        self,
        path: os.PathLike[str] | str,
        instruments: Sequence[Instrument] = (),
        *,
        durable: bool = True,
    ) -> None:
        self.path = Path(path)
        #: Whether appends are fsynced (False: the flusher's journal of a bulk load, whose
        #: rows die with the process anyway, like the load's open transaction).
        self.durable = durable
        #: Rows waiting: appended and not yet drained.
        self.rows = 0
        self._blocks: deque[tuple[int, int]] = deque()  # (offset of rows, count), oldest first
        if self.path.exists():
            self._load(instruments)

    def _load(self, instruments: Sequence[Instrument]) -> None:
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                log.warning("%s: spill file cut short in its header; starting it anew", self.path)
                self.clear()
                return
            magic, itemsize = _HEADER.unpack(header)
            upgraded = None
            if (magic, itemsize) == (MAGIC_V1, RECORD_V1_DTYPE.itemsize):
                upgraded = self._upgrade(f, size, instruments)
            elif (magic, itemsize) != (MAGIC, RECORD_DTYPE.itemsize):
                raise SpillError(
                    f"{self.path}: not a spill file of this version (magic {magic!r}, "
                    f"record size {itemsize}); move it aside to continue"
                )
            else:
                blocks, pos = self._scan(f, size, RECORD_DTYPE)
        if upgraded is not None:  # replaced once the old file is closed (Windows needs that)
            os.replace(upgraded, self.path)
            self._load(instruments)
            return
        self._blocks.extend(blocks)
        self.rows = sum(n for _, n in blocks)
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

    def _scan(
        self, f: BufferedReader, size: int, dtype: np.dtype
    ) -> tuple[list[tuple[int, int]], int]:
        """Check the blocks after the header: ``(offset of rows, count)`` of each good one,
        and where the good ones end."""
        blocks: list[tuple[int, int]] = []
        pos = _HEADER.size
        while pos + _BLOCK.size <= size:
            n, crc = _BLOCK.unpack(f.read(_BLOCK.size))
            end = pos + _BLOCK.size + n * dtype.itemsize
            if end > size:
                break
            left, actual = end - pos - _BLOCK.size, 0
            while left:
                chunk = f.read(min(left, _CHUNK_BYTES))
                actual = crc32(chunk, actual)
                left -= len(chunk)
            if actual != crc:
                if end == size:
                    break  # the last block, torn by a crash while appending
                raise SpillError(
                    f"{self.path}: spilled block at byte offset {pos} fails its "
                    "CRC; the file is kept, move it aside to continue"
                )
            blocks.append((pos + _BLOCK.size, n))
            pos = end
        return blocks, pos

    def _upgrade(self, f: BufferedReader, size: int, instruments: Sequence[Instrument]) -> Path:
        """The previous version's spill rewritten in this format, each row given its
        instrument's exchange, as a new file (fsynced) to rename over the old one."""
        blocks, _ = self._scan(f, size, RECORD_V1_DTYPE)  # a torn last block is left out
        by_symbol: dict[bytes, set[bytes]] = {}
        for inst in instruments:
            by_symbol.setdefault(inst.tradingsymbol.encode(), set()).add(inst.exchange.encode())
        unknown: set[bytes] = set()
        for offset, n in blocks:
            symbols = np.unique(self._read(f, offset, n, RECORD_V1_DTYPE)["symbol"])
            unknown.update(s for s in symbols.tolist() if len(by_symbol.get(s, ())) != 1)
        if unknown:
            names = sorted(s.decode(errors="replace") for s in unknown)
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise SpillError(
                f"{self.path}: spilled by the previous version, whose rows lack the exchange; "
                f"it cannot be told for {shown} (not among this run's instruments, or on "
                "two of their exchanges): run once with exactly one instrument of each of "
                "these symbols, or move the file aside"
            )
        tmp = self.path.with_name(self.path.name + ".upgrade")
        rows = 0
        with open(tmp, "wb") as out:
            out.write(_HEADER.pack(MAGIC, RECORD_DTYPE.itemsize))
            for offset, n in blocks:
                old = self._read(f, offset, n, RECORD_V1_DTYPE)
                new = np.zeros(n, RECORD_DTYPE)
                for name in RECORD_V1_DTYPE.names or ():
                    new[name] = old[name]
                symbols, index = np.unique(old["symbol"], return_inverse=True)
                exchanges = [next(iter(by_symbol[s])) for s in symbols.tolist()]
                new["exchange"] = np.array(exchanges, RECORD_DTYPE["exchange"])[index]
                payload = new.tobytes()
                out.write(_BLOCK.pack(n, crc32(payload)) + payload)
                rows += n
            out.flush()
            os.fsync(out.fileno())
        log.warning(
            "%s: converted %d spilled rows of the previous version, each given the exchange "
            "of this run's instrument with its symbol",
            self.path,
            rows,
        )
        return tmp

    def _read(
        self,
        f: BufferedReader,
        offset: int,
        n: int,
        dtype: np.dtype,
        into: np.ndarray | None = None,
    ) -> np.ndarray:
        """The ``n`` rows at ``offset``, checked against their block's CRC."""
        out = np.empty(n, dtype) if into is None else into
        f.seek(offset - _BLOCK.size)
        _, crc = _BLOCK.unpack(f.read(_BLOCK.size))
        view = out.view(np.uint8).data
        if f.readinto(view) != len(view) or crc32(view) != crc:
            raise SpillError(
                f"{self.path}: spilled block at byte offset {offset - _BLOCK.size} "
                "changed or was cut since it was written; the file is kept, move it "
                "aside to continue"
            )
        return out

    def append(self, records: np.ndarray) -> None:
        """Append records durably (written and fsynced before this returns)."""
        if len(records):
            self.extend([records])

    def extend(self, batches: Iterable[np.ndarray]) -> None:
        """Append several batches of records, durably at the end (one fsync).

        Raises
        ------
        OSError
            The rows could not be written (a full disk): the file is cut back to what it
            held before, as are the rows counted.
        """
        new = not self.path.exists() or self.path.stat().st_size == 0
        added: list[tuple[int, int]] = []
        with open(self.path, "ab") as f:
            before = f.tell()
            try:
                if new:
                    f.write(_HEADER.pack(MAGIC, RECORD_DTYPE.itemsize))
                for records in batches:
                    records = np.ascontiguousarray(records, RECORD_DTYPE)
                    for lo in range(0, len(records), MAX_BLOCK_ROWS):
                        payload = records[lo : lo + MAX_BLOCK_ROWS].tobytes()
                        n = len(payload) // RECORD_DTYPE.itemsize
                        f.write(_BLOCK.pack(n, crc32(payload)))
                        added.append((f.tell(), n))
                        f.write(payload)
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    f.truncate(before)
                raise
        self._blocks.extend(added)
        self.rows += sum(n for _, n in added)

    def take(self, other: "SpillFile") -> None:
        """Append every row of ``other`` behind this file's, durably; then empty ``other``."""
        self.extend(other.blocks(MAX_BLOCK_ROWS))
        other.clear()

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
            self._read(f, offset, n, RECORD_DTYPE, out[row : row + n])
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
            if self.durable:
                os.fsync(f.fileno())
        self._blocks.clear()
        self.rows = 0
