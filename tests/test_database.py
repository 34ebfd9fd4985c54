"""PostgreSQL sink against a real server: round trip, idempotence, schemas, faults, restart."""

import re
import threading
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedengine import _pgcopy
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink, check_database
from feedengine.dtypes import RECORD_DTYPE
from feedengine.errors import SchemaError, SinkDataError, SinkUnavailable
from feedengine.pipeline import Pipeline
from feedengine.reference import pgcopy as ref_pgcopy
from feedengine.replay import ReplaySource
from feedengine.simulator import SimConfig, simulate
from feedengine.sink import MemorySink
from feedengine.spill import SpillFile
from feedengine.tables import TableNames, table_names
from feedengine.tickfile import TickReader, TickWriter
from tests.processes import cli

INTERVALS = (1, 5, 15)
DOWN = "postgresql://nobody@127.0.0.1:1/none"


@pytest.fixture(scope="module")
def day_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("day") / "day.ticks"
    simulate(path, SimConfig(instruments=40, ticks=30_000, seed=11))
    return path


def run_replay(
    path, sink, *, spill=None, checkpoint=None, finalize=True, stop_after=None, intervals=INTERVALS
):
    source = ReplaySource(path)
    engine = CandleEngine(source.instruments, CandleConfig(intervals=intervals, ring_rows=256))
    pipeline = Pipeline(engine, sink, checkpoint=checkpoint, spill=spill)
    if stop_after is not None:
        inner = source.batches

        def batches():
            for i, batch in enumerate(inner()):
                if i == stop_after:
                    pipeline.stop()
                yield batch

        source.batches = batches
    return pipeline.run(source, finalize=finalize)


def table_rows(pg, name):
    return pg.execute(
        f"SELECT datetime::text, tradingsymbol, exchange, open::text, high::text, low::text, "
        f'close::text, volume FROM "{name}" ORDER BY 2, 1, 3'
    ).fetchall()


def memory_rows(sink, minutes, exchange=True):
    """The candles of ``sink`` as :func:`table_rows` gives them (without the exchange
    column for ``exchange=False``)."""
    out = []
    for (m, symbol, exch, start), (o, h, lo, c, v) in sink.candles.items():
        if m == minutes:
            dt = start.strftime("%Y-%m-%d %H:%M:%S")
            key = (dt, symbol, exch) if exchange else (dt, symbol)
            out.append((*key, str(o), str(h), str(lo), str(c), v))
    return sorted(out, key=lambda r: (r[1], r[0], r[2]))


@pytest.fixture(scope="module")
def expected(day_file):
    sink = MemorySink()
    run_replay(day_file, sink)
    return sink


def test_round_trip_exact_numeric(pg, pg_dsn, table_prefix, day_file, expected):
    tables = table_names(INTERVALS, table_prefix)
    summary = run_replay(day_file, PostgresSink(pg_dsn, TableNames(table_prefix)))
    assert summary.spilled == 0
    for minutes, name in tables.items():
        got = table_rows(pg, name)
        assert got == memory_rows(expected, minutes)
        assert len(got) == summary.candles[minutes] > 0
    # Exact decimals, with the segment's number of places.
    assert all(len(r[3].split(".")[1]) in (2, 4, 7) for r in table_rows(pg, tables[1]))


def test_replaying_twice_is_idempotent(pg, pg_dsn, table_prefix, day_file):
    tables = table_names(INTERVALS, table_prefix)
    run_replay(day_file, PostgresSink(pg_dsn, TableNames(table_prefix)))
    first = {m: table_rows(pg, n) for m, n in tables.items()}
    run_replay(day_file, PostgresSink(pg_dsn, TableNames(table_prefix)))
    assert {m: table_rows(pg, n) for m, n in tables.items()} == first


