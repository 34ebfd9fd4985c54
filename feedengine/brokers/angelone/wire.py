"""Angel One SmartAPI WebSocket 2.0: the wire (SPEC section 10).

One binary WebSocket message is one packet, little-endian: byte 0 the subscription mode,
byte 1 the exchange type, 2..27 the token (NUL-padded ASCII), then int64 fields, a few
float64, and in SNAP_QUOTE and depth packets arrays of price levels. The layout is defined
once here, as numpy dtypes of the packets exactly as Angel sends them (:data:`WIRE_DTYPES`);
the offsets the compiled decoder uses are derived from them, and a test holds
``ext/angelone/_wire.pyx`` to these.

- :func:`decode` turns one message into a dict with the official SDK's field names
  (``SmartWebSocketV2._parse_binary_data``), prices as integer paise: for display,
  comparisons and tests.
- :func:`encode` is its inverse: a packet exactly as Angel sends it.
- :func:`decode_records` (compiled) is what the engine runs: a batch of messages into the
  broker-neutral tick rows (``KTICK_DTYPE``) with each packet's instrument slot resolved;
  :func:`decode_batch` wraps it for a list of messages.

A malformed message (empty, unknown mode, a length other than its mode's, an exchange type
Angel does not document, a timestamp or price the row cannot hold) gives no row: its
:class:`Fault` is counted, logged by the caller, and never raised.

The pre-open auction: no field of Angel's wire says that a price is the auction's, and the
documentation names none. SNAP_QUOTE's ``last_traded_timestamp`` is the counterpart of
Kite's last trade time, from which SPEC section 4 tells that the auction has matched, but its
unit is undocumented and no pre-open capture shows how it behaves; so every row has
``auction = 0`` and Angel applies no auction-price rule (SPEC section 10).
"""

import logging
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

import numpy as np

from feedengine.brokers.angelone import _wire
from feedengine.dtypes import KTICK_DTYPE
from feedengine.slots import SlotTable

log = logging.getLogger(__name__)

__all__ = [
    "KTICK_DTYPE",
    "PACKET_SIZE",
    "PRICE_DECIMALS",
    "WIRE_DTYPES",
    "ExchangeType",
    "Fault",
    "Mode",
    "decode",
    "decode_batch",
    "decode_checked",
    "decode_records",
    "encode",
    "encode_records",
    "instrument_key",
]


class Mode(IntEnum):
    """Subscription mode (byte 0), as the SDK names them."""

    LTP = 1
    QUOTE = 2
    SNAP_QUOTE = 3
    #: 20-level depth: no price, volume or day range, so no candle data and no tick row.
    #: Angel announced its removal from WebSocket 2.0 effective 25 April 2025 (SmartAPI
    #: forum, "Deprecation of 20 Market Depth from WebSocket 2.0").
    DEPTH = 4


class ExchangeType(IntEnum):
    """Exchange type (byte 1): the values Angel's SDKs and docs define, and no others."""

    NSE_CM = 1
    NSE_FO = 2
    BSE_CM = 3
    BSE_FO = 4
    MCX_FO = 5
    NCX_FO = 7
    CDE_FO = 13


class Fault(IntEnum):
    """Why a message gave no tick row (``Fault`` in ``ext/angelone/_wire.pyx``).

    The decoders check in this order and report the first that applies. A depth packet of
    its right length is no fault: it is a valid packet that carries no candle data (like a
    Kite heartbeat), and counting it would turn a subscription into a stream of warnings.
    """

    NONE = 0
    EMPTY = 1  # zero-length message
    BAD_MODE = 2  # byte 0 is no mode; a text frame ("pong", a JSON error) lands here too
    TRUNCATED = 3  # shorter than its mode's packet
    TRAILING = 4  # longer than its mode's packet
    BAD_EXCHANGE = 5  # byte 1 is no ExchangeType
    TIME_RANGE = 6  # exchange timestamp negative, or its nanoseconds past int64 (year 2262)
    PRICE_RANGE = 7  # last traded price, day high or day low outside the row's int32


#: Bytes of the token field: 25, NUL-padded (``_parse_token_value`` reads ``[2:27]``).
TOKEN_BYTES = 25

