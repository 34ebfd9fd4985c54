"""Kite's historical candles as integer-unit numpy rows (SPEC section 6, issue #11).

:class:`KiteHistory` fetches an instrument's candles of a range of IST days through
``kiteconnect``'s ``historical_data``: intervals Kite serves (1, 3, 5, 10, 15, 30 and 60
minutes) as such, any other built from Kite's 1-minute candles with SPEC section 4's
session-anchored buckets (:func:`aggregate`). Requests are split by Kite's per-interval day
limits, go through one rate limiter shared by the whole process (:class:`RequestLimiter`,
Kite allows 3 requests a second) and are retried with backoff on 429, 5xx, timeouts and
connection errors, within a time budget. Prices become integer units of the instrument's
segment divisor exactly (:func:`price_units`).

Failures reach the caller as one-line :class:`~feedengine.errors.FeedError`\\ s: a refused
access token (HTTP 403) as :class:`~feedengine.errors.AuthError`, anything else as
:class:`~feedengine.errors.HistoryError` naming the instrument.

``kiteconnect``, ``requests``, ``tenacity`` and ``pyrate_limiter`` are imported where they
are used: together they take about half a second to import, which commands that never
fetch history must not pay.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from feedengine.brokers.kite.instruments import KITE_API_ROOT
from feedengine.brokers.kite.token import TokenSource, constant
from feedengine.errors import AuthError, HistoryError
from feedengine.instruments import Instrument
from feedengine.sessions import (
    DEFAULT_SESSIONS,
    IST_OFFSET_NS,
    NS_PER_DAY,
    NS_PER_MIN,
    NS_PER_S,
    Session,
)

if TYPE_CHECKING:
    from kiteconnect import KiteConnect
    from tenacity import RetryCallState

log = logging.getLogger(__name__)

#: One candle of Kite's history, prices in integer units of the instrument's segment
#: divisor (``DIVISORS``), as the candle kernel keeps them.
#:
#: Fields
#: ------
#: bucket_start_ns : int64
#:     Unix nanoseconds of the bucket start (Kite stamps a candle with its bucket start).
#: volume : int64
#:     Shares or contracts traded in the bucket (0 for indices).
#: open, high, low, close : int32
#:     Prices in units of ``1/divisor``; int32 as in ``RECORD_DTYPE``, so the rows can be
#:     stored or compared with the engine's without a cast that could wrap.
HISTORY_DTYPE = np.dtype(
    [
        ("bucket_start_ns", np.int64),
        ("volume", np.int64),
        ("open", np.int32),
        ("high", np.int32),
        ("low", np.int32),
        ("close", np.int32),
    ]
)

#: Kite's interval names of the candles it serves, by length in minutes.
KITE_INTERVALS: dict[int, str] = {
    1: "minute",
    3: "3minute",
    5: "5minute",
    10: "10minute",
    15: "15minute",
    30: "30minute",
    60: "60minute",
}
#: Kite's name of its daily candles (stamped at IST midnight; not a minute interval).
DAY_INTERVAL = "day"
#: Most days one request may span, by interval name (Kite Connect's historical API docs
#: and issue #11; a longer range is refused with HTTP 400).
MAX_DAYS_PER_REQUEST: dict[str, int] = {
    "minute": 60,
    "3minute": 100,
    "5minute": 100,
    "10minute": 100,
    "15minute": 200,
    "30minute": 200,
    "60minute": 400,
    DAY_INTERVAL: 2000,
}
#: Kite allows at most this many historical requests per :data:`RATE_PERIOD_S`, per API
#: key (Kite Connect docs, "API rate limit"); more are answered HTTP 429.
RATE_LIMIT = 3
RATE_PERIOD_S = 1.0
#: Added to the period on our side. Kite counts requests when they arrive, we when they
#: leave: a request delayed on its way (a thread descheduled, a slow connect) must not
#: land in the same second of Kite's as the next three. Costs 10 % of the rate.
RATE_MARGIN_S = 0.1
#: How often a caller waiting for the limiter asks it again; only one caller waits at a
#: time, so this is at most 100 wake-ups a second.
RATE_POLL_S = 0.01
#: Timeout of one request (connect, and each read). kiteconnect's default is 7 s; a
#: 60-day answer of minute candles is about 1.5 MB.
REQUEST_TIMEOUT_S = 10.0
#: A request still failing this long after its first attempt is given up (the attempt
#: in flight may add its wait for the limiter and one :data:`REQUEST_TIMEOUT_S`). Two
#: minutes ride out a Kite restart or a minute of 429s without stalling a backfill long.
RETRY_BUDGET_S = 120.0
#: Backoff between attempts: exponential from the first wait, with up to as much again
#: of random jitter, capped (tenacity's ``wait_exponential_jitter``).
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 15.0
#: A price whose scaled value is further than this from a whole unit is finer than its
#: segment's divisor: a wrong divisor, not float noise (which stays below 1e-6 units for
#: any int32 price, see :func:`price_units`).
GRID_TOLERANCE = 1e-3
#: The limiter's key in pyrate-limiter (it keeps one sliding window per key).
_LIMITER_KEY = "kite-historical"
_INT32 = np.iinfo(np.int32)


class RequestLimiter:
    """At most ``limit`` requests in any window of ``period_s`` seconds, across threads.

    A sliding-window log (pyrate-limiter's ``InMemoryBucket``) asked without blocking
    and polled by one waiting caller at a time. pyrate-limiter's own blocking wait is
    not used: it stamps a request with its planned wake-up rather than the time it
    actually goes, and under contention records stamps out of order; with 15 threads on
    a loaded 2-core machine it let 5 requests through in one second (measured). A
    non-blocking attempt is stamped with the clock under the limiter's lock.

    Parameters
    ----------
    limit
        Requests allowed per window.
    period_s
        Window length, seconds.
    """

    def __init__(self, limit: int = RATE_LIMIT, period_s: float = RATE_PERIOD_S + RATE_MARGIN_S):
        from pyrate_limiter import Limiter, Rate

        self.limit = limit
        self.period_s = period_s
        self._limiter = Limiter(Rate(limit, round(period_s * 1000)))
        self._turn = threading.Lock()

    def acquire(self) -> None:
        """Block until one more request may go now; it is counted from now."""
        with self._turn:
            while not self._limiter.try_acquire(_LIMITER_KEY, blocking=False):
                time.sleep(RATE_POLL_S)


_shared_limiter: RequestLimiter | None = None
_shared_lock = threading.Lock()


def shared_limiter() -> RequestLimiter:
    """The process's limiter of historical requests (Kite counts them per API key)."""
    global _shared_limiter
    with _shared_lock:
        if _shared_limiter is None:
            _shared_limiter = RequestLimiter()
        return _shared_limiter


def price_units(prices: np.ndarray, divisor: int) -> np.ndarray:
    """Kite's float prices as int64 units of ``1/divisor``, exactly.

    A price Kite sends has at most as many decimals as its segment's divisor, so
    ``price * divisor`` is a whole number; the float carries an error of at most one ulp,
    and scaling by a power of ten adds one more, so for any price within int32 units the
    product is within 2**-21 of that whole number and rounding it gives the exact units
    (``tests/test_history.py`` checks every divisor on random prices).

    Raises
    ------
    ValueError
        A price off the divisor's grid (by more than :data:`GRID_TOLERANCE` units) or
        outside int32 units; the message shows the first.
    """
    scaled = np.asarray(prices, np.float64) * divisor
    units = np.rint(scaled)
    bad = (np.abs(scaled - units) > GRID_TOLERANCE) | (units < _INT32.min) | (units > _INT32.max)
    if bad.any():
        first = float(np.asarray(prices, np.float64)[bad][0])
        raise ValueError(f"price {first!r} is not a whole number of 1/{divisor} units within int32")
    return units.astype(np.int64)


def to_rows(records: list[dict[str, Any]], divisor: int) -> np.ndarray:
    """kiteconnect's ``historical_data`` records as :data:`HISTORY_DTYPE` rows.

    Raises
    ------
    ValueError
        A record whose fields are not a timestamp, prices on the divisor's grid and a
        whole volume.
    """
    out = np.empty(len(records), HISTORY_DTYPE)
    if not records:
        return out
    try:
        # kiteconnect parsed "2025-07-10T09:15:00+0530" into an aware datetime: whole
        # seconds, so its float timestamp is exact.
        out["bucket_start_ns"] = [round(r["date"].timestamp()) * NS_PER_S for r in records]
        prices = np.array([(r["open"], r["high"], r["low"], r["close"]) for r in records], float)
        out["volume"] = [int(r["volume"]) for r in records]
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"a candle that is not (time, open, high, low, close, volume): {e}"
        ) from None
    units = price_units(prices, divisor)
    for i, name in enumerate(("open", "high", "low", "close")):
        out[name] = units[:, i]
    return out


