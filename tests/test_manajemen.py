"""The centre's own changes flow down (issue 12): Manajemen Dapodik and Verval, from the
``selaras admin`` command of a real centre on 127.0.0.1 to a real install's Tarik Data
and sync, marked with their source; the verified fields locked at the school; a NISN
issued, and refused to a person who has one.

Each command whose output a test reads runs for real (a ``selaras`` process) once; the
steps that set up or read back state run in this process (``selaras_here``: a process
costs a second to start)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from test_principal import KEPSEK, PASSWORD, SELARAS, Centre, school, selaras, selaras_here

from selaras.client import output
from selaras.client.install import Install
from selaras.server.app import ADMIN_TOKEN
from selaras.server.remote import admin_request

NPSN = "20100041"
pytestmark = pytest.mark.skipif(SELARAS is None, reason="the selaras command is not installed")


@pytest.fixture(scope="module")
def install(centre: Centre, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A school whose data the centre holds: generated, confirmed by its principal, synced."""
    folder = tmp_path_factory.mktemp("school")
    generated = folder / "rows.jsonl"
    selaras_here("bench", "generate", "--size", "small", "--npsn", NPSN, "--seed", "11",
                 "--out", str(generated))
    data, kode = school(centre, {NPSN: generated}, NPSN, folder)
    principal(data, kode)
    selaras_here("confirm", "--all", data=data)
    selaras_here("sync", data=data)
    return data


def principal(data: Path, kode: str) -> None:
    """The principal's account on the install, and Tukar Pengguna to it."""
    selaras_here("account", "add", "--role", "kepala_sekolah", "--user", KEPSEK, "--password",
                 PASSWORD, "--kode", kode, data=data)
    selaras_here("switch-user", "--user", KEPSEK, "--password", PASSWORD, "--kode", kode,
                 data=data)


def send(data: Path) -> None:
    """The principal confirms the install's changes and it syncs."""
    selaras_here("confirm", "--all", data=data)
    selaras_here("sync", data=data)


def query(data: Path, sql: str) -> list[dict[str, Any]]:
    return list(json.loads(selaras_here("query", sql, "--json", data=data).stdout))


# Reads straight from the store: the same answers as 'selaras query --json' and
# 'selaras admin query --json'.

def students(data: Path, where: str = "TRUE") -> list[dict[str, Any]]:
    with Install(data).open(read_only=True) as s:
        names, rows = s.store.query(
            "SELECT peserta_didik_id, nama, nisn, nik, nama_ayah, status_verval_pd "
            f"FROM peserta_didik WHERE {where} ORDER BY nisn")
    return list(json.loads(output.to_json([dict(zip(names, r, strict=True)) for r in rows])))


def at_centre(centre: Centre, sql: str) -> list[list[Any]]:
    token = (centre.folder / ADMIN_TOKEN).read_text(encoding="utf-8").strip()
    return asyncio.run(admin_request(centre.url, token, "query", npsn=NPSN, sql=sql)).rows


def admin_change(centre: Centre, *args: str) -> dict[str, Any]:
    return dict(json.loads(centre.admin_here(*args, "--json").stdout)["change"])


