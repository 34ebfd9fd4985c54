"""The live feed against the project's own local Kite server (never the internet)."""

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from datetime import date
from datetime import time as dtime

import numpy as np
import pytest

from feedengine.brokers.kite import wire
from feedengine.brokers.kite.instruments import (
    KITE_API_ROOT,
    KiteInstrument,
    dump_cache_path,
    fetch_dump,
    read_dump,
)
from feedengine.brokers.kite.live import LiveSource
from feedengine.brokers.kite.mockserver import MockKite, instrument_rows, tick_file_source
from feedengine.brokers.kite.ticker import KiteStream, shard
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.errors import AuthError, InstrumentsError, StreamError
from feedengine.instruments import resolve
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.simulator import SimConfig, simulate
from feedengine.simulator import instruments as sim_instruments
from feedengine.simulator import messages as sim_messages
from feedengine.sink import MemorySink
from feedengine.tickfile import TickReader
from tests.processes import cli

from .test_wire import FIXTURES

KEY, TOKEN = "k", "t"
FAST = {"backoff_first_s": 0.05, "silence_s": 1.0}


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """A 10-minute simulated window across the open, 20 instruments."""
    path = tmp_path_factory.mktemp("live") / "window.ticks"
    simulate(
        path, SimConfig(instruments=20, ticks=120_000, start=dtime(9, 10), end=dtime(9, 20), seed=8)
    )
    return path


def serve(path, speed, **options):
    messages, rows = tick_file_source(path)
    return MockKite(messages, rows, api_key=KEY, access_token=TOKEN, speed=speed, **options).start()


class Collector:
    def __init__(self):
        self.messages = []

    def __call__(self, recv_ns, message):
        self.messages.append((recv_ns, message))

    def ticks(self):
        return np.concatenate([wire.decode(m) for _, m in self.messages if len(m) > 1])


def test_official_kiteticker_receives_what_we_decode(window):
    """kiteconnect's own KiteTicker, pointed at the server with root=, gets Kite's protocol."""
    server = serve(window, speed=30)
    tokens = [i["instrument_token"] for i in TickReader(window).instruments]
    script = textwrap.dedent(f"""
        import json, sys
        from kiteconnect import KiteTicker
        kws = KiteTicker({KEY!r}, {TOKEN!r}, root={server.url!r}, reconnect=False)
        seen = []
        def on_connect(ws, response):
            ws.subscribe({tokens!r})
            ws.set_mode(ws.MODE_FULL, {tokens!r})
        def on_message(ws, payload, is_binary):
            # stop() is only reactor.stop(): a message already read is still delivered.
            if is_binary and len(payload) > 1 and len(seen) < 30:
                seen.append([payload.hex(), ws._parse_binary(payload)])
            if len(seen) >= 30:
                ws.stop()
        kws.on_connect = on_connect
        kws.on_message = on_message
        kws.connect(threaded=False)
        print(json.dumps(seen, default=str))
    """)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(seen) == 30
    packets = 0
    for payload_hex, theirs in seen:
        ours = wire.to_kite(wire.decode(bytes.fromhex(payload_hex)))
        assert len(ours) == len(theirs)
        for mine, kite in zip(ours, theirs, strict=True):
            assert mine["mode"] == kite["mode"] == "full"
            assert mine["instrument_token"] in tokens
            for key in ("instrument_token", "last_price", "volume_traded", "ohlc"):
                if key in kite:
                    assert mine[key] == kite[key], key
            packets += 1
    assert packets >= 30


def test_live_candles_equal_replay_of_the_same_file(window):
    """Streamed through the local server at 60x, the candles equal a replay's."""
    config = CandleConfig(intervals=(1, 5), grace_s=10.0)
    replayed = MemorySink()
    source = ReplaySource(window)
    Pipeline(CandleEngine(source.instruments, config), replayed).run(source)

    server = serve(window, speed=60)
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(window).instruments]
    live = LiveSource(instruments, server.url, KEY, TOKEN, clock=server.stream_clock, **FAST)
    pipeline = Pipeline(CandleEngine(instruments, config), sink := MemorySink())

    def stop_when_done():
        server.finished.wait(120)
        # Every packet the server sent has been decoded and applied.
        wait_for(lambda: pipeline.summary.ticks >= server.packets_sent, 60)
        pipeline.stop()

    threading.Thread(target=stop_when_done, daemon=True).start()
    try:
        summary = pipeline.run(live, live=True, clock=server.stream_clock)
    finally:
        server.stop()
    assert summary.ticks > 1000
    assert sink.candles == replayed.candles


def data_frames(collector):
    return sum(len(m) > 1 for _, m in collector.messages)


