"""A local Kite-compatible server: ``python -m feedengine.brokers.kite.mockserver``.

It speaks Kite's WebSocket protocol on loopback - the ``api_key``/``access_token`` check
(HTTP 403 on a bad one), ``subscribe``/``unsubscribe``/``mode`` messages, a 1-byte heartbeat
each idle second, binary frames of many packets - and streams a tick file (at a chosen speed)
or the simulator, sending each client only the tokens and modes it subscribed. It also
answers the REST calls feedengine makes through ``kiteconnect`` (``/user/profile``,
``/instruments``, ``/instruments/historical``), so ``--test-broker`` runs without the
internet. Its historical candles are the engine's candles of the market it plays
(:mod:`feedengine.brokers.kite.mockhistory`): of what it has played so far (a live day), or
of the whole stream (a past day); like Kite it answers more than 3 historical requests a second with
HTTP 429. Faults are injected on command: drop the connections, go silent, turn into a
black hole (no data, no reading, so no close handshake either: a dead link), stall new
handshakes, send a malformed frame, send a text error; answer historical requests late or
with a server error (:meth:`MockKite.inject_history`); serve altered candles
(:meth:`MockKite.override_candle`).
Tests, demos and load tests use it; nothing here is needed in production.
"""

import argparse
import asyncio
import collections
import contextlib
import csv
import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as dt_time
from enum import Enum
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from feedengine.brokers.kite import wire
from feedengine.brokers.kite.history import MAX_DAYS_PER_REQUEST, RATE_LIMIT, RATE_PERIOD_S
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.mockhistory import SERVED_MINUTES, CandleBook, HistoryMode
from feedengine.brokers.kite.segments import Segment
from feedengine.brokers.localserver import BLACKHOLE, DROP, SILENCE, Client, LocalServer
from feedengine.sessions import IST
from feedengine.simulator import SimConfig
from feedengine.simulator import instruments as sim_instruments
from feedengine.simulator import messages as sim_messages
from feedengine.tickfile import MAX_PAYLOAD, TickReader

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "mock_api_key"
DEFAULT_ACCESS_TOKEN = "mock_access_token"
#: Kite sends a heartbeat after about a second without data.
HEARTBEAT_S = 1.0
#: Packet length of each kind per subscription mode (index packets differ).
_MODE_LENGTH = {"full": (184, 32), "quote": (44, 28), "ltp": (8, 8)}
#: Handshake request times kept in :attr:`MockKite.handshakes` (bounded: it runs all day).
HANDSHAKES_KEPT = 1000
#: Historical requests kept in :attr:`MockKite.history_requests` (bounded: it runs all day).
HISTORY_REQUESTS_KEPT = 10_000
#: Path prefix of the historical candles: ``/instruments/historical/{token}/{interval}``.
HISTORY_PATH = "/instruments/historical/"
#: Kite's error type of an injected server error: GeneralException for a 500 (its docs'
#: example), NetworkException for the rest (the API unable to reach its backend).
_ERROR_TYPES = {500: "GeneralException"}
#: A frame whose declared packet runs past its end: what "malformed" sends.
MALFORMED_FRAME = b"\x00\x02\x00\xb8" + b"\x00" * 20
INSTRUMENT_COLUMNS = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)


class Fault(Enum):
    """What :meth:`MockKite.inject` can do to the connected clients."""

    DROP = DROP  # abort every connection (TCP reset, no close frame)
    SILENCE = SILENCE  # send nothing at all, not even heartbeats, for a while
    # Send nothing and read nothing for a while: TCP stays up but no close handshake can
    # complete, as over a dead link (a silent client must abort, not wait to close).
    BLACKHOLE = BLACKHOLE
    # For a while, accept new connections' TCP but never answer their WebSocket handshake.
    STALL = "stall"
    MALFORMED = "malformed"  # send one malformed binary frame
    ERROR = "error"  # send a text error message


@dataclass(frozen=True)
class HistoryRequest:
    """A historical request as the server saw it: when it arrived (``time.monotonic``),
    its path and query, and the status answered."""

    at: float
    token: str
    interval: str
    query: dict[str, str]
    status: int


