"""The simulated market on Kite's wire: its ticks as Kite WebSocket binary messages.

A window of the market's ticks (:func:`feedengine.market.frames.windows`) becomes one
message per frame (several when a frame has more than :data:`MAX_PACKETS` packets), packets
grouped by kind (full, quote, index full, index quote, ltp), each kind in the market's order
(SPEC section 2). Kite sends a 1-byte heartbeat when a second passes without data. The
universe becomes Kite's instruments: ``instrument_token = exchange_token << 8 | segment``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from feedengine.brokers.kite import wire
from feedengine.brokers.kite.segments import Segment
from feedengine.market import Encoder, Kind, Listing, Market, SimConfig, universe, windows
from feedengine.market.tick import TICK_WORDS, as_words, take, word_of
from feedengine.sessions import NS_PER_S
from feedengine.tickfile import make_meta

__all__ = [
    "HEARTBEAT",
    "MAX_PACKETS",
    "encoder",
    "instrument_token",
    "instruments",
    "message_batches",
    "messages",
    "segment",
    "sim_meta",
]

#: Kite sends a 1-byte heartbeat when a second passes without data.
HEARTBEAT_MS = 1000
HEARTBEAT = b"\x00"
#: A message's packet count is a big-endian u16.
MAX_PACKETS = 65535

PKT_LTP, PKT_INDEX_QUOTE, PKT_INDEX_FULL, PKT_QUOTE, PKT_FULL = (
    wire.PACKET_LTP,
    wire.PACKET_INDEX_QUOTE,
    wire.PACKET_INDEX_FULL,
    wire.PACKET_QUOTE,
    wire.PACKET_FULL,
)
#: The order of packet kinds inside a message.
KIND_ORDER = (PKT_FULL, PKT_QUOTE, PKT_INDEX_FULL, PKT_INDEX_QUOTE, PKT_LTP)
#: Kite words made from tick fields rather than copied from one.
_COMPUTED = {"change", "exchange_timestamp", "last_trade_time"}
#: The orders word of each order book entry of a full packet.
_ORDERS_WORDS = slice(len(wire.PACKET_WORDS[PKT_FULL]) + 2, None, 3)


def _blocks(plen: int) -> list[tuple[slice, slice]]:
    """``(packet words, tick words)`` runs of a packet kind copied as they are.

    ``instrument_token`` copies the instrument (replaced by its token); a full packet's order
    book copies the tick's, entry by entry (its orders then moved to an int16 and padding).
    """
    words = wire.PACKET_WORDS[plen]
    pairs = [
        (i, word_of("instrument" if w == "instrument_token" else w))
        for i, w in enumerate(words)
        if w not in _COMPUTED
    ]
    if plen == PKT_FULL:
        book = range(word_of("depth"), TICK_WORDS)
        pairs += [(len(words) + i, j) for i, j in enumerate(book)]
    runs: list[list[tuple[int, int]]] = []
    for i, j in pairs:
        if runs and runs[-1][-1] == (i - 1, j - 1):
            runs[-1].append((i, j))
        else:
            runs.append([(i, j)])
    return [(slice(r[0][0], r[-1][0] + 1), slice(r[0][1], r[-1][1] + 1)) for r in runs]


_BLOCKS = {plen: _blocks(plen) for plen in wire.PACKET_WORDS}


def segment(listing: Listing) -> int:
    """Kite's segment code of an instrument (``INDICES`` for an index)."""
    return Segment.INDICES if listing.kind == Kind.INDEX else Segment[listing.exchange]


def instrument_token(listing: Listing) -> int:
    """Kite's instrument token: ``exchange_token << 8 | segment``."""
    return listing.exchange_token << 8 | segment(listing)


