"""The data generator: deterministic, realistic, referentially whole, free of findings.

``findings`` below re-states the validation rules the generator promises to
keep (dapodik-reference.md, "Validation rule examples") independently of the
generator's own bookkeeping, one key per rule; the clean data has none, and
each kind of ``--errors`` shows up under its own key. Each level of school
(``--bentuk``) is also checked by Validasi Lokal itself, in a store set up as
``selaras init --offline --bentuk`` sets one up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from selaras.bench.cli import bench
from selaras.bench.generate import (
    ERROR_KINDS,
    LEVELS,
    ORDER,
    SIZES,
    TooManyErrors,
    age_on,
    generate,
    make_plan,
    school_id,
    sekolah_row,
    write,
)
from selaras.engine.events import Batch, stable_row_id
from selaras.engine.referensi import referensi_rows
from selaras.engine.replica import (
    Identity,
    referensi_events,
    school_fields,
    school_identity_event,
)
from selaras.engine.schema import BY_NAME
from selaras.engine.storage import DuckDBStore
from selaras.engine.validation import validate
from selaras.engine.values import parse

NPSN = "20219151"
Rows = list[dict]


def rows_of(size: str = "small", scale: int = 1, seed: int = 1, errors: int = 0,
            bentuk: str = "SMA") -> Rows:
    return [{"entity": e, **r}
            for e, r in generate(size, scale, NPSN, seed, errors, bentuk=bentuk)]


@pytest.fixture(scope="module")
def ref() -> dict[str, list[dict]]:
    return referensi_rows()


@pytest.fixture(scope="module")
def small3() -> Rows:
    return rows_of("small", scale=3)


def by_entity(rows: Rows) -> dict[str, Rows]:
    out: dict[str, Rows] = defaultdict(list)
    for r in rows:
        out[r["entity"]].append(r)
    return out


NAME = re.compile(r"[A-Za-z][A-Za-z' .-]*")
DIGITS = re.compile(r"[0-9]+")


def findings(rows: Rows, ref: dict[str, list[dict]], bentuk_id: int = 13) -> dict[str, set]:
    """Broken invariants, by error kind: kind -> keys of what breaks it."""
    t = by_entity(rows)
    out: dict[str, set] = defaultdict(set)
    bentuk = {r["bentuk_pendidikan_id"]: r for r in ref["ref.bentuk_pendidikan"]}[bentuk_id]
    expired_mapel = {r["mata_pelajaran_id"] for r in ref["ref.mata_pelajaran"]
                     if r["expired_date"]}
    heads = {r["jabatan_ptk_id"] for r in ref["ref.jabatan_tugas_ptk"] if r["kepala_sekolah"]}

    def bad_nik(v: object) -> bool:
        return not (isinstance(v, str) and len(v) == 16 and DIGITS.fullmatch(v))

    for p in t["peserta_didik"]:
        key = p["peserta_didik_id"]
        if any(bad_nik(p.get(f)) for f in ("nik", "no_kk", "nik_ayah", "nik_ibu")):
            out["nik_15_digits"].add(key)
        nisn = p.get("nisn")
        if not (isinstance(nisn, str) and len(nisn) == 10 and DIGITS.fullmatch(nisn)):
            out["nisn_missing"].add(key)
        if not all(NAME.fullmatch(p.get(f) or "") for f in ("nama", "nama_ibu_kandung")):
            out["illegal_name_characters"].add(key)
        age = age_on(dt.date.fromisoformat(p["tanggal_lahir"]))
        if not bentuk["usia_min"] <= age <= bentuk["usia_max"]:
            out["student_too_old"].add(key)
    for p in t["ptk"]:
        if bad_nik(p["nik"]) or not NAME.fullmatch(p["nama"]):
            out["ptk_identity"].add(p["ptk_id"])
        if age_on(dt.date.fromisoformat(p["tanggal_lahir"])) < 15:
            out["ptk_too_young"].add(p["ptk_id"])
        if p.get("nip") and not (len(p["nip"]) == 18 and p["nip"][:8] == p["tanggal_lahir"]
                                 .replace("-", "")):
            out["ptk_identity"].add(p["ptk_id"])
    nipd = Counter(r["nipd"] for r in t["registrasi_peserta_didik"])
    out["nipd_duplicate"] |= {n for n, k in nipd.items() if k > 1}
    rombel = {r["rombongan_belajar_id"]: r for r in t["rombongan_belajar"]}
    for r in rombel.values():
        if not r.get("ptk_id") or not r.get("id_ruang"):
            out["rombel_without_wali"].add(r["rombongan_belajar_id"])
    names = Counter((r["semester_id"], r["nama"]) for r in rombel.values())
    out["duplicate_rombel_name"] |= {n for n, k in names.items() if k > 1}
    regular = Counter((a["peserta_didik_id"], rombel[a["rombongan_belajar_id"]]["semester_id"])
                      for a in t["anggota_rombel"]
                      if rombel[a["rombongan_belajar_id"]]["jenis_rombel"] == 1)
    out["two_regular_rombels"] |= {k for k, n in regular.items() if n > 1}
    members = {(a["rombongan_belajar_id"], a["peserta_didik_id"]) for a in t["anggota_rombel"]}
    pemb = {p["pembelajaran_id"]: p for p in t["pembelajaran"]}
    for p in pemb.values():
        if p["mata_pelajaran_id"] in expired_mapel:
            out["expired_mata_pelajaran"].add(p["pembelajaran_id"])
        if not p.get("ptk_terdaftar_id"):
            out["pembelajaran_without_teacher"].add(p["pembelajaran_id"])
    for n in t["nilai"]:
        if not 0 <= n["nilai_angka"] <= 100:
            out["nilai_over_100"].add(n["nilai_id"])
        elif n["predikat"] != ("A" if n["nilai_angka"] >= 90 else "B" if n["nilai_angka"] >= 80
                               else "C" if n["nilai_angka"] >= 70 else "D"):
            out["predikat"].add(n["nilai_id"])
        if (pemb[n["pembelajaran_id"]]["rombongan_belajar_id"], n["peserta_didik_id"]) \
                not in members:
            out["nilai_not_member"].add(n["nilai_id"])
    teacher_of = {r["ptk_terdaftar_id"]: r["ptk_id"] for r in t["ptk_terdaftar"]}
    teacher_slots: dict[tuple, set] = defaultdict(set)
    rombel_slots: Counter = Counter()
    hours: Counter = Counter()
    for j in t["jadwal"]:
        slot = (j["semester_id"], j["hari"], j["jam_ke"])
        rombel_slots[(j["rombongan_belajar_id"], *slot)] += 1
        hours[j["pembelajaran_id"]] += 1
        assert 1 <= j["hari"] <= 6 and j["jam_ke"] >= 1
        teacher = teacher_of.get(pemb[j["pembelajaran_id"]].get("ptk_terdaftar_id"))
        if teacher:
            teacher_slots[(teacher, *slot)].add(j["rombongan_belajar_id"])
    out["teacher_double_booked"] |= {k for k, v in teacher_slots.items() if len(v) > 1}
    out["rombel_double_booked"] |= {k for k, n in rombel_slots.items() if n > 1}
    out["jadwal_hours"] |= {p for p in pemb if hours[p] != pemb[p]["jam_mengajar_per_minggu"]}
    principals = [d for d in t["tugas_tambahan"] if d["jabatan_ptk_id"] in heads]
    if len(principals) != 1:
        out["second_principal"] |= {d["ptk_tugas_tambahan_id"] for d in principals}
    return {k: v for k, v in out.items() if v}


# -- determinism and size ---------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write(a, generate("small", 2, NPSN, 5, 3))
    write(b, generate("small", 2, NPSN, 5, 3))
    write(c, generate("small", 2, NPSN, 6, 3))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_lines_are_rows_with_entity_first(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    counts = write(path, generate("small", 1, NPSN, 1))
    lines = path.read_text("utf-8").splitlines()
    assert len(lines) == sum(counts.values())
    rows = [json.loads(line) for line in lines]
    assert all(next(iter(r)) == "entity" for r in rows)
    assert [e for e in dict.fromkeys(r["entity"] for r in rows)] == list(ORDER)
    assert rows == rows_of("small")


def test_small_is_tiny(small3: Rows) -> None:
    n = Counter(r["entity"] for r in rows_of("small"))
    assert n["peserta_didik"] == 60 and n["rombongan_belajar"] == 3
    assert 4 <= n["ptk"] <= 10 and n["pengguna"] == 2 and n["sekolah_longitudinal"] == 1
    assert sum(n.values()) < 1000
    assert set(n) == set(ORDER)


def test_scale_multiplies_the_school_but_not_its_head(small3: Rows) -> None:
    one, three = Counter(r["entity"] for r in rows_of("small")), Counter(
        r["entity"] for r in small3)
    for e in ("peserta_didik", "rombongan_belajar", "nilai", "jadwal", "ruang", "tanah"):
        assert three[e] == 3 * one[e], e
    assert three["ptk"] == 3 * one["ptk"] - 2  # one principal
    assert three["pengguna"] == 2 and three["sekolah_longitudinal"] == 1


def test_medium_and_large_presets() -> None:
    medium = Counter(r["entity"] for r in rows_of("medium"))
    assert 350 <= medium["peserta_didik"] <= 450
    large = make_plan(LEVELS["SMA"], "large")
    assert 1400 <= large.students <= 1600 and large.rombels == 45
    assert 85 <= len(large.roles) + 1 <= 95 and len(large.subjects) == 15
    assert large.students // large.rombels == 33


# -- every row fits the schema and the references resolve ---------------------------------

def test_rows_fit_the_schema(small3: Rows) -> None:
    for row in small3:
        e = BY_NAME[row["entity"]]
        assert not e.is_reference and e.name != "sekolah"
        assert set(row) - {"entity"} <= set(e.columns), (e.name, row)
        assert row[e.key]
        for f in e.fields:
            if f.required:
                assert row.get(f.name) is not None, (e.name, f.name)
            if f.name in row:
                parse(e, f, row[f.name])
        if e.school_field:
            assert row[e.school_field] == school_id(NPSN)
        if e.semester_scoped:
            assert row["semester_id"] == "20231"


def test_references_resolve(small3: Rows, ref: dict[str, list[dict]]) -> None:
    keys: dict[str, set] = defaultdict(set)
    for row in small3:
        keys[row["entity"]].add(row[BY_NAME[row["entity"]].key])
    assert all(len(keys[e]) == n for e, n in Counter(r["entity"] for r in small3).items())
    live = {e: {r[BY_NAME[e].fields[0].name] for r in rows if r["expired_date"] is None}
            for e, rows in ref.items()}
    for row in small3:
        for f in BY_NAME[row["entity"]].fields:
            if not f.ref or row.get(f.name) is None:
                continue
            target, _ = f.ref.rsplit(".", 1)
            value = row[f.name]
            if target.startswith("ref."):
                assert value in live[target], (row["entity"], f.name, value)
            elif target == "sekolah":
                assert value == stable_row_id("sekolah", NPSN)
            else:
                assert value in keys[target], (row["entity"], f.name)


def test_sekolah_row_is_the_centres_view(ref: dict[str, list[dict]]) -> None:
    e = BY_NAME["sekolah"]
    row = sekolah_row(NPSN)
    assert row["sekolah_id"] == school_id(NPSN) and row["bentuk_pendidikan_id"] == 13
    for f in e.fields:
        if f.name in row:
            parse(e, f, row[f.name])
    assert row["kode_wilayah"] in {r["kode_wilayah"] for r in ref["ref.mst_wilayah"]}


# -- clean data keeps every rule ------------------------------------------------------------

def test_clean_data_has_no_findings(small3: Rows, ref: dict[str, list[dict]]) -> None:
    assert findings(small3, ref) == {}


def test_clean_medium_has_no_findings(ref: dict[str, list[dict]]) -> None:
    assert findings(rows_of("medium", seed=9), ref) == {}


def test_identities_are_unique_and_plausible(small3: Rows) -> None:
    t = by_entity(small3)
    niks = [p["nik"] for p in t["peserta_didik"]] + [p["nik"] for p in t["ptk"]] + [
        p[f] for p in t["peserta_didik"] for f in ("nik_ayah", "nik_ibu")]
    assert len(set(niks)) == len(niks)
    nisn = [p["nisn"] for p in t["peserta_didik"]]
    assert len(set(nisn)) == len(nisn)
    for p in t["peserta_didik"] + t["ptk"]:
        born = dt.date.fromisoformat(p["tanggal_lahir"])
        day = born.day + (40 if p["jenis_kelamin"] == "P" else 0)
        assert p["nik"][6:12] == f"{day:02d}{born:%m%y}"
    for p in t["peserta_didik"]:
        assert p["nisn"][:3] == p["tanggal_lahir"][1:4]
    for p in t["ptk"]:
        assert ("nip" in p) == (p["status_kepegawaian_id"] in (1, 12))
        assert 15 <= age_on(dt.date.fromisoformat(p["tanggal_lahir"])) <= 60


def test_every_rombel_and_pembelajaran_is_staffed(small3: Rows) -> None:
    t = by_entity(small3)
    teachers = {r["ptk_id"] for r in t["ptk"] if r["jenis_ptk_id"] == 4}
    assert all(r["ptk_id"] in teachers for r in t["rombongan_belajar"])
    walis = [r["ptk_id"] for r in t["rombongan_belajar"]]
    assert len(set(walis)) == len(walis)
    assert len({r["id_ruang"] for r in t["rombongan_belajar"]}) == len(walis)
    per_pair = Counter((n["peserta_didik_id"], n["pembelajaran_id"]) for n in t["nilai"])
    assert set(per_pair.values()) == {1}
    subjects = len(SIZES["small"].subjects)
    assert len(t["nilai"]) == len(t["peserta_didik"]) * subjects
    assert [u["peran"] for u in t["pengguna"]] == ["operator", "kepala_sekolah"]
    principal = [d["ptk_id"] for d in t["tugas_tambahan"] if d["jabatan_ptk_id"] == 2]
    assert principal == [t["pengguna"][1]["ptk_id"]]


# -- every level of school ----------------------------------------------------------------

# bentuk -> (bentuk_pendidikan_id, grades, students' ages on 2 July), as Dapodik has them
LEVEL_FACTS = {
    "SD": (5, {1, 2, 3, 4, 5, 6}, (5, 15)),
    "SMP": (6, {7, 8, 9}, (11, 18)),
    "SMA": (13, {10, 11, 12}, (14, 21)),
    "SMK": (15, {10, 11, 12}, (14, 21)),
}
ME = Identity(npsn=NPSN, origin="be4c0000-0000-4000-8000-0000000be4c0")


def test_every_level_is_generated() -> None:
    assert set(LEVELS) == set(LEVEL_FACTS)


@pytest.mark.parametrize("bentuk", list(LEVEL_FACTS))
def test_level_passes_validasi_lokal(tmp_path: Path, bentuk: str) -> None:
    """The issue's scenario: `selaras init --offline --bentuk X`, then import data generated
    with `--bentuk X`: nothing red. The install's own identity has no coordinates (a
    warning, SEK-003); the data adds no warning of its own."""
    bentuk_id, grades, (youngest, oldest) = LEVEL_FACTS[bentuk]
    refs = referensi_events()
    identity = school_fields(NPSN, None, bentuk, refs)
    assert identity["bentuk_pendidikan_id"] == bentuk_id
    assert sekolah_row(NPSN, bentuk)["bentuk_pendidikan_id"] == bentuk_id
    rows = rows_of(bentuk=bentuk)
    t = by_entity(rows)
    assert {r["tingkat_pendidikan_id"] for r in t["rombongan_belajar"]} == grades
    ages = {age_on(dt.date.fromisoformat(p["tanggal_lahir"])) for p in t["peserta_didik"]}
    assert youngest <= min(ages) and max(ages) <= oldest
    path = tmp_path / "rows.jsonl"
    write(path, generate("small", 1, NPSN, 1, bentuk=bentuk))  # the rows above
    store = DuckDBStore(tmp_path / "school.duckdb", ME.central)
    try:
        store.append(Batch.from_events([*refs, school_identity_event(NPSN, identity)]))
        store.import_jsonl(str(path), origin=ME.origin, author=ME.author, role=ME.role,
                           sekolah_id=ME.sekolah_id, now_ms=1_700_000_000_000)
        report = validate(store)
    finally:
        store.close()
    red = [(f["rule_id"], f["detail"]) for f in report.findings if f["severity"] == "invalid"]
    assert red == [] and report.invalid == 0
    assert {f["rule_id"] for f in report.findings} <= {"SEK-003"}


@pytest.mark.parametrize("bentuk", ["SD", "SMP", "SMK"])
def test_level_keeps_every_rule_and_breaks_each_on_demand(
        bentuk: str, ref: dict[str, list[dict]]) -> None:
    bentuk_id = LEVEL_FACTS[bentuk][0]
    assert findings(rows_of(scale=2, bentuk=bentuk), ref, bentuk_id) == {}
    found = findings(rows_of(errors=len(ERROR_KINDS), bentuk=bentuk), ref, bentuk_id)
    assert {k: len(v) for k, v in found.items()} == {
        k: 2 if k == "second_principal" else 1 for k in ERROR_KINDS}


@pytest.mark.parametrize("bentuk", list(LEVEL_FACTS))
def test_level_uses_its_own_curriculum_and_subjects(bentuk: str,
                                                    ref: dict[str, list[dict]]) -> None:
    t = by_entity(rows_of("medium", bentuk=bentuk))
    jenjang = {r["bentuk_pendidikan_id"]: r["jenjang"]
               for r in ref["ref.bentuk_pendidikan"]}[LEVEL_FACTS[bentuk][0]]
    kurikulum = {r["kurikulum_id"]: r["nama"] for r in ref["ref.kurikulum"]}
    subjects = {r["mata_pelajaran_id"]: r["jenjang"] for r in ref["ref.mata_pelajaran"]}
    for r in t["rombongan_belajar"]:
        assert kurikulum[r["kurikulum_id"]].startswith(f"{bentuk} Kurikulum Merdeka")
    assert {subjects[p["mata_pelajaran_id"]] for p in t["pembelajaran"]} == {jenjang}
    names = [r["nama"] for r in t["rombongan_belajar"]]
    assert len(set(names)) == len(names) and all(len(n) <= 30 for n in names)


def test_sd_class_teacher_keeps_the_class() -> None:
    t = by_entity(rows_of(bentuk="SD"))
    jenis = {p["ptk_id"]: p["jenis_ptk_id"] for p in t["ptk"]}
    ptk_of = {r["ptk_terdaftar_id"]: r["ptk_id"] for r in t["ptk_terdaftar"]}
    for rombel in t["rombongan_belajar"]:
        assert jenis[rombel["ptk_id"]] == 3  # Guru Kelas
        taught = Counter(ptk_of[p["ptk_terdaftar_id"]] for p in t["pembelajaran"]
                         if p["rombongan_belajar_id"] == rombel["rombongan_belajar_id"])
        assert taught.most_common(1)[0][0] == rombel["ptk_id"]
    assert [r["nama"] for r in t["rombongan_belajar"]] == ["1A", "2A", "3A", "4A", "5A", "6A"]
    assert not [d for d in t["tugas_tambahan"] if d["jabatan_ptk_id"] in (22, 23, 24, 25)]


def test_smk_rombels_belong_to_a_jurusan(ref: dict[str, list[dict]]) -> None:
    t = by_entity(rows_of(bentuk="SMK"))
    mapel = {r["mata_pelajaran_id"]: r["nama"] for r in ref["ref.mata_pelajaran"]}
    ptk_of = {r["ptk_terdaftar_id"]: r["ptk_id"] for r in t["ptk_terdaftar"]}
    jurusan: dict[str, set] = defaultdict(set)  # jurusan_sp_id -> its rombels' facts
    dasar_teachers: dict[str, set] = defaultdict(set)
    for r in t["rombongan_belajar"]:
        mine = [p for p in t["pembelajaran"]
                if p["rombongan_belajar_id"] == r["rombongan_belajar_id"]]
        dasar = [p for p in mine if mapel[p["mata_pelajaran_id"]].startswith("Dasar-dasar")]
        assert len(dasar) == 1
        jurusan[r["jurusan_sp_id"]].add(
            (r["kurikulum_id"], r["nama"].split()[1], dasar[0]["mata_pelajaran_id"]))
        dasar_teachers[r["jurusan_sp_id"]].add(ptk_of[dasar[0]["ptk_terdaftar_id"]])
    assert len(jurusan) == 2 and all(len(facts) == 1 for facts in jurusan.values())
    assert {next(iter(f))[:2] for f in jurusan.values()} == {(204, "TJKT"), (205, "AKL")}
    teachers = list(dasar_teachers.values())
    assert not teachers[0] & teachers[1]  # each jurusan has teachers of its own
    heads = [d for d in t["tugas_tambahan"] if d["jabatan_ptk_id"] == 4]
    assert {d["ptk_id"] for d in heads} <= teachers[0] | teachers[1] and len(heads) == 2


def test_default_sma_file_is_unchanged(tmp_path: Path) -> None:
    """The default (SMA) file is byte for byte what it was before levels existed: benchmark
    caches key generated files by size, scale and seed only, so a change must be deliberate
    (and clear those caches)."""
    path = tmp_path / "sma.jsonl"
    write(path, generate("small", 2, NPSN, 5, 3))
    assert hashlib.sha256(path.read_bytes()).hexdigest()[:16] == "53d361e548eaed00"
    assert rows_of() == rows_of(bentuk="SMA")


def test_unknown_bentuk_is_refused() -> None:
    with pytest.raises(ValueError, match="bentuk"):
        generate("small", 1, NPSN, 1, bentuk="SLB")


# -- errors -----------------------------------------------------------------------------

def keyed(rows: Rows) -> dict[tuple[str, str], dict]:
    return {(r["entity"], r[BY_NAME[r["entity"]].key]): r for r in rows}


@pytest.mark.parametrize("scale,errors", [(1, len(ERROR_KINDS)), (3, 40)])
def test_errors_break_exactly_k_rows(scale: int, errors: int) -> None:
    clean, broken = keyed(rows_of(scale=scale)), keyed(rows_of(scale=scale, errors=errors))
    assert set(clean) <= set(broken)
    changed = [k for k, r in broken.items() if clean.get(k) != r]
    assert len(changed) == errors


def test_each_error_kind_is_found(ref: dict[str, list[dict]]) -> None:
    found = findings(rows_of(errors=len(ERROR_KINDS)), ref)
    assert set(found) == set(ERROR_KINDS)
    # one finding each; a second principal makes both principals suspect
    assert {k: len(v) for k, v in found.items()} == {
        k: 2 if k == "second_principal" else 1 for k in ERROR_KINDS}


def test_errors_stay_in_the_school_and_well_typed() -> None:
    for row in rows_of(scale=2, errors=30):
        e = BY_NAME[row["entity"]]
        for f in e.fields:
            if f.name in row:
                parse(e, f, row[f.name])
        if e.school_field:
            assert row[e.school_field] == school_id(NPSN)


def test_too_many_errors_is_refused() -> None:
    with pytest.raises(TooManyErrors, match="no row left"):
        generate("small", 1, NPSN, 1, 2000)


@pytest.mark.parametrize("args", [("tiny", 1, NPSN), ("small", 0, NPSN), ("small", 1, "123")])
def test_bad_arguments(args: tuple) -> None:
    with pytest.raises(ValueError):
        generate(*args, 1)


# -- the command line -------------------------------------------------------------------------

def test_cli_writes_the_file_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "school.jsonl"
    result = CliRunner().invoke(bench, ["generate", "--size", "small", "--npsn", NPSN,
                                        "--seed", "4", "--errors", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = tmp_path / "expected.jsonl"
    write(expected, generate("small", 1, NPSN, 4, 2))
    assert out.read_bytes() == expected.read_bytes()
    assert "wrote 768 rows" in result.stderr and "peserta_didik 60" in result.stderr
    assert result.stdout == ""


def test_cli_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "x.jsonl")
    result = runner.invoke(bench, ["generate", "--npsn", "12", "--out", out])
    assert result.exit_code == 2 and "NPSN" in result.stderr
    result = runner.invoke(bench, ["generate", "--npsn", NPSN, "--size", "huge", "--out", out])
    assert result.exit_code == 2
    result = runner.invoke(bench, ["generate", "--npsn", NPSN, "--bentuk", "SLB", "--out", out])
    assert result.exit_code == 2 and "SLB" in result.stderr


def test_cli_bentuk(tmp_path: Path) -> None:
    out = tmp_path / "smp.jsonl"
    result = CliRunner().invoke(bench, ["generate", "--bentuk", "SMP", "--npsn", NPSN,
                                        "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = tmp_path / "expected.jsonl"
    write(expected, generate("small", 1, NPSN, 4, bentuk="SMP"))
    assert out.read_bytes() == expected.read_bytes()
    help_text = CliRunner().invoke(bench, ["generate", "--help"]).output
    assert "[SD|SMP|SMA|SMK]" in help_text and "[default: SMA]" in help_text
