"""A broker's compiled batch decoder, bound to the engine's instrument slots.

Every broker's compiled decoder module has the same entry point::

    decode_records(buf, offsets, lengths, recv_ns, first, out, start, faults, fault_record,
                   keys, slots, shift) -> (next record, rows end)

which fills neutral tick rows (``KTICK_DTYPE``) from raw messages without the GIL, resolves
each packet's instrument to its slot through the ``SlotTable`` arrays, counts malformed
messages by fault code and stops early when ``out`` has no room for the next message.
"""

import importlib
from dataclasses import dataclass, field
from enum import IntEnum
from types import ModuleType

import numpy as np

from feedengine.slots import SlotTable
from feedengine.source import MessageBatch


@dataclass
class Decoder:
    """One broker's decoder over one slot table.

    Parameters
    ----------
    module
        The compiled module (``decode_records``, ``NUM_FAULTS``).
    faults
        The broker's fault enum; value 0 is "no fault".
    table
        The instruments' slots by key.
    """

    module: ModuleType
    faults: type[IntEnum]
    table: SlotTable
    #: Faults counted so far, by code.
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.module.NUM_FAULTS, np.int64)

    @classmethod
    def load(cls, module: str, faults: str, table: SlotTable) -> "Decoder":
        """From dotted names: ``"feedengine.brokers.kite._wire"`` and
        ``"feedengine.brokers.kite.wire:Fault"``."""
        fault_module, _, fault_name = faults.partition(":")
        enum = getattr(importlib.import_module(fault_module), fault_name)
        return cls(importlib.import_module(module), enum, table)

    def decode(
        self, batch: MessageBatch, first: int, out: np.ndarray, first_bad: np.ndarray
    ) -> tuple[int, int]:
        """Decode ``batch`` from message ``first`` into ``out``; ``(next message, rows)``.

        ``first_bad[0]`` is set to the index of the first malformed message, if it is -1.
        """
        result: tuple[int, int] = self.module.decode_records(
            batch.buf,
            batch.offsets,
            batch.lengths,
            batch.recv_ns,
            first,
            out,
            0,
            self.counts,
            first_bad,
            self.table.keys,
            self.table.slots,
            self.table.shift,
        )
        return result

    def fault_counts(self, since: np.ndarray | None = None) -> dict[str, int]:
        """Faults by name (those with a count), optionally since an earlier ``counts``."""
        counts = self.counts if since is None else self.counts - since
        return {self.faults(i).name: int(v) for i, v in enumerate(counts.tolist()) if i and v}
