"""A simulated trading day: the kernel against pandas, and the invariants every day keeps."""

import numpy as np
import pandas as pd
import pytest

from feedengine.brokers.kite import _wire
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.dtypes import CANDLE_ROW_DTYPE, KTICK_DTYPE
from feedengine.sessions import (
    DEFAULT_SESSIONS,
    IST_OFFSET_NS,
    NS_PER_DAY,
    NS_PER_MIN,
    NS_PER_S,
)
from feedengine.simulator import SimConfig, simulate
from feedengine.slots import SlotTable
from feedengine.tickfile import TickReader

INTERVALS = (1, 5, 15)


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """(instruments, decoded lean ticks, kernel candle rows) of a simulated day."""
    path = tmp_path_factory.mktemp("day") / "day.ticks"
    simulate(path, SimConfig(instruments=60, ticks=60_000, seed=21))
    reader = TickReader(path)
    instruments = [KiteInstrument.from_dict(d) for d in reader.instruments]
    parts = []
    buf = np.empty(1 << 16, KTICK_DTYPE)
    faults = np.zeros(_wire.NUM_FAULTS, np.int64)
    table = SlotTable.build([i.key for i in instruments])
    for b in reader.batches():
        rec = 0
        while rec < len(b):
            rec, end = _wire.decode_records(
                b.buf,
                b.offsets,
                b.lengths,
                b.recv_ns,
                rec,
                buf,
                0,
                faults,
                np.full(1, -1, np.int64),
                table.keys,
                table.slots,
                table.shift,
            )
            parts.append(buf[:end].copy())
    ticks = np.concatenate(parts)
    assert not faults.any()
    engine, rows = run_engine(instruments, ticks)
    return instruments, ticks, rows, engine


def run_engine(instruments, ticks):
    """The engine over a day's ticks: ``(engine, every candle row)``."""
    engine = CandleEngine(instruments, CandleConfig(intervals=INTERVALS))
    rows = []
    out = np.empty(engine.kernel.capacity, CANDLE_ROW_DTYPE)
    i = 0
    while i < len(ticks):
        i = engine.kernel.process(ticks, i)
        rows.append(out[: engine.kernel.drain(out)].copy())
    while not engine.kernel.finalize():
        rows.append(out[: engine.kernel.drain(out)].copy())
    rows.append(out[: engine.kernel.drain(out)].copy())
    return engine, np.concatenate(rows)


def candles_frame(instruments, rows):
    tokens = np.array([i.instrument_token for i in instruments])
    df = pd.DataFrame(
        {
            "token": tokens[rows["slot"]],
            "minutes": np.array(INTERVALS)[rows["interval"]],
            "bucket": rows["bucket_start_ns"],
            "open": rows["open"],
            "high": rows["high"],
            "low": rows["low"],
            "close": rows["close"],
            "volume": rows["volume"],
        }
    )
    return df.set_index(["token", "minutes", "bucket"]).sort_index()


def range_moves(live):
    """Per in-session tick with a day range: the day high and low it widens its candles to
    (NaN: none), and whether it is its date's first (SPEC: extremes between snapshots)."""
    ranged = live[live.has_day_range == 1]
    date = [ranged.slot, ranged.midnight]
    high_before = ranged.groupby(date).day_high.transform(lambda s: s.cummax().shift())
    lows = ranged.day_low.where(ranged.day_low != 0).astype(float)
    low_before = lows.groupby(date).transform(lambda s: s.cummin().ffill().shift())
    first = ranged.groupby(date).cumcount() == 0
    return pd.DataFrame(
        {
            "up": ranged.day_high.where(first | (ranged.day_high > high_before)),
            "down": lows.where(first | low_before.isna() | (lows < low_before)),
            "first": first,
        }
    ).reindex(live.index)


