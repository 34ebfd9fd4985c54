"""Prometheus metrics at ``/metrics`` (``METRICS_PORT``), read from the engine when scraped.

:class:`EngineCollector` turns the counters the engine already keeps into metric families on
each scrape: the pipeline's totals, the kernel's counter and late-tick arrays, the decoder's
fault counts, the flusher's row and spill counts, the connections' statuses and the
historian's counts. Nothing is counted per tick for it: the hot path does what it did
without metrics. The two histograms are observed on the flusher's thread, once per committed
block (:class:`FlushTimes`), so their lock never touches the pipeline's thread.

Reads from the scrape's thread are safe without locks: Python ints and small dicts are read
whole under the GIL, and the kernel's int64 counters are aligned 8-byte words (a read is
never torn on x86-64 or arm64), at worst one batch old.

Names follow Prometheus' rules: the ``feedengine_`` prefix, base units, ``_total`` counters,
and no per-instrument label (9,000 instruments stay a fixed number of series).
"""

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from feedengine import __version__, _candles
from feedengine.errors import UsageError
from feedengine.historian import Historian
from feedengine.pipeline import Pipeline
from feedengine.sessions import NS_PER_S
from feedengine.source import Source

if TYPE_CHECKING:
    from feedengine.stream import ConnectionStatus

log = logging.getLogger(__name__)

#: Seconds one sink write (COPY and commit of up to 8192 rows) takes.
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds from a bucket's end plus the grace to its candles' commit; the flusher waits at
#: most 0.2 s, so a healthy run stays in the first few buckets.
COMMIT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class FlushTimes:
    """The flush-duration and commit-latency histograms, observed per committed block.

    Parameters
    ----------
    grace_s
        ``CANDLE_GRACE_SECONDS``: a candle closes at its bucket's end plus this.
    clock
        The run's clock (Unix ns) for the commit latency; None for a replay, whose buckets
        ended long before it ran (its latency would measure the recording's age).
    """

    def __init__(self, grace_s: float, clock: Callable[[], int] | None) -> None:
        self.grace_ns = int(grace_s * NS_PER_S)
        self.clock = clock
        self.duration = Histogram(
            "feedengine_flush_duration_seconds",
            "Seconds one write of a block of candle rows to the sink took.",
            buckets=FLUSH_BUCKETS,
            registry=None,
        )
        self.commit = Histogram(
            "feedengine_commit_latency_seconds",
            "Seconds from a candle's bucket end plus the grace to its commit (live runs).",
            buckets=COMMIT_BUCKETS,
            registry=None,
        )

    def __call__(self, seconds: float, records: np.ndarray) -> None:
        """Observe one committed block (:attr:`Flusher.on_flushed`, the flusher's thread)."""
        self.duration.observe(seconds)
        if self.clock is None:
            return
        final = records[records["final"] == 1]
        if not len(final):
            return
        now = self.clock()
        ends = final["bucket_start_ns"] + final["minutes"].astype(np.int64) * (60 * NS_PER_S)
        for end in np.unique(ends).tolist():  # a handful per block: one per closing bucket
            # A candle closes early when its instrument's next tick is of a later bucket:
            # committed before its deadline (measured in a simulated run: 0.7-1.7 s before),
            # it counts 0; a histogram's buckets start at 0.
            self.commit.observe(max(0.0, (now - end - self.grace_ns) / NS_PER_S))

    def collect(self) -> Iterator[Metric]:
        yield from self.duration.collect()
        yield from self.commit.collect()


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    """One counter without labels (``name`` without ``_total``: the exposition adds it)."""
    return CounterMetricFamily(name, doc, value=value)


