"""Point 9 of docs/security.md ("Errors"): plain errors for input and environment faults.

A full disk, a read-only data folder, a damaged bundle, a number out of range, a
list or an object where a value goes, a value of 5000 characters, a file name
with pattern characters: each is refused in one line of Indonesian on stderr that
names the field or the cause, exit status 1, never a traceback nor "internal
error", and the install's checksums and vector do not move.

A full disk is a real small tmpfs, and a read-only folder a real read-only bind
mount (tests run as root, where chmod stops nothing); where mounting is not
allowed, those tests are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from selaras.client.cli import cli
from selaras.client.demo import write_small_school
from selaras.engine.events import school_row_id
from selaras.engine.values import SHOWN

NPSN = "20219876"
SEKOLAH_ID = school_row_id(NPSN)
BIG = 2**70
# Words that would say an English message slipped through (the prefix aside).
ENGLISH = ("nothing", " is not ", "cannot", "failed", "error:", "disk is full", "read-only")


def cli_run(data: Path | None, *args: str) -> Result:
    argv = (["--data", str(data)] if data is not None else []) + list(args)
    return CliRunner().invoke(cli, argv)


def refused(data: Path | None, *args: str, says: tuple[str, ...]) -> str:
    """Run a command that must be refused as point 9 says; its one stderr line."""
    result = cli_run(data, *args)
    assert result.exit_code == 1, (args, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # no escaped exception
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("selaras: error: "), line
    assert "Traceback" not in result.stderr and "internal error" not in line, line
    text = line.removeprefix("selaras: error: ")
    assert not any(word in text for word in ENGLISH), line
    for word in says:
        assert word in text, line
    return line


def state(data: Path) -> Any:
    """What must not move: checksums and vector, as 'selaras checksum --json' prints them."""
    result = cli_run(data, "checksum", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def rows_file(path: Path, *rows: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def student(**fields: object) -> dict[str, object]:
    return {"entity": "peserta_didik", "peserta_didik_id": str(uuid.uuid4()),
            "nama": "Siti Aminah", "jenis_kelamin": "P", **fields}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("errors") / "install"
    result = cli_run(folder, "init", "--offline", "--npsn", NPSN, "--nama", "SMA SATU")
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def school(template: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "school"
    shutil.copytree(template, folder)
    return folder


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def mounted(target: Path, *args: str) -> Iterator[None]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a file system needs root and mount(8)")
    if not mount(*args, str(target)):
        pytest.skip(f"cannot mount here ({' '.join(args)})")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only for real, root included: a read-only bind mount on itself."""
    with mounted(folder, "--bind", str(folder)):
        if not mount("-o", "remount,ro,bind", str(folder)):
            pytest.skip("cannot remount a bind mount read-only here")
        probe = folder / ".probe"
        with contextlib.suppress(OSError):
            probe.write_bytes(b"x")
        if probe.exists():
            pytest.skip("the read-only mount still takes writes")
        yield


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")
                f.flush()
        with contextlib.suppress(OSError):
            f.close()


# -- the environment ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["import", "add"])
def test_a_full_disk_is_said_and_changes_nothing(tmp_path: Path, command: str) -> None:
    small = tmp_path / "small"
    small.mkdir()
    rows = tmp_path / "school.jsonl"  # outside the small disk
    write_small_school(rows, SEKOLAH_ID, students=400, teachers=20)
    with mounted(small, "-t", "tmpfs", "-o", "size=24m", "tmpfs"):
        data = small / "install"
        assert cli_run(data, "init", "--offline", "--npsn", NPSN).exit_code == 0
        before = state(data)
        fill(small)
        args = ["import", str(rows)] if command == "import" else [
            "add", "peserta_didik", "nama=Siti Aminah"]
        refused(data, *args, says=("disk penuh", "kosongkan", "tidak ada yang diubah"))
        assert state(data) == before
        (small / "filler").unlink()  # space again: the install is as it was, and works
        assert state(data) == before
        assert cli_run(data, *args).exit_code == 0
        assert state(data) != before


def test_a_read_only_data_folder_is_said_and_changes_nothing(school: Path, tmp_path: Path,
                                                            ) -> None:
    rows = rows_file(tmp_path / "rows.jsonl", student())
    before = state(school)
    with read_only(school):
        assert state(school) == before  # reading still works
        refused(school, "add", "peserta_didik", "nama=Siti Aminah",
                says=("folder data tidak dapat ditulis", "hanya-baca", "tidak ada yang diubah"))
        refused(school, "import", str(rows), says=("folder data tidak dapat ditulis",))
        refused(school, "vector", "--out", str(school / "v.json"),
                says=("v.json", "folder hanya-baca"))
        refused(school / "new", "init", "--offline", "--npsn", NPSN,
                says=("new", "folder hanya-baca"))
        assert state(school) == before
    assert state(school) == before
    assert sorted(p.name for p in school.iterdir()) == ["selaras.duckdb"]


