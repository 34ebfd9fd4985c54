# cython: language_level=3
"""C structs shared by the compiled kernels: the contract between them.

Each struct has exactly one numpy dtype in ``feedengine.dtypes``; a test checks that the
dtype's itemsize and field offsets equal the ones the C compiler chose.
"""
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

ctypedef struct KTick:
    # The broker-neutral tick row: every broker's decoder fills it, the candle kernel reads
    # only it (SPEC section 4). The decoder resolves what its wire says into these terms.
    int64_t recv_ns          # receive time, Unix ns
    int64_t event_ns         # the exchange's event time when the packet has one, else recv_ns
    int64_t volume           # cumulative day volume; valid when has_volume
    int32_t slot             # instrument slot (index into the instrument list); -1: unknown
    int32_t price            # last traded price, integer units of the instrument's price scale
    int32_t day_high         # the day's high and low so far, as the packet reports them
    int32_t day_low          # (a zero low: none); valid only when has_day_range
    uint8_t has_volume
    uint8_t has_day_range
    uint8_t auction          # before the open, this price is the pre-open auction's

ctypedef struct SlotMap:
    # Instrument key -> slot, open addressing with linear probing; the decoders resolve
    # slots through it. Keys are broker-defined and never 0 (0 marks an empty entry).
    const uint64_t* keys
    const int32_t* slots
    uint32_t shift           # 64 - log2(table size)
    uint64_t mask            # table size - 1

cdef inline int32_t slot_of(const SlotMap* m, uint64_t key) noexcept nogil:
    # Fibonacci hashing (2^64 / golden ratio): Kite's tokens share their low byte (the
    # segment), so the high bits of the product pick the entry.
    cdef uint64_t h = (key * <uint64_t>11400714819323198485ULL) >> m.shift
    while m.keys[h] != 0:
        if m.keys[h] == key:
            return m.slots[h]
        h = (h + 1) & m.mask
    return -1

cdef extern from *:
    """
    #include <string.h>
    #if defined(_MSC_VER)
    #include <stdlib.h>
    #define FE_BSWAP32(x) _byteswap_ulong(x)
    #define FE_BSWAP16(x) _byteswap_ushort(x)
    #else
    #define FE_BSWAP32(x) __builtin_bswap32(x)
    #define FE_BSWAP16(x) __builtin_bswap16(x)
    #endif
    /* Unaligned big-endian loads: one load and one byte swap each. */
    static inline int32_t fe_be_i32(const uint8_t *p) {
        uint32_t v; memcpy(&v, p, 4); return (int32_t)FE_BSWAP32(v);
    }
    static inline uint16_t fe_be_u16(const uint8_t *p) {
        uint16_t v; memcpy(&v, p, 2); return (uint16_t)FE_BSWAP16(v);
    }
    """
    int32_t be_i32 "fe_be_i32"(const uint8_t* p) noexcept nogil
    uint16_t be_u16 "fe_be_u16"(const uint8_t* p) noexcept nogil


cdef enum BarState:
    BAR_NONE = 0      # no candle yet for this instrument and interval
    BAR_OPEN = 1      # a candle is building and has not been emitted in its latest form
    BAR_EMITTED = 2   # emitted complete; a tick still inside its grace re-opens it

ctypedef struct SlotState:
    # Per instrument. The session window of one IST day is cached so that the per-tick
    # path needs no division while ticks stay inside it.
    int64_t day_start_ns     # IST midnight of the cached day (INT64_MIN: none yet)
    int64_t open_ns          # session open and close instants of that day
    int64_t close_ns
    int64_t preopen_day      # IST day number whose pre-open price is known (-1: none)
    int64_t extremes_day_ns  # the day_start_ns whose date day_high/day_low hold (INT64_MIN: none)
    uint64_t key             # the instrument's key: how a checkpoint finds its slot again
    int32_t open_s           # session open and close, seconds after IST midnight
    int32_t close_s
    int32_t preopen_price
    int32_t day_high         # largest day high of that date's in-session ticks so far
    int32_t day_low          # smallest non-zero day low of them (INT32_MAX: none yet)

ctypedef struct Bar:
    # Per instrument and interval: the current candle and its volume baselines.
    int64_t start_ns         # bucket start (valid unless state == BAR_NONE)
    int64_t end_ns           # bucket end: start + interval, or the session close
    int64_t base             # baseline cumulative volume of this candle (-1: not yet)
    int64_t last             # cumulative volume of its last accepted volume tick (-1: none)
    int64_t next_base        # baseline the next candle starts from (-1: none)
    int32_t open
    int32_t high
    int32_t low
    int32_t close
    uint8_t state            # BarState

ctypedef struct CandleRow:
    # One completed (or in-progress snapshot of a) candle, as the flusher receives it.
    int64_t bucket_start_ns  # Unix ns of the bucket start
    int64_t volume
    int32_t slot             # instrument slot (index into the instrument list)
    int32_t open             # prices in integer units of the instrument's price scale
    int32_t high
    int32_t low
    int32_t close
    uint16_t interval        # index into the kernel's interval list
    uint8_t final            # 1: complete; 0: snapshot of a candle still building


cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <intrin.h>
    static inline int64_t fe_load_acquire(const int64_t *p) {
        int64_t v = *(volatile const int64_t *)p; _ReadWriteBarrier(); return v;
    }
    static inline void fe_store_release(int64_t *p, int64_t v) {
        _ReadWriteBarrier(); *(volatile int64_t *)p = v;
    }
    #else
    static inline int64_t fe_load_acquire(const int64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void fe_store_release(int64_t *p, int64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    #endif
    """
    # The candle ring's head and tail are shared by the kernel (producer) and the flusher
    # thread (consumer), both running without the GIL.
    int64_t load_acquire "fe_load_acquire"(const int64_t* p) noexcept nogil
    void store_release "fe_store_release"(int64_t* p, int64_t v) noexcept nogil


cdef enum:
    # Bytes for a trading symbol in a CandleRecord, NUL-padded. Kite's longest symbols
    # (options such as BANKNIFTY24DEC52000CE, MCX and NCO contracts) are about 30 bytes.
    SYMBOL_BYTES = 40
    # Bytes for an exchange code, NUL-padded. The longest is 7 (INDICES); 12 fills the
    # record to a multiple of 8 bytes, which alignment would pad it to anyway.
    EXCHANGE_BYTES = 12

ctypedef struct CandleRecord:
    # A candle resolved for storage: what the database sink, the spill file and the other
    # sinks take. Prices stay integers; ``decimals`` is the instrument's price scale (log10).
    int64_t bucket_start_ns  # Unix ns of the bucket start
    int64_t volume
    int32_t open
    int32_t high
    int32_t low
    int32_t close
    int16_t minutes          # candle interval
    uint8_t decimals
    uint8_t final            # 1: complete; 0: snapshot of a candle still building
    char symbol[SYMBOL_BYTES]
    char exchange[EXCHANGE_BYTES]  # the instrument's exchange: NSE and BSE share symbols