def test_manajemen_dapodik_edits_a_row_named_by_its_nisn(centre: Centre, install: Path) -> None:
    student = students(install)[0]
    change = json.loads(centre.admin("edit", "--npsn", NPSN, "peserta_didik", student["nisn"],
                                     "nama_ayah=Budi Santoso", "--json").stdout)["change"]
    assert change["source"] == "Manajemen Dapodik"
    assert change["row_id"] == student["peserta_didik_id"]
    assert change["name"] == f"{student['nama']} (NISN {student['nisn']})"
    pulled = selaras("pull", data=install).stdout
    assert "dari server pusat (Manajemen Dapodik 1)" in pulled
    # The centre's history says what went down, by source (it records the session as the
    # session ends, which may be after the client is done).
    for _ in range(50):
        [latest] = json.loads(centre.admin_here("history", "--npsn", NPSN, "--limit", "1",
                                                "--json").stdout)["sessions"]
        if latest["mode"] == "pull":
            break
        time.sleep(0.1)
    assert latest["mode"] == "pull" and json.loads(latest["sources"]) == {"Manajemen Dapodik": 1}
    assert "Manajemen Dapodik 1" in centre.admin("history", "--npsn", NPSN, "--limit", "1").stdout
    # The school list says what last came down, by source.
    listed = json.loads(centre.admin_here("school", "list", "--json").stdout)["schools"]
    assert json.loads(next(r for r in listed if r["npsn"] == NPSN)["sources"]) == {
        "Manajemen Dapodik": 1}
    assert re.search(rf"^{NPSN} .* Manajemen Dapodik 1$",
                     centre.admin_here("school", "list").stdout, re.M)
    assert students(install, f"nisn = '{student['nisn']}'")[0]["nama_ayah"] == "Budi Santoso"


def test_verval_pd_corrects_and_locks_the_identity(centre: Centre, install: Path) -> None:
    student = students(install)[1]
    change = json.loads(centre.admin("verval", "pd", "--npsn", NPSN, student["nik"],
                                     "nama=Siti Rahmawati", "--json").stdout)["change"]
    assert change["source"] == "VervalPD"
    assert change["fields"] == {"nama": "Siti Rahmawati", "status_verval_pd": 1}
    assert "VervalPD 1" in selaras_here("pull", data=install).stdout
    (now,) = students(install, f"nik = '{student['nik']}'")
    assert (now["nama"], now["status_verval_pd"]) == ("Siti Rahmawati", 1)
    # The school can no longer change what Verval verified; other fields it can.
    refused = selaras("edit", "peserta_didik", student["nisn"], "nama=Siti R", data=install,
                      ok=False)
    assert refused.returncode == 1
    assert "diisi oleh server pusat (sudah diverifikasi)" in refused.stderr
    selaras_here("edit", "peserta_didik", student["nisn"], "nama_ayah=Hasan", data=install)


def test_a_school_edit_and_a_verval_correction_of_one_field_end_the_same(
        centre: Centre, install: Path) -> None:
    """The school renames a student while the centre verifies another name: whichever
    arrives first, the verified name stands everywhere and the replicas agree."""
    student = students(install)[2]
    selaras_here("edit", "peserta_didik", student["nisn"], "nama=Nama Dari Sekolah",
                 data=install)
    admin_change(centre, "verval", "pd", "--npsn", NPSN, student["nisn"], "nama=Nama Verval")
    send(install)  # the school's edit goes up, the correction comes down
    assert students(install, f"nik = '{student['nik']}'")[0]["nama"] == "Nama Verval"
    assert at_centre(centre, "SELECT nama FROM peserta_didik WHERE peserta_didik_id = "
                             f"'{student['peserta_didik_id']}'") == [["Nama Verval"]]
    # The other order: the school's rename reaches the centre first, then Verval's.
    other = students(install)[5]
    selaras_here("edit", "peserta_didik", other["nisn"], "nama=Dari Sekolah Dulu",
                 data=install)
    send(install)
    admin_change(centre, "verval", "pd", "--npsn", NPSN, other["nisn"], "nama=Verval Kemudian")
    selaras_here("pull", data=install)
    assert students(install, f"nik = '{other['nik']}'")[0]["nama"] == "Verval Kemudian"
    mine = json.loads(selaras("checksum", "--json", data=install).stdout)
    theirs = json.loads(centre.admin("checksum", "--npsn", NPSN, "--json").stdout)
    assert mine == theirs


