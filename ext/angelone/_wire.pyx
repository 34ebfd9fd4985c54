# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Angel One SmartAPI WebSocket 2.0 decoder (SPEC section 10), compiled.

One binary message is one little-endian packet: byte 0 its mode, byte 1 its exchange type,
then a NUL-padded ASCII token and int64 fields at fixed offsets (the layout is defined once
in ``feedengine/brokers/angelone/wire.py``; ``wire_layout()`` below lets a test hold these
constants to it). ``decode_records`` turns a batch of messages into the broker-neutral tick
rows the candle kernel reads, resolving each packet's instrument slot, with the GIL released
and no Python object per tick. It never reads past a message: a malformed one is a counted
fault and gives no row.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cimport numpy as cnp

from batch cimport check_records, slot_map
from feedtypes cimport KTick, SlotMap, slot_of

cdef enum:
    # Subscription modes (byte 0).
    MODE_LTP = 1
    MODE_QUOTE = 2
    MODE_SNAP_QUOTE = 3
    MODE_DEPTH = 4           # 20-level depth: no price, volume or day range, so no row
    # Packet length of each mode: one packet is the whole message.
    SIZE_LTP = 51
    SIZE_QUOTE = 123
    SIZE_SNAP_QUOTE = 379
    SIZE_DEPTH = 443
    # Byte offsets of the fields the neutral row takes.
    OFF_MODE = 0
    OFF_EXCHANGE_TYPE = 1
    OFF_TOKEN = 2
    TOKEN_BYTES = 25
    OFF_EXCHANGE_TIMESTAMP = 35
    OFF_LAST_TRADED_PRICE = 43
    OFF_VOLUME = 67
    OFF_DAY_HIGH = 99
    OFF_DAY_LOW = 107

cdef enum Fault:
    # Why a message gave no row (``Fault`` in wire.py has the same codes).
    FAULT_NONE = 0
    FAULT_EMPTY = 1          # zero-length message
    FAULT_BAD_MODE = 2       # byte 0 is no subscription mode (a text frame lands here too)
    FAULT_TRUNCATED = 3      # shorter than its mode's packet
    FAULT_TRAILING = 4       # longer than its mode's packet
    FAULT_BAD_EXCHANGE = 5   # byte 1 is no exchange type Angel documents
    FAULT_TIME_RANGE = 6     # exchange timestamp negative, or past int64 nanoseconds
    FAULT_PRICE_RANGE = 7    # last traded price, day high or day low outside int32
    N_FAULTS = 8

cdef extern from *:
    """
    #include <string.h>
    /* Exchange types Angel documents: 1 nse_cm, 2 nse_fo, 3 bse_cm, 4 bse_fo, 5 mcx_fo,
       7 ncx_fo, 13 cde_fo, as one bit each. */
    #define FE_AO_EXCHANGES ((1u << 1) | (1u << 2) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 7) | (1u << 13))
    /* Unaligned little-endian load: one move on a little-endian host. */
    static inline int64_t fe_le_i64(const uint8_t *p) {
        uint64_t v; memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return (int64_t)v;
    }
    """
    uint32_t EXCHANGES "FE_AO_EXCHANGES"
    int64_t le_i64 "fe_le_i64"(const uint8_t* p) noexcept nogil

# Largest exchange timestamp (ms) whose nanoseconds fit int64: the product is checked before
# it is formed, as signed overflow is undefined behaviour in C.
cdef int64_t MAX_TIMESTAMP_MS = 9223372036854775807 // 1000000
cdef int64_t NS_PER_MS = 1000000
# Largest token that fits the 32 bits of an instrument key below the exchange type.
cdef uint64_t MAX_TOKEN = 0xFFFFFFFF

from feedengine.dtypes import KTICK_DTYPE

cnp.import_array()

NUM_FAULTS = N_FAULTS


