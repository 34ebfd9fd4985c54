"""PostgreSQL: the binary-COPY sink, the embedded server, the checks (SPEC section 5).

Each flush writes each interval's records with the compiled PGCOPY encoder, COPYed straight
into its table or into a temporary staging table and merged with
``INSERT … ON CONFLICT … DO UPDATE`` (or delete-then-insert for a table without a unique key);
the tables themselves are :mod:`feedengine.tables`' business. The intervals of a flush are
written at once, one connection and transaction per table, committed only when all have
written (:meth:`PostgresSink._write_lanes`). Each transaction notifies
``LISTEN feedengine_candles`` for its table (:mod:`feedengine.events`).
Every exchange with the server is bounded in time (:data:`WRITE_TIMEOUT_S`,
:class:`~feedengine.watchdog.Watchdog`), so a server that stops answering fails a write
instead of hanging it.
"""

import contextlib
import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from feedengine import _pgcopy
from feedengine.dtypes import records_where
from feedengine.errors import (
    ConfigError,
    InstrumentsError,
    SchemaError,
    SinkDataError,
    SinkUnavailable,
)
from feedengine.events import NOTIFY, notice
from feedengine.instruments import Instrument
from feedengine.sink import candle_tuples
from feedengine.tables import (
    COPY_STAGING,
    STAGING_DDL,
    TableInfo,
    TableNames,
    bucket_ns,
    copy_statement,
    ensure_table,
    identifier,
    inspect_table,
    latest_per_candle,
    lock_rank,
    lock_table,
    merge_statement,
    range_params,
    refuse_clashes,
    rounding,
    stored_params,
    stored_statement,
    symbols_query,
    symbols_statement,
)
from feedengine.watchdog import Watchdog

if TYPE_CHECKING:
    from feedengine.bulkload import BulkLoad

log = logging.getLogger(__name__)

#: Seconds to wait for a connection before the database counts as down (at most the write
#: bound; psycopg allows no less than 2). A stopped server still completes the TCP
#: handshake, so this is what ends a connection attempt to it.
CONNECT_TIMEOUT_S = 5
#: Longest a write (connect, table checks, COPY, merge, commit) may take before it counts as
#: failed: its rows are spilled and retried. The slowest of 251 flushes of 8192 rows in a
#: 4 M-tick, 9000-instrument x 4-interval replay took 0.13 s (median 0.045 s) on a 2-core
#: machine; 20 s leaves a slow or busy server 150 times that, while the candle ring (2-3
#: minutes of candles at 9000 instruments) keeps filling behind a hung one. The sink's
#: constructor takes another bound (tests use about a second).
WRITE_TIMEOUT_S = 20.0
#: TCP keepalives: a silent peer (a dead host, a cut cable) is noticed after about
#: idle + interval x count seconds instead of the kernel's two hours.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
#: The server cancels a statement after this share of the write bound: on a live server a
#: slow statement (a lock wait behind another writer) ends cleanly before the watchdog
#: cuts the connection.
STATEMENT_TIMEOUT_SHARE = 0.75
#: The server ends a session idle in a transaction for this many write bounds: a stopped
#: feedengine must not hold a table's lock for ever, and no live one idles that long.
IDLE_IN_TRANSACTION_BOUNDS = 3
#: Shows in pg_stat_activity, so operators (and the fault tests) can find our sessions.
APPLICATION_NAME = "feedengine"
#: After a flush whose direct COPY met an existing candle, this many flushes of that table
#: go straight to the upsert before the direct COPY is tried again.
UPSERT_STREAK = 16
#: A candle as a table holds it: bucket start (Unix ns), open, high, low, close, volume;
#: None where a column is NULL.
StoredCandle = tuple[
    int, Decimal | None, Decimal | None, Decimal | None, Decimal | None, int | None
]
#: Largest volume each integer column type holds.
_INT_LIMITS = {"smallint": 2**15 - 1, "integer": 2**31 - 1}


