"""Validasi Lokal: the school's data checked as set-based SQL, tab by tab.

A :class:`Rule` is data: an id, the Validasi Lokal tab it is shown on, its
severity, the entity and field it flags, the message an operator reads (in
Bahasa Indonesia) and one SELECT over the materialised tables returning
``row_id`` (the key of the offending row of ``entity``) and ``detail``
(VARCHAR or NULL: the bad value, the other row, the count). Each rule returns a
row at most once. :func:`validation_sql` joins every rule into one ``UNION
ALL`` query with the columns ``rule_id, row_id, detail``; the storage module
runs it and stores the findings. This module only writes SQL: it never talks
to DuckDB (DESIGN.md section 2). :func:`validate` is the service every screen
calls: it runs the rules on a store and returns a :class:`Report`, every tab
with its counts (zero included) and the findings, each naming its row and
field in the operator's words (engine/labels.py); details name fields by
their form labels too, and never show a row's UUID.

Severities (dapodik-reference.md, "The sync workflow", step 2):
``invalid`` (red) blocks the principal's sync, ``warning`` (yellow) does not.
A rule is invalid when the school can and must fix the row; checks of
centre-owned data the school cannot edit (the school's identity, VervalSP,
and every ref.* table) are warnings that send the operator to the centre or
to Tarik Data, because one red item the school cannot clear would block its
sync for nothing (pain point 3).

Conventions every rule follows:

- Rows with ``soft_delete = 1`` do not exist for any rule, neither as the
  flagged row nor as the row another one points at; ``soft_delete`` NULL
  counts as 0.
- Semester-scoped rows are checked against their own semester
  (``ref.semester`` dates). Rules about "now" use the *current semester*: the
  latest semester known to ``ref.semester`` that holds live rombongan belajar
  or data periodik sekolah, or, before there is any, the latest semester in
  ``ref.semester``. The engine has no clock: the data says where the school
  is.
- Ages are counted in whole years on 2 July of the semester's start year
  (the start of the school year, as Dapodik counts them).
- A PTK is *registered* for a semester when a live ``ptk_terdaftar`` row of
  the school has ``tahun_ajaran_id`` up to the semester's year and no
  ``tgl_ptk_keluar`` on or before the semester's first day. A student is
  *registered* for a semester when a live registration has entered by the
  semester's last day and not left before its first day (an exit type
  without a date counts as left).
- The principal: a live ``tugas_tambahan`` whose ``jabatan_ptk_id`` has
  ``kepala_sekolah = 1`` in ``ref.jabatan_tugas_ptk`` (kepala sekolah and
  Plt.), held over ``[tmt_tambahan, tst_tambahan)`` (no tst: still held).
  In the current semester the school needs one held by a PTK registered
  there as ``ptk_induk = 1`` (else SEK-004), never two such at the same time
  (GTK-009; a hand-over where one ends the day the next starts is fine),
  and none held by a PTK registered there but not as induk (GTK-010).
- A reference code is *expired* for a row when every ``ref.*`` row with that
  code has an ``expired_date`` on or before the start of the row's semester,
  or, for rows that have no semester (a student, a teacher), of the current
  semester; when that semester is unknown, any expired_date counts. So a
  code the centre retires at the end of a school year stays valid in the
  semesters before and becomes red in the first semester after.

Schema-derived rules (ids ``XX-1nn``): besides the hand-written rules
(``XX-0nn``), every school entity gets one rule for its required fields
(``Field.required``) and one for its references (``Field.ref``: a reference
code that is unknown or expired, or a row that is missing or deleted). They
are listed with explicit ids, like the others, so ids stay stable when the
schema grows.

Scale: every rule is joins, GROUP BY and window functions over whole tables,
no per-row subqueries. On a large school (~1,500 students, 22,500 nilai,
1,800 jadwal rows) the whole query takes about 0.3 s on two cores, most of
it DuckDB planning the ~140 subqueries rather than reading data.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from .labels import label
from .schema import BY_NAME, TABS, Entity, Owner

if TYPE_CHECKING:
    from .store import InstallStore

__all__ = ["INVALID", "RULES", "TABS", "WARNING", "Report", "Rule", "TabCount", "rules_for",
           "tab_counts", "validate", "validation_sql"]

INVALID = "invalid"
WARNING = "warning"
CENTRAL = "Validasi Pusat"  # a finding's source when the centre found it

SEKOLAH, SARPRAS, PD, GTK, ROMBEL, PEMBELAJARAN, NILAI, REFERENSI = TABS


class Rule(NamedTuple):
    """One Validasi Lokal check; ``sql`` yields ``row_id`` (a key of ``entity``), ``detail``."""

    id: str
    tab: str
    severity: str
    entity: str
    field: str | None
    message: str
    sql: str


# -- SQL building blocks -------------------------------------------------------------------
#
# Rule SQL is written with a few macros, expanded once at import:
#   live(x)          row alias x is not soft-deleted
#   ptk_aktif(t, s)  ptk_terdaftar t is registered for semester s (columns semester_id, mulai)
#   pd_aktif(r, s)   registrasi r is registered for semester s (columns mulai, selesai)
#   juli2(expr)      2 July of the start year of semester id expr
#   @name            the common table expression called name, below

_CTES = {
    # Every semester the centre knows, one row per id.
    "sem": """sem AS (
        SELECT semester_id, min(tanggal_mulai) AS mulai, max(tanggal_selesai) AS selesai
        FROM ref.semester GROUP BY semester_id)""",
    # The current semester (see the module docstring); no row if it is unknown.
    "cur": """cur AS (
        SELECT semester_id, min(tanggal_mulai) AS mulai, max(tanggal_selesai) AS selesai
        FROM ref.semester
        WHERE semester_id = coalesce(
            (SELECT max(semester_id) FROM (
                SELECT semester_id FROM rombongan_belajar x WHERE live(x)
                UNION ALL
                SELECT semester_id FROM sekolah_longitudinal x WHERE live(x))
             WHERE semester_id IN (SELECT semester_id FROM ref.semester)),
            (SELECT max(semester_id) FROM ref.semester))
        GROUP BY semester_id)""",
    # PTK registered at a school as ptk_induk in the current semester.
    "induk": """induk AS (
        SELECT DISTINCT pt.ptk_id, pt.sekolah_id
        FROM ptk_terdaftar pt JOIN cur ON ptk_aktif(pt, cur)
        WHERE pt.ptk_induk = 1)""",
    # PTK registered at a school in the current semester.
    "terdaftar": """terdaftar AS (
        SELECT DISTINCT pt.ptk_id, pt.sekolah_id
        FROM ptk_terdaftar pt JOIN cur ON ptk_aktif(pt, cur))""",
    # Principal (or Plt.) assignments held at some time in the current semester.
    "kepsek": """kepsek AS (
        SELECT t.ptk_tugas_tambahan_id AS id, t.ptk_id, t.sekolah_id,
               t.tmt_tambahan AS tmt, coalesce(t.tst_tambahan, DATE '9999-12-31') AS tst,
               i.ptk_id IS NOT NULL AS induk
        FROM tugas_tambahan t
        JOIN (SELECT jabatan_ptk_id FROM ref.jabatan_tugas_ptk
              GROUP BY jabatan_ptk_id HAVING max(kepala_sekolah) = 1) j
          ON j.jabatan_ptk_id = t.jabatan_ptk_id
        JOIN cur ON t.tmt_tambahan <= cur.selesai
                AND coalesce(t.tst_tambahan, DATE '9999-12-31') > cur.mulai
        LEFT JOIN induk i ON i.ptk_id = t.ptk_id AND i.sekolah_id = t.sekolah_id
        WHERE live(t))""",
    # Regular rombel (jenis_rombel 1: kelas) memberships.
    "reguler": """reguler AS (
        SELECT a.anggota_rombel_id, a.peserta_didik_id, rb.rombongan_belajar_id,
               rb.semester_id, rb.sekolah_id, rb.nama
        FROM anggota_rombel a
        JOIN rombongan_belajar rb ON rb.rombongan_belajar_id = a.rombongan_belajar_id
        WHERE live(a) AND live(rb) AND rb.jenis_rombel = 1)""",
}

_MACROS = (
    (re.compile(r"\bptk_aktif\((\w+),\s*(\w+)\)"),
     r"(live(\1) AND \1.tahun_ajaran_id <= TRY_CAST(left(\2.semester_id, 4) AS INTEGER)"
     r" AND (\1.tgl_ptk_keluar IS NULL OR \1.tgl_ptk_keluar > \2.mulai))"),
    (re.compile(r"\bpd_aktif\((\w+),\s*(\w+)\)"),
     r"(live(\1) AND \1.tanggal_masuk_sekolah <= \2.selesai"
     r" AND (\1.tanggal_keluar > \2.mulai"
     r" OR (\1.tanggal_keluar IS NULL AND \1.jenis_keluar_id IS NULL)))"),
    (re.compile(r"\bjuli2\(([\w.]+)\)"),
     r"make_date(TRY_CAST(left(\1, 4) AS INTEGER), 7, 2)"),
    (re.compile(r"\blive\((\w+)\)"), r"coalesce(\1.soft_delete, 0) = 0"),
)


def _sql(text: str) -> str:
    """Expand the macros and @cte references of a rule's SQL."""
    cte = re.compile(r"@(" + "|".join(_CTES) + r")\b")
    while cte.search(text):
        text = cte.sub(lambda m: _CTES[m.group(1)], text)
    for pattern, replacement in _MACROS:
        text = pattern.sub(replacement, text)
    text = re.sub(r"--[^\n]*", "", text)  # comments, before the text becomes one line
    return " ".join(text.split())


def _duplicates(entity: str, partition: str, where: str, detail: str) -> str:
    """Rows of ``entity`` sharing ``partition`` with another live row."""
    e = BY_NAME[entity]
    return f"""
        SELECT {e.key} AS row_id, {detail} AS detail FROM (
            SELECT x.*, count(*) OVER (PARTITION BY {partition}) AS n
            FROM {e.table} x WHERE live(x) AND {where})
        WHERE n > 1"""


# Names are letters, spaces and . , ' - (no digits, no other signs), starting with a letter.
_NAME_OK = r"regexp_full_match({col}, '\p{{L}}[\p{{L}} ''.,-]*')"
_DIGITS = "regexp_full_match({col}, '[0-9]{{{n}}}')"


def _name_ok(col: str) -> str:
    return _NAME_OK.format(col=col)


def _digits(col: str, n: int) -> str:
    return _DIGITS.format(col=col, n=n)


