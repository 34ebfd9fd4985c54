# cython: language_level=3
"""What every broker's batch decoder checks before it runs without the GIL: the slot table
and the record arrays. One copy, so that the brokers' decoders cannot drift apart."""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

from feedtypes cimport SlotMap


cdef inline int slot_map(const uint64_t[::1] keys, const int32_t[::1] slots, int shift,
                         SlotMap* m) except -1:
    """Fill ``m`` from a ``SlotTable``'s arrays after checking that a lookup must end."""
    cdef Py_ssize_t size = keys.shape[0], i = 0
    if (slots.shape[0] != size or shift < 1 or shift > 63
            or size != <Py_ssize_t>(<uint64_t>1 << (64 - shift))):
        raise ValueError("slot table: keys and slots must have 2**(64 - shift) entries")
    # A probe stops at an empty entry; a table without one would loop for ever on a miss.
    # SlotTable keeps half its entries empty, so this scan ends within a few entries.
    while i < size and keys[i] != 0:
        i += 1
    if i == size:
        raise ValueError("slot table has no empty entry")
    m.keys = &keys[0]
    m.slots = &slots[0]
    m.shift = shift
    m.mask = size - 1
    return 0


cdef inline int check_records(const uint8_t[::1] buf, const int64_t[::1] offsets,
                              const int64_t[::1] lengths, const int64_t[::1] recv_ns,
                              Py_ssize_t first, Py_ssize_t start, Py_ssize_t cap,
                              int64_t[::1] faults, Py_ssize_t n_faults,
                              int64_t[::1] fault_record) except -1:
    """Raise unless the records from ``first`` lie in ``buf`` and the arrays fit together."""
    cdef Py_ssize_t i, nrec = offsets.shape[0]
    if (lengths.shape[0] != nrec or recv_ns.shape[0] != nrec or faults.shape[0] < n_faults
            or fault_record.shape[0] < 1):
        raise ValueError("record arrays disagree in length")
    if start < 0 or start > cap:
        raise IndexError("start outside the output array")
    if first < 0:
        raise IndexError("first record is negative")
    for i in range(first, nrec):
        if offsets[i] < 0 or lengths[i] < 0 or offsets[i] + lengths[i] > buf.shape[0]:
            raise IndexError(f"record {i} lies outside the buffer")
    return 0
