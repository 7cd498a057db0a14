"""The centre's own changes to schools' data: Manajemen Dapodik, Verval, Referensi and
Tarik Data PD/PTK.

Each change is one signed centre event in the school's log whose author is its
source ("Manajemen Dapodik", "VervalPD", "VervalPTK", "VervalSP", "Tarik Data PD",
"Sekolah Induk"); Referensi's are the global origin's, held once for every school. The
school receives them on its next sync or Tarik Data and is shown where they came from.
Rows are named as people know them (``engine/lookup.py``: NISN, NIK, NUPTK, rombel
name, NPSN). Every function runs on the writer, in one transaction, and raises
EditError (Indonesian, nothing written) when the change cannot be made.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from selaras.engine.clocks import local_clock
from selaras.engine.events import REFERENSI_ORIGIN, Event, centre_origin, stable_row_id
from selaras.engine.labels import entity_label, label
from selaras.engine.lookup import describe, find_row
from selaras.engine.replica import EditError
from selaras.engine.schema import Entity, Owner, entity
from selaras.engine.store import (
    CENTRE,
    MANAJEMEN,
    REFERENSI,
    SEKOLAH_INDUK,
    VERVAL_PD,
    VERVAL_PTK,
    VERVAL_SP,
    CentreStore,
    centre_event,
    centre_events,
)
from selaras.engine.values import Value, parse

# Verval's kinds: the entity it verifies and the source it writes as.
VERVAL = {"pd": ("peserta_didik", VERVAL_PD), "ptk": ("ptk", VERVAL_PTK),
          "sp": ("sekolah", VERVAL_SP)}
# What a new student's identity needs before a NISN is issued.
NISN_IDENTITY = ("nama", "tanggal_lahir", "nik", "nama_ibu_kandung")
NIK = re.compile(r"\d{16}")  # as Validasi Lokal's PD rule: 16 digits, not all zeros


@dataclass(frozen=True)
class Change:
    """One centre change written: where, on which row (named), what, by which source."""

    npsn: str
    entity: str
    row_id: str
    name: str
    fields: dict[str, Value]
    source: str

    def text(self) -> str:
        what = ", ".join(f"{label(self.entity, k)} = {v}" for k, v in self.fields.items())
        where = f"sekolah {self.npsn}" if self.npsn else "setiap sekolah"
        return (f"{self.source}: {entity_label(self.entity)} {self.name}: {what}; sampai di "
                f"{where} pada sinkronisasi atau Tarik Data berikutnya")


def edit(centre: CentreStore, npsn: str, entity_name: str, key: str,
         raw: Mapping[str, str], now_ms: int) -> Change:
    """Manajemen Dapodik: any field of any row of the school, with the centre's
    authority; the verification flags are Verval's."""
    e = _school_entity(entity_name)
    fields = _parsed(e, raw, lambda name: name != e.verified_by,
                     f"{e.verified_by} diisi oleh Verval ('selaras admin verval')")
    return _write(centre, npsn, e, key, fields, MANAJEMEN, now_ms)


def verval(centre: CentreStore, npsn: str, kind: str, key: str, raw: Mapping[str, str],
           now_ms: int) -> Change:
    """Verval PD, PTK or SP: corrections of the identity fields the centre owns, and the
    person marked verified (the school can no longer change those fields)."""
    if kind not in VERVAL:
        raise EditError(f"Verval {kind!r} tidak dikenal; pilih salah satu: {', '.join(VERVAL)}")
    entity_name, source = VERVAL[kind]
    e = entity(entity_name)
    owned = {f.name for f in e.fields if f.owner is (Owner.VERVAL if e.verified_by
                                                      else Owner.CENTRE)}
    fields = _parsed(e, raw, owned.__contains__,
                     f"{source} membetulkan {', '.join(label(e.name, f) for f in sorted(owned))}",
                     allow_empty=bool(e.verified_by))
    if e.verified_by:
        fields[e.verified_by] = 1
    return _write(centre, npsn, e, key, fields, source, now_ms)


