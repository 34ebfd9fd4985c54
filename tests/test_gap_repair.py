"""Gap repair end to end: a live run against the local Kite server loses its connection for
three minutes of market time; the historian fills every bucket from Kite's candles, and the
first live candle after the gap does not carry the gap's volume."""

import threading
from datetime import date
from datetime import time as dtime

import numpy as np
import psycopg
import pytest

from feedengine.brokers.kite.history import KiteHistory, RequestLimiter
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.live import LiveSource
from feedengine.brokers.kite.mockserver import MockKite, tick_file_source
from feedengine.brokers.kite.segments import DIVISORS
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink
from feedengine.historian import Historian
from feedengine.pipeline import Pipeline
from feedengine.sessions import DEFAULT_SESSIONS, NS_PER_MIN, NS_PER_S
from feedengine.simulator import SimConfig, simulate
from feedengine.tables import TableNames
from feedengine.tickfile import TickReader
from tests.processes import wait_until

KEY, TOKEN = "k", "t"
INTERVALS = (1, 5)
#: Market time per wall second: the 3-minute outage lasts 1.5 s.
SPEED = 120
OUTAGE_MIN = 3
#: The grace is market time: at 120x the spec's 2 s are 17 ms of wall time, which a busy
#: machine misses now and then, and a late tick's volume moves to the next candle (seen:
#: 4 runs in 9 under load). 30 s of market time is 0.25 s of wall time.
GRACE_S = 30.0


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    path = tmp_path_factory.mktemp("gap") / "window.ticks"
    simulate(
        path,
        SimConfig(
            instruments=8,
            ticks=30_000,
            start=dtime(9, 13),
            end=dtime(9, 40),
            seed=31,
            date=date(2024, 1, 15),
        ),
    )
    return path


def stored(conn, table_prefix, minutes, divisors):
    """{(symbol, bucket start ns): (o, h, l, c, v) in integer units} of one table."""
    table = table_prefix.format(interval=minutes)
    rows = conn.execute(
        "SELECT tradingsymbol, extract(epoch FROM datetime AT TIME ZONE 'Asia/Kolkata'), "
        f'open, high, low, close, volume FROM "{table}"'
    ).fetchall()
    return {
        (s, int(t) * NS_PER_S): (*(int(p * divisors[s]) for p in prices), v)
        for s, t, *prices, v in rows
    }


def test_a_three_minute_outage_is_repaired_from_kites_candles(pg_dsn, table_prefix, window):
    messages, rows = tick_file_source(window)
    server = MockKite(messages, rows, api_key=KEY, access_token=TOKEN, speed=SPEED).start()
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(window).instruments]
    live = LiveSource(
        instruments,
        server.url,
        KEY,
        TOKEN,
        clock=server.stream_clock,
        backoff_first_s=0.05,
        silence_s=1.0,
    )
    config = CandleConfig(intervals=INTERVALS, grace_s=GRACE_S)
    pipeline = Pipeline(
        CandleEngine(instruments, config), PostgresSink(pg_dsn, TableNames(table_prefix))
    )
    history = KiteHistory(KEY, TOKEN, server.root, limiter=RequestLimiter())
    historian = Historian(
        history,
        PostgresSink(pg_dsn, TableNames(table_prefix)),
        instruments,
        INTERVALS,
        dict(DEFAULT_SESSIONS),
        reconcile_after_min=0,
        grace_s=config.grace_s,
        clock=server.stream_clock,
    )
    gaps = []

    def on_gap(gap):
        gaps.append(gap)
        historian.repair_gap(gap)

    pipeline.on_gap = on_gap
    outage = {}
    errors = []

    def cut_the_link():
        try:
            status = live.status[0]
            # Mid-session (09:20), with candles flowing, the link goes for 3 market minutes.
            assert wait_until(lambda: server.stream_clock() >= session_ns(9, 20))
            outage["from"] = server.stream_clock()
            server.inject("stall", seconds=OUTAGE_MIN * 60 / SPEED)
            server.inject("drop")
            assert wait_until(lambda: status.reconnects >= 1 and status.state == "connected")
            outage["to"] = server.stream_clock()
            assert server.finished.wait(120)
            live.stream.stop()  # nothing more arrives: let the pipeline and the repair finish
            assert wait_until(
                lambda: historian.gaps_repaired >= 1 and not historian.status()["pending"]
            )
        except BaseException as e:
            errors.append(e)
        finally:
            pipeline.stop()

    threading.Thread(target=cut_the_link, daemon=True).start()
    historian.start()
    try:
        pipeline.run(live, live=True, clock=server.stream_clock)
        historian.stop()
        assert not errors, errors
        # The outage as the stream saw it: from its last message before the stall (frames
        # in flight when the stall was injected still arrive on a busy machine) to its first
        # after the reconnect.
        [lost] = [g for g in gaps if g.reason == "a connection received nothing"]
        assert lost.end_ns - lost.start_ns >= OUTAGE_MIN * NS_PER_MIN // 2
        outage = {"from": lost.start_ns, "to": lost.end_ns}
        check_no_empty_bucket(server, pg_dsn, table_prefix, instruments, outage)
    finally:
        historian.stop()
        server.stop()
    assert historian.candles_filled > 0