def connect(
    dsn: str, timeout_s: float = WRITE_TIMEOUT_S, watchdog: Watchdog | None = None
) -> psycopg.Connection[Any]:
    """A connection for feedengine's use (explicit transactions), bounded where the server
    and the network can bound it.

    ``connect_timeout``, TCP keepalives and ``tcp_user_timeout`` (unacknowledged data for
    ``timeout_s``: a broken network) apply unless ``dsn`` sets them; so do
    :data:`STATEMENT_TIMEOUT_SHARE` and :data:`IDLE_IN_TRANSACTION_BOUNDS` of ``timeout_s``
    on the server. A stopped server answers none of this, hence the ``watchdog`` (here,
    around the settings; a watchdog of its own when None).
    """
    given = conninfo_to_dict(dsn)
    defaults = {
        "connect_timeout": math.ceil(min(CONNECT_TIMEOUT_S, timeout_s)),
        "tcp_user_timeout": int(timeout_s * 1000),
        **KEEPALIVES,
    }
    ours = {k: v for k, v in defaults.items() if k not in given}
    conn = psycopg.connect(make_conninfo(dsn, application_name=APPLICATION_NAME, **ours))
    try:
        with contextlib.ExitStack() as stack:
            if watchdog is None:
                watchdog = stack.enter_context(Watchdog())
            stack.enter_context(watchdog.guard(conn.pgconn.socket, timeout_s))
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false), "
                "set_config('idle_in_transaction_session_timeout', %s, false)",
                (
                    f"{int(timeout_s * STATEMENT_TIMEOUT_SHARE * 1000)}ms",
                    f"{int(timeout_s * IDLE_IN_TRANSACTION_BOUNDS * 1000)}ms",
                ),
            )
            conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


def reason(error: psycopg.Error) -> str:
    """A psycopg error as one line: what the server or libpq said, details included."""
    text = " ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
    return text or type(error).__name__


def _check_volumes(info: TableInfo, records: np.ndarray) -> None:
    """Raise :class:`SinkDataError` for a volume ``info``'s integer column cannot hold."""
    limit = _INT_LIMITS.get(info.volume_type)
    if limit is None:
        return
    rows = records[records["volume"] > limit]
    if len(rows):
        m, symbol, exchange, start, *_, volume = candle_tuples(rows[:1])[0]
        raise SinkDataError(
            f"volume {volume} of {exchange}:{symbol} {m}-minute candle at {start:%Y-%m-%d %H:%M} "
            f"does not fit column {info.name}.volume ({info.volume_type}); "
            f"ALTER TABLE {info.name} ALTER COLUMN volume TYPE BIGINT"
        )


@dataclass
class _Target:
    """One interval's table and how a flush writes it."""

    info: TableInfo
    merge: sql.Composed
    #: Inserts the candles the table lacks, keeps the others (gap repair).
    fill: sql.Composed
    #: ``COPY`` straight into the table and its encoder layout, when the table allows it.
    copy: tuple[sql.Composed, int] | None
    #: Flushes left that skip the direct COPY (see :meth:`PostgresSink._copy_new`).
    upsert_only: int = 0

    @classmethod
    def of(cls, info: TableInfo) -> "_Target":
        copy = None
        if info.direct_copy:
            layout = (
                _pgcopy.LAYOUT_TABLE_INSTANT if info.stores_instant else _pgcopy.LAYOUT_TABLE_WALL
            )
            copy = (copy_statement(info), layout)
        return cls(info, merge_statement(info), merge_statement(info, fill=True), copy)

    def encode(self, records: np.ndarray) -> bytearray:
        """``records`` in the layout of :attr:`copy`."""
        assert self.copy is not None
        return _pgcopy.encode(records, self.copy[1], self.info.has_exchange)


