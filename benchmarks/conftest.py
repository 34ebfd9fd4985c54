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
from pathlib import Path

import pytest

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
