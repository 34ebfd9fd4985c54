"""Command line: ``python -m feedengine`` (SPEC section 8).

Every bad input ends as one line on stderr naming the problem and a non-zero exit, never a
traceback: :class:`UsageError` (exit 2) for the command line and configuration, other known
failures (exit 1) for files, the database and the broker.
"""

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from dotenv import load_dotenv

from feedengine import __version__
from feedengine.candles import CandleConfig, CandleEngine, parse_intervals
from feedengine.config import Config, ConfigError
from feedengine.database import (
    PostgresSink,
    SchemaError,
    check_database,
    embedded_dsn,
    symbols_from_db,
)
from feedengine.flusher import FlusherError
from feedengine.instruments import Instrument
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.sink import CsvSink, Sink, SinkUnavailable
from feedengine.spill import SpillError, SpillFile
from feedengine.tickfile import TickFileError

log = logging.getLogger("feedengine")

EXIT_USAGE = 2
EXIT_FAILURE = 1
#: Exit status after a second Ctrl-C/SIGTERM forced the stop (128 + SIGINT, as shells do).
EXIT_FORCED = 130


class UsageError(Exception):
    """A bad command line or configuration: reported as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m feedengine",
        description="Kite Connect ticks to OHLC candles in PostgreSQL.",
        epilog="Configuration comes from the environment and .env (see .env.example); "
        "flags override it.",
    )
    src = p.add_argument_group("source")
    src.add_argument(
        "--replay",
        metavar="PATH",
        type=Path,
        help="replay a tick file instead of connecting to Kite",
    )
    src.add_argument(
        "--speed",
        type=float,
        default=0.0,
        metavar="X",
        help="replay pace: 0 = as fast as possible (default), 1 = real time",
    )
    src.add_argument(
        "--no-finalize",
        action="store_true",
        help="at the end of the replay leave the last candles open and "
        "checkpoint them, for a following replay that continues the day",
    )
    sel = p.add_argument_group("instruments")
    sel.add_argument(
        "--symbols",
        nargs="+",
        metavar="SYMBOL",
        help="instruments: EXCHANGE:SYMBOL or SYMBOL (NSE by default)",
    )
    sel.add_argument(
        "--symbols-file", type=Path, metavar="PATH", help="instruments, one a line, # comments"
    )
    sel.add_argument(
        "--symbols-from-db",
        action="store_true",
        help="instruments from SYMBOLS_QUERY (default: the symbols of the 5-minute table)",
    )
    out = p.add_argument_group("candles")
    out.add_argument(
        "--intervals",
        metavar="LIST",
        help="candle intervals in minutes, e.g. 1,5,15 (CANDLE_INTERVALS)",
    )
    out.add_argument(
        "--csv",
        metavar="PATH",
        type=Path,
        help="append candles to a CSV file instead of the database",
    )
    ops = p.add_argument_group("checks and logging")
    ops.add_argument(
        "--test-database",
        action="store_true",
        help="connect to the database, check or create the candle tables, report and exit",
    )
    ops.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        default=Path(".env"),
        help="read settings from this file (default .env)",
    )
    ops.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (LOG_LEVEL, default INFO)",
    )
    p.add_argument("--version", action="version", version=f"feedengine {__version__}")
    return p


def parse_symbol(text: str) -> tuple[str, str]:
    """``"NSE:INFY"`` or ``"INFY"`` → ``("NSE", "INFY")``."""
    exchange, _, symbol = text.strip().rpartition(":")
    if not symbol:
        raise UsageError(f"bad symbol {text!r}: expected EXCHANGE:SYMBOL or SYMBOL")
    return (exchange or "NSE").upper(), symbol.upper()


def read_symbols_file(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise UsageError(f"--symbols-file: cannot read {path}: {e.strerror}") from None
    symbols = [line.split("#", 1)[0].strip() for line in lines]
    symbols = [s for s in symbols if s]
    if not symbols:
        raise UsageError(f"--symbols-file: {path} lists no symbols")
    return symbols


def select_instruments(
    available: list[Instrument], wanted: list[str] | None, where: str
) -> list[Instrument]:
    """The instruments named in ``wanted`` (all when None); every unknown one in one error."""
    if not wanted:
        return available
    by_name = {(i.exchange, i.tradingsymbol.upper()): i for i in available}
    by_symbol = {i.tradingsymbol.upper(): i for i in available}
    chosen, unknown = [], []
    for text in wanted:
        exchange, symbol = parse_symbol(text)
        inst = by_name.get((exchange, symbol)) or (
            by_symbol.get(symbol) if ":" not in text else None
        )
        if inst is None:
            unknown.append(text)
        elif inst not in chosen:
            chosen.append(inst)
    if unknown:
        raise UsageError(f"unknown symbol(s) in {where}: {', '.join(unknown)}")
    return chosen


def database_dsn(config: Config) -> str:
    if config.pg_conn_str:
        return config.pg_conn_str
    dsn = embedded_dsn(config.home)
    print(f"embedded PostgreSQL: {dsn}", file=sys.stderr)
    return dsn


def wanted_symbols(args: argparse.Namespace, config: Config, dsn: str | None) -> list[str] | None:
    chosen = [
        n
        for n, v in (
            ("--symbols", args.symbols),
            ("--symbols-file", args.symbols_file),
            ("--symbols-from-db", args.symbols_from_db),
        )
        if v
    ]
    if len(chosen) > 1:
        raise UsageError(f"give only one of {', '.join(chosen)}")
    if args.symbols:
        return list(args.symbols)
    if args.symbols_file:
        return read_symbols_file(args.symbols_file)
    if args.symbols_from_db:
        if dsn is None:
            raise UsageError("--symbols-from-db needs the database (drop --csv)")
        try:
            return symbols_from_db(dsn, config.symbols_sql())
        except ValueError as e:
            raise UsageError(f"--symbols-from-db: {e}") from None
    return None


def install_signal_handlers(pipeline: Pipeline) -> None:
    """First SIGINT/SIGTERM: graceful stop. Second: exit at once (spilled rows are on disk)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if pipeline.stop_event.is_set():
            print(
                "feedengine: forced exit; spilled candles stay in the spill file", file=sys.stderr
            )
            os._exit(EXIT_FORCED)
        log.info("received %s: stopping (again to force)", signal.Signals(signum).name)
        pipeline.stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    if args.env_file and args.env_file.exists():
        load_dotenv(args.env_file, override=False)
    try:
        config = Config.from_env()
        intervals = tuple(parse_intervals(args.intervals)) if args.intervals else config.intervals
    except ConfigError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise UsageError(f"--intervals: {e}") from None
    logging.getLogger().setLevel(args.log_level or config.log_level)
    if args.speed < 0:
        raise UsageError(f"--speed must be 0 or positive, not {args.speed}")

    if args.test_database:
        for line in check_database(database_dsn(config), config.tables(intervals)):
            print(line)
        return 0
    if args.replay is None:
        raise UsageError(
            "nothing to do: give --replay PATH or --test-database (the live "
            "Kite feed is not available in this version)"
        )
    try:
        source = ReplaySource(args.replay, args.speed)
    except OSError as e:
        raise UsageError(f"--replay: cannot read {args.replay}: {e.strerror}") from None
    if not source.instruments:
        raise UsageError(f"--replay: {args.replay} lists no instruments in its header")

    dsn = None if args.csv else database_dsn(config)
    instruments = select_instruments(
        source.instruments, wanted_symbols(args, config, dsn), f"the header of {args.replay}"
    )
    try:
        engine = CandleEngine(
            instruments,
            CandleConfig(
                intervals=intervals,
                sessions=config.sessions or CandleConfig().sessions,
                grace_s=config.grace_s,
            ),
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    sink: Sink
    spill = None
    if args.csv:
        sink = CsvSink(args.csv)
    else:
        assert dsn is not None
        sink = PostgresSink(dsn, config.tables(intervals))
        config.home.mkdir(parents=True, exist_ok=True)
        spill = SpillFile(config.spill_path)
    pipeline = Pipeline(engine, sink, checkpoint=config.checkpoint_path("replay"), spill=spill)
    install_signal_handlers(pipeline)
    summary = pipeline.run(source, finalize=not args.no_finalize)
    for line in summary.lines():
        print(line)
    return EXIT_FAILURE if summary.spilled else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    try:
        return run(args)
    except UsageError as e:
        print(f"feedengine: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (TickFileError, SpillError, SchemaError, SinkUnavailable, FlusherError) as e:
        print(f"feedengine: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FORCED
