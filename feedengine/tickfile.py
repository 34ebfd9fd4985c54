"""Tick files: recorded or simulated Kite messages with their receive times (SPEC section 3).

::

    file    := header record*
    header  := magic "FEEDTKS1" | u32 meta_len | meta (UTF-8 JSON)
    record  := u64 recv_ns | u32 length | payload | u32 crc32(recv_ns|length|payload)

All framing integers are little-endian. :class:`TickWriter` appends records through a
buffer that a thread of its own flushes at least every second (a write never waits for the
disk; a failed write stops the writer and says why) and fsyncs on close;
:class:`TickReader` maps the file and yields large :class:`MessageBatch` es indexed by a
compiled scanner. A record cut short or failing its CRC at the very end (a crash while
writing) is dropped with a warning; any other bad record raises :class:`TickFileError`
naming its byte offset. See ``docs/tickfile.md``.
"""

import contextlib
import json
import logging
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from feedengine import _tickfile
from feedengine.errors import TickFileError
from feedengine.source import MessageBatch

log = logging.getLogger(__name__)

MAGIC = b"FEEDTKS1"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sI")
#: Byte offset of the header's JSON metadata (errors about the header point here).
META_OFFSET = _HEADER.size
_RECORD_HEAD = struct.Struct("<qI")
_CRC = struct.Struct("<I")
#: Bytes after a record's payload: its CRC-32.
CRC_BYTES = _CRC.size
#: Largest payload a record may hold: the largest possible Kite message.
MAX_PAYLOAD: int = _tickfile.MAX_PAYLOAD
#: The writer hands its buffer to the OS at least this often (seconds), so a crash loses
#: at most about a second of recording.
FLUSH_INTERVAL = 1.0
#: ... and whenever this many bytes are buffered.
FLUSH_BYTES = 1 << 20
#: Bytes buffered at most while the disk is slow: tens of seconds of Kite's busiest
#: stream. Past it recording fails rather than grow memory without bound or hold up the
#: feed.
MAX_BUFFER_BYTES = 64 << 20
#: Records indexed per batch: large enough that replay's per-batch Python work is noise ...
BATCH_RECORDS = 4096
#: ... and bytes per batch, so that the mapped pages resident at once stay bounded (a
#: 9000-instrument frame is ~40 kB; 4096 of them would be 160 MB).
BATCH_BYTES = 8 << 20

_SCAN = _tickfile.SCAN_CODES
#: Linux's "drop these pages" advice for a file mapping; None where the OS has none.
_MADV_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)


