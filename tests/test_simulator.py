"""The market simulator: Kite messages of a synthetic session, written as a tick file."""

import collections
import hashlib
import subprocess
import sys
import tracemalloc
from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest

from feedengine import simulator as sim
from feedengine.brokers.kite import simencode, wire
from feedengine.brokers.kite.segments import DIVISORS, Segment
from feedengine.market import TICK_DTYPE, Market, windows
from feedengine.market import universe as market_universe
from feedengine.market.reference import INDICES, NIFTY50
from feedengine.market.universe import MAX_LOT
from feedengine.sessions import IST
from feedengine.tickfile import TickReader

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2024, 1, 15)
DAY_S = int(datetime.combine(DAY, time(0), IST).timestamp())
PREV_DAY_S = DAY_S - 3 * 86400  # the Friday before
NSE_OPEN = DAY_S + 9 * 3600 + 15 * 60
NSE_CLOSE = DAY_S + 15 * 3600 + 30 * 60
NS = 10**9

CONFIG = sim.SimConfig(
    instruments=60, ticks=30_000, seed=3, date=DAY, created_utc="2024-01-15T00:00:00+00:00"
)


def decode_all(msgs: list[tuple[int, bytes]]) -> np.ndarray:
    rows = []
    for recv_ns, msg in msgs:
        got, fault = wire.decode_checked(msg, recv_ns)
        assert fault == wire.Fault.NONE
        rows.append(got)
    return np.concatenate(rows)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The default small session written to a file, its messages and decoded ticks."""
    path = tmp_path_factory.mktemp("sim") / "day.ticks"
    stats = sim.simulate(path, CONFIG)
    reader = TickReader(path)
    msgs = list(reader.messages())
    return {
        "path": path,
        "stats": stats,
        "reader": reader,
        "msgs": msgs,
        "rows": decode_all(msgs),
        "meta": {i["instrument_token"]: i for i in reader.instruments},
    }


def per_instrument(rows: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(rows["instrument_token"], kind="stable")
    rows = rows[order]
    cuts = np.flatnonzero(np.diff(rows["instrument_token"])) + 1
    return {int(r["instrument_token"][0]): r for r in np.split(rows, cuts)}


# --- the file ---------------------------------------------------------------------------


def test_file_reads_back_as_the_messages(session):
    reader, stats = session["reader"], session["stats"]
    assert reader.meta["format"] == 1 and reader.meta["source"] == "simulator"
    assert reader.meta["created_utc"] == CONFIG.created_utc
    assert reader.meta["simulator"]["seed"] == 3
    assert reader.instruments == sim.instruments(CONFIG)
    assert reader.torn_tail_offset is None
    assert session["msgs"] == list(sim.messages(CONFIG))
    batches = list(reader.batches(1000))
    assert sum(len(b) for b in batches) == len(session["msgs"]) == stats.messages
    assert stats.ticks == len(session["rows"])
    assert stats.bytes == session["path"].stat().st_size
    assert stats.heartbeats == sum(1 for _, m in session["msgs"] if m == b"\x00")


def test_every_message_decodes_and_equals_wire_encode(session):
    heartbeats = 0
    for recv_ns, msg in session["msgs"]:
        rows, fault = wire.decode_checked(msg, recv_ns)
        assert fault == wire.Fault.NONE
        if len(msg) == 1:
            assert msg == simencode.HEARTBEAT and len(rows) == 0
            heartbeats += 1
            continue
        assert 0 < len(rows) <= simencode.MAX_PACKETS
        # The simulator's packer writes what feedengine.brokers.kite.wire.encode writes.
        assert wire.encode(rows) == msg
    assert heartbeats > 0


def test_tokens_segments_and_universe(session):
    meta, rows = session["meta"], session["rows"]
    assert len(meta) == CONFIG.n_instruments == 60
    for token, info in meta.items():
        assert token == info["exchange_token"] << 8 | (token & 0xFF)
        assert 0 < token < 2**31
    segments = collections.Counter(token & 0xFF for token in meta)
    assert segments[Segment.NSE] > 40
    for seg in (Segment.INDICES, Segment.NFO, Segment.CDS, Segment.MCX, Segment.NCO):
        assert segments[seg] >= 1
    symbols = [i["tradingsymbol"] for i in meta.values()]
    assert len(set(symbols)) == len(symbols)
    assert symbols[:5] == ["RELIANCE", "HDFCBANK", "ICICIBANK", "INFY", "TCS"]
    assert "NIFTY 50" in symbols and "NIFTY24JANFUT" in symbols
    assert "USDINR24JANFUT" in symbols and "CRUDEOIL24JANFUT" in symbols
    # Every instrument ticks, with its segment in the token.
    assert set(np.unique(rows["instrument_token"]).tolist()) == set(meta)
    assert (rows["segment"] == (rows["instrument_token"] & 0xFF)).all()
    index = rows["segment"] == Segment.INDICES
    assert (rows["packet_length"][index] == 32).all()
    assert (rows["packet_length"][~index] == 184).all()


def test_universe_does_not_depend_on_the_seed():
    other = sim.SimConfig(instruments=60, seed=99)
    assert sim.instruments(other) == sim.instruments(CONFIG)


def test_big_universe():
    universe = sim.instruments(sim.SimConfig(instruments=3000))
    tokens = [i["instrument_token"] for i in universe]
    assert len(set(tokens)) == 3000
    kinds = collections.Counter(i["segment"] for i in universe)
    assert kinds["NSE"] > 2500 and kinds["INDICES"] == len(INDICES)
    assert kinds["NFO-FUT"] > 50 and kinds["CDS-FUT"] and kinds["MCX-FUT"] and kinds["NCO-FUT"]
    symbols = [i["tradingsymbol"] for i in universe]
    assert len(set(symbols)) == 3000 and "SYM0001" in symbols
    stock_futures = [i for i in universe if i["segment"] == "NFO-FUT"][3:]
    assert all(1 <= i["lot_size"] <= MAX_LOT for i in stock_futures)
    assert len({i["lot_size"] for i in stock_futures}) > 10


# --- the neutral market and Kite's encoder ---------------------------------------------


def test_kite_packets_are_the_market_ticks():
    """Every packet is one tick of the market, field for field: the encoder adds nothing."""
    config = sim.SimConfig(
        instruments=45, ticks=9_000, indices=4, nfo=3, cds=2, mcx=2, nco=2, mode="mixed", seed=6
    )
    frame_ns = config.frame_ms * 10**6
    chunks = list(windows(Market(config)))
    assert all(len(w) and w.dtype == TICK_DTYPE for w in chunks)
    ticks = np.concatenate(chunks)
    assert (np.diff(ticks["recv_ns"]) >= 0).all()
    assert ((ticks["recv_ns"] - chunks[0]["recv_ns"][0]) % frame_ns == 0).all()
    assert (ticks["recv_ns"] > ticks["exchange_ns"]).all()
    rows = decode_all(list(sim.messages(config)))
    assert {8, 28, 32, 44, 184} <= set(np.unique(rows["packet_length"]).tolist())
    tokens = [i["instrument_token"] for i in sim.instruments(config)]
    instrument = np.searchsorted(np.sort(tokens), rows["instrument_token"])
    instrument = np.argsort(tokens)[instrument]
    # Inside a message Kite groups packets by kind: compare in (time, instrument) order.
    ticks = ticks[np.lexsort((ticks["instrument"], ticks["recv_ns"]))]
    order = np.lexsort((instrument, rows["recv_ns"]))
    rows, instrument = rows[order], instrument[order]
    assert (instrument == ticks["instrument"]).all()
    assert (rows["recv_ns"] == ticks["recv_ns"]).all()
    assert (rows["last_price"] == ticks["last_price"]).all()
    plen = rows["packet_length"]
    day = plen != 8
    for name in ("open", "high", "low", "close"):
        assert (rows[name][day] == ticks[name][day]).all(), name
    index = np.isin(plen, [28, 32])
    assert (rows["change"][index] == (ticks["last_price"] - ticks["close"])[index]).all()
    quote = np.isin(plen, [44, 184])
    for name in (
        "last_traded_quantity",
        "average_traded_price",
        "volume_traded",
        "total_buy_quantity",
        "total_sell_quantity",
    ):
        assert (rows[name][quote] == ticks[name][quote]).all(), name
    stamped = np.isin(plen, [32, 184])
    assert (rows["exchange_timestamp"][stamped] == ticks["exchange_ns"][stamped] // NS).all()
    full = plen == 184
    assert (rows["last_trade_time"][full] == ticks["last_trade_ns"][full] // NS).all()
    for name in ("oi", "oi_day_high", "oi_day_low"):
        assert (rows[name][full] == ticks[name][full]).all(), name
    book = ticks["depth"][full]
    for side, levels in (("bid", slice(0, 5)), ("ask", slice(5, 10))):
        assert (rows[f"{side}_quantity"][full] == book["quantity"][:, levels]).all()
        assert (rows[f"{side}_price"][full] == book["price"][:, levels]).all()
        assert (rows[f"{side}_orders"][full] == book["orders"][:, levels]).all()


def test_price_scale_is_kites_divisor(tmp_path):
    path = tmp_path / "symbols.txt"
    path.write_text("INFY\nBSE:TCS\nINDICES:NIFTY BANK\nBFO:SENSEX24JANFUT\nBCD:EURINR24JANFUT\n")
    for config in (
        sim.SimConfig(instruments=3000),
        sim.SimConfig(symbols=sim.read_symbols_file(path)),
    ):
        for listing in market_universe(config):
            segment = simencode.instrument_token(listing) & 0xFF
            assert listing.scale == DIVISORS[segment], listing


@pytest.mark.parametrize(
    ("config", "digest"),
    [
        (
            sim.SimConfig(
                instruments=40,
                ticks=6_000,
                indices=3,
                nfo=4,
                cds=2,
                mcx=2,
                nco=2,
                mode="mixed",
                seed=21,
                start=time(9),
                end=time(10),
            ),
            "93ad8b5b857a738a36784e1bf2d0ba88874eea22175bf081972fc8fc5d8e4562",
        ),
        (
            sim.SimConfig(
                symbols=(
                    ("NSE", "INFY"),
                    ("BSE", "TCS"),
                    ("NSE", "NIFTY 50"),
                    ("NFO", "BANKNIFTY24JANFUT"),
                    ("BFO", "SENSEX24JANFUT"),
                    ("CDS", "USDINR24JANFUT"),
                    ("BCD", "EURINR24JANFUT"),
                    ("MCX", "GOLD24FEBFUT"),
                    ("NCO", "COPPER24JANFUT"),
                ),
                ticks=4_000,
                mode="quote",
                seed=22,
                start=time(9, 5),
                end=time(11),
                chunk_seconds=20,
                frame_ms=400,
            ),
            "7bbae7763cc755f8d55ed08ab24c0cc6c4b32e1c2d26a5f6da4cb63138406e73",
        ),
    ],
    ids=["mixed", "quote-symbols"],
)
def test_messages_are_pinned(config, digest):
    """The messages of the simulator before the market and Kite's encoder were split."""
    h = hashlib.sha256()
    for recv_ns, msg in sim.messages(config):
        h.update(recv_ns.to_bytes(8, "little"))
        h.update(msg)
    assert h.hexdigest() == digest