def _filled(col: str) -> str:
    return f"({col} IS NOT NULL AND trim({col}) <> '')"


_EMAIL = r"'[^@\s]+@[^@\s]+\.[^@\s]+'"


def _bad_email(col: str) -> str:
    return f"({_filled(col)} AND NOT regexp_full_match(trim({col}), {_EMAIL}))"


_AGE_CUR = "date_sub('year', {birth}, juli2(cur.semester_id))"

# -- the hand-written rules ----------------------------------------------------------------

_HAND: tuple[Rule, ...] = (
    # Sekolah -------------------------------------------------------------------------------
    Rule("SEK-001", SEKOLAH, WARNING, "sekolah", "npsn",
         "NPSN sekolah harus 8 karakter angka atau huruf kapital (perbaikan melalui VervalSP)",
         f"""SELECT sekolah_id AS row_id, npsn AS detail FROM sekolah x
             WHERE live(x) AND {_filled('npsn')} AND NOT regexp_full_match(npsn, '[0-9A-Z]{{8}}')
          """),
    Rule("SEK-002", SEKOLAH, WARNING, "sekolah", "kode_wilayah",
         "Kode wilayah sekolah harus di tingkat kecamatan atau desa/kelurahan "
         "(perbaikan melalui VervalSP)",
         """SELECT s.sekolah_id AS row_id,
                   s.kode_wilayah || ' (tingkat ' || CAST(w.lvl AS VARCHAR) || ')' AS detail
            FROM sekolah s
            JOIN (SELECT kode_wilayah, max(id_level_wilayah) AS lvl
                  FROM ref.mst_wilayah GROUP BY kode_wilayah) w
              ON w.kode_wilayah = s.kode_wilayah
            WHERE live(s) AND w.lvl < 3"""),
    Rule("SEK-003", SEKOLAH, WARNING, "sekolah", "lintang",
         "Koordinat lintang/bujur sekolah belum diisi atau berada di luar wilayah Indonesia",
         """SELECT sekolah_id AS row_id,
                   coalesce(CAST(lintang AS VARCHAR) || ', ' || CAST(bujur AS VARCHAR),
                            'belum diisi') AS detail
            FROM sekolah x
            WHERE live(x) AND (lintang IS NULL OR bujur IS NULL
                  OR lintang NOT BETWEEN -11.5 AND 6.5 OR bujur NOT BETWEEN 94.5 AND 141.5)"""),
    Rule("SEK-004", SEKOLAH, INVALID, "sekolah", None,
         "Sekolah belum memiliki kepala sekolah (atau Plt. kepala sekolah) aktif yang "
         "berstatus PTK induk di sekolah ini",
         """WITH @cur, @induk, @kepsek
            SELECT s.sekolah_id AS row_id, 'semester ' || cur.semester_id AS detail
            FROM sekolah s CROSS JOIN cur
            LEFT JOIN (SELECT DISTINCT sekolah_id FROM kepsek WHERE induk) k
              ON k.sekolah_id = s.sekolah_id
            WHERE live(s) AND k.sekolah_id IS NULL"""),
    Rule("SEK-005", SEKOLAH, WARNING, "sekolah", None,
         "Sekolah belum memiliki akun pengguna kepala sekolah yang aktif; hanya kepala "
         "sekolah yang dapat mengirim data",
         """SELECT s.sekolah_id AS row_id, NULL AS detail
            FROM sekolah s
            LEFT JOIN (SELECT DISTINCT sekolah_id FROM pengguna u
                       WHERE live(u) AND u.peran = 'kepala_sekolah'
                         AND coalesce(u.aktif, 1) = 1) u ON u.sekolah_id = s.sekolah_id
            WHERE live(s) AND u.sekolah_id IS NULL"""),
    Rule("SEK-006", SEKOLAH, WARNING, "sekolah", None,
         "Data periodik sekolah untuk semester berjalan belum diisi",
         """WITH @cur
            SELECT s.sekolah_id AS row_id, 'semester ' || cur.semester_id AS detail
            FROM sekolah s CROSS JOIN cur
            LEFT JOIN (SELECT DISTINCT sekolah_id, semester_id FROM sekolah_longitudinal x
                       WHERE live(x)) l
              ON l.sekolah_id = s.sekolah_id AND l.semester_id = cur.semester_id
            WHERE live(s) AND l.sekolah_id IS NULL"""),
    Rule("SEK-007", SEKOLAH, INVALID, "sekolah_longitudinal", "semester_id",
         "Data periodik sekolah tercatat lebih dari sekali pada semester yang sama",
         _duplicates("sekolah_longitudinal", "sekolah_id, semester_id", "true", "semester_id")),
    Rule("SEK-008", SEKOLAH, INVALID, "pengguna", "username",
         "Username (email) pengguna sudah dipakai pengguna lain",
         _duplicates("pengguna", "lower(trim(username))", _filled("username"), "username")),
    Rule("SEK-009", SEKOLAH, INVALID, "pengguna", "peran",
         "Peran pengguna harus operator, kepala_sekolah, atau ptk",
         """SELECT pengguna_id AS row_id, peran AS detail FROM pengguna x
            WHERE live(x) AND peran IS NOT NULL
              AND peran NOT IN ('operator', 'kepala_sekolah', 'ptk')"""),
    Rule("SEK-010", SEKOLAH, INVALID, "pengguna", "ptk_id",
         "Pengguna dengan peran kepala sekolah atau PTK harus terhubung dengan data PTK",
         """SELECT pengguna_id AS row_id, peran AS detail FROM pengguna x
            WHERE live(x) AND peran IN ('kepala_sekolah', 'ptk') AND ptk_id IS NULL"""),
    Rule("SEK-011", SEKOLAH, WARNING, "pengguna", "ptk_id",
         "Akun kepala sekolah terhubung dengan PTK yang tidak sedang menjabat kepala sekolah",
         """WITH @cur, @induk, @kepsek
            SELECT u.pengguna_id AS row_id, p.nama AS detail
            FROM pengguna u
            LEFT JOIN (SELECT DISTINCT ptk_id, sekolah_id FROM kepsek) k
              ON k.ptk_id = u.ptk_id AND k.sekolah_id = u.sekolah_id
            LEFT JOIN ptk p ON p.ptk_id = u.ptk_id
            WHERE live(u) AND u.peran = 'kepala_sekolah' AND coalesce(u.aktif, 1) = 1
              AND u.ptk_id IS NOT NULL AND k.ptk_id IS NULL
              AND EXISTS (SELECT 1 FROM cur)"""),
    Rule("SEK-012", SEKOLAH, WARNING, "pengguna", "username",
         "Username pengguna harus berupa alamat email",
         f"""SELECT pengguna_id AS row_id, username AS detail FROM pengguna x
             WHERE live(x) AND {_bad_email('username')}"""),
    Rule("SEK-013", SEKOLAH, WARNING, "sekolah", "email",
         "Alamat email sekolah tidak valid",
         f"""SELECT sekolah_id AS row_id, email AS detail FROM sekolah x
             WHERE live(x) AND {_bad_email('email')}"""),

    # Sarpras -------------------------------------------------------------------------------
    Rule("SAR-001", SARPRAS, INVALID, "tanah", "luas",
         "Luas tanah harus lebih dari 0 m²",
         """SELECT tanah_id AS row_id, CAST(luas AS VARCHAR) AS detail FROM tanah x
            WHERE live(x) AND luas <= 0"""),
    Rule("SAR-002", SARPRAS, WARNING, "tanah", "luas",
         "Jumlah luas tapak bangunan di atas tanah ini melebihi luas tanah",
         """SELECT t.tanah_id AS row_id,
                   CAST(b.tapak AS VARCHAR) || ' m² > ' || CAST(t.luas AS VARCHAR) || ' m²'
                     AS detail
            FROM tanah t
            JOIN (SELECT tanah_id, sum(luas_tapak) AS tapak FROM bangunan x
                  WHERE live(x) GROUP BY tanah_id) b ON b.tanah_id = t.tanah_id
            WHERE live(t) AND t.luas > 0 AND b.tapak > t.luas"""),
    Rule("SAR-003", SARPRAS, INVALID, "bangunan", "jumlah_lantai",
         "Jumlah lantai bangunan harus antara 1 dan 20",
         """SELECT bangunan_id AS row_id, CAST(jumlah_lantai AS VARCHAR) AS detail
            FROM bangunan x WHERE live(x) AND jumlah_lantai NOT BETWEEN 1 AND 20"""),
    Rule("SAR-004", SARPRAS, INVALID, "ruang", "lantai",
         "Letak lantai ruang harus antara 1 dan jumlah lantai bangunannya",
         """SELECT r.id_ruang AS row_id,
                   'lantai ' || CAST(r.lantai AS VARCHAR) || ' dari '
                     || CAST(b.jumlah_lantai AS VARCHAR) AS detail
            FROM ruang r JOIN bangunan b ON b.bangunan_id = r.bangunan_id AND live(b)
            WHERE live(r) AND (r.lantai < 1 OR r.lantai > b.jumlah_lantai)"""),
    Rule("SAR-005", SARPRAS, INVALID, "ruang", "kode_ruang",
         "Kode ruang sudah dipakai ruang lain di sekolah ini",
         _duplicates("ruang", "sekolah_id, upper(trim(kode_ruang))", _filled("kode_ruang"),
                     "kode_ruang")),
    Rule("SAR-006", SARPRAS, INVALID, "bangunan", "kerusakan_persen",
         "Persentase kerusakan bangunan harus antara 0 dan 100",
         """SELECT bangunan_id AS row_id, CAST(kerusakan_persen AS VARCHAR) AS detail
            FROM bangunan x WHERE live(x) AND kerusakan_persen NOT BETWEEN 0 AND 100"""),
    Rule("SAR-007", SARPRAS, INVALID, "ruang", "kerusakan_persen",
         "Persentase kerusakan ruang harus antara 0 dan 100",
         """SELECT id_ruang AS row_id, CAST(kerusakan_persen AS VARCHAR) AS detail
            FROM ruang x WHERE live(x) AND kerusakan_persen NOT BETWEEN 0 AND 100"""),
    Rule("SAR-008", SARPRAS, INVALID, "alat", "jumlah",
         "Jumlah alat harus lebih dari 0",
         """SELECT alat_id AS row_id, CAST(jumlah AS VARCHAR) AS detail FROM alat x
            WHERE live(x) AND jumlah < 1"""),
    Rule("SAR-009", SARPRAS, WARNING, "ruang", "kerusakan_persen",
         "Ruang rusak berat (kerusakan lebih dari 45%) masih dipakai rombel semester berjalan",
         """WITH @cur
            SELECT r.id_ruang AS row_id,
                   CAST(r.kerusakan_persen AS VARCHAR) || '%: '
                     || string_agg(rb.nama, ', ' ORDER BY rb.nama) AS detail
            FROM ruang r
            JOIN rombongan_belajar rb ON rb.id_ruang = r.id_ruang AND live(rb)
            JOIN cur ON cur.semester_id = rb.semester_id
            WHERE live(r) AND r.kerusakan_persen BETWEEN 46 AND 100
            GROUP BY r.id_ruang, r.kerusakan_persen"""),

    # Peserta Didik -------------------------------------------------------------------------
    Rule("PD-001", PD, INVALID, "peserta_didik", "nama",
         "Nama peserta didik hanya boleh berisi huruf, spasi, titik, koma, tanda hubung, "
         "dan petik tunggal",
         f"""SELECT peserta_didik_id AS row_id, nama AS detail FROM peserta_didik x
             WHERE live(x) AND {_filled('nama')} AND NOT {_name_ok('nama')}"""),
    Rule("PD-002", PD, INVALID, "peserta_didik", "nik",
         "NIK peserta didik harus 16 digit angka",
         f"""SELECT peserta_didik_id AS row_id, nik AS detail FROM peserta_didik x
             WHERE live(x) AND {_filled('nik')}
               AND upper(coalesce(kewarganegaraan, 'ID')) IN ('ID', 'WNI', 'INDONESIA')
               AND NOT ({_digits('nik', 16)} AND nik <> repeat('0', 16))"""),
    Rule("PD-003", PD, INVALID, "peserta_didik", "nisn",
         "NISN peserta didik harus 10 digit angka",
         f"""SELECT peserta_didik_id AS row_id, nisn AS detail FROM peserta_didik x
             WHERE live(x) AND {_filled('nisn')} AND NOT {_digits('nisn', 10)}"""),
    Rule("PD-004", PD, WARNING, "peserta_didik", "nisn",
         "Peserta didik belum memiliki NISN; NISN diterbitkan pusat melalui VervalPD",
         f"""SELECT peserta_didik_id AS row_id, NULL AS detail FROM peserta_didik x
             WHERE live(x) AND NOT {_filled('nisn')}"""),
    Rule("PD-005", PD, INVALID, "peserta_didik", "jenis_kelamin",
         "Jenis kelamin peserta didik harus L atau P",
         """SELECT peserta_didik_id AS row_id, jenis_kelamin AS detail FROM peserta_didik x
            WHERE live(x) AND jenis_kelamin NOT IN ('L', 'P')"""),
    Rule("PD-006", PD, INVALID, "peserta_didik", "nama_ibu_kandung",
         "Nama ibu kandung tidak boleh sama dengan nama peserta didik, berisi isian "
         "sementara (mis. '-', 'IBU', 'TIDAK TAHU'), atau berisi angka dan tanda baca lain",
         f"""SELECT peserta_didik_id AS row_id, nama_ibu_kandung AS detail FROM peserta_didik x
             WHERE live(x) AND nama_ibu_kandung IS NOT NULL AND (
                   upper(trim(nama_ibu_kandung)) = upper(trim(nama))
                OR upper(trim(nama_ibu_kandung)) IN (
                   '', '-', '.', 'IBU', 'MAMA', 'MAMAH', 'BUNDA', 'NN', 'X', 'XX', 'XXX', 'ALM',
                   'ALMH', 'ALMARHUMAH', 'TIDAK ADA', 'TIDAK TAHU', 'TIDAK DIKETAHUI', 'TDK ADA')
                OR length(trim(nama_ibu_kandung)) < 2
                OR NOT {_name_ok('trim(nama_ibu_kandung)')})"""),
    Rule("PD-007", PD, INVALID, "peserta_didik", "tanggal_lahir",
         "Usia peserta didik (per 2 Juli tahun ajaran) di luar batas usia jenjang sekolah",
         """WITH @reguler,
            bp AS (
                SELECT bentuk_pendidikan_id, min(usia_min) AS umin, max(usia_max) AS umax
                FROM ref.bentuk_pendidikan GROUP BY bentuk_pendidikan_id),
            usia AS (
                SELECT g.peserta_didik_id, g.semester_id, bp.umin, bp.umax,
                       date_sub('year', p.tanggal_lahir, juli2(g.semester_id)) AS usia
                FROM reguler g
                JOIN peserta_didik p ON p.peserta_didik_id = g.peserta_didik_id AND live(p)
                JOIN sekolah s ON s.sekolah_id = g.sekolah_id AND live(s)
                JOIN bp ON bp.bentuk_pendidikan_id = s.bentuk_pendidikan_id)
            SELECT peserta_didik_id AS row_id,
                   min(semester_id || ': usia ' || CAST(usia AS VARCHAR) || ' tahun, batas '
                       || CAST(umin AS VARCHAR) || '-' || CAST(umax AS VARCHAR)) AS detail
            FROM usia WHERE usia < umin OR usia > umax
            GROUP BY peserta_didik_id"""),
    Rule("PD-008", PD, INVALID, "registrasi_peserta_didik", "nipd",
         "NIPD sudah dipakai peserta didik lain di sekolah ini",
         _duplicates("registrasi_peserta_didik", "sekolah_id, trim(nipd)", _filled("nipd"),
                     "nipd")),
    Rule("PD-009", PD, INVALID, "registrasi_peserta_didik", "tanggal_keluar",
         "Tanggal keluar tidak boleh sebelum tanggal masuk sekolah",
         """SELECT registrasi_id AS row_id,
                   CAST(tanggal_keluar AS VARCHAR) || ' < '
                     || CAST(tanggal_masuk_sekolah AS VARCHAR) AS detail
            FROM registrasi_peserta_didik x
            WHERE live(x) AND tanggal_keluar < tanggal_masuk_sekolah"""),
    Rule("PD-010", PD, INVALID, "registrasi_peserta_didik", "jenis_keluar_id",
         "Jenis keluar dan tanggal keluar peserta didik harus diisi bersamaan",
         """SELECT registrasi_id AS row_id,
                   CASE WHEN jenis_keluar_id IS NULL THEN 'jenis keluar kosong'
                        ELSE 'tanggal keluar kosong' END AS detail
            FROM registrasi_peserta_didik x
            WHERE live(x) AND (jenis_keluar_id IS NULL) <> (tanggal_keluar IS NULL)"""),
    Rule("PD-011", PD, INVALID, "peserta_didik", None,
         "Peserta didik belum memiliki registrasi di sekolah ini",
         """SELECT p.peserta_didik_id AS row_id, NULL AS detail
            FROM peserta_didik p
            LEFT JOIN (SELECT DISTINCT peserta_didik_id FROM registrasi_peserta_didik x
                       WHERE live(x)) r ON r.peserta_didik_id = p.peserta_didik_id
            WHERE live(p) AND r.peserta_didik_id IS NULL"""),
    Rule("PD-012", PD, INVALID, "registrasi_peserta_didik", None,
         "Peserta didik memiliki lebih dari satu registrasi aktif (belum keluar)",
         _duplicates("registrasi_peserta_didik", "peserta_didik_id",
                     "jenis_keluar_id IS NULL AND tanggal_keluar IS NULL", "nipd")),
    Rule("PD-013", PD, INVALID, "peserta_didik", "nik",
         "NIK sudah dipakai peserta didik lain",
         _duplicates("peserta_didik", "trim(nik)",
                     f"{_filled('nik')} AND nik <> repeat('0', 16)", "nik")),
    Rule("PD-014", PD, WARNING, "peserta_didik", "no_kk",
         "Nomor KK peserta didik belum diisi atau bukan 16 digit angka",
         f"""SELECT peserta_didik_id AS row_id, no_kk AS detail FROM peserta_didik x
             WHERE live(x) AND upper(coalesce(kewarganegaraan, 'ID')) IN ('ID', 'WNI', 'INDONESIA')
               AND (NOT {_filled('no_kk')} OR NOT {_digits('no_kk', 16)})"""),
    Rule("PD-015", PD, INVALID, "registrasi_peserta_didik", "jenis_keluar_id",
         "Jenis keluar tersebut tidak berlaku untuk peserta didik",
         """SELECT r.registrasi_id AS row_id, j.nama AS detail
            FROM registrasi_peserta_didik r
            JOIN (SELECT jenis_keluar_id, min(nama) AS nama FROM ref.jenis_keluar
                  GROUP BY jenis_keluar_id HAVING max(coalesce(keluar_pd, 1)) = 0) j
              ON j.jenis_keluar_id = r.jenis_keluar_id
            WHERE live(r)"""),
    Rule("PD-016", PD, WARNING, "peserta_didik", None,
         "Peserta didik aktif belum masuk rombel reguler pada semester berjalan",
         """WITH @cur, @reguler
            SELECT DISTINCT r.peserta_didik_id AS row_id, 'semester ' || cur.semester_id AS detail
            FROM registrasi_peserta_didik r JOIN cur ON pd_aktif(r, cur)
            JOIN peserta_didik p ON p.peserta_didik_id = r.peserta_didik_id AND live(p)
            LEFT JOIN (SELECT DISTINCT peserta_didik_id, semester_id FROM reguler) g
              ON g.peserta_didik_id = r.peserta_didik_id AND g.semester_id = cur.semester_id
            WHERE g.peserta_didik_id IS NULL"""),
    Rule("PD-017", PD, WARNING, "peserta_didik_longitudinal", "tinggi_badan",
         "Tinggi badan (50-250 cm) atau berat badan (5-250 kg) peserta didik tidak wajar",
         """SELECT peserta_didik_longitudinal_id AS row_id,
                   CAST(tinggi_badan AS VARCHAR) || ' cm, ' || CAST(berat_badan AS VARCHAR)
                     || ' kg' AS detail
            FROM peserta_didik_longitudinal x
            WHERE live(x) AND (tinggi_badan NOT BETWEEN 50 AND 250
                               OR berat_badan NOT BETWEEN 5 AND 250)"""),
    Rule("PD-018", PD, INVALID, "peserta_didik_longitudinal", "semester_id",
         "Data periodik peserta didik tercatat lebih dari sekali pada semester yang sama",
         _duplicates("peserta_didik_longitudinal", "peserta_didik_id, semester_id", "true",
                     "semester_id")),
    Rule("PD-019", PD, WARNING, "peserta_didik", "nik_ibu",
         "NIK ayah atau NIK ibu kandung harus 16 digit angka",
         f"""SELECT peserta_didik_id AS row_id, concat_ws(', ', nik_ayah, nik_ibu) AS detail
             FROM peserta_didik x
             WHERE live(x) AND (({_filled('nik_ayah')} AND NOT {_digits('nik_ayah', 16)})
                             OR ({_filled('nik_ibu')} AND NOT {_digits('nik_ibu', 16)}))"""),
    Rule("PD-020", PD, WARNING, "peserta_didik", "email",
         "Alamat email peserta didik tidak valid",
         f"""SELECT peserta_didik_id AS row_id, email AS detail FROM peserta_didik x
             WHERE live(x) AND {_bad_email('email')}"""),

    # GTK -------------------------------------------------------------------------------------
    Rule("GTK-001", GTK, INVALID, "ptk", "nama",
         "Nama PTK (tanpa gelar) hanya boleh berisi huruf, spasi, titik, koma, tanda hubung, "
         "dan petik tunggal",
         f"""SELECT ptk_id AS row_id, nama AS detail FROM ptk x
             WHERE live(x) AND {_filled('nama')} AND NOT {_name_ok('nama')}"""),
    Rule("GTK-002", GTK, INVALID, "ptk", "nik",
         "NIK PTK harus 16 digit angka",
         f"""SELECT ptk_id AS row_id, nik AS detail FROM ptk x
             WHERE live(x) AND {_filled('nik')}
               AND NOT ({_digits('nik', 16)} AND nik <> repeat('0', 16))"""),
    Rule("GTK-003", GTK, INVALID, "ptk", "nuptk",
         "NUPTK harus 16 digit angka",
         f"""SELECT ptk_id AS row_id, nuptk AS detail FROM ptk x
             WHERE live(x) AND {_filled('nuptk')} AND NOT {_digits('nuptk', 16)}"""),
    Rule("GTK-004", GTK, INVALID, "ptk", "nip",
         "NIP harus 18 digit angka dan wajib diisi untuk PNS/CPNS",
         f"""WITH sk AS (
                SELECT status_kepegawaian_id,
                       bool_or(regexp_matches(upper(nama), '(^|[^A-Z])C?PNS([^A-Z]|$)')
                               AND NOT regexp_matches(upper(nama), 'NON[ -]?PNS')) AS pns
                FROM ref.status_kepegawaian GROUP BY status_kepegawaian_id)
             SELECT p.ptk_id AS row_id, coalesce(p.nip, 'belum diisi') AS detail
             FROM ptk p LEFT JOIN sk ON sk.status_kepegawaian_id = p.status_kepegawaian_id
             WHERE live(p) AND CASE WHEN {_filled('p.nip')} THEN NOT {_digits('p.nip', 18)}
                                    ELSE coalesce(sk.pns, false) END"""),
    Rule("GTK-005", GTK, INVALID, "ptk", "jenis_kelamin",
         "Jenis kelamin PTK harus L atau P",
         """SELECT ptk_id AS row_id, jenis_kelamin AS detail FROM ptk x
            WHERE live(x) AND jenis_kelamin NOT IN ('L', 'P')"""),
    Rule("GTK-006", GTK, INVALID, "ptk", "tanggal_lahir",
         "Usia PTK kurang dari 15 tahun",
         f"""WITH @cur
             SELECT p.ptk_id AS row_id,
                    CAST(p.tanggal_lahir AS VARCHAR) || ': usia '
                      || CAST({_AGE_CUR.format(birth='p.tanggal_lahir')} AS VARCHAR) AS detail
             FROM ptk p CROSS JOIN cur
             WHERE live(p) AND {_AGE_CUR.format(birth='p.tanggal_lahir')} < 15"""),
    Rule("GTK-007", GTK, INVALID, "ptk", None,
         "PTK belum memiliki penugasan (PTK terdaftar) di sekolah ini",
         """SELECT p.ptk_id AS row_id, NULL AS detail
            FROM ptk p
            LEFT JOIN (SELECT DISTINCT ptk_id FROM ptk_terdaftar x WHERE live(x)) t
              ON t.ptk_id = p.ptk_id
            WHERE live(p) AND t.ptk_id IS NULL"""),
    Rule("GTK-008", GTK, INVALID, "ptk_terdaftar", "tgl_ptk_keluar",
         "Tanggal keluar PTK tidak boleh sebelum TMT tugas",
         """SELECT ptk_terdaftar_id AS row_id,
                   CAST(tgl_ptk_keluar AS VARCHAR) || ' < ' || CAST(tmt_tugas AS VARCHAR)
                     AS detail
            FROM ptk_terdaftar x WHERE live(x) AND tgl_ptk_keluar < tmt_tugas"""),
    Rule("GTK-009", GTK, INVALID, "tugas_tambahan", "jabatan_ptk_id",
         "Kepala sekolah (atau Plt. kepala sekolah) aktif lebih dari satu pada waktu yang sama",
         """WITH @cur, @induk, @kepsek
            SELECT a.id AS row_id,
                   string_agg(coalesce(p.nama, CAST(b.ptk_id AS VARCHAR)), ', '
                              ORDER BY p.nama) AS detail
            FROM kepsek a
            JOIN kepsek b ON b.sekolah_id = a.sekolah_id AND b.id <> a.id
                         AND a.tmt < b.tst AND b.tmt < a.tst
            LEFT JOIN ptk p ON p.ptk_id = b.ptk_id
            WHERE a.induk AND b.induk
            GROUP BY a.id"""),
    Rule("GTK-010", GTK, INVALID, "tugas_tambahan", "ptk_id",
         "Kepala sekolah harus berstatus PTK induk di sekolah ini",
         """WITH @cur, @induk, @terdaftar, @kepsek
            SELECT k.id AS row_id, p.nama AS detail
            FROM kepsek k
            JOIN terdaftar t ON t.ptk_id = k.ptk_id AND t.sekolah_id = k.sekolah_id
            LEFT JOIN ptk p ON p.ptk_id = k.ptk_id
            WHERE NOT k.induk"""),
    Rule("GTK-011", GTK, INVALID, "tugas_tambahan", "ptk_id",
         "Tugas tambahan diberikan kepada PTK yang tidak terdaftar aktif di sekolah ini",
         """WITH @cur, @terdaftar
            SELECT t.ptk_tugas_tambahan_id AS row_id, p.nama AS detail
            FROM tugas_tambahan t
            JOIN cur ON t.tmt_tambahan <= cur.selesai
                    AND coalesce(t.tst_tambahan, DATE '9999-12-31') > cur.mulai
            LEFT JOIN terdaftar a ON a.ptk_id = t.ptk_id AND a.sekolah_id = t.sekolah_id
            LEFT JOIN ptk p ON p.ptk_id = t.ptk_id
            WHERE live(t) AND a.ptk_id IS NULL"""),
    Rule("GTK-012", GTK, WARNING, "ptk", None,
         "Total jam mengajar PTK melebihi 40 jam per minggu dalam satu semester",
         """SELECT ptk_id AS row_id, min(detail) AS detail FROM (
                SELECT pt.ptk_id, pb.semester_id || ': ' || CAST(sum(pb.jam_mengajar_per_minggu)
                       AS VARCHAR) || ' jam' AS detail
                FROM pembelajaran pb
                JOIN ptk_terdaftar pt ON pt.ptk_terdaftar_id = pb.ptk_terdaftar_id AND live(pt)
                JOIN ptk p ON p.ptk_id = pt.ptk_id AND live(p)
                WHERE live(pb)
                GROUP BY pt.ptk_id, pb.semester_id
                HAVING sum(pb.jam_mengajar_per_minggu) > 40)
            GROUP BY ptk_id"""),
    Rule("GTK-013", GTK, WARNING, "ptk", None,
         "Guru belum memiliki pembelajaran pada semester berjalan",
         """WITH @cur, @induk, @kepsek,
            guru AS (
                SELECT DISTINCT pt.ptk_id, pt.sekolah_id
                FROM ptk_terdaftar pt JOIN cur ON ptk_aktif(pt, cur)
                JOIN (SELECT jenis_ptk_id FROM ref.jenis_ptk
                      GROUP BY jenis_ptk_id HAVING max(guru) = 1) j
                  ON j.jenis_ptk_id = pt.jenis_ptk_id),
            mengajar AS (
                SELECT DISTINCT pt.ptk_id
                FROM pembelajaran pb JOIN cur ON cur.semester_id = pb.semester_id
                JOIN ptk_terdaftar pt ON pt.ptk_terdaftar_id = pb.ptk_terdaftar_id
                WHERE live(pb) AND live(pt))
            SELECT DISTINCT g.ptk_id AS row_id, 'semester ' || cur.semester_id AS detail
            FROM guru g CROSS JOIN cur
            JOIN ptk p ON p.ptk_id = g.ptk_id AND live(p)
            LEFT JOIN mengajar m ON m.ptk_id = g.ptk_id
            LEFT JOIN kepsek k ON k.ptk_id = g.ptk_id AND k.sekolah_id = g.sekolah_id
            WHERE m.ptk_id IS NULL AND k.ptk_id IS NULL"""),
    Rule("GTK-014", GTK, INVALID, "ptk_terdaftar", "tahun_ajaran_id",
         "PTK terdaftar lebih dari sekali di sekolah ini pada tahun ajaran yang sama",
         _duplicates("ptk_terdaftar", "ptk_id, sekolah_id, tahun_ajaran_id", "true",
                     "CAST(tahun_ajaran_id AS VARCHAR)")),
    Rule("GTK-015", GTK, INVALID, "ptk", "nik",
         "NIK sudah dipakai PTK lain",
         _duplicates("ptk", "trim(nik)", f"{_filled('nik')} AND nik <> repeat('0', 16)",
                     "nik")),
    Rule("GTK-016", GTK, INVALID, "ptk_terdaftar", "jenis_keluar_id",
         "Jenis keluar dan tanggal keluar PTK harus diisi bersamaan",
         """SELECT ptk_terdaftar_id AS row_id,
                   CASE WHEN jenis_keluar_id IS NULL THEN 'jenis keluar kosong'
                        ELSE 'tanggal keluar kosong' END AS detail
            FROM ptk_terdaftar x
            WHERE live(x) AND (jenis_keluar_id IS NULL) <> (tgl_ptk_keluar IS NULL)"""),
    Rule("GTK-017", GTK, INVALID, "ptk_terdaftar", "jenis_keluar_id",
         "Jenis keluar tersebut tidak berlaku untuk PTK",
         """SELECT t.ptk_terdaftar_id AS row_id, j.nama AS detail
            FROM ptk_terdaftar t
            JOIN (SELECT jenis_keluar_id, min(nama) AS nama FROM ref.jenis_keluar
                  GROUP BY jenis_keluar_id HAVING max(coalesce(keluar_ptk, 1)) = 0) j
              ON j.jenis_keluar_id = t.jenis_keluar_id
            WHERE live(t)"""),
    Rule("GTK-018", GTK, INVALID, "tugas_tambahan", "tst_tambahan",
         "Tanggal selesai tugas tambahan tidak boleh sebelum TMT tugas tambahan",
         """SELECT ptk_tugas_tambahan_id AS row_id,
                   CAST(tst_tambahan AS VARCHAR) || ' < ' || CAST(tmt_tambahan AS VARCHAR)
                     AS detail
            FROM tugas_tambahan x WHERE live(x) AND tst_tambahan < tmt_tambahan"""),
    Rule("GTK-019", GTK, WARNING, "ptk", "email",
         "Alamat email PTK tidak valid",
         f"""SELECT ptk_id AS row_id, email AS detail FROM ptk x
             WHERE live(x) AND {_bad_email('email')}"""),
    Rule("GTK-020", GTK, WARNING, "ptk_terdaftar", "jenis_ptk_id",
         "Jenis PTK pada penugasan semester berjalan berbeda dengan jenis PTK pada data PTK",
         """WITH @cur
            SELECT pt.ptk_terdaftar_id AS row_id, jt.nama || ' / ' || jp.nama AS detail
            FROM ptk_terdaftar pt JOIN cur ON ptk_aktif(pt, cur)
            JOIN ptk p ON p.ptk_id = pt.ptk_id AND live(p)
            LEFT JOIN (SELECT jenis_ptk_id, min(nama) AS nama FROM ref.jenis_ptk
                       GROUP BY jenis_ptk_id) jt ON jt.jenis_ptk_id = pt.jenis_ptk_id
            LEFT JOIN (SELECT jenis_ptk_id, min(nama) AS nama FROM ref.jenis_ptk
                       GROUP BY jenis_ptk_id) jp ON jp.jenis_ptk_id = p.jenis_ptk_id
            WHERE pt.jenis_ptk_id <> p.jenis_ptk_id"""),

    # Rombongan Belajar & Jadwal -------------------------------------------------------------
    Rule("RB-001", ROMBEL, INVALID, "rombongan_belajar", "nama",
         "Nama rombel sudah dipakai rombel lain pada semester yang sama",
         _duplicates("rombongan_belajar", "sekolah_id, semester_id, upper(trim(nama))",
                     _filled("nama"), "nama")),
    Rule("RB-002", ROMBEL, INVALID, "anggota_rombel", "rombongan_belajar_id",
         "Peserta didik terdaftar di lebih dari satu rombel reguler pada semester yang sama",
         """WITH @reguler,
            ganda AS (
                SELECT peserta_didik_id, semester_id,
                       string_agg(DISTINCT nama, ', ' ORDER BY nama) AS rombel
                FROM reguler GROUP BY peserta_didik_id, semester_id
                HAVING count(DISTINCT rombongan_belajar_id) > 1)
            SELECT g.anggota_rombel_id AS row_id, d.rombel AS detail
            FROM reguler g JOIN ganda d
              ON d.peserta_didik_id = g.peserta_didik_id AND d.semester_id = g.semester_id"""),
    Rule("RB-003", ROMBEL, INVALID, "rombongan_belajar", "ptk_id",
         "Rombel belum memiliki wali kelas",
         """SELECT rombongan_belajar_id AS row_id, nama AS detail FROM rombongan_belajar x
            WHERE live(x) AND jenis_rombel = 1 AND ptk_id IS NULL"""),
    Rule("RB-004", ROMBEL, INVALID, "rombongan_belajar", "ptk_id",
         "Wali kelas tidak terdaftar sebagai PTK aktif di sekolah ini pada semester rombel",
         """WITH @sem,
            aktif AS (
                SELECT DISTINCT pt.ptk_id, pt.sekolah_id, s.semester_id
                FROM ptk_terdaftar pt JOIN sem s ON ptk_aktif(pt, s))
            SELECT rb.rombongan_belajar_id AS row_id, p.nama AS detail
            FROM rombongan_belajar rb JOIN sem ON sem.semester_id = rb.semester_id
            LEFT JOIN aktif a ON a.ptk_id = rb.ptk_id AND a.sekolah_id = rb.sekolah_id
                             AND a.semester_id = rb.semester_id
            LEFT JOIN ptk p ON p.ptk_id = rb.ptk_id
            WHERE live(rb) AND rb.ptk_id IS NOT NULL AND a.ptk_id IS NULL"""),
    Rule("RB-005", ROMBEL, INVALID, "rombongan_belajar", "tingkat_pendidikan_id",
         "Tingkat pendidikan rombel tidak sesuai dengan jenjang (bentuk pendidikan) sekolah",
         """SELECT rb.rombongan_belajar_id AS row_id,
                   'tingkat ' || CAST(rb.tingkat_pendidikan_id AS VARCHAR) || ' (' || tp.jenjang
                     || ') di sekolah ' || bp.jenjang AS detail
            FROM rombongan_belajar rb
            JOIN sekolah s ON s.sekolah_id = rb.sekolah_id AND live(s)
            JOIN (SELECT bentuk_pendidikan_id, min(upper(trim(jenjang))) AS jenjang
                  FROM ref.bentuk_pendidikan GROUP BY bentuk_pendidikan_id) bp
              ON bp.bentuk_pendidikan_id = s.bentuk_pendidikan_id
            JOIN (SELECT tingkat_pendidikan_id, min(upper(trim(jenjang))) AS jenjang
                  FROM ref.tingkat_pendidikan GROUP BY tingkat_pendidikan_id) tp
              ON tp.tingkat_pendidikan_id = rb.tingkat_pendidikan_id
            WHERE live(rb) AND bp.jenjang <> tp.jenjang
              -- a bentuk whose jenjang has no tingkat of its own (SLB) spans every tingkat
              AND bp.jenjang IN (SELECT upper(trim(jenjang)) FROM ref.tingkat_pendidikan)"""),
    Rule("RB-006", ROMBEL, WARNING, "rombongan_belajar", "id_ruang",
         "Jumlah anggota rombel melebihi kapasitas ruang kelasnya",
         """SELECT rb.rombongan_belajar_id AS row_id,
                   CAST(m.n AS VARCHAR) || ' anggota, kapasitas ' || CAST(r.kapasitas AS VARCHAR)
                     AS detail
            FROM rombongan_belajar rb
            JOIN ruang r ON r.id_ruang = rb.id_ruang AND live(r)
            JOIN (SELECT rombongan_belajar_id, count(DISTINCT peserta_didik_id) AS n
                  FROM anggota_rombel x WHERE live(x) GROUP BY rombongan_belajar_id) m
              ON m.rombongan_belajar_id = rb.rombongan_belajar_id
            WHERE live(rb) AND m.n > r.kapasitas"""),
    Rule("RB-007", ROMBEL, INVALID, "rombongan_belajar", "nama",
         "Nama rombel maksimal 30 karakter",
         """SELECT rombongan_belajar_id AS row_id, nama AS detail FROM rombongan_belajar x
            WHERE live(x) AND length(trim(nama)) > 30"""),
    Rule("RB-008", ROMBEL, WARNING, "rombongan_belajar", None,
         "Rombel reguler belum memiliki anggota",
         """SELECT rb.rombongan_belajar_id AS row_id, rb.nama AS detail
            FROM rombongan_belajar rb
            LEFT JOIN (SELECT DISTINCT rombongan_belajar_id FROM anggota_rombel x
                       WHERE live(x)) a ON a.rombongan_belajar_id = rb.rombongan_belajar_id
            WHERE live(rb) AND rb.jenis_rombel = 1 AND a.rombongan_belajar_id IS NULL"""),
    Rule("RB-009", ROMBEL, INVALID, "anggota_rombel", "peserta_didik_id",
         "Anggota rombel tidak terdaftar aktif sebagai peserta didik sekolah ini pada "
         "semester rombel (sudah keluar atau belum masuk)",
         """WITH @sem,
            aktif AS (
                SELECT DISTINCT r.peserta_didik_id, r.sekolah_id, s.semester_id
                FROM registrasi_peserta_didik r
                JOIN sem s ON pd_aktif(r, s)
                JOIN (SELECT DISTINCT semester_id FROM rombongan_belajar) u
                  ON u.semester_id = s.semester_id)
            SELECT a.anggota_rombel_id AS row_id, p.nama AS detail
            FROM anggota_rombel a
            JOIN rombongan_belajar rb ON rb.rombongan_belajar_id = a.rombongan_belajar_id
                                     AND live(rb)
            JOIN sem ON sem.semester_id = rb.semester_id
            LEFT JOIN aktif x ON x.peserta_didik_id = a.peserta_didik_id
                             AND x.sekolah_id = rb.sekolah_id AND x.semester_id = rb.semester_id
            LEFT JOIN peserta_didik p ON p.peserta_didik_id = a.peserta_didik_id
            WHERE live(a) AND x.peserta_didik_id IS NULL"""),
    Rule("RB-010", ROMBEL, INVALID, "anggota_rombel", "peserta_didik_id",
         "Peserta didik tercatat lebih dari sekali di rombel yang sama",
         _duplicates("anggota_rombel", "rombongan_belajar_id, peserta_didik_id", "true",
                     "CAST(n AS VARCHAR) || ' kali'")),
    Rule("RB-011", ROMBEL, INVALID, "jadwal", "hari",
         "Hari pada jadwal harus 1 (Senin) sampai 6 (Sabtu)",
         """SELECT jadwal_id AS row_id, CAST(hari AS VARCHAR) AS detail FROM jadwal x
            WHERE live(x) AND hari NOT BETWEEN 1 AND 6"""),
    Rule("RB-012", ROMBEL, INVALID, "jadwal", "jam_ke",
         "Jam ke- pada jadwal harus antara 1 dan 14",
         """SELECT jadwal_id AS row_id, CAST(jam_ke AS VARCHAR) AS detail FROM jadwal x
            WHERE live(x) AND jam_ke NOT BETWEEN 1 AND 14"""),
    Rule("RB-013", ROMBEL, INVALID, "jadwal", None,
         "Guru dijadwalkan mengajar di lebih dari satu rombel pada hari dan jam yang sama",
         """WITH j AS (
                SELECT j.jadwal_id, j.rombongan_belajar_id, j.semester_id, j.hari, j.jam_ke,
                       pt.ptk_id
                FROM jadwal j
                JOIN pembelajaran pb ON pb.pembelajaran_id = j.pembelajaran_id AND live(pb)
                JOIN ptk_terdaftar pt ON pt.ptk_terdaftar_id = pb.ptk_terdaftar_id AND live(pt)
                WHERE live(j)),
            bentrok AS (
                SELECT j.ptk_id, j.semester_id, j.hari, j.jam_ke,
                       string_agg(DISTINCT rb.nama, ', ' ORDER BY rb.nama) AS rombel
                FROM j LEFT JOIN rombongan_belajar rb
                  ON rb.rombongan_belajar_id = j.rombongan_belajar_id
                GROUP BY j.ptk_id, j.semester_id, j.hari, j.jam_ke
                HAVING count(DISTINCT j.rombongan_belajar_id) > 1)
            SELECT j.jadwal_id AS row_id,
                   'hari ' || CAST(b.hari AS VARCHAR) || ' jam ke-' || CAST(b.jam_ke AS VARCHAR)
                     || ': ' || b.rombel AS detail
            FROM j JOIN bentrok b ON b.ptk_id = j.ptk_id AND b.semester_id = j.semester_id
                                 AND b.hari = j.hari AND b.jam_ke = j.jam_ke"""),
    Rule("RB-014", ROMBEL, INVALID, "jadwal", None,
         "Rombel dijadwalkan lebih dari satu mata pelajaran pada hari dan jam yang sama",
         """WITH j AS (
                SELECT j.jadwal_id, j.rombongan_belajar_id, j.semester_id, j.hari, j.jam_ke,
                       j.pembelajaran_id, pb.mata_pelajaran_id,
                       count(*) OVER w AS n,
                       count(DISTINCT j.pembelajaran_id) OVER w AS n_pb,
                       count(DISTINCT pb.mata_pelajaran_id) OVER w AS n_mapel
                FROM jadwal j
                JOIN pembelajaran pb ON pb.pembelajaran_id = j.pembelajaran_id AND live(pb)
                WHERE live(j)
                WINDOW w AS (PARTITION BY j.rombongan_belajar_id, j.semester_id, j.hari,
                                          j.jam_ke))
            SELECT jadwal_id AS row_id,
                   'hari ' || CAST(hari AS VARCHAR) || ' jam ke-' || CAST(jam_ke AS VARCHAR)
                     AS detail
            FROM j WHERE n_mapel > 1 OR n > n_pb"""),
    Rule("RB-015", ROMBEL, INVALID, "jadwal", "pembelajaran_id",
         "Rombel atau semester pada jadwal berbeda dengan pembelajarannya",
         """SELECT j.jadwal_id AS row_id,
                   CASE WHEN j.rombongan_belajar_id <> pb.rombongan_belajar_id
                        THEN 'rombel berbeda' ELSE 'semester berbeda' END AS detail
            FROM jadwal j
            JOIN pembelajaran pb ON pb.pembelajaran_id = j.pembelajaran_id AND live(pb)
            WHERE live(j) AND (j.rombongan_belajar_id <> pb.rombongan_belajar_id
                               OR j.semester_id <> pb.semester_id)"""),
    Rule("RB-016", ROMBEL, WARNING, "jadwal", "id_ruang",
         "Ruang dipakai lebih dari satu rombel pada hari dan jam yang sama",
         """SELECT jadwal_id AS row_id,
                   'hari ' || CAST(hari AS VARCHAR) || ' jam ke-' || CAST(jam_ke AS VARCHAR)
                     AS detail
            FROM (SELECT x.*, count(DISTINCT rombongan_belajar_id) OVER (
                             PARTITION BY id_ruang, semester_id, hari, jam_ke) AS n
                  FROM jadwal x WHERE live(x) AND id_ruang IS NOT NULL)
            WHERE n > 1"""),
    Rule("RB-017", ROMBEL, WARNING, "pembelajaran", "jam_mengajar_per_minggu",
         "Jumlah jam pada jadwal tidak sama dengan jam mengajar per minggu pembelajaran",
         """SELECT pb.pembelajaran_id AS row_id,
                   CAST(j.n AS VARCHAR) || ' jam terjadwal, '
                     || CAST(pb.jam_mengajar_per_minggu AS VARCHAR) || ' jam per minggu'
                     AS detail
            FROM pembelajaran pb
            JOIN (SELECT pembelajaran_id, count(*) AS n FROM jadwal x WHERE live(x)
                  GROUP BY pembelajaran_id) j ON j.pembelajaran_id = pb.pembelajaran_id
            WHERE live(pb) AND j.n <> pb.jam_mengajar_per_minggu"""),
    Rule("RB-018", ROMBEL, WARNING, "rombongan_belajar", "ptk_id",
         "Wali kelas menjadi wali lebih dari satu rombel reguler pada semester yang sama",
         _duplicates("rombongan_belajar", "sekolah_id, semester_id, ptk_id",
                     "jenis_rombel = 1 AND ptk_id IS NOT NULL", "nama")),

    # Pembelajaran ----------------------------------------------------------------------------
    Rule("PBJ-001", PEMBELAJARAN, INVALID, "pembelajaran", "ptk_terdaftar_id",
         "Pembelajaran belum memiliki guru pengajar",
         """SELECT pembelajaran_id AS row_id, nama_mata_pelajaran AS detail FROM pembelajaran x
            WHERE live(x) AND ptk_terdaftar_id IS NULL"""),
    Rule("PBJ-002", PEMBELAJARAN, INVALID, "pembelajaran", "ptk_terdaftar_id",
         "Guru pengajar tidak terdaftar aktif di sekolah ini pada semester pembelajaran",
         """WITH @sem
            SELECT pb.pembelajaran_id AS row_id, p.nama AS detail
            FROM pembelajaran pb
            JOIN sem s ON s.semester_id = pb.semester_id
            JOIN ptk_terdaftar pt ON pt.ptk_terdaftar_id = pb.ptk_terdaftar_id AND live(pt)
            JOIN rombongan_belajar rb ON rb.rombongan_belajar_id = pb.rombongan_belajar_id
                                     AND live(rb)
            LEFT JOIN ptk p ON p.ptk_id = pt.ptk_id
            WHERE live(pb)
              AND NOT (pt.sekolah_id = rb.sekolah_id AND coalesce(ptk_aktif(pt, s), false))"""),
    Rule("PBJ-003", PEMBELAJARAN, INVALID, "pembelajaran", "jam_mengajar_per_minggu",
         "Jam mengajar per minggu harus antara 1 dan 40",
         """SELECT pembelajaran_id AS row_id, CAST(jam_mengajar_per_minggu AS VARCHAR) AS detail
            FROM pembelajaran x
            WHERE live(x) AND jam_mengajar_per_minggu NOT BETWEEN 1 AND 40"""),
    Rule("PBJ-004", PEMBELAJARAN, INVALID, "pembelajaran", "semester_id",
         "Semester pembelajaran berbeda dengan semester rombelnya",
         """SELECT pb.pembelajaran_id AS row_id,
                   pb.semester_id || ' <> ' || rb.semester_id AS detail
            FROM pembelajaran pb
            JOIN rombongan_belajar rb ON rb.rombongan_belajar_id = pb.rombongan_belajar_id
                                     AND live(rb)
            WHERE live(pb) AND pb.semester_id <> rb.semester_id"""),
    Rule("PBJ-005", PEMBELAJARAN, INVALID, "pembelajaran", "mata_pelajaran_id",
         "Mata pelajaran dengan guru yang sama tercatat lebih dari sekali di rombel yang sama",
         _duplicates("pembelajaran", "rombongan_belajar_id, mata_pelajaran_id, ptk_terdaftar_id",
                     "true", "CAST(mata_pelajaran_id AS VARCHAR)")),
    Rule("PBJ-006", PEMBELAJARAN, WARNING, "rombongan_belajar", None,
         "Rombel reguler belum memiliki pembelajaran",
         """SELECT rb.rombongan_belajar_id AS row_id, rb.nama AS detail
            FROM rombongan_belajar rb
            LEFT JOIN (SELECT DISTINCT rombongan_belajar_id FROM pembelajaran x
                       WHERE live(x)) pb ON pb.rombongan_belajar_id = rb.rombongan_belajar_id
            WHERE live(rb) AND rb.jenis_rombel = 1 AND pb.rombongan_belajar_id IS NULL"""),
    Rule("PBJ-007", PEMBELAJARAN, INVALID, "pembelajaran", "ptk_terdaftar_id",
         "Pengajar pembelajaran harus PTK berjenis guru",
         """SELECT pb.pembelajaran_id AS row_id, j.nama AS detail
            FROM pembelajaran pb
            JOIN ptk_terdaftar pt ON pt.ptk_terdaftar_id = pb.ptk_terdaftar_id AND live(pt)
            JOIN (SELECT jenis_ptk_id, min(nama) AS nama FROM ref.jenis_ptk
                  GROUP BY jenis_ptk_id HAVING max(coalesce(guru, 1)) = 0) j
              ON j.jenis_ptk_id = pt.jenis_ptk_id
            WHERE live(pb)"""),
    Rule("PBJ-008", PEMBELAJARAN, WARNING, "pembelajaran", "tanggal_sk_mengajar",
         "Tanggal SK mengajar setelah semester pembelajaran berakhir",
         """WITH @sem
            SELECT pb.pembelajaran_id AS row_id, CAST(pb.tanggal_sk_mengajar AS VARCHAR) AS detail
            FROM pembelajaran pb JOIN sem s ON s.semester_id = pb.semester_id
            WHERE live(pb) AND pb.tanggal_sk_mengajar > s.selesai"""),

    # Nilai -----------------------------------------------------------------------------------
    Rule("NIL-001", NILAI, INVALID, "nilai", "nilai_angka",
         "Nilai harus antara 0 dan 100",
         """SELECT nilai_id AS row_id, CAST(nilai_angka AS VARCHAR) AS detail FROM nilai x
            WHERE live(x) AND nilai_angka NOT BETWEEN 0 AND 100"""),
    Rule("NIL-002", NILAI, INVALID, "nilai", "peserta_didik_id",
         "Nilai diberikan kepada peserta didik yang bukan anggota rombel pembelajaran tersebut",
         """SELECT n.nilai_id AS row_id, p.nama AS detail
            FROM nilai n
            JOIN pembelajaran pb ON pb.pembelajaran_id = n.pembelajaran_id AND live(pb)
            LEFT JOIN (SELECT DISTINCT rombongan_belajar_id, peserta_didik_id
                       FROM anggota_rombel x WHERE live(x)) a
              ON a.rombongan_belajar_id = pb.rombongan_belajar_id
             AND a.peserta_didik_id = n.peserta_didik_id
            LEFT JOIN peserta_didik p ON p.peserta_didik_id = n.peserta_didik_id
            WHERE live(n) AND a.peserta_didik_id IS NULL"""),
    Rule("NIL-003", NILAI, INVALID, "nilai", "pembelajaran_id",
         "Peserta didik memiliki lebih dari satu nilai untuk pembelajaran yang sama",
         _duplicates("nilai", "peserta_didik_id, pembelajaran_id, semester_id", "true",
                     "CAST(nilai_angka AS VARCHAR)")),
    Rule("NIL-004", NILAI, INVALID, "nilai", "predikat",
         "Predikat nilai harus A, B, C, atau D",
         """SELECT nilai_id AS row_id, predikat AS detail FROM nilai x
            WHERE live(x) AND predikat IS NOT NULL AND predikat NOT IN ('A', 'B', 'C', 'D')"""),
    # The predikat intervals follow each school's KKM, which the schema does not hold, so
    # the check is scale-free: in one pembelajaran a higher nilai never has a lower predikat.
    Rule("NIL-005", NILAI, WARNING, "nilai", "predikat",
         "Predikat tidak sesuai dengan nilai angka: ada nilai lebih rendah dengan predikat "
         "lebih baik pada pembelajaran yang sama",
         """WITH n AS (
                SELECT nilai_id, nilai_angka, predikat,
                       min(nilai_angka) OVER (PARTITION BY pembelajaran_id ORDER BY rank
                           RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS min_lebih_baik,
                       max(nilai_angka) OVER (PARTITION BY pembelajaran_id ORDER BY rank
                           RANGE BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS max_lebih_buruk
                FROM (SELECT x.*, strpos('ABCD', predikat) AS rank FROM nilai x
                      WHERE live(x) AND predikat IN ('A', 'B', 'C', 'D')
                        AND nilai_angka BETWEEN 0 AND 100))
            SELECT nilai_id AS row_id,
                   CAST(nilai_angka AS VARCHAR) || ' = ' || predikat AS detail
            FROM n WHERE nilai_angka > min_lebih_baik OR nilai_angka < max_lebih_buruk"""),
    Rule("NIL-006", NILAI, INVALID, "nilai", "semester_id",
         "Semester nilai berbeda dengan semester pembelajarannya",
         """SELECT n.nilai_id AS row_id, n.semester_id || ' <> ' || pb.semester_id AS detail
            FROM nilai n
            JOIN pembelajaran pb ON pb.pembelajaran_id = n.pembelajaran_id AND live(pb)
            WHERE live(n) AND n.semester_id <> pb.semester_id"""),
    Rule("NIL-007", NILAI, WARNING, "anggota_rombel", None,
         "Nilai peserta didik belum lengkap untuk pembelajaran yang sudah dinilai di rombelnya",
         """WITH ada AS (
                SELECT DISTINCT peserta_didik_id, pembelajaran_id FROM nilai x WHERE live(x)),
            dinilai AS (SELECT DISTINCT pembelajaran_id FROM ada),
            perlu AS (
                SELECT a.anggota_rombel_id, a.peserta_didik_id, pb.pembelajaran_id
                FROM anggota_rombel a
                JOIN rombongan_belajar rb ON rb.rombongan_belajar_id = a.rombongan_belajar_id
                                         AND live(rb)
                JOIN pembelajaran pb ON pb.rombongan_belajar_id = a.rombongan_belajar_id
                                    AND live(pb)
                JOIN dinilai d ON d.pembelajaran_id = pb.pembelajaran_id
                WHERE live(a))
            SELECT perlu.anggota_rombel_id AS row_id,
                   CAST(count(*) AS VARCHAR) || ' pembelajaran belum bernilai' AS detail
            FROM perlu LEFT JOIN ada
              ON ada.peserta_didik_id = perlu.peserta_didik_id
             AND ada.pembelajaran_id = perlu.pembelajaran_id
            WHERE ada.peserta_didik_id IS NULL
            GROUP BY perlu.anggota_rombel_id"""),

    # Referensi (centre data: warnings, fixed by the centre and Tarik Data) -------------------
    Rule("REF-001", REFERENSI, WARNING, "ref.semester", "tanggal_selesai",
         "Tanggal mulai semester harus sebelum tanggal selesainya (lakukan Tarik Data)",
         """SELECT ref_id AS row_id,
                   semester_id || ': ' || CAST(tanggal_mulai AS VARCHAR) || ' s.d. '
                     || CAST(tanggal_selesai AS VARCHAR) AS detail
            FROM ref.semester WHERE tanggal_mulai >= tanggal_selesai"""),
    Rule("REF-002", REFERENSI, WARNING, "ref.semester", "semester_id",
         "Kode semester harus berbentuk TTTTS sesuai tahun ajaran dan semesternya",
         """SELECT ref_id AS row_id, semester_id AS detail FROM ref.semester
            WHERE semester_id IS NOT NULL AND NOT (
                regexp_full_match(semester_id, '[0-9]{4}[123]')
                AND TRY_CAST(left(semester_id, 4) AS INTEGER) IS NOT DISTINCT FROM tahun_ajaran_id
                AND TRY_CAST(right(semester_id, 1) AS INTEGER) IS NOT DISTINCT FROM semester)"""),
    Rule("REF-003", REFERENSI, WARNING, "ref.semester", "tanggal_mulai",
         "Tanggal semester berada di luar tanggal tahun ajarannya",
         """SELECT s.ref_id AS row_id, s.semester_id || ' / ' || CAST(t.tahun_ajaran_id AS VARCHAR)
                     AS detail
            FROM ref.semester s
            JOIN (SELECT tahun_ajaran_id, min(tanggal_mulai) AS mulai,
                         max(tanggal_selesai) AS selesai
                  FROM ref.tahun_ajaran GROUP BY tahun_ajaran_id) t
              ON t.tahun_ajaran_id = s.tahun_ajaran_id
            WHERE s.tanggal_mulai < t.mulai OR s.tanggal_selesai > t.selesai"""),
    Rule("REF-004", REFERENSI, WARNING, "ref.mata_pelajaran", "nama",
         "Mata pelajaran tidak memiliki nama",
         f"""SELECT ref_id AS row_id, CAST(mata_pelajaran_id AS VARCHAR) AS detail
             FROM ref.mata_pelajaran WHERE NOT {_filled('nama')}"""),
    Rule("REF-005", REFERENSI, WARNING, "ref.bentuk_pendidikan", "usia_min",
         "Batas usia bentuk pendidikan kosong atau usia minimal melebihi usia maksimal",
         """SELECT ref_id AS row_id,
                   nama || ': ' || coalesce(CAST(usia_min AS VARCHAR), '?') || '-'
                     || coalesce(CAST(usia_max AS VARCHAR), '?') AS detail
            FROM ref.bentuk_pendidikan
            WHERE usia_min IS NULL OR usia_max IS NULL OR usia_min > usia_max"""),
    Rule("REF-006", REFERENSI, WARNING, "ref.tahun_ajaran", "tanggal_selesai",
         "Tanggal mulai tahun ajaran harus sebelum tanggal selesainya",
         """SELECT ref_id AS row_id, CAST(tahun_ajaran_id AS VARCHAR) AS detail
            FROM ref.tahun_ajaran WHERE tanggal_mulai >= tanggal_selesai"""),
    Rule("REF-007", REFERENSI, WARNING, "ref.mst_wilayah", "mst_kode_wilayah",
         "Induk wilayah tidak ditemukan atau tingkatnya tidak sesuai",
         """SELECT w.ref_id AS row_id, w.kode_wilayah || ' -> ' || coalesce(w.mst_kode_wilayah, '?')
                     AS detail
            FROM ref.mst_wilayah w
            LEFT JOIN (SELECT kode_wilayah, max(id_level_wilayah) AS lvl
                       FROM ref.mst_wilayah GROUP BY kode_wilayah) m
              ON m.kode_wilayah = w.mst_kode_wilayah
            WHERE w.id_level_wilayah > 0
              AND (m.kode_wilayah IS NULL OR m.lvl <> w.id_level_wilayah - 1)"""),
)

