"""A school install's replica: who it is, and the events it writes.

Sans-I/O: the store is passed in, time comes in as ``now_ms``. Errors for
local misuse (``EditError``) are raised before anything is written.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

import msgspec

from .clocks import hlc_from_ms, hlc_ms, local_clock
from .errors import InputError
from .events import (
    REFERENSI_ORIGIN,
    Batch,
    Event,
    central_origins,
    centre_origin,
    school_row_id,
)
from .schema import Entity, Owner, entity
from .store import AppendReport, Store
from .values import Value, parse, shown

# Seed events (the school's identity, Referensi) carry fixed timestamps so that
# every replica that makes them offline makes the very same events.
SEED_HLC = hlc_from_ms(int(dt.datetime(2023, 1, 1, tzinfo=dt.UTC).timestamp() * 1000))


class EditError(InputError):
    """A local edit that cannot be made; nothing was written."""


class Identity(msgspec.Struct, frozen=True):
    npsn: str
    origin: str  # this install's origin
    author: str = "operator"
    role: str = "operator"

    @property
    def sekolah_id(self) -> str:
        return school_row_id(self.npsn)

    @property
    def central(self) -> frozenset[str]:
        return central_origins(self.npsn)


def new_origin() -> str:
    return str(uuid.uuid4())


def referensi_events() -> list[Event]:
    """Referensi as the global origin's events, the same on every replica."""
    from .referensi import referensi_rows

    events = []
    for name, rows in referensi_rows().items():
        for row in rows:
            changes = {k: v for k, v in row.items() if k != "ref_id"}
            events.append((name, str(row["ref_id"]), changes))
    return [Event(origin=REFERENSI_ORIGIN, seq=i, hlc=SEED_HLC + i, entity=name, row_id=rid,
                  changes=changes, author="pusat", role="pusat")
            for i, (name, rid, changes) in enumerate(events, start=1)]


def school_fields(npsn: str, nama: str | None, bentuk: str, refs: list[Event],
                  ) -> dict[str, object]:
    """Deterministic values for the sekolah row's required fields (VervalSP stand-ins).

    They depend only on the arguments, so the centre's first event of a school
    (``selaras admin school add``) equals the one an offline install makes.
    """
    live = [ev for ev in refs if ev.changes.get("expired_date") is None]
    kinds = {str(ev.changes["nama"]).upper(): ev.changes["bentuk_pendidikan_id"]
             for ev in live if ev.entity == "ref.bentuk_pendidikan"}
    if bentuk.upper() not in kinds:
        raise EditError(f"bentuk pendidikan {shown(bentuk)} tidak dikenal; yang dikenal: "
                        f"{', '.join(sorted(kinds))}")
    # A school sits in a region of the finest level (a kecamatan).
    regions = [ev.changes for ev in live if ev.entity == "ref.mst_wilayah"]
    finest = max((int(str(r["id_level_wilayah"])) for r in regions), default=0)
    codes = sorted(str(r["kode_wilayah"]) for r in regions
                   if int(str(r["id_level_wilayah"])) == finest)
    if not codes:
        raise EditError("Referensi tidak berisi wilayah (ref.mst_wilayah)")
    return {
        "nama": nama or f"{bentuk.upper()} {npsn}",
        "bentuk_pendidikan_id": kinds[bentuk.upper()],
        "status_sekolah": 1,  # negeri
        "alamat_jalan": f"Jl. Pendidikan No. {int(npsn) % 97 + 1}",
        "desa_kelurahan": "Sukamaju",
        "kode_wilayah": codes[int(npsn) % len(codes)],
    }


def school_identity_event(npsn: str, fields: Mapping[str, object]) -> Event:
    """The centre's first event for a school: its sekolah row (VervalSP's data)."""
    e = entity("sekolah")
    changes = {k: parse(e, e.by_name[k], v) for k, v in {**fields, "npsn": npsn}.items()}
    return Event(origin=centre_origin(npsn), seq=1, hlc=SEED_HLC, entity="sekolah",
                 row_id=school_row_id(npsn), changes=changes, author="pusat", role="pusat")


