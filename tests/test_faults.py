"""Fault runs: each ends with exactly the rows of an uninterrupted run (SPEC sections 5-7)."""

import shutil
import signal
import threading
import uuid

import psycopg
import pytest

from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.live import LiveSource
from feedengine.brokers.kite.mockserver import MockKite, tick_file_source
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink, embedded_dsn
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.sink import MemorySink
from feedengine.spill import SpillFile
from feedengine.tables import TableNames, table_names
from feedengine.tickfile import TickReader
from tests.brokers import start_broker
from tests.days import INTERVALS, db_candles, replayed, small_day
from tests.processes import Service, clean_env, cli, ticks_recorded, wait_until


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    return small_day(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def expected(day):
    return replayed(day)


@pytest.fixture
def own_server(tmp_path):
    """A PostgreSQL server of the test's own, to stop and start at will."""
    import pgserver
    from pgserver._commands import pg_ctl

    dsn = embedded_dsn(tmp_path)
    server = pgserver.get_server(tmp_path / "pgdata", cleanup_mode=None)

    def stop():
        pg_ctl(
            ["-m", "immediate", "-w", "stop"], pgdata=tmp_path / "pgdata", user=server.system_user
        )

    def start():
        server.ensure_postgres_running()

    yield dsn, stop, start
    pg_ctl(["-m", "fast", "-w", "stop"], pgdata=tmp_path / "pgdata", user=server.system_user)
    shutil.rmtree(tmp_path / "pgdata", ignore_errors=True)


def test_postgres_stopped_and_started_during_a_replay(own_server, day, expected, tmp_path):
    dsn, stop, start = own_server
    tables = table_names(INTERVALS)
    source = ReplaySource(day, speed=6000)  # the 6.6-hour day in about 4 s
    pipeline = Pipeline(
        CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS)),
        PostgresSink(dsn, TableNames()),
        spill=SpillFile(tmp_path / "spill.bin"),
        retry_first_s=0.05,
    )
    batches = source.batches

    def with_an_outage():
        """The server goes down once rows were committed, and comes back once the flusher
        has failed to write: an outage mid-day, whatever the machine's speed."""
        down = up = False
        for batch in batches():
            flusher = pipeline.flusher
            if not down and flusher.rows_written > 0:
                stop()
                down = True
            elif down and not up and flusher.failures > 0:
                start()
                up = True
            yield batch
        assert down, "the replay ended before any row was committed"
        if not up:
            assert wait_until(lambda: pipeline.flusher.failures > 0)
            start()

    source.batches = with_an_outage
    summary = pipeline.run(source)
    assert pipeline.flusher.failures > 0, "the outage was not noticed"
    assert summary.spilled == 0 and SpillFile(tmp_path / "spill.bin").rows == 0
    with psycopg.connect(dsn) as conn:
        assert db_candles(conn, tables) == expected


def kill_when(args, env, condition):
    """Run feedengine until ``condition()`` holds, then SIGKILL it; return its status."""
    service = Service(*args, env=env)
    try:
        assert wait_until(condition), service.stderr
    finally:
        status = service.kill()  # also when the condition failed: no process left behind
    return status


