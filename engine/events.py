"""Events and columnar batches of them (DESIGN.md section 4).

An ``Event`` is one change of one row, identified by ``(origin, seq)``. It is
the unit of the reference fold and of small edits. A ``Batch`` holds many
events as Arrow tables, one per entity, so that stores and the wire move them
without a Python object per row: that is the bulk path.

Batch table columns: origin, seq, hlc, row_id, author, role, mask, then every
field of the entity (NULL where the mask says the event does not set it).
The contexts table has one row per (origin, seq, peer, held): an event's
causal context, present only on events where it changed. The signatures table
has one row per (origin, seq, sig): the centre's signature of a centre event
(engine/signatures.py, protocol R18).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal

import msgspec
import pyarrow as pa

from .clocks import VersionVector, vector_of
from .errors import InputError
from .schema import BY_NAME, DECIMAL_SCALE, Entity
from .values import Value, from_python

_NAMESPACE = uuid.UUID("6f1d6a52-4c1e-5b7e-9a43-5e1a7a5a0001")

# The one origin that writes Referensi (ref.*) for every school.
REFERENSI_ORIGIN = str(uuid.uuid5(_NAMESPACE, "referensi"))


def centre_origin(npsn: str) -> str:
    """The centre's origin for one school: derived, so every replica agrees on it."""
    return str(uuid.uuid5(_NAMESPACE, f"pusat/{npsn}"))


def central_origins(npsn: str) -> frozenset[str]:
    """Origins whose writes carry the centre's authority for this school."""
    return frozenset({centre_origin(npsn), REFERENSI_ORIGIN})


