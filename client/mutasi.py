"""Transfers between schools (mutasi), from the schools' side: Tarik Data PD and PTK.

The school a person leaves records the exit on their registration
(``exit_person``: jenis keluar and the date), sent up by its next sync. The school
they join asks the centre (``request_transfer``, protocol R21), which refuses while
the person is still registered anywhere and otherwise writes the person's record
into this school's log as centre events; the next Tarik Data or sync brings it
down. The person keeps one row id wherever they go: never typed in twice. A teacher
may also join as non-induk while staying at their home school (sekolah induk), whose
edits of their biodata then come down to this school ("Sekolah Induk").
"""

from __future__ import annotations

import asyncio
import datetime as dt

from selaras.engine.lookup import describe, find_row
from selaras.engine.protocol import PROTOCOL_VERSION, TransferReply, TransferRequest
from selaras.engine.schema import SCHEMA_VERSION

from .install import ClientError, Session, now_ms

# kind: the person's entity, their registration at a school, its link to them, the date
# it ends, and the flag of ref.jenis_keluar that allows a reason for them.
EXITS = {"pd": ("peserta_didik", "registrasi_peserta_didik", "peserta_didik_id",
                "tanggal_keluar", "keluar_pd"),
         "ptk": ("ptk", "ptk_terdaftar", "ptk_id", "tgl_ptk_keluar", "keluar_ptk")}


def exit_person(session: Session, kind: str, key: str, reason: str, date: str) -> str:
    """Record that the person ``key`` names left this school on ``date`` for ``reason``
    (a jenis keluar: its name, "mutasi", or its code); their name for people."""
    person, registration, link, date_field, allowed = EXITS[kind]
    store = session.store
    row_id = find_row(store, person, key)
    name = describe(person, row_id, store.rows(person)[row_id])
    code = _jenis_keluar(session, reason, allowed)
    try:
        dt.date.fromisoformat(date)
    except ValueError:
        raise ClientError(f"tanggal keluar {date!r} bukan tanggal (YYYY-MM-DD)") from None
    open_ = [rid for rid, r in store.rows(registration).items()
             if str(r.get(link)) == row_id and not r.get("soft_delete")
             and not r.get("jenis_keluar_id")
             and str(r.get("sekolah_id")) == session.identity.sekolah_id]
    if not open_:
        raise ClientError(f"{name} tidak sedang terdaftar di sekolah ini")
    for rid in open_:
        session.replica.edit(registration, rid, {"jenis_keluar_id": code, date_field: date},
                             now_ms())
    return name


def _jenis_keluar(session: Session, reason: str, allowed: str) -> str:
    wanted = reason.strip().lower()
    codes = [r for r in session.store.rows("ref.jenis_keluar").values()
             if r.get(allowed) and not r.get("expired_date")]
    for r in codes:
        if wanted in (str(r["jenis_keluar_id"]).lower(), str(r["nama"]).lower()):
            return str(r["jenis_keluar_id"])
    raise ClientError(f"jenis keluar {reason!r} tidak dikenal; pilih salah satu: "
                      + ", ".join(str(r["nama"]).lower() for r in codes))


def request_transfer(session: Session, kind: str, key: str,
                     non_induk: bool = False) -> TransferReply:
    """Ask the centre for the person ``key`` names (Tarik Data PD/PTK; ``non_induk``: a
    teacher who stays at their home school); ClientError with the centre's reason when
    it refuses."""
    from .sync import RegistrationRefused, app_version, request  # websockets: when online

    meta = session.store.meta()
    if not meta.get("url"):
        raise ClientError("Instalasi offline tidak terhubung ke server pusat: Tarik Data "
                          "PD/PTK butuh instalasi yang terdaftar (--server)")
    me = session.identity
    try:
        answer = asyncio.run(request(meta["url"], TransferRequest(
            protocol=PROTOCOL_VERSION, app=app_version(), schema=SCHEMA_VERSION, npsn=me.npsn,
            install=me.origin, token=meta.get("token", ""),
            kind=kind,  # type: ignore[arg-type]
            key=key, non_induk=non_induk)))
    except RegistrationRefused as exc:
        raise ClientError(f"Ditolak server pusat: {exc.message}") from None
    if not isinstance(answer, TransferReply):
        raise ClientError("Server pusat menjawab yang tidak diharapkan")
    return answer
