"""Validasi Pusat: the rules no school can check alone, over every school the centre holds.

Each rule is one SQL query over the centre's tables (every school's rows, keyed by
``school``), written for DuckDB and PostgreSQL alike, with one parameter: the
school whose rows it judges. It gives, per flagged row of that school, the row,
a detail and the other school involved; ``RULES`` says the rest (entity, field,
severity, message). The storage package runs them (``CentreStore.central_findings``);
server/validasi_pusat.py turns the findings into the school's ``validasi_pusat``
rows. A person is "registered" at a school while a live registration there
(registrasi_peserta_didik, ptk_terdaftar) has no jenis_keluar_id.
"""

from __future__ import annotations

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
    sql: str  # (row_ref, detail, sekolah_lain) per flagged row of school ``?``


_REGISTERED_PD = """
    SELECT p.school, p.peserta_didik_id AS person, p.nik, p.nisn
    FROM peserta_didik p JOIN registrasi_peserta_didik r
      ON r.school = p.school AND r.peserta_didik_id = p.peserta_didik_id
    WHERE coalesce(p.soft_delete, 0) = 0 AND coalesce(r.soft_delete, 0) = 0
      AND r.jenis_keluar_id IS NULL"""


def _same_student(column: str) -> str:
    """Students registered at school ``?`` whose ``column`` a student registered at another
    school has."""
    return f"""WITH active AS ({_REGISTERED_PD})
        SELECT a.person, min(a.{column}), min(b.school)
        FROM active a JOIN active b ON b.{column} = a.{column} AND b.school <> a.school
        WHERE a.school = ? AND a.{column} IS NOT NULL AND a.{column} <> ''
        GROUP BY a.person"""


RULES: tuple[CentralRule, ...] = (
    CentralRule("VP-001", INVALID, "peserta_didik", "nik",
                "NIK ini milik peserta didik yang terdaftar di sekolah lain",
                _same_student("nik")),
    CentralRule("VP-002", INVALID, "peserta_didik", "nisn",
                "NISN ini milik peserta didik yang terdaftar di sekolah lain",
                _same_student("nisn")),
    CentralRule("VP-003", INVALID, "anggota_rombel", "rombongan_belajar_id",
                "Peserta didik juga anggota rombel reguler di sekolah lain pada semester ini",
                """WITH member AS (
                    SELECT a.school, a.anggota_rombel_id AS row_ref, a.peserta_didik_id,
                           r.semester_id
                    FROM anggota_rombel a JOIN rombongan_belajar r
                      ON r.school = a.school AND r.rombongan_belajar_id = a.rombongan_belajar_id
                    WHERE coalesce(a.soft_delete, 0) = 0 AND coalesce(r.soft_delete, 0) = 0
                      AND r.jenis_rombel = 1)
                SELECT m.row_ref, 'semester ' || min(m.semester_id), min(o.school)
                FROM member m JOIN member o ON o.peserta_didik_id = m.peserta_didik_id
                  AND o.semester_id = m.semester_id AND o.school <> m.school
                WHERE m.school = ?
                GROUP BY m.row_ref"""),
    CentralRule("VP-004", WARNING, "ptk", "jam_mengajar_per_minggu",
                f"Jam mengajar di semua sekolah lebih dari {MAX_HOURS} per minggu",
                f"""WITH teaching AS (
                    SELECT t.school, t.ptk_id, p.semester_id,
                           sum(p.jam_mengajar_per_minggu) AS hours
                    FROM pembelajaran p JOIN ptk_terdaftar t
                      ON t.school = p.school AND t.ptk_terdaftar_id = p.ptk_terdaftar_id
                    WHERE coalesce(p.soft_delete, 0) = 0 AND coalesce(t.soft_delete, 0) = 0
                    GROUP BY t.school, t.ptk_id, p.semester_id),
                total AS (
                    SELECT ptk_id, semester_id, sum(hours) AS hours, min(school) AS first,
                           max(school) AS last
                    FROM teaching GROUP BY ptk_id, semester_id
                    HAVING count(*) > 1 AND sum(hours) > {MAX_HOURS})
                SELECT mine.ptk_id, min(CAST(t.hours AS VARCHAR) || ' jam, semester '
                                        || t.semester_id),
                       min(CASE WHEN t.first = mine.school THEN t.last ELSE t.first END)
                FROM teaching mine JOIN total t
                  ON t.ptk_id = mine.ptk_id AND t.semester_id = mine.semester_id
                WHERE mine.school = ?
                GROUP BY mine.ptk_id"""),
    CentralRule("VP-005", INVALID, "ptk_terdaftar", "ptk_induk",
                "PTK ini juga berinduk di sekolah lain pada tahun ajaran ini",
                """WITH induk AS (
                    SELECT school, ptk_terdaftar_id AS row_ref, ptk_id, tahun_ajaran_id
                    FROM ptk_terdaftar
                    WHERE coalesce(soft_delete, 0) = 0 AND jenis_keluar_id IS NULL
                      AND ptk_induk = 1)
                SELECT a.row_ref, 'tahun ajaran ' || CAST(min(a.tahun_ajaran_id) AS VARCHAR),
                       min(b.school)
                FROM induk a JOIN induk b ON b.ptk_id = a.ptk_id
                  AND b.tahun_ajaran_id = a.tahun_ajaran_id AND b.school <> a.school
                WHERE a.school = ?
                GROUP BY a.row_ref"""),
)
BY_ID = {r.id: r for r in RULES}