# --- time -------------------------------------------------------------------------------


def test_receive_times(session):
    recv = np.array([r for r, _ in session["msgs"]])
    assert (np.diff(recv) >= 0).all()
    # Kite sends something at least every second (heartbeats when there is no data).
    assert np.diff(recv).max() <= NS
    start = DAY_S * NS + 9 * 3600 * NS
    end = DAY_S * NS + (15 * 3600 + 35 * 60) * NS
    assert start < recv[0] <= start + NS and end - NS <= recv[-1] <= end + 3 * NS
    data = np.array([r for r, m in session["msgs"] if len(m) > 1])
    assert ((data - start) % (CONFIG.frame_ms * 10**6) == 0).all()


def test_exchange_times_precede_receive_times(session):
    rows = session["rows"]
    ts = rows["exchange_timestamp"]
    assert (ts > 0).all()  # full and index full packets carry it
    lag = rows["recv_ns"] - ts * NS
    assert (lag > 0).all()
    # Latency at most 1.5 s, plus a frame, plus the second truncated from the timestamp.
    assert lag.max() <= (1500 + CONFIG.frame_ms + 1000) * 10**6
    trades = rows["segment"] != Segment.INDICES
    assert (rows["last_trade_time"][trades] <= ts[trades]).all()
    assert (rows["last_trade_time"][trades] > 0).all()


