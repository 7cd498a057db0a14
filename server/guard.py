"""What keeps a flood at one door from slowing the others (docs/security.md, Fair sessions).

``RateLimit`` is a token bucket of failures per key (a school, a peer address),
sans-I/O: the caller passes the time. ``CredentialChecks`` runs the slow hash of codes
and passwords on a small pool of its own, refusing more than it can queue, so
guessing codes costs the guesser's budget, not anyone's sync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class RateLimit:
    """At most ``burst`` failures per key at once, one more every ``60 / per_minute`` s:
    a key that used them up waits (``wait``) before it may be checked again."""

    MAX_KEYS = 100_000  # beyond: keys whose bucket is full again are forgotten

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate, self.burst = per_minute / 60, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def wait(self, key: str, now: float) -> float:
        """0 if ``key`` may be checked now, else the seconds until it may."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def failed(self, key: str, now: float) -> None:
        """One failure of ``key``."""
        self._buckets[key] = (self._tokens(key, now) - 1, now)
        if len(self._buckets) > self.MAX_KEYS:
            self._buckets = {k: (t, at) for k, (t, at) in self._buckets.items()
                             if self._tokens(k, now) < self.burst}

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)


class CredentialChecks:
    """Slow credential checks on ``workers`` threads of their own, at most ``queue``
    waiting; ``run`` returns None when the queue is full (the caller says busy)."""

    def __init__(self, workers: int, queue: int) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "selaras-credentials")
        self._room = queue + workers
        self._pending = 0

    async def run(self, fn: Callable[..., T], *args: object) -> T | None:
        if self._pending >= self._room:
            return None
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