class PostgresSink:
    """Writes candle records to PostgreSQL, one transaction per block.

    Parameters
    ----------
    dsn
        libpq connection string or URI.
    tables
        The table of each interval. Records of any interval are written, whatever the
        intervals given to :meth:`open` (a spill of an earlier run's intervals): a table is
        looked up, and created when missing, the first time its interval is seen.
    write_timeout_s
        Longest a write may take, connection included (:data:`WRITE_TIMEOUT_S`). One that
        overruns has its connection shut down by a watchdog thread and fails.
    parallel
        Write a block of several intervals one lane per interval, each on a connection (and
        a watchdog) of its own, at the same time (:meth:`_write_lanes`); False: every
        write in one transaction on one connection.

    Raises
    ------
    SinkUnavailable
        From :meth:`write` when the server cannot be reached or does not answer within
        ``write_timeout_s``; the connection is dropped and the next write reconnects.
    SinkDataError
        When a table cannot hold the rows (e.g. a volume too large for an INTEGER column).
    """

    def __init__(
        self,
        dsn: str,
        tables: TableNames,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        parallel: bool = True,
    ) -> None:
        self.dsn = dsn
        self.tables = tables
        self.write_timeout_s = write_timeout_s
        self.parallel = parallel
        #: One sink per interval for :meth:`_write_lanes`, made when first needed.
        self._lanes: dict[int, PostgresSink] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._watchdog = Watchdog("postgres-watchdog")
        self._targets: dict[int, _Target] = {}
        #: Intervals whose tables a new connection inspects: opened, or met since.
        self._intervals: list[int] = []
        self._instruments: list[Instrument] = []
        self._conn: psycopg.Connection[Any] | None = None
        self._load: BulkLoad | None = None

    @property
    def info(self) -> dict[int, TableInfo]:
        """The tables met so far, by interval."""
        return {minutes: target.info for minutes, target in self._targets.items()}

    def open(self, intervals: tuple[int, ...], instruments: Sequence[Instrument]) -> None:
        """Connect; find or create the tables of ``intervals``; check that they keep the
        candles of ``instruments`` apart.

        Raises
        ------
        SinkUnavailable
            The database cannot be reached (the caller spills and retries).
        SchemaError
            A table that cannot be used as it is: a missing or odd column, or no exchange
            column when two of ``instruments`` share a trading symbol.
        SinkDataError
            The server refuses (e.g. no permission to create a table).
        """
        self._remember(intervals, instruments)
        self._connection(time.monotonic())

    def _remember(self, intervals: tuple[int, ...], instruments: Sequence[Instrument]) -> None:
        """The run's instruments and intervals, for the tables' checks on every connection."""
        self._instruments = list(instruments)
        self._intervals += [m for m in intervals if m not in self._intervals]

    def open_load(self, intervals: tuple[int, ...], instruments: Sequence[Instrument]) -> bool:
        """Begin a bulk load (:mod:`feedengine.bulkload`) when none of the tables of
        ``intervals`` exists: every write goes to it until :meth:`commit_load`, and nothing
        is visible before that. Otherwise :meth:`open` as usual and return False.

        Raises
        ------
        SinkUnavailable, SchemaError, SinkDataError
            As :meth:`open`.
        """
        from feedengine.bulkload import BulkLoad  # replays only

        # First, as open(): an unavailable server leaves the sink ready for the ordinary
        # writes that follow (tables checked against these instruments).
        self._remember(intervals, instruments)
        load = BulkLoad(self.dsn, self.tables.of(intervals), self.write_timeout_s)
        if load.begin():
            self._load = load
            return True
        self.open(intervals, instruments)
        return False

    @property
    def loading(self) -> bool:
        """Whether a bulk load is open: written rows are not committed yet."""
        return self._load is not None

    def commit_load(self) -> None:
        """Commit the bulk load: every row written since :meth:`open_load` at once.

        Raises
        ------
        SinkUnavailable, SinkDataError
            The load is rolled back (and later writes go to the tables the ordinary way):
            the caller writes its rows again.
        """
        load, self._load = self._load, None
        assert load is not None, "open_load() first"
        load.commit()

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """psycopg's errors as :class:`SinkUnavailable` (the connection is the problem: try
        again later) or :class:`SinkDataError` (the server refuses); after any error the
        connection is dropped."""
        self._watchdog.fired = False
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            self._drop()
            if self._watchdog.fired:
                raise SinkUnavailable(
                    f"no answer from the database within {self.write_timeout_s:g} s "
                    "(connection shut down)"
                ) from None
            raise SinkUnavailable(reason(e)) from None
        except psycopg.Error as e:
            self._drop()
            raise SinkDataError(reason(e)) from None
        except BaseException:
            self._drop()
            raise

    def _bounded(
        self, conn: psycopg.Connection[Any], started: float
    ) -> contextlib.AbstractContextManager[None]:
        """Bound what follows on ``conn`` to the rest of a write begun at ``started``."""
        left = self.write_timeout_s - (time.monotonic() - started)
        return self._watchdog.guard(conn.pgconn.socket, left)

    def _connection(self, started: float) -> psycopg.Connection[Any]:
        """The open connection, or a new one with the tables of every interval met so far
        inspected again (one may have been altered meanwhile); within the write begun at
        ``started``.

        A table found in a write's transaction is forgotten with the connection if that
        transaction fails (so is its creation), hence the inspection per connection.
        """
        if self._conn is not None and not self._conn.closed:
            return self._conn
        with self._failures():
            conn = self._conn = connect(self.dsn, self.write_timeout_s, self._watchdog)
            with self._bounded(conn, started), conn.transaction():
                conn.execute(STAGING_DDL)
                # A created table's lock is held to the commit: taken in the common order.
                for minutes in sorted(self._intervals, key=lambda m: lock_rank(self.tables(m))):
                    self._add_target(conn, minutes)
        return conn

    def _add_target(self, conn: psycopg.Connection[Any], minutes: int) -> _Target:
        info = ensure_table(conn, self.tables(minutes))
        refuse_clashes(info, self._instruments)
        if minutes not in self._targets:
            log.info("candle table %s", info.describe())
            warning = rounding(info, self._instruments)
            if warning:
                log.warning("%s", warning)
        if minutes not in self._intervals:
            self._intervals.append(minutes)
        target = self._targets[minutes] = _Target.of(info)
        return target

    def write(
        self,
        records: np.ndarray,
        *,
        fill: bool = False,
        also: Callable[[psycopg.Cursor[Any]], None] | None = None,
    ) -> int:
        """Write ``RECORD_DTYPE`` records of any intervals in one transaction, within
        ``write_timeout_s``; raise :class:`SinkUnavailable` or :class:`SinkDataError` if
        that did not happen.

        A written candle replaces the stored one; with ``fill`` only the candles a table
        lacks are written. ``also`` runs last in the same transaction (bookkeeping that must
        commit with the candles or not at all). Each interval table written is announced on
        :data:`~feedengine.events.CHANNEL` at commit. Returns how many candles were inserted or
        replaced.
        """
        if not len(records) and also is None:
            return 0
        if self._load is not None:
            assert not fill and also is None, "a bulk load takes candles only"
            try:
                return self._load.write(records)
            except (SinkUnavailable, SinkDataError):
                self._load = None  # rolled back: the caller writes its rows again
                raise
        try:
            if self.parallel and not fill and also is None:
                intervals = np.unique(records["minutes"]).tolist()
                if len(intervals) > 1:
                    return self._write_lanes(records, intervals)
            return self._write_block(records, fill, also)
        except SinkUnavailable:
            # A lost connection (a restarted server) may have taken the idle lanes' with it:
            # they reconnect with the next write rather than fail a later one.
            for lane in self._lanes.values():
                lane._drop()
            raise

    def _write_block(
        self,
        records: np.ndarray,
        fill: bool,
        also: Callable[[psycopg.Cursor[Any]], None] | None,
    ) -> int:
        """:meth:`write` on this sink's one connection, in one transaction."""
        started = time.monotonic()
        try:
            conn = self._connection(started)
        except SchemaError as e:  # the flusher spills rows the tables refuse
            raise SinkDataError(str(e)) from None
        records = latest_per_candle(records)
        with (
            self._failures(),
            self._bounded(conn, started),
            conn.transaction(),
            conn.cursor() as cur,
        ):
            staged = False
            written = 0
            notices = []
            for minutes in np.unique(records["minutes"]).tolist():
                target = self._targets.get(minutes)
                try:
                    target = target or self._add_target(conn, minutes)
                except SchemaError as e:
                    raise SinkDataError(str(e)) from None
                block = records_where(records, records["minutes"] == minutes)
                _check_volumes(target.info, block)
                notices.append(notice(minutes, target.info.name, block))
                if not fill and self._copy_new(conn, cur, target, block):
                    written += len(block)
                    continue
                if not staged:
                    with cur.copy(COPY_STAGING) as copy:
                        copy.write(_pgcopy.encode(records))
                    staged = True
                if target.info.key is None:  # delete-then-insert: one writer at a time
                    lock_table(conn, target.info.name)
                cur.execute(target.fill if fill else target.merge, (minutes,))
                written += max(cur.rowcount, 0)
                if fill and cur.rowcount <= 0:
                    notices.pop()  # a repair that found every candle stored changed nothing
            if notices:  # delivered to LISTENers at commit (feedengine.events)
                cur.execute(NOTIFY, (notices,))
            if also is not None:
                also(cur)
        return written

    def _write_lanes(self, records: np.ndarray, intervals: list[int]) -> int:
        """Write each interval's rows of ``records`` in its own lane, all at once: the first
        interval on this sink's connection, each other one on a sink of its own (connection,
        transaction with its own NOTIFY, watchdog).

        The lanes commit only once every one of them has written its rows (a barrier in
        each transaction, bounded by ``write_timeout_s``); a lane that fails breaks the
        barrier and the others roll back, so the block is written whole or not at all, as
        on one connection. Raises the first :class:`SinkDataError`, else the first
        :class:`SinkUnavailable`: the caller spills and retries the whole block. Only a
        connection lost between the barrier and its own commit leaves part of a block
        committed, like a commit whose acknowledgement is lost on one connection: the retry
        writes those candles again, as the same values (the upserts are idempotent, and the
        flusher queues every later row behind the spilled block), and announces them again.
        """
        barrier = threading.Barrier(len(intervals), timeout=self.write_timeout_s)

        def all_written(_: psycopg.Cursor[Any]) -> None:
            barrier.wait()

        def lane(sink: PostgresSink, part: np.ndarray) -> int:
            try:
                return sink._write_block(part, False, all_written)
            except BaseException:
                barrier.abort()  # the other lanes roll back
                raise

        if self._pool is None or self._pool_size < len(intervals):
            # A lane per worker: a lane queued behind the others' barrier would stall them.
            if self._pool is not None:
                self._pool.shutdown()
            self._pool_size = max(len(intervals), len(self._intervals))
            self._pool = ThreadPoolExecutor(self._pool_size, thread_name_prefix="postgres-lane")
        sinks = [self, *map(self._lane, intervals[1:])]
        futures = [
            self._pool.submit(lane, sink, records_where(records, records["minutes"] == minutes))
            for sink, minutes in zip(sinks, intervals, strict=True)
        ]
        written, errors = 0, []
        for future in futures:
            try:
                written += future.result()
            except (SinkDataError, SinkUnavailable, threading.BrokenBarrierError) as e:
                errors.append(e)
        for kind in (SinkDataError, SinkUnavailable):
            first = next((error for error in errors if isinstance(error, kind)), None)
            if first is not None:
                raise first
        if errors:  # only broken barriers: a lane waited out the write bound
            raise SinkUnavailable(
                f"the interval tables' writes did not all finish within {self.write_timeout_s:g} s"
            )
        return written

    def _lane(self, minutes: int) -> "PostgresSink":
        """The sink that writes ``minutes`` rows in :meth:`_write_lanes`."""
        lane = self._lanes.get(minutes)
        if lane is None:
            lane = PostgresSink(self.dsn, self.tables, self.write_timeout_s, parallel=False)
            lane._instruments = self._instruments
            lane._intervals = [minutes]
            if minutes in self._targets:  # found (and logged) at open: not logged again
                lane._targets[minutes] = dataclasses.replace(self._targets[minutes])
            self._lanes[minutes] = lane
        return lane

    def stored(
        self, minutes: int, instrument: Instrument, start_ns: int, end_ns: int
    ) -> list[
        tuple[int, Decimal | None, Decimal | None, Decimal | None, Decimal | None, int | None]
    ]:
        """The candles of ``instrument`` stored in the ``minutes`` table with bucket starts in
        ``[start_ns, end_ns)``: ``(bucket_start_ns, open, high, low, close, volume)`` each,
        as the table holds them (NULL as None), in time order.

        Raises
        ------
        SinkUnavailable, SinkDataError, SchemaError
            As :meth:`write`.
        """
        started = time.monotonic()
        conn = self._connection(started)
        with self._failures(), self._bounded(conn, started), conn.transaction():
            target = self._targets.get(minutes) or self._add_target(conn, minutes)
            params = stored_params(target.info, instrument, start_ns, end_ns)
            rows = conn.execute(stored_statement(target.info), params).fetchall()
        return [(bucket_ns(dt), o, h, lo, c, v) for dt, o, h, lo, c, v in rows]

    def symbols(self, minutes: int, start_ns: int, end_ns: int) -> list[str]:
        """The symbols with candles in the ``minutes`` table in ``[start_ns, end_ns)``
        (``EXCHANGE:SYMBOL`` when the table keeps the exchange), or none if it is missing."""
        started = time.monotonic()
        conn = self._connection(started)
        with self._failures(), self._bounded(conn, started), conn.transaction():
            info = inspect_table(conn, self.tables(minutes))
            if info is None:
                return []
            params = range_params(info, start_ns, end_ns)
            return [str(r[0]) for r in conn.execute(symbols_statement(info), params)]

    def _copy_new(
        self,
        conn: psycopg.Connection[Any],
        cur: psycopg.Cursor[Any],
        target: _Target,
        block: np.ndarray,
    ) -> bool:
        """COPY one interval's candles straight into its table, if they are all new.

        Most flushes carry only new candles, and a plain COPY into the table costs the
        server about half of staging them and merging with ``INSERT … ON CONFLICT``. So it is
        tried first, inside a savepoint; if a candle already exists the savepoint is rolled
        back, False is returned (the caller upserts), and the next :data:`UPSERT_STREAK`
        flushes of that table upsert directly.
        """
        if target.copy is None or target.upsert_only:
            target.upsert_only = max(target.upsert_only - 1, 0)
            return False
        try:
            with conn.transaction(), cur.copy(target.copy[0]) as out:
                out.write(target.encode(block))
        except psycopg.errors.UniqueViolation:
            target.upsert_only = UPSERT_STREAK
            return False
        return True

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the connections and stop the watchdogs' and the lanes' threads (a bulk
        load not committed rolls back)."""
        if self._load is not None:
            self._load.close()
            self._load = None
        self._drop()
        self._watchdog.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for lane in self._lanes.values():
            lane.close()
        self._lanes.clear()


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


def symbols_from_db(dsn: str, query: str | None, table: str) -> list[str]:
    """The symbols of ``--symbols-from-db``: ``SYMBOLS_QUERY``, or the distinct symbols of
    ``table`` (the 5-minute table). The first column gives the symbol, a second one, when
    there is one, its exchange (``NSE:INFY``).

    Raises
    ------
    SinkUnavailable
        The database cannot be reached, or does not answer within :data:`WRITE_TIMEOUT_S`.
    ConfigError
        The query fails (bad SQL, a missing table).
    InstrumentsError
        It returns no symbols.
    """
    unavailable = "--symbols-from-db: database unavailable"
    with Watchdog() as watchdog:
        try:
            conn = connect(dsn, WRITE_TIMEOUT_S, watchdog)
        except psycopg.Error as e:
            raise SinkUnavailable(f"{unavailable}: {reason(e)}") from None
        try:
            with conn, watchdog.guard(conn.pgconn.socket, WRITE_TIMEOUT_S):
                if query is None:
                    info = inspect_table(conn, table)
                    query = symbols_query(table, info is not None and info.has_exchange)
                rows = conn.execute(sql.SQL(query)).fetchall()
        except psycopg.OperationalError as e:
            raise SinkUnavailable(f"{unavailable}: {reason(e)}") from None
        except psycopg.Error as e:
            raise ConfigError(f"SYMBOLS_QUERY failed: {reason(e)}: {query}") from None
    symbols = [f"{r[1]}:{r[0]}" if len(r) > 1 and r[1] else str(r[0]) for r in rows if r and r[0]]
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
        with (
            Watchdog() as watchdog,
            connect(dsn, WRITE_TIMEOUT_S, watchdog) as conn,
            watchdog.guard(conn.pgconn.socket, WRITE_TIMEOUT_S),
        ):
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
