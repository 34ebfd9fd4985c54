"""A local Angel One-compatible server: ``python -m feedengine.brokers.angelone.mockserver``.

It speaks SmartAPI WebSocket 2.0 on loopback at ``/smart-stream``: the four handshake
headers are checked (HTTP 401 with an ``x-error-message`` header when one is wrong, HTTP 429
past 3 connections of one client code), subscribe and unsubscribe JSON messages are obeyed
(an error frame ``{correlationID, errorCode, errorMessage}`` answers a bad one), the text
``ping`` is answered ``pong``, and each subscribed packet of the market it plays is sent as
one binary message, cut down to the client's mode (a SNAP_QUOTE packet's first 123 bytes are
its QUOTE, its first 51 its LTP; a packet is never grown). A second, plain HTTP listener
serves the REST calls the official SDK makes to log in (``loginByPassword`` with the PIN and
a TOTP checked, ``getProfile``) and, optionally, the scrip master. Faults are injected on
command: drop the connections, go silent, turn into a black hole (no data, no reading: no
close handshake can complete), stall new handshakes, send an error frame, refuse new
handshakes with 401 (an expired session).

The market is a caller's generator of ``(recv_ns, packet, key)``, ``key`` the instrument's
``(exchange_type << 32) | int(token)``: packets come from the Angel encoder, or from a
recording (:func:`tick_file_packets`). Tests and demos use it; nothing here is needed in
production.
"""

import argparse
import asyncio
import collections
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from feedengine.brokers.angelone.auth import AngelTotp
from feedengine.brokers.angelone.instruments import EXCHANGES
from feedengine.brokers.angelone.stream import (
    MAX_CONNECTIONS,
    MAX_TOKENS_PER_CONNECTION,
    PING,
    PONG,
    SUBSCRIBE_ACTION,
)
from feedengine.brokers.angelone.wire import PACKET_SIZE, Mode, instrument_key
from feedengine.brokers.localserver import BLACKHOLE, DROP, SILENCE, Client, LocalServer
from feedengine.tickfile import MAX_PAYLOAD, TickReader

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "mock_api_key"
DEFAULT_CLIENT_CODE = "M123456"
DEFAULT_PIN = "1234"
#: A base32 TOTP secret (what an authenticator app is given).
DEFAULT_TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
DEFAULT_JWT = "mock_jwt_token"
DEFAULT_FEED_TOKEN = "mock_feed_token"
DEFAULT_REFRESH_TOKEN = "mock_refresh_token"
STREAM_PATH = "/smart-stream"
LOGIN_PATH = "/rest/auth/angelbroking/user/v1/loginByPassword"
PROFILE_PATH = "/rest/secure/angelbroking/user/v1/getProfile"
#: The path of the scrip master, as on Angel's file server.
SCRIP_MASTER_PATH = "/OpenAPI_File/files/OpenAPIScripMaster.json"
UNSUBSCRIBE_ACTION = 0
#: Bytes of a packet in each mode: a packet is cut down to a smaller mode, never grown.
_MODE_LENGTH = {int(m): PACKET_SIZE[m] for m in (Mode.LTP, Mode.QUOTE, Mode.SNAP_QUOTE)}
#: The mock's own error codes (the frame's shape is Angel's; the codes are not claimed).
ERROR_BAD_REQUEST = "E1001"
ERROR_BAD_MODE = "E1002"
ERROR_BAD_EXCHANGE = "E1003"
ERROR_LIMIT = "E1004"
ERROR_INJECTED = "E1099"
#: Handshake request times kept in :attr:`MockAngel.handshakes` (bounded: it runs all day).
HANDSHAKES_KEPT = 1000


