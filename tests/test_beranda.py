"""The operator's login and working semester (client/semester.py), copy-forward of periodic
data, and the Beranda (``selaras status``, client/beranda.py).

Offline cases use a generated school (``selaras bench generate``, imported into an
offline install); the sync cases run the real centre on 127.0.0.1 (``running_server``)
with installs registered with it, as tests/test_sync.py does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from selaras.client import output
from selaras.client.beranda import beranda, last_sessions
from selaras.client.cli import cli
from selaras.client.install import Install, Session, now_ms
from selaras.client.semester import current_semester
from selaras.client.sync import Mode, register, run_sync
from selaras.engine.localtime import Zone, format_local, school_zone
from selaras.server.testing import RunningServer, running_server

NPSN = "20100001"
USER, PASSWORD = "op@sekolah.id", "rahasia123"
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.1}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
LOCAL_TIME = r"\d\d-\d\d-\d{4} \d\d:\d\d (WIB|WITA|WIT)"
GANJIL, GENAP = "2023/2024 Ganjil (20231)", "2023/2024 Genap (20232)"


def run(data: Path, *args: str, code: int = 0) -> Result:
    argv = ["--data", str(data), *args]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == code, (argv, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def out_json(data: Path, *args: str) -> Any:
    return json.loads(run(data, *args, "--json").stdout)


def refused(data: Path, *args: str) -> str:
    lines = run(data, *args, code=1).stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selaras: error: "), lines
    return lines[0]


def query(data: Path, sql: str) -> list[dict[str, Any]]:
    return list(out_json(data, "query", sql))


def people_lines(text: str) -> None:
    """Every line for people: a capital first, no UUID."""
    assert not UUID.search(text), text
    assert all(line.strip()[0].isupper() for line in text.splitlines() if line.strip()), text


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An offline install holding a generated small school (copied per test)."""
    base = tmp_path_factory.mktemp("generated")
    rows = base / "school.jsonl"
    result = CliRunner().invoke(cli, ["bench", "generate", "--size", "small", "--npsn", NPSN,
                                      "--seed", "1", "--out", str(rows)])
    assert result.exit_code == 0, result.output
    folder = base / "install"
    run(folder, "init", "--offline", "--npsn", NPSN)
    run(folder, "import", str(rows))
    return folder


