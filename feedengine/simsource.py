"""The simulated market as a live source (``--simulate``): synthetic Kite messages, paced.

The simulator's session is played at real-time pace on a clock of its own, which the pipeline
uses as its live clock, so candles close exactly as they would on a live feed. When one of the
chosen instruments is in session right now, the simulated clock is this machine's; otherwise
the simulation plays today's session from the earliest open among them on a shifted clock, so a
demo at midnight shows ticks and candles within seconds too. Nothing is kept but the message in
flight: memory stays flat however long it runs.
"""

import importlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from datetime import time as dtime
from pathlib import Path

from feedengine import brokers
from feedengine.instruments import Instrument
from feedengine.recording import Recorder
from feedengine.sessions import IST, NS_PER_S, Session
from feedengine.simulator import SimConfig
from feedengine.source import MessageBatch
from feedengine.tickfile import make_meta

log = logging.getLogger(__name__)

#: The simulated day ends just before IST midnight (MCX trades until 23:55).
DAY_END = dtime(23, 59, 59)
#: Longest the source waits before handing the pipeline an empty batch, so that its clock
#: closes idle candles on time (seconds), as the live source does.
BATCH_WAIT_S = 0.05
#: Messages per batch at most (a backlog after a pause is handed over in pieces).
BATCH_MESSAGES = 4096
_EMPTY = MessageBatch.from_messages([])


def simulated_day(
    symbols: tuple[tuple[str, str], ...] | None,
    sessions: list[Session],
    now: datetime | None = None,
) -> SimConfig:
    """Today's simulation: from now if a session is open now, else from the earliest open.

    Parameters
    ----------
    symbols
        ``(exchange, tradingsymbol)`` pairs to simulate, or None for the default universe.
    sessions
        The sessions of the instruments that will be simulated.
    now
        The moment (IST); default the wall clock.
    """
    now = (now or datetime.now(IST)).astimezone(IST)
    seconds = now.hour * 3600 + now.minute * 60 + now.second
    if any(s.open_s <= seconds < s.close_s for s in sessions):
        start = now.time().replace(microsecond=0)
    else:
        start = min(s.open for s in sessions)
    return SimConfig(symbols=symbols, date=now.date(), start=start, end=DAY_END)


class SimulatedSource:
    """The simulator's messages for ``config``, at ``speed`` times real time.

    Parameters
    ----------
    config
        The simulated session (see :func:`simulated_day`).
    speed
        Pace relative to real time.
    record
        Tick file to record every message to, or None (see :class:`Recorder`).
    broker
        Whose messages: the broker's encoder of the same market
        (``feedengine.brokers.<broker>.simencode``).
    """

    name = "simulated market"

    def __init__(
        self,
        config: SimConfig,
        speed: float = 1.0,
        record: Path | None = None,
        broker: str = brokers.DEFAULT_BROKER,
    ) -> None:
        self.config = config
        self.speed = speed
        self.broker = broker
        self._encoding = importlib.import_module(f"feedengine.brokers.{broker}.simencode")
        entries = self._encoding.instruments(config)
        self._instruments = [brokers.get(broker).instrument_from_dict(d) for d in entries]
        self.recorder = (
            None if record is None else Recorder(record, make_meta(broker, entries, broker=broker))
        )
        self._stop = threading.Event()
        self._start_ns = int(datetime.combine(config.date, config.start, IST).timestamp()) * (
            NS_PER_S
        )
        self._origin_wall: int | None = None

    @property
    def instruments(self) -> list[Instrument]:
        return self._instruments

    @property
    def aligned(self) -> bool:
        """Whether the simulated clock is this machine's (a session is open now)."""
        return abs(self._start_ns - time.time_ns()) < 5 * NS_PER_S

    def clock(self) -> int:
        """Now on the simulated time line (Unix ns); the pipeline's live clock."""
        if self._origin_wall is None:
            return self._start_ns
        return self._start_ns + int((time.monotonic_ns() - self._origin_wall) * self.speed)

    @property
    def recording(self) -> dict[str, str | int | None] | None:
        """The recording as the heartbeat reports it; None when not recording."""
        return None if self.recorder is None else self.recorder.status

    def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()
        self._stop.clear()
        self._origin_wall = time.monotonic_ns()
        if not self.aligned:
            log.info(
                "no session of these instruments is open now: simulating %s from %s IST "
                "on a clock of its own",
                self.config.date,
                self.config.start.strftime("%H:%M"),
            )

    def stop(self) -> None:
        self._stop.set()
        if self.recorder is not None:
            self.recorder.close()

    def batches(self) -> Iterator[MessageBatch]:
        stream = self._encoding.messages(self.config)
        pending = next(stream, None)
        while pending is not None and not self._stop.is_set():
            now = self.clock()
            due: list[tuple[int, bytes]] = []
            while pending is not None and pending[0] <= now and len(due) < BATCH_MESSAGES:
                due.append(pending)
                pending = next(stream, None)
            if due:
                if self.recorder is not None:
                    for recv_ns, message in due:
                        self.recorder.write(recv_ns, message)
                    self.recorder.check()
                yield MessageBatch.from_messages(due)
                continue
            assert pending is not None
            wait_s = (pending[0] - now) / self.speed / NS_PER_S
            self._stop.wait(min(max(wait_s, 0.0), BATCH_WAIT_S))
            yield _EMPTY

    def position(self) -> dict[str, str | int]:
        return {}

    def resume(self, position: dict[str, str | int]) -> bool:
        """A simulation never resumes an earlier run's candles: each run is a new market."""
        return False