def tokens_since(collector, first):
    """Tokens with ticks in the messages from index ``first`` on."""
    ticks = [wire.decode(m) for _, m in collector.messages[first:] if len(m) > 1]
    return set(np.concatenate(ticks)["instrument_token"].tolist()) if ticks else set()


def test_disconnects_reconnect_and_never_duplicate(window):
    server = serve(window, speed=40, record_frames=True)
    got = Collector()
    tokens = [i["instrument_token"] for i in TickReader(window).instruments]
    stream = KiteStream(server.url, KEY, TOKEN, tokens, got, **FAST)
    stream.start()
    try:
        for _ in range(3):
            assert wait_for(lambda: stream.status[0].state == "connected")
            before = data_frames(got)
            assert wait_for(lambda n=before: data_frames(got) > n + 3)  # data flows; drop
            server.inject("drop")
            assert wait_for(lambda: stream.status[0].state != "connected", 5)
        assert wait_for(lambda: stream.status[0].state == "connected")
        # Resubscribed: every token ticks again (heartbeats alone would pass a count).
        before = len(got.messages)
        assert wait_for(lambda: tokens_since(got, before) == set(tokens))
    finally:
        stream.stop()
        server.stop()
    assert stream.status[0].reconnects >= 3
    # Every frame received is one the server sent, each once, in the order sent.
    position = {}
    for i, frame in enumerate(server.frames):
        position.setdefault(frame, []).append(i)
    last = -1
    for _, message in got.messages:
        if len(message) > 1:
            later = [i for i in position[message] if i > last]
            assert later, "a frame arrived twice or out of order"
            last = later[0]


def test_silence_is_death_and_the_stream_resumes(window):
    server = serve(window, speed=40)
    got = Collector()
    stream = KiteStream(
        server.url,
        KEY,
        TOKEN,
        [i["instrument_token"] for i in TickReader(window).instruments],
        got,
        **FAST,
    )
    stream.start()
    try:
        assert wait_for(lambda: stream.status[0].state == "connected")
        server.inject("silence", seconds=3.0)
        assert wait_for(lambda: stream.status[0].reconnects >= 1, 10)
        assert wait_for(lambda: stream.status[0].state == "connected")
        count = len(got.messages)
        tokens = {i["instrument_token"] for i in TickReader(window).instruments}
        assert wait_for(lambda: tokens_since(got, count) == tokens)  # resubscribed
    finally:
        stream.stop()
        server.stop()


def test_malformed_frame_and_text_error_do_not_stop_the_feed(window, caplog):
    server = serve(window, speed=40)
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(window).instruments]
    live = LiveSource(instruments, server.url, KEY, TOKEN, **FAST)
    pipeline = Pipeline(CandleEngine(instruments, CandleConfig()), MemorySink())

    def logged(text):
        return any(text in r.getMessage() for r in list(caplog.records))

    after = {}

    def faults():
        wait_for(lambda: server.subscribes >= 1)
        server.inject("malformed")
        server.inject("error")
        wait_for(lambda: logged("malformed Kite messages") and logged("error from Kite"))
        after["ticks"] = pipeline.summary.ticks
        wait_for(lambda: pipeline.summary.ticks > after["ticks"])  # the feed goes on
        pipeline.stop()

    threading.Thread(target=faults, daemon=True).start()
    with caplog.at_level(logging.INFO):
        try:
            summary = pipeline.run(live, live=True)
        finally:
            server.stop()
    assert summary.faults["PAST_END"] == 1 and summary.ticks > after["ticks"] > 0
    assert "error from Kite: mock: injected error" in caplog.text
    assert "malformed Kite messages" in caplog.text


def test_bad_credentials_are_fatal_not_a_reconnect_loop(window):
    server = serve(window, speed=1)
    stream = KiteStream(server.url, KEY, "expired", [256265], lambda t, m: None, **FAST)
    stream.start()
    try:
        assert wait_for(lambda: not stream.alive, 10)
        with pytest.raises(AuthError, match="403"):
            stream.check()
        assert stream.status[0].reconnects == 0
    finally:
        stream.stop()
        server.stop()


def test_token_limits_and_sharding():
    assert [len(s) for s in shard(list(range(7000)))] == [2334, 2333, 2333]
    assert [len(s) for s in shard(list(range(3000)))] == [3000]
    with pytest.raises(
        StreamError,
        match="9001 instruments: Kite allows at most 3 connections x 3000 tokens = 9000",
    ):
        shard(list(range(9001)))


