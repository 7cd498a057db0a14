"""Validasi Lokal rules: each one silent on a clean school and firing on its own mutation.

A small, clean SMA is built once in an in-memory DuckDB (the materialised
tables of engine.schema, its own minimal ref rows). Every rule must find
nothing there. Every rule also has an entry in MUTATIONS: SQL that breaks the
clean school in one place, the rows the rule must then flag (exactly those),
and the other rules the same mutation legitimately sets off (exactly those).
Each case runs inside a transaction that is rolled back.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import duckdb
import pytest

from selaras.engine import schema
from selaras.engine.labels import entity_label
from selaras.engine.storage.database import Database, create_tables
from selaras.engine.storage.log import DuckDBStore
from selaras.engine.validation import (
    INVALID,
    RULES,
    TABS,
    WARNING,
    Rule,
    TabCount,
    rules_for,
    tab_counts,
    validate,
    validation_sql,
)

_NS = uuid.UUID("6f0e3a52-6d1c-4a8e-9a51-1d1a0e7c0001")


def uid(name: str) -> str:
    """The UUID the test data gives the row called ``name``."""
    return str(uuid.uuid5(_NS, name))


class _Literals(dict[str, str]):
    """``{name}`` in mutation SQL -> that row's UUID as an SQL literal."""

    def __missing__(self, name: str) -> str:
        return f"'{uid(name)}'::UUID"


# -- the clean school -------------------------------------------------------------------------

REF: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "ref.semester": [
        ("sem_20232", dict(semester_id="20232", nama="2023/2024 Genap", tahun_ajaran_id=2023,
                           semester=2, tanggal_mulai="2024-01-01", tanggal_selesai="2024-06-30")),
        ("sem_20241", dict(semester_id="20241", nama="2024/2025 Ganjil", tahun_ajaran_id=2024,
                           semester=1, tanggal_mulai="2024-07-15", tanggal_selesai="2024-12-31")),
        ("sem_20242", dict(semester_id="20242", nama="2024/2025 Genap", tahun_ajaran_id=2024,
                           semester=2, tanggal_mulai="2025-01-01", tanggal_selesai="2025-06-30")),
    ],
    "ref.tahun_ajaran": [
        ("ta_2023", dict(tahun_ajaran_id=2023, nama="2023/2024", tanggal_mulai="2023-07-17",
                         tanggal_selesai="2024-06-30")),
        ("ta_2024", dict(tahun_ajaran_id=2024, nama="2024/2025", tanggal_mulai="2024-07-15",
                         tanggal_selesai="2025-06-30")),
        ("ta_2025", dict(tahun_ajaran_id=2025, nama="2025/2026", tanggal_mulai="2025-07-14",
                         tanggal_selesai="2026-06-30")),
    ],
    "ref.mata_pelajaran": [
        ("mapel_401", dict(mata_pelajaran_id=401, nama="Matematika", kelompok="A", jenjang="SMA")),
        ("mapel_402", dict(mata_pelajaran_id=402, nama="Bahasa Indonesia", kelompok="A",
                           jenjang="SMA")),
        ("mapel_499", dict(mata_pelajaran_id=499, nama="Muatan Lokal Lama", jenjang="SMA",
                           expired_date="2019-06-30")),
    ],
    "ref.kurikulum": [
        ("kur_3", dict(kurikulum_id=3, nama="KTSP SMA IPA", expired_date="2020-06-30")),
        ("kur_203", dict(kurikulum_id=203, nama="SMA Kurikulum Merdeka")),
    ],
    "ref.agama": [
        ("agama_1", dict(agama_id=1, nama="Islam")),
        ("agama_2", dict(agama_id=2, nama="Kristen")),
    ],
    "ref.jenis_keluar": [
        ("jk_1", dict(jenis_keluar_id="1", nama="Lulus", keluar_pd=1, keluar_ptk=0)),
        ("jk_2", dict(jenis_keluar_id="2", nama="Mutasi", keluar_pd=1, keluar_ptk=1)),
        ("jk_A", dict(jenis_keluar_id="A", nama="Pensiun", keluar_pd=0, keluar_ptk=1)),
    ],
    "ref.jenis_pendaftaran": [
        ("jp_1", dict(jenis_pendaftaran_id=1, nama="Siswa baru")),
        ("jp_2", dict(jenis_pendaftaran_id=2, nama="Pindahan")),
    ],
    "ref.jenis_ptk": [
        ("jptk_3", dict(jenis_ptk_id=3, nama="Guru Kelas", guru=1)),
        ("jptk_4", dict(jenis_ptk_id=4, nama="Guru Mapel", guru=1)),
        ("jptk_11", dict(jenis_ptk_id=11, nama="Tenaga Administrasi Sekolah", guru=0)),
        ("jptk_20", dict(jenis_ptk_id=20, nama="Kepala Sekolah", guru=1)),
    ],
    "ref.status_kepegawaian": [
        ("sk_1", dict(status_kepegawaian_id=1, nama="PNS")),
        ("sk_8", dict(status_kepegawaian_id=8, nama="Guru Honor Sekolah")),
        ("sk_12", dict(status_kepegawaian_id=12, nama="PPPK")),
    ],
    "ref.jabatan_tugas_ptk": [
        ("jab_2", dict(jabatan_ptk_id=2, nama="Kepala Sekolah", kepala_sekolah=1)),
        ("jab_3", dict(jabatan_ptk_id=3, nama="Wakil Kepala Sekolah", kepala_sekolah=0)),
        ("jab_9", dict(jabatan_ptk_id=9, nama="Pembantu Kepala Sekolah", kepala_sekolah=0,
                       expired_date="2010-12-31")),
        ("jab_20", dict(jabatan_ptk_id=20, nama="Plt. Kepala Sekolah", kepala_sekolah=1)),
    ],
    "ref.bentuk_pendidikan": [
        ("bp_5", dict(bentuk_pendidikan_id=5, nama="SD", jenjang="SD", usia_min=5, usia_max=15)),
        ("bp_13", dict(bentuk_pendidikan_id=13, nama="SMA", jenjang="SMA", usia_min=14,
                       usia_max=21)),
    ],
    "ref.tingkat_pendidikan": [
        ("tp_1", dict(tingkat_pendidikan_id=1, nama="Kelas 1", jenjang="SD")),
        ("tp_10", dict(tingkat_pendidikan_id=10, nama="Kelas 10", jenjang="SMA")),
        ("tp_11", dict(tingkat_pendidikan_id=11, nama="Kelas 11", jenjang="SMA")),
    ],
    "ref.mst_wilayah": [
        ("w_000000", dict(kode_wilayah="000000", nama="Indonesia", id_level_wilayah=0)),
        ("w_020000", dict(kode_wilayah="020000", nama="Prov. Jawa Barat", id_level_wilayah=1,
                          mst_kode_wilayah="000000")),
        ("w_026000", dict(kode_wilayah="026000", nama="Kota Bandung", id_level_wilayah=2,
                          mst_kode_wilayah="020000")),
        ("w_026001", dict(kode_wilayah="026001", nama="Kec. Sukasari", id_level_wilayah=3,
                          mst_kode_wilayah="026000")),
    ],
}

