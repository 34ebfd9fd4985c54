"""Hypothesis strategies for tick streams that exercise every candle rule of SPEC section 4."""

from collections import Counter

import numpy as np
from hypothesis import strategies as st

from feedengine.brokers.kite import reference as ref_wire
from feedengine.brokers.kite.segments import exchange_for
from feedengine.dtypes import KTICK_DTYPE
from feedengine.reference import candles as ref_candles
from feedengine.sessions import (
    DEFAULT_SESSIONS,
    IST_OFFSET_NS,
    NS_PER_DAY,
    NS_PER_MIN,
    NS_PER_S,
)

SEGMENTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12]
# 2024-01-15 (a Monday), IST midnight, in Unix seconds.
DAY0_S = 1_705_257_000
# Times of day (seconds after IST midnight) around which the rules change.
ANCHORS = [
    8 * 3600,
    9 * 3600,
    9 * 3600 + 7 * 60,
    9 * 3600 + 15 * 60,
    10 * 3600 + 15 * 60,
    10 * 3600 + 30 * 60,
    15 * 3600 + 15 * 60,
    15 * 3600 + 30 * 60,
    17 * 3600,
    23 * 3600 + 55 * 60,
]
# Times around the ends of the sessions' first buckets (1, 5 and 15 minutes), where the
# date's first tick with a day range starts or stops widening its candles.
FIRST_BUCKET_ANCHORS = [
    9 * 3600,
    9 * 3600 + 60,
    9 * 3600 + 5 * 60,
    9 * 3600 + 15 * 60,
    9 * 3600 + 16 * 60,
    9 * 3600 + 20 * 60,
    9 * 3600 + 30 * 60,
]


#: What the streams say of each tick: the fields of a Kite packet that SPEC section 4 reads
#: (``day_high``/``day_low`` are the packet's ``high``/``low``). ``neutral`` turns them into
#: the kernel's rows through the reference Kite decoder.
PACKET_DTYPE = np.dtype(
    [
        ("recv_ns", np.int64),
        ("exchange_timestamp", np.int32),
        ("last_trade_time", np.int32),
        ("instrument_token", np.uint32),
        ("last_price", np.int32),
        ("volume_traded", np.int32),
        ("day_high", np.int32),
        ("day_low", np.int32),
        ("packet_length", np.uint16),
        ("segment", np.uint8),
        ("has_volume", np.uint8),
        ("has_day_range", np.uint8),
    ]
)


def neutral(packets: np.ndarray, tokens: list[int]) -> np.ndarray:
    """The kernel's rows (``KTICK_DTYPE``) of ``PACKET_DTYPE`` rows; slot ``i`` is
    ``tokens[i]``, any other token unknown."""
    slot = {t: i for i, t in enumerate(tokens)}
    out = np.zeros(len(packets), KTICK_DTYPE)
    for i, p in enumerate(packets.tolist()):
        d = dict(zip(PACKET_DTYPE.names, p, strict=True))
        d["high"], d["low"] = d["day_high"], d["day_low"]
        row = ref_wire.kernel_row(d, slot.get(d["instrument_token"], -1))
        out[i] = tuple(row[name] for name in KTICK_DTYPE.names)
    return out


def reference(packets: np.ndarray, sessions: dict[int, tuple[int, int]], intervals, **kw):
    """The reference aggregator over ``PACKET_DTYPE`` rows, its rows keyed by token."""
    tokens = list(sessions)
    result = ref_candles.aggregate(
        neutral(packets, tokens), {i: sessions[t] for i, t in enumerate(tokens)}, intervals, **kw
    )
    result.rows = [(tokens[slot], *rest) for slot, *rest in result.rows]
    return result


def sessions_of(tokens: list[int]) -> dict[int, tuple[int, int]]:
    out = {}
    for tok in tokens:
        s = DEFAULT_SESSIONS[exchange_for(tok & 0xFF)]
        out[tok] = (s.open_s, s.close_s)
    return out


#: How a tick's reported day range moves from the market's range so far: it carries its
#: own trade, a trade between snapshots above or below every tick's price, nothing new, or
#: what real packets also show (a zero low, no trade yet, values unrelated to the ticks).
RANGE_MOVES = ["same", "same", "trade", "trade", "above", "below", "zero_low", "no_trade", "wild"]


