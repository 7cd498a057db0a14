"""Where a sync's time goes: seconds per named stage, summed in this process.

Each side of a sync wraps its stages (``with stage("append.merge"): ...``); the
centre reports the sums in ``selaras admin stats``, the client in its sync
report, and the sync benchmark prints the split (docs/benchmarks.md). A stage
costs two clock reads, so it stays on in production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_spent: dict[str, float] = {}


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time what runs inside (or, as a decorator, each call) as ``name``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - start)


def add(name: str, seconds: float) -> None:
    with _lock:
        _spent[name] = _spent.get(name, 0.0) + seconds


def spent() -> dict[str, float]:
    """Seconds per stage so far (a copy: subtract two of them for an interval)."""
    with _lock:
        return dict(_spent)


def since(before: dict[str, float]) -> dict[str, float]:
    """Seconds per stage since ``before`` (a ``spent()``), the stages that took any."""
    return {k: round(v - before.get(k, 0.0), 6) for k, v in sorted(spent().items())
            if v > before.get(k, 0.0)}