def test_sigkill_with_the_database_down_then_restart(
    pg, pg_dsn, table_prefix, day, expected, tmp_path
):
    base = {"CANDLE_TABLE_TEMPLATE": table_prefix}
    dead = clean_env(tmp_path, PG_CONN_STR="postgresql://nobody@127.0.0.1:1/none", **base)
    spill = tmp_path / "spill.bin"
    status = kill_when(
        ["--replay", day, "--speed", "3000"],
        dead,
        lambda: spill.exists() and SpillFile(spill).rows > 0,
    )
    assert status == -signal.SIGKILL
    spilled = SpillFile(spill).rows
    assert spilled > 0  # written while the database was down, kept across the kill
    proc = cli("--replay", day, env={"PG_CONN_STR": pg_dsn, **base}, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{spilled} spilled candle rows from an earlier run" in proc.stderr
    assert SpillFile(tmp_path / "spill.bin").rows == 0
    assert db_candles(pg, table_names(INTERVALS, table_prefix)) == expected


def test_sigkill_while_recording_leaves_a_readable_tick_file(tmp_path):
    record = tmp_path / "rec.ticks"

    status = kill_when(
        ["--simulate", "--record", record, "--csv", tmp_path / "c.csv", "--no-mqtt"],
        clean_env(tmp_path),
        lambda: ticks_recorded(record) >= 5,
    )
    assert status == -signal.SIGKILL
    assert ticks_recorded(record) >= 5
    proc = cli("--replay", record, "--csv", tmp_path / "r.csv", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ticks decoded      0" not in proc.stdout


def test_mqtt_broker_stopped_mid_run_does_not_touch_the_feed(day, expected, tmp_path):
    port, stop_broker = start_broker()
    env = clean_env(
        tmp_path,
        MQTT_BROKER="127.0.0.1",
        MQTT_PORT=str(port),
        HEARTBEAT_INTERVAL="1",
        SERVICE_ID=f"t{uuid.uuid4().hex[:6]}",
    )
    out = tmp_path / "c.csv"
    service = Service("--replay", day, "--speed", "4000", "--csv", out, env=env)
    service.wait_for_line("MQTT connected")
    stop_broker()
    service.wait_for_line("lost")
    assert service.finish() == 0, service.stderr
    latest = {}
    for line in out.read_text().splitlines()[1:]:
        dt, sym, minutes, *values, exchange = line.split(",")
        latest[(int(minutes), sym, exchange, dt)] = values
    want = {
        (m, s, e, dt.strftime("%Y-%m-%d %H:%M:%S")): [str(x) for x in v]
        for (m, s, e, dt), v in expected.items()
    }
    assert latest == want


def test_kite_dropped_repeatedly_loses_only_unreceived_ticks(day, tmp_path):
    messages, rows = tick_file_source(day)
    server = MockKite(messages, rows, api_key="k", access_token="t", speed=3000).start()
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(day).instruments]
    record = tmp_path / "received.ticks"
    live = LiveSource(
        instruments,
        server.url,
        "k",
        "t",
        record=record,
        clock=server.stream_clock,
        backoff_first_s=0.05,
        silence_s=2.0,
        # At 3000x a reconnect spans minutes of market time: a gap, after which the live
        # candles count volume afresh (tests/test_gap_repair.py). Here every reconnect is
        # the same connection going on, so that a replay of what arrived gives its candles.
        gap_s=float("inf"),
    )
    config = CandleConfig(intervals=INTERVALS, grace_s=30.0)
    pipeline = Pipeline(CandleEngine(instruments, config), live_sink := MemorySink())
    errors = []

    def faults():
        try:
            status = live.status[0]
            for k in range(4):
                seen = status.messages
                assert wait_until(
                    lambda seen=seen: status.state == "connected" and status.messages > seen
                )
                server.inject("drop")
                assert wait_until(lambda k=k: status.reconnects > k)
            server.finished.wait(60)
            # Nothing more is received; every message recorded at the socket reaches the
            # candles before the stop.
            live.stream.stop()
            recorded = live.recorder.writer
            assert wait_until(lambda: pipeline.summary.messages >= recorded.records)
        except BaseException as e:
            errors.append(e)
        finally:
            pipeline.stop()

    threading.Thread(target=faults, daemon=True).start()
    try:
        pipeline.run(live, live=True, clock=server.stream_clock)
    finally:
        server.stop()
    assert not errors, errors
    assert live.status[0].reconnects >= 4
    # The candles are exactly those of the ticks that were received: replaying the
    # recording of this very run gives the same rows, no more, no fewer.
    replayed = MemorySink()
    source = ReplaySource(record)
    Pipeline(CandleEngine(instruments, config), replayed).run(source, finalize=False)
    assert replayed.candles == live_sink.candles and live_sink.candles