def issue_nisn(centre: CentreStore, npsn: str, key: str, now_ms: int) -> Change:
    """A NISN for a new student whose identity is complete and who is no one else: no
    live student at any school has the NIK. The student is verified with it."""
    store = centre.school(npsn)
    row_id = find_row(store, "peserta_didik", key)
    row = store.rows("peserta_didik")[row_id]
    if row.get("nisn"):
        raise EditError(f"{describe('peserta_didik', row_id, row)} sudah punya NISN")
    missing = [label("peserta_didik", f) for f in NISN_IDENTITY if not row.get(f)]
    if missing:
        raise EditError(f"identitas {describe('peserta_didik', row_id, row)} belum lengkap "
                        f"({', '.join(missing)}): NISN belum dapat diterbitkan")
    nik = str(row["nik"])
    if not NIK.fullmatch(nik) or nik == "0" * 16:
        raise EditError(f"NIK {nik} bukan 16 angka: NISN belum dapat diterbitkan")
    others = [(school, other_id, other) for school, other_id, other in
              centre.people("peserta_didik", "nik", nik) if (school, other_id) != (npsn, row_id)]
    if others:
        school, other_id, other = others[0]
        who = describe("peserta_didik", other_id, other)
        raise EditError(f"NIK {nik} sudah tercatat untuk {who} di sekolah "
                        f"{school}: orang yang sama tidak mendapat NISN kedua (pindahkan dengan "
                        "'selaras transfer pd', atau betulkan NIK-nya)")
    birth = row["tanggal_lahir"]
    fields: dict[str, Value] = {"nisn": _new_nisn(centre, int(str(birth)[:4])),
                                "status_verval_pd": 1}
    return _write(centre, npsn, entity("peserta_didik"), row_id, fields, VERVAL_PD, now_ms)


def _new_nisn(centre: CentreStore, birth_year: int) -> str:
    """Ten digits: the birth year's last three, then seven no student has with them."""
    while True:
        nisn = f"{birth_year % 1000:03d}{secrets.randbelow(10 ** 7):07d}"
        if not centre.people("peserta_didik", "nisn", nisn):
            return nisn


def referensi_add(centre: CentreStore, npsn: str, table: str, code: str,
                  raw: Mapping[str, str], now_ms: int) -> Change:
    """A new code of Referensi table ``table`` (``agama`` or ``ref.agama``), for every
    school (written through ``npsn``'s store: Referensi is held once)."""
    e = _referensi(table)
    row_id, key = _code(e, code)
    if row_id in centre.school(npsn).rows(e.name):
        raise EditError(f"{entity_label(e.name)} sudah punya kode {code}")
    fields = _parsed(e, raw, lambda name: name != e.fields[0].name,
                     "kodenya diberi sebagai argumen CODE")
    missing = [label(e.name, f.name) for f in e.fields[1:] if f.required and fields.get(f.name)
               is None]
    if missing:
        raise EditError(f"isian wajib {entity_label(e.name)} belum diberi: {', '.join(missing)}")
    return _write_referensi(centre, npsn, e, code, {e.fields[0].name: key, **fields}, now_ms)


def referensi_expire(centre: CentreStore, npsn: str, table: str, code: str, date: str,
                     now_ms: int) -> Change:
    """Retire a code from ``date`` on: a school still using it sees it in Validasi Lokal."""
    e = _referensi(table)
    row_id, _ = _code(e, code)
    if row_id not in centre.school(npsn).rows(e.name):
        raise EditError(f"{entity_label(e.name)} tidak punya kode {code}")
    expired = parse(e, e.by_name["expired_date"], date)
    return _write_referensi(centre, npsn, e, code, {"expired_date": expired}, now_ms)


def _referensi(table: str) -> Entity:
    e = entity(table if table.startswith("ref.") else f"ref.{table}")
    if not e.is_reference:
        raise EditError(f"{table} bukan tabel Referensi")
    return e


def _code(e: Entity, code: str) -> tuple[str, Value]:
    """The row id of ``code`` in ``e`` (as every replica derives it) and the code's value."""
    key = parse(e, e.fields[0], code)
    return stable_row_id(e.name, key), key