def check_no_empty_bucket(server, pg_dsn, table_prefix, instruments, outage):
    start, end = session_ns(9, 15), session_ns(9, 40)
    with psycopg.connect(pg_dsn) as conn:
        for minutes in INTERVALS:
            divisors = {i.tradingsymbol: int(DIVISORS[i.segment]) for i in instruments}
            mine = stored(conn, table_prefix, minutes, divisors)
            for inst in instruments:
                served = server.served(inst.instrument_token, minutes, start, end)
                closed = served[served["bucket_start_ns"] + minutes * NS_PER_MIN <= outage["to"]]
                have = {t for (s, t) in mine if s == inst.tradingsymbol}
                # No empty bucket: every candle Kite has before the link came back is stored.
                assert set(closed["bucket_start_ns"].tolist()) <= have, (inst, minutes)
                # The buckets inside the gap, closed before the link came back, hold Kite's
                # candle exactly. A later one may hold a live candle the fill rightly keeps:
                # frames sent just before the drop arrive after the reconnect, within its
                # grace (seen: 3 of Kite's 692 at 120x on a loaded machine).
                ends = closed["bucket_start_ns"] + minutes * NS_PER_MIN
                gap = closed[
                    (closed["bucket_start_ns"] >= outage["from"] + minutes * NS_PER_MIN)
                    & (ends + int(GRACE_S * NS_PER_S) <= outage["to"])
                ]
                for row in gap:
                    key = (inst.tradingsymbol, int(row["bucket_start_ns"]))
                    want = tuple(int(row[f]) for f in ("open", "high", "low", "close", "volume"))
                    assert mine[key] == want
                # The live candles from the bucket the link came back in: never the gap's
                # volume on top (before, the first carried the whole outage's: 12062 where
                # Kite had 3064). Not exactly Kite's: a tick late for its candle on a busy
                # machine moves its volume to the next one (seen: 2618 where Kite had 1866).
                if inst.segment != 9:  # indices have no volume
                    lost = server.served(inst.instrument_token, 1, outage["from"], outage["to"])
                    gap_volume = int(lost["volume"].sum())
                    assert gap_volume > 0
                    after = served[served["bucket_start_ns"] >= outage["to"] - minutes * NS_PER_MIN]
                    for row in after:
                        key = (inst.tradingsymbol, int(row["bucket_start_ns"]))
                        if key in mine:
                            assert mine[key][4] <= int(row["volume"]) + gap_volume // 2, key


def session_ns(hour, minute):
    return int(np.datetime64(f"2024-01-15T{hour:02d}:{minute:02d}", "ns").astype(np.int64)) - (
        (5 * 3600 + 30 * 60) * NS_PER_S
    )
