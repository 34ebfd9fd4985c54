"""Heartbeats and the periodic status line (SPEC section 7).

:class:`Monitor` owns one thread: every second it samples the pipeline's counters (the tick
rate and the late ticks are differences over trailing windows of these samples, the same
whoever asks); every ``HEARTBEAT_INTERVAL`` it publishes a heartbeat on
``{prefix}/{service}/heartbeat`` through :class:`~feedengine.mqtt.MqttPublisher`; every
:data:`LOG_STATUS_S` it logs a one-line status. The status is ``degraded`` while the
database, a Kite connection or the recording has failed, ticks came too late for their
candle in the last minute, or the stream lags more than the grace; each of the last two
also logs a warning, at most once a minute. A cycle that fails is one log line; the thread
goes on and the count is reported.
"""

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from feedengine import __version__

if TYPE_CHECKING:  # paho is loaded only with a broker
    from feedengine.mqtt import MqttPublisher

log = logging.getLogger(__name__)

#: Seconds between status lines in the log.
LOG_STATUS_S = 60.0
#: Seconds between the thread's samples of the pipeline's counters.
SAMPLE_S = 1.0
#: Trailing window of ``ticks_per_s`` (seconds): several of Kite's ~1 s frame bursts, so
#: the rate is smooth, yet a stall shows within one default heartbeat.
RATE_WINDOW_S = 10.0
#: Trailing window of the late-tick count that degrades the status (seconds).
LATE_WINDOW_S = 60.0
#: The same warning (late ticks, lag, a failing heartbeat cycle) at most this often (s).
WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class _Sample:
    """The counters the windows are differences of, at one instant."""

    t: float
    ticks: int
    late: dict[str, int]


