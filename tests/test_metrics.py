"""Prometheus metrics scraped over real HTTP: a replay in process, a live run of the command
line against the local Kite server, and a port already in use."""

import re
import socket
import urllib.request
from datetime import time as dtime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from feedengine.brokers.kite.mockserver import MockKite, tick_file_source
from feedengine.candles import CandleConfig, CandleEngine
from feedengine.metrics import EngineCollector, FlushTimes, MetricsServer
from feedengine.pipeline import Pipeline, Summary
from feedengine.replay import ReplaySource
from feedengine.simulator import SimConfig, simulate
from feedengine.sink import MemorySink
from feedengine.tickfile import TickReader
from tests.processes import Service, clean_env, cli, wait_until

NAME = re.compile(r"^feedengine_[a-z0-9_]+$")
#: Units a metric name may end with (base units only: no _ms, no _kb).
UNITS = ("_seconds", "_bytes", "_total", "_info")
#: Gauges of counts or states, and one whose unit the issue put first.
UNITLESS_GAUGES = {
    "feedengine_rows_pending",
    "feedengine_rows_spilled",
    "feedengine_connection_up",
    "feedengine_seconds_since_last_tick",
}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every feedengine_ sample of a scrape: {(name, labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("feedengine_")
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Two simulated mornings: 20 instruments and 200."""
    paths = {}
    for n in (20, 200):
        paths[n] = tmp_path_factory.mktemp("metrics") / f"day{n}.ticks"
        simulate(
            paths[n],
            SimConfig(instruments=n, ticks=60_000, start=dtime(9, 10), end=dtime(9, 40), seed=5),
        )
    return paths


def replay_scrapes(path) -> tuple[dict, dict, Summary]:
    """Replay ``path`` with metrics on port 0: a scrape after its first batch, one at the end,
    and the run's summary."""
    source = ReplaySource(path)
    engine = CandleEngine(source.instruments, CandleConfig(intervals=(1, 5, 15)))
    pipeline = Pipeline(engine, MemorySink())
    flush_times = FlushTimes(engine.config.grace_s, None)
    pipeline.on_flushed = flush_times
    server = MetricsServer("127.0.0.1", 0, EngineCollector(pipeline, source, flush_times))
    server.start()
    first: dict = {}

    def during() -> None:
        if not first:
            first.update(scrape(server.url))

    pipeline.on_batch = during  # the pipeline's thread, mid-replay: no timing involved
    try:
        summary = pipeline.run(source)
        return first, scrape(server.url), summary
    finally:
        server.stop()


def test_replay_counters_move_and_series_do_not_grow_with_instruments(days):
    during, after, summary = replay_scrapes(days[20])
    assert 0 < value(during, "feedengine_ticks_total") < value(after, "feedengine_ticks_total")
    assert value(after, "feedengine_ticks_total") == summary.ticks
    assert value(after, "feedengine_messages_total") == summary.messages
    assert value(during, "feedengine_messages_total") < summary.messages
    for minutes, written in summary.candles.items():
        assert value(after, "feedengine_candles_written_total", interval=str(minutes)) == written
    assert value(after, "feedengine_candles_written_total", interval="5") > 0
    assert value(after, "feedengine_flush_duration_seconds_count") >= 1
    assert value(after, "feedengine_commit_latency_seconds_count") == 0  # a replay: none
    assert value(after, "feedengine_rows_pending") == 0
    assert value(after, "feedengine_build_info", version="0.1.0", broker="kite") == 1
    faults = [v for (name, _), v in after.items() if name == "feedengine_malformed_messages_total"]
    assert faults and not any(faults)  # every fault a series of its own, from the first scrape
    for name, labels in after:
        assert NAME.match(name), name
        assert not any(k in ("instrument", "symbol", "token") for k, _ in labels), name
        family = re.sub(r"_(bucket|count|sum|created)$", "", name)
        assert family.endswith(UNITS) or family in UNITLESS_GAUGES, name
    _, ten_times, _ = replay_scrapes(days[200])
    assert set(ten_times) == set(after)  # 10x the instruments: the same series


@pytest.fixture
def kite(tmp_path):
    """The local Kite server playing 10 simulated minutes at 30x, 20 instruments."""
    path = tmp_path / "window.ticks"
    simulate(path, SimConfig(instruments=20, ticks=20_000, start=dtime(9, 10), end=dtime(9, 20)))
    messages, rows = tick_file_source(path)
    server = MockKite(messages, rows, api_key="k", access_token="t", speed=30).start()
    yield server, [f"{i['exchange']}:{i['tradingsymbol']}" for i in TickReader(path).instruments]
    server.stop()


def test_live_run_serves_connection_up_and_ticks_per_connection(kite, tmp_path):
    server, symbols = kite
    env = clean_env(
        tmp_path,
        KITE_API_KEY="k",
        KITE_ACCESS_TOKEN="t",
        KITE_WS_URL=server.url,
        KITE_API_ROOT=server.root,
        METRICS_PORT="0",
    )
    service = Service("--symbols", *symbols, "--csv", tmp_path / "c.csv", env=env)
    try:
        service.wait_for_line("metrics: http://127.0.0.1:")
        url = re.search(r"(http://\S+/metrics)", service.stderr).group(1)

        def flowing() -> bool:
            samples = scrape(url)
            return (
                value(samples, "feedengine_connection_up", connection="0") == 1
                and value(samples, "feedengine_ticks_total", connection="0") > 0
            )

        assert wait_until(flowing), service.stderr
        samples = scrape(url)
        connections = {dict(labels)["connection"] for name, labels in samples if "up" in name}
        assert connections == {"0"}
        for c in connections:
            assert value(samples, "feedengine_messages_total", connection=c) > 0
            assert value(samples, "feedengine_reconnects_total", connection=c, reason="lost") == 0
        assert value(samples, "feedengine_build_info", version="0.1.0", broker="kite") == 1
    finally:
        service.send()
        assert service.finish() == 0, service.stderr


def test_a_port_in_use_is_one_line_and_exit_2(days, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = cli(
            "--replay",
            days[20],
            "--csv",
            tmp_path / "c.csv",
            env={"METRICS_PORT": str(port)},
            home=tmp_path,
        )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        f"feedengine: error: METRICS_PORT={port}: cannot serve metrics on 127.0.0.1:{port}: "
        "Address already in use"
    ]