@st.composite
def tick_streams(draw, max_instruments=6, max_ticks=120, anchors=ANCHORS):
    """``(ticks PACKET_DTYPE array, tokens)``; recv_ns non-decreasing.

    Times jump now and then to an IST time of day in ``anchors`` (give or take 3 s).
    """
    n_inst = draw(st.integers(1, max_instruments))
    tokens = draw(
        st.lists(
            st.integers(1, 5000).map(lambda x: x << 8),
            min_size=n_inst,
            max_size=n_inst,
            unique=True,
        )
    )
    tokens = [t | draw(st.sampled_from(SEGMENTS)) for t in tokens]
    tokens = list(dict.fromkeys(tokens))
    n = draw(st.integers(0, max_ticks))
    ticks = np.zeros(n, PACKET_DTYPE)
    day = 0
    clock_s = DAY0_S + draw(st.sampled_from(anchors)) - 30
    cum = dict.fromkeys(tokens, 0)
    prices: dict[int, int] = {}
    ranges: dict[tuple[int, int], tuple[int, int]] = {}  # (token, day): (high, low), 0 none
    for i in range(n):
        step = draw(st.sampled_from(["tiny", "tiny", "small", "minute", "anchor", "day"]))
        if step == "tiny":
            clock_s += draw(st.integers(0, 3))
        elif step == "small":
            clock_s += draw(st.integers(0, 90))
        elif step == "minute":
            clock_s += draw(st.integers(60, 3 * 3600))
        elif step == "anchor":
            target = (
                DAY0_S + day * 86400 + draw(st.sampled_from(anchors)) + draw(st.integers(-3, 3))
            )
            clock_s = max(clock_s, target)
        else:
            day += 1
            clock_s = max(clock_s, DAY0_S + day * 86400 + draw(st.sampled_from(anchors)))
        day = (clock_s - DAY0_S) // 86400
        recv_ns = clock_s * NS_PER_S + draw(st.integers(0, NS_PER_S - 1))
        tok = draw(st.sampled_from([*tokens, 0x7FFF01]))  # sometimes an unknown token
        plen = draw(st.sampled_from([8, 28, 32, 44, 184, 184]))
        # A lag of a day: a stale tick of the previous date, after that date's candles.
        lag = draw(st.sampled_from([0, 0, 1, 2, 3, 5, 200, 86400]))
        ets = 0 if draw(st.integers(0, 9)) == 0 else clock_s - lag
        c = cum.get(tok, 0)
        move = draw(st.sampled_from(["up", "up", "up", "same", "reset"]))
        c = 0 if move == "reset" else c + (draw(st.integers(1, 5000)) if move == "up" else 0)
        cum[tok] = c
        ltt_choice = draw(st.sampled_from(["today", "yesterday", "zero"]))
        ltt = {"today": clock_s - 1, "yesterday": clock_s - 86400, "zero": 0}[ltt_choice]
        seg = tok & 0xFF
        # Prices walk, so that a day's range and a candle's prices are comparable.
        if tok not in prices or draw(st.integers(0, 19)) == 0:
            prices[tok] = draw(st.integers(1, 10**6))
        else:
            prices[tok] = max(1, prices[tok] + draw(st.integers(-300, 300)))
        price = prices[tok]
        day_high = day_low = 0
        if plen != 8:
            high, low = ranges.get((tok, day), (0, 0))
            how = draw(st.sampled_from(RANGE_MOVES))
            if how in ("trade", "above"):
                high = max(high, price) + (draw(st.integers(1, 2000)) if how == "above" else 0)
                low = min(low or price, price)
            elif how == "below":
                high = max(high, price)
                low = max(1, min(low or price, price) - draw(st.integers(1, 2000)))
            ranges[tok, day] = (high, low)
            day_high, day_low = {
                "zero_low": (high, 0),
                "no_trade": (0, 0),
                "wild": (draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))),
            }.get(how, (high, low))
        ticks[i] = (
            recv_ns,
            ets if plen in (32, 184) else 0,
            ltt if plen == 184 else 0,
            tok,
            price,
            c if plen in (44, 184) and seg != 9 else 0,
            day_high,
            day_low,
            plen,
            seg,
            int(plen in (44, 184) and seg != 9),
            int(plen != 8),
        )
    return ticks, tokens