class Fault(Enum):
    """What :meth:`MockAngel.inject` can do."""

    DROP = DROP  # abort every connection (TCP reset, no close frame)
    SILENCE = SILENCE  # send nothing at all, not even pongs, for a while
    # Send nothing and read nothing for a while: TCP stays up but no close handshake can
    # complete, as over a dead link.
    BLACKHOLE = BLACKHOLE
    # For a while, accept new connections' TCP but never answer their WebSocket handshake.
    STALL = "stall"
    ERROR = "error"  # send an error text frame
    # From now on refuse handshakes with 401: the session expired (connections stay up).
    EXPIRE = "expire"


@dataclass(eq=False)
class _Client(Client):
    modes: dict[int, int] = field(default_factory=dict)  # key -> mode


class MockAngel(LocalServer[_Client]):
    """The server, on threads of its own.

    Parameters
    ----------
    packets
        Returns the ``(recv_ns, packet, key)`` stream to play (called once).
    scrip_master
        Rows served at :data:`SCRIP_MASTER_PATH` (scrip master JSON rows), or None.
    speed
        Pace relative to the stream's receive times (1 = real time, 0 = flat out).
    start_on_subscribe
        Start the market clock when the first client subscribes (tests), not at start.
    record_frames
        Keep every binary frame queued for a client in :attr:`frames` (tests that compare
        what arrived); off by default, since the list grows as long as the server runs.
    """

    def __init__(
        self,
        packets: Callable[[], Iterable[tuple[int, bytes, int]]],
        *,
        scrip_master: list[dict[str, Any]] | None = None,
        api_key: str = DEFAULT_API_KEY,
        client_code: str = DEFAULT_CLIENT_CODE,
        pin: str = DEFAULT_PIN,
        totp_secret: str = DEFAULT_TOTP_SECRET,
        jwt: str = DEFAULT_JWT,
        feed_token: str = DEFAULT_FEED_TOKEN,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        rest_port: int = 0,
        start_on_subscribe: bool = True,
        record_frames: bool = False,
    ) -> None:
        super().__init__()
        self._packets = packets
        self.scrip_master = scrip_master
        self.api_key = api_key
        self.client_code = client_code
        self.pin = pin
        self.totp = AngelTotp(totp_secret)
        self.jwt = jwt
        self.feed_token = feed_token
        self.speed = speed
        self.host = host
        self.port = port
        self.rest_port = rest_port
        self.start_on_subscribe = start_on_subscribe
        self.record_frames = record_frames
        #: With ``record_frames``: every binary frame queued for a client, in order.
        self.frames: list[bytes] = []
        #: Packets sent to clients in total; connections served; subscribe messages obeyed;
        #: logins answered (successful or not).
        self.packets_sent = 0
        self.connections = 0
        self.subscribes = 0
        self.logins = 0
        #: Monotonic times of the latest handshake requests (tests time reconnects).
        self.handshakes: collections.deque[float] = collections.deque(maxlen=HANDSHAKES_KEPT)
        #: Set when the market has played to its end.
        self.finished = threading.Event()
        self._expired = False
        self._stall_until = 0.0
        self._subscribed: asyncio.Event | None = None
        self._rest: ThreadingHTTPServer | None = None
        self._rest_thread: threading.Thread | None = None

    # --- control, from any thread ---------------------------------------------------------

    @property
    def url(self) -> str:
        """The WebSocket address (``ANGEL_WS_URL``)."""
        return f"ws://{self._netloc(self.port)}{STREAM_PATH}"

    @property
    def root(self) -> str:
        """The REST root (``ANGEL_API_ROOT``, ``SmartConnect(root=...)``)."""
        return f"http://{self._netloc(self.rest_port)}"

    @property
    def scrip_master_url(self) -> str:
        """Where the scrip master is served (``ANGEL_SCRIP_MASTER_URL``)."""
        return f"{self.root}{SCRIP_MASTER_PATH}"

    def start(self) -> "MockAngel":
        """Listen (both ports); returns once they accept connections."""
        self._rest = ThreadingHTTPServer((self.host, self.rest_port), _rest_handler(self))
        self._rest.daemon_threads = True
        self.rest_port = self._rest.server_address[1]
        self._rest_thread = threading.Thread(
            target=self._rest.serve_forever, name="mockangel-rest", daemon=True
        )
        self._rest_thread.start()
        self._start_loop("mockangel")
        return self

    def stop(self) -> None:
        """Close every connection and both listeners."""
        self._stop_loop()
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()

    def inject(self, fault: Fault | str, seconds: float = 0.0) -> None:
        """Do ``fault`` to every connected client, or to new ones (``STALL``, ``EXPIRE``).

        ``seconds``: how long a silence, black hole or stall lasts (a black hole of 0 s
        lasts until the client goes).
        """
        fault = Fault(fault)
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._inject(fault, seconds), self._loop).result()

    # --- REST, on the HTTP listener's threads ----------------------------------------------

    def login(self, api_key: str | None, body: bytes) -> dict[str, Any]:
        """Answer ``loginByPassword`` as Angel does (HTTP 200 either way)."""
        self.logins += 1
        if api_key != self.api_key:
            # Angel's gateway answers a bad API key in its own shape ("errorCode").
            return {"success": False, "message": "Invalid API Key", "errorCode": "AG8004"}
        try:
            request = orjson.loads(body)
            client, pin, totp = request["clientcode"], request["password"], request["totp"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _failed("Invalid request", "AB1004")
        if client != self.client_code or pin != self.pin:
            return _failed("Invalid clientcode or PIN", "AB1007")
        if not self.totp.verify(str(totp), valid_window=1):
            return _failed("Invalid totp", "AB1050")
        return {
            "status": True,
            "message": "SUCCESS",
            "errorcode": "",
            "data": {
                "jwtToken": self.jwt,  # bare: generateSession adds "Bearer "
                "refreshToken": DEFAULT_REFRESH_TOKEN,
                "feedToken": self.feed_token,
            },
        }

    def profile(self, authorization: str | None) -> dict[str, Any]:
        """Answer ``getProfile`` for the session's JWT."""
        if _bearer(authorization) != self.jwt:
            return _failed("Invalid Token", "AG8001")
        return {
            "status": True,
            "message": "SUCCESS",
            "errorcode": "",
            "data": {"clientcode": self.client_code, "name": "Mock Angel", "exchanges": []},
        }

    # --- the WebSocket server's thread -----------------------------------------------------

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._subscribed = asyncio.Event()
        async with serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._handshake,
            compression=None,
            max_size=MAX_PAYLOAD,
            ping_interval=None,
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1] if self.port == 0 else self.port
            self._ready.set()
            market = asyncio.create_task(self._market())
            await self._stop.wait()
            market.cancel()
            for client in list(self._clients):
                client.ws.transport.abort()

    async def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(time.monotonic())
        stall = self._stall_until - time.monotonic()
        if stall > 0:
            assert self._stop is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), stall)
            if self._stop.is_set():  # the server's close waits for open handshakes
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "stopping\n")
        if urlsplit(request.path).path != STREAM_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        problem = self._credentials_problem(request.headers)
        if problem is not None:
            return _refuse(connection, HTTPStatus.UNAUTHORIZED, problem)
        if len(self._clients) >= MAX_CONNECTIONS:
            return _refuse(
                connection,
                HTTPStatus.TOO_MANY_REQUESTS,
                f"Connection limit exceeded: {MAX_CONNECTIONS} per client code",
            )
        return None

    def _credentials_problem(self, headers: Headers) -> str | None:
        if self._expired:
            return "Session expired"
        if _bearer(headers.get("Authorization")) != self.jwt:
            return "Invalid Authorization"
        if headers.get("x-api-key") != self.api_key:
            return "Invalid API Key"
        if headers.get("x-client-code") != self.client_code:
            return "Invalid Client Code"
        if headers.get("x-feed-token") != self.feed_token:
            return "Invalid Feed Token"
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self._clients.add(client)
        self.connections += 1
        sender = asyncio.create_task(self._send(client))
        try:
            async for message in ws:
                self._command(client, message)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            sender.cancel()

    def _command(self, client: _Client, message: str | bytes) -> None:
        if message == PING:
            client.queue.put_nowait(PONG)
            return
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            self._error(client, None, ERROR_BAD_REQUEST, "Invalid Request Payload")
            return
        cid = request.get("correlationID")
        params = request.get("params")
        action = request.get("action")
        mode = params.get("mode") if isinstance(params, dict) else None
        groups = params.get("tokenList") if isinstance(params, dict) else None
        if action not in (SUBSCRIBE_ACTION, UNSUBSCRIBE_ACTION) or not isinstance(groups, list):
            self._error(client, cid, ERROR_BAD_REQUEST, "Invalid Request Payload")
            return
        if mode not in _MODE_LENGTH:
            self._error(client, cid, ERROR_BAD_MODE, f"Invalid Subscription Mode: {mode!r}")
            return
        keys = []
        for group in groups:
            exchange_type = group.get("exchangeType") if isinstance(group, dict) else None
            tokens = group.get("tokens") if isinstance(group, dict) else None
            if exchange_type not in EXCHANGES or not isinstance(tokens, list):
                self._error(client, cid, ERROR_BAD_EXCHANGE, "Invalid Exchange Type")
                return
            if not all(isinstance(t, str) and t.isdigit() for t in tokens):
                self._error(client, cid, ERROR_BAD_REQUEST, "Invalid Token")
                return
            keys += [(exchange_type << 32) | int(t) for t in tokens]
        if action == UNSUBSCRIBE_ACTION:
            for key in keys:
                client.modes.pop(key, None)
            return
        room = MAX_TOKENS_PER_CONNECTION - len(client.modes)
        new = [k for k in dict.fromkeys(keys) if k not in client.modes]
        if len(new) > room:
            self._error(
                client,
                cid,
                ERROR_LIMIT,
                f"Subscription limit exceeded: {MAX_TOKENS_PER_CONNECTION} tokens per connection",
            )
            return
        for key in keys:
            client.modes[key] = mode
        self.subscribes += 1
        assert self._subscribed is not None
        self._subscribed.set()

    @staticmethod
    def _error(client: _Client, cid: Any, code: str, message: str) -> None:
        frame = {"correlationID": cid, "errorCode": code, "errorMessage": message}
        client.queue.put_nowait(orjson.dumps(frame).decode())

    async def _market(self) -> None:
        assert self._subscribed is not None
        if self.start_on_subscribe:
            await self._subscribed.wait()
        for recv_ns, packet, key in self._packets():
            await self._pace(recv_ns)
            self._broadcast(packet, key)
        self.finished.set()

    def _broadcast(self, packet: bytes, key: int) -> None:
        for client in self._clients:
            mode = client.modes.get(key)
            if mode is None:
                continue
            frame = packet
            if packet and packet[0] > mode:  # cut down to the client's mode
                frame = bytes((mode,)) + packet[1 : _MODE_LENGTH[mode]]
            self.packets_sent += 1
            if self.record_frames:
                self.frames.append(frame)
            client.queue.put_nowait(frame)

    async def _inject(self, fault: Fault, seconds: float) -> None:
        if fault is Fault.STALL:
            self._stall_until = time.monotonic() + seconds
            return
        if fault is Fault.EXPIRE:
            self._expired = True
            return
        if not self._fault(fault.value, seconds):  # ERROR
            for client in list(self._clients):
                self._error(client, "mockinject", ERROR_INJECTED, "mock: injected error")


