# cython: language_level=3
"""Interim copy of the broker-neutral contract of ``ext/feedtypes.pxd`` (issue 12).

``KTick``, ``SlotMap`` and ``slot_of`` are being moved into ``feedtypes.pxd`` on main while
this branch is built; until they land there, the Angel One decoder cimports this identical
copy. At the merge: delete this file and cimport the three names from ``feedtypes``.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

ctypedef struct KTick:
    # The broker-neutral row every decoder fills and the candle kernel reads (SPEC §4).
    int64_t recv_ns          # receive time, Unix ns
    int64_t event_ns         # event time: the exchange's when the packet carries one (non-zero), else recv_ns
    int64_t volume           # cumulative day volume; valid when has_volume
    int32_t slot             # instrument slot (index into the instrument list); -1: unknown instrument
    int32_t price            # last traded price, integer units of the instrument's price scale
    int32_t day_high         # the day's high and low so far as the packet reports them
    int32_t day_low          # (0: none); valid only when has_day_range
    uint8_t has_volume
    uint8_t has_day_range
    uint8_t auction          # 1: before the open this price is the pre-open auction's

ctypedef struct SlotMap:
    const uint64_t* keys     # table of instrument keys, 0 = empty slot (no key is 0)
    const int32_t* slots
    uint32_t shift           # 64 - log2(table size)
    uint64_t mask            # table size - 1

cdef inline int32_t slot_of(const SlotMap* m, uint64_t key) noexcept nogil:
    cdef uint64_t h = (key * <uint64_t>11400714819323198485ULL) >> m.shift
    while m.keys[h] != 0:
        if m.keys[h] == key:
            return m.slots[h]
        h = (h + 1) & m.mask
    return -1