@pytest.mark.parametrize(
    "ddl",
    [
        "datetime TIMESTAMP, tradingsymbol VARCHAR(40), open NUMERIC, high NUMERIC, low NUMERIC, "
        "close NUMERIC, volume INTEGER, UNIQUE (tradingsymbol, datetime)",
        "datetime TIMESTAMPTZ, tradingsymbol TEXT, open NUMERIC(12,2), high NUMERIC, "
        "low NUMERIC, close NUMERIC, volume BIGINT, PRIMARY KEY (datetime, tradingsymbol)",
        "id SERIAL, datetime TIMESTAMP, tradingsymbol TEXT, open NUMERIC, high NUMERIC, "
        "low NUMERIC, close NUMERIC, volume BIGINT",
    ],
)
def test_existing_tables_are_used_as_they_are(
    pg, pg_dsn, table_prefix, day_file, expected, ddl, caplog
):
    tables = table_names((5,), table_prefix)
    pg.execute(f'CREATE TABLE "{tables[5]}" ({ddl})')
    for _ in range(2):  # twice: a table without a key must still hold each candle once
        summary = run_replay(
            day_file, PostgresSink(pg_dsn, TableNames(table_prefix)), intervals=(5,)
        )
        assert summary.spilled == 0
    pg.execute("SET TIME ZONE 'Asia/Kolkata'")
    got = pg.execute(
        f"SELECT to_char(datetime, 'YYYY-MM-DD HH24:MI:SS'), tradingsymbol, open::text, "
        f'high::text, low::text, close::text, volume FROM "{tables[5]}" ORDER BY 2, 1'
    ).fetchall()
    want = memory_rows(expected, 5, exchange=False)
    if "NUMERIC(12,2)" in ddl:  # the column rounds to 2 places; CDS prices lose digits
        assert f"table {tables[5]} rounds prices: column(s) open keep 2 decimal(s)" in caplog.text
        want = [
            (*r[:2], str(Decimal(r[2]).quantize(Decimal("0.01"), ROUND_HALF_UP)), *r[3:])
            for r in want
        ]
    assert got == want


@pytest.mark.parametrize(
    ("ddl", "text"),
    [
        (
            "datetime TIMESTAMP, tradingsymbol TEXT, open NUMERIC, high NUMERIC, "
            "close NUMERIC, volume BIGINT",
            "lacks column(s) low",
        ),
        (
            "datetime TEXT, tradingsymbol TEXT, open NUMERIC, high NUMERIC, low NUMERIC, "
            "close NUMERIC, volume BIGINT",
            "column datetime is text; expected TIMESTAMP or TIMESTAMPTZ",
        ),
    ],
)
def test_an_unusable_table_is_one_line_at_start(pg, pg_dsn, table_prefix, day_file, ddl, text):
    name = table_prefix.format(interval=5)
    pg.execute(f'CREATE TABLE "{name}" ({ddl})')
    with pytest.raises(SchemaError, match=re.escape(f"table {name}") + ".*" + re.escape(text)):
        PostgresSink(pg_dsn, TableNames(table_prefix)).open((5,), [])
    proc = cli(
        "--replay",
        day_file,
        "--intervals",
        "5",
        env={"PG_CONN_STR": pg_dsn, "CANDLE_TABLE_TEMPLATE": table_prefix},
        home=day_file.parent / "home",
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"feedengine: error: table {name}" + (
        f" {text}; feedengine writes datetime, tradingsymbol, open, high, low, close, volume"
        if "lacks" in text
        else f": {text}"
    )


def test_integer_volume_overflow_names_the_row(pg, pg_dsn, table_prefix, tmp_path):
    tables = table_names((5,), table_prefix)
    pg.execute(
        f'CREATE TABLE "{tables[5]}" (datetime TIMESTAMP, tradingsymbol TEXT, '
        "open NUMERIC, high NUMERIC, low NUMERIC, close NUMERIC, volume INTEGER, "
        "PRIMARY KEY (tradingsymbol, datetime))"
    )
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    sink.open((5,), [])
    rec = np.zeros(1, RECORD_DTYPE)
    rec[0] = (1_705_290_300 * 10**9, 2**31, 100, 100, 100, 100, 5, 2, 1, b"RELIANCE", b"NSE")
    with pytest.raises(
        SinkDataError,
        match=r"volume 2147483648 of NSE:RELIANCE 5-minute candle "
        r"at 2024-01-15 09:15 does not fit",
    ):
        sink.write(rec)
    sink.close()


def test_database_down_spills_then_drains_in_order(
    pg, pg_dsn, table_prefix, day_file, expected, tmp_path
):
    tables = table_names(INTERVALS, table_prefix)
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    state = {"writes": 0}
    real_write = sink.write

    def flaky_write(records):
        state["writes"] += 1
        if state["writes"] % 3 == 0:  # every third flush: the server kills our session
            pg.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'feedengine' AND pid <> pg_backend_pid()"
            )
        real_write(records)

    sink.write = flaky_write
    spill = SpillFile(tmp_path / "spill.bin")
    source = ReplaySource(day_file)
    engine = CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS, ring_rows=256))
    pipeline = Pipeline(engine, sink, spill=spill, retry_first_s=0.01)
    summary = pipeline.run(source)
    assert pipeline.flusher.failures > 0
    assert summary.spilled == 0 and spill.rows == 0
    for minutes, name in tables.items():
        assert table_rows(pg, name) == memory_rows(expected, minutes)


