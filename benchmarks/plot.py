"""Draw docs/performance.png from the JSON that ``make bench`` writes to benchmarks/results/.

Left: throughput of each stage against its same-process baseline (log scale, ratio on the
bar). Right: live latency, bucket end + grace to row committed, against the 250 ms target.
Run: ``.venv/bin/python benchmarks/plot.py`` (needs matplotlib: ``pip install '.[bench]'``).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).parent / "results"
OUT = Path(__file__).parent.parent / "docs" / "performance.png"


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def main() -> int:
    try:
        quote, full = load("decode_quote"), load("decode_full")
        agg, day, live = load("decode_aggregate"), load("full_day_replay"), load("live_latency")
        flush = load("flush")
    except FileNotFoundError as e:
        print(f"plot: missing {e.filename}: run `make bench` first", file=sys.stderr)
        return 1
    stages = [
        (
            "decode quote",
            quote["ours_ticks_per_s"],
            quote["kiteconnect_ticks_per_s"],
            "ticks/s",
            None,
        ),
        ("decode full", full["ours_ticks_per_s"], full["kiteconnect_ticks_per_s"], "ticks/s", None),
        (
            "decode+candles",
            agg["ours_ticks_per_s"],
            agg["reference_ticks_per_s"],
            "ticks/s",
            agg["target_ticks_per_s"],
        ),
        (
            "day -> PostgreSQL",
            day["ticks_per_s"],
            day["baseline_ticks_per_s"],
            "ticks/s",
            day["target_ticks_per_s"],
        ),
        (
            "flush rows",
            flush["ours_rows_per_s"],
            flush["executemany_rows_per_s"],
            "rows/s",
            flush["bare_copy_rows_per_s"] * flush["target_vs_bare"],
        ),
    ]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [2.2, 1]}
    )
    y = range(len(stages))
    left.barh(
        [i + 0.2 for i in y],
        [s[1] for s in stages],
        height=0.4,
        color="#1f77b4",
        label="feedengine",
    )
    left.barh(
        [i - 0.2 for i in y],
        [s[2] for s in stages],
        height=0.4,
        color="#bbbbbb",
        label="baseline (kiteconnect / plain Python / executemany)",
    )
    for i, (_, ours, base, unit, target) in enumerate(stages):
        left.text(
            ours * 1.15,
            i + 0.2,
            f"{ours / 1e6:.2f} M {unit}  ({ours / base:,.0f}x)",
            va="center",
            fontsize=9,
        )
        if target:
            left.plot(
                [target, target],
                [i - 0.45, i + 0.45],
                color="red",
                linewidth=2,
                label="target" if i == 2 else None,
            )
    left.set_yticks(list(y), [s[0] for s in stages])
    left.set_xscale("log")
    left.set_xlim(1e4, 1e10)
    left.set_title("Throughput, same-process baselines")
    left.legend(loc="lower right", fontsize=8)
    left.invert_yaxis()
    names = ["p50", "p99", "max"]
    values = [live["p50_ms"], live["p99_ms"], live["max_ms"]]
    right.bar(names, values, color=["#2ca02c", "#1f77b4", "#ff7f0e"])
    right.axhline(live["target_p99_ms"], color="red", linestyle="--", label="p99 target")
    for i, v in enumerate(values):
        right.text(i, v + 3, f"{v:.0f} ms", ha="center", fontsize=9)
    right.set_ylim(0, live["target_p99_ms"] * 1.2)
    right.set_title(f"Live: {live['instruments']:,} instruments, {live['connections']} connections")
    right.set_ylabel("bucket end + grace -> row committed (ms)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
