"""An Angel One tick file replayed into PostgreSQL: exactly the candles SPEC section 4 gives.

The file holds Angel's binary messages (one packet each) with ``"broker": "angelone"`` in
its meta; the replay takes the broker, the decoder and the instruments from it. The
expected candles come from the plain-Python Angel decoder and the reference aggregator.
"""

import signal
import threading
from datetime import datetime
from datetime import time as dtime

import numpy as np
import psycopg

from feedengine.brokers.angelone import reference as angel_ref
from feedengine.brokers.angelone import simencode as angel_sim
from feedengine.brokers.angelone.auth import Session
from feedengine.brokers.angelone.instruments import AngelInstrument
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
from feedengine.brokers.angelone.wire import Mode, encode
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink
from feedengine.pipeline import Pipeline
from feedengine.reference import candles as ref_candles
from feedengine.replay import ReplaySource
from feedengine.sessions import DEFAULT_SESSIONS, IST, NS_PER_S
from feedengine.simulator import SimConfig, simulate
from feedengine.sink import MemorySink
from feedengine.tables import TableNames
from feedengine.tickfile import TickReader, TickWriter, make_meta
from tests.processes import Service, clean_env, cli, ticks_recorded, wait_until

INTERVALS = (1, 5, 15)
#: 2024-01-15 09:10 IST, five minutes before the equity open.
START_S = int(datetime(2024, 1, 15, 9, 10, tzinfo=IST).timestamp())
INSTRUMENTS = [
    AngelInstrument("2885", 1, "RELIANCE-EQ", "NSE"),
    AngelInstrument("11536", 1, "TCS-EQ", "NSE"),
    AngelInstrument("35003", 2, "NIFTY24JANFUT", "NFO"),
    AngelInstrument("1", 13, "USDINR24JANFUT", "CDS"),  # 10^7 per rupee
    AngelInstrument("234230", 5, "CRUDEOIL24JANFUT", "MCX"),
]
#: Price units to start from: RELIANCE 2,500.00, TCS 3,900.00, NIFTY 21,700.00,
#: USDINR 83.1234567, CRUDE 6,100.00.
FIRST_PRICES = [250_000, 390_000, 2_170_000, 831_234_567, 610_000]