def test_a_nisn_is_issued_once_and_never_to_a_person_who_has_one(
        centre: Centre, install: Path) -> None:
    new, twin = students(install)[3:5]
    # A new student without a NISN yet (as the centre holds it).
    admin_change(centre, "edit", "--npsn", NPSN, "peserta_didik", new["nisn"], "nisn=")
    issued = json.loads(centre.admin("nisn", "--npsn", NPSN, new["nik"],
                                     "--json").stdout)["change"]
    nisn = issued["fields"]["nisn"]
    assert issued["source"] == "VervalPD" and len(nisn) == 10 and nisn.isdigit()
    assert at_centre(centre, f"SELECT count(*) FROM peserta_didik WHERE nisn = '{nisn}'") == [[1]]
    again = centre.admin_here("nisn", "--npsn", NPSN, new["nik"], ok=False)
    assert again.returncode == 1 and "sudah punya NISN" in again.stderr
    # Another record of the same person (the same NIK) gets none.
    admin_change(centre, "edit", "--npsn", NPSN, "peserta_didik", twin["nisn"],
                 f"nik={new['nik']}", "nisn=")
    before = at_centre(centre, "SELECT count(*) FROM event")
    refused = centre.admin_here("nisn", "--npsn", NPSN, twin["peserta_didik_id"], ok=False)
    assert refused.returncode == 1
    assert f"NIK {new['nik']} sudah tercatat untuk" in refused.stderr and nisn in refused.stderr
    assert at_centre(centre, "SELECT count(*) FROM event") == before  # nothing written
    selaras_here("pull", data=install)
    assert students(install, f"nisn = '{nisn}'")[0]["nik"] == new["nik"]
    # The twin NIK is invalid at the school (PD-013) until Manajemen Dapodik puts it back.
    assert selaras_here("validate", data=install, ok=False).returncode == 1
    admin_change(centre, "edit", "--npsn", NPSN, "peserta_didik", twin["peserta_didik_id"],
                 f"nik={twin['nik']}", f"nisn={twin['nisn']}")
    selaras_here("pull", data=install)
    selaras_here("validate", data=install)


def test_verval_ptk_corrects_a_teacher_named_by_nuptk(centre: Centre, install: Path) -> None:
    [teacher] = query(install, "SELECT ptk_id, nuptk FROM ptk ORDER BY nama DESC LIMIT 1")
    change = admin_change(centre, "verval", "ptk", "--npsn", NPSN, teacher["nuptk"],
                          "tanggal_lahir=1980-02-29")
    assert change["source"] == "VervalPTK" and change["row_id"] == teacher["ptk_id"]
    assert change["fields"] == {"tanggal_lahir": "1980-02-29", "status_verval_ptk": 1}
    assert "VervalPTK 1" in selaras_here("pull", data=install).stdout
    refused = selaras_here("edit", "ptk", teacher["nuptk"], "tanggal_lahir=1981-01-01",
                           data=install, ok=False)
    assert "diisi oleh server pusat (sudah diverifikasi)" in refused.stderr


def test_verval_sp_corrects_the_school_identity(centre: Centre, install: Path) -> None:
    change = admin_change(centre, "verval", "sp", "--npsn", NPSN, NPSN, "lintang=-6.2",
                          "bujur=106.8")
    assert change["source"] == "VervalSP"
    assert "VervalSP 1" in selaras_here("pull", data=install).stdout
    got = query(install, "SELECT lintang, bujur FROM sekolah")
    assert [(float(r["lintang"]), float(r["bujur"])) for r in got] == [(-6.2, 106.8)]


