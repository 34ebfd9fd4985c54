"""A stream that falls behind is seen: staleness and late ticks in the status, one warning."""

import logging
import re
import threading

import numpy as np

from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.live import LiveSource
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.dtypes import KTICK_DTYPE
from feedengine.freshness import Staleness
from feedengine.heartbeat import Monitor
from feedengine.pipeline import Pipeline
from feedengine.sink import MemorySink
from feedengine.tickfile import TickReader

from .test_live import FAST, KEY, TOKEN, serve, wait_for
from .test_live import window as window  # the module-scoped fixture

NS = 1_000_000_000
T0 = 1_705_290_000  # 2024-01-15 09:10 IST


def ticks(delays_s, exchange_s=T0):
    rows = np.zeros(len(delays_s), KTICK_DTYPE)
    rows["event_ns"] = exchange_s * NS
    rows["recv_ns"] = exchange_s * NS + (np.asarray(delays_s) * NS).astype(np.int64)
    return rows


def test_staleness_median_and_max_over_the_window():
    s = Staleness()
    assert s.summary() is None
    s.add(ticks([0.3] * 60 + [1.2] * 39 + [7.5]))
    no_stamp = ticks([100.0])
    no_stamp["event_ns"] = no_stamp["recv_ns"]  # not a full-mode packet: no exchange time
    s.add(no_stamp)
    summary = s.summary()
    assert summary["ticks"] == 100 and summary["max"] == 7.5
    assert 0.3 <= summary["p50"] <= 0.35  # a bin's upper edge: 50 ms resolution


def test_far_off_exchange_timestamps_are_said_once(caplog):
    """Ticks dated 2024 served as live made zero candles and no warning."""
    s = Staleness()
    with caplog.at_level(logging.WARNING, logger="feedengine.freshness"):
        s.add(ticks([400 * 86400.0] * 10))
        s.add(ticks([400 * 86400.0] * 10))
    [record] = caplog.records
    assert record.getMessage().startswith(
        "exchange timestamps are 9600 hours behind this machine's clock (ticks of 2024-01-15 IST)"
    )


def test_a_stream_running_behind_shows_in_status_and_warns(window, caplog):
    """Ticks received 5 s after their exchange time with a 2 s grace: candles lose the
    ticks of each bucket's last seconds. Before, the status said running, nothing said
    why, and seconds-since-last-message stayed small."""
    server = serve(window, speed=60)
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(window).instruments]

    def behind():  # the receive clock of a link 5 s behind the exchange
        return server.stream_clock() + 5 * NS

    live = LiveSource(instruments, server.url, KEY, TOKEN, clock=behind, **FAST)
    pipeline = Pipeline(
        CandleEngine(instruments, CandleConfig(intervals=(1,), grace_s=2.0)), MemorySink()
    )
    monitor = Monitor(pipeline.status, 30, None, "behind", log_interval_s=0.5, sample_s=0.1)
    got = {}

    def watch():
        wait_for(lambda: "ticks arrived after their candle" in caplog.text, 60)
        wait_for(lambda: "ticks arrive " in caplog.text, 60)
        got["payload"] = monitor.payload()
        pipeline.stop()

    threading.Thread(target=watch, daemon=True).start()
    with caplog.at_level(logging.INFO):
        monitor.start()
        try:
            pipeline.run(live, live=True, clock=behind)
        finally:
            monitor.stop()
            server.stop()
    payload = got["payload"]
    assert payload["status"] == "degraded"
    assert set(payload["problems"]) == {"late ticks", "lag"}
    assert payload["late_ticks_last_minute"]["1m"] > 0
    # 5 s behind, plus up to 1 s of whole-second exchange timestamps, plus the loopback.
    assert 5.0 <= payload["staleness_s"]["p50"] < 10.0
    assert "ticks arrived after their candle had closed in the last minute" in caplog.text
    assert re.search(r"ticks arrive \d+\.\d s after their exchange time", caplog.text)
    assert "beyond the 2.0 s grace" in caplog.text
