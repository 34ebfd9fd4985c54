"""The candle tables (SPEC section 5): their names, the schema of an existing one, creating a
missing one, whether one keeps the run's instruments apart, the advisory lock of concurrent
writers, and the SQL that merges staged candles into them."""

import dataclasses
import logging
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from feedengine import _pgcopy
from feedengine.errors import SchemaError
from feedengine.instruments import Instrument
from feedengine.sessions import IST, NS_PER_S

log = logging.getLogger(__name__)

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
#: First key of feedengine's advisory locks (pg_advisory_xact_lock(int, int)), "FEED" in
#: ASCII, so that other applications' locks on the same server do not collide with them.
LOCK_CLASS = 0x46454544


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


def symbols_query(table: str, with_exchange: bool) -> str:
    """``--symbols-from-db`` without ``SYMBOLS_QUERY``: the distinct symbols of ``table``,
    each with its exchange when the table keeps one (else they resolve as NSE)."""
    columns = "tradingsymbol, exchange" if with_exchange else "tradingsymbol"
    return f"SELECT DISTINCT {columns} FROM {quoted(table)} ORDER BY 1"


#: Column sets of the unique keys candles are merged on, sorted like :func:`inspect_table`'s.
KEY = ("datetime", "tradingsymbol")
KEY_EXCHANGE = ("datetime", "exchange", "tradingsymbol")
#: Type names (``format_type`` without the modifier) that hold a symbol or an exchange code.
_TEXT_TYPES = ("text", "character varying", "character")


@dataclass(frozen=True)
class KeyIndex:
    """The unique index behind a key, for the statements that replace it."""

    name: str
    #: ``p`` primary key, ``u`` unique constraint, ``None`` a unique index of its own.
    constraint: str | None


@dataclass(frozen=True)
class TableInfo:
    """How an existing candle table stores a candle."""

    name: str
    datetime_type: str  # "timestamp without time zone" | "timestamp with time zone"
    volume_type: str
    #: :data:`KEY` or :data:`KEY_EXCHANGE`: the unique key candles are merged on (the former
    #: when both exist); None: none, written by delete-then-insert.
    key: tuple[str, ...] | None
    #: Whether the table has an ``exchange`` column (written whatever the key).
    has_exchange: bool
    #: Decimal places of each price column of type ``NUMERIC(p, s)`` (None: no limit).
    price_scales: tuple[int | None, ...] = (None, None, None, None)
    key_index: KeyIndex | None = None
    created: bool = False
    #: Column types that take the candle-table COPY layout as it is (NUMERIC prices, text
    #: symbol and exchange, BIGINT volume), and a unique key to notice a candle that
    #: already exists.
    direct_copy: bool = False

    @property
    def stores_instant(self) -> bool:
        return self.datetime_type == "timestamp with time zone"

    @property
    def keyed_by_exchange(self) -> bool:
        """Whether candles of two exchanges with one symbol stay apart in this table."""
        return self.has_exchange and self.key != KEY

    def describe(self) -> str:
        if self.key is None:
            key = "no unique key: written by delete-then-insert"
        else:
            key = f"unique key ({', '.join(c for c in KEY_EXCHANGE if c in self.key)})"
        made = "created" if self.created else "found"
        exchange = "exchange column" if self.has_exchange else "no exchange column"
        return (
            f"{self.name}: {made}; datetime {self.datetime_type}, volume {self.volume_type}, "
            f"{exchange}, {key}"
        )


_UNIQUE_KEYS = (
    "SELECT ic.relname, con.contype, "
    "(SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a "
    " WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) "
    "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
    "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid "
    "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL "
    "AND i.indexprs IS NULL"
)


def _base_type(type_name: str) -> str:
    return type_name.split("(")[0]


def _scale(type_name: str) -> int | None:
    """The scale of ``numeric(p,s)``; None for ``numeric`` or any other type."""
    if _base_type(type_name) != "numeric" or "," not in type_name:
        return None
    return int(type_name.split(",")[1].rstrip(")"))


