"""The candle engine: instruments and sessions around the compiled kernel (SPEC section 4).

:class:`CandleEngine` maps instruments to kernel slots, feeds decoded tick batches to
:class:`feedengine._candles.CandleKernel`, waits when its candle ring is full (back-pressure
from the flusher), and saves or restores the kernel state as a checkpoint.
"""

import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feedengine import _candles
from feedengine.dtypes import EXCHANGE_BYTES, RECORD_DTYPE, SYMBOL_BYTES
from feedengine.errors import CheckpointError
from feedengine.instruments import Instrument
from feedengine.sessions import DEFAULT_SESSIONS, NS_PER_S, Session
from feedengine.slots import SlotTable
from feedengine.source import Gap

log = logging.getLogger(__name__)

#: The candle intervals of the seed service, in minutes.
DEFAULT_INTERVALS = (1, 5, 15)
#: Ticks reach clients up to about 2 s after their exchange time (SPEC section 4).
DEFAULT_GRACE_S = 2.0
#: Candle rows the ring holds: minutes of output for 9000 instruments x 4 intervals.
DEFAULT_RING_ROWS = 1 << 17
#: Longest candle: one IST day.
MAX_INTERVAL_MIN = 24 * 60
#: Checkpoint file format version, stored in the file.
CHECKPOINT_VERSION = 1


def parse_intervals(text: str) -> list[int]:
    """Parse ``"1,5,15"`` into distinct positive minute counts, in the given order.

    Raises
    ------
    ValueError
        Naming the bad item.
    """
    out: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item.isdigit() or not 1 <= int(item) <= MAX_INTERVAL_MIN:
            raise ValueError(
                f"bad interval {item!r}: expected whole minutes from 1 to "
                f"{MAX_INTERVAL_MIN}, comma-separated (e.g. 1,5,15)"
            )
        if int(item) in out:
            raise ValueError(f"interval {item} is listed twice")
        out.append(int(item))
    return out


@dataclass(frozen=True)
class CandleConfig:
    """What the candles are: intervals (minutes), sessions by exchange, grace."""

    intervals: tuple[int, ...] = DEFAULT_INTERVALS
    sessions: dict[str, Session] = field(default_factory=lambda: dict(DEFAULT_SESSIONS))
    grace_s: float = DEFAULT_GRACE_S
    ring_rows: int = DEFAULT_RING_ROWS


