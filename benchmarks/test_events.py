"""Candle events' latency: bucket end + grace → event received by a strategy.

As ``test_latency.py``: the local Kite server (another process) plays the simulator from
now on (make bench: 9000 instruments over 3 connections at real pace for 200 s, three
one-minute closings), on the time line ``T0 + (wall - T0) * speed``. Two real clients
receive the events: a ``LISTEN feedengine_candles`` on a psycopg connection of its own
(``conn.notifies()``), and a paho subscriber of ``…/candles/+`` on a Mosquitto of the
benchmark's own. A closed candle's latency is the receive time of its event minus the wall
time at which the stream passed its bucket end + grace: for LISTEN, of the notification
that announces it (its ``latest`` bucket, when all its candles are closed), for MQTT of
the message that carries it. Reported beside them: the commit latency of the same run
(``TimingSink``), and for each bucket the latency of its last candle's event (when a
strategy has the whole bucket). A candle closes early when its instrument's next-bucket
tick arrives (docs/candles.md), so many events come *before* bucket end + grace: negative
latencies. Nothing is asserted on times; the make-test gate (1000 instruments at 6x for
25 s) checks that every committed closed candle was announced on both.
"""

import threading
import time
import uuid
from datetime import datetime

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import psycopg
from psycopg import sql

from feedengine.candles import DEFAULT_GRACE_S, CandleConfig, CandleEngine
from feedengine.events import CHANNEL, CandlePublisher, PublishingSink
from feedengine.mqtt import MqttPublisher
from feedengine.pipeline import Pipeline
from feedengine.tables import TableNames, table_names
from tests.brokers import start_broker

from .conftest import MODE, live_session
from .test_latency import TimingSink

INSTRUMENTS, SPEED, SECONDS = (1000, 6.0, 25.0) if MODE == "gate" else (9000, 1.0, 200.0)
INTERVALS = (1, 5)
GRACE_NS = int(DEFAULT_GRACE_S * 1e9)


def iso_ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 10**9


class Listen:
    """``LISTEN feedengine_candles`` on a connection of its own, in a thread."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        self.got: list[tuple[int, dict]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            for n in self.conn.notifies(timeout=0.2):
                self.got.append((time.time_ns(), orjson.loads(n.payload)))

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.conn.close()


class Subscriber:
    """A paho subscriber of every interval's candles, ready when constructed."""

    def __init__(self, port: int, topic: str) -> None:
        self.got: list[tuple[int, int, bytes]] = []  # (received, interval, payload)
        self.closed = 0
        self._changed = threading.Condition()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert ready.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, m: mqtt.MQTTMessage) -> None:
        recv = time.time_ns()
        with self._changed:
            self.got.append((recv, int(m.topic.rsplit("/", 1)[1]), m.payload))
            self.closed += sum(c["final"] for c in orjson.loads(m.payload))
            self._changed.notify_all()

    def wait_closed(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.closed >= count, timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {"p50_ms": np.percentile(a, 50), "p99_ms": np.percentile(a, 99), "max_ms": a.max()}


def test_event_latency(pg_dsn, report, benchmark):
    template = f"ev_{uuid.uuid4().hex[:8]}" + "_{interval}min"
    port, stop_broker = start_broker()
    publisher = MqttPublisher("127.0.0.1", port, "bench", "events")
    subscriber = Subscriber(port, "bench/events/candles/+")
    listen = Listen(pg_dsn)
    publisher.start()
    try:
        with live_session(INSTRUMENTS, SPEED) as live:
            to_wall = live.to_wall
            timing = TimingSink(pg_dsn, TableNames(template), to_wall)
            events = CandlePublisher(publisher)
            engine = CandleEngine(live.instruments, CandleConfig(intervals=INTERVALS))
            pipeline = Pipeline(engine, PublishingSink(timing, events))
            threading.Timer(SECONDS, pipeline.stop).start()
            benchmark.pedantic(
                pipeline.run,
                args=(live.source,),
                kwargs={"live": True, "clock": live.clock},
                rounds=1,
                iterations=1,
            )
        # Every candle the run committed is published; the last messages may still be on
        # the way.
        closed = sum(pipeline.flusher.rows_by_interval.values())
        subscriber.wait_closed(closed, 30)
    finally:
        listen.close()
        subscriber.close()
        publisher.stop()
        stop_broker()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for name in table_names(INTERVALS, template).values():
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))

    def due_wall(start_ns: int, minutes: int) -> float:
        return to_wall(start_ns + minutes * 60 * 10**9 + GRACE_NS)

    # A block of closed candles only: the stop's last block also holds in-progress
    # snapshots, whose ``latest`` bucket has not ended.
    # Per candle, as over MQTT: a notification's latency counts once per candle it announces.
    notify_ms = [
        (recv - due_wall(iso_ns(p["latest"]), p["interval"])) / 1e6
        for recv, p in listen.got
        if p["final"] == p["rows"]
        for _ in range(p["rows"])
    ]
    announced = sum(p["final"] for _, p in listen.got)
    mqtt_got = [
        (recv, minutes, iso_ns(c["start"]))
        for recv, minutes, payload in subscriber.got
        for c in orjson.loads(payload)
        if c["final"]
    ]
    mqtt_ms = [(recv - due_wall(start, minutes)) / 1e6 for recv, minutes, start in mqtt_got]
    # When a strategy has the whole bucket: its last candle's event.
    last: dict[tuple[str, int, int], int] = {}
    for recv, p in listen.got:
        if p["final"] == p["rows"]:
            key = ("listen", p["interval"], iso_ns(p["latest"]))
            last[key] = max(last.get(key, 0), recv)
    for recv, minutes, start in mqtt_got:
        last[("mqtt", minutes, start)] = max(last.get(("mqtt", minutes, start), 0), recv)
    whole = {
        f"{way}_whole_bucket_ms": sorted(
            round((recv - due_wall(start, m)) / 1e6, 1)
            for (w, m, start), recv in last.items()
            if w == way
        )
        for way in ("listen", "mqtt")
    }
    assert announced >= closed and len(mqtt_ms) >= closed > INSTRUMENTS // 2
    report(
        "event_latency",
        {
            "instruments": INSTRUMENTS,
            "speed": SPEED,
            "seconds": SECONDS,
            "closed_candles": closed,
            "notifications": len(listen.got),
            **{f"listen_{k}": v for k, v in percentiles(notify_ms).items()},
            **{f"mqtt_{k}": v for k, v in percentiles(mqtt_ms).items()},
            **{f"commit_{k}": v for k, v in percentiles(timing.latencies_ms).items()},
            **whole,
            "mqtt_dropped": events.dropped,
        },
    )
