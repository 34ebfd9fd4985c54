"""Kite's daily token: read again from where it came from on a 403, against the local server."""

import logging
import threading
from datetime import date
from datetime import time as dtime

import pytest

from feedengine.brokers.kite import wire
from feedengine.brokers.kite.history import KiteHistory
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.mockserver import MockKite, tick_file_source
from feedengine.brokers.kite.ticker import KiteStream
from feedengine.brokers.kite.token import from_file, token_source
from feedengine.errors import AuthError, ConfigError
from feedengine.simulator import SimConfig, simulate
from tests.processes import Service, clean_env, cli, wait_until

KEY = "k"


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """A 10-minute simulated window, 20 instruments: minutes of ticks at speed 1."""
    path = tmp_path_factory.mktemp("token") / "window.ticks"
    simulate(
        path, SimConfig(instruments=20, ticks=20_000, start=dtime(9, 15), end=dtime(9, 25), seed=3)
    )
    return path


@pytest.fixture
def server(window):
    messages, rows = tick_file_source(window)
    server = MockKite(messages, rows, api_key=KEY, access_token="day1", speed=1).start()
    yield server
    server.stop()


def kite_env(tmp_path, server, **extra):
    return clean_env(
        tmp_path, KITE_API_KEY=KEY, KITE_WS_URL=server.url, KITE_API_ROOT=server.root, **extra
    )


class Ticks:
    """Counts the messages carrying ticks; wakes a waiter on each."""

    def __init__(self):
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self, recv_ns, message):
        if len(message) > 1 and len(wire.decode(message)):
            with self._changed:
                self.count += 1
                self._changed.notify_all()

    def wait_for(self, count, timeout=30.0):
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= count, timeout)


def test_token_sources_read_again_where_the_token_came_from(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  day1\n")
    source = token_source(None, token_file, None)
    assert source is not None and source() == "day1"
    token_file.write_text("day2")
    assert source() == "day2"
    env_file = tmp_path / ".env"
    env_file.write_text("KITE_ACCESS_TOKEN=day1\nOTHER=x\n")
    from_env = token_source("day1", None, env_file)
    assert from_env is not None and from_env() == "day1"
    env_file.write_text("KITE_ACCESS_TOKEN='day2 '\n")
    assert from_env() == "day2"
    # From the process's environment: nothing to read again, whatever .env says.
    fixed = token_source("real", None, None)
    assert fixed is not None and fixed() == "real"
    assert token_source(None, None, None) is None
    with pytest.raises(ConfigError, match="set KITE_ACCESS_TOKEN or KITE_ACCESS_TOKEN_FILE"):
        token_source("x", token_file, None)
    token_file.write_text(" \n")
    with pytest.raises(ConfigError, match="is empty"):
        token_source(None, token_file, None)
    with pytest.raises(ConfigError, match="cannot read"):
        token_source(None, tmp_path / "missing", None)


def test_a_renewed_token_file_reconnects_every_connection_with_one_line(server, tmp_path, caplog):
    token_file = tmp_path / "token"
    token_file.write_text("day1\n")
    ticks = Ticks()
    tokens = [int(r["instrument_token"]) for r in server.instruments][:6]
    stream = KiteStream(
        server.url,
        KEY,
        from_file(token_file),
        tokens,
        ticks,
        per_connection=3,
        backoff_first_s=0.05,
    )
    caplog.set_level(logging.INFO, "feedengine")
    stream.start()
    try:
        assert ticks.wait_for(1), "no tick with the first token"
        token_file.write_text("  day2\n")  # the operator's morning renewal ...
        server.expire_token("day2")  # ... and Kite's expiry of yesterday's token
        server.inject("drop")
        before = ticks.count
        assert ticks.wait_for(before + 5), "the ticks did not continue"
        assert stream.alive and stream.error is None
        assert server.connections == 4  # two connections, each reconnected once
    finally:
        stream.stop()
    renewed = [r for r in caplog.records if "access token was renewed" in r.getMessage()]
    assert len(renewed) == 1
    assert "day2" not in caplog.text


def test_live_run_renews_its_token_from_env_then_exits_when_it_is_unchanged(server, tmp_path):
    env_file = tmp_path / "kite.env"
    env_file.write_text("KITE_ACCESS_TOKEN=day1\n")
    run = Service(
        "--env-file",
        env_file,
        "--symbols",
        "INFY",
        "RELIANCE",
        "--csv",
        tmp_path / "c.csv",
        "--no-mqtt",
        env=kite_env(tmp_path, server),
    )
    try:
        run.wait_for_line("subscribed")
        env_file.write_text("# renewed this morning\nKITE_ACCESS_TOKEN=day2\n")
        server.expire_token("day2")
        server.inject("drop")
        run.wait_for_line("the access token was renewed")
        assert wait_until(lambda: run.stderr.count("subscribed") == 2), run.stderr
        server.expire_token("day3")  # expired again, and nobody renewed it
        server.inject("drop")
        status = run.finish()
    finally:
        if run.proc.poll() is None:
            run.kill()
    assert status == 1, run.stderr
    assert "Traceback" not in run.stderr and "day2" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("feedengine: error:")]
    assert len(errors) == 1 and "reading the token again gave the same one" in errors[0]
    assert "expire every morning at 6 AM" in errors[0]


def test_test_broker_says_for_whom_the_token_works_or_that_it_was_refused(server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("day1\n")
    env = kite_env(tmp_path, server, KITE_ACCESS_TOKEN_FILE=str(token_file))
    ok = cli("--test-broker", "--symbols", "INFY", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "1/3 credentials ok: token works for MK0001 (Mock Kite)" in ok.stdout.splitlines()
    token_file.write_text("yesterday\n")
    refused = cli("--test-broker", env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "feedengine: error: profile: the access token was refused (expired? Kite's tokens "
        "expire every morning at 6 AM)"
    ]


def test_historical_requests_ask_the_token_source_every_time(server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("day1\n")
    history = KiteHistory(KEY, from_file(token_file), server.root, backoff_first_s=0.01)
    instrument = KiteInstrument.from_dict(server.instruments[0])
    day = date(2024, 1, 15)
    assert len(history.candles(instrument, 1, day, day)) == 0  # a day not played: no rows
    server.expire_token("day2")
    with pytest.raises(AuthError, match="refused the access token for historical data"):
        history.candles(instrument, 1, day, day)
    token_file.write_text("day2\n")
    assert len(history.candles(instrument, 1, day, day)) == 0
