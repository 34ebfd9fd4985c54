"""Command line: ``python -m feedengine`` (SPEC section 8).

Every bad input ends as one line on stderr naming the problem and a non-zero exit, never a
traceback: modules raise :class:`~feedengine.errors.FeedError` s that carry their exit status
(2 for the command line and configuration, 1 for files, the database and the broker), and
:func:`main` prints them. Anything else is a bug: one line too, the traceback saved to a file.
"""

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from feedengine import __version__, brokers
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.token import TOKEN_NAME
from feedengine.candles import CandleConfig, parse_intervals
from feedengine.config import DEFAULT_RECONCILE_AFTER_CLOSE, Config, load_env_file
from feedengine.database import PostgresSink, check_database, symbols_from_db
from feedengine.errors import (
    EXIT_FAILURE,
    EXIT_USAGE,
    FeedError,
    HistoryError,
    InstrumentsError,
    UsageError,
)
from feedengine.instruments import parse_symbol, read_symbols_file, resolve
from feedengine.reconcile import day_range_ns, parse_days, reconcile, refuse_open_sessions
from feedengine.replay import ReplaySource
from feedengine.service import EXIT_FORCED, Database, Run, run_service
from feedengine.sessions import IST

if TYPE_CHECKING:
    from feedengine.simsource import SimulatedSource

log = logging.getLogger("feedengine")