def test_the_admin_on_a_read_only_folder_is_told_in_words(tmp_path: Path) -> None:
    centre = tmp_path / "centre"
    added = cli_run(None, "admin", "--data", str(centre), "school", "add", "--npsn", NPSN)
    assert added.exit_code == 0, added.output
    with read_only(centre):
        refused(None, "admin", "--data", str(centre), "school", "add", "--npsn", "20100001",
                says=("basis data pusat", "folder data tidak dapat ditulis",
                      "tidak ada yang diubah"))
        refused(None, "server", "--data", str(centre), "--port", "0",
                says=("hanya-baca",))
    listed = cli_run(None, "admin", "--data", str(centre), "school", "list")
    assert listed.exit_code == 0, listed.output
    assert NPSN in listed.stdout and "20100001" not in listed.stdout


def test_a_bad_store_url_is_said_in_words() -> None:
    result = cli_run(None, "admin", "--store", "sqlite:///centre.db", "school", "list")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "--store: beri URL postgresql://" in line and "sqlite" not in line, line


# -- a damaged bundle ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_a_damaged_bundle_is_said_and_changes_nothing(school: Path, tmp_path: Path,
                                                      damage: str) -> None:
    other = tmp_path / "other"
    shutil.copytree(school, other)
    added = cli_run(other, "add", "peserta_didik", "nama=Siti Aminah")
    assert added.exit_code == 0, added.output
    file = tmp_path / "b.bundle"
    assert cli_run(other, "bundle", "export", "--out", str(file)).exit_code == 0
    data = file.read_bytes()
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        i = len(data) // 2
        data = data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:]
    file.write_bytes(data)
    before = state(school)
    refused(school, "bundle", "import", str(file),
            says=("bundel rusak atau tidak lengkap", "tidak ada yang diimpor", "salin ulang"))
    assert state(school) == before


def test_a_vector_file_out_of_range_is_said(school: Path, tmp_path: Path) -> None:
    vector = state(school)["vector"]
    for seq in (BIG, 2**63, [1], {"a": 1}):
        file = tmp_path / "v.json"
        file.write_text(json.dumps({next(iter(vector)): seq}))
        refused(school, "bundle", "export", "--out", str(tmp_path / "x.bundle"), "--for",
                str(file), says=("bukan vektor versi",))
        assert not (tmp_path / "x.bundle").exists()


# -- values: out of range, a list or an object, a long one -----------------------------------


def test_an_integer_of_2_to_the_70_in_add_and_edit(school: Path) -> None:
    before = state(school)
    says = ("peserta_didik.rt", str(BIG), "di luar batas bilangan bulat", "perbaiki nilainya")
    refused(school, "add", "peserta_didik", "nama=Siti Aminah", f"rt={BIG}", says=says)
    refused(school, "add", "peserta_didik", "nama=Siti Aminah", f"rt=-{BIG}", says=says[:3])
    assert state(school) == before
    row_id = cli_run(school, "add", "peserta_didik", "nama=Siti Aminah").stdout.strip()
    before = state(school)
    refused(school, "edit", "peserta_didik", row_id, f"rt={BIG}", says=says)
    refused(school, "add", "tanah", "nama=Kebun", f"luas={BIG}", "kepemilikan_sarpras_id=1",
            says=("tanah.luas", "di luar batas angka"))
    assert state(school) == before


def test_an_integer_of_2_to_the_70_in_an_import_file(school: Path, tmp_path: Path) -> None:
    rows = rows_file(tmp_path / "rows.jsonl", student(), student(rt=BIG))
    before = state(school)
    refused(school, "import", str(rows),
            says=("rows.jsonl: baris 2: peserta_didik.rt", str(BIG),
                  "di luar batas bilangan bulat", "tidak ada yang diimpor"))
    assert state(school) == before


@pytest.mark.parametrize("value, kind", [(["Siti", "Aminah"], "daftar"),
                                         ({"depan": "Siti"}, "objek")])
def test_a_list_or_an_object_where_a_value_goes(school: Path, tmp_path: Path, value: object,
                                                kind: str) -> None:
    before = state(school)
    for field, row in [("nama", student(nama=value)), ("rt", student(rt=value)),
                       ("peserta_didik_id", student(peserta_didik_id=value))]:
        rows = rows_file(tmp_path / "rows.jsonl", student(), row)
        refused(school, "import", str(rows),
                says=(f"baris 2: peserta_didik.{field}: berisi {kind}",
                      "padahal harus satu nilai", "tidak ada yang diimpor"))
    assert state(school) == before


