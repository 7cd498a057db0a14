"""Validasi Pusat: the rules no school can check alone, over every school the centre holds.

Each rule is one SQL query over the centre's tables (every school's rows, keyed by
``school``), written for DuckDB and PostgreSQL alike, each of its parameters the
school whose rows it judges. It gives, per flagged row of that school, the row,
a detail and the other school involved; ``RULES`` says the rest (entity, field,
severity, message). The storage package runs them (``CentreStore.central_findings``);
server/validasi_pusat.py turns the findings into the school's ``validasi_pusat``
rows. A person is "registered" at a school while a live registration there
(registrasi_peserta_didik, ptk_terdaftar) has no jenis_keluar_id.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from .validation import INVALID, WARNING

MAX_HOURS = 40  # a teacher's teaching hours a week, over every school (warning above)


@dataclass(frozen=True)
class CentralRule:
    id: str
    severity: str
    entity: str  # of the flagged row
    field: str | None
    message: str
    reads: frozenset[str]  # the entities its query reads: a push of none of them can't change it
    sql: str  # (row_ref, detail, sekolah_lain) per flagged row of the school each ``?`` names

    def params(self, npsn: str) -> list[str]:
        return [npsn] * self.sql.count("?")


_PD = frozenset({"peserta_didik", "registrasi_peserta_didik"})
_LIVE = "coalesce({t}.soft_delete, 0) = 0"


def _registered_pd(where: str) -> str:
    """Students registered now (a live registration without jenis_keluar_id), ``where``."""
    return f"""SELECT p.school, p.peserta_didik_id AS person, p.nik, p.nisn
        FROM peserta_didik p JOIN registrasi_peserta_didik r
          ON r.school = p.school AND r.peserta_didik_id = p.peserta_didik_id
        WHERE {_LIVE.format(t="p")} AND {_LIVE.format(t="r")} AND r.jenis_keluar_id IS NULL
          AND {where}"""


def _same_student(column: str) -> str:
    """Students registered at school ``?`` whose ``column`` a student registered at another
    school has."""
    return f"""WITH mine AS ({_registered_pd(
                    f"p.school = ? AND p.{column} IS NOT NULL AND p.{column} <> ''")}),
        other AS ({_registered_pd(f"p.{column} IN (SELECT {column} FROM mine) AND p.school <> ?")})
        SELECT m.person, min(m.{column}), min(o.school)
        FROM mine m JOIN other o ON o.{column} = m.{column}
        GROUP BY m.person"""


def _regular_member(where: str) -> str:
    """Memberships of regular rombels (jenis_rombel 1), ``where``."""
    return f"""SELECT a.school, a.anggota_rombel_id AS row_ref, a.peserta_didik_id, r.semester_id
        FROM anggota_rombel a JOIN rombongan_belajar r
          ON r.school = a.school AND r.rombongan_belajar_id = a.rombongan_belajar_id
        WHERE {_LIVE.format(t="a")} AND {_LIVE.format(t="r")} AND r.jenis_rombel = 1
          AND {where}"""


def _hours(where: str) -> str:
    """Each teacher's teaching hours a week per school and semester, ``where``."""
    return f"""SELECT t.school, t.ptk_id, p.semester_id, sum(p.jam_mengajar_per_minggu) AS hours
        FROM pembelajaran p JOIN ptk_terdaftar t
          ON t.school = p.school AND t.ptk_terdaftar_id = p.ptk_terdaftar_id
        WHERE {_LIVE.format(t="p")} AND {_LIVE.format(t="t")} AND {where}
        GROUP BY t.school, t.ptk_id, p.semester_id"""


_INDUK = f"""{_LIVE.format(t="t")} AND t.jenis_keluar_id IS NULL AND t.ptk_induk = 1"""

# Each query takes the school's own rows first ("mine"), then the other schools' rows that
# share a key with them ("other"): its cost follows the school's size, not the centre's.
RULES: tuple[CentralRule, ...] = (
    CentralRule("VP-001", INVALID, "peserta_didik", "nik",
                "NIK ini milik peserta didik yang terdaftar di sekolah lain", _PD,
                _same_student("nik")),
    CentralRule("VP-002", INVALID, "peserta_didik", "nisn",
                "NISN ini milik peserta didik yang terdaftar di sekolah lain", _PD,
                _same_student("nisn")),
    CentralRule("VP-003", INVALID, "anggota_rombel", "rombongan_belajar_id",
                "Peserta didik juga anggota rombel reguler di sekolah lain pada semester ini",
                frozenset({"anggota_rombel", "rombongan_belajar"}),
                f"""WITH mine AS ({_regular_member("a.school = ? AND r.school = ?")}),
                other AS ({_regular_member(
                    "a.peserta_didik_id IN (SELECT peserta_didik_id FROM mine) "
                    "AND a.school <> ?")})
                SELECT m.row_ref, 'semester ' || min(m.semester_id), min(o.school)
                FROM mine m JOIN other o ON o.peserta_didik_id = m.peserta_didik_id
                  AND o.semester_id = m.semester_id
                GROUP BY m.row_ref"""),
    CentralRule("VP-004", WARNING, "ptk", "jam_mengajar_per_minggu",
                f"Jam mengajar di semua sekolah lebih dari {MAX_HOURS} per minggu",
                frozenset({"pembelajaran", "ptk_terdaftar"}),
                f"""WITH mine AS ({_hours("t.school = ? AND p.school = ?")}),
                other AS (
                    SELECT ptk_id, semester_id, sum(hours) AS hours, min(school) AS school
                    FROM ({_hours("t.ptk_id IN (SELECT ptk_id FROM mine) AND t.school <> ?")})
                      AS elsewhere
                    GROUP BY ptk_id, semester_id)
                SELECT m.ptk_id, min(CAST(m.hours + o.hours AS VARCHAR) || ' jam, semester '
                                     || m.semester_id), min(o.school)
                FROM mine m JOIN other o ON o.ptk_id = m.ptk_id AND o.semester_id = m.semester_id
                WHERE m.hours + o.hours > {MAX_HOURS}
                GROUP BY m.ptk_id"""),
    CentralRule("VP-005", INVALID, "ptk_terdaftar", "ptk_induk",
                "PTK ini juga berinduk di sekolah lain pada tahun ajaran ini",
                frozenset({"ptk_terdaftar"}),
                f"""WITH mine AS (
                    SELECT t.ptk_terdaftar_id AS row_ref, t.ptk_id, t.tahun_ajaran_id
                    FROM ptk_terdaftar t WHERE t.school = ? AND {_INDUK})
                SELECT m.row_ref, 'tahun ajaran ' || CAST(min(m.tahun_ajaran_id) AS VARCHAR),
                       min(t.school)
                FROM mine m JOIN ptk_terdaftar t ON t.ptk_id = m.ptk_id
                  AND t.tahun_ajaran_id = m.tahun_ajaran_id AND t.school <> ? AND {_INDUK}
                GROUP BY m.row_ref"""),
)
BY_ID = {r.id: r for r in RULES}


def rules_reading(entities: Collection[str] | None) -> tuple[CentralRule, ...]:
    """The rules whose findings a change of ``entities`` can change (None: any change)."""
    if entities is None:
        return RULES
    return tuple(r for r in RULES if not r.reads.isdisjoint(entities))