@pytest.mark.parametrize(("args", "says"), [
    (("edit", "peserta_didik", "9999999999", "nama_ayah=X"), "tidak ada Peserta Didik dengan"),
    (("edit", "peserta_didik", "{nisn}", "status_verval_pd=1"), "diisi oleh Verval"),
    (("edit", "peserta_didik", "{nisn}", "warna=biru"), "tidak punya isian 'warna'"),
    (("edit", "peserta_didik", "{nisn}", "tanggal_lahir=kemarin"), "bukan tanggal"),
    (("edit", "ref.agama", "1", "nama=X"), "Referensi"),
    (("verval", "pd", "{nisn}", "nama_ayah=X"), "VervalPD membetulkan"),
    (("verval", "ptk", "{nisn}"), "tidak ada PTK dengan"),
])
def test_bad_input_says_why_and_changes_nothing(centre: Centre, install: Path,
                                                args: tuple[str, ...], says: str) -> None:
    nisn = students(install)[-1]["nisn"]
    command, *rest = args
    before = at_centre(centre, "SELECT count(*) FROM event")
    if command == "verval":
        command, kind, *rest = args
        full = [command, kind, "--npsn", NPSN]
    else:
        full = [command, "--npsn", NPSN]
    done = centre.admin_here(*full, *(a.replace("{nisn}", nisn) for a in rest), ok=False)
    assert done.returncode != 0 and says in done.stderr, done.stderr
    assert at_centre(centre, "SELECT count(*) FROM event") == before


def test_a_student_moves_school_once_registered_nowhere(centre: Centre, install: Path,
                                                       tmp_path: Path) -> None:
    """Tarik Data PD: refused while the student is registered at the school they leave;
    after its exit went up, the receiving school gets the same person (one row id, the
    same NISN), once."""
    other = "20100042"
    kode = centre.add_school(other)
    b = tmp_path / "b"
    selaras_here("init", "--server", centre.url, "--npsn", other, "--kode", kode, "--user",
                 "op@sekolah-b.sch.id", "--password", "pw", data=b)
    student = students(install)[6]
    refused = selaras("transfer", "pd", "--nisn", student["nisn"], data=b, ok=False)
    assert refused.returncode == 1
    assert f"masih terdaftar di sekolah asal {NPSN}" in refused.stderr
    left = selaras("exit", "pd", "--nisn", student["nisn"], "--reason", "mutasi", "--date",
                   "2023-09-01", data=install).stdout
    assert left.startswith(f"{student['nama']} (NISN {student['nisn']}) tercatat keluar")
    send(install)
    moved = json.loads(selaras_here("transfer", "pd", "--nisn", student["nisn"], "--json",
                                    data=b).stdout)
    assert (moved["row_id"], moved["origin_npsn"]) == (student["peserta_didik_id"], NPSN)
    assert moved["pull"]["received_from"]["centre_sources"]["Tarik Data PD"] == moved["events"]
    assert moved["events"] > 1  # the student and their yearly records
    [arrived] = students(b)
    assert {k: arrived[k] for k in ("peserta_didik_id", "nisn", "nik", "nama")} == \
        {k: student[k] for k in ("peserta_didik_id", "nisn", "nik", "nama")}
    again = selaras_here("transfer", "pd", "--nik", student["nik"], data=b, ok=False)
    assert again.returncode == 1 and "sudah ada di sekolah ini" in again.stderr
    unknown = selaras_here("transfer", "pd", "--nisn", "0000000001", data=b, ok=False)
    assert "tidak ada Peserta Didik dengan NISN atau NIK 0000000001" in unknown.stderr
    twice = selaras_here("exit", "pd", "--nisn", student["nisn"], "--reason", "mutasi",
                         "--date", "2023-09-02", data=install, ok=False)
    assert "tidak sedang terdaftar di sekolah ini" in twice.stderr


