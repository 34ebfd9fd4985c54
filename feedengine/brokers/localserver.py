"""What every broker's local test server shares: its asyncio thread, the pace at which it
plays a recorded or simulated market, its clients' send loops and the faults it can do to
their connections (``feedengine.brokers.<broker>.mockserver`` add their broker's protocol).
"""

import asyncio
import contextlib
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

#: The connection faults every local server does the same way (``inject``'s names).
DROP, SILENCE, BLACKHOLE = "drop", "silence", "blackhole"


@dataclass(eq=False)
class Client:
    """A connected client: its socket, the frames queued for it, and until when it is kept
    silent (``time.monotonic``)."""

    ws: ServerConnection
    queue: asyncio.Queue[bytes | str] = field(default_factory=asyncio.Queue)
    silent_until: float = 0.0
    #: When a frame last went out (``time.monotonic``).
    last_sent: float = 0.0


#: A server's own client record.
C = TypeVar("C", bound=Client)


class LocalServer(ABC, Generic[C]):
    """An asyncio server on a thread of its own, playing a market at ``speed``.

    Subclasses implement :meth:`_serve`, which must create ``self._stop`` and set
    ``self._ready`` once listening, and keep their clients in ``self._clients``.
    """

    host: str
    speed: float

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._clients: set[C] = set()
        #: (wall ns, stream ns) of the first message played.
        self._origin: tuple[int, int] | None = None

    def _netloc(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"{host}:{port}"

    def _start_loop(self, name: str) -> None:
        """Run :meth:`_serve` on a new thread's event loop; return once it listens."""
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _stop_loop(self) -> None:
        """Ask :meth:`_serve` to end and wait for its thread."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join()

    def stream_clock(self) -> int:
        """Now, on the played stream's time line (Unix ns of the recording)."""
        if self._origin is None:
            return 0
        wall, stream = self._origin
        return stream + int((time.time_ns() - wall) * (self.speed or 1.0))

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    @abstractmethod
    async def _serve(self) -> None:
        """Listen until ``self._stop`` is set."""

    async def _pace(self, recv_ns: int) -> None:
        """Wait until the message received at ``recv_ns`` is due at ``speed`` (0: at once,
        yielding to the loop)."""
        if self._origin is None:
            self._origin = (time.time_ns(), recv_ns)
        if self.speed > 0:
            wait = (recv_ns - self._origin[1]) / self.speed - (time.time_ns() - self._origin[0])
            if wait > 0:
                await asyncio.sleep(wait / 1e9)
        else:
            await asyncio.sleep(0)

    @staticmethod
    async def _send(client: Client) -> None:
        """Send the client's queued frames, but none while it is kept silent."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await client.queue.get()
                if time.monotonic() < client.silent_until:
                    continue
                await client.ws.send(frame)
                client.last_sent = time.monotonic()

    def _fault(self, fault: str, seconds: float) -> bool:
        """Do a connection fault (:data:`DROP`, :data:`SILENCE`, :data:`BLACKHOLE`) to every
        client; False for any other fault (the broker's own)."""
        if fault not in (DROP, SILENCE, BLACKHOLE):
            return False
        for client in list(self._clients):
            if fault == DROP:
                client.ws.transport.abort()
            elif fault == SILENCE:
                client.silent_until = time.monotonic() + seconds
            else:
                client.silent_until = time.monotonic() + (seconds or float("inf"))
                client.ws.transport.pause_reading()
                if seconds:
                    asyncio.get_running_loop().call_later(
                        seconds, client.ws.transport.resume_reading
                    )
        return True
