"""The packaged Referensi: every ref entity of the schema, real codes, canonical values."""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources

import pytest

from selaras.engine.events import stable_row_id
from selaras.engine.referensi import referensi_rows
from selaras.engine.schema import BY_NAME, ENTITIES
from selaras.engine.values import parse

REFS = [e for e in ENTITIES if e.is_reference]


@pytest.fixture(scope="module")
def ref() -> dict[str, list[dict]]:
    return referensi_rows()


def test_every_reference_entity_is_present(ref: dict[str, list[dict]]) -> None:
    assert sorted(ref) == sorted(e.name for e in REFS)
    assert all(ref[e.name] for e in REFS)


def test_raw_rows_have_exactly_the_fields_of_their_entity() -> None:
    text = resources.files("selaras.engine").joinpath("data/referensi.json").read_text("utf-8")
    raw = json.loads(text)
    for e in REFS:
        for row in raw[e.name]:
            assert sorted(row) == sorted(f.name for f in e.fields), (e.name, row)


@pytest.mark.parametrize("e", REFS, ids=lambda e: e.name)
def test_rows_are_canonical_with_derived_ids(e, ref: dict[str, list[dict]]) -> None:
    code = e.fields[0].name
    ids = set()
    for row in ref[e.name]:
        assert list(row) == ["ref_id", *(f.name for f in e.fields)]
        for f in e.fields:
            assert parse(e, f, row[f.name]) == row[f.name]
            if f.required:
                assert row[f.name] is not None, (e.name, f.name)
        assert row["ref_id"] == stable_row_id(e.name, row[code])
        ids.add(row["ref_id"])
    assert len(ids) == len(ref[e.name]), "codes are unique"


def test_code_references_between_ref_tables_resolve(ref: dict[str, list[dict]]) -> None:
    for e in REFS:
        for f in e.fields:
            if f.ref and f.ref.startswith("ref."):
                target, column = f.ref.rsplit(".", 1)
                codes = {r[column] for r in ref[target]}
                for row in ref[e.name]:
                    assert row[f.name] is None or row[f.name] in codes, (e.name, row)
    wilayah = {r["kode_wilayah"]: r for r in ref["ref.mst_wilayah"]}
    for row in wilayah.values():
        parent = row["mst_kode_wilayah"]
        assert (parent is None) == (row["id_level_wilayah"] == 0)
        if parent is not None:
            assert wilayah[parent]["id_level_wilayah"] == row["id_level_wilayah"] - 1
    assert {r["id_level_wilayah"] for r in wilayah.values()} == {0, 1, 2, 3}
    assert all(len(k) == 6 for k in wilayah)


def test_enough_real_codes_to_validate_against(ref: dict[str, list[dict]]) -> None:
    def by_code(name: str) -> dict:
        code = BY_NAME[name].fields[0].name
        return {r[code]: r for r in ref[name]}

    mapel = ref["ref.mata_pelajaran"]
    assert len(mapel) >= 40
    assert any(r["expired_date"] for r in mapel)
    assert all(r["kelompok"] and r["jenjang"] for r in mapel)
    assert by_code("ref.agama")[1]["nama"] == "Islam"
    assert by_code("ref.agama")[6]["nama"] == "Khonghucu"
    keluar = by_code("ref.jenis_keluar")
    assert keluar["1"]["nama"] == "Lulus" and keluar["1"]["keluar_pd"] == 1
    assert keluar["A"]["nama"] == "Pensiun" and keluar["A"]["keluar_pd"] == 0
    assert by_code("ref.jenis_pendaftaran")[1]["nama"] == "Siswa baru"
    heads = {r["nama"] for r in ref["ref.jabatan_tugas_ptk"] if r["kepala_sekolah"] == 1}
    assert heads == {"Kepala Sekolah", "Plt. Kepala Sekolah"}
    assert any(r["expired_date"] for r in ref["ref.kurikulum"])
    bentuk = by_code("ref.bentuk_pendidikan")
    assert {5, 6, 13, 15, 29} <= set(bentuk)
    assert all(0 <= r["usia_min"] < r["usia_max"] for r in bentuk.values())
    assert set(by_code("ref.tingkat_pendidikan")) == set(range(1, 14))
    assert set(by_code("ref.tahun_ajaran")) >= {2023, 2024}


def test_semesters(ref: dict[str, list[dict]]) -> None:
    sem = {r["semester_id"]: r for r in ref["ref.semester"]}
    assert {"20231", "20232"} <= set(sem)
    assert (sem["20231"]["tanggal_mulai"], sem["20231"]["tanggal_selesai"]) == (
        "2023-07-17", "2023-12-31")
    assert (sem["20232"]["tanggal_mulai"], sem["20232"]["tanggal_selesai"]) == (
        "2024-01-01", "2024-06-30")
    for sid, row in sem.items():
        assert row["tahun_ajaran_id"] == int(sid[:4]) and row["semester"] == int(sid[4])
        assert dt.date.fromisoformat(row["tanggal_mulai"]) < dt.date.fromisoformat(
            row["tanggal_selesai"])


def test_fresh_rows_on_every_call() -> None:
    a = referensi_rows()
    a["ref.agama"].clear()
    assert referensi_rows()["ref.agama"]
