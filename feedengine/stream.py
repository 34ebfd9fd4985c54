"""A broker's live WebSocket feed, broker-neutral: connections, and the source that queues them.

:class:`BrokerStream` runs an asyncio loop (the ``websockets`` library) on a thread of its
own, one task per connection. Each connection subscribes its share of the instruments, hands
every binary message with its receive time to a callback without touching its packets, gives
text frames to the broker, treats ``silence_s`` without any message as death (it aborts the
socket at once: a dead link cannot complete a close handshake), and reconnects with
exponential backoff and jitter (1 s doubling to 60 s, counted from the failed attempt's
start), subscribing as before. A refused credential the broker has renewed since the
handshake (Kite's daily token) is tried at once; a refusal the broker calls fatal (a bad
or expired credential), or the callback raising, stops every connection and is raised in the
consumer's thread. A broker subclass says only what differs: the address and headers of a
connection, its subscribe messages, which refusals are fatal, its text frames, and whether
it must send a text keep-alive.

:class:`StreamSource` turns such a stream into a pipeline source: the stream's thread puts
each binary message into a bounded queue (a full queue blocks the socket: back-pressure,
never a drop) and, with ``--record``, appends it to a tick file's buffer (the writer's own
thread does the disk I/O). The pipeline's thread takes the queued messages a batch at a
time; when the market is quiet it still gets an empty batch every :data:`BATCH_WAIT_S`, so
its clock keeps closing candles. Recording is a side job: when it fails it says so in one
line, stops, shows as ``failed`` in the heartbeat, and the feed goes on without losing a
tick.

Instruments are integer keys here (Kite's instrument token; a broker with another kind of
identifier packs it into one integer); each broker maps them to its own subscribe messages.
"""

import asyncio
import contextlib
import itertools
import logging
import queue
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.http11 import Response

from feedengine.errors import BrokerError, FeedError, StreamError
from feedengine.recording import Recorder
from feedengine.source import Gap, MessageBatch
from feedengine.tickfile import MAX_PAYLOAD

#: How long ``--test-broker`` waits for the first tick of a subscribed instrument (seconds):
#: a heartbeat or pong proves the connection, not the data.
TEST_STREAM_S = 10.0
#: A connection that received nothing for this long (an outage and its reconnect) left a
#: gap: its instruments' candles in it are missing (SPEC section 6).
GAP_S = 60.0
#: Reconnect delay: first, doubling up to the cap, each scaled by a random 0.5-1.0 (jitter)
#: so that many clients do not reconnect in step.
BACKOFF_FIRST_S = 1.0
BACKOFF_CAP_S = 60.0
#: Longest wait for the WebSocket opening handshake (websockets' default, made explicit).
OPEN_TIMEOUT_S = 10.0
#: Longest wait for the broker to answer our close frame when stopping; past it the socket
#: is dropped. A live link answers within a round trip (tens of ms to Kite); websockets'
#: default, 10 s, made a stop over a dead link hang that long.
CLOSE_TIMEOUT_S = 2.0

#: Longest the pipeline waits for a message before it runs its clock anyway (seconds): the
#: granularity with which idle candles close after their end + grace.
BATCH_WAIT_S = 0.05
#: Messages per batch handed to the decoder at most.
BATCH_MESSAGES = 4096
#: Messages the queue holds: minutes of Kite's busiest stream (3 connections, a few frames
#: a second each); beyond it the socket thread waits.
QUEUE_MESSAGES = 100_000


#: Why a connection ended before a reconnect: its socket or handshake failed, it fell silent,
#: the handshake was refused (not fatally), the opening timed out, or it closed cleanly.
RECONNECT_REASONS = ("lost", "silent", "refused", "open_timeout", "closed")


class _Silent(Exception):
    """No message for ``silence_s``: the connection was aborted (already logged)."""


class _HandlerFailed(Exception):
    """``on_message`` raised: the consumer's failure, not the network's; fatal."""


