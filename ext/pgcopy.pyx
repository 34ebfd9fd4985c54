# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""PostgreSQL binary COPY encoder for candle records (SPEC section 5), compiled.

Writes the PGCOPY stream (signature, one tuple per :c:type:`CandleRecord`, trailer) for the
flusher's staging table straight from the numpy array, with exact NUMERIC prices built from
the integer units: no Python object per row.

Two layouts. The staging table's columns: ``minutes int2, tradingsymbol text, exchange
text, dt_ist timestamp, dt_utc timestamptz, open numeric, high numeric, low numeric, close
numeric, volume int8``. A candle table's (COPYed straight in when it is safe): ``datetime,
tradingsymbol, exchange, open, high, low, close, volume``, the datetime as the IST wall clock
or as the instant. Either leaves ``exchange`` out when asked to (a table without that column).
"""
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cimport numpy as cnp

from feedtypes cimport EXCHANGE_BYTES, SYMBOL_BYTES, CandleRecord

from feedengine.dtypes import RECORD_DTYPE

cnp.import_array()

cdef enum:
    N_FIELDS = 10               # with the exchange; one fewer without
    N_TABLE_FIELDS = 8
    LAYOUT_STAGING_C = 0
    LAYOUT_TABLE_WALL_C = 1     # candle table, TIMESTAMP: IST wall-clock bucket start
    LAYOUT_TABLE_INSTANT_C = 2  # candle table, TIMESTAMPTZ: the instant
    # Upper bound of one encoded tuple: field count, a length word per field, fixed-size
    # fields, the symbol and exchange, and 4 NUMERICs of at most 8 header bytes + 6
    # base-10000 digits.
    MAX_TUPLE = (2 + N_FIELDS * 4 + 8 + 2 + SYMBOL_BYTES + EXCHANGE_BYTES + 8 + 8
                 + 4 * (8 + 12) + 8)
    NUMERIC_POS = 0x0000
    NUMERIC_NEG = 0x4000

# PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC.
cdef int64_t PG_EPOCH_US = 946_684_800 * 1_000_000
# IST = UTC+05:30: TIMESTAMP columns hold the IST wall clock.
cdef int64_t IST_OFFSET_US = (5 * 3600 + 30 * 60) * 1_000_000

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
LAYOUT_STAGING = LAYOUT_STAGING_C
LAYOUT_TABLE_WALL = LAYOUT_TABLE_WALL_C
LAYOUT_TABLE_INSTANT = LAYOUT_TABLE_INSTANT_C
TABLE_COLUMNS = ("datetime", "tradingsymbol", "exchange", "open", "high", "low", "close",
                 "volume")
STAGING_COLUMNS = ("minutes", "tradingsymbol", "exchange", "dt_ist", "dt_utc", "open", "high",
                   "low", "close", "volume")


cdef inline size_t text_length(const char* s, size_t capacity) noexcept nogil:
    """Bytes of a NUL-padded text field."""
    cdef size_t n = 0
    while n < capacity and s[n] != 0:
        n += 1
    return n


cdef inline uint8_t* put16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF
    return p + 2


cdef inline uint8_t* put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF
    return p + 4


cdef inline uint8_t* put64(uint8_t* p, uint64_t v) noexcept nogil:
    p = put32(p, <uint32_t>(v >> 32))
    return put32(p, <uint32_t>v)


cdef uint8_t* put_numeric(uint8_t* p, int64_t units, int decimals) noexcept nogil:
    """NUMERIC binary of units / 10**decimals, with dscale = decimals (exact)."""
    cdef uint16_t digits[8]
    cdef int n = 0, i, pad, groups, weight, first, last
    cdef uint16_t sign = NUMERIC_POS
    cdef uint64_t m
    memset(digits, 0, sizeof(digits))  # (only to keep the compiler's flow analysis quiet)
    if units < 0:
        sign = NUMERIC_NEG
        m = <uint64_t>(-units)
    else:
        m = <uint64_t>units
    # Scale so the decimal point falls between base-10000 digits.
    groups = (decimals + 3) // 4
    pad = groups * 4 - decimals
    for i in range(pad):
        m *= 10
    while m:
        digits[n] = m % 10000  # least significant first
        m //= 10000
        n += 1
    if n == 0:
        p = put32(p, 8)
        p = put16(p, 0)
        p = put16(p, 0)
        p = put16(p, NUMERIC_POS)
        return put16(p, <uint16_t>decimals)
    weight = n - 1 - groups
    # Trailing zero digits (least significant) are left out; the weight keeps the place.
    first = 0
    while digits[first] == 0:
        first += 1
    last = n - 1
    p = put32(p, 8 + 2 * (last - first + 1))
    p = put16(p, <uint16_t>(last - first + 1))
    p = put16(p, <uint16_t><int16_t>weight)
    p = put16(p, sign)
    p = put16(p, <uint16_t>decimals)
    for i in range(last, first - 1, -1):
        p = put16(p, digits[i])
    return p


def encode(cnp.ndarray records, int layout=LAYOUT_STAGING_C, bint exchange=True):
    """The PGCOPY stream of ``records`` (``RECORD_DTYPE``) in ``layout``, as a ``bytearray``;
    without the exchange column when ``exchange`` is False."""
    if layout not in (LAYOUT_STAGING_C, LAYOUT_TABLE_WALL_C, LAYOUT_TABLE_INSTANT_C):
        raise ValueError(f"unknown layout {layout}")
    if records.dtype != RECORD_DTYPE or not cnp.PyArray_IS_C_CONTIGUOUS(records):
        raise TypeError("records must be a contiguous RECORD_DTYPE array")
    cdef Py_ssize_t n = records.shape[0], i
    cdef const CandleRecord* rec = <const CandleRecord*>cnp.PyArray_DATA(records)
    out = bytearray(len(SIGNATURE) + 8 + n * MAX_TUPLE + 2)
    cdef uint8_t* base = <uint8_t*>(<char*>out)
    cdef uint8_t* p = base
    cdef const CandleRecord* r
    cdef size_t slen
    cdef int64_t utc_us
    cdef uint16_t fields = (N_FIELDS if layout == LAYOUT_STAGING_C else N_TABLE_FIELDS) - (
        0 if exchange else 1)
    memcpy(p, <const char*>b"PGCOPY\n\xff\r\n\x00", 11)  # == SIGNATURE
    p += 11
    p = put32(p, 0)  # flags
    p = put32(p, 0)  # header extension length
    with nogil:
        for i in range(n):
            r = rec + i
            utc_us = r.bucket_start_ns // 1000 - PG_EPOCH_US
            slen = text_length(r.symbol, SYMBOL_BYTES)
            p = put16(p, fields)
            if layout == LAYOUT_STAGING_C:
                p = put32(p, 2)
                p = put16(p, <uint16_t>r.minutes)
            else:
                p = put32(p, 8)
                p = put64(p, <uint64_t>(utc_us + (IST_OFFSET_US if layout == LAYOUT_TABLE_WALL_C
                                                  else 0)))
            p = put32(p, <uint32_t>slen)
            memcpy(p, r.symbol, slen)
            p += slen
            if exchange:
                slen = text_length(r.exchange, EXCHANGE_BYTES)
                p = put32(p, <uint32_t>slen)
                memcpy(p, r.exchange, slen)
                p += slen
            if layout == LAYOUT_STAGING_C:
                p = put32(p, 8)
                p = put64(p, <uint64_t>(utc_us + IST_OFFSET_US))
                p = put32(p, 8)
                p = put64(p, <uint64_t>utc_us)
            p = put_numeric(p, r.open, r.decimals)
            p = put_numeric(p, r.high, r.decimals)
            p = put_numeric(p, r.low, r.decimals)
            p = put_numeric(p, r.close, r.decimals)
            p = put32(p, 8)
            p = put64(p, <uint64_t>r.volume)
        p = put16(p, 0xFFFF)  # trailer: -1
    del out[p - base:]
    return out


def record_layout():
    """``(sizeof, {field: offset})`` of CandleRecord as compiled."""
    cdef CandleRecord r
    cdef char* b = <char*>&r
    return (sizeof(CandleRecord), {
        "bucket_start_ns": <char*>&r.bucket_start_ns - b, "volume": <char*>&r.volume - b,
        "open": <char*>&r.open - b, "high": <char*>&r.high - b, "low": <char*>&r.low - b,
        "close": <char*>&r.close - b, "minutes": <char*>&r.minutes - b,
        "decimals": <char*>&r.decimals - b, "final": <char*>&r.final - b,
        "symbol": <char*>&r.symbol[0] - b, "exchange": <char*>&r.exchange[0] - b,
    })
