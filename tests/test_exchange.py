"""Instruments of two exchanges with one trading symbol (NSE:INFY and BSE:INFY) never merge
into one candle: tables feedengine creates are keyed by exchange, an old table is refused at
start with the statements that fix it, and every sink and the spill carry the exchange."""

import re
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink
from feedengine.dtypes import RECORD_DTYPE
from feedengine.errors import SchemaError, SinkDataError, SinkUnavailable, SpillError
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.simulator import SimConfig, simulate
from feedengine.sink import CsvSink, MemorySink
from feedengine.spill import RECORD_V1_DTYPE, SpillFile
from feedengine.tables import TableNames
from tests.processes import cli

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = (("NSE", "INFY"), ("BSE", "INFY"), ("NSE", "TCS"), ("CDS", "USDINR24JANFUT"))
OLD_COLUMNS = (
    "datetime TIMESTAMP NOT NULL, tradingsymbol VARCHAR NOT NULL, open NUMERIC, high NUMERIC, "
    "low NUMERIC, close NUMERIC, volume BIGINT"
)


@pytest.fixture(scope="module")
def clash_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clash") / "clash.ticks"
    simulate(path, SimConfig(symbols=SYMBOLS, ticks=3000, seed=3))
    return path


@pytest.fixture(scope="module")
def expected(clash_file):
    sink = MemorySink()
    source = ReplaySource(clash_file)
    Pipeline(CandleEngine(source.instruments, CandleConfig(intervals=(5,))), sink).run(source)
    return sink.candles


def rows_by_exchange(pg, name):
    return {
        (5, sym, exch, dt): (o, h, lo, c, v)
        for dt, sym, exch, o, h, lo, c, v in pg.execute(
            "SELECT datetime, tradingsymbol, exchange, open, high, low, close, volume "
            f'FROM "{name}"'
        )
    }


def naive(candles):
    return {(m, s, e, dt.replace(tzinfo=None)): v for (m, s, e, dt), v in candles.items()}


def test_instruments_sharing_a_symbol_keep_their_own_candles(
    pg, pg_dsn, table_prefix, clash_file, expected
):
    source = ReplaySource(clash_file)
    engine = CandleEngine(source.instruments, CandleConfig(intervals=(5,)))
    Pipeline(engine, PostgresSink(pg_dsn, TableNames(table_prefix))).run(source)
    got = rows_by_exchange(pg, table_prefix.format(interval=5))
    assert {(s, e) for _, s, e, _ in got} == {(s, e) for e, s in SYMBOLS}
    assert got == naive(expected)
    key = pg.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'p' "
        "AND conrelid = to_regclass(%s)",
        (table_prefix.format(interval=5),),
    ).fetchone()
    assert key == ("PRIMARY KEY (tradingsymbol, datetime, exchange)",)


def cli_replay(path, dsn, template, home):
    return cli(
        "--replay",
        path,
        "--intervals",
        "5",
        env={"PG_CONN_STR": dsn, "CANDLE_TABLE_TEMPLATE": template},
        home=home,
    )


