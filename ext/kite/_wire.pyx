# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kite binary WebSocket decoder (SPEC section 2), compiled.

A message is a big-endian u16 packet count, then per packet a u16 length and the packet. The
decoders below write one row per packet into a caller's preallocated array with the GIL
released and no Python object per tick. They never read past the message: a fault stops
the message, keeps the packets before it, and is returned as a ``Fault`` code.
"""
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset

cimport numpy as cnp

from batch cimport check_records, slot_map
from feedtypes cimport KTick, SlotMap, be_i32, be_u16, slot_of

cdef enum Fault:
    # Why a message stopped decoding. The packets before the fault are kept.
    FAULT_NONE = 0
    FAULT_EMPTY = 1         # zero-length message
    FAULT_TRUNCATED = 2     # cut inside the packet count or a length prefix
    FAULT_PAST_END = 3      # a declared packet length runs past the end of the message
    FAULT_BAD_LENGTH = 4    # a packet length that is no Kite packet kind
    FAULT_TRAILING = 5      # bytes left over after the declared packets
    N_FAULTS = 6

cdef enum:
    # Depth levels per side in a full packet (Kite sends 5 bids then 5 asks).
    DEPTH = 5

ctypedef struct Tick:
    # One decoded packet, every field of SPEC section 2. Prices are integer units of
    # 1/divisor(segment); timestamps are Unix seconds (0 when the packet has none).
    int64_t recv_ns
    int64_t last_trade_time
    int64_t exchange_timestamp
    uint32_t instrument_token
    int32_t last_price
    int32_t last_traded_quantity
    int32_t average_traded_price
    int32_t volume_traded
    int32_t total_buy_quantity
    int32_t total_sell_quantity
    int32_t open
    int32_t high
    int32_t low
    int32_t close
    int32_t change
    int32_t oi
    int32_t oi_day_high
    int32_t oi_day_low
    int32_t bid_quantity[DEPTH]
    int32_t bid_price[DEPTH]
    int32_t ask_quantity[DEPTH]
    int32_t ask_price[DEPTH]
    int16_t bid_orders[DEPTH]
    int16_t ask_orders[DEPTH]
    uint16_t packet_length
    uint8_t mode
    uint8_t segment
    uint8_t tradable

cdef enum:
    # Packet lengths Kite sends, one per kind (SPEC section 2).
    PKT_LTP = 8
    PKT_INDEX_QUOTE = 28
    PKT_INDEX_FULL = 32
    PKT_QUOTE = 44
    PKT_FULL = 184
    # Smallest framed packet: a 2-byte length prefix and an 8-byte ltp packet. Bounds how
    # many rows a message of n bytes can produce, whatever its count field claims.
    MIN_FRAMED = 10
    # Full packets carry 10 depth entries of 12 bytes from offset 64.
    DEPTH_OFFSET = 64
    DEPTH_ENTRY = 12
    SEG_INDICES = 9
    MODE_LTP = 1
    MODE_QUOTE = 2
    MODE_FULL = 3
    # Returned instead of a fault when the caller's buffer cannot hold the message.
    NEED_SPACE = -1

from feedengine.dtypes import KTICK_DTYPE
from feedengine.brokers.kite.dtypes import TICK_DTYPE

cnp.import_array()

NUM_FAULTS = N_FAULTS
NEED_SPACE_CODE = NEED_SPACE


cdef inline Py_ssize_t rows_bound(const uint8_t* msg, Py_ssize_t n) noexcept nogil:
    """Most rows a message can yield: its count, capped by what its bytes can hold."""
    if n < 2:
        return 0
    cdef Py_ssize_t count = be_u16(msg)
    cdef Py_ssize_t fit = (n - 2) // MIN_FRAMED
    return count if count < fit else fit


cdef inline bint known_length(uint16_t plen) noexcept nogil:
    return (plen == PKT_LTP or plen == PKT_QUOTE or plen == PKT_FULL
            or plen == PKT_INDEX_QUOTE or plen == PKT_INDEX_FULL)


cdef inline int next_packet(const uint8_t* msg, Py_ssize_t n, Py_ssize_t* pos,
                            uint16_t* plen) noexcept nogil:
    """Read the length prefix at pos; on success pos points at the packet body."""
    if pos[0] + 2 > n:
        return FAULT_TRUNCATED
    plen[0] = be_u16(msg + pos[0])
    pos[0] += 2
    if pos[0] + plen[0] > n:
        return FAULT_PAST_END
    if not known_length(plen[0]):
        return FAULT_BAD_LENGTH
    return FAULT_NONE


cdef inline uint8_t mode_of(uint16_t plen) noexcept nogil:
    if plen == PKT_LTP:
        return MODE_LTP
    if plen == PKT_QUOTE or plen == PKT_INDEX_QUOTE:
        return MODE_QUOTE
    return MODE_FULL


cdef inline int32_t wrap_sub(int32_t a, int32_t b) noexcept nogil:
    # Two's-complement difference without signed-overflow undefined behaviour.
    return <int32_t>(<uint32_t>a - <uint32_t>b)


# All-zero row copied over each Tick before filling it: a struct copy compiles to a few
# vector stores, where memset became a slow-starting ``rep stos`` (half the decode time).
cdef Tick ZERO_TICK
memset(&ZERO_TICK, 0, sizeof(Tick))


cdef inline void fill_tick(const uint8_t* p, uint16_t plen, int64_t recv_ns,
                           Tick* t) noexcept nogil:
    cdef int i
    cdef const uint8_t* d
    if plen != PKT_FULL:  # a full packet sets every field
        t[0] = ZERO_TICK
    t.recv_ns = recv_ns
    t.instrument_token = <uint32_t>be_i32(p)
    t.segment = t.instrument_token & 0xFF
    t.tradable = t.segment != SEG_INDICES
    t.packet_length = plen
    t.mode = mode_of(plen)
    t.last_price = be_i32(p + 4)
    if plen == PKT_INDEX_QUOTE or plen == PKT_INDEX_FULL:
        t.high = be_i32(p + 8)
        t.low = be_i32(p + 12)
        t.open = be_i32(p + 16)
        t.close = be_i32(p + 20)
        t.change = be_i32(p + 24)
        if plen == PKT_INDEX_FULL:
            t.exchange_timestamp = be_i32(p + 28)
    elif plen == PKT_QUOTE or plen == PKT_FULL:
        t.last_traded_quantity = be_i32(p + 8)
        t.average_traded_price = be_i32(p + 12)
        t.volume_traded = be_i32(p + 16)
        t.total_buy_quantity = be_i32(p + 20)
        t.total_sell_quantity = be_i32(p + 24)
        t.open = be_i32(p + 28)
        t.high = be_i32(p + 32)
        t.low = be_i32(p + 36)
        t.close = be_i32(p + 40)
        t.change = wrap_sub(t.last_price, t.close)
        if plen == PKT_FULL:
            t.last_trade_time = be_i32(p + 44)
            t.oi = be_i32(p + 48)
            t.oi_day_high = be_i32(p + 52)
            t.oi_day_low = be_i32(p + 56)
            t.exchange_timestamp = be_i32(p + 60)
            for i in range(DEPTH):
                d = p + DEPTH_OFFSET + i * DEPTH_ENTRY
                t.bid_quantity[i] = be_i32(d)
                t.bid_price[i] = be_i32(d + 4)
                t.bid_orders[i] = <int16_t>be_u16(d + 8)
                d = p + DEPTH_OFFSET + (DEPTH + i) * DEPTH_ENTRY
                t.ask_quantity[i] = be_i32(d)
                t.ask_price[i] = be_i32(d + 4)
                t.ask_orders[i] = <int16_t>be_u16(d + 8)


cdef int64_t NS_PER_S = 1_000_000_000
cdef int64_t NS_PER_DAY = 86_400 * NS_PER_S
# IST = UTC+05:30, no daylight saving.
cdef int64_t IST_OFFSET_NS = (5 * 3600 + 30 * 60) * NS_PER_S


cdef inline int64_t ist_day(int64_t t_ns) noexcept nogil:
    cdef int64_t a = t_ns + IST_OFFSET_NS
    cdef int64_t q = a // NS_PER_DAY
    if a % NS_PER_DAY != 0 and a < 0:
        q -= 1
    return q


cdef inline void fill_ktick(const uint8_t* p, uint16_t plen, int64_t recv_ns, const SlotMap* m,
                            KTick* t) noexcept nogil:
    """The neutral row of a Kite packet: SPEC section 4's reading of it."""
    cdef uint32_t token = <uint32_t>be_i32(p)
    cdef uint8_t segment = token & 0xFF
    cdef int32_t exchange_timestamp = 0, last_trade_time = 0
    t.recv_ns = recv_ns
    t.slot = slot_of(m, token)
    t.price = be_i32(p + 4)
    t.volume = 0
    t.has_volume = 0
    t.day_high = 0
    t.day_low = 0
    t.auction = 0
    t.has_day_range = plen != PKT_LTP
    if plen == PKT_QUOTE or plen == PKT_FULL:
        t.day_high = be_i32(p + 32)
        t.day_low = be_i32(p + 36)
        if segment != SEG_INDICES:
            t.volume = be_i32(p + 16)
            t.has_volume = 1
        if plen == PKT_FULL:
            last_trade_time = be_i32(p + 44)
            exchange_timestamp = be_i32(p + 60)
    elif plen == PKT_INDEX_QUOTE or plen == PKT_INDEX_FULL:
        t.day_high = be_i32(p + 8)
        t.day_low = be_i32(p + 12)
        if plen == PKT_INDEX_FULL:
            exchange_timestamp = be_i32(p + 28)
    if exchange_timestamp != 0:
        t.event_ns = <int64_t>exchange_timestamp * NS_PER_S
    else:
        t.event_ns = recv_ns
    # A full packet before the open whose last trade is of the same IST date carries the
    # pre-open auction's price (SPEC section 4); the kernel takes it only before the open.
    if last_trade_time != 0:
        t.auction = ist_day(<int64_t>last_trade_time * NS_PER_S) == ist_day(t.event_ns)


