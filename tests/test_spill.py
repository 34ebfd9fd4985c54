"""The spill file and the flusher's spill/retry: nothing lost, order kept, clear errors."""

import tracemalloc

import numpy as np
import pytest

from feedengine.candles import CandleConfig, CandleEngine
from feedengine.dtypes import RECORD_DTYPE
from feedengine.errors import SinkUnavailable, SpillError
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.simulator import SimConfig, simulate
from feedengine.sink import MemorySink
from feedengine.spill import MAX_BLOCK_ROWS, SpillFile
from tests.processes import cli


def records(n, start=0):
    r = np.zeros(n, RECORD_DTYPE)
    r["bucket_start_ns"] = (1_705_290_300 + 60 * np.arange(start, start + n)) * 10**9
    r["open"] = r["high"] = r["low"] = r["close"] = np.arange(start, start + n) + 100
    r["minutes"], r["decimals"], r["final"], r["symbol"], r["exchange"] = 1, 2, 1, b"INFY", b"NSE"
    return r


def test_append_and_read_back_in_order(tmp_path):
    spill = SpillFile(tmp_path / "s.bin")
    spill.append(records(3))
    spill.append(records(2, 3))
    again = SpillFile(tmp_path / "s.bin")
    assert again.rows == 5
    got = np.concatenate(list(again.blocks(4)))
    assert got["open"].tolist() == [100, 101, 102, 103, 104]
    again.clear()
    assert SpillFile(tmp_path / "s.bin").rows == 0


def test_torn_last_block_is_cut_off(tmp_path, caplog):
    path = tmp_path / "s.bin"
    spill = SpillFile(path)
    spill.append(records(3))
    spill.append(records(2, 3))
    path.write_bytes(path.read_bytes()[:-10])
    again = SpillFile(path)
    assert again.rows == 3 and "incomplete spilled block" in caplog.text
    again.append(records(1, 9))
    assert [int(r["open"]) for b in SpillFile(path).blocks(10) for r in b] == [100, 101, 102, 109]


def test_corrupt_block_before_the_end_is_an_error(tmp_path):
    path = tmp_path / "s.bin"
    spill = SpillFile(path)
    spill.append(records(3))
    spill.append(records(2, 3))
    data = bytearray(path.read_bytes())
    data[30] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SpillError, match="byte offset 12 fails its CRC"):
        SpillFile(path)
    path.write_bytes(b"NOTSPILL" + bytes(8))
    with pytest.raises(SpillError, match="not a spill file"):
        SpillFile(path)


