"""Rows and fields named for people (engine/labels.py): every entity, every field.

The names are checked as SQL on the clean school of test_validation: every
row of every entity gets a name that is not empty and holds no UUID, a few
are checked word for word, and each fallback (no NISN, a row pointing at
nothing, an empty name, an optional part) is set off once.
"""

from __future__ import annotations

import re

import duckdb
import pytest
from test_validation import build_school, uid

from selaras.engine import schema
from selaras.engine.labels import NAMINGS, entity_label, label, name_sql, names_sql

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


@pytest.fixture(scope="module")
def school():
    con = build_school()
    yield con
    con.close()


@pytest.fixture
def tx(school):
    school.execute("BEGIN")
    yield school
    school.execute("ROLLBACK")


def names(con: duckdb.DuckDBPyConnection, entity: str) -> dict[str, str]:
    """Row id -> name, for every row of ``entity``."""
    return {str(r): n for _, r, n in con.execute(names_sql(entity)).fetchall()}


def name(con: duckdb.DuckDBPyConnection, entity: str, row: str) -> str:
    return names(con, entity)[uid(row)]


# -- labels ------------------------------------------------------------------------------------


def test_every_field_has_a_label():
    for e in schema.ENTITIES:
        for column in e.columns:
            said = label(e.name, column)
            assert said.strip() and said[0].isupper(), (e.name, column, said)
            assert "_" not in said, (e.name, column, said)


@pytest.mark.parametrize(("entity", "field", "said"), [
    ("peserta_didik", "nik", "NIK"),
    ("peserta_didik", "tanggal_lahir", "Tanggal Lahir"),
    ("peserta_didik", "nama_ibu_kandung", "Nama Ibu Kandung"),
    ("peserta_didik", "tempat_lahir", "Tempat Lahir"),
    ("peserta_didik", "jenis_kelamin", "Jenis Kelamin"),
    ("registrasi_peserta_didik", "nipd", "NIPD"),
    ("ptk", "nuptk", "NUPTK"),
    ("rombongan_belajar", "nama", "Nama Rombel"),
    ("rombongan_belajar", "ptk_id", "Wali Kelas"),
    ("nilai", "nilai_angka", "Nilai Angka"),
    ("sekolah", "nama", "Nama Sekolah"),
])
def test_labels_are_the_forms_words(entity, field, said):
    assert label(entity, field) == said


def test_an_unlisted_field_gets_a_readable_label():
    assert label("peserta_didik", "jumlah_rombel_id") == "Jumlah Rombel"
    assert label("ptk", "id_sk_ptk") == "SK PTK"
    assert label("nilai", "nilai_harian") == "Nilai Harian"


def test_every_entity_has_a_naming_rule_and_a_label():
    assert set(NAMINGS) == set(schema.BY_NAME)
    for e in schema.ENTITIES:
        assert entity_label(e.name)[0].isupper(), e.name
        assert name_sql(e.name).expr  # every path of its template resolves
    assert entity_label("ptk_terdaftar") == "Penugasan PTK"
    assert entity_label("ref.agama") == "Ref. Agama"
    with pytest.raises(schema.UnknownEntity):
        name_sql("murid")


# -- names -------------------------------------------------------------------------------------


def test_every_row_of_every_entity_is_named_without_uuid(school):
    for e in schema.ENTITIES:
        rows = school.execute(f"SELECT count(*) FROM {e.table}").fetchone()[0]
        named = names(school, e.name)
        assert len(named) == rows, e.name
        for n in named.values():
            assert n and n.strip() == n and not UUID.search(n), (e.name, n)