ctypedef fused AnyTick:
    Tick
    KTick


cdef int decode_message(const uint8_t* msg, Py_ssize_t n, int64_t recv_ns, const SlotMap* m,
                        AnyTick* out, Py_ssize_t cap, Py_ssize_t* written) noexcept nogil:
    """Decode one message into out[0:cap]; the rows written go to written[0]."""
    cdef Py_ssize_t pos = 2, k = 0, i, count
    cdef uint16_t plen
    cdef int fault = FAULT_NONE
    written[0] = 0
    if n == 0:
        return FAULT_EMPTY
    if n == 1:
        return FAULT_NONE  # heartbeat
    if rows_bound(msg, n) > cap:
        return NEED_SPACE
    count = be_u16(msg)
    for i in range(count):
        fault = next_packet(msg, n, &pos, &plen)
        if fault != FAULT_NONE:
            break
        if AnyTick is Tick:
            fill_tick(msg + pos, plen, recv_ns, out + k)
        else:
            fill_ktick(msg + pos, plen, recv_ns, m, out + k)
        k += 1
        pos += plen
    if fault == FAULT_NONE and pos != n:
        fault = FAULT_TRAILING
    written[0] = k
    return fault


def max_rows(const uint8_t[::1] message):
    """Upper bound on the rows ``message`` can decode to (its count, capped by its size)."""
    return rows_bound(&message[0] if message.shape[0] else NULL, message.shape[0])


