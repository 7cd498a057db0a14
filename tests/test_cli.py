"""The `selaras` command line, end to end on real data folders.

Most tests drive the click group in-process (CliRunner); one runs the installed
entry point in a subprocess. Every refusal must be one clear line on stderr, a
non-zero exit status, and no change at all: checksums and vector are compared
before and after.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from selaras.client import cli as cli_module
from selaras.client import install as install_module
from selaras.client.cli import cli
from selaras.client.demo import write_small_school
from selaras.engine import bundle
from selaras.engine.events import school_row_id
from selaras.engine.schema import TABS

NPSN = "20219876"
OTHER_NPSN = "20100001"


def run(data: Path | None, *args: str, code: int = 0, env: dict[str, str] | None = None,
        ) -> Result:
    argv = (["--data", str(data)] if data is not None else []) + list(args)
    result = CliRunner().invoke(cli, argv, env=env)
    assert result.exit_code == code, (argv, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def out_json(data: Path, *args: str) -> Any:
    return json.loads(run(data, *args, "--json").stdout)


def refused(data: Path | None, *args: str, code: int = 1) -> str:
    """Run a command that must fail; its one stderr line."""
    result = run(data, *args, code=code)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("selaras: error: "), lines
    return lines[0]


def snapshot(data: Path) -> tuple[dict[str, str], dict[str, int], Any]:
    """What must not move when a command is refused (and what converges)."""
    sums = out_json(data, "checksum")
    conflicts = out_json(data, "conflicts")
    for c in conflicts:
        for s in c["siblings"]:
            del s["who"]  # "this install" / "another install": the reader's point of view
    return sums["checksums"], sums["vector"], conflicts


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("template") / "install"
    run(folder, "init", "--offline", "--npsn", NPSN, "--nama", "SMA NEGERI 1 SUKAMAJU")
    return folder


@pytest.fixture
def school(template: Path, tmp_path: Path) -> Path:
    """One install of school NPSN (a copy of a fresh one: init costs time)."""
    folder = tmp_path / "school"
    shutil.copytree(template, folder)
    return folder


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    write_small_school(path, school_row_id(NPSN), students=6, teachers=3)
    return path


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two installs of one school, initialised offline separately (two origins)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        run(folder, "init", "--offline", "--npsn", NPSN, "--nama", "SMA NEGERI 1 SUKAMAJU")
    return a, b


def swap(src: Path, dst: Path, tmp: Path) -> dict[str, Any]:
    """src sends dst what dst lacks, through a vector file and a bundle file."""
    vector_file, bundle_file = tmp / f"{dst.name}.vector", tmp / f"{src.name}.bundle"
    run(dst, "vector", "--out", str(vector_file))
    run(src, "bundle", "export", "--out", str(bundle_file), "--for", str(vector_file))
    result: dict[str, Any] = out_json(dst, "bundle", "import", str(bundle_file))
    return result


def first_student(data: Path) -> str:
    rows = out_json(data, "query", "SELECT peserta_didik_id FROM peserta_didik ORDER BY nama")
    return str(rows[0]["peserta_didik_id"])


# -- init ---------------------------------------------------------------------------------


def test_init_records_the_identity_and_the_centre_events(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    made = out_json(folder, "init", "--offline", "--npsn", NPSN, "--user", "op@sekolah.id")
    assert made["npsn"] == NPSN and made["user"] == "op@sekolah.id"
    assert (folder / "selaras.duckdb").exists()
    vector = out_json(folder, "checksum")["vector"]
    assert made["origin"] not in vector  # nothing written by this install yet
    assert len(vector) == 2  # the centre's first event and Referensi
    [school] = out_json(folder, "query", "SELECT npsn, nama, bentuk_pendidikan_id FROM sekolah")
    assert school == {"npsn": NPSN, "nama": f"SMA {NPSN}", "bentuk_pendidikan_id": 13}


def test_init_refuses_a_folder_that_holds_an_install(school: Path) -> None:
    before = snapshot(school)
    assert "sudah berisi instalasi" in refused(school, "init", "--offline", "--npsn", NPSN)
    assert snapshot(school) == before


@pytest.mark.parametrize("args, code, says", [
    (["--npsn", NPSN], 2, "--offline"),
    (["--offline", "--npsn", "1234"], 2, "8 digits"),
    (["--offline", "--npsn", "2021987a"], 2, "8 digits"),
    (["--offline", "--npsn", NPSN, "--bentuk", "UNIVERSITAS"], 1,
     "bentuk pendidikan 'UNIVERSITAS' tidak dikenal"),
])
def test_init_refuses_bad_arguments(tmp_path: Path, args: list[str], code: int,
                                    says: str) -> None:
    assert says in refused(tmp_path / "x", "init", *args, code=code)
    assert not (tmp_path / "x" / "selaras.duckdb").exists()


def test_commands_need_an_install(tmp_path: Path) -> None:
    assert "tidak ada instalasi" in refused(tmp_path / "nothing", "checksum")


def test_the_data_folder_comes_from_the_environment(school: Path) -> None:
    via_env = json.loads(run(None, "checksum", "--json",
                             env={"SELARAS_DATA": str(school)}).stdout)
    assert via_env == out_json(school, "checksum")


# -- add / edit / delete / query --------------------------------------------------------------

STUDENT = ["nama=Siti Aminah", "jenis_kelamin=P", "nik=3273014101090001",
           "tempat_lahir=Bandung", "tanggal_lahir=2009-01-01", "agama_id=1",
           "nama_ibu_kandung=Rohimah"]


def test_add_edit_delete_and_query(school: Path) -> None:
    row_id = run(school, "add", "peserta_didik", *STUDENT).stdout.strip()
    query = ("SELECT nama, agama_id, soft_delete FROM peserta_didik "
             f"WHERE peserta_didik_id = '{row_id}'")
    assert out_json(school, "query", query) == [
        {"nama": "Siti Aminah", "agama_id": 1, "soft_delete": None}]
    run(school, "edit", "peserta_didik", row_id, "nama=Siti Aminah Lubis", "agama_id=2")
    run(school, "delete", "peserta_didik", row_id)
    assert out_json(school, "query", query) == [
        {"nama": "Siti Aminah Lubis", "agama_id": 2, "soft_delete": 1}]
    table = run(school, "query", query).stdout
    assert "Siti Aminah Lubis" in table and "(1 row)" in table
    assert run(school, "rebuild", "--verify").stdout.strip().endswith(
        "verified: equal to a replay of the log")


def test_add_prints_json_and_fills_the_school(school: Path) -> None:
    made = out_json(school, "add", "tanah", "nama=Kebun", "luas=120.5",
                    "kepemilikan_sarpras_id=1")
    [row] = out_json(school, "query", "SELECT sekolah_id, luas FROM tanah")
    assert made["entity"] == "tanah"
    assert row == {"sekolah_id": school_row_id(NPSN), "luas": "120.500000"}


@pytest.mark.parametrize("args, code, says", [
    (["add", "murid", "nama=X"], 1, "entitas 'murid' tidak dikenal"),
    (["add", "peserta_didik", "warna=biru"], 1, "tidak punya isian 'warna'"),
    (["add", "peserta_didik", "tanggal_lahir=kemarin"], 1,
     "peserta_didik.tanggal_lahir: 'kemarin' bukan tanggal"),
    (["add", "peserta_didik", "agama_id=satu"], 1,
     "peserta_didik.agama_id: 'satu' bukan bilangan bulat"),
    (["add", "peserta_didik", "nama"], 2, "is not field=value"),
    (["add", "peserta_didik"], 2, "Missing argument"),
    (["add", "ref.agama", "agama_id=50", "nama=Baru"], 1, "datang dari server pusat"),
    (["add", "tanah", f"sekolah_id={school_row_id(OTHER_NPSN)}", "nama=X", "luas=1",
      "kepemilikan_sarpras_id=1"], 1, "hanya memegang sekolah"),
    (["edit", "peserta_didik", "00000000-0000-4000-8000-000000000000", "nama=X"], 1,
     "tidak punya baris"),
    (["edit", "peserta_didik", "not-a-uuid", "nama=X"], 1,
     "tidak ada Peserta Didik dengan NISN, NIK, NIPD 'not-a-uuid'"),
    (["edit", "sekolah", school_row_id(NPSN), "nama=SMA LAIN"], 1, "diisi oleh server pusat"),
    (["delete", "sekolah", "not-a-uuid"], 1, "tidak ada Sekolah dengan NPSN 'not-a-uuid'"),
    (["edit", "peserta_didik", " ", "nama=X"], 1, "baris Peserta Didik tidak disebut"),
    (["conflicts", "resolve", "sekolah", school_row_id(NPSN), "email", "x@y.id"], 1,
     "tidak ada konflik"),
    (["frobnicate"], 2, "No such command"),
])
def test_bad_edits_are_refused_and_change_nothing(school: Path, args: list[str], code: int,
                                                  says: str) -> None:
    before = snapshot(school)
    assert says in refused(school, *args, code=code)
    assert snapshot(school) == before


@pytest.mark.parametrize("sql", [
    "INSERT INTO ref.agama VALUES ('00000000-0000-4000-8000-000000000000', 50, 'X', NULL)",
    "DELETE FROM sekolah",
    "UPDATE sekolah SET nama = 'X'",
    "CREATE TABLE t (a INT)",
    "DROP TABLE peserta_didik",
])
def test_query_refuses_writing_sql(school: Path, sql: str) -> None:
    before = snapshot(school)
    assert "read-only" in refused(school, "query", sql)
    assert snapshot(school) == before


def test_query_reports_bad_sql_in_one_line(school: Path) -> None:
    assert "SQL: " in refused(school, "query", "SELEC 1")
    assert "does not exist" in refused(school, "query", "SELECT * FROM murid")


# -- import ------------------------------------------------------------------------------------


def test_import_counts_rows_per_entity(school: Path, rows_file: Path) -> None:
    counts = out_json(school, "import", str(rows_file))
    assert counts["peserta_didik"] == 6 and counts["ptk"] == 3
    total = sum(counts.values())
    assert total == len(rows_file.read_text().splitlines())
    text = run(school, "import", str(rows_file)).stdout  # same rows again: new events, same data
    assert f"{total} rows imported" in text
    [n] = out_json(school, "query", "SELECT count(*) AS n FROM peserta_didik")
    assert n == {"n": 6}


def test_import_refuses_another_schools_rows(school: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs.jsonl"
    write_small_school(theirs, school_row_id(OTHER_NPSN), students=2, teachers=2)
    before = snapshot(school)
    message = refused(school, "import", str(theirs))
    assert "baris 1: data sekolah lain" in message and "masalah lain" in message
    assert "tidak ada yang diimpor" in message
    assert snapshot(school) == before


@pytest.mark.parametrize("content, says", [
    ("this is not json\n", "baris 1: bukan JSON: file impor harus berisi satu objek JSON"),
    ('{"entity": "murid", "murid_id": "x"}\n', "entitas 'murid' tidak dikenal"),
    ('{"entity": "tanah", "tanah_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", '
     f'"sekolah_id": "{school_row_id(NPSN)}", "luas": "lebar"}}\n',
     "tanah.luas: 'lebar' bukan angka"),
    ('{"entity": "ref.agama", "ref_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}\n',
     "datang dari server pusat"),
])
def test_import_refuses_a_malformed_file(school: Path, tmp_path: Path, content: str,
                                         says: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    before = snapshot(school)
    assert says in refused(school, "import", str(bad))
    assert snapshot(school) == before


# -- validate -----------------------------------------------------------------------------------

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def test_validate_groups_findings_and_fails_on_invalid(school: Path, rows_file: Path) -> None:
    run(school, "import", str(rows_file))
    semester, *clean = run(school, "validate").stdout.strip().splitlines()
    assert semester.startswith("Semester: ")  # the working semester opens the screen
    # Every tab with its counts, zero included; the verdict last, all in Indonesian.
    headings = [line for line in clean if not line.startswith(" ") and ": " in line]
    assert [h.split(": ")[0] for h in headings] == [*TABS, "Validasi Lokal"]
    assert "Sarpras: 0 invalid, 0 peringatan" in clean
    assert clean[-1].startswith("Validasi Lokal: 0 invalid, ")
    assert clean[-1].endswith("sinkronisasi boleh dilakukan")
    row_id = run(school, "add", "peserta_didik", *STUDENT[:2], "nik=123", *STUDENT[3:]).stdout
    dirty = run(school, "validate", code=1).stdout
    lines = dirty.strip().splitlines()
    assert "sinkronisasi diblokir" in lines[-1]
    # The finding names the student (no NISN nor NIPD yet: by NIK) and the field as the form
    # does; no UUID on screen.
    at = lines.index("  Invalid: Siti Aminah (NIK 123)")
    assert lines[at + 1].startswith("    NIK: ") and "(123)" in lines[at + 1]
    assert re.search(r"^Peserta Didik: [1-9]\d* invalid, \d+ peringatan$", dirty, re.M)
    assert not UUID.search(dirty)
    assert all(line.strip()[0].isupper() for line in lines if line.strip())
    found = json.loads(run(school, "validate", "--tab", "peserta didik", "--json",
                           code=1).stdout)
    assert found["invalid"] >= 1
    assert found["tabs"] == [{"tab": "Peserta Didik", "invalid": found["invalid"],
                              "warnings": found["warnings"]}]
    assert {f["tab"] for f in found["findings"]} == {"Peserta Didik"}
    mine = [f for f in found["findings"] if f["row_id"] == row_id.strip()]
    assert any(f["field"] == "nik" and f["severity"] == "invalid" and f["label"] == "NIK"
               for f in mine)
    assert all(f["message"] and f["nama"] == "Siti Aminah (NIK 123)" for f in mine)
    gtk = run(school, "validate", "--tab", "GTK").stdout
    assert gtk.splitlines()[1].startswith("GTK: 0 invalid, ") and "Sekolah" not in gtk
    everything = json.loads(run(school, "validate", "--json", code=1).stdout)
    assert [t["tab"] for t in everything["tabs"]] == list(TABS)
    assert sum(t["invalid"] for t in everything["tabs"]) == everything["invalid"]


# -- bundles, conflicts, convergence -------------------------------------------------------------


def test_two_installs_converge_through_bundles(pair: tuple[Path, Path], rows_file: Path,
                                               tmp_path: Path) -> None:
    a, b = pair
    assert snapshot(a) == snapshot(b)  # identical centre events, made offline
    run(a, "import", str(rows_file))
    sent = swap(a, b, tmp_path)
    assert sent["applied"] == len(rows_file.read_text().splitlines())
    assert swap(b, a, tmp_path)["applied"] == 0
    assert snapshot(a) == snapshot(b)

    student = first_student(a)
    run(a, "edit", "peserta_didik", student, "alamat_jalan=Jl. Melati 7",
        "nama_ayah=Ahmad Suryadi")
    run(b, "edit", "peserta_didik", student, "nomor_telepon_seluler=0812345",
        "nama_ayah=Achmad Suryadi")
    swap(a, b, tmp_path)
    swap(b, a, tmp_path)
    for folder in (a, b):
        [conflict] = out_json(folder, "conflicts")
        assert (conflict["entity"], conflict["row_id"], conflict["field"]) == (
            "peserta_didik", student, "nama_ayah")
        values = {s["value"] for s in conflict["siblings"]}
        assert values == {"Ahmad Suryadi", "Achmad Suryadi"}
        assert sum(s["winner"] for s in conflict["siblings"]) == 1
        text = run(folder, "conflicts").stdout
        assert "nama_ayah" in text and "Achmad Suryadi" in text and "this install" in text
    assert snapshot(a) == snapshot(b)  # the same winner on both

    run(a, "conflicts", "resolve", "peserta_didik", student, "nama_ayah", "Ahmad Suryadi")
    swap(a, b, tmp_path)
    assert swap(b, a, tmp_path)["applied"] == 0
    assert out_json(a, "conflicts") == [] == out_json(b, "conflicts")
    assert run(b, "conflicts").stdout.strip() == "no conflicts"
    assert snapshot(a) == snapshot(b)
    [row] = out_json(b, "query", "SELECT alamat_jalan, nomor_telepon_seluler, nama_ayah "
                     f"FROM peserta_didik WHERE peserta_didik_id = '{student}'")
    assert row == {"alamat_jalan": "Jl. Melati 7", "nomor_telepon_seluler": "0812345",
                   "nama_ayah": "Ahmad Suryadi"}
    for folder in (a, b):
        assert "verified" in run(folder, "rebuild", "--verify").stdout


def test_bundle_import_twice_changes_nothing(pair: tuple[Path, Path], rows_file: Path,
                                            tmp_path: Path) -> None:
    a, b = pair
    run(a, "import", str(rows_file))
    file = tmp_path / "all.bundle"
    exported = out_json(a, "bundle", "export", "--out", str(file))
    first = out_json(b, "bundle", "import", str(file))
    after_first = snapshot(b)
    second = out_json(b, "bundle", "import", str(file))
    assert first["applied"] == exported["events"] - 241  # Referensi and the centre: held
    assert second == {**first, "applied": 0, "duplicates": exported["events"]}
    assert snapshot(b) == after_first == snapshot(a)
    assert "0 events applied" in run(b, "bundle", "import", str(file)).stdout


def test_bundles_out_of_order_are_held_back_then_applied(pair: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    a, b = pair
    run(a, "add", "tanah", "nama=Kebun", "luas=10", "kepemilikan_sarpras_id=1")
    first = tmp_path / "1.bundle"
    run(a, "bundle", "export", "--out", str(first))
    run(a, "vector", "--out", str(tmp_path / "a.vector"))
    run(a, "add", "tanah", "nama=Lapangan", "luas=20", "kepemilikan_sarpras_id=1")
    second = tmp_path / "2.bundle"
    run(a, "bundle", "export", "--out", str(second), "--for", str(tmp_path / "a.vector"))
    assert out_json(b, "bundle", "import", str(second))["held_back"] == 1
    assert "held back" in run(b, "bundle", "import", str(second)).stdout
    assert out_json(b, "bundle", "import", str(first))["applied"] == 1
    assert out_json(b, "bundle", "import", str(second))["applied"] == 1
    assert snapshot(a) == snapshot(b)


def test_export_for_a_bundle_sends_only_what_it_lacks(pair: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    a, b = pair
    run(b, "add", "tanah", "nama=Kebun", "luas=10", "kepemilikan_sarpras_id=1")
    from_b = tmp_path / "b.bundle"
    run(b, "bundle", "export", "--out", str(from_b))
    # A answers B's bundle: B's vector is inside it, so only A's news goes back.
    run(a, "add", "tanah", "nama=Lapangan", "luas=20", "kepemilikan_sarpras_id=1")
    back = out_json(a, "bundle", "export", "--out", str(tmp_path / "a.bundle"),
                    "--for", str(from_b))
    assert back["events"] == 1


def test_bundle_refusals_change_nothing(school: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run(other, "init", "--offline", "--npsn", OTHER_NPSN)
    theirs, good = tmp_path / "theirs.bundle", tmp_path / "good.bundle"
    run(other, "bundle", "export", "--out", str(theirs))
    run(school, "bundle", "export", "--out", str(good))
    data = good.read_bytes()
    cases = {
        "truncated.bundle": (data[: len(data) // 2], "bundel rusak atau tidak lengkap"),
        "flipped.bundle": (data[:-40] + bytes(b ^ 0xFF for b in data[-40:]),
                           "bundel rusak atau tidak lengkap"),
        "notes.txt": (b"Daftar hadir kelas X-1\n", "bukan file bundel selaras"),
        "empty.bundle": (b"", "bukan file bundel selaras"),
        "header.bundle": (bundle.MAGIC, "bundel rusak atau tidak lengkap (terpotong)"),
    }
    before = snapshot(school)
    assert f"milik sekolah {OTHER_NPSN}" in refused(school, "bundle", "import", str(theirs))
    for name, (content, says) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert says in refused(school, "bundle", "import", str(tmp_path / name)), name
    missing = refused(school, "bundle", "import", str(tmp_path / "nope"), code=2)
    assert "does not exist; see 'selaras bundle import --help'" in missing
    assert snapshot(school) == before


def test_any_damage_to_a_bundle_is_a_bundle_error(school: Path, tmp_path: Path) -> None:
    file = tmp_path / "all.bundle"
    run(school, "bundle", "export", "--out", str(file))
    data = file.read_bytes()
    assert len(bundle.decode(data, npsn=NPSN).events()) == 241
    rng = random.Random(1)
    for _ in range(300):
        i = rng.randrange(len(data))
        flipped = data[:i] + bytes([data[i] ^ 1 << rng.randrange(8)]) + data[i + 1:]
        noise = bundle.MAGIC + rng.randbytes(rng.randrange(100))
        for damaged in (data[:i], flipped, noise):
            with pytest.raises(bundle.BundleError) as caught:
                bundle.decode(damaged, npsn=NPSN).events()
            assert str(caught.value)


def test_a_newer_schema_is_refused(school: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    newer = tmp_path / "newer.bundle"
    monkeypatch.setattr(bundle, "SCHEMA_VERSION", bundle.SCHEMA_VERSION + 1)
    run(school, "bundle", "export", "--out", str(newer))
    monkeypatch.undo()
    before = snapshot(school)
    assert "versi skema bundel ini" in refused(school, "bundle", "import", str(newer))
    assert snapshot(school) == before


def test_a_copied_data_folder_collides_loudly(school: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(school, copy)  # a restored backup: same origin, diverging
    run(school, "add", "tanah", "nama=Kebun", "luas=10", "kepemilikan_sarpras_id=1")
    run(copy, "add", "tanah", "nama=Sawah", "luas=99", "kepemilikan_sarpras_id=1")
    file = tmp_path / "copy.bundle"
    run(copy, "bundle", "export", "--out", str(file))
    before = snapshot(school)
    assert "copied or restored" in refused(school, "bundle", "import", str(file))
    assert snapshot(school) == before


def test_installs_initialised_differently_say_so(school: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run(other, "init", "--offline", "--npsn", NPSN, "--nama", "SMA LAIN")
    file = tmp_path / "other.bundle"
    run(other, "bundle", "export", "--out", str(file))
    before = snapshot(school)
    assert "identitas sekolah secara berbeda" in refused(school, "bundle", "import", str(file))
    assert snapshot(school) == before


def test_vector_files(school: Path, tmp_path: Path) -> None:
    printed = json.loads(run(school, "vector").stdout)
    run(school, "vector", "--out", str(tmp_path / "v.json"))
    assert json.loads((tmp_path / "v.json").read_text()) == printed
    assert printed == out_json(school, "checksum")["vector"]
    negative = json.dumps({next(iter(printed)): -1})
    for content in ("[1, 2]", '{"not-a-uuid": 3}', "{", negative):
        (tmp_path / "bad.json").write_text(content)
        assert "bukan vektor versi" in refused(
            school, "bundle", "export", "--out", str(tmp_path / "x"), "--for",
            str(tmp_path / "bad.json"))
    assert not (tmp_path / "x").exists()


def test_rebuild_recomputes_the_data_from_the_log(school: Path, rows_file: Path) -> None:
    import duckdb  # the test tampers with the file behind the store's back

    run(school, "import", str(rows_file))
    before = snapshot(school)
    con = duckdb.connect(str(school / "selaras.duckdb"))
    con.execute("UPDATE peserta_didik SET nama = 'Dirusak'; DELETE FROM ptk")
    con.close()
    # The kept checksums are those of the rows the merge wrote; a full recompute sees the
    # tampering, names the tables and fails.
    assert snapshot(school) == before
    full = json.loads(run(school, "checksum", "--full", "--json", code=1).stdout)
    assert [d.split(":")[0] for d in full["differences"]] == ["peserta_didik", "ptk"]
    assert full["checksums"]["sekolah"] == before[0]["sekolah"]
    assert full["checksums"]["ptk"] != before[0]["ptk"]
    assert json.loads(run(school, "rebuild", "--verify", "--json").stdout) == {
        "rebuilt": True, "verified": True, "differences": []}
    assert snapshot(school) == before
    assert out_json(school, "checksum", "--full")["differences"] == []


def test_rebuild_verify_says_when_the_kept_checksums_were_wrong(school: Path) -> None:
    import duckdb

    con = duckdb.connect(str(school / "selaras.duckdb"))
    con.execute("UPDATE replica.digest SET total = total + 1 WHERE entity = 'sekolah'")
    con.close()
    result = run(school, "rebuild", "--verify", code=1)
    assert "1 differences from a replay" in result.stdout
    assert "sekolah: kept checksum" in result.stdout
    assert out_json(school, "checksum", "--full")["differences"] == []  # rebuilt


def test_checksum_shows_digests_and_who_holds_what(school: Path) -> None:
    text = run(school, "checksum").stdout
    assert "peserta_didik" in text and "referensi" in text and "centre" in text
    sums = out_json(school, "checksum")
    assert set(sums) == {"checksums", "vector"}
    assert len(sums["checksums"]["sekolah"]) == 32


# -- the process around the commands ---------------------------------------------------------


def test_a_busy_data_folder_is_reported(school: Path, monkeypatch: pytest.MonkeyPatch,
                                        ) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom selaras.engine.storage import DuckDBStore\n"
         f"s = DuckDBStore({str(school / 'selaras.duckdb')!r}, frozenset())\n"
         "print('holding', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        monkeypatch.setattr(install_module, "BUSY_WAIT_S", 0.3)
        assert "sedang dipakai" in refused(school, "checksum")
    finally:
        holder.communicate("")


class FakeEntryPoint:
    def __init__(self, name: str, command: object) -> None:
        self.name, self.command = name, command

    def load(self) -> object:
        if isinstance(self.command, Exception):
            raise self.command
        return self.command


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, FakeEntryPoint]]:
    found: dict[str, FakeEntryPoint] = {}
    monkeypatch.setattr(cli_module, "_plugins", lambda: found)
    yield found


def test_plugin_groups_come_from_entry_points(plugins: dict[str, FakeEntryPoint]) -> None:
    @click.group()
    def hello() -> None:
        """Say hello."""

    @hello.command()
    def world() -> None:
        click.echo("hello, world")

    plugins["hello"] = FakeEntryPoint("hello", hello)
    plugins["broken"] = FakeEntryPoint("broken", ImportError("no module named x"))
    assert "hello" in run(None, "--help").stdout
    assert run(None, "hello", "world").stdout == "hello, world\n"
    assert "not available" in refused(None, "broken", "anything")


def test_the_real_plugin_group_is_consulted() -> None:
    names = cli_module._plugins()
    assert "bench" in names  # pyproject registers it; client never imports it


def test_the_installed_entry_point(tmp_path: Path) -> None:
    exe = shutil.which("selaras", path=str(Path(sys.executable).parent))
    assert exe, "the selaras script is installed next to the interpreter"
    data = str(tmp_path / "x")
    made = subprocess.run([exe, "--data", data, "init", "--offline", "--npsn", NPSN, "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(made.stdout)["npsn"] == NPSN
    bad = subprocess.run([exe, "--data", data, "add", "murid", "nama=X"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("selaras: error: entitas 'murid' tidak dikenal")
    assert len(bad.stderr.splitlines()) == 1
    usage = subprocess.run([exe, "--data", data, "add"], capture_output=True, text=True)
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1