#: The cases of the rule "extremes between snapshots" that :func:`extremes_cases` counts.
EXTREMES_CASES = (
    "first, in the first bucket",  # the date's first tick with a range widens its candle
    "first, not in the first bucket",  # ... and here it does not
    "beyond, accepted",  # a day high/low beyond the date's extremes raises/lowers a candle
    "beyond, late for an interval",  # ... moves the extremes but raises no rejecting candle
    "beyond, accepted by one interval and late for another",
    "day high above the price, not beyond the extremes",  # no raise
    "index packet beyond",
    "zero low",
    "ltp in session",  # no range
    "new date",  # the extremes start afresh
    "earlier date",  # a stale tick of an earlier date
    "pre-open range",  # ignored, though beyond the extremes
    "after-close range",  # likewise
)


def extremes_cases(ticks, tokens, intervals, grace_ns=2 * NS_PER_S):
    """How many ticks of a stream reach each of :data:`EXTREMES_CASES`.

    A plain count, independent of the kernel and the reference, so that a test can check
    that :func:`tick_streams` produces every case the property tests rely on.
    """
    sessions = sessions_of(tokens)
    seen: Counter[str] = Counter()
    state: dict[tuple[int, int], tuple[int, int]] = {}  # (token, day): (high, low or 0)
    latest_day: dict[int, int] = {}  # token: latest date with an in-session range tick
    current: dict[tuple[int, int], int] = {}  # (token, minutes): current bucket start
    for k in ticks:
        tok = int(k["instrument_token"])
        if tok not in sessions:
            continue
        full = k["packet_length"] in (32, 184) and k["exchange_timestamp"]
        t = int(k["exchange_timestamp"]) * NS_PER_S if full else int(k["recv_ns"])
        day = (t + IST_OFFSET_NS) // NS_PER_DAY
        midnight = day * NS_PER_DAY - IST_OFFSET_NS
        open_ns, close_ns = (midnight + s * NS_PER_S for s in sessions[tok])
        price, high, low = int(k["last_price"]), int(k["day_high"]), int(k["day_low"])
        known = state.get((tok, day))
        beyond = known is None or high > known[0] or (low != 0 and (not known[1] or low < known[1]))
        if not (open_ns <= t < close_ns):
            if k["has_day_range"] and beyond:
                seen["pre-open range" if t < open_ns else "after-close range"] += 1
            continue
        accepted, first_bucket = [], []
        for minutes in intervals:
            length = minutes * NS_PER_MIN
            start = open_ns + (t - open_ns) // length * length
            end = min(start + length, close_ns)
            late = int(k["recv_ns"]) >= end + grace_ns or start < current.get((tok, minutes), start)
            if not late:
                current[tok, minutes] = start
                accepted.append(minutes)
                first_bucket.append(start == open_ns)
        if not k["has_day_range"]:
            seen["ltp in session"] += 1
            continue
        if low == 0 and high != 0:
            seen["zero low"] += 1
        if day < latest_day.get(tok, day):
            seen["earlier date"] += 1
        elif day > latest_day.get(tok, day):
            seen["new date"] += 1
        latest_day[tok] = max(day, latest_day.get(tok, day))
        wider = high > price or 0 < low < price
        if known is None:
            state[tok, day] = (high, low)
            if wider and any(first_bucket):
                seen["first, in the first bucket"] += 1
            if wider and not all(first_bucket):
                seen["first, not in the first bucket"] += 1
            continue
        state[tok, day] = (max(high, known[0]), min(low, known[1] or low) if low else known[1])
        if not beyond:
            if high > price:
                seen["day high above the price, not beyond the extremes"] += 1
            continue
        if k["packet_length"] in (28, 32):
            seen["index packet beyond"] += 1
        if accepted:
            seen["beyond, accepted"] += 1
        if len(accepted) < len(intervals):
            seen["beyond, late for an interval"] += 1
            if accepted:
                seen["beyond, accepted by one interval and late for another"] += 1
    return seen
