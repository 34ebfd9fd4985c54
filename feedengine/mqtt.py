"""The MQTT connection of heartbeats and candle messages (SPEC section 7).

:class:`MqttPublisher` wraps paho-mqtt 2.x: its own network thread reconnects by itself, a
retained ``…/status`` topic carries the state with a last will of ``offline``, and a missing
or unreachable broker degrades only the heartbeat, never the feed. Over TLS the broker's
certificate must be signed by ``MQTT_CA_FILE`` (else the system's CAs); an untrusted
certificate, a failed TLS handshake or a refused password is one warning naming it, not a
traceback or a line per retry. Imported only when a broker is configured (paho and its
TLS setup cost a replay's start-up ~20 ms).
"""

import logging
import ssl
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from feedengine.errors import ConfigError

log = logging.getLogger(__name__)

#: How long a stop waits for the broker to acknowledge the last status (seconds).
PUBLISH_TIMEOUT_S = 3.0
#: MQTT keepalive, as a multiple of the heartbeat interval, within bounds (seconds): the
#: broker fires the last will ("offline") 1.5 keepalives after the process dies.
KEEPALIVE_FACTOR, KEEPALIVE_MIN_S, KEEPALIVE_MAX_S = 2, 2, 60
MQTT_PORT, MQTT_TLS_PORT = 1883, 8883
#: Status QoS: at least once, so "offline" and "stopping" are never lost.
STATUS_QOS = 1
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: a trusted
#: certificate of another host (measured: 64 for 127.0.0.2 against a 127.0.0.1 certificate).
X509_OTHER_HOST = (62, 64)


class _Client(mqtt.Client):
    """paho's client, keeping why the latest connection attempt failed: paho calls
    ``on_connect_fail`` without the exception (an untrusted certificate would read as an
    unreachable broker)."""

    last_error: OSError | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as e:
            self.last_error = e
            raise


def _failure(e: OSError | None) -> str:
    """Why a connection attempt failed, and what to check, in words."""
    if isinstance(e, ssl.SSLCertVerificationError) and e.verify_code in X509_OTHER_HOST:
        return f"its TLS certificate is for another host ({e.verify_message}); use a name it lists"
    if isinstance(e, ssl.SSLCertVerificationError):
        return (
            f"its TLS certificate is not trusted ({e.verify_message}); set MQTT_CA_FILE to "
            "the CA that signed it"
        )
    if isinstance(e, ssl.SSLError):
        return f"the TLS handshake failed ({e.reason or e}); is that port TLS?"
    return f"unreachable ({e.strerror or e})" if e is not None else "unreachable"


class MqttPublisher:
    """Publishes heartbeats and the retained status, reconnecting on its own.

    Parameters
    ----------
    host, port
        The broker (port defaults to 1883, or 8883 with TLS).
    prefix, service_id
        Topics are ``{prefix}/{service_id}/heartbeat`` and ``…/status``.
    username, password
        The broker's credentials, or None.
    tls
        Speak TLS, verifying the broker's certificate and host name.
    ca_file
        With TLS, the CA certificates (PEM) that sign the broker's; None: the system's.
    interval_s
        The heartbeat interval (the MQTT keepalive follows it).

    Raises
    ------
    ConfigError
        ``ca_file`` cannot be read or holds no certificate.
    """

    def __init__(
        self,
        host: str,
        port: int | None,
        prefix: str,
        service_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        interval_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port or (MQTT_TLS_PORT if tls else MQTT_PORT)
        self.heartbeat_topic = f"{prefix}/{service_id}/heartbeat"
        self.status_topic = f"{prefix}/{service_id}/status"
        #: The candle events' topics (:mod:`feedengine.events`), ``.format(interval=5)``.
        self.candles_topic = f"{prefix}/{service_id}/candles/{{interval}}"
        #: connecting (until the first attempt's outcome) | connected | unreachable | refused
        self.state = "connecting"
        self.status = "starting"
        self.keepalive = int(
            min(max(KEEPALIVE_FACTOR * interval_s, KEEPALIVE_MIN_S), KEEPALIVE_MAX_S)
        )
        self._closing = False
        #: The failure last warned about (None: connected since, or none yet): a broker
        #: that keeps failing the same way is one line, not one per retry.
        self._warned: str | None = None
        self._client = _Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"feedengine-{service_id}"
        )
        if username:
            self._client.username_pw_set(username, password)
        if tls:
            try:
                self._client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError) as e:  # FileNotFoundError, or not PEM
                raise ConfigError(
                    f"MQTT_CA_FILE={ca_file}: not a readable file of CA certificates "
                    f"({getattr(e, 'strerror', None) or e})"
                ) from None
        self._client.will_set(self.status_topic, "offline", qos=STATUS_QOS, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=60)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self.state = "refused"
            self._warn_once(
                f"refused the connection: {reason} (check MQTT_USERNAME and MQTT_PASSWORD)"
            )
            return
        self.state = "connected"
        self._warned = None
        log.info(
            "MQTT connected to %s:%d; heartbeats on %s", self.host, self.port, self.heartbeat_topic
        )
        client.publish(self.status_topic, self.status, qos=STATUS_QOS, retain=True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.state = "unreachable"
        self._warn_once(_failure(self._client.last_error))

    def _warn_once(self, why: str) -> None:
        """Say why the broker cannot be used, unless that was the last thing said."""
        if why != self._warned:
            self._warned = why
            log.warning(
                "MQTT broker %s:%d: %s; the feed runs on and heartbeats resume when it "
                "accepts them",
                self.host,
                self.port,
                why,
            )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self.connected and not self._closing:
            log.warning(
                "MQTT connection to %s:%d lost (%s); reconnecting", self.host, self.port, reason
            )
        if self.state == "connected":
            self.state = "unreachable"

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def start(self) -> None:
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self._client.loop_start()

    def set_status(self, status: str, wait: bool = False) -> None:
        """Publish the retained status (QoS 1); ``wait`` for the broker's acknowledgement."""
        self.status = status
        info = self._client.publish(self.status_topic, status, qos=STATUS_QOS, retain=True)
        if wait and self.connected:
            try:
                info.wait_for_publish(PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError):
                log.warning("MQTT: status %r not acknowledged", status)

    def publish(self, topic: str, payload: bytes, qos: int) -> bool:
        """Publish on this connection while it is up; False (nothing queued) when it is not."""
        if not self.connected:
            return False
        return self._client.publish(topic, payload, qos=qos).rc == mqtt.MQTT_ERR_SUCCESS

    def heartbeat(self, payload: dict[str, Any]) -> None:
        self._client.publish(self.heartbeat_topic, orjson.dumps(payload), qos=0)

    def stop(self) -> None:
        """Publish ``offline`` (retained), disconnect cleanly, end the network thread."""
        self.set_status("offline", wait=True)
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
