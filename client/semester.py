"""The operator's login and the working semester, as services the command line calls.

Dapodik's workflow (dapodik-reference.md, "The sync workflow", step 12): the user
picks the semester at login; rombel and pembelajaran are per semester and start
empty; periodic data can be copied forward into the new semester. Here:

- ``login`` opens the operator's session: who works on this install (its
  registered user, or another pengguna of the school's data) and in which
  semester (one of ``ref.semester``; by default the current semester). The
  install keeps it in its meta, key ``login``: JSON ``{user, semester_id,
  since_ms}``. ``logout`` ends it (the command ends the principal's session too).
  There is no password: the install is the operator's own PC, and whoever holds
  its data folder holds its data anyway; the acts that need a person's word (the
  principal's consent, the sync) ask for the principal's password (Tukar Pengguna,
  client/principal.py). Who is logged in is shown, not checked against the centre.
- ``working_semester``: the login's semester, else the current one. The *current
  semester* is Validasi Lokal's (engine/validation.py, module docstring): the
  latest semester of ``ref.semester`` holding live rombongan belajar or data
  periodik sekolah, else the latest of ``ref.semester``. It is computed here from
  the rows; tests/test_beranda.py holds it equal to the one the rules use.
- ``copy_forward`` copies the working semester's periodic rows into the next
  semester (``ref.semester`` order): the ``*_longitudinal`` rows (one per person
  or school and semester) and, on request, the rombel structure (no members). A
  row already there (same person or school; a rombel of the same name) is left
  alone, so a second run adds nothing. The copies are this install's events,
  written in one append through the Replica: they sync like any edit.

Everything returns plain data; the texts are client/output.py's.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from selaras.engine.schema import BY_NAME, ENTITIES, Entity
from selaras.engine.store import AppendReport, InstallStore
from selaras.engine.values import Value, shown

from .install import ClientError, Session, now_ms

LOGIN = "login"  # meta: the operator's session
ROMBEL = "rombongan_belajar"
# What a copy leaves behind: its semester (the target's), soft_delete (a copy is live);
# its id is a new one.
NOT_COPIED = frozenset({"semester_id", "soft_delete"})
# The rows that place a semester in the data (the current semester's definition).
PLACING = ("rombongan_belajar", "sekolah_longitudinal")
# Periodic data: one row per person or school and semester.
LONGITUDINAL: tuple[Entity, ...] = tuple(
    e for e in ENTITIES if e.semester_scoped and e.name.endswith("_longitudinal"))


@dataclass(frozen=True)
class Semester:
    """A semester of ``ref.semester``: ``20231`` is 2023/2024 Ganjil."""

    semester_id: str
    nama: str
    mulai: str | None = None  # 'YYYY-MM-DD'
    selesai: str | None = None

    @property
    def label(self) -> str:
        """"2023/2024 Ganjil (20231)"."""
        return f"{self.nama} ({self.semester_id})"

    def as_json(self) -> dict[str, Any]:
        return {"semester_id": self.semester_id, "nama": self.nama, "mulai": self.mulai,
                "selesai": self.selesai, "label": self.label}


@dataclass(frozen=True)
class Login:
    """The operator's open session: who, since when, in which semester."""

    user: str
    nama: str  # the pengguna's name in the school's data; "" when it has none
    peran: str  # their role there (operator, kepala_sekolah, ptk); "" when unknown
    semester: Semester
    since_ms: int

    @property
    def who(self) -> str:
        """"Anisa Wulandari (operator@sekolah.id)", or the user alone."""
        return f"{self.nama} ({self.user})" if self.nama else self.user


# -- ref.semester ------------------------------------------------------------------------


def _live(row: dict[str, object]) -> bool:
    return not row.get("soft_delete")


def semesters(store: InstallStore) -> list[Semester]:
    """Every semester of ``ref.semester``, in order (``semester_id``: YYYYS)."""
    found: dict[str, Semester] = {}
    for row in store.rows("ref.semester").values():
        sid = str(row.get("semester_id") or "")
        if sid and sid not in found:
            found[sid] = Semester(sid, str(row.get("nama") or sid),
                                  _text(row.get("tanggal_mulai")),
                                  _text(row.get("tanggal_selesai")))
    return [found[k] for k in sorted(found)]


def _text(v: object) -> str | None:
    return None if v is None else str(v)


def current_semester(store: InstallStore) -> Semester | None:
    """Validasi Lokal's current semester (module docstring); None without ref.semester."""
    known = {s.semester_id: s for s in semesters(store)}
    placed = {str(r.get("semester_id")) for name in PLACING for r in store.rows(name).values()
              if _live(r) and str(r.get("semester_id")) in known}
    chosen = max(placed, default=max(known, default=None))
    return None if chosen is None else known[chosen]


def find_semester(store: InstallStore, semester_id: str) -> Semester:
    """The semester ``semester_id`` of ``ref.semester``; ClientError naming the ones known."""
    known = semesters(store)
    for s in known:
        if s.semester_id == semester_id.strip():
            return s
    listed = ", ".join(s.label for s in known) or "belum ada (lakukan Tarik Data)"
    raise ClientError(f"Semester {shown(semester_id)} tidak ada di Referensi (ref.semester); "
                      f"yang ada: {listed}")


