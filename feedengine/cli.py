"""Command line: ``python -m feedengine`` (SPEC section 8).

Every bad input ends as one line on stderr naming the problem and a non-zero exit, never a
traceback: modules raise :class:`~feedengine.errors.FeedError` s that carry their exit status
(2 for the command line and configuration, 1 for files, the database and the broker), and
:func:`main` prints them. Anything else is a bug: one line too, the traceback saved to a file.
"""

import argparse
import logging
import os
import signal
import sys
import tempfile
import time as _time
import traceback
from datetime import date, datetime, time
from pathlib import Path
from types import FrameType
from typing import NoReturn

from dotenv import load_dotenv

from feedengine import __version__, wire
from feedengine.candles import CandleConfig, CandleEngine, parse_intervals
from feedengine.config import Config
from feedengine.database import (
    PostgresSink,
    check_database,
    embedded_dsn,
    symbols_from_db,
)
from feedengine.errors import (
    EXIT_FAILURE,
    EXIT_USAGE,
    BrokerError,
    FeedError,
    UsageError,
)
from feedengine.heartbeat import Monitor, MqttPublisher
from feedengine.instruments import (
    Instrument,
    fetch_dump,
    read_dump,
    read_symbols_file,
    resolve,
)
from feedengine.live import LiveSource
from feedengine.mockkite import MockKite, instrument_rows
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.segments import IST
from feedengine.simulator import SimConfig
from feedengine.simulator import instruments as sim_instruments
from feedengine.simulator import messages as sim_messages
from feedengine.sink import CsvSink, Sink
from feedengine.source import Source
from feedengine.spill import SpillFile
from feedengine.ticker import KiteStream

log = logging.getLogger("feedengine")

#: Exit status after a second Ctrl-C/SIGTERM forced the stop (128 + SIGINT, as shells do).
EXIT_FORCED = 130
#: How long --test-broker waits for the first streamed message.
TEST_STREAM_S = 10.0


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line every other error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"feedengine: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m feedengine",
        description="Kite Connect ticks to OHLC candles in PostgreSQL. Without --replay or "
        "--simulate it streams the live Kite feed for the instruments given.",
        epilog="Configuration comes from the environment and .env (see .env.example); "
        "flags override it. Exit status: 0 ok, 1 failure (database, broker, files, rows left "
        "in the spill file), 2 bad command line or configuration.",
    )
    src = p.add_argument_group("source (default: the live Kite feed)")
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
        "--instruments-csv",
        type=Path,
        metavar="PATH",
        help="read Kite's instruments dump from this CSV instead of "
        "downloading it (downloads are cached per day in FEEDENGINE_HOME)",
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


class ProgressBar:
    """A one-line replay progress bar with ticks/s, for terminals only."""

    WIDTH = 30
    #: Redraw at most this often (seconds).
    EVERY_S = 0.2

    def __init__(self, source: ReplaySource, pipeline: Pipeline) -> None:
        self.source = source
        self.pipeline = pipeline
        self.started = _time.monotonic()
        self.drawn = 0.0

    def __call__(self) -> None:
        now = _time.monotonic()
        if now - self.drawn < self.EVERY_S:
            return
        self.drawn = now
        done = self.source.progress
        ticks = self.pipeline.summary.ticks
        bar = "#" * int(done * self.WIDTH)
        rate = ticks / max(now - self.started, 1e-9)
        print(
            f"\r[{bar:<{self.WIDTH}}] {done:6.1%} {ticks:>12,} ticks {rate:>12,.0f}/s",
            end="",
            file=sys.stderr,
            flush=True,
        )


