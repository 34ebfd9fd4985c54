"""Soak: many simulated days back to back through one pipeline into PostgreSQL.

One long run, as an unattended service lives: a source that plays simulated trading days one
after another (each its own date), the real sink, and the process's resident memory, open
file descriptors and threads sampled at every day boundary. Nothing may grow with the days.
"""

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from itertools import islice

import psycopg

from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink
from feedengine.pipeline import Pipeline
from feedengine.simulator import SimConfig
from feedengine.simulator import instruments as sim_instruments
from feedengine.simulator import messages as sim_messages
from feedengine.source import MessageBatch
from feedengine.tables import TableNames, table_names

from .conftest import MODE

DAYS, TICKS_PER_DAY = (4, 200_000) if MODE == "gate" else (12, 2_000_000)
INSTRUMENTS = 500
#: Messages packed per batch, as a live source would hand them over.
BATCH = 512
PAGE = os.sysconf("SC_PAGE_SIZE")


def resources() -> dict[str, float]:
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * PAGE / 2**20
    return {
        "rss_mb": rss,
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
    }


class SimulatedDays:
    """Trading days back to back, as one source; samples resources between days."""

    name = "soak"
    broker = "kite"

    def __init__(self, days: int) -> None:
        first = date(2024, 1, 15)
        self.configs = [
            SimConfig(
                instruments=INSTRUMENTS, ticks=TICKS_PER_DAY, seed=d, date=first + timedelta(days=d)
            )
            for d in range(days)
        ]
        self.samples: list[dict[str, float]] = []

    @property
    def instruments(self) -> list[KiteInstrument]:
        return [KiteInstrument.from_dict(d) for d in sim_instruments(self.configs[0])]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def batches(self) -> Iterator[MessageBatch]:
        for config in self.configs:
            stream = sim_messages(config)
            while chunk := list(islice(stream, BATCH)):
                yield MessageBatch.from_messages(chunk)
            self.samples.append(resources())

    def position(self) -> dict[str, str | int]:
        return {}

    def resume(self, position: dict[str, str | int]) -> bool:
        return False


def test_soak_days_back_to_back(pg_dsn, report, benchmark):
    template = f"soak_{uuid.uuid4().hex[:8]}" + "_{interval}min"
    tables = table_names((1, 5, 15), template)
    source = SimulatedDays(DAYS)
    pipeline = Pipeline(
        CandleEngine(source.instruments, CandleConfig()), PostgresSink(pg_dsn, TableNames(template))
    )
    try:
        summary = benchmark.pedantic(pipeline.run, args=(source,), rounds=1, iterations=1)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for name in tables.values():
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')
    first, last = source.samples[1], source.samples[-1]  # day 1 warms the caches up
    report(
        "soak",
        {
            "days": DAYS,
            "ticks": summary.ticks,
            "wall_s": summary.wall_s,
            "rss_mb_day2": first["rss_mb"],
            "rss_mb_last": last["rss_mb"],
            "fds_day2": first["fds"],
            "fds_last": last["fds"],
            "threads_day2": first["threads"],
            "threads_last": last["threads"],
        },
    )
    assert summary.spilled == 0 and len(source.samples) == DAYS
    assert last["rss_mb"] - first["rss_mb"] < 10, "memory grows day after day"
    assert last["fds"] <= first["fds"] and last["threads"] <= first["threads"]
