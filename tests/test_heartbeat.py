"""MQTT heartbeats against a real broker: fields, interval, retained status, last will."""

import itertools
import logging
import signal
import socket
import subprocess
import threading
import time
import uuid

import orjson
import paho.mqtt.client as mqtt
import pytest

from feedengine.heartbeat import Monitor, status_line
from feedengine.mqtt import MqttPublisher
from tests.processes import ROOT, clean_env, command

SAMPLE = ROOT / "samples" / "sample.ticks"

REQUIRED = {
    "status",
    "uptime_s",
    "ticks_total",
    "ticks_per_s",
    "candles_written",
    "rows_pending",
    "rows_spilled",
    "seconds_since_last_tick",
    "connections",
    "database_ok",
    "service_id",
}


class Listener:
    """A subscriber that is ready (SUBACK received) when constructed."""

    def __init__(self, host, port, topic):
        self.messages = []
        self._changed = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(10), "the broker did not acknowledge the subscription"

    def _on_message(self, client, userdata, m):
        with self._changed:
            self.messages.append((time.monotonic(), m.topic, m.payload, m.retain))
            self._changed.notify_all()

    def wait(self, predicate, timeout=20.0):
        """Wait until ``predicate(messages)`` holds; return whether it did."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.messages), timeout)

    def payloads(self, suffix):
        return [(t, p) for t, topic, p, _ in self.messages if topic.endswith(suffix)]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def statuses(messages):
    return [p.decode() for _, topic, p, _ in messages if topic.endswith("/status")]


def retained_status(host, port, topic):
    """The retained value of ``topic`` (the broker sends it right after the SUBACK)."""
    got = Listener(host, port, topic)
    try:
        got.wait(lambda ms: any(retain for *_, retain in ms), 5)
    finally:
        got.close()
    return next((p.decode() for _, _, p, retain in got.messages if retain), None)


def clear_status(broker, service):
    """Delete the retained status topic (an empty retained message), as tests must."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(*broker)
    client.loop_start()
    try:
        client.publish(f"feedengine/{service}/status", b"", qos=1, retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.fixture
def service(mqtt_broker):
    """A unique service id; its retained status topic is cleared afterwards."""
    name = f"t{uuid.uuid4().hex[:8]}"
    yield name
    clear_status(mqtt_broker, name)


def start_replay(tmp_path, host, port, service, *extra, speed="200"):
    env = clean_env(
        tmp_path,
        MQTT_BROKER=host,
        MQTT_PORT=str(port),
        SERVICE_ID=service,
        HEARTBEAT_INTERVAL="1",
    )
    return subprocess.Popen(
        command("--replay", SAMPLE, "--speed", speed, "--csv", tmp_path / "c.csv", *extra),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_heartbeats_arrive_with_the_documented_fields(mqtt_broker, service, tmp_path):
    host, port = mqtt_broker
    listener = Listener(host, port, f"feedengine/{service}/#")
    proc = start_replay(tmp_path, host, port, service)
    try:
        assert listener.wait(lambda ms: sum(t.endswith("/heartbeat") for _, t, _, _ in ms) >= 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert listener.wait(lambda ms: statuses(ms)[-1:] == ["offline"])
    listener.close()
    beats = listener.payloads("/heartbeat")
    payloads = [orjson.loads(p) for _, p in beats]
    assert all(p.keys() >= REQUIRED for p in payloads)
    assert payloads[-1]["ticks_total"] > 0 and payloads[-1]["database_ok"] is True
    assert {p["status"] for p in payloads} <= {"starting", "running"}
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(beats)]
    assert 0.5 < sorted(gaps)[len(gaps) // 2] < 2.0  # about HEARTBEAT_INTERVAL=1 apart
    assert statuses(listener.messages)[-2:] == ["stopping", "offline"]
    assert retained_status(host, port, f"feedengine/{service}/status") == "offline"


def test_last_will_reads_offline_after_a_kill(mqtt_broker, service, tmp_path):
    host, port = mqtt_broker
    listener = Listener(host, port, f"feedengine/{service}/status")
    proc = start_replay(tmp_path, host, port, service, speed="20")
    try:
        assert listener.wait(lambda ms: "running" in statuses(ms))
    finally:
        proc.kill()
        proc.wait()
    # keepalive 2 s: the broker publishes the will within ~3 s of the kill.
    assert listener.wait(lambda ms: statuses(ms)[-1:] == ["offline"])
    listener.close()
    assert retained_status(host, port, f"feedengine/{service}/status") == "offline"


def test_the_feed_runs_on_without_a_broker(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    proc = start_replay(tmp_path, "127.0.0.1", dead_port, "nobroker", speed="0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "ticks decoded      22,105" in out
    assert "unreachable (Connection refused); the feed runs on" in err


def test_no_broker_configured_is_said_and_status_line(caplog):
    monitor = Monitor(
        lambda: {
            "state": "running",
            "ticks_total": 10,
            "candles_written": 2,
            "rows_pending": 0,
            "rows_spilled": 0,
            "seconds_since_last_tick": 0.5,
            "database_ok": False,
            "connections": [{"index": 0, "state": "connected"}],
        },
        30,
        None,
        "svc",
    )
    with caplog.at_level(logging.INFO):
        monitor.start()
        monitor.stop()
    assert "MQTT: no broker configured (MQTT_BROKER); heartbeats are off" in caplog.text
    payload = monitor.payload()
    assert payload["status"] == "degraded"  # the database is not ok
    line = status_line(payload)
    assert line.startswith("status degraded (database):") and "last tick 0.5 s ago" in line
    assert payload["mqtt"] == "off"


def snapshot(**changes):
    snap = {
        "state": "running",
        "ticks_total": 0,
        "candles_written": 0,
        "rows_pending": 0,
        "rows_spilled": 0,
        "seconds_since_last_tick": 0.1,
        "database_ok": True,
        "connections": [],
        "late_ticks": {"1m": 0},
        "grace_s": 2.0,
        "staleness_s": None,
    }
    return {**snap, **changes}


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_ticks_per_s_is_the_same_whoever_asks():
    """The status line and the heartbeat shared one rate window and reset it for each
    other: the heartbeat read 0.0 once a minute while ticks flowed."""
    started = time.monotonic()

    def counters():  # ticks arrive in batches: 500 every 0.1 s, 5000/s
        return snapshot(ticks_total=500 * int((time.monotonic() - started) * 10))

    monitor = Monitor(counters, 30, None, "svc", sample_s=0.1)
    monitor.start()
    try:
        assert wait_for(lambda: len(monitor._samples) >= 10)
        first, second = monitor.payload(), monitor.payload()  # the status line, the heartbeat
    finally:
        monitor.stop()
    assert first["ticks_per_s"] == second["ticks_per_s"]
    assert 4000 < second["ticks_per_s"] < 6000


def test_a_failing_heartbeat_cycle_is_one_line_and_the_thread_goes_on(caplog):
    """A failing cycle logged a traceback and ended the thread; its error was never read."""
    calls = []

    def counters():
        calls.append(1)
        if 2 <= len(calls) <= 4:
            raise KeyError("ticks_total")
        return snapshot(ticks_total=len(calls))

    monitor = Monitor(counters, 0.05, None, "svc", sample_s=0.05)
    with caplog.at_level(logging.INFO, logger="feedengine.heartbeat"):
        monitor.start()
        try:
            assert wait_for(lambda: len(calls) >= 10)  # it went on after the failures
            payload = monitor.payload()
        finally:
            monitor.stop()
    assert payload["heartbeat_errors"] == 3
    failed = [r for r in caplog.records if "heartbeat cycle failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None  # one line, repeats throttled
    assert failed[0].getMessage() == (
        "heartbeat cycle failed (KeyError: 'ticks_total'); the feed runs on, the next cycle retries"
    )
    assert caplog.records[-1].getMessage() == (
        "heartbeat: 3 cycle(s) failed during the run; the last: KeyError: 'ticks_total'"
    )


def test_mqtt_reads_connecting_until_the_first_attempt_has_an_outcome(mqtt_broker):
    """The first heartbeat said "unreachable" a millisecond before connecting."""
    with socket.socket() as silent:  # accepts TCP, never answers MQTT's CONNECT
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        publisher = MqttPublisher("127.0.0.1", silent.getsockname()[1], "feedengine", "c")
        monitor = Monitor(snapshot, 30, publisher, "c")
        publisher.start()
        try:
            assert monitor.payload()["mqtt"] == "connecting"
        finally:
            publisher._client.loop_stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    publisher = MqttPublisher("127.0.0.1", dead_port, "feedengine", "c")
    publisher.start()
    try:
        assert wait_for(lambda: publisher.state != "connecting")
        assert Monitor(snapshot, 30, publisher, "c").payload()["mqtt"] == "unreachable"
    finally:
        publisher._client.loop_stop()
    service = f"t{uuid.uuid4().hex[:8]}"
    publisher = MqttPublisher(*mqtt_broker, "feedengine", service)
    publisher.start()
    try:
        assert wait_for(lambda: publisher.connected)
        assert Monitor(snapshot, 30, publisher, service).payload()["mqtt"] == "connected"
    finally:
        publisher.stop()
        clear_status(mqtt_broker, service)


def test_late_ticks_and_lag_degrade_the_status_and_warn_once(caplog):
    late = {"1m": 0}
    lag = {"p50": 0.4, "max": 0.9, "ticks": 100}

    def counters():
        return snapshot(late_ticks=dict(late), staleness_s=dict(lag), ticks_total=1)

    def warnings():
        return [r for r in caplog.records if r.getMessage().startswith("ticks arrive")]

    monitor = Monitor(counters, 30, None, "svc", sample_s=0.05)
    with caplog.at_level(logging.INFO, logger="feedengine.heartbeat"):
        monitor.start()
        try:
            assert wait_for(lambda: len(monitor._samples) >= 3)
            assert monitor.payload()["status"] == "running"
            late["1m"] = 120
            lag.update(p50=6.5, max=9.0)
            assert wait_for(lambda: len(warnings()) == 2)
            payload = monitor.payload()
            repeated = wait_for(lambda: len(warnings()) > 2, 0.5)
        finally:
            monitor.stop()
    assert payload["status"] == "degraded"
    assert payload["problems"] == ["late ticks", "lag"]
    assert payload["late_ticks_last_minute"] == {"1m": 120}
    assert not repeated  # warnings at most once a minute
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("ticks arrived after their candle had closed in the last minute (1m 120)")
        for m in messages
    )
    assert any(m.startswith("ticks arrive 6.5 s after their exchange time") for m in messages)
    line = status_line(payload)
    assert line.startswith("status degraded (late ticks, lag):")
    assert "lag p50 6.5 s max 9.0 s, 120 late ticks in the last minute" in line
