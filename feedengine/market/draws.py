"""Tables of the minor random quantities of a tick, drawn once per session.

A tick takes its order book, trade size, latency ... from one row of these tables: one random
draw per tick instead of about forty. The columns are drawn independently, so a tick's
quantities are independent of each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DEPTH", "DRAW_ROWS", "Draws", "draw_tables"]

#: Order book levels a side.
DEPTH = 5
#: Rows of each table; enough that no pattern shows.
DRAW_ROWS = 4096
#: Network and exchange latency between a tick's exchange time and its arrival: log-normal
#: around a median, clipped to a range. The upper bound plus one frame stays below the
#: engine's 2 s grace (SPEC section 4), so the simulator produces no late ticks.
LATENCY_MIN_MS, LATENCY_MAX_MS = 50, 1500
LATENCY_MEDIAN_MS = 150.0
LATENCY_SIGMA = 0.7
#: The unreported trades between two snapshots reach beyond both snapshots' prices by a
#: half-normal number of price steps, in units of the instrument's per-trade step: the
#: next packet's day high/low can show a price no tick had (SPEC section 4).
BETWEEN_REACH = 0.5


@dataclass(frozen=True)
class Draws:
    """The tables; a tick's row is ``draw`` in ``[0, DRAW_ROWS)``.

    Attributes
    ----------
    gaps
        ``(10, DRAW_ROWS)``: price steps from the last price of 5 bid levels (negative,
        falling), then 5 ask levels (rising).
    qty
        ``(10, DRAW_ROWS)``: quantity of each level, in depth lots (>= 1).
    orders
        ``(10, DRAW_ROWS)``: orders at each level (1 to its quantity).
    buy, sell
        Total buy and sell quantity, in hundredths of a book lot.
    u_trade
        Uniform: whether the tick reports a trade.
    u_round
        Uniform: stochastic rounding of its price step.
    ltq
        Trade size multiplier (log-normal).
    others
        Volume of the unreported trades since the previous tick, in trade sizes.
    latency
        Exchange-to-arrival latency, ns.
    oi_z
        Standard normal: the open-interest change of a trade.
    reach_up, reach_down
        How far the trades between snapshots go above and below both ticks' prices.
    """

    gaps: np.ndarray
    qty: np.ndarray
    orders: np.ndarray
    buy: np.ndarray
    sell: np.ndarray
    u_trade: np.ndarray
    u_round: np.ndarray
    ltq: np.ndarray
    others: np.ndarray
    latency: np.ndarray
    oi_z: np.ndarray
    reach_up: np.ndarray
    reach_down: np.ndarray


def draw_tables(rng: np.random.Generator, between_rng: np.random.Generator) -> Draws:
    """Draw the tables.

    Parameters
    ----------
    rng
        The tick stream. The draws are taken in a fixed order and the chunks' draws follow
        them: dropping or reordering a table changes every tick of a seed.
    between_rng
        The stream of the reach of the trades between snapshots (added later on a stream
        of its own, which left every other draw of a seed as it was).

    Returns
    -------
    Draws
        The tables.
    """
    s = DRAW_ROWS
    level = np.tile(1 + 0.25 * np.arange(DEPTH), 2)[:, None]
    gap_choices = np.array([1, 1, 1, 1, 2, 2, 3])
    gaps = np.concatenate(
        [
            -np.cumsum(rng.choice(gap_choices, (DEPTH, s)), axis=0),
            np.cumsum(rng.choice(gap_choices, (DEPTH, s)), axis=0),
        ]
    )
    qty = np.maximum(1, np.round(rng.lognormal(0.0, 0.8, (2 * DEPTH, s)) * level * 2))
    orders = np.minimum(1 + rng.poisson(2.0, (2 * DEPTH, s)), qty)
    latency_ms = np.clip(
        rng.lognormal(math.log(LATENCY_MEDIAN_MS), LATENCY_SIGMA, s), LATENCY_MIN_MS, LATENCY_MAX_MS
    )
    side = np.round(rng.lognormal(0.0, 0.3, (2, s)) * 100).astype(np.int64)
    return Draws(
        gaps=gaps.astype(np.int32),
        qty=qty.astype(np.int32),
        orders=orders.astype(np.int32),
        buy=side[0],
        sell=side[1],
        u_trade=rng.random(s),
        u_round=rng.random(s),
        ltq=rng.lognormal(0.0, 0.8, s),
        others=1.5 * rng.standard_exponential(s),
        latency=np.round(latency_ms * 1e6).astype(np.int64),
        oi_z=rng.standard_normal(s),
        reach_up=BETWEEN_REACH * np.abs(between_rng.standard_normal(s)),
        reach_down=BETWEEN_REACH * np.abs(between_rng.standard_normal(s)),
    )
