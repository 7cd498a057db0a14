"""Reading what a school lacks one batch at a time, within the session's limits (R7, R8).

``Ranges`` walks one origin's seqs ``lo < seq <= hi`` through the store's
``events_between``, like the client's ``Outbox``: each call reads one seq range
and encodes it, so a pull of a million events holds about one batch (times the
window, on the wire) in memory, never the whole pull. Batches go out per origin
in seq order, so the receiver can apply each one as it comes. A range whose
payload is over ``max_batch_bytes`` is halved and read again; the next range is
sized from this one's bytes per event.
"""

from __future__ import annotations

from selaras.engine.duckdb_store import DuckDBStore
from selaras.engine.protocol import Limits


class Ranges:
    """The events of ``origin`` with ``lo < seq <= hi``, one batch per ``next()``.

    ``next()`` reads the store: call it off the event loop, on the session's cursor.
    """

    def __init__(self, store: DuckDBStore, origin: str, lo: int, hi: int,
                 limits: Limits) -> None:
        self.store, self.origin, self.limits = store, origin, limits
        self.pos, self.top = lo, hi
        self.step = limits.max_batch_events

    def __bool__(self) -> bool:
        return self.pos < self.top

    def next(self) -> tuple[bytes, int]:
        """The next batch's payload and event count (0 if the range held no event)."""
        limits = self.limits
        while True:
            hi = min(self.top, self.pos + self.step)
            batch = self.store.events_between(self.origin, self.pos, hi)
            payload = batch.to_bytes()
            if len(payload) <= limits.max_batch_bytes or self.step == 1:
                break
            self.step = max(1, self.step // 2)
        count = len(batch)
        # Aim the next range at 90 % of the byte limit: the Arrow IPC framing adds a little.
        per_event = len(payload) / max(1, count)
        self.step = max(1, min(limits.max_batch_events,
                               int(limits.max_batch_bytes * 0.9 / per_event)))
        self.pos = hi
        return payload, count