@dataclass
class ConnectionStatus:
    """One connection, as the heartbeat reports it."""

    index: int
    tokens: int
    state: str = "idle"  # idle | connecting | connected | reconnecting | stopped | failed
    reconnects: int = 0
    #: Reconnects by why the connection ended (:data:`RECONNECT_REASONS`): the metrics' label.
    reconnect_reasons: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    #: Tick packets the binary messages announced (:meth:`BrokerStream.packets`).
    ticks: int = 0
    last_message_ns: int = 0

    def as_dict(self) -> dict[str, int | str | float | None]:
        """The heartbeat's view: counts, state and seconds since the last message."""
        age = (time.time_ns() - self.last_message_ns) / 1e9 if self.last_message_ns else None
        return {
            "index": self.index,
            "tokens": self.tokens,
            "state": self.state,
            "reconnects": self.reconnects,
            "messages": self.messages,
            "seconds_since_message": age,
        }


def shard(
    keys: list[int], per_connection: int, max_connections: int, broker: str, account: str
) -> list[list[int]]:
    """Split instruments over as few connections as a broker's limits allow, balanced.

    Parameters
    ----------
    keys
        Instrument keys (duplicates are dropped, order kept).
    per_connection, max_connections
        The broker's limits.
    broker, account
        Names for the error: who sets the limits, and what they are per (``"API key"``).

    Raises
    ------
    StreamError
        No instruments, or more than ``per_connection * max_connections``.
    """
    keys = list(dict.fromkeys(keys))
    limit = per_connection * max_connections
    if len(keys) > limit:
        raise StreamError(
            f"{len(keys)} instruments: {broker} allows at most {max_connections} "
            f"connections x {per_connection} tokens = {limit} per {account}"
        )
    if not keys:
        raise StreamError("no instrument tokens to subscribe")
    n = -(-len(keys) // per_connection)
    base, extra = divmod(len(keys), n)
    bounds = [0]
    for i in range(n):
        bounds.append(bounds[-1] + base + (i < extra))
    return [keys[a:b] for a, b in itertools.pairwise(bounds)]


class BrokerStream(ABC):
    """Connections to a broker's streaming WebSocket on a background thread (a base class).

    Parameters
    ----------
    shards
        The instrument keys of each connection (see :func:`shard`).
    on_message
        Called on the stream's thread with ``(recv_ns, message)`` for every binary message.
        It must be quick and thread-safe (it usually puts into a bounded queue).
    silence_s
        A connection without any message for this long is dead.
    backoff_first_s, backoff_cap_s
        Reconnect delays: the first, doubling up to the cap, each with jitter; counted from
        the start of the attempt that failed.
    open_timeout_s
        Longest wait for the opening handshake; an attempt that times out is retried after
        the backoff like any other failure.
    clock
        Receive-time source, Unix ns (tests map it onto a recording's time line).
    on_gap
        Called on the stream's thread with ``(keys, last message ns, next message ns)`` when
        a connection comes back after receiving nothing for ``gap_s`` or more, before that
        first message reaches ``on_message``.
    gap_s
        The shortest stretch without messages that counts as a gap.
    ping_interval_s
        With a :attr:`keepalive` text, how often each connection sends it.
    """

    #: The broker's name in logs and the thread's name.
    name: ClassVar[str] = "broker"
    #: The logger of the broker's module.
    log: ClassVar[logging.Logger] = logging.getLogger(__name__)
    #: What happens to a gap's missing candles, as its log line says.
    gap_note: ClassVar[str] = "candles are missing"
    #: A text frame the broker needs every ``ping_interval_s`` to keep a connection, or None.
    keepalive: ClassVar[str | None] = None

    def __init__(
        self,
        shards: list[list[int]],
        on_message: Callable[[int, bytes], None],
        *,
        silence_s: float,
        backoff_first_s: float = BACKOFF_FIRST_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        clock: Callable[[], int] = time.time_ns,
        on_gap: Callable[[list[int], int, int], None] | None = None,
        gap_s: float = GAP_S,
        ping_interval_s: float | None = None,
    ) -> None:
        if self.keepalive is not None and not (ping_interval_s and ping_interval_s < silence_s):
            raise StreamError(
                f"{self.name}: the keep-alive interval ({ping_interval_s} s) must be positive "
                f"and shorter than the silence that means death ({silence_s} s)"
            )
        self.shards = shards
        self.on_message = on_message
        self.silence_s = silence_s
        self.backoff_first_s = backoff_first_s
        self.backoff_cap_s = backoff_cap_s
        self.open_timeout_s = open_timeout_s
        self.clock = clock
        self.on_gap = on_gap
        self.gap_s = gap_s
        self.ping_interval_s = ping_interval_s
        self.status = [ConnectionStatus(i, len(s)) for i, s in enumerate(self.shards)]
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # --- what a broker says -------------------------------------------------------------

    @abstractmethod
    def _endpoint(self, index: int) -> tuple[str, dict[str, str]]:
        """The URL and extra handshake headers of connection ``index``."""

    @abstractmethod
    async def _subscribe(self, ws: ClientConnection, index: int, keys: list[int]) -> None:
        """Send the messages that subscribe ``keys`` on new connection ``index``; log it."""

    @abstractmethod
    def _refusal(self, response: Response) -> FeedError | None:
        """The fatal error a refused handshake means (bad credentials), or None: retry."""

    def _renewed(self, index: int, response: Response) -> bool:
        """Whether connection ``index``'s refused credential has been renewed since its
        handshake (then it reconnects at once). None can be, unless a broker says so."""
        return False

    @abstractmethod
    def _text(self, index: int, text: str) -> None:
        """A text frame received on connection ``index`` (never a tick)."""

    # --- the consumer's side ------------------------------------------------------------

    def packets(self, message: bytes) -> int:
        """The tick packets a binary message carries, from its header (one by default).

        Read per message, never per tick, on the stream's thread: the per-connection tick
        counts of the metrics.
        """
        return 1

    def start(self) -> None:
        """Connect in the background; returns at once."""
        self._thread = threading.Thread(target=self._main, name=f"{self.name}-stream", daemon=True)
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        """Close every connection and end the thread."""
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join()

    def check(self) -> None:
        """Raise the stream's fatal error (:class:`~feedengine.errors.AuthError`, or what
        the callback raised)."""
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        """Whether the stream's thread still runs."""
        return self._thread is not None and self._thread.is_alive()

    # --- the stream's thread ------------------------------------------------------------

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._ready.set()
        try:
            loop.run_until_complete(self._run_all())
        except _HandlerFailed as e:  # the consumer's own error, as it raised it
            self.error = e.__cause__
        except BaseException as e:  # handed to the consumer, never lost
            self.error = e
        finally:
            loop.close()

    async def _run_all(self) -> None:
        assert self._stopping is not None
        tasks = [asyncio.create_task(self._connection(i)) for i in range(len(self.shards))]
        stop = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        for task in [*tasks, stop]:
            task.cancel()
        await asyncio.gather(*tasks, stop, return_exceptions=True)
        for status in self.status:
            if status.state != "failed":
                status.state = "stopped"
        for task in done:
            if task is not stop and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]

    async def _connection(self, index: int) -> None:
        status = self.status[index]
        keys = self.shards[index]
        attempt = 0
        log, name = self.log, self.name
        assert self._stopping is not None
        while not self._stopping.is_set():
            status.state = "connecting" if status.reconnects == 0 else "reconnecting"
            started = time.monotonic()
            reason = "closed"
            url, headers = self._endpoint(index)
            try:
                async with connect(
                    url,
                    additional_headers=headers,
                    max_size=MAX_PAYLOAD,
                    compression=None,
                    ping_interval=None,
                    open_timeout=self.open_timeout_s,
                    close_timeout=CLOSE_TIMEOUT_S,
                    proxy=None,
                ) as ws:
                    await self._subscribe(ws, index, keys)
                    status.state = "connected"
                    attempt = 0
                    pinger = asyncio.create_task(self._ping(ws))
                    try:
                        await self._receive(ws, status, keys)
                    finally:
                        pinger.cancel()
            except InvalidStatus as e:
                if self._renewed(index, e.response):  # a new credential: try it at once
                    status.reconnects += 1
                    continue
                refusal = self._refusal(e.response)
                if refusal is not None:
                    status.state = "failed"
                    raise refusal from None
                reason = "refused"
                log.warning(
                    "%s connection %d: handshake refused (HTTP %d)",
                    name,
                    index,
                    e.response.status_code,
                )
            except _Silent:  # logged, and the socket aborted, when noticed
                reason = "silent"
                started = time.monotonic()  # it was up: the backoff counts from its loss
            except TimeoutError:  # only the opening handshake is timed here
                reason = "open_timeout"
                log.warning(
                    "%s connection %d: no answer to the WebSocket handshake within %.0f s "
                    "(open timeout)",
                    name,
                    index,
                    self.open_timeout_s,
                )
            except (OSError, ConnectionClosed, InvalidHandshake) as e:
                reason = "lost"
                log.warning("%s connection %d lost: %s", name, index, e or type(e).__name__)
            except _HandlerFailed:
                status.state = "failed"
                raise
            if status.state == "connected":  # it was up: the backoff counts from its loss
                started = time.monotonic()
            delay = min(self.backoff_first_s * 2**attempt, self.backoff_cap_s)
            delay *= random.uniform(0.5, 1.0)
            # From the attempt's start: the time a failed attempt took (an open timeout's
            # 10 s) is part of the backoff, not added to it.
            wait = max(0.0, started + delay - time.monotonic())
            attempt += 1
            status.reconnects += 1
            status.reconnect_reasons[reason] = status.reconnect_reasons.get(reason, 0) + 1
            status.state = "reconnecting"
            log.info("%s connection %d: reconnecting in %.1f s", name, index, wait)
            await asyncio.sleep(wait)

    async def _ping(self, ws: ClientConnection) -> None:
        """Send :attr:`keepalive` every ``ping_interval_s`` until the connection ends."""
        if self.keepalive is None or self.ping_interval_s is None:
            return
        with contextlib.suppress(ConnectionClosed):  # the receiver notices and reconnects
            while True:
                await asyncio.sleep(self.ping_interval_s)
                await ws.send(self.keepalive)

    async def _receive(
        self, ws: ClientConnection, status: ConnectionStatus, keys: list[int]
    ) -> None:
        assert self._stopping is not None
        since = status.last_message_ns  # the previous connection's last message, or 0
        while not self._stopping.is_set():
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that races with a message arriving, and stop() would hang.
            try:
                async with asyncio.timeout(self.silence_s):
                    message = await ws.recv()
            except TimeoutError:
                status.state = "reconnecting"
                self.log.warning(
                    "%s connection %d: no message for %.0f s, reconnecting",
                    self.name,
                    status.index,
                    self.silence_s,
                )
                # A dead link cannot carry a close handshake: closing politely would
                # wait CLOSE_TIMEOUT_S more (measured: 10 s with websockets' default).
                ws.transport.abort()
                raise _Silent from None
            now = self.clock()
            if since and self.on_gap is not None and now - since >= self.gap_s * 1e9:
                self.log.warning(
                    "%s connection %d: nothing received for %.0f s: %d instruments' %s",
                    self.name,
                    status.index,
                    (now - since) / 1e9,
                    len(keys),
                    self.gap_note,
                )
                self.on_gap(keys, since, now)
            since = 0
            status.last_message_ns = now
            status.messages += 1
            if isinstance(message, bytes):
                status.ticks += self.packets(message)
                try:
                    self.on_message(now, message)
                except Exception as e:  # not a network error: no reconnect can help
                    raise _HandlerFailed from e
            else:
                self._text(status.index, message)