def test_seven_thousand_instruments_over_three_connections():
    config = SimConfig(instruments=7000, ticks=400_000, seed=2)
    rows = instrument_rows(sim_instruments(config))
    server = MockKite(
        lambda: sim_messages(config), rows, api_key=KEY, access_token=TOKEN, speed=200
    ).start()
    got = Collector()
    tokens = [r["instrument_token"] for r in rows]
    stream = KiteStream(server.url, KEY, TOKEN, tokens, got, **FAST)
    stream.start()
    try:
        assert wait_for(lambda: all(s.state == "connected" for s in stream.status))
        assert wait_for(lambda: sum(len(m) > 1 for _, m in got.messages) > 20, 60)
    finally:
        stream.stop()
        server.stop()
    assert [s.tokens for s in stream.status] == [2334, 2333, 2333]
    assert server.connections == 3
    received = set(got.ticks()["instrument_token"].tolist())
    assert all(any(t in received for t in s) for s in shard(tokens))


def test_recording_replays_to_the_same_candles(window, tmp_path):
    server = serve(window, speed=60)
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(window).instruments]
    record = tmp_path / "rec.ticks"
    live = LiveSource(
        instruments, server.url, KEY, TOKEN, record=record, clock=server.stream_clock, **FAST
    )
    config = CandleConfig(intervals=(1,), grace_s=10.0)
    pipeline = Pipeline(CandleEngine(instruments, config), live_sink := MemorySink())

    def stop_after_a_candle():
        # Stopped once a candle has closed and been written: both runs then hold closed
        # and in-progress candles.
        wait_for(lambda: live_sink.candles, 60)
        pipeline.stop()

    threading.Thread(target=stop_after_a_candle, daemon=True).start()
    try:
        pipeline.run(live, live=True, clock=server.stream_clock)
    finally:
        server.stop()
    source = ReplaySource(record)
    assert source.instruments == instruments
    replayed = MemorySink()
    Pipeline(CandleEngine(instruments, config), replayed).run(source, finalize=False)
    assert replayed.candles == live_sink.candles and live_sink.candles


def test_instruments_dump_resolution_and_daily_cache(window, tmp_path):
    dump = read_dump(FIXTURES / "instruments_nse.csv")
    assert len(dump) == 99 and all(i.exchange == "NSE" for i in dump)
    first = dump[0]
    assert resolve([first.tradingsymbol, f"NSE:{first.tradingsymbol}"], dump, "x") == [first]
    with pytest.raises(InstrumentsError, match=r"2 unknown symbol.*: NOPE, BSE:ALSO"):
        resolve(["NOPE", first.tradingsymbol, "BSE:ALSO"], dump, "the dump")
    server = serve(window, speed=1)
    try:
        got = fetch_dump(KEY, TOKEN, tmp_path, date(2024, 1, 15), root=server.root)
        assert {i.tradingsymbol for i in got} >= {"INFY", "NIFTY 50"}
        cache = tmp_path / f"instruments-2024-01-15-127.0.0.1_{server.port}.csv"
        assert [p.name for p in tmp_path.glob("instruments-*")] == [cache.name]
        with pytest.raises(InstrumentsError, match="refused"):
            fetch_dump(KEY, "bad", tmp_path, date(2024, 1, 16), root=server.root)
    finally:
        server.stop()
    assert read_dump(cache) == got
    # Keyed by the API's host: a real run the same day does not take the local server's
    # tokens (the old cache was keyed by the date alone).
    assert dump_cache_path(tmp_path, date(2024, 1, 15), KITE_API_ROOT) != cache


def run_cli(*args, env=None, timeout=120):
    return cli(*args, env=env, timeout=timeout)


def test_cli_test_broker_and_live_errors(window, tmp_path):
    server = serve(window, speed=30)
    env = {
        "PATH": "/usr/bin:/bin",
        "FEEDENGINE_HOME": str(tmp_path),
        "KITE_API_KEY": KEY,
        "KITE_ACCESS_TOKEN": TOKEN,
        "KITE_WS_URL": server.url,
        "KITE_API_ROOT": server.root,
    }
    try:
        ok = run_cli("--test-broker", "--symbols", "INFY", "RELIANCE", env=env)
        assert ok.returncode == 0, ok.stderr
        assert "1/3 credentials ok" in ok.stdout and "3/3 stream ok" in ok.stdout
        bad = run_cli("--test-broker", env={**env, "KITE_ACCESS_TOKEN": "expired"})
        assert bad.returncode == 1 and "refused" in bad.stderr
        unknown = run_cli(
            "--symbols",
            "INFY",
            "NOTASYMBOL",
            "NSE:ALSONOT",
            "--csv",
            str(tmp_path / "c.csv"),
            env=env,
        )
        assert unknown.returncode == 1
        assert "2 unknown symbol(s) in the instruments dump: NOTASYMBOL, NSE:ALSONOT" in (
            unknown.stderr
        )
        forbidden = run_cli(
            "--symbols",
            "INFY",
            "--csv",
            str(tmp_path / "c.csv"),
            env={**env, "KITE_ACCESS_TOKEN": "expired"},
        )
        assert forbidden.returncode == 1
    finally:
        server.stop()
    missing = run_cli(
        "--symbols", "INFY", env={"PATH": "/usr/bin:/bin", "FEEDENGINE_HOME": str(tmp_path)}
    )
    assert missing.returncode == 2
    assert "missing KITE_API_KEY and KITE_ACCESS_TOKEN" in missing.stderr
    for proc in (unknown, forbidden, missing):
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        assert "Traceback" not in proc.stderr and len(errors) == 1
        assert errors[0].startswith("feedengine: error: ")


