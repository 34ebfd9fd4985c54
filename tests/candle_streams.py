"""Hypothesis strategies for tick streams that exercise every candle rule of SPEC section 4."""

import numpy as np
from hypothesis import strategies as st

from feedengine.dtypes import KTICK_DTYPE
from feedengine.sessions import DEFAULT_SESSIONS, NS_PER_S, exchange_for

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


def sessions_of(tokens: list[int]) -> dict[int, tuple[int, int]]:
    out = {}
    for tok in tokens:
        s = DEFAULT_SESSIONS[exchange_for(tok & 0xFF)]
        out[tok] = (s.open_s, s.close_s)
    return out


@st.composite
def tick_streams(draw, max_instruments=6, max_ticks=120):
    """``(ticks KTICK array, tokens, unknown tokens)``; recv_ns non-decreasing."""
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
    ticks = np.zeros(n, KTICK_DTYPE)
    day = 0
    clock_s = DAY0_S + draw(st.sampled_from(ANCHORS)) - 30
    cum = dict.fromkeys(tokens, 0)
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
                DAY0_S + day * 86400 + draw(st.sampled_from(ANCHORS)) + draw(st.integers(-3, 3))
            )
            clock_s = max(clock_s, target)
        else:
            day += 1
            clock_s = max(clock_s, DAY0_S + day * 86400 + draw(st.sampled_from(ANCHORS)))
        day = (clock_s - DAY0_S) // 86400
        recv_ns = clock_s * NS_PER_S + draw(st.integers(0, NS_PER_S - 1))
        tok = draw(st.sampled_from([*tokens, 0x7FFF01]))  # sometimes an unknown token
        plen = draw(st.sampled_from([8, 28, 32, 44, 184, 184]))
        lag = draw(st.sampled_from([0, 0, 1, 2, 3, 5, 200]))
        ets = 0 if draw(st.integers(0, 9)) == 0 else clock_s - lag
        c = cum.get(tok, 0)
        move = draw(st.sampled_from(["up", "up", "up", "same", "reset"]))
        c = 0 if move == "reset" else c + (draw(st.integers(1, 5000)) if move == "up" else 0)
        cum[tok] = c
        ltt_choice = draw(st.sampled_from(["today", "yesterday", "zero"]))
        ltt = {"today": clock_s - 1, "yesterday": clock_s - 86400, "zero": 0}[ltt_choice]
        seg = tok & 0xFF
        ticks[i] = (
            recv_ns,
            ets if plen in (32, 184) else 0,
            ltt if plen == 184 else 0,
            tok,
            draw(st.integers(1, 10**6)),
            c if plen in (44, 184) and seg != 9 else 0,
            0,
            0,
            plen,
            seg,
            int(plen in (44, 184) and seg != 9),
            int(plen != 8),
        )
    return ticks, tokens