def test_per_instrument_order(session):
    for token, r in per_instrument(session["rows"]).items():
        assert (np.diff(r["recv_ns"]) >= 0).all()
        assert (np.diff(r["exchange_timestamp"]) >= 0).all(), token
        if token & 0xFF != Segment.INDICES:
            assert (np.diff(r["volume_traded"]) >= 0).all(), token
            assert (np.diff(r["last_trade_time"]) >= 0).all(), token


def test_sessions_per_exchange(session):
    first = {
        t: int(r["exchange_timestamp"].min()) for t, r in per_instrument(session["rows"]).items()
    }
    last = {
        t: int(r["exchange_timestamp"].max()) for t, r in per_instrument(session["rows"]).items()
    }
    for token, t in first.items():
        seg = token & 0xFF
        if seg in (Segment.INDICES, Segment.NFO):
            assert t >= NSE_OPEN
            assert last[token] < NSE_CLOSE + 300
        if seg in (Segment.CDS, Segment.MCX, Segment.NCO):
            assert DAY_S + 9 * 3600 <= t < NSE_OPEN
        if seg == Segment.NSE:
            assert t >= DAY_S + 9 * 3600


# --- pre-open and close -----------------------------------------------------------------


def test_pre_open_auction(session):
    stocks = {t: r for t, r in per_instrument(session["rows"]).items() if t & 0xFF == 1}
    quiet = matched = 0
    for r in stocks.values():
        pre = r[r["exchange_timestamp"] < NSE_OPEN]
        assert len(pre), "every NSE stock has pre-open ticks"
        same_day = pre["last_trade_time"] >= DAY_S
        # Before the match: no trade today, last trade on the previous trading day.
        before = pre[~same_day]
        assert (before["volume_traded"] == 0).all() and (before["open"] == 0).all()
        assert (
            (before["last_trade_time"] >= PREV_DAY_S)
            & (before["last_trade_time"] < PREV_DAY_S + 86400)
        ).all()
        quiet += len(before)
        # The match: a full packet whose last trade (the auction) is on the trading date,
        # with the pre-open volume and the auction price as the day's open.
        match = pre[same_day]
        assert len(match) >= 1
        matched += 1
        ltt = match["last_trade_time"]
        assert (ltt == ltt[0]).all()
        assert DAY_S + 9 * 3600 + 7 * 60 <= ltt[0] < DAY_S + 9 * 3600 + 8 * 60
        assert (match["volume_traded"] == match["volume_traded"][0]).all()
        assert match["volume_traded"][0] > 0
        assert (match["last_price"] == match["open"]).all()
        assert (match["high"] == match["open"]).all() and (match["low"] == match["open"]).all()
        assert (match["average_traded_price"] == match["last_price"]).all()
        # The session continues from the auction: its volume and open.
        session_rows = r[r["exchange_timestamp"] >= NSE_OPEN]
        if len(session_rows):
            assert session_rows["volume_traded"][0] >= match["volume_traded"][0]
            assert (session_rows["open"] == match["open"][0]).all()
    assert matched == len(stocks) and quiet > 0


