"""Full-day replay: a simulated 3000-instrument session, tick file to candles committed in
PostgreSQL, end to end; and memory over a 9000-instrument day with 4 intervals.

Ours: ``ReplaySource`` → batch decoder → kernel → flusher → ``PostgresSink``, as
``python -m feedengine --replay`` runs it: into new tables, so as one bulk load
(:mod:`feedengine.bulkload`). Baseline, same process, same file: a
straightforward pipeline of kiteconnect's ``_parse_binary``, a dict-per-symbol aggregator
and psycopg ``executemany`` upserts, timed on the first ticks of the day. SPEC section 9
targets: 5 M ticks/s on a 20 M-tick day; RSS flat and at most 200 MB at 9000 instruments x
4 intervals. ``make bench`` runs the 20 M-tick day; the ``make test`` gate runs 2 M ticks.

The whole command (``python -m feedengine --replay`` in a process of its own, timed from
outside: start-up, imports, reading, decoding, committing, the summary) is measured next to
the in-process pipeline, against the same baseline; only ``BENCH_MODE=full`` holds it to the
5 M ticks/s target.
"""

import os
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import psycopg
import pytest
from kiteconnect import KiteTicker

from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink
from feedengine.pipeline import Pipeline
from feedengine.reference import candles as ref_candles
from feedengine.replay import ReplaySource
from feedengine.sessions import DEFAULT_SESSIONS, NS_PER_S, ist_day
from feedengine.simulator import SimConfig, simulate
from feedengine.spill import SpillFile
from feedengine.tables import TableNames, table_names

from .conftest import MODE

TICKS = 2_000_000 if MODE == "gate" else 20_000_000
BASELINE_TICKS = 20_000 if MODE == "gate" else 100_000
TARGET, GATE_RATIO = 5e6, 10
#: The whole command pays its start-up (~0.5-0.9 s) on the gate's short file too.
COMMAND_GATE_RATIO = 5
MEMORY_TICKS = 2_000_000 if MODE == "gate" else 20_000_000
MEMORY_LIMIT_MB = 200
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class RssSampler(threading.Thread):
    def __init__(self, every_s=0.1):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.every_s = every_s
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(self.every_s):
            self.samples.append(rss_mb())


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    path = tmp_path_factory.mktemp("fullday") / "day.ticks"
    simulate(path, SimConfig(instruments=3000, ticks=TICKS, seed=9))
    yield path
    path.unlink()


def baseline(path, dsn, table, n_ticks):
    """kiteconnect's parser + a dict aggregator + executemany, on the first n_ticks."""
    source = ReplaySource(path)
    sessions, slots = {}, {}
    for slot, inst in enumerate(source.instruments):
        s = DEFAULT_SESSIONS[inst.market]
        sessions[slot] = (s.open_s, s.close_s)
        slots[inst.key] = slot
    symbols = [i.tradingsymbol for i in source.instruments]
    ticker = KiteTicker("key", "token")
    t0 = time.perf_counter()
    ticks = []
    for recv_ns, message in source.reader.messages():
        for t in ticker._parse_binary(message):
            div = 100 if t["instrument_token"] & 0xFF not in (3, 6, 12) else None
            if div is None:
                continue
            ets, ltt = t.get("exchange_timestamp"), t.get("last_trade_time")
            event_ns = int(ets.timestamp()) * NS_PER_S if ets else recv_ns
            ticks.append(
                {
                    "recv_ns": recv_ns,
                    "event_ns": event_ns,
                    "slot": slots.get(t["instrument_token"], -1),
                    "price": round(t["last_price"] * div),
                    "volume": t.get("volume_traded", 0),
                    "has_volume": t["tradable"] and "volume_traded" in t,
                    "has_day_range": "ohlc" in t,
                    "day_high": round(t["ohlc"]["high"] * div) if "ohlc" in t else 0,
                    "day_low": round(t["ohlc"]["low"] * div) if "ohlc" in t else 0,
                    "auction": bool(ltt)
                    and ist_day(int(ltt.timestamp()) * NS_PER_S) == ist_day(event_ns),
                }
            )
        if len(ticks) >= n_ticks:
            break
    result = ref_candles.aggregate(ticks, sessions, [1, 5, 15])
    with psycopg.connect(dsn) as conn:
        conn.cursor().executemany(
            f'INSERT INTO "{table}" VALUES (to_timestamp(%s / 1e9) AT TIME ZONE '
            "'Asia/Kolkata', %s, %s / 100.0, %s / 100.0, %s / 100.0, %s / 100.0, %s) "
            "ON CONFLICT (tradingsymbol, datetime) DO UPDATE SET open = EXCLUDED.open, "
            "high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, "
            "volume = EXCLUDED.volume",
            [(s, symbols[slot], o, h, lo, c, v) for slot, _m, s, o, h, lo, c, v in result.rows],
        )
    return len(ticks), time.perf_counter() - t0


@pytest.fixture(scope="module")
def baseline_rate(day, pg_dsn):
    """Ticks/s of :func:`baseline` on ``day``, in this process."""
    table = f"base_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{table}" (datetime TIMESTAMP, tradingsymbol TEXT, '
            "open NUMERIC, high NUMERIC, low NUMERIC, close NUMERIC, volume BIGINT, "
            "PRIMARY KEY (tradingsymbol, datetime))"
        )
        try:
            n, seconds = baseline(day, pg_dsn, table, BASELINE_TICKS)
        finally:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    return n / seconds


