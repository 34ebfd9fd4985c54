"""The compiled candle kernel against the reference aggregator and SPEC section 4 by hand."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedengine import _candles
from feedengine.dtypes import CANDLE_ROW_DTYPE, KTICK_DTYPE
from feedengine.reference import candles as ref
from feedengine.sessions import NS_PER_S
from tests.candle_streams import DAY0_S, sessions_of, tick_streams

INTERVALS = [1, 3, 5, 15, 60, 75]


def run_kernel(
    ticks, sessions, intervals, *, ring=64, batch=None, grace_ns=2 * NS_PER_S, kernel=None
):
    """Feed ticks in batches, draining a small ring as it fills; return (kernel, rows)."""
    tokens = list(sessions)
    if kernel is None:
        kernel = _candles.CandleKernel(
            tokens,
            [sessions[t][0] for t in tokens],
            [sessions[t][1] for t in tokens],
            intervals,
            grace_ns=grace_ns,
            ring_capacity=ring,
        )
    out = np.zeros(kernel.capacity, CANDLE_ROW_DTYPE)
    rows = []

    def drain():
        n = kernel.drain(out)
        rows.extend(out[:n].tolist())

    batch = batch or max(len(ticks), 1)
    for lo in range(0, len(ticks), batch):
        hi = min(lo + batch, len(ticks))
        i = lo
        while i < hi:
            i = kernel.process(ticks, i, hi)
            drain()
    while not kernel.finalize():
        drain()
    drain()
    return kernel, rows


def final_rows(kernel, rows):
    """Latest row per (token, minutes, bucket), as the database would keep them."""
    tokens = kernel.slots["token"]
    latest = {}
    for start, volume, slot, o, h, lo, c, interval, final in rows:
        assert final == 1
        key = (int(tokens[slot]), kernel.intervals[interval], start)
        latest[key] = (o, h, lo, c, volume)
    return latest


def reference_rows(result):
    return {(tok, m, s): (o, h, lo, c, v) for tok, m, s, o, h, lo, c, v in result.rows}


@settings(max_examples=300, deadline=None)
@given(tick_streams(), st.sampled_from([None, 1, 7]), st.sampled_from([8, 64, 4096]))
def test_kernel_equals_reference(stream, batch, ring):
    ticks, tokens = stream
    sessions = sessions_of(tokens)
    kernel, rows = run_kernel(ticks, sessions, INTERVALS, ring=ring, batch=batch)
    want = ref.aggregate(ticks, sessions, INTERVALS)
    assert final_rows(kernel, rows) == reference_rows(want)
    assert list(kernel.late) == [want.late[m] for m in INTERVALS]
    counters = dict(zip(_candles.COUNTER_NAMES, kernel.counters.tolist(), strict=True))
    assert (counters["preopen"], counters["after_close"], counters["unknown"]) == (
        want.preopen,
        want.after_close,
        want.unknown,
    )


@settings(max_examples=100, deadline=None)
@given(tick_streams(max_ticks=60))
def test_each_candle_emitted_once_when_recv_ordered(stream):
    ticks, tokens = stream
    _, rows = run_kernel(ticks, sessions_of(tokens), INTERVALS, ring=8)
    keys = [(r[2], r[7], r[0]) for r in rows]
    assert len(keys) == len(set(keys))


# --- hand-written cases, one rule each --------------------------------------------------

INFY = 408065  # NSE, segment 1
NIFTY = 256265  # index, segment 9
T0 = DAY0_S  # IST midnight of 2024-01-15


def at(hh, mm, ss=0):
    return T0 + hh * 3600 + mm * 60 + ss


def tick(
    recv_s, price, *, tok=INFY, plen=184, ets=None, vol=0, ltt=0, recv_extra_ns=0, high=0, low=0
):
    seg = tok & 0xFF
    has_vol = int(plen in (44, 184) and seg != 9)
    has_range = int(plen != 8)
    ets = recv_s if ets is None else ets
    return (
        recv_s * NS_PER_S + recv_extra_ns,
        ets if plen in (32, 184) else 0,
        ltt if plen == 184 else 0,
        tok,
        price,
        vol if has_vol else 0,
        high if has_range else 0,
        low if has_range else 0,
        plen,
        seg,
        has_vol,
        has_range,
    )


def candles(ticks, intervals=(1,), tokens=(INFY,)):
    arr = np.array(ticks, KTICK_DTYPE)
    sessions = sessions_of(list(tokens))
    kernel, rows = run_kernel(arr, sessions, list(intervals))
    got = final_rows(kernel, rows)
    assert got == reference_rows(ref.aggregate(arr, sessions, list(intervals)))
    return {(m, (s // NS_PER_S - T0)): v for (_, m, s), v in sorted(got.items())}, kernel


def hm(hh, mm):
    return hh * 3600 + mm * 60


def test_exchange_timestamp_is_event_time_and_recv_time_otherwise():
    # Received at 09:16:01 but stamped 09:15:59 by the exchange: belongs to 09:15.
    got, _ = candles([tick(at(9, 16, 1), 100, ets=at(9, 15, 59)), tick(at(9, 16, 1), 200, plen=44)])
    assert got == {(1, hm(9, 15)): (100, 100, 100, 100, 0), (1, hm(9, 16)): (200,) * 4 + (0,)}


def test_sixty_minute_buckets_anchor_at_session_open_and_last_is_short():
    got, _ = candles(
        [
            tick(at(9, 15), 1),
            tick(at(10, 14), 2),
            tick(at(10, 15), 3),
            tick(at(15, 20), 4),
            tick(at(15, 29, 59), 5),
        ],
        intervals=(60,),
    )
    assert sorted(got) == [(60, hm(9, 15)), (60, hm(10, 15)), (60, hm(15, 15))]
    assert got[(60, hm(15, 15))][:4] == (4, 5, 4, 5)


def test_seventy_five_minute_buckets():
    got, _ = candles(
        [tick(at(9, 15), 1), tick(at(10, 29), 2), tick(at(10, 30), 3), tick(at(15, 0), 4)],
        intervals=(75,),
    )
    assert sorted(got) == [(75, hm(9, 15)), (75, hm(10, 30)), (75, hm(14, 15))]


def test_preopen_price_opens_first_candle_and_volume_baseline():
    got, k = candles(
        [
            tick(at(9, 7, 30), 1500, vol=1000, ltt=at(9, 7, 10)),  # auction matched today
            tick(at(9, 15, 1), 1510, vol=1400),
            tick(at(9, 15, 30), 1490, vol=1500),
        ]
    )
    assert got == {(1, hm(9, 15)): (1500, 1510, 1490, 1490, 500)}
    assert k.counters[_candles.COUNTER_NAMES.index("preopen")] == 1


def test_preopen_price_ignored_when_last_trade_is_from_yesterday():
    got, _ = candles(
        [tick(at(9, 7), 1500, vol=10, ltt=at(9, 7) - 86400), tick(at(9, 15, 1), 1510, vol=20)]
    )
    assert got == {(1, hm(9, 15)): (1510, 1510, 1510, 1510, 10)}


def test_after_close_makes_no_candle_and_becomes_baseline():
    got, k = candles(
        [
            tick(at(15, 29), 10, vol=100),
            tick(at(15, 30), 11, vol=150),
            tick(at(15, 45), 12, vol=170),
            tick(at(9, 15) + 86400, 13, vol=50),
        ]
    )
    # Next day: cumulative volume restarted below the baseline, so the baseline resets.
    assert got == {(1, hm(15, 29)): (10, 10, 10, 10, 0), (1, hm(9, 15) + 86400): (13,) * 4 + (0,)}
    assert k.counters[_candles.COUNTER_NAMES.index("after_close")] == 2


def test_volume_is_delta_of_cumulative_and_ltp_has_none():
    got, _ = candles(
        [
            tick(at(9, 15), 1, vol=100),
            tick(at(9, 15, 30), 2, vol=130),
            tick(at(9, 16), 3, plen=8),
            tick(at(9, 16, 10), 4, vol=180),
            tick(at(9, 16, 20), 5, tok=NIFTY, plen=32),
        ],
        tokens=(INFY, NIFTY),
    )
    assert got[(1, hm(9, 15))][4] == 30 and got[(1, hm(9, 16))][4] == 50


def test_late_tick_dropped_counted_and_volume_moves_on():
    got, k = candles(
        [
            tick(at(9, 15, 10), 1, vol=100),
            tick(at(9, 16, 5), 2, vol=150),
            tick(at(9, 16, 6), 99, ets=at(9, 15, 50), vol=170),  # 09:15 bucket, received late
            tick(at(9, 16, 7), 3, vol=200),
        ]
    )
    assert got == {(1, hm(9, 15)): (1, 1, 1, 1, 0), (1, hm(9, 16)): (2, 3, 2, 3, 100)}
    assert list(k.late) == [1]


def test_tick_within_grace_still_counts():
    got, _ = candles(
        [tick(at(9, 15, 10), 1, vol=0), tick(at(9, 16, 1), 7, ets=at(9, 15, 59), vol=10)]
    )
    assert got == {(1, hm(9, 15)): (1, 7, 1, 7, 10)}


def test_clock_closes_idle_candles_at_end_plus_grace():
    sessions = sessions_of([INFY, NIFTY])
    k = _candles.CandleKernel(
        [INFY, NIFTY], [s[0] for s in sessions.values()], [s[1] for s in sessions.values()], [1, 5]
    )
    k.process(np.array([tick(at(9, 15, 5), 1)], KTICK_DTYPE))
    assert k.pending == 0
    assert k.advance_clock(at(9, 16, 1) * NS_PER_S + 999_999_999)
    assert k.pending == 0
    assert k.advance_clock(at(9, 16, 2) * NS_PER_S)
    assert k.pending == 1  # the 1-minute candle; the 5-minute one is still open
    out = np.zeros(4, CANDLE_ROW_DTYPE)
    assert k.drain(out) == 1 and out[0]["interval"] == 0 and out[0]["final"] == 1


def test_unknown_tokens_are_counted():
    _, k = candles([tick(at(9, 15), 1, tok=999 << 8 | 1)])
    assert k.counters[_candles.COUNTER_NAMES.index("unknown")] == 1


def test_ring_back_pressure_never_overwrites():
    tokens = [(i << 8) | 1 for i in range(1, 200)]
    sessions = sessions_of(tokens)
    ticks = np.array(
        [tick(at(9, 15 + m), 1 + m, tok=t) for m in range(3) for t in tokens], KTICK_DTYPE
    )
    _, rows = run_kernel(ticks, sessions, [1], ring=16, batch=None)
    assert len(rows) == 3 * len(tokens)
    k2 = _candles.CandleKernel(
        tokens,
        [s[0] for s in sessions.values()],
        [s[1] for s in sessions.values()],
        [1],
        ring_capacity=16,
    )
    assert k2.process(ticks) < len(ticks)  # stops when the ring is full, waiting
    assert k2.pending == 16


def test_snapshot_open_and_restore_resume_same_rows():
    ticks = np.array(
        [tick(at(9, 15, s), 100 + s, vol=10 * s) for s in range(0, 120, 7)], KTICK_DTYPE
    )
    sessions = sessions_of([INFY])
    whole = final_rows(*run_kernel(ticks, sessions, [1, 5]))
    k1 = _candles.CandleKernel([INFY], [sessions[INFY][0]], [sessions[INFY][1]], [1, 5])
    assert k1.process(ticks[:5]) == 5
    assert k1.snapshot_open() == 2
    snap = np.zeros(8, CANDLE_ROW_DTYPE)
    n = k1.drain(snap)
    assert n == 2 and not snap[:n]["final"].any()
    state = k1.state()
    k2 = _candles.CandleKernel(
        [INFY, 77 << 8 | 1], [sessions[INFY][0]] * 2, [sessions[INFY][1]] * 2, [1, 5]
    )
    k2.restore(state)
    _, rows = run_kernel(
        ticks[5:], {INFY: sessions[INFY], 77 << 8 | 1: sessions[INFY]}, [1, 5], kernel=k2
    )
    assert final_rows(k2, rows) == whole


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="distinct"):
        _candles.CandleKernel([1, 1], [0, 0], [10, 10], [1])
    with pytest.raises(ValueError, match="intervals"):
        _candles.CandleKernel([1], [0], [10], [0])
    with pytest.raises(ValueError, match="close after"):
        _candles.CandleKernel([1], [10], [10], [1])


def test_ring_never_overwritten_when_the_clock_sweep_fills_it():
    # Found by hypothesis: the clock sweep used ring space the next tick then overran.
    a, b, c, d = ((i << 8) | 1 for i in range(1, 5))
    sessions = sessions_of([a, b, c, d])
    k = _candles.CandleKernel(
        list(sessions),
        [s[0] for s in sessions.values()],
        [s[1] for s in sessions.values()],
        [1, 5],
        ring_capacity=4,
    )
    assert k.capacity == 4
    ticks = np.array(
        [tick(at(9, 18), 1, tok=t) for t in (b, c, d)]
        + [tick(at(9, 19), 2, tok=a), tick(at(9, 20, 1), 3, tok=a)],
        KTICK_DTYPE,
    )
    # At 09:20:01 the sweep closes three 1-minute candles (3 of 4 slots); the last tick then
    # closes two candles of A, which must wait for the flusher.
    assert k.process(ticks) == 4 and k.pending == 3
    out = np.zeros(8, CANDLE_ROW_DTYPE)
    assert k.drain(out) == 3
    assert k.process(ticks, 4) == 5 and k.pending == 2