def test_a_long_outage_is_loaded_and_drained_in_one_batch_of_memory(tmp_path):
    # 64 MB of spill (half a day of outage at 9,000 instruments x 3 intervals is ~330 MB).
    path = tmp_path / "s.bin"
    spill = SpillFile(path)
    block = records(MAX_BLOCK_ROWS)
    n_blocks = 64 * 2**20 // block.nbytes
    for i in range(n_blocks):
        block["volume"] = i
        spill.append(block)
    batch_bytes = MAX_BLOCK_ROWS * RECORD_DTYPE.itemsize
    seen = {"rows": 0, "volume": 0}

    def write(batch):
        seen["rows"] += len(batch)
        seen["volume"] += int(batch["volume"].sum())

    tracemalloc.start()
    try:
        loaded = SpillFile(path)
        loaded.drain(write, MAX_BLOCK_ROWS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen["rows"] == n_blocks * MAX_BLOCK_ROWS and loaded.rows == 0
    assert seen["volume"] == MAX_BLOCK_ROWS * n_blocks * (n_blocks - 1) // 2
    assert peak < 3 * batch_bytes, f"peak {peak / 2**20:.1f} MB for a {path.stat().st_size} B file"


def test_a_big_append_is_split_into_blocks_and_merged_back_in_order(tmp_path):
    spill = SpillFile(tmp_path / "s.bin")
    spill.append(records(2 * MAX_BLOCK_ROWS + 5))
    again = SpillFile(tmp_path / "s.bin")
    assert again.rows == 2 * MAX_BLOCK_ROWS + 5
    sizes = [len(b) for b in again.blocks(MAX_BLOCK_ROWS)]
    assert sizes == [MAX_BLOCK_ROWS, MAX_BLOCK_ROWS, 5]
    got = np.concatenate(list(again.blocks(10 * MAX_BLOCK_ROWS)))
    assert got["open"].tolist() == list(range(100, 100 + 2 * MAX_BLOCK_ROWS + 5))


class FlakySink(MemorySink):
    """Unavailable for the first ``failures`` writes; records every block it accepts."""

    def __init__(self, failures):
        super().__init__()
        self.failures = failures
        self.blocks = []

    def write(self, records):
        if self.failures:
            self.failures -= 1
            raise SinkUnavailable("server closed the connection")
        self.blocks.append(records.copy())
        super().write(records)


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    path = tmp_path_factory.mktemp("d") / "d.ticks"
    simulate(path, SimConfig(instruments=20, ticks=8000, seed=4))
    return path


def candle_order(blocks):
    return [(r["symbol"], r["minutes"], r["bucket_start_ns"]) for b in blocks for r in b]


def replay(path, sink, spill):
    source = ReplaySource(path)
    engine = CandleEngine(source.instruments, CandleConfig(ring_rows=64))
    pipeline = Pipeline(engine, sink, spill=spill, retry_first_s=0.001)
    return pipeline.run(source), pipeline


def test_outage_keeps_every_row_and_their_order(day, tmp_path):
    steady = FlakySink(0)
    replay(day, steady, None)
    flaky = FlakySink(5)
    summary, pipeline = replay(day, flaky, SpillFile(tmp_path / "s.bin"))
    assert pipeline.flusher.failures >= 5 and summary.spilled == 0
    assert flaky.candles == steady.candles
    assert candle_order(flaky.blocks) == candle_order(steady.blocks)


def test_spill_found_at_start_is_written_first(day, tmp_path):
    spill = SpillFile(tmp_path / "s.bin")
    old = records(2)
    old["symbol"] = b"OLDROWS"
    spill.append(old)
    sink = FlakySink(0)
    summary, _ = replay(day, sink, SpillFile(tmp_path / "s.bin"))
    assert sink.blocks[0]["symbol"].tolist() == [b"OLDROWS", b"OLDROWS"]
    assert summary.spilled == 0 and SpillFile(tmp_path / "s.bin").rows == 0


def test_a_retry_continues_after_the_batches_already_written(day, tmp_path):
    spill = SpillFile(tmp_path / "s.bin")
    n = MAX_BLOCK_ROWS // 2 + 1  # one block per batch
    for i in range(5):
        old = records(n, n * i)
        old["symbol"] = b"OLDROWS"
        spill.append(old)

    class FailsThirdWrite(FlakySink):
        def write(self, records):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 3:
                raise SinkUnavailable("server closed the connection")
            super().write(records)

    sink = FailsThirdWrite(0)
    summary, pipeline = replay(day, sink, SpillFile(tmp_path / "s.bin"))
    assert pipeline.flusher.failures == 1 and summary.spilled == 0
    old_rows = np.concatenate([b[b["symbol"] == b"OLDROWS"] for b in sink.blocks])
    # Each spilled row reached the sink once: the retry did not write blocks 1 and 2 again.
    assert old_rows["open"].tolist() == list(range(100, 100 + 5 * n))


def test_stop_with_rows_still_spilled_says_so_and_fails(day, tmp_path):
    proc = cli(
        "--replay",
        day,
        env={"PG_CONN_STR": "postgresql://nobody@127.0.0.1:1/none"},
        home=tmp_path / "home",
    )
    assert proc.returncode == 1
    assert "remain in the spill file" in proc.stdout
    assert SpillFile(tmp_path / "home" / "spill.bin").rows > 0
    assert "Traceback" not in proc.stderr