def aggregate(minute_rows: np.ndarray, minutes: int, session: Session) -> np.ndarray:
    """``minutes``-minute candles built from 1-minute candles with SPEC section 4's buckets.

    A bucket starts at ``open + floor((t - open) / L) * L`` on the candle's IST date (the
    last of a session may be shorter); its open is the first minute's open, its close the
    last minute's close, high and low the extremes, volume the sum. Minutes outside the
    session make no candle, as ticks outside it make none in the engine.

    Parameters
    ----------
    minute_rows
        :data:`HISTORY_DTYPE` 1-minute candles of one instrument, any order, no duplicates.
    minutes
        Interval length L.
    session
        The instrument's session.
    """
    rows = np.sort(minute_rows, order="bucket_start_ns")
    t = rows["bucket_start_ns"]
    midnight = (t + IST_OFFSET_NS) // NS_PER_DAY * NS_PER_DAY - IST_OFFSET_NS
    open_ns = midnight + session.open_s * NS_PER_S
    inside = (t >= open_ns) & (t < midnight + session.close_s * NS_PER_S)
    rows, t, open_ns = rows[inside], t[inside], open_ns[inside]
    length = minutes * NS_PER_MIN
    bucket = open_ns + (t - open_ns) // length * length
    out = np.empty(0 if not len(rows) else 1 + np.count_nonzero(np.diff(bucket)), HISTORY_DTYPE)
    if not len(rows):
        return out
    first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    last = np.r_[first[1:], len(rows)] - 1
    out["bucket_start_ns"] = bucket[first]
    out["open"] = rows["open"][first]
    out["close"] = rows["close"][last]
    out["high"] = np.maximum.reduceat(rows["high"], first)
    out["low"] = np.minimum.reduceat(rows["low"], first)
    out["volume"] = np.add.reduceat(rows["volume"], first)
    return out


