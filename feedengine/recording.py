"""``--record``: every message a source yields, written to a tick file on the pipeline's thread.

Recording is a copy for later, never a condition of the feed: when the tick file cannot be
written (a full disk, a vanished folder) that is one error line, recording stops, and the
candles go on without losing a tick. The tick file is written where the batches are consumed,
not on a socket's thread, so a slow or failing disk can never be taken for a network fault.
"""

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from feedengine.errors import RecordingError
from feedengine.instruments import Instrument
from feedengine.source import MessageBatch, Source
from feedengine.tickfile import TickWriter, make_meta

log = logging.getLogger(__name__)


class RecordingSource:
    """``source``, with every message it yields also appended to the tick file ``path``.

    Parameters
    ----------
    source
        The source to record (live or simulated).
    path
        The tick file to create.
    broker
        The ``source`` named in the tick file's header.

    Raises
    ------
    RecordingError
        From :meth:`start`: the file cannot be created.
    """

    def __init__(self, source: Source, path: Path, broker: str = "kite") -> None:
        self.source = source
        self.path = path
        self.name = source.name
        self.broker = broker
        self.writer: TickWriter | None = None
        #: Why recording stopped early, or None.
        self.failure: str | None = None

    def __getattr__(self, name: str) -> Any:  # status, clock ...: the source's own
        return getattr(self.source, name)

    @property
    def instruments(self) -> list[Instrument]:
        return self.source.instruments

    def start(self) -> None:
        meta = make_meta(self.broker, [i.to_dict() for i in self.source.instruments])
        try:
            self.writer = TickWriter(self.path, meta)
        except OSError as e:
            raise RecordingError(f"cannot create tick file {self.path}: {e.strerror}") from None
        log.info("recording every message to %s", self.path)
        self.source.start()

    def stop(self) -> None:
        self.source.stop()
        if self.writer is not None:
            self._close()

    def _close(self) -> None:
        assert self.writer is not None
        writer, self.writer = self.writer, None
        try:
            writer.close()
        except (OSError, RecordingError) as e:
            if self.failure is None:
                self._failed(e)

    def _failed(self, error: BaseException) -> None:
        reason = getattr(error, "strerror", None) or str(error)
        self.failure = f"recording to {self.path} failed: {reason}"
        log.error("%s; recording stopped, the candles go on", self.failure)

    def batches(self) -> Iterator[MessageBatch]:
        for batch in self.source.batches():
            if self.writer is not None:
                try:
                    for i in range(len(batch)):
                        self.writer.write(int(batch.recv_ns[i]), batch.message(i))
                except (OSError, RecordingError) as e:
                    self._failed(e)
                    self._close()
            yield batch

    def position(self) -> dict[str, str | int]:
        return self.source.position()

    def resume(self, position: dict[str, str | int]) -> bool:
        return self.source.resume(position)
