"""--record when the disk fails: one line, recording stops, the live feed loses no tick.

The failures are real: ``/dev/full`` as the target, or the writer's open file turned into
``/dev/full`` mid-run (every write then fails with ENOSPC, as on a full disk).
"""

import logging
import os
import threading
from pathlib import Path

import pytest

from feedengine import tickfile
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.live import LiveSource
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.heartbeat import Monitor
from feedengine.pipeline import Pipeline
from feedengine.sink import MemorySink
from feedengine.tickfile import TickReader, TickWriter, make_meta

from .test_live import FAST, KEY, TOKEN, serve, wait_for
from .test_live import window as window  # the module-scoped fixture

FULL = "/dev/full"


def fill_disk(writer: TickWriter) -> None:
    """From now on every write to ``writer``'s file fails with ENOSPC."""
    fd = os.open(FULL, os.O_WRONLY)
    try:
        os.dup2(fd, writer._file.fileno())
    finally:
        os.close(fd)


def run_live(window, record, during=None):
    """Stream ``window`` at 200x with ``record``; return (summary, source, server, payload)."""
    server = serve(window, speed=200)
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(window).instruments]
    live = LiveSource(
        instruments, server.url, KEY, TOKEN, record=record, clock=server.stream_clock, **FAST
    )
    config = CandleConfig(intervals=(1,), grace_s=10.0)
    pipeline = Pipeline(CandleEngine(instruments, config), sink := MemorySink())
    monitor = Monitor(pipeline.status, 30, None, "rec")
    seen = {}

    def drive():
        if during is not None:
            during(live)
        server.finished.wait(120)
        wait_for(lambda: pipeline.summary.ticks >= server.packets_sent, 60)
        seen["payload"] = monitor.payload()
        pipeline.stop()

    threading.Thread(target=drive, daemon=True).start()
    try:
        summary = pipeline.run(live, live=True, clock=server.stream_clock)
    finally:
        server.stop()
    assert sink.candles
    return summary, live, server, seen["payload"]


def errors(caplog):
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unwritable_record_target_stops_recording_not_the_feed(window, caplog):
    """The old code raised the OSError out of start(): no feed at all."""
    with caplog.at_level(logging.INFO):
        summary, live, server, payload = run_live(window, Path(FULL))
    assert summary.ticks == server.packets_sent > 0  # not a tick lost
    [line] = errors(caplog)
    assert line.getMessage() == (
        f"--record {FULL}: No space left on device; recording stopped, the feed goes on"
    )
    assert line.exc_info is None
    assert live.recording["state"] == "failed"
    assert payload["status"] == "degraded" and "recording" in payload["problems"]
    assert payload["recording"]["state"] == "failed"


def test_a_disk_that_fills_mid_run_stops_recording_not_the_feed(window, tmp_path, caplog):
    """The old code: the writer's flush thread died silently, then write() flushed on the
    socket's thread, its OSError was taken for a lost connection, and the stream
    reconnected in a loop, dropping every message meanwhile."""
    record = tmp_path / "rec.ticks"

    def fill_after_some(live):
        wait_for(lambda: live.recorder.writer is not None and live.recorder.writer.records > 100)
        live.recorder.writer.flush()
        fill_disk(live.recorder.writer)

    with caplog.at_level(logging.INFO):
        summary, live, server, payload = run_live(window, record, during=fill_after_some)
    assert summary.ticks == server.packets_sent > 0
    assert all(s.reconnects == 0 for s in live.status)
    [line] = errors(caplog)
    assert line.getMessage() == (
        f"--record {record}: No space left on device; recording stopped, the feed goes on"
    )
    assert f"recording every message to {record}" in caplog.text
    assert payload["recording"]["state"] == "failed" and payload["status"] == "degraded"
    # What reached the disk before it filled is a readable tick file.
    assert sum(1 for _ in TickReader(record).messages()) > 100


def test_writer_stops_on_a_failed_flush_and_keeps_no_buffer(tmp_path):
    """The old flush thread died silently and the buffer grew without bound."""
    writer = TickWriter(tmp_path / "a.ticks", make_meta("test", []), flush_interval=0.02)
    writer.write(1, b"x" * 100)
    fill_disk(writer)
    writer.write(2, b"y" * 100)
    assert wait_for(lambda: writer.error is not None, 10)
    assert writer.error.errno == 28  # ENOSPC
    writer._flusher.join(10)  # it ends right after setting the error
    assert not writer._flusher.is_alive() and not writer._buf
    with pytest.raises(OSError, match="No space left"):
        writer.write(3, b"z")
    with pytest.raises(OSError, match="No space left"):
        writer.close()
    writer.close()  # twice is fine


def test_writer_fails_rather_than_buffer_without_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(tickfile, "MAX_BUFFER_BYTES", 1000)
    monkeypatch.setattr(tickfile, "FLUSH_BYTES", 1 << 30)  # the disk "never" catches up
    writer = TickWriter(tmp_path / "a.ticks", make_meta("test", []), flush_interval=3600)
    writer.write(1, b"x" * 600)
    with pytest.raises(OSError, match="the disk fell 0 MB behind the stream"):
        writer.write(2, b"x" * 600)
    assert not writer._buf
    with pytest.raises(OSError, match="behind"):
        writer.close()