def test_after_close_has_no_trades(session):
    seen = 0
    for token, r in per_instrument(session["rows"]).items():
        if token & 0xFF not in (Segment.NSE, Segment.NFO, Segment.INDICES):
            continue
        after = r[r["exchange_timestamp"] >= NSE_CLOSE]
        before = r[r["exchange_timestamp"] < NSE_CLOSE]
        if not len(after):
            continue
        seen += len(after)
        assert (after["last_price"] == before["last_price"][-1]).all()
        assert (after["volume_traded"] == before["volume_traded"][-1]).all()
        assert (after["last_trade_time"] < NSE_CLOSE).all()
    assert seen > 0


# --- prices ------------------------------------------------------------------------------


def test_prices_on_tick_positive_and_consistent(session):
    for token, r in per_instrument(session["rows"]).items():
        info = session["meta"][token]
        tick = round(info["tick_size"] * DIVISORS[token & 0xFF])
        price = r["last_price"].astype(np.int64)
        assert (price > 0).all() and (price % tick == 0).all()
        for name in ("open", "high", "low", "close"):
            assert (r[name] >= 0).all() and (r[name] % tick == 0).all(), (name, info)
        traded = r["open"] > 0
        assert (r["low"][traded] <= r["open"][traded]).all()
        assert (r["high"][traded] >= r["open"][traded]).all()
        assert (r["close"] == r["close"][0]).all() and r["close"][0] > 0
        if token & 0xFF == Segment.INDICES:
            assert (r["change"] == price - r["close"]).all()
            continue
        assert (r["low"][traded] <= price[traded]).all()
        assert (r["high"][traded] >= price[traded]).all()
        assert (np.diff(r["high"][traded]) >= 0).all() and (np.diff(r["low"][traded]) <= 0).all()
        avg = r["average_traded_price"][r["volume_traded"] > 0]
        assert (avg >= r["low"][r["volume_traded"] > 0]).all()
        assert (avg <= r["high"][r["volume_traded"] > 0]).all()
        assert (r["last_traded_quantity"] > 0).all() == (r["volume_traded"] > 0).all()
        assert (r["last_traded_quantity"] <= r["volume_traded"]).all()
        assert (r["total_buy_quantity"] > 0).all() and (r["total_sell_quantity"] > 0).all()
        # Depth: five bids below the price, five asks above, on the tick grid.
        bids, asks = r["bid_price"].astype(np.int64), r["ask_price"].astype(np.int64)
        assert (bids % tick == 0).all() and (asks % tick == 0).all()
        assert (bids[:, 0] < price).all() and (asks[:, 0] > price).all()
        assert (np.diff(bids, axis=1) < 0).all() and (np.diff(asks, axis=1) > 0).all()
        assert (bids > 0).all()
        for side in ("bid", "ask"):
            assert (r[f"{side}_orders"] >= 1).all()
            assert (r[f"{side}_quantity"] >= r[f"{side}_orders"]).all()
            assert (r[f"{side}_quantity"] % info["lot_size"] == 0).all()
        derivative = token & 0xFF in (Segment.NFO, Segment.CDS, Segment.MCX, Segment.NCO)
        if derivative:
            assert (r["oi"] > 0).all()
            assert (r["oi_day_low"] <= r["oi"]).all() and (r["oi"] <= r["oi_day_high"]).all()
        else:
            assert (r["oi"] == 0).all()


