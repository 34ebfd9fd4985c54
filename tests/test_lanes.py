"""The sink's parallel lanes: a block of several intervals, one connection per interval table,
committed whole or not at all."""

import threading

import numpy as np
import pytest

from feedengine.database import PostgresSink
from feedengine.dtypes import RECORD_DTYPE
from feedengine.errors import SinkDataError, SinkUnavailable
from feedengine.tables import TableNames, table_names

INTERVALS = (1, 5, 15)


def block(close=100):
    """Two candles of each interval."""
    r = np.zeros(2 * len(INTERVALS), RECORD_DTYPE)
    r["minutes"] = np.repeat(INTERVALS, 2)
    r["bucket_start_ns"] = (1_705_290_300 + 900 * np.tile([0, 1], len(INTERVALS))) * 10**9
    r["open"], r["high"], r["low"], r["close"] = 100, 110, 90, close
    r["decimals"], r["final"], r["symbol"], r["exchange"] = 2, 1, b"INFY", b"NSE"
    return r


def counts(pg, tables):
    return {m: pg.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for m, t in tables.items()}


@pytest.fixture
def sink(pg_dsn, table_prefix):
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    sink.open(INTERVALS, [])
    yield sink
    sink.close()


def test_lanes_write_each_interval_on_its_own_connection(pg, sink, table_prefix):
    tables = table_names(INTERVALS, table_prefix)
    assert sink.write(block()) == 6
    assert counts(pg, tables) == {1: 2, 5: 2, 15: 2}
    assert sorted(sink._lanes) == [5, 15]  # the 1-minute rows go on the sink's own connection
    assert sink.write(block(close=105)) == 6  # the same candles again: replaced
    assert counts(pg, tables) == {1: 2, 5: 2, 15: 2}


def test_a_lane_the_server_refuses_rolls_the_others_back(pg, sink, table_prefix):
    tables = table_names(INTERVALS, table_prefix)
    pg.execute(f'ALTER TABLE "{tables[15]}" ADD CHECK (close < 0.5)')  # fails mid-transaction
    with pytest.raises(SinkDataError, match="check constraint"):
        sink.write(block())
    assert counts(pg, tables) == {1: 0, 5: 0, 15: 0}


def test_a_lost_connection_rolls_the_other_lanes_back(pg, sink, table_prefix):
    tables = table_names(INTERVALS, table_prefix)
    assert sink._conn is not None
    pid = sink._conn.info.backend_pid  # the 1-minute lane's connection
    pg.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(SinkUnavailable):
        sink.write(block())
    assert counts(pg, tables) == {1: 0, 5: 0, 15: 0}
    assert sink.write(block()) == 6  # reconnected
    assert counts(pg, tables) == {1: 2, 5: 2, 15: 2}


def test_lanes_leave_no_thread_behind(pg_dsn, table_prefix):
    before = threading.active_count()
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    sink.open(INTERVALS, [])
    sink.write(block())
    sink.close()
    assert threading.active_count() == before


def test_an_interval_met_later_gets_a_lane_of_its_own(pg, pg_dsn, table_prefix):
    tables = table_names(INTERVALS, table_prefix)
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    try:
        sink.open((1, 5), [])
        two = block()
        assert sink.write(two[two["minutes"] != 15]) == 4
        assert sink.write(block(close=105)) == 6  # 15 minutes too: a spill of another run
        assert counts(pg, tables) == {1: 2, 5: 2, 15: 2}
    finally:
        sink.close()
