"""Instruments as the core sees them, whatever the broker: symbols as users write them.

Each broker has its own instrument record (``feedengine.brokers.<broker>.instruments``);
the core reads only what :class:`Instrument` names.
"""

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from feedengine.errors import InstrumentsError
from feedengine.textfile import TextFileError, read_text

log = logging.getLogger(__name__)


class Instrument(Protocol):
    """What the core reads of a broker's instrument."""

    @property
    def key(self) -> int:
        """How the broker's decoder names it: slots are resolved by this key."""
        ...

    @property
    def tradingsymbol(self) -> str: ...

    @property
    def exchange(self) -> str: ...

    @property
    def decimals(self) -> int:
        """The price scale: prices are integer units of ``10**-decimals``."""
        ...

    @property
    def market(self) -> str:
        """The session key (``feedengine.sessions``)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """As a tick-file meta entry of its broker."""
        ...


#: A broker's instrument record.
Inst = TypeVar("Inst", bound=Instrument)


def parse_symbol(text: str) -> tuple[str, str]:
    """``"NSE:INFY"`` or ``"INFY"`` (NSE by default) → ``("NSE", "INFY")``."""
    exchange, _, symbol = text.strip().partition(":") if ":" in text else ("", "", text)
    symbol = symbol.strip()
    if not symbol:
        raise InstrumentsError(f"bad symbol {text!r}: expected EXCHANGE:SYMBOL or SYMBOL")
    return (exchange.strip() or "NSE").upper(), symbol.upper()


def resolve(
    symbols: list[str],
    available: Sequence[Inst],
    where: str,
    skip_unknown: bool = False,
    alias: Callable[[str, str], str | None] | None = None,
) -> list[Inst]:
    """The instruments named by ``symbols``, in order.

    Every unknown one is named in one error, or, with ``skip_unknown``, in one warning (an
    expired contract must not stop a day's feed); it is an error still when none is known.
    ``alias(exchange, symbol)`` is a broker's other name of a symbol, tried when the symbol
    itself is unknown.
    """
    by_name: dict[tuple[str, str], Inst] = {}
    for one in available:
        by_name.setdefault((one.exchange, one.tradingsymbol.upper()), one)
    chosen: dict[int, Inst] = {}
    unknown = []
    for text in symbols:
        exchange, symbol = parse_symbol(text)
        inst = by_name.get((exchange, symbol))
        other = alias(exchange, symbol) if inst is None and alias is not None else None
        if other is not None:
            inst = by_name.get((exchange, other))
        if inst is None:
            unknown.append(text.strip())
        else:
            chosen.setdefault(inst.key, inst)
    if unknown:
        message = f"{len(unknown)} unknown symbol(s) in {where}: {', '.join(unknown)}"
        if not skip_unknown or not chosen:
            raise InstrumentsError(message)
        log.warning("%s; running the other %d (--skip-unknown)", message, len(chosen))
    return list(chosen.values())


def read_symbols_file(path: Path) -> list[str]:
    """Symbols of a ``--symbols-file``: one a line, ``#`` starts a comment."""
    try:
        lines = read_text(path, "symbols file").splitlines()
    except TextFileError as e:
        raise InstrumentsError(str(e)) from None
    symbols = [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]
    if not symbols:
        raise InstrumentsError(f"symbols file {path} lists no symbols")
    return symbols