S = "sekolah"
_SCHOOL: list[tuple[str, str, dict[str, Any]]] = [
    ("sekolah", S, dict(
        nama="SMA Negeri 1 Contoh", npsn="20219001", bentuk_pendidikan_id=13, status_sekolah=1,
        alamat_jalan="Jl. Setiabudi No. 1", rt=1, rw=2, desa_kelurahan="Isola",
        kode_wilayah="026001", kode_pos="40154", lintang=-6.87, bujur=107.59,
        tanggal_sk_pendirian="1960-01-01", tanggal_sk_izin_operasional="1960-06-01",
        email="info@sman1contoh.sch.id")),
    ("sekolah_longitudinal", "sl", dict(sekolah_id=S, semester_id="20241", daya_listrik=5500,
                                        akses_internet=1)),
    ("tanah", "tanah", dict(sekolah_id=S, nama="Tanah Utama", luas=5000, panjang=100, lebar=50,
                            kepemilikan_sarpras_id=1)),
    ("bangunan", "gedung", dict(sekolah_id=S, tanah_id="tanah", nama="Gedung A", luas_tapak=800,
                                jumlah_lantai=2, tahun_dibangun=1995, kepemilikan_sarpras_id=1,
                                kerusakan_persen=10)),
    ("ruang", "r_x1", dict(sekolah_id=S, bangunan_id="gedung", kode_ruang="R01", nama="Kelas 1",
                           jenis_prasarana_id=1, lantai=1, panjang=9, lebar=8, kapasitas=36,
                           kerusakan_persen=5)),
    ("ruang", "r_x2", dict(sekolah_id=S, bangunan_id="gedung", kode_ruang="R02", nama="Kelas 2",
                           jenis_prasarana_id=1, lantai=2, panjang=9, lebar=8, kapasitas=36,
                           kerusakan_persen=0)),
    ("ruang", "lab", dict(sekolah_id=S, bangunan_id="gedung", kode_ruang="LAB", nama="Lab IPA",
                          jenis_prasarana_id=2, lantai=1, kapasitas=30, kerusakan_persen=0)),
    ("alat", "proyektor", dict(sekolah_id=S, id_ruang="r_x1", nama="Proyektor", jenis_sarana_id=1,
                               jumlah=2, kepemilikan_sarpras_id=1, kerusakan_persen=0)),
    # PTK: the principal (PNS), two teachers, an administrator.
    ("ptk", "kepsek", dict(
        nama="Hendra Gunawan", nik="3273010101750001", nuptk="1234567890123456",
        nip="197501012000031001", jenis_kelamin="L", tempat_lahir="Bandung",
        tanggal_lahir="1975-01-01", agama_id=1, status_kepegawaian_id=1, jenis_ptk_id=20,
        nama_ibu_kandung="Siti Aminah", email="hendra@sman1contoh.sch.id")),
    ("ptk", "guru1", dict(
        nama="Dewi Lestari", nik="3273014505880002", nuptk="2234567890123456",
        jenis_kelamin="P", tempat_lahir="Garut", tanggal_lahir="1988-05-05", agama_id=1,
        status_kepegawaian_id=8, jenis_ptk_id=4, nama_ibu_kandung="Euis Komariah")),
    ("ptk", "guru2", dict(
        nama="Ni'mah Rahmawati", nik="3273016006900003", jenis_kelamin="P",
        tempat_lahir="Cimahi", tanggal_lahir="1990-06-20", agama_id=1, status_kepegawaian_id=12,
        jenis_ptk_id=4, nama_ibu_kandung="Aisyah")),
    ("ptk", "tu", dict(
        nama="Bambang Sutrisno", nik="3273011212800004", jenis_kelamin="L",
        tempat_lahir="Bandung", tanggal_lahir="1980-12-12", agama_id=2, status_kepegawaian_id=8,
        jenis_ptk_id=11, nama_ibu_kandung="Maria Ulfa")),
    *[("ptk_terdaftar", f"pt_{p}", dict(
        ptk_id=p, sekolah_id=S, tahun_ajaran_id=2024, jenis_ptk_id=j,
        nomor_surat_tugas=f"800/{i}/2024", tanggal_surat_tugas="2024-07-01",
        tmt_tugas="2024-07-15", ptk_induk=1))
      for i, (p, j) in enumerate([("kepsek", 20), ("guru1", 4), ("guru2", 4), ("tu", 11)])],
    ("tugas_tambahan", "tt_kepsek", dict(ptk_id="kepsek", sekolah_id=S, jabatan_ptk_id=2,
                                         nomor_sk="821/2022", tmt_tambahan="2022-01-03")),
    ("pengguna", "op", dict(sekolah_id=S, username="operator@sman1contoh.sch.id",
                            nama="Operator", peran="operator", aktif=1)),
    ("pengguna", "u_kepsek", dict(sekolah_id=S, username="hendra@sman1contoh.sch.id",
                                  nama="Hendra Gunawan", peran="kepala_sekolah", ptk_id="kepsek",
                                  aktif=1)),
    # Students: two in X-1, two in X-2; p1 also in the Pramuka (extracurricular) rombel.
    *[("peserta_didik", p, dict(
        nama=nama, jenis_kelamin=jk, nisn=f"00{i}1234567", nik=f"327301{i}10308000{i}",
        no_kk=f"327301000000000{i}", tempat_lahir="Bandung", tanggal_lahir=f"2008-0{i}-10",
        agama_id=1, kewarganegaraan="ID", nama_ibu_kandung=ibu, nik_ibu=f"327301000000100{i}",
        email=f"{p}@contoh.id"))
      for i, (p, nama, jk, ibu) in enumerate([
          ("p1", "Ahmad Fauzi", "L", "Nur Aini"), ("p2", "Budi Santoso", "L", "Sri Wahyuni"),
          ("p3", "Citra Ayu", "P", "Dewi Sartika"), ("p4", "Dian Permata", "P", "Yuli Astuti")],
          start=1)],
    *[("registrasi_peserta_didik", f"reg_{p}", dict(
        peserta_didik_id=p, sekolah_id=S, jenis_pendaftaran_id=1, nipd=f"202400{i}",
        tanggal_masuk_sekolah="2024-07-15")) for i, p in enumerate(["p1", "p2", "p3", "p4"])],
    ("peserta_didik_longitudinal", "pl_p1", dict(peserta_didik_id="p1", semester_id="20241",
                                                 tinggi_badan=165, berat_badan=55)),
    ("rombongan_belajar", "x1", dict(semester_id="20241", sekolah_id=S, tingkat_pendidikan_id=10,
                                     kurikulum_id=203, nama="X-1", ptk_id="guru1", id_ruang="r_x1",
                                     jenis_rombel=1)),
    ("rombongan_belajar", "x2", dict(semester_id="20241", sekolah_id=S, tingkat_pendidikan_id=10,
                                     kurikulum_id=203, nama="X-2", ptk_id="guru2", id_ruang="r_x2",
                                     jenis_rombel=1)),
    ("rombongan_belajar", "eks", dict(semester_id="20241", sekolah_id=S, tingkat_pendidikan_id=10,
                                      kurikulum_id=203, nama="Pramuka", jenis_rombel=51)),
    *[("anggota_rombel", f"a_{p}", dict(rombongan_belajar_id=r, peserta_didik_id=p,
                                        jenis_pendaftaran_id=1))
      for p, r in [("p1", "x1"), ("p2", "x1"), ("p3", "x2"), ("p4", "x2")]],
    ("anggota_rombel", "a_eks_p1", dict(rombongan_belajar_id="eks", peserta_didik_id="p1")),
    *[("pembelajaran", pb, dict(
        rombongan_belajar_id=r, semester_id="20241", mata_pelajaran_id=m, ptk_terdaftar_id=pt,
        nama_mata_pelajaran=nama, sk_mengajar=f"SK/{pb}", tanggal_sk_mengajar="2024-07-15",
        jam_mengajar_per_minggu=2, status_di_kurikulum=1))
      for pb, r, m, pt, nama in [
          ("x1_mat", "x1", 401, "pt_guru1", "Matematika"),
          ("x1_ind", "x1", 402, "pt_guru2", "Bahasa Indonesia"),
          ("x2_mat", "x2", 401, "pt_guru1", "Matematika"),
          ("x2_ind", "x2", 402, "pt_kepsek", "Bahasa Indonesia")]],
    # Two hours a week each: X-1 Mat Monday, X-1 Ind Tuesday, X-2 Mat Wednesday, X-2 Ind Monday.
    *[("jadwal", f"j_{pb}_{jam}", dict(rombongan_belajar_id=pb[:2], pembelajaran_id=pb,
                                       semester_id="20241", hari=hari, jam_ke=jam,
                                       id_ruang=f"r_{pb[:2]}"))
      for pb, hari in [("x1_mat", 1), ("x1_ind", 2), ("x2_mat", 3), ("x2_ind", 1)]
      for jam in (1, 2)],
    *[("nilai", f"n_{p}_{pb[3:]}", dict(peserta_didik_id=p, pembelajaran_id=pb,
                                        semester_id="20241", nilai_angka=n, predikat=pr,
                                        deskripsi="Baik"))
      for p, pb, n, pr in [
          ("p1", "x1_mat", 85, "B"), ("p1", "x1_ind", 90, "A"),
          ("p2", "x1_mat", 80, "B"), ("p2", "x1_ind", 75, "B"),
          ("p3", "x2_mat", 92, "A"), ("p3", "x2_ind", 70, "C"),
          ("p4", "x2_mat", 60, "C"), ("p4", "x2_ind", 88, "A")]],
]


