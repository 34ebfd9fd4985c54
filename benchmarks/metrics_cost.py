"""What serving metrics costs a replay: decode + aggregate throughput with ``/metrics`` scraped
every 100 ms against the same replay without metrics (issue 13).

Run: ``.venv/bin/python -m benchmarks.metrics_cost [TICKS] [INSTRUMENTS]``. Each side runs
five times, interleaved (machine noise moves both alike); the best of each is compared.
"""

import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from feedengine.candles import CandleConfig, CandleEngine
from feedengine.instruments import Instrument
from feedengine.metrics import EngineCollector, FlushTimes, MetricsServer
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.simulator import SimConfig, simulate

ROUNDS = 5
SCRAPE_EVERY_S = 0.1


class NullSink:
    """Takes every row and keeps none: the replay's time is decode + aggregate."""

    def open(self, intervals: tuple[int, ...], instruments: Sequence[Instrument]) -> None:
        pass

    def write(self, records: np.ndarray) -> int:
        return len(records)

    def close(self) -> None:
        pass


def replay(path: Path, metrics: bool) -> tuple[float, int]:
    """One replay's ticks per second, and the scrapes it served."""
    source = ReplaySource(path)
    engine = CandleEngine(source.instruments, CandleConfig(intervals=(1, 5, 15)))
    pipeline = Pipeline(engine, NullSink())
    if not metrics:
        return pipeline.run(source).ticks_per_s, 0
    flush_times = FlushTimes(engine.config.grace_s, None)
    pipeline.on_flushed = flush_times
    server = MetricsServer("127.0.0.1", 0, EngineCollector(pipeline, source, flush_times))
    server.start()
    done = threading.Event()
    scrapes = 0

    def scraper() -> None:
        nonlocal scrapes
        while not done.wait(SCRAPE_EVERY_S):
            with urllib.request.urlopen(server.url) as response:
                response.read()
            scrapes += 1

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        return pipeline.run(source).ticks_per_s, scrapes
    finally:
        done.set()
        thread.join()
        server.stop()


def main() -> None:
    ticks = int(sys.argv[1]) if len(sys.argv) > 1 else 6_000_000
    instruments = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day.ticks"
        simulate(path, SimConfig(instruments=instruments, ticks=ticks, seed=13))
        best = {False: 0.0, True: 0.0}
        scrapes = 0
        for _ in range(ROUNDS):
            for metrics in (False, True):
                started = time.perf_counter()
                rate, n = replay(path, metrics)
                best[metrics] = max(best[metrics], rate)
                scrapes = max(scrapes, n)
                print(
                    f"metrics {'on ' if metrics else 'off'} {rate / 1e6:6.2f} M ticks/s "
                    f"({time.perf_counter() - started:.1f} s, {n} scrapes)"
                )
    off, on = best[False], best[True]
    print(
        f"best of {ROUNDS}: off {off / 1e6:.2f} M ticks/s, on {on / 1e6:.2f} M ticks/s "
        f"(scraped every {SCRAPE_EVERY_S * 1000:.0f} ms, up to {scrapes} scrapes a run): "
        f"on/off {on / off:.3f}"
    )


if __name__ == "__main__":
    main()