def stable_row_id(*parts: object) -> str:
    """A row id every replica derives alike (reference rows, the school's own row)."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(map(str, parts))))


class Event(msgspec.Struct, frozen=True, kw_only=True):
    origin: str
    seq: int
    hlc: int
    entity: str
    row_id: str
    changes: dict[str, Value]
    author: str = ""
    role: str = ""
    context: VersionVector | None = None  # set only where the origin's context changed

    @property
    def id(self) -> tuple[str, int]:
        return (self.origin, self.seq)


_ARROW_TYPES = {
    "uuid": pa.uuid(),
    "text": pa.string(),
    "int": pa.int64(),
    "date": pa.date32(),
    "decimal": pa.decimal128(18, DECIMAL_SCALE),
}
_META = [
    ("origin", pa.uuid()), ("seq", pa.int64()), ("hlc", pa.int64()), ("row_id", pa.uuid()),
    ("author", pa.string()), ("role", pa.string()), ("mask", pa.uint64()),
]
CONTEXT_SCHEMA = pa.schema([("origin", pa.uuid()), ("seq", pa.int64()),
                            ("peer", pa.uuid()), ("held", pa.int64())])
SIGNATURE_SCHEMA = pa.schema([("origin", pa.uuid()), ("seq", pa.int64()), ("sig", pa.binary())])


def arrow_schema(e: Entity) -> pa.Schema:
    return pa.schema(_META + [(f.name, _ARROW_TYPES[f.type]) for f in e.fields])


def _to_arrow(type_: str, v: Value) -> object:
    if v is None:
        return None
    if type_ == "uuid":
        return uuid.UUID(str(v)).bytes
    if type_ == "date":
        return dt.date.fromisoformat(str(v))
    if type_ == "decimal":
        return Decimal(str(v))
    return v


class Batch:
    """Events as Arrow tables: ``tables[entity]``, ``contexts`` and ``signatures``."""

    def __init__(self, tables: dict[str, pa.Table], contexts: pa.Table | None = None,
                 signatures: pa.Table | None = None) -> None:
        self.tables = {name: t for name, t in tables.items() if t.num_rows}
        self.contexts = contexts if contexts is not None else CONTEXT_SCHEMA.empty_table()
        self.signatures = (signatures if signatures is not None
                           else SIGNATURE_SCHEMA.empty_table())

    def __len__(self) -> int:
        return sum(t.num_rows for t in self.tables.values())

    @classmethod
    def from_events(cls, events: Iterable[Event],
                    signatures: Mapping[tuple[str, int], bytes] | None = None) -> Batch:
        """The events as a batch, with those of ``signatures`` (by event id) that apply."""
        by_entity: dict[str, list[Event]] = {}
        contexts: list[tuple[object, int, object, int]] = []
        sigs: list[dict[str, object]] = []
        for ev in events:
            by_entity.setdefault(ev.entity, []).append(ev)
            for peer, held in (ev.context or {}).items():
                contexts.append((_to_arrow("uuid", ev.origin), ev.seq, _to_arrow("uuid", peer),
                                 held))
            if signatures and ev.id in signatures:
                sigs.append({"origin": _to_arrow("uuid", ev.origin), "seq": ev.seq,
                             "sig": signatures[ev.id]})
        tables = {}
        for name, evs in by_entity.items():
            e = BY_NAME[name]
            cols: dict[str, list[object]] = {
                "origin": [_to_arrow("uuid", ev.origin) for ev in evs],
                "seq": [ev.seq for ev in evs], "hlc": [ev.hlc for ev in evs],
                "row_id": [_to_arrow("uuid", ev.row_id) for ev in evs],
                "author": [ev.author for ev in evs], "role": [ev.role for ev in evs],
                "mask": [sum(e.bit(k) for k in ev.changes) for ev in evs],
            }
            for f in e.fields:
                cols[f.name] = [_to_arrow(f.type, ev.changes.get(f.name)) for ev in evs]
            tables[name] = pa.Table.from_pydict(cols, schema=arrow_schema(e))
        ctx = pa.Table.from_pylist(
            [dict(zip(CONTEXT_SCHEMA.names, c, strict=True)) for c in contexts],
            schema=CONTEXT_SCHEMA)
        return cls(tables, ctx, pa.Table.from_pylist(sigs, schema=SIGNATURE_SCHEMA))

    def events(self) -> Iterator[Event]:
        """The batch as Python events (the reference path; slow by design)."""
        contexts: dict[tuple[str, int], VersionVector] = {}
        for c in self.contexts.to_pylist():
            contexts.setdefault((str(c["origin"]), c["seq"]), {})[str(c["peer"])] = c["held"]
        for name, table in self.tables.items():
            e = BY_NAME[name]
            for r in table.to_pylist():
                changes = {f.name: from_python(f, r[f.name]) for f in e.fields
                           if r["mask"] & e.bit(f.name)}
                key = (str(r["origin"]), r["seq"])
                yield Event(origin=key[0], seq=r["seq"], hlc=r["hlc"], entity=name,
                            row_id=str(r["row_id"]), changes=changes, author=r["author"],
                            role=r["role"], context=contexts.get(key))

    def signatures_by_id(self) -> dict[tuple[str, int], bytes]:
        """The signatures carried, by event id (the reference path)."""
        return {(str(r["origin"]), r["seq"]): r["sig"] for r in self.signatures.to_pylist()}

    def vector(self) -> VersionVector:
        """The highest seq per origin in this batch."""
        pairs: list[tuple[str, int]] = []
        for t in self.tables.values():
            pairs += zip(map(str, t["origin"].to_pylist()), t["seq"].to_pylist(), strict=True)
        return vector_of(pairs)

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(BatchFile(
            tables={n: _ipc(t) for n, t in self.tables.items()},
            contexts=_ipc(self.contexts),
            signatures=_ipc(self.signatures) if self.signatures.num_rows else b""))

    @classmethod
    def from_bytes(cls, data: bytes) -> Batch:
        """Decode a batch; MalformedBatch on anything that is not one."""
        try:
            f = msgspec.msgpack.decode(data, type=BatchFile)
            tables = {}
            for name, blob in f.tables.items():
                if name not in BY_NAME:
                    raise MalformedBatch(f"unknown entity {name!r}")
                tables[name] = _from_ipc(blob, arrow_schema(BY_NAME[name]))
            signatures = _from_ipc(f.signatures, SIGNATURE_SCHEMA) if f.signatures else None
            return cls(tables, _from_ipc(f.contexts, CONTEXT_SCHEMA), signatures)
        except (msgspec.DecodeError, pa.ArrowException, OSError, ValueError, TypeError) as exc:
            if isinstance(exc, MalformedBatch):
                raise
            raise MalformedBatch(type(exc).__name__) from exc


class MalformedBatch(InputError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"malformed event batch ({self.reason})"


class BatchFile(msgspec.Struct, frozen=True):
    tables: dict[str, bytes]
    contexts: bytes
    signatures: bytes = b""  # empty when no event carries one (and in bundles made before R18)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _from_ipc(blob: bytes, schema: pa.Schema) -> pa.Table:
    table = pa.ipc.open_stream(blob).read_all()
    if not table.schema.equals(schema):
        raise MalformedBatch("unexpected columns")
    return table


