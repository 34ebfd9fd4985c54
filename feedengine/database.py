"""PostgreSQL: the binary-COPY sink, the embedded server, the checks (SPEC section 5).

Each flush is one transaction: the records are encoded by the compiled PGCOPY encoder,
COPYed into a temporary staging table, and merged into one table per interval with
``INSERT … ON CONFLICT … DO UPDATE`` (or delete-then-insert for a table without a unique key).
Existing tables are used as they are: ``TIMESTAMP`` columns get the IST wall-clock bucket
start, ``TIMESTAMPTZ`` columns the instant.
"""

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from feedengine import _pgcopy
from feedengine.errors import (
    ConfigError,
    InstrumentsError,
    SchemaError,
    SinkDataError,
    SinkUnavailable,
)
from feedengine.sink import candle_tuples
from feedengine.tables import (
    COPY_STAGING,
    STAGING_DDL,
    TableInfo,
    copy_statement,
    ensure_table,
    identifier,
    latest_per_candle,
    merge_statement,
)

log = logging.getLogger(__name__)

#: Seconds to wait for a connection before the database counts as down.
CONNECT_TIMEOUT_S = 5
#: Shows in pg_stat_activity, so operators (and the fault tests) can find our sessions.
APPLICATION_NAME = "feedengine"
#: After a flush whose direct COPY met an existing candle, this many flushes of that table
#: go straight to the upsert before the direct COPY is tried again.
UPSERT_STREAK = 16
#: Largest volume each integer column type holds.
_INT_LIMITS = {"smallint": 2**15 - 1, "integer": 2**31 - 1}


def connect(dsn: str) -> psycopg.Connection[Any]:
    """A connection for feedengine's use (explicit transactions)."""
    return psycopg.connect(
        dsn, connect_timeout=CONNECT_TIMEOUT_S, application_name=APPLICATION_NAME
    )


class PostgresSink:
    """Writes candle records to PostgreSQL, one transaction per block.

    Parameters
    ----------
    dsn
        libpq connection string or URI.
    tables
        Table name per interval (see :func:`table_names`).

    Raises
    ------
    SinkUnavailable
        From :meth:`write` when the server cannot be reached; the connection is dropped and
        the next write reconnects.
    SinkDataError
        When a table cannot hold the rows (e.g. a volume too large for an INTEGER column).
    """

    def __init__(self, dsn: str, tables: dict[int, str]) -> None:
        self.dsn = dsn
        self.tables = tables
        self.info: dict[int, TableInfo] = {}
        self._conn: psycopg.Connection[Any] | None = None
        self._merges: dict[int, sql.Composed] = {}
        self._copies: dict[int, tuple[sql.Composed, int]] = {}
        self._upsert_only: dict[int, int] = {}

    def open(self, intervals: tuple[int, ...]) -> None:
        try:
            self._connection()
        except SinkUnavailable as e:
            log.error("database unavailable at start (%s); candles will be spilled and retried", e)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = connect(self.dsn)
            with conn.transaction():
                for minutes, name in self.tables.items():
                    info = ensure_table(conn, name)
                    if minutes not in self.info:
                        log.info("candle table %s", info.describe())
                    self.info[minutes] = info
                    self._merges[minutes] = merge_statement(info)
                    if info.direct_copy:
                        layout = (
                            _pgcopy.LAYOUT_TABLE_INSTANT
                            if info.stores_instant
                            else _pgcopy.LAYOUT_TABLE_WALL
                        )
                        self._copies[minutes] = (copy_statement(info), layout)
                conn.execute(STAGING_DDL)
        except psycopg.OperationalError as e:
            raise SinkUnavailable(str(e).strip().splitlines()[0]) from e
        except (psycopg.Error, SchemaError) as e:
            raise SinkDataError(str(e).strip()) from e
        self._conn = conn
        return conn

    def _check_volumes(self, records: np.ndarray) -> None:
        for minutes, info in self.info.items():
            limit = _INT_LIMITS.get(info.volume_type)
            if limit is None:
                continue
            rows = records[(records["minutes"] == minutes) & (records["volume"] > limit)]
            if len(rows):
                m, symbol, start, *_, volume = candle_tuples(rows[:1])[0]
                raise SinkDataError(
                    f"volume {volume} of {symbol} {m}-minute candle at {start:%Y-%m-%d %H:%M} "
                    f"does not fit column {info.name}.volume ({info.volume_type}); "
                    f"ALTER TABLE {info.name} ALTER COLUMN volume TYPE BIGINT"
                )

    def write(self, records: np.ndarray) -> None:
        if not len(records):
            return
        conn = self._connection()
        self._check_volumes(records)
        records = latest_per_candle(records)
        try:
            with conn.transaction(), conn.cursor() as cur:
                staged = False
                for minutes in np.unique(records["minutes"]).tolist():
                    if self._copy_new(conn, cur, minutes, records[records["minutes"] == minutes]):
                        continue
                    if not staged:
                        with cur.copy(COPY_STAGING) as copy:
                            copy.write(_pgcopy.encode(records))
                        staged = True
                    cur.execute(self._merges[minutes], (minutes,))
        except psycopg.OperationalError as e:
            self._drop()
            raise SinkUnavailable(str(e).strip().splitlines()[0]) from e
        except psycopg.InterfaceError as e:  # the connection is gone
            self._drop()
            raise SinkUnavailable(str(e).strip()) from e
        except psycopg.Error as e:
            self._drop()
            raise SinkDataError(str(e).strip()) from e

    def _copy_new(
        self,
        conn: psycopg.Connection[Any],
        cur: psycopg.Cursor[Any],
        minutes: int,
        block: np.ndarray,
    ) -> bool:
        """COPY one interval's candles straight into its table, if they are all new.

        Most flushes carry only new candles, and a plain COPY into the table costs the
        server about half of staging them and merging with ``INSERT … ON CONFLICT``. So it is
        tried first, inside a savepoint; if a candle already exists the savepoint is rolled
        back, False is returned (the caller upserts), and the next :data:`UPSERT_STREAK`
        flushes of that table upsert directly.
        """
        copy = self._copies.get(minutes)
        streak = self._upsert_only.get(minutes, 0)
        if copy is None or streak:
            self._upsert_only[minutes] = max(streak - 1, 0)
            return False
        statement, layout = copy
        try:
            with conn.transaction(), cur.copy(statement) as out:
                out.write(_pgcopy.encode(block, layout))
        except psycopg.errors.UniqueViolation:
            self._upsert_only[minutes] = UPSERT_STREAK
            return False
        return True

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop()