def angel_session(seed: int, ticks: int) -> list[tuple[int, bytes]]:
    """``(recv_ns, message)`` of half an hour around the equity open, with what a real
    stream has too: ltp packets without volume, ticks without an exchange time, trades
    between snapshots, a depth packet, a cut packet and an instrument not subscribed."""
    rng = np.random.default_rng(seed)
    prices = list(FIRST_PRICES)
    volume = [0] * len(INSTRUMENTS)
    high = list(FIRST_PRICES)
    low = list(FIRST_PRICES)
    out: list[tuple[int, bytes]] = []
    recv_ns = START_S * NS_PER_S
    for n in range(ticks):
        recv_ns += int(rng.integers(1, 2 * 30 * 60 * NS_PER_S // ticks))
        i = int(rng.integers(len(INSTRUMENTS)))
        inst = INSTRUMENTS[i]
        step = max(1, prices[i] // 2000)
        prices[i] = max(1, prices[i] + int(rng.integers(-3, 4)) * step)
        volume[i] += int(rng.integers(0, 500))
        high[i], low[i] = max(high[i], prices[i]), min(low[i], prices[i])
        if rng.random() < 0.05:  # a trade between snapshots, beyond the day's range
            high[i] += step * int(rng.integers(1, 5))
        lag_ms = int(rng.integers(0, 1500))
        stamp_ms = 0 if rng.random() < 0.05 else recv_ns // 1_000_000 - lag_ms
        mode = [Mode.LTP, Mode.QUOTE, Mode.SNAP_QUOTE][int(rng.integers(3))]
        tick = {
            "subscription_mode": mode,
            "exchange_type": inst.exchange_type,
            "token": inst.token,
            "sequence_number": n,
            "exchange_timestamp": stamp_ms,
            "last_traded_price": prices[i],
            "volume_trade_for_the_day": volume[i],
            "open_price_of_the_day": FIRST_PRICES[i],
            "high_price_of_the_day": high[i],
            "low_price_of_the_day": low[i],
            "closed_price": FIRST_PRICES[i],
        }
        out.append((recv_ns, encode(tick)))
        if n == ticks // 3:
            out.append((recv_ns, encode(tick | {"token": "999999"})))  # not subscribed
            out.append((recv_ns, encode(tick)[:60]))  # cut short
            depth = {"subscription_mode": Mode.DEPTH, "exchange_type": 1, "token": inst.token}
            out.append((recv_ns, encode(depth)))  # no candle data, no fault
    return out


def write_angel_file(path, messages):
    meta = make_meta("test", [i.to_dict() for i in INSTRUMENTS], broker="angelone")
    with TickWriter(path, meta) as w:
        for recv_ns, message in messages:
            w.write(recv_ns, message)
    return path


def expected(messages) -> dict[tuple[str, int, int], tuple[int, ...]]:
    """{(symbol, minutes, bucket start ns): (o, h, l, c, v)} by the reference."""
    slots = {inst.key: slot for slot, inst in enumerate(INSTRUMENTS)}
    rows, _, _ = angel_ref.decode_records([m for _, m in messages], [t for t, _ in messages], slots)
    sessions = {
        slot: (DEFAULT_SESSIONS[i.market].open_s, DEFAULT_SESSIONS[i.market].close_s)
        for slot, i in enumerate(INSTRUMENTS)
    }
    result = ref_candles.aggregate(rows, sessions, list(INTERVALS))
    return {
        (INSTRUMENTS[slot].tradingsymbol, minutes, start): tuple(values)
        for slot, minutes, start, *values in result.rows
    }


def stored(dsn, table_prefix) -> dict[tuple[str, int, int], tuple[int, ...]]:
    scale = {i.tradingsymbol: 10**i.decimals for i in INSTRUMENTS}
    exchanges = {i.tradingsymbol: i.exchange for i in INSTRUMENTS}
    out = {}
    with psycopg.connect(dsn) as conn:
        for minutes in INTERVALS:
            for symbol, stamp, exchange, *prices, volume in conn.execute(
                "SELECT tradingsymbol, datetime, exchange, open, high, low, close, volume "
                f'FROM "{table_prefix.format(interval=minutes)}"'
            ):
                assert exchange == exchanges[symbol]
                start = int(stamp.replace(tzinfo=IST).timestamp()) * NS_PER_S
                units = tuple(int(p * scale[symbol]) for p in prices)
                out[(symbol, minutes, start)] = (*units, volume)
    return out


def test_an_angel_tick_file_replays_into_postgres_as_the_spec_says(tmp_path, pg_dsn, table_prefix):
    messages = angel_session(seed=7, ticks=6000)
    path = write_angel_file(tmp_path / "angel.ticks", messages)
    source = ReplaySource(path)
    assert source.broker == "angelone"
    assert [i.key for i in source.instruments] == [i.key for i in INSTRUMENTS]
    engine = CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS))
    summary = Pipeline(engine, PostgresSink(pg_dsn, TableNames(table_prefix))).run(source)
    want = expected(messages)
    assert stored(pg_dsn, table_prefix) == want
    assert len(want) > 150
    # Every instrument made candles, the currency pair with its 7 decimals intact.
    assert {s for s, _, _ in want} == {i.tradingsymbol for i in INSTRUMENTS}
    assert summary.faults == {"TRUNCATED": 1}
    assert summary.counters["unknown"] == 1 and summary.counters["preopen"] > 0


def test_the_cli_takes_the_broker_from_the_file(tmp_path):
    messages = angel_session(seed=8, ticks=400)
    path = write_angel_file(tmp_path / "angel.ticks", messages)
    out = tmp_path / "c.csv"
    proc = cli("--replay", path, "--intervals", "1", "--csv", out, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert any(",USDINR24JANFUT,1," in line and ",CDS" in line for line in lines)
    refused = cli("--replay", path, "--broker", "kite", "--csv", out, home=tmp_path)
    assert refused.returncode == 2
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "--broker kite, but angel.ticks holds angelone's messages (a replay takes the tick "
            "file's broker; drop --broker)"
        )
    )


def test_a_tick_file_of_an_unknown_broker_is_one_line(tmp_path):
    path = tmp_path / "x.ticks"
    with TickWriter(path, make_meta("test", [], broker="upstox")):
        pass
    proc = cli("--replay", path, "--csv", tmp_path / "c.csv", home=tmp_path)
    assert proc.returncode != 0
    assert "unknown broker 'upstox' (choose from angelone, kite)" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- live against the local Angel server ------------------------------------------------

#: Stream time per wall second: the half-hour session plays in 15 s.
SPEED = 120
FAST = {"backoff_first_s": 0.05, "silence_s": 2.0, "ping_interval_s": 0.5}


def test_a_live_run_gives_the_candles_of_a_replay_of_its_own_recording(
    tmp_path, pg_dsn, table_prefix
):
    played = write_angel_file(tmp_path / "market.ticks", angel_session(seed=9, ticks=4000))
    packets, _ = tick_file_packets(played)
    server = MockAngel(packets, speed=SPEED).start()
    session = Session(DEFAULT_API_KEY, DEFAULT_CLIENT_CODE, DEFAULT_JWT, DEFAULT_FEED_TOKEN, "r")
    recording = tmp_path / "recorded.ticks"
    live = AngelLiveSource(
        INSTRUMENTS, server.url, session, record=recording, clock=server.stream_clock, **FAST
    )
    live_tables = table_prefix.replace("_{interval}", "_live_{interval}")
    pipeline = Pipeline(
        CandleEngine(INSTRUMENTS, CandleConfig(intervals=INTERVALS)),
        PostgresSink(pg_dsn, TableNames(live_tables)),
    )
    errors = []

    def stop_when_played():
        try:
            assert server.finished.wait(120)
            sent = server.packets_sent
            assert wait_until(lambda: live.status[0].messages >= sent)
        except BaseException as e:
            errors.append(e)
        finally:
            pipeline.stop()

    threading.Thread(target=stop_when_played, daemon=True).start()
    try:
        summary = pipeline.run(live, live=True, clock=server.stream_clock)
    finally:
        server.stop()
    assert not errors, errors
    assert summary.ticks > 3000
    source = ReplaySource(recording)
    assert source.broker == "angelone"
    replayed = Pipeline(
        CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS)),
        PostgresSink(pg_dsn, TableNames(table_prefix)),
    ).run(source)
    assert replayed.ticks == summary.ticks
    got = stored(pg_dsn, live_tables)
    assert got == stored(pg_dsn, table_prefix)
    assert len(got) > 150