def test_a_teacher_moves_school_by_nuptk(centre: Centre, install: Path, tmp_path: Path) -> None:
    """Tarik Data PTK: the same as a student's, by NUPTK (or NIK), the exit on the teacher's
    assignment (ptk_terdaftar)."""
    other = "20100044"
    kode = centre.add_school(other)
    b = tmp_path / "b"
    selaras_here("init", "--server", centre.url, "--npsn", other, "--kode", kode, "--user",
                 "op@sekolah-c.sch.id", "--password", "pw", data=b)
    # A deputy (not the principal: the school must keep its one kepala sekolah).
    [teacher] = query(install, "SELECT p.ptk_id, p.nama, p.nuptk, p.nik FROM ptk p JOIN "
                      "ptk_terdaftar t USING (ptk_id) JOIN tugas_tambahan x USING (ptk_id) "
                      "WHERE x.jabatan_ptk_id <> 2 ORDER BY p.nama LIMIT 1")
    refused = selaras_here("transfer", "ptk", "--nuptk", teacher["nuptk"], data=b, ok=False)
    assert f"masih terdaftar di sekolah asal {NPSN}" in refused.stderr
    bad = selaras_here("exit", "ptk", "--nuptk", teacher["nuptk"], "--reason", "lulus",
                       "--date", "2024-01-31", data=install, ok=False)
    assert "jenis keluar 'lulus' tidak dikenal" in bad.stderr  # a student's reason
    selaras_here("exit", "ptk", "--nuptk", teacher["nuptk"], "--reason", "mutasi", "--date",
                 "2024-01-31", data=install)
    send(install)
    moved = json.loads(selaras_here("transfer", "ptk", "--nik", teacher["nik"], "--json",
                                    data=b).stdout)
    assert (moved["entity"], moved["row_id"]) == ("ptk", teacher["ptk_id"])
    got = query(b, "SELECT nama, nuptk FROM ptk")
    assert got == [{"nama": teacher["nama"], "nuptk": teacher["nuptk"]}]


def test_the_dinas_carries_a_consented_bundle_both_ways(centre: Centre, install: Path,
                                                       tmp_path: Path) -> None:
    """The offline route: the school's bundle goes through the centre's gate as its sync
    would (a bundle without the consent is refused, nothing kept), twice is once, and
    the centre's changes come back in a bundle of their own."""
    from selaras.engine import bundle

    student = students(install)[7]
    selaras_here("edit", "peserta_didik", student["nisn"], "nama_ayah=Lewat Dinas",
                 data=install)
    up = tmp_path / "ke-dinas.bundle"
    unconfirmed = selaras("bundle", "export", "--out", str(up), "--for-centre", data=install,
                          ok=False)
    assert unconfirmed.returncode == 1 and "Lembar Konfirmasi" in unconfirmed.stderr
    selaras_here("confirm", "--all", data=install)
    selaras_here("bundle", "export", "--out", str(up), "--for-centre", data=install)
    held = f"SELECT nama_ayah FROM peserta_didik WHERE nisn = '{student['nisn']}'"

    # Forged: the same events without the principal's consent.
    b = bundle.decode(up.read_bytes(), npsn=NPSN)
    forged = tmp_path / "tanpa-persetujuan.bundle"
    forged.write_bytes(bundle.encode(npsn=NPSN, origin=b.origin, vector=b.vector,
                                     batch=b.events()))
    refused = centre.admin_here("bundle", "import", str(forged), ok=False)
    assert refused.returncode == 1 and "bundel ditolak (not_principal)" in refused.stderr
    assert at_centre(centre, held) != [["Lewat Dinas"]]

    taken = centre.admin("bundle", "import", str(up)).stdout
    assert f"Bundel sekolah {NPSN} diterima: 1 perubahan baru dari 1" in taken
    assert "0 perubahan baru dari 1" in centre.admin_here("bundle", "import", str(up)).stdout
    assert at_centre(centre, held) == [["Lewat Dinas"]]
    history = json.loads(centre.admin_here("history", "--npsn", NPSN, "--limit", "3",
                                           "--json").stdout)["sessions"]
    assert [(r["mode"], r["outcome"]) for r in history] == [
        ("bundle", "done"), ("bundle", "done"), ("bundle", "refused:not_principal")]
    assert history[0]["principal"] == KEPSEK

    # Down: a Manajemen Dapodik change, carried back by the dinas.
    admin_change(centre, "edit", "--npsn", NPSN, "peserta_didik", student["nisn"],
                 "nama_wali=Dari Dinas")
    down = tmp_path / "dari-dinas.bundle"
    centre.admin_here("bundle", "export", "--npsn", NPSN, "--out", str(down), "--for", str(up))
    first = json.loads(selaras("bundle", "import", str(down), "--json", data=install).stdout)
    assert first["applied"] >= 1
    again = json.loads(selaras_here("bundle", "import", str(down), "--json",
                                    data=install).stdout)
    assert again["applied"] == 0
    got = query(install, f"SELECT nama_wali FROM peserta_didik WHERE nisn = '{student['nisn']}'")
    assert got == [{"nama_wali": "Dari Dinas"}]


