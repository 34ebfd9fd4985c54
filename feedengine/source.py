"""The one interface every tick source implements (SPEC section 1).

A source (a broker's live stream, a tick-file replay, the simulator) yields
:class:`MessageBatch` es: raw binary messages with their receive times, packed in one buffer
so that the broker's compiled decoder takes a whole batch in one call. Another broker's feed
plugs in with its own source and decoder (``feedengine.brokers``); nothing downstream
changes.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from feedengine.instruments import Instrument


@dataclass(frozen=True)
class Gap:
    """A stretch in which a source received nothing for some instruments (an outage).

    Their candles in ``[start_ns, end_ns)`` are missing, and the first tick after it must
    not count the gap's volume: the pipeline marks the instruments' volume baselines as
    unknown before it processes anything received after ``end_ns``.
    """

    keys: tuple[int, ...]  # the instruments' keys (Kite: their tokens)
    start_ns: int
    end_ns: int
    reason: str


@dataclass(frozen=True)
class MessageBatch:
    """Consecutive messages as index arrays into one byte buffer.

    Message ``i`` is ``buf[offsets[i]:offsets[i] + lengths[i]]``, received at ``recv_ns[i]``
    (Unix ns).
    """

    buf: np.ndarray
    recv_ns: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.recv_ns)

    def message(self, i: int) -> memoryview:
        """Payload of message ``i`` (a view, not a copy)."""
        start = int(self.offsets[i])
        return self.buf[start : start + int(self.lengths[i])].data

    @classmethod
    def from_messages(cls, messages: list[tuple[int, bytes]]) -> "MessageBatch":
        """Pack ``(recv_ns, payload)`` pairs into one batch (one copy of the bytes)."""
        lengths = np.fromiter((len(m) for _, m in messages), np.int64, len(messages))
        offsets = np.zeros(len(messages), np.int64)
        if len(messages) > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        buf = np.frombuffer(b"".join(m for _, m in messages), np.uint8)
        recv = np.fromiter((t for t, _ in messages), np.int64, len(messages))
        return cls(buf, recv, offsets, lengths)


class Source(Protocol):
    """A stream of raw messages and the instruments they concern."""

    #: Human-readable name for logs ("replay of day.ticks", "kite", ...).
    name: str
    #: The broker whose messages these are (``feedengine.brokers``): it decodes them.
    broker: str

    @property
    def instruments(self) -> Sequence[Instrument]:
        """The instruments whose ticks this source delivers."""
        ...

    def start(self) -> None:
        """Open connections or files; called once before :meth:`batches`."""
        ...

    def stop(self) -> None:
        """Ask the source to end; :meth:`batches` then returns soon. Thread-safe."""
        ...

    def batches(self) -> Iterator[MessageBatch]:
        """Yield message batches in receive order until the source ends or is stopped."""
        ...

    def position(self) -> dict[str, str | int]:
        """Where the source is, for a checkpoint (empty for a live source)."""
        ...

    def resume(self, position: dict[str, str | int]) -> bool:
        """Continue after ``position`` of an earlier run; False if it is not this source's."""
        ...
