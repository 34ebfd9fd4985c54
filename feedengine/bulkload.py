"""A replay into candle tables that do not exist yet, loaded the fastest way PostgreSQL has.

Each interval's table is created without its primary key, filled by ``COPY … FREEZE``
block after block and given its key at the end, all in one transaction on a connection of
its own (a *lane*); the lanes commit together, once every key is built (a barrier, as in
:meth:`~feedengine.database.PostgresSink._write_lanes`). On PostgreSQL 15 here, 1.1 M
candle rows took 3.7 s to COPY into a table with its key, 1.6 s without it plus 0.9 s to
build the key after; frozen rows also spare the table's first readers the hint-bit writes
and a later anti-wraparound vacuum.

Nothing is visible to other sessions before the commit, and each lane holds its table's
advisory lock (:func:`~feedengine.tables.lock_table`) until then, so another feedengine
writing the same table waits for the load. A crash leaves no table (the replay, which has
no checkpoint yet, starts again from its beginning); a failure rolls every lane back. The
flusher keeps the rows it handed to a load in a journal until the commit, so that a failed
load spills them and they are written the ordinary way (:mod:`feedengine.flusher`).
"""

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from feedengine import _pgcopy
from feedengine.database import connect, reason
from feedengine.dtypes import records_where
from feedengine.errors import SinkDataError, SinkUnavailable
from feedengine.events import NOTIFY, loaded_notice
from feedengine.tables import (
    copy_statement,
    create_statement,
    inspect_table,
    key_statement,
    lock_rank,
    lock_table,
)
from feedengine.watchdog import Watchdog

log = logging.getLogger(__name__)

#: Memory the server may use to sort a table's rows into its key, per lane (PostgreSQL's
#: default, 64 MB, sorts the 1-minute table of a 3000-instrument day in several passes).
KEY_SORT_MEMORY = "256MB"
#: Rows a key is built at, at the least, for its time bound: the write bound plus the rows
#: at this rate. The slowest build measured here ran at 750k rows/s (985k rows, 1.3 s, both
#: cores busy); a tenth of that leaves a slow or busy server room, so a month replayed into
#: new tables is not cut off by the bound meant for a hung server.
KEY_ROWS_PER_S = 75_000


@contextlib.contextmanager
def _failures(watchdog: Watchdog, timeout_s: float) -> Iterator[None]:
    """psycopg's errors as :class:`SinkUnavailable` (the connection, a timeout, or a candle
    loaded twice: written the ordinary way instead) or :class:`SinkDataError` (the server
    refuses)."""
    watchdog.fired = False
    try:
        yield
    except psycopg.errors.UniqueViolation as e:
        raise SinkUnavailable(
            f"a candle was loaded twice ({reason(e)}): writing the rows by upsert instead"
        ) from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as e:
        if watchdog.fired:
            raise SinkUnavailable(
                f"no answer from the database within {timeout_s:g} s (connection shut down)"
            ) from None
        raise SinkUnavailable(reason(e)) from None
    except psycopg.Error as e:
        raise SinkDataError(reason(e)) from None


