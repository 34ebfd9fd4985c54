"""Database settings and failures as a user meets them on the command line: one line, the
right exit status, never a traceback."""

import os
from pathlib import Path

import pytest

from feedengine.config import Config
from feedengine.errors import ConfigError
from feedengine.tables import symbols_query
from tests.processes import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.ticks"
DOWN = "postgresql://nobody@127.0.0.1:1/none"


def one_error(proc, status, *texts):
    """The run failed with ``status`` and one error line holding every text; no bug report."""
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr and "a bug" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    for text in texts:
        assert text in errors[0], errors[0]


@pytest.mark.parametrize("args", [["--test-database"], ["--replay", SAMPLE]])
def test_a_garbage_dsn_is_a_configuration_error(tmp_path, args):
    proc = cli(*args, env={"PG_CONN_STR": "garbage-dsn"}, home=tmp_path)
    one_error(proc, 2, "PG_CONN_STR: not a PostgreSQL connection string")


@pytest.mark.parametrize(
    ("env", "text"),
    [
        ({"CANDLE_TABLE_NAME": "bad name; drop"}, "CANDLE_TABLE_NAME: 'bad name; drop' is not"),
        ({"CANDLE_TABLE_TEMPLATE": "c_{interval}; drop"}, "CANDLE_TABLE_TEMPLATE='c_{interval}; "),
        ({"CANDLE_TABLE_TEMPLATE": "c_{interval}_{x}"}, "braces may hold only {interval}"),
        ({"CANDLE_TABLE_NAME": "a.b.c"}, "optionally schema-qualified"),
        ({"CANDLE_TABLE_NAME": "x" * 64}, "longer than PostgreSQL's 63 bytes"),
    ],
)
def test_a_bad_table_name_is_a_configuration_error(tmp_path, env, text):
    proc = cli("--replay", SAMPLE, env={"PG_CONN_STR": DOWN, **env}, home=tmp_path)
    one_error(proc, 2, text)


def test_table_names_may_be_schema_qualified_and_keep_their_case():
    config = Config.from_env(
        {"CANDLE_TABLE_NAME": "market.Candles5", "CANDLE_TABLE_TEMPLATE": "Bars_{interval}m"}
    )
    assert config.tables((1, 5)) == {1: "Bars_1m", 5: "market.Candles5"}
    assert symbols_query(config.table_5min, with_exchange=False) == (
        'SELECT DISTINCT tradingsymbol FROM "market"."Candles5" ORDER BY 1'
    )
    with pytest.raises(ConfigError, match="PG_CONN_STR"):
        Config.from_env({"PG_CONN_STR": "bogus=1"})


def test_symbols_from_db_reads_a_table_whose_name_has_capitals(pg, pg_dsn, tmp_path):
    name = f"Candles_{os.getpid()}"
    pg.execute(
        f'CREATE TABLE "{name}" (datetime TIMESTAMP, tradingsymbol TEXT, open NUMERIC, '
        "high NUMERIC, low NUMERIC, close NUMERIC, volume BIGINT)"
    )
    try:
        pg.execute(f"INSERT INTO \"{name}\" (tradingsymbol) VALUES ('NOSUCH')")
        proc = cli(
            "--replay",
            SAMPLE,
            "--symbols-from-db",
            env={"PG_CONN_STR": pg_dsn, "CANDLE_TABLE_NAME": name},
            home=tmp_path,
        )
    finally:
        pg.execute(f'DROP TABLE "{name}"')
    # The query found the table and its symbol, which the sample does not hold.
    one_error(proc, 1, "unknown symbol(s) in the header of sample.ticks: NOSUCH")


@pytest.mark.parametrize(
    ("dsn", "query", "status", "text"),
    [
        (DOWN, None, 1, "--symbols-from-db: database unavailable"),
        (None, "SELEC nonsense", 2, "SYMBOLS_QUERY failed: syntax error"),
        (None, "SELECT 'x' WHERE false", 1, "SYMBOLS_QUERY returned no symbols"),
    ],
)
def test_symbols_from_db_failures(pg_dsn, tmp_path, dsn, query, status, text):
    env = {"PG_CONN_STR": dsn or pg_dsn, **({"SYMBOLS_QUERY": query} if query else {})}
    proc = cli("--replay", SAMPLE, "--symbols-from-db", env=env, home=tmp_path)
    one_error(proc, status, text)


def test_symbols_from_db_keep_their_exchange(pg_dsn, table_prefix, tmp_path):
    """Tables feedengine creates keep the exchange: --symbols-from-db must not take an MCX
    or NCO contract for an NSE one (bare symbols resolve as NSE)."""
    from feedengine.simulator import SimConfig, simulate

    day = tmp_path / "day.ticks"
    simulate(day, SimConfig(instruments=20, ticks=4000, seed=5))
    env = {"PG_CONN_STR": pg_dsn, "CANDLE_TABLE_TEMPLATE": table_prefix}
    first = cli("--replay", day, env=env, home=tmp_path)
    assert first.returncode == 0, first.stderr
    again = cli("--replay", day, "--symbols-from-db", env=env, home=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "replay of day.ticks: 20 instruments" in again.stderr
