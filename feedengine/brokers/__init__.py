"""Brokers: one sub-package per broker, each with everything that knows its wire.

A broker package holds its live source, its compiled decoder (which fills the neutral tick
row of ``feedengine.dtypes.KTICK_DTYPE``), its instrument resolution, its local test server
and its historical-candle client where it has one. The core knows a broker only by the
:class:`Broker` entry below: names, resolved when first used, so that a run imports only the
broker it uses.
"""

import importlib
from dataclasses import dataclass
from typing import Any

from feedengine.decoder import Decoder
from feedengine.errors import ConfigError
from feedengine.slots import SlotTable


@dataclass(frozen=True)
class Broker:
    """What the core needs of a broker.

    Attributes
    ----------
    name
        As ``--broker`` and a tick file's meta name it.
    label
        For people ("Kite", "Angel One").
    decoder_module, fault_enum
        The compiled decoder and its fault enum (``module:Name``).
    instrument
        The broker's instrument record (``module:Name``) with ``from_dict``/``to_dict``
        for tick-file meta entries, ``key``, ``decimals``, ``market``, ``tradingsymbol``
        and ``exchange``.
    """

    name: str
    label: str
    decoder_module: str
    fault_enum: str
    instrument: str

    def decoder(self, table: SlotTable) -> Decoder:
        """The compiled decoder over ``table``."""
        return Decoder.load(self.decoder_module, self.fault_enum, table)

    def instrument_from_dict(self, d: Any) -> Any:
        """An instrument from a tick-file meta entry (raises ``InstrumentsError``)."""
        module, _, name = self.instrument.partition(":")
        return getattr(importlib.import_module(module), name).from_dict(d)


KITE = Broker(
    name="kite",
    label="Kite",
    decoder_module="feedengine.brokers.kite._wire",
    fault_enum="feedengine.brokers.kite.wire:Fault",
    instrument="feedengine.brokers.kite.instruments:KiteInstrument",
)

ANGELONE = Broker(
    name="angelone",
    label="Angel One",
    decoder_module="feedengine.brokers.angelone._wire",
    fault_enum="feedengine.brokers.angelone.wire:Fault",
    instrument="feedengine.brokers.angelone.instruments:AngelInstrument",
)

#: Every broker, by name. A tick file without a broker is Kite's (files before brokers).
BROKERS = {b.name: b for b in (KITE, ANGELONE)}
DEFAULT_BROKER = KITE.name


def get(name: str) -> Broker:
    """The broker called ``name``.

    Raises
    ------
    ConfigError
        No broker has that name (the message lists those there are).
    """
    try:
        return BROKERS[name.strip().lower()]
    except KeyError:
        raise ConfigError(
            f"unknown broker {name!r} (choose from {', '.join(sorted(BROKERS))})"
        ) from None
