"""Candle events: a PostgreSQL ``NOTIFY`` per committed block, and the candles on MQTT.

A strategy that reads the candle tables learns of new candles two ways, both after they are
readable:

- ``LISTEN feedengine_candles`` (:data:`CHANNEL`): the sink calls ``pg_notify`` in the
  transaction that writes a block, once per interval table (:func:`notice`), so the server
  delivers the notification at commit, never before; a spilled block notifies when its
  retry commits.
- MQTT, when a broker is configured: :class:`CandlePublisher` publishes the committed
  candles on ``{MQTT_TOPIC_PREFIX}/{SERVICE_ID}/candles/{interval}`` from a thread of its
  own, through the heartbeat's MQTT connection. The flusher only hands it the block
  (:class:`PublishingSink`); when the queue is full or the broker is away the block is
  dropped, counted and warned about once per outage: the database is the record.
"""

import logging
import queue
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import orjson
from psycopg import sql

from feedengine.instruments import Instrument
from feedengine.sessions import IST, NS_PER_S
from feedengine.sink import Sink, price_text
from feedengine.tables import latest_per_candle

if TYPE_CHECKING:  # the sink imports this module; paho is loaded only with MQTT
    from feedengine.mqtt import MqttPublisher

log = logging.getLogger(__name__)

#: The PostgreSQL channel of the candle notifications (``LISTEN feedengine_candles``).
CHANNEL = "feedengine_candles"
#: One round trip for every interval table of a block: one notification per payload.
NOTIFY = sql.SQL("SELECT pg_notify({}, p) FROM unnest(%s::text[]) AS p").format(
    sql.Literal(CHANNEL)
)
#: PostgreSQL refuses a NOTIFY payload of this many bytes or more. A notice is at most
#: about 250 bytes (a schema-qualified name of 127 bytes and 19-digit counts).
NOTIFY_LIMIT = 8000
#: MQTT QoS of the candle messages: at least once.
CANDLES_QOS = 1
#: Candles per MQTT message: about 160 bytes each, so a message stays near 80 kB even when
#: a block carries 8192 candles of one interval.
CANDLES_PER_MESSAGE = 500
#: Blocks waiting for the MQTT thread. The flusher writes a block per flush (live: one or
#: two per closing bucket), so a full queue means the thread or the broker cannot keep up.
QUEUE_BLOCKS = 64


