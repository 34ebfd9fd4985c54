"""The candle tables: their names, the schema of an existing one, creating a missing one,
and the SQL that merges staged candles into them (SPEC section 5)."""

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from feedengine import _pgcopy
from feedengine.errors import SchemaError

#: The seed's table naming: one table per interval.
DEFAULT_TABLE_TEMPLATE = "merged_candles_{interval}min"
STAGING = "feedengine_staging"
REQUIRED_COLUMNS = ("datetime", "tradingsymbol", "open", "high", "low", "close", "volume")


#: PostgreSQL keeps this many bytes of a name (NAMEDATALEN - 1) and silently cuts the rest.
MAX_NAME_BYTES = 63
#: A plain SQL identifier: a table name, or a schema's.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
#: Intervals a template is tried with when it is checked: the shortest and longest names.
_CHECK_INTERVALS = (1, 1440)


def check_table_name(name: str) -> str:
    """``name`` when it is a table name feedengine can use: ``table`` or ``schema.table``.

    Raises
    ------
    ValueError
        Saying what is wrong.
    """
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(p) for p in parts):
        raise ValueError(
            f"{name!r} is not a table name: expected letters, digits and underscores, "
            "optionally schema-qualified (schema.table)"
        )
    long = [p for p in parts if len(p.encode()) > MAX_NAME_BYTES]
    if long:
        raise ValueError(f"{long[0]!r} is longer than PostgreSQL's {MAX_NAME_BYTES} bytes")
    return name


def check_template(template: str) -> str:
    """``template`` when it makes a valid table name for every interval.

    Raises
    ------
    ValueError
        Saying what is wrong.
    """
    if "{interval}" not in template:
        raise ValueError("must contain {interval}")
    for minutes in _CHECK_INTERVALS:
        try:
            name = template.format(interval=minutes)
        except (KeyError, IndexError, ValueError):
            raise ValueError("braces may hold only {interval}") from None
        check_table_name(name)
    return template


@dataclass(frozen=True)
class TableNames:
    """The candle table of any interval: ``template`` with the interval's minutes, except that
    ``five_minute`` (when given) names the 5-minute table (the seed's ``CANDLE_TABLE_NAME``).

    Raises
    ------
    ValueError
        From the constructor, for a template or a name that makes no valid table name.
    """

    template: str = DEFAULT_TABLE_TEMPLATE
    five_minute: str | None = None

    def __post_init__(self) -> None:
        check_template(self.template)
        if self.five_minute:
            check_table_name(self.five_minute)

    def __call__(self, minutes: int) -> str:
        if minutes == 5 and self.five_minute:
            return self.five_minute
        return self.template.format(interval=minutes)

    def of(self, intervals: tuple[int, ...]) -> dict[int, str]:
        """Table name per interval."""
        return {m: self(m) for m in intervals}


def table_names(
    intervals: tuple[int, ...],
    template: str = DEFAULT_TABLE_TEMPLATE,
    five_minute: str | None = None,
) -> dict[int, str]:
    """Table name per interval from ``template``; ``five_minute`` overrides the 5-minute one."""
    return TableNames(template, five_minute).of(intervals)


def identifier(name: str) -> sql.Identifier:
    """A (schema-qualified) table name as SQL, quoted: its case is kept."""
    return sql.Identifier(*name.split("."))


def quoted(name: str) -> str:
    """A checked table name as SQL text, quoted like :func:`identifier` (for ``SYMBOLS_QUERY``
    and ``to_regclass``)."""
    return ".".join(f'"{part}"' for part in check_table_name(name).split("."))


@dataclass(frozen=True)
class TableInfo:
    """How an existing candle table stores a candle."""

    name: str
    datetime_type: str  # "timestamp without time zone" | "timestamp with time zone"
    volume_type: str
    has_key: bool
    created: bool = False
    #: Column types that take the candle-table COPY layout as it is (NUMERIC prices, text
    #: symbol, BIGINT volume), and a unique key to notice a candle that already exists.
    direct_copy: bool = False

    @property
    def stores_instant(self) -> bool:
        return self.datetime_type == "timestamp with time zone"

    def describe(self) -> str:
        key = (
            "unique key (tradingsymbol, datetime)"
            if self.has_key
            else ("no unique key: written by delete-then-insert")
        )
        made = "created" if self.created else "found"
        return (
            f"{self.name}: {made}; datetime {self.datetime_type}, volume {self.volume_type}, {key}"
        )