# -- rules derived from the schema -------------------------------------------------------------

_LABEL = {
    "sekolah": "sekolah", "sekolah_longitudinal": "data periodik sekolah", "tanah": "tanah",
    "bangunan": "bangunan", "ruang": "ruang", "alat": "alat", "peserta_didik": "peserta didik",
    "registrasi_peserta_didik": "registrasi peserta didik",
    "peserta_didik_longitudinal": "data periodik peserta didik", "ptk": "PTK",
    "ptk_terdaftar": "penugasan PTK", "tugas_tambahan": "tugas tambahan PTK",
    "rombongan_belajar": "rombel", "anggota_rombel": "anggota rombel",
    "pembelajaran": "pembelajaran", "nilai": "nilai", "jadwal": "jadwal",
    "pengguna": "pengguna", "ref.semester": "semester",
}


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _said(entity: str, field: str) -> str:
    """SQL: the field's form label, as a literal."""
    return _quote(label(entity, field))


def _centre_only(e: Entity, names: Iterable[str]) -> bool:
    return e.is_reference or all(e.by_name[n].owner is Owner.CENTRE for n in names)


def _required(rule_id: str, entity: str) -> Rule:
    """The entity's required fields (``Field.required``) that are empty."""
    e = BY_NAME[entity]
    fields = [f for f in e.fields if f.required]
    empty = {f.name: f"{f.name} IS NULL" + (f" OR trim({f.name}) = ''" if f.type == "text"
                                              else "") for f in fields}
    sql = f"""SELECT {e.key} AS row_id,
                     concat_ws(', ', {', '.join(f"CASE WHEN {c} THEN {_said(entity, n)} END"
                                                 for n, c in empty.items())}) AS detail
              FROM {e.table} x
              WHERE live(x) AND ({' OR '.join(f'({c})' for c in empty.values())})"""
    severity = WARNING if _centre_only(e, empty) else INVALID
    return Rule(rule_id, e.tab, severity, entity, None,
                f"Isian wajib {_LABEL[entity]} belum diisi", sql)