#: Most previous days --backfill loads: Kite serves minute candles a few years back, but
#: a longer warm start belongs in a --reconcile run of its own.
MAX_BACKFILL_DAYS = 60


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line every other error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"feedengine: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m feedengine",
        description="A broker's ticks (Kite Connect, Angel One) to OHLC candles in PostgreSQL. "
        "Without --replay or --simulate it streams the broker's live feed for the instruments "
        "given.",
        epilog="Configuration comes from the environment and .env (see .env.example); "
        "flags override it. Exit status: 0 ok, 1 failure (database, broker, files, rows left "
        "in the spill file), 2 bad command line or configuration.",
    )
    src = p.add_argument_group("source (default: the broker's live feed)")
    src.add_argument(
        "--broker",
        choices=sorted(brokers.BROKERS),
        help="whose live feed (default BROKER, else kite); a replay takes the tick file's",
    )
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
        "--simulate",
        action="store_true",
        help="a synthetic live market (a local Kite server running the "
        "simulator), for demos and soak tests",
    )
    src.add_argument(
        "--record",
        metavar="PATH",
        type=Path,
        help="live: also write every message received to this tick file",
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
        help="EXCHANGE:SYMBOL or SYMBOL (NSE by default), e.g. INFY NSE:SBIN",
    )
    sel.add_argument(
        "--symbols-file",
        type=Path,
        metavar="PATH",
        help="symbols one a line, # comments (e.g. instruments_sample.txt)",
    )
    sel.add_argument(
        "--symbols-from-db",
        action="store_true",
        help="symbols from SYMBOLS_QUERY (default: the distinct symbols of the 5-minute table)",
    )
    sel.add_argument(
        "--skip-unknown",
        action="store_true",
        help="warn about symbols that are not listed (an expired contract, a rename) and run "
        "the others, instead of stopping",
    )
    sel.add_argument(
        "--instruments-csv",
        type=Path,
        metavar="PATH",
        help="read Kite's instruments dump from this CSV instead of "
        "downloading it (downloads are cached per day in FEEDENGINE_HOME)",
    )
    sel.add_argument(
        "--scrip-master",
        type=Path,
        metavar="PATH",
        help="read Angel One's scrip master (JSON) from this file instead of downloading "
        "it (downloads are cached per day in FEEDENGINE_HOME)",
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
    his = p.add_argument_group("Kite's historical candles")
    his.add_argument(
        "--reconcile",
        metavar="DAY[..DAY]",
        help="make the candle tables equal to Kite's own candles for these closed IST days "
        "(YYYY-MM-DD), for the symbols given or, without any, every symbol with candles "
        "in the tables on those days; prints what it checked, corrected and filled",
    )
    his.add_argument(
        "--backfill",
        type=int,
        metavar="DAYS",
        help="live: first load this many previous trading days of candles from Kite",
    )
    ops = p.add_argument_group("checks and logging")
    ops.add_argument(
        "--test-broker",
        action="store_true",
        help="check the Kite credentials (profile), the instruments dump and a "
        "short stream; report each step and exit",
    )
    ops.add_argument(
        "--test-database",
        action="store_true",
        help="connect to the database, check or create the candle tables, report and exit",
    )
    ops.add_argument(
        "--no-mqtt",
        action="store_true",
        help="no MQTT heartbeats, even with MQTT_BROKER set",
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


def check_flags(args: argparse.Namespace) -> None:
    """Flag combinations that make no sense: one clear line each."""
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
    sources = [n for n, v in (("--replay", args.replay), ("--simulate", args.simulate)) if v]
    if len(sources) > 1:
        raise UsageError("give only one of --replay and --simulate")
    checks = [
        n
        for n, v in (
            ("--test-broker", args.test_broker),
            ("--test-database", args.test_database),
            ("--reconcile", args.reconcile),
        )
        if v
    ]
    if len(checks) > 1 or (checks and sources):
        raise UsageError(f"{checks[0]} runs alone; drop {(checks[1:] + sources)[0]}")
    if args.speed < 0:
        raise UsageError(f"--speed must be 0 or positive, not {args.speed}")
    if args.speed and not args.replay:
        raise UsageError("--speed applies to --replay only")
    if args.record and args.replay:
        raise UsageError("--record records a live feed; --replay already reads a tick file")
    if args.no_finalize and not args.replay:
        raise UsageError("--no-finalize applies to --replay only")
    if args.instruments_csv and args.scrip_master:
        raise UsageError("--instruments-csv is Kite's, --scrip-master Angel One's: give one")
    if args.symbols_from_db and args.csv:
        raise UsageError("--symbols-from-db needs the database; drop --csv")
    if args.reconcile and (args.csv or args.record or args.backfill):
        extra = "--csv" if args.csv else "--record" if args.record else "--backfill"
        raise UsageError(f"--reconcile writes the database's tables; drop {extra}")
    if args.backfill is not None:
        if sources:
            raise UsageError("--backfill applies to the live feed only")
        if not 1 <= args.backfill <= MAX_BACKFILL_DAYS:
            raise UsageError(f"--backfill takes 1 to {MAX_BACKFILL_DAYS} days, not {args.backfill}")
        if args.csv:
            raise UsageError("--backfill writes the database's tables; drop --csv")


def wanted_symbols(args: argparse.Namespace, config: Config, db: Database) -> list[str] | None:
    """The symbols asked for by --symbols, --symbols-file or --symbols-from-db (or None)."""
    if args.symbols:
        return list(args.symbols)
    if args.symbols_file:
        return read_symbols_file(args.symbols_file)
    if args.symbols_from_db:
        return symbols_from_db(db(), config.symbols_query, config.table_5min)
    return None


def today_ist() -> date:
    return datetime.now(IST).date()


def test_broker(args: argparse.Namespace, config: Config) -> Iterator[str]:
    """``--test-broker``: the broker's login, instruments and a short stream, a line a step."""
    wanted = list(args.symbols or []) or None
    if broker_of(args, config) == brokers.ANGELONE.name:
        from feedengine.brokers.angelone import connect as angel  # the SDK only for Angel

        return angel.test_broker(
            config.angel,
            lambda: angel.instruments(config.angel, config.home, today_ist(), args.scrip_master),
            wanted,
        )
    from feedengine.brokers.kite import connect as kite  # the REST client only here

    return kite.test_broker(
        config, lambda: kite.instruments(config, today_ist(), args.instruments_csv), wanted
    )


def broker_of(args: argparse.Namespace, config: Config) -> str:
    """``--broker``, else ``BROKER``; a broker's own instruments flag must match it."""
    broker = args.broker or config.broker
    if args.instruments_csv and broker != brokers.KITE.name:
        raise UsageError(f"--instruments-csv is Kite's instruments dump; the broker is {broker}")
    if args.scrip_master and broker != brokers.ANGELONE.name:
        raise UsageError(f"--scrip-master is Angel One's instruments; the broker is {broker}")
    return broker


def angel_run(args: argparse.Namespace, config: Config, wanted: list[str] | None) -> Run:
    """A live run of Angel One's feed (no historical client: no gap repair)."""
    from feedengine.brokers.angelone import connect  # the SDK only when Angel is used

    if not wanted:
        raise UsageError("which instruments? give --symbols, --symbols-file or --symbols-from-db")
    available = connect.instruments(config.angel, config.home, today_ist(), args.scrip_master)
    source = connect.live_source(
        config.angel, available, wanted, skip_unknown=args.skip_unknown, record=args.record
    )
    log.info(
        "Angel One: no historical candles here yet, so no gap repair or reconciliation; "
        "candles are the live feed's"
    )
    return Run(source, source.instruments, "live", live=True)


def choose_source(args: argparse.Namespace, config: Config, db: Database) -> Run:
    """The run's source and instruments, from --replay, --simulate or the live feed."""
    wanted = wanted_symbols(args, config, db)
    if args.replay:
        try:
            replay = ReplaySource(args.replay, args.speed)
        except OSError as e:
            raise UsageError(f"--replay: cannot read {args.replay}: {e.strerror}") from None
        if args.broker and args.broker != replay.broker:
            raise UsageError(
                f"--broker {args.broker}, but {args.replay.name} holds {replay.broker}'s "
                "messages (a replay takes the tick file's broker; drop --broker)"
            )
        available = replay.instruments
        if not available:
            raise UsageError(f"--replay: {args.replay} lists no instruments in its header")
        where = f"the header of {args.replay.name}"
        chosen = resolve(wanted, available, where, args.skip_unknown) if wanted else available
        return Run(replay, chosen, "replay", live=False)
    if args.simulate:
        sim = simulated_source(wanted, config, args.record, broker_of(args, config))
        return Run(sim, sim.instruments, "simulate", live=True, clock=sim.clock)
    if broker_of(args, config) == brokers.ANGELONE.name:
        return angel_run(args, config, wanted)
    if not wanted:
        raise UsageError("which instruments? give --symbols, --symbols-file or --symbols-from-db")
    from feedengine.brokers.kite import connect  # REST and WebSocket clients: live only

    dump = connect.instruments(config, today_ist(), args.instruments_csv)
    chosen = resolve(wanted, dump, "the instruments dump", args.skip_unknown)
    return Run(
        connect.live_source(config, chosen, args.record),
        chosen,
        "live",
        live=True,
        history=connect.history(config),
    )


def simulated_source(
    wanted: list[str] | None, config: Config, record: Path | None, broker: str
) -> "SimulatedSource":
    """The simulated market of the symbols asked for (default: the simulator's universe),
    as ``broker``'s feed. The market names instruments as Kite does (``NSE:RELIANCE``);
    Angel One's ``-EQ`` series name is taken for its equity."""
    # The simulator and its market model take ~90 ms to import: only for --simulate.
    from feedengine.simsource import SimulatedSource, simulated_day
    from feedengine.simulator import SimConfig, SimConfigError
    from feedengine.simulator import instruments as sim_instruments

    try:
        symbols = (
            tuple(dict.fromkeys((e, s.removesuffix("-EQ")) for e, s in map(parse_symbol, wanted)))
            if wanted
            else None
        )
        universe = sim_instruments(SimConfig(symbols=symbols))
    except SimConfigError as e:
        raise UsageError(f"--simulate: {e}") from None
    sessions = config.sessions or CandleConfig().sessions
    opened = {sessions[i.market] for i in map(KiteInstrument.from_dict, universe)}
    return SimulatedSource(simulated_day(symbols, list(opened)), record=record, broker=broker)


def reconcile_instruments(
    args: argparse.Namespace,
    config: Config,
    db: Database,
    sink: PostgresSink,
    intervals: tuple[int, ...],
    first: date,
    last: date,
) -> list[KiteInstrument]:
    """The instruments to reconcile: the symbols asked for, or those with candles stored in
    any interval's table on those days (expired ones, missing from today's instruments
    dump, are named in a warning and skipped)."""
    from feedengine.brokers.kite import connect

    dump = connect.instruments(config, today_ist(), args.instruments_csv)
    wanted = wanted_symbols(args, config, db)
    if wanted:
        return resolve(wanted, dump, "the instruments dump", args.skip_unknown)
    start, _ = day_range_ns(first)
    _, end = day_range_ns(last)
    stored = sorted({s for m in intervals for s in sink.symbols(m, start, end)})
    if not stored:
        raise InstrumentsError(
            f"no candles stored between {first} and {last} in the tables of intervals "
            f"{','.join(map(str, intervals))}: name the symbols with --symbols"
        )
    return resolve(stored, dump, "today's instruments dump (expired contracts?)", True)


def run_reconcile(
    args: argparse.Namespace, config: Config, db: Database, intervals: tuple[int, ...]
) -> int:
    """``--reconcile DAY[..DAY]``: make the tables equal to Kite's candles, print a report."""
    from feedengine.brokers.kite import connect

    first, last = parse_days(args.reconcile, today_ist())
    history = connect.history(config)
    sink = PostgresSink(db(), config.table_names)
    try:
        instruments = reconcile_instruments(args, config, db, sink, intervals, first, last)
        sessions = config.sessions or CandleConfig().sessions
        refuse_open_sessions(
            last,
            {sessions[i.market] for i in instruments},
            datetime.now(IST),
            DEFAULT_RECONCILE_AFTER_CLOSE,
        )
        sink.open(intervals, instruments)
        report = reconcile(history, sink, instruments, intervals, first, last)
    finally:
        sink.close()
    for line in report.lines():
        print(line)
    if report.failures:
        raise HistoryError(
            f"{len(report.failures)} instrument-day(s) not reconciled (listed above); the rest are"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    loaded = load_env_file(args.env_file)
    config = Config.from_env()
    if TOKEN_NAME in loaded:  # read again from there when Kite refuses it
        config = dataclasses.replace(config, kite_token_env_file=args.env_file)
    try:
        intervals = tuple(parse_intervals(args.intervals)) if args.intervals else config.intervals
    except ValueError as e:
        raise UsageError(f"--intervals: {e}") from None
    level = args.log_level or config.log_level
    logging.getLogger().setLevel(level)
    # pgserver narrates initdb and pg_ctl at INFO, pyrate-limiter its buckets: only our own
    # lines say what happens.
    for chatty in ("pgserver", "pyrate_limiter"):
        logging.getLogger(chatty).setLevel(level if level == "DEBUG" else "WARNING")
    check_flags(args)
    db = Database(config)
    if args.test_database:
        for line in check_database(db(), config.tables(intervals)):
            print(line)
        return 0
    if args.test_broker:
        for line in test_broker(args, config):
            print(line)
        return 0
    if args.reconcile:
        return run_reconcile(args, config, db, intervals)
    return run_service(args, config, db, intervals, choose_source(args, config, db))


def save_traceback(error: BaseException) -> str:
    """Write ``error``'s traceback to a file for a bug report; return where (or why not)."""
    text = "".join(traceback.format_exception(error))
    try:
        fd, path = tempfile.mkstemp(prefix="feedengine-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except OSError as e:
        return f"not saved: {e.strerror}"
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    try:
        return run(args)
    except FeedError as e:
        bug = e.__cause__ is not None and not isinstance(e.__cause__, FeedError)
        where = f" (a bug: traceback in {save_traceback(e)})" if bug else ""
        print(f"feedengine: error: {e}{where}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return EXIT_FORCED
    except Exception as e:
        print(
            f"feedengine: error: internal error {type(e).__name__}: {e} "
            f"(a bug: traceback in {save_traceback(e)})",
            file=sys.stderr,
        )
        return EXIT_FAILURE
