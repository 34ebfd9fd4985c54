"""A replay into tables that do not exist yet: loaded in one transaction per table, keyed at
the end, committed together; a failed or crashed load loses nothing and doubles nothing."""

import logging
import threading
import time

import numpy as np
import pytest
from psycopg import sql

from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink
from feedengine.dtypes import RECORD_DTYPE
from feedengine.errors import SinkUnavailable
from feedengine.events import CHANNEL
from feedengine.pipeline import JOURNAL_SUFFIX, Pipeline
from feedengine.replay import ReplaySource
from feedengine.spill import SpillFile
from feedengine.tables import TableNames, lock_key, table_names

from .days import INTERVALS, db_candles, replayed, small_day
from .processes import wait_until


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    return small_day(tmp_path_factory.mktemp("bulkload"))


@pytest.fixture(scope="module")
def expected(day):
    return replayed(day)


def replay(day, sink, tmp_path, **run):
    source = ReplaySource(day)
    engine = CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS))
    spill = SpillFile(tmp_path / "spill.bin")
    pipeline = Pipeline(engine, sink, spill=spill, retry_first_s=0.01)
    summary = pipeline.run(source, load=True, **run)
    return summary, spill


def keys(pg, tables):
    """Each table's primary key columns."""
    return {
        m: pg.execute(
            "SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_constraint c "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
            "WHERE c.conrelid = to_regclass(%s) AND c.contype = 'p'",
            (f'"{name}"',),
        ).fetchone()[0]
        for m, name in tables.items()
    }


def exists(pg, tables):
    """The intervals whose tables exist."""
    return [
        m
        for m, name in tables.items()
        if pg.execute("SELECT to_regclass(%s)", (f'"{name}"',)).fetchone()[0] is not None
    ]


def test_a_replay_into_new_tables_is_one_load_keyed_at_the_end(
    pg, pg_dsn, table_prefix, day, expected, tmp_path
):
    tables = table_names(INTERVALS, table_prefix)
    pg.execute(f"LISTEN {CHANNEL}")
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    summary, spill = replay(day, sink, tmp_path)
    assert db_candles(pg, tables) == expected
    key = ["datetime", "exchange", "tradingsymbol"]
    assert keys(pg, tables) == {1: key, 5: key, 15: key}
    by_interval = {m: sum(k[0] == m for k in expected) for m in INTERVALS}
    assert summary.candles == by_interval and summary.spilled == 0 and spill.rows == 0
    assert not (tmp_path / ("spill.bin" + JOURNAL_SUFFIX)).exists()
    notices = [n.payload for n in pg.notifies(timeout=1, stop_after=len(INTERVALS))]
    assert len(notices) == len(INTERVALS)  # one per table, at the commit
    for m in INTERVALS:
        (payload,) = [n for n in notices if f'"interval":{m},' in n]
        assert f'"rows":{by_interval[m]},"final":{by_interval[m]}' in payload


def test_an_existing_table_means_the_ordinary_writes(
    pg, pg_dsn, table_prefix, day, expected, tmp_path
):
    tables = table_names(INTERVALS, table_prefix)
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    sink.open((15,), [])  # the 15-minute table exists: no load
    sink.close()
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    assert not sink.open_load(INTERVALS, [])
    assert not sink.loading
    sink.close()
    summary, _ = replay(day, PostgresSink(pg_dsn, TableNames(table_prefix)), tmp_path)
    assert db_candles(pg, tables) == expected
    assert summary.spilled == 0


class LoadThatFails(PostgresSink):
    """A sink whose bulk load loses a lane's connection at its first write or its commit."""

    def __init__(self, pg, when, *args):
        super().__init__(*args)
        self.pg, self.when, self.failed = pg, when, False

    def _cut(self):
        lane = next(iter(self._load._lanes.values()))
        self.pg.execute("SELECT pg_terminate_backend(%s)", (lane.conn.info.backend_pid,))
        self.failed = True

    def write(self, records, **kw):
        if self.when == "write" and self.loading and not self.failed:
            self._cut()
        return super().write(records, **kw)

    def commit_load(self):
        if self.when == "commit":
            self._cut()
        return super().commit_load()


