"""Referensi: the centre's reference codes (every ``ref.*`` entity), shipped as data.

``data/referensi.json`` holds real Dapodik codes, one list of rows per ref
entity, each row with exactly that entity's fields (the code, nama, the
entity's extra columns, expired_date) and without ``ref_id``. The rows carry
enough codes to validate against: agama, jenis_keluar, jenis_pendaftaran,
jenis_ptk, status_kepegawaian, jabatan_tugas_ptk, mata_pelajaran, kurikulum,
semester 20231/20232/20241, tahun_ajaran 2023/2024, bentuk_pendidikan (with
the age bounds of the age-on-2-July rule), tingkat_pendidikan and a few
regions of mst_wilayah (6-character kode_wilayah, levels 0-3). A few codes
carry an ``expired_date`` in the past, so that validation can test the use of
a code the centre has retired.

Conventions of the data (the generator and validation rely on them):

- ``jenjang`` is the school level a code belongs to: PAUD, SD, SMP, SMA or SLB
  (SMK files under SMA, as Dapodik's bentuk_pendidikan.jenjang_sma does).
- ``usia_min``/``usia_max`` bound a student's age, in whole years, on 2 July
  of the semester's year.

Each row's id is derived, so every replica agrees on it:
``ref_id = stable_row_id(entity_name, code)``.
"""

from __future__ import annotations

import json
from importlib import resources

from .events import stable_row_id
from .schema import ENTITIES, Entity
from .values import Value, parse

RESOURCE = "data/referensi.json"


class BadReferensi(ValueError):
    """The packaged reference data does not fit the schema (a packaging bug)."""

    def __init__(self, entity: str, problem: str) -> None:
        super().__init__(entity, problem)
        self.entity, self.problem = entity, problem

    def __str__(self) -> str:
        return f"{RESOURCE}: {self.entity}: {self.problem}"


def referensi_rows() -> dict[str, list[dict[str, Value]]]:
    """Every ref entity's rows: ``ref_id`` first, then its fields in canonical form.

    Reads only package data. Returns fresh lists and dicts on every call, so a
    caller may change them. BadReferensi if the data does not fit the schema.
    """
    raw = json.loads(resources.files(__package__).joinpath(RESOURCE).read_text("utf-8"))
    refs = [e for e in ENTITIES if e.is_reference]
    extra = sorted(set(raw) - {e.name for e in refs})
    if extra:
        raise BadReferensi(extra[0], "not a reference entity of the schema")
    return {e.name: _rows(e, raw.get(e.name)) for e in refs}


def _rows(e: Entity, rows: object) -> list[dict[str, Value]]:
    if not isinstance(rows, list) or not rows:
        raise BadReferensi(e.name, "missing or empty")
    names = [f.name for f in e.fields]
    code = e.fields[0]
    out: list[dict[str, Value]] = []
    seen: set[Value] = set()
    for raw in rows:
        if not isinstance(raw, dict) or sorted(raw) != sorted(names):
            raise BadReferensi(e.name, f"row {raw!r} does not have exactly the fields {names}")
        values = {f.name: parse(e, f, raw[f.name]) for f in e.fields}
        key = values[code.name]
        if key is None or key in seen:
            raise BadReferensi(e.name, f"code {key!r} missing or repeated")
        seen.add(key)
        out.append({"ref_id": stable_row_id(e.name, key), **values})
    return out
