"""The simulated market as Angel One's WebSocket 2.0 messages: one packet per message.

The same market as Kite's simulated feed (:mod:`feedengine.market`), encoded as Angel sends
it: for the same configuration, the two brokers' feeds carry the same trades at the same
times, so their candles are the same (``tests/test_angelone_replay.py`` holds them equal).
Listings on exchanges Angel One does not serve (BCD, NCO) are left out. Subscription modes
map as ``full`` → SNAP_QUOTE, ``quote`` → QUOTE, ``ltp`` → LTP and ``mixed`` → the three by
turns over the instruments. Angel sends no binary heartbeat (its keep-alive is the text
``pong``), so a simulated file has none.
"""

from collections.abc import Iterator
from typing import Any

import numpy as np

from feedengine.brokers.angelone.instruments import EXCHANGE_TYPES, AngelInstrument
from feedengine.brokers.angelone.wire import (
    BEST_LEVELS,
    TOKEN_BYTES,
    WIRE_DTYPES,
    Mode,
    encode_records,
)
from feedengine.market import Encoder, Kind, Listing, Market, SimConfig, universe, windows
from feedengine.tickfile import make_meta

#: The tick file's and the meta's name of this broker.
BROKER = "angelone"
#: The packet of each simulator mode (``mixed``: by turns over the instruments).
MODE_PACKETS = {"full": Mode.SNAP_QUOTE, "quote": Mode.QUOTE, "ltp": Mode.LTP}
_MIXED = (Mode.SNAP_QUOTE, Mode.QUOTE, Mode.LTP)
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


def served(listing: Listing) -> bool:
    """Whether Angel One serves the listing's exchange."""
    return listing.exchange in EXCHANGE_TYPES


def instrument(listing: Listing) -> AngelInstrument:
    """The listing as Angel One names it: its exchange token, and NSE equities' ``-EQ``."""
    symbol = listing.tradingsymbol
    if listing.exchange == "NSE" and listing.kind == Kind.EQUITY:
        symbol = f"{symbol}-EQ"
    return AngelInstrument(
        str(listing.exchange_token), EXCHANGE_TYPES[listing.exchange], symbol, listing.exchange
    )


def instruments(config: SimConfig) -> list[dict[str, Any]]:
    """The simulated universe Angel serves, as the tick file's ``instruments`` entries."""
    return [instrument(x).to_dict() for x in universe(config) if served(x)]


def sim_meta(config: SimConfig) -> dict[str, Any]:
    """The tick file header of a simulated Angel One session."""
    extra: dict[str, Any] = {"simulator": config.as_json(), "broker": BROKER}
    if config.created_utc is not None:
        extra["created_utc"] = config.created_utc
    return make_meta("simulator", instruments(config), **extra)


def _packets(
    ticks: np.ndarray, mode: Mode, exchange_types: np.ndarray, tokens: np.ndarray
) -> np.ndarray:
    """The packets of ``ticks`` (all of one mode) as one array of the mode's wire dtype;
    ``exchange_types`` and ``tokens`` by listing."""
    out = np.zeros(len(ticks), WIRE_DTYPES[mode])
    which = ticks["instrument"]
    out["subscription_mode"] = mode
    out["exchange_type"] = exchange_types[which]
    out["token"] = tokens[which]
    out["exchange_timestamp"] = ticks["exchange_ns"] // NS_PER_MS
    out["last_traded_price"] = ticks["last_price"]
    if mode == Mode.LTP:
        return out
    out["last_traded_quantity"] = ticks["last_traded_quantity"]
    out["average_traded_price"] = ticks["average_traded_price"]
    out["volume_trade_for_the_day"] = ticks["volume_traded"]
    out["total_buy_quantity"] = ticks["total_buy_quantity"]
    out["total_sell_quantity"] = ticks["total_sell_quantity"]
    out["open_price_of_the_day"] = ticks["open"]
    out["high_price_of_the_day"] = ticks["high"]
    out["low_price_of_the_day"] = ticks["low"]
    out["closed_price"] = ticks["close"]
    if mode == Mode.QUOTE:
        return out
    # Its unit is undocumented; the SDK's samples hold Unix seconds.
    out["last_traded_timestamp"] = ticks["last_trade_ns"] // NS_PER_S
    out["open_interest"] = ticks["oi"]
    best = out["best_five"]
    best["flag"][:, :BEST_LEVELS] = 1  # buys first (Angel's Java SDK: flag 1 buy, 0 sell)
    best["quantity"] = ticks["depth"]["quantity"]
    best["price"] = ticks["depth"]["price"]
    best["no of orders"] = ticks["depth"]["orders"]
    return out


def encoder(listings: list[Listing], mode: str) -> Encoder:
    """Angel One's encoder for a universe.

    Parameters
    ----------
    listings
        The universe.
    mode
        The simulator's mode (:data:`feedengine.market.MODES`).

    Returns
    -------
    Encoder
        A window of ticks -> ``(recv_ns, message)``, one packet a message, in receive order.
    """
    angel = [instrument(x) if served(x) else None for x in listings]
    packet_of = np.array(
        [
            (_MIXED[i % len(_MIXED)] if mode == "mixed" else MODE_PACKETS[mode])
            for i in range(len(listings))
        ],
        np.uint8,
    )
    kept = np.array([a is not None for a in angel], bool)
    exchange_types = np.array([a.exchange_type if a else 0 for a in angel], np.uint8)
    tokens = np.array([a.token.encode() if a else b"" for a in angel], f"S{TOKEN_BYTES}")
    sent = [0]  # packets so far: the next one's sequence number

    def encode(window: np.ndarray) -> list[tuple[int, bytes]]:
        ticks = window[kept[window["instrument"]]]
        modes = packet_of[ticks["instrument"]]
        sequence = sent[0] + 1 + np.arange(len(ticks), dtype=np.int64)
        sent[0] += len(ticks)
        messages: list[bytes] = [b""] * len(ticks)
        for m in np.unique(modes):
            rows = np.flatnonzero(modes == m)
            packets = _packets(ticks[rows], Mode(int(m)), exchange_types, tokens)
            packets["sequence_number"] = sequence[rows]
            for row, packet in zip(rows.tolist(), encode_records(packets), strict=True):
                messages[row] = packet
        return list(zip(ticks["recv_ns"].tolist(), messages, strict=True))

    return encode


def messages(config: SimConfig) -> Iterator[tuple[int, bytes]]:
    """The simulated session as Angel One's messages ``(recv_ns, packet)``, in receive order
    (generated a chunk at a time: memory stays bounded)."""
    market = Market(config)
    encode = encoder(market.listings, config.mode)
    for window in windows(market):
        yield from encode(window)
