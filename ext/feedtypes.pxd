# cython: language_level=3
"""C structs shared by the compiled kernels: the contract between them.

Each struct has exactly one numpy dtype in ``feedengine.dtypes``; a test checks that the
dtype's itemsize and field offsets equal the ones the C compiler chose.
"""
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t

cdef enum:
    # Depth levels per side in a full packet (Kite sends 5 bids then 5 asks).
    DEPTH = 5

cdef enum Fault:
    # Why a message stopped decoding. The packets before the fault are kept.
    FAULT_NONE = 0
    FAULT_EMPTY = 1         # zero-length message
    FAULT_TRUNCATED = 2     # cut inside the packet count or a length prefix
    FAULT_PAST_END = 3      # a declared packet length runs past the end of the message
    FAULT_BAD_LENGTH = 4    # a packet length that is no Kite packet kind
    FAULT_TRAILING = 5      # bytes left over after the declared packets
    N_FAULTS = 6

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

ctypedef struct KTick:
    # The lean row the candle kernel reads: only what SPEC section 4 needs.
    int64_t recv_ns
    int32_t exchange_timestamp
    int32_t last_trade_time
    uint32_t instrument_token
    int32_t last_price
    int32_t volume_traded
    int32_t day_high         # the day's high and low so far, as the packet reports them
    int32_t day_low          # (a zero low: none); valid only when has_day_range
    uint16_t packet_length
    uint8_t segment
    uint8_t has_volume
    uint8_t has_day_range    # the packet carries the day's high and low (ltp packets do not)

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
    uint32_t token
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
    int32_t open             # prices in integer units of 1/divisor(segment)
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
    # sinks take. Prices stay integers; ``decimals`` is log10 of the segment's divisor.
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
