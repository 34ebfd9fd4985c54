"""Instruments: token, trading symbol and exchange, and where they come from."""

from dataclasses import dataclass
from typing import Any

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
