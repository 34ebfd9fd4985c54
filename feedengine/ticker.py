"""Kite's streaming WebSocket: up to 3 connections of up to 3000 tokens, kept alive all day.

:class:`KiteStream` runs an asyncio loop (the ``websockets`` library) on a thread of its own,
one task per connection. Each connection subscribes its share of the tokens in one mode,
hands every binary message with its receive time to a callback without touching its
packets, logs text messages, treats 10 s of silence as death (it aborts the socket at once:
a dead link cannot complete a close handshake), and reconnects with exponential backoff and
jitter (1 s doubling to 60 s, counted from the failed attempt's start), resubscribing as
before. An authentication failure (HTTP 403), or the callback raising, is fatal: it stops
every connection and is raised in the consumer's thread. SPEC section 6.
"""

import asyncio
import contextlib
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from feedengine.errors import AuthError, StreamError
from feedengine.tickfile import MAX_PAYLOAD

log = logging.getLogger(__name__)

#: Kite allows 3000 instrument tokens per WebSocket connection ...
MAX_TOKENS_PER_CONNECTION = 3000
#: ... and 3 connections per API key.
MAX_CONNECTIONS = 3
#: Kite sends a heartbeat about every second; this long without any message means dead.
SILENCE_S = 10.0
#: A connection that received nothing for this long (an outage and its reconnect) left a
#: gap: its instruments' missing candles are fetched from Kite's history (SPEC section 6).
GAP_S = 60.0
#: Reconnect delay: first, doubling up to the cap, each scaled by a random 0.5-1.0 (jitter)
#: so that many clients do not reconnect in step.
BACKOFF_FIRST_S = 1.0
BACKOFF_CAP_S = 60.0
#: Longest wait for the WebSocket opening handshake (websockets' default, made explicit).
OPEN_TIMEOUT_S = 10.0
#: Longest wait for Kite to answer our close frame when stopping; past it the socket is
#: dropped. A live link answers within a round trip (tens of ms to Kite); websockets'
#: default, 10 s, made a stop over a dead link hang that long.
CLOSE_TIMEOUT_S = 2.0
MODES = ("ltp", "quote", "full")
HTTP_FORBIDDEN = 403


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
    messages: int = 0
    last_message_ns: int = 0

    def as_dict(self) -> dict[str, int | str | float | None]:
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
    tokens: list[int],
    per_connection: int = MAX_TOKENS_PER_CONNECTION,
    max_connections: int = MAX_CONNECTIONS,
) -> list[list[int]]:
    """Split tokens over as few connections as Kite's limits allow.

    Raises
    ------
    StreamError
        More tokens than ``per_connection * max_connections``.
    """
    tokens = list(dict.fromkeys(tokens))
    limit = per_connection * max_connections
    if len(tokens) > limit:
        raise StreamError(
            f"{len(tokens)} instruments: Kite allows at most {max_connections} "
            f"connections x {per_connection} tokens = {limit} per API key"
        )
    if not tokens:
        raise StreamError("no instrument tokens to subscribe")
    n = -(-len(tokens) // per_connection)
    base, extra = divmod(len(tokens), n)  # balance the shards
    bounds = [0]
    for i in range(n):
        bounds.append(bounds[-1] + base + (i < extra))
    return [tokens[a:b] for a, b in itertools.pairwise(bounds)]


class KiteStream:
    """Connections to Kite's WebSocket on a background thread.

    Parameters
    ----------
    url
        WebSocket root, e.g. ``wss://ws.kite.trade`` (``KITE_WS_URL``).
    api_key, access_token
        Kite credentials.
    tokens
        Instrument tokens; sharded over connections automatically.
    on_message
        Called on the stream's thread with ``(recv_ns, message)`` for every binary message.
        It must be quick and thread-safe (it usually puts into a bounded queue).
    mode
        ``full`` (default: it carries exchange timestamps), ``quote`` or ``ltp``.
    silence_s
        A connection without any message for this long is dead (Kite's heartbeats come
        every second).
    backoff_first_s, backoff_cap_s
        Reconnect delays: the first, doubling up to the cap, each with jitter; counted from
        the start of the attempt that failed.
    open_timeout_s
        Longest wait for the opening handshake; an attempt that times out is retried
        after the backoff like any other failure.
    clock
        Receive-time source, Unix ns (tests map it onto a recording's time line).
    on_gap
        Called on the stream's thread with ``(tokens, last message ns, next message ns)``
        when a connection comes back after receiving nothing for :data:`GAP_S` or more,
        before that first message reaches ``on_message``.
    gap_s
        The shortest stretch without messages that counts as a gap.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        access_token: str,
        tokens: list[int],
        on_message: Callable[[int, bytes], None],
        *,
        mode: str = "full",
        silence_s: float = SILENCE_S,
        backoff_first_s: float = BACKOFF_FIRST_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        per_connection: int = MAX_TOKENS_PER_CONNECTION,
        clock: Callable[[], int] = time.time_ns,
        on_gap: Callable[[list[int], int, int], None] | None = None,
        gap_s: float = GAP_S,
    ) -> None:
        if mode not in MODES:
            raise StreamError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.url = url.rstrip("/")
        self._query = urlencode({"api_key": api_key, "access_token": access_token})
        self.shards = shard(tokens, per_connection)
        self.mode = mode
        self.on_message = on_message
        self.silence_s = silence_s
        self.backoff_first_s = backoff_first_s
        self.backoff_cap_s = backoff_cap_s
        self.open_timeout_s = open_timeout_s
        self.clock = clock
        self.on_gap = on_gap
        self.gap_s = gap_s
        self.status = [ConnectionStatus(i, len(s)) for i, s in enumerate(self.shards)]
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # --- the consumer's side ------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; returns at once."""
        self._thread = threading.Thread(target=self._main, name="kite-stream", daemon=True)
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
        """Raise the stream's fatal error (:class:`AuthError`, or what the callback raised)."""
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
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
        tokens = self.shards[index]
        attempt = 0
        assert self._stopping is not None
        while not self._stopping.is_set():
            status.state = "connecting" if status.reconnects == 0 else "reconnecting"
            started = time.monotonic()
            try:
                async with connect(
                    f"{self.url}?{self._query}",
                    max_size=MAX_PAYLOAD,
                    compression=None,
                    ping_interval=None,
                    open_timeout=self.open_timeout_s,
                    close_timeout=CLOSE_TIMEOUT_S,
                    proxy=None,
                ) as ws:
                    await self._subscribe(ws, tokens)
                    status.state = "connected"
                    attempt = 0
                    log.info(
                        "kite connection %d: subscribed %d tokens in %s mode",
                        index,
                        len(tokens),
                        self.mode,
                    )
                    await self._receive(ws, status, tokens)
            except InvalidStatus as e:
                if e.response.status_code == HTTP_FORBIDDEN:
                    status.state = "failed"
                    raise AuthError(
                        "Kite refused the API key or access token (HTTP 403): "
                        "the access token is invalid or expired"
                    ) from None
                log.warning(
                    "kite connection %d: handshake refused (HTTP %d)", index, e.response.status_code
                )
            except _Silent:  # logged, and the socket aborted, when noticed
                started = time.monotonic()  # it was up: the backoff counts from its loss
            except TimeoutError:  # only the opening handshake is timed here
                log.warning(
                    "kite connection %d: no answer to the WebSocket handshake within %.0f s "
                    "(open timeout)",
                    index,
                    self.open_timeout_s,
                )
            except (OSError, ConnectionClosed, InvalidHandshake) as e:
                log.warning("kite connection %d lost: %s", index, e or type(e).__name__)
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
            status.state = "reconnecting"
            log.info("kite connection %d: reconnecting in %.1f s", index, wait)
            await asyncio.sleep(wait)

    async def _subscribe(self, ws: ClientConnection, tokens: list[int]) -> None:
        await ws.send(orjson.dumps({"a": "subscribe", "v": tokens}).decode())
        await ws.send(orjson.dumps({"a": "mode", "v": [self.mode, tokens]}).decode())

    async def _receive(
        self, ws: ClientConnection, status: ConnectionStatus, tokens: list[int]
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
                log.warning(
                    "kite connection %d: no message for %.0f s, reconnecting",
                    status.index,
                    self.silence_s,
                )
                # A dead link cannot carry a close handshake: closing politely would
                # wait CLOSE_TIMEOUT_S more (measured: 10 s with websockets' default).
                ws.transport.abort()
                raise _Silent from None
            now = self.clock()
            if since and self.on_gap is not None and now - since >= self.gap_s * 1e9:
                log.warning(
                    "kite connection %d: nothing received for %.0f s: %d instruments' missing "
                    "candles will be repaired from Kite's history",
                    status.index,
                    (now - since) / 1e9,
                    len(tokens),
                )
                self.on_gap(tokens, since, now)
            since = 0
            status.last_message_ns = now
            status.messages += 1
            if isinstance(message, bytes):
                try:
                    self.on_message(now, message)
                except Exception as e:  # not a network error: no reconnect can help
                    raise _HandlerFailed from e
            else:
                self._text(status.index, message)

    @staticmethod
    def _text(index: int, text: str) -> None:
        """Text frames are never ticks: errors are logged, order updates noted."""
        try:
            data = orjson.loads(text)
            kind = data.get("type") if isinstance(data, dict) else None
        except orjson.JSONDecodeError:
            kind = None
        if kind == "error":
            log.error("kite connection %d: error from Kite: %s", index, data.get("data"))
        elif kind in ("order", "message"):
            log.info("kite connection %d: %s message: %s", index, kind, data.get("data"))
        else:
            log.warning("kite connection %d: unexpected text frame: %.200s", index, text)