def day_chunks(first_day: date, last_day: date, days: int) -> Iterator[tuple[date, date]]:
    """``[first_day, last_day]`` in consecutive spans of at most ``days`` days."""
    start = first_day
    while start <= last_day:
        end = min(start + timedelta(days=days - 1), last_day)
        yield start, end
        start = end + timedelta(days=1)


class KiteHistory:
    """Kite's historical candles of instruments, through ``kiteconnect``.

    Safe to use from several threads at once; every instance shares the process's
    :func:`shared_limiter` unless given another.

    Parameters
    ----------
    api_key
        Kite Connect's API key.
    access_token
        The access token, or a token source asked before every request (so a token
        renewed during the day serves the history too).
    root
        Kite's REST root (``KITE_API_ROOT``; the local Kite server's ``root`` in tests).
    sessions
        Trading sessions by exchange (``SESSIONS``; empty: the defaults): the buckets of
        intervals built from minute candles.
    limiter
        Rate limiter of the requests (tests); default the process's shared one.
    timeout_s, retry_budget_s, backoff_first_s, backoff_max_s
        Overrides of :data:`REQUEST_TIMEOUT_S`, :data:`RETRY_BUDGET_S`,
        :data:`BACKOFF_FIRST_S` and :data:`BACKOFF_MAX_S` (tests).
    """

    def __init__(
        self,
        api_key: str,
        access_token: str | TokenSource,
        root: str | None = None,
        *,
        sessions: Mapping[str, Session] | None = None,
        limiter: RequestLimiter | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        retry_budget_s: float = RETRY_BUDGET_S,
        backoff_first_s: float = BACKOFF_FIRST_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.api_key = api_key
        self._token = access_token if callable(access_token) else constant(access_token)
        self.root = root or KITE_API_ROOT
        self.sessions = sessions or DEFAULT_SESSIONS
        self.limiter = limiter or shared_limiter()
        self.timeout_s = timeout_s
        self.retry_budget_s = retry_budget_s
        self.backoff_first_s = backoff_first_s
        self.backoff_max_s = backoff_max_s
        # kiteconnect keeps a requests.Session per client, which is not thread-safe.
        self._local = threading.local()
        self._sent = itertools.count()
        #: Requests sent so far, retries included (what Kite's rate limit counts).
        self.requests = 0

    def candles(
        self, instrument: Instrument, minutes: int, first_day: date, last_day: date
    ) -> np.ndarray:
        """Every ``minutes``-minute candle of ``instrument`` on IST days ``first_day`` to
        ``last_day`` (both included), oldest first.

        Days without trading (weekends, holidays) have no rows.

        Returns
        -------
        numpy.ndarray
            :data:`HISTORY_DTYPE` rows.

        Raises
        ------
        AuthError
            Kite refused the credentials (HTTP 403).
        HistoryError
            Kite refused the request (an instrument it has no history for ...), its answer
            cannot be read, or it kept failing for :attr:`retry_budget_s`.
        ValueError
            ``minutes`` is not positive or the days are in the wrong order.
        """
        if minutes < 1 or first_day > last_day:
            raise ValueError(
                f"need a positive interval and first_day <= last_day, not {minutes} minutes "
                f"from {first_day} to {last_day}"
            )
        native = minutes in KITE_INTERVALS
        interval = KITE_INTERVALS[minutes if native else 1]
        divisor = 10**instrument.decimals
        parts = [
            self._fetch(instrument, interval, divisor, start, end)
            for start, end in day_chunks(first_day, last_day, MAX_DAYS_PER_REQUEST[interval])
        ]
        rows = np.concatenate(parts)
        if native:
            return np.sort(rows, order="bucket_start_ns")
        session = self.sessions[instrument.market]
        return aggregate(rows, minutes, session)

    # --- one request ------------------------------------------------------------------

    def _kite(self) -> KiteConnect:
        """This thread's client, carrying the token its source gives now."""
        kite: KiteConnect | None = getattr(self._local, "kite", None)
        if kite is None:
            from kiteconnect import KiteConnect

            kite = self._local.kite = KiteConnect(
                self.api_key, root=self.root, timeout=self.timeout_s
            )
        kite.set_access_token(self._token())
        return kite

    def _fetch(
        self,
        instrument: Instrument,
        interval: str,
        divisor: int,
        first_day: date,
        last_day: date,
    ) -> np.ndarray:
        import requests
        from kiteconnect import exceptions as kex
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception,
            stop_before_delay,
            wait_exponential_jitter,
        )

        what = (
            f"{instrument.exchange}:{instrument.tradingsymbol} (token "
            f"{instrument.key}) {interval} candles {first_day}..{last_day}"
        )
        retrying = Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_before_delay(self.retry_budget_s),
            wait=wait_exponential_jitter(
                multiplier=self.backoff_first_s, max=self.backoff_max_s, jitter=self.backoff_first_s
            ),
            before_sleep=lambda state: _log_retry(what, state),
        )
        try:
            records = retrying(self._request, instrument.key, interval, first_day, last_day)
        except RetryError as e:
            last = e.last_attempt
            raise HistoryError(
                f"Kite's historical API kept failing for {what}: gave up after "
                f"{last.attempt_number} attempts in {self.retry_budget_s:g} s; last: "
                f"{_describe(last.exception())}"
            ) from None
        except (kex.TokenException, kex.PermissionException) as e:
            raise AuthError(
                f"Kite refused the access token for historical data ({_describe(e)}); "
                "renew KITE_ACCESS_TOKEN"
            ) from None
        except kex.KiteException as e:
            raise HistoryError(f"Kite refused {what}: {_describe(e)}") from None
        except requests.RequestException as e:
            raise HistoryError(f"cannot ask {self.root} for {what}: {_describe(e)}") from None
        # kiteconnect reading the answer: a missing Content-Type (KeyError), bad rows.
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise HistoryError(f"Kite's answer for {what} cannot be read: {e}") from None
        try:
            return to_rows(records, divisor)
        except ValueError as e:
            raise HistoryError(f"Kite's answer for {what} cannot be read: {e}") from None

    def _request(
        self, token: int, interval: str, first_day: date, last_day: date
    ) -> list[dict[str, Any]]:
        self.limiter.acquire()
        self.requests = next(self._sent) + 1
        records: list[dict[str, Any]] = self._kite().historical_data(
            token, f"{first_day} 00:00:00", f"{last_day} 23:59:59", interval
        )
        return records


def _transient(e: BaseException) -> bool:
    """Worth another attempt: rate limited, a server error, a timeout, a lost connection."""
    import requests
    from kiteconnect.exceptions import KiteException

    if isinstance(e, KiteException):
        return e.code == 429 or e.code >= 500
    return isinstance(
        e,
        requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError,
    )


def _describe(e: BaseException | None) -> str:
    """One line for an exception: kiteconnect's carry the HTTP status."""
    code = getattr(e, "code", None)
    text = " ".join(str(e).split()) or type(e).__name__
    return f"HTTP {code}: {text}" if isinstance(code, int) else f"{type(e).__name__}: {text}"


def _log_retry(what: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    # 429s are expected when other processes share the API key; the rest are news.
    level = logging.DEBUG if getattr(error, "code", None) == 429 else logging.WARNING
    log.log(
        level,
        "%s: %s; attempt %d, retrying in %.1f s",
        what,
        _describe(error),
        state.attempt_number,
        wait,
    )