class EngineCollector:
    """A collector (prometheus_client's protocol) of one run's counters, read at scrape time.

    Parameters
    ----------
    pipeline
        The run's pipeline (its engine, decoder and flusher).
    source
        The run's source (a live one's connection statuses exist before it starts).
    flush_times
        The flusher's histograms.
    historian
        The live run's gap repair and reconciliation (None: not running).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        source: Source,
        flush_times: FlushTimes,
        historian: Historian | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.flush_times = flush_times
        self.historian = historian

    def describe(self) -> list[Metric]:
        """Nothing: the registry then never calls :meth:`collect` just to learn the names."""
        return []

    def collect(self) -> Iterator[Metric]:
        pipeline = self.pipeline
        engine = pipeline.engine
        kernel = engine.kernel
        connections: list[ConnectionStatus] = getattr(self.source, "status", [])
        yield from self._received(connections)
        yield from self._connections(connections)
        counters = dict(zip(_candles.COUNTER_NAMES, kernel.counters.tolist(), strict=True))
        for name, doc in (
            ("unknown", "Ticks of instruments not subscribed by this run."),
            ("preopen", "Ticks before their session's open."),
            ("after_close", "Ticks after their session's close."),
        ):
            yield counter(f"feedengine_{name}_ticks", doc, counters[name])
        late = CounterMetricFamily(
            "feedengine_late_ticks",
            "Ticks that arrived after their candle closed (bucket end plus grace).",
            labels=["interval"],
        )
        for minutes, n in zip(engine.intervals, kernel.late.tolist(), strict=True):
            late.add_metric([str(minutes)], n)
        yield late
        flusher = pipeline.flusher
        written = flusher.rows_by_interval if flusher is not None else {}
        candles = CounterMetricFamily(
            "feedengine_candles_written",
            "Complete candles committed to the sink, by interval (minutes).",
            labels=["interval"],
        )
        for minutes in engine.intervals:
            candles.add_metric([str(minutes)], written.get(minutes, 0))
        yield candles
        yield GaugeMetricFamily(
            "feedengine_rows_pending",
            "Candle rows closed but not yet handed to the sink.",
            value=kernel.pending,
        )
        yield GaugeMetricFamily(
            "feedengine_rows_spilled",
            "Candle rows waiting in the spill file for the database.",
            value=flusher.spilled if flusher is not None else 0,
        )
        yield from self.flush_times.collect()
        yield from self._malformed()
        lag = pipeline.seconds_since_last_tick
        if lag is not None:
            yield GaugeMetricFamily(
                "feedengine_seconds_since_last_tick",
                "Seconds since the last tick was decoded.",
                value=lag,
            )
        if self.historian is not None:
            yield from self._history(self.historian)
        info = GaugeMetricFamily(
            "feedengine_build_info", "The running version and broker.", labels=["version", "broker"]
        )
        info.add_metric([__version__, self.source.broker], 1)
        yield info

    def _received(self, connections: list["ConnectionStatus"]) -> Iterator[Metric]:
        """Ticks and messages: per connection when live, one series for a replay."""
        ticks_doc = "Ticks received (live: as the messages' headers announce them)."
        messages_doc = "Messages received."
        if not connections:
            yield counter("feedengine_ticks", ticks_doc, self.pipeline.summary.ticks)
            yield counter("feedengine_messages", messages_doc, self.pipeline.summary.messages)
            return
        ticks = CounterMetricFamily("feedengine_ticks", ticks_doc, labels=["connection"])
        messages = CounterMetricFamily("feedengine_messages", messages_doc, labels=["connection"])
        for c in connections:
            ticks.add_metric([str(c.index)], c.ticks)
            messages.add_metric([str(c.index)], c.messages)
        yield ticks
        yield messages

    def _connections(self, connections: list["ConnectionStatus"]) -> Iterator[Metric]:
        # Not at the top: a replay's metrics need no websockets and asyncio (~45 ms).
        from feedengine.stream import RECONNECT_REASONS

        up = GaugeMetricFamily(
            "feedengine_connection_up",
            "1 while the broker connection is connected.",
            labels=["connection"],
        )
        reconnects = CounterMetricFamily(
            "feedengine_reconnects",
            "Reconnects, by why the connection ended.",
            labels=["connection", "reason"],
        )
        for c in connections:
            up.add_metric([str(c.index)], c.state == "connected")
            reasons = dict(c.reconnect_reasons)  # one C-level copy: the stream adds keys
            for reason in RECONNECT_REASONS:
                reconnects.add_metric([str(c.index), reason], reasons.get(reason, 0))
        yield up
        yield reconnects

    def _malformed(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "feedengine_malformed_messages",
            "Malformed messages (their good packets are kept), by fault.",
            labels=["fault"],
        )
        decoder = self.pipeline.decoder
        if decoder is not None:
            for code, n in enumerate(decoder.counts.tolist()):
                if code:  # 0 is "no fault"
                    family.add_metric([decoder.faults(code).name.lower()], n)
        yield family

    def _history(self, historian: Historian) -> Iterator[Metric]:
        yield counter(
            "feedengine_gap_repairs",
            "Gaps repaired from the broker's candles.",
            historian.gaps_repaired,
        )
        yield counter(
            "feedengine_gap_candles_filled",
            "Candles written by gap repairs.",
            historian.candles_filled,
        )
        yield counter(
            "feedengine_sessions_reconciled",
            "Sessions reconciled with the broker's candles after the close.",
            historian.sessions_reconciled,
        )
        yield counter(
            "feedengine_candles_corrected",
            "Candles the reconciliation corrected.",
            historian.candles_corrected,
        )
        yield counter(
            "feedengine_historian_failures",
            "Gap repairs or reconciliations that failed.",
            historian.failures,
        )


class MetricsServer:
    """``/metrics`` over HTTP on a thread of prometheus_client's, for one collector.

    Parameters
    ----------
    addr, port
        ``METRICS_ADDR`` and ``METRICS_PORT`` (0: any free port; :attr:`url` tells which).
    collector
        What a scrape reads.
    """

    def __init__(self, addr: str, port: int, collector: EngineCollector) -> None:
        self.addr = addr
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)  # process_*: memory, CPU, open files
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen, or raise :class:`UsageError` (exit 2): the port is taken or not ours.

        Failing the start, not running on unwatched, is the choice: an operator who set
        ``METRICS_PORT`` relies on the scrape, and a second instance holding the port is a
        mistake to see at once.
        """
        try:
            self._server, self._thread = start_http_server(self.port, self.addr, self.registry)
        except OSError as e:
            raise UsageError(
                f"METRICS_PORT={self.port}: cannot serve metrics on {self.addr}:{self.port}: "
                f"{e.strerror or e}"
            ) from None
        self.port = self._server.server_port
        log.info("metrics: %s", self.url)

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None
