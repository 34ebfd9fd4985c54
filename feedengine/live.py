"""The live Kite feed as a pipeline source, with optional recording to a tick file.

The stream's thread puts each binary message into a bounded queue (a full queue blocks the
socket: back-pressure, never a drop) and, with ``--record``, appends it to a tick file's
buffer (the writer's own thread does the disk I/O). The pipeline's thread takes the queued
messages a batch at a time; when the market is quiet it still gets an empty batch every
:data:`BATCH_WAIT_S`, so its clock keeps closing candles.

Recording is a side job: when it fails (a full disk, an unwritable path) it says so in one
line (:class:`~feedengine.errors.RecordingError`), stops, shows as ``failed`` in the
heartbeat, and the feed goes on without losing a tick.
"""

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from feedengine.instruments import Instrument
from feedengine.recording import Recorder
from feedengine.source import Gap, MessageBatch
from feedengine.ticker import ConnectionStatus, KiteStream
from feedengine.tickfile import make_meta

#: Longest the pipeline waits for a message before it runs its clock anyway (seconds): the
#: granularity with which idle candles close after their end + grace.
BATCH_WAIT_S = 0.05
#: Messages per batch handed to the decoder at most.
BATCH_MESSAGES = 4096
#: Messages the queue holds: minutes of Kite's busiest stream (3 connections, a few frames
#: a second each); beyond it the socket thread waits.
QUEUE_MESSAGES = 100_000


class LiveSource:
    """Kite's WebSocket stream for ``instruments``.

    Parameters
    ----------
    instruments
        What to subscribe (sharded over up to 3 connections).
    url, api_key, access_token
        ``KITE_WS_URL`` and the credentials.
    record
        Tick file to record every binary message to, as it arrives on the socket, or None.
        If it cannot be written, recording stops and the feed goes on.
    clock
        Receive-time source in Unix ns (the same one the pipeline's clock uses).
    """

    name = "kite"
    broker = "kite"

    def __init__(
        self,
        instruments: list[Instrument],
        url: str,
        api_key: str,
        access_token: str,
        *,
        record: Path | None = None,
        mode: str = "full",
        clock: Callable[[], int] = time.time_ns,
        **stream_options: Any,
    ) -> None:
        self._instruments = instruments
        self._queue: queue.Queue[tuple[int, bytes] | Gap] = queue.Queue(QUEUE_MESSAGES)
        self._gaps: list[Gap] = []
        self.stream = KiteStream(
            url,
            api_key,
            access_token,
            [i.instrument_token for i in instruments],
            self._on_message,
            mode=mode,
            clock=clock,
            on_gap=self._on_gap,
            **stream_options,
        )
        self.recorder = (
            None
            if record is None
            else Recorder(record, make_meta("kite", [i.to_dict() for i in instruments]))
        )
        self._stopped = threading.Event()

    @property
    def instruments(self) -> list[Instrument]:
        return self._instruments

    @property
    def status(self) -> list[ConnectionStatus]:
        return self.stream.status

    @property
    def recording(self) -> dict[str, str | int | None] | None:
        """The recording as the heartbeat reports it; None when not recording."""
        return None if self.recorder is None else self.recorder.status

    def _on_message(self, recv_ns: int, message: bytes) -> None:
        if self.recorder is not None:
            self.recorder.write(recv_ns, message)  # never raises into the stream
        self._put((recv_ns, message))

    def _on_gap(self, tokens: list[int], start_ns: int, end_ns: int) -> None:
        # In the queue, in order: everything received after the gap is processed after it.
        self._put(Gap(tuple(tokens), start_ns, end_ns, "a connection received nothing"))

    def _put(self, item: tuple[int, bytes] | Gap) -> None:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=BATCH_WAIT_S)
                return
            except queue.Full:
                continue

    def take_gaps(self) -> list[Gap]:
        """The gaps met before the batch just yielded (the pipeline's thread only)."""
        gaps, self._gaps = self._gaps, []
        return gaps

    def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()
        self.stream.start()

    def stop(self) -> None:
        self._stopped.set()
        self.stream.stop()
        if self.recorder is not None:
            self.recorder.close()

    def batches(self) -> Iterator[MessageBatch]:
        held: Gap | None = None  # met after this batch's messages: the next batch's
        while not self._stopped.is_set():
            if held is not None:
                self._gaps.append(held)
                held = None
            messages: list[tuple[int, bytes]] = []
            try:
                item = self._queue.get(timeout=BATCH_WAIT_S)
            except queue.Empty:
                item = None
            while item is not None:
                if isinstance(item, Gap):
                    if messages:
                        held = item
                        break
                    self._gaps.append(item)
                else:
                    messages.append(item)
                    if len(messages) == BATCH_MESSAGES:
                        break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            self.stream.check()
            if self.recorder is not None:
                self.recorder.check()
            yield MessageBatch.from_messages(messages)

    def position(self) -> dict[str, str | int]:
        return {}

    def resume(self, position: dict[str, str | int]) -> bool:
        """A live run resumes any live checkpoint: its candles continue or close."""
        return True