def _references(rule_id: str, entity: str) -> Rule:
    """Values of the entity's ``Field.ref`` fields that point at nothing usable.

    A reference code that ``ref.*`` does not know or has expired (module
    docstring), or a row that does not exist or is deleted.
    """
    e = BY_NAME[entity]
    refs = [f for f in e.fields if f.ref]
    # The date a code must not have expired by; no date known: any expiry counts.
    if e.is_reference:
        ctes, on = [], None
    elif e.semester_scoped:
        ctes, on = ["@sem"], "sem.mulai"
    else:
        ctes, on = ["@cur"], "cur.mulai"
    # One scan of the entity, one LEFT JOIN per reference (each target is unique on its
    # key, codes are grouped), a CASE per field naming what is wrong with it.
    joins, problems = [], []
    for i, f in enumerate(refs):
        assert f.ref is not None
        target, column = f.ref.rsplit(".", 1)
        t = BY_NAME[target]
        said = label(entity, f.name)  # the detail names the field as the form does
        value = f"{_quote(said + ' ')} || CAST(x.{f.name} AS VARCHAR)"
        if t.is_reference:
            joins.append(f"""LEFT JOIN (SELECT {column} AS code,
                                    CASE WHEN bool_or(expired_date IS NULL) THEN NULL
                                         ELSE max(expired_date) END AS expired
                             FROM {t.table} GROUP BY {column}) t{i} ON t{i}.code = x.{f.name}""")
            expired = (f"WHEN t{i}.expired <= coalesce({on}, DATE '9999-12-31') "
                       f"THEN {value} || ' tidak berlaku sejak ' || CAST(t{i}.expired AS VARCHAR)"
                       if on else "")
            problems.append(f"""CASE WHEN x.{f.name} IS NULL THEN NULL
                                     WHEN t{i}.code IS NULL THEN {value} || ' tidak dikenal'
                                     {expired} END""")
        else:
            joins.append(f"LEFT JOIN {t.table} t{i} ON t{i}.{t.key} = x.{f.name}")
            # A row's key means nothing to people (and it is gone): the field says which.
            problems.append(f"""CASE WHEN x.{f.name} IS NULL THEN NULL
                                     WHEN t{i}.{t.key} IS NULL
                                       THEN {_quote(said + ' tidak ditemukan')}
                                     WHEN NOT live(t{i}) THEN {_quote(said + ' sudah dihapus')}
                                END""")
    if not any(f.ref and f.ref.startswith("ref.") for f in refs):
        ctes = []
    cte_joins = {"@sem": "LEFT JOIN sem ON sem.semester_id = x.semester_id",
                 "@cur": "LEFT JOIN cur ON true"}
    sql = f"""{'WITH ' + ', '.join(ctes) if ctes else ''}
        SELECT row_id, detail FROM (
            SELECT x.{e.key} AS row_id, concat_ws('; ', {', '.join(problems)}) AS detail
            FROM {e.table} x {' '.join(joins)} {' '.join(cte_joins[c] for c in ctes)}
            {'' if e.is_reference else 'WHERE live(x)'})
        WHERE detail <> ''"""
    noun = _LABEL[entity]
    targets = sorted({_LABEL[f.ref.rsplit(".", 1)[0]] for f in refs
                      if f.ref and not f.ref.startswith("ref.")})
    if len(targets) < len(refs):  # some field holds a reference code
        message = f"Kode referensi {noun} tidak dikenal atau sudah tidak berlaku"
        if targets:
            message += f", atau data {', '.join(targets)} yang dirujuk tidak ada atau sudah dihapus"
    else:
        message = f"Data {', '.join(targets)} yang dirujuk {noun} tidak ada atau sudah dihapus"
    severity = WARNING if _centre_only(e, (f.name for f in refs)) else INVALID
    tab = REFERENSI if e.is_reference else e.tab
    return Rule(rule_id, tab, severity, entity, None, message, sql)


