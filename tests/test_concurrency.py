"""Several feedengine processes writing the same tables at once (SPEC section 5): neither
two first starts nor two writers of a table without a unique key lose or double a row."""

import threading
import time
from decimal import Decimal

import numpy as np
import psycopg
import pytest

from feedengine.database import APPLICATION_NAME, PostgresSink
from feedengine.dtypes import RECORD_DTYPE
from feedengine.tables import LOCK_CLASS, TableNames, lock_key

#: Longest a test waits for the other connection to reach a lock (seconds).
DEADLINE_S = 30
ROUNDS = 20


def candles(n, close=100):
    r = np.zeros(n, RECORD_DTYPE)
    r["bucket_start_ns"] = (1_705_290_300 + 300 * np.arange(n)) * 10**9
    r["open"], r["high"], r["low"], r["close"] = 100, 110, 90, close
    r["minutes"], r["decimals"], r["final"] = 5, 2, 1
    r["symbol"], r["exchange"] = b"INFY", b"NSE"
    return r


def waiting_on_a_lock(pg):
    """Whether a feedengine session waits on a lock now."""
    row = pg.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
        "AND wait_event_type = 'Lock'",
        (APPLICATION_NAME,),
    ).fetchone()
    return row[0] > 0


def in_thread(fn):
    """Run ``fn`` on a thread; return (thread, errors)."""
    errors = []

    def run():
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def until(condition):
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_first_start_waits_for_another_creating_the_table(pg_dsn, table_prefix):
    name = table_prefix.format(interval=5)
    with psycopg.connect(pg_dsn) as other:  # another feedengine, its CREATE not committed
        other.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, lock_key(name)))
        other.execute(
            f'CREATE TABLE "{name}" (datetime TIMESTAMP NOT NULL, tradingsymbol VARCHAR NOT NULL, '
            "exchange VARCHAR NOT NULL, open NUMERIC, high NUMERIC, low NUMERIC, close NUMERIC, "
            "volume BIGINT, PRIMARY KEY (tradingsymbol, datetime, exchange))"
        )
        sink = PostgresSink(pg_dsn, TableNames(table_prefix))
        thread, errors = in_thread(lambda: sink.open((5,), []))
        with psycopg.connect(pg_dsn, autocommit=True) as watch:
            until(lambda: waiting_on_a_lock(watch) or not thread.is_alive())
        other.commit()
    thread.join(DEADLINE_S)
    assert not errors, errors  # was: UniqueViolation from CREATE TABLE IF NOT EXISTS
    sink.write(candles(3))
    sink.close()


def test_two_first_starts_at_once_both_succeed(pg, pg_dsn, table_prefix):
    for i in range(ROUNDS):
        template = table_prefix.replace("_{interval}", f"r{i}_{{interval}}")
        barrier = threading.Barrier(2)
        sinks = [PostgresSink(pg_dsn, TableNames(template)) for _ in range(2)]

        def start(sink, barrier):
            barrier.wait(DEADLINE_S)
            sink.open((1, 5), [])
            sink.close()

        runs = [in_thread(lambda s=s, b=barrier: start(s, b)) for s in sinks]
        for thread, errors in runs:
            thread.join(DEADLINE_S)
            assert not errors, errors


def test_delete_then_insert_waits_for_another_writer_of_the_table(pg, pg_dsn, table_prefix):
    name = table_prefix.format(interval=5)
    pg.execute(
        f'CREATE TABLE "{name}" (datetime TIMESTAMP, tradingsymbol TEXT, open NUMERIC, '
        "high NUMERIC, low NUMERIC, close NUMERIC, volume BIGINT)"
    )
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    sink.open((5,), [])
    with psycopg.connect(pg_dsn) as other:  # another writer, its insert not committed
        other.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, lock_key(name)))
        other.execute(
            f"INSERT INTO \"{name}\" SELECT to_timestamp(s) AT TIME ZONE 'Asia/Kolkata', 'INFY', "
            "1, 1, 1, 1, 1 FROM generate_series(1705290300, 1705290300 + 300 * 9, 300) s"
        )
        thread, errors = in_thread(lambda: sink.write(candles(10, close=120)))
        with psycopg.connect(pg_dsn, autocommit=True) as watch:
            until(lambda: waiting_on_a_lock(watch) or not thread.is_alive())
        other.commit()
    thread.join(DEADLINE_S)
    assert not errors, errors
    sink.close()
    rows = pg.execute(f'SELECT close, count(*) FROM "{name}" GROUP BY 1').fetchall()
    assert rows == [(Decimal("1.20"), 10)]  # was: 20 rows, each candle twice


@pytest.mark.parametrize("key", ["", ", UNIQUE (tradingsymbol, datetime)"])
def test_two_writers_of_one_table_at_once_keep_each_candle_once(pg, pg_dsn, table_prefix, key):
    name = table_prefix.format(interval=5)
    pg.execute(
        f'CREATE TABLE "{name}" (datetime TIMESTAMP, tradingsymbol TEXT, open NUMERIC, '
        f"high NUMERIC, low NUMERIC, close NUMERIC, volume BIGINT{key})"
    )
    sinks = [PostgresSink(pg_dsn, TableNames(table_prefix)) for _ in range(2)]
    for sink in sinks:
        sink.open((5,), [])
    for i in range(ROUNDS):
        barrier = threading.Barrier(2)

        def write(sink, close, barrier):
            barrier.wait(DEADLINE_S)
            sink.write(candles(200, close))

        runs = [
            in_thread(lambda s=s, c=c, b=barrier: write(s, c, b))
            for s, c in zip(sinks, (i, -i), strict=True)
        ]
        for thread, errors in runs:
            thread.join(DEADLINE_S)
            assert not errors, errors
        count, distinct, closes = pg.execute(
            f'SELECT count(*), count(DISTINCT datetime), count(DISTINCT close) FROM "{name}"'
        ).fetchone()
        assert count == distinct == 200 and closes == 1, f"round {i}"
    for sink in sinks:
        sink.close()
