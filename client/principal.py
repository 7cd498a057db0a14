"""The principal's sync, as services the command line (and the web app) call.

The procedure Dapodik schools follow: the principal's account is added at the
school (``add_principal``), the principal takes over the PC (Tukar Pengguna:
``switch_user``, with the school's registration code and their password),
Validasi Lokal must hold no invalid finding, the principal confirms the Lembar
Konfirmasi Sinkronisasi item by item (``sheet``) and signs the Persetujuan
Pengiriman Data (``confirm``). A sync then sends the events that consent
covers, and only those (``consent_for_push``); the centre checks the
signature again (docs/protocol.md, R20).

What the install keeps in its meta: ``kode_hash`` (the registration code's
slow hash, so Tukar Pengguna works with no line), ``principals`` (each
principal account it has seen: profile, public key, the key sealed with the
password), ``session`` (the principal's open session: who, until when, the
unsealed signing key; ended by ``end_session`` and after SESSION_IDLE_MS),
``consent`` (the last consent, encoded).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from selaras.engine import bundle, consent, passwords, validation
from selaras.engine.consent import Consent
from selaras.engine.protocol import PROTOCOL_VERSION, AccountReply, AccountRequest, account_name
from selaras.engine.schema import ENTITIES, SCHEMA_VERSION, TABS

from .install import ACKED_SEQ, ClientError, Session, now_ms

PRINCIPAL = "kepala_sekolah"
SESSION_IDLE_MS = 30 * 60 * 1000  # a principal's session left alone this long ends
SHEET_TABS = [t for t in TABS if t != "Referensi"]  # what the principal confirms


def the_principal(session: Session) -> dict[str, Any]:
    """The one PTK holding the kepala sekolah tugas tambahan now; ClientError (which tab
    to fix) if there is none or more than one."""
    found = session.store.principals()
    if not found:
        raise ClientError("Tidak ada kepala sekolah aktif di data sekolah: isi tugas "
                          "tambahan kepala sekolah (atau Plt.) di tab GTK, untuk PTK induk "
                          "yang terdaftar semester ini")
    if len(found) > 1:
        names = ", ".join(str(p["nama"]) for p in found)
        raise ClientError(f"Ada {len(found)} kepala sekolah aktif sekaligus ({names}): "
                          "akhiri tugas tambahan yang lama di tab GTK")
    return found[0]


def add_principal(session: Session, kode: str, user: str, password: str,
                  url: str | None = None) -> AccountReply:
    """Add the principal's account at the centre, linked to the active principal."""
    ptk = the_principal(session)
    email = account_name(user)
    mine = [row_id for row_id, row in session.store.rows("pengguna").items()
            if str(row.get("username") or "").strip().lower() == email
            and not row.get("soft_delete")]
    reply = _ask(session, url, "add_principal", kode, email, password, nama=str(ptk["nama"]),
                 ptk_id=str(ptk["ptk_id"]), nip=str(ptk["nip"] or ""),
                 pengguna_id=mine[0] if mine else "")
    _remember(session, reply)
    return reply


def switch_user(session: Session, kode: str, user: str, password: str,
                url: str | None = None) -> dict[str, Any]:
    """Tukar Pengguna: open the principal's session on this install.

    Online, the centre checks the code and the password and answers the account;
    with no line, the code is checked against the hash kept from registration and
    the password opens the key kept from an earlier login.
    """
    from .sync import SyncError

    email = account_name(user)
    try:
        _remember(session, _ask(session, url, "login", kode, email, password))
    except SyncError:  # no line: check what this install keeps
        kept = session.store.meta().get("kode_hash", "")
        if not kept or not passwords.slow_verify(passwords.normal_kode(kode), kept):
            raise ClientError("Kode registrasi salah") from None
    account = principals(session).get(email)
    if account is None:
        known = ", ".join(principals(session)) or "belum ada"
        raise ClientError(f"{email} bukan akun kepala sekolah yang dikenal instalasi ini "
                          f"(akun kepala sekolah: {known}); tambahkan dengan "
                          "'selaras account add --role kepala_sekolah'")
    seed = passwords.unseal(account["sealed_key"], password)
    if seed is None:
        raise ClientError("Kata sandi salah")
    t = now_ms()
    opened = {"user": email, "role": PRINCIPAL, "nama": account["nama"],
              "since_ms": t, "until_ms": t + SESSION_IDLE_MS, "key": seed.hex()}
    session.store.set_meta(session=json.dumps(opened))
    return {k: v for k, v in opened.items() if k != "key"}


def principal_session(session: Session) -> dict[str, Any] | None:
    """The principal's open session, if any (an idle one has ended)."""
    opened: dict[str, Any] = json.loads(session.store.meta().get("session") or "null")
    if opened is None or opened["until_ms"] < now_ms():
        return None
    return opened


def end_session(session: Session) -> None:
    session.store.set_meta(session="")


def principals(session: Session) -> dict[str, dict[str, str]]:
    return dict(json.loads(session.store.meta().get("principals") or "{}"))


@dataclass(frozen=True)
class SheetItem:
    """One tab of the Lembar Konfirmasi: its rows and this install's unsent changes."""

    tab: str
    rows: int
    changes: int
    per_table: dict[str, int]  # unsent changes per table

    def text(self) -> str:
        tables = ", ".join(f"{t} {n}" for t, n in self.per_table.items())
        return (f"{self.tab}: {self.rows} data, {self.changes} perubahan belum terkirim"
                + (f" ({tables})" if tables else ""))