def _write_referensi(centre: CentreStore, npsn: str, e: Entity, code: str,
                     fields: dict[str, Value], now_ms: int) -> Change:
    row_id, _ = _code(e, code)
    with centre.transaction():
        store = centre.school(npsn)
        clock = local_clock(store.max_hlc(REFERENSI_ORIGIN), store.max_hlc(REFERENSI_ORIGIN),
                            now_ms)
        event = Event(origin=REFERENSI_ORIGIN, seq=store.vector().get(REFERENSI_ORIGIN, 0) + 1,
                      hlc=clock.tick(now_ms), entity=e.name, row_id=row_id, changes=fields,
                      author=REFERENSI, role=CENTRE)
        centre.append_centre(npsn, [event])
    return Change("", e.name, row_id, f"kode {code}", fields, REFERENSI)


# Tarik Data PD and PTK: the person's entity, how to find them, where a school registers
# them (the row that says whether they left), and what comes with them.
TRANSFERS = {
    "pd": ("peserta_didik", ("nisn", "nik"), "registrasi_peserta_didik", "peserta_didik_id",
           ("peserta_didik_longitudinal",)),
    "ptk": ("ptk", ("nuptk", "nik"), "ptk_terdaftar", "ptk_id", ()),
}
TARIK_DATA = {"pd": "Tarik Data PD", "ptk": "Tarik Data PTK"}


@dataclass(frozen=True)
class Transferred:
    entity: str
    row_id: str
    nama: str
    origin_npsn: str
    events: int


def transfer(centre: CentreStore, npsn: str, kind: str, key: str, now_ms: int,
             non_induk: bool = False) -> Transferred:
    """Tarik Data PD/PTK: the person ``key`` names, registered nowhere now, written into
    school ``npsn``'s log as centre events (the person's row as the school they left
    holds it, and what comes with it: a student's yearly records). Refused while the
    person is still registered at a school, or is at ``npsn`` already: one person is one
    row, wherever they go. ``non_induk`` (PTK only): a teacher who stays at their home
    school (sekolah induk) also teaches at ``npsn``; their row as the home school holds
    it, which keeps it up to date (``follow_home_school``)."""
    if non_induk and kind != "ptk":
        raise EditError("--non-induk hanya untuk PTK: peserta didik terdaftar di satu "
                        "sekolah saja")
    entity_name, keys, registration, link, history = TRANSFERS[kind]
    e = entity(entity_name)
    held = {(school, row_id): row for f in keys for school, row_id, row
            in centre.people(e.name, f, key.strip())}
    if not held:
        raise EditError(f"tidak ada {entity_label(e.name)} dengan "
                        f"{' atau '.join(label(e.name, f) for f in keys)} {key} di server pusat")
    ids = {row_id for _, row_id in held}
    if len(ids) > 1:
        raise EditError(f"{key} cocok dengan {len(ids)} orang di server pusat: beri "
                        f"{label(e.name, keys[0])}-nya")
    (row_id,) = ids
    schools = sorted(school for school, _ in held)
    name = describe(e.name, row_id, held[schools[0], row_id])
    if npsn in schools:
        raise EditError(f"{name} sudah ada di sekolah ini")
    current = {school: [r for r in centre.school(school).rows(registration).values()
                        if str(r.get(link)) == row_id and not r.get("soft_delete")
                        and not r.get("jenis_keluar_id")] for school in schools}
    homes = [school for school in schools
             if any(r.get("ptk_induk") == 1 for r in current[school])]
    if non_induk:
        if not homes:
            raise EditError(f"{name} tidak berinduk di sekolah mana pun: tarik tanpa "
                            "--non-induk (menjadi PTK induk di sekolah ini)")
        schools = homes
    else:
        for school in schools:
            if current[school]:
                hint = (" (atau tarik dengan --non-induk bila ia tetap berinduk di sana)"
                        if school in homes else "")
                raise EditError(f"{name} masih terdaftar di sekolah asal {school} "
                                f"({_school_name(centre, school)}): sekolah asal mencatat "
                                f"keluarnya dulu ('selaras exit'), lalu sinkronisasi{hint}")
    # The school the person left last (non-induk: their home school): the newest row.
    origin = max(schools, key=lambda school: centre.school(school).row_hlc(e.name, row_id))
    source = centre.school(origin)
    rows = [(e.name, row_id, held[origin, row_id])]
    for name_of in history:
        rows += [(name_of, rid, r) for rid, r in source.rows(name_of).items()
                 if str(r.get(link)) == row_id and not r.get("soft_delete")]
    with centre.transaction():
        events = centre_events(centre.school(npsn), centre_origin(npsn), [
            (entity_of, rid, {k: v for k, v in row.items()
                              if k in entity(entity_of).by_name and v is not None})
            for entity_of, rid, row in rows], now_ms, TARIK_DATA[kind])
        centre.append_centre(npsn, events)
    return Transferred(e.name, row_id, name, origin, len(events))