def test_full_day_replay_into_postgres(day, pg_dsn, baseline_rate, tmp_path, report, benchmark):
    prefix = f"day_{uuid.uuid4().hex[:8]}"
    tables = table_names((1, 5, 15), prefix + "_{interval}min")
    source = ReplaySource(day)
    engine = CandleEngine(source.instruments, CandleConfig(intervals=(1, 5, 15)))
    pipeline = Pipeline(
        engine,
        PostgresSink(pg_dsn, TableNames(prefix + "_{interval}min")),
        spill=SpillFile(tmp_path / "spill.bin"),
    )
    sampler = RssSampler()
    sampler.start()
    summary = benchmark.pedantic(
        pipeline.run, args=(source,), kwargs={"load": True}, rounds=1, iterations=1
    )
    sampler.done.set()
    rate = summary.ticks / summary.wall_s
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = sum(
            conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables.values()
        )
        for t in tables.values():
            conn.execute(f'DROP TABLE IF EXISTS "{t}"')
    assert summary.spilled == 0 and rows == sum(summary.candles.values())
    ratio = rate / baseline_rate
    report(
        "full_day_replay",
        {
            "ticks": summary.ticks,
            "candle_rows": rows,
            "wall_s": summary.wall_s,
            "ticks_per_s": rate,
            "baseline_ticks_per_s": baseline_rate,
            "ratio": ratio,
            "target_ticks_per_s": TARGET,
            "meets_target": rate >= TARGET,
            "max_rss_mb": max(sampler.samples, default=rss_mb()),
        },
    )
    assert ratio >= GATE_RATIO, f"{ratio:.0f}x"


def command_env(dsn, home, template):
    """The whole environment of ``python -m feedengine`` in its own process: the user's
    defaults, not this process's settings."""
    return {
        "PATH": os.environ["PATH"],
        "PG_CONN_STR": dsn,
        "FEEDENGINE_HOME": str(home),
        "CANDLE_TABLE_TEMPLATE": template,
    }


def test_whole_command_replay_into_postgres(day, pg_dsn, baseline_rate, tmp_path, report):
    """``python -m feedengine --replay`` as a user runs it, timed from outside."""
    template = f"cmd_{uuid.uuid4().hex[:8]}" + "_{interval}min"
    env = command_env(pg_dsn, tmp_path, template)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "feedengine", "--replay", str(day)],
        env=env,
        capture_output=True,
        text=True,
    )
    wall_s = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    ticks = int(proc.stdout.split("ticks decoded", 1)[1].split()[0].replace(",", ""))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = 0
        for minutes in (1, 5, 15):
            table = template.format(interval=minutes)
            rows += conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            conn.execute(f'DROP TABLE "{table}"')
    rate = ticks / wall_s
    ratio = rate / baseline_rate
    report(
        "full_day_command",
        {
            "ticks": ticks,
            "candle_rows": rows,
            "wall_s": wall_s,
            "ticks_per_s": rate,
            "baseline_ticks_per_s": baseline_rate,
            "ratio": ratio,
            "target_ticks_per_s": TARGET,
            "meets_target": rate >= TARGET,
        },
    )
    assert rows > 0
    if MODE == "full":
        assert rate >= TARGET, f"{rate / 1e6:.2f} M ticks/s"
    else:
        assert ratio >= COMMAND_GATE_RATIO, f"{ratio:.0f}x"


def test_memory_flat_at_9000_instruments_4_intervals(tmp_path, pg_dsn, report):
    """RSS of ``python -m feedengine --replay`` (its own process) over a whole day."""
    path = tmp_path / "wide.ticks"
    simulate(path, SimConfig(instruments=9000, ticks=MEMORY_TICKS, seed=12))
    template = f"mem_{uuid.uuid4().hex[:8]}" + "_{interval}min"
    env = command_env(pg_dsn, tmp_path, template)
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedengine", "--replay", str(path), "--intervals", "1,5,15,60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples = []
    while proc.poll() is None:
        try:
            samples.append(rss_mb(proc.pid))
        except (OSError, ValueError):
            break
        time.sleep(0.05)
    _, err = proc.communicate()
    path.unlink()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for minutes in (1, 5, 15, 60):
            conn.execute(f'DROP TABLE IF EXISTS "{template.format(interval=minutes)}"')
    assert proc.returncode == 0, err
    rss = np.array(samples)
    quarter = max(len(rss) // 4, 1)
    growth = rss[-quarter:].mean() - rss[quarter : 2 * quarter].mean()
    report(
        "memory",
        {
            "instruments": 9000,
            "intervals": 4,
            "ticks": MEMORY_TICKS,
            "samples": len(rss),
            "max_rss_mb": float(rss.max()),
            "growth_mb": float(growth),
            "limit_mb": MEMORY_LIMIT_MB,
        },
    )
    assert rss.max() <= MEMORY_LIMIT_MB
    assert growth < 10, "RSS grows during the replay"
