"""The service: a source, the candle engine, a sink, heartbeats, and a clean stop.

:func:`run_service` assembles one run from the parsed command line: it claims the data
directory, opens the sink (PostgreSQL with a spill file, or CSV), starts the heartbeat thread,
installs the signal handlers, runs the pipeline and prints the summary. Errors surface as
:class:`~feedengine.errors.FeedError` s; the command line turns them into one line.
"""

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from feedengine.candles import CandleConfig, CandleEngine
from feedengine.config import Config
from feedengine.database import PostgresSink, embedded_dsn
from feedengine.errors import EXIT_FAILURE, UsageError
from feedengine.events import CandlePublisher, PublishingSink
from feedengine.heartbeat import Monitor
from feedengine.historian import WEEKEND, Historian
from feedengine.home import HomeLock
from feedengine.instruments import Instrument
from feedengine.pipeline import Pipeline
from feedengine.progress import replay_progress
from feedengine.reconcile import CandleHistory, reconcile
from feedengine.replay import ReplaySource
from feedengine.sessions import IST
from feedengine.sink import CsvSink, Sink
from feedengine.source import Source
from feedengine.spill import SpillFile

if TYPE_CHECKING:
    from feedengine.mqtt import MqttPublisher

log = logging.getLogger("feedengine")

#: Exit status after a second Ctrl-C/SIGTERM forced the stop (128 + SIGINT, as shells do).
EXIT_FORCED = 130


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


@dataclass(frozen=True)
class Run:
    """What one run of the service reads and how.

    Attributes
    ----------
    source
        Where the messages come from.
    instruments
        The instruments to build candles for.
    role
        ``live``, ``replay`` or ``simulate``: names the run's checkpoint, so that one kind
        of run never resumes another's candles.
    live
        Whether the wall clock (or the source's own) closes candles, not the ticks' times.
    clock
        The live clock (Unix ns).
    history
        Kite's historical candles, for gap repair, reconciliation and ``--backfill`` (a live
        run of Kite's feed; None otherwise).
    """

    source: Source
    instruments: Sequence[Instrument]
    role: str
    live: bool
    clock: Callable[[], int] = time.time_ns
    history: CandleHistory | None = None


#: What a second signal prints on its way out.
FORCED_EXIT_LINE = b"feedengine: forced exit; spilled candles stay in the spill file\n"


def install_signal_handlers(pipeline: Pipeline) -> None:
    """First SIGINT/SIGTERM: graceful stop. Second: exit at once (spilled rows are on disk).

    The handlers do no buffered I/O: a signal that lands while the main thread is writing to
    stderr would re-enter its buffer (``RuntimeError: reentrant call``) and turn a forced exit
    into a traceback. The pipeline logs the first signal; the second writes with ``os.write``.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        if pipeline.stop_event.is_set():
            os.write(2, FORCED_EXIT_LINE)
            os._exit(EXIT_FORCED)
        pipeline.stop(f"received {signal.Signals(signum).name}: stopping (again to force)")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def candle_engine(
    config: Config, intervals: tuple[int, ...], instruments: Sequence[Instrument]
) -> CandleEngine:
    try:
        return CandleEngine(
            instruments,
            CandleConfig(
                intervals=intervals,
                sessions=config.sessions or CandleConfig().sessions,
                grace_s=config.grace_s,
            ),
        )
    except ValueError as e:
        raise UsageError(str(e)) from None


def mqtt_publisher(args: argparse.Namespace, config: Config) -> "MqttPublisher | None":
    if not config.mqtt_broker or args.no_mqtt:
        return None
    from feedengine.mqtt import MqttPublisher  # paho only with a broker

    return MqttPublisher(
        config.mqtt_broker,
        config.mqtt_port,
        config.mqtt_topic_prefix,
        config.service_id,
        username=config.mqtt_username,
        password=config.mqtt_password,
        tls=config.mqtt_use_tls,
        ca_file=config.mqtt_ca_file,
        interval_s=config.heartbeat_interval,
    )


def previous_weekdays(today: date, count: int) -> tuple[date, date]:
    """The first and last of the ``count`` weekdays before ``today`` (holidays have no
    candles at Kite, so they count but fill nothing)."""
    days: list[date] = []
    day = today
    while len(days) < count:
        day -= timedelta(days=1)
        if day.weekday() not in WEEKEND:
            days.append(day)
    return days[-1], days[0]


def backfill(
    history: CandleHistory,
    sink: PostgresSink,
    instruments: Sequence[Instrument],
    intervals: tuple[int, ...],
    days: int,
) -> None:
    """``--backfill DAYS``: the previous trading days' candles, before going live."""
    first, last = previous_weekdays(datetime.now(IST).date(), days)
    log.info(
        "backfill: loading %s..%s from Kite for %d instruments before going live",
        first,
        last,
        len(instruments),
    )
    report = reconcile(history, sink, instruments, intervals, first, last)
    for line in report.lines():
        log.info("backfill: %s", line)


