"""The market's ticks as a client receives them: batched on a frame grid, in windows.

A tick goes out with the next frame at or after its arrival (``start + k * frame_ms``), as a
broker batches its updates; with the default 250 ms frames every tick reaches the engine
within its 2 s grace. A window holds the whole frames due by the end of a generated chunk;
ticks that arrive later wait for the next one, so memory stays bounded whatever the session
size. Inside a frame, ticks keep the order they were generated in: chunk by chunk, by
instrument, each instrument's in exchange order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from feedengine.market.process import Market
from feedengine.market.tick import TICK_DTYPE, concat, take

__all__ = ["Encoder", "windows"]

#: Turns a window of ticks (:func:`windows`) into the broker's binary messages
#: ``(recv_ns, message)`` in receive order, each tick in one message sent at its ``recv_ns``.
#: Made per session from the universe and the mode, e.g.
#: :func:`feedengine.brokers.kite.simencode.encoder`.
Encoder = Callable[[np.ndarray], list[tuple[int, bytes]]]


def windows(market: Market) -> Iterator[np.ndarray]:
    """The session's ticks, a window at a time, in receive order.

    Parameters
    ----------
    market
        A new simulation; consumed.

    Yields
    ------
    numpy.ndarray
        :data:`~feedengine.market.tick.TICK_DTYPE` rows of one or more whole frames (never
        empty), ``recv_ns`` set to their frame's time and non-decreasing.
    """
    sched = market.schedule
    origin = sched.origin_ns
    frame_ns = market.config.frame_ms * 1_000_000
    pending = np.empty(0, TICK_DTYPE)
    for j, ch in enumerate(sched.chunks):
        new = market.ticks(ch)
        ticks = concat(pending, new) if len(pending) else new
        if not len(ticks):
            continue
        # Frame f goes out at origin + f * frame: the first grid point at or after arrival.
        frames = -((origin - ticks["recv_ns"]) // frame_ns)
        base = int(frames.min())
        if int(frames.max()) - base > np.iinfo(np.uint16).max:
            raise AssertionError("chunk too long for the frame sort")
        # A stable radix sort: ticks of an instrument keep their order.
        order = np.argsort((frames - base).astype(np.uint16), kind="stable")
        frames = frames[order]
        final = j == len(sched.chunks) - 1
        due_frame = (ch.end_ns - origin) // frame_ns
        cut = len(frames) if final else int(np.searchsorted(frames, due_frame, "right"))
        pending = take(ticks, order[cut:])
        if cut:
            window = take(ticks, order[:cut])
            window["recv_ns"] = origin + frames[:cut] * frame_ns
            yield window
