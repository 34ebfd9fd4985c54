"""Benchmark mode and same-process ratio helpers.

``BENCH_MODE=gate`` (what ``make test`` sets) runs each benchmark briefly and fails below the
quick-gate ratios; ``BENCH_MODE=full`` (``make bench``) runs longer and checks the SPEC
section 9 targets. Every figure is a ratio to a baseline timed in the same process, so a
busy machine moves both sides alike.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from datetime import time as dt_time
from pathlib import Path

import pytest

from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.live import LiveSource
from feedengine.brokers.kite.mockserver import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_API_KEY,
    instrument_rows,
    session_start_ns,
)
from feedengine.sessions import IST
from feedengine.simulator import SimConfig
from feedengine.simulator import instruments as sim_instruments

MODE = os.environ.get("BENCH_MODE", "gate")
RESULTS = Path(os.environ.get("BENCH_RESULTS", "benchmarks/results"))


def best_time(fn: Callable[[], object], seconds: float) -> float:
    """Smallest wall time of one call of ``fn`` over about ``seconds`` of repeats."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return best


@pytest.fixture
def bench_mode() -> str:
    return MODE


@pytest.fixture
def seconds() -> float:
    """Time budget per side of a comparison."""
    return 0.5 if MODE == "gate" else 3.0


@pytest.fixture
def report():
    """Record a benchmark's figures: printed, and written to ``benchmarks/results/``."""

    def write(name: str, figures: dict) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps({"mode": MODE, **figures}, indent=2))
        print(
            f"\n{name}: "
            + ", ".join(
                f"{k}={v:,.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
            )
        )

    return write


def run_benchmark(benchmark, fn: Callable[[], object]) -> float:
    """Time ``fn`` with pytest-benchmark; return its best (minimum) seconds per call."""
    rounds = 20 if MODE == "gate" else 200
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=2)
    return float(benchmark.stats.stats.min)


@contextlib.contextmanager
def mockkite_process(*args: str) -> Iterator[int]:
    """``python -m feedengine.brokers.kite.mockserver --simulate ARGS`` in its own process;
    yields its port.

    A process of its own, so that the benchmark's CPU time is feedengine's alone.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "feedengine.brokers.kite.mockserver",
            "--simulate",
            *args,
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None and "mock Kite at" in server.stdout.readline()
        yield port
    finally:
        server.terminate()
        server.wait()


@dataclass
class LiveSession:
    """A live run against the local Kite server playing a session in real time."""

    instruments: list[KiteInstrument]
    source: LiveSource
    #: The stream's clock (Unix ns of the simulated session), for ``Pipeline.run``.
    clock: Callable[[], int]
    #: A stream time as the wall-clock time (Unix ns) it was played at.
    to_wall: Callable[[float], float]


@contextlib.contextmanager
def live_session(instruments: int, speed: float) -> Iterator[LiveSession]:
    """The local Kite server (its own process) playing today's 10:00 IST session, a busy
    hour whatever the time of day, from two seconds from now at ``speed`` x real time;
    yields a :class:`LiveSession` on it."""
    t0 = time.time_ns() + 2 * 10**9
    day = datetime.fromtimestamp(t0 / 1e9, IST).date()
    config = SimConfig(
        instruments=instruments, date=day, start=dt_time(10, 0), end=dt_time(23, 59, 59)
    )
    s0 = session_start_ns(config)
    args = ("--instruments", str(instruments), "--speed", str(speed), "--origin-ns", str(t0))
    with mockkite_process(*args, "--start", "10:00") as port:
        listed = [KiteInstrument.from_dict(r) for r in instrument_rows(sim_instruments(config))]

        def clock() -> int:
            return s0 + int((time.time_ns() - t0) * speed)

        def to_wall(stream_ns: float) -> float:
            return t0 + (stream_ns - s0) / speed

        source = LiveSource(
            listed, f"ws://127.0.0.1:{port}", DEFAULT_API_KEY, DEFAULT_ACCESS_TOKEN, clock=clock
        )
        yield LiveSession(listed, source, clock, to_wall)
