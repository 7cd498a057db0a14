"""Helpers for tests of anything built on the engine: simulated replicas.

``Simulation`` plays several replicas of one school (installs and the centre)
that write events and swap what they know, with skewed clocks, and records
every event made. Tests then deliver those events to stores in any order.
"""

from __future__ import annotations

from .clocks import MAX_AHEAD_MS, HybridClock, VersionVector, hlc_from_ms, vector_of
from .events import Event, centre_origin
from .values import Value


class SimulatedReplica:
    def __init__(self, origin: str, skew_ms: int = 0) -> None:
        self.origin = origin
        self.skew_ms = skew_ms
        self.clock = HybridClock()
        self.known: dict[tuple[str, int], Event] = {}
        self.last_context: VersionVector = {}

    def vector(self) -> VersionVector:
        return vector_of(self.known)


class Simulation:
    """Replicas of school ``npsn``; ``replicas[0]`` is the centre."""

    def __init__(self, npsn: str, installs: list[str], skews_ms: list[int] | None = None,
                 ) -> None:
        origins = [centre_origin(npsn), *installs]
        skews = skews_ms or [0] * len(origins)
        self.replicas = [SimulatedReplica(o, s) for o, s in zip(origins, skews, strict=True)]
        self.events: list[Event] = []
        self.now_ms = 1_700_000_000_000

    def write(self, who: int, entity: str, row_id: str, changes: dict[str, Value],
              author: str = "op") -> Event:
        r = self.replicas[who]
        self.now_ms += 7
        vector = r.vector()
        context = {o: s for o, s in vector.items() if o != r.origin}
        ev = Event(origin=r.origin, seq=vector.get(r.origin, 0) + 1,
                   hlc=r.clock.tick(self.now_ms + r.skew_ms), entity=entity, row_id=row_id,
                   changes=changes, author=author, role="pusat" if who == 0 else "operator",
                   context=context if context != r.last_context else None)
        r.last_context = context
        r.known[ev.id] = ev
        self.events.append(ev)
        return ev

    def sync(self, source: int, target: int) -> None:
        """``target`` receives everything ``source`` holds."""
        s, t = self.replicas[source], self.replicas[target]
        for ev in s.known.values():
            t.known.setdefault(ev.id, ev)
            # As local_clock does: a peer's clock counts only a little ahead of ours.
            t.clock.observe(min(ev.hlc, hlc_from_ms(self.now_ms + t.skew_ms + MAX_AHEAD_MS)))