_HEADER: list[tuple[str, str]] = [
    ("subscription_mode", "u1"),
    ("exchange_type", "u1"),
    ("token", f"S{TOKEN_BYTES}"),
]
_LTP = [
    *_HEADER,
    ("sequence_number", "<i8"),
    ("exchange_timestamp", "<i8"),  # Unix ms
    ("last_traded_price", "<i8"),
]
_QUOTE = [
    *_LTP,
    ("last_traded_quantity", "<i8"),
    ("average_traded_price", "<i8"),
    ("volume_trade_for_the_day", "<i8"),  # cumulative for the day
    ("total_buy_quantity", "<f8"),
    ("total_sell_quantity", "<f8"),
    ("open_price_of_the_day", "<i8"),
    ("high_price_of_the_day", "<i8"),
    ("low_price_of_the_day", "<i8"),
    ("closed_price", "<i8"),
]
#: Levels per side of a SNAP_QUOTE's best five.
BEST_LEVELS = 5
#: One best-five level (20 bytes). Angel's Java SDK (``SmartApiBBSInfo``): flag 1 buy, 0 sell.
BEST_FIVE_DTYPE = np.dtype(
    [("flag", "<i2"), ("quantity", "<i8"), ("price", "<i8"), ("no of orders", "<i2")]
)
_SNAP_QUOTE = [
    *_QUOTE,
    ("last_traded_timestamp", "<i8"),
    ("open_interest", "<i8"),
    # float64 as Angel's Java (getDouble) and JavaScript (doublele) SDKs read it.
    ("open_interest_change_percentage", "<f8"),
    # Five buy levels, then five sell levels (the Java and JavaScript SDKs read them so).
    ("best_five", BEST_FIVE_DTYPE, (2 * BEST_LEVELS,)),
    ("upper_circuit_limit", "<i8"),
    ("lower_circuit_limit", "<i8"),
    ("52_week_high_price", "<i8"),
    ("52_week_low_price", "<i8"),
]
#: Levels per side of a depth packet.
DEPTH_LEVELS = 20
#: One depth level (10 bytes).
DEPTH_LEVEL_DTYPE = np.dtype([("quantity", "<i4"), ("price", "<i4"), ("num_of_orders", "<i2")])
_DEPTH = [
    *_HEADER,
    # Angel's Java and JavaScript SDKs: exchange timestamp at 27, packet received time at 35.
    ("exchange_timestamp", "<i8"),
    ("packet_received_time", "<i8"),
    ("depth_20_buy_data", DEPTH_LEVEL_DTYPE, (DEPTH_LEVELS,)),
    ("depth_20_sell_data", DEPTH_LEVEL_DTYPE, (DEPTH_LEVELS,)),
]

#: Each mode's packet exactly as Angel sends it (packed, little-endian): LTP 51 bytes, QUOTE
#: 123, SNAP_QUOTE 379, DEPTH 443. Field names are the SDK's.
WIRE_DTYPES: dict[Mode, np.dtype] = {
    Mode.LTP: np.dtype(_LTP),
    Mode.QUOTE: np.dtype(_QUOTE),
    Mode.SNAP_QUOTE: np.dtype(_SNAP_QUOTE),
    Mode.DEPTH: np.dtype(_DEPTH),
}

#: Length of each mode's packet (one packet is the whole message).
PACKET_SIZE: dict[Mode, int] = {mode: dt.itemsize for mode, dt in WIRE_DTYPES.items()}


def _offset(mode: Mode, name: str) -> int:
    return int(WIRE_DTYPES[mode].fields[name][1])  # type: ignore[index]


#: Offsets of the fields the neutral tick row takes (LTP's are common to every candle mode).
OFFSET_MODE = _offset(Mode.LTP, "subscription_mode")
OFFSET_EXCHANGE_TYPE = _offset(Mode.LTP, "exchange_type")
OFFSET_TOKEN = _offset(Mode.LTP, "token")
OFFSET_EXCHANGE_TIMESTAMP = _offset(Mode.LTP, "exchange_timestamp")
OFFSET_LAST_TRADED_PRICE = _offset(Mode.LTP, "last_traded_price")
OFFSET_VOLUME = _offset(Mode.QUOTE, "volume_trade_for_the_day")
OFFSET_DAY_HIGH = _offset(Mode.QUOTE, "high_price_of_the_day")
OFFSET_DAY_LOW = _offset(Mode.QUOTE, "low_price_of_the_day")

