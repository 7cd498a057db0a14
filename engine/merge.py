"""The merge, as a pure-Python fold: the executable specification.

Given every event a replica holds, in any order and with any repetition,
``fold`` returns the materialised rows and the conflicts. The DuckDB store
computes the same thing set-based; property tests hold the two equal.

The rules (DESIGN.md section 4):

1. Each field is a last-writer-wins register ordered by ``lww_key`` =
   (effective hlc, origin). The effective hlc is the event's own (rule 5 aside).
2. Authority: a write by a school origin has no effect on a CENTRE field, nor
   on a VERVAL field once the centre has verified the row, i.e. when its key
   is above the key of the centre's first write of ``verified_by = 1``.
   Writes without effect are ignored by every later rule.
3. A row exists once it has a write with effect.
4. Conflicts: the writes to one field that no other write to it causally
   follows are its siblings; if they hold more than one value, every sibling
   is reported, and the one that is the LWW winner is marked. A write follows
   another when it comes later from the same origin or its causal context
   holds it.
5. Clock bounds: a ``koreksi_jam`` row written by the centre, (install_id,
   seq_from, seq_to, hlc_from), gives each event of that school origin with
   seq_from <= seq <= seq_to the effective hlc ``hlc_from + seq - seq_from``
   (the least one if several rows cover it): a PC clock set years ahead
   does not make that install's writes win over later ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import msgspec

from .clocks import VersionVector, lww_key
from .events import Event
from .schema import BY_NAME, CLOCK_BOUND, Owner
from .values import Value

Rows = dict[str, dict[str, dict[str, Value]]]  # entity -> row_id -> field -> value


class Sibling(msgspec.Struct, frozen=True, order=True):
    """One of the concurrent writes to a conflicted field."""

    entity: str
    row_id: str
    field: str
    origin: str
    seq: int
    value: Value
    author: str
    role: str
    winner: bool


class State(msgspec.Struct):
    rows: Rows
    conflicts: list[Sibling]


class _Write(msgspec.Struct, frozen=True):
    key: int
    origin: str
    seq: int
    value: Value
    author: str
    role: str


def contexts_of(events: Iterable[Event]) -> dict[tuple[str, int], VersionVector]:
    """The causal context in force at every event (carried only where it changed)."""
    by_origin: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        by_origin[ev.origin].append(ev)
    out: dict[tuple[str, int], VersionVector] = {}
    for origin, evs in by_origin.items():
        current: VersionVector = {}
        for ev in sorted(evs, key=lambda ev: ev.seq):
            if ev.context is not None:
                current = ev.context
            out[(origin, ev.seq)] = current
    return out


def clock_bounds(events: Iterable[Event], central: frozenset[str],
                 ) -> dict[str, list[tuple[int, int, int]]]:
    """Rule 5: per school origin, the (seq_from, seq_to, hlc_from) of the centre's
    complete koreksi_jam rows."""
    rows: dict[str, dict[str, tuple[int, Value]]] = defaultdict(dict)
    for ev in events:
        if ev.entity == CLOCK_BOUND and ev.origin in central:
            k = lww_key(ev.hlc, ev.origin)
            row = rows[ev.row_id]
            for name, value in ev.changes.items():
                if k > row.get(name, (-1, None))[0]:
                    row[name] = (k, value)
    out: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for row in rows.values():
        origin, first, last, hlc = (row.get(n, (0, None))[1]
                                    for n in ("install_id", "seq_from", "seq_to", "hlc_from"))
        if (isinstance(origin, str) and isinstance(first, int) and isinstance(last, int)
                and isinstance(hlc, int)):
            out[origin].append((first, last, hlc))
    return out


def effective_hlc(origin: str, seq: int, hlc: int,
                  bounds: dict[str, list[tuple[int, int, int]]], central: frozenset[str]) -> int:
    """Rule 5 for the event (origin, seq) of clock ``hlc``."""
    if origin in central:
        return hlc
    return min((h + seq - first for first, last, h in bounds.get(origin, ())
                if first <= seq <= last), default=hlc)


def fold(events: Iterable[Event], central: frozenset[str]) -> State:
    unique = list({ev.id: ev for ev in events}.values())
    contexts = contexts_of(unique)
    bounds = clock_bounds(unique, central)
    keys = {ev.id: lww_key(effective_hlc(ev.origin, ev.seq, ev.hlc, bounds, central),
                            ev.origin) for ev in unique}

    locks: dict[tuple[str, str], int] = {}  # (entity, row) -> key of first verification
    for ev in unique:
        e = BY_NAME[ev.entity]
        if ev.origin in central and e.verified_by and ev.changes.get(e.verified_by) == 1:
            k, locked = keys[ev.id], (ev.entity, ev.row_id)
            locks[locked] = min(k, locks.get(locked, k))

    writes: dict[tuple[str, str, str], list[_Write]] = defaultdict(list)
    for ev in unique:
        e, k = BY_NAME[ev.entity], keys[ev.id]
        for name, value in ev.changes.items():
            owner = e.by_name[name].owner
            if ev.origin not in central and (
                    owner is Owner.CENTRE
                    or owner is Owner.VERVAL and k > locks.get((ev.entity, ev.row_id), k)):
                continue
            writes[(ev.entity, ev.row_id, name)].append(
                _Write(k, ev.origin, ev.seq, value, ev.author, ev.role))

    rows: Rows = {name: {} for name in BY_NAME}
    conflicts: list[Sibling] = []
    for (entity, row_id, name), ws in writes.items():
        winner = max(ws, key=lambda w: w.key)
        row = rows[entity].setdefault(row_id, dict.fromkeys(BY_NAME[entity].by_name))
        row[name] = winner.value
        siblings = [w for w in ws if not any(_follows(v, w, contexts) for v in ws)]
        if len({s.value for s in siblings}) > 1:
            conflicts += [Sibling(entity, row_id, name, s.origin, s.seq, s.value, s.author,
                                  s.role, s is winner) for s in siblings]
    return State(rows, sorted(conflicts))


def written_once(ev: Event, central: frozenset[str]) -> dict[str, Value] | None:
    """The row ``fold`` makes of a row whose only event is ``ev``: its values, less what
    authority takes away (rule 2); None if nothing of it has effect. A fast path for the
    many rows a first sync writes once."""
    e = BY_NAME[ev.entity]
    if ev.origin in central:
        kept = ev.changes
    else:
        kept = {n: v for n, v in ev.changes.items() if e.by_name[n].owner is not Owner.CENTRE}
    if not kept:
        return None
    return {name: kept.get(name) for name in e.by_name}


def _follows(later: _Write, earlier: _Write, contexts: dict[tuple[str, int], VersionVector],
             ) -> bool:
    if later.origin == earlier.origin:
        return later.seq > earlier.seq
    return contexts[(later.origin, later.seq)].get(earlier.origin, 0) >= earlier.seq