def _insert(con: duckdb.DuckDBPyConnection, entity: str, name: str,
            fields: dict[str, Any]) -> None:
    e = schema.entity(entity)
    row = {"school": "", e.key: uid(name)}
    for k, v in fields.items():
        f = e.by_name[k]
        row[k] = uid(v) if f.type == "uuid" else v
    if not e.is_reference:
        row["soft_delete"] = 0
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"INSERT INTO {e.table} ({cols}) VALUES ({marks})", list(row.values()))


def build_school() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_tables(Database(con))
    for entity, rows in REF.items():
        for name, fields in rows:
            _insert(con, entity, name, fields)
    for entity, name, fields in _SCHOOL:
        _insert(con, entity, name, fields)
    return con


@pytest.fixture(scope="module")
def school():
    con = build_school()
    yield con
    con.close()


@pytest.fixture
def tx(school):
    """The clean school inside a transaction that is rolled back afterwards."""
    school.execute("BEGIN")
    yield school
    school.execute("ROLLBACK")


def findings(con: duckdb.DuckDBPyConnection, rules=RULES) -> list[tuple[str, str, str | None]]:
    return [(r, str(row), d) for r, row, d in con.execute(validation_sql(rules)).fetchall()]


class _InTransaction(Database):
    """The test's own transaction (``tx``): what the store writes becomes a part of it."""

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        yield self.con


def store_of(con: duckdb.DuckDBPyConnection) -> DuckDBStore:
    """The install's store over the test school, as ``selaras validate`` uses it."""
    return DuckDBStore(":memory:", frozenset(), db=_InTransaction(con))


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


# -- one failing case per rule ----------------------------------------------------------------