def test_a_5000_character_value_is_echoed_as_a_short_prefix(school: Path,
                                                            tmp_path: Path) -> None:
    before = state(school)
    long = "Siti Aminah " * 417  # 5004 characters
    line = refused(school, "add", "peserta_didik", f"nama={long}",
                   says=("peserta_didik.nama", "terlalu panjang", "5004 karakter"))
    assert repr(long[:SHOWN]) + "..." in line and long[:SHOWN + 1] not in line
    assert len(line) < 300
    digits = "9" * 5000
    line = refused(school, "add", "peserta_didik", "nama=X", f"rt={digits}",
                   says=("peserta_didik.rt", "di luar batas bilangan bulat"))
    assert "9" * SHOWN in line and "9" * (SHOWN + 1) not in line and len(line) < 300
    rows = rows_file(tmp_path / "rows.jsonl", student(tanggal_lahir=digits))
    line = refused(school, "import", str(rows),
                   says=("peserta_didik.tanggal_lahir", "bukan tanggal"))
    assert "9" * SHOWN in line and "9" * (SHOWN + 1) not in line and len(line) < 300
    rows = rows_file(tmp_path / "rows.jsonl", {"entity": "x" * 5000})
    line = refused(school, "import", str(rows), says=("entitas", "tidak dikenal"))
    assert len(line) < 300
    line = refused(school, "add", "x" * 5000, "nama=X", says=("entitas", "tidak dikenal"))
    assert "x" * (SHOWN + 1) not in line
    assert state(school) == before


# -- a file name is the file's own, never a pattern -------------------------------------------


def names(data: Path) -> list[str]:
    result = cli_run(data, "query", "--json", "SELECT nama FROM peserta_didik ORDER BY nama")
    assert result.exit_code == 0, result.output
    return [r["nama"] for r in json.loads(result.stdout)]


@pytest.mark.parametrize("name, decoys", [
    ("rows[1].jsonl", ["rows1.jsonl"]),
    ("rows*.jsonl", ["rows-a.jsonl", "rows-b.jsonl"]),
    ("rows?.jsonl", ["rowsA.jsonl"]),
])
def test_a_file_name_with_pattern_characters_is_read_as_itself(school: Path, tmp_path: Path,
                                                               name: str,
                                                               decoys: list[str]) -> None:
    for decoy in decoys:
        rows_file(tmp_path / decoy, student(nama=f"Bukan {decoy}"))
    # A bad row in the named file: refused, though every file the pattern matches is good.
    bad = rows_file(tmp_path / name, student(nama="Sendiri", rt=BIG))
    before = state(school)
    refused(school, "import", str(bad),
            says=(f"{name}: baris 1: peserta_didik.rt", "di luar batas bilangan bulat"))
    assert state(school) == before
    good = rows_file(tmp_path / name, student(nama="Sendiri"))
    result = cli_run(school, "import", str(good))
    assert result.exit_code == 0, result.output
    assert names(school) == ["Sendiri"]


def test_lines_are_counted_across_reads(school: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is read a chunk at a time: a line cut by a read, blank lines and CRLF
    endings still give each row its own line number, and every row comes in."""
    from selaras.engine.storage import bulk

    monkeypatch.setattr(bulk, "CHUNK", 1000)
    rows = [student(nama=f"Murid {i:03d}") for i in range(60)]
    lines = [json.dumps(r) + ("\r\n" if i % 3 else "\n") + ("\n  \n" if i % 7 == 0 else "")
             for i, r in enumerate(rows)]
    text = "\ufeff" + "".join(lines)
    n_bad = text.count("\n", 0, text.index("Murid 050")) + 1  # the file line of row 50
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text.replace('"Murid 050"', '"Murid 050", "rt": ' + str(BIG)), newline="")
    before = state(school)
    refused(school, "import", str(bad), says=(f"baris {n_bad}: peserta_didik.rt",))
    assert state(school) == before
    good = tmp_path / "good.jsonl"
    good.write_text(text, newline="")
    result = cli_run(school, "import", str(good))
    assert result.exit_code == 0, result.output
    assert names(school) == [f"Murid {i:03d}" for i in range(60)]
    mine = set(state(school)["vector"].items()) - set(before["vector"].items())
    assert [seq for _, seq in mine] == [60]  # one event per row, no gap
    assert cli_run(school, "rebuild", "--verify").exit_code == 0
