"""A synthetic market, broker-neutral: one IST trading session of a universe of instruments.

The market knows instruments, sessions, prices and volumes, and nothing of any broker's wire.
It produces ticks (:data:`~feedengine.market.tick.TICK_DTYPE`) a window of frames at a time
(:func:`~feedengine.market.frames.windows`); a broker's encoder (:data:`Encoder`) turns each
window into that broker's binary messages, e.g. :mod:`feedengine.brokers.kite.simencode`.

A broker's simulated feed is one factory, ``encoder(listings, mode) -> Encoder``: the
:class:`Listing` of a tick's ``instrument`` gives its exchange, exchange token and price
scale; ``encode(window)`` returns ``[(recv_ns, message), ...]``, e.g. one packet per message
for Angel One::

    market = Market(config)
    encode = encoder(market.listings, config.mode)
    for window in windows(market):
        for recv_ns, message in encode(window):
            ...

Modules, one job each:

* :mod:`~feedengine.market.config`: what to simulate (:class:`SimConfig`, symbols files);
* :mod:`~feedengine.market.reference`: names, prices and contract specs;
* :mod:`~feedengine.market.universe`: the instruments, their tokens, tick and lot sizes;
* :mod:`~feedengine.market.clock`: sessions and phases by time of day, the window's chunks;
* :mod:`~feedengine.market.rates`: tick rates, volatilities, trade sizes;
* :mod:`~feedengine.market.draws`: the tables of a tick's minor random quantities;
* :mod:`~feedengine.market.groups`: running sums and extremes per instrument, vectorized;
* :mod:`~feedengine.market.process`: the price and volume process, a chunk at a time;
* :mod:`~feedengine.market.tick`: the neutral tick;
* :mod:`~feedengine.market.frames`: ticks batched on the frame grid, in windows.
"""

from feedengine.market.config import MODES, SimConfig, SimConfigError, read_symbols_file
from feedengine.market.frames import Encoder, windows
from feedengine.market.process import Market
from feedengine.market.tick import TICK_DTYPE
from feedengine.market.universe import Kind, Listing, universe

__all__ = [
    "MODES",
    "TICK_DTYPE",
    "Encoder",
    "Kind",
    "Listing",
    "Market",
    "SimConfig",
    "SimConfigError",
    "read_symbols_file",
    "universe",
    "windows",
]