class Case(NamedTuple):
    sql: str  # {name} stands for the UUID of the row called name
    rows: tuple[str, ...]  # the rows the rule must flag, exactly
    also: frozenset[str] = frozenset()  # other rules the mutation sets off, exactly


def case(sql: str, *rows: str, also: tuple[str, ...] = ()) -> Case:
    return Case(sql, rows, frozenset(also))


def copy(entity: str, source: str, new: str, **changes: str) -> str:
    """SQL inserting a copy of row ``source`` as ``new``, with ``changes`` (SQL expressions)."""
    e = schema.entity(entity)
    replace = ", ".join([f"{{{new}}} AS {e.key}", *(f"{v} AS {k}" for k, v in changes.items())])
    return f"INSERT INTO {e.table} SELECT * REPLACE ({replace}) FROM {e.table} " \
           f"WHERE {e.key} = {{{source}}}"


def update(entity: str, row: str, **changes: str) -> str:
    e = schema.entity(entity)
    sets = ", ".join(f"{k} = {v}" for k, v in changes.items())
    return f"UPDATE {e.table} SET {sets} WHERE {e.key} = {{{row}}}"


def insert(entity: str, name: str, **fields: str) -> str:
    e = schema.entity(entity)
    cols = ["school", e.key, *fields, *([] if e.is_reference else ["soft_delete"])]
    vals = ["''", f"{{{name}}}", *fields.values(), *([] if e.is_reference else ["0"])]
    return f"INSERT INTO {e.table} ({', '.join(cols)}) VALUES ({', '.join(vals)})"


U = update
PT_TU_KELUAR = U("ptk_terdaftar", "pt_tu", jenis_keluar_id="'A'", tgl_ptk_keluar="'2024-07-15'")
ROMBEL_BARU = copy("rombongan_belajar", "x2", "x3", nama="'X-3'", ptk_id="{kepsek}",
                   id_ruang="{lab}")

