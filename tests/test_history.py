"""Kite's historical candles (feedengine.brokers.kite.history) against the local Kite server: real
sockets, kiteconnect's own client, never the internet."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from datetime import time as dtime

import numpy as np
import orjson
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from feedengine.brokers.kite import wire
from feedengine.brokers.kite.history import (
    HISTORY_DTYPE,
    KITE_INTERVALS,
    MAX_DAYS_PER_REQUEST,
    RATE_LIMIT,
    RATE_PERIOD_S,
    KiteHistory,
    RequestLimiter,
    aggregate,
    day_chunks,
    price_units,
)
from feedengine.brokers.kite.instruments import KITE_API_ROOT, KiteInstrument
from feedengine.brokers.kite.mockserver import MockKite, instrument_rows
from feedengine.brokers.kite.segments import Segment
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.dtypes import CANDLE_ROW_DTYPE, KTICK_DTYPE
from feedengine.errors import AuthError, HistoryError
from feedengine.sessions import DEFAULT_SESSIONS, IST, NS_PER_MIN, NS_PER_S
from feedengine.simulator import SimConfig
from feedengine.simulator import instruments as sim_instruments
from feedengine.simulator import messages as sim_messages
from feedengine.sink import price_text

from .test_wire import FIXTURES

KEY, TOKEN = "k", "t"
#: Trading days spread over more than 120 days: minute requests split in three.
DAYS = (date(2024, 1, 15), date(2024, 3, 20), date(2024, 5, 21))
#: A range around them that starts and ends on a weekend (no trading: no rows).
FIRST, LAST = date(2024, 1, 13), date(2024, 5, 26)
#: Non-native intervals: 75 fits an NSE session five times, 7 leaves a shorter last bucket.
BUILT = (2, 7, 75)
#: Instruments of every segment with its own divisor (2, 7 and 4 decimals) and an index.
SYMBOLS = (
    ("NSE", "RELIANCE"),
    ("INDICES", "NIFTY 50"),
    ("CDS", "USDINR24JANFUT"),
    ("NCO", "GOLDPETAL24JANFUT"),
)
#: Waiting on a future or a condition: a liveness bound, not a timing.
DEADLINE_S = 120


def sim_config(day, **overrides):
    base = {
        "symbols": SYMBOLS,
        "ticks": 12_000,
        "date": day,
        "start": dtime(9, 0),
        "end": dtime(17, 30),
        "seed": day.toordinal(),
    }
    return SimConfig(**(base | overrides))


@pytest.fixture(scope="module")
def market():
    """(messages, instruments) of three simulated days."""
    messages = [m for day in DAYS for m in sim_messages(sim_config(day))]
    return messages, instrument_rows(sim_instruments(sim_config(DAYS[0])))


@pytest.fixture(scope="module")
def instruments(market):
    by_segment = {}
    for row in market[1]:
        inst = KiteInstrument.from_dict(row)
        by_segment.setdefault(Segment(inst.segment).name, inst)
    return by_segment


def engine_candles(rows, messages, intervals):
    """{(token, minutes): HISTORY_DTYPE rows}: the engine's own candles of the stream, with
    the default grace (the simulator sends no late tick)."""
    engine = CandleEngine(
        [KiteInstrument.from_dict(r) for r in rows], CandleConfig(intervals=tuple(intervals))
    )
    ring = np.empty(1 << 16, CANDLE_ROW_DTYPE)
    drained = []

    def drain():
        while n := engine.kernel.drain(ring):
            drained.append(ring[:n].copy())

    ticks = np.empty(1 << 16, KTICK_DTYPE)
    for recv_ns, message in messages:
        n, _ = wire.decode_kernel_into(message, recv_ns, ticks, 0, engine.slot_table)
        engine.process(ticks[:n], drain)
    engine.finalize(drain)
    drain()
    assert not any(v for k, v in engine.counters().items() if k.startswith("late_"))
    out = {}
    allrows = np.concatenate(drained)
    for slot, inst in enumerate(engine.instruments):
        for k, minutes in enumerate(intervals):
            mine = allrows[(allrows["slot"] == slot) & (allrows["interval"] == k)]
            got = np.empty(len(mine), HISTORY_DTYPE)
            for name in HISTORY_DTYPE.names:
                got[name] = mine[name]
            out[inst.instrument_token, minutes] = np.sort(got, order="bucket_start_ns")
    return out


@pytest.fixture(scope="module")
def expected(market):
    messages, rows = market
    return engine_candles(rows, messages, (*KITE_INTERVALS, *BUILT))


@pytest.fixture(scope="module")
def past_market(market):
    """A past market: the candles of the whole stream, computed at start."""
    messages, rows = market
    server = MockKite(
        lambda: iter(messages), rows, api_key=KEY, access_token=TOKEN, history="day"
    ).start()
    yield server
    server.stop()


@pytest.fixture
def server(past_market):
    """The past market, once a second has passed since the last request it saw (so the
    requests of a test are not refused for the previous test's), its faults cleared after
    the test."""
    assert wait_until(
        lambda: (
            not past_market.history_requests
            or time.monotonic() - past_market.history_requests[-1].at > RATE_PERIOD_S
        )
    )
    yield past_market
    past_market.clear_history_faults()


def wait_until(predicate):
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def history(server, **options):
    return KiteHistory(KEY, TOKEN, server.root, **options)


def on_day(rows, day):
    return rows[[day_of(t) == day for t in rows["bucket_start_ns"].tolist()]]


def requests_since(server, before):
    return list(server.history_requests)[before:]


def most_in_a_second(requests_seen):
    """The most requests that arrived within any one second."""
    times = sorted(r.at for r in requests_seen)
    return max(
        (np.searchsorted(times, t + 1.0, "left") - i for i, t in enumerate(times)), default=0
    )


def day_of(ns):
    return datetime.fromtimestamp(ns // NS_PER_S, IST).date()


# --- the candles -----------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [1, 5, 60, *BUILT])
def test_candles_equal_the_engines_over_a_split_range(server, expected, instruments, minutes):
    """Native intervals as Kite serves them, others built from minute candles; the range
    split by the interval's day limit (minute: 60 days, so three requests for 135 days)."""
    inst = instruments["NSE"]
    before = len(server.history_requests)
    got = history(server).candles(inst, minutes, FIRST, LAST)
    assert got.dtype == HISTORY_DTYPE
    np.testing.assert_array_equal(got, expected[inst.instrument_token, minutes])
    assert {day_of(t) for t in got["bucket_start_ns"].tolist()} == set(DAYS)
    seen = requests_since(server, before)
    interval = KITE_INTERVALS.get(minutes, "minute")
    span = (LAST - FIRST).days + 1
    assert len(seen) == -(-span // MAX_DAYS_PER_REQUEST[interval])
    assert {r.interval for r in seen} == {interval} and {r.status for r in seen} == {200}
    assert seen[0].query["from"] == f"{FIRST} 00:00:00"
    assert seen[-1].query["to"] == f"{LAST} 23:59:59"


def test_built_buckets_are_session_anchored(server, instruments):
    got = history(server).candles(instruments["NSE"], 75, DAYS[0], DAYS[0])
    starts = [datetime.fromtimestamp(t // NS_PER_S, IST).time() for t in got["bucket_start_ns"]]
    assert starts == [dtime(9, 15), dtime(10, 30), dtime(11, 45), dtime(13, 0), dtime(14, 15)]


@pytest.mark.parametrize("segment", ["INDICES", "CDS", "NCO"])
def test_prices_exact_in_every_segment(server, expected, instruments, segment):
    """Indices and NSE quote to 2 decimals, CDS to 7, NCO to 4: every price equals the
    engine's integer units."""
    inst = instruments[segment]
    for minutes in (1, 75):
        got = history(server).candles(inst, minutes, DAYS[1], DAYS[1])
        assert len(got) > 0
        np.testing.assert_array_equal(
            got, on_day(expected[inst.instrument_token, minutes], DAYS[1])
        )


def test_a_range_without_trading_has_no_rows(server, instruments):
    assert (
        len(history(server).candles(instruments["NSE"], 5, date(2024, 1, 20), date(2024, 1, 21)))
        == 0
    )


def test_kite_json_shape(server, instruments):
    """The answer has the shape of Kite's own (the reference capture)."""
    reference = orjson.loads((FIXTURES / "historical_minute.json").read_bytes())
    inst = instruments["CDS"]
    answer = requests.get(
        f"{server.root}/instruments/historical/{inst.instrument_token}/minute",
        params={"from": f"{DAYS[0]} 09:00:00", "to": f"{DAYS[0]} 09:30:00"},
        headers={"Authorization": f"token {KEY}:{TOKEN}", "X-Kite-Version": "3"},
        timeout=DEADLINE_S,
    )
    body = answer.json()
    assert answer.headers["Content-Type"] == "application/json"
    assert body.keys() == reference.keys() and body["data"].keys() == reference["data"].keys()
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00\+0530")
    for ours in (body, reference):
        for row in ours["data"]["candles"]:
            assert len(row) == 6 and stamp.fullmatch(row[0])
            assert all(isinstance(p, int | float) for p in row[1:5]) and isinstance(row[5], int)
    assert body["data"]["candles"][0][0] == f"{DAYS[0]}T09:00:00+0530"
    assert body["data"]["candles"][-1][0] == f"{DAYS[0]}T09:30:00+0530"  # both ends included
    # Whole prices are written without a point, as Kite writes 1705.
    assert b"1705," in orjson.dumps(reference) and not re.search(rb"\.0[,\]]", answer.content)


def test_day_candles_are_stamped_at_midnight(server, expected, instruments):
    inst = instruments["NSE"]
    kite = history(server)._kite()
    rows = kite.historical_data(inst.instrument_token, f"{FIRST}", f"{LAST}", "day")
    assert [r["date"] for r in rows] == [datetime.combine(d, dtime(0), IST) for d in DAYS]
    # The session's candle: its minutes aggregated.
    sessions = aggregate(expected[inst.instrument_token, 1], 24 * 60, DEFAULT_SESSIONS["NSE"])
    assert [(r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in rows] == [
        (
            *(float(price_text(int(c[k]), 100)) for k in ("open", "high", "low", "close")),
            c["volume"],
        )
        for c in sessions
    ]


# --- the rate limit --------------------------------------------------------------------


def test_a_storm_of_callers_shares_one_limiter(server, expected, instruments):
    """Many threads at once: the process's limiter lets at most 3 requests reach Kite in
    any second, so none is refused, and every answer is right."""
    jobs = [
        (inst, minutes, day)
        for inst in instruments.values()
        for minutes in (1, 3, 15)
        for day in DAYS[:2]
    ]
    before = len(server.history_requests)

    def fetch(job):
        inst, minutes, day = job
        return history(server).candles(inst, minutes, day, day)

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(fetch, job) for job in jobs]
        results = [f.result(timeout=DEADLINE_S) for f in futures]
    for (inst, minutes, day), got in zip(jobs, results, strict=True):
        np.testing.assert_array_equal(got, on_day(expected[inst.instrument_token, minutes], day))
    seen = requests_since(server, before)
    assert len(seen) == len(jobs)
    assert {r.status for r in seen} == {200}
    assert most_in_a_second(seen) <= RATE_LIMIT
    spans = [b.at - a.at for a, b in zip(seen, seen[RATE_LIMIT:], strict=False)]
    print(
        f"storm: {len(seen)} requests, {len(seen) / (seen[-1].at - seen[0].at):.2f}/s, "
        f"shortest span of {RATE_LIMIT + 1} arrivals {min(spans):.3f} s"
    )


def test_429s_are_retried(server, expected, instruments):
    """A limiter that lets too much through (another process on the same key, say): Kite
    answers 429, the requests are retried, and every answer is right."""
    loose = RequestLimiter(limit=50, period_s=1.0)
    inst = instruments["NSE"]
    before = len(server.history_requests)

    def fetch(minutes):
        return history(server, limiter=loose, backoff_first_s=0.2, backoff_max_s=1.0).candles(
            inst, minutes, DAYS[0], DAYS[0]
        )

    intervals = [1, 3, 5, 10, 15, 30, 60] * 2
    with ThreadPoolExecutor(len(intervals)) as pool:
        results = [f.result(timeout=DEADLINE_S) for f in [pool.submit(fetch, m) for m in intervals]]
    for minutes, got in zip(intervals, results, strict=True):
        np.testing.assert_array_equal(
            got, on_day(expected[inst.instrument_token, minutes], DAYS[0])
        )
    statuses = [r.status for r in requests_since(server, before)]
    assert statuses.count(429) > 0 and statuses.count(200) == len(intervals)


def test_the_limiter_counts_requests_when_they_go():
    limiter = RequestLimiter(limit=3, period_s=0.3)
    stamps = []
    lock = threading.Lock()

    def take():
        limiter.acquire()
        with lock:
            stamps.append(time.monotonic())

    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(take) for _ in range(16)]:
            f.result(timeout=DEADLINE_S)
    stamps.sort()
    # A stamp is taken after acquire() returns: a thread descheduled in between stamps late
    # and narrows the next window (seen: 0.2986 s on a loaded machine). 20 ms is far below
    # the 100 ms a fourth request in the window would take off.
    assert min(b - a for a, b in zip(stamps, stamps[3:], strict=False)) >= 0.3 - 0.02


# --- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(server, expected, instruments, status):
    inst = instruments["NSE"]
    before = len(server.history_requests)
    server.inject_history(2, status=status)
    got = history(server, backoff_first_s=0.05).candles(inst, 5, DAYS[0], DAYS[0])
    np.testing.assert_array_equal(got, on_day(expected[inst.instrument_token, 5], DAYS[0]))
    assert [r.status for r in requests_since(server, before)] == [status, status, 200]


def test_a_slow_answer_times_out_and_is_retried(server, expected, instruments):
    inst = instruments["NCO"]
    before = len(server.history_requests)
    server.inject_history(1, status=None, delay_s=3.0)
    got = history(server, timeout_s=0.5, backoff_first_s=0.05).candles(inst, 15, DAYS[2], DAYS[2])
    np.testing.assert_array_equal(got, on_day(expected[inst.instrument_token, 15], DAYS[2]))
    # The abandoned request is logged when the server answers it, after the retry.
    assert wait_until(lambda: len(requests_since(server, before)) == 2)
    assert sorted(r.status for r in requests_since(server, before)) == [200, 200]


def test_an_exhausted_retry_budget_is_one_line(server, instruments):
    server.inject_history(1000, status=503)
    kite = history(server, retry_budget_s=1.0, backoff_first_s=0.05, backoff_max_s=0.2)
    with pytest.raises(HistoryError) as caught:
        kite.candles(instruments["NSE"], 1, DAYS[0], DAYS[0])
    message = str(caught.value)
    assert "\n" not in message
    assert "NSE:" in message and "gave up after" in message and "in 1 s" in message
    assert "HTTP 503: mock: injected 503" in message


def test_a_refused_token_is_an_auth_error(server, instruments):
    with pytest.raises(AuthError) as caught:
        KiteHistory(KEY, "expired", server.root).candles(instruments["NSE"], 1, DAYS[0], DAYS[0])
    assert "\n" not in str(caught.value) and "HTTP 403" in str(caught.value)
    assert caught.value.exit_status == 1


def test_an_unknown_token_names_the_instrument(server):
    stranger = KiteInstrument((999_999 << 8) | Segment.NSE, "NOSUCHSTOCK", "NSE")
    with pytest.raises(HistoryError) as caught:
        history(server).candles(stranger, 1, DAYS[0], DAYS[0])
    message = str(caught.value)
    assert "\n" not in message
    assert f"NSE:NOSUCHSTOCK (token {stranger.instrument_token})" in message
    assert "HTTP 400: invalid token" in message


def test_requests_go_to_the_given_root_only(server, instruments, monkeypatch):
    urls = []
    real = requests.Session.request

    def spy(self, method, url, *args, **kwargs):
        urls.append(url)
        return real(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    history(server).candles(instruments["NSE"], 2, FIRST, LAST)
    assert len(urls) == 3
    assert all(u.startswith(f"{server.root}/instruments/historical/") for u in urls)
    assert KiteHistory(KEY, TOKEN).root == KITE_API_ROOT
    assert history(server)._kite().root == server.root


# --- the local server's other modes ----------------------------------------------------


def test_a_live_market_serves_what_it_has_played(market):
    """history=played: the candles of the ticks played so far, the forming one included;
    once the stream has ended, the whole day's."""
    config = sim_config(DAYS[0], start=dtime(9, 14), end=dtime(9, 30), ticks=3000)
    rows = instrument_rows(sim_instruments(config))
    messages = list(sim_messages(config))
    whole = engine_candles(rows, messages, (1,))
    server = MockKite(
        lambda: iter(messages),
        rows,
        api_key=KEY,
        access_token=TOKEN,
        speed=240,
        start_on_subscribe=False,
        history="played",
    ).start()
    inst = KiteInstrument.from_dict(rows[0])
    halfway = int(datetime.combine(DAYS[0], dtime(9, 21), IST).timestamp()) * NS_PER_S
    try:
        assert wait_until(lambda: server.stream_clock() >= halfway)
        played = history(server).candles(inst, 1, DAYS[0], DAYS[0])
        clock = server.stream_clock()
        assert server.finished.wait(DEADLINE_S)
        ended = history(server).candles(inst, 1, DAYS[0], DAYS[0])
    finally:
        server.stop()
    final = whole[inst.instrument_token, 1]
    np.testing.assert_array_equal(ended, final)
    assert 0 < len(played) < len(final)
    assert played["bucket_start_ns"][-1] <= clock
    np.testing.assert_array_equal(played[:-1], final[: len(played) - 1])
    forming, done = played[-1], final[len(played) - 1]
    assert forming["bucket_start_ns"] == done["bucket_start_ns"]
    assert (
        forming["open"] == done["open"]
        and done["low"] <= forming["low"] <= forming["high"] <= done["high"]
    )


def test_an_overridden_candle_is_served(market):
    config = sim_config(DAYS[0], start=dtime(9, 14), end=dtime(9, 25), ticks=2000)
    rows = instrument_rows(sim_instruments(config))
    server = MockKite(
        lambda: sim_messages(config), rows, api_key=KEY, access_token=TOKEN, history="day"
    ).start()
    inst = KiteInstrument.from_dict(rows[0])
    kite = history(server)
    try:
        before = kite.candles(inst, 1, DAYS[0], DAYS[0])
        changed, dropped = before[2], before[3]
        at = datetime.fromtimestamp(changed["bucket_start_ns"] // NS_PER_S, IST)
        server.override_candle(inst.instrument_token, "minute", at, (1, 4, 1, 3, 7))
        server.override_candle(
            inst.instrument_token,
            "minute",
            at + timedelta(minutes=1),
            None,
        )
        added = at.replace(hour=12)
        server.override_candle(inst.instrument_token, "minute", added, (5, 5, 5, 5, 5))
        after = kite.candles(inst, 1, DAYS[0], DAYS[0])
    finally:
        server.stop()
    assert dropped["bucket_start_ns"] not in after["bucket_start_ns"]
    assert after[2].tolist() == (changed["bucket_start_ns"], 7, 1, 4, 1, 3)
    assert after[-1].tolist() == (int(added.timestamp()) * NS_PER_S, 5, 5, 5, 5, 5)
    assert len(after) == len(before)


# --- pieces ----------------------------------------------------------------------------


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from([100, 10_000, 10_000_000]))
def test_kites_float_prices_become_exact_units(units, divisor):
    """Kite's JSON number for a price (its shortest decimal) parses to a float that
    converts back to exactly the units."""
    kite_number = float(price_text(units, divisor))
    assert price_units(np.array([kite_number]), divisor).tolist() == [units]


def test_prices_off_the_grid_are_refused():
    assert price_units(np.array([83.25125]), 10_000_000).tolist() == [832512500]
    assert price_units(np.array([1573.7]), 100).tolist() == [157370]
    with pytest.raises(ValueError, match=r"price 1573\.705 is not a whole number of 1/100"):
        price_units(np.array([1573.7, 1573.705]), 100)


def test_aggregate_short_last_bucket_and_outside_the_session():
    session = DEFAULT_SESSIONS["NSE"]
    day0 = datetime.combine(DAYS[0], dtime(9, 10), IST)
    n = 6 * 60 + 25  # 09:10 .. 15:34: five minutes either side of the session
    rows = np.zeros(n, HISTORY_DTYPE)
    rows["bucket_start_ns"] = int(day0.timestamp()) * NS_PER_S + np.arange(n) * NS_PER_MIN
    rows["open"] = np.arange(n)
    rows["close"] = np.arange(n) + 1
    rows["high"] = np.arange(n) + 2
    rows["low"] = np.arange(n) - 1
    rows["volume"] = 1
    out = aggregate(rows[::-1], 7, session)
    assert len(out) == 54  # 375 minutes: 53 buckets of 7 and one of 4
    assert out["volume"].tolist() == [7] * 53 + [4]
    first = datetime.fromtimestamp(out["bucket_start_ns"][0] // NS_PER_S, IST)
    assert first.time() == dtime(9, 15)
    assert (out["open"][0], out["close"][0], out["high"][0], out["low"][0]) == (5, 12, 13, 4)
    assert out["close"][-1] == 5 + 375


def test_day_chunks():
    assert list(day_chunks(date(2024, 1, 1), date(2024, 1, 5), 2)) == [
        (date(2024, 1, 1), date(2024, 1, 2)),
        (date(2024, 1, 3), date(2024, 1, 4)),
        (date(2024, 1, 5), date(2024, 1, 5)),
    ]