_DERIVED: tuple[Rule, ...] = (
    _required("SEK-101", "sekolah"),
    _references("SEK-102", "sekolah"),
    _required("SEK-103", "sekolah_longitudinal"),
    _references("SEK-104", "sekolah_longitudinal"),
    _required("SEK-105", "pengguna"),
    _references("SEK-106", "pengguna"),
    _required("SAR-101", "tanah"),
    _references("SAR-102", "tanah"),
    _required("SAR-103", "bangunan"),
    _references("SAR-104", "bangunan"),
    _required("SAR-105", "ruang"),
    _references("SAR-106", "ruang"),
    _required("SAR-107", "alat"),
    _references("SAR-108", "alat"),
    _required("PD-101", "peserta_didik"),
    _references("PD-102", "peserta_didik"),
    _required("PD-103", "registrasi_peserta_didik"),
    _references("PD-104", "registrasi_peserta_didik"),
    _required("PD-105", "peserta_didik_longitudinal"),
    _references("PD-106", "peserta_didik_longitudinal"),
    _required("GTK-101", "ptk"),
    _references("GTK-102", "ptk"),
    _required("GTK-103", "ptk_terdaftar"),
    _references("GTK-104", "ptk_terdaftar"),
    _required("GTK-105", "tugas_tambahan"),
    _references("GTK-106", "tugas_tambahan"),
    _required("RB-101", "rombongan_belajar"),
    _references("RB-102", "rombongan_belajar"),
    _required("RB-103", "anggota_rombel"),
    _references("RB-104", "anggota_rombel"),
    _required("RB-105", "jadwal"),
    _references("RB-106", "jadwal"),
    _required("PBJ-101", "pembelajaran"),
    _references("PBJ-102", "pembelajaran"),
    _required("NIL-101", "nilai"),
    _references("NIL-102", "nilai"),
    _references("REF-101", "ref.semester"),
)