class _Lane:
    """One interval table: its connection and the transaction that creates and loads it."""

    def __init__(self, dsn: str, minutes: int, table: str, timeout_s: float) -> None:
        self.dsn = dsn
        self.minutes = minutes
        self.table = table
        self.timeout_s = timeout_s
        self.watchdog = Watchdog(f"postgres-load-{minutes}m")
        self.conn: psycopg.Connection[Any] | None = None
        self.copy: sql.Composed | None = None
        self.rows = 0
        self.final = 0
        self.latest_ns = np.iinfo(np.int64).min
        #: When the server last heard from this lane (``time.monotonic``).
        self.last_exchange = time.monotonic()

    @contextlib.contextmanager
    def _exchange(self, bound_s: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """The connection, bounded by ``bound_s`` (default ``timeout_s``), its errors
        translated."""
        assert self.conn is not None
        bound_s = bound_s or self.timeout_s
        with (
            _failures(self.watchdog, bound_s),
            self.watchdog.guard(self.conn.pgconn.socket, bound_s),
        ):
            yield self.conn
        self.last_exchange = time.monotonic()

    @property
    def key_bound_s(self) -> float:
        """Longest this table's key may take to build (:data:`KEY_ROWS_PER_S`)."""
        return self.timeout_s + self.rows / KEY_ROWS_PER_S

    def touch(self) -> None:
        """Show the server the idle transaction is alive: it ends one idle for three write
        bounds (``idle_in_transaction_session_timeout``, :func:`~feedengine.database.connect`),
        and a long interval's lane may get no rows for that long."""
        with self._exchange() as conn:
            conn.execute("SELECT 1")

    def connect(self) -> None:
        with _failures(self.watchdog, self.timeout_s):
            self.conn = connect(self.dsn, self.timeout_s, self.watchdog)

    def lock(self) -> None:
        """Take the table name's lock, held until the commit (a transaction lock)."""
        with self._exchange() as conn:
            lock_table(conn, self.table)

    def create(self) -> bool:
        """Create the table without its key, unless it exists (False)."""
        with self._exchange() as conn:
            if inspect_table(conn, self.table) is not None:
                return False
            conn.execute(create_statement(self.table, key=False))
            info = inspect_table(conn, self.table)
            assert info is not None
            self.copy = copy_statement(info, freeze=True)
        log.info("candle table %s: created for a bulk load, its key built at the end", self.table)
        return True

    def write(self, block: np.ndarray) -> int:
        """COPY one block of this interval's records into the table.

        The block is not deduplicated (``latest_per_candle`` cost a 20 M-tick replay 1 s of
        CPU): a replay's kernel hands each candle over once, and one met twice fails the
        key's build, which rolls the load back to be written by upsert.
        """
        assert self.copy is not None, "begin() first"
        payload = _pgcopy.encode(block, _pgcopy.LAYOUT_TABLE_WALL, True)
        with self._exchange() as conn, conn.cursor().copy(self.copy) as copy:
            copy.write(payload)
        self.rows += len(block)
        self.final += int(np.count_nonzero(block["final"]))
        self.latest_ns = max(self.latest_ns, int(block["bucket_start_ns"].max()))
        return len(block)

    def commit(self, barrier: threading.Barrier, bound_s: float) -> None:
        """Build the key, announce the rows, wait for the other lanes, commit; the key and
        the wait bounded by ``bound_s``, the largest table's :attr:`key_bound_s`."""
        with self._exchange(bound_s) as conn:
            started = time.perf_counter()
            # Local to the load's transaction: the server's own bounds, so that neither the
            # build nor the wait for the other lanes' (idle in the transaction) ends it.
            bound_ms = f"{int(bound_s * 1000)}ms"
            conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, true), "
                "set_config('statement_timeout', %s, true), "
                "set_config('idle_in_transaction_session_timeout', %s, true)",
                (KEY_SORT_MEMORY, bound_ms, bound_ms),
            )
            conn.execute(key_statement(self.table))
            log.debug("%s: key built in %.2f s", self.table, time.perf_counter() - started)
            if self.rows:
                notice = loaded_notice(
                    self.minutes, self.table, self.rows, self.final, self.latest_ns
                )
                conn.execute(NOTIFY, ([notice],))
        barrier.wait()
        with self._exchange() as conn:
            conn.commit()

    def close(self) -> None:
        """Close the connection: an open transaction rolls back."""
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None
        self.watchdog.close()