cdef inline Py_ssize_t packet_size(uint8_t mode) noexcept nogil:
    if mode == MODE_LTP:
        return SIZE_LTP
    if mode == MODE_QUOTE:
        return SIZE_QUOTE
    if mode == MODE_SNAP_QUOTE:
        return SIZE_SNAP_QUOTE
    if mode == MODE_DEPTH:
        return SIZE_DEPTH
    return 0


cdef inline bint in_int32(int64_t v) noexcept nogil:
    return -2147483648 <= v <= 2147483647


cdef inline int64_t token_value(const uint8_t* p) noexcept nogil:
    """The token's number: ASCII digits up to the first NUL (or all 25 bytes); -1 if it is
    empty, has another byte, or does not fit 32 bits."""
    cdef uint64_t v = 0
    cdef Py_ssize_t i = 0
    cdef uint8_t c
    while i < TOKEN_BYTES and p[i] != 0:
        c = p[i] - 48  # '0'; other bytes wrap past 9
        if c > 9:
            return -1
        v = v * 10 + c  # v <= MAX_TOKEN here, so no 64-bit overflow
        if v > MAX_TOKEN:
            return -1
        i += 1
    return <int64_t>v if i else -1


cdef inline bint can_row(const uint8_t* msg, Py_ssize_t n) noexcept nogil:
    """Whether a message may give a row: a candle mode at its own length."""
    return n > 0 and msg[0] != MODE_DEPTH and n == packet_size(msg[0])


cdef int decode_packet(const uint8_t* p, Py_ssize_t n, int64_t recv_ns, const SlotMap* m,
                       KTick* t, Py_ssize_t* written) noexcept nogil:
    """Decode one message into ``t``; ``written[0]`` is the rows it gave (0 or 1).

    The checks run in a fixed order, which the reference decoder follows, so that a message
    with several faults reports the same one in both.
    """
    cdef uint8_t mode, exchange
    cdef Py_ssize_t size
    cdef int64_t ts, price, high = 0, low = 0, token
    written[0] = 0
    if n == 0:
        return FAULT_EMPTY
    mode = p[OFF_MODE]
    size = packet_size(mode)
    if size == 0:
        return FAULT_BAD_MODE
    if n < size:
        return FAULT_TRUNCATED
    if n > size:
        return FAULT_TRAILING
    exchange = p[OFF_EXCHANGE_TYPE]
    if exchange > 31 or not (EXCHANGES >> exchange) & 1:
        return FAULT_BAD_EXCHANGE
    if mode == MODE_DEPTH:
        return FAULT_NONE
    ts = le_i64(p + OFF_EXCHANGE_TIMESTAMP)
    if ts < 0 or ts > MAX_TIMESTAMP_MS:
        return FAULT_TIME_RANGE
    price = le_i64(p + OFF_LAST_TRADED_PRICE)
    if mode != MODE_LTP:
        high = le_i64(p + OFF_DAY_HIGH)
        low = le_i64(p + OFF_DAY_LOW)
    if not (in_int32(price) and in_int32(high) and in_int32(low)):
        return FAULT_PRICE_RANGE
    token = token_value(p + OFF_TOKEN)
    t.recv_ns = recv_ns
    t.event_ns = ts * NS_PER_MS if ts else recv_ns
    t.slot = slot_of(m, (<uint64_t>exchange << 32) | <uint64_t>token) if token >= 0 else -1
    t.price = <int32_t>price
    t.day_high = <int32_t>high
    t.day_low = <int32_t>low
    t.has_day_range = mode != MODE_LTP
    t.has_volume = mode != MODE_LTP
    t.volume = le_i64(p + OFF_VOLUME) if mode != MODE_LTP else 0
    # No Angel field is known to carry the pre-open auction's price (SPEC section 10).
    t.auction = 0
    written[0] = 1
    return FAULT_NONE


