# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Multi-interval OHLC candle kernel (SPEC section 4), compiled.

One :c:type:`Bar` per instrument slot and interval is updated in place from lean tick rows
(``KTick``); completed candles go to a preallocated single-producer/single-consumer ring of
:c:type:`CandleRow` that the flusher thread drains. When the ring lacks room the kernel stops
and returns how far it got: the caller waits for the flusher (back-pressure), nothing is
overwritten. Event-time rules, sessions, pre-open prices, the extremes between snapshots,
volume baselines, late ticks and the closing clock follow SPEC section 4 exactly;
``feedengine.reference.candles`` states the same rules in plain Python and the tests hold the
two equal.
"""
from libc.stdint cimport INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, int32_t, int64_t, uint16_t
from libc.string cimport memcpy

cimport numpy as cnp

from feedtypes cimport (BAR_EMITTED, BAR_NONE, BAR_OPEN, Bar, CandleRow, KTick, SlotState,
                        load_acquire, store_release)

import numpy as np

from feedengine.dtypes import BAR_DTYPE, CANDLE_ROW_DTYPE, KTICK_DTYPE, SLOT_DTYPE

cnp.import_array()

cdef enum:
    # A few intervals per instrument; bounds a per-kernel C array, not the data.
    MAX_INTERVALS = 32

cdef int64_t NS_PER_S = 1_000_000_000
cdef int64_t NS_PER_DAY = 86_400 * NS_PER_S
# IST = UTC+05:30, no daylight saving.
cdef int64_t IST_OFFSET_NS = (5 * 3600 + 30 * 60) * NS_PER_S

cdef enum:
    # Indices into the counters array, named in COUNTER_NAMES.
    K_TICKS = 0          # ticks of known instruments
    K_UNKNOWN = 1        # ticks of instruments not in the instrument map (slot -1)
    K_PREOPEN = 2        # ticks before the session open
    K_AFTER_CLOSE = 3    # ticks at or after the session close
    K_ROWS = 4           # rows emitted complete
    N_COUNTERS = 5

COUNTER_NAMES = ("ticks", "unknown", "preopen", "after_close", "rows")
# Per-instrument state a checkpoint carries over (the session window is recomputed).
SAVED_SLOT_FIELDS = ("preopen_day", "preopen_price", "extremes_day_ns", "day_high", "day_low")


cdef inline int64_t floor_div(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef inline int64_t ist_day(int64_t t_ns) noexcept nogil:
    return floor_div(t_ns + IST_OFFSET_NS, NS_PER_DAY)


cdef class CandleKernel:
    """Per-instrument, per-interval OHLC state, a candle ring and the closing clock.

    Parameters
    ----------
    keys
        Instrument keys; slot ``i`` is ``keys[i]``. Must be distinct. The decoders resolve
        slots; the kernel keeps the keys only so that a checkpoint finds its slots again.
    open_s, close_s
        Each instrument's session, seconds after IST midnight.
    intervals
        Candle lengths in minutes, in the order rows report them (``CandleRow.interval``).
    grace_ns
        How long after a bucket's end its ticks are still accepted (SPEC: 2 s).
    ring_capacity
        Rows the candle ring holds; rounded up to a power of two.
    """

    cdef readonly object slots, bars, ring, counters, late, intervals, interval_ns
    cdef readonly int n_slots, n_intervals
    cdef readonly int64_t grace_ns
    cdef SlotState* _slots
    cdef Bar* _bars
    cdef CandleRow* _ring
    cdef int64_t* _counters
    cdef int64_t* _late
    # Per slot, the event-time span of its late ticks since take_late(); not checkpointed.
    cdef object _late_span_first, _late_span_last
    cdef int64_t* _lfirst
    cdef int64_t* _llast
    cdef int64_t _iv_ns[MAX_INTERVALS]
    cdef int64_t _ring_mask
    cdef int64_t _head, _tail
    cdef public int64_t clock_ns
    cdef int64_t _next_deadline

    def __init__(self, keys, open_s, close_s, intervals, int64_t grace_ns=2 * 1_000_000_000,
                 Py_ssize_t ring_capacity=1 << 16):
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        intervals = [int(m) for m in intervals]
        if len(set(keys.tolist())) != len(keys):  # np.unique imports numpy.ma: 10 ms at start
            raise ValueError("instrument keys must be distinct")
        if not 1 <= len(intervals) <= MAX_INTERVALS:
            raise ValueError(f"between 1 and {MAX_INTERVALS} intervals, got {len(intervals)}")
        if min(intervals) < 1 or len(set(intervals)) != len(intervals):
            raise ValueError(f"intervals must be distinct positive minutes, got {intervals}")
        if grace_ns < 0:
            raise ValueError("grace must not be negative")
        self.n_slots = len(keys)
        self.n_intervals = len(intervals)
        self.intervals = tuple(intervals)
        self.interval_ns = tuple(m * 60 * NS_PER_S for m in intervals)
        for j, ns in enumerate(self.interval_ns):
            self._iv_ns[j] = ns
        self.grace_ns = grace_ns

        self.slots = np.zeros(self.n_slots, SLOT_DTYPE)
        self.slots["key"] = keys
        self.slots["open_s"] = open_s
        self.slots["close_s"] = close_s
        self.slots["day_start_ns"] = INT64_MIN
        self.slots["preopen_day"] = -1
        self.slots["extremes_day_ns"] = INT64_MIN
        if (self.slots["close_s"] <= self.slots["open_s"]).any():
            raise ValueError("every session must close after it opens")
        self.bars = np.zeros(self.n_slots * self.n_intervals, BAR_DTYPE)
        self.bars["base"] = -1
        self.bars["last"] = -1
        self.bars["next_base"] = -1
        capacity = 1
        while capacity < max(ring_capacity, 2 * self.n_intervals):
            capacity *= 2
        self.ring = np.zeros(capacity, CANDLE_ROW_DTYPE)
        self._ring_mask = capacity - 1
        self.counters = np.zeros(N_COUNTERS, np.int64)
        self.late = np.zeros(self.n_intervals, np.int64)
        self._late_span_first = np.full(self.n_slots, INT64_MAX, np.int64)
        self._late_span_last = np.full(self.n_slots, INT64_MIN, np.int64)
        self._bind()
        self._head = self._tail = 0
        self.clock_ns = INT64_MIN
        self._next_deadline = INT64_MAX

    cdef void _bind(self):
        self._slots = <SlotState*>cnp.PyArray_DATA(self.slots)
        self._bars = <Bar*>cnp.PyArray_DATA(self.bars)
        self._ring = <CandleRow*>cnp.PyArray_DATA(self.ring)
        self._counters = <int64_t*>cnp.PyArray_DATA(self.counters)
        self._late = <int64_t*>cnp.PyArray_DATA(self.late)
        self._lfirst = <int64_t*>cnp.PyArray_DATA(self._late_span_first)
        self._llast = <int64_t*>cnp.PyArray_DATA(self._late_span_last)

    # --- the ring -------------------------------------------------------------------

    cdef inline int64_t _free(self) noexcept nogil:
        return (self._ring_mask + 1) - (self._head - load_acquire(&self._tail))

    cdef inline void _emit(self, Py_ssize_t slot, int j, Bar* b, bint final) noexcept nogil:
        cdef CandleRow* r = self._ring + (self._head & self._ring_mask)
        r.bucket_start_ns = b.start_ns
        r.volume = b.last - b.base if b.last >= 0 else 0
        r.slot = <int32_t>slot
        r.open = b.open
        r.high = b.high
        r.low = b.low
        r.close = b.close
        r.interval = <uint16_t>j
        r.final = final
        store_release(&self._head, self._head + 1)
        if final:
            self._counters[K_ROWS] += 1

    @property
    def pending(self):
        """Rows in the ring not yet drained."""
        return load_acquire(&self._head) - load_acquire(&self._tail)

    @property
    def capacity(self):
        return self._ring_mask + 1

    def drain(self, cnp.ndarray out):
        """Move up to ``len(out)`` rows from the ring into ``out``; return how many.

        Safe to call from one consumer thread while the kernel runs in another.
        """
        if out.dtype != CANDLE_ROW_DTYPE or not cnp.PyArray_IS_C_CONTIGUOUS(out):
            raise TypeError("out must be a contiguous CANDLE_ROW_DTYPE array")
        cdef CandleRow* dst = <CandleRow*>cnp.PyArray_DATA(out)
        cdef int64_t cap = out.shape[0], head, tail, n, first, k
        with nogil:
            head = load_acquire(&self._head)
            tail = self._tail
            n = min(head - tail, cap)
            k = 0
            while k < n:
                first = min(n - k, (self._ring_mask + 1) - ((tail + k) & self._ring_mask))
                memcpy(dst + k, self._ring + ((tail + k) & self._ring_mask),
                       first * sizeof(CandleRow))
                k += first
            store_release(&self._tail, tail + n)
        return n

    # --- ticks ------------------------------------------------------------------------

    cdef inline void _set_day(self, SlotState* s, int64_t t) noexcept nogil:
        cdef int64_t day = ist_day(t)
        s.day_start_ns = day * NS_PER_DAY - IST_OFFSET_NS
        s.open_ns = s.day_start_ns + s.open_s * NS_PER_S
        s.close_ns = s.day_start_ns + s.close_s * NS_PER_S

    cdef void _out_of_session(self, Py_ssize_t slot, SlotState* s, const KTick* k,
                              int64_t t) noexcept nogil:
        cdef int j
        cdef int64_t day
        if t < s.open_ns:
            self._counters[K_PREOPEN] += 1
            if k.auction:
                s.preopen_day = ist_day(t)
                s.preopen_price = k.price
        else:
            self._counters[K_AFTER_CLOSE] += 1
        if k.has_volume:
            for j in range(self.n_intervals):
                self._bars[slot * self.n_intervals + j].next_base = k.volume

    cdef inline void _note_late(self, int32_t slot, int64_t t) noexcept nogil:
        if t < self._lfirst[slot]:
            self._lfirst[slot] = t
        if t > self._llast[slot]:
            self._llast[slot] = t

    cdef inline void _accept(self, Bar* b, const KTick* k) noexcept nogil:
        """Add an accepted tick to the bar it belongs to (already started)."""
        cdef int64_t cum
        if k.price > b.high:
            b.high = k.price
        if k.price < b.low:
            b.low = k.price
        b.close = k.price
        if k.has_volume:
            cum = k.volume
            if b.base < 0 or cum < b.base:
                b.base = cum
            b.last = cum
            b.next_base = cum

    cdef void _day_range(self, Py_ssize_t slot, SlotState* s, const KTick* k,
                         int64_t t) noexcept nogil:
        """Fold a placed tick's day range into its date's extremes; widen its candles.

        Called only for a tick whose range goes beyond the extremes or whose date has none
        yet. A bar accepted the tick exactly when its bucket now holds ``t`` and the tick
        came before the bucket's end + grace.
        """
        cdef Bar* b
        cdef int j
        cdef int32_t hi = INT32_MIN, lo = INT32_MAX
        cdef bint first = s.extremes_day_ns != s.day_start_ns
        if first:
            if s.extremes_day_ns > s.day_start_ns:
                # A tick of an earlier date than the extremes held: every interval has moved
                # past its bucket or closed it, so it is late everywhere, and so is any later
                # tick of its date: that date's extremes can no longer widen a candle.
                return
            s.extremes_day_ns = s.day_start_ns
            s.day_high = INT32_MIN
            s.day_low = INT32_MAX
        if k.day_high > s.day_high:
            s.day_high = hi = k.day_high
        if k.day_low != 0 and k.day_low < s.day_low:
            s.day_low = lo = k.day_low
        for j in range(self.n_intervals):
            b = self._bars + slot * self.n_intervals + j
            if (b.state == BAR_NONE or not b.start_ns <= t < b.end_ns
                    or k.recv_ns >= b.end_ns + self.grace_ns):
                continue
            # The date's first range widens only the session's first bucket.
            if first and b.start_ns != s.open_ns:
                continue
            if hi > b.high:
                b.high = hi
            if lo < b.low:
                b.low = lo

    cdef void _tick(self, const KTick* k) noexcept nogil:
        cdef int32_t slot = k.slot
        cdef SlotState* s
        cdef Bar* b
        cdef int j
        cdef int64_t t, start, end, length
        cdef bint first_of_session
        if slot < 0 or slot >= self.n_slots:
            self._counters[K_UNKNOWN] += 1
            return
        self._counters[K_TICKS] += 1
        s = self._slots + slot
        t = k.event_ns
        if t < s.day_start_ns or t >= s.day_start_ns + NS_PER_DAY:
            self._set_day(s, t)
        if t < s.open_ns or t >= s.close_ns:
            self._out_of_session(slot, s, k, t)
            return
        for j in range(self.n_intervals):
            b = self._bars + slot * self.n_intervals + j
            if b.state != BAR_NONE and b.start_ns <= t < b.end_ns:
                # Fast path: the tick falls in the current bucket.
                if k.recv_ns >= b.end_ns + self.grace_ns:
                    self._late[j] += 1
                    self._note_late(slot, t)
                    continue
                self._accept(b, k)
                if b.state == BAR_EMITTED:
                    b.state = BAR_OPEN
                    self._next_deadline = min(self._next_deadline, b.end_ns + self.grace_ns)
                continue
            length = self._iv_ns[j]
            start = s.open_ns + ((t - s.open_ns) // length) * length
            end = min(start + length, s.close_ns)
            if k.recv_ns >= end + self.grace_ns or (b.state != BAR_NONE and start < b.start_ns):
                self._late[j] += 1
                self._note_late(slot, t)
                continue
            if b.state == BAR_OPEN:
                self._emit(slot, j, b, True)
            first_of_session = b.state == BAR_NONE or b.start_ns < s.open_ns
            b.start_ns = start
            b.end_ns = end
            b.open = b.high = b.low = b.close = k.price
            b.base = b.next_base
            b.last = -1
            b.state = BAR_OPEN
            if first_of_session and s.preopen_day == ist_day(t):
                b.open = s.preopen_price
                if s.preopen_price > b.high:
                    b.high = s.preopen_price
                if s.preopen_price < b.low:
                    b.low = s.preopen_price
            if k.has_volume:
                if b.base < 0 or k.volume < b.base:
                    b.base = k.volume
                b.last = k.volume
                b.next_base = k.volume
            self._next_deadline = min(self._next_deadline, end + self.grace_ns)
        # Rarely true, so checked once after the loop: checked per interval inside it, the
        # day range cost the kernel 10 % of its time, here 4 % (best of 20, 1.5 M ticks).
        if k.has_day_range and (k.day_high > s.day_high or (k.day_low < s.day_low and k.day_low)
                                or s.extremes_day_ns != s.day_start_ns):
            self._day_range(slot, s, k, t)

    cdef bint _sweep(self) noexcept nogil:
        """Emit every open bar whose end + grace the clock has passed; False if the ring filled."""
        cdef Py_ssize_t i, n = <Py_ssize_t>self.n_slots * self.n_intervals
        cdef int64_t deadline, next_deadline = INT64_MAX
        cdef Bar* b
        for i in range(n):
            b = self._bars + i
            if b.state != BAR_OPEN:
                continue
            deadline = b.end_ns + self.grace_ns
            if deadline <= self.clock_ns:
                if self._free() < 1:
                    return False
                self._emit(i // self.n_intervals, i % self.n_intervals, b, True)
                b.state = BAR_EMITTED
            elif deadline < next_deadline:
                next_deadline = deadline
        self._next_deadline = next_deadline
        return True

    def process(self, cnp.ndarray ticks, Py_ssize_t start=0, Py_ssize_t end=-1):
        """Apply ``ticks[start:end]`` (``KTICK_DTYPE``) in order; return the next index.

        Returns less than ``end`` when the ring has no room: drain it and call again from
        the returned index. The clock advances to each tick's ``recv_ns``.
        """
        if ticks.dtype is not KTICK_DTYPE and ticks.dtype != KTICK_DTYPE:
            raise TypeError(f"ticks must have dtype KTICK_DTYPE, not {ticks.dtype}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(ticks) or ticks.ndim != 1:
            raise ValueError("ticks must be one-dimensional and contiguous")
        if end < 0:
            end = ticks.shape[0]
        if not 0 <= start <= end <= ticks.shape[0]:
            raise IndexError("tick range outside the array")
        cdef const KTick* rows = <const KTick*>cnp.PyArray_DATA(ticks)
        cdef Py_ssize_t i = start
        with nogil:
            while i < end:
                if rows[i].recv_ns > self.clock_ns:
                    self.clock_ns = rows[i].recv_ns
                if self.clock_ns >= self._next_deadline and not self._sweep():
                    break
                # A tick emits at most one row per interval; never overwrite undrained rows.
                if self._free() < self.n_intervals:
                    break
                self._tick(rows + i)
                i += 1
        return i

    def advance_clock(self, int64_t now_ns):
        """Move the clock to ``now_ns`` (if later) and close due candles.

        Returns False when the ring filled first: drain it and call again.
        """
        cdef bint done = True
        with nogil:
            if now_ns > self.clock_ns:
                self.clock_ns = now_ns
            if self.clock_ns >= self._next_deadline:
                done = self._sweep()
        return done

    def finalize(self):
        """Emit every open candle as complete (end of replay, shutdown).

        Returns False when the ring filled first: drain it and call again.
        """
        cdef Py_ssize_t i, n = <Py_ssize_t>self.n_slots * self.n_intervals
        cdef bint done = True
        with nogil:
            for i in range(n):
                if self._bars[i].state == BAR_OPEN:
                    if self._free() < 1:
                        done = False
                        break
                    self._emit(i // self.n_intervals, i % self.n_intervals, self._bars + i, True)
                    self._bars[i].state = BAR_EMITTED
            if done:
                self._next_deadline = INT64_MAX
        return done

    def snapshot_open(self, Py_ssize_t start=0):
        """Emit open candles as in-progress rows (``final = 0``) without closing them.

        For a graceful stop that will resume: the rows reach the database now and are
        overwritten when the candles complete. Resumable: returns the bar index to continue
        from, which is ``n_slots * n_intervals`` when done.
        """
        cdef Py_ssize_t i = start, n = <Py_ssize_t>self.n_slots * self.n_intervals
        with nogil:
            while i < n:
                if self._bars[i].state == BAR_OPEN:
                    if self._free() < 1:
                        break
                    self._emit(i // self.n_intervals, i % self.n_intervals, self._bars + i, False)
                i += 1
        return i

    # --- gaps ---------------------------------------------------------------------------

    def mark_gap(self, slots):
        """These slots received nothing for a while (an outage): the next candle of each
        interval takes its volume baseline from its own first tick, as the day's first
        candle does, instead of the last tick before the gap (whose volume, the gap's, it
        would otherwise carry). A candle that continues across the gap keeps its own."""
        cdef int j
        for slot in np.asarray(slots, np.int64).tolist():
            if not 0 <= slot < self.n_slots:
                raise IndexError(f"slot {slot} out of range")
            for j in range(self.n_intervals):
                self._bars[slot * self.n_intervals + j].next_base = -1

    def take_late(self):
        """``(slots, first event ns, last event ns)`` of the slots that had ticks too late
        for an interval's candle since the last call (the spans start afresh)."""
        slots = np.flatnonzero(self._late_span_last != INT64_MIN)
        first = self._late_span_first[slots].copy()
        last = self._late_span_last[slots].copy()
        self._late_span_first[slots] = INT64_MAX
        self._late_span_last[slots] = INT64_MIN
        return slots, first, last

    # --- checkpoint -------------------------------------------------------------------

    def state(self):
        """The kernel's state as plain arrays and numbers, for a checkpoint."""
        return {
            "slots": self.slots.copy(), "bars": self.bars.copy(),
            "counters": self.counters.copy(), "late": self.late.copy(),
            "intervals": np.array(self.intervals, np.int64),
            "grace_ns": self.grace_ns, "clock_ns": self.clock_ns,
        }

    def restore(self, state):
        """Resume from ``state()`` of a kernel over possibly other instruments and intervals.

        Bars, pre-open prices and the day's extremes are restored for the keys and the
        intervals (by length) present in both; the others start empty. The ring must be
        empty.
        """
        if self.pending:
            raise ValueError("restore needs an empty candle ring")
        old_intervals = [int(m) for m in state["intervals"]]
        old_slots = state["slots"]
        old_bars = state["bars"].reshape(len(old_slots), len(old_intervals))
        bars = self.bars.reshape(self.n_slots, self.n_intervals)
        common = [(j, old_intervals.index(m)) for j, m in enumerate(self.intervals)
                  if m in old_intervals]
        # Checkpoints before brokers had keys named them tokens; a Kite key is its token.
        old_keys = old_slots["key" if "key" in old_slots.dtype.names else "token"]
        index = {int(t): i for i, t in enumerate(old_keys)}
        for slot, key in enumerate(self.slots["key"].tolist()):
            old = index.get(key)
            if old is None:
                continue
            for name in SAVED_SLOT_FIELDS:
                # A checkpoint of an earlier version lacks the extremes: they start empty.
                if name in old_slots.dtype.names:
                    self.slots[name][slot] = old_slots[name][old]
            for j, k in common:
                bars[slot, j] = old_bars[old, k]
        self.counters[:] = state["counters"]
        for j, k in common:
            self.late[j] = state["late"][k]
        self.clock_ns = int(state["clock_ns"])
        self._next_deadline = INT64_MIN  # the next call sweeps and recomputes it