MUTATIONS: dict[str, Case] = {
    # Sekolah
    "SEK-001": case(U("sekolah", S, npsn="'2021900'"), S),
    "SEK-002": case(U("sekolah", S, kode_wilayah="'026000'"), S),
    "SEK-003": case(U("sekolah", S, lintang="NULL"), S),
    "SEK-004": case(U("tugas_tambahan", "tt_kepsek", tst_tambahan="'2024-01-01'"), S,
                    also=("SEK-011",)),
    "SEK-005": case(U("pengguna", "u_kepsek", aktif="0"), S),
    "SEK-006": case(U("sekolah_longitudinal", "sl", soft_delete="1"), S),
    "SEK-007": case(copy("sekolah_longitudinal", "sl", "sl2"), "sl", "sl2"),
    "SEK-008": case(copy("pengguna", "op", "op2", username="'OPERATOR@sman1contoh.sch.id'"),
                    "op", "op2"),
    "SEK-009": case(U("pengguna", "op", peran="'admin'"), "op"),
    "SEK-010": case(U("pengguna", "op", peran="'ptk'"), "op"),
    "SEK-011": case(U("pengguna", "u_kepsek", ptk_id="{guru1}"), "u_kepsek"),
    "SEK-012": case(U("pengguna", "op", username="'operator'"), "op"),
    "SEK-013": case(U("sekolah", S, email="'sman1contoh.sch.id'"), S),
    "SEK-101": case(U("sekolah", S, alamat_jalan="' '"), S),
    "SEK-102": case(U("sekolah", S, kode_wilayah="'999999'"), S),
    "SEK-103": case(U("sekolah_longitudinal", "sl", semester_id="NULL"), "sl",
                    also=("SEK-006",)),
    "SEK-104": case(U("sekolah_longitudinal", "sl", semester_id="'20251'"), "sl",
                    also=("SEK-006",)),
    "SEK-105": case(U("pengguna", "op", nama="NULL"), "op"),
    "SEK-106": case(U("pengguna", "op", ptk_id="{hantu}"), "op"),
    # Sarpras
    "SAR-001": case(U("tanah", "tanah", luas="0"), "tanah"),
    "SAR-002": case(U("bangunan", "gedung", luas_tapak="6000"), "tanah"),
    "SAR-003": case(U("bangunan", "gedung", jumlah_lantai="25"), "gedung"),
    "SAR-004": case(U("ruang", "r_x2", lantai="3"), "r_x2"),
    "SAR-005": case(U("ruang", "lab", kode_ruang="'r01'"), "r_x1", "lab"),
    "SAR-006": case(U("bangunan", "gedung", kerusakan_persen="120"), "gedung"),
    "SAR-007": case(U("ruang", "lab", kerusakan_persen="-1"), "lab"),
    "SAR-008": case(U("alat", "proyektor", jumlah="0"), "proyektor"),
    "SAR-009": case(U("ruang", "r_x1", kerusakan_persen="60"), "r_x1"),
    "SAR-101": case(U("tanah", "tanah", kepemilikan_sarpras_id="NULL"), "tanah"),
    "SAR-102": case(U("tanah", "tanah", sekolah_id="{hantu}"), "tanah"),
    "SAR-103": case(U("bangunan", "gedung", nama="' '"), "gedung"),
    "SAR-104": case(U("tanah", "tanah", soft_delete="1"), "gedung"),
    "SAR-105": case(U("ruang", "lab", jenis_prasarana_id="NULL"), "lab"),
    "SAR-106": case(U("bangunan", "gedung", soft_delete="1"), "r_x1", "r_x2", "lab"),
    "SAR-107": case(U("alat", "proyektor", nama="NULL"), "proyektor"),
    "SAR-108": case(U("alat", "proyektor", id_ruang="{hantu}"), "proyektor"),
    # Peserta Didik
    "PD-001": case(U("peserta_didik", "p1", nama="'Ahmad F4uzi'"), "p1"),
    "PD-002": case(U("peserta_didik", "p1", nik="'327301110308000'"), "p1"),
    "PD-003": case(U("peserta_didik", "p1", nisn="'00123'"), "p1"),
    "PD-004": case(U("peserta_didik", "p1", nisn="NULL"), "p1"),
    "PD-005": case(U("peserta_didik", "p1", jenis_kelamin="'l'"), "p1"),
    "PD-006": case(U("peserta_didik", "p1", nama_ibu_kandung="'AHMAD FAUZI'"), "p1"),
    "PD-007": case(U("peserta_didik", "p1", tanggal_lahir="'2015-01-01'"), "p1"),
    "PD-008": case(U("registrasi_peserta_didik", "reg_p2", nipd="'2024000'"), "reg_p1", "reg_p2"),
    "PD-009": case(U("registrasi_peserta_didik", "reg_p1", tanggal_masuk_sekolah="'2024-12-30'",
                     jenis_keluar_id="'2'", tanggal_keluar="'2024-12-20'"), "reg_p1"),
    "PD-010": case(U("registrasi_peserta_didik", "reg_p1", tanggal_keluar="'2024-12-31'"),
                   "reg_p1"),
    "PD-011": case(U("registrasi_peserta_didik", "reg_p1", soft_delete="1"), "p1",
                   also=("RB-009",)),
    "PD-012": case(copy("registrasi_peserta_didik", "reg_p1", "reg_p1b", nipd="'2024099'"),
                   "reg_p1", "reg_p1b"),
    "PD-013": case(U("peserta_didik", "p2", nik="'3273011103080001'"), "p1", "p2"),
    "PD-014": case(U("peserta_didik", "p1", no_kk="NULL"), "p1"),
    "PD-015": case(U("registrasi_peserta_didik", "reg_p1", jenis_keluar_id="'A'",
                     tanggal_keluar="'2024-12-31'"), "reg_p1"),
    "PD-016": case(U("anggota_rombel", "a_p1", soft_delete="1"), "p1", also=("NIL-002",)),
    "PD-017": case(U("peserta_didik_longitudinal", "pl_p1", tinggi_badan="300"), "pl_p1"),
    "PD-018": case(copy("peserta_didik_longitudinal", "pl_p1", "pl_p1b"), "pl_p1", "pl_p1b"),
    "PD-019": case(U("peserta_didik", "p1", nik_ayah="'123'"), "p1"),
    "PD-020": case(U("peserta_didik", "p1", email="'ahmad@'"), "p1"),
    "PD-101": case(U("peserta_didik", "p1", tempat_lahir="NULL"), "p1"),
    "PD-102": case(U("peserta_didik", "p1", agama_id="99"), "p1"),
    "PD-103": case(U("registrasi_peserta_didik", "reg_p1", nipd="NULL"), "reg_p1"),
    "PD-104": case(U("registrasi_peserta_didik", "reg_p1", jenis_pendaftaran_id="99"), "reg_p1"),
    "PD-105": case(U("peserta_didik_longitudinal", "pl_p1", semester_id="NULL"), "pl_p1"),
    "PD-106": case(U("peserta_didik_longitudinal", "pl_p1", peserta_didik_id="{hantu}"),
                   "pl_p1"),
    # GTK
    "GTK-001": case(U("ptk", "guru1", nama="'Dewi Lestari (Bu Dewi)'"), "guru1"),
    "GTK-002": case(U("ptk", "guru1", nik="'12345'"), "guru1"),
    "GTK-003": case(U("ptk", "guru1", nuptk="'123'"), "guru1"),
    "GTK-004": case(U("ptk", "kepsek", nip="NULL"), "kepsek"),
    "GTK-005": case(U("ptk", "guru1", jenis_kelamin="'W'"), "guru1"),
    "GTK-006": case(U("ptk", "guru1", tanggal_lahir="'2012-01-01'"), "guru1"),
    "GTK-007": case(U("ptk_terdaftar", "pt_tu", soft_delete="1"), "tu"),
    "GTK-008": case(U("ptk_terdaftar", "pt_tu", jenis_keluar_id="'A'",
                      tgl_ptk_keluar="'2024-07-01'"), "pt_tu"),
    "GTK-009": case(insert("tugas_tambahan", "tt_plt", ptk_id="{guru2}", sekolah_id="{sekolah}",
                           jabatan_ptk_id="20", nomor_sk="'821/2024'",
                           tmt_tambahan="'2024-08-01'"), "tt_kepsek", "tt_plt"),
    "GTK-010": case(U("ptk_terdaftar", "pt_kepsek", ptk_induk="0"), "tt_kepsek",
                    also=("SEK-004",)),
    "GTK-011": case(PT_TU_KELUAR + ";" + insert(
        "tugas_tambahan", "tt_tu", ptk_id="{tu}", sekolah_id="{sekolah}", jabatan_ptk_id="3",
        nomor_sk="'822/2023'", tmt_tambahan="'2023-01-02'"), "tt_tu"),
    "GTK-012": case(U("pembelajaran", "x1_mat", jam_mengajar_per_minggu="39"), "guru1",
                    also=("RB-017",)),
    "GTK-013": case(U("pembelajaran", "x1_ind", ptk_terdaftar_id="{pt_guru1}"), "guru2"),
    "GTK-014": case(copy("ptk_terdaftar", "pt_tu", "pt_tu2"), "pt_tu", "pt_tu2"),
    "GTK-015": case(U("ptk", "guru2", nik="'3273014505880002'"), "guru1", "guru2"),
    "GTK-016": case(U("ptk_terdaftar", "pt_tu", jenis_keluar_id="'A'"), "pt_tu"),
    "GTK-017": case(U("ptk_terdaftar", "pt_tu", jenis_keluar_id="'1'",
                      tgl_ptk_keluar="'2024-12-31'"), "pt_tu"),
    "GTK-018": case(insert("tugas_tambahan", "tt_wakil", ptk_id="{guru2}", sekolah_id="{sekolah}",
                           jabatan_ptk_id="3", nomor_sk="'823/2024'", tmt_tambahan="'2024-08-01'",
                           tst_tambahan="'2024-07-01'"), "tt_wakil"),
    "GTK-019": case(U("ptk", "guru1", email="'dewi at contoh.id'"), "guru1"),
    "GTK-020": case(U("ptk_terdaftar", "pt_guru1", jenis_ptk_id="3"), "pt_guru1"),
    "GTK-101": case(U("ptk", "tu", nama_ibu_kandung="NULL"), "tu"),
    "GTK-102": case(U("ptk", "tu", status_kepegawaian_id="77"), "tu"),
    "GTK-103": case(U("ptk_terdaftar", "pt_tu", nomor_surat_tugas="''"), "pt_tu"),
    "GTK-104": case(U("ptk_terdaftar", "pt_tu", tahun_ajaran_id="2030"), "pt_tu"),
    "GTK-105": case(U("tugas_tambahan", "tt_kepsek", nomor_sk="NULL"), "tt_kepsek"),
    "GTK-106": case(insert("tugas_tambahan", "tt_lama", ptk_id="{guru2}", sekolah_id="{sekolah}",
                           jabatan_ptk_id="9", nomor_sk="'1/2009'", tmt_tambahan="'2009-01-05'"),
                    "tt_lama"),
    # Rombongan Belajar & Jadwal
    "RB-001": case(U("rombongan_belajar", "x2", nama="'x-1 '"), "x1", "x2"),
    "RB-002": case(copy("anggota_rombel", "a_p3", "a_p1_x2", peserta_didik_id="{p1}"),
                   "a_p1", "a_p1_x2", also=("NIL-007",)),
    "RB-003": case(U("rombongan_belajar", "x1", ptk_id="NULL"), "x1"),
    "RB-004": case(PT_TU_KELUAR + ";" + U("rombongan_belajar", "x1", ptk_id="{tu}"), "x1"),
    "RB-005": case(U("rombongan_belajar", "x1", tingkat_pendidikan_id="1"), "x1"),
    "RB-006": case(U("ruang", "r_x1", kapasitas="1"), "x1"),
    "RB-007": case(U("rombongan_belajar", "x1",
                     nama="'X-1 Matematika dan Ilmu Pengetahuan Alam'"), "x1"),
    "RB-008": case(ROMBEL_BARU, "x3", also=("PBJ-006",)),
    "RB-009": case(U("registrasi_peserta_didik", "reg_p1", tanggal_masuk_sekolah="'2025-01-06'"),
                   "a_p1", "a_eks_p1"),
    "RB-010": case(copy("anggota_rombel", "a_p1", "a_p1b"), "a_p1", "a_p1b"),
    "RB-011": case(U("jadwal", "j_x1_mat_1", hari="7"), "j_x1_mat_1"),
    "RB-012": case(U("jadwal", "j_x1_mat_1", jam_ke="15"), "j_x1_mat_1"),
    "RB-013": case(U("jadwal", "j_x1_mat_1", hari="3"), "j_x1_mat_1", "j_x2_mat_1"),
    "RB-014": case(U("jadwal", "j_x1_mat_1", hari="2"), "j_x1_mat_1", "j_x1_ind_1"),
    "RB-015": case(U("jadwal", "j_x1_mat_1", rombongan_belajar_id="{x2}", hari="5"),
                   "j_x1_mat_1"),
    "RB-016": case(U("jadwal", "j_x2_ind_1", id_ruang="{r_x1}"), "j_x1_mat_1", "j_x2_ind_1"),
    "RB-017": case(copy("jadwal", "j_x1_mat_1", "j_x1_mat_3", hari="4"), "x1_mat"),
    "RB-018": case(U("rombongan_belajar", "x2", ptk_id="{guru1}"), "x1", "x2"),
    "RB-101": case(U("rombongan_belajar", "x1", kurikulum_id="NULL"), "x1"),
    "RB-102": case(U("rombongan_belajar", "x1", kurikulum_id="3"), "x1"),
    "RB-103": case(U("anggota_rombel", "a_eks_p1", rombongan_belajar_id="NULL"), "a_eks_p1"),
    "RB-104": case(U("anggota_rombel", "a_eks_p1", rombongan_belajar_id="{hantu}"), "a_eks_p1"),
    "RB-105": case(U("jadwal", "j_x1_mat_1", jam_ke="NULL"), "j_x1_mat_1"),
    "RB-106": case(U("jadwal", "j_x1_mat_1", id_ruang="{hantu}"), "j_x1_mat_1"),
    # Pembelajaran
    "PBJ-001": case(U("pembelajaran", "x2_ind", ptk_terdaftar_id="NULL"), "x2_ind"),
    "PBJ-002": case(copy("ptk_terdaftar", "pt_guru2", "pt_guru2_2025", tahun_ajaran_id="2025")
                    + ";" + U("pembelajaran", "x1_ind", ptk_terdaftar_id="{pt_guru2_2025}"),
                    "x1_ind"),
    "PBJ-003": case(U("pembelajaran", "x1_ind", jam_mengajar_per_minggu="0"), "x1_ind",
                    also=("RB-017",)),
    "PBJ-004": case(copy("pembelajaran", "x1_ind", "pb_genap", semester_id="'20242'",
                         mata_pelajaran_id="401"),
                    "pb_genap"),
    "PBJ-005": case(copy("pembelajaran", "x1_mat", "x1_mat2"), "x1_mat", "x1_mat2"),
    "PBJ-006": case(ROMBEL_BARU, "x3", also=("RB-008",)),
    "PBJ-007": case(U("pembelajaran", "x2_ind", ptk_terdaftar_id="{pt_tu}"), "x2_ind"),
    "PBJ-008": case(U("pembelajaran", "x1_ind", tanggal_sk_mengajar="'2025-01-10'"), "x1_ind"),
    "PBJ-101": case(U("pembelajaran", "x1_ind", mata_pelajaran_id="NULL"), "x1_ind"),
    "PBJ-102": case(U("pembelajaran", "x1_ind", mata_pelajaran_id="499"), "x1_ind"),
    # Nilai
    "NIL-001": case(U("nilai", "n_p1_mat", nilai_angka="101"), "n_p1_mat"),
    "NIL-002": case(copy("nilai", "n_p1_mat", "n_p3_x1", peserta_didik_id="{p3}"), "n_p3_x1"),
    "NIL-003": case(copy("nilai", "n_p1_mat", "n_p1_mat2"), "n_p1_mat", "n_p1_mat2"),
    "NIL-004": case(U("nilai", "n_p1_mat", predikat="'E'"), "n_p1_mat"),
    "NIL-005": case(U("nilai", "n_p2_mat", predikat="'A'"), "n_p1_mat", "n_p2_mat"),
    "NIL-006": case(U("nilai", "n_p1_mat", semester_id="'20232'"), "n_p1_mat"),
    "NIL-007": case(U("nilai", "n_p1_mat", soft_delete="1"), "a_p1"),
    "NIL-101": case(U("nilai", "n_p1_mat", nilai_angka="NULL"), "n_p1_mat"),
    "NIL-102": case(U("nilai", "n_p1_mat", semester_id="'20191'"), "n_p1_mat",
                    also=("NIL-006",)),
    # Referensi
    "REF-001": case(U("ref.semester", "sem_20232", tanggal_selesai="'2023-12-31'"), "sem_20232"),
    "REF-002": case(U("ref.semester", "sem_20241", semester="2"), "sem_20241"),
    "REF-003": case(U("ref.semester", "sem_20242", tanggal_selesai="'2025-07-31'"), "sem_20242"),
    "REF-004": case(U("ref.mata_pelajaran", "mapel_402", nama="' '"), "mapel_402"),
    "REF-005": case(U("ref.bentuk_pendidikan", "bp_5", usia_min="25"), "bp_5"),
    "REF-006": case(U("ref.tahun_ajaran", "ta_2025", tanggal_selesai="'2025-01-01'"), "ta_2025"),
    "REF-007": case(U("ref.mst_wilayah", "w_026001", mst_kode_wilayah="'999999'"), "w_026001"),
    "REF-101": case(U("ref.semester", "sem_20232", tahun_ajaran_id="2030"), "sem_20232",
                    also=("REF-002",)),
}