cdef void* rows_of(cnp.ndarray out, object dtype, Py_ssize_t start) except NULL:
    """Pointer to ``out[start]`` after checking dtype, contiguity and bounds.

    A typed struct memoryview would parse numpy's format string on every call (microseconds
    per message); an identity check of the dtype costs nothing.
    """
    if out.dtype is not dtype and out.dtype != dtype:
        raise TypeError(f"output array must have dtype {dtype}, not {out.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(out) or out.ndim != 1:
        raise ValueError("output array must be one-dimensional and contiguous")
    if start < 0 or start > out.shape[0]:
        raise IndexError("start outside the output array")
    return <char*>cnp.PyArray_DATA(out) + start * cnp.PyArray_ITEMSIZE(out)


def decode_into(const uint8_t[::1] message, int64_t recv_ns, cnp.ndarray out, Py_ssize_t start):
    """Decode one message into ``out[start:]`` (``TICK_DTYPE``); return ``(rows, fault)``.

    ``fault`` is ``NEED_SPACE_CODE`` (nothing written) when ``out`` has no room for
    ``max_rows(message)`` more rows.
    """
    cdef Py_ssize_t n = message.shape[0], written = 0
    cdef Tick* rows = <Tick*>rows_of(out, TICK_DTYPE, start)
    cdef int fault
    with nogil:
        fault = decode_message(&message[0] if n else NULL, n, recv_ns, NULL, rows,
                               out.shape[0] - start, &written)
    return written, fault


def decode_kernel_into(const uint8_t[::1] message, int64_t recv_ns, cnp.ndarray out,
                       Py_ssize_t start, const uint64_t[::1] keys, const int32_t[::1] slots,
                       int shift):
    """As ``decode_into``, into the kernel's neutral rows (``KTICK_DTYPE``), with slots
    resolved through the table ``keys, slots, shift``."""
    cdef Py_ssize_t n = message.shape[0], written = 0
    cdef KTick* rows = <KTick*>rows_of(out, KTICK_DTYPE, start)
    cdef int fault
    cdef SlotMap m
    slot_map(keys, slots, shift, &m)
    with nogil:
        fault = decode_message(&message[0] if n else NULL, n, recv_ns, &m, rows,
                               out.shape[0] - start, &written)
    return written, fault


def decode_records(const uint8_t[::1] buf, const int64_t[::1] offsets,
                   const int64_t[::1] lengths, const int64_t[::1] recv_ns,
                   Py_ssize_t first, cnp.ndarray out, Py_ssize_t start,
                   int64_t[::1] faults, int64_t[::1] fault_record,
                   const uint64_t[::1] keys, const int32_t[::1] slots, int shift):
    """Decode many messages of one buffer (tick-file records) into ``out[start:]``.

    Message ``i`` is ``buf[offsets[i]:offsets[i] + lengths[i]]`` received at ``recv_ns[i]``.
    Decodes from record ``first`` until the records end or ``out`` has no room for the
    next one, in one call without the GIL. ``faults[code]`` counts faults by kind;
    ``fault_record[0]`` is set to the index of the first faulty record (left alone if none).
    Slots are resolved through the table ``keys, slots, shift``. Returns
    ``(next record, rows end)``.
    """
    cdef Py_ssize_t i = first, k = start, written, nrec = offsets.shape[0]
    cdef Py_ssize_t cap = out.shape[0]
    cdef int fault
    cdef const uint8_t* base = &buf[0] if buf.shape[0] else NULL
    cdef KTick* rows = <KTick*>rows_of(out, KTICK_DTYPE, 0)
    cdef SlotMap m
    slot_map(keys, slots, shift, &m)
    check_records(buf, offsets, lengths, recv_ns, first, start, cap, faults, N_FAULTS,
                  fault_record)
    i = first
    with nogil:
        while i < nrec:
            fault = decode_message(base + offsets[i], lengths[i], recv_ns[i], &m, rows + k,
                                   cap - k, &written)
            if fault == NEED_SPACE:
                break
            if fault != FAULT_NONE:
                faults[fault] += 1
                if fault_record[0] < 0:
                    fault_record[0] = i
            k += written
            i += 1
    return i, k


def struct_layout():
    """``{struct: (sizeof, {field: offset})}`` as this compiler laid the C structs out."""
    cdef Tick t
    cdef char* tb = <char*>&t
    return {
        "Tick": (sizeof(Tick), {
            "recv_ns": <char*>&t.recv_ns - tb,
            "last_trade_time": <char*>&t.last_trade_time - tb,
            "exchange_timestamp": <char*>&t.exchange_timestamp - tb,
            "instrument_token": <char*>&t.instrument_token - tb,
            "last_price": <char*>&t.last_price - tb,
            "last_traded_quantity": <char*>&t.last_traded_quantity - tb,
            "average_traded_price": <char*>&t.average_traded_price - tb,
            "volume_traded": <char*>&t.volume_traded - tb,
            "total_buy_quantity": <char*>&t.total_buy_quantity - tb,
            "total_sell_quantity": <char*>&t.total_sell_quantity - tb,
            "open": <char*>&t.open - tb,
            "high": <char*>&t.high - tb,
            "low": <char*>&t.low - tb,
            "close": <char*>&t.close - tb,
            "change": <char*>&t.change - tb,
            "oi": <char*>&t.oi - tb,
            "oi_day_high": <char*>&t.oi_day_high - tb,
            "oi_day_low": <char*>&t.oi_day_low - tb,
            "bid_quantity": <char*>&t.bid_quantity[0] - tb,
            "bid_price": <char*>&t.bid_price[0] - tb,
            "ask_quantity": <char*>&t.ask_quantity[0] - tb,
            "ask_price": <char*>&t.ask_price[0] - tb,
            "bid_orders": <char*>&t.bid_orders[0] - tb,
            "ask_orders": <char*>&t.ask_orders[0] - tb,
            "packet_length": <char*>&t.packet_length - tb,
            "mode": <char*>&t.mode - tb,
            "segment": <char*>&t.segment - tb,
            "tradable": <char*>&t.tradable - tb,
        }),
    }
