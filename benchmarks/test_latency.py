"""Live latency: bucket end + grace → candle row committed in PostgreSQL.

The local Kite server (another process) plays the simulator from now on, over 3 connections
for 9000 instruments (make bench: real-time pace for 150 s). Both processes share one time
line: stream time ``T0 + (wall - T0) * speed``. Every committed complete candle's latency is
the wall time of its commit minus the wall time at which the stream passed its bucket end +
grace. Reported: p50/p99/max and the process's CPU share. SPEC section 9: p99 <= 250 ms.
The make-test gate plays 3000 instruments at 6x for 25 s and checks the p99 stays under a
tenth of a one-minute bucket's wall time (a ratio, not a clock).
"""

import threading
import time
import uuid

import numpy as np
import psycopg

from feedengine.candles import DEFAULT_GRACE_S, CandleConfig, CandleEngine
from feedengine.database import PostgresSink
from feedengine.pipeline import Pipeline
from feedengine.tables import TableNames, table_names

from .conftest import MODE, live_session

INSTRUMENTS, SPEED, SECONDS = (3000, 6.0, 25.0) if MODE == "gate" else (9000, 1.0, 150.0)
TARGET_P99_MS = 250


class TimingSink(PostgresSink):
    """The real sink, noting when each complete candle was committed."""

    def __init__(self, dsn, tables, to_wall):
        super().__init__(dsn, tables)
        self.to_wall = to_wall
        self.latencies_ms: list[float] = []

    def write(self, records):
        super().write(records)
        committed = time.time_ns()
        final = records[records["final"] == 1]
        due = (
            final["bucket_start_ns"]
            + final["minutes"].astype(np.int64) * 60 * 10**9
            + int(DEFAULT_GRACE_S * 1e9)
        )
        self.latencies_ms.extend(((committed - self.to_wall(due)) / 1e6).tolist())


def test_live_latency(pg_dsn, report, benchmark):
    template = f"lat_{uuid.uuid4().hex[:8]}" + "_{interval}min"
    tables = table_names((1, 5), template)
    with live_session(INSTRUMENTS, SPEED) as live:
        try:
            sink = TimingSink(pg_dsn, TableNames(template), live.to_wall)
            engine = CandleEngine(live.instruments, CandleConfig(intervals=(1, 5)))
            pipeline = Pipeline(engine, sink)
            threading.Timer(SECONDS, pipeline.stop).start()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            summary = benchmark.pedantic(
                pipeline.run,
                args=(live.source,),
                kwargs={"live": True, "clock": live.clock},
                rounds=1,
                iterations=1,
            )
            cpu_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        finally:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                for name in tables.values():
                    conn.execute(f'DROP TABLE IF EXISTS "{name}"')
    lat = np.array(sink.latencies_ms)
    assert len(lat) >= INSTRUMENTS // 2, "too few candles closed during the run"
    p50, p99, worst = np.percentile(lat, 50), np.percentile(lat, 99), lat.max()
    report(
        "live_latency",
        {
            "instruments": INSTRUMENTS,
            "connections": len(live.source.status),
            "speed": SPEED,
            "seconds": SECONDS,
            "ticks": summary.ticks,
            "candles": len(lat),
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": worst,
            "cpu_share_of_one_core": cpu_share,
            "target_p99_ms": TARGET_P99_MS,
        },
    )
    # The target itself in both modes: measured p99 is 10-50 ms, so a loaded machine passes,
    # while a flush that waits for its interval instead of being nudged (p99 ~730 ms) fails.
    assert p99 <= TARGET_P99_MS