BY_ID = {r.id: r for r in RULES}


# -- tests ------------------------------------------------------------------------------------


def test_clean_school_has_no_findings(school):
    assert findings(school) == []


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_rule_passes_on_clean_school(school, rule: Rule):
    assert school.execute(rule.sql).fetchall() == []


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_rule_fires_on_its_mutation(tx, rule: Rule):
    mutation = MUTATIONS[rule.id]
    for statement in mutation.sql.format_map(_Literals()).split(";"):
        tx.execute(statement)
    store = store_of(tx)
    store.validate()
    found = store.findings()
    assert len(found) == len({(f["rule_id"], f["row_id"]) for f in found}), \
        "a row flagged twice by a rule"
    flagged = sorted(f["row_id"] for f in found if f["rule_id"] == rule.id)
    assert flagged == sorted(uid(name) for name in mutation.rows)
    assert {f["rule_id"] for f in found} - {rule.id} == mutation.also
    for f in found:  # every finding names its row and field for people, never by UUID
        assert f["nama"] and f["nama"] != entity_label(f["entity"]), f
        assert (f["label"] is None) == (f["field"] is None), f
        shown = [f["nama"], f["label"] or "", f["message"], f["detail"] or ""]
        assert not any(UUID.search(text) for text in shown), f


def test_every_rule_has_a_failing_case():
    assert set(MUTATIONS) == set(BY_ID), "each rule needs exactly one entry in MUTATIONS"
    for rule_id, mutation in MUTATIONS.items():
        assert rule_id not in mutation.also and mutation.also <= set(BY_ID)


