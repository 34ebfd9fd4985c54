"""Build tick files from lean tick rows, for pipeline tests."""

from pathlib import Path

import numpy as np

from feedengine.brokers.kite import wire
from feedengine.brokers.kite.dtypes import TICK_DTYPE
from feedengine.tickfile import TickWriter, make_meta


def to_full_rows(kticks: np.ndarray) -> np.ndarray:
    rows = np.zeros(len(kticks), TICK_DTYPE)
    for name in (
        "recv_ns",
        "instrument_token",
        "last_price",
        "volume_traded",
        "exchange_timestamp",
        "last_trade_time",
        "packet_length",
        "segment",
    ):
        rows[name] = kticks[name]
    rows["high"] = kticks["day_high"]
    rows["low"] = kticks["day_low"]
    return rows


def write_tick_file(
    path: Path, kticks: np.ndarray, tokens: list[int], per_message: int = 3
) -> Path:
    """One message per run of up to ``per_message`` ticks with the same receive time."""
    instruments = [
        {"instrument_token": t, "tradingsymbol": f"SYM{t}", "exchange": ""} for t in tokens
    ]
    rows = to_full_rows(kticks)
    with TickWriter(path, make_meta("test", instruments)) as w:
        i = 0
        while i < len(rows):
            j = i + 1
            while (
                j < len(rows) and j - i < per_message and rows[j]["recv_ns"] == rows[i]["recv_ns"]
            ):
                j += 1
            w.write(int(rows[i]["recv_ns"]), wire.encode(rows[i:j]))
            if i % 7 == 0:
                w.write(int(rows[i]["recv_ns"]), b"\x00")  # a heartbeat now and then
            i = j
    return path