def inspect_table(conn: psycopg.Connection[Any], name: str) -> TableInfo | None:
    """Describe table ``name``, or None when it does not exist.

    Raises
    ------
    SchemaError
        A column feedengine writes is missing or of a type it cannot write.
    """
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
    has_exchange = "exchange" in columns
    texts = ["tradingsymbol", *(["exchange"] if has_exchange else [])]
    for column in texts:
        if _base_type(columns[column]) not in _TEXT_TYPES:
            raise SchemaError(
                f"table {name}: column {column} is {columns[column]}; expected VARCHAR or TEXT"
            )
    keys = {
        tuple(cols): KeyIndex(str(index), None if kind is None else str(kind))
        for index, kind, cols in conn.execute(_UNIQUE_KEYS, (quoted(name),)).fetchall()
    }
    key: tuple[str, ...] | None = None
    if KEY in keys:
        key = KEY
    elif has_exchange and KEY_EXCHANGE in keys:
        key = KEY_EXCHANGE
    prices = ("open", "high", "low", "close")
    direct = (
        key is not None
        and columns["volume"] == "bigint"
        and all(_base_type(columns[c]) in ("text", "character varying") for c in texts)
        and all(_base_type(columns[c]) == "numeric" for c in prices)
    )
    return TableInfo(
        name,
        dt,
        _base_type(columns["volume"]),
        key,
        has_exchange,
        price_scales=tuple(_scale(columns[c]) for c in prices),
        key_index=keys.get(KEY),
        direct_copy=direct,
    )


def lock_key(name: str) -> int:
    """The second key of table ``name``'s advisory lock: a signed 32-bit hash of the name
    as configured (every writer of a table names it alike)."""
    key = zlib.crc32(name.encode())
    return key - 2**32 if key >= 2**31 else key


