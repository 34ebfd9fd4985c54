"""Kite's streaming WebSocket: up to 3 connections of up to 3000 tokens, kept alive all day.

:class:`KiteStream` is a :class:`~feedengine.stream.BrokerStream` (connections on a thread of
their own, a liveness watchdog, reconnects with backoff; see :mod:`feedengine.stream`) that
speaks Kite's protocol: credentials in the query string, ``subscribe`` and ``mode``
messages, a 1-byte heartbeat about every second (so 10 s of silence means death), JSON text
frames for errors and order updates. On an authentication failure (HTTP 403) the stream
asks its token source (:mod:`feedengine.brokers.kite.token`) for the current token: a new
one (the operator renewed the daily token) is used at once, on every connection; the same
one is fatal: it stops every connection and is raised in the consumer's thread. SPEC
section 6.
"""

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.http11 import Response

from feedengine import stream
from feedengine.brokers.kite.token import TokenSource, constant
from feedengine.errors import AuthError, StreamError
from feedengine.stream import BrokerStream, ConnectionStatus

__all__ = ["ConnectionStatus", "KiteStream", "shard"]

log = logging.getLogger(__name__)

#: Kite allows 3000 instrument tokens per WebSocket connection ...
MAX_TOKENS_PER_CONNECTION = 3000
#: ... and 3 connections per API key.
MAX_CONNECTIONS = 3
#: Kite sends a heartbeat about every second; this long without any message means dead.
SILENCE_S = 10.0
MODES = ("ltp", "quote", "full")
HTTP_FORBIDDEN = 403


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
    return stream.shard(tokens, per_connection, max_connections, "Kite", "API key")


class KiteStream(BrokerStream):
    """Connections to Kite's WebSocket on a background thread.

    Parameters
    ----------
    url
        WebSocket root, e.g. ``wss://ws.kite.trade`` (``KITE_WS_URL``).
    api_key
        Kite's API key.
    access_token
        The access token, or a token source asked for the current one when Kite refuses
        it (see :mod:`feedengine.brokers.kite.token`).
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
    per_connection
        Tokens per connection at most.
    **options
        ``backoff_first_s``, ``backoff_cap_s``, ``open_timeout_s``, ``clock``, ``on_gap``,
        ``gap_s``: see :class:`~feedengine.stream.BrokerStream`.
    """

    name = "kite"
    log = log
    gap_note = "missing candles will be repaired from Kite's history"

    def __init__(
        self,
        url: str,
        api_key: str,
        access_token: str | TokenSource,
        tokens: list[int],
        on_message: Callable[[int, bytes], None],
        *,
        mode: str = "full",
        silence_s: float = SILENCE_S,
        per_connection: int = MAX_TOKENS_PER_CONNECTION,
        **options: Any,
    ) -> None:
        if mode not in MODES:
            raise StreamError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self._source = access_token if callable(access_token) else constant(access_token)
        self._token = self._source()
        #: The token each connection's latest handshake carried (the stream's thread only).
        self._sent: dict[int, str] = {}
        self.mode = mode
        super().__init__(shard(tokens, per_connection), on_message, silence_s=silence_s, **options)

    def _endpoint(self, index: int) -> tuple[str, dict[str, str]]:
        self._sent[index] = self._token
        query = urlencode({"api_key": self.api_key, "access_token": self._token})
        return f"{self.url}?{query}", {}

    def _renewed(self, index: int, response: Response) -> bool:
        if response.status_code != HTTP_FORBIDDEN:
            return False
        current = self._source()
        if current == self._sent.get(index):
            return False
        if current != self._token:  # the first connection to notice says so
            self._token = current
            log.warning("kite: the access token was renewed; reconnecting with the new one")
        return True

    def packets(self, message: bytes) -> int:
        """The message header's packet count (a 1-byte heartbeat carries none)."""
        return int.from_bytes(message[:2], "big") if len(message) > 1 else 0

    def _refusal(self, response: Response) -> AuthError | None:
        if response.status_code != HTTP_FORBIDDEN:
            return None
        return AuthError(
            "Kite refused the API key or access token (HTTP 403), and reading the token "
            "again gave the same one: it is invalid or expired (Kite's tokens expire every "
            "morning at 6 AM); renew KITE_ACCESS_TOKEN"
        )

    async def _subscribe(self, ws: ClientConnection, index: int, tokens: list[int]) -> None:
        await ws.send(orjson.dumps({"a": "subscribe", "v": tokens}).decode())
        await ws.send(orjson.dumps({"a": "mode", "v": [self.mode, tokens]}).decode())
        log.info(
            "kite connection %d: subscribed %d tokens in %s mode", index, len(tokens), self.mode
        )

    def _text(self, index: int, text: str) -> None:
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
