"""Instruments: token, trading symbol and exchange, and where they come from."""

import csv
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from feedengine.errors import InstrumentsError
from feedengine.segments import exchange_of_segment, segment_of


@dataclass(frozen=True)
class Instrument:
    """One subscribable instrument, as the instruments dump describes it."""

    instrument_token: int
    tradingsymbol: str
    exchange: str

    @property
    def segment(self) -> int:
        """The token's segment code (its low byte)."""
        return segment_of(self.instrument_token)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Instrument":
        """From a tick-file meta entry or an instruments-dump row."""
        token = int(d["instrument_token"])
        exchange = str(d.get("exchange") or exchange_of_segment(segment_of(token)))
        return cls(token, str(d["tradingsymbol"]), exchange.upper())

    def to_dict(self) -> dict[str, Any]:
        """As a tick-file meta entry."""
        return {
            "instrument_token": self.instrument_token,
            "tradingsymbol": self.tradingsymbol,
            "exchange": self.exchange,
        }


#: Columns of Kite's instruments dump that feedengine reads.
DUMP_COLUMNS = ("instrument_token", "tradingsymbol", "exchange")
#: Kite's REST root (``KITE_API_ROOT`` overrides it, for the local Kite server).
KITE_API_ROOT = "https://api.kite.trade"


def read_dump(path: Path) -> list[Instrument]:
    """Instruments from a CSV in the format of Kite's dump (``--instruments-csv``)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in DUMP_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InstrumentsError(
                    f"{path}: not an instruments dump (no column {', '.join(missing)})"
                )
            return [Instrument.from_dict(row) for row in reader if row["instrument_token"]]
    except OSError as e:
        raise InstrumentsError(f"cannot read instruments dump {path}: {e.strerror}") from None
    except ValueError as e:
        if isinstance(e, InstrumentsError):
            raise
        raise InstrumentsError(f"{path}: bad row in instruments dump ({e})") from None


def write_dump(path: Path, instruments: list[Instrument]) -> None:
    """Write a dump CSV atomically (the daily cache)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(DUMP_COLUMNS)
        for i in instruments:
            writer.writerow((i.instrument_token, i.tradingsymbol, i.exchange))
    os.replace(tmp, path)


def fetch_dump(
    api_key: str, access_token: str, cache_dir: Path, day: date, root: str | None = None
) -> list[Instrument]:
    """Kite's instruments dump, downloaded once per day into ``cache_dir``.

    Raises
    ------
    InstrumentsError
        When the download fails (the message says why).
    """
    cache = cache_dir / f"instruments-{day:%Y-%m-%d}.csv"
    if cache.exists():
        return read_dump(cache)
    from kiteconnect import KiteConnect  # REST client: only when a download is needed
    from kiteconnect.exceptions import KiteException

    kite = KiteConnect(api_key, access_token=access_token, root=root or KITE_API_ROOT)
    try:
        rows = kite.instruments()
    except KiteException as e:
        raise InstrumentsError(f"Kite refused the instruments dump: {e}") from None
    except OSError as e:
        raise InstrumentsError(f"cannot download the instruments dump: {e}") from None
    instruments = [Instrument.from_dict(r) for r in rows]
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_dump(cache, instruments)
    return instruments


def parse_symbol(text: str) -> tuple[str, str]:
    """``"NSE:INFY"`` or ``"INFY"`` (NSE by default) → ``("NSE", "INFY")``."""
    exchange, _, symbol = text.strip().partition(":") if ":" in text else ("", "", text)
    symbol = symbol.strip()
    if not symbol:
        raise InstrumentsError(f"bad symbol {text!r}: expected EXCHANGE:SYMBOL or SYMBOL")
    return (exchange.strip() or "NSE").upper(), symbol.upper()


def resolve(symbols: list[str], available: list[Instrument], where: str) -> list[Instrument]:
    """The instruments named by ``symbols``; every unknown one named in one error."""
    by_name = {(i.exchange, i.tradingsymbol.upper()): i for i in available}
    chosen: dict[int, Instrument] = {}
    unknown = []
    for text in symbols:
        inst = by_name.get(parse_symbol(text))
        if inst is None:
            unknown.append(text.strip())
        else:
            chosen.setdefault(inst.instrument_token, inst)
    if unknown:
        raise InstrumentsError(f"{len(unknown)} unknown symbol(s) in {where}: {', '.join(unknown)}")
    return list(chosen.values())


def read_symbols_file(path: Path) -> list[str]:
    """Symbols of a ``--symbols-file``: one a line, ``#`` starts a comment."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InstrumentsError(f"cannot read symbols file {path}: {e.strerror}") from None
    symbols = [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]
    if not symbols:
        raise InstrumentsError(f"symbols file {path} lists no symbols")
    return symbols
