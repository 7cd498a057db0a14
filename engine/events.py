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
import struct
import uuid
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from .clocks import VersionVector, vector_of
from .errors import InputError
from .schema import BY_NAME, DECIMAL_SCALE, Entity
from .values import FIRST_DATE, LAST_DATE, MAX_TEXT, Value, from_python

_NAMESPACE = uuid.UUID("6f1d6a52-4c1e-5b7e-9a43-5e1a7a5a0001")

# The one origin that writes Referensi (ref.*) for every school.
REFERENSI_ORIGIN = str(uuid.uuid5(_NAMESPACE, "referensi"))


def centre_origin(npsn: str) -> str:
    """The centre's origin for one school: derived, so every replica agrees on it."""
    return str(uuid.uuid5(_NAMESPACE, f"pusat/{npsn}"))


def central_origins(npsn: str) -> frozenset[str]:
    """Origins whose writes carry the centre's authority for this school."""
    return frozenset({centre_origin(npsn), REFERENSI_ORIGIN})


MAX_CONTEXT_PEERS = 1024  # origins one event's causal context may name (a school has a few)


def stable_row_id(*parts: object) -> str:
    """A row id every replica derives alike (reference rows, the school's own row)."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(map(str, parts))))


def school_row_id(npsn: str) -> str:
    """The row id of school ``npsn``'s own row (sekolah), and its ``sekolah_id``."""
    return stable_row_id("sekolah", npsn)


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

    def max_seq(self) -> int:
        """The highest seq of its events (0 if none)."""
        return max((pc.max(t["seq"]).as_py() for t in self.tables.values()), default=0)

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

    def authored(self, author: str, role: str) -> Batch:
        """The batch with every event's author and role set to these (the centre's say)."""
        tables = {}
        for name, t in self.tables.items():
            for col, value in (("author", author), ("role", role)):
                t = t.set_column(t.schema.get_field_index(col), col,
                                 pa.array([value] * t.num_rows, pa.string()))
            tables[name] = t
        return Batch(tables, self.contexts, self.signatures)

    def causally_ready(self, held: VersionVector) -> tuple[Batch, int]:
        """The events whose causal contexts name only events in ``held``, and how many
        are left out: from an origin's first event whose context names more, all the
        rest of that origin (contexts only grow). A context claiming to have seen events
        that do not exist could otherwise hide a real conflict."""
        cut: dict[str, int] = {}
        ctx = self.contexts
        for origin, seq, peer, n in zip(ctx["origin"].to_pylist(), ctx["seq"].to_pylist(),
                                        ctx["peer"].to_pylist(), ctx["held"].to_pylist(),
                                        strict=True):
            o = str(origin)
            if n > held.get(str(peer), 0) and seq > held.get(o, 0):
                cut[o] = min(cut.get(o, seq), seq)
        if not cut:
            return self, 0
        tables = {}
        for name, t in self.tables.items():
            origins = [str(o) for o in t["origin"].to_pylist()]
            keep = pa.array([s < cut.get(o, s + 1) for o, s in zip(
                origins, t["seq"].to_pylist(), strict=True)])
            tables[name] = t.filter(keep)
        kept = Batch(tables, self.contexts, self.signatures)
        return kept, len(self) - len(kept)

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(BatchFile(
            tables={n: _ipc(t) for n, t in self.tables.items()},
            contexts=_ipc(self.contexts),
            signatures=_ipc(self.signatures) if self.signatures.num_rows else b""))

    def check_well_formed(self) -> None:
        """MalformedBatch if any event has a missing id, a bad seq, clock or mask."""
        for name, t in self.tables.items():
            bad = pc.invert(pc.fill_null(pc.and_(pc.greater_equal(t["seq"], 1),
                                                 pc.greater_equal(t["hlc"], 0)), False))
            for column in ("origin", "row_id", "author", "role", "mask"):
                bad = pc.or_(bad, pc.is_null(t[column]))
            over = pc.not_equal(pc.shift_right(t["mask"], len(BY_NAME[name].fields)), 0)
            n = pc.sum(pc.fill_null(pc.or_(bad, over), True).cast(pa.int64())).as_py() or 0
            if n:
                raise MalformedBatch(f"{n} {name} events with bad ids, seq, clock or mask")

    @classmethod
    def from_bytes(cls, data: bytes) -> Batch:
        """Decode a batch; MalformedBatch on anything that is not one.

        What it decodes is about the size of ``data`` (no compressed Arrow, no
        column types but ours), and every value is within the limits a typed
        value has (``values``): the bounds are checked here, once, for the wire
        and bundles alike (docs/security.md).
        """
        try:
            f = msgspec.msgpack.decode(data, type=BatchFile)
            tables = {}
            for name, blob in f.tables.items():
                if name not in BY_NAME:
                    raise MalformedBatch(f"unknown entity {name!r}")
                tables[name] = _from_ipc(blob, arrow_schema(BY_NAME[name]), len(_META))
                _check_values(BY_NAME[name], tables[name])
            signatures = _from_ipc(f.signatures, SIGNATURE_SCHEMA) if f.signatures else None
            contexts = _from_ipc(f.contexts, CONTEXT_SCHEMA)
            _check_contexts(contexts)
            return cls(tables, contexts, signatures)
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


