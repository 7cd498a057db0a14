"""The printed Lembar Konfirmasi (``selaras confirm --print``): the PDF module with plain
data, and the real command on an install registered with a real ``selaras server``
(driven as tests/test_principal.py drives it). The PDF's text is read back with pypdf."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pypdf import PdfReader
from test_principal import KEPSEK, PASSWORD, SELARAS, Centre, school, selaras, selaras_here

from selaras.client.principal import SheetItem
from selaras.client.sheet_pdf import (
    SchoolIdentity,
    latin1,
    school_identity,
    semester_text,
    write_sheet_pdf,
)
from selaras.engine.consent import Consent
from selaras.engine.localtime import Zone

NPSN = "20100031"


def pdf_text(path: Path) -> tuple[int, str]:
    """The PDF's page count and its text, whitespace made single spaces."""
    assert path.read_bytes().startswith(b"%PDF-")
    reader = PdfReader(path)
    text = " ".join(page.extract_text() for page in reader.pages)
    return len(reader.pages), re.sub(r"\s+", " ", text)


def has_counts(text: str, tab: str, rows: int, changes: int) -> bool:
    return re.search(rf"{re.escape(tab)} {rows} {changes}\b", text) is not None


# -- the module, with plain data -------------------------------------------------------------

ITEMS = [SheetItem("Sekolah", 1, 0, {}),
         SheetItem("Sarpras", 67, 3, {"tanah": 1, "bangunan": 2}),
         SheetItem("Peserta Didik", 1234, 57, {"peserta_didik": 20, "anggota_rombel": 37}),
         SheetItem("GTK", 45, 0, {}),
         SheetItem("Rombongan Belajar & Jadwal", 30, 0, {}),
         SheetItem("Pembelajaran", 300, 0, {}),
         SheetItem("Nilai", 9000, 12, {"nilai": 12})]


def a_consent(nama: str) -> Consent:
    return Consent(npsn="20100011", install="0b3c6d2e-0000-4000-8000-1234567890ab",
                   account=KEPSEK, ptk_id="p1", nama=nama, nip="197001011995031001",
                   semester_id="20231", made_ms=1_764_921_900_000, sheet_hash="5e" * 32,
                   vector={"0b3c6d2e-0000-4000-8000-1234567890ab": 57})


def test_the_sheet_shows_school_counts_principal_and_hashes(tmp_path: Path) -> None:
    # Ş has a latin-1 letter under its accent; 王 and Ł have none: '?' stands for them.
    made = a_consent("Dra. Şiti Łestari 王, M.Pd.")
    school = SchoolIdentity(nama="SMA Négeri 1 Cimahi", npsn="20100011",
                            alamat="Jl. Merdeka No. 7, RT 1/RW 2, Cibabat",
                            kecamatan="Kec. Cimahi Utara", kabupaten="Kota Cimahi",
                            provinsi="Prov. Jawa Barat", kode_wilayah="026102")
    out = tmp_path / "lembar.pdf"
    out.write_bytes(b"an older sheet")
    write_sheet_pdf(out, school, ITEMS, made, "05-12-2025 14:05 WIB")

    pages, text = pdf_text(out)
    assert pages == 1  # fits on one A4 page
    assert [p.name for p in tmp_path.iterdir()] == ["lembar.pdf"]  # no .part left behind
    assert "Lembar Konfirmasi Sinkronisasi".upper() in text
    assert "SMA Négeri 1 Cimahi" in text and "NPSN 20100011" in text
    assert "Kota Cimahi" in text and "Prov. Jawa Barat" in text
    assert "2023/2024 Ganjil (20231)" in text
    for item in ITEMS:
        assert has_counts(text, item.tab, item.rows, item.changes), item.tab
    assert "tanah 1, bangunan 2" in text
    assert "Pakta Integritas" in text and "Persetujuan Pengiriman Data" in text
    assert "benar, lengkap, dan dapat dipertanggungjawabkan" in text
    assert "Dra. Siti ?estari ?, M.Pd." in text and "NIP 197001011995031001" in text
    assert "Cimahi, 05-12-2025 14:05 WIB" in text
    assert "Kepala Sekolah," in text and "Operator Sekolah," in text
    assert made.sheet_hash in text and made.digest in text


def test_a_school_without_its_data_yet_still_prints() -> None:
    school = school_identity("20100011", None, {})
    assert school == SchoolIdentity(nama="-", npsn="20100011")
    assert school.zone is Zone.WIB and school.place == ""