records = st.lists(
    st.tuples(
        st.integers(0, 2**31).map(lambda s: s * 10**9),
        st.integers(0, 2**62),
        *(st.integers(-(2**31), 2**31 - 1) for _ in range(4)),
        st.sampled_from([1, 5, 75]),
        st.sampled_from([0, 2, 4, 7]),
        st.integers(0, 1),
        st.text(
            st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12
        ).map(str.encode),
        st.sampled_from([b"", b"NSE", b"BSE", b"INDICES", b"X" * 12]),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(records, st.sampled_from([0, 1, 2]), st.booleans())
def test_encoder_equals_reference(rows, layout, exchange):
    arr = np.array(rows, RECORD_DTYPE)
    assert bytes(_pgcopy.encode(arr, layout, exchange)) == ref_pgcopy.encode(arr, layout, exchange)


def test_sink_unavailable_when_server_is_unreachable():
    sink = PostgresSink(DOWN, TableNames("x_{interval}"))
    with pytest.raises(SinkUnavailable, match="Connection refused"):
        sink.open((5,), [])  # the pipeline logs it and spills
    with pytest.raises(SinkUnavailable):
        sink.write(np.zeros(1, RECORD_DTYPE))


class WaitingSource:
    """A source that delivers nothing until it is stopped."""

    name = "waiting"
    broker = "kite"

    def __init__(self):
        self.instruments = [KiteInstrument(408065, "INFY", "NSE")]
        self.started = threading.Event()
        self.stopped = threading.Event()

    def start(self):
        self.started.set()

    def stop(self):
        self.stopped.set()

    def batches(self):
        self.stopped.wait(60)
        return iter(())

    def position(self):
        return {}

    def resume(self, position):
        return False


@pytest.mark.parametrize("up", [True, False])
def test_heartbeat_database_state_is_true_from_the_start(pg_dsn, table_prefix, tmp_path, up):
    source = WaitingSource()
    sink = PostgresSink(pg_dsn if up else DOWN, TableNames(table_prefix))
    engine = CandleEngine(source.instruments, CandleConfig(intervals=(5,)))
    pipeline = Pipeline(engine, sink, spill=SpillFile(tmp_path / "spill.bin"))
    thread = threading.Thread(target=pipeline.run, args=(source,), kwargs={"live": True})
    thread.start()
    try:
        assert source.started.wait(30)
        assert pipeline.status()["database_ok"] is up
    finally:
        pipeline.stop()
        source.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_spilled_rows_of_other_intervals_reach_their_tables(
    pg, pg_dsn, table_prefix, day_file, expected, tmp_path
):
    tables = TableNames(table_prefix)
    down = run_replay(day_file, PostgresSink(DOWN, tables), spill=SpillFile(tmp_path / "s.bin"))
    assert down.spilled > 0  # 1-, 5- and 15-minute rows wait in the spill
    summary = run_replay(
        day_file, PostgresSink(pg_dsn, tables), spill=SpillFile(tmp_path / "s.bin"), intervals=(5,)
    )
    assert summary.spilled == 0 and SpillFile(tmp_path / "s.bin").rows == 0
    for minutes, name in tables.of(INTERVALS).items():  # the 1- and 15-minute ones created
        assert table_rows(pg, name) == memory_rows(expected, minutes)
        assert summary.candles[minutes] >= len(memory_rows(expected, minutes))


def test_check_database_reports_tables(pg_dsn, table_prefix):
    lines = check_database(pg_dsn, table_names((1, 5), table_prefix))
    assert lines[0].startswith("connected: PostgreSQL")
    assert "created" in lines[1] and "unique key" in lines[2]
    assert "found" in check_database(pg_dsn, table_names((1,), table_prefix))[1]


def test_stop_and_restart_give_the_same_rows(
    pg, pg_dsn, table_prefix, day_file, expected, tmp_path
):
    tables = table_names(INTERVALS, table_prefix)
    checkpoint = tmp_path / "checkpoint.npz"
    first = run_replay(
        day_file,
        PostgresSink(pg_dsn, TableNames(table_prefix)),
        checkpoint=checkpoint,
        stop_after=3,
    )
    assert not first.finished and checkpoint.exists()
    second = run_replay(
        day_file, PostgresSink(pg_dsn, TableNames(table_prefix)), checkpoint=checkpoint
    )
    assert second.finished and not checkpoint.exists()
    for minutes, name in tables.items():
        assert table_rows(pg, name) == memory_rows(expected, minutes)


def test_replay_in_two_files_continues_the_day(
    pg, pg_dsn, table_prefix, day_file, expected, tmp_path
):
    reader = TickReader(day_file)
    messages = list(reader.messages())
    half = len(messages) // 2
    parts = []
    for i, chunk in enumerate((messages[:half], messages[half:])):
        path = tmp_path / f"part{i}.ticks"
        with TickWriter(path, reader.meta) as w:
            for recv_ns, payload in chunk:
                w.write(recv_ns, payload)
        parts.append(path)
    tables = table_names(INTERVALS, table_prefix)
    checkpoint = tmp_path / "checkpoint.npz"
    run_replay(
        parts[0],
        PostgresSink(pg_dsn, TableNames(table_prefix)),
        checkpoint=checkpoint,
        finalize=False,
    )
    run_replay(parts[1], PostgresSink(pg_dsn, TableNames(table_prefix)), checkpoint=checkpoint)
    for minutes, name in tables.items():
        assert table_rows(pg, name) == memory_rows(expected, minutes)


def test_cli_test_database_and_replay_into_postgres(
    pg, pg_dsn, table_prefix, day_file, expected, tmp_path
):
    env = {"PG_CONN_STR": pg_dsn, "CANDLE_TABLE_TEMPLATE": table_prefix}
    home = tmp_path / "home"
    check = cli("--test-database", env=env, home=home)
    assert check.returncode == 0, check.stderr
    assert "connected: PostgreSQL" in check.stdout
    run = cli("--replay", day_file, env=env, home=home)
    assert run.returncode == 0, run.stderr
    assert table_rows(pg, table_prefix.format(interval=5)) == memory_rows(expected, 5)
    bad = cli("--test-database", env={**env, "PG_CONN_STR": DOWN}, home=home)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    empty = cli(
        "--replay",
        day_file,
        "--symbols-from-db",
        env={**env, "SYMBOLS_QUERY": "SELECT 'x' WHERE false"},
        home=home,
    )
    assert empty.returncode == 1 and "returned no symbols" in empty.stderr


def test_threads_do_not_leak(pg, pg_dsn, table_prefix, day_file):
    before = threading.active_count()
    run_replay(day_file, MemorySink())
    assert threading.active_count() == before
    run_replay(day_file, PostgresSink(pg_dsn, TableNames(table_prefix)))  # + its watchdog
    assert threading.active_count() == before
    unusable = table_prefix.replace("_{interval}", "x_{interval}")
    pg.execute(f'CREATE TABLE "{unusable.format(interval=5)}" (datetime TEXT)')
    with pytest.raises(SchemaError):  # from the sink's open: the sink is closed all the same
        run_replay(day_file, PostgresSink(pg_dsn, TableNames(unusable)))
    assert threading.active_count() == before
