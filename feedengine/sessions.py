"""Trading sessions per exchange and the IST calendar arithmetic of SPEC section 4."""

from dataclasses import dataclass
from datetime import time, timedelta, timezone

#: India Standard Time: sessions, buckets and candle stamps are all IST wall-clock times.
IST = timezone(timedelta(hours=5, minutes=30), "IST")
#: IST is UTC+05:30 all year (no daylight saving), so a fixed offset is exact.
IST_OFFSET_NS = (5 * 3600 + 30 * 60) * 1_000_000_000
NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
NS_PER_DAY = 86_400 * NS_PER_S


@dataclass(frozen=True)
class Session:
    """A daily trading session, as IST wall-clock times."""

    open: time
    close: time

    @property
    def open_s(self) -> int:
        """Seconds after IST midnight of the open."""
        return self.open.hour * 3600 + self.open.minute * 60 + self.open.second

    @property
    def close_s(self) -> int:
        """Seconds after IST midnight of the close."""
        return self.close.hour * 3600 + self.close.minute * 60 + self.close.second


_EQUITY = Session(time(9, 15), time(15, 30))
_CURRENCY = Session(time(9, 0), time(17, 0))
_COMMODITY = Session(time(9, 0), time(23, 55))

#: SPEC section 4 defaults, by exchange name; override with ``parse_sessions``.
DEFAULT_SESSIONS: dict[str, Session] = {
    "NSE": _EQUITY,
    "BSE": _EQUITY,
    "NFO": _EQUITY,
    "BFO": _EQUITY,
    "INDICES": _EQUITY,
    "CDS": _CURRENCY,
    "BCD": _CURRENCY,
    "MCXSX": _CURRENCY,
    "MCX": _COMMODITY,
    "NCO": _COMMODITY,
}


def parse_sessions(text: str) -> dict[str, Session]:
    """Parse ``"NSE=09:15-15:30,MCX=09:00-23:30"`` over the defaults.

    Raises
    ------
    ValueError
        On an unknown exchange or a malformed or empty time range.
    """
    sessions = dict(DEFAULT_SESSIONS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            name, span = item.split("=")
            start, end = (time.fromisoformat(x.strip()) for x in span.split("-"))
        except ValueError:
            raise ValueError(f"bad session {item!r}: expected EXCHANGE=HH:MM-HH:MM") from None
        name = name.strip().upper()
        if name not in DEFAULT_SESSIONS:
            raise ValueError(f"bad session {item!r}: unknown exchange {name}")
        if end <= start:
            raise ValueError(f"bad session {item!r}: close must be after open")
        sessions[name] = Session(start, end)
    return sessions


def ist_day(t_ns: int) -> int:
    """IST calendar day number (days since 1970-01-01 IST) of an instant."""
    return (t_ns + IST_OFFSET_NS) // NS_PER_DAY


def ist_midnight_ns(day: int) -> int:
    """The instant of IST midnight starting ``day``."""
    return day * NS_PER_DAY - IST_OFFSET_NS
