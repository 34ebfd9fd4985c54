"""The price and volume process: a session's instruments trading, one chunk of ticks at a time.

* Tick rates are heavy-tailed and scaled so the session holds about ``ticks`` ticks
  (:mod:`feedengine.market.rates`); NSE-hours instruments follow a U-shaped intraday
  profile (:mod:`feedengine.market.clock`).
* Prices are random walks on each instrument's tick size, kept positive and inside int32
  integer units. Ticks carry the day's open/high/low, the previous close, a rising
  cumulative volume, last traded quantity, average price, buy/sell quantities, five order
  book levels each side and open interest for derivatives. No candle reads the order book
  or the open interest, but the wires carry them (Kite's full packet, Angel One's
  SNAP_QUOTE): a table row per tick, and a walk on trades.
* Trades also happen between two ticks (the volume a tick adds beyond its own trade): they
  reach past both ticks' prices, so the next tick's day high or low can be a price no tick
  had, as Kite's one snapshot a second shows (SPEC section 4, extremes between snapshots).
* NSE stocks' pre-open: quiet indicative ticks (volume 0, last trade on the previous day),
  one tick each at the auction match (last trade time the match time, volume the pre-open
  volume), quiet again until the open; after the close, ticks without trades.
* A tick arrives at its exchange time plus a latency of 50-1500 ms, never before the
  instrument's previous tick.

Everything is vectorized with numpy, a chunk at a time. The same config gives the same ticks
(numpy ``Generator(PCG64)`` seeded from ``seed``).
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np

from feedengine.market.clock import Chunk, Phase, close_s_of, day_start_ns, schedule
from feedengine.market.config import SimConfig
from feedengine.market.draws import DRAW_ROWS, draw_tables
from feedengine.market.groups import Groups
from feedengine.market.rates import INT32_MAX, P_TRADE, VOLUME_BUDGET, calibrate
from feedengine.market.tick import DEPTH_LEVELS, FIELDS, TICK_DTYPE, as_words, word_of
from feedengine.market.universe import Kind, universe
from feedengine.sessions import NS_PER_S

__all__ = ["Market"]

#: Share of pre-open order-entry ticks that move the indicative price.
P_QUIET_MOVE = 0.5
#: Opening gap against the previous close (fraction, normal sigma).
GAP_SIGMA = 0.005
#: Prices never go below this many ticks (keeps five depth levels of bids positive).
FLOOR_TICKS = 40
#: ... nor so high that the asks above them leave int32 (CDS prices < 214 rupees).
CEIL_MARGIN_TICKS = 64
#: The tick's int32 fields before its order book.
_WORDS = FIELDS[FIELDS.index("instrument") : FIELDS.index("depth")]


class Market:
    """A simulated session in progress.

    Parameters
    ----------
    config
        The simulation.

    Attributes
    ----------
    listings
        The universe (:func:`feedengine.market.universe.universe`).
    schedule
        The window and its chunks; :meth:`ticks` takes them in order.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.listings = universe(config)
        n = len(self.listings)
        # The third stream (the reach of the trades between snapshots) was added later; its own
        # stream left every other draw of a seed, so every tick's time and price, as it was.
        universe_seq, tick_seq, between_seq = np.random.SeedSequence(config.seed).spawn(3)
        urng = np.random.Generator(np.random.PCG64(universe_seq))
        self.kind = np.array([x.kind for x in self.listings], dtype=np.int64)
        scale = np.array([x.scale for x in self.listings], dtype=np.int64)
        tick = np.round(np.array([x.tick_size for x in self.listings]) * scale)
        self.tick = np.maximum(1, tick).astype(np.int64)
        # Previous closes: the listings' prices with a little noise.
        rupees = np.array([x.price for x in self.listings]) * (1 + urng.normal(0, 0.02, n))
        self.floor = FLOOR_TICKS * self.tick
        self.ceil = (INT32_MAX - CEIL_MARGIN_TICKS * self.tick) // self.tick * self.tick
        units = np.round(rupees * scale / self.tick).astype(np.int64) * self.tick
        self.prev_close = np.clip(units, self.floor, self.ceil)
        lot = np.array([x.lot_size for x in self.listings], dtype=np.int64)
        is_equity = self.kind == Kind.EQUITY
        # Typical trade: about 20 000 rupees of a stock; a few lots of a contract.
        size = np.where(is_equity, np.clip(np.round(20_000 / rupees), 1, 5_000), 2.0)
        self.unit = np.where(is_equity, 1, lot)
        book_size = urng.uniform(50, 500, n)
        self.has_oi = np.isin(self.kind, [Kind.DERIV, Kind.CURRENCY, Kind.COMMODITY])
        self.has_volume = self.kind != Kind.INDEX
        self.rng = np.random.Generator(np.random.PCG64(tick_seq))
        self.schedule = schedule(config, self.rng)
        rates = calibrate(
            self.kind, self.prev_close, self.tick, self.unit, size, self.schedule, config, urng
        )
        self.rate, self.sigma, self.size = rates.rate, rates.sigma, rates.size
        self.preopen_volume = rates.preopen_volume
        self._init_state(urng, np.random.Generator(np.random.PCG64(between_seq)))
        # The order book's operands, int32 like its fields (:meth:`_order_book`).
        depth_lot = np.maximum(1, np.round(self.size)).astype(np.int64) * self.unit
        self.depth_lot = depth_lot.astype(np.int32)
        self.book_tick = self.tick.astype(np.int32)
        # Total buy/sell quantities: a few hundred typical trades (the tables are in 1/100s).
        book_lot = np.round(book_size * self.size * self.unit / 100)
        self.book_lot = np.maximum(1, book_lot).astype(np.int64)

    def _init_state(self, urng: np.random.Generator, between_rng: np.random.Generator) -> None:
        """The market before the window's first tick."""
        n = len(self.kind)
        gap = np.round(self.prev_close * urng.normal(0, GAP_SIGMA, n) / self.tick)
        self.price = np.clip(
            self.prev_close + gap.astype(np.int64) * self.tick, self.floor, self.ceil
        )
        prev_day = self.config.date - timedelta(days=1)
        while prev_day.weekday() >= 5:
            prev_day -= timedelta(days=1)
        prev_close_s = close_s_of(self.kind)
        prev_day_s = day_start_ns(prev_day) // NS_PER_S
        ltt_s = prev_day_s + prev_close_s - urng.integers(1, 300, n)
        ltt_s[self.kind == Kind.INDEX] = 0
        self.ltt = ltt_s * NS_PER_S
        oi_units = np.round(
            np.minimum(
                urng.lognormal(math.log(2000), 1.0, n) * self.size, VOLUME_BUDGET / 4 / self.unit
            )
        )
        self.oi = np.where(self.has_oi, oi_units * self.unit, 0).astype(np.int64)
        self.oi_high = self.oi.copy()
        self.oi_low = self.oi.copy()
        self.volume = np.zeros(n, dtype=np.int64)
        self.ltq = np.zeros(n, dtype=np.int64)
        self.vwap_num = np.zeros(n)
        self.open = np.zeros(n, dtype=np.int64)
        self.high = np.zeros(n, dtype=np.int64)
        self.low = np.zeros(n, dtype=np.int64)
        self.traded = np.zeros(n, bool)
        self.matched = np.zeros(n, bool)
        self.last_recv = np.full(n, self.schedule.origin_ns, dtype=np.int64)
        self.draws = draw_tables(self.rng, between_rng)

    def ticks(self, ch: Chunk) -> np.ndarray:
        """The ticks of the next chunk, and the market carried past it.

        Parameters
        ----------
        ch
            The chunk after the previous call's (``schedule.chunks`` in order).

        Returns
        -------
        numpy.ndarray
            :data:`~feedengine.market.tick.TICK_DTYPE` rows grouped by instrument, each
            instrument's in exchange-time order; ``recv_ns`` is the arrival time.
        """
        rng, dr = self.rng, self.draws
        dur_ns = ch.end_ns - ch.start_ns
        phase = ch.phase[self.kind]
        counts = rng.poisson(self.rate * ch.mult[self.kind] * (dur_ns / NS_PER_S))
        match = phase == Phase.MATCH
        counts[match] = ~self.matched[match]
        self.matched |= match
        g = Groups(counts)
        k = g.size
        t = np.empty(k, TICK_DTYPE)
        if not k:
            return t
        inst = g.inst
        # Exchange times: one tick in each of n equal slices of the chunk, at a random point:
        # increasing inside each instrument's group without a sort.
        slot = np.arange(k) - g.first
        offset = (slot + rng.random(k)) * (dur_ns / counts[inst])
        true_ns = ch.start_ns + offset.astype(np.int64)
        draw = rng.integers(0, DRAW_ROWS, k)
        # What each tick does, by the phase of its instrument.
        normal = phase == Phase.NORMAL
        index = self.kind == Kind.INDEX
        p_trade = np.select([normal, match], [np.where(index, 1.0, P_TRADE), 1.0], 0.0)
        p_move = np.select([normal, phase == Phase.QUIET], [p_trade, P_QUIET_MOVE], 0.0)
        u = dr.u_trade[draw]
        trade = u < p_trade[inst]
        move = u < p_move[inst]
        # Price: a random walk on the tick grid (stochastic rounding keeps small steps alive).
        z = rng.standard_normal(k, dtype=np.float32)
        sigma = self.sigma[inst]
        steps = np.floor(z * sigma + dr.u_round[draw]).astype(np.int64)
        steps[~move] = 0
        tick = self.tick[inst]
        floor, ceil = self.floor[inst], self.ceil[inst]
        price = np.clip(self.price[inst] + g.cumsum(steps) * tick, floor, ceil)
        # Volume: the tick's own trade plus the unreported trades since the previous tick.
        unit = self.unit[inst]
        size = self.size[inst]
        ltq_new = np.maximum(1, np.round(size * dr.ltq[draw])).astype(np.int64)
        others = np.floor(size * dr.others[draw]).astype(np.int64)
        dvol = (ltq_new + others) * unit
        volume_trade = trade & self.has_volume[inst]
        dvol[~volume_trade] = 0
        at_match = match[inst]
        if at_match.any():
            dvol[at_match] = self.preopen_volume[inst[at_match]]
            ltq_new[at_match] = self.preopen_volume[inst[at_match]] // unit[at_match]
        volume = np.minimum(self.volume[inst] + g.cumsum(dvol), INT32_MAX)
        ltq = g.ffill(ltq_new * unit, volume_trade, self.ltq[inst])
        match_ns = self.schedule.day_ns + self.schedule.match_s * NS_PER_S
        ltt = g.ffill(np.where(at_match, match_ns, true_ns), volume_trade, self.ltt[inst])
        vwap_num = self.vwap_num[inst] + g.cumsum(price * dvol.astype(np.float64))
        # The unreported trades since the previous tick (its volume's ``others``) went beyond
        # the prices of both ticks; only the day high/low show them.
        between = trade & (others > 0) & ~at_match
        prev = np.empty_like(price)
        prev[1:] = price[:-1]
        prev[g.starts] = self.price[g.members]
        # One-dimensional tables: gathering columns of a (2, S) table took 10 times as long.
        up = np.floor(dr.reach_up[draw] * sigma).astype(np.int64) * tick
        down = np.floor(dr.reach_down[draw] * sigma).astype(np.int64) * tick
        top = np.where(between, np.maximum(prev, price) + up, price)
        bottom = np.where(between, np.minimum(prev, price) - down, price)
        # Day open/high/low: from the day's first trade on; 0 before it.
        traded_before = self.traded[inst]
        has_traded = traded_before | (g.cumsum(trade.astype(np.int64)) > 0)
        first_trade = np.minimum.reduceat(np.where(trade, np.arange(k), k), g.starts)
        first_price = price[np.minimum(first_trade, k - 1)][g.rank]
        day_open = np.where(traded_before, self.open[inst], first_price)
        high = np.maximum(g.cummax(np.where(trade, np.minimum(top, ceil), 0)), self.high[inst])
        low = np.minimum(
            g.cummin(np.where(trade, np.maximum(bottom, floor), INT32_MAX)),
            np.where(traded_before, self.low[inst], INT32_MAX),
        )
        not_yet = ~has_traded
        day_open[not_yet] = 0
        high[not_yet] = 0
        low[not_yet] = 0
        oi, oi_high, oi_low = self._open_interest(g, draw, trade)
        # Arrival: a latency, never overtaking the instrument's previous tick.
        recv = g.cummax(true_ns - ch.start_ns + dr.latency[draw]) + ch.start_ns
        recv = np.maximum(recv, self.last_recv[inst])

        t["recv_ns"] = recv
        t["exchange_ns"] = true_ns
        t["last_trade_ns"] = ltt
        book_lot = self.book_lot[inst]
        fields = {
            "instrument": inst,
            "last_price": price,
            "last_traded_quantity": ltq,
            "average_traded_price": np.round(vwap_num / np.maximum(volume, 1)).astype(np.int64),
            "volume_traded": volume,
            "total_buy_quantity": dr.buy[draw] * book_lot,
            "total_sell_quantity": dr.sell[draw] * book_lot,
            "open": day_open,
            "high": high,
            "low": low,
            "close": self.prev_close[inst],
            "oi": oi,
            "oi_day_high": oi_high,
            "oi_day_low": oi_low,
        }
        # One transposing copy (1,900 ticks: 42 us; field by field, 60 us).
        words = as_words(t)[:, word_of(_WORDS[0]) : word_of("depth")]
        words[...] = np.stack([fields[name] for name in _WORDS], dtype=np.int32).T
        self._order_book(as_words(t)[:, word_of("depth") :], draw, inst, price)
        # Carry the market to the next chunk.
        last, who = g.lasts, g.members
        self.price[who] = price[last]
        self.volume[who] = volume[last]
        self.ltq[who] = ltq[last]
        self.ltt[who] = ltt[last]
        self.vwap_num[who] = vwap_num[last]
        self.traded[who] = has_traded[last]
        self.open[who] = day_open[last]
        self.high[who] = high[last]
        self.low[who] = low[last]
        self.oi[who] = oi[last]
        self.oi_high[who] = oi_high[last]
        self.oi_low[who] = oi_low[last]
        self.last_recv[who] = recv[last]
        return t

    def _open_interest(
        self, g: Groups, draw: np.ndarray, trade: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per tick, the open interest of derivatives (a walk on trades) and its day high
        and low; 0 for the other instruments."""
        inst = g.inst
        unit = self.unit[inst]
        has_oi = self.has_oi[inst]
        step = np.round(self.draws.oi_z[draw] * self.size[inst] * 2).astype(np.int64) * unit
        step[~(trade & has_oi)] = 0
        oi = np.maximum(self.oi[inst] + g.cumsum(step), np.where(has_oi, unit, 0))
        return (
            oi,
            np.maximum(g.cummax(oi), self.oi_high[inst]),
            np.minimum(g.cummin(oi), self.oi_low[inst]),
        )

    def _order_book(
        self, words: np.ndarray, draw: np.ndarray, inst: np.ndarray, price: np.ndarray
    ) -> None:
        """Write each tick's order book (``words``: the ticks' depth words): its table row's
        levels around its price.

        Computed level-major in int32, so that each operation runs along all the ticks
        without a cast, then copied into the records at once (1,900 ticks: 124 us; with
        int64 operands, 300 us).
        """
        dr = self.draws
        k = len(draw)
        book = np.empty((DEPTH_LEVELS, 3, k), dtype=np.int32)
        np.multiply(np.take(dr.qty, draw, axis=1), self.depth_lot[inst], out=book[:, 0])
        steps = np.take(dr.gaps, draw, axis=1) * self.book_tick[inst]
        np.add(steps, price.astype(np.int32), out=book[:, 1])
        np.take(dr.orders, draw, axis=1, out=book[:, 2])
        words[...] = book.reshape(-1, k).T