class Database:
    """The database DSN, resolved (and the embedded server started) at most once."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._dsn: str | None = None

    def __call__(self) -> str:
        if self._dsn is None:
            if self.config.pg_conn_str:
                self._dsn = self.config.pg_conn_str
            else:
                self._dsn = embedded_dsn(self.config.home)
                print(f"embedded PostgreSQL: {self._dsn}", file=sys.stderr)
        return self._dsn


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
        for n, v in (("--test-broker", args.test_broker), ("--test-database", args.test_database))
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
    if args.symbols_from_db and args.csv:
        raise UsageError("--symbols-from-db needs the database; drop --csv")


def wanted_symbols(args: argparse.Namespace, config: Config, db: Database) -> list[str] | None:
    """The symbols asked for by --symbols, --symbols-file or --symbols-from-db (or None)."""
    if args.symbols:
        return list(args.symbols)
    if args.symbols_file:
        return read_symbols_file(args.symbols_file)
    if args.symbols_from_db:
        return symbols_from_db(db(), config.symbols_sql())
    return None


def credentials(config: Config) -> tuple[str, str]:
    missing = [
        n
        for n, v in (
            ("KITE_API_KEY", config.kite_api_key),
            ("KITE_ACCESS_TOKEN", config.kite_access_token),
        )
        if not v
    ]
    if missing:
        raise UsageError(
            f"missing {' and '.join(missing)} (set in the environment or .env; "
            "or use --replay / --simulate)"
        )
    assert config.kite_api_key and config.kite_access_token
    return config.kite_api_key, config.kite_access_token


def instruments_dump(args: argparse.Namespace, config: Config) -> list[Instrument]:
    if args.instruments_csv:
        return read_dump(args.instruments_csv)
    key, token = credentials(config)
    return fetch_dump(key, token, config.home, today_ist(), config.kite_api_root)


def today_ist() -> date:
    return datetime.now(IST).date()


def simulated_market(wanted: list[str] | None) -> tuple[MockKite, list[Instrument]]:
    """A local Kite server streaming the simulator from now on, at real-time pace."""
    now = datetime.now(IST)
    sim = SimConfig(date=now.date(), start=now.time().replace(microsecond=0), end=time(23, 59, 59))
    rows = instrument_rows(sim_instruments(sim))
    mock = MockKite(lambda: sim_messages(sim), rows).start()
    available = [Instrument.from_dict(r) for r in rows]
    chosen = resolve(wanted, available, "the simulated market") if wanted else available
    return mock, chosen


def test_broker(args: argparse.Namespace, config: Config) -> int:
    """``--test-broker``: profile, instruments dump and a short stream, step by step."""
    from kiteconnect import KiteConnect
    from kiteconnect.exceptions import KiteException

    key, token = credentials(config)
    kite = KiteConnect(key, access_token=token, root=config.kite_api_root)
    try:
        profile = kite.profile()
    except KiteException as e:
        raise BrokerError(f"profile: Kite refused the credentials: {e}") from None
    except OSError as e:
        raise BrokerError(f"profile: cannot reach Kite at {config.kite_api_root}: {e}") from None
    print(f"1/3 credentials ok: {profile.get('user_id')} ({profile.get('user_name')})")
    dump = instruments_dump(args, config)
    print(f"2/3 instruments dump: {len(dump):,} instruments")
    wanted = list(args.symbols or []) or None
    chosen = resolve(wanted, dump, "the instruments dump") if wanted else dump[:3]
    messages: list[int] = []
    stream = KiteStream(
        config.kite_ws_url,
        key,
        token,
        [i.instrument_token for i in chosen],
        lambda _t, m: messages.append(len(wire.decode(m))),
    )
    stream.start()
    deadline = _time.monotonic() + TEST_STREAM_S
    while _time.monotonic() < deadline and stream.error is None and not messages:
        _time.sleep(0.1)
    stream.stop()
    stream.check()
    if not messages:
        raise BrokerError(
            f"stream: connected to {config.kite_ws_url} but no message in {TEST_STREAM_S:.0f} s"
        )
    print(f"3/3 stream ok: {len(chosen)} tokens, {len(messages)} messages, {sum(messages)} ticks")
    return 0


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
    config = Config.from_env()
    try:
        intervals = tuple(parse_intervals(args.intervals)) if args.intervals else config.intervals
    except ValueError as e:
        raise UsageError(f"--intervals: {e}") from None
    logging.getLogger().setLevel(args.log_level or config.log_level)
    check_flags(args)
    db = Database(config)
    if args.test_database:
        for line in check_database(db(), config.tables(intervals)):
            print(line)
        return 0
    if args.test_broker:
        return test_broker(args, config)

    wanted = wanted_symbols(args, config, db)
    mock = None
    source: Source
    if args.replay:
        try:
            source = ReplaySource(args.replay, args.speed)
        except OSError as e:
            raise UsageError(f"--replay: cannot read {args.replay}: {e.strerror}") from None
        available = source.instruments
        if not available:
            raise UsageError(f"--replay: {args.replay} lists no instruments in its header")
        instruments = (
            resolve(wanted, available, f"the header of {args.replay.name}") if wanted else available
        )
    else:
        if args.simulate:
            mock, instruments = simulated_market(wanted)
            url, key, token = mock.url, mock.api_key, mock.access_token
        else:
            if not wanted:
                raise UsageError(
                    "which instruments? give --symbols, --symbols-file or --symbols-from-db"
                )
            instruments = resolve(wanted, instruments_dump(args, config), "the instruments dump")
            key, token = credentials(config)
            url = config.kite_ws_url
        source = LiveSource(instruments, url, key, token, record=args.record)
    try:
        return run_pipeline(args, config, db, intervals, instruments, source)
    finally:
        if mock is not None:
            mock.stop()


def run_pipeline(
    args: argparse.Namespace,
    config: Config,
    db: Database,
    intervals: tuple[int, ...],
    instruments: list[Instrument],
    source: Source,
) -> int:
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
        sink = PostgresSink(db(), config.table_names)
        config.home.mkdir(parents=True, exist_ok=True)
        spill = SpillFile(config.spill_path, instruments)
    live = not args.replay
    checkpoint = config.checkpoint_path("live" if live else "replay")
    pipeline = Pipeline(engine, sink, checkpoint=checkpoint, spill=spill)
    install_signal_handlers(pipeline)
    publisher = None
    if config.mqtt_broker and not args.no_mqtt:
        publisher = MqttPublisher(
            config.mqtt_broker,
            config.mqtt_port,
            config.mqtt_topic_prefix,
            config.service_id,
            username=config.mqtt_username,
            password=config.mqtt_password,
            tls=config.mqtt_use_tls,
            interval_s=config.heartbeat_interval,
        )
    monitor = Monitor(pipeline.status, config.heartbeat_interval, publisher, config.service_id)
    pipeline.on_stopping = monitor.stopping
    if isinstance(source, ReplaySource) and sys.stderr.isatty():
        pipeline.on_batch = ProgressBar(source, pipeline)
    log.info(
        "%s: %d instruments, intervals %s",
        source.name,
        len(instruments),
        ",".join(map(str, intervals)),
    )
    monitor.start()
    try:
        summary = pipeline.run(source, live=live, finalize=not args.no_finalize)
    finally:
        monitor.stop()
    if pipeline.on_batch is not None:
        print(file=sys.stderr)
    for line in summary.lines():
        print(line)
    return EXIT_FAILURE if summary.spilled else 0


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