RULES: tuple[Rule, ...] = tuple(
    r._replace(sql=_sql(r.sql))
    for tab in TABS
    for r in sorted((*_HAND, *_DERIVED), key=lambda r: (r.id.split("-")[0], int(r.id[-3:])))
    if r.tab == tab)


def rules_for(tab: str) -> tuple[Rule, ...]:
    """The rules shown on Validasi Lokal tab ``tab`` (one of ``TABS``), in id order."""
    _check_tab(tab)
    return tuple(r for r in RULES if r.tab == tab)


def _check_tab(tab: str | None) -> None:
    if tab is not None and tab not in TABS:
        raise ValueError(f"unknown tab {tab!r}; tabs: {', '.join(TABS)}")


def validation_sql(rules: Iterable[Rule] = RULES) -> str:
    """One query running ``rules``: columns rule_id VARCHAR, row_id UUID, detail VARCHAR.

    The caller runs it over the materialised tables (schema ``ref`` holding
    the reference tables) and keeps the findings; each (rule_id, row_id) comes
    at most once.
    """
    parts = [f"SELECT '{r.id}' AS rule_id, CAST(row_id AS UUID) AS row_id, "
             f"CAST(detail AS VARCHAR) AS detail FROM ({r.sql}) AS r{i}"
             for i, r in enumerate(rules)]
    if not parts:
        return ("SELECT CAST(NULL AS VARCHAR) AS rule_id, CAST(NULL AS UUID) AS row_id, "
                "CAST(NULL AS VARCHAR) AS detail WHERE false")
    return "\nUNION ALL\n".join(parts)