@pytest.fixture
def school(generated: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "school"
    shutil.copytree(generated, folder)
    return folder


def principals_semester(data: Path) -> str:
    """The current semester as Validasi Lokal's SQL sees it (the principal's row)."""
    with Install(data).open(read_only=True) as s:
        (found,) = s.store.principals()
        mine = current_semester(s.store)
        assert mine is not None and mine.semester_id == str(found["semester_id"])
        return mine.semester_id


# -- login ---------------------------------------------------------------------------------


def test_login_defaults_to_the_current_semester_and_the_install_user(school: Path) -> None:
    opened = out_json(school, "login")
    assert opened["user"] == "operator" and opened["semester"]["semester_id"] == "20231"
    assert principals_semester(school) == "20231"  # the rules' current semester
    assert run(school, "login").stdout.strip() == f"Masuk sebagai operator, semester {GANJIL}"
    # The working semester opens every screen.
    assert run(school, "validate").stdout.splitlines()[0] == f"Semester: {GANJIL}"
    assert run(school, "changes").stdout.splitlines()[0] == f"Semester: {GANJIL}"
    assert "Semester" not in json.loads(run(school, "changes", "--json").stdout)


def test_login_with_an_explicit_semester_and_user(school: Path) -> None:
    (kepsek,) = query(school, "SELECT username, nama FROM pengguna "
                              "WHERE peran = 'kepala_sekolah'")
    text = run(school, "login", "--semester", "20232", "--user",
               kepsek["username"].upper()).stdout.strip()
    assert text == f"Masuk sebagai {kepsek['nama']} ({kepsek['username']}), " \
                   f"semester {GENAP}"
    status = run(school, "status").stdout
    assert f"\nSemester: {GENAP}\n" in status
    assert f"\nPengguna: {kepsek['nama']} ({kepsek['username']}), masuk sejak " in status
    assert run(school, "validate", "--tab", "GTK").stdout.splitlines()[:2] == [
        f"Semester: {GENAP}", "GTK: 0 invalid, 0 peringatan"]
    shown = out_json(school, "semester", "show")
    assert shown["working"]["semester_id"] == "20232" and shown["chosen_at_login"]
    assert [s["semester_id"] for s in shown["semesters"]] == ["20231", "20232", "20241"]
    assert shown["semesters"][0]["rows"]["rombongan_belajar"] == 3
    assert shown["semesters"][1]["rows"] == {} and shown["semesters"][1]["working"]
    text = run(school, "semester", "show").stdout
    assert text.splitlines()[0] == f"Semester kerja: {GENAP} (dipilih saat login)"
    assert f"  {GENAP} [semester kerja], 01-01-2024 s.d. 30-06-2024: belum ada data" in text


def test_a_semester_or_user_the_install_does_not_know_is_refused(school: Path) -> None:
    out_json(school, "login", "--semester", "20232")
    before = out_json(school, "status")["login"]
    line = refused(school, "login", "--semester", "20299")
    assert "Semester '20299' tidak ada di Referensi (ref.semester); yang ada: " in line
    assert GANJIL in line and GENAP in line
    line = refused(school, "login", "--user", "siapa@sekolah.id")
    assert line.startswith("selaras: error: Pengguna 'siapa@sekolah.id' tidak dikenal")
    assert out_json(school, "status")["login"] == before  # nothing changed


# -- copy-forward ------------------------------------------------------------------------------


def rows_in(data: Path, entity: str, semester_id: str) -> list[dict[str, Any]]:
    """The live rows of a semester-scoped table in one semester (rombel by name)."""
    order = " ORDER BY nama" if entity == "rombongan_belajar" else ""
    return query(data, f"SELECT * FROM {entity} WHERE semester_id = '{semester_id}' "
                       f"AND coalesce(soft_delete, 0) = 0{order}")


def vector_top(data: Path) -> int:
    with Install(data).open(read_only=True) as s:
        return s.store.vector()[s.identity.origin]


def test_copy_forward_copies_longitudinal_rows_once(school: Path) -> None:
    out_json(school, "login", "--semester", "20231")
    students = rows_in(school, "peserta_didik_longitudinal", "20231")
    # One student left the school before the even semester: their data stays behind.
    leaver = students[0]["peserta_didik_id"]
    (reg,) = query(school, "SELECT registrasi_id FROM registrasi_peserta_didik "
                           f"WHERE peserta_didik_id = '{leaver}'")
    run(school, "edit", "registrasi_peserta_didik", reg["registrasi_id"],
        "tanggal_keluar=2023-12-01", "jenis_keluar_id=2")
    top = vector_top(school)
    done = out_json(school, "semester", "copy-forward")
    assert done["to"]["semester_id"] == "20232" and not done["rombel"]
    assert done["copied"] == {"sekolah_longitudinal": 1,
                              "peserta_didik_longitudinal": len(students) - 1}
    assert done["not_registered"] == 1 and done["present"] == {}
    assert vector_top(school) == top + done["total"]  # this install's events
    copies = {r["peserta_didik_id"]: r for r in rows_in(school, "peserta_didik_longitudinal",
                                                        "20232")}
    assert leaver not in copies and len(copies) == len(students) - 1
    for r in students[1:]:
        copy = copies[r["peserta_didik_id"]]
        assert copy["peserta_didik_longitudinal_id"] != r["peserta_didik_longitudinal_id"]
        assert {k: v for k, v in copy.items() if k not in (
            "peserta_didik_longitudinal_id", "semester_id", "soft_delete")} == {
            k: v for k, v in r.items() if k not in (
                "peserta_didik_longitudinal_id", "semester_id", "soft_delete")}
    assert rows_in(school, "rombongan_belajar", "20232") == []
    # Again: nothing added, the rows found there said.
    again = out_json(school, "semester", "copy-forward")
    assert again["total"] == 0 and vector_top(school) == top + done["total"]
    assert again["present"] == done["copied"]
    text = run(school, "semester", "copy-forward").stdout
    assert text.splitlines()[0] == (f"Salin ke semester berikutnya: {GANJIL} ke {GENAP}: "
                                    "tidak ada yang disalin (semua sudah ada di semester "
                                    "tujuan)")
    people_lines(text)
    # The school's current semester moved on with its periodic data; the rules agree.
    assert principals_semester(school) == "20232"


def test_copy_forward_with_rombel_copies_the_structure_without_members(school: Path) -> None:
    out_json(school, "login")
    text = run(school, "semester", "copy-forward", "--rombel").stdout
    assert "  Rombongan Belajar: 3 disalin" in text
    people_lines(text)
    old, new = (rows_in(school, "rombongan_belajar", s) for s in ("20231", "20232"))
    structure = ("nama", "tingkat_pendidikan_id", "jurusan_sp_id", "kurikulum_id", "ptk_id",
                 "id_ruang", "jenis_rombel", "sekolah_id")
    assert [[r[k] for k in structure] for r in new] == [[r[k] for k in structure] for r in old]
    ids = ", ".join(f"'{r['rombongan_belajar_id']}'" for r in new)
    assert query(school, "SELECT count(*) AS n FROM anggota_rombel "
                         f"WHERE rombongan_belajar_id IN ({ids})") == [{"n": 0}]
    top = vector_top(school)
    again = out_json(school, "semester", "copy-forward", "--rombel")
    assert again["total"] == 0 and again["present"]["rombongan_belajar"] == 3
    assert vector_top(school) == top
    # Into a semester that is not after the working one: refused, nothing written.
    line = refused(school, "semester", "copy-forward", "--to", "20231")
    assert "Semester tujuan 2023/2024 Ganjil (20231) harus sesudah semester kerja" in line
    assert vector_top(school) == top


# -- the Beranda, offline --------------------------------------------------------------------


def test_status_offline_shows_the_school_and_its_counts(school: Path) -> None:
    student = query(school, "SELECT peserta_didik_id FROM peserta_didik ORDER BY nama")[0]
    run(school, "edit", "peserta_didik", student["peserta_didik_id"], "nik=123")
    found = out_json(school, "status")
    validated = json.loads(run(school, "validate", "--json", code=1).stdout)
    assert (found["invalid"], found["warnings"]) == (validated["invalid"],
                                                      validated["warnings"])
    assert found["invalid"] >= 1
    assert found["pending"]["total"] == 768 and found["pending"]["tabs"]["Nilai"]["added"] == 360
    assert found["server"] is None and found["last_sync"] is None and found["conflicts"] == 0
    assert found["principal"] is None and found["login"] is None
    text = run(school, "status").stdout
    lines = text.splitlines()
    assert lines[0] == f"Sekolah: SMA {NPSN} (NPSN {NPSN})"
    assert lines[1] == f"Semester: {GANJIL}"
    assert "Pengguna: belum masuk ('selaras login')" in lines
    assert "Server pusat: tidak ada (instalasi offline)" in lines
    assert "Sinkronisasi terakhir: belum pernah" in lines
    assert "Tarik Data terakhir: belum pernah" in lines
    # The student edited after the import is still one row added.
    assert "Perubahan belum terkirim: 768 data (768 ditambah, 0 diubah, 0 dihapus)" in lines
    assert "  Nilai: 360 ditambah, 0 diubah, 0 dihapus" in lines
    assert (f"Validasi Lokal: {found['invalid']} invalid, {found['warnings']} peringatan: "
            "sinkronisasi diblokir sampai data invalid diperbaiki") in lines
    assert lines[-1] == "Konflik: 0 isian"
    people_lines(text)


def test_logout_ends_the_operators_and_the_principals_session(school: Path) -> None:
    out_json(school, "login", "--semester", "20232")
    until = now_ms() + 10 * 60_000
    with Install(school).open() as s:  # the principal's session, as switch-user opens it
        s.store.set_meta(session=json.dumps({
            "user": "kepsek@sekolah.id", "role": "kepala_sekolah", "nama": "Nadia W.",
            "since_ms": now_ms(), "until_ms": until, "key": "00" * 32}))
        zone = school_zone(s.store, s.identity.sekolah_id)
    found = out_json(school, "status")
    assert found["login"]["semester_id"] == "20232"
    assert found["principal"]["user"] == "kepsek@sekolah.id"
    assert (f"Kepala sekolah: Nadia W. (kepsek@sekolah.id), sesi terbuka sampai "
            f"{format_local(until, zone)}") in run(school, "status").stdout.splitlines()
    assert run(school, "logout").stdout.strip() == ("Sesi pengguna dan sesi kepala sekolah "
                                                     "diakhiri")
    found = out_json(school, "status")
    assert found["login"] is None and found["principal"] is None
    assert found["semester"]["semester_id"] == "20231"  # the current one again
    lines = run(school, "status").stdout.splitlines()
    assert "Pengguna: belum masuk ('selaras login')" in lines
    assert ("Kepala sekolah: tidak ada sesi terbuka (Tukar Pengguna: 'selaras switch-user')"
            in lines)


def test_the_last_sessions_come_from_the_history() -> None:
    import datetime as dt

    def at(minute: int) -> dt.datetime:
        return dt.datetime(2026, 8, 31, 7, minute, tzinfo=dt.UTC)

    history = [  # newest first, as the store gives it
        {"mode": "sync", "outcome": "busy", "started": at(40), "ended": at(41)},
        {"mode": "sync", "outcome": "ok", "started": at(30), "ended": at(31)},
        {"mode": "pull", "outcome": "timeout", "started": at(20), "ended": at(22)},
        {"mode": "pull", "outcome": "ok", "started": at(10), "ended": at(12)},
    ]
    sync, pull, failed = last_sessions(history)
    assert sync is not None and sync.ended_ms == int(at(31).timestamp() * 1000)
    assert pull is not None and pull.ended_ms == int(at(12).timestamp() * 1000)
    assert failed is not None and (failed.mode, failed.outcome) == ("sync", "busy")
    assert last_sessions(history[1:])[2] is None
    assert last_sessions([]) == (None, None, None)
    assert output.outcome_text("refused:auth_failed") == "ditolak server pusat (auth_failed)"


# -- the Beranda, with the centre ------------------------------------------------------------


async def enrol(srv: RunningServer, kode: str, folder: Path, stack: ExitStack) -> Session:
    """Register an install with the centre's kode, open it and pull (tests/test_sync.py)."""
    answer = await register(srv.url, NPSN, kode, USER, PASSWORD)
    install = Install(folder)
    install.init_registered(NPSN, origin=answer.install, token=answer.token, url=srv.url,
                            user=USER, role=answer.role, centre_key=answer.centre_key)
    session = stack.enter_context(install.open())
    await synced(session, "pull")
    return session


async def synced(session: Session, mode: Mode = "sync") -> None:
    report = await run_sync(session.store, session.identity, mode=mode, timeout_s=20, **FAST)
    assert report.ok


def ended_ms(session: Session, mode: str) -> int:
    record = next(h for h in session.store.history() if h["mode"] == mode
                  and h["outcome"] == "ok")
    return int(record["ended"].timestamp() * 1000)


def test_status_with_the_centre_shows_syncs_pending_and_conflicts(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1 Sukamaju")
            with ExitStack() as stack:
                a = await enrol(srv, kode, tmp_path / "a", stack)
                b = await enrol(srv, kode, tmp_path / "b", stack)
                row = str(uuid.uuid4())
                a.replica.record([("tanah", row, {"nama": "Tanah Utama"})], now_ms())
                await synced(a)
                await synced(b, "pull")
                # Both PCs change one field concurrently: a conflict once both synced.
                a.replica.edit("tanah", row, {"nama": "Tanah A", "luas": "10"}, now_ms())
                b.replica.edit("tanah", row, {"nama": "Tanah B", "luas": "20"}, now_ms())
                await synced(b)
                await synced(a)
                a.replica.record([("tanah", str(uuid.uuid4()), {"nama": "Kebun"})], now_ms())
                found = beranda(a)
                zone = school_zone(a.store, a.identity.sekolah_id)
                assert found.zone is zone and zone.name in ("WIB", "WITA", "WIT")
                assert found.school == "SMA Negeri 1 Sukamaju" and found.server == srv.url
                assert found.conflicts == 2  # nama and luas of one row
                assert found.pending["Sarpras"].added == 1 and found.pending_total.total == 1
                text = output.beranda_text(found)
                lines = text.splitlines()
                assert lines[0] == f"Sekolah: SMA Negeri 1 Sukamaju (NPSN {NPSN})"
                assert lines[1].startswith("Semester: ") and "(2024" in lines[1]
                assert (f"Sinkronisasi terakhir: {format_local(ended_ms(a, 'sync'), zone)}"
                        in lines)
                assert (f"Tarik Data terakhir: {format_local(ended_ms(a, 'pull'), zone)}"
                        in lines)
                assert re.search(f"^Sinkronisasi terakhir: {LOCAL_TIME}$", text, re.M)
                assert f"Server pusat: {srv.url}" in lines
                assert "Perubahan belum terkirim: 1 data (1 ditambah, 0 diubah, 0 dihapus)" \
                    in lines
                assert "  Sarpras: 1 ditambah, 0 diubah, 0 dihapus" in lines
                assert lines[-1].startswith("Konflik: 2 isian")
                people_lines(text)
                as_json = found.as_json()
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+]0[789]:00",
                                    as_json["last_sync"]["ended"])
                assert as_json["conflicts"] == 2 and as_json["zone"] == zone.name
                # The same instants read in Indonesia's other zones.
                sync_ms = ended_ms(a, "sync")
                for other in Zone:
                    shown = output.beranda_text(dataclasses.replace(found, zone=other))
                    assert (f"Sinkronisasi terakhir: {format_local(sync_ms, other)}"
                            in shown.splitlines())
                    assert format_local(sync_ms, other).endswith(f" {other.name}")
    asyncio.run(main())