class _Throttle:
    """Lets a message through at most once per ``every_s`` seconds (per key)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def __call__(self, key: str, now: float) -> bool:
        if now - self._last.get(key, -self.every_s) < self.every_s:
            return False
        self._last[key] = now
        return True


class Monitor:
    """The status thread: samples, heartbeats and the periodic log line.

    Parameters
    ----------
    snapshot
        Returns the pipeline's counters (see ``Pipeline.status``).
    interval_s
        Seconds between heartbeats (``HEARTBEAT_INTERVAL``).
    publisher
        Where heartbeats go; None when no broker is configured.
    service_id
        Named in every heartbeat.
    log_interval_s
        Seconds between status lines in the log.
    sample_s
        Seconds between samples of the counters.

    Attributes
    ----------
    errors, error
        How many heartbeat cycles failed, and the last failure; :meth:`stop` reports
        them, and every heartbeat carries the count.
    """

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        interval_s: float,
        publisher: "MqttPublisher | None",
        service_id: str,
        log_interval_s: float = LOG_STATUS_S,
        sample_s: float = SAMPLE_S,
    ) -> None:
        self.snapshot = snapshot
        self.interval_s = interval_s
        self.publisher = publisher
        self.service_id = service_id
        self.log_interval_s = log_interval_s
        self.sample_s = sample_s
        self.started = time.monotonic()
        self.errors = 0
        self.error: Exception | None = None
        self._samples: collections.deque[_Sample] = collections.deque()
        self._warn = _Throttle(WARN_EVERY_S)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        if self.publisher is None:
            log.warning("MQTT: no broker configured (MQTT_BROKER); heartbeats are off")
        else:
            self.publisher.start()
        self._thread.start()

    def sample(self, snap: dict[str, Any], now: float) -> None:
        """Add a sample of the counters (the thread does, every ``sample_s``)."""
        self._samples.append(_Sample(now, snap["ticks_total"], dict(snap.get("late_ticks", {}))))
        while now - self._samples[0].t > LATE_WINDOW_S + self.sample_s:
            self._samples.popleft()

    def _since(self, window_s: float) -> _Sample | None:
        """The oldest sample within ``window_s`` of the newest one (None: fewer than two)."""
        if len(self._samples) < 2:
            return None
        newest = self._samples[-1]
        return next(s for s in self._samples if newest.t - s.t <= window_s + self.sample_s / 2)

    def payload(self) -> dict[str, Any]:
        """The heartbeat: status and problems, uptime, ticks, rate, candles, lag, links."""
        snap = self.snapshot()
        now = time.monotonic()
        newest = self._samples[-1] if self._samples else None
        first = self._since(RATE_WINDOW_S)
        rate = 0.0
        if newest is not None and first is not None and newest.t > first.t:
            rate = (newest.ticks - first.ticks) / (newest.t - first.t)
        first = self._since(LATE_WINDOW_S)
        late = {
            k: v - (first.late.get(k, 0) if first is not None else 0)
            for k, v in snap.get("late_ticks", {}).items()
        }
        problems = self._problems(snap, late)
        status = snap["state"]
        if status == "running" and problems:
            status = "degraded"
        snap["mqtt"] = self.publisher.state if self.publisher is not None else "off"
        return {
            "service_id": self.service_id,
            "version": __version__,
            "status": status,
            "problems": problems,
            "timestamp": time.time(),
            "uptime_s": round(now - self.started, 1),
            "ticks_per_s": round(rate, 1),
            "late_ticks_last_minute": late,
            "heartbeat_errors": self.errors,
            **snap,
        }

    @staticmethod
    def _problems(snap: dict[str, Any], late: dict[str, int]) -> list[str]:
        """Why the status is degraded (empty: it is not)."""
        out = []
        if not snap["database_ok"]:
            out.append("database")
        if any(c["state"] != "connected" for c in snap.get("connections", [])):
            out.append("connection")
        if (snap.get("recording") or {}).get("state") == "failed":
            out.append("recording")
        if (snap.get("history") or {}).get("stopped"):
            out.append("history")
        if any(late.values()):
            out.append("late ticks")
        lag = snap.get("staleness_s")
        grace = snap.get("grace_s")
        if lag is not None and grace is not None and lag["p50"] > grace:
            out.append("lag")
        return out

    def _run(self) -> None:
        next_sample = next_beat = next_log = time.monotonic()
        while not self._stop.wait(max(0.0, next_sample - time.monotonic())):
            now = time.monotonic()
            next_sample = now + self.sample_s
            try:
                self._cycle(now, beat=now >= next_beat, log_line=now >= next_log)
            except Exception as e:  # counted and reported; the feed and the thread go on
                self._failed(e, now)
            if now >= next_beat:
                next_beat = now + self.interval_s
            if now >= next_log:
                next_log = now + self.log_interval_s

    def _cycle(self, now: float, beat: bool, log_line: bool) -> None:
        self.sample(self.snapshot(), now)
        payload = self.payload()
        self._warnings(payload, now)
        if beat and self.publisher is not None:
            if payload["status"] != self.publisher.status:
                self.publisher.set_status(payload["status"])
            self.publisher.heartbeat(payload)
        if log_line:
            log.info(status_line(payload))

    def _warnings(self, p: dict[str, Any], now: float) -> None:
        late = {k: v for k, v in p["late_ticks_last_minute"].items() if v}
        if late and self._warn("late", now):
            log.warning(
                "ticks arrived after their candle had closed in the last minute (%s): "
                "those candles miss them; the feed or this machine is falling behind",
                ", ".join(f"{k} {v:,}" for k, v in late.items()),
            )
        if "lag" in p["problems"] and self._warn("lag", now):
            lag = p["staleness_s"]
            log.warning(
                "ticks arrive %.1f s after their exchange time (median over the last "
                "minute, max %.1f s), beyond the %.1f s grace: candles are losing ticks",
                lag["p50"],
                lag["max"],
                p["grace_s"],
            )

    def _failed(self, e: Exception, now: float) -> None:
        self.errors += 1
        self.error = e
        if self._warn(f"cycle {type(e).__name__}: {e}", now):
            log.error(
                "heartbeat cycle failed (%s: %s); the feed runs on, the next cycle retries",
                type(e).__name__,
                e,
            )

    def stopping(self) -> None:
        """Publish ``stopping`` (graceful shutdown has begun)."""
        if self.publisher is not None:
            self.publisher.set_status("stopping", wait=True)

    def stop(self) -> None:
        """End the thread; publish ``offline`` and disconnect; report failed cycles."""
        self._stop.set()
        self._thread.join()
        if self.publisher is not None:
            self.publisher.stop()
        if self.error is not None:
            log.warning(
                "heartbeat: %d cycle(s) failed during the run; the last: %s: %s",
                self.errors,
                type(self.error).__name__,
                self.error,
            )


def status_line(p: dict[str, Any]) -> str:
    """The periodic log line."""
    lag = p.get("seconds_since_last_tick")
    conns = ", ".join(f"{c['index']}:{c['state']}" for c in p.get("connections", []))
    stale = p.get("staleness_s")
    late = sum(p.get("late_ticks_last_minute", {}).values())
    recording = p.get("recording")
    return (
        f"status {p['status']}"
        + (f" ({', '.join(p['problems'])})" if p.get("problems") else "")
        + f": {p['ticks_per_s']:,.0f} ticks/s, "
        f"{p['ticks_total']:,} ticks, {p['candles_written']:,} candles written, "
        f"{p['rows_pending']:,} pending, {p['rows_spilled']:,} spilled, "
        f"last tick {'-' if lag is None else f'{lag:.1f} s ago'}"
        + (f", lag p50 {stale['p50']:.1f} s max {stale['max']:.1f} s" if stale else "")
        + f", {late:,} late ticks in the last minute"
        + (f", connections {conns}" if conns else "")
        + (f", recording {recording['state']}" if recording else "")
        + (f", {p['heartbeat_errors']} heartbeat errors" if p.get("heartbeat_errors") else "")
        + (history_text(p["history"]) if p.get("history") else "")
    )


def history_text(h: dict[str, Any]) -> str:
    """What the historian did, for the status line."""
    if h.get("stopped"):
        return ", history stopped"
    return (
        f", history: {h['gaps_repaired']} repairs ({h['candles_filled']:,} candles filled), "
        f"{h['sessions_reconciled']} sessions reconciled ({h['candles_corrected']:,} candles)"
        + (f", {h['failures']} failures" if h["failures"] else "")
    )