# --- the embedded server ---------------------------------------------------------------------


def embedded_dsn(home: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``home/pgdata``; return its URI.

    The server keeps running after this process exits, so the next run reuses it and
    ``psql`` can look at the candles.
    """
    # pgserver keeps its lock file in the user's runtime directory, which a service or a
    # container may not have.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(home / "run"))
    (home / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
    import pgserver  # heavy import, only when needed

    server = pgserver.get_server(home / "pgdata", cleanup_mode=None)
    uri: str = server.get_uri()
    return uri


def reason(error: psycopg.Error) -> str:
    """The first line of a psycopg error: what the server or libpq said."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def symbols_from_db(dsn: str, query: str) -> list[str]:
    """Run ``SYMBOLS_QUERY``; its first column gives the symbols.

    Raises
    ------
    SinkUnavailable
        The database cannot be reached.
    ConfigError
        The query fails (bad SQL, a missing table).
    InstrumentsError
        It returns no symbols.
    """
    try:
        conn = connect(dsn)
    except psycopg.Error as e:
        raise SinkUnavailable(f"--symbols-from-db: database unavailable: {reason(e)}") from None
    try:
        with conn:
            rows = conn.execute(sql.SQL(query)).fetchall()
    except psycopg.OperationalError as e:
        raise SinkUnavailable(f"--symbols-from-db: database unavailable: {reason(e)}") from None
    except psycopg.Error as e:
        raise ConfigError(f"SYMBOLS_QUERY failed: {reason(e)}: {query}") from None
    symbols = [str(r[0]) for r in rows if r and r[0]]
    if not symbols:
        raise InstrumentsError(f"SYMBOLS_QUERY returned no symbols: {query}")
    return symbols


def check_database(dsn: str, tables: dict[int, str]) -> list[str]:
    """``--test-database``: connect, check or create the tables; report what was found.

    Raises
    ------
    SinkUnavailable
        The database cannot be reached.
    SchemaError, SinkDataError
        A table that cannot be used or created, with a message naming it.
    """
    try:
        with connect(dsn) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            lines = [f"connected: PostgreSQL {version[0] if version else '?'}"]
            with conn.transaction():
                for minutes, name in tables.items():
                    info = ensure_table(conn, name)
                    count = conn.execute(
                        sql.SQL("SELECT count(*) FROM {}").format(identifier(name))
                    ).fetchone()
                    lines.append(
                        f"{minutes}-minute table {info.describe()}; {count[0] if count else 0} rows"
                    )
            return lines
    except psycopg.OperationalError as e:
        raise SinkUnavailable(f"database unavailable: {reason(e)}") from None
    except psycopg.Error as e:
        raise SinkDataError(f"database refused the check: {reason(e)}") from None
