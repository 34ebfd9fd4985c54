"""The compiled candle kernel against the reference aggregator and SPEC section 4 by hand."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from feedengine import _candles
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.dtypes import CANDLE_ROW_DTYPE, SLOT_DTYPE
from feedengine.sessions import NS_PER_S
from tests.candle_streams import (
    DAY0_S,
    EXTREMES_CASES,
    FIRST_BUCKET_ANCHORS,
    PACKET_DTYPE,
    extremes_cases,
    neutral,
    reference,
    sessions_of,
    tick_streams,
)

INTERVALS = [1, 3, 5, 15, 60, 75]
# Intervals whose first buckets differ, for the extremes' "session's first bucket" edge.
EXTREMES_INTERVALS = [1, 5, 15]


def run_kernel(
    ticks,
    sessions,
    intervals,
    *,
    ring=64,
    batch=None,
    grace_ns=2 * NS_PER_S,
    kernel=None,
    finalize=True,
):
    """Feed ticks (``PACKET_DTYPE``) in batches, draining a small ring as it fills; return
    (kernel, rows)."""
    tokens = list(sessions)
    ticks = neutral(ticks, tokens)
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
    while finalize and not kernel.finalize():
        drain()
    drain()
    return kernel, rows


def final_rows(kernel, rows):
    """Latest row per (token, minutes, bucket), as the database would keep them."""
    tokens = kernel.slots["key"]
    latest = {}
    for start, volume, slot, o, h, lo, c, interval, final in rows:
        assert final == 1
        key = (int(tokens[slot]), kernel.intervals[interval], start)
        latest[key] = (o, h, lo, c, volume)
    return latest


def reference_rows(result):
    return {(tok, m, s): (o, h, lo, c, v) for tok, m, s, o, h, lo, c, v in result.rows}


def assert_kernel_equals_reference(ticks, tokens, intervals, batch=None, ring=64):
    sessions = sessions_of(tokens)
    kernel, rows = run_kernel(ticks, sessions, intervals, ring=ring, batch=batch)
    want = reference(ticks, sessions, intervals)
    assert final_rows(kernel, rows) == reference_rows(want)
    assert list(kernel.late) == [want.late[m] for m in intervals]
    counters = dict(zip(_candles.COUNTER_NAMES, kernel.counters.tolist(), strict=True))
    assert (counters["preopen"], counters["after_close"], counters["unknown"]) == (
        want.preopen,
        want.after_close,
        want.unknown,
    )


@settings(max_examples=300, deadline=None)
@given(tick_streams(), st.sampled_from([None, 1, 7]), st.sampled_from([8, 64, 4096]))
def test_kernel_equals_reference(stream, batch, ring):
    assert_kernel_equals_reference(*stream, INTERVALS, batch, ring)


@settings(max_examples=300, deadline=None)
@given(tick_streams(max_instruments=2, max_ticks=60, anchors=FIRST_BUCKET_ANCHORS))
def test_kernel_equals_reference_around_the_first_buckets(stream):
    assert_kernel_equals_reference(*stream, EXTREMES_INTERVALS)


@settings(max_examples=150, deadline=None)
@given(tick_streams(max_ticks=80), st.data())
def test_a_checkpoint_anywhere_resumes_the_same_candles(stream, data):
    ticks, tokens = stream
    sessions = sessions_of(tokens)
    whole = final_rows(*run_kernel(ticks, sessions, EXTREMES_INTERVALS))
    cut = data.draw(st.integers(0, len(ticks)))
    first, rows = run_kernel(ticks[:cut], sessions, EXTREMES_INTERVALS, finalize=False)
    resumed = _candles.CandleKernel(
        list(sessions),
        [s[0] for s in sessions.values()],
        [s[1] for s in sessions.values()],
        EXTREMES_INTERVALS,
    )
    resumed.restore(first.state())
    _, more = run_kernel(ticks[cut:], sessions, EXTREMES_INTERVALS, kernel=resumed)
    assert final_rows(resumed, rows + more) == whole


def examples_per_case(strategy, intervals, n=200):
    """In how many of ``n`` examples of ``strategy`` each case of the extremes rule occurs."""
    examples: Counter[str] = Counter()

    @settings(
        max_examples=n, deadline=None, database=None, derandomize=True, phases=[Phase.generate]
    )
    @given(strategy)
    def count(stream):
        examples.update(extremes_cases(*stream, intervals).keys())

    count()
    return examples


def test_streams_reach_every_edge_of_the_extremes_rule():
    """The streams above produce each case the rule distinguishes, in many examples."""
    examples = examples_per_case(tick_streams(), INTERVALS)
    assert {case: examples[case] for case in EXTREMES_CASES if examples[case] < 10} == {}
    around_the_open = tick_streams(max_instruments=2, max_ticks=60, anchors=FIRST_BUCKET_ANCHORS)
    examples = examples_per_case(around_the_open, EXTREMES_INTERVALS)
    rare = {case: examples[case] for case in EXTREMES_CASES if examples[case] < 10}
    assert set(rare) <= {"after-close range"}, rare  # no anchor near the close


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
    arr = np.array(ticks, PACKET_DTYPE)
    sessions = sessions_of(list(tokens))
    kernel, rows = run_kernel(arr, sessions, list(intervals))
    got = final_rows(kernel, rows)
    assert got == reference_rows(reference(arr, sessions, list(intervals)))
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
    k.process(neutral(np.array([tick(at(9, 15, 5), 1)], PACKET_DTYPE), [INFY, NIFTY]))
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
        [tick(at(9, 15 + m), 1 + m, tok=t) for m in range(3) for t in tokens], PACKET_DTYPE
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
    assert k2.process(neutral(ticks, tokens)) < len(ticks)  # stops when the ring is full
    assert k2.pending == 16


def test_snapshot_open_and_restore_resume_same_rows():
    ticks = np.array(
        [tick(at(9, 15, s), 100 + s, vol=10 * s) for s in range(0, 120, 7)], PACKET_DTYPE
    )
    sessions = sessions_of([INFY])
    whole = final_rows(*run_kernel(ticks, sessions, [1, 5]))
    k1 = _candles.CandleKernel([INFY], [sessions[INFY][0]], [sessions[INFY][1]], [1, 5])
    assert k1.process(neutral(ticks[:5], [INFY])) == 5
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
        PACKET_DTYPE,
    )
    ticks = neutral(ticks, [a, b, c, d])
    # At 09:20:01 the sweep closes three 1-minute candles (3 of 4 slots); the last tick then
    # closes two candles of A, which must wait for the flusher.
    assert k.process(ticks) == 4 and k.pending == 3
    out = np.zeros(8, CANDLE_ROW_DTYPE)
    assert k.drain(out) == 3
    assert k.process(ticks, 4) == 5 and k.pending == 2


# --- extremes between snapshots (SPEC section 4) ------------------------------------------


def test_day_high_and_low_between_snapshots_widen_the_candle():
    got, _ = candles(
        [
            tick(at(9, 20, 5), 100, high=104, low=97),  # the date's first; not the first bucket
            tick(at(9, 21, 5), 101, high=106, low=97),  # a trade at 106 since the last snapshot
            tick(at(9, 21, 30), 102, high=106, low=95),  # ... and one at 95
            tick(at(9, 22, 5), 103, high=106, low=95),  # nothing beyond the day's extremes
        ]
    )
    assert got == {
        (1, hm(9, 20)): (100, 100, 100, 100, 0),
        (1, hm(9, 21)): (101, 106, 95, 102, 0),
        (1, hm(9, 22)): (103, 103, 103, 103, 0),
    }


def test_first_tick_of_the_date_extends_only_the_sessions_first_bucket():
    # 09:16 is the second 1-minute bucket but inside the first 15-minute one.
    got, _ = candles([tick(at(9, 16, 5), 100, high=108, low=93)], intervals=(1, 15))
    assert got == {(1, hm(9, 16)): (100,) * 4 + (0,), (15, hm(9, 15)): (100, 108, 93, 100, 0)}
    got, _ = candles([tick(at(9, 15, 30), 100, high=108, low=93)], intervals=(1, 15))
    assert got == {(1, hm(9, 15)): (100, 108, 93, 100, 0), (15, hm(9, 15)): (100, 108, 93, 100, 0)}


def test_late_tick_moves_the_extremes_but_raises_no_candle_that_rejects_it():
    ticks = [
        tick(at(9, 31, 5), 100, high=101, low=99),
        # Stamped 09:30:50: late for the 1-minute candles (09:31 is current), accepted by the
        # 5-minute 09:30 candle, which rises to the day high.
        tick(at(9, 31, 6), 104, ets=at(9, 30, 50), high=110, low=99),
        tick(at(9, 31, 10), 102, high=110, low=99),  # 110 is already known: no raise
        # Received after its 5-minute bucket's end + grace: late for every interval.
        tick(at(9, 35, 10), 105, ets=at(9, 34, 59), high=130, low=99),
        tick(at(9, 36, 5), 106, high=130, low=99),  # 130 is already known: no raise
    ]
    got, k = candles(ticks, intervals=(1, 5))
    assert got == {
        (1, hm(9, 31)): (100, 102, 100, 102, 0),
        (1, hm(9, 36)): (106,) * 4 + (0,),
        (5, hm(9, 30)): (100, 110, 100, 102, 0),
        (5, hm(9, 35)): (106,) * 4 + (0,),
    }
    assert list(k.late) == [2, 1]
    # Nor is the 5-minute 09:30 bar, written already, widened in the state a checkpoint saves.
    packets = np.array(ticks[:4], PACKET_DTYPE)
    k, _ = run_kernel(packets, sessions_of([INFY]), [1, 5], finalize=False)
    assert k.state()["bars"][1]["high"] == 110


def test_a_new_ist_date_starts_the_extremes_afresh():
    day = 86400
    got, _ = candles(
        [
            tick(at(9, 20), 100, high=200, low=50),
            tick(at(9, 21), 100, high=210, low=50),
            tick(at(9, 20) + day, 100, high=150, low=90),  # the new date's first
            tick(at(9, 21) + day, 100, high=160, low=90),  # below yesterday's 210, above 150
        ]
    )
    assert got[(1, hm(9, 21))][:4] == (100, 210, 100, 100)
    assert got[(1, hm(9, 20) + day)][:4] == (100, 100, 100, 100)
    assert got[(1, hm(9, 21) + day)][:4] == (100, 160, 100, 100)


def test_index_packets_carry_the_day_range():
    got, _ = candles(
        [
            tick(at(9, 20, 1), 21700, tok=NIFTY, plen=32, high=21750, low=21650),
            tick(at(9, 21, 1), 21710, tok=NIFTY, plen=28, high=21800, low=21600),
        ],
        tokens=(NIFTY,),
    )
    assert got[(1, hm(9, 21))] == (21710, 21800, 21600, 21710, 0)


def test_a_zero_day_low_is_ignored():
    got, _ = candles(
        [
            tick(at(9, 20), 100, high=101, low=0),  # the date's first, no low yet
            tick(at(9, 21), 100, high=101, low=0),
            tick(at(9, 22), 100, high=101, low=97),  # the first low: below none
            tick(at(9, 23), 100, high=101, low=0),
            tick(at(9, 24), 100, high=101, low=98),  # not below 97
        ]
    )
    assert [got[(1, hm(9, m))][2] for m in range(20, 25)] == [100, 100, 97, 100, 100]


def test_ltp_packets_carry_no_day_range():
    rows = np.array(
        [tick(at(9, 15, 10), 100, plen=8), tick(at(9, 16, 10), 101, high=110, low=90)],
        PACKET_DTYPE,
    )
    rows[0]["day_high"], rows[0]["day_low"] = 500, 1  # whatever the row holds, unflagged
    got, _ = candles(rows.tolist())
    # The ltp tick is not the date's first with a range: the 09:16 tick is, outside the
    # first bucket.
    assert got == {(1, hm(9, 15)): (100,) * 4 + (0,), (1, hm(9, 16)): (101,) * 4 + (0,)}


def test_pre_open_and_after_close_ticks_do_not_count():
    got, _ = candles(
        [
            tick(at(9, 10), 100, high=130, low=70),  # pre-open: not the date's first
            tick(at(9, 15, 5), 100, high=105, low=95),  # the first, in the first bucket
            tick(at(9, 16, 5), 100, high=130, low=70),  # beyond 105/95: the pre-open did not count
            tick(at(15, 29, 30), 100, high=130, low=70),
            tick(at(15, 30, 1), 100, high=150, low=60),  # after the close
        ]
    )
    assert got == {
        (1, hm(9, 15)): (100, 105, 95, 100, 0),
        (1, hm(9, 16)): (100, 130, 70, 100, 0),
        (1, hm(15, 29)): (100,) * 4 + (0,),
    }


def test_checkpoint_carries_the_extremes():
    sessions = sessions_of([INFY])
    ticks = np.array(
        [
            tick(at(9, 20), 100, high=104, low=97),
            tick(at(9, 21), 100, high=106, low=95),
            tick(at(9, 22), 100, high=106, low=95),
        ],
        PACKET_DTYPE,
    )
    k1 = _candles.CandleKernel([INFY], [sessions[INFY][0]], [sessions[INFY][1]], [1])
    k1.process(neutral(ticks[:2], [INFY]))
    k1.drain(np.zeros(8, CANDLE_ROW_DTYPE))
    state = k1.state()
    k2 = _candles.CandleKernel([INFY], [sessions[INFY][0]], [sessions[INFY][1]], [1])
    k2.restore(state)
    _, rows = run_kernel(ticks[2:], sessions, [1], kernel=k2)
    # 106/95 were known before the stop: the 09:22 candle is not widened.
    assert final_rows(k2, rows)[(INFY, 1, at(9, 22) * NS_PER_S)] == (100,) * 4 + (0,)


def test_checkpoint_of_an_earlier_version_loads_with_empty_extremes(tmp_path):
    engine = CandleEngine([KiteInstrument(INFY, "INFY", "NSE")], CandleConfig(intervals=(1,)))
    engine.process(
        neutral(np.array([tick(at(9, 20), 100, high=104, low=97)], PACKET_DTYPE), [INFY]),
        pytest.fail,
    )
    engine.save_checkpoint(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as data:
        state = {k: data[k] for k in data.files}
    old_fields = [
        f for f in SLOT_DTYPE.names if f not in ("extremes_day_ns", "day_high", "day_low")
    ]
    state["slots"] = np.array(
        state["slots"][old_fields].tolist(), [(f, SLOT_DTYPE[f]) for f in old_fields]
    )
    np.savez(tmp_path / "old.npz", **state)
    again = CandleEngine([KiteInstrument(INFY, "INFY", "NSE")], CandleConfig(intervals=(1,)))
    assert again.load_checkpoint(tmp_path / "old.npz", accept=lambda position: True)
    assert again.kernel.slots["extremes_day_ns"][0] == np.iinfo(np.int64).min
    # After the restart the next tick with a range is the date's first: outside the first
    # bucket it widens nothing, as 104/97 were never seen.
    _, rows = run_kernel(
        np.array([tick(at(9, 21), 100, high=108, low=90)], PACKET_DTYPE),
        sessions_of([INFY]),
        [1],
        kernel=again.kernel,
    )
    assert final_rows(again.kernel, rows)[(INFY, 1, at(9, 21) * NS_PER_S)] == (100,) * 4 + (0,)
