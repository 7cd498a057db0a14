"""Cutting what a school lacks into batches within the session's limits (protocol R7, R8).

Batches go out in (origin, seq) order: every batch holds, per origin, the next
run of seqs, so the receiver can apply each one as it comes (a later seq before
an earlier one would be held back). Tables are sliced with Arrow, never row by row.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from selaras.engine.events import Batch

Range = tuple[bytes, int, int]  # origin (16 bytes), first seq, last seq


def _storage(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """UUID columns as their 16-byte storage, which Arrow can compare and group."""
    return pa.chunked_array([c.storage for c in col.chunks], type=pa.binary(16))


def _ranges(batch: Batch) -> list[Range]:
    bounds: dict[bytes, tuple[int, int]] = {}
    for t in batch.tables.values():
        g = pa.table({"o": _storage(t["origin"]), "s": t["seq"]}).group_by("o").aggregate(
            [("s", "min"), ("s", "max")])
        for o, lo, hi in zip(g["o"].to_pylist(), g["s_min"].to_pylist(), g["s_max"].to_pylist(),
                             strict=True):
            old = bounds.get(o)
            bounds[o] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
    return [(o, lo, hi) for o, (lo, hi) in sorted(bounds.items())]


def _select(table: pa.Table, ranges: list[Range]) -> pa.Table:
    origin = _storage(table["origin"])
    mask = None
    for o, lo, hi in ranges:
        m = pc.and_(pc.equal(origin, pa.scalar(o, pa.binary(16))),
                    pc.and_(pc.greater_equal(table["seq"], lo), pc.less_equal(table["seq"], hi)))
        mask = m if mask is None else pc.or_(mask, m)
    return table.filter(mask) if mask is not None else table.slice(0, 0)


def _sub(batch: Batch, ranges: list[Range]) -> Batch:
    return Batch({n: _select(t, ranges) for n, t in batch.tables.items()},
                 _select(batch.contexts, ranges))


def cut(batch: Batch, max_events: int, max_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Yield (payload, count) per batch, each within ``max_events`` and ``max_bytes``."""
    total = len(batch)
    if not total:
        return
    per_event = max(1, sum(t.nbytes for t in batch.tables.values()) // total)
    step = max(1, min(max_events, (max_bytes // 2) // per_event))
    plan: list[list[Range]] = [[]]
    room = step
    for o, lo, hi in _ranges(batch):
        while lo <= hi:
            if room == 0:
                plan.append([])
                room = step
            end = min(hi, lo + room - 1)
            plan[-1].append((o, lo, end))
            room -= end - lo + 1
            lo = end + 1
    for ranges in plan:
        yield from _encode(batch, ranges, max_bytes)


def _encode(batch: Batch, ranges: list[Range], max_bytes: int) -> Iterator[tuple[bytes, int]]:
    part = _sub(batch, ranges)
    payload = part.to_bytes()
    count = len(part)
    if len(payload) <= max_bytes or count <= 1:
        if count:
            yield payload, count
        return
    # Over the byte limit (wider rows than the estimate): halve the seq runs and retry.
    halves: tuple[list[Range], list[Range]] = ([], [])
    for o, lo, hi in ranges:
        if lo == hi:
            halves[0].append((o, lo, hi))
            continue
        mid = (lo + hi) // 2
        halves[0].append((o, lo, mid))
        halves[1].append((o, mid + 1, hi))
    if not halves[1]:  # one seq per origin: split the origins instead
        n = len(ranges) // 2
        halves = (ranges[:n], ranges[n:])
    for h in halves:
        yield from _encode(batch, h, max_bytes)
