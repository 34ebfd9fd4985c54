"""The live Kite feed as a pipeline source, with optional recording to a tick file.

:class:`LiveSource` is a :class:`~feedengine.stream.StreamSource` (a bounded queue with
back-pressure, batches at least every :data:`~feedengine.stream.BATCH_WAIT_S`, recording
that fails alone; see :mod:`feedengine.stream`) over a
:class:`~feedengine.brokers.kite.ticker.KiteStream`.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.ticker import KiteStream
from feedengine.brokers.kite.token import TokenSource
from feedengine.stream import StreamSource
from feedengine.tickfile import make_meta


class LiveSource(StreamSource[KiteInstrument]):
    """Kite's WebSocket stream for ``instruments``.

    Parameters
    ----------
    instruments
        What to subscribe (sharded over up to 3 connections).
    url, api_key
        ``KITE_WS_URL`` and the API key.
    access_token
        The access token or its source (see :class:`~feedengine.brokers.kite.ticker.KiteStream`).
    record
        Tick file to record every binary message to, as it arrives on the socket, or None.
        If it cannot be written, recording stops and the feed goes on.
    mode
        Kite's subscription mode (``full`` by default).
    clock
        Receive-time source in Unix ns (the same one the pipeline's clock uses).
    **stream_options
        Passed to :class:`~feedengine.brokers.kite.ticker.KiteStream`.
    """

    name = "kite"
    broker = "kite"
    stream: KiteStream

    def __init__(
        self,
        instruments: list[KiteInstrument],
        url: str,
        api_key: str,
        access_token: str | TokenSource,
        *,
        record: Path | None = None,
        mode: str = "full",
        clock: Callable[[], int] = time.time_ns,
        **stream_options: Any,
    ) -> None:
        super().__init__(instruments, record, make_meta("kite", [i.to_dict() for i in instruments]))
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
