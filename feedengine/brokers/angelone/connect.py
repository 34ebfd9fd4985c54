"""A run of Angel One's live feed, from the configuration: log in, find the instruments,
open the stream; and ``--test-broker``'s three steps.

Everything Angel-specific that the command line needs, so that the command line knows Angel
One only by these two calls.
"""

from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

from feedengine.brokers.angelone.auth import login
from feedengine.brokers.angelone.config import AngelConfig
from feedengine.brokers.angelone.instruments import (
    AngelInstrument,
    fetch_scrip_master,
    read_scrip_master,
    resolve,
)
from feedengine.brokers.angelone.live import AngelLiveSource
from feedengine.brokers.angelone.stream import AngelStream
from feedengine.brokers.angelone.wire import decode_batch
from feedengine.slots import SlotTable
from feedengine.stream import TickProbe

#: Instruments ``--test-broker`` subscribes when none are named.
TEST_INSTRUMENTS = 3


def instruments(
    config: AngelConfig, home: Path, today: date, scrip_master: Path | None
) -> list[AngelInstrument]:
    """The scrip master: the file given, else today's download (cached in ``home``)."""
    if scrip_master is not None:
        return read_scrip_master(scrip_master)
    return fetch_scrip_master(config.scrip_master_url, home, today)


def live_source(
    config: AngelConfig,
    available: list[AngelInstrument],
    wanted: list[str],
    *,
    skip_unknown: bool = False,
    record: Path | None = None,
) -> AngelLiveSource:
    """Log in and open the stream of the ``wanted`` symbols (one clear line on failure)."""
    chosen = resolve(wanted, available, "Angel One's scrip master", skip_unknown)
    return AngelLiveSource(chosen, config.ws_url, login(config), record=record)


def test_broker(
    config: AngelConfig, scrips: Callable[[], list[AngelInstrument]], wanted: list[str] | None
) -> Iterator[str]:
    """Log in, read the scrip master, stream until a tick of a chosen instrument arrives.

    Yields a line per step as it passes.

    Raises
    ------
    AuthError, BrokerError
        The step that failed, in one line.
    """
    session = login(config)
    yield f"1/3 credentials ok: client {session.client_code}"
    available = scrips()
    yield f"2/3 scrip master: {len(available):,} instruments"
    chosen = (
        resolve(wanted, available, "Angel One's scrip master")
        if wanted
        else available[:TEST_INSTRUMENTS]
    )
    table = SlotTable.build([i.key for i in chosen])

    def is_tick(recv_ns: int, message: bytes) -> bool:
        rows, _, _ = decode_batch([message], [recv_ns], table)
        return bool((rows["slot"] >= 0).any())

    probe = TickProbe(is_tick)
    stream = AngelStream(config.ws_url, session, [i.key for i in chosen], probe)
    probe.run(stream, config.ws_url, len(chosen), "instruments")
    yield f"3/3 stream ok: {len(chosen)} instruments, ticks arrived ({probe.messages} messages)"
