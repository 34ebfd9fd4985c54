"""MQTT heartbeats against a real broker: fields, interval, retained status, last will."""

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import orjson
import paho.mqtt.client as mqtt
import pytest

from feedengine.heartbeat import Monitor, status_line

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
    def __init__(self, host, port, topic):
        self.messages = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append(
            (time.monotonic(), m.topic, m.payload, m.retain)
        )
        self.client.connect(host, port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def payloads(self, suffix):
        return [(t, p) for t, topic, p, _ in self.messages if topic.endswith(suffix)]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def retained_status(host, port, topic):
    got = Listener(host, port, topic)
    time.sleep(0.5)
    got.close()
    statuses = [p.decode() for _, _, p, retain in got.messages if retain]
    return statuses[-1] if statuses else None


def start_replay(tmp_path, host, port, service, *extra, speed="200"):
    env = {
        **os.environ,
        "MQTT_BROKER": host,
        "MQTT_PORT": str(port),
        "SERVICE_ID": service,
        "HEARTBEAT_INTERVAL": "1",
        "FEEDENGINE_HOME": str(tmp_path),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "feedengine",
            "--replay",
            "samples/sample.ticks",
            "--speed",
            speed,
            "--csv",
            str(tmp_path / "c.csv"),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_heartbeats_arrive_with_the_documented_fields(mqtt_broker, tmp_path):
    host, port = mqtt_broker
    service = f"t{uuid.uuid4().hex[:8]}"
    listener = Listener(host, port, f"feedengine/{service}/#")
    proc = start_replay(tmp_path, host, port, service)
    time.sleep(4.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    listener.close()
    assert proc.returncode == 0, err
    beats = listener.payloads("/heartbeat")
    assert len(beats) >= 3
    payloads = [orjson.loads(p) for _, p in beats]
    assert all(p.keys() >= REQUIRED for p in payloads)
    assert payloads[-1]["ticks_total"] > 0 and payloads[-1]["database_ok"] is True
    assert {p["status"] for p in payloads} <= {"starting", "running"}
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(beats)]
    assert 0.5 < sorted(gaps)[len(gaps) // 2] < 2.0  # about HEARTBEAT_INTERVAL=1 apart
    statuses = [p.decode() for _, p in listener.payloads("/status")]
    assert statuses[-2:] == ["stopping", "offline"]
    assert retained_status(host, port, f"feedengine/{service}/status") == "offline"


def test_last_will_reads_offline_after_a_kill(mqtt_broker, tmp_path):
    host, port = mqtt_broker
    service = f"t{uuid.uuid4().hex[:8]}"
    proc = start_replay(tmp_path, host, port, service, speed="20")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if retained_status(host, port, f"feedengine/{service}/status") == "running":
            break
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20  # keepalive 2 s: the broker notices within ~3 s
    status = None
    while time.monotonic() < deadline:
        status = retained_status(host, port, f"feedengine/{service}/status")
        if status == "offline":
            break
    assert status == "offline"


def test_the_feed_runs_on_without_a_broker(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    proc = start_replay(tmp_path, "127.0.0.1", dead_port, "nobroker", speed="0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "ticks decoded      22,105" in out
    assert "unreachable; the feed runs on" in err


def test_no_broker_configured_is_said_and_status_line():
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
    payload = monitor.payload()
    assert payload["status"] == "degraded"  # the database is not ok
    line = status_line(payload)
    assert line.startswith("status degraded:") and "last tick 0.5 s ago" in line


@pytest.fixture(autouse=True)
def _in_project_root(monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
