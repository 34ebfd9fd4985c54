"""Socket to kernel on loopback: what the live path costs per tick.

The local Kite server runs in another process, streaming a simulated session flat out over
3 connections; this process runs the real live path (websockets client thread, queue, batch
decode, candle kernel, flusher into memory) and measures ticks/s and its own CPU time. The
baseline, timed in the same process on the same frames, is kiteconnect's
``KiteTicker._parse_binary`` alone (before any candle work). Reported: CPU per tick, the
share of one core at 10 000 ticks/s and at Kite's maximum of 9000 instruments at about a
tick per second each, and the ratio to the baseline.
"""

import threading
import time
from datetime import time as dt_time

from kiteconnect import KiteTicker

from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.live import LiveSource
from feedengine.brokers.kite.mockserver import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_API_KEY,
    instrument_rows,
)
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.pipeline import Pipeline
from feedengine.simulator import SimConfig
from feedengine.simulator import instruments as sim_instruments
from feedengine.sink import MemorySink

from .conftest import MODE, mockkite_process

INSTRUMENTS = 3000 if MODE == "gate" else 9000
SECONDS = 4.0 if MODE == "gate" else 15.0
GATE_RATIO = 10
KITE_MAX_TICKS_PER_S = 9000  # 9000 instruments at about one tick a second each


def test_socket_to_kernel(report, benchmark):
    with mockkite_process(
        "--instruments", str(INSTRUMENTS), "--speed", "0", "--start", "10:00"
    ) as port:
        rows = instrument_rows(
            sim_instruments(SimConfig(instruments=INSTRUMENTS, start=dt_time(10, 0)))
        )
        instruments = [KiteInstrument.from_dict(r) for r in rows]
        frames: list[bytes] = []
        source = LiveSource(
            instruments, f"ws://127.0.0.1:{port}", DEFAULT_API_KEY, DEFAULT_ACCESS_TOKEN
        )
        tap = source._on_message

        def keep(recv_ns: int, message: bytes) -> None:
            if len(frames) < 200 and len(message) > 1:
                frames.append(message)
            tap(recv_ns, message)

        source.stream.on_message = keep
        pipeline = Pipeline(CandleEngine(instruments, CandleConfig()), MemorySink())
        threading.Timer(SECONDS, pipeline.stop).start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        summary = benchmark.pedantic(
            pipeline.run, args=(source,), kwargs={"live": True}, rounds=1, iterations=1
        )
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ticks = summary.ticks
    assert ticks > 10_000
    cpu_per_tick = cpu / ticks
    ticker = KiteTicker("key", "token")
    t0 = time.process_time()
    parsed = sum(len(ticker._parse_binary(f)) for f in frames)
    base_per_tick = (time.process_time() - t0) / parsed
    ratio = base_per_tick / cpu_per_tick
    report(
        "live_socket_to_kernel",
        {
            "instruments": INSTRUMENTS,
            "connections": len(source.status),
            "ticks": ticks,
            "ticks_per_s": ticks / wall,
            "cpu_us_per_tick": cpu_per_tick * 1e6,
            "core_share_at_10k_ticks_per_s": cpu_per_tick * 10_000,
            "core_share_at_kite_max": cpu_per_tick * KITE_MAX_TICKS_PER_S,
            "kiteconnect_parse_us_per_tick": base_per_tick * 1e6,
            "ratio": ratio,
        },
    )
    assert ratio >= GATE_RATIO, f"{ratio:.0f}x"