def test_a_dead_link_is_noticed_within_the_silence_timeout(window):
    """A black hole (no data, no reading: no close handshake can complete) is left within
    silence_s. It took silence_s + 10 s (websockets' close timeout) before, while the state
    still said connected."""
    server = serve(window, speed=40)
    stream = KiteStream(
        server.url,
        KEY,
        TOKEN,
        [i["instrument_token"] for i in TickReader(window).instruments],
        lambda t, m: None,
        **FAST,
    )
    stream.start()
    try:
        assert wait_for(lambda: stream.status[0].state == "connected" and server.subscribes)
        server.inject("blackhole")
        injected = time.monotonic()
        assert wait_for(lambda: stream.status[0].state != "connected", 30)
        noticed = time.monotonic() - injected
        assert noticed < FAST["silence_s"] + 0.5, f"noticed after {noticed:.1f} s"
        assert wait_for(lambda: stream.status[0].state == "connected")
        assert server.connections == 2
    finally:
        stream.stop()
        server.stop()


def test_a_handshake_timeout_is_its_own_line_and_part_of_the_backoff(window, caplog):
    """A server that accepts TCP but never answers the handshake: each failure is logged as
    an open timeout (it was "no message for 10 s"), and attempts start one backoff apart,
    counted from each attempt's start (the timeout was added to every step)."""
    server = serve(window, speed=1)
    server.inject("stall", seconds=60)
    stream = KiteStream(
        server.url,
        KEY,
        TOKEN,
        [256265],
        lambda t, m: None,
        silence_s=5.0,
        open_timeout_s=1.0,
        backoff_first_s=1.0,
        backoff_cap_s=1.0,
    )
    with caplog.at_level(logging.INFO, logger="feedengine.brokers.kite.ticker"):
        stream.start()
        try:
            assert wait_for(lambda: len(server.handshakes) >= 4, 30)
            assert stream.status[0].state != "connected"
        finally:
            stream.stop()
            server.stop()
    gaps = np.diff(list(server.handshakes)[:4])
    # Backoff 0.5-1.0 s with jitter, the timeout 1 s: attempts start about 1 s apart (they
    # were 1.5-2 s apart: timeout + backoff).
    assert gaps.min() > 0.9 and gaps.max() < 1.3, gaps
    assert "(open timeout)" in caplog.text
    assert "no message for" not in caplog.text


def test_a_failing_callback_is_fatal_not_a_lost_connection(window):
    """An OSError raised by the consumer (a full disk while recording) is the consumer's:
    it stops the stream and reaches check(); it was taken for a lost connection and the
    stream reconnected in a loop."""
    server = serve(window, speed=40)

    def full_disk(recv_ns, message):
        raise OSError(28, "No space left on device")

    stream = KiteStream(
        server.url,
        KEY,
        TOKEN,
        [i["instrument_token"] for i in TickReader(window).instruments],
        full_disk,
        **FAST,
    )
    stream.start()
    try:
        assert wait_for(lambda: not stream.alive, 10)
        with pytest.raises(OSError, match="No space left"):
            stream.check()
        assert stream.status[0].reconnects == 0 and stream.status[0].state == "failed"
    finally:
        stream.stop()
        server.stop()


def test_cli_test_broker_needs_a_tick_not_just_heartbeats(window, tmp_path):
    """A server that only sends heartbeats (a closed market) passed before."""
    rows = instrument_rows(TickReader(window).instruments)
    server = MockKite(lambda: iter(()), rows, api_key=KEY, access_token=TOKEN).start()
    env = {
        "PATH": "/usr/bin:/bin",
        "FEEDENGINE_HOME": str(tmp_path),
        "KITE_API_KEY": KEY,
        "KITE_ACCESS_TOKEN": TOKEN,
        "KITE_WS_URL": server.url,
        "KITE_API_ROOT": server.root,
    }
    try:
        proc = run_cli("--test-broker", env=env)
    finally:
        server.stop()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "2/3 instruments dump" in proc.stdout and "3/3" not in proc.stdout
    assert "but no tick of the 3 subscribed tokens in 10 s (" in proc.stderr
    assert "none with one; is the market closed?)" in proc.stderr