def instruments(config: SimConfig) -> list[dict[str, Any]]:
    """The simulated universe, as the tick file's ``instruments`` list.

    Parameters
    ----------
    config
        The simulation.

    Returns
    -------
    list of dict
        Per instrument, in universe order: ``instrument_token``, ``exchange_token``,
        ``tradingsymbol``, ``exchange``, ``segment`` (Kite's name: ``NSE``, ``INDICES``,
        ``NFO-FUT`` ...), ``instrument_type``, ``tick_size`` (rupees) and ``lot_size``.
        Does not depend on the seed.
    """
    result = []
    for x in universe(config):
        seg_name = Segment(segment(x)).name
        if x.kind in (Kind.DERIV, Kind.CURRENCY, Kind.COMMODITY):
            seg_name = f"{x.exchange}-FUT"
        result.append(
            {
                "instrument_token": instrument_token(x),
                "exchange_token": x.exchange_token,
                "tradingsymbol": x.tradingsymbol,
                "exchange": x.exchange,
                "segment": seg_name,
                "instrument_type": x.instrument_type,
                "tick_size": x.tick_size,
                "lot_size": x.lot_size,
            }
        )
    return result


def sim_meta(config: SimConfig) -> dict[str, Any]:
    """The tick file header of a simulated session (SPEC section 3).

    Parameters
    ----------
    config
        The simulation.

    Returns
    -------
    dict
        :func:`feedengine.tickfile.make_meta` with ``source`` ``"simulator"``, the
        :func:`instruments`, ``simulator`` (the config as JSON) and ``created_utc`` fixed
        to ``config.created_utc`` when set.
    """
    extra: dict[str, Any] = {"simulator": config.as_json()}
    if config.created_utc is not None:
        extra["created_utc"] = config.created_utc
    return make_meta("simulator", instruments(config), **extra)


def _packet_lengths(kind: np.ndarray, mode: str) -> np.ndarray:
    """Per instrument, the length of its packets in ``mode`` (mixed: by turns)."""
    index = kind == Kind.INDEX
    full = np.where(index, PKT_INDEX_FULL, PKT_FULL)
    quote = np.where(index, PKT_INDEX_QUOTE, PKT_QUOTE)
    ltp = np.full(len(kind), PKT_LTP)
    if mode == "full":
        return full
    if mode == "quote":
        return quote
    if mode == "ltp":
        return ltp
    return np.choose(np.arange(len(kind)) % 3, [full, quote, ltp])


def _records(ticks: np.ndarray, plen: int, tokens: np.ndarray) -> np.ndarray:
    """Packets of ``ticks``: an ``(n, plen + 2)`` uint8 array, each row a big-endian u16
    length and the packet."""
    out = np.empty((len(ticks), plen + 2), dtype=np.uint8)
    out[:, 0] = plen >> 8
    out[:, 1] = plen & 0xFF
    # Byte swap and copy in one pass (into unaligned views).
    packet = out[:, 2:].view(">i4")
    source = as_words(ticks)
    for words, fields in _BLOCKS[plen]:
        packet[:, words] = source[:, fields]
    names = wire.PACKET_WORDS[plen]
    packet[:, 0] = tokens[ticks["instrument"]]
    if "change" in names:
        packet[:, names.index("change")] = ticks["last_price"] - ticks["close"]
    if "exchange_timestamp" in names:
        packet[:, names.index("exchange_timestamp")] = ticks["exchange_ns"] // NS_PER_S
    if "last_trade_time" in names:
        packet[:, names.index("last_trade_time")] = ticks["last_trade_ns"] // NS_PER_S
    if plen == PKT_FULL:
        # A big-endian int32 of orders, read as little-endian and shifted by 16, is the
        # int16 and 2 bytes of padding Kite sends (2,184 packets: 45 us; writing the int16s
        # and the padding, 129 us).
        orders = out[:, 2:].view("<u4")[:, _ORDERS_WORDS]
        np.right_shift(orders, 16, out=orders)
    return out