# -- the operator's session ---------------------------------------------------------------


def login(session: Session, semester_id: str | None = None, user: str | None = None) -> Login:
    """Open the operator's session (module docstring): ``user`` (default: the install's
    registered user) in ``semester_id`` (default: the current semester). ClientError for
    a user the install does not know or a semester ``ref.semester`` lacks."""
    store = session.store
    if semester_id is None:
        semester = current_semester(store)
        if semester is None:
            raise ClientError("Referensi belum berisi semester (ref.semester): lakukan Tarik "
                              "Data dulu ('selaras pull')")
    else:
        semester = find_semester(store, semester_id)
    name = (user or session.identity.author).strip()
    row = _pengguna(session, name)
    if name.lower() == session.identity.author.lower():
        name = session.identity.author
    elif row is not None:
        name = str(row["username"]).strip()  # as the school's data spells it
    else:
        known = sorted({session.identity.author, *(
            str(r["username"]) for r in store.rows("pengguna").values()
            if _live(r) and r.get("username"))})
        raise ClientError(f"Pengguna {shown(name)} tidak dikenal di data sekolah ini; yang "
                          f"dikenal: {', '.join(known)}")
    opened = {"user": name, "semester_id": semester.semester_id, "since_ms": now_ms()}
    store.set_meta(**{LOGIN: json.dumps(opened)})
    found = logged_in(session)
    assert found is not None
    return found


def logged_in(session: Session) -> Login | None:
    """The operator's open session, if any."""
    try:
        opened = json.loads(session.store.meta().get(LOGIN) or "null")
        user, semester_id, since = opened["user"], opened["semester_id"], opened["since_ms"]
    except (ValueError, TypeError, KeyError):
        return None  # none, or a damaged key: as if nobody had logged in
    known = {s.semester_id: s for s in semesters(session.store)}
    semester = known.get(str(semester_id)) or Semester(str(semester_id), str(semester_id))
    row = _pengguna(session, str(user)) or {}
    return Login(str(user), str(row.get("nama") or ""), str(row.get("peran") or ""),
                 semester, int(since))


def logout(session: Session) -> None:
    """End the operator's session."""
    session.store.set_meta(**{LOGIN: ""})


def _pengguna(session: Session, username: str) -> dict[str, object] | None:
    wanted = username.strip().lower()
    for row in session.store.rows("pengguna").values():
        if _live(row) and str(row.get("username") or "").strip().lower() == wanted:
            return row
    return None


def working_semester(session: Session) -> Semester | None:
    """The login's semester, else the current one; None before Referensi has any."""
    opened = logged_in(session)
    return opened.semester if opened is not None else current_semester(session.store)


def semester_line(session: Session) -> str:
    """The line every screen opens with: "Semester: 2023/2024 Ganjil (20231)"."""
    semester = working_semester(session)
    return f"Semester: {semester.label if semester else 'belum ada (lakukan Tarik Data)'}"


# -- selaras semester show ----------------------------------------------------------------------


@dataclass(frozen=True)
class SemesterData:
    """A semester of ``ref.semester`` and the live rows each semester-scoped table holds
    in it (only tables with rows)."""

    semester: Semester
    rows: dict[str, int]
    working: bool


@dataclass(frozen=True)
class Semesters:
    working: Semester | None
    chosen_at_login: bool  # else the current semester, by default
    semesters: tuple[SemesterData, ...]

    def as_json(self) -> dict[str, Any]:
        return {"working": None if self.working is None else self.working.as_json(),
                "chosen_at_login": self.chosen_at_login,
                "semesters": [s.semester.as_json() | {"working": s.working, "rows": s.rows}
                              for s in self.semesters]}


def overview(session: Session) -> Semesters:
    """The working semester, and every semester of ``ref.semester`` with what it holds."""
    opened = logged_in(session)
    working = opened.semester if opened is not None else current_semester(session.store)
    counts: dict[str, dict[str, int]] = {}
    for e in ENTITIES:
        if not e.semester_scoped:
            continue
        for row in session.store.rows(e.name).values():
            if _live(row):
                per = counts.setdefault(str(row.get("semester_id")), {})
                per[e.name] = per.get(e.name, 0) + 1
    wid = working.semester_id if working else None
    return Semesters(working, opened is not None, tuple(
        SemesterData(s, counts.get(s.semester_id, {}), s.semester_id == wid)
        for s in semesters(session.store)))


# -- selaras semester copy-forward ----------------------------------------------------------------


@dataclass(frozen=True)
class CopyForward:
    """What ``copy_forward`` did, per table: rows copied, rows left alone because the
    target semester has them already, and students left out who are not registered at
    the school in the target semester."""

    source: Semester
    target: Semester
    copied: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    not_registered: int = 0
    rombel: bool = False
    report: AppendReport = field(default_factory=AppendReport)

    @property
    def total(self) -> int:
        return sum(self.copied.values())

    def as_json(self) -> dict[str, Any]:
        return {"from": self.source.as_json(), "to": self.target.as_json(),
                "rombel": self.rombel, "copied": self.copied, "present": self.present,
                "not_registered": self.not_registered, "total": self.total}