def _failed(message: str, code: str) -> dict[str, Any]:
    """Angel's REST error body."""
    return {"status": False, "message": message, "errorcode": code, "data": None}


def _bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header, ``Bearer`` or bare (the SDK passes what it
    is given)."""
    return None if authorization is None else authorization.removeprefix("Bearer ").strip()


def _refuse(connection: ServerConnection, status: HTTPStatus, message: str) -> Response:
    response = connection.respond(status, f"{message}\n")
    response.headers["x-error-message"] = message
    return response


def _rest_handler(server: MockAngel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if urlsplit(self.path).path == LOGIN_PATH:
                self._json(server.login(self.headers.get("X-PrivateKey"), body))
            else:
                self._json({"status": False, "message": "not found"}, HTTPStatus.NOT_FOUND)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == PROFILE_PATH:
                self._json(server.profile(self.headers.get("Authorization")))
            elif path == SCRIP_MASTER_PATH and server.scrip_master is not None:
                self._json(server.scrip_master)
            else:
                self._json({"status": False, "message": "not found"}, HTTPStatus.NOT_FOUND)

        def _json(self, body: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
            data = orjson.dumps(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("mock angel REST: " + format, *args)

    return Handler


def packet_key(packet: bytes) -> int:
    """The instrument key of a packet: byte 1 exchange type, bytes 2..27 the token.

    Raises
    ------
    ValueError
        The token is no instrument's.
    """
    key = instrument_key(packet[1], packet[2:27].split(b"\0", 1)[0].decode("latin-1"))
    if key is None:
        raise ValueError(f"no instrument key in packet {packet[:27]!r}")
    return key


def tick_file_packets(
    path: Path,
) -> tuple[Callable[[], Iterator[tuple[int, bytes, int]]], list[dict[str, Any]]]:
    """An Angel One tick file as the server's market, and its instruments as scrip master rows.

    Raises
    ------
    TickFileError
        The file cannot be read.
    """
    reader = TickReader(path)

    def packets() -> Iterator[tuple[int, bytes, int]]:
        for recv_ns, packet in TickReader(path).messages():
            if len(packet) >= PACKET_SIZE[Mode.LTP]:
                with contextlib.suppress(ValueError):  # a recorded oddity: not served
                    yield recv_ns, packet, packet_key(packet)

    rows = [
        {
            "token": i["token"],
            "symbol": i["tradingsymbol"],
            "name": i["tradingsymbol"],
            "exch_seg": i["exchange"],
        }
        for i in reader.instruments
    ]
    return packets, rows


def main(argv: list[str] | None = None) -> int:
    """Serve an Angel One tick file until interrupted."""
    p = argparse.ArgumentParser(
        prog="python -m feedengine.brokers.angelone.mockserver",
        description="A local Angel One-compatible WebSocket 2.0 and login server.",
    )
    p.add_argument("--ticks", type=Path, metavar="FILE", required=True, help="tick file to play")
    p.add_argument("--speed", type=float, default=1.0, help="pace (1 = real time, 0 = max)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8766, help="WebSocket port")
    p.add_argument("--rest-port", type=int, default=8767, help="REST (login) port")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(message)s")
    try:
        packets, rows = tick_file_packets(args.ticks)
    except (OSError, ValueError) as e:
        print(f"mockserver: error: {e}", file=sys.stderr)
        return 1
    server = MockAngel(
        packets,
        scrip_master=rows,
        speed=args.speed,
        host=args.host,
        port=args.port,
        rest_port=args.rest_port,
    ).start()
    print(
        f"mock Angel One at {server.url} (REST {server.root}); ANGEL_WS_URL={server.url} "
        f"ANGEL_API_ROOT={server.root} ANGEL_SCRIP_MASTER_URL={server.scrip_master_url} "
        f"ANGEL_API_KEY={DEFAULT_API_KEY} ANGEL_CLIENT_CODE={DEFAULT_CLIENT_CODE} "
        f"ANGEL_PIN={DEFAULT_PIN} ANGEL_TOTP_SECRET={DEFAULT_TOTP_SECRET}",
        flush=True,
    )
    try:
        while server._thread is not None and server._thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