# What a school's change of these may change of the teachers it shares with other schools.
FOLLOWS_HOME = frozenset({"ptk", "ptk_terdaftar"})


def follow_home_school(centre: CentreStore, npsn: str, now_ms: int) -> int:
    """After a change at school ``npsn``: each teacher it shares with other schools has,
    at every school, the biodata (``ptk``) their home school holds, written as centre
    events of source "Sekolah Induk" where it differs (undoing a stray edit elsewhere).
    The home school is the one with a live, current ptk_terdaftar with ptk_induk = 1;
    with none or several (Validasi Pusat's VP-005) nothing is written. The events
    written."""
    holders: dict[str, dict[str, int]] = {}
    for ptk_id, school, induk in centre.ptk_holders(npsn):
        holders.setdefault(ptk_id, {})[school] = induk
    fields = [f.name for f in entity("ptk").fields if f.name != "soft_delete"]
    rows: dict[str, dict[str, dict[str, object]]] = {}  # per school, read once

    def row(school: str, ptk_id: str) -> dict[str, object]:
        if school not in rows:
            rows[school] = centre.school(school).rows("ptk")
        return rows[school][ptk_id]

    written = 0
    with centre.transaction():
        for ptk_id, schools in holders.items():
            homes = [school for school, induk in schools.items() if induk]
            if len(schools) < 2 or len(homes) != 1:
                continue
            home = row(homes[0], ptk_id)
            for school in sorted(schools.keys() - set(homes)):
                held = row(school, ptk_id)
                differ = {f: home.get(f) for f in fields if home.get(f) != held.get(f)}
                if differ:
                    centre.append_centre(school, [centre_event(
                        centre.school(school), centre_origin(school), "ptk", ptk_id, differ,
                        now_ms, SEKOLAH_INDUK)])
                    written += 1
    return written


def _school_name(centre: CentreStore, npsn: str) -> str:
    school = next(iter(centre.school(npsn).rows("sekolah").values()), {})
    return str(school.get("nama") or npsn)


def _school_entity(name: str) -> Entity:
    e = entity(name)
    if e.is_reference:
        raise EditError(f"{entity_label(e.name)} adalah Referensi, milik semua sekolah")
    return e


def _parsed(e: Entity, raw: Mapping[str, str], allowed: Callable[[str], bool], refusal: str,
            allow_empty: bool = False) -> dict[str, Value]:
    """``raw`` parsed, each field one ``allowed`` (else EditError with ``refusal``); empty
    only if ``allow_empty``."""
    if not raw and not allow_empty:
        raise EditError("tidak ada yang diubah: beri isian=nilai (FIELD=VALUE)")
    out: dict[str, Value] = {}
    for name, value in raw.items():
        f = e.by_name.get(name)
        if f is None:
            raise EditError(f"{e.name} tidak punya isian {name!r}; isiannya: "
                            f"{', '.join(e.by_name)}")
        if f.name == e.key or not allowed(name):
            raise EditError(f"{label(e.name, name)} tidak dapat diubah di sini: {refusal}")
        out[name] = parse(e, f, value)
    return out


def _write(centre: CentreStore, npsn: str, e: Entity, key: str, fields: dict[str, Value],
           source: str, now_ms: int) -> Change:
    with centre.transaction():
        store = centre.school(npsn)
        row_id = find_row(store, e.name, key)
        row = store.rows(e.name)[row_id]
        centre.append_centre(npsn, [centre_event(store, centre_origin(npsn), e.name, row_id,
                                                 fields, now_ms, source)])
    return Change(npsn, e.name, row_id, describe(e.name, row_id, row), fields, source)