def test_validasi_pusat_finds_one_nik_at_two_schools_and_clears_it(
        centre: Centre, install: Path, tmp_path: Path) -> None:
    """A student of school B takes the NIK of a student registered at A: after B's push
    both schools get the finding (shown, marked, not blocking), and it clears at both
    when B puts the NIK back."""
    other = "20100043"
    generated = tmp_path / "b.jsonl"
    selaras_here("bench", "generate", "--size", "small", "--npsn", other, "--seed", "12",
                 "--out", str(generated))
    b, kode = school(centre, {other: generated}, other, tmp_path / "b")
    principal(b, kode)
    mine, theirs = students(b)[0], students(install)[8]

    def push_b(nik: str) -> None:
        selaras_here("edit", "peserta_didik", mine["nisn"], f"nik={nik}", data=b)
        send(b)

    def central(data: Path) -> list[dict[str, Any]]:
        report = json.loads(selaras_here("validate", "--json", data=data).stdout)  # not blocked
        return [f for f in report["findings"] if f["source"] == "Validasi Pusat"]

    push_b(theirs["nik"])
    assert "Validasi Pusat 1" in selaras_here("pull", data=install).stdout
    [found] = central(install)
    assert (found["rule_id"], found["severity"], found["row_id"]) == (
        "VP-001", "invalid", theirs["peserta_didik_id"])
    assert found["detail"] == f"{theirs['nik']}, sekolah {other}"
    text = selaras("validate", data=install).stdout
    assert "[VP-001, Validasi Pusat]" in text and "1 invalid dari Validasi Pusat" in text
    selaras_here("pull", data=b)
    assert [f["row_id"] for f in central(b)] == [mine["peserta_didik_id"]]
    listed = json.loads(centre.admin("central-validation", "--npsn", NPSN, "--json").stdout)
    assert [r[0] for r in listed["rows"]] == ["VP-001"]

    push_b(mine["nik"])  # fixed at B: cleared at both, seen at each one's next Tarik Data
    for data in (install, b):
        selaras_here("pull", data=data)
        assert central(data) == []
    listed = json.loads(centre.admin_here("central-validation", "--npsn", NPSN,
                                          "--json").stdout)
    assert listed["rows"] == []


def test_referensi_codes_are_added_and_expired_for_every_school(centre: Centre,
                                                                install: Path) -> None:
    """Last in the module: the expired code leaves the school with invalid findings."""
    added = json.loads(centre.admin("referensi", "add", "agama", "77", "nama=Kepercayaan Uji",
                                    "--json").stdout)["change"]
    assert added["source"] == "Referensi" and added["fields"]["nama"] == "Kepercayaan Uji"
    [[agama, used]] = at_centre(centre, "SELECT agama_id, count(*) FROM peserta_didik "
                                        "GROUP BY 1 ORDER BY 2 LIMIT 1")
    admin_change(centre, "referensi", "expire", "agama", str(agama), "--date", "2023-01-01")
    again = centre.admin_here("referensi", "add", "agama", "77", "nama=Lagi", ok=False)
    assert again.returncode == 1 and "sudah punya kode 77" in again.stderr
    assert "Referensi 2" in selaras_here("pull", data=install).stdout
    got = query(install, "SELECT nama FROM ref.agama WHERE agama_id = 77")
    assert got == [{"nama": "Kepercayaan Uji"}]
    report = json.loads(selaras_here("validate", "--json", data=install, ok=False).stdout)
    expired = [f for f in report["findings"]
               if str(f["detail"]).endswith(f"{agama} tidak berlaku sejak 2023-01-01")]
    assert len(expired) == used and report["invalid"] >= used
