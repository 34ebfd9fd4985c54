"""Decode throughput against ``KiteTicker._parse_binary`` (SPEC section 9).

Messages of realistic size: 300 packets of NSE quotes or full packets with depth, as Kite
sends them for a busy subscription.
"""

import numpy as np
import pytest
from kiteconnect import KiteTicker

from feedengine.brokers.kite import _wire
from feedengine.brokers.kite import reference as ref
from feedengine.brokers.kite.dtypes import TICK_DTYPE

from .conftest import MODE, best_time, run_benchmark

PACKETS = 300
#: (packet length, SPEC target ratio, quick-gate ratio for make test)
CASES = {"quote": (44, 300, 100), "full": (184, 1000, 300)}


def realistic_message(plen: int, n: int) -> bytes:
    rng = np.random.default_rng(7)
    packets = []
    for i in range(n):
        t = ref.empty_tick()
        price = int(rng.integers(10_000, 500_000))
        t.update(
            packet_length=plen,
            instrument_token=(1000 + i) << 8 | 1,
            last_price=price,
            last_traded_quantity=int(rng.integers(1, 500)),
            average_traded_price=price,
            volume_traded=int(rng.integers(0, 10**7)),
            total_buy_quantity=123456,
            total_sell_quantity=654321,
            open=price,
            high=price + 500,
            low=price - 500,
            close=price - 100,
            last_trade_time=1_705_290_000 + i,
            exchange_timestamp=1_705_290_001 + i,
        )
        for side, sign in (("bid", -1), ("ask", 1)):
            t[f"{side}_price"] = [price + sign * 5 * (k + 1) for k in range(5)]
            t[f"{side}_quantity"] = [int(q) for q in rng.integers(1, 1000, 5)]
            t[f"{side}_orders"] = [int(o) for o in rng.integers(1, 20, 5)]
        packets.append(ref.encode_packet(t))
    return ref.encode_message(packets)


@pytest.mark.parametrize("kind", list(CASES))
def test_decode_vs_kiteconnect(benchmark, kind, seconds, report):
    plen, target, gate = CASES[kind]
    message = realistic_message(plen, PACKETS)
    out = np.empty(PACKETS, TICK_DTYPE)
    ticker = KiteTicker("key", "token")

    def ours():
        _wire.decode_into(message, 0, out, 0)

    ours_s = run_benchmark(benchmark, ours)
    ours_s = min(ours_s, best_time(ours, seconds))
    kite_s = best_time(lambda: ticker._parse_binary(message), seconds)
    ratio = kite_s / ours_s
    benchmark.extra_info.update(ratio=ratio, target=target)
    report(
        f"decode_{kind}",
        {
            "packets_per_message": PACKETS,
            "ours_ticks_per_s": PACKETS / ours_s,
            "kiteconnect_ticks_per_s": PACKETS / kite_s,
            "ratio": ratio,
            "target": target,
            "gate": gate,
        },
    )
    assert ratio >= (gate if MODE == "gate" else target), f"{ratio:.0f}x"