def test_day_range_moves_between_snapshots(session):
    """Trades between two ticks show only in the next packet's day high and low."""
    unseen_highs = unseen_lows = instruments = 0
    for token, r in per_instrument(session["rows"]).items():
        traded = r[r["high"] > 0]
        if not len(traded):
            continue
        price = traded["last_price"].astype(np.int64)
        assert (traded["high"] >= np.maximum.accumulate(price)).all(), token
        assert (traded["low"] <= np.minimum.accumulate(price)).all(), token
        # Day highs and lows that no tick of the instrument had as its price.
        high = np.isin(np.unique(traded["high"]), price, invert=True).sum()
        low = np.isin(np.unique(traded["low"]), price, invert=True).sum()
        unseen_highs += high
        unseen_lows += low
        instruments += bool(high and low)
    assert instruments > 0.8 * len(session["meta"])
    assert unseen_highs > 300 and unseen_lows > 300


def test_currency_prices_fit_int32():
    config = sim.SimConfig(
        instruments=20,
        cds=8,
        nfo=0,
        mcx=0,
        nco=0,
        indices=0,
        ticks=20_000,
        seed=5,
        start=time(9),
        end=time(10),
    )
    rows = decode_all(list(sim.messages(config)))
    cds = rows[rows["segment"] == Segment.CDS]
    assert len(cds) > 100
    # 0.0025 rupee ticks at the CDS divisor of 10**7; rupee prices below 214.
    assert (cds["last_price"] % 25_000 == 0).all()
    assert (cds["ask_price"].astype(np.int64) < 2**31 - 1).all()
    rupees = cds["last_price"] / 10_000_000
    assert rupees.min() > 50 and rupees.max() < 214