def make_meta(source: str, instruments: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The header metadata SPEC section 3 requires, plus ``extra`` keys."""
    return {
        "format": FORMAT_VERSION,
        "source": source,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "instruments": instruments,
        **extra,
    }


class TickWriter:
    """Append Kite messages to a tick file.

    :meth:`write` only appends to a buffer, never waits for the disk: a thread of the
    writer's own hands the buffer to the OS every ``flush_interval`` or :data:`FLUSH_BYTES`.
    If that fails (a full disk) or the disk falls :data:`MAX_BUFFER_BYTES` behind, the writer
    stops: :attr:`error` says why, the buffer is dropped, and :meth:`write` and
    :meth:`close` raise it.

    Parameters
    ----------
    path
        File to create (truncated if it exists).
    meta
        Header metadata; see :func:`make_meta`.
    flush_interval
        Longest time written data waits in the buffer, in seconds.

    Raises
    ------
    OSError
        The file cannot be created or its header written.

    Notes
    -----
    Thread-safe. ``recv_ns`` that would go backwards (a wall clock stepped back) is clamped
    to the previous value so the file stays non-decreasing; :attr:`clamped` counts it.
    """

    def __init__(
        self,
        path: os.PathLike[str] | str,
        meta: dict[str, Any],
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.path = Path(path)
        self.records = 0
        self.clamped = 0
        #: Why writing stopped (the OS's error, or the disk falling behind); None while ok.
        self.error: OSError | None = None
        self._last_ns = 0
        self._buf = bytearray()
        self._lock = threading.Lock()
        # Before the file is opened (and truncated): a header that cannot be made leaves
        # an existing file as it was. (Not written aside and renamed into place: the target
        # may be a device or a pipe.)
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        try:
            self._file.write(_HEADER.pack(MAGIC, len(meta_bytes)) + meta_bytes)
            self._file.flush()
        except OSError:
            self._close_quietly()
            raise
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._flush_interval = flush_interval
        self._flusher = threading.Thread(
            target=self._flush_loop, name="tickfile-flush", daemon=True
        )
        self._flusher.start()

    def write(self, recv_ns: int, payload: bytes | bytearray | memoryview) -> None:
        """Append one message received at ``recv_ns`` (Unix ns).

        Raises
        ------
        OSError
            Writing has failed (:attr:`error`); nothing more is recorded.
        ValueError
            The message is larger than any Kite message, or the writer is closed.
        """
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"message of {n} bytes is larger than any Kite message")
        with self._lock:
            if self.error is not None:
                raise self.error
            if self._closed.is_set():
                raise ValueError(f"tick file {self.path} is closed")
            if recv_ns < self._last_ns:
                recv_ns = self._last_ns
                self.clamped += 1
            self._last_ns = recv_ns
            head = _RECORD_HEAD.pack(recv_ns, n)
            self._buf += head
            self._buf += payload
            self._buf += _CRC.pack(zlib.crc32(payload, zlib.crc32(head)))
            self.records += 1
            if len(self._buf) >= FLUSH_BYTES:
                self._wake.set()
            if len(self._buf) > MAX_BUFFER_BYTES:
                self._fail(OSError(f"the disk fell {len(self._buf) >> 20} MB behind the stream"))
                raise self.error  # type: ignore[misc]

    def flush(self) -> None:
        """Hand buffered records to the operating system now.

        Raises
        ------
        OSError
            Writing has failed (:attr:`error`).
        """
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self.error is not None:
            raise self.error
        try:
            if self._buf:
                self._file.write(self._buf)
                self._buf.clear()
            self._file.flush()
        except OSError as e:
            self._fail(e)
            raise

    def _fail(self, error: OSError) -> None:
        """Stop writing for good (with the lock held): keep why, drop the buffer."""
        self.error = error
        self._buf = bytearray()
        self._close_quietly()

    def _close_quietly(self) -> None:
        with contextlib.suppress(OSError):  # the file already failed: this error says less
            self._file.close()

    def _flush_loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            with self._lock:
                if self._closed.is_set() or self.error is not None:
                    return
                data, self._buf = self._buf, bytearray()
            # Outside the lock: a slow disk delays this thread, never write()'s caller.
            try:
                self._file.write(data)
                self._file.flush()
            except OSError as e:
                with self._lock:
                    self._fail(e)
                return

    def close(self) -> None:
        """Flush, fsync and close; safe to call twice.

        Raises
        ------
        OSError
            Writing failed, now or before (:attr:`error`).
        """
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        self._wake.set()
        self._flusher.join()  # its last write is done: the file is this thread's now
        with self._lock:
            self._flush_locked()
            try:
                os.fsync(self._file.fileno())
                self._file.close()
            except OSError as e:
                self._fail(e)
                raise

    def __enter__(self) -> "TickWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(OSError):  # the error in flight says more
                self.close()


class TickReader:
    """Read a tick file through mmap.

    Parameters
    ----------
    path
        The tick file.

    Raises
    ------
    TickFileError
        The header is not a tick file's (wrong magic, cut short, bad JSON, other version).
    OSError
        The file cannot be opened.
    """

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size or head[:8] != MAGIC:
                raise TickFileError(self.path, 0, "not a tick file (no FEEDTKS1 magic)")
            _, meta_len = _HEADER.unpack(head)
            if _HEADER.size + meta_len > self.size:
                raise TickFileError(
                    self.path,
                    8,
                    f"header metadata of {meta_len} bytes runs past the end of the file",
                )
            try:  # orjson: the 3000-instrument header of a day took json 35 ms
                self.meta: dict[str, Any] = orjson.loads(f.read(meta_len))
            except orjson.JSONDecodeError as e:
                raise TickFileError(
                    self.path, _HEADER.size, f"header metadata is not JSON ({e})"
                ) from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT_VERSION:
            found = self.meta.get("format") if isinstance(self.meta, dict) else None
            raise TickFileError(
                self.path,
                _HEADER.size,
                f"unsupported tick file format {found!r} (expected {FORMAT_VERSION})",
            )
        self.data_offset = _HEADER.size + meta_len
        #: Set when the last record was cut short or failed its CRC (a crash while writing).
        self.torn_tail_offset: int | None = None

    @property
    def instruments(self) -> list[dict[str, Any]]:
        """The ``instruments`` list of the header metadata."""
        instruments: list[dict[str, Any]] = self.meta.get("instruments", [])
        return instruments

    def batches(self, batch_records: int = BATCH_RECORDS) -> Iterator[MessageBatch]:
        """Yield the records in order, ``batch_records`` at a time, from one mapping."""
        if self.size == self.data_offset:
            return
        with open(self.path, "rb") as f:
            # Not closed explicitly: batches handed out may still view it; it is unmapped
            # when the last of them is dropped.
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        yield from self._scan(mm, np.frombuffer(mm, dtype=np.uint8), batch_records)

    def _scan(self, mm: mmap.mmap, buf: np.ndarray, batch_records: int) -> Iterator[MessageBatch]:
        pos, last_ns = self.data_offset, -(2**63)
        released = 0
        while pos < len(buf):
            # The consumer is done with the batches before ``pos``: drop their pages from
            # this process's resident set (they stay in the page cache and fault back in
            # if a batch is read again), so a day-long file keeps RSS flat.
            upto = pos // mmap.PAGESIZE * mmap.PAGESIZE
            if upto > released and _MADV_DONTNEED is not None:
                mm.madvise(_MADV_DONTNEED, released, upto - released)
                released = upto
            recv_ns = np.empty(batch_records, np.int64)
            offsets = np.empty(batch_records, np.int64)
            lengths = np.empty(batch_records, np.int64)
            k, pos, code = _tickfile.scan_records(
                buf, pos, last_ns, recv_ns, offsets, lengths, BATCH_BYTES
            )
            if k:
                last_ns = int(recv_ns[k - 1])
                yield MessageBatch(buf, recv_ns[:k], offsets[:k], lengths[:k])
            if code == _SCAN["torn"]:
                self.torn_tail_offset = pos
                log.warning(
                    "%s: last record at byte offset %d is incomplete (%d bytes; a "
                    "crash while writing?): ignored",
                    self.path,
                    pos,
                    len(buf) - pos,
                )
                return
            if code != _SCAN["ok"]:
                reason = {
                    _SCAN["bad_crc"]: "record fails its CRC-32",
                    _SCAN["bad_length"]: "record length larger than any Kite message",
                    _SCAN["bad_time"]: "record recv_ns goes backwards",
                    _SCAN["past_end"]: "record length runs past the end of the file, "
                    "yet good records follow it (not a torn tail: the file is damaged)",
                }[code]
                raise TickFileError(self.path, pos, f"corrupt tick file: {reason}")

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(recv_ns, payload)`` per record (a Python object per message)."""
        for batch in self.batches():
            for i in range(len(batch)):
                yield int(batch.recv_ns[i]), bytes(batch.message(i))
