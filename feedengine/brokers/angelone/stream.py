"""Angel One's SmartAPI WebSocket 2.0: up to 3 connections of up to 1000 tokens, all day.

:class:`AngelStream` is a :class:`~feedengine.stream.BrokerStream` (connections on a thread
of their own, a liveness watchdog, reconnects with backoff and jitter; see
:mod:`feedengine.stream`) that speaks Angel's protocol:

- the handshake carries the credentials as headers: ``Authorization: Bearer <JWT>``,
  ``x-api-key``, ``x-client-code``, ``x-feed-token``; Angel refuses bad ones with HTTP 401
  and says why in an ``x-error-message`` header: that is fatal, one line, no reconnect loop;
- each connection subscribes its instruments in one JSON message,
  ``{"correlationID", "action": 1, "params": {"mode", "tokenList": [{"exchangeType",
  "tokens"}]}}``, in SNAP_QUOTE mode by default (it carries the day's volume and range);
- every binary message is one packet, handed on untouched;
- the client sends the text ``ping`` every :data:`PING_INTERVAL_S`, answered ``pong``:
  Angel sends no heartbeat of its own, so in a quiet market the pongs are what show the
  link alive, and :data:`SILENCE_S` is two unanswered pings;
- errors come as text frames ``{"correlationID", "errorCode", "errorMessage"}``, logged as
  one line.

Instruments are integer keys, ``(exchange_type << 32) | int(token)``
(:attr:`~feedengine.brokers.angelone.instruments.AngelInstrument.key`).
"""

import logging
from collections.abc import Callable
from itertools import groupby
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.http11 import Response

from feedengine import stream
from feedengine.brokers.angelone.auth import Session
from feedengine.brokers.angelone.wire import Mode
from feedengine.errors import AuthError, StreamError
from feedengine.stream import BrokerStream

log = logging.getLogger(__name__)

#: Limits, from Angel's SmartAPI team on its forum (topic 4391, "WebSocket Streaming size
#: and max connections"): "Max three Websocket connection is allowed per client. And Max
#: 1000 scrip tokens can be subscribed per connection." (topic 4460 repeats both and adds
#: that past them "the extra connection will be closed").
MAX_CONNECTIONS = 3
MAX_TOKENS_PER_CONNECTION = 1000
#: Subscription modes (WebSocket 2.0; the SDK's ``LTP_MODE``, ``QUOTE``, ``SNAP_QUOTE``).
#: DEPTH (4) carries no trade data and is not offered.
MODES = {m.name.lower(): int(m) for m in (Mode.LTP, Mode.QUOTE, Mode.SNAP_QUOTE)}
SUBSCRIBE_ACTION = 1
#: The client's heartbeat: the SDK's ``HEART_BEAT_MESSAGE`` every ``HEART_BEAT_INTERVAL``.
PING = "ping"
PONG = "pong"
PING_INTERVAL_S = 10.0
#: No message, not even a pong, for this long means dead: two pings unanswered.
SILENCE_S = 2 * PING_INTERVAL_S
HTTP_UNAUTHORIZED = 401


def shard(keys: list[int], per_connection: int = MAX_TOKENS_PER_CONNECTION) -> list[list[int]]:
    """Split instrument keys over as few connections as Angel One's limits allow.

    Raises
    ------
    StreamError
        More than :data:`MAX_CONNECTIONS` x ``per_connection`` instruments.
    """
    return stream.shard(keys, per_connection, MAX_CONNECTIONS, "Angel One", "client code")


def token_list(keys: list[int]) -> list[dict[str, Any]]:
    """The ``tokenList`` of a subscribe message: tokens grouped by exchange type."""
    return [
        {"exchangeType": exchange_type, "tokens": [str(k & 0xFFFF_FFFF) for k in group]}
        for exchange_type, group in groupby(sorted(keys), key=lambda k: k >> 32)
    ]


