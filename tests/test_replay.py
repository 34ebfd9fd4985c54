"""Replay of tick files through the whole pipeline (decoder, kernel, flusher, sink)."""

from datetime import datetime
from decimal import Decimal

import numpy as np
from hypothesis import HealthCheck, given, settings

from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.segments import DIVISORS, exchange_of_segment
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.sessions import IST
from feedengine.sink import MemorySink, price_text
from tests.candle_streams import PACKET_DTYPE, reference, sessions_of, tick_streams
from tests.processes import cli
from tests.tickfiles import write_tick_file

INTERVALS = (1, 5, 15, 60)


def replay(path, intervals=INTERVALS, sink=None, ring_rows=1 << 12):
    source = ReplaySource(path)
    engine = CandleEngine(
        source.instruments, CandleConfig(intervals=intervals, ring_rows=ring_rows)
    )
    sink = sink or MemorySink()
    summary = Pipeline(engine, sink).run(source)
    return sink, summary


def expected(kticks, tokens, intervals=INTERVALS):
    result = reference(kticks, sessions_of(tokens), list(intervals))
    out = {}
    for tok, minutes, start, o, h, lo, c, v in result.rows:
        div = int(DIVISORS[tok & 0xFF])
        start_ist = datetime.fromtimestamp(start // 10**9, IST)
        key = (minutes, f"SYM{tok}", exchange_of_segment(tok & 0xFF), start_ist)
        out[key] = (*(Decimal(price_text(p, div)) for p in (o, h, lo, c)), v)
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tick_streams(max_ticks=80))
def test_replay_equals_reference(tmp_path, stream):
    kticks, tokens = stream
    path = write_tick_file(tmp_path / "s.ticks", kticks, tokens)
    sink, summary = replay(path, ring_rows=16)
    assert sink.candles == expected(kticks, tokens)
    assert summary.ticks == len(kticks)


def test_replay_cli_writes_csv_and_summary(tmp_path):
    tokens = [408065]
    base = 1_705_290_300  # 2024-01-15 09:15 IST
    kt = np.array(
        [
            (base * 10**9, base, 0, 408065, 157370, 10, 0, 0, 184, 1, 1, 1),
            ((base + 30) * 10**9, base + 30, 0, 408065, 157380, 25, 0, 0, 184, 1, 1, 1),
            ((base + 61) * 10**9, base + 61, 0, 408065, 157300, 40, 0, 0, 184, 1, 1, 1),
        ],
        PACKET_DTYPE,
    )
    path = write_tick_file(tmp_path / "d.ticks", kt, tokens)
    out = tmp_path / "c.csv"
    proc = cli("--replay", path, "--intervals", "1,5", "--csv", out, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ticks decoded      3" in proc.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "datetime,tradingsymbol,interval,open,high,low,close,volume,exchange"
    assert "2024-01-15 09:15:00,SYM408065,1,1573.70,1573.80,1573.70,1573.80,15,NSE" in lines
    assert "2024-01-15 09:15:00,SYM408065,5,1573.70,1573.80,1573.00,1573.00,30,NSE" in lines


def test_replay_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.ticks"
    bad.write_bytes(b"garbage")
    for args, text in [
        (["--replay", str(tmp_path / "missing.ticks")], "cannot read"),
        (["--replay", str(bad)], "no FEEDTKS1 magic"),
        (["--replay", str(bad), "--intervals", "1,x"], "bad interval 'x'"),
    ]:
        proc = cli(*args, home=tmp_path)
        assert proc.returncode != 0
        assert text in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_instrument_exchange_defaults_to_segment():
    index = KiteInstrument.from_dict({"instrument_token": 256265, "tradingsymbol": "NIFTY 50"})
    assert index.exchange == "INDICES"


def test_paced_replay_stopped_and_resumed_counts_each_tick_once(tmp_path):
    """Regression: a paced replay (--speed) never advanced its position, so a resumed one
    re-read the whole file: right rows, doubled counters."""
    from feedengine.simulator import SimConfig, simulate

    path = tmp_path / "d.ticks"
    simulate(path, SimConfig(instruments=10, ticks=4000, seed=3))
    whole = replay(path, intervals=(1, 5))[1]

    checkpoint = tmp_path / "checkpoint.npz"
    # At 1000x the day takes 24 s: the first due messages are a small start of it, however
    # slow the machine is.
    first = ReplaySource(path, speed=1000)
    engine = CandleEngine(first.instruments, CandleConfig(intervals=(1, 5)))
    pipeline = Pipeline(engine, MemorySink(), checkpoint=checkpoint)
    inner = first.batches

    def stop_after_the_first_messages():
        for batch in inner():
            yield batch
            if len(batch):
                pipeline.stop()

    first.batches = stop_after_the_first_messages
    before = pipeline.run(first)
    assert not before.finished and 0 < before.messages < whole.messages
    assert first.position()["replay_records"] == before.messages

    second = ReplaySource(path)  # the rest at full speed: the position is in records
    engine = CandleEngine(second.instruments, CandleConfig(intervals=(1, 5)))
    after = Pipeline(engine, MemorySink(), checkpoint=checkpoint).run(second)
    assert after.finished
    assert before.ticks + after.ticks == whole.ticks
    assert before.messages + after.messages == whole.messages
    assert after.counters == whole.counters
