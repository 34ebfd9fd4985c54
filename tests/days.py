"""A small simulated day, the candles a plain replay makes of it, and the candles a
database holds, for the tests that break things around a replay."""

from pathlib import Path

from feedengine.candles import CandleConfig, CandleEngine
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.simulator import SimConfig, simulate
from feedengine.sink import MemorySink

INTERVALS = (1, 5, 15)


def small_day(folder: Path) -> Path:
    """30 instruments, 40,000 ticks over a session: a few seconds of replay."""
    path = folder / "day.ticks"
    simulate(path, SimConfig(instruments=30, ticks=40_000, seed=17))
    return path


def replayed(path: Path) -> dict:
    """The candles of a replay of ``path`` into memory, by (minutes, symbol, exchange, IST
    bucket start without its zone), as a candle table stores them."""
    sink = MemorySink()
    source = ReplaySource(path)
    Pipeline(CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS)), sink).run(source)
    return {(m, s, e, dt.replace(tzinfo=None)): v for (m, s, e, dt), v in sink.candles.items()}


def db_candles(conn, tables: dict[int, str]) -> dict:
    """The candles of ``tables`` (interval -> name), keyed as :func:`replayed`'s; a candle
    stored twice fails."""
    out = {}
    for minutes, name in tables.items():
        for dt, sym, exchange, o, h, lo, c, v in conn.execute(
            f"SELECT datetime, tradingsymbol, exchange, open, high, low, close, volume "
            f'FROM "{name}"'
        ):
            key = (minutes, sym, exchange, dt)
            assert key not in out, f"{key} twice"
            out[key] = (o, h, lo, c, v)
    return out
