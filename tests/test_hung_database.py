"""A database that stops answering (SIGSTOP: its kernel still ACKs, so no TCP timeout fires):
each write is bounded, the rows spill, a graceful stop finishes, and once the server runs
again every row arrives exactly once (SPEC section 5)."""

import contextlib
import shutil
import signal
import socket
import threading
import time

import psutil
import psycopg
import pytest

from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.spill import SpillFile
from feedengine.tables import TableNames
from tests.days import INTERVALS, db_candles, replayed, small_day

#: The sink's write bound in these tests (the service's is 20 s).
WRITE_TIMEOUT_S = 1.0
#: A stop waits for at most one hung write, then one connection attempt (psycopg's minimum
#: connect timeout: 2 s); the rest is slack for a busy machine.
STOP_BOUND_S = WRITE_TIMEOUT_S + 2 + 3
DEADLINE_S = 60


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    return small_day(tmp_path_factory.mktemp("hung"))


@pytest.fixture(scope="module")
def expected(day):
    return replayed(day)


@pytest.fixture
def tcp_server(tmp_path):
    """A PostgreSQL server of the test's own, on 127.0.0.1 over TCP like a remote one:
    ``(dsn, freeze, thaw)``; ``freeze`` stops all its processes (postmaster and backends)."""
    import pgserver
    from pgserver._commands import pg_ctl

    pgdata = tmp_path / "pgdata"
    server = pgserver.get_server(pgdata, cleanup_mode=None)  # initdb, started on a socket
    user = server.system_user
    pg_ctl(["-m", "fast", "-w", "stop"], pgdata=pgdata, user=user)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pg_ctl(
        ["-w", "-o", f"-h 127.0.0.1 -p {port} -k ''", "-l", str(pgdata / "tcp.log"), "start"],
        pgdata=pgdata,
        user=user,
        timeout=60,
    )
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))

    def signal_all(sig):
        for proc in [postmaster, *postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)

    yield (
        f"postgresql://postgres@127.0.0.1:{port}/postgres",
        lambda: signal_all(signal.SIGSTOP),
        lambda: signal_all(signal.SIGCONT),
    )
    signal_all(signal.SIGCONT)
    pg_ctl(["-m", "immediate", "-w", "stop"], pgdata=pgdata, user=user)
    shutil.rmtree(pgdata, ignore_errors=True)


def until(condition, what):
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stored(dsn):
    with psycopg.connect(dsn) as conn:
        return db_candles(conn, TableNames().of(INTERVALS))


def start_replay(day, dsn, tmp_path, speed, checkpoint=None):
    source = ReplaySource(day, speed=speed)
    pipeline = Pipeline(
        CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS)),
        PostgresSink(dsn, TableNames(), write_timeout_s=WRITE_TIMEOUT_S),
        checkpoint=checkpoint,
        spill=SpillFile(tmp_path / "spill.bin"),
        retry_first_s=0.05,
    )
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=pipeline.run(source)))
    thread.start()
    return pipeline, thread, result


def test_a_database_that_stops_answering_spills_then_catches_up(
    tcp_server, day, expected, tmp_path
):
    dsn, freeze, thaw = tcp_server
    pipeline, thread, result = start_replay(day, dsn, tmp_path, speed=3000)
    try:
        until(lambda: pipeline.flusher and pipeline.flusher.rows_written > 0, "a first write")
        freeze()
        until(lambda: pipeline.flusher.spilled > 0, "rows in the spill")
        assert pipeline.status()["database_ok"] is False
    finally:
        thaw()
        thread.join(DEADLINE_S)
    assert not thread.is_alive()
    assert pipeline.flusher.failures > 0 and result["summary"].spilled == 0
    assert SpillFile(tmp_path / "spill.bin").rows == 0
    assert stored(dsn) == expected


def test_a_graceful_stop_while_the_database_hangs_keeps_the_rows(
    tcp_server, day, expected, tmp_path
):
    dsn, freeze, thaw = tcp_server
    checkpoint = tmp_path / "checkpoint.npz"
    pipeline, thread, result = start_replay(day, dsn, tmp_path, speed=600, checkpoint=checkpoint)
    try:
        until(lambda: pipeline.flusher and pipeline.flusher.rows_written > 0, "a first write")
        freeze()
        stopping = time.monotonic()
        pipeline.stop()
        thread.join(STOP_BOUND_S)
        took = time.monotonic() - stopping
        assert not thread.is_alive(), f"stop still running after {took:.1f} s"
    finally:
        thaw()
        thread.join(DEADLINE_S)
    summary = result["summary"]
    assert not summary.finished and summary.spilled > 0 and checkpoint.exists()
    assert SpillFile(tmp_path / "spill.bin").rows == summary.spilled
    # The server runs again: the next run writes the spill, resumes the checkpointed
    # candles, and the tables hold exactly the rows of an uninterrupted run.
    _, thread, result = start_replay(day, dsn, tmp_path, speed=0, checkpoint=checkpoint)
    thread.join(DEADLINE_S)
    assert result["summary"].finished and result["summary"].spilled == 0
    assert stored(dsn) == expected
