"""The market simulator's entry points: a simulated Kite session as a tick file, and its
command line.

The neutral market (:mod:`feedengine.market`) encoded by Kite's encoder
(:mod:`feedengine.brokers.kite.simencode`): what a Kite Connect WebSocket would have delivered
for a universe of instruments over one IST trading day (SPEC sections 2-4). :func:`simulate`
writes it to a tick file (SPEC section 3); :func:`messages` yields it as
``(recv_ns, message)`` for a live ``--simulate`` source or a local Kite server. This module
also gathers the names callers use from one place.

A 20 M-tick, 3000-instrument day (3.7 GB) is written in 12-20 s on two cores. The same
:class:`SimConfig` gives the same messages; the tick file differs only in the
``created_utc`` header field unless that is fixed too.

The sample file ``samples/sample.ticks`` (45 Nifty stocks, NIFTY 50 and NIFTY BANK, full
mode, 09:00-15:35 on 2024-01-15) is regenerated with::

    .venv/bin/python -m feedengine.simulator --out samples/sample.ticks --instruments 47 \\
        --indices 2 --nfo 0 --cds 0 --mcx 0 --nco 0 --ticks 22000 --mode full --seed 1 \\
        --created-utc 2024-01-15T00:00:00+00:00
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time as time_module
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import NoReturn

from feedengine.brokers.kite.simencode import instruments, message_batches, messages, sim_meta
from feedengine.market import MODES, SimConfig, SimConfigError, read_symbols_file
from feedengine.market.config import (
    CHUNK_SECONDS,
    DEFAULT_DATE,
    DEFAULT_END,
    DEFAULT_INSTRUMENTS,
    DEFAULT_START,
    DEFAULT_TICKS_PER_INSTRUMENT,
    FRAME_MS,
)
from feedengine.tickfile import TickWriter

__all__ = [
    "MODES",
    "SimConfig",
    "SimConfigError",
    "SimStats",
    "instruments",
    "main",
    "messages",
    "read_symbols_file",
    "sim_meta",
    "simulate",
]

#: Chunks generated ahead of the tick file writer (~5 MB of messages each on a busy day).
WRITE_AHEAD_CHUNKS = 8


@dataclass(frozen=True)
class SimStats:
    """What :func:`simulate` wrote.

    Attributes
    ----------
    path
        The tick file.
    instruments
        Instruments in the universe.
    ticks
        Packets written (all messages).
    messages
        Records written, heartbeats included.
    heartbeats
        1-byte heartbeat messages among them.
    bytes
        Size of the file.
    seconds
        Wall-clock time taken.
    """

    path: str
    instruments: int
    ticks: int
    messages: int
    heartbeats: int
    bytes: int
    seconds: float


def simulate(path: os.PathLike[str] | str, config: SimConfig) -> SimStats:
    """Write a simulated session to a tick file.

    Generation runs in a background thread, a few chunks ahead of the writer (numpy and the
    file writes release the GIL, so the two overlap on two cores).

    Parameters
    ----------
    path
        Tick file to create (replaced if it exists).
    config
        The simulation.

    Returns
    -------
    SimStats
        Counts, size and time taken.

    Raises
    ------
    OSError
        The file cannot be written.
    """
    t0 = time_module.perf_counter()
    n_msgs = n_ticks = n_heartbeats = 0
    batches: queue.Queue[list[tuple[int, bytes]] | BaseException | None] = queue.Queue(
        maxsize=WRITE_AHEAD_CHUNKS
    )
    stop = threading.Event()

    def hand_over(item: list[tuple[int, bytes]] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in message_batches(config):
                if not hand_over(batch):
                    return
            hand_over(None)
        except BaseException as e:  # handed to the writer, which re-raises it
            hand_over(e)

    with TickWriter(path, sim_meta(config)) as writer:
        producer = threading.Thread(target=produce, name="simulator", daemon=True)
        producer.start()
        try:
            while (item := batches.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                for recv_ns, msg in item:
                    writer.write(recv_ns, msg)
                    if len(msg) == 1:
                        n_heartbeats += 1
                    else:
                        n_ticks += (msg[0] << 8) | msg[1]
                n_msgs += len(item)
        finally:
            stop.set()
            producer.join()
    return SimStats(
        path=str(path),
        instruments=config.n_instruments,
        ticks=n_ticks,
        messages=n_msgs,
        heartbeats=n_heartbeats,
        bytes=os.path.getsize(path),
        seconds=time_module.perf_counter() - t0,
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line and no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad date {text!r} (expected YYYY-MM-DD)") from None


def _clock(text: str) -> time:
    try:
        return datetime.strptime(text, "%H:%M:%S" if text.count(":") == 2 else "%H:%M").time()
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad time {text!r} (expected HH:MM)") from None


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m feedengine.simulator",
        description="Write a synthetic Kite trading session (IST) to a tick file.",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="tick file to write")
    p.add_argument(
        "--instruments",
        type=_count,
        metavar="N",
        help=f"universe size (default {DEFAULT_INSTRUMENTS})",
    )
    p.add_argument(
        "--symbols-file",
        metavar="PATH",
        help="universe from a file: EXCHANGE:SYMBOL or SYMBOL (NSE) a line",
    )
    p.add_argument(
        "--ticks",
        type=_count,
        metavar="N",
        help=f"target ticks for the session (default "
        f"{DEFAULT_TICKS_PER_INSTRUMENT} per instrument)",
    )
    for name, what in (
        ("indices", "indices"),
        ("nfo", "NFO futures"),
        ("cds", "CDS currency futures"),
        ("mcx", "MCX futures"),
        ("nco", "NCO futures"),
    ):
        p.add_argument(
            f"--{name}", type=_count, metavar="N", help=f"{what} in the universe (default: a few)"
        )
    p.add_argument("--mode", default="full", choices=MODES, help="packet mode (default full)")
    p.add_argument(
        "--date",
        type=_date,
        default=DEFAULT_DATE,
        metavar="YYYY-MM-DD",
        help=f"trading date YYYY-MM-DD (default {DEFAULT_DATE})",
    )
    p.add_argument(
        "--start",
        type=_clock,
        default=DEFAULT_START,
        metavar="HH:MM",
        help=f"IST start HH:MM (default {DEFAULT_START:%H:%M})",
    )
    p.add_argument(
        "--end",
        type=_clock,
        default=DEFAULT_END,
        metavar="HH:MM",
        help=f"IST end HH:MM (default {DEFAULT_END:%H:%M})",
    )
    p.add_argument("--seed", type=_count, default=1, metavar="N", help="random seed (default 1)")
    p.add_argument(
        "--frame-ms",
        type=_count,
        default=FRAME_MS,
        metavar="MS",
        help=f"message interval in ms (default {FRAME_MS})",
    )
    p.add_argument(
        "--chunk-seconds",
        type=_count,
        default=CHUNK_SECONDS,
        metavar="S",
        help=f"session seconds generated at a time (default {CHUNK_SECONDS})",
    )
    p.add_argument(
        "--created-utc", metavar="ISO", help="fix the header's created_utc (byte-identical files)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m feedengine.simulator --out FILE [options]``.

    Parameters
    ----------
    argv
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 after a one-line summary on stdout; 1 after a one-line error on
        stderr (bad configuration, unreadable symbols file, unwritable output). Bad usage
        exits with status 2 and a one-line error, as argparse does.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    prog = "python -m feedengine.simulator"
    if args.symbols_file:
        clash = [
            f"--{name}"
            for name in ("instruments", "indices", "nfo", "cds", "mcx", "nco")
            if getattr(args, name) is not None
        ]
        if clash:
            parser.error(
                f"{', '.join(clash)} cannot be combined with --symbols-file "
                "(the file lists the whole universe)"
            )
    try:
        symbols = read_symbols_file(args.symbols_file) if args.symbols_file else None
        config = SimConfig(
            instruments=args.instruments,
            ticks=args.ticks,
            date=args.date,
            start=args.start,
            end=args.end,
            mode=args.mode,
            seed=args.seed,
            indices=args.indices,
            nfo=args.nfo,
            cds=args.cds,
            mcx=args.mcx,
            nco=args.nco,
            symbols=symbols,
            frame_ms=args.frame_ms,
            chunk_seconds=args.chunk_seconds,
            created_utc=args.created_utc,
        )
        stats = simulate(args.out, config)
    except SimConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{prog}: error: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    print(
        f"{stats.path}: {stats.ticks:,} ticks of {stats.instruments:,} instruments in "
        f"{stats.messages:,} messages ({stats.heartbeats:,} heartbeats), "
        f"{stats.bytes / 1e6:,.1f} MB, {stats.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