def sheet(session: Session) -> list[SheetItem]:
    """The Lembar Konfirmasi Sinkronisasi: per tab, the counts and the pending changes."""
    me = session.identity.origin
    acked = int(session.store.meta().get(ACKED_SEQ, 0))
    rows, pending = session.store.row_counts(), session.store.event_counts(me, acked)
    items = []
    for tab in SHEET_TABS:
        names = [e.name for e in ENTITIES if e.tab == tab]
        per_table = {n: pending[n] for n in names if pending.get(n)}
        items.append(SheetItem(tab, sum(rows.get(n, 0) for n in names),
                               sum(per_table.values()), per_table))
    return items


def require_principal(session: Session) -> dict[str, Any]:
    """The principal's open session; ClientError without one."""
    opened = principal_session(session)
    if opened is None:
        raise ClientError("Hanya kepala sekolah yang dapat mengonfirmasi: jalankan "
                          "'selaras switch-user' (Tukar Pengguna) dulu")
    return opened


def confirm(session: Session, items: list[SheetItem]) -> Consent:
    """Persetujuan Pengiriman Data: the principal signs the confirmed ``items``, covering
    everything this install holds now. ClientError without a principal's session, or
    while Validasi Lokal has invalid findings."""
    opened = require_principal(session)
    invalid = validation.validate(session.store).blocking
    if invalid:
        raise ClientError(f"Validasi Lokal masih menemukan {invalid} data invalid: perbaiki "
                          "dulu ('selaras validate')")
    if [i.text() for i in items] != [i.text() for i in sheet(session)]:
        raise ClientError("Data berubah sejak lembar konfirmasi dibuat: tampilkan lagi")
    account = principals(session)[opened["user"]]
    ptk = the_principal(session)
    me = session.identity
    made = consent.sign(Consent(
        npsn=me.npsn, install=me.origin, account=opened["user"], ptk_id=account["ptk_id"],
        nama=account["nama"], nip=account["nip"], semester_id=str(ptk["semester_id"]),
        made_ms=now_ms(), sheet_hash=consent.sheet_hash([i.text() for i in items]),
        vector=session.store.vector()), bytes.fromhex(opened["key"]))
    session.store.set_meta(consent=consent.encode(made).hex())
    return made


def consent_for_push(session: Session) -> Consent | None:
    """The consent a sync sends, after the client's own gate: None when there is nothing
    to send; ClientError while invalid findings exist or without a consent covering
    every unsent change of this install."""
    me = session.identity.origin
    meta = session.store.meta()
    top = session.store.vector().get(me, 0)
    if top <= int(meta.get(ACKED_SEQ, 0)):
        return None
    invalid = validation.validate(session.store).blocking
    if invalid:
        raise ClientError(f"Sinkronisasi ditolak: Validasi Lokal masih menemukan {invalid} "
                          "data invalid; perbaiki dulu ('selaras validate')")
    given = consent.decode(bytes.fromhex(meta.get("consent", "")))
    if given is None:
        raise ClientError("Sinkronisasi ditolak: belum ada Persetujuan Pengiriman Data; "
                          "kepala sekolah menjalankan 'selaras switch-user' lalu "
                          "'selaras confirm'")
    if not given.covers(me, top):
        raise ClientError("Sinkronisasi ditolak: ada perubahan setelah Lembar Konfirmasi; "
                          "kepala sekolah harus mengonfirmasi ulang ('selaras confirm')")
    return given


def _ask(session: Session, url: str | None, action: str, kode: str, user: str,
         password: str, **profile: str) -> AccountReply:
    from .sync import RegistrationRefused, app_version, request  # websockets: when online

    meta = session.store.meta()
    url = url or meta.get("url")
    if not url:
        raise ClientError("Instalasi offline tidak terhubung ke server pusat: akun kepala "
                          "sekolah dibuat di instalasi yang terdaftar (--server)")
    me = session.identity
    try:
        answer = asyncio.run(request(url, AccountRequest(
            protocol=PROTOCOL_VERSION, app=app_version(), schema=SCHEMA_VERSION, npsn=me.npsn,
            install=me.origin, token=meta.get("token", ""), kode=kode,
            action=action,  # type: ignore[arg-type]
            user=account_name(user), password=password, **profile)))
    except RegistrationRefused as exc:
        raise ClientError(f"Ditolak server pusat ({exc.code}): {exc.message}") from None
    if not isinstance(answer, AccountReply):
        raise ClientError("Server pusat menjawab yang tidak diharapkan")
    return answer


def _remember(session: Session, reply: AccountReply) -> None:
    known = principals(session)
    known[reply.user] = {"nama": reply.nama, "ptk_id": reply.ptk_id, "nip": reply.nip,
                         "public_key": reply.public_key, "sealed_key": reply.sealed_key}
    session.store.set_meta(principals=json.dumps(known))


def bundle_for_centre(session: Session) -> tuple[bytes, int]:
    """The offline route: this install's changes the centre has not acknowledged, with
    the principal's consent covering them (``consent_for_push``: the same gate as a
    sync), as a bundle the dinas imports (``selaras admin bundle import``)."""
    given = consent_for_push(session)
    me, store = session.identity, session.store
    acked = int(store.meta().get(ACKED_SEQ, 0))
    theirs = {o: s for o, s in store.vector().items() if o != me.origin} | {me.origin: acked}
    batch = store.events_after(theirs)
    data = bundle.encode(npsn=me.npsn, origin=me.origin, vector=store.vector(), batch=batch,
                         consent=consent.encode(given) if given else b"")
    return data, len(batch)
