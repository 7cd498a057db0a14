"""Finding the rows two replicas disagree on, by their kept digests (protocol R19).

An entity's checksum sums its rows' hashes over 256 buckets of keys
(``values.BUCKETS``, kept in replica.digest). When a session ends with equal
vectors but an entity's checksums differ, the client asks the centre for that
entity's bucket digests (one round trip), then for the row hashes of the
buckets that differ (``MAX_COMPARE_BUCKETS`` a round trip), which names the
rows; it then re-pulls those rows' events and recomputes them from its log
(``rematerialise``). Cassandra's anti-entropy repair (Merkle trees of token
ranges) and PowerSync's bucket checksums are the same idea at a coarser grain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from .protocol import MAX_COMPARE_BUCKETS, Code, Compare, Compared, RemoteError
from .refusals import Detail
from .schema import BY_NAME
from .store import SchoolStore
from .values import BUCKETS, is_uuid

K = TypeVar("K", int, str)


def answer(store: SchoolStore, q: Compare) -> Compared:
    """The centre's answer to one Compare; RemoteError if it asks for nonsense."""
    if (q.entity not in BY_NAME or not all(0 <= b < BUCKETS for b in q.buckets)
            or not all(is_uuid(r) for r in q.rows)):
        raise RemoteError(Code.MALFORMED_MESSAGE, Detail.BAD_COMPARE)
    if q.rows:
        return Compared(q.entity, payload=store.events_of_rows(q.entity, q.rows).to_bytes())
    if q.buckets:
        return Compared(q.entity, rows=store.row_hashes(q.entity, q.buckets))
    return Compared(q.entity, buckets=store.bucket_digests(q.entity))


def differing(ours: Mapping[K, object], theirs: Mapping[K, object]) -> list[K]:
    """The keys whose values differ, or that one side lacks."""
    return sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))


def in_chunks(items: list[K], size: int = MAX_COMPARE_BUCKETS) -> list[list[K]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