# --- volume of ticks ---------------------------------------------------------------------


def test_tick_count_follows_the_target():
    for n, ticks in ((30, 5_000), (300, 60_000)):
        config = sim.SimConfig(instruments=n, ticks=ticks, seed=7, start=time(9), end=time(15, 35))
        total = sum((m[0] << 8 | m[1]) for _, m in sim.messages(config) if len(m) > 1)
        assert 0.9 * ticks < total < 1.1 * ticks


def test_tick_rates_are_heavy_tailed():
    config = sim.SimConfig(instruments=300, ticks=100_000, seed=2)
    rows = decode_all(list(sim.messages(config)))
    counts = np.sort(np.bincount(np.unique(rows["instrument_token"], return_inverse=True)[1]))[::-1]
    top = counts[: len(counts) // 10].sum() / counts.sum()
    assert top > 0.4
    assert counts[0] > 20 * np.median(counts)
    # The busiest names tick about once a second or more through the session.
    assert counts[0] > 22_500 * 0.5


def test_message_sizes_of_a_big_universe():
    # Two minutes of a 20 M-tick, 3000-instrument day.
    config = sim.SimConfig(
        instruments=3000, ticks=20_000_000 * 120 // 22_500, seed=1, start=time(10), end=time(10, 2)
    )
    sizes = [m[0] << 8 | m[1] for _, m in sim.messages(config) if len(m) > 1]
    assert 100 <= np.median(sizes) <= 500


def test_generation_is_lazy_and_memory_bounded():
    config = sim.SimConfig(instruments=3000, ticks=20_000_000)
    tracemalloc.start()
    try:
        stream = sim.messages(config)
        for _ in range(2000):
            next(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20


# --- modes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "stock", "index"),
    [
        ("quote", {44}, {28}),
        ("ltp", {8}, {8}),
        ("full", {184}, {32}),
    ],
)
def test_modes(mode, stock, index):
    config = sim.SimConfig(instruments=20, ticks=3_000, mode=mode, start=time(9), end=time(12))
    rows = decode_all(list(sim.messages(config)))
    is_index = rows["segment"] == Segment.INDICES
    assert set(np.unique(rows["packet_length"][~is_index]).tolist()) == stock
    assert set(np.unique(rows["packet_length"][is_index]).tolist()) == index


def test_mixed_mode_is_fixed_per_instrument():
    config = sim.SimConfig(instruments=30, ticks=10_000, mode="mixed", end=time(11))
    rows = decode_all(list(sim.messages(config)))
    assert {8, 44, 184} <= set(np.unique(rows["packet_length"]).tolist())
    for r in per_instrument(rows).values():
        assert len(np.unique(r["packet_length"])) == 1
    again = decode_all(list(sim.messages(config)))
    assert (again == rows).all()


# --- determinism ------------------------------------------------------------------------


def test_same_config_same_messages_other_seed_other_messages():
    config = sim.SimConfig(instruments=40, ticks=8_000, seed=11, end=time(11))
    assert list(sim.messages(config)) == list(sim.messages(config))
    other = sim.SimConfig(instruments=40, ticks=8_000, seed=12, end=time(11))
    assert list(sim.messages(other)) != list(sim.messages(config))


def test_same_config_byte_identical_files(tmp_path):
    config = sim.SimConfig(
        instruments=25, ticks=4_000, seed=4, end=time(10), created_utc="2024-01-15T03:30:00+00:00"
    )
    sim.simulate(tmp_path / "a.ticks", config)
    sim.simulate(tmp_path / "b.ticks", config)
    assert (tmp_path / "a.ticks").read_bytes() == (tmp_path / "b.ticks").read_bytes()


# --- universe from a symbols file ------------------------------------------------------


def test_symbols_file(tmp_path):
    path = tmp_path / "symbols.txt"
    path.write_text(
        "# watchlist\nINFY\nnse:reliance   # comment\n\nNSE:NIFTY 50\n"
        "NFO:BANKNIFTY24JANFUT\nCDS:USDINR24JANFUT\nMCX:GOLD24FEBFUT\n"
        "NCO:GOLDPETAL24JANFUT\nNFO:INFY24JANFUT\nINFY\n"
    )
    symbols = sim.read_symbols_file(path)
    assert symbols == (
        ("NSE", "INFY"),
        ("NSE", "RELIANCE"),
        ("NSE", "NIFTY 50"),
        ("NFO", "BANKNIFTY24JANFUT"),
        ("CDS", "USDINR24JANFUT"),
        ("MCX", "GOLD24FEBFUT"),
        ("NCO", "GOLDPETAL24JANFUT"),
        ("NFO", "INFY24JANFUT"),
    )
    config = sim.SimConfig(symbols=symbols, ticks=5_000, end=time(12))
    universe = sim.instruments(config)
    assert [(i["exchange"], i["tradingsymbol"]) for i in universe] == list(symbols)
    segments = [i["instrument_token"] & 0xFF for i in universe]
    assert segments == [1, 1, 9, 2, 3, 7, 12, 2]
    assert universe[3]["lot_size"] == 15 and universe[2]["segment"] == "INDICES"
    assert universe[7]["lot_size"] == round(500_000 / 1600)  # a stock future: ~5 lakh
    rows = decode_all(list(sim.messages(config)))
    assert set(np.unique(rows["instrument_token"]).tolist()) == {
        i["instrument_token"] for i in universe
    }
    # A symbol keeps its token whatever else is in the universe.
    generated = {
        i["tradingsymbol"]: i["instrument_token"]
        for i in sim.instruments(sim.SimConfig(instruments=50))
    }
    assert universe[0]["instrument_token"] == generated["INFY"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read symbols file"),
        ("FOO:BAR\n", "unknown exchange 'FOO'"),
        ("# nothing\n\n", "lists no symbol"),
        ("NSE:\n", "no symbol after NSE"),
    ],
)
def test_symbols_file_errors(tmp_path, text, message):
    path = tmp_path / "symbols.txt"
    if text is not None:
        path.write_text(text)
    with pytest.raises(sim.SimConfigError, match=message):
        sim.read_symbols_file(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "fast"}, "unknown mode"),
        ({"instruments": 0}, "at least 1"),
        ({"start": time(10), "end": time(9)}, "not after start"),
        ({"instruments": 3, "indices": 2, "nfo": 2}, "do not fit"),
        ({"symbols": (("NSE", "INFY"),), "instruments": 5}, "cannot be combined"),
        ({"symbols": ()}, "empty"),
        ({"ticks": -1}, "negative"),
        ({"frame_ms": 1}, "frame interval"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(sim.SimConfigError, match=message):
        sim.SimConfig(**kwargs)


# --- edge cases -------------------------------------------------------------------------


def test_oversized_frames_are_split(monkeypatch):
    config = sim.SimConfig(instruments=200, ticks=200_000, start=time(10), end=time(10, 5))
    expected = decode_all(list(sim.messages(config)))
    monkeypatch.setattr(simencode, "MAX_PACKETS", 7)
    msgs = list(sim.messages(config))
    assert max(m[0] << 8 | m[1] for _, m in msgs if len(m) > 1) == 7
    rows = decode_all(msgs)
    assert len(rows) == len(expected)
    assert (np.sort(rows["instrument_token"]) == np.sort(expected["instrument_token"])).all()


def test_window_after_the_open_and_only_heartbeats():
    config = sim.SimConfig(instruments=10, ticks=2_000, start=time(11), end=time(11, 30))
    rows = decode_all(list(sim.messages(config)))
    assert len(rows) > 500
    ts = rows["exchange_timestamp"][rows["exchange_timestamp"] > 0]
    assert ts.min() >= DAY_S + 11 * 3600 and ts.max() < DAY_S + 11 * 3600 + 1800
    # Before any market opens: heartbeats only, one a second.
    early = sim.SimConfig(instruments=10, start=time(8), end=time(8, 1))
    msgs = list(sim.messages(early))
    assert [m for _, m in msgs] == [b"\x00"] * 60
    assert [r for r, _ in msgs] == [(DAY_S + 8 * 3600 + k) * NS for k in range(1, 61)]


def test_no_ticks_but_the_auction():
    config = sim.SimConfig(instruments=20, ticks=0, nfo=0, cds=0, mcx=0, nco=0, indices=1)
    rows = decode_all(list(sim.messages(config)))
    assert len(rows) == 19  # one auction match per stock
    assert (rows["last_trade_time"] >= DAY_S).all()


def test_writer_errors_propagate(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Market, "ticks", broken)
    with pytest.raises(RuntimeError, match="boom"):
        sim.simulate(tmp_path / "x.ticks", sim.SimConfig(instruments=5, ticks=100))


def test_other_dates():
    config = sim.SimConfig(instruments=10, ticks=1_000, date=date(2024, 12, 2))
    names = [i["tradingsymbol"] for i in sim.instruments(config)]
    assert "NIFTY24DECFUT" in names
    rows = decode_all(list(sim.messages(config)))
    day = int(datetime.combine(date(2024, 12, 2), time(0), IST).timestamp())
    assert (rows["exchange_timestamp"] >= day + 9 * 3600).all()
    assert (rows["exchange_timestamp"] < day + 86400).all()
    assert (rows["last_trade_time"][rows["segment"] != 9] >= day - 3 * 86400).all()
    assert (
        rows["last_trade_time"][rows["segment"] != 9] < day + timedelta(hours=16).total_seconds()
    ).all()


# --- command line -----------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedengine.simulator", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_writes_a_tick_file(tmp_path):
    out = tmp_path / "cli.ticks"
    result = run_cli(
        "--out",
        str(out),
        "--instruments",
        "12",
        "--ticks",
        "2000",
        "--mode",
        "mixed",
        "--date",
        "2024-01-16",
        "--start",
        "09:00",
        "--end",
        "12:00",
        "--seed",
        "5",
        "--created-utc",
        "X",
    )
    assert result.returncode == 0, result.stderr
    assert "ticks" in result.stdout and "messages" in result.stdout
    reader = TickReader(out)
    assert reader.meta["created_utc"] == "X" and len(reader.instruments) == 12
    config = sim.SimConfig(
        instruments=12, ticks=2000, mode="mixed", date=date(2024, 1, 16), end=time(12), seed=5
    )
    assert list(reader.messages()) == list(sim.messages(config))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "2024-02-30"], "bad date '2024-02-30'"),
        (["--mode", "fast"], "invalid choice: 'fast'"),
        (["--symbols-file", "/nonexistent/symbols.txt"], "cannot read symbols file"),
        (["--start", "12:00", "--end", "11:00"], "end 11:00 is not after start 12:00"),
        (["--symbols-file", "x", "--instruments", "5"], "cannot be combined with --symbols-file"),
    ],
)
def test_cli_bad_arguments(tmp_path, args, message):
    result = run_cli("--out", str(tmp_path / "bad.ticks"), *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "bad.ticks").exists()


def test_sample_file_is_current():
    """samples/sample.ticks is what the command in the module docstring writes."""
    sample = ROOT / "samples" / "sample.ticks"
    reader = TickReader(sample)
    saved = reader.meta["simulator"]
    config = sim.SimConfig(
        **{
            k: saved[k]
            for k in (
                "instruments",
                "ticks",
                "mode",
                "seed",
                "indices",
                "nfo",
                "cds",
                "mcx",
                "nco",
                "frame_ms",
                "chunk_seconds",
            )
        },
        date=date.fromisoformat(saved["date"]),
        start=time.fromisoformat(saved["start"]),
        end=time.fromisoformat(saved["end"]),
    )
    assert (config.start, config.end) == (time(9), time(15, 35)) and config.mode == "full"
    assert sample.stat().st_size < 5 * 10**6
    assert list(reader.messages()) == list(sim.messages(config))
    names = [i["tradingsymbol"] for i in reader.instruments]
    assert names[:45] == [name for name, _ in NIFTY50[:45]]
    assert names[45:] == ["NIFTY 50", "NIFTY BANK"]


def test_instruments_sample_names_the_sample_file():
    listed = [
        line
        for line in (ROOT / "instruments_sample.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert listed == [name for name, _ in NIFTY50[:45]]