@pytest.mark.parametrize(("entity", "row", "said"), [
    ("sekolah", "sekolah", "SMA Negeri 1 Contoh (NPSN 20219001)"),
    ("sekolah_longitudinal", "sl", "Data periodik sekolah 2024/2025 Ganjil"),
    ("ruang", "r_x1", "Kelas 1 (Kode R01)"),
    ("alat", "proyektor", "Proyektor di Kelas 1 (Kode R01)"),
    ("peserta_didik", "p1", "Ahmad Fauzi (NISN 0011234567)"),
    ("registrasi_peserta_didik", "reg_p1", "Ahmad Fauzi (NISN 0011234567), masuk 2024-07-15"),
    ("ptk", "kepsek", "Hendra Gunawan (NUPTK 1234567890123456)"),
    ("ptk", "guru2", "Ni'mah Rahmawati (NIK 3273016006900003)"),
    ("ptk_terdaftar", "pt_guru1", "Dewi Lestari (NUPTK 2234567890123456), penugasan 2024/2025"),
    ("tugas_tambahan", "tt_kepsek", "Hendra Gunawan (NUPTK 1234567890123456), Kepala Sekolah"),
    ("rombongan_belajar", "x1", "X-1"),
    ("anggota_rombel", "a_p2", "Budi Santoso (NISN 0021234567), anggota X-1"),
    ("pembelajaran", "x1_mat", "Matematika X-1, guru Dewi Lestari"),
    ("nilai", "n_p1_mat", "Ahmad Fauzi (NISN 0011234567), Matematika X-1"),
    ("jadwal", "j_x1_mat_1", "Matematika X-1, Senin jam ke-1"),
    ("pengguna", "op", "Operator (operator@sman1contoh.sch.id)"),
    ("ref.mata_pelajaran", "mapel_401", "Matematika (Kode 401)"),
])
def test_rows_are_named_as_people_know_them(school, entity, row, said):
    assert name(school, entity, row) == said


def test_a_student_without_nisn_is_told_apart_by_nipd_then_nik(tx):
    tx.execute(f"UPDATE peserta_didik SET nisn = '' WHERE peserta_didik_id = '{uid('p1')}'")
    assert name(tx, "peserta_didik", "p1") == "Ahmad Fauzi (NIPD 2024000)"
    assert name(tx, "nilai", "n_p1_mat") == "Ahmad Fauzi (NIPD 2024000), Matematika X-1"
    tx.execute(f"UPDATE registrasi_peserta_didik SET soft_delete = 1 "
               f"WHERE registrasi_id = '{uid('reg_p1')}'")
    assert name(tx, "peserta_didik", "p1") == "Ahmad Fauzi (NIK 3273011103080001)"


def test_empty_and_missing_parts_are_said_in_words(tx):
    tx.execute(f"UPDATE peserta_didik SET nama = ' ' WHERE peserta_didik_id = '{uid('p1')}'")
    assert name(tx, "peserta_didik", "p1") == "(Nama kosong) (NISN 0011234567)"
    tx.execute(f"UPDATE nilai SET peserta_didik_id = '{uid('hantu')}' "
               f"WHERE nilai_id = '{uid('n_p2_mat')}'")
    assert name(tx, "nilai", "n_p2_mat") == "(Peserta Didik tidak ditemukan), Matematika X-1"
    tx.execute(f"UPDATE nilai SET pembelajaran_id = NULL WHERE nilai_id = '{uid('n_p3_mat')}'")
    assert name(tx, "nilai", "n_p3_mat") == "Citra Ayu (NISN 0031234567), (Pembelajaran kosong)"
    # An unknown code without a name to fall back on: the code itself.
    tx.execute(f"UPDATE pembelajaran SET mata_pelajaran_id = 777, nama_mata_pelajaran = NULL "
               f"WHERE pembelajaran_id = '{uid('x1_ind')}'")
    assert name(tx, "pembelajaran", "x1_ind") == "Mata Pelajaran 777 X-1, guru Ni'mah Rahmawati"


def test_an_optional_part_vanishes_with_its_words(tx):
    tx.execute(f"UPDATE pembelajaran SET ptk_terdaftar_id = NULL "
               f"WHERE pembelajaran_id = '{uid('x1_mat')}'")
    assert name(tx, "pembelajaran", "x1_mat") == "Matematika X-1"
    tx.execute(f"UPDATE alat SET id_ruang = '{uid('hantu')}' WHERE alat_id = '{uid('proyektor')}'")
    assert name(tx, "alat", "proyektor") == "Proyektor"


def test_a_deleted_row_still_names_the_rows_pointing_at_it(tx):
    tx.execute(f"UPDATE rombongan_belajar SET soft_delete = 1 "
               f"WHERE rombongan_belajar_id = '{uid('x1')}'")
    assert name(tx, "anggota_rombel", "a_p2") == "Budi Santoso (NISN 0021234567), anggota X-1"


def test_name_sql_fits_into_a_callers_query(school):
    n = name_sql("nilai", "v")
    assert all(" v_" in j for j in n.joins)
    rows = school.execute(f"SELECT {n.expr} FROM nilai v {' '.join(n.joins)} "
                          f"WHERE v.nilai_id = '{uid('n_p4_ind')}'").fetchall()
    assert rows == [("Dian Permata (NISN 0041234567), Bahasa Indonesia X-2",)]
