"""Heartbeats over MQTT and the periodic status line (SPEC section 7).

:class:`Monitor` owns one thread: every second it takes a snapshot of the pipeline; every
``HEARTBEAT_INTERVAL`` it publishes the snapshot on ``{prefix}/{service}/heartbeat``; every
:data:`LOG_STATUS_S` it logs a one-line status. :class:`MqttPublisher` wraps paho-mqtt 2.x:
its own network thread reconnects by itself, a retained ``…/status`` topic carries the state
with a last will of ``offline``, and a missing or unreachable broker degrades only the
heartbeat, never the feed.
"""

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from feedengine import __version__

log = logging.getLogger(__name__)

#: Seconds between status lines in the log.
LOG_STATUS_S = 60.0
#: How long a stop waits for the broker to acknowledge the last status (seconds).
PUBLISH_TIMEOUT_S = 3.0
#: MQTT keepalive, as a multiple of the heartbeat interval, within bounds (seconds): the
#: broker fires the last will ("offline") 1.5 keepalives after the process dies.
KEEPALIVE_FACTOR, KEEPALIVE_MIN_S, KEEPALIVE_MAX_S = 2, 2, 60
MQTT_PORT, MQTT_TLS_PORT = 1883, 8883
#: Status QoS: at least once, so "offline" and "stopping" are never lost.
STATUS_QOS = 1


class MqttPublisher:
    """Publishes heartbeats and the retained status, reconnecting on its own.

    Parameters
    ----------
    host, port
        The broker (port defaults to 1883, or 8883 with TLS).
    prefix, service_id
        Topics are ``{prefix}/{service_id}/heartbeat`` and ``…/status``.
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
        interval_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port or (MQTT_TLS_PORT if tls else MQTT_PORT)
        self.heartbeat_topic = f"{prefix}/{service_id}/heartbeat"
        self.status_topic = f"{prefix}/{service_id}/status"
        self.connected = False
        self.status = "starting"
        self.keepalive = int(
            min(max(KEEPALIVE_FACTOR * interval_s, KEEPALIVE_MIN_S), KEEPALIVE_MAX_S)
        )
        self._closing = False
        self._warned = False
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"feedengine-{service_id}"
        )
        if username:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self._client.will_set(self.status_topic, "offline", qos=STATUS_QOS, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=60)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning(
                "MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason
            )
            return
        self.connected = True
        self._warned = False
        log.info(
            "MQTT connected to %s:%d; heartbeats on %s", self.host, self.port, self.heartbeat_topic
        )
        client.publish(self.status_topic, self.status, qos=STATUS_QOS, retain=True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "MQTT broker %s:%d unreachable; the feed runs on and heartbeats resume "
                "when it answers",
                self.host,
                self.port,
            )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self.connected and not self._closing:
            log.warning(
                "MQTT connection to %s:%d lost (%s); reconnecting", self.host, self.port, reason
            )
        self.connected = False

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

    def heartbeat(self, payload: dict[str, Any]) -> None:
        self._client.publish(self.heartbeat_topic, orjson.dumps(payload), qos=0)

    def stop(self) -> None:
        """Publish ``offline`` (retained), disconnect cleanly, end the network thread."""
        self.set_status("offline", wait=True)
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()


class Monitor:
    """The status thread: heartbeats and the periodic log line.

    Parameters
    ----------
    snapshot
        Returns the pipeline's counters (see ``Pipeline.status``).
    interval_s
        Seconds between heartbeats (``HEARTBEAT_INTERVAL``).
    publisher
        Where heartbeats go; None when no broker is configured.
    """

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        interval_s: float,
        publisher: MqttPublisher | None,
        service_id: str,
        log_interval_s: float = LOG_STATUS_S,
    ) -> None:
        self.snapshot = snapshot
        self.interval_s = interval_s
        self.publisher = publisher
        self.service_id = service_id
        self.log_interval_s = log_interval_s
        self.started = time.monotonic()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._last_ticks = 0
        self._last_time = self.started

    def start(self) -> None:
        if self.publisher is None:
            log.warning("MQTT: no broker configured (MQTT_BROKER); heartbeats are off")
        else:
            self.publisher.start()
        self._thread.start()

    def payload(self) -> dict[str, Any]:
        """The heartbeat: status, uptime, ticks, candles, pending, spill, lag, connections."""
        snap = self.snapshot()
        now = time.monotonic()
        rate = (snap["ticks_total"] - self._last_ticks) / max(now - self._last_time, 1e-9)
        self._last_ticks, self._last_time = snap["ticks_total"], now
        degraded = not snap["database_ok"] or any(
            c["state"] != "connected" for c in snap.get("connections", [])
        )
        status = (
            snap["state"] if snap["state"] != "running" else ("degraded" if degraded else "running")
        )
        if self.publisher is not None and not self.publisher.connected:
            snap["mqtt"] = "unreachable"
        return {
            "service_id": self.service_id,
            "version": __version__,
            "status": status,
            "timestamp": time.time(),
            "uptime_s": round(now - self.started, 1),
            "ticks_per_s": round(rate, 1),
            **snap,
        }

    def _run(self) -> None:
        next_beat = next_log = time.monotonic()
        try:
            while not self._stop.wait(max(0.0, min(next_beat, next_log) - time.monotonic())):
                now = time.monotonic()
                payload = self.payload()
                if now >= next_beat:
                    next_beat = now + self.interval_s
                    if self.publisher is not None:
                        if payload["status"] != self.publisher.status:
                            self.publisher.set_status(payload["status"])
                        self.publisher.heartbeat(payload)
                if now >= next_log:
                    next_log = now + self.log_interval_s
                    log.info(status_line(payload))
        except Exception as e:  # kept for the main thread; the feed goes on
            self.error = e
            log.exception("status thread failed")

    def stopping(self) -> None:
        """Publish ``stopping`` (graceful shutdown has begun)."""
        if self.publisher is not None:
            self.publisher.set_status("stopping", wait=True)

    def stop(self) -> None:
        """End the thread; publish ``offline`` and disconnect."""
        self._stop.set()
        self._thread.join()
        if self.publisher is not None:
            self.publisher.stop()


def status_line(p: dict[str, Any]) -> str:
    """The periodic log line."""
    lag = p.get("seconds_since_last_tick")
    conns = ", ".join(f"{c['index']}:{c['state']}" for c in p.get("connections", []))
    return (
        f"status {p['status']}: {p['ticks_per_s']:,.0f} ticks/s, "
        f"{p['ticks_total']:,} ticks, {p['candles_written']:,} candles written, "
        f"{p['rows_pending']:,} pending, {p['rows_spilled']:,} spilled, "
        f"last tick {'-' if lag is None else f'{lag:.1f} s ago'}"
        + (f", connections {conns}" if conns else "")
    )