cdef KTick* rows_of(cnp.ndarray out) except NULL:
    """Pointer to ``out[0]`` after checking dtype and shape.

    A typed struct memoryview would parse numpy's format string on every call (microseconds
    per batch); an identity check of the dtype costs nothing.
    """
    if out.dtype is not KTICK_DTYPE and out.dtype != KTICK_DTYPE:
        raise TypeError(f"output array must have dtype {KTICK_DTYPE}, not {out.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(out) or out.ndim != 1:
        raise ValueError("output array must be one-dimensional and contiguous")
    return <KTick*>cnp.PyArray_DATA(out)


def decode_records(const uint8_t[::1] buf, const int64_t[::1] offsets,
                   const int64_t[::1] lengths, const int64_t[::1] recv_ns,
                   Py_ssize_t first, cnp.ndarray out, Py_ssize_t start,
                   int64_t[::1] faults, int64_t[::1] fault_record,
                   const uint64_t[::1] keys, const int32_t[::1] slots, uint32_t shift):
    """Decode many messages of one buffer (tick-file records) into ``out[start:]``.

    Message ``i`` is ``buf[offsets[i]:offsets[i] + lengths[i]]`` received at ``recv_ns[i]``;
    it gives one ``KTICK_DTYPE`` row, or none (a depth packet, or a fault). Decodes from
    record ``first`` until the records end or ``out`` has no room for the next message's row,
    in one call without the GIL. Instrument slots come from the ``SlotTable`` arrays
    ``keys``, ``slots`` and ``shift``. ``faults[code]`` counts faults by kind;
    ``fault_record[0]`` is set to the index of the first faulty record (left alone if it is
    already set, i.e. not negative). Returns ``(next record, rows end)``.
    """
    cdef Py_ssize_t i, k = start, written, nrec = offsets.shape[0], cap = out.shape[0]
    cdef int fault
    cdef const uint8_t* base = &buf[0] if buf.shape[0] else NULL
    cdef const uint8_t* msg
    cdef KTick* rows = rows_of(out)
    cdef SlotMap m
    slot_map(keys, slots, shift, &m)
    check_records(buf, offsets, lengths, recv_ns, first, start, cap, faults, N_FAULTS,
                  fault_record)
    i = first
    with nogil:
        while i < nrec:
            msg = base + offsets[i]
            if k == cap and can_row(msg, lengths[i]):
                break
            fault = decode_packet(msg, lengths[i], recv_ns[i], &m, rows + k, &written)
            if fault != FAULT_NONE:
                faults[fault] += 1
                if fault_record[0] < 0:
                    fault_record[0] = i
            k += written
            i += 1
    return i, k


def fault_codes():
    """``{name: code}`` of the compiled ``Fault`` enum, for a test against ``wire.Fault``."""
    return {
        "NONE": FAULT_NONE,
        "EMPTY": FAULT_EMPTY,
        "BAD_MODE": FAULT_BAD_MODE,
        "TRUNCATED": FAULT_TRUNCATED,
        "TRAILING": FAULT_TRAILING,
        "BAD_EXCHANGE": FAULT_BAD_EXCHANGE,
        "TIME_RANGE": FAULT_TIME_RANGE,
        "PRICE_RANGE": FAULT_PRICE_RANGE,
    }


def wire_layout():
    """The packet sizes and field offsets compiled in, for a test against wire.py's."""
    return {
        "sizes": {MODE_LTP: SIZE_LTP, MODE_QUOTE: SIZE_QUOTE,
                  MODE_SNAP_QUOTE: SIZE_SNAP_QUOTE, MODE_DEPTH: SIZE_DEPTH},
        "offsets": {
            "subscription_mode": OFF_MODE,
            "exchange_type": OFF_EXCHANGE_TYPE,
            "token": OFF_TOKEN,
            "exchange_timestamp": OFF_EXCHANGE_TIMESTAMP,
            "last_traded_price": OFF_LAST_TRADED_PRICE,
            "volume_trade_for_the_day": OFF_VOLUME,
            "high_price_of_the_day": OFF_DAY_HIGH,
            "low_price_of_the_day": OFF_DAY_LOW,
        },
        "token_bytes": TOKEN_BYTES,
        "exchanges": sorted(e for e in range(32) if (EXCHANGES >> e) & 1),
        "max_timestamp_ms": MAX_TIMESTAMP_MS,
    }