@pytest.mark.parametrize("when", ["write", "commit"])
def test_a_failed_load_is_written_again_the_ordinary_way(
    pg, pg_dsn, table_prefix, day, expected, tmp_path, when, caplog
):
    tables = table_names(INTERVALS, table_prefix)
    sink = LoadThatFails(pg, when, pg_dsn, TableNames(table_prefix))
    summary, spill = replay(day, sink, tmp_path)
    assert sink.failed
    assert "candle write failed" in caplog.text
    assert db_candles(pg, tables) == expected
    key = ["datetime", "exchange", "tradingsymbol"]
    assert keys(pg, tables) == {1: key, 5: key, 15: key}
    by_interval = {m: sum(k[0] == m for k in expected) for m in INTERVALS}
    assert summary.candles == by_interval  # counted once, when they were committed
    assert summary.spilled == 0 and spill.rows == 0
    assert not (tmp_path / ("spill.bin" + JOURNAL_SUFFIX)).exists()


def candles():
    """One candle of each interval."""
    r = np.zeros(3, RECORD_DTYPE)
    r["minutes"] = INTERVALS
    r["bucket_start_ns"] = 1_705_290_300 * 10**9
    r["open"] = r["high"] = r["low"] = r["close"] = 100
    r["decimals"], r["final"], r["symbol"], r["exchange"] = 2, 1, b"INFY", b"NSE"
    return r


def test_a_candle_loaded_twice_rolls_the_load_back(pg, pg_dsn, table_prefix):
    tables = table_names(INTERVALS, table_prefix)
    r = candles()
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    try:
        assert sink.open_load(INTERVALS, [])
        assert sink.write(r) == 3
        assert sink.write(r) == 3  # the same candles in a later block
        with pytest.raises(SinkUnavailable, match="loaded twice"):
            sink.commit_load()
        assert exists(pg, tables) == []
        assert not sink.loading
        assert sink.write(r) == 3  # the ordinary way: tables created with their keys
    finally:
        sink.close()
    counts = [pg.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables.values()]
    assert counts == [1, 1, 1]


def test_a_load_never_committed_leaves_no_table(pg, pg_dsn, table_prefix):
    """A load the process never commits (it stopped with an error, or was killed: the server
    ends a dead client's transaction alike) leaves nothing, not even the tables."""
    tables = table_names(INTERVALS, table_prefix)
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    assert sink.open_load(INTERVALS, [])
    assert sink.write(candles()) == 3
    assert exists(pg, tables) == []  # not visible before the commit
    sink.close()
    assert exists(pg, tables) == []


def test_a_crashed_loads_journal_is_not_written(pg, pg_dsn, table_prefix, day, expected, tmp_path):
    """A journal left by a killed load holds rows never committed, of a replay that starts
    again from its beginning: the next load starts a journal of its own."""
    stale = SpillFile(tmp_path / ("spill.bin" + JOURNAL_SUFFIX))
    r = np.zeros(1, RECORD_DTYPE)
    r["minutes"], r["bucket_start_ns"], r["symbol"], r["exchange"] = 1, 0, b"STALE", b"NSE"
    stale.append(r)
    tables = table_names(INTERVALS, table_prefix)
    summary, spill = replay(day, PostgresSink(pg_dsn, TableNames(table_prefix)), tmp_path)
    assert db_candles(pg, tables) == expected
    assert summary.spilled == 0 and spill.rows == 0
    assert not (tmp_path / ("spill.bin" + JOURNAL_SUFFIX)).exists()


def test_a_lane_without_rows_for_long_keeps_its_transaction(pg, pg_dsn, table_prefix):
    """The server ends a session idle in a transaction for three write bounds; a 15-minute
    lane can get no rows for longer than that while the 1-minute lane writes on."""
    tables = table_names(INTERVALS, table_prefix)
    sink = PostgresSink(pg_dsn, TableNames(table_prefix), write_timeout_s=0.4)
    try:
        assert sink.open_load(INTERVALS, [])
        one_minute = candles()[:1]
        started = time.monotonic()
        for k in range(5):  # 1-minute rows only, 0.45 s apart: 1.8 s > 3 x 0.4 s idle
            one_minute["bucket_start_ns"] += 60 * 10**9
            assert sink.write(one_minute) == 1
            if k < 4:
                time.sleep(0.45)  # the elapsed time is the point: the server's idle bound
        assert time.monotonic() - started > 3 * 0.4
        sink.commit_load()
    finally:
        sink.close()
    assert exists(pg, tables) == list(INTERVALS)


