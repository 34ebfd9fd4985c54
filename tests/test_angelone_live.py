"""Angel One's live side against the project's own local Angel server (never the internet):
login through the official SDK, the WebSocket 2.0 stream and its faults, the live source's
recording, the scrip master, and the official SmartWebSocketV2 as an oracle."""

import importlib.util
import json
import logging
import socket
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest

from feedengine.brokers.angelone.auth import Session, login
from feedengine.brokers.angelone.config import AngelConfig
from feedengine.brokers.angelone.instruments import (
    AngelInstrument,
    cache_path,
    fetch_scrip_master,
    read_scrip_master,
    resolve,
)
from feedengine.brokers.angelone.live import AngelLiveSource
from feedengine.brokers.angelone.mockserver import (
    DEFAULT_API_KEY,
    DEFAULT_CLIENT_CODE,
    DEFAULT_FEED_TOKEN,
    DEFAULT_JWT,
    DEFAULT_PIN,
    DEFAULT_TOTP_SECRET,
    MockAngel,
    tick_file_packets,
)
from feedengine.brokers.angelone.stream import AngelStream, shard, token_list
from feedengine.brokers.angelone.wire import Mode, decode, encode
from feedengine.errors import AuthError, ConfigError, FeedError, InstrumentsError, StreamError
from feedengine.tickfile import TickReader
from tests.processes import wait_until

FIXTURE = Path(__file__).parent / "fixtures" / "angelone" / "scripmaster_sample.json"
FAST = {"backoff_first_s": 0.05, "silence_s": 1.0, "ping_interval_s": 0.3}
SESSION = Session(DEFAULT_API_KEY, DEFAULT_CLIENT_CODE, DEFAULT_JWT, DEFAULT_FEED_TOKEN, "r")
#: SNAP_QUOTE (379 bytes): mode, exchange type, token, sequence, exchange time (ms), LTP;
#: last traded qty, average price, day volume, total buy/sell qty (f64), open, high, low,
#: close; last traded time, OI, OI change, best five (10 x 20 bytes), circuit limits and
#: 52-week high/low.
INSTRUMENTS = [
    AngelInstrument("2885", 1, "RELIANCE-EQ", "NSE"),
    AngelInstrument("1594", 1, "INFY-EQ", "NSE"),
    AngelInstrument("52168", 2, "NIFTY26JUN25FUT", "NFO"),
]
START_NS = 1_750_000_000_000_000_000


def snap_packet(inst, seq, ltp, volume):
    """A SNAP_QUOTE packet as Angel sends one (prices in paise)."""
    return encode(
        {
            "subscription_mode": Mode.SNAP_QUOTE,
            "exchange_type": inst.exchange_type,
            "token": inst.token,
            "sequence_number": seq,
            "exchange_timestamp": 1_750_000_000_000 + seq,
            "last_traded_price": ltp,
            "last_traded_quantity": 1,
            "average_traded_price": ltp,
            "volume_trade_for_the_day": volume,
            "total_buy_quantity": 100.0,
            "total_sell_quantity": 200.0,
            "open_price_of_the_day": ltp - 50,
            "high_price_of_the_day": ltp + 100,
            "low_price_of_the_day": ltp - 100,
            "closed_price": ltp - 10,
            "last_traded_timestamp": 1_750_000_000_000 + seq,
        }
    )


def market(instruments=INSTRUMENTS, packets=200_000, step_ns=2_000_000):
    """Packets for ``instruments`` in turn, ``step_ns`` apart: 400 s of stream by default."""

    def packets_():
        for seq in range(packets):
            inst = instruments[seq % len(instruments)]
            yield START_NS + seq * step_ns, snap_packet(inst, seq, 250_000 + seq, seq), inst.key

    return packets_


def serve(speed=1.0, **options):
    return MockAngel(market(**options.pop("market", {})), speed=speed, **options).start()