#: Largest exchange timestamp (ms) whose nanoseconds fit the row's int64.
MAX_TIMESTAMP_MS = (2**63 - 1) // 1_000_000

#: Decimals of each exchange type's integer prices (divide by ``10**decimals``). Angel's
#: WebSocket 2.0 documentation, as quoted by Angel's SmartAPI team on their forum (topic 3378,
#: "Data format issue with websocket V2 version"): "All prices are in paise. For currencies,
#: the int 32 price values should be divided by 10000000.0 to obtain four decimal places. For
#: everything else, the price values should be divided by 100." The sentence is Kite's, edited
#: (the fields are int64, and 10^7 gives seven decimals, not four); we take its divisors, as
#: Kite's own currency divisor is 10^7 too. No real CDS packet has confirmed it. At 10^7 the
#: row's int32 holds prices up to 214.7483647: a currency pair quoted above that is a
#: ``PRICE_RANGE`` fault.
PRICE_DECIMALS: dict[ExchangeType, int] = {
    e: 7 if e == ExchangeType.CDE_FO else 2 for e in ExchangeType
}

#: The compiled batch decoder (``ext/angelone/_wire.pyx``): messages into neutral tick rows.
decode_records = _wire.decode_records


def instrument_key(exchange_type: int, token: str) -> int | None:
    """The instrument key the decoder resolves slots by: ``(exchange_type << 32) | token``.

    Returns
    -------
    int or None
        None when the token is not 1 to 25 ASCII digits below ``2**32``: no instrument of
        the engine can have it, and its packets decode with slot -1.
    """
    if not (0 < len(token) <= TOKEN_BYTES and token.isascii() and token.isdigit()):
        return None
    value = int(token)
    return (exchange_type << 32) | value if value < 2**32 else None


def _token(raw: bytes) -> str:
    # As the SDK's _parse_token_value: up to the first NUL, one character per byte.
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _levels(records: np.ndarray) -> list[dict[str, Any]]:
    names = records.dtype.names or ()
    return [{name: rec[name].item() for name in names} for rec in records]


_MODES = frozenset(Mode)


def _is_packet(message: bytes) -> bool:
    """A known mode at its own length: the fields can be read (``EMPTY``, ``BAD_MODE``,
    ``TRUNCATED`` and ``TRAILING`` are the faults of messages that are not)."""
    mode = message[OFFSET_MODE] if message else 0
    return mode in _MODES and len(message) == PACKET_SIZE[Mode(mode)]


def _as_dict(message: bytes) -> dict[str, Any]:
    mode = Mode(message[OFFSET_MODE])
    rec = np.frombuffer(message, WIRE_DTYPES[mode])[0]
    tick: dict[str, Any] = {}
    for name in WIRE_DTYPES[mode].names or ():
        if name == "token":
            tick[name] = _token(rec[name])
        elif name == "best_five":
            tick["best_5_buy_data"] = _levels(rec[name][:BEST_LEVELS])
            tick["best_5_sell_data"] = _levels(rec[name][BEST_LEVELS:])
        elif name.startswith("depth_20_"):
            tick[name] = _levels(rec[name])
        else:
            tick[name] = rec[name].item()
    if mode != Mode.DEPTH:
        tick["subscription_mode_val"] = mode.name
    return tick


#: A slot table with no instruments, for decoding single messages.
_NO_INSTRUMENTS = SlotTable.build([])


