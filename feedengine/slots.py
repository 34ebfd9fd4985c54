"""Instrument key → kernel slot: the table every broker's compiled decoder looks slots up in.

A broker names its instruments by a 64-bit key (Kite: the instrument token; Angel One:
exchange type and token). The decoders resolve the key of each packet to the instrument's
slot with this open-addressing table (``SlotMap`` in ``ext/feedtypes.pxd``), so that the
neutral tick row the kernel reads already carries the slot.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Fibonacci hashing multiplier, 2^64 / golden ratio (``slot_of`` in feedtypes.pxd).
HASH_MULT = 11400714819323198485
#: Smallest table: 16 entries.
MIN_BITS = 4


@dataclass(frozen=True)
class SlotTable:
    """The arrays of a ``SlotMap``: ``keys`` (0: empty), ``slots`` and the hash ``shift``."""

    keys: np.ndarray
    slots: np.ndarray
    shift: int

    @classmethod
    def build(cls, keys: Sequence[int]) -> "SlotTable":
        """Slot ``i`` for ``keys[i]``; at most half the entries are used.

        Raises
        ------
        ValueError
            A key is 0, outside 64 bits, or given twice.
        """
        if len(set(keys)) != len(keys):
            raise ValueError("instrument keys must be distinct")
        if any(not 0 < k < 2**64 for k in keys):
            raise ValueError("instrument keys must be from 1 to 2**64-1")
        bits = MIN_BITS
        while (1 << bits) < 2 * len(keys):
            bits += 1
        size, shift = 1 << bits, 64 - bits
        table = np.zeros(size, np.uint64)
        slots = np.full(size, -1, np.int32)
        for slot, key in enumerate(keys):
            h = ((key * HASH_MULT) % 2**64) >> shift
            while table[h]:
                h = (h + 1) & (size - 1)
            table[h] = key
            slots[h] = slot
        return cls(table, slots, shift)

    def slot(self, key: int) -> int:
        """The slot of ``key``, -1 if it is not in the table (the compiled lookup's twin)."""
        size = len(self.keys)
        h = ((key * HASH_MULT) % 2**64) >> self.shift
        while self.keys[h]:
            if int(self.keys[h]) == key:
                return int(self.slots[h])
            h = (h + 1) & (size - 1)
        return -1