@dataclass(eq=False)
class _Client(Client):
    modes: dict[int, str] = field(default_factory=dict)  # token -> mode

    def tokens(self, mode: str) -> np.ndarray:
        return np.fromiter((t for t, m in self.modes.items() if m == mode), np.uint32)


class MockKite(LocalServer[_Client]):
    """The server, on a thread of its own.

    Parameters
    ----------
    messages
        Returns the ``(recv_ns, message)`` stream to serve (called once, and once more
        at :meth:`start` with ``history="day"``).
    instruments
        Rows of the instruments dump served at ``/instruments``.
    speed
        Pace relative to the stream's receive times (1 = real time, 0 = flat out).
    start_on_subscribe
        Start the market clock when the first client subscribes (tests), not at start.
    record_frames
        Keep every data frame sent in :attr:`frames` (tests that compare what arrived);
        off by default, since the list grows as long as the server runs.
    origin
        ``(wall ns, stream ns)``: play stream time ``stream`` at wall-clock ``wall`` (and
        the rest at ``speed`` from there), so another process can share the time line.
    history
        The historical candles served: ``played`` (of the ticks played so far, forming
        candles included: a live market), ``day`` (of the whole stream, computed at
        :meth:`start`, which then calls ``messages`` a second time: a past day) or
        ``none``.
    """

    def __init__(
        self,
        messages: Callable[[], Iterable[tuple[int, bytes]]],
        instruments: list[dict[str, Any]],
        *,
        api_key: str = DEFAULT_API_KEY,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_s: float = HEARTBEAT_S,
        start_on_subscribe: bool = True,
        origin: tuple[int, int] | None = None,
        record_frames: bool = False,
        history: HistoryMode | str = HistoryMode.PLAYED,
    ) -> None:
        super().__init__()
        self._messages = messages
        self.instruments = instruments
        self.api_key = api_key
        self.access_token = access_token
        self.speed = speed
        self.host = host
        self.port = port
        self.heartbeat_s = heartbeat_s
        self.start_on_subscribe = start_on_subscribe
        #: Packets sent to clients in total, and whether the stream has ended.
        self.packets_sent = 0
        self.record_frames = record_frames
        #: With ``record_frames``: every data frame queued for a client, in order.
        self.frames: list[bytes] = []
        #: WebSocket connections served, and ``subscribe`` messages received.
        self.connections = 0
        self.subscribes = 0
        #: Monotonic times of the latest handshake requests (tests time reconnects).
        self.handshakes: collections.deque[float] = collections.deque(maxlen=HANDSHAKES_KEPT)
        self._stall_until = 0.0
        self.finished = threading.Event()
        self._server: Server | None = None
        self._subscribed: asyncio.Event | None = None
        #: (wall ns, stream ns): the stream time played at that wall-clock instant.
        self._origin = origin
        self.history = HistoryMode(history)
        #: The latest historical requests, oldest first.
        self.history_requests: collections.deque[HistoryRequest] = collections.deque(
            maxlen=HISTORY_REQUESTS_KEPT
        )
        self._book: CandleBook | None = None
        self._history_window: collections.deque[float] = collections.deque()
        self._history_faults: collections.deque[tuple[int | None, float]] = collections.deque()

    # --- control, from any thread ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ws://{self._netloc(self.port)}"

    @property
    def root(self) -> str:
        """REST root for ``KiteConnect(root=...)``."""
        return f"http://{self._netloc(self.port)}"

    def start(self) -> "MockKite":
        if self.history is not HistoryMode.NONE:
            tokens = {int(r["instrument_token"]): r for r in self.instruments}
            instruments = [KiteInstrument.from_dict(r) for r in tokens.values()]
            if instruments:
                self._book = (
                    CandleBook.of_stream(instruments, self._messages())
                    if self.history is HistoryMode.DAY
                    else CandleBook(instruments)
                )
        self._start_loop("mockkite")
        return self

    def stop(self) -> None:
        self._stop_loop()

    def inject(self, fault: Fault | str, seconds: float = 0.0) -> None:
        """Do ``fault`` to every connected client, or to new ones (``STALL``).

        ``seconds``: how long a silence, black hole or stall lasts (a black hole of 0 s
        lasts until the client goes).
        """
        fault = Fault(fault)
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._inject(fault, seconds), self._loop).result()

    def expire_token(self, new_token: str) -> None:
        """Accept only ``new_token`` from now on, on both the WebSocket and REST (the
        daily expiry); connected clients stay until dropped (``inject("drop")``)."""

        def set_token() -> None:
            self.access_token = new_token

        self._on_loop(set_token)

    def inject_history(
        self, count: int = 1, *, status: int | None = 503, delay_s: float = 0.0
    ) -> None:
        """Answer each of the next ``count`` historical requests (after the rate check,
        which comes first as at Kite) ``delay_s`` late, with ``status`` and Kite's JSON
        error (a 5xx), or with status None the true answer.

        Calls queue up: ``inject_history(2, status=502)`` then ``inject_history(1,
        status=None, delay_s=5)`` fails two requests, then makes the third slow.
        """
        self._on_loop(self._history_faults.extend, [(status, delay_s)] * count)

    def clear_history_faults(self) -> None:
        """Forget the faults injected with :meth:`inject_history` not yet used."""
        self._on_loop(self._history_faults.clear)

    def override_candle(
        self,
        token: int,
        interval: str,
        bucket_start: datetime,
        candle: tuple[int, int, int, int, int] | None,
    ) -> None:
        """Serve ``candle`` — (open, high, low, close, volume), prices in integer units of
        the token's divisor — as ``token``'s ``interval`` candle starting at
        ``bucket_start`` (aware; ``day`` candles start at IST midnight) instead of the
        engine's, or no candle there at all when it is None.
        """
        assert self._book is not None, "this server serves no history"
        start_ns = round(bucket_start.timestamp()) * 1_000_000_000
        self._on_loop(self._book.override, token, SERVED_MINUTES[interval], start_ns, candle)

    def served(self, token: int, minutes: int, start_ns: int, end_ns: int) -> np.ndarray:
        """The ``HISTORY_DTYPE`` candles the server would answer for ``token``'s native
        ``minutes`` interval in ``[start_ns, end_ns]`` (what tests compare tables with)."""
        book = self._book
        assert book is not None, "this server serves no history"
        out: list[np.ndarray] = []
        self._on_loop(lambda: out.append(book.candles(token, minutes, start_ns, end_ns)))
        return out[0]

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the server's thread (which owns its state) and wait."""

        async def call() -> None:
            fn(*args)

        if self._loop is None:
            fn(*args)
        else:
            asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    # --- the server's thread ---------------------------------------------------------------

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._subscribed = asyncio.Event()
        async with serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._http,
            compression=None,
            max_size=MAX_PAYLOAD,
            ping_interval=None,
        ) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1] if self.port == 0 else self.port
            self._ready.set()
            market = asyncio.create_task(self._market())
            beats = asyncio.create_task(self._heartbeats())
            await self._stop.wait()
            market.cancel()
            beats.cancel()
            for client in list(self._clients):
                client.ws.transport.abort()

    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            self.handshakes.append(time.monotonic())
            stall = self._stall_until - time.monotonic()
            if stall > 0:
                assert self._stop is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), stall)
                if self._stop.is_set():  # the server's close waits for open handshakes
                    return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "stopping\n")
            query = parse_qs(url.query)
            if query.get("api_key") != [self.api_key] or query.get("access_token") != [
                self.access_token
            ]:
                return connection.respond(HTTPStatus.FORBIDDEN, "invalid api_key or access_token\n")
            return None
        auth = request.headers.get("Authorization", "")
        if auth != f"token {self.api_key}:{self.access_token}":
            return self._json(
                HTTPStatus.FORBIDDEN,
                {
                    "status": "error",
                    "error_type": "TokenException",
                    "message": "Incorrect `api_key` or `access_token`.",
                },
            )
        if url.path.startswith(HISTORY_PATH):
            return await self._historical(url.path, parse_qs(url.query))
        if url.path == "/user/profile":
            return self._json(
                HTTPStatus.OK,
                {
                    "status": "success",
                    "data": {
                        "user_id": "MK0001",
                        "user_name": "Mock Kite",
                        "user_shortname": "Mock",
                        "email": "mock@localhost",
                        "broker": "ZERODHA",
                        "exchanges": ["NSE", "NFO"],
                    },
                },
            )
        if url.path.startswith("/instruments"):
            exchange = url.path.removeprefix("/instruments").strip("/").upper()
            return self._csv(
                [i for i in self.instruments if not exchange or i.get("exchange") == exchange]
            )
        return self._json(HTTPStatus.NOT_FOUND, {"status": "error", "message": "not found"})

    async def _historical(self, path: str, query: dict[str, list[str]]) -> Response:
        token, _, interval = path.removeprefix(HISTORY_PATH).partition("/")
        params = {k: v[0] for k, v in query.items()}
        arrived = time.monotonic()

        def answer(status: HTTPStatus, body: dict[str, Any] | bytes) -> Response:
            self.history_requests.append(
                HistoryRequest(arrived, token, interval, params, status.value)
            )
            if isinstance(body, bytes):
                headers = Headers([("Content-Type", "application/json")])
                return Response(status.value, status.phrase, headers, body)
            return self._json(status, body)

        window = self._history_window
        while window and window[0] <= arrived - RATE_PERIOD_S:
            window.popleft()
        if len(window) >= RATE_LIMIT:
            return answer(
                HTTPStatus.TOO_MANY_REQUESTS, _error("NetworkException", "Too many requests")
            )
        window.append(arrived)
        if self._history_faults:
            status, delay_s = self._history_faults.popleft()
            if delay_s:
                assert self._stop is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay_s)
            if status is not None:
                return answer(
                    HTTPStatus(status),
                    _error(
                        _ERROR_TYPES.get(status, "NetworkException"), f"mock: injected {status}"
                    ),
                )
        problem = self._history_problem(token, interval, params)
        if problem:
            return answer(HTTPStatus.BAD_REQUEST, _error("InputException", problem))
        assert self._book is not None
        start, end = (_ist_ns(params[k]) for k in ("from", "to"))
        body = self._book.kite_json(int(token), SERVED_MINUTES[interval], start, end)
        return answer(HTTPStatus.OK, body)

    def _history_problem(self, token: str, interval: str, params: dict[str, str]) -> str | None:
        """Why Kite would refuse this historical request (HTTP 400), or None."""
        if self._book is None:
            return "this mock Kite serves no history (start it with history=played or day)"
        if not token.isdigit() or int(token) not in self._book.tokens:
            return "invalid token"
        if interval not in SERVED_MINUTES:
            return "invalid interval"
        try:
            start, end = (_ist_ns(params[k]) for k in ("from", "to"))
        except (KeyError, ValueError):
            return "invalid from or to date: expected yyyy-mm-dd hh:mm:ss"
        if end < start:
            return "invalid range: to is before from"
        if end - start > MAX_DAYS_PER_REQUEST[interval] * 86_400_000_000_000:
            return f"interval exceeds max limit: {MAX_DAYS_PER_REQUEST[interval]} days"
        return None

    @staticmethod
    def _json(status: HTTPStatus, body: dict[str, Any]) -> Response:
        headers = Headers([("Content-Type", "application/json")])
        return Response(status.value, status.phrase, headers, orjson.dumps(body))

    @staticmethod
    def _csv(rows: list[dict[str, Any]]) -> Response:
        out = io.StringIO()
        writer = csv.DictWriter(out, INSTRUMENT_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in INSTRUMENT_COLUMNS})
        headers = Headers([("Content-Type", "text/csv")])
        return Response(200, "OK", headers, out.getvalue().encode())

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self._clients.add(client)
        self.connections += 1
        sender = asyncio.create_task(self._send(client))
        try:
            async for text in ws:
                self._command(client, text)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            sender.cancel()

    def _command(self, client: _Client, text: str | bytes) -> None:
        try:
            msg = orjson.loads(text)
            action, value = msg["a"], msg["v"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            client.queue.put_nowait(
                orjson.dumps({"type": "error", "data": "invalid message"}).decode()
            )
            return
        if action == "subscribe":
            self.subscribes += 1
            for token in value:
                client.modes.setdefault(int(token), "quote")  # Kite's default mode
            assert self._subscribed is not None
            self._subscribed.set()
        elif action == "unsubscribe":
            for token in value:
                client.modes.pop(int(token), None)
        elif action == "mode":
            mode, tokens = value
            for token in tokens:
                if int(token) in client.modes:
                    client.modes[int(token)] = mode

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s / 4)
            now = time.monotonic()
            for client in list(self._clients):
                if now - client.last_sent >= self.heartbeat_s and now >= client.silent_until:
                    client.last_sent = now
                    client.queue.put_nowait(b"\x00")

    async def _market(self) -> None:
        assert self._subscribed is not None
        if self.start_on_subscribe:
            await self._subscribed.wait()
        for recv_ns, message in self._messages():
            await self._pace(recv_ns)
            if len(message) > 1:  # the server makes its own heartbeats
                self._broadcast(wire.decode(message))
                if self.history is HistoryMode.PLAYED and self._book is not None:
                    self._book.add(recv_ns, message)
        self.finished.set()

    def _broadcast(self, rows: np.ndarray) -> None:
        tokens = rows["instrument_token"]
        index = rows["segment"] == Segment.INDICES
        for client in self._clients:
            parts = []
            for mode, (plen, index_plen) in _MODE_LENGTH.items():
                mine = rows[np.isin(tokens, client.tokens(mode))]
                if len(mine):
                    lengths = np.where(
                        index[np.isin(tokens, client.tokens(mode))], index_plen, plen
                    )
                    # A packet can be cut down to a smaller mode, never grown.
                    mine["packet_length"] = np.minimum(mine["packet_length"], lengths)
                    parts.append(mine)
            if parts:
                out = np.concatenate(parts)
                self.packets_sent += len(out)
                frame = wire.encode(out)
                if self.record_frames:
                    self.frames.append(frame)
                client.queue.put_nowait(frame)

    async def _inject(self, fault: Fault, seconds: float) -> None:
        if fault is Fault.STALL:
            self._stall_until = time.monotonic() + seconds
            return
        if self._fault(fault.value, seconds):
            return
        for client in list(self._clients):
            if fault is Fault.MALFORMED:
                client.queue.put_nowait(MALFORMED_FRAME)
            else:
                client.queue.put_nowait(
                    orjson.dumps({"type": "error", "data": "mock: injected error"}).decode()
                )


