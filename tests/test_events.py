"""Candle events against a real PostgreSQL and a real Mosquitto: NOTIFY at commit, the
candles on MQTT with exact prices, and a feed that goes on without the broker."""

import logging
from datetime import datetime

import numpy as np
import orjson
import psycopg
import pytest
from psycopg import sql

from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink
from feedengine.dtypes import RECORD_DTYPE
from feedengine.events import (
    CHANNEL,
    NOTIFY_LIMIT,
    CandlePublisher,
    PublishingSink,
    candle_messages,
    notice,
)
from feedengine.mqtt import MqttPublisher
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.simulator import SimConfig, simulate
from feedengine.spill import SpillFile
from feedengine.tables import TableNames, identifier, inspect_table, range_params, table_names
from tests.brokers import free_port, start_broker
from tests.processes import cli
from tests.test_heartbeat import Listener

INTERVALS = (1, 5)
#: A candle message's fields, in the order of :func:`table_candles`' columns.
FIELDS = ("start", "symbol", "exchange", "open", "high", "low", "close", "volume")
WAIT_S = 30.0


@pytest.fixture(scope="module")
def day_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("events") / "day.ticks"
    simulate(path, SimConfig(instruments=12, ticks=6_000, seed=5))
    return path


def replay(path, sink, spill=None):
    """Replay ``path`` through a pipeline into ``sink`` with a small ring (many blocks)."""
    source = ReplaySource(path)
    engine = CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS, ring_rows=64))
    pipeline = Pipeline(engine, sink, spill=spill, retry_first_s=0.01)
    return pipeline, pipeline.run(source)


class Notices:
    """A ``LISTEN`` client on a connection of its own, which checks, as each notification
    arrives, that the table already holds the notified latest candle."""

    def __init__(self, dsn):
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.reader = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        self.payloads: list[dict] = []
        self.unreadable: list[dict] = []

    def take(self, until):
        """Receive until ``until(payload)`` holds for one; False when none came in time."""
        for n in self.conn.notifies(timeout=WAIT_S):
            payload = orjson.loads(n.payload)
            if not self.readable(payload):
                self.unreadable.append(payload)
            self.payloads.append(payload)
            if until(payload):
                return True
        return False

    def readable(self, p):
        info = inspect_table(self.reader, p["table"])
        ns = int(datetime.fromisoformat(p["latest"]).timestamp()) * 10**9
        query = sql.SQL("SELECT count(*) FROM {} WHERE datetime >= %s AND datetime < %s")
        row = self.reader.execute(
            query.format(identifier(p["table"])), range_params(info, ns, ns + 10**9)
        ).fetchone()
        return row is not None and row[0] > 0

    def close(self):
        self.conn.close()
        self.reader.close()


def marker(minutes=15):
    """One candle of an interval the replays do not write: its notice ends a wait (the
    server delivers notifications in commit order)."""
    r = np.zeros(1, RECORD_DTYPE)
    r["bucket_start_ns"] = 1_705_290_300 * 10**9
    r["open"] = r["high"] = r["low"] = r["close"] = 100
    r["minutes"], r["decimals"], r["final"], r["symbol"], r["exchange"] = (
        minutes,
        2,
        1,
        b"M",
        b"NSE",
    )
    return r


class CountingSink(PostgresSink):
    """The real sink, counting the interval tables each committed write touched."""

    def __init__(self, *args, fail_first=None):
        super().__init__(*args)
        self.committed: dict[int, int] = {}
        self.fail_first = fail_first

    def write(self, records, **kw):
        if self.fail_first is not None:
            fail, self.fail_first = self.fail_first, None
            fail()
        written = super().write(records, **kw)
        for m in np.unique(records["minutes"]).tolist():
            self.committed[m] = self.committed.get(m, 0) + 1
        return written


def table_count(pg, name):
    return pg.execute(sql.SQL("SELECT count(*) FROM {}").format(identifier(name))).fetchone()[0]