def _from_ipc(blob: bytes, schema: pa.Schema, required: int | None = None) -> pa.Table:
    """An Arrow IPC stream of ``schema`` and record batches alone, none compressed: so
    the decoded table is about the size of ``blob``, whatever it claims. Validated
    whole (offsets, UTF-8, decimal precision), and without a null in its first
    ``required`` columns (all of them if None)."""
    reader = pa.ipc.MessageReader.open_stream(blob)
    first = next(iter(reader), None)
    if first is None or first.type != "schema" or not pa.ipc.read_schema(first).equals(schema):
        raise MalformedBatch("unexpected columns")
    batches = []
    for message in reader:
        if message.type != "record batch" or _compressed(message.metadata):
            raise MalformedBatch("compressed or unexpected Arrow data")
        batches.append(pa.ipc.read_record_batch(message, schema))
    table = pa.Table.from_batches(batches, schema)
    try:
        table.validate(full=True)
    except pa.ArrowInvalid as exc:
        # Arrow's words, less where it found it, and only a short prefix of the value
        raise MalformedBatch(f"invalid values: {str(exc).split('Invalid: ')[-1][:60]}",
                             ) from None
    for column in table.columns[:required]:
        if column.null_count:
            raise MalformedBatch("an empty id, number or signature")
    return table


def _compressed(metadata: pa.Buffer) -> bool:
    """Whether an IPC record batch message says its body is compressed: field 3
    (``compression``) of the RecordBatch table that is field 2 (``header``) of the
    Message table, read straight from the flatbuffer."""
    buf = metadata.to_pybytes()

    def field(table: int, i: int) -> int:  # the field's offset in ``table``, 0 if absent
        vtable = table - struct.unpack_from("<i", buf, table)[0]
        if 4 + 2 * i >= struct.unpack_from("<H", buf, vtable)[0]:
            return 0
        return int(struct.unpack_from("<H", buf, vtable + 4 + 2 * i)[0])

    try:
        message = struct.unpack_from("<I", buf, 0)[0]
        header = field(message, 2)
        if not header:
            return True  # no header: not a record batch we can read
        batch = message + header + struct.unpack_from("<I", buf, message + header)[0]
        return field(batch, 3) != 0
    except struct.error:
        return True


def _check_values(e: Entity, t: pa.Table) -> None:
    """MalformedBatch unless every value is within the limits ``values.parse`` puts on a
    typed one (a decimal's, MAX_DECIMAL, is its Arrow type's precision)."""
    if not t.num_rows:
        return
    types = {"author": "text", "role": "text", **{f.name: f.type for f in e.fields}}
    for name, type_ in types.items():
        col = t[name]
        if col.null_count == len(col):
            continue
        if type_ == "text" and pc.max(pc.utf8_length(col)).as_py() > MAX_TEXT:
            raise MalformedBatch(f"{e.name}.{name}: text longer than {MAX_TEXT} characters")
        if type_ == "date":  # compared as days: Python cannot hold one out of range
            days = pc.min_max(col.cast(pa.int32()))
            if days["min"].as_py() < _FIRST_DAY or days["max"].as_py() > _LAST_DAY:
                raise MalformedBatch(f"{e.name}.{name}: a date out of range")


_EPOCH = dt.date(1970, 1, 1)
_FIRST_DAY, _LAST_DAY = (FIRST_DATE - _EPOCH).days, (LAST_DATE - _EPOCH).days


def _check_contexts(contexts: pa.Table) -> None:
    """MalformedBatch if one event's causal context names more than MAX_CONTEXT_PEERS
    origins."""
    if contexts.num_rows <= MAX_CONTEXT_PEERS:
        return
    ids = pa.table({"origin": contexts["origin"].combine_chunks().storage,
                    "seq": contexts["seq"]})
    counts = ids.group_by(["origin", "seq"]).aggregate([([], "count_all")])
    if pc.max(counts["count_all"]).as_py() > MAX_CONTEXT_PEERS:
        raise MalformedBatch(f"a causal context of more than {MAX_CONTEXT_PEERS} origins")
