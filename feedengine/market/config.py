"""What to simulate: :class:`SimConfig`, its checks, and the symbols file that names a universe."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CHUNK_SECONDS",
    "DEFAULT_DATE",
    "DEFAULT_END",
    "DEFAULT_INSTRUMENTS",
    "DEFAULT_START",
    "DEFAULT_TICKS_PER_INSTRUMENT",
    "EXCHANGES",
    "FRAME_MS",
    "MODES",
    "SimConfig",
    "SimConfigError",
    "read_symbols_file",
]

#: A Monday: an ordinary NSE trading day.
DEFAULT_DATE = dt.date(2024, 1, 15)
#: NSE's pre-open starts at 09:00; a few after-close ticks arrive until about 15:35.
DEFAULT_START = dt.time(9, 0)
DEFAULT_END = dt.time(15, 35)
DEFAULT_INSTRUMENTS = 50
#: Default tick budget per instrument: a busy real day is about 20 M ticks over 3000
#: subscribed instruments.
DEFAULT_TICKS_PER_INSTRUMENT = 20_000_000 // 3000
#: Kite batches ticks into a message a few times a second; every 250 ms gives the 100-500
#: packets a message of a 3000-instrument subscription carries.
FRAME_MS = 250
#: Session seconds generated at a time. Bounds memory (a 20 M-tick day has ~30 k ticks in
#: 30 s, ~100 MB of working arrays); larger chunks are no faster (they fall out of cache).
CHUNK_SECONDS = 30
#: Detail levels a subscriber asks for: every tick field (``full``), no order book
#: (``quote``), the last price only (``ltp``), or the three by turns over the instruments.
MODES = ("full", "quote", "ltp", "mixed")
#: Exchange names a symbols file may use (``INDICES`` names an NSE index).
EXCHANGES = ("NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX", "NCO", "INDICES")

_CLASS_COUNTS = ("indices", "nfo", "cds", "mcx", "nco")


class SimConfigError(ValueError):
    """A simulator configuration or symbols file that cannot be used (one-line message)."""


@dataclass(frozen=True)
class SimConfig:
    """What to simulate.

    Parameters
    ----------
    instruments
        Size of the generated universe (default 50); must be ``None`` with ``symbols``.
    ticks
        Target number of ticks for the whole session (approximate; default
        :data:`DEFAULT_TICKS_PER_INSTRUMENT` per instrument).
    date
        Trading date (IST).
    start, end
        Simulated window, IST wall-clock times on ``date``; ``end`` after ``start``.
    mode
        Detail of the ticks sent (:data:`MODES`): ``full`` (every field: Kite's 184-byte
        packets, 32-byte index full), ``quote`` (no order book: 44 / 28 bytes), ``ltp`` (the
        last price: 8 bytes) or ``mixed`` (full, quote and ltp by turns over the
        instruments).
    seed
        Seed of the random generator; the same config gives the same messages.
    indices, nfo, cds, mcx, nco
        Instruments of each kind in a generated universe (``None``: a few, growing with
        ``instruments``); the rest are NSE stocks. Must be ``None`` with ``symbols``.
    symbols
        ``(exchange, tradingsymbol)`` pairs: the universe is exactly these (see
        :func:`read_symbols_file`).
    frame_ms
        Message interval: ticks received in a window go out in one message at its end.
        Up to 500 ms every tick still reaches the engine within its 2 s grace.
    chunk_seconds
        Session seconds generated at a time (memory bound; changes the random stream).
    created_utc
        Fixes the tick file's ``created_utc`` header field (default: now), for
        byte-identical files.
    """

    instruments: int | None = None
    ticks: int | None = None
    date: dt.date = DEFAULT_DATE
    start: dt.time = DEFAULT_START
    end: dt.time = DEFAULT_END
    mode: str = "full"
    seed: int = 1
    indices: int | None = None
    nfo: int | None = None
    cds: int | None = None
    mcx: int | None = None
    nco: int | None = None
    symbols: tuple[tuple[str, str], ...] | None = None
    frame_ms: int = FRAME_MS
    chunk_seconds: int = CHUNK_SECONDS
    created_utc: str | None = None

    def __post_init__(self) -> None:
        counts = self.class_counts
        if self.mode not in MODES:
            raise SimConfigError(f"unknown mode {self.mode!r} (choose from {', '.join(MODES)})")
        if self.symbols is not None:
            if not self.symbols:
                raise SimConfigError("the symbols list is empty")
            given = [k for k, v in counts.items() if v is not None]
            if self.instruments is not None or given:
                names = ", ".join(
                    ["instruments", *given] if self.instruments is not None else given
                )
                raise SimConfigError(f"{names} cannot be combined with a symbols list")
        elif self.instruments is not None and self.instruments < 1:
            raise SimConfigError(f"instruments must be at least 1, not {self.instruments}")
        for name, value in counts.items():
            if value is not None and value < 0:
                raise SimConfigError(f"{name} must not be negative, not {value}")
        if self.symbols is None:
            explicit = sum(v for v in counts.values() if v is not None)
            if explicit > self.n_instruments:
                raise SimConfigError(
                    f"{explicit} indices and derivatives do not fit in "
                    f"{self.n_instruments} instruments"
                )
        if self.ticks is not None and self.ticks < 0:
            raise SimConfigError(f"ticks must not be negative, not {self.ticks}")
        if self.end <= self.start:
            raise SimConfigError(f"end {self.end:%H:%M} is not after start {self.start:%H:%M}")
        if not 10 <= self.frame_ms <= 60_000:
            raise SimConfigError(f"frame interval must be 10-60000 ms, not {self.frame_ms}")
        if not 10 <= self.chunk_seconds <= 600:
            raise SimConfigError(f"chunk must be 10-600 s, not {self.chunk_seconds}")
        if self.seed < 0:
            raise SimConfigError(f"seed must not be negative, not {self.seed}")

    @property
    def class_counts(self) -> dict[str, int | None]:
        """The configured ``indices``, ``nfo``, ``cds``, ``mcx`` and ``nco`` counts."""
        return {name: getattr(self, name) for name in _CLASS_COUNTS}

    @property
    def n_instruments(self) -> int:
        """Number of instruments in the universe."""
        if self.symbols is not None:
            return len(self.symbols)
        return DEFAULT_INSTRUMENTS if self.instruments is None else self.instruments

    @property
    def target_ticks(self) -> int:
        """The session's tick target."""
        if self.ticks is not None:
            return self.ticks
        return DEFAULT_TICKS_PER_INSTRUMENT * self.n_instruments

    def as_json(self) -> dict[str, Any]:
        """The config as JSON-able values (stored in the tick file header)."""
        d = asdict(self)
        d["date"] = self.date.isoformat()
        d["start"] = self.start.strftime("%H:%M:%S")
        d["end"] = self.end.strftime("%H:%M:%S")
        d["instruments"] = self.n_instruments
        d["ticks"] = self.target_ticks
        d["symbols"] = None if self.symbols is None else [list(s) for s in self.symbols]
        del d["created_utc"]
        return d