class Replica:
    """Writes this install's own events into its store."""

    def __init__(self, store: Store, identity: Identity) -> None:
        self.store = store
        self.identity = identity

    def record(self, changes: list[tuple[str, str, dict[str, Value]]], now_ms: int,
               ) -> AppendReport:
        """Append one event per (entity, row_id, changes), in order, as this origin."""
        me = self.identity
        vector = self.store.vector()
        context = {o: s for o, s in vector.items() if o != me.origin}
        carried = context if context != self.store.context(me.origin) else None
        clock = local_clock(self.store.max_hlc(me.origin), self.store.max_hlc(), now_ms)
        first = clock.tick(now_ms, len(changes))
        # Above everything seen of the rows written, even if this PC's clock is behind:
        # a write made after seeing a value supersedes it on every replica.
        seen = max((self.store.row_hlc(name, row_id) for name, row_id, _ in changes), default=0)
        behind_ms = hlc_ms(seen) - now_ms if seen >= first else 0
        first = max(first, seen + 1)
        seq = vector.get(me.origin, 0)
        events = [Event(origin=me.origin, seq=seq + i, hlc=first + i - 1, entity=name,
                        row_id=row_id, changes=fields, author=me.author, role=me.role,
                        context=carried if i == 1 else None)
                  for i, (name, row_id, fields) in enumerate(changes, start=1)]
        report = self.store.append(Batch.from_events(events))
        return msgspec.structs.replace(report, clock_behind_ms=behind_ms)

    def add(self, entity_name: str, raw: Mapping[str, object], now_ms: int) -> str:
        """Create a row; returns its new id."""
        e = entity(entity_name)
        fields = self._parse(e, raw, None)
        if e.school_field:
            given = fields.setdefault(e.school_field, self.identity.sekolah_id)
            if given != self.identity.sekolah_id:
                raise EditError(f"{e.name}.{e.school_field}: instalasi ini hanya memegang "
                                f"sekolah {self.identity.npsn} ({self.identity.sekolah_id})")
        row_id = str(uuid.uuid4())
        self.record([(e.name, row_id, fields)], now_ms)
        return row_id

    def edit(self, entity_name: str, row_id: str, raw: Mapping[str, object], now_ms: int,
             ) -> AppendReport:
        e = entity(entity_name)
        row = self._existing(e, row_id)
        fields = self._parse(e, raw, row)
        if e.school_field and fields.get(e.school_field, row[e.school_field]) != row[
                e.school_field]:
            raise EditError(f"{e.name}.{e.school_field}: baris tidak dapat dipindah ke "
                            "sekolah lain")
        return self.record([(e.name, row_id, fields)], now_ms)

    def delete(self, entity_name: str, row_id: str, now_ms: int) -> AppendReport:
        """Rows are never removed: deleting sets soft_delete = 1."""
        return self.edit(entity_name, row_id, {"soft_delete": "1"}, now_ms)

    def resolve(self, entity_name: str, row_id: str, field: str, raw: object, now_ms: int,
                ) -> AppendReport:
        """Settle a conflict: a new write whose context holds every sibling."""
        held = {(s.entity, s.row_id, s.field) for s in self.store.conflicts()}
        if (entity_name, row_id, field) not in held:
            raise EditError(f"tidak ada konflik pada {shown(f'{entity_name} {row_id} {field}')}")
        return self.edit(entity_name, row_id, {field: raw}, now_ms)

    def _existing(self, e: Entity, row_id: str) -> dict[str, object]:
        try:
            row_id = str(uuid.UUID(row_id))
        except ValueError:
            raise EditError(f"{shown(row_id)} bukan id baris (UUID)") from None
        row = self.store.rows(e.name).get(row_id)
        if row is None:
            raise EditError(f"{e.name} tidak punya baris {row_id}")
        return row

    def _parse(self, e: Entity, raw: Mapping[str, object], row: Mapping[str, object] | None,
               ) -> dict[str, Value]:
        if e.is_reference or e.name == "sekolah" and row is None:
            raise EditError(f"data {e.name} datang dari server pusat, tidak dapat diubah di sini")
        if not raw:
            raise EditError("tidak ada yang diubah: beri isian=nilai (FIELD=VALUE)")
        if e.name == "ptk" and row is not None and self._non_induk_here(str(row[e.key])):
            raise EditError("PTK ini non-induk di sekolah ini: biodatanya diubah di sekolah "
                            "induknya dan turun dari sana (Sekolah Induk) pada sinkronisasi "
                            "atau Tarik Data; di sini hanya penugasannya (ptk_terdaftar)")
        verified = bool(row and e.verified_by and row.get(e.verified_by) == 1)
        out: dict[str, Value] = {}
        for name, value in raw.items():
            f = e.by_name.get(name)
            if f is None:
                raise EditError(f"{e.name} tidak punya isian {shown(name)}; isiannya: "
                                f"{', '.join(e.by_name)}")
            if f.owner is Owner.CENTRE or f.owner is Owner.VERVAL and verified:
                raise EditError(f"{e.name}.{name} diisi oleh server pusat"
                                + (" (sudah diverifikasi)" if f.owner is Owner.VERVAL else ""))
            out[name] = parse(e, f, value)
        return out

    def _non_induk_here(self, ptk_id: str) -> bool:
        """Whether the teacher's live registrations at this school are all non-induk: the
        home school keeps their biodata (the centre copies it here)."""
        mine = [r for r in self.store.rows("ptk_terdaftar").values()
                if str(r.get("ptk_id")) == ptk_id and r.get("soft_delete") != 1
                and str(r.get("sekolah_id")) == self.identity.sekolah_id]
        return bool(mine) and not any(r.get("ptk_induk") == 1 for r in mine)