def test_rule_ids_are_unique_and_name_their_tab():
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    prefix = {"Sekolah": "SEK", "Sarpras": "SAR", "Peserta Didik": "PD", "GTK": "GTK",
              "Rombongan Belajar & Jadwal": "RB", "Pembelajaran": "PBJ", "Nilai": "NIL",
              "Referensi": "REF"}
    for r in RULES:
        assert re.fullmatch(rf"{prefix[r.tab]}-\d{{3}}", r.id), r.id


def test_rules_are_well_formed():
    for r in RULES:
        e = schema.entity(r.entity)
        assert r.tab in TABS
        assert r.severity in (INVALID, WARNING)
        assert r.field is None or r.field in e.columns, r.id
        assert r.message.strip() and r.message[0].isupper(), r.id
        assert not re.search(r"@\w", r.sql), r.id  # every @cte expanded
        assert not re.search(r"\b(live|ptk_aktif|pd_aktif|juli2)\(", r.sql), r.id


def test_both_severities_mostly_invalid():
    count = Counter(r.severity for r in RULES)
    assert count[WARNING] > 0
    assert count[INVALID] > count[WARNING]


def tables_in(sql: str) -> set[str]:
    """The entity tables a rule's SQL reads."""
    return {e.table for e in schema.ENTITIES
            if re.search(rf"\b(FROM|JOIN)\s+{re.escape(e.table)}\b", sql, re.IGNORECASE)}


def test_every_tab_has_rules_joining_several_entities():
    for tab in TABS:
        joining = [r.id for r in rules_for(tab) if len(tables_in(r.sql)) > 1]
        assert joining, tab


def test_schema_derived_rules_cover_every_entity():
    required = {r.entity for r in RULES if r.message.startswith("Isian wajib")}
    referencing = {r.entity for r in RULES if " yang dirujuk " in r.message
                   or r.message.startswith("Kode referensi")}
    for e in schema.ENTITIES:
        if not e.is_reference and any(f.required for f in e.fields):
            assert e.name in required, e.name
        if any(f.ref for f in e.fields):
            assert e.name in referencing, e.name


def test_rules_for_lists_each_tab_in_order():
    assert [r for tab in TABS for r in rules_for(tab)] == list(RULES)
    assert all(r.tab == "GTK" for r in rules_for("GTK"))
    with pytest.raises(ValueError, match="unknown tab"):
        rules_for("Sarana")


def test_validation_sql_columns(school):
    cols = school.execute(f"DESCRIBE {validation_sql()}").fetchall()
    assert [(c[0], c[1]) for c in cols] == [("rule_id", "VARCHAR"), ("row_id", "UUID"),
                                            ("detail", "VARCHAR")]
    assert school.execute(validation_sql(())).fetchall() == []
    one = [BY_ID["SEK-001"]]
    assert school.execute(validation_sql(one)).fetchall() == []


