"""``--record``: a copy of every message received, for later, never a condition of the feed.

:class:`Recorder` owns the tick file of a run. Its :meth:`~Recorder.write` only appends to the
writer's buffer (the writer's own thread does the disk I/O) and never raises, so the thread
that receives messages can call it; when the file cannot be written (a full disk, a vanished
folder, a path that cannot be created) that is one error line, recording stops, it shows as
``failed`` in the heartbeat, and the candles go on without losing a tick.
"""

import contextlib
import logging
from pathlib import Path
from typing import Any

from feedengine.errors import RecordingError
from feedengine.tickfile import TickWriter

log = logging.getLogger(__name__)


class Recorder:
    """The tick file ``path`` with header ``meta``, written until it fails or is closed.

    Parameters
    ----------
    path
        The tick file to create.
    meta
        Its header (see :func:`feedengine.tickfile.make_meta`).
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.writer: TickWriter | None = None
        #: Why recording stopped, once it has failed.
        self.error: RecordingError | None = None

    def start(self) -> None:
        try:
            self.writer = TickWriter(self.path, self.meta)
        except OSError as e:
            self._failed(e)
            return
        log.info("recording every message to %s", self.path)

    def write(self, recv_ns: int, message: bytes | memoryview) -> None:
        """Append one message (any thread); a failure is noticed by :meth:`check`."""
        writer = self.writer
        if writer is not None and self.error is None:
            with contextlib.suppress(OSError):  # kept in writer.error, reported by check()
                writer.write(recv_ns, message)

    def check(self) -> None:
        """Report a failure of the writer's thread (call it now and then, from one thread)."""
        writer = self.writer
        if writer is not None and writer.error is not None and self.error is None:
            self._failed(writer.error)

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            writer.close()
        except OSError as e:
            if self.error is None:
                self._failed(e)
            return
        if self.error is None:
            log.info("recorded %d messages to %s", writer.records, self.path)

    def _failed(self, error: OSError) -> None:
        self.error = RecordingError(
            f"--record {self.path}: {error.strerror or error}; recording stopped, the feed goes on"
        )
        log.error("%s", self.error)

    @property
    def status(self) -> dict[str, str | int | None]:
        """The recording as the heartbeat reports it."""
        writer = self.writer
        return {
            "path": str(self.path),
            "state": "failed" if self.error is not None else "recording",
            "records": writer.records if writer is not None else 0,
            "error": None if self.error is None else str(self.error),
        }