def lock_table(conn: psycopg.Connection[Any], name: str) -> None:
    """Take table ``name``'s advisory lock until the end of the current transaction.

    Writers that must not interleave take it: two first starts creating the table (the
    loser of ``CREATE TABLE IF NOT EXISTS`` gets a UniqueViolation), and two writers of a
    table without a unique key (each one's delete misses the other's uncommitted rows, so
    both inserts stay: candles doubled). Taken in a statement of its own, so that the
    next statement's snapshot sees what the previous holder committed.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, lock_key(name)))


def lock_rank(name: str) -> tuple[int, str]:
    """Where ``name``'s lock (:func:`lock_table`) comes when a writer takes several: one
    order for every feedengine, so that no two writers wait for each other (one of them may
    be a bulk load's lanes, whose waits for each other the server cannot see)."""
    return lock_key(name), name


#: The primary key of a table feedengine creates.
CREATED_KEY = sql.SQL("PRIMARY KEY (tradingsymbol, datetime, exchange)")


def create_statement(name: str, key: bool = True) -> sql.Composed:
    """``CREATE TABLE`` of a candle table feedengine creates (see :func:`ensure_table`);
    without its primary key when ``key`` is False (a bulk load adds it after the rows,
    :func:`key_statement`)."""
    # COLLATE "C": bytewise, the order ASCII symbols have under any locale, compared by
    # memcmp with abbreviated keys. The 1-minute key of a 3000-instrument day (985k rows)
    # built in 1.0 s instead of 1.3 s under the server's C.UTF-8 (libc's strcoll).
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (datetime TIMESTAMP NOT NULL, "
        'tradingsymbol VARCHAR COLLATE "C" NOT NULL, exchange VARCHAR COLLATE "C" NOT NULL, '
        "open NUMERIC, high NUMERIC, low NUMERIC, close NUMERIC, volume BIGINT{})"
    ).format(identifier(name), sql.SQL(", {}").format(CREATED_KEY) if key else sql.SQL(""))


def key_statement(name: str) -> sql.Composed:
    """Adds the primary key of :func:`create_statement` to a table created without it."""
    return sql.SQL("ALTER TABLE {} ADD {}").format(identifier(name), CREATED_KEY)


def ensure_table(conn: psycopg.Connection[Any], name: str) -> TableInfo:
    """Describe ``name``, creating it when it is missing (in the caller's transaction,
    holding the table's lock: another feedengine may be creating it at the same time).

    A created table has an ``exchange`` column and the primary key (tradingsymbol,
    datetime, exchange): instruments of two exchanges with one trading symbol (NSE and BSE,
    MCX and NCO) keep their own candles, and queries by symbol and time use the key's prefix.
    """
    info = inspect_table(conn, name)
    if info is not None:
        return info
    lock_table(conn, name)
    info = inspect_table(conn, name)  # the other creator's table, if one was first
    if info is not None:
        return info
    conn.execute(create_statement(name))
    info = inspect_table(conn, name)
    assert info is not None
    return dataclasses.replace(info, created=True)


def _keying_statements(info: TableInfo, exchange: str) -> str:
    """SQL that lets ``info``'s table keep candles apart by exchange (existing rows get
    ``exchange``)."""
    table = quoted(info.name)
    changes = []
    if not info.has_exchange:
        changes.append(f"ADD COLUMN exchange VARCHAR NOT NULL DEFAULT '{exchange}'")
    before = ""
    index = info.key_index
    if index is not None:
        columns = "(tradingsymbol, datetime, exchange)"
        if index.constraint is None:
            schema = info.name.rpartition(".")[0]
            before = f"DROP INDEX {quoted(f'{schema}.{index.name}' if schema else index.name)}; "
        else:
            changes.append(f"DROP CONSTRAINT {quoted(index.name)}")
        changes.append(f"ADD {'PRIMARY KEY' if index.constraint == 'p' else 'UNIQUE'} {columns}")
    return f"{before}ALTER TABLE {table} {', '.join(changes)}"


def refuse_clashes(info: TableInfo, instruments: Sequence[Instrument]) -> None:
    """Refuse a table that would merge the candles of two of these instruments.

    Raises
    ------
    SchemaError
        Two instruments share a trading symbol and the table is not keyed by exchange. The
        message names them, the table, and how to go on.
    """
    if info.keyed_by_exchange:
        return
    by_symbol: dict[str, list[Instrument]] = {}
    for inst in instruments:
        by_symbol.setdefault(inst.tradingsymbol, []).append(inst)
    clashes = [same for same in by_symbol.values() if len({i.exchange for i in same}) > 1]
    if clashes:
        names = " and ".join(f"{i.exchange}:{i.tradingsymbol}" for i in clashes[0])
        more = f" (and {len(clashes) - 1} more symbol(s))" if len(clashes) > 1 else ""
        common = Counter(i.exchange for i in instruments).most_common(1)[0][0]
        raise SchemaError(
            f"instruments {names}{more} share a trading symbol, and table {info.name} "
            "keeps one candle per (tradingsymbol, datetime), so their candles would "
            "overwrite each other. Subscribe only one of them, or key the table by "
            f"exchange (existing rows get {common}): {_keying_statements(info, common)}"
        )


def rounding(info: TableInfo, instruments: Sequence[Instrument]) -> str | None:
    """What ``info``'s price columns round of these instruments' prices, or None."""
    places = max((decimals(i) for i in instruments), default=0)
    cut = [
        (column, scale)
        for column, scale in zip(("open", "high", "low", "close"), info.price_scales, strict=True)
        if scale is not None and scale < places
    ]
    if not cut:
        return None
    fewest = min(scale for _, scale in cut)
    needing = [i for i in instruments if decimals(i) > fewest]
    return (
        f"table {info.name} rounds prices: column(s) {', '.join(c for c, _ in cut)} keep "
        f"{'/'.join(str(s) for _, s in cut)} decimal(s), but {len(needing)} instrument(s) "
        f"quote up to {places} (e.g. {needing[0].exchange}:{needing[0].tradingsymbol}); "
        f"ALTER TABLE {quoted(info.name)} ALTER COLUMN <column> TYPE NUMERIC keeps them exact"
    )


def decimals(instrument: Instrument) -> int:
    """Decimal places of the instrument's prices (its price scale)."""
    return instrument.decimals


def latest_per_candle(records: np.ndarray) -> np.ndarray:
    """The last version of each candle in ``records``, ordered by (interval, symbol, time,
    exchange).

    A flush may hold a candle twice (an in-progress snapshot and its final value); the
    upsert must see it once. The order follows the tables' primary key, which makes the
    server's index insertions sequential.
    """
    order = np.lexsort(
        (records["exchange"], records["bucket_start_ns"], records["symbol"], records["minutes"])
    )
    rows = records[order]
    same_as_next = (
        (rows["minutes"][:-1] == rows["minutes"][1:])
        & (rows["symbol"][:-1] == rows["symbol"][1:])
        & (rows["bucket_start_ns"][:-1] == rows["bucket_start_ns"][1:])
        & (rows["exchange"][:-1] == rows["exchange"][1:])
    )
    return rows[np.append(~same_as_next, True)] if len(rows) else rows


def _columns(info: TableInfo) -> list[str]:
    """The candle table's columns feedengine writes, in the encoder's order."""
    return [c for c in _pgcopy.TABLE_COLUMNS if c != "exchange" or info.has_exchange]


def copy_statement(info: TableInfo, freeze: bool = False) -> sql.Composed:
    """``COPY`` straight into ``info``'s table, in the encoder's candle-table layout; with
    ``freeze``, its rows written frozen (only into a table created in the same
    transaction)."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY{})").format(
        identifier(info.name),
        sql.SQL(", ").join(map(sql.Identifier, _columns(info))),
        sql.SQL(", FREEZE") if freeze else sql.SQL(""),
    )


def merge_statement(info: TableInfo, fill: bool = False) -> sql.Composed:
    """SQL merging the staging rows of one interval (``%s``) into ``info``'s table.

    The staging rows hold each candle once (:func:`latest_per_candle`). A merge replaces a
    stored candle; with ``fill`` only candles the table lacks are inserted (gap repair must
    never overwrite a candle built live).
    """
    columns = _columns(info)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    dt = sql.Identifier("dt_utc" if info.stores_instant else "dt_ist")
    latest = sql.SQL("SELECT {dt} AS datetime, {rest} FROM {staging} WHERE minutes = %s").format(
        dt=dt,
        rest=sql.SQL(", ").join(map(sql.Identifier, columns[1:])),
        staging=sql.Identifier(STAGING),
    )
    table = identifier(info.name)
    if info.key is not None and fill:
        return sql.SQL(
            "INSERT INTO {t} ({names}) SELECT {names} FROM ({latest}) s "
            "ON CONFLICT ({key}) DO NOTHING"
        ).format(
            t=table,
            names=names,
            latest=latest,
            key=sql.SQL(", ").join(map(sql.Identifier, info.key)),
        )
    if info.key is not None:
        return sql.SQL(
            "INSERT INTO {t} ({names}) SELECT {names} FROM ({latest}) s "
            "ON CONFLICT ({key}) DO UPDATE SET {update}"
        ).format(
            t=table,
            names=names,
            latest=latest,
            key=sql.SQL(", ").join(map(sql.Identifier, info.key)),
            update=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                for c in columns
                if c not in info.key
            ),
        )
    match = [c for c in ("tradingsymbol", "datetime", "exchange") if c in columns]
    matched = sql.SQL(" AND ").join(
        sql.SQL("{t}.{c} = s.{c}").format(t=table, c=sql.Identifier(c)) for c in match
    )
    if fill:
        return sql.SQL(
            "INSERT INTO {t} ({names}) SELECT {names} FROM ({latest}) s "
            "WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE {matched})"
        ).format(t=table, names=names, latest=latest, matched=matched)
    return sql.SQL(
        "WITH s AS ({latest}), gone AS (DELETE FROM {t} USING s WHERE {match}) "
        "INSERT INTO {t} ({names}) SELECT {names} FROM s"
    ).format(t=table, latest=latest, names=names, match=matched)


def stored_statement(info: TableInfo) -> sql.Composed:
    """SQL reading one instrument's candles in a time range, in time order (parameters:
    :func:`stored_params`)."""
    exchange = sql.SQL(" AND exchange = %s") if info.has_exchange else sql.SQL("")
    return sql.SQL(
        "SELECT datetime, open, high, low, close, volume FROM {t} WHERE tradingsymbol = %s"
        "{exchange} AND datetime >= %s AND datetime < %s ORDER BY datetime"
    ).format(t=identifier(info.name), exchange=exchange)


def stored_params(
    info: TableInfo, instrument: Instrument, start_ns: int, end_ns: int
) -> tuple[Any, ...]:
    """The parameters of :func:`stored_statement`: ``[start_ns, end_ns)`` in the column's
    own terms (an IST wall clock, or an instant)."""
    keys = (
        (instrument.tradingsymbol, instrument.exchange)
        if info.has_exchange
        else (instrument.tradingsymbol,)
    )
    return (*keys, *range_params(info, start_ns, end_ns))


def symbols_statement(info: TableInfo) -> sql.Composed:
    """SQL listing the distinct symbols (``EXCHANGE:SYMBOL`` when the table keeps the
    exchange) with candles in a time range (parameters: :func:`range_params`)."""
    symbol = (
        sql.SQL("exchange || ':' || tradingsymbol")
        if info.has_exchange
        else sql.SQL("tradingsymbol")
    )
    return sql.SQL(
        "SELECT DISTINCT {symbol} FROM {t} WHERE datetime >= %s AND datetime < %s"
    ).format(symbol=symbol, t=identifier(info.name))


def range_params(info: TableInfo, start_ns: int, end_ns: int) -> tuple[datetime, datetime]:
    """``[start_ns, end_ns)`` in the datetime column's own terms (IST wall clock or instant)."""
    zone = UTC if info.stores_instant else IST
    start, end = (datetime.fromtimestamp(ns // NS_PER_S, zone) for ns in (start_ns, end_ns))
    if zone is IST:
        return start.replace(tzinfo=None), end.replace(tzinfo=None)
    return start, end


def bucket_ns(stamp: datetime) -> int:
    """A candle table's datetime as Unix ns: a naive value is the IST wall clock."""
    aware = stamp.replace(tzinfo=IST) if stamp.tzinfo is None else stamp
    return int(aware.timestamp()) * NS_PER_S


STAGING_DDL = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS {} (minutes int2, tradingsymbol text, exchange text, "
    "dt_ist timestamp, dt_utc timestamptz, open numeric, high numeric, low numeric, "
    "close numeric, volume int8) ON COMMIT DELETE ROWS"
).format(sql.Identifier(STAGING))
COPY_STAGING = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.Identifier(STAGING), sql.SQL(", ").join(map(sql.Identifier, _pgcopy.STAGING_COLUMNS))
)