@pytest.mark.parametrize(
    "key",
    [
        "PRIMARY KEY (tradingsymbol, datetime)",
        "UNIQUE (datetime, tradingsymbol)",
        "INDEX",  # a unique index of its own, not a constraint
        "",  # no key: written by delete-then-insert
    ],
)
def test_an_old_table_refuses_a_clash_at_start_and_says_how_to_fix_it(
    pg, pg_dsn, table_prefix, clash_file, expected, tmp_path, key
):
    name = table_prefix.format(interval=5)
    pg.execute(f'CREATE TABLE "{name}" ({OLD_COLUMNS}{", " + key if "(" in key else ""})')
    if key == "INDEX":
        pg.execute(f'CREATE UNIQUE INDEX "{name}_k" ON "{name}" (tradingsymbol, datetime)')
    pg.execute(f"INSERT INTO \"{name}\" VALUES ('2024-01-12 09:15', 'OLD', 1, 1, 1, 1, 1)")
    refused = cli_replay(clash_file, pg_dsn, table_prefix, tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, refused.stderr
    assert "instruments NSE:INFY and BSE:INFY share a trading symbol" in errors[0]
    assert f"table {name} keeps one candle per (tradingsymbol, datetime)" in errors[0]
    assert "a bug" not in errors[0]
    assert pg.execute(f'SELECT count(*) FROM "{name}"').fetchone() == (1,)  # nothing written
    # The statements the message gives make the table keyed by exchange.
    fix = errors[0].split("(existing rows get NSE): ")[1]
    pg.execute(fix)
    again = cli_replay(clash_file, pg_dsn, table_prefix, tmp_path)
    assert again.returncode == 0, again.stderr
    got = rows_by_exchange(pg, name)
    assert got.pop(
        (5, "OLD", "NSE", pg.execute("SELECT '2024-01-12 09:15'::timestamp").fetchone()[0])
    )
    assert got == naive(expected)


def test_an_old_table_takes_instruments_whose_symbols_differ(pg, pg_dsn, table_prefix, tmp_path):
    name = table_prefix.format(interval=5)
    pg.execute(f'CREATE TABLE "{name}" ({OLD_COLUMNS}, PRIMARY KEY (tradingsymbol, datetime))')
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    sink.open((5,), [KiteInstrument(408065, "INFY", "NSE"), KiteInstrument(779521, "SBIN", "NSE")])
    sink.close()
    with pytest.raises(SchemaError, match="NSE:INFY and BSE:INFY"):
        sink.open(
            (5,),
            [KiteInstrument(408065, "INFY", "NSE"), KiteInstrument(500209 << 8 | 4, "INFY", "BSE")],
        )


def test_a_previous_version_spill_is_converted_with_the_runs_exchanges(tmp_path):
    path = tmp_path / "spill.bin"
    write_v1_spill(path, ["INFY", "SBIN", "INFY", "USDINR24JANFUT"])
    before = path.read_bytes()
    nse_and_bse = [
        KiteInstrument(408065, "INFY", "NSE"),
        KiteInstrument(500209 << 8 | 4, "INFY", "BSE"),
    ]
    with pytest.raises(SpillError, match=r"cannot be told for INFY, SBIN, USDINR24JANFUT"):
        SpillFile(path, nse_and_bse)
    assert path.read_bytes() == before  # kept as it was
    run = [
        KiteInstrument(408065, "INFY", "NSE"),
        KiteInstrument(779521, "SBIN", "NSE"),
        KiteInstrument(1057682691, "USDINR24JANFUT", "CDS"),
    ]
    spill = SpillFile(path, run)
    got = np.concatenate(list(spill.blocks(100)))
    assert got["exchange"].tolist() == [b"NSE", b"NSE", b"NSE", b"CDS"]
    assert got["open"].tolist() == [1, 2, 3, 4] and got.dtype == RECORD_DTYPE
    assert path.read_bytes()[:8] == b"FEEDSPL2" and SpillFile(path).rows == 4


def write_v1_spill(path, symbols):
    """A spill file as the previous version wrote it: 80-byte records, no exchange."""
    old = np.zeros(len(symbols), RECORD_V1_DTYPE)
    old["bucket_start_ns"] = 1_705_031_100 * 10**9  # 2024-01-12 09:15 IST
    old["symbol"] = [s.encode() for s in symbols]
    old["open"] = old["high"] = old["low"] = old["close"] = np.arange(len(symbols)) + 1
    old["minutes"], old["decimals"], old["final"] = 5, 2, 1
    payload = old.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        struct.pack("<8sI", b"FEEDSPL1", RECORD_V1_DTYPE.itemsize)
        + struct.pack("<II", len(old), zlib.crc32(payload))
        + payload
    )