def inspect_table(conn: psycopg.Connection[Any], name: str) -> TableInfo | None:
    """Describe table ``name``, or None when it does not exist."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
        (quoted(name),),
    ).fetchall()
    if not rows:
        return None
    columns = {str(n): str(t) for n, t in rows}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise SchemaError(
            f"table {name} lacks column(s) {', '.join(missing)}; feedengine "
            f"writes {', '.join(REQUIRED_COLUMNS)}"
        )
    dt = columns["datetime"]
    if dt not in ("timestamp without time zone", "timestamp with time zone"):
        raise SchemaError(
            f"table {name}: column datetime is {dt}; expected TIMESTAMP or TIMESTAMPTZ"
        )
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass(%s) "
        "AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL AND "
        "(SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a "
        " WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) "
        "= ARRAY['datetime', 'tradingsymbol'])",
        (quoted(name),),
    ).fetchone()
    has_key = bool(row and row[0])
    direct = (
        has_key
        and columns["volume"] == "bigint"
        and columns["tradingsymbol"].split("(")[0] in ("text", "character varying")
        and all(columns[c].split("(")[0] == "numeric" for c in ("open", "high", "low", "close"))
    )
    return TableInfo(name, dt, columns["volume"].split("(")[0], has_key, direct_copy=direct)


def ensure_table(conn: psycopg.Connection[Any], name: str) -> TableInfo:
    """Describe ``name``, creating it with the seed's schema when it is missing."""
    info = inspect_table(conn, name)
    if info is not None:
        return info
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (datetime TIMESTAMP NOT NULL, "
            "tradingsymbol VARCHAR NOT NULL, open NUMERIC, high NUMERIC, low NUMERIC, "
            "close NUMERIC, volume BIGINT, PRIMARY KEY (tradingsymbol, datetime))"
        ).format(identifier(name))
    )
    info = inspect_table(conn, name)
    assert info is not None
    return TableInfo(
        info.name,
        info.datetime_type,
        info.volume_type,
        info.has_key,
        created=True,
        direct_copy=info.direct_copy,
    )


def latest_per_candle(records: np.ndarray) -> np.ndarray:
    """The last version of each candle in ``records``, ordered by (interval, symbol, time).

    A flush may hold a candle twice (an in-progress snapshot and its final value); the
    upsert must see it once. The order follows the tables' primary key, which makes the
    server's index insertions sequential.
    """
    order = np.lexsort((records["bucket_start_ns"], records["symbol"], records["minutes"]))
    rows = records[order]
    same_as_next = (
        (rows["minutes"][:-1] == rows["minutes"][1:])
        & (rows["symbol"][:-1] == rows["symbol"][1:])
        & (rows["bucket_start_ns"][:-1] == rows["bucket_start_ns"][1:])
    )
    return rows[np.append(~same_as_next, True)] if len(rows) else rows


def copy_statement(info: TableInfo) -> sql.Composed:
    """``COPY`` straight into ``info``'s table, in the encoder's candle-table layout."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        identifier(info.name), sql.SQL(", ").join(map(sql.Identifier, _pgcopy.TABLE_COLUMNS))
    )


def merge_statement(info: TableInfo) -> sql.Composed:
    """SQL merging the staging rows of one interval (``%s``) into ``info``'s table.

    The staging rows hold each candle once (:func:`latest_per_candle`).
    """
    dt = sql.Identifier("dt_utc" if info.stores_instant else "dt_ist")
    latest = sql.SQL(
        "SELECT {dt} AS dt, tradingsymbol, open, high, low, close, volume FROM {staging} "
        "WHERE minutes = %s"
    ).format(dt=dt, staging=sql.Identifier(STAGING))
    table = identifier(info.name)
    if info.has_key:
        return sql.SQL(
            "INSERT INTO {t} (datetime, tradingsymbol, open, high, low, close, volume) "
            "SELECT dt, tradingsymbol, open, high, low, close, volume FROM ({latest}) s "
            "ON CONFLICT (tradingsymbol, datetime) DO UPDATE SET open = EXCLUDED.open, "
            "high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, "
            "volume = EXCLUDED.volume"
        ).format(t=table, latest=latest)
    return sql.SQL(
        "WITH s AS ({latest}), gone AS (DELETE FROM {t} USING s "
        "WHERE {t}.tradingsymbol = s.tradingsymbol AND {t}.datetime = s.dt) "
        "INSERT INTO {t} (datetime, tradingsymbol, open, high, low, close, volume) "
        "SELECT dt, tradingsymbol, open, high, low, close, volume FROM s"
    ).format(t=table, latest=latest)


STAGING_DDL = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS {} (minutes int2, tradingsymbol text, "
    "dt_ist timestamp, dt_utc timestamptz, open numeric, high numeric, low numeric, "
    "close numeric, volume int8) ON COMMIT DELETE ROWS"
).format(sql.Identifier(STAGING))
COPY_STAGING = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.Identifier(STAGING), sql.SQL(", ").join(map(sql.Identifier, _pgcopy.STAGING_COLUMNS))
)