def correlation_id(index: int) -> str:
    """Connection ``index``'s ``correlationID``: 10 alphanumerics, as the SDK documents."""
    return f"feedconn{index:02d}"


class AngelStream(BrokerStream):
    """Connections to Angel One's WebSocket 2.0 on a background thread.

    Parameters
    ----------
    url
        ``wss://smartapisocket.angelone.in/smart-stream`` (``ANGEL_WS_URL``).
    session
        The login's tokens (:func:`~feedengine.brokers.angelone.auth.login`).
    keys
        Instrument keys; sharded over connections automatically.
    on_message
        Called on the stream's thread with ``(recv_ns, message)`` for every binary message.
        It must be quick and thread-safe (it usually puts into a bounded queue).
    mode
        ``3``/``"snap_quote"`` (default: volume and the day's range), ``2``/``"quote"`` or
        ``1``/``"ltp"``.
    silence_s, ping_interval_s
        A connection without any message for ``silence_s`` is dead; it sends ``ping``
        every ``ping_interval_s`` (shorter).
    per_connection
        Tokens per connection at most.
    **options
        ``backoff_first_s``, ``backoff_cap_s``, ``open_timeout_s``, ``clock``, ``on_gap``,
        ``gap_s``: see :class:`~feedengine.stream.BrokerStream`.
    """

    name = "angelone"
    log = log
    gap_note = "candles in it are missing (no Angel One history to repair them from)"
    keepalive = PING

    def __init__(
        self,
        url: str,
        session: Session,
        keys: list[int],
        on_message: Callable[[int, bytes], None],
        *,
        mode: int | str = Mode.SNAP_QUOTE,
        silence_s: float = SILENCE_S,
        ping_interval_s: float = PING_INTERVAL_S,
        per_connection: int = MAX_TOKENS_PER_CONNECTION,
        **options: Any,
    ) -> None:
        self.mode = MODES.get(mode.lower(), 0) if isinstance(mode, str) else mode
        if self.mode not in MODES.values():
            raise StreamError(
                f"Angel One mode must be one of {', '.join(MODES)} (or 1-3), not {mode!r}"
            )
        self.url = url
        self._headers = {
            "Authorization": session.authorization,
            "x-api-key": session.api_key,
            "x-client-code": session.client_code,
            "x-feed-token": session.feed_token,
        }
        super().__init__(
            shard(keys, per_connection),
            on_message,
            silence_s=silence_s,
            ping_interval_s=ping_interval_s,
            **options,
        )

    def _endpoint(self, index: int) -> tuple[str, dict[str, str]]:
        return self.url, self._headers

    def _refusal(self, response: Response) -> AuthError | None:
        if response.status_code != HTTP_UNAUTHORIZED:
            return None
        reason = response.headers.get("x-error-message") or "no reason given"
        return AuthError(
            f"Angel One refused the stream's credentials (HTTP 401: {reason}): the JWT or "
            "feed token is invalid or expired, or the API key or client code is wrong"
        )

    async def _subscribe(self, ws: ClientConnection, index: int, keys: list[int]) -> None:
        request = {
            "correlationID": correlation_id(index),
            "action": SUBSCRIBE_ACTION,
            "params": {"mode": self.mode, "tokenList": token_list(keys)},
        }
        await ws.send(orjson.dumps(request).decode())
        log.info(
            "angelone connection %d: subscribed %d tokens in mode %d", index, len(keys), self.mode
        )

    def _text(self, index: int, text: str) -> None:
        """Text frames are never ticks: ``pong`` is the heartbeat, errors are logged."""
        if text == PONG:
            return
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and "errorCode" in data:
            log.error(
                "angelone connection %d: error from Angel One: %s %s (request %s)",
                index,
                data.get("errorCode"),
                data.get("errorMessage"),
                data.get("correlationID"),
            )
        else:
            log.warning("angelone connection %d: unexpected text frame: %.200s", index, text)