InstrumentT = TypeVar("InstrumentT")


class StreamSource(Generic[InstrumentT]):
    """A :class:`BrokerStream` as a pipeline source (a base class).

    A subclass calls ``__init__`` and then sets :attr:`stream`, a stream made with
    :meth:`_on_message` and :meth:`_on_gap` as its callbacks.

    Parameters
    ----------
    instruments
        What the stream subscribes.
    record
        Tick file to record every binary message to, as it arrives on the socket, or None.
        If it cannot be written, recording stops and the feed goes on.
    meta
        The tick file's header (see :func:`feedengine.tickfile.make_meta`).
    """

    #: Human-readable name for logs.
    name: str = "live"
    #: The connections; set by the subclass.
    stream: BrokerStream

    def __init__(
        self, instruments: list[InstrumentT], record: Path | None, meta: dict[str, Any]
    ) -> None:
        self._instruments = instruments
        self._queue: queue.Queue[tuple[int, bytes] | Gap] = queue.Queue(QUEUE_MESSAGES)
        self._gaps: list[Gap] = []
        self.recorder = None if record is None else Recorder(record, meta)
        self._stopped = threading.Event()

    @property
    def instruments(self) -> list[InstrumentT]:
        """The instruments subscribed."""
        return self._instruments

    @property
    def status(self) -> list[ConnectionStatus]:
        """Each connection's state, as the heartbeat reports it."""
        return self.stream.status

    @property
    def recording(self) -> dict[str, str | int | None] | None:
        """The recording as the heartbeat reports it; None when not recording."""
        return None if self.recorder is None else self.recorder.status

    def _on_message(self, recv_ns: int, message: bytes) -> None:
        if self.recorder is not None:
            self.recorder.write(recv_ns, message)  # never raises into the stream
        self._put((recv_ns, message))

    def _on_gap(self, keys: list[int], start_ns: int, end_ns: int) -> None:
        # In the queue, in order: everything received after the gap is processed after it.
        self._put(Gap(tuple(keys), start_ns, end_ns, "a connection received nothing"))

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
        """Open the recording, then the connections."""
        if self.recorder is not None:
            self.recorder.start()
        self.stream.start()

    def stop(self) -> None:
        """Close the connections and the recording; :meth:`batches` then ends."""
        self._stopped.set()
        self.stream.stop()
        if self.recorder is not None:
            self.recorder.close()

    def batches(self) -> Iterator[MessageBatch]:
        """Yield what arrived, a batch at a time, at least every :data:`BATCH_WAIT_S`.

        Raises
        ------
        FeedError
            The stream's fatal error (a refused credential), once it stopped.
        """
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
        """Empty: a live stream has no place to resume from."""
        return {}

    def resume(self, position: dict[str, str | int]) -> bool:
        """A live run resumes any live checkpoint: its candles continue or close."""
        return True