def _error(error_type: str, message: str) -> dict[str, Any]:
    """Kite's JSON error body."""
    return {"status": "error", "message": message, "data": None, "error_type": error_type}


def _ist_ns(text: str) -> int:
    """Unix ns of Kite's ``yyyy-mm-dd hh:mm:ss`` (or ``yyyy-mm-dd``) IST time."""
    return round(datetime.fromisoformat(text).replace(tzinfo=IST).timestamp()) * 1_000_000_000


def tick_file_source(
    path: Path, loop: bool = False
) -> tuple[Callable[[], Iterator[tuple[int, bytes]]], list[dict[str, Any]]]:
    """A tick file as a message source and its instruments."""
    reader = TickReader(path)

    def messages() -> Iterator[tuple[int, bytes]]:
        shift = 0
        while True:
            last = 0
            for recv_ns, message in TickReader(path).messages():
                last = recv_ns + shift
                yield last, message
            if not loop:
                return
            shift = last - next(iter(TickReader(path).messages()))[0] + 1_000_000_000

    return messages, instrument_rows(reader.instruments)


def instrument_rows(instruments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instruments as rows of Kite's dump (index tokens on exchange NSE, segment INDICES)."""
    rows = []
    for inst in instruments:
        token = int(inst["instrument_token"])
        segment = Segment(token & 0xFF).name if (token & 0xFF) in Segment._value2member_map_ else ""
        exchange = inst.get("exchange") or segment
        if exchange == "INDICES":
            exchange = "NSE"
        rows.append(
            {
                "instrument_token": token,
                "exchange_token": token >> 8,
                "tradingsymbol": inst["tradingsymbol"],
                "name": inst["tradingsymbol"],
                "last_price": 0,
                "expiry": "",
                "strike": 0,
                "tick_size": inst.get("tick_size", 0.05),
                "lot_size": 1,
                "instrument_type": "INDEX" if segment == "INDICES" else "EQ",
                "segment": segment if segment != "INDICES" else "INDICES",
                "exchange": exchange,
            }
        )
    return rows


def session_start_ns(config: SimConfig) -> int:
    """Unix ns of a simulated session's start (its IST date and start time)."""
    return int(datetime.combine(config.date, config.start, IST).timestamp() * 10**9)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m feedengine.brokers.kite.mockserver",
        description="A local Kite-compatible WebSocket and REST server.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ticks", type=Path, metavar="FILE", help="serve this tick file")
    src.add_argument("--simulate", action="store_true", help="serve a simulated session")
    p.add_argument("--instruments", type=int, default=50, help="simulated instruments")
    p.add_argument(
        "--start",
        default="09:00",
        metavar="HH:MM",
        help="simulated session start, IST (default 09:00)",
    )
    p.add_argument(
        "--origin-ns",
        type=int,
        metavar="NS",
        help="play the simulated session (from --start on this instant's IST date) from "
        "this wall-clock instant: stream time S + (wall - NS) * speed, S = the start",
    )
    p.add_argument("--speed", type=float, default=1.0, help="pace (1 = real time, 0 = max)")
    p.add_argument("--loop", action="store_true", help="start the tick file again at its end")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 serves other machines)",
    )
    p.add_argument("--port", type=int, default=8765)
    p.add_argument(
        "--history",
        choices=[m.value for m in HistoryMode],
        default=HistoryMode.PLAYED.value,
        help="historical candles served: of the ticks played so far (default), of the whole "
        "stream computed at start (a past day), or none",
    )
    p.add_argument("--api-key", default=DEFAULT_API_KEY)
    p.add_argument("--access-token", default=DEFAULT_ACCESS_TOKEN)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(message)s")
    if args.ticks:
        try:
            messages, rows = tick_file_source(args.ticks, args.loop)
        except (OSError, ValueError) as e:
            print(f"mockkite: error: {e}", file=sys.stderr)
            return 1
    else:
        try:
            start = dt_time.fromisoformat(args.start)
            day = (
                datetime.fromtimestamp(args.origin_ns / 1e9, IST).date()
                if args.origin_ns
                else SimConfig().date
            )
            config = SimConfig(
                instruments=args.instruments,
                date=day,
                start=start,
                end=dt_time(23, 59, 59) if args.origin_ns else SimConfig().end,
            )
        except ValueError as e:
            print(f"mockkite: error: {e}", file=sys.stderr)
            return 2
        rows = instrument_rows(sim_instruments(config))

        def messages() -> Iterator[tuple[int, bytes]]:
            return sim_messages(config)

    server = MockKite(
        messages,
        rows,
        api_key=args.api_key,
        access_token=args.access_token,
        speed=args.speed,
        host=args.host,
        port=args.port,
        start_on_subscribe=args.origin_ns is None,
        origin=(args.origin_ns, session_start_ns(config)) if args.origin_ns else None,
        history=args.history,
    ).start()
    print(
        f"mock Kite at {server.url} (REST {server.root}); KITE_WS_URL={server.url} "
        f"KITE_API_KEY={args.api_key} KITE_ACCESS_TOKEN={args.access_token}",
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
