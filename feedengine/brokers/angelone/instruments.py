"""Angel One's instruments: the scrip master, its daily cache, and symbols as users write them.

The scrip master (:data:`~feedengine.brokers.angelone.config.SCRIP_MASTER_URL`) is one
JSON array of every instrument of every exchange: rows with ``token``, ``symbol``,
``name``, ``expiry``, ``strike``, ``lotsize``, ``instrumenttype``, ``exch_seg`` and
``tick_size``. It is downloaded once per day and URL into the data directory, or read from a
file given on the command line (the same format; a trimmed copy is fine). A symbol is
``EXCHANGE:SYMBOL`` with the scrip master's ``exch_seg`` and ``symbol``
(``NSE:RELIANCE-EQ``), NSE by default; on NSE a bare equity name stands for its ``-EQ``
series (``RELIANCE`` is ``RELIANCE-EQ``), so a Kite symbols file works unchanged.

An instrument's integer key, ``(exchange_type << 32) | int(token)``, is what the
broker-neutral core resolves slots by: the WebSocket names an instrument by its exchange
type (byte 1) and token (bytes 2..27), and a token alone is unique only within one exchange
type.
"""

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from feedengine.brokers.angelone.wire import PRICE_DECIMALS, ExchangeType
from feedengine.errors import InstrumentsError
from feedengine.instruments import resolve as core_resolve

log = logging.getLogger(__name__)

#: The scrip master's ``exch_seg`` → WebSocket 2.0 ``exchangeType``: the SDK's constants
#: (``SmartWebSocketV2.NSE_CM`` = 1 nse_cm, 2 nse_fo, 3 bse_cm, 4 bse_fo, 5 mcx_fo, 7 ncx_fo,
#: 13 cde_fo), by the segment each names. Rows of other segments (``NCO``) are skipped.
EXCHANGE_TYPES = {"NSE": 1, "NFO": 2, "BSE": 3, "BFO": 4, "MCX": 5, "NCDEX": 7, "CDS": 13}
EXCHANGES = {v: k for k, v in EXCHANGE_TYPES.items()}
#: The session (``feedengine.sessions``) of each exchange: its own, except NCDEX, whose
#: commodities trade in the commodity session as Kite's NCO.
MARKETS = {"NCDEX": "NCO"}
#: Fields of a scrip master row kept in the daily cache (the download is ~40 MB).
CACHED_FIELDS = ("token", "symbol", "name", "exch_seg", "instrumenttype", "expiry", "tick_size")
#: Seconds to wait for the scrip master's download.
DOWNLOAD_TIMEOUT_S = 120.0
_TOKEN = re.compile(r"[1-9][0-9]{0,9}")


@dataclass(frozen=True)
class AngelInstrument:
    """One subscribable instrument: its token within an exchange type, and its names."""

    token: str
    exchange_type: int
    tradingsymbol: str
    exchange: str

    @property
    def key(self) -> int:
        """``(exchange_type << 32) | int(token)``: one integer per instrument."""
        return (self.exchange_type << 32) | int(self.token)

    @property
    def decimals(self) -> int:
        """Decimals of this instrument's price units (7 for currencies, else 2)."""
        return PRICE_DECIMALS[ExchangeType(self.exchange_type)]

    @property
    def market(self) -> str:
        """The session key (``feedengine.sessions``) of the instrument."""
        return MARKETS.get(self.exchange, self.exchange)

    @classmethod
    def from_dict(cls, d: Any) -> "AngelInstrument":
        """From a tick-file meta entry (:meth:`to_dict`).

        Raises
        ------
        InstrumentsError
            A field missing or of the wrong kind (the message names the entry).
        """
        try:
            inst = cls(str(d["token"]), int(d["exchange_type"]), d["tradingsymbol"], d["exchange"])
        except (KeyError, TypeError, ValueError):
            raise InstrumentsError(
                f"Angel One instrument {d!r:.120}: needs token, exchange_type, tradingsymbol "
                "and exchange"
            ) from None
        if (
            not _TOKEN.fullmatch(inst.token)
            or int(inst.token) >= 1 << 32
            or EXCHANGES.get(inst.exchange_type) != inst.exchange
            or not isinstance(inst.tradingsymbol, str)
            or not inst.tradingsymbol
        ):
            raise InstrumentsError(
                f"Angel One instrument {d!r:.120}: needs a numeric token below 2**32, an "
                "exchange_type matching its exchange, and a tradingsymbol"
            )
        return inst

    @classmethod
    def from_key(cls, key: int, tradingsymbol: str) -> "AngelInstrument":
        """The instrument of an integer key (its exchange from the exchange type).

        Raises
        ------
        InstrumentsError
            The key's exchange type is not one Angel One has.
        """
        exchange = EXCHANGES.get(key >> 32)
        if exchange is None:
            raise InstrumentsError(f"key {key}: exchange type {key >> 32} is not Angel One's")
        return cls(str(key & 0xFFFF_FFFF), key >> 32, tradingsymbol, exchange)

    def to_dict(self) -> dict[str, Any]:
        """As a tick-file meta entry (SPEC section 3)."""
        return {
            "token": self.token,
            "exchange_type": self.exchange_type,
            "tradingsymbol": self.tradingsymbol,
            "exchange": self.exchange,
        }