def struct_layout():
    """``{struct: (sizeof, {field: offset})}`` as this compiler laid the C structs out."""
    cdef KTick k
    cdef SlotState s
    cdef Bar b
    cdef CandleRow r
    cdef char* kp = <char*>&k
    cdef char* sp = <char*>&s
    cdef char* bp = <char*>&b
    cdef char* rp = <char*>&r
    return {
        "KTick": (sizeof(KTick), {
            "recv_ns": <char*>&k.recv_ns - kp, "event_ns": <char*>&k.event_ns - kp,
            "volume": <char*>&k.volume - kp, "slot": <char*>&k.slot - kp,
            "price": <char*>&k.price - kp, "day_high": <char*>&k.day_high - kp,
            "day_low": <char*>&k.day_low - kp, "has_volume": <char*>&k.has_volume - kp,
            "has_day_range": <char*>&k.has_day_range - kp, "auction": <char*>&k.auction - kp,
        }),
        "SlotState": (sizeof(SlotState), {
            "day_start_ns": <char*>&s.day_start_ns - sp, "open_ns": <char*>&s.open_ns - sp,
            "close_ns": <char*>&s.close_ns - sp, "preopen_day": <char*>&s.preopen_day - sp,
            "key": <char*>&s.key - sp, "open_s": <char*>&s.open_s - sp,
            "close_s": <char*>&s.close_s - sp, "preopen_price": <char*>&s.preopen_price - sp,
            "extremes_day_ns": <char*>&s.extremes_day_ns - sp,
            "day_high": <char*>&s.day_high - sp, "day_low": <char*>&s.day_low - sp,
        }),
        "Bar": (sizeof(Bar), {
            "start_ns": <char*>&b.start_ns - bp, "end_ns": <char*>&b.end_ns - bp,
            "base": <char*>&b.base - bp, "last": <char*>&b.last - bp,
            "next_base": <char*>&b.next_base - bp, "open": <char*>&b.open - bp,
            "high": <char*>&b.high - bp, "low": <char*>&b.low - bp,
            "close": <char*>&b.close - bp, "state": <char*>&b.state - bp,
        }),
        "CandleRow": (sizeof(CandleRow), {
            "bucket_start_ns": <char*>&r.bucket_start_ns - rp, "volume": <char*>&r.volume - rp,
            "slot": <char*>&r.slot - rp, "open": <char*>&r.open - rp,
            "high": <char*>&r.high - rp, "low": <char*>&r.low - rp,
            "close": <char*>&r.close - rp, "interval": <char*>&r.interval - rp,
            "final": <char*>&r.final - rp,
        }),
    }