def run_service(
    args: argparse.Namespace, config: Config, db: Database, intervals: tuple[int, ...], run: Run
) -> int:
    """Run the pipeline over ``run.source`` until it ends or a signal stops it.

    Returns the exit status: 1 when candle rows remain in the spill file, else 0.
    """
    engine = candle_engine(config, intervals, run.instruments)
    with HomeLock(config.home):
        sink: Sink
        spill = None
        if args.csv:
            sink = CsvSink(args.csv)
        else:
            sink = PostgresSink(db(), config.table_names)
            spill = SpillFile(config.spill_path, run.instruments)
        publisher = mqtt_publisher(args, config)
        if publisher is not None:  # the committed candles on MQTT too
            sink = PublishingSink(sink, CandlePublisher(publisher))
        checkpoint: Path | None = None
        if run.role != "simulate":  # each simulation is a new market: nothing to resume
            checkpoint = config.checkpoint_path(run.role)
        pipeline = Pipeline(engine, sink, checkpoint=checkpoint, spill=spill)
        install_signal_handlers(pipeline)
        historian = None
        if run.history is not None and not args.csv:
            sessions = config.sessions or CandleConfig().sessions
            history_sink = PostgresSink(db(), config.table_names)
            if args.backfill:
                history_sink.open(intervals, run.instruments)
                backfill(run.history, history_sink, run.instruments, intervals, args.backfill)
            historian = Historian(
                run.history,
                history_sink,
                run.instruments,
                intervals,
                sessions,
                config.reconcile_after_close,
                config.grace_s,
            )
            pipeline.on_gap = historian.repair_gap

        def snapshot() -> dict[str, Any]:
            status = pipeline.status()
            if historian is not None:
                status["history"] = historian.status()
            return status

        metrics = None
        if config.metrics_port is not None:
            # prometheus_client takes ~30 ms to import: only when /metrics is served.
            from feedengine.metrics import EngineCollector, FlushTimes, MetricsServer

            flush_times = FlushTimes(config.grace_s, run.clock if run.live else None)
            pipeline.on_flushed = flush_times
            collector = EngineCollector(pipeline, run.source, flush_times, historian)
            metrics = MetricsServer(config.metrics_addr, config.metrics_port, collector)
            metrics.start()  # a port in use: UsageError, before anything else has started
        monitor = Monitor(snapshot, config.heartbeat_interval, publisher, config.service_id)
        pipeline.on_stopping = monitor.stopping
        log.info(
            "%s: %d instruments, intervals %s",
            run.source.name,
            len(run.instruments),
            ",".join(map(str, intervals)),
        )
        monitor.start()
        if historian is not None:
            historian.start()
        try:
            if isinstance(run.source, ReplaySource):
                with replay_progress(run.source, pipeline):
                    summary = pipeline.run(
                        run.source, finalize=not args.no_finalize, load=run.source.speed == 0
                    )
            else:
                summary = pipeline.run(run.source, live=run.live, clock=run.clock)
        finally:
            if historian is not None:
                historian.stop()
            monitor.stop()
            if metrics is not None:
                metrics.stop()
    for line in summary.lines():
        print(line)
    return EXIT_FAILURE if summary.spilled else 0
