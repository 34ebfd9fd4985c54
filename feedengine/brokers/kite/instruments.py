"""Kite's instruments: token, trading symbol and exchange; Kite's dump and its daily cache."""

import csv
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from feedengine.brokers.kite.segments import (
    DIVISORS,
    exchange_for,
    exchange_of_segment,
    segment_of,
)
from feedengine.errors import InstrumentsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KiteInstrument:
    """One subscribable instrument, as the instruments dump describes it."""

    instrument_token: int
    tradingsymbol: str
    exchange: str

    @property
    def segment(self) -> int:
        """The token's segment code (its low byte)."""
        return segment_of(self.instrument_token)

    @property
    def key(self) -> int:
        """The key the decoder resolves slots by: Kite's packets carry the token."""
        return self.instrument_token

    @property
    def decimals(self) -> int:
        """The price scale: prices are integer units of ``10**-decimals``."""
        return len(str(int(DIVISORS[self.segment]))) - 1

    @property
    def market(self) -> str:
        """The session key (``feedengine.sessions``) of the instrument."""
        return exchange_for(self.segment, self.exchange)

    @classmethod
    def from_dict(cls, d: Any) -> "KiteInstrument":
        """From a tick-file meta entry or an instruments-dump row.

        Raises
        ------
        InstrumentsError
            ``d`` lacks a field or has one of the wrong type (the message names it).
        """
        if not isinstance(d, dict):
            raise InstrumentsError(f"an instrument must be an object, not {d!r:.80}")
        try:
            token = int(d["instrument_token"])
            symbol = d["tradingsymbol"]
        except KeyError as e:
            raise InstrumentsError(f"instrument {d!r:.120} lacks {e.args[0]!r}") from None
        except (TypeError, ValueError):
            raise InstrumentsError(
                f"instrument {d!r:.120}: instrument_token is not a whole number"
            ) from None
        exchange = d.get("exchange") or exchange_of_segment(segment_of(token))
        if not 0 < token < 2**32 or not isinstance(symbol, str) or not symbol:
            raise InstrumentsError(
                f"instrument {d!r:.120}: needs a token from 1 to 2**32-1 and a non-empty "
                "tradingsymbol"
            )
        if not isinstance(exchange, str):
            raise InstrumentsError(f"instrument {d!r:.120}: exchange is not text")
        return cls(token, symbol, exchange.upper())

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


def read_dump(path: Path) -> list[KiteInstrument]:
    """Instruments from a CSV in the format of Kite's dump (``--instruments-csv``)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in DUMP_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InstrumentsError(
                    f"{path}: not an instruments dump (no column {', '.join(missing)})"
                )
            return [KiteInstrument.from_dict(row) for row in reader if row["instrument_token"]]
    except OSError as e:
        raise InstrumentsError(f"cannot read instruments dump {path}: {e.strerror}") from None
    except (InstrumentsError, UnicodeDecodeError) as e:
        raise InstrumentsError(f"{path}: bad row in instruments dump ({e})") from None


def write_dump(path: Path, instruments: list[KiteInstrument]) -> None:
    """Write a dump CSV atomically (the daily cache); processes may race, neither tears it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(DUMP_COLUMNS)
            for i in instruments:
                writer.writerow((i.instrument_token, i.tradingsymbol, i.exchange))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_cache_path(cache_dir: Path, day: date, root: str) -> Path:
    """The day's cached dump of the API at ``root``.

    Keyed by the API's host too: a run against the local Kite server must not leave its
    tokens for a real run the same day.
    """
    host = re.sub(r"[^A-Za-z0-9.-]+", "_", urlsplit(root).netloc or root).strip("_")
    return cache_dir / f"instruments-{day:%Y-%m-%d}-{host}.csv"


def fetch_dump(
    api_key: str, access_token: str, cache_dir: Path, day: date, root: str | None = None
) -> list[KiteInstrument]:
    """Kite's instruments dump, downloaded once per day and API root into ``cache_dir``.

    Raises
    ------
    InstrumentsError
        When the download fails (the message says why).
    """
    cache = dump_cache_path(cache_dir, day, root or KITE_API_ROOT)
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
    instruments = [KiteInstrument.from_dict(r) for r in rows]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_dump(cache, instruments)
    except OSError as e:  # the dump is in hand; only tomorrow's first run pays again
        log.warning("cannot cache the instruments dump in %s: %s", cache_dir, e.strerror)
    return instruments