def check_notices(pg, listener, sink, tables):
    """One notice per interval table of each committed block, each readable on arrival,
    and as many candles announced as the tables hold (a replay writes each once)."""
    sink.write(marker())  # the end of the wait
    assert listener.take(lambda p: p["interval"] == 15)
    got = [p for p in listener.payloads if p["interval"] != 15]
    assert not listener.unreadable
    for minutes, name in tables.items():
        mine = [p for p in got if p["interval"] == minutes]
        assert len(mine) == sink.committed[minutes]
        assert {p["table"] for p in mine} == {name}
        assert sum(p["rows"] for p in mine) == table_count(pg, name)
        assert all(p["final"] == p["rows"] for p in mine)  # a finished replay: all closed


def test_listen_gets_one_notice_per_committed_block(pg, pg_dsn, table_prefix, day_file):
    tables = table_names(INTERVALS, table_prefix)
    listener = Notices(pg_dsn)
    try:
        sink = CountingSink(pg_dsn, TableNames(table_prefix))
        pipeline, summary = replay(day_file, sink)
        assert summary.finished and pipeline.flusher.flushes > 2
        check_notices(pg, listener, sink, tables)
        latest = max(p["latest"] for p in listener.payloads if p["interval"] == 5)
        stored = pg.execute(
            sql.SQL("SELECT max(datetime) FROM {}").format(identifier(tables[5]))
        ).fetchone()[0]
        assert datetime.fromisoformat(latest).replace(tzinfo=None) == stored  # IST wall clock
    finally:
        listener.close()


def test_a_spilled_block_notifies_when_its_retry_commits(
    pg, pg_dsn, table_prefix, day_file, tmp_path
):
    tables = table_names(INTERVALS, table_prefix)
    listener = Notices(pg_dsn)

    def kill_session():  # the server ends our session: the first write fails and spills
        pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'feedengine' AND pid <> pg_backend_pid()"
        )

    try:
        sink = CountingSink(pg_dsn, TableNames(table_prefix), fail_first=kill_session)
        pipeline, summary = replay(day_file, sink, spill=SpillFile(tmp_path / "spill.bin"))
        assert pipeline.flusher.failures == 1 and summary.spilled == 0
        check_notices(pg, listener, sink, tables)
    finally:
        listener.close()


def test_a_notice_stays_far_below_the_notify_limit():
    block = np.concatenate([marker()] * 3)
    block["final"][0] = 0
    payload = notice(1440, "s" * 63 + "." + "t" * 63, block)
    assert len(payload.encode()) < NOTIFY_LIMIT // 20
    assert orjson.loads(payload) | {"table": ""} == {
        "interval": 1440,
        "table": "",
        "rows": 3,
        "final": 2,
        "latest": "2024-01-15T09:15:00+05:30",
    }


def test_messages_carry_exact_prices_and_one_version_per_candle():
    r = np.concatenate([marker(1), marker(1), marker(5)])
    r["open"] = [157370, 157371, -5]
    r["decimals"] = [2, 2, 4]
    r["volume"] = [7, 8, 9]
    (one, n1, p1), (five, n5, p5) = candle_messages(r)
    assert (one, n1, five, n5) == (1, 1, 5, 1)
    assert orjson.loads(p1) == [
        {
            "symbol": "M",
            "exchange": "NSE",
            "start": "2024-01-15T09:15:00+05:30",
            "open": "1573.71",
            "high": "1.00",
            "low": "1.00",
            "close": "1.00",
            "volume": 8,
            "final": True,
        }
    ]
    assert orjson.loads(p5)[0]["open"] == "-0.0005"


@pytest.fixture
def broker():
    port, stop = start_broker()
    yield port
    stop()


def connected_publisher(port, service):
    """A started publisher whose connection is up (its retained status has arrived)."""
    publisher = MqttPublisher("127.0.0.1", port, "fe", service)
    status = Listener("127.0.0.1", port, f"fe/{service}/status")
    publisher.start()
    try:
        assert status.wait(lambda ms: ms, WAIT_S)
    finally:
        status.close()
    assert publisher.connected
    return publisher