def test_detail_names_the_bad_value(tx):
    tx.execute(f"UPDATE peserta_didik SET nik = '12ab' WHERE peserta_didik_id = '{uid('p1')}'")
    tx.execute(f"UPDATE rombongan_belajar SET kurikulum_id = 3 "
               f"WHERE rombongan_belajar_id = '{uid('x1')}'")
    tx.execute(f"UPDATE alat SET id_ruang = '{uid('hantu')}' WHERE alat_id = '{uid('proyektor')}'")
    tx.execute(f"UPDATE ptk SET tempat_lahir = NULL, nama_ibu_kandung = '' "
               f"WHERE ptk_id = '{uid('guru2')}'")
    details = {r: d for r, _, d in findings(tx)}
    assert details["PD-002"] == "12ab"
    # Schema-derived rules name fields by their form labels, and rows never by UUID.
    assert details["RB-102"] == "Kurikulum 3 tidak berlaku sejak 2020-06-30"
    assert details["SAR-108"] == "Ruang tidak ditemukan"
    assert details["GTK-101"] == "Tempat Lahir, Nama Ibu Kandung"


def test_findings_name_rows_and_fields_for_people(tx):
    """The store's findings carry the row's name and the field's form label."""
    tx.execute(f"UPDATE peserta_didik SET nik = '12ab' WHERE peserta_didik_id = '{uid('p1')}'")
    tx.execute(f"UPDATE nilai SET nilai_angka = 101 WHERE nilai_id = '{uid('n_p1_mat')}'")
    tx.execute(f"UPDATE pembelajaran SET ptk_terdaftar_id = NULL "
               f"WHERE pembelajaran_id = '{uid('x2_ind')}'")
    tx.execute(f"UPDATE peserta_didik SET nisn = NULL WHERE peserta_didik_id = '{uid('p2')}'")
    store = store_of(tx)
    store.validate()
    named = {(f["rule_id"], f["row_id"]): (f["nama"], f["label"]) for f in store.findings()}
    assert named["PD-002", uid("p1")] == ("Ahmad Fauzi (NISN 0011234567)", "NIK")
    assert named["NIL-001", uid("n_p1_mat")] == ("Ahmad Fauzi (NISN 0011234567), Matematika X-1",
                                                 "Nilai Angka")
    assert named["PBJ-001", uid("x2_ind")] == ("Bahasa Indonesia X-2", "Guru (PTK)")
    # No NISN: the school's own student number tells the student apart.
    assert named["PD-004", uid("p2")] == ("Budi Santoso (NIPD 2024001)", "NISN")
    assert [f["rule_id"] for f in store.findings("Nilai")] == ["NIL-001"]


def test_report_has_every_tab_with_its_counts(tx):
    clean = validate(store_of(tx))
    assert clean.tabs == tuple(TabCount(t, 0, 0) for t in TABS)
    assert (clean.invalid, clean.warnings, clean.blocked, clean.findings) == (0, 0, False, ())
    assert clean.as_dict()["tabs"][2] == {"tab": "Peserta Didik", "invalid": 0, "warnings": 0}
    tx.execute(f"UPDATE peserta_didik SET nik = '12ab', nisn = NULL "
               f"WHERE peserta_didik_id = '{uid('p1')}'")
    dirty = validate(store_of(tx))
    assert dict((t.tab, (t.invalid, t.warnings)) for t in dirty.tabs)["Peserta Didik"] == (1, 1)
    assert dirty.blocked and (dirty.invalid, dirty.warnings) == (1, 1)
    assert {k: v for k, v in dirty.as_dict().items() if k != "findings"} == {
        "invalid": 1, "warnings": 1,
        "tabs": [{"tab": t, "invalid": int(t == "Peserta Didik"),
                  "warnings": int(t == "Peserta Didik")} for t in TABS]}
    one = validate(store_of(tx), "GTK")
    assert one.tabs == (TabCount("GTK", 0, 0),) and not one.blocked
    with pytest.raises(ValueError, match="unknown tab"):
        validate(store_of(tx), "Sarana")


def test_tab_counts_count_each_tab_zero_included():
    found = [{"tab": "Nilai", "severity": INVALID}, {"tab": "Nilai", "severity": WARNING},
             {"tab": "Nilai", "severity": INVALID}, {"tab": "GTK", "severity": WARNING}]
    counts = tab_counts(found)
    assert [t.tab for t in counts] == list(TABS)
    assert counts[TABS.index("Nilai")] == TabCount("Nilai", 2, 1)
    assert counts[TABS.index("GTK")] == TabCount("GTK", 0, 1)
    assert sum(t.invalid + t.warnings for t in counts) == 4


def test_deleted_rows_are_invisible(tx):
    """A soft-deleted row is neither flagged nor counted as a duplicate."""
    tx.execute(MUTATIONS["PD-013"].sql.format_map(_Literals()))
    tx.execute(f"UPDATE peserta_didik SET soft_delete = 1, nama = 'X9' "
               f"WHERE peserta_didik_id = '{uid('p2')}'")
    rules = {r for r, _, _ in findings(tx)}
    assert "PD-013" not in rules and "PD-001" not in rules


def test_principal_hand_over_in_mid_semester_is_fine(tx):
    """One principal ends the day the next starts: never two at once, never none."""
    tx.execute(f"UPDATE tugas_tambahan SET tst_tambahan = '2024-09-02' "
               f"WHERE ptk_tugas_tambahan_id = '{uid('tt_kepsek')}'")
    tx.execute(insert("tugas_tambahan", "tt_baru", ptk_id="{guru2}", sekolah_id="{sekolah}",
                      jabatan_ptk_id="2", nomor_sk="'821/2024'", tmt_tambahan="'2024-09-02'")
               .format_map(_Literals()))
    assert findings(tx) == []
    tx.execute(f"UPDATE tugas_tambahan SET tst_tambahan = '2024-09-03' "
               f"WHERE ptk_tugas_tambahan_id = '{uid('tt_kepsek')}'")
    assert {r for r, _, _ in findings(tx)} == {"GTK-009"}


@pytest.mark.parametrize(("expired", "fires"), [("2024-07-16", False), ("2024-07-15", True)])
def test_code_expires_from_the_semester_it_has_ended_by(tx, expired, fires):
    """Semester 20241 starts 2024-07-15: a code retired on or before then is red in it."""
    tx.execute(f"UPDATE ref.kurikulum SET expired_date = '{expired}' WHERE kurikulum_id = 203")
    flagged = {uid(n) for n in ("x1", "x2", "eks")}
    assert {row for r, row, _ in findings(tx) if r == "RB-102"} == (flagged if fires else set())
