"""Reference candle aggregator: SPEC section 4 straightforwardly, a dict per instrument.

It reads the same neutral tick rows as the compiled kernel (``KTICK_DTYPE``) and returns the
final candle rows; tests require the kernel to produce exactly these. It keeps the spec's
state where the kernel keeps less: the day's extremes of every IST date, where the kernel
holds only the latest date's.
"""

from dataclasses import dataclass, field
from typing import Any

from feedengine.sessions import NS_PER_MIN, NS_PER_S, ist_day, ist_midnight_ns


@dataclass
class _Bar:
    start: int
    end: int
    open: int
    high: int
    low: int
    close: int
    base: int  # baseline cumulative volume of this candle, -1 until known
    last: int  # cumulative volume of its last accepted volume tick, -1 if none


@dataclass
class _Extremes:
    """One IST date's largest day high and smallest non-zero day low so far."""

    high: int
    low: int | None  # None until a tick reports a non-zero low


@dataclass
class _Instrument:
    open_s: int
    close_s: int
    preopen_day: int = -1
    preopen_price: int = 0
    bars: dict[int, _Bar] = field(default_factory=dict)  # by interval, the current bar
    next_base: dict[int, int] = field(default_factory=dict)  # by interval
    extremes: dict[int, _Extremes] = field(default_factory=dict)  # by IST day number


@dataclass
class Result:
    """Final rows ``(slot, minutes, bucket_start_ns, open, high, low, close, volume)``."""

    rows: list[tuple[int, int, int, int, int, int, int, int]]
    late: dict[int, int]
    preopen: int = 0
    after_close: int = 0
    unknown: int = 0


def _day_range_moves(inst: _Instrument, day: int, tick: Any) -> tuple[int | None, int | None, bool]:
    """Fold an in-session tick's day range into the date's extremes (SPEC: extremes between
    snapshots).

    Returns ``(high, low, first)``: the day high its candles rise to and the day low they
    fall to (None: no change), and whether it is the date's first tick with a day range,
    whose extremes count only in the session's first bucket.
    """
    if not tick["has_day_range"]:
        return None, None, False
    high, low = int(tick["day_high"]), int(tick["day_low"]) or None
    known = inst.extremes.get(day)
    if known is None:
        inst.extremes[day] = _Extremes(high, low)
        return high, low, True
    raise_to = high if high > known.high else None
    lower_to = low if low is not None and (known.low is None or low < known.low) else None
    known.high = max(known.high, high)
    if lower_to is not None:
        known.low = lower_to
    return raise_to, lower_to, False


def aggregate(
    ticks: Any,
    sessions: dict[int, tuple[int, int]],
    intervals: list[int],
    grace_ns: int = 2 * NS_PER_S,
) -> Result:
    """Build candles from ticks in arrival order and finalize every open one at the end.

    Parameters
    ----------
    ticks
        Iterable of rows with ``KTICK_DTYPE`` fields (numpy rows or dicts).
    sessions
        ``{slot: (open_s, close_s)}``, seconds after IST midnight; a tick of any other slot
        is unknown.
    intervals
        Candle lengths in minutes.
    grace_ns
        How long after a bucket's end its ticks are still accepted.
    """
    state = {tok: _Instrument(o, c) for tok, (o, c) in sessions.items()}
    result = Result(rows=[], late=dict.fromkeys(intervals, 0))

    def emit(tok: int, minutes: int, bar: _Bar) -> None:
        volume = bar.last - bar.base if bar.last >= 0 else 0
        result.rows.append(
            (tok, minutes, bar.start, bar.open, bar.high, bar.low, bar.close, volume)
        )

    for tick in ticks:
        tok = int(tick["slot"])
        inst = state.get(tok)
        if inst is None:
            result.unknown += 1
            continue
        t = int(tick["event_ns"])
        recv = int(tick["recv_ns"])
        price = int(tick["price"])
        has_volume = bool(tick["has_volume"])
        cum = int(tick["volume"])
        day = ist_day(t)
        midnight = ist_midnight_ns(day)
        open_ns = midnight + inst.open_s * NS_PER_S
        close_ns = midnight + inst.close_s * NS_PER_S
        if t < open_ns or t >= close_ns:
            if t < open_ns:
                result.preopen += 1
                if tick["auction"]:
                    inst.preopen_day, inst.preopen_price = day, price
            else:
                result.after_close += 1
            if has_volume:
                for minutes in intervals:
                    inst.next_base[minutes] = cum
            continue
        day_high, day_low, first = _day_range_moves(inst, day, tick)
        for minutes in intervals:
            length = minutes * NS_PER_MIN
            start = open_ns + (t - open_ns) // length * length
            end = min(start + length, close_ns)
            bar = inst.bars.get(minutes)
            if recv >= end + grace_ns or (bar is not None and start < bar.start):
                result.late[minutes] += 1
                continue
            if bar is None or start > bar.start:
                if bar is not None:
                    emit(tok, minutes, bar)
                first_of_session = bar is None or bar.start < open_ns
                bar = _Bar(
                    start, end, price, price, price, price, inst.next_base.get(minutes, -1), -1
                )
                if first_of_session and inst.preopen_day == day:
                    pre = inst.preopen_price
                    bar.open, bar.high, bar.low = pre, max(pre, price), min(pre, price)
                inst.bars[minutes] = bar
            else:
                bar.high = max(bar.high, price)
                bar.low = min(bar.low, price)
                bar.close = price
            if not first or bar.start == open_ns:
                if day_high is not None:
                    bar.high = max(bar.high, day_high)
                if day_low is not None:
                    bar.low = min(bar.low, day_low)
            if has_volume:
                if bar.base < 0 or cum < bar.base:
                    bar.base = cum
                bar.last = cum
                inst.next_base[minutes] = cum
    for tok, inst in state.items():
        for minutes in intervals:
            if minutes in inst.bars:
                emit(tok, minutes, inst.bars[minutes])
    return result
