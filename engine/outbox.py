"""Reading what a peer lacks one batch at a time, within the session's limits (R7, R8).

Both sides of a sync send with an ``Outbox``: the school its own push, the
centre what a school lacks, one origin at a time. Each ``next()`` reads one
seq range through the store's ``events_between`` and encodes it, so sending a
million events holds about one batch in memory, never the whole backlog.
"""

from __future__ import annotations

from .protocol import Limits
from .stages import stage
from .store import Store


class Outbox:
    """The events of ``origin`` with ``lo < seq <= hi``, one batch per ``next()``.

    A range whose payload is over ``max_batch_bytes`` is halved and read again;
    the next range is sized from this one's bytes per event. ``next()`` reads
    the store: call it where the store may be used (off the event loop).
    """

    def __init__(self, store: Store, origin: str, lo: int, hi: int, limits: Limits) -> None:
        self.store, self.origin, self.limits = store, origin, limits
        self.pos, self.top = lo, hi
        self.step = limits.max_batch_events
        self.sent: dict[str, int] = {}  # events sent per entity

    def __bool__(self) -> bool:
        return self.pos < self.top

    @stage("read")
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
        for name, t in batch.tables.items():
            self.sent[name] = self.sent.get(name, 0) + t.num_rows
        self.pos = hi
        return payload, count
