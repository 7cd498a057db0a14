"""Admin commands of the centre, the same code online and offline.

``run_admin(centre, registry, command, args, now_ms)`` runs one command on the
writer's connection: on the running server it is queued on the writer thread
(``AdminRequest`` over the websocket), on a stopped store the CLI calls it on a
``CentreStore`` it opened itself. ``query`` alone runs on a reader
(``run_query``), so a long query never holds up a school's push. Each returns
an ``AdminReply`` (a table and a message); failures an operator can act on
raise ``AdminError``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec

from selaras.engine import passwords
from selaras.engine.errors import InputError
from selaras.engine.events import REFERENSI_ORIGIN
from selaras.engine.labels import entity_label
from selaras.engine.localtime import Zone, format_local, iso_local, school_zone
from selaras.engine.lookup import describe
from selaras.engine.protocol import MODE_WORDS, AdminReply, account_name
from selaras.engine.replica import (
    EditError,
    referensi_events,
    school_fields,
    school_identity_event,
)
from selaras.engine.store import CentreReader, CentreStore, Registry, StoreError

from . import accounts, dinas, manajemen, validasi_pusat

NPSN = re.compile(r"\d{8}")
QUERY_TIME_LIMIT_S = 30.0
COMMANDS = ("school_add", "reset_kode", "installs", "revoke", "query", "checksum", "schools",
            "history", "account_add", "reset_password", "disable_account", "accounts", "edit",
            "verval", "nisn", "referensi_add", "referensi_expire", "bundle_import",
            "bundle_export", "central_validation")
# A session's outcome (registry.session.outcome, ``kind`` or ``kind:code``), for people.
OUTCOME_WORDS = {"done": "berhasil", "refused": "ditolak",
                 "refused_by_client": "dihentikan sekolah", "dropped": "terputus",
                 "drained": "dihentikan server"}


class AdminError(Exception):
    """An admin command that cannot be done; the message says why."""


def check_npsn(npsn: str) -> str:
    if not NPSN.fullmatch(npsn or ""):
        raise AdminError(f"NPSN must be 8 digits, not {npsn!r}")
    return npsn


def cell(v: Any) -> str | int | float | bool | None:
    if v is None or isinstance(v, str | int | float | bool):
        return v
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, uuid.UUID | dt.date | dt.datetime):
        return str(v)
    return str(v)


def table(columns: list[str], rows: list[Any], message: str = "") -> AdminReply:
    return AdminReply(columns, [[cell(v) for v in r] for r in rows], message)


def run_admin(centre: CentreStore, registry: Registry, command: str,
              args: Mapping[str, str], now_ms: int) -> AdminReply:
    try:
        return _run(centre, registry, command, args, now_ms)
    except KeyError as exc:
        raise AdminError(f"{command}: missing argument {exc.args[0]!r}") from None
    except (InputError, StoreError, accounts.AccountError) as exc:
        raise AdminError(str(exc)) from None


def run_query(reader: CentreReader, args: Mapping[str, str]) -> AdminReply:
    """``query`` on a reader, never the writer: one school's views, stopped after
    ``QUERY_TIME_LIMIT_S`` (docs/security.md)."""
    try:
        npsn = _known(reader.registry, args["npsn"])
        return table(*reader.school(npsn).query(args["sql"], QUERY_TIME_LIMIT_S))
    except KeyError as exc:
        raise AdminError(f"query: missing argument {exc.args[0]!r}") from None
    except (InputError, StoreError) as exc:
        raise AdminError(str(exc)) from None


def _run(centre: CentreStore, registry: Registry, command: str,
         args: Mapping[str, str], now_ms: int) -> AdminReply:
    match command:
        case "school_add":
            npsn = check_npsn(args["npsn"])
            if registry.school(npsn) is not None:
                raise AdminError(f"school {npsn} is already registered")
            refs = referensi_events()
            try:
                fields = school_fields(npsn, args.get("nama") or None,
                                       args.get("bentuk") or "SMA", refs)
            except EditError as exc:
                raise AdminError(str(exc)) from None
            kode = passwords.new_kode()
            kode_hash = passwords.slow_hash(passwords.normal_kode(kode))
            with centre.transaction():  # all of it, or nothing (a failed add leaves no trace)
                # The school's first centre event, and Referensi where the centre lacks it (it
                # is kept once for every school), so a new install pulls it all.
                held = centre.school(npsn).vector().get(REFERENSI_ORIGIN, 0)
                centre.append_centre(npsn, [*(ev for ev in refs if ev.seq > held),
                                            school_identity_event(npsn, fields)])
                registry.add_school(npsn, str(fields["nama"]), kode_hash, now_ms)
            return table(["npsn", "nama", "kode"], [[npsn, fields["nama"], kode]],
                         f"school {npsn} added; registration code (shown once): {kode}")
        case "reset_kode":
            npsn = check_npsn(args["npsn"])
            kode = passwords.new_kode()
            generation = registry.reset_kode(npsn, passwords.slow_hash(
                passwords.normal_kode(kode)))
            return table(["npsn", "generation", "kode"], [[npsn, generation, kode]],
                         f"new registration code for {npsn} (shown once): {kode}; "
                         "every install must register again")
        case "installs":
            rows = registry.installs(check_npsn(args["npsn"]))
            cols = ["origin", "email", "generation", "revoked", "created_ms"]
            return table(cols, [[r[c] for c in cols] for r in rows])
        case "revoke":
            registry.revoke(args["install"])
            return table([], [], f"install {args['install']} revoked")
        case "query":  # the running server sends it to run_query on a reader of its pool
            reader = centre.reader()
            try:
                return run_query(reader, args)
            finally:
                reader.close()
        case "checksum":
            npsn = _known(registry, args["npsn"])
            store = centre.school(npsn)
            vector, sums = store.vector(), store.checksums(full="full" in args)
            reply = table(["entity", "checksum"], sorted(sums.items()),
                          f"{sum(vector.values())} events from {len(vector)} origins")
            return msgspec.structs.replace(reply, data={"checksums": sums, "vector": vector})
        case "schools":
            schools = registry.schools()
            cells: list[list[Any]] = []
            for r in schools:
                zone = school_zone(centre.school(r["npsn"]))
                cells.append([r["npsn"], r["nama"], r["generation"],
                             _when(r["last_sync_ms"], zone), _when(r["last_pull_ms"], zone),
                             r["invalid"], _sources_text(r["sources"])])
            reply = table(["npsn", "nama", "generasi kode", "sinkronisasi terakhir",
                           "tarik data terakhir", "invalid tertunda",
                           "terakhir dari pusat"], cells)
            return msgspec.structs.replace(reply, data={"schools": schools})
        case "history":
            npsn = _known(registry, args["npsn"])
            zone = school_zone(centre.school(npsn))
            names = {a["email"]: a["nama"] or a["email"] for a in registry.accounts(npsn)}
            records = registry.sessions(npsn, _limit(args.get("limit", "20")))
            cells = [[format_local(r["started_ms"], zone), MODE_WORDS.get(r["mode"], r["mode"]),
                     r["install"][:8], r["account"], names.get(r["principal"], r["principal"]),
                     (r["consent"] or "")[:12] or None, r["events_in"], r["events_out"],
                     _sources_text(r["sources"]), r["invalid"], outcome_words(r["outcome"])]
                     for r in records]
            reply = table(["waktu", "jenis", "instalasi", "akun", "kepala sekolah",
                           "persetujuan", "masuk", "keluar", "dari pusat", "invalid", "hasil"],
                          cells,
                          f"{len(records)} sesi terakhir sekolah {npsn}, waktu {zone.name}")
            return msgspec.structs.replace(reply, data={"sessions": [
                {**r, "started": iso_local(r["started_ms"], zone)} for r in records]})
        case "account_add":
            npsn, email = _known(registry, args["npsn"]), account_name(args["user"])
            password = args.get("password") or passwords.new_kode()
            role = args.get("role") or accounts.OPERATOR
            profile = {k: args[k] for k in ("nama", "ptk_id", "nip") if args.get(k)}
            accounts.add(centre, registry, npsn, email, role, passwords.slow_hash(password),
                         now_ms, **profile, **accounts.sealed_profile(role, password))
            shown = "" if args.get("password") else f"; kata sandi (ditampilkan sekali): {password}"
            return table([], [], f"Akun {email} ({role}) ditambahkan ke sekolah {npsn}{shown}")
        case "reset_password":
            npsn, email = _known(registry, args["npsn"]), account_name(args["user"])
            found = registry.account(npsn, email)
            if found is None:
                raise AdminError(f"tidak ada akun {email} di sekolah {npsn}")
            password = args.get("password") or passwords.new_kode()
            accounts.update(centre, registry, npsn, email, now_ms,
                            password_hash=passwords.slow_hash(password),
                            **accounts.sealed_profile(found["role"], password))
            shown = "" if args.get("password") else f" (ditampilkan sekali): {password}"
            return table([], [], f"Kata sandi baru untuk {email}{shown}")
        case "disable_account":
            npsn, email = _known(registry, args["npsn"]), account_name(args["user"])
            accounts.update(centre, registry, npsn, email, now_ms, disabled=True)
            return table([], [], f"Akun {email} dinonaktifkan: sesinya ditolak (account_disabled)")
        case "accounts":
            cols = ["email", "role", "nama", "nip", "disabled", "created_ms"]
            return table(cols, [[r[c] for c in cols]
                                for r in registry.accounts(_known(registry, args["npsn"]))])
        case "edit":
            return _changed(centre, manajemen.edit(
                centre, _known(registry, args["npsn"]), args["entity"], args["row"],
                _fields(args), now_ms), now_ms)
        case "verval":
            return _changed(centre, manajemen.verval(
                centre, _known(registry, args["npsn"]), args["kind"], args["row"],
                _fields(args), now_ms), now_ms)
        case "nisn":
            return _changed(centre, manajemen.issue_nisn(
                centre, _known(registry, args["npsn"]), args["row"], now_ms), now_ms)
        case "central_validation" if args.get("all"):
            every = [str(r["npsn"]) for r in registry.schools()]
            result = validasi_pusat.run_all(centre, every, now_ms)
            raised, cleared = result.raised, result.cleared
            return table(["sekolah", "temuan baru", "selesai"],
                         [[n, raised.get(n, 0), cleared.get(n, 0)]
                          for n in sorted(raised.keys() | cleared.keys())],
                         f"Validasi Pusat dijalankan di {len(every)} sekolah: "
                         f"{sum(raised.values())} temuan baru atau berubah, "
                         f"{sum(cleared.values())} selesai")
        case "central_validation":
            npsn = _known(registry, args["npsn"])
            store, cells = centre.school(npsn), []
            for _, _, f in validasi_pusat.current(centre, npsn):
                row = store.rows(str(f["entity"])).get(str(f["row_ref"])) or {}
                cells.append([f["rule_id"], f["severity"], entity_label(str(f["entity"])),
                              describe(str(f["entity"]), str(f["row_ref"]), row),
                              f["message"], f["detail"], f["sekolah_lain"]])
            return table(["aturan", "tingkat", "data", "baris", "pesan", "rincian",
                          "sekolah lain"], cells,
                         f"{len(cells)} temuan Validasi Pusat di sekolah {npsn}")
        case "referensi_add":
            return _changed(centre, manajemen.referensi_add(
                centre, _any_school(registry), args["table"], args["code"], _fields(args),
                now_ms), now_ms)
        case "referensi_expire":
            return _changed(centre, manajemen.referensi_expire(
                centre, _any_school(registry), args["table"], args["code"], args["date"],
                now_ms), now_ms)
        case "bundle_import":  # the bundle's bytes travel as base64 text
            done = dinas.import_bundle(centre, registry, _base64(args["bundle"]), now_ms)
            return table(["npsn", "instalasi", "perubahan", "baru", "kepala sekolah"],
                         [[done.npsn, done.install[:8], done.events, done.applied,
                           done.principal]],
                         f"Bundel sekolah {done.npsn} diterima: {done.applied} perubahan baru "
                         f"dari {done.events} (disetujui {done.principal or '-'})")
        case "bundle_export":
            npsn = _known(registry, args["npsn"])
            try:
                theirs = msgspec.json.decode(args.get("vector") or "{}", type=dict[str, int])
            except msgspec.DecodeError:
                raise AdminError("vector harus objek JSON berisi seq (angka)") from None
            data, n = dinas.export_bundle(centre, npsn, theirs)
            reply = table(["npsn", "perubahan"], [[npsn, n]],
                          f"{n} perubahan dari server pusat untuk sekolah {npsn}")
            return msgspec.structs.replace(reply, data={
                "bundle": base64.b64encode(data).decode(), "events": n})
    raise AdminError(f"unknown admin command {command!r}; known: {', '.join(COMMANDS)}")


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise AdminError("isi bundel harus base64") from None


def _any_school(registry: Registry) -> str:
    """A school to write Referensi through: it is held once, for every school."""
    schools = registry.schools()
    if not schools:
        raise AdminError("belum ada sekolah terdaftar: Referensi dikirim bersama data sekolah")
    return str(schools[0]["npsn"])


def _fields(args: Mapping[str, str]) -> dict[str, str]:
    """The FIELD=VALUE pairs of an edit, sent as one JSON object (``fields``)."""
    try:
        fields = msgspec.json.decode(args.get("fields") or "{}", type=dict[str, str])
    except msgspec.DecodeError:
        raise AdminError("isian harus objek JSON berisi teks") from None
    return fields


def _changed(centre: CentreStore, change: manajemen.Change, now_ms: int) -> AdminReply:
    """The reply to a change of a school's data, after Validasi Pusat has seen it."""
    if change.npsn and change.entity in manajemen.FOLLOWS_HOME:
        manajemen.follow_home_school(centre, change.npsn, now_ms)
    if change.npsn:
        validasi_pusat.after_change(centre, change.npsn, now_ms, {change.entity})
    values = {k: cell(v) for k, v in change.fields.items()}
    reply = table(["sumber", "sekolah", "data", "baris", "isian"],
                  [[change.source, change.npsn, change.entity, change.name,
                    ", ".join(f"{k}={v}" for k, v in values.items())]], change.text())
    return msgspec.structs.replace(reply, data={"change": {
        "source": change.source, "npsn": change.npsn, "entity": change.entity,
        "row_id": change.row_id, "name": change.name, "fields": values}})


def outcome_words(outcome: str | None) -> str:
    """``refused:invalid_data_pending`` -> ``ditolak (invalid_data_pending)``."""
    kind, _, code = (outcome or "dropped").partition(":")
    word = OUTCOME_WORDS.get(kind, kind)
    return f"{word} ({code})" if code else word


def _sources_text(sources: str | None) -> str | None:
    """``{"Manajemen Dapodik": 1, "Referensi": 9}`` -> ``Manajemen Dapodik 1, Referensi 9``."""
    if not sources:
        return None
    return ", ".join(f"{k} {v}" for k, v in json.loads(sources).items())


def _when(epoch_ms: int | None, zone: Zone) -> str | None:
    return None if epoch_ms is None else format_local(epoch_ms, zone)


def _limit(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise AdminError(f"limit harus bilangan bulat mulai 1, bukan {text!r}")
    return int(text)


def _known(registry: Registry, npsn: str) -> str:
    if registry.school(check_npsn(npsn)) is None:
        raise AdminError(f"school {npsn} is not registered")
    return npsn


