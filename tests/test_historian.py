"""The historian on its own clock, against the local Kite server and PostgreSQL: a start in
mid-session fills the day so far, a closed session is reconciled RECONCILE_AFTER_CLOSE
minutes later while later sessions are left alone, and late ticks are handed to it."""

from datetime import date, datetime, time
from decimal import Decimal

import numpy as np
import psycopg
import pytest

from feedengine.brokers.kite.history import KiteHistory, RequestLimiter
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.mockserver import MockKite, tick_file_source
from feedengine.brokers.kite.segments import DIVISORS
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.database import PostgresSink
from feedengine.historian import Historian
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.sessions import DEFAULT_SESSIONS, IST, NS_PER_S
from feedengine.simulator import SimConfig, simulate
from feedengine.sink import MemorySink, price_text
from feedengine.source import MessageBatch
from feedengine.tables import TableNames
from feedengine.tickfile import TickReader
from tests.processes import wait_until

DAY = date(2024, 1, 15)  # a Monday
KEY, TOKEN = "k", "t"
INTERVALS = (1, 15)


@pytest.fixture(scope="module")
def day_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("historian") / "day.ticks"
    simulate(path, SimConfig(instruments=20, ticks=10_000, seed=41, date=DAY))
    return path


def at(hour, minute):
    return int(datetime.combine(DAY, time(hour, minute), IST).timestamp()) * NS_PER_S


def table_candles(conn, table_prefix, minutes, instruments):
    rows = conn.execute(
        "SELECT tradingsymbol, datetime, open, high, low, close, volume "
        f'FROM "{table_prefix.format(interval=minutes)}"'
    ).fetchall()
    symbols = {i.tradingsymbol for i in instruments}
    return {(s, dt): v for s, dt, *v in rows if s in symbols}


def served_candles(server, minutes, instruments, until_ns):
    out = {}
    for inst in instruments:
        div = int(DIVISORS[inst.segment])
        rows = server.served(inst.instrument_token, minutes, at(0, 0), until_ns)
        for start, volume, *prices in rows.tolist():
            if start + minutes * 60 * NS_PER_S > until_ns:
                continue  # not closed at the historian's now
            dt = datetime.fromtimestamp(start // NS_PER_S, IST).replace(tzinfo=None)
            out[(inst.tradingsymbol, dt)] = [Decimal(price_text(p, div)) for p in prices] + [volume]
    return out


def test_mid_session_start_and_reconciliation_after_the_close(pg_dsn, table_prefix, day_file):
    messages, rows = tick_file_source(day_file)
    server = MockKite(messages, rows, api_key=KEY, access_token=TOKEN, history="day").start()
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(day_file).instruments]
    # NSE closed at 15:30 (+15 min); CDS trades until 17:00, MCX 23:55. Between bucket
    # boundaries: a bucket that ended within the grace would wait for a clock that stands.
    now = at(15, 46) + 30 * NS_PER_S
    sink = PostgresSink(pg_dsn, TableNames(table_prefix))
    sink.open(INTERVALS, instruments)
    historian = Historian(
        KiteHistory(KEY, TOKEN, server.root, limiter=RequestLimiter()),
        sink,
        instruments,
        INTERVALS,
        dict(DEFAULT_SESSIONS),
        reconcile_after_min=15,
        grace_s=2.0,
        clock=lambda: now,
    )
    try:
        historian.start()
        assert wait_until(
            lambda: historian.sessions_reconciled >= 1 and not historian.status()["pending"]
        )
        historian.stop()
        assert historian.gaps_repaired >= 1 and historian.candles_filled > 0
        assert historian.failures == 0
        with psycopg.connect(pg_dsn) as conn:
            for minutes in INTERVALS:
                # Every instrument's day so far is filled (the start in mid-session)...
                assert table_candles(conn, table_prefix, minutes, instruments) == served_candles(
                    server, minutes, instruments, now
                )
            nse = [i for i in instruments if i.exchange in ("NSE", "NFO")]
            others = [i for i in instruments if i.exchange in ("CDS", "MCX", "NCO")]
            recorded = {
                s
                for (s,) in conn.execute(
                    "SELECT tradingsymbol FROM feedengine_reconciliations "
                    "WHERE candle_table = %s AND day = %s",
                    (table_prefix.format(interval=1), DAY),
                )
            }
        # ... and only the closed session (NSE/NFO hours) was reconciled.
        assert {i.tradingsymbol for i in nse} <= recorded
        assert not recorded & {i.tradingsymbol for i in others}
    finally:
        historian.stop()
        server.stop()


def test_late_ticks_are_handed_to_the_historian(day_file):
    """A live stream received a minute behind the exchange (a backed-up link): ticks are
    late for their 1-minute candles, and the spans of late ticks reach ``on_gap`` (the
    historian repairs the buckets left empty)."""
    source = ReplaySource(day_file)
    pipeline = Pipeline(
        CandleEngine(source.instruments, CandleConfig(intervals=INTERVALS)), MemorySink()
    )
    gaps = []
    pipeline.on_gap = gaps.append
    pipeline.late_check_s = 0.0
    behind = 60 * NS_PER_S
    inner = source.batches

    def received_late():
        for batch in inner():
            yield MessageBatch(batch.buf, batch.recv_ns + behind, batch.offsets, batch.lengths)
            if gaps:
                pipeline.stop()

    source.batches = received_late
    pipeline.run(source, live=True, clock=lambda: 0)
    late = [g for g in gaps if g.reason == "ticks came too late"]
    assert late and late[0].start_ns < late[0].end_ns
    assert set(late[0].keys) <= {i.instrument_token for i in source.instruments}
    assert pipeline.engine.kernel.late[0] > 0  # the 1-minute candles lost them


def test_a_gap_resets_the_volume_baseline_of_the_next_candle_only():
    """After ``mark_gap`` a new bucket counts from its own first tick; a bucket that
    continues across the gap keeps its baseline."""
    from feedengine.dtypes import KTICK_DTYPE

    token = (408065 << 8) | 1
    engine = CandleEngine([KiteInstrument(token, "INFY", "NSE")], CandleConfig(intervals=(1, 15)))
    sink = MemorySink()
    base = at(10, 0)

    def tick(seconds, cum):
        row = np.zeros(1, KTICK_DTYPE)
        row["recv_ns"] = row["event_ns"] = base + seconds * NS_PER_S
        row["slot"] = 0
        row["price"], row["volume"], row["has_volume"] = 100, cum, 1
        return row

    engine.process(tick(0, 1000), lambda: None)
    engine.process(tick(30, 1100), lambda: None)
    engine.mark_gap([token])  # nothing for 3 minutes; 500 traded meanwhile
    engine.process(tick(200, 1600), lambda: None)
    engine.process(tick(230, 1650), lambda: None)
    engine.finalize(lambda: None)
    rows = engine.kernel.ring[: engine.kernel.pending]
    sink.write(engine.resolve(rows))
    volumes = {(m, dt.strftime("%H:%M")): v[4] for (m, _, _, dt), v in sink.candles.items()}
    assert volumes[(1, "10:00")] == 100  # before the gap: its own
    assert volumes[(1, "10:03")] == 50  # after it: from its own first tick, not 550
    assert volumes[(15, "10:00")] == 650  # one 15-minute candle across the gap: all of it
    assert engine.take_late() is None