def parse_scrip_master(data: bytes, where: str) -> list[AngelInstrument]:
    """The instruments of a scrip master's JSON text (rows of unknown segments skipped).

    Raises
    ------
    InstrumentsError
        Not JSON, not an array of rows, or no row of a known segment.
    """
    return _instruments(_rows(data, where), where)


def _rows(data: bytes, where: str) -> list[Any]:
    try:
        rows = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InstrumentsError(f"{where}: not a scrip master (bad JSON: {e})") from None
    if not isinstance(rows, list):
        raise InstrumentsError(f"{where}: not a scrip master (not a JSON array of rows)")
    return rows


def _instruments(rows: list[Any], where: str) -> list[AngelInstrument]:
    out = []
    odd = 0
    for row in rows:
        if not isinstance(row, dict):
            odd += 1
            continue
        segment = row.get("exch_seg")
        token, symbol = row.get("token"), row.get("symbol")
        if segment not in EXCHANGE_TYPES:
            continue
        if (
            not isinstance(token, str)
            or not _TOKEN.fullmatch(token)
            or int(token) >= 1 << 32
            or not isinstance(symbol, str)
            or not symbol
        ):
            odd += 1
            continue
        out.append(AngelInstrument(token, EXCHANGE_TYPES[segment], symbol, segment))
    if odd:
        log.warning("%s: %d rows without a numeric token or a symbol were skipped", where, odd)
    if not out:
        raise InstrumentsError(f"{where}: no instrument of {', '.join(EXCHANGE_TYPES)}")
    return out


def read_scrip_master(path: Path) -> list[AngelInstrument]:
    """The instruments of a scrip master file (a download, or the daily cache).

    Raises
    ------
    InstrumentsError
        The file cannot be read or is not a scrip master.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InstrumentsError(f"cannot read scrip master {path}: {e.strerror}") from None
    return parse_scrip_master(data, str(path))


def cache_path(cache_dir: Path, day: date, url: str) -> Path:
    """The day's cached scrip master from ``url``.

    Keyed by the URL's host too: a run against the local Angel server must not leave its
    tokens for a real run the same day.
    """
    return cache_dir / f"angelone-scripmaster-{day:%Y-%m-%d}-{_host(url)}.json"


def _host(url: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", urlsplit(url).netloc or url).strip("_")


def fetch_scrip_master(
    url: str, cache_dir: Path, day: date, *, timeout_s: float = DOWNLOAD_TIMEOUT_S
) -> list[AngelInstrument]:
    """Angel One's scrip master, downloaded once per day and URL into ``cache_dir``.

    The cache keeps the :data:`CACHED_FIELDS` of the known segments' rows; earlier days'
    caches of the same host are removed when a new one is written.

    Raises
    ------
    InstrumentsError
        The download failed or is not a scrip master (the message says why).
    """
    cache = cache_path(cache_dir, day, url)
    if cache.exists():
        return read_scrip_master(cache)
    try:
        response = requests.get(url, timeout=timeout_s)
        response.raise_for_status()
    except requests.RequestException as e:
        raise InstrumentsError(
            f"cannot download Angel One's scrip master from {url}: {e}"
        ) from None
    rows = _rows(response.content, url)
    instruments = _instruments(rows, url)
    kept = [
        {k: row.get(k, "") for k in CACHED_FIELDS}
        for row in rows
        if isinstance(row, dict) and row.get("exch_seg") in EXCHANGE_TYPES
    ]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(cache, orjson.dumps(kept))
        for old in cache_dir.glob(f"angelone-scripmaster-*-{_host(url)}.json"):
            if old.name < cache.name:
                old.unlink(missing_ok=True)
    except OSError as e:  # the list is in hand; only tomorrow's first run pays again
        log.warning("cannot cache Angel One's scrip master in %s: %s", cache_dir, e.strerror)
    return instruments


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (processes may race; neither tears it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def nse_equity(exchange: str, symbol: str) -> str | None:
    """On NSE a bare equity name stands for its ``-EQ`` series (``RELIANCE-EQ``)."""
    return f"{symbol}-EQ" if exchange == "NSE" and not symbol.endswith("-EQ") else None


def resolve(
    symbols: list[str], available: list[AngelInstrument], where: str, skip_unknown: bool = False
) -> list[AngelInstrument]:
    """The instruments named by ``symbols`` (``NSE:RELIANCE-EQ``, ``RELIANCE``), in order.

    Raises
    ------
    InstrumentsError
        Unknown symbols (all named), or a symbol that cannot be parsed.
    """
    return core_resolve(symbols, available, where, skip_unknown, alias=nse_equity)