class Collector:
    def __init__(self):
        self.messages = []

    def __call__(self, recv_ns, message):
        self.messages.append((recv_ns, message))

    def keys_since(self, first):
        return {(m[1] << 32) | int(m[2:27].rstrip(b"\0")) for _, m in self.messages[first:]}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """No test here may reach beyond this machine (the SDK's import GETs api.ipify.org).

    Attempts are also kept and checked at the end: the SDK swallows any exception of its
    import-time request, so raising alone would prove nothing."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    reached = []

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1", None):
            reached.append(host)
            raise AssertionError(f"a test looked up {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            reached.append(address)
            raise AssertionError(f"a test connected to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
    assert not reached


def config_of(server, **changes):
    values = {
        "api_key": DEFAULT_API_KEY,
        "client_code": DEFAULT_CLIENT_CODE,
        "pin": DEFAULT_PIN,
        "totp_secret": DEFAULT_TOTP_SECRET,
        "ws_url": server.url,
        "api_root": server.root,
        "scrip_master_url": server.scrip_master_url,
    }
    return AngelConfig(**{**values, **changes})


def test_login_through_the_official_sdk(tmp_path, monkeypatch):
    """SmartConnect.generateSession against the local server: JWT and feed token; its
    import GETs nothing, and it leaves no logs/ folder behind."""
    monkeypatch.chdir(tmp_path)
    server = serve()
    try:
        session = login(config_of(server))
    finally:
        server.stop()
    assert session == Session(
        DEFAULT_API_KEY, DEFAULT_CLIENT_CODE, DEFAULT_JWT, DEFAULT_FEED_TOKEN, "mock_refresh_token"
    )
    assert session.authorization == f"Bearer {DEFAULT_JWT}"
    assert server.logins == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"pin": "9999"}, AuthError, "Invalid clientcode or PIN (AB1007)"),
        ({"totp_secret": "KRSXG5CTMVRXEZLU"}, AuthError, "Invalid totp (AB1050)"),
        ({"api_key": "wrong"}, AuthError, "Invalid API Key (AG8004)"),
        ({"totp_secret": "123456!"}, ConfigError, "ANGEL_TOTP_SECRET is not a base32"),
        ({"pin": None, "api_key": ""}, ConfigError, "missing ANGEL_API_KEY and ANGEL_PIN"),
        ({"api_root": "http://127.0.0.1:9"}, FeedError, "cannot reach Angel One's login"),
    ],
)
def test_a_refused_login_is_one_clear_line(tmp_path, monkeypatch, capfd, change, error, words):
    monkeypatch.chdir(tmp_path)
    server = serve()
    try:
        with pytest.raises(error) as raised:
            login(config_of(server, **change))
    finally:
        server.stop()
    message = str(raised.value)
    assert words in message and "\n" not in message
    out, err = capfd.readouterr()
    # The SDK's own logger prints a failed request's body (the PIN, the TOTP): silenced.
    assert DEFAULT_PIN not in out + err and "9999" not in out + err
    assert list(tmp_path.iterdir()) == []


def test_config_from_the_environment():
    config = AngelConfig.from_env({"ANGEL_API_KEY": " k ", "ANGEL_CLIENT_CODE": "C1"})
    assert (config.api_key, config.client_code, config.pin) == ("k", "C1", None)
    assert config.ws_url == "wss://smartapisocket.angelone.in/smart-stream"
    assert config.api_root == "https://apiconnect.angelone.in"
    with pytest.raises(ConfigError, match="missing ANGEL_PIN and ANGEL_TOTP_SECRET"):
        config.require_credentials()


def test_stream_subscribes_in_snap_quote_and_receives_packets_verbatim():
    server = serve(speed=20, record_frames=True)
    got = Collector()
    stream = AngelStream(server.url, SESSION, [i.key for i in INSTRUMENTS], got, **FAST)
    stream.start()
    try:
        assert wait_until(lambda: len(got.messages) >= 300)
    finally:
        stream.stop()
        server.stop()
    assert stream.status[0].reconnects == 0 and server.connections == 1
    packets = [m for _, m in got.messages]
    assert packets == server.frames[: len(packets)]
    assert {len(p) for p in packets} == {379} and {p[0] for p in packets} == {3}
    assert got.keys_since(0) == {i.key for i in INSTRUMENTS}
    recv = [t for t, _ in got.messages]
    assert recv == sorted(recv)


@pytest.mark.parametrize(("mode", "length"), [("quote", 123), (1, 51)])
def test_packets_are_cut_down_to_the_mode_subscribed(mode, length):
    server = serve(speed=20)
    got = Collector()
    stream = AngelStream(server.url, SESSION, [INSTRUMENTS[0].key], got, mode=mode, **FAST)
    stream.start()
    try:
        assert wait_until(lambda: len(got.messages) >= 20)
    finally:
        stream.stop()
        server.stop()
    assert {len(m) for _, m in got.messages} == {length}
    assert {m[0] for _, m in got.messages} == {1 if length == 51 else 2}
    with pytest.raises(StreamError, match="mode must be one of ltp, quote, snap_quote"):
        AngelStream(server.url, SESSION, [1], got, mode="depth")


def test_pongs_keep_a_quiet_connection_alive():
    """Angel sends nothing of its own in a quiet market: the answers to our pings are what
    keep the watchdog from taking a live link for a dead one."""
    server = MockAngel(lambda: iter(())).start()
    stream = AngelStream(server.url, SESSION, [INSTRUMENTS[0].key], Collector(), **FAST)
    stream.start()
    try:
        # 6 pongs, 0.3 s apart: 1.8 s, beyond the 1 s of silence that means death.
        assert wait_until(lambda: stream.status[0].messages >= 6)
        assert stream.status[0].reconnects == 0 and stream.status[0].state == "connected"
    finally:
        stream.stop()
        server.stop()
    with pytest.raises(StreamError, match="keep-alive interval"):
        AngelStream(server.url, SESSION, [1], Collector(), silence_s=1.0, ping_interval_s=1.0)


def test_disconnects_reconnect_resubscribe_and_never_duplicate():
    server = serve(speed=20, record_frames=True)
    got = Collector()
    keys = {i.key for i in INSTRUMENTS}
    stream = AngelStream(server.url, SESSION, sorted(keys), got, **FAST)
    stream.start()
    try:
        for _ in range(3):
            assert wait_until(lambda: stream.status[0].state == "connected")
            before = len(got.messages)
            assert wait_until(lambda n=before: len(got.messages) > n + 3)
            reconnects = stream.status[0].reconnects
            server.inject("drop")
            # The count, not the state: a reconnect within the poll's 50 ms hides the state.
            assert wait_until(lambda r=reconnects: stream.status[0].reconnects > r, 5)
        assert wait_until(lambda: stream.status[0].state == "connected")
        before = len(got.messages)
        assert wait_until(lambda: got.keys_since(before) == keys)  # resubscribed
    finally:
        stream.stop()
        server.stop()
    assert stream.status[0].reconnects >= 3 and server.subscribes >= 4
    position = {}
    for i, frame in enumerate(server.frames):
        position.setdefault(frame, []).append(i)
    last = -1
    for _, message in got.messages:
        later = [i for i in position[message] if i > last]
        assert later, "a packet arrived twice or out of order"
        last = later[0]


def test_a_dead_link_is_noticed_within_the_silence_timeout():
    server = serve(speed=20)
    stream = AngelStream(server.url, SESSION, [INSTRUMENTS[0].key], Collector(), **FAST)
    stream.start()
    try:
        assert wait_until(lambda: stream.status[0].state == "connected" and server.subscribes)
        server.inject("blackhole")
        injected = time.monotonic()
        assert wait_until(lambda: stream.status[0].state != "connected", 30)
        noticed = time.monotonic() - injected
        assert noticed < FAST["silence_s"] + 0.5, f"noticed after {noticed:.1f} s"
        assert wait_until(lambda: stream.status[0].state == "connected")
        assert server.connections == 2
    finally:
        stream.stop()
        server.stop()


def test_bad_credentials_are_fatal_not_a_reconnect_loop():
    server = serve()
    bad = Session(DEFAULT_API_KEY, DEFAULT_CLIENT_CODE, DEFAULT_JWT, "stale", "r")
    stream = AngelStream(server.url, bad, [INSTRUMENTS[0].key], Collector(), **FAST)
    stream.start()
    try:
        assert wait_until(lambda: not stream.alive, 10)
        with pytest.raises(AuthError, match=r"HTTP 401: Invalid Feed Token") as raised:
            stream.check()
        assert "\n" not in str(raised.value)
        assert stream.status[0].reconnects == 0 and stream.status[0].state == "failed"
    finally:
        stream.stop()
        server.stop()


def test_a_session_expiring_mid_run_stops_the_stream_at_its_next_connect():
    server = serve(speed=20)
    got = Collector()
    stream = AngelStream(server.url, SESSION, [INSTRUMENTS[0].key], got, **FAST)
    stream.start()
    try:
        assert wait_until(lambda: len(got.messages) > 5)
        server.inject("expire")
        server.inject("drop")
        assert wait_until(lambda: not stream.alive, 10)
        with pytest.raises(AuthError, match="Session expired"):
            stream.check()
        assert stream.status[0].reconnects == 1
    finally:
        stream.stop()
        server.stop()


def test_error_frames_are_one_line_and_the_feed_goes_on(caplog):
    server = serve(speed=20)
    got = Collector()
    stream = AngelStream(server.url, SESSION, [INSTRUMENTS[0].key], got, **FAST)
    with caplog.at_level(logging.INFO, logger="feedengine.brokers.angelone.stream"):
        stream.start()
        try:
            assert wait_until(lambda: len(got.messages) > 5)
            server.inject("error")
            assert wait_until(lambda: "error from Angel One" in caplog.text)
            count = len(got.messages)
            assert wait_until(lambda: len(got.messages) > count + 5)
        finally:
            stream.stop()
            server.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        "angelone connection 0: error from Angel One: E1099 mock: injected error "
        "(request mockinject)"
    ]
    assert stream.status[0].reconnects == 0


def test_token_limits_and_sharding():
    keys = [(1 << 32) | t for t in range(1, 2501)]
    assert [len(s) for s in shard(keys)] == [834, 833, 833]
    with pytest.raises(
        StreamError,
        match="3001 instruments: Angel One allows at most 3 connections x 1000 tokens = 3000 "
        "per client code",
    ):
        shard([(1 << 32) | t for t in range(1, 3002)])
    assert token_list([(2 << 32) | 52168, (1 << 32) | 2885, (1 << 32) | 1594]) == [
        {"exchangeType": 1, "tokens": ["1594", "2885"]},
        {"exchangeType": 2, "tokens": ["52168"]},
    ]


def test_2500_instruments_over_three_connections():
    many = [AngelInstrument(str(t), 1, f"S{t}-EQ", "NSE") for t in range(1, 2501)]
    server = serve(speed=5, market={"instruments": many})
    got = Collector()
    stream = AngelStream(server.url, SESSION, [i.key for i in many], got, **FAST)
    stream.start()
    try:
        assert wait_until(lambda: all(s.state == "connected" for s in stream.status))
        assert wait_until(lambda: all(s.messages > 5 for s in stream.status), 60)
    finally:
        stream.stop()
        server.stop()
    assert [s.tokens for s in stream.status] == [834, 833, 833]
    assert server.connections == 3


def test_live_source_records_an_angel_tick_file_that_the_server_plays_back(tmp_path):
    server = serve(speed=20)
    record = tmp_path / "angel.ticks"
    source = AngelLiveSource(
        INSTRUMENTS, server.url, SESSION, record=record, clock=server.stream_clock, **FAST
    )
    received = []
    source.start()
    try:
        for batch in source.batches():
            received += [
                (int(batch.recv_ns[i]), bytes(batch.message(i))) for i in range(len(batch))
            ]
            if len(received) >= 200:
                break
    finally:
        source.stop()
        server.stop()
    assert source.status[0].messages >= 200 and source.recording["state"] == "recording"
    reader = TickReader(record)
    assert reader.meta["broker"] == "angelone"
    assert reader.instruments == [
        {"token": "2885", "exchange_type": 1, "tradingsymbol": "RELIANCE-EQ", "exchange": "NSE"},
        {"token": "1594", "exchange_type": 1, "tradingsymbol": "INFY-EQ", "exchange": "NSE"},
        {"token": "52168", "exchange_type": 2, "tradingsymbol": "NIFTY26JUN25FUT", "exchange": "NFO"},  # noqa: E501
    ]  # fmt: skip
    recorded = list(reader.messages())
    assert recorded[: len(received)] == received
    assert [AngelInstrument.from_dict(d) for d in reader.instruments] == INSTRUMENTS

    # The recording, played by the local server, arrives again packet for packet.
    packets, rows = tick_file_packets(record)
    replay = MockAngel(packets, scrip_master=rows, speed=0).start()
    again = Collector()
    stream = AngelStream(replay.url, SESSION, [i.key for i in INSTRUMENTS], again, **FAST)
    stream.start()
    try:
        assert replay.finished.wait(30)
        assert wait_until(lambda: len(again.messages) == len(recorded))
    finally:
        stream.stop()
        replay.stop()
    assert [m for _, m in again.messages] == [m for _, m in recorded]


def test_scrip_master_resolution(caplog):
    scrip = read_scrip_master(FIXTURE)
    assert "1 rows without a numeric token or a symbol were skipped" in caplog.text
    assert len(scrip) == 10  # the NCO row and the bad token left out
    reliance = resolve(["NSE:RELIANCE-EQ"], scrip, "x")[0]
    assert reliance == AngelInstrument("2885", 1, "RELIANCE-EQ", "NSE")
    assert reliance.key == (1 << 32) | 2885 and reliance.decimals == 2
    # Symbols as users write them: NSE by default, a bare equity name is its -EQ series,
    # case does not matter; each instrument once.
    assert resolve(["RELIANCE", "nse:infy-eq", "BSE:RELIANCE", "NSE:NIFTY 50"], scrip, "x") == [
        reliance,
        AngelInstrument("1594", 1, "INFY-EQ", "NSE"),
        AngelInstrument("500325", 3, "RELIANCE", "BSE"),
        AngelInstrument("99926000", 1, "Nifty 50", "NSE"),
    ]
    types = {i.exchange: i.exchange_type for i in scrip}
    assert types == {"NSE": 1, "BSE": 3, "NFO": 2, "BFO": 4, "MCX": 5, "CDS": 13, "NCDEX": 7}
    assert [i.decimals for i in scrip if i.exchange == "CDS"] == [7]
    with pytest.raises(
        InstrumentsError, match=r"2 unknown symbol\(s\) in the scrip master: NOPE, MCX:GOLD"
    ):
        resolve(["NOPE", "RELIANCE", "MCX:GOLD"], scrip, "the scrip master")
    assert resolve(["NOPE", "RELIANCE"], scrip, "x", skip_unknown=True) == [reliance]
    assert AngelInstrument.from_key(reliance.key, "RELIANCE-EQ") == reliance
    with pytest.raises(InstrumentsError, match="exchange_type matching its exchange"):
        AngelInstrument.from_dict({**reliance.to_dict(), "exchange": "BSE"})


def test_scrip_master_is_cached_per_day_and_host(tmp_path):
    rows = json.loads(FIXTURE.read_text())
    server = MockAngel(lambda: iter(()), scrip_master=rows).start()
    try:
        url = server.scrip_master_url
        older = cache_path(tmp_path, date(2025, 6, 1), url)
        older.write_bytes(b"[]")
        got = fetch_scrip_master(url, tmp_path, date(2025, 6, 2))
        cache = cache_path(tmp_path, date(2025, 6, 2), url)
        assert cache.name == f"angelone-scripmaster-2025-06-02-127.0.0.1_{server.rest_port}.json"
        assert [p.name for p in tmp_path.iterdir()] == [cache.name]  # the older day removed
        with pytest.raises(InstrumentsError, match="cannot download Angel One's scrip master"):
            fetch_scrip_master(f"{server.root}/nothing.json", tmp_path, date(2025, 6, 3))
    finally:
        server.stop()
    assert fetch_scrip_master(url, tmp_path, date(2025, 6, 2)) == got  # from the cache
    assert len(got) == 10


SDK_SCRIPT = """
import importlib.util, json, sys
# By file path: the package's __init__ imports smartConnect, which GETs api.ipify.org.
spec = importlib.util.spec_from_file_location("smartWebSocketV2", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sws = module.SmartWebSocketV2({auth!r}, {key!r}, {client!r}, {feed!r}, max_retry_attempt=0)
sws.ROOT_URI = {url!r}
seen = []
original = sws._on_data
def on_raw(wsapp, data, data_type, continue_flag):
    if data_type == 2 and len(seen) < 30:
        seen.append([data.hex(), sws._parse_binary_data(data)])
    if len(seen) >= 30:
        sws.close_connection()
    original(wsapp, data, data_type, continue_flag)
sws._on_data = on_raw
# SDK 1.5.5's own bugs: its _on_close takes (wsapp) but websocket-client passes three
# arguments, and the error that raises reaches an on_error that takes none.
sws._on_close = lambda wsapp, *args: None
sws.on_error = lambda *args: None
sws.on_open = lambda wsapp: sws.subscribe("sdktest001", 3, {token_list!r})
sws.connect()
print(json.dumps(seen))
"""


def test_official_smartwebsocketv2_receives_the_same_packets(tmp_path):
    """The SDK's own client, pointed at the local server, connects with the same four
    headers, subscribes, and gets the packets the server sent, which it parses to the
    values they were made of."""
    spec = importlib.util.find_spec("SmartApi")  # locates the package without importing it
    assert spec is not None and spec.submodule_search_locations
    path = str(Path(next(iter(spec.submodule_search_locations))) / "smartWebSocketV2.py")
    server = serve(speed=20, record_frames=True)
    script = SDK_SCRIPT.format(
        path=path,
        auth=SESSION.authorization,
        key=SESSION.api_key,
        client=SESSION.client_code,
        feed=SESSION.feed_token,
        url=server.url,
        token_list=token_list([i.key for i in INSTRUMENTS]),
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,  # its constructor makes a logs/ folder in the current directory
            check=False,
        )
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(seen) == 30
    sent = [f.hex() for f in server.frames]
    assert [raw for raw, _ in seen] == sent[:30]
    by_key = {i.key: i for i in INSTRUMENTS}
    for raw, theirs in seen:
        ours = decode(bytes.fromhex(raw))
        inst = by_key[(ours["exchange_type"] << 32) | int(theirs["token"])]
        assert theirs["subscription_mode"] == 3 and theirs["exchange_type"] == inst.exchange_type
        assert theirs["token"] == inst.token
        for name in (
            "sequence_number",
            "exchange_timestamp",
            "last_traded_price",
            "volume_trade_for_the_day",
            "high_price_of_the_day",
            "low_price_of_the_day",
        ):
            assert theirs[name] == ours[name], name