# -- the report an operator reads ------------------------------------------------------------


class TabCount(NamedTuple):
    """One Validasi Lokal tab's counts of findings."""

    tab: str
    invalid: int
    warnings: int


class Report(NamedTuple):
    """Validasi Lokal as a screen shows it: every tab asked for with its counts (zero
    included, in ``TABS`` order) and the findings, each with its row's ``nama`` and its
    field's ``label`` (``InstallStore.findings``)."""

    tabs: tuple[TabCount, ...]
    findings: tuple[dict[str, Any], ...]

    @property
    def invalid(self) -> int:
        return sum(t.invalid for t in self.tabs)

    @property
    def warnings(self) -> int:
        return sum(t.warnings for t in self.tabs)

    @property
    def blocking(self) -> int:
        """The invalid findings of Validasi Lokal: they block the principal's sync. Validasi
        Pusat's are shown but do not block: they are checked again at the centre after
        the push that fixes them, which they would otherwise hold back."""
        return sum(1 for f in self.findings
                   if f["severity"] == INVALID and f.get("source") != CENTRAL)

    @property
    def blocked(self) -> bool:
        """Whether the principal's sync is blocked."""
        return self.blocking > 0

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` and the web app."""
        return {"findings": list(self.findings), "invalid": self.invalid,
                "warnings": self.warnings, "tabs": [t._asdict() for t in self.tabs]}


def tab_counts(findings: Iterable[Mapping[str, Any]],
               tabs: Iterable[str] = TABS) -> tuple[TabCount, ...]:
    """Per tab of ``tabs``, its invalid and warning findings among ``findings``."""
    counted = Counter((f["tab"], f["severity"]) for f in findings)
    return tuple(TabCount(t, counted[t, INVALID], counted[t, WARNING]) for t in tabs)


def validate(store: InstallStore, tab: str | None = None) -> Report:
    """Run Validasi Lokal on ``store``'s data and report one tab (of ``TABS``) or all.

    The store keeps the findings of every tab (``InstallStore.findings`` reads them
    again); the exit status or the sync gate follows ``Report.blocked``.
    """
    _check_tab(tab)
    store.validate()
    findings = tuple(store.findings(tab))
    return Report(tab_counts(findings, TABS if tab is None else (tab,)), findings)


# The school's principals now: PTK induk holding a kepala sekolah (or Plt.) tugas tambahan in
# the current semester, as SEK-004 and GTK-009 see them (one row each; none or two is wrong).
PRINCIPALS_SQL = _sql("""WITH @cur, @induk, @kepsek
    SELECT DISTINCT k.ptk_id::VARCHAR AS ptk_id, p.nama, p.nip, cur.semester_id
    FROM kepsek k CROSS JOIN cur JOIN ptk p ON p.ptk_id = k.ptk_id
    WHERE k.induk AND live(p) AND k.tst > cur.selesai
    ORDER BY p.nama""")


def invalid_counts_sql() -> str:
    """Per rule, the invalid findings (those a school can and must fix): what the centre's
    gate counts on a school's state after its push (docs/protocol.md, R20)."""
    invalid = [r for r in RULES if r.severity == INVALID]
    return (f"SELECT rule_id, count(*) AS n FROM ({validation_sql(invalid)}) f "
            "GROUP BY rule_id")


def invalid_per_tab(counts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """(rule_id, count) rows as invalid findings per tab, in TABS order."""
    tab_of = {r.id: r.tab for r in RULES}
    per: dict[str, int] = {}
    for rule_id, n in counts:
        per[tab_of[rule_id]] = per.get(tab_of[rule_id], 0) + int(n)
    return {t: per[t] for t in TABS if per.get(t)}