class TickProbe:
    """``--test-broker``'s stream step: the stream's message handler, which notes the first
    tick of a subscribed instrument (a heartbeat or pong proves the connection, not the
    data).

    Parameters
    ----------
    is_tick
        Whether a message ``(recv_ns, payload)`` holds a tick of a subscribed instrument.
    """

    def __init__(self, is_tick: Callable[[int, bytes], bool]) -> None:
        self.is_tick = is_tick
        #: Messages received so far.
        self.messages = 0
        self.ticked = threading.Event()

    def __call__(self, recv_ns: int, message: bytes) -> None:
        self.messages += 1
        if not self.ticked.is_set() and self.is_tick(recv_ns, message):
            self.ticked.set()

    def run(self, stream: BrokerStream, url: str, subscribed: int, what: str) -> None:
        """Run ``stream`` (built with this probe as its handler) until a tick arrives, at most
        :data:`TEST_STREAM_S`.

        Raises
        ------
        BrokerError
            No tick came (the line says how many messages did), or the stream's own error.
        """
        stream.start()
        deadline = time.monotonic() + TEST_STREAM_S
        while not self.ticked.wait(0.1) and stream.alive and time.monotonic() < deadline:
            pass
        stream.stop()
        stream.check()
        if not self.ticked.is_set():
            heard = (
                f"{self.messages} messages, none with one" if self.messages else "no message at all"
            )
            raise BrokerError(
                f"stream: connected to {url} but no tick of the {subscribed} subscribed {what} "
                f"in {TEST_STREAM_S:.0f} s ({heard}; is the market closed?)"
            )