def ist_text(bucket_start_ns: int) -> str:
    """A bucket start as ISO 8601 in IST: ``2024-01-15T09:15:00+05:30``."""
    return datetime.fromtimestamp(bucket_start_ns // NS_PER_S, IST).isoformat()


def notice(minutes: int, table: str, block: np.ndarray) -> str:
    """The notification payload of one interval's ``block`` of ``RECORD_DTYPE`` records
    written to ``table``: ``rows`` candles, ``final`` of them closed (the others are
    in-progress snapshots), ``latest`` the bucket start of the latest one."""
    final = int(np.count_nonzero(block["final"]))
    return loaded_notice(minutes, table, len(block), final, int(block["bucket_start_ns"].max()))


def loaded_notice(minutes: int, table: str, rows: int, final: int, latest_ns: int) -> str:
    """:func:`notice` of ``rows`` candles (``final`` closed, the latest starting at
    ``latest_ns``) written to ``table`` in any number of blocks."""
    return orjson.dumps(
        {
            "interval": minutes,
            "table": table,
            "rows": rows,
            "final": final,
            "latest": ist_text(latest_ns),
        }
    ).decode()


def candle_messages(records: np.ndarray) -> list[tuple[int, int, bytes]]:
    """``(interval, candles, orjson list)`` messages of ``RECORD_DTYPE`` records: each candle's
    symbol, exchange, IST bucket start, exact decimal prices as text, volume and final,
    at most :data:`CANDLES_PER_MESSAGE` per message."""
    out: list[tuple[int, int, bytes]] = []
    rows = latest_per_candle(records)  # the table's view: a candle once, its last version
    for minutes in np.unique(rows["minutes"]).tolist():
        block = rows[rows["minutes"] == minutes].tolist()
        for lo in range(0, len(block), CANDLES_PER_MESSAGE):
            candles = []
            for r in block[lo : lo + CANDLES_PER_MESSAGE]:
                start_ns, volume, o, h, low, c, _, decimals, final, symbol, exchange = r
                div = 10**decimals
                candles.append(
                    {
                        "symbol": symbol.decode(),
                        "exchange": exchange.decode(),
                        "start": ist_text(start_ns),
                        "open": price_text(o, div),
                        "high": price_text(h, div),
                        "low": price_text(low, div),
                        "close": price_text(c, div),
                        "volume": volume,
                        "final": bool(final),
                    }
                )
            out.append((minutes, len(candles), orjson.dumps(candles)))
    return out


class CandlePublisher:
    """Publishes committed candle blocks on MQTT from a thread of its own.

    Parameters
    ----------
    mqtt
        The heartbeat's publisher: its connection carries the candles too (started and
        stopped by the heartbeat's monitor).
    queue_blocks
        Blocks that may wait for the thread before new ones are dropped.

    Attributes
    ----------
    published, dropped
        Candles handed to the broker, and candles dropped (queue full or broker away).
    """

    def __init__(self, mqtt: "MqttPublisher", queue_blocks: int = QUEUE_BLOCKS) -> None:
        self.mqtt = mqtt
        self.published = 0
        self.dropped = 0
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(queue_blocks)
        self._warned = False
        self._lock = threading.Lock()  # drops are counted by the flusher and by the thread
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="candle-events", daemon=True)
            self._thread.start()

    def put(self, records: np.ndarray) -> None:
        """Hand over a committed block; never blocks (a full queue drops it)."""
        try:
            self._queue.put_nowait(records)
        except queue.Full:
            self._drop(len(records), "the queue is full")

    def _drop(self, rows: int, why: str) -> None:
        with self._lock:
            self.dropped += rows
            warn, self._warned = not self._warned, True
        if warn:
            log.warning(
                "MQTT candle events: %s, dropping candles until it recovers (the database "
                "has them)",
                why,
            )

    def _run(self) -> None:
        while (records := self._queue.get()) is not None:
            try:
                self._publish(records)
            except Exception as e:  # a bug here must not end the events; counted, logged
                self._drop(len(records), f"{type(e).__name__}: {e}")

    def _publish(self, records: np.ndarray) -> None:
        if not self.mqtt.connected:
            self._drop(len(records), "the broker is not connected")
            return
        for minutes, count, payload in candle_messages(records):
            topic = self.mqtt.candles_topic.format(interval=minutes)
            if not self.mqtt.publish(topic, payload, CANDLES_QOS):
                self._drop(count, "the broker is not connected")
                continue
            self.published += count
            self._warned = False

    def close(self) -> None:
        """Publish what waits, end the thread, say how many candles were dropped."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self.dropped:
            log.warning(
                "MQTT candle events: %d candles dropped during the run (%d published)",
                self.dropped,
                self.published,
            )


class PublishingSink:
    """A sink whose committed blocks are also handed to a :class:`CandlePublisher`.

    The wrapped sink's :meth:`write` returns only once its block is committed, so an MQTT
    subscriber never sees a candle the table lacks.
    """

    def __init__(self, sink: Sink, events: CandlePublisher) -> None:
        self.sink = sink
        self.events = events

    def open(self, intervals: tuple[int, ...], instruments: Sequence[Instrument]) -> None:
        self.events.start()
        self.sink.open(intervals, instruments)

    def write(self, records: np.ndarray) -> int:
        written = self.sink.write(records)
        self.events.put(records)
        return written

    def close(self) -> None:
        try:
            self.sink.close()
        finally:
            self.events.close()