class BulkLoad:
    """Load candle records into new tables, one lane per interval (see the module).

    Parameters
    ----------
    dsn
        libpq connection string or URI.
    tables
        The table of each interval of the run.
    timeout_s
        Longest each exchange with the server may take (a block's COPY, a key's build).
    """

    def __init__(self, dsn: str, tables: dict[int, str], timeout_s: float) -> None:
        self._lanes = {m: _Lane(dsn, m, name, timeout_s) for m, name in tables.items()}
        self._pool = ThreadPoolExecutor(len(self._lanes), thread_name_prefix="postgres-load")
        self.timeout_s = timeout_s

    def _each(self, calls: list[tuple[Any, tuple[Any, ...]]]) -> list[Any]:
        """Run ``(function, args)`` calls at once, one per lane; if any failed, roll every
        lane back and raise the first :class:`SinkDataError`, else any other error but a
        :class:`SinkUnavailable` (a bug), else the first :class:`SinkUnavailable`, else a
        broken barrier's as one."""
        futures = [self._pool.submit(fn, *args) for fn, args in calls]
        results, errors = [], []
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as e:
                errors.append(e)
        if not errors:
            return results
        self.close()

        def rank(e: BaseException) -> int:
            if isinstance(e, SinkDataError):
                return 0
            if isinstance(e, SinkUnavailable):
                return 2
            return 3 if isinstance(e, threading.BrokenBarrierError) else 1  # 1: a bug

        first = min(errors, key=rank)
        if isinstance(first, threading.BrokenBarrierError):
            raise SinkUnavailable("the interval tables' keys were not all built in time")
        raise first

    def begin(self) -> bool:
        """Create every table in its lane's transaction; False (and nothing created) when
        one of them exists already.

        Raises
        ------
        SinkUnavailable, SinkDataError
            As :meth:`~feedengine.database.PostgresSink.open`; nothing is created.
        """
        lanes = sorted(self._lanes.values(), key=lambda lane: lock_rank(lane.table))
        self._each([(lane.connect, ()) for lane in lanes])

        # One lock at a time, in the order every writer takes them: lanes locking at once
        # could each hold one that another process's lane waits for, a cycle the server
        # cannot see (a lane that holds its lock waits in this process, not in the server).
        def lock_all() -> None:
            for lane in lanes:
                lane.lock()

        self._each([(lock_all, ())])
        began = self._each([(lane.create, ()) for lane in lanes])
        if not all(began):
            self.close()
            return False
        return True

    def write(self, records: np.ndarray) -> int:
        """COPY each interval's records of a block into its table, all lanes at once.

        Raises
        ------
        SinkUnavailable, SinkDataError
            The load failed: every lane is rolled back, nothing of it is stored.
        """
        parts = {m: records_where(records, records["minutes"] == m) for m in self._lanes}
        if sum(map(len, parts.values())) != len(records):
            self.close()
            others = set(records["minutes"].tolist()) - set(self._lanes)
            raise SinkDataError(f"records of intervals {sorted(others)} not in the bulk load")
        calls: list[tuple[Any, tuple[Any, ...]]] = []
        for m, part in parts.items():
            lane = self._lanes[m]
            if len(part):
                calls.append((lane.write, (part,)))
            elif time.monotonic() - lane.last_exchange >= self.timeout_s:
                calls.append((lane.touch, ()))
        return sum(filter(None, self._each(calls)))

    def commit(self) -> None:
        """Build every table's key and commit the lanes together.

        Raises
        ------
        SinkUnavailable, SinkDataError
            The load failed; only a connection lost between the barrier and its own commit
            leaves other lanes' tables committed (the rows written again over them are the
            same values).
        """
        bound_s = max(lane.key_bound_s for lane in self._lanes.values())
        barrier = threading.Barrier(len(self._lanes), timeout=bound_s)

        def commit(lane: _Lane) -> None:
            try:
                lane.commit(barrier, bound_s)
            except BaseException:
                barrier.abort()
                raise

        self._each([(commit, (lane,)) for lane in self._lanes.values()])
        self.close()

    def close(self) -> None:
        """Close every lane: a load not committed rolls back."""
        for lane in self._lanes.values():
            lane.close()
        self._pool.shutdown(wait=False)
