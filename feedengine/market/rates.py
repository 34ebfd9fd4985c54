"""Tick rates, volatilities and trade sizes, calibrated so a session holds about ``ticks``
ticks and each instrument's day volume stays inside int32."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feedengine.market.clock import Phase, Schedule
from feedengine.market.config import SimConfig
from feedengine.market.universe import Kind
from feedengine.sessions import NS_PER_S

__all__ = ["INT32_MAX", "P_TRADE", "VOLUME_BUDGET", "Rates", "calibrate"]

INT32_MAX = 2**31 - 1
#: Cumulative volumes are kept below this (int32 on Kite's wire) with room to spare.
VOLUME_BUDGET = 1_000_000_000
#: Fraction of ticks in the session that report a trade; the rest are order-book updates.
P_TRADE = 0.75
#: Kite sends at most a few updates a second per instrument; index values once a second.
MAX_RATE = 3.0
INDEX_MAX_RATE = 1.0
#: Spread of per-instrument liquidity (log-normal sigma): the top 10 % of instruments get
#: over half of the ticks, as in a real subscription of a few thousand names.
RATE_SIGMA = 1.6
_FUTURES = [Kind.DERIV, Kind.CURRENCY, Kind.COMMODITY]


@dataclass(frozen=True)
class Rates:
    """Per instrument.

    Attributes
    ----------
    rate
        Ticks a second at a rate multiplier of 1.
    sigma
        Standard deviation of a trade's price move, in ticks.
    size
        Typical trade size, in units (:attr:`Market.unit`).
    preopen_volume
        Volume of the pre-open auction (stocks).
    """

    rate: np.ndarray
    sigma: np.ndarray
    size: np.ndarray
    preopen_volume: np.ndarray


def calibrate(
    kind: np.ndarray,
    prev_close: np.ndarray,
    tick: np.ndarray,
    unit: np.ndarray,
    size: np.ndarray,
    sched: Schedule,
    config: SimConfig,
    urng: np.random.Generator,
) -> Rates:
    """Heavy-tailed tick rates scaled so the session holds about ``ticks`` ticks.

    Parameters
    ----------
    kind, prev_close, tick, unit
        Per instrument: its :class:`Kind`, previous close and tick size (price units), and
        the units a trade size counts in (1, or the lot of a contract).
    size
        Per instrument, the typical trade size before the volume budget.
    sched
        The window.
    config
        The simulation (its tick target).
    urng
        The universe stream.

    Returns
    -------
    Rates
        Rates, volatilities, trade sizes and pre-open volumes.
    """
    n = len(kind)
    weight = urng.lognormal(0.0, RATE_SIGMA, n)
    equity = np.flatnonzero(kind == Kind.EQUITY)
    # Stocks in universe order are in liquidity order (the Nifty names first).
    weight[equity] = np.sort(weight[equity])[::-1]
    # Indices and futures are among the liquid instruments (top decile and quintile).
    weight[kind == Kind.INDEX] = np.quantile(weight, 0.9)
    futures = np.isin(kind, _FUTURES)
    weight[futures] = np.quantile(weight, 0.8) * urng.lognormal(0.0, 0.7, int(futures.sum()))
    cap = np.where(kind == Kind.INDEX, INDEX_MAX_RATE, MAX_RATE)
    exposure = np.zeros(len(Kind))  # rate-weighted seconds per kind
    normal = np.zeros(len(Kind))  # ... of the normal session alone
    matches = 0
    for ch in sched.chunks:
        dur = (ch.end_ns - ch.start_ns) / NS_PER_S
        exposure += ch.mult * dur
        normal += np.where(ch.phase == Phase.NORMAL, ch.mult * dur, 0.0)
        if ch.phase[Kind.EQUITY] == Phase.MATCH:
            matches = int((kind == Kind.EQUITY).sum())
    expo = exposure[kind]
    target = max(0, config.target_ticks - matches)

    def expected(scale: float) -> float:
        return float((np.minimum(scale * weight, cap) * expo).sum())

    lo, hi = 0.0, 1.0
    while expected(hi) < target and hi < 1e12:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected(mid) < target else (lo, mid)
    rate = np.minimum(hi * weight, cap) if target else np.zeros(n)
    # Price moves: a daily volatility spread over the expected number of trades.
    vol = np.select(
        [kind == Kind.INDEX, kind == Kind.CURRENCY],
        [urng.uniform(0.006, 0.012, n), urng.uniform(0.002, 0.004, n)],
        urng.uniform(0.01, 0.025, n),
    )
    trades = np.maximum(1.0, rate * normal[kind] * P_TRADE)
    # Trade sizes small enough that the day's volume stays inside int32.
    mean_trade = 3.0  # ticks' mean size in units of ``size``: ltq ~1.4 plus the trades between
    size = np.maximum(0.05, np.minimum(size, VOLUME_BUDGET / (trades * mean_trade * unit)))
    day_volume = trades * mean_trade * size * unit
    preopen = np.round(day_volume * urng.uniform(0.005, 0.02, n) / unit)
    return Rates(
        rate=rate,
        sigma=prev_close / tick * vol / np.sqrt(trades),
        size=size,
        preopen_volume=np.maximum(1, preopen).astype(np.int64) * unit,
    )