def test_a_load_stopped_mid_replay_commits_and_the_resumed_run_completes_it(
    pg, pg_dsn, table_prefix, day, expected, tmp_path, caplog
):
    """A stop (a signal) mid-load commits what was loaded, open candles as in-progress
    rows, and checkpoints; the restart finds the tables and upserts the rest."""
    tables = table_names(INTERVALS, table_prefix)
    checkpoint = tmp_path / "checkpoint.npz"

    def run(stop_after):
        source = ReplaySource(day)
        engine = CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS))
        pipeline = Pipeline(
            engine,
            PostgresSink(pg_dsn, TableNames(table_prefix)),
            checkpoint=checkpoint,
            spill=SpillFile(tmp_path / "spill.bin"),
        )
        batches = iter(range(stop_after or 10**9))
        pipeline.on_batch = lambda: next(batches, None) is None and pipeline.stop()
        return pipeline.run(source, load=True)

    with caplog.at_level(logging.INFO, logger="feedengine.flusher"):
        first = run(stop_after=3)
    assert "bulk load committed" in caplog.text
    assert not first.finished and checkpoint.exists()
    assert exists(pg, tables) == list(INTERVALS)  # committed at the stop
    in_progress = pg.execute(f'SELECT count(*) FROM "{tables[1]}"').fetchone()[0]
    assert 0 < in_progress < sum(k[0] == 1 for k in expected)
    second = run(stop_after=None)
    assert second.finished and not checkpoint.exists()
    assert db_candles(pg, tables) == expected


def test_a_second_load_of_the_same_tables_waits_then_writes_the_ordinary_way(
    pg, pg_dsn, table_prefix
):
    """Two replays into the same new tables: the second waits for the first's locks, finds
    the tables committed, and upserts."""
    tables = table_names(INTERVALS, table_prefix)
    first = PostgresSink(pg_dsn, TableNames(table_prefix))
    second = PostgresSink(pg_dsn, TableNames(table_prefix))
    try:
        assert first.open_load(INTERVALS, [])
        assert first.write(candles()) == 3
        result = {}
        waiting = threading.Thread(
            target=lambda: result.update(loaded=second.open_load(INTERVALS, []))
        )
        waiting.start()
        keys = [lock_key(name) % 2**32 for name in tables.values()]  # pg_locks: an oid

        def waits():
            return pg.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND objid = ANY(%s::bigint[]::oid[])",
                (keys,),
            ).fetchone()[0]

        assert wait_until(lambda: waits() == 1)
        first.commit_load()
        waiting.join(10)
        assert result == {"loaded": False}
        later = candles()
        later["bucket_start_ns"] += 900 * 10**9
        assert second.write(later) == 3
    finally:
        first.close()
        second.close()
    counts = [pg.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables.values()]
    assert counts == [2, 2, 2]


def test_a_slow_key_is_bounded_by_its_rows_not_by_the_write_bound(
    pg, pg_dsn, table_prefix, monkeypatch
):
    """A big table's key takes longer than a write may (and the other lanes wait for it
    idle in their transactions, which the server ends after three write bounds): the key
    is bounded by its rows instead."""
    import feedengine.bulkload as bulkload

    tables = table_names(INTERVALS, table_prefix)
    real = bulkload.key_statement

    def slow_one_minute_key(name):  # the server takes 1.5 s over the 1-minute key
        pause = sql.SQL("SELECT pg_sleep(1.5); ") if name == tables[1] else sql.SQL("")
        return pause + real(name)

    monkeypatch.setattr(bulkload, "key_statement", slow_one_minute_key)
    monkeypatch.setattr(bulkload, "KEY_ROWS_PER_S", 0.5)  # a row per lane: a 2.4 s bound
    sink = PostgresSink(pg_dsn, TableNames(table_prefix), write_timeout_s=0.4)
    try:
        assert sink.open_load(INTERVALS, [])
        assert sink.write(candles()) == 3
        sink.commit_load()  # 1.5 s > 0.4 s write bound, > 1.2 s idle in transaction
    finally:
        sink.close()
    assert exists(pg, tables) == list(INTERVALS)