def decode_batch(
    messages: Sequence[bytes | bytearray | memoryview],
    recv_ns: Sequence[int] | np.ndarray,
    table: SlotTable = _NO_INSTRUMENTS,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode messages into neutral tick rows with the compiled decoder.

    Parameters
    ----------
    messages
        Binary WebSocket messages exactly as Angel sent them, one packet each.
    recv_ns
        Receive time (Unix ns) of each message.
    table
        The instruments' slots by :func:`instrument_key` (default: none, every slot -1).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, int)
        The ``KTICK_DTYPE`` rows (at most one per message), the fault counts by
        :class:`Fault` code, and the index of the first faulty message (-1: none).
    """
    payloads = [bytes(m) for m in messages]
    lengths = np.array([len(p) for p in payloads], np.int64)
    offsets = np.zeros(len(payloads), np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    buf = np.frombuffer(b"".join(payloads), np.uint8)
    recv = np.asarray(recv_ns, np.int64)
    out = np.empty(len(payloads), KTICK_DTYPE)  # one row per message at most: no drain
    faults = np.zeros(_wire.NUM_FAULTS, np.int64)
    first_bad = np.full(1, -1, np.int64)
    _, end = decode_records(
        buf,
        offsets,
        lengths,
        recv,
        0,
        out,
        0,
        faults,
        first_bad,
        table.keys,
        table.slots,
        table.shift,
    )
    return out[:end], faults, int(first_bad[0])


def decode_checked(message: bytes | bytearray | memoryview) -> tuple[dict[str, Any] | None, Fault]:
    """Decode one message; return its fields and how the engine's decoder judges it.

    Parameters
    ----------
    message
        One binary WebSocket message exactly as Angel sent it.

    Returns
    -------
    (dict or None, Fault)
        The packet's fields with the SDK's names (prices integer paise, timestamps Unix ms,
        best-five and depth levels as lists of dicts), or None when the message is no packet
        (empty, unknown mode, wrong length); and the :class:`Fault` the compiled decoder
        reports for it. A packet whose values the tick row cannot take (``BAD_EXCHANGE``,
        ``TIME_RANGE``, ``PRICE_RANGE``) still has its fields.
    """
    data = bytes(message)
    _, faults, _ = decode_batch([data], [0])
    fault = Fault(int(np.argmax(faults))) if faults.any() else Fault.NONE
    return (_as_dict(data) if _is_packet(data) else None), fault


def decode(message: bytes | bytearray | memoryview) -> dict[str, Any] | None:
    """Decode one message into a dict shaped like the SDK's; a fault is logged, not raised.

    See :func:`decode_checked`.
    """
    tick, fault = decode_checked(message)
    if fault:
        log.warning("malformed Angel One message (%d bytes): %s", len(message), fault.name)
    return tick


def _fill(rec: np.ndarray, tick: Mapping[str, Any]) -> None:
    for name in rec.dtype.names or ():
        if name == "token":
            raw = str(tick.get("token", "")).encode("latin-1")
            if len(raw) > TOKEN_BYTES:
                raise ValueError(f"token {tick['token']!r} is longer than {TOKEN_BYTES} bytes")
            rec[name] = raw
        elif name == "best_five":
            for side, flag, first in (("buy", 1, 0), ("sell", 0, BEST_LEVELS)):
                levels = tick.get(f"best_5_{side}_data", ())
                if len(levels) > BEST_LEVELS:
                    raise ValueError(f"more than {BEST_LEVELS} {side} levels")
                rec[name]["flag"][first : first + BEST_LEVELS] = flag
                for i, level in enumerate(levels):
                    for field, value in level.items():
                        rec[name][field][first + i] = value
        elif name.startswith("depth_20_"):
            levels = tick.get(name, ())
            if len(levels) > DEPTH_LEVELS:
                raise ValueError(f"more than {DEPTH_LEVELS} levels in {name}")
            for i, level in enumerate(levels):
                for field, value in level.items():
                    rec[name][field][i] = value
        else:
            rec[name] = tick.get(name, 0)


def encode(tick: Mapping[str, Any]) -> bytes:
    """Encode a packet exactly as Angel sends it: the inverse of :func:`decode`.

    Parameters
    ----------
    tick
        Fields by the SDK's names; ``subscription_mode`` picks the packet. A field absent is
        0; absent best-five levels are zero with their side's flag (1 buy, 0 sell).

    Returns
    -------
    bytes
        The binary message, ``PACKET_SIZE[mode]`` bytes.

    Raises
    ------
    ValueError
        Unknown mode, a token over 25 bytes, or too many levels.
    OverflowError
        A value outside its field's type.
    """
    rec = np.zeros(1, WIRE_DTYPES[Mode(tick["subscription_mode"])])
    _fill(rec[0], tick)
    return rec.tobytes()


def encode_records(records: np.ndarray) -> list[bytes]:
    """Split an array of one :data:`WIRE_DTYPES` packet dtype into messages (vectorized).

    For encoding many packets at once: fill the array's fields by column, then split.
    """
    if records.dtype not in WIRE_DTYPES.values():
        raise ValueError(f"{records.dtype} is no Angel One packet dtype")
    size = records.dtype.itemsize
    raw = records.tobytes()
    return [raw[i : i + size] for i in range(0, len(raw), size)]