def table_candles(pg, name):
    rows = pg.execute(
        sql.SQL(
            'SELECT to_char(datetime, \'YYYY-MM-DD"T"HH24:MI:SS"+05:30"\'), tradingsymbol, '
            "exchange, open::text, high::text, low::text, close::text, volume FROM {}"
        ).format(identifier(name))
    ).fetchall()
    return sorted(rows)


def test_mqtt_subscriber_gets_each_intervals_candles_exactly(
    pg, pg_dsn, table_prefix, day_file, broker
):
    tables = table_names(INTERVALS, table_prefix)
    publisher = connected_publisher(broker, "ev")
    sub = Listener("127.0.0.1", broker, "fe/ev/candles/+")
    try:
        events = CandlePublisher(publisher)
        replay(day_file, PublishingSink(PostgresSink(pg_dsn, TableNames(table_prefix)), events))
        assert events.dropped == 0
        assert sub.wait(lambda ms: sum(len(orjson.loads(p)) for *_, p, _ in ms) >= events.published)
        for minutes, name in tables.items():
            got = sorted(
                tuple(c[k] for k in FIELDS)
                for _, p in sub.payloads(f"/candles/{minutes}")
                for c in orjson.loads(p)
            )
            assert got == table_candles(pg, name) and got
        assert all(not retain for *_, retain in sub.messages)
    finally:
        sub.close()
        publisher.stop()


def test_mqtt_down_the_feed_and_the_database_go_on(pg, pg_dsn, table_prefix, day_file, caplog):
    tables = table_names(INTERVALS, table_prefix)
    publisher = MqttPublisher("127.0.0.1", free_port(), "fe", "down")  # nobody listens
    publisher.start()
    events = CandlePublisher(publisher)
    caplog.set_level(logging.WARNING, "feedengine.events")
    try:
        sink = PublishingSink(PostgresSink(pg_dsn, TableNames(table_prefix)), events)
        _, summary = replay(day_file, sink)
    finally:
        publisher.stop()
    assert summary.finished and summary.spilled == 0
    assert events.published == 0 and events.dropped == sum(summary.candles.values())
    for minutes, name in tables.items():
        assert table_count(pg, name) == summary.candles[minutes] > 0
    dropping = [r for r in caplog.records if "dropping candles" in r.getMessage()]
    assert len(dropping) == 1  # once, not per block


def test_a_full_queue_drops_without_blocking(caplog):
    publisher = MqttPublisher("127.0.0.1", free_port(), "fe", "full")  # never started
    events = CandlePublisher(publisher, queue_blocks=2)  # nor its thread: nothing is taken
    for _ in range(4):
        events.put(marker())
    assert events.dropped == 2
    assert caplog.text.count("the queue is full") == 1


def test_a_replay_run_announces_its_candles_both_ways(
    pg, pg_dsn, table_prefix, day_file, broker, tmp_path
):
    tables = table_names(INTERVALS, table_prefix)
    sub = Listener("127.0.0.1", broker, "feedengine/cli/candles/+")
    listener = Notices(pg_dsn)
    env = {
        "PG_CONN_STR": pg_dsn,
        "CANDLE_TABLE_TEMPLATE": table_prefix,
        "CANDLE_INTERVALS": "1,5",
        "MQTT_BROKER": "127.0.0.1",
        "MQTT_PORT": str(broker),
        "SERVICE_ID": "cli",
    }
    try:
        run = cli("--replay", day_file, env=env, home=tmp_path / "home")
        assert run.returncode == 0, run.stderr
        stored = {m: table_count(pg, name) for m, name in tables.items()}
        announced = dict.fromkeys(INTERVALS, 0)

        def count(p):
            announced[p["interval"]] += p["rows"]
            return announced == stored

        assert listener.take(count) and not listener.unreadable
        assert sub.wait(
            lambda ms: sum(len(orjson.loads(p)) for *_, p, _ in ms) == sum(stored.values())
        )
    finally:
        listener.close()
        sub.close()
