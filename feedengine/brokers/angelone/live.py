"""Angel One's live feed as a pipeline source, with optional recording to a tick file.

:class:`AngelLiveSource` is a :class:`~feedengine.stream.StreamSource` (a bounded queue with
back-pressure, batches at least every :data:`~feedengine.stream.BATCH_WAIT_S`, recording
that fails alone) over an :class:`~feedengine.brokers.angelone.stream.AngelStream`. Its
recording's meta says ``"broker": "angelone"`` and lists the instruments as
``{"token", "exchange_type", "tradingsymbol", "exchange"}``; each record is one binary
message exactly as Angel sent it (SPEC section 3).
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from feedengine.brokers.angelone.auth import Session
from feedengine.brokers.angelone.instruments import AngelInstrument
from feedengine.brokers.angelone.stream import AngelStream
from feedengine.brokers.angelone.wire import Mode
from feedengine.stream import StreamSource
from feedengine.tickfile import make_meta

#: The tick-file meta's name of this broker.
BROKER = "angelone"


class AngelLiveSource(StreamSource[AngelInstrument]):
    """Angel One's WebSocket 2.0 stream for ``instruments``.

    Parameters
    ----------
    instruments
        What to subscribe (sharded over up to 3 connections of 1000).
    url
        ``ANGEL_WS_URL``.
    session
        The login's tokens (:func:`~feedengine.brokers.angelone.auth.login`).
    record
        Tick file to record every binary message to, as it arrives on the socket, or None.
        If it cannot be written, recording stops and the feed goes on.
    mode
        Subscription mode (SNAP_QUOTE by default).
    clock
        Receive-time source in Unix ns (the same one the pipeline's clock uses).
    **stream_options
        Passed to :class:`~feedengine.brokers.angelone.stream.AngelStream`.
    """

    name = BROKER
    broker = BROKER
    stream: AngelStream

    def __init__(
        self,
        instruments: list[AngelInstrument],
        url: str,
        session: Session,
        *,
        record: Path | None = None,
        mode: int | str = Mode.SNAP_QUOTE,
        clock: Callable[[], int] = time.time_ns,
        **stream_options: Any,
    ) -> None:
        meta = make_meta(BROKER, [i.to_dict() for i in instruments], broker=BROKER)
        super().__init__(instruments, record, meta)
        self.stream = AngelStream(
            url,
            session,
            [i.key for i in instruments],
            self._on_message,
            mode=mode,
            clock=clock,
            on_gap=self._on_gap,
            **stream_options,
        )
