"""MQTT over TLS with a password, against a Mosquitto of the test's own and a throwaway CA."""

import logging
import threading
import uuid

import orjson
import paho.mqtt.client as mqtt
import pytest

from feedengine.config import Config
from feedengine.errors import ConfigError
from feedengine.mqtt import MqttPublisher
from tests.brokers import start_broker
from tests.certs import Authority
from tests.processes import ROOT, Service, clean_env, wait_until

SAMPLE = ROOT / "samples" / "sample.ticks"
USER, PASSWORD = "feed", "s3cret-pass"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The CA the client trusts, and a broker certificate signed by another one."""
    folder = tmp_path_factory.mktemp("pki")
    trusted = Authority.make(folder, "trusted-ca")
    stranger = Authority.make(folder, "stranger-ca")
    return trusted, trusted.issue(folder, "server"), stranger.issue(folder, "impostor")


@pytest.fixture(scope="module")
def tls_broker(pki):
    """A Mosquitto speaking TLS only, with a password file: its port."""
    _, server, _ = pki
    port, stop = start_broker(tls=server, users={USER: PASSWORD})
    yield port
    stop()


@pytest.fixture(scope="module")
def impostor_broker(pki):
    """A Mosquitto whose certificate the client's CA did not sign: its port."""
    _, _, impostor = pki
    port, stop = start_broker(tls=impostor, users={USER: PASSWORD})
    yield port
    stop()


class Subscriber:
    """A TLS subscriber with the password, ready (SUBACK received) when constructed."""

    def __init__(self, port, ca, topic):
        self.messages = []
        self._changed = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.tls_set(ca_certs=str(ca.cert_file))
        self.client.username_pw_set(USER, PASSWORD)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(10), "the broker did not acknowledge the subscription"

    def _on_message(self, client, userdata, m):
        with self._changed:
            self.messages.append((m.topic, m.payload, m.retain))
            self._changed.notify_all()

    def wait(self, predicate, timeout=20.0):
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.messages), timeout)

    def statuses(self):
        return [p.decode() for t, p, _ in self.messages if t.endswith("/status")]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def retained(port, ca, topic):
    """The retained value of ``topic``, read by a new subscriber."""
    sub = Subscriber(port, ca, topic)
    try:
        sub.wait(lambda ms: any(r for *_, r in ms), 5)
    finally:
        sub.close()
    return next((p.decode() for _, p, r in sub.messages if r), None)


def replay(tmp_path, port, ca, service, password=PASSWORD):
    env = clean_env(
        tmp_path,
        MQTT_BROKER="127.0.0.1",
        MQTT_PORT=str(port),
        MQTT_USE_TLS="true",
        MQTT_CA_FILE=str(ca.cert_file),
        MQTT_USERNAME=USER,
        MQTT_PASSWORD=password,
        SERVICE_ID=service,
        HEARTBEAT_INTERVAL="1",
    )
    return Service("--replay", SAMPLE, "--speed", "20", "--csv", tmp_path / "c.csv", env=env)


def test_heartbeats_status_and_last_will_over_tls_with_a_password(pki, tls_broker, tmp_path):
    ca, _, _ = pki
    service = f"t{uuid.uuid4().hex[:8]}"
    sub = Subscriber(tls_broker, ca, f"feedengine/{service}/#")
    run = replay(tmp_path, tls_broker, ca, service)
    try:
        assert sub.wait(
            lambda ms: (
                "running" in sub.statuses() and sum(t.endswith("/heartbeat") for t, _, _ in ms) >= 2
            )
        ), run.stderr
        assert retained(tls_broker, ca, f"feedengine/{service}/status") == "running"
    finally:
        run.kill()  # no goodbye: only the broker's last will can say "offline"
    assert sub.wait(lambda ms: sub.statuses()[-1:] == ["offline"])
    sub.close()
    assert retained(tls_broker, ca, f"feedengine/{service}/status") == "offline"
    beats = [orjson.loads(p) for t, p, _ in sub.messages if t.endswith("/heartbeat")]
    assert beats[-1]["service_id"] == service and beats[-1]["mqtt"] == "connected"
    assert f"MQTT connected to 127.0.0.1:{tls_broker}" in run.stderr


CASES = {
    "wrong password": (
        "tls_broker",
        "wrong",
        "refused the connection: Not authorized (check MQTT_USERNAME and MQTT_PASSWORD)",
    ),
    "untrusted certificate": (
        "impostor_broker",
        PASSWORD,
        "its TLS certificate is not trusted (unable to get local issuer certificate); "
        "set MQTT_CA_FILE to the CA that signed it",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_refusal_is_one_line_not_one_per_retry(pki, case, request, caplog):
    fixture, password, why = CASES[case]
    port = request.getfixturevalue(fixture)
    ca, _, _ = pki
    publisher = MqttPublisher(
        "127.0.0.1",
        port,
        "feedengine",
        f"t{uuid.uuid4().hex[:8]}",
        username=USER,
        password=password,
        tls=True,
        ca_file=str(ca.cert_file),
        interval_s=1,
    )
    attempts = []
    for name in ("on_connect", "on_connect_fail"):  # count every attempt's outcome
        callback = getattr(publisher._client, name)
        setattr(
            publisher._client,
            name,
            lambda *args, callback=callback: (attempts.append(1), callback(*args)),
        )
    caplog.set_level(logging.WARNING, "feedengine")
    publisher.start()
    try:
        # paho retries after 1 s, then 2 s: the third outcome is about 3 s in.
        assert wait_until(lambda: len(attempts) >= 3, 30), attempts
    finally:
        publisher.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "feedengine.mqtt"]
    assert lines == [
        f"MQTT broker 127.0.0.1:{port}: {why}; the feed runs on and heartbeats resume when "
        "it accepts them"
    ]
    assert publisher.state in ("refused", "unreachable")


@pytest.mark.parametrize("case", CASES)
def test_a_refusal_is_one_clear_line_from_the_cli(pki, case, request, tmp_path):
    fixture, password, why = CASES[case]
    port = request.getfixturevalue(fixture)
    ca, _, _ = pki
    run = replay(tmp_path, port, ca, f"t{uuid.uuid4().hex[:8]}", password)
    try:
        run.wait_for_line(why)
    finally:
        run.send()
        assert run.finish() == 0, run.stderr
    assert run.stderr.count("MQTT broker") == 1 and "Traceback" not in run.stderr


def test_tls_settings_that_cannot_work_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="MQTT_CA_FILE is set but MQTT_USE_TLS is not true"):
        Config.from_env({"MQTT_CA_FILE": "ca.pem"})
    with pytest.raises(ConfigError, match="MQTT_PASSWORD is set but MQTT_USERNAME is not"):
        Config.from_env({"MQTT_PASSWORD": "x"})
    with pytest.raises(ConfigError, match=r"MQTT_CA_FILE=.*not a readable file of CA"):
        MqttPublisher("h", None, "p", "s", tls=True, ca_file=str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"MQTT_CA_FILE=.*not a readable file of CA"):
        MqttPublisher("h", None, "p", "s", tls=True, ca_file=str(tmp_path / "junk.pem"))