class CandleEngine:
    """Instruments x intervals of OHLC state, fed decoded tick batches.

    Parameters
    ----------
    instruments
        The instrument map; a tick of any other instrument is counted as unknown.
    config
        Intervals, sessions and grace.

    Notes
    -----
    ``wait`` callbacks block until the consumer has drained rows from the ring (or raise if
    the consumer failed); the engine calls them only while the ring is full.
    """

    def __init__(self, instruments: Sequence[Instrument], config: CandleConfig) -> None:
        if not instruments:
            raise ValueError("no instruments to build candles for")
        self.instruments = list(instruments)
        self.config = config
        self.symbols = [i.tradingsymbol for i in instruments]
        encoded = [s.encode() for s in self.symbols]
        too_long = [s for s, b in zip(self.symbols, encoded, strict=True) if len(b) > SYMBOL_BYTES]
        if too_long:
            raise ValueError(f"trading symbols longer than {SYMBOL_BYTES} bytes: {too_long}")
        self._symbol_bytes = np.array(encoded, f"S{SYMBOL_BYTES}")
        self._slot_of = {i.key: slot for slot, i in enumerate(instruments)}
        exchanges = sorted(
            {i.exchange for i in instruments if len(i.exchange.encode()) > EXCHANGE_BYTES}
        )
        if exchanges:
            raise ValueError(f"exchange codes longer than {EXCHANGE_BYTES} bytes: {exchanges}")
        self._exchange_bytes = np.array(
            [i.exchange.encode() for i in instruments], f"S{EXCHANGE_BYTES}"
        )
        self._decimals = np.array([i.decimals for i in instruments], np.uint8)
        #: Each instrument's price divisor (prices are integer units of ``1/divisor``).
        self.divisors = 10 ** self._decimals.astype(np.int64)
        self._minutes = np.array(config.intervals, np.int16)
        sessions = [config.sessions[i.market] for i in instruments]
        #: Where the decoders look up each instrument's slot.
        self.slot_table = SlotTable.build([i.key for i in instruments])
        self.kernel = _candles.CandleKernel(
            [i.key for i in instruments],
            [s.open_s for s in sessions],
            [s.close_s for s in sessions],
            list(config.intervals),
            grace_ns=int(config.grace_s * NS_PER_S),
            ring_capacity=config.ring_rows,
        )

    @property
    def intervals(self) -> tuple[int, ...]:
        return self.config.intervals

    def process(self, ticks: np.ndarray, wait: Callable[[], None]) -> None:
        """Apply decoded ``KTICK_DTYPE`` ticks in order, waiting whenever the ring is full."""
        i, n = 0, len(ticks)
        while i < n:
            i = self.kernel.process(ticks, i, n)
            if i < n:
                wait()

    def mark_gap(self, keys: Sequence[int]) -> None:
        """These instruments received nothing for a while: the next candle of each interval
        counts its volume from its own first tick, not from before the gap (whose volume it
        would otherwise carry). A candle that continues across the gap keeps its own."""
        slots = [self._slot_of[k] for k in keys if k in self._slot_of]
        self.kernel.mark_gap(np.array(slots, np.int32))

    def take_late(self) -> Gap | None:
        """The instruments with ticks too late for their candles since the last call, and
        the span of those ticks' event times (None when there were none)."""
        slots, first_ns, last_ns = self.kernel.take_late()
        if not len(slots):
            return None
        keys = tuple(self.instruments[s].key for s in slots.tolist())
        return Gap(keys, int(first_ns.min()), int(last_ns.max()) + 1, "ticks came too late")

    def advance_clock(self, now_ns: int, wait: Callable[[], None]) -> None:
        """Close the candles whose end + grace is before ``now_ns``."""
        while not self.kernel.advance_clock(now_ns):
            wait()

    def finalize(self, wait: Callable[[], None]) -> None:
        """Emit every open candle as complete (end of a replay)."""
        while not self.kernel.finalize():
            wait()

    def snapshot_open(self, wait: Callable[[], None]) -> None:
        """Emit open candles as in-progress rows, leaving them open (graceful stop)."""
        done, pos = len(self.kernel.bars), 0
        while pos < done:
            pos = self.kernel.snapshot_open(pos)
            if pos < done:
                wait()

    def resolve(self, rows: np.ndarray) -> np.ndarray:
        """Kernel rows (``CANDLE_ROW_DTYPE``) as storable ``RECORD_DTYPE`` records."""
        out = np.empty(len(rows), RECORD_DTYPE)
        for name in ("bucket_start_ns", "volume", "open", "high", "low", "close", "final"):
            out[name] = rows[name]
        out["minutes"] = self._minutes[rows["interval"]]
        out["decimals"] = self._decimals[rows["slot"]]
        out["symbol"] = self._symbol_bytes[rows["slot"]]
        out["exchange"] = self._exchange_bytes[rows["slot"]]
        return out

    def counters(self) -> dict[str, int]:
        """Ticks, unknown, pre-open, after-close, rows, and late ticks per interval."""
        out = dict(zip(_candles.COUNTER_NAMES, self.kernel.counters.tolist(), strict=True))
        for minutes, late in zip(self.intervals, self.kernel.late.tolist(), strict=True):
            out[f"late_{minutes}m"] = late
        return out

    # --- checkpoints --------------------------------------------------------------------

    def save_checkpoint(
        self, path: os.PathLike[str] | str, position: dict[str, str | int] | None = None
    ) -> None:
        """Write the kernel state and the source ``position`` atomically (fsync, rename).

        Raises
        ------
        CheckpointError
            The file cannot be written (a full disk ...); the previous checkpoint, if any,
            is left as it was.
        """
        path = Path(path)
        state: dict[str, Any] = self.kernel.state()
        for key, value in (position or {}).items():
            state[f"position_{key}"] = np.array(value)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, version=CHECKPOINT_VERSION, **state)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            raise CheckpointError(
                f"cannot write checkpoint {path}: {e.strerror or e}; the open candles were "
                "written as in-progress rows, but a restart cannot resume them"
            ) from None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def load_checkpoint(
        self, path: os.PathLike[str] | str, accept: Callable[[dict[str, str | int]], bool]
    ) -> bool:
        """Resume candles from a checkpoint written by :meth:`save_checkpoint`.

        ``accept`` sees the source position stored with it and decides whether the
        checkpoint applies (the source resumes from it); returns what it decided.

        Intervals of the checkpoint that this engine lacks are dropped (their open candles
        stay as written at the stop) and new ones start empty; both are logged.

        Raises
        ------
        CheckpointError
            The file is not a readable checkpoint of this version.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
            version = int(state.pop("version", -1))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(
                f"{path} is not a readable checkpoint ({e}); move it aside to start afresh"
            ) from None
        if version != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint version {version} is not {CHECKPOINT_VERSION}; move it "
                "aside to start afresh"
            )
        position = {
            k[len("position_") :]: state.pop(k).item()
            for k in list(state)
            if k.startswith("position_")
        }
        if not accept(position):
            return False
        saved = [int(m) for m in state["intervals"]]
        dropped = [m for m in saved if m not in self.intervals]
        added = [m for m in self.intervals if m not in saved]
        if dropped:
            log.warning(
                "checkpoint %s has %s-minute candles this run does not build: their open "
                "candles stay as written at the stop",
                path,
                ",".join(map(str, dropped)),
            )
        if added:
            log.info("%s-minute candles start afresh", ",".join(map(str, added)))
        self.kernel.restore(state)
        return True
