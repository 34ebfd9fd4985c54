"""Replay a tick file as a source: as fast as possible, or paced at a multiple of real time."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from feedengine import brokers
from feedengine.errors import ConfigError, InstrumentsError, TickFileError
from feedengine.source import MessageBatch
from feedengine.tickfile import CRC_BYTES, META_OFFSET, TickReader

#: Longest a paced replay sleeps at once, so that stop() is honoured promptly (seconds).
MAX_SLEEP = 0.05


class ReplaySource:
    """Messages of a tick file with their recorded receive times.

    Parameters
    ----------
    path
        The tick file (see ``docs/tickfile.md``).
    speed
        0 for as fast as possible; otherwise the pace relative to real time (1 = as recorded).
    """

    def __init__(self, path: Path | str, speed: float = 0.0) -> None:
        if speed < 0:
            raise ValueError(
                f"replay speed must be 0 (as fast as possible) or positive, not {speed}"
            )
        self.reader = TickReader(path)
        self.name = f"replay of {self.reader.path.name}"
        #: The broker whose messages the file holds: its meta says, and a file without a
        #: broker is Kite's (every file before brokers were named).
        self.broker = str(self.reader.meta.get("broker", brokers.DEFAULT_BROKER))
        try:
            self._broker = brokers.get(self.broker)
        except ConfigError as e:
            raise TickFileError(self.reader.path, META_OFFSET, f"header: {e}") from None
        self.speed = speed
        self._stop = threading.Event()
        self._skip = 0
        self._ended = False
        self._bytes = 0
        #: Records handed out so far (including any skipped on resume).
        self.records = 0

    @property
    def instruments(self) -> list[Any]:
        """The instruments of the file's header.

        Raises
        ------
        TickFileError
            The header's instrument list is not a list of valid instruments.
        """
        listed = self.reader.meta.get("instruments", [])
        if not isinstance(listed, list):
            raise TickFileError(self.reader.path, META_OFFSET, "header instruments is not a list")
        try:
            return [self._broker.instrument_from_dict(d) for d in listed]
        except InstrumentsError as e:
            raise TickFileError(self.reader.path, META_OFFSET, f"header: {e}") from None

    def start(self) -> None:
        self._stop.clear()

    def stop(self) -> None:
        self._stop.set()

    @property
    def bytes_read(self) -> int:
        """Bytes of the file handed out so far: the end of the last message yielded."""
        return self._bytes

    def position(self) -> dict[str, str | int]:
        return {
            "replay_file": self.reader.path.name,
            "replay_size": self.reader.size,
            "replay_records": self.records,
            "replay_ended": int(self._ended),
        }

    def resume(self, position: dict[str, str | int]) -> bool:
        """Whether a replay checkpoint continues into this replay.

        It does when it stopped inside this same file (the records it processed are
        skipped), or when it ran to the end of another file without finalizing (this file
        continues that one). Any other replay's checkpoint does not apply.
        """
        if (
            position.get("replay_file") == self.reader.path.name
            and position.get("replay_size") == self.reader.size
            and not position.get("replay_ended")
        ):
            self._skip = int(position.get("replay_records", 0))
            return True
        return bool(position.get("replay_ended"))

    def _records(self) -> Iterator[MessageBatch]:
        skip = self._skip
        for batch in self.reader.batches():
            if skip >= len(batch):
                skip -= len(batch)
                self.records += len(batch)
                continue
            if skip:
                batch = MessageBatch(
                    batch.buf, batch.recv_ns[skip:], batch.offsets[skip:], batch.lengths[skip:]
                )
                self.records += skip
                skip = 0
            yield batch
        self._ended = True
        self._bytes = self.reader.size

    def _handed(self, batch: MessageBatch) -> MessageBatch:
        self.records += len(batch)
        self._bytes = int(batch.offsets[-1] + batch.lengths[-1]) + CRC_BYTES
        return batch

    def batches(self) -> Iterator[MessageBatch]:
        if self.speed == 0:
            for batch in self._records():
                if self._stop.is_set():
                    return
                yield self._handed(batch)
            return
        origin_wall: int | None = None
        origin_recv = 0
        for batch in self._records():
            if origin_wall is None:
                origin_wall, origin_recv = time.monotonic_ns(), int(batch.recv_ns[0])
            i = 0
            while i < len(batch):
                if self._stop.is_set():
                    return
                replay_now = origin_recv + (time.monotonic_ns() - origin_wall) * self.speed
                due = int(np.searchsorted(batch.recv_ns, replay_now, side="right"))
                if due > i:
                    yield self._handed(
                        MessageBatch(
                            batch.buf,
                            batch.recv_ns[i:due],
                            batch.offsets[i:due],
                            batch.lengths[i:due],
                        )
                    )
                    i = due
                    continue
                wait_ns = (int(batch.recv_ns[i]) - replay_now) / self.speed
                time.sleep(min(max(wait_ns / 1e9, 0.0), MAX_SLEEP))
