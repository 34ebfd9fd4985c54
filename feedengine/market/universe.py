"""The simulated universe: which instruments trade, their exchange tokens, tick and lot sizes.

A generated universe is mostly NSE stocks (the first ones real Nifty 50 names, then
``SYM0001`` ...), a few indices (``NIFTY 50``, ``NIFTY BANK`` ...), NFO futures, CDS currency
futures, MCX and NCO commodity futures; a symbols list gives exactly its instruments. Exchange
tokens are hashed from the symbol, so an instrument keeps its token from run to run and seed
to seed, whatever else is in the universe.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import IntEnum
from statistics import NormalDist

from feedengine.market.config import SimConfig
from feedengine.market.reference import (
    CURRENCIES,
    CURRENCY_TICK,
    EQUITY_TICK,
    INDEX_FUTURES,
    INDEX_TICK,
    INDICES,
    MCX_CONTRACTS,
    MONTHS,
    NCO_CONTRACTS,
    NIFTY50,
)

__all__ = ["MAX_LOT", "Kind", "Listing", "price_scale", "universe"]

#: Largest contract size given to a stock future (keeps a day's volume inside int32).
MAX_LOT = 10_000
#: Exchange tokens are hashed into this range (keeps tokens positive as int32).
TOKEN_SPACE = 1 << 22
#: Price units per rupee where not 100 (paise): currency derivatives quote to 7 decimals
#: on NSE, 4 on BSE, and NCO commodities to 4.
_SCALES = {"CDS": 10_000_000, "BCD": 10_000, "NCO": 10_000}
DEFAULT_SCALE = 100
#: The number of each listing in the token hash key. These are the codes the tokens were
#: first hashed with (Kite's segment codes): changing one changes every token of its listing.
_TOKEN_SALT = {"NSE": 1, "NFO": 2, "CDS": 3, "BSE": 4, "BFO": 5, "BCD": 6, "MCX": 7, "NCO": 12}
_INDEX_TOKEN_SALT = 9


class Kind(IntEnum):
    """How an instrument trades through the day (sessions, volume, open interest).

    Attributes
    ----------
    EQUITY
        A stock (NSE, BSE): pre-open auction, 09:15-15:30.
    DERIV
        An equity or index future (NFO, BFO): 09:15-15:30, open interest.
    INDEX
        An index: 09:15-15:30, no volume.
    CURRENCY
        A currency future (CDS, BCD): 09:00-17:00, open interest.
    COMMODITY
        A commodity future (MCX, NCO): 09:00-23:55, open interest.
    """

    EQUITY = 0
    DERIV = 1
    INDEX = 2
    CURRENCY = 3
    COMMODITY = 4


_KIND_OF_EXCHANGE = {
    "NSE": Kind.EQUITY,
    "BSE": Kind.EQUITY,
    "NFO": Kind.DERIV,
    "BFO": Kind.DERIV,
    "CDS": Kind.CURRENCY,
    "BCD": Kind.CURRENCY,
    "MCX": Kind.COMMODITY,
    "NCO": Kind.COMMODITY,
    "INDICES": Kind.INDEX,
}


@dataclass(frozen=True)
class Listing:
    """One instrument of the universe.

    Attributes
    ----------
    tradingsymbol
        Its name on the exchange.
    exchange
        ``NSE``, ``BSE``, ``NFO``, ``BFO``, ``CDS``, ``BCD``, ``MCX`` or ``NCO`` (an index is
        listed on ``NSE`` or ``BSE``).
    kind
        How it trades.
    exchange_token
        The exchange's number for it, in ``[1, TOKEN_SPACE)``; unique per exchange among
        indices and among the other instruments.
    tick_size
        Price step, rupees.
    lot_size
        Units of one contract (1 for stocks and indices).
    instrument_type
        ``EQ``, ``INDEX`` or ``FUT``.
    scale
        Price units per rupee of every price of its ticks (:func:`price_scale`).
    price
        Previous close in rupees, before a little per-seed noise.
    """

    tradingsymbol: str
    exchange: str
    kind: Kind
    exchange_token: int
    tick_size: float
    lot_size: int
    instrument_type: str
    scale: int
    price: float


def price_scale(exchange: str) -> int:
    """Price units per rupee of an exchange's instruments.

    Parameters
    ----------
    exchange
        Exchange name (see :class:`Listing`).

    Returns
    -------
    int
        10,000,000 for CDS, 10,000 for BCD and NCO, 100 (paise) for the others.
    """
    return _SCALES.get(exchange, DEFAULT_SCALE)


@dataclass
class _Spec:
    """One instrument before its token: what the names and tables say."""

    symbol: str
    exchange: str
    kind: Kind
    price: float
    tick: float
    lot: int
    itype: str


def _hashed_price(name: str) -> float:
    """A plausible price (log-normal around 250 rupees) for a name the tables lack, the
    same in every run."""
    u = (zlib.crc32(name.encode()) + 0.5) / 2**32
    return min(20_000.0, max(5.0, 250.0 * math.exp(1.1 * NormalDist().inv_cdf(u))))


def _future_lot(price: float) -> int:
    """Contract size of a stock future: about five lakh rupees."""
    return int(min(MAX_LOT, max(1, round(500_000 / price))))


def _contract(day: date, months_ahead: int) -> str:
    """``24JAN``-style expiry code ``months_ahead`` months after ``day``'s month."""
    m = day.month - 1 + months_ahead
    return f"{(day.year + m // 12) % 100:02d}{MONTHS[m % 12]}"