def test_the_identity_walks_the_regions_up() -> None:
    regions = {
        "020000": {"nama": "Prov. Jawa Barat", "id_level_wilayah": 1,
                   "mst_kode_wilayah": "000000"},
        "026100": {"nama": "Kota Cimahi", "id_level_wilayah": 2, "mst_kode_wilayah": "020000"},
        "026102": {"nama": "Kec. Cimahi Utara", "id_level_wilayah": 3,
                   "mst_kode_wilayah": "026100"},
        "190000": {"nama": "Prov. Sulawesi Selatan", "id_level_wilayah": 1,
                   "mst_kode_wilayah": "190000"},  # a loop in the data ends the walk
    }
    row = {"nama": "SMA Uji", "npsn": "20100011", "alamat_jalan": "Jl. Merdeka No. 7",
           "rt": 1, "rw": 2, "desa_kelurahan": "Cibabat", "kode_wilayah": "026102",
           "kode_pos": "40513"}
    school = school_identity("20100011", row, regions)
    assert school.alamat == "Jl. Merdeka No. 7, RT 1/RW 2, Cibabat, 40513"
    assert (school.kecamatan, school.kabupaten, school.provinsi) == (
        "Kec. Cimahi Utara", "Kota Cimahi", "Prov. Jawa Barat")
    assert school.place == "Cimahi" and school.zone is Zone.WIB
    makassar = school_identity("20100011", {**row, "kode_wilayah": "190000"}, regions)
    assert makassar.provinsi == "Prov. Sulawesi Selatan" and makassar.zone is Zone.WITA


def test_texts_the_core_font_can_write() -> None:
    assert latin1("Ñoño Şahin “Ł” – 王") == 'Ñoño Sahin "?" - ?'
    assert semester_text("20232") == "2023/2024 Genap (20232)"
    assert semester_text("") == "-"


# -- the command, against a real centre --------------------------------------------------------

needs_selaras = pytest.mark.skipif(SELARAS is None, reason="the selaras command is not installed")


@pytest.fixture(scope="module")
def principal_install(centre: Centre, tmp_path_factory: pytest.TempPathFactory,
                      ) -> tuple[Path, dict[str, str]]:
    """A registered install with a generated school, the principal switched in; and the
    principal's account as 'account add' answered it (the steps that only set up state run
    in this process: a 'selaras' process costs a second to start)."""
    folder = tmp_path_factory.mktemp("school")
    generated = folder / "rows.jsonl"
    selaras_here("bench", "generate", "--size", "small", "--npsn", NPSN, "--seed", "5",
                 "--out", str(generated))
    data, kode = school(centre, {NPSN: generated}, NPSN, folder)
    account = json.loads(selaras("account", "add", "--role", "kepala_sekolah", "--user", KEPSEK,
                                 "--password", PASSWORD, "--kode", kode, "--json",
                                 data=data).stdout)
    selaras_here("switch-user", "--user", KEPSEK, "--password", PASSWORD, "--kode", kode,
                 data=data)
    return data, account


@needs_selaras
def test_confirm_print_writes_the_signed_sheet(principal_install: tuple[Path, dict[str, str]],
                                               tmp_path: Path) -> None:
    data, account = principal_install
    out = tmp_path / "lembar konfirmasi.pdf"
    said = selaras("confirm", "--all", "--json", "--print", str(out), data=data).stdout
    made = json.loads(said)
    assert made["file"] == str(out)

    pages, text = pdf_text(out)
    assert pages == 1
    (sekolah,) = json.loads(selaras_here("query", "SELECT nama, npsn FROM sekolah", "--json",
                                         data=data).stdout)
    assert sekolah["npsn"] == NPSN
    assert f"Nama Sekolah : {sekolah['nama']}" in text and f"NPSN : {NPSN}" in text
    assert len(made["items"]) == 7
    for item in made["items"]:
        assert has_counts(text, item["tab"], item["rows"], item["changes"]), item
    assert sum(item["changes"] for item in made["items"]) > 0  # the import is not sent yet
    assert account["nama"] and account["nip"]
    assert f"{account['nama']}, NIP {account['nip']}" in text
    assert f"NIP {account['nip']}" in text
    assert made["sheet_hash"] in text and made["consent"] in text
    # The school's local date and time, as engine/localtime.py writes it.
    assert re.search(r", \d\d-\d\d-\d{4} \d\d:\d\d WI(B|TA|T)\b", text)

    again = tmp_path / "lagi.pdf"
    told = selaras("confirm", "--all", "--print", str(again), data=data).stdout
    assert f"Lembar konfirmasi ditulis ke {again}" in told
    assert again.read_bytes().startswith(b"%PDF-")


@needs_selaras
def test_confirm_print_to_a_missing_folder_fails_first(
        principal_install: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    data, _ = principal_install
    nowhere = tmp_path / "tidak-ada" / "lembar.pdf"
    refused = selaras("confirm", "--all", "--print", str(nowhere), data=data, ok=False)
    assert refused.returncode == 1 and "tidak ada" in refused.stderr
    assert "Lembar Konfirmasi" not in refused.stdout  # before the sheet was gone through
    assert not nowhere.parent.exists()