def next_semester(store: InstallStore, after: Semester) -> Semester:
    """The semester after ``after`` in ``ref.semester``; ClientError if there is none."""
    later = [s for s in semesters(store) if s.semester_id > after.semester_id]
    if not later:
        raise ClientError(f"Tidak ada semester sesudah {after.label} di Referensi "
                          "(ref.semester): lakukan Tarik Data, atau beri --to")
    return later[0]


def copy_forward(session: Session, to: str | None = None, *, rombel: bool = False,
                 ) -> CopyForward:
    """Copy the working semester's periodic data into ``to`` (default: the next semester):
    the longitudinal rows, and with ``rombel`` the rombel structure without members
    (module docstring). Idempotent. ClientError for a target that is not a later
    semester of ``ref.semester``."""
    store = session.store
    source = working_semester(session)
    if source is None:
        raise ClientError("Referensi belum berisi semester (ref.semester): lakukan Tarik "
                          "Data dulu ('selaras pull')")
    target = next_semester(store, source) if to is None else find_semester(store, to)
    if target.semester_id <= source.semester_id:
        raise ClientError(f"Semester tujuan {target.label} harus sesudah semester kerja "
                          f"{source.label}: masuk ke semester asal dengan 'selaras login "
                          "--semester'")
    writes: list[tuple[str, str, dict[str, Value]]] = []
    copied: dict[str, int] = {}
    present: dict[str, int] = {}
    not_registered = 0
    for e in LONGITUDINAL:
        owner = _owner_field(e)
        rows = [r for r in store.rows(e.name).values() if _live(r)]
        there = {r[owner] for r in rows if r.get("semester_id") == target.semester_id}
        owners = _owners_in(session, e, target)
        for r in rows:
            if r.get("semester_id") != source.semester_id:
                continue
            if r[owner] in there:
                present[e.name] = present.get(e.name, 0) + 1
            elif owners is not None and r[owner] not in owners:
                not_registered += 1
            else:
                there.add(r[owner])
                writes.append((e.name, str(uuid.uuid4()), _copy(e, r, target, NOT_COPIED)))
                copied[e.name] = copied.get(e.name, 0) + 1
    if rombel:
        e = BY_NAME[ROMBEL]
        rows = [r for r in store.rows(ROMBEL).values() if _live(r)]
        names = {_rombel_name(r) for r in rows if r.get("semester_id") == target.semester_id}
        for r in sorted(rows, key=_rombel_name):
            if r.get("semester_id") != source.semester_id:
                continue
            if _rombel_name(r) in names:
                present[ROMBEL] = present.get(ROMBEL, 0) + 1
                continue
            names.add(_rombel_name(r))
            writes.append((ROMBEL, str(uuid.uuid4()), _copy(e, r, target, NOT_COPIED)))
            copied[ROMBEL] = copied.get(ROMBEL, 0) + 1
    report = session.replica.record(writes, now_ms()) if writes else AppendReport()
    return CopyForward(source, target, copied, present, not_registered, rombel, report)


def _owner_field(e: Entity) -> str:
    """Whose periodic data a longitudinal row is: peserta_didik_longitudinal's
    peserta_didik_id, sekolah_longitudinal's sekolah_id."""
    name = e.name.removesuffix("_longitudinal") + "_id"
    assert name in e.by_name, e.name
    return name


def _owners_in(session: Session, e: Entity, target: Semester) -> set[object] | None:
    """The people whose periodic data may go into ``target``: for students, those
    registered at the school in it (engine/validation.py's definition: a live
    registration entered by the semester's last day that has not left before its first
    day; an exit type without a date counts as left). None: anyone."""
    if e.name != "peserta_didik_longitudinal":
        return None
    sekolah = session.identity.sekolah_id
    found: set[object] = set()
    for r in session.store.rows("registrasi_peserta_didik").values():
        if not _live(r) or r.get("sekolah_id") != sekolah:
            continue
        masuk, keluar = r.get("tanggal_masuk_sekolah"), r.get("tanggal_keluar")
        entered = target.selesai is None or masuk is None or str(masuk) <= target.selesai
        stays = (keluar is None and r.get("jenis_keluar_id") is None) or (
            keluar is not None and (target.mulai is None or str(keluar) > target.mulai))
        if entered and stays:
            found.add(r.get("peserta_didik_id"))
    return found


def _copy(e: Entity, row: dict[str, object], target: Semester,
          left_out: frozenset[str]) -> dict[str, Value]:
    """The row's fields for its copy in ``target`` (set fields only, as an add writes)."""
    out: dict[str, Value] = {"semester_id": target.semester_id}
    for f in e.fields:
        v = row.get(f.name)
        if f.name not in left_out and v is not None:
            assert isinstance(v, str | int), (e.name, f.name)
            out[f.name] = v
    return out


def _rombel_name(row: dict[str, object]) -> str:
    """A rombel's name as the duplicate rule compares it (ROM: upper, trimmed)."""
    return str(row.get("nama") or "").strip().upper()