def _class_counts(config: SimConfig) -> dict[str, int]:
    """Indices and derivatives of a generated universe: as configured, else a few."""
    n = config.n_instruments
    auto = {
        "indices": min(len(INDICES), max(1, n // 25)),
        "nfo": max(1, n // 25),
        "cds": max(1, n // 500),
        "mcx": max(1, n // 250),
        "nco": max(1, n // 1000),
    }
    given = config.class_counts
    counts = {k: auto[k] if v is None else v for k, v in given.items()}
    free = [k for k in counts if given[k] is None]
    # Small universes stay at least half stocks: trim the automatic counts.
    while sum(counts.values()) > n // 2 and any(counts[k] for k in free):
        largest = max((k for k in free if counts[k]), key=counts.__getitem__)
        counts[largest] -= 1
    return counts


def _generated_specs(config: SimConfig) -> list[_Spec]:
    counts = _class_counts(config)
    n_stock = config.n_instruments - sum(counts.values())
    day = config.date
    stock_names = [name for name, _ in NIFTY50[:n_stock]]
    stock_names += [f"SYM{i:04d}" for i in range(1, n_stock - len(stock_names) + 1)]
    prices = dict(NIFTY50)
    specs: list[_Spec] = []
    for name in stock_names:
        prices.setdefault(name, _hashed_price(name))
        specs.append(_Spec(name, "NSE", Kind.EQUITY, prices[name], EQUITY_TICK, 1, "EQ"))
    for k in range(counts["indices"]):
        name, level = INDICES[k] if k < len(INDICES) else (f"NIFTY INDEX {k + 1:02d}", 10000.0)
        specs.append(_Spec(name, "NSE", Kind.INDEX, level, INDEX_TICK, 1, "INDEX"))
    levels = dict(INDICES)
    underlyings = [(u, levels[i], lot) for u, i, lot in INDEX_FUTURES]
    underlyings += [(name, prices[name], _future_lot(prices[name])) for name in stock_names]
    for k in range(counts["nfo"]):
        # Near month of every underlying, then the next months.
        u, price, lot = underlyings[k % len(underlyings)]
        months = k // len(underlyings)
        specs.append(
            _Spec(
                f"{u}{_contract(day, months)}FUT",
                "NFO",
                Kind.DERIV,
                price * (1 + 0.004 * (months + 1)),
                EQUITY_TICK,
                lot,
                "FUT",
            )
        )
    for exchange, table, count in (
        ("CDS", [(c, p, CURRENCY_TICK) for c, p in CURRENCIES], counts["cds"]),
        ("MCX", list(MCX_CONTRACTS), counts["mcx"]),
        ("NCO", list(NCO_CONTRACTS), counts["nco"]),
    ):
        kind = _KIND_OF_EXCHANGE[exchange]
        for k in range(count):
            name, price, tick = table[k % len(table)]
            symbol = f"{name}{_contract(day, k // len(table))}FUT"
            specs.append(_Spec(symbol, exchange, kind, price, tick, 1, "FUT"))
    return specs


def _listed_specs(symbols: Sequence[tuple[str, str]]) -> list[_Spec]:
    stock_prices = dict(NIFTY50)
    levels = dict(INDICES)
    index_futures = {u: (levels[i], lot) for u, i, lot in INDEX_FUTURES}
    specs = []
    for exchange, symbol in symbols:
        kind = _KIND_OF_EXCHANGE[exchange]
        if kind == Kind.EQUITY and symbol in levels:
            kind = Kind.INDEX
        price: float | None = None
        tick, lot, itype = EQUITY_TICK, 1, "EQ"
        if kind == Kind.EQUITY:
            price = stock_prices.get(symbol)
        elif kind == Kind.INDEX:
            price, tick, itype = levels.get(symbol), INDEX_TICK, "INDEX"
            exchange = "NSE" if exchange == "INDICES" else exchange
        elif kind == Kind.DERIV:
            itype = "FUT"
            for u, (level, ulot) in index_futures.items():
                if symbol.startswith(u) and symbol[len(u) : len(u) + 2].isdigit():
                    price, lot = level, ulot
            if price is None:
                # A stock future (NAME24JANFUT) is priced like its stock.
                base = symbol[: -len("24JANFUT")] if symbol.endswith("FUT") else symbol
                price = stock_prices.get(base) or _hashed_price(base)
                lot = _future_lot(price)
        else:
            itype = "FUT"
            table = (
                [(c, p, CURRENCY_TICK) for c, p in CURRENCIES]
                if kind == Kind.CURRENCY
                else [*MCX_CONTRACTS, *NCO_CONTRACTS]
            )
            tick = CURRENCY_TICK if kind == Kind.CURRENCY else 1.0
            for name, p, t in sorted(table, key=lambda r: -len(r[0])):
                if symbol.startswith(name):
                    price, tick = p, t
                    break
        if price is None:
            price = _hashed_price(symbol)
        specs.append(_Spec(symbol, exchange, kind, price, tick, lot, itype))
    return specs


def universe(config: SimConfig) -> list[Listing]:
    """The instruments of a simulation, in universe order.

    Parameters
    ----------
    config
        The simulation.

    Returns
    -------
    list of Listing
        Generated from the class counts, or exactly ``config.symbols``. Does not depend on
        the seed.
    """
    symbols = config.symbols
    specs = _listed_specs(symbols) if symbols is not None else _generated_specs(config)
    used: set[tuple[int, int]] = set()
    listings = []
    for s in specs:
        salt = _INDEX_TOKEN_SALT if s.kind == Kind.INDEX else _TOKEN_SALT[s.exchange]
        token = zlib.crc32(f"{s.exchange}:{s.symbol}:{salt}".encode()) % (TOKEN_SPACE - 1) + 1
        while (token, salt) in used:
            token = token % (TOKEN_SPACE - 1) + 1
        used.add((token, salt))
        listings.append(
            Listing(
                tradingsymbol=s.symbol,
                exchange=s.exchange,
                kind=s.kind,
                exchange_token=token,
                tick_size=s.tick,
                lot_size=s.lot,
                instrument_type=s.itype,
                scale=price_scale(s.exchange),
                price=s.price,
            )
        )
    return listings