def read_symbols_file(path: os.PathLike[str] | str) -> tuple[tuple[str, str], ...]:
    """Read a symbols file: one ``EXCHANGE:SYMBOL`` or ``SYMBOL`` (NSE) a line.

    Blank lines and ``#`` comments are skipped; names are upper-cased and duplicates
    dropped.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    tuple of (str, str)
        ``(exchange, tradingsymbol)`` pairs in file order.

    Raises
    ------
    SimConfigError
        The file cannot be read, names an unknown exchange, or lists no symbol.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SimConfigError(f"cannot read symbols file {path}: {reason}") from None
    seen: dict[tuple[str, str], None] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        exchange, sep, symbol = line.partition(":")
        if not sep:
            exchange, symbol = "NSE", line
        exchange, symbol = exchange.strip().upper(), symbol.strip().upper()
        if exchange not in EXCHANGES:
            raise SimConfigError(
                f"{path}:{lineno}: unknown exchange {exchange!r} (one of {', '.join(EXCHANGES)})"
            )
        if not symbol:
            raise SimConfigError(f"{path}:{lineno}: no symbol after {exchange}:")
        seen.setdefault((exchange, symbol), None)
    if not seen:
        raise SimConfigError(f"symbols file {path} lists no symbol")
    return tuple(seen)
