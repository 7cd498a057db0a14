"""Hybrid logical clocks, version vectors and the last-writer-wins order.

An HLC timestamp is one 64-bit integer: milliseconds since the Unix epoch in
the high 48 bits, a logical counter in the low 16. Time always comes in as an
argument (``now_ms``); nothing here reads a clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

LOGICAL_BITS = 16
MAX_AHEAD_MS = 5 * 60_000  # a clock further ahead of the centre's than this is wrong

VersionVector = dict[str, int]  # origin -> highest seq held


def hlc_from_ms(ms: int) -> int:
    return ms << LOGICAL_BITS


def hlc_ms(hlc: int) -> int:
    return hlc >> LOGICAL_BITS


class HybridClock:
    """An origin's HLC: strictly increasing, never behind what it has seen.

    ``last`` is the highest timestamp issued or observed; persist it (the
    store derives it from the log) and pass it back in on the next start.
    """

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def tick(self, now_ms: int, n: int = 1) -> int:
        """Reserve ``n`` consecutive timestamps; return the first.

        The physical part follows ``now_ms`` when it is ahead; otherwise the
        counter advances (and may carry into the milliseconds, which keeps the
        order strict for very large batches).
        """
        first = max(self.last + 1, hlc_from_ms(now_ms))
        self.last = first + n - 1
        return first

    def observe(self, remote: int) -> None:
        """Take in a timestamp received from elsewhere."""
        self.last = max(self.last, remote)


def local_clock(own_last: int, seen_last: int, now_ms: int) -> HybridClock:
    """An origin's clock, past its own last timestamp and past what it has seen,
    but a peer's timestamp counts only up to ``MAX_AHEAD_MS`` beyond now: one PC
    clock set years ahead must not drag every other clock along."""
    return HybridClock(max(own_last, min(seen_last, hlc_from_ms(now_ms + MAX_AHEAD_MS))))


def origin_rank(origin: str) -> int:
    """The origin's tie-break rank: the first 64 bits of its UUID."""
    return int(uuid.UUID(origin).hex[:16], 16)


def lww_key(hlc: int, origin: str) -> int:
    """The last-writer-wins order (hlc, origin) packed into one integer."""
    return (hlc << 64) | origin_rank(origin)


def merge_vectors(*vectors: Mapping[str, int]) -> VersionVector:
    out: VersionVector = {}
    for v in vectors:
        for origin, seq in v.items():
            if seq > out.get(origin, 0):
                out[origin] = seq
    return out


def vector_of(pairs: Iterable[tuple[str, int]]) -> VersionVector:
    out: VersionVector = {}
    for origin, seq in pairs:
        if seq > out.get(origin, 0):
            out[origin] = seq
    return out