def pandas_candles(instruments, ticks):
    """SPEC section 4 for an orderly day (no late ticks, no volume resets), in pandas."""
    sessions = {slot: DEFAULT_SESSIONS[i.market] for slot, i in enumerate(instruments)}
    df = pd.DataFrame({k: ticks[k] for k in KTICK_DTYPE.names})
    df["t"] = df.event_ns
    df["midnight"] = (df.t + IST_OFFSET_NS) // NS_PER_DAY * NS_PER_DAY - IST_OFFSET_NS
    df["open_ns"] = df.midnight + df.slot.map(lambda t: sessions[t].open_s) * NS_PER_S
    close_ns = df.midnight + df.slot.map(lambda t: sessions[t].close_s) * NS_PER_S
    df["seq"] = np.arange(len(df))
    pre = df[df.t < df.open_ns]
    auction = pre[pre.auction == 1]
    preopen_price = auction.groupby("slot").price.last()
    pre_volume = pre[pre.has_volume == 1].groupby("slot").volume.last()
    live = df[(df.t >= df.open_ns) & (df.t < close_ns)]
    live = live.join(range_moves(live))
    frames = []
    for minutes in INTERVALS:
        length = minutes * NS_PER_MIN
        g = live.assign(bucket=live.open_ns + (live.t - live.open_ns) // length * length)
        # The date's first tick with a range widens only the session's first bucket.
        widens = ~g["first"].fillna(False).astype(bool) | (g.bucket == g.open_ns)
        g = g.assign(up=g.up.where(widens), down=g.down.where(widens))
        agg = g.groupby(["slot", "bucket"]).agg(
            open=("price", "first"),
            high=("price", "max"),
            low=("price", "min"),
            close=("price", "last"),
            up=("up", "max"),
            down=("down", "min"),
        )
        agg["high"] = np.fmax(agg.high, agg.up)
        agg["low"] = np.fmin(agg.low, agg.down)
        agg = agg.drop(columns=["up", "down"])
        vol = g[g.has_volume == 1].groupby(["slot", "bucket"]).volume.agg(["first", "last"])
        agg = agg.join(vol)
        first_bucket = agg.groupby(level=0).head(1).index
        for tok, bucket in first_bucket:
            if tok in preopen_price.index:
                p = preopen_price[tok]
                agg.loc[(tok, bucket), "open"] = p
                agg.loc[(tok, bucket), "high"] = max(agg.loc[(tok, bucket), "high"], p)
                agg.loc[(tok, bucket), "low"] = min(agg.loc[(tok, bucket), "low"], p)
        # Baseline: the previous candle's last volume; for the first, the pre-open volume or
        # the first tick's own.
        prev_last = agg["last"].groupby(level=0).transform(lambda s: s.ffill().shift())
        start = agg.index.get_level_values(0).map(pre_volume).to_numpy(dtype=float)
        base = prev_last.fillna(pd.Series(start, index=agg.index)).fillna(agg["first"])
        agg["volume"] = (agg["last"] - base).fillna(0).astype(np.int64)
        agg = agg.drop(columns=["first", "last"]).reset_index()
        agg["minutes"] = minutes
        agg["token"] = np.array([i.key for i in instruments])[agg.pop("slot")]
        frames.append(agg)
    out = pd.concat(frames).set_index(["token", "minutes", "bucket"]).sort_index()
    return out[["open", "high", "low", "close", "volume"]].astype(np.int64)


def test_kernel_equals_pandas_on_a_simulated_day(day):
    instruments, ticks, rows, engine = day
    assert engine.kernel.late.sum() == 0  # the simulator's latency stays within the grace
    got = candles_frame(instruments, rows).astype(np.int64)
    want = pandas_candles(instruments, ticks)
    pd.testing.assert_frame_equal(got, want, check_index_type=False)


def test_candle_invariants(day):
    instruments, ticks, rows, _ = day
    assert (rows["final"] == 1).all()
    assert (rows["low"] <= rows["open"]).all() and (rows["open"] <= rows["high"]).all()
    assert (rows["low"] <= rows["close"]).all() and (rows["close"] <= rows["high"]).all()
    df = candles_frame(instruments, rows)
    assert df.index.is_unique  # one row per instrument, interval and bucket
    # Every interval's volumes add up to the same day's traded volume per instrument.
    per_interval = df.groupby(level=[0, 1]).volume.sum().unstack()
    assert (per_interval.nunique(axis=1) == 1).all()
    vol = ticks[ticks["has_volume"] == 1]
    tokens = np.array([i.key for i in instruments])
    last = pd.Series(vol["volume"]).groupby(tokens[vol["slot"]]).max()
    assert (per_interval[1] <= last.reindex(per_interval.index).fillna(0)).all()


def test_the_day_range_widens_candles_of_a_simulated_day(day):
    """The simulated market trades between snapshots: the rule widens some candles' high and
    low and changes nothing else."""
    instruments, ticks, rows, _ = day
    plain = ticks.copy()
    plain["has_day_range"] = 0
    got = candles_frame(instruments, rows)
    without = candles_frame(instruments, run_engine(instruments, plain)[1])
    assert got.index.equals(without.index)
    for name in ("open", "close", "volume"):
        assert (got[name] == without[name]).all()
    assert (got.high >= without.high).all() and (got.low <= without.low).all()
    for name in ("high", "low"):
        changed = (got[name] != without[name]).xs(1, level="minutes")
        assert 0.01 < changed.mean() < 0.5, (name, changed.mean())