# --- one market, two brokers -------------------------------------------------------------


def test_the_same_market_makes_the_same_candles_through_either_broker(tmp_path):
    """The simulator's market encoded as Kite's feed and as Angel One's: both replays give
    the same candles (names aside: Angel's NSE equities end in -EQ)."""
    config = SimConfig(instruments=40, ticks=30_000, start=dtime(9, 15), end=dtime(9, 45), seed=3)
    kite_file = tmp_path / "kite.ticks"
    simulate(kite_file, config)
    angel_file = tmp_path / "angel.ticks"
    with TickWriter(angel_file, angel_sim.sim_meta(config)) as w:
        for recv_ns, message in angel_sim.messages(config):
            w.write(recv_ns, message)
    got = {}
    for path in (kite_file, angel_file):
        source = ReplaySource(path)
        sink = MemorySink()
        Pipeline(CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS)), sink).run(
            source
        )
        got[source.broker] = {
            (m, exchange, symbol.removesuffix("-EQ"), start): values
            for (m, symbol, exchange, start), values in sink.candles.items()
        }
    served = {(exchange, symbol) for _, exchange, symbol, _ in got["angelone"]}
    kite = {k: v for k, v in got["kite"].items() if (k[1], k[2]) in served}
    assert len(served) >= 30 and len(kite) > 1000
    assert got["angelone"] == kite


def test_simulate_angel_one_record_then_replay(tmp_path):
    """``--simulate --broker angelone`` at any hour: Angel's packets, recorded with Angel's
    meta, and the recording replays."""
    record = tmp_path / "sim.ticks"
    service = Service(
        "--simulate",
        "--broker",
        "angelone",
        "--symbols",
        "NSE:RELIANCE-EQ",
        "INFY",
        "MCX:CRUDEOIL",
        "--record",
        record,
        "--csv",
        tmp_path / "c.csv",
        "--no-mqtt",
        env=clean_env(tmp_path),
    )
    service.wait_for_line(f"recording every message to {record}")
    assert wait_until(lambda: ticks_recorded(record) >= 3), service.stderr
    service.send(signal.SIGINT)
    assert service.finish() == 0, service.stderr
    reader = TickReader(record)
    assert reader.meta["broker"] == "angelone"
    assert {i["tradingsymbol"] for i in reader.instruments} >= {"RELIANCE-EQ", "INFY-EQ"}
    replay = cli("--replay", record, "--csv", tmp_path / "r.csv", home=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert "ticks decoded      0" not in replay.stdout


def test_test_broker_logs_in_and_streams_through_the_command_line(tmp_path):
    """``--broker angelone --test-broker`` against the local Angel server: the SDK's login,
    the scrip master it serves, a tick of a named instrument; a wrong PIN is one line."""
    played = write_angel_file(tmp_path / "m.ticks", angel_session(seed=10, ticks=3000))
    packets, rows = tick_file_packets(played)
    server = MockAngel(packets, scrip_master=rows, speed=SPEED).start()
    env = {
        "ANGEL_API_KEY": DEFAULT_API_KEY,
        "ANGEL_CLIENT_CODE": DEFAULT_CLIENT_CODE,
        "ANGEL_PIN": DEFAULT_PIN,
        "ANGEL_TOTP_SECRET": DEFAULT_TOTP_SECRET,
        "ANGEL_WS_URL": server.url,
        "ANGEL_API_ROOT": server.root,
        "ANGEL_SCRIP_MASTER_URL": server.scrip_master_url,
    }
    try:
        ok = cli(
            "--broker", "angelone", "--test-broker", "--symbols", "TCS", env=env, home=tmp_path
        )
        refused = cli(
            "--broker", "angelone", "--test-broker", env={**env, "ANGEL_PIN": "0000"},
            home=tmp_path,
        )  # fmt: skip
    finally:
        server.stop()
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == f"1/3 credentials ok: client {DEFAULT_CLIENT_CODE}"
    assert ok.stdout.splitlines()[1] == f"2/3 scrip master: {len(INSTRUMENTS)} instruments"
    assert ok.stdout.splitlines()[2].startswith("3/3 stream ok: 1 instruments, ticks arrived")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