def _frame_messages(kinds: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[int, bytes]]:
    """Messages of packets sorted by frame, in frame order.

    ``kinds`` holds ``(records, recv_ns)`` per packet kind in :data:`KIND_ORDER`, sorted by
    receive time. A frame's packets form one message (several when more than
    :data:`MAX_PACKETS`).
    """
    times = np.unique(np.concatenate([recv for _, recv in kinds]))
    blocks = []  # per kind: (bytes, packet size, first row per frame, end row per frame)
    for records, recv in kinds:
        lo = np.searchsorted(recv, times, "left").tolist()
        hi = np.searchsorted(recv, times, "right").tolist()
        blocks.append((records.reshape(-1).data, records.shape[1], lo, hi))
    out = []
    for j, recv_ns in enumerate(times.tolist()):
        parts = [(mv, size, lo[j], hi[j]) for mv, size, lo, hi in blocks if hi[j] > lo[j]]
        count = sum(b - a for _, _, a, b in parts)
        if count <= MAX_PACKETS:
            head = count.to_bytes(2, "big")
            out.append((recv_ns, b"".join([head, *(mv[a * s : b * s] for mv, s, a, b in parts)])))
            continue
        # An oversized frame: messages of at most MAX_PACKETS packets.
        pieces: list[memoryview] = []
        n = 0
        for mv, size, a, b in parts:
            while a < b:
                take = min(b - a, MAX_PACKETS - n)
                pieces.append(mv[a * size : (a + take) * size])
                n += take
                a += take
                if n == MAX_PACKETS:
                    out.append((recv_ns, b"".join([n.to_bytes(2, "big"), *pieces])))
                    pieces, n = [], 0
        if n:
            out.append((recv_ns, b"".join([n.to_bytes(2, "big"), *pieces])))
    return out


def encoder(listings: list[Listing], mode: str) -> Encoder:
    """Kite's encoder for a universe.

    Parameters
    ----------
    listings
        The universe.
    mode
        The subscription mode (:data:`feedengine.market.MODES`).

    Returns
    -------
    Encoder
        A window of ticks -> its Kite messages ``(recv_ns, message)``.
    """
    tokens = np.array([instrument_token(x) for x in listings], dtype=np.int64)
    plen_of = _packet_lengths(np.array([x.kind for x in listings]), mode)
    single = len(np.unique(plen_of)) == 1

    def encode(window: np.ndarray) -> list[tuple[int, bytes]]:
        if single:
            return _frame_messages([(_records(window, int(plen_of[0]), tokens), window["recv_ns"])])
        plen_row = plen_of[window["instrument"]]
        kinds = []
        for plen in KIND_ORDER:
            rows = np.flatnonzero(plen_row == plen)
            if len(rows):
                ticks = take(window, rows)
                kinds.append((_records(ticks, plen, tokens), ticks["recv_ns"]))
        return _frame_messages(kinds)

    return encode


def message_batches(config: SimConfig) -> Iterator[list[tuple[int, bytes]]]:
    """:func:`messages`, a generated chunk at a time."""
    market = Market(config)
    encode = encoder(market.listings, config.mode)
    heartbeat_ns = HEARTBEAT_MS * 1_000_000
    last_ns = market.schedule.origin_ns
    for window in windows(market):
        batch: list[tuple[int, bytes]] = []
        for msg_ns, msg in encode(window):
            while last_ns + heartbeat_ns < msg_ns:
                last_ns += heartbeat_ns
                batch.append((last_ns, HEARTBEAT))
            last_ns = msg_ns
            batch.append((msg_ns, msg))
        yield batch
    tail = []
    while last_ns + heartbeat_ns <= market.schedule.end_ns:
        last_ns += heartbeat_ns
        tail.append((last_ns, HEARTBEAT))
    if tail:
        yield tail


def messages(config: SimConfig) -> Iterator[tuple[int, bytes]]:
    """The simulated session as Kite WebSocket messages, in receive order.

    Parameters
    ----------
    config
        The simulation.

    Yields
    ------
    (int, bytes)
        ``(recv_ns, message)``: Unix-epoch nanoseconds (non-decreasing) and one binary
        message (many packets, or the 1-byte heartbeat ``b"\\x00"``). Generated a chunk at
        a time: memory stays bounded whatever the session size.
    """
    for batch in message_batches(config):
        yield from batch
