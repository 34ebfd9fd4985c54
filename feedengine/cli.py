"""Command line: ``python -m feedengine`` (SPEC section 8)."""

import argparse
import logging
import sys
from pathlib import Path

from feedengine import __version__
from feedengine.candles import CandleConfig, CandleEngine, parse_intervals
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.sink import CsvSink, MemorySink, Sink
from feedengine.tickfile import TickFileError

log = logging.getLogger("feedengine")


class UsageError(Exception):
    """A bad command line or configuration: reported as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m feedengine",
        description="Kite Connect ticks to OHLC candles in PostgreSQL.",
    )
    p.add_argument(
        "--replay",
        metavar="PATH",
        type=Path,
        help="replay a tick file instead of connecting to Kite",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=0.0,
        metavar="X",
        help="replay pace: 0 = as fast as possible (default), 1 = real time",
    )
    p.add_argument(
        "--intervals",
        metavar="LIST",
        default="1,5,15",
        help="candle intervals in minutes, comma-separated (default 1,5,15)",
    )
    p.add_argument(
        "--csv",
        metavar="PATH",
        type=Path,
        help="write candles to a CSV file instead of the database",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity",
    )
    p.add_argument("--version", action="version", version=f"feedengine {__version__}")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        intervals = parse_intervals(args.intervals)
    except ValueError as e:
        raise UsageError(f"--intervals: {e}") from None
    if args.replay is None:
        raise UsageError("nothing to do: give --replay PATH (live Kite arrives in a later release)")
    if args.speed < 0:
        raise UsageError(f"--speed must be 0 or positive, not {args.speed}")
    try:
        source = ReplaySource(args.replay, args.speed)
    except OSError as e:
        raise UsageError(f"--replay: cannot read {args.replay}: {e.strerror}") from None
    instruments = source.instruments
    if not instruments:
        raise UsageError(f"--replay: {args.replay} lists no instruments in its header")
    engine = CandleEngine(instruments, CandleConfig(intervals=tuple(intervals)))
    sink: Sink = CsvSink(args.csv) if args.csv else MemorySink()
    summary = Pipeline(engine, sink).run(source)
    for line in summary.lines():
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    try:
        return run(args)
    except UsageError as e:
        print(f"feedengine: error: {e}", file=sys.stderr)
        return 2
    except TickFileError as e:
        print(f"feedengine: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