def test_a_previous_version_spill_reaches_the_tables_on_the_next_run(
    pg, pg_dsn, table_prefix, clash_file, tmp_path
):
    write_v1_spill(tmp_path / "home" / "spill.bin", ["TCS", "USDINR24JANFUT"])
    proc = cli_replay(clash_file, pg_dsn, table_prefix, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "converted 2 spilled rows of the previous version" in proc.stderr
    rows = pg.execute(
        f'SELECT tradingsymbol, exchange, close::text FROM "{table_prefix.format(interval=5)}" '
        "WHERE datetime = '2024-01-12 09:15' ORDER BY 1"
    ).fetchall()
    assert rows == [("TCS", "NSE", "0.01"), ("USDINR24JANFUT", "CDS", "0.02")]
    assert SpillFile(tmp_path / "home" / "spill.bin").rows == 0


def test_the_csv_sink_writes_the_exchange_and_refuses_an_older_file(tmp_path):
    rec = np.zeros(1, RECORD_DTYPE)
    rec[0] = (1_705_290_300 * 10**9, 7, 100, 100, 100, 100, 5, 2, 1, b"INFY", b"BSE")
    sink = CsvSink(tmp_path / "c.csv")
    sink.open((5,), [])
    sink.write(rec)
    sink.close()
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert lines == [
        "datetime,tradingsymbol,interval,open,high,low,close,volume,exchange",
        "2024-01-15 09:15:00,INFY,5,1.00,1.00,1.00,1.00,7,BSE",
    ]
    old = tmp_path / "old.csv"
    old.write_text("datetime,tradingsymbol,interval,open,high,low,close,volume\n")
    with pytest.raises(SinkDataError, match=r"old.csv has the columns .*move it aside"):
        CsvSink(old).open((5,), [])


def test_rounding_price_columns_are_named_at_start(pg, pg_dsn, table_prefix, caplog):
    name = table_prefix.format(interval=5)
    pg.execute(
        f'CREATE TABLE "{name}" (datetime TIMESTAMP, tradingsymbol TEXT, open NUMERIC(12,2), '
        "high NUMERIC(12,4), low NUMERIC, close NUMERIC, volume BIGINT)"
    )
    usd = KiteInstrument(1057682691, "USDINR24JANFUT", "CDS")
    PostgresSink(pg_dsn, TableNames(table_prefix)).open((5,), [usd])
    assert re.search(
        rf"table {name} rounds prices: column\(s\) open, high keep 2/4 decimal\(s\), but 1 "
        r"instrument\(s\) quote up to 7 \(e.g. CDS:USDINR24JANFUT\)",
        caplog.text,
    )
    caplog.clear()
    PostgresSink(pg_dsn, TableNames(table_prefix)).open(
        (5,), [KiteInstrument(408065, "INFY", "NSE")]
    )
    assert "rounds prices" not in caplog.text


def test_a_server_down_at_a_loads_start_still_keeps_the_instruments_apart(pg, pg_dsn, table_prefix):
    """A replay's bulk load that cannot reach the server at start writes the ordinary way
    once it is back: its instruments were forgotten, so an old table took NSE:INFY and
    BSE:INFY as one candle."""
    name = table_prefix.format(interval=5)
    pg.execute(f'CREATE TABLE "{name}" ({OLD_COLUMNS}, PRIMARY KEY (tradingsymbol, datetime))')
    nse_and_bse = [
        KiteInstrument(408065, "INFY", "NSE"),
        KiteInstrument(500209 << 8 | 4, "INFY", "BSE"),
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"postgresql://postgres@127.0.0.1:{s.getsockname()[1]}/test"  # nothing listens
    sink = PostgresSink(dead, TableNames(table_prefix), write_timeout_s=2)
    try:
        with pytest.raises(SinkUnavailable):
            sink.open_load((5,), nse_and_bse)
        sink.dsn = pg_dsn  # the server is back
        r = np.zeros(1, RECORD_DTYPE)
        r["minutes"], r["bucket_start_ns"], r["symbol"], r["exchange"] = 5, 0, b"INFY", b"BSE"
        with pytest.raises(SinkDataError, match="NSE:INFY and BSE:INFY"):
            sink.write(r)
    finally:
        sink.close()
