"""A school's own data, generated: realistic, deterministic, valid, and as large as asked.

``generate(size, scale, npsn, seed, errors, bentuk=...)`` yields ``(entity,
row)`` pairs: what one school enters for itself in the Dapodik application,
for semester 20231 (tahun ajaran 2023). ``write(path, rows)`` writes them as
JSON lines, ``{"entity": NAME, <key>: UUID, field: value, ...}``, the format
``Store.import_jsonl`` reads. Fields a school does not know are left out.

What is generated: sekolah_longitudinal, tanah, bangunan, ruang, alat, ptk,
ptk_terdaftar, tugas_tambahan (one Kepala Sekolah, his deputies, an SMK's
heads of program), peserta_didik, registrasi_peserta_didik,
peserta_didik_longitudinal, rombongan_belajar, anggota_rombel, pembelajaran,
jadwal, nilai and pengguna (an operator and the principal). Never sekolah nor
ref.*: they come from the centre (``sekolah_row`` gives the centre's row for
tests and benchmarks; its bentuk_pendidikan_id is the one ``selaras init
--offline --bentuk`` records). The school's ``sekolah_id`` is
``stable_row_id("sekolah", npsn)``.

The school is of one level, ``bentuk`` (``LEVELS``; SMA by default), with
that level's bentuk_pendidikan, grades, Kurikulum Merdeka and subjects:

- SD (bentuk_pendidikan 5): grades 1-6, rombels "1A", "1B", ...; a Guru Kelas
  (jenis_ptk 3) teaches each rombel all its subjects but religion, sport and
  English, and is its homeroom teacher; no deputy principals.
- SMP (6): grades 7-9, rombels "VII A", ...
- SMA (13): grades 10-12, rombels "X-1", ...
- SMK (15): grades 10-12; the rombels of each grade are split between two
  program keahlian (jurusan), TJKT and AKL, each with its own kurikulum_id,
  jurusan_sp_id and "Dasar-dasar" subject taught by its own teachers, and a
  Ketua Program Keahlian; rombels "X TJKT 1", "X AKL 1", ...

=====  =======  ========  ==============  ========  ======  ==============
level  size     students  rombels         subjects  PTK     rows (scale 1)
=====  =======  ========  ==============  ========  ======  ==============
SD     small    72        6 x 12          6         10      ~1,000
SD     medium   336       12 x 28         8         19      ~4,700
SD     large    672       24 x 28         9         39      ~10,000
SMP    small    60        3 x 20          6         8       ~780
SMP    medium   384       12 x 32         10        27      ~6,200
SMP    large    1,056     33 x 32         12        76      ~19,000
SMA    small    60        3 x 20          6         8       ~770
SMA    medium   396       12 x 33         10        21      ~6,000
SMA    large    1,485     45 x 33         15        90      ~31,000
SMK    small    72        6 x 12          6         11      ~1,050
SMK    medium   396       12 x 33         10        26      ~6,400
SMK    large    1,485     45 x 33         12        100     ~27,000
=====  =======  ========  ==============  ========  ======  ==============

``scale`` multiplies the school: N times the students, rombels, teachers,
rooms and buildings (one principal, one operator whatever the scale);
``large`` at scale 40 is about 1.25 million rows. Rows stream out one entity
at a time, parents before children; nothing holds more than one copy of the
school's ids at once.

The clean data is free of validation findings by construction: ages on 2 July
2023 inside the level's bounds (SD 5-15, SMP 11-18, SMA and SMK 14-21; grade+4
to grade+7) for students and 22-58 for PTK; grades and subjects of the level's
jenjang; NIK and No KK of 16 digits (region code, birth date, serial; NIK
unique), NISN of 10 digits (birth-year prefix, unique), NUPTK of 16, NIP of 18
for PNS and PPPK; nama_ibu_kandung always set; names of letters and spaces
only; NIPD unique in the school; exactly one regular rombel (jenis_rombel 1)
per student, every rombel with a homeroom teacher, a room and a unique name;
every pembelajaran with a teacher; one grade (0-100, predikat A >= 90 > B >=
80 > C >= 70 > D) per student per pembelajaran of the student's own rombel; a
timetable over hari 1-6 and jam_ke 1-8 with each pembelajaran's weekly hours,
no rombel and no teacher in two places at once; exactly one Kepala Sekolah
(tugas_tambahan with jabatan 2); only reference codes of Referensi that are
not expired.

``errors=K`` breaks exactly K rows (well-formed, right types, right school);
every other row is byte-identical to the clean data of the same seed. The
kinds, taken in turn (the K-th error is of kind ``ERROR_KINDS[K % 15]``):

- ``nik_15_digits``: a student's NIK has 15 digits
- ``nisn_missing``: a student without NISN
- ``nipd_duplicate``: a registration repeats another student's NIPD
- ``two_regular_rombels``: an added anggota_rombel puts a student in a second
  regular rombel
- ``nilai_over_100``: a grade of 105
- ``teacher_double_booked``: a jadwal row moved onto an hour where its teacher
  already teaches another rombel (the rombel itself is free then)
- ``expired_mata_pelajaran``: a pembelajaran with an expired subject code of the
  level
- ``student_too_old``: a student 3 years over the level's age bound on 2 July
  (24 at an SMA; NIK follows the birth date)
- ``rombel_without_wali``: a rombel without homeroom teacher
- ``pembelajaran_without_teacher``: a pembelajaran without ptk_terdaftar_id
- ``illegal_name_characters``: a student's name with '#' and a digit
- ``ptk_too_young``: a PTK (not PNS or PPPK) aged 14 (NIK follows the birth date)
- ``second_principal``: an added tugas_tambahan making a second Kepala Sekolah
- ``nilai_not_member``: an added grade for a student outside that rombel
- ``duplicate_rombel_name``: a rombel named like another of the semester

Determinism: the same arguments give a byte-identical file. Each (entity,
copy of the school) draws from its own ``random.Random`` seeded with a string,
and row ids come from a separate stream per (entity, copy), so a child row
finds its parent's id without keeping rows around.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from selaras.engine.events import stable_row_id
from selaras.engine.referensi import referensi_rows
from selaras.engine.schema import BY_NAME

Row = dict[str, object]

SEMESTER_ID = "20231"
TAHUN_AJARAN_ID = 2023
AGE_DAY = dt.date(2023, 7, 2)  # ages count on 2 July of the semester's year
SEMESTER_START = dt.date(2023, 7, 17)
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII", 9: "IX",
         10: "X", 11: "XI", 12: "XII"}
DAYS = 6
GURU_KELAS, GURU_MAPEL, KEPALA_SEKOLAH_PTK = 3, 4, 20  # ref.jenis_ptk
TEACHING = (GURU_KELAS, GURU_MAPEL, KEPALA_SEKOLAH_PTK)
KEPALA_SEKOLAH = 2  # ref.jabatan_tugas_ptk
WAKASEK = (22, 23, 24, 25)
KETUA_PROGRAM_KEAHLIAN = 4
PNS, PPPK = 1, 12
NIP_STATUS = (PNS, PPPK)
DASAR_DASAR = 0  # in an SMK's subjects: the dasar-dasar subject of the rombel's jurusan


@dataclass(frozen=True)
class Preset:
    """One copy of the school."""

    rombels_per_tingkat: int
    students_per_rombel: int
    subjects: tuple[tuple[int, int], ...]  # (mata_pelajaran_id, hours a week), timetable order
    jam_per_hari: int
    staff: tuple[int, ...]  # jenis_ptk of the non-teaching staff; the first is the operator


@dataclass(frozen=True)
class Jurusan:
    """An SMK's program keahlian: a curriculum and a vocational subject of its own."""

    singkatan: str  # in rombel names: "X TJKT 1"
    kurikulum_id: int
    dasar_dasar: int  # its mata_pelajaran "Dasar-dasar ..."


@dataclass(frozen=True)
class Level:
    """A kind of school (bentuk pendidikan) and what its data looks like."""

    nama: str  # ref.bentuk_pendidikan nama, as `selaras init --bentuk` takes it
    bentuk_pendidikan_id: int
    usia: tuple[int, int]  # students' ages on 2 July; checked against Referensi at start
    tingkat: tuple[int, ...]
    kurikulum_id: int
    sizes: dict[str, Preset]
    expired_mapel: int  # a subject of the level the centre has retired (an error kind)
    rombel_nama: str  # format of a rombel's name: {kelas} {romawi} {huruf} {nomor} {jurusan}
    rooms: tuple[tuple[str, int, int], ...]  # besides the classrooms: (nama, jenis, kapasitas)
    sekolah_asal: tuple[str, ...]  # where new students come from: format with {n} {kota}
    pindahan: tuple[tuple[str, str], ...]  # replacements making a sekolah_asal of this level
    badan: tuple[tuple[int, int], ...]  # students' tinggi (cm), berat (kg), lingkar kepala (cm)
    wakasek: tuple[int, ...] = WAKASEK
    guru_kelas: frozenset[int] = frozenset()  # subjects the class teacher teaches (SD)
    jurusan: tuple[Jurusan, ...] = ()  # an SMK's; rombels of a tingkat are split among them


def _subjects(all_subjects: tuple[tuple[int, int], ...], ids: Iterable[int],
              ) -> tuple[tuple[int, int], ...]:
    wanted = set(ids)
    return tuple(s for s in all_subjects if s[0] in wanted)


def _sizes(all_subjects: tuple[tuple[int, int], ...], *, small: tuple[int, ...],
           medium: tuple[int, ...], rombels: tuple[tuple[int, int], ...],
           staff: tuple[tuple[int, ...], ...]) -> dict[str, Preset]:
    """The small, medium and large presets of a level: ``rombels`` is (rombels per tingkat,
    students per rombel) of each, ``staff`` the non-teaching staff of each."""
    subjects = (_subjects(all_subjects, small), _subjects(all_subjects, medium), all_subjects)
    return {name: Preset(per, n, subj, 8, who) for name, (per, n), subj, who
            in zip(("small", "medium", "large"), rombels, subjects, staff, strict=True)}


_STAFF = ((11,), (11, 11, 40), (11, 11, 11, 11, 11, 40, 30, 42, 43))
_ROOMS_COMMON = (
    ("Perpustakaan", 10, 40), ("Ruang Guru", 12, 40), ("Ruang Kepala Sekolah", 11, 6),
    ("Ruang Tata Usaha", 13, 10), ("Ruang UKS", 14, 4), ("Ruang BK", 15, 6),
    ("Mushola", 16, 60), ("Toilet Siswa Laki-laki", 17, 4), ("Toilet Siswa Perempuan", 17, 4),
    ("Gudang", 18, 0),
)
_SMP_ASAL = ("SMP Negeri {n} {kota}", "SMP Swasta Muhammadiyah {n} {kota}",
             "MTs Negeri {n} {kota}", "SMP Islam Terpadu {n} {kota}", "SMP Kristen {n} {kota}")

# Each level's subjects: (mata_pelajaran_id, hours a week), in timetable order; the small
# and medium schools teach some of them, the large one all.

# SD: the class teacher teaches all but religion, sport and English
_SD_SUBJECTS = (
    (100014000, 4), (200040000, 5), (300110000, 7), (401000000, 5), (401300000, 5),
    (500020000, 4), (600010000, 4), (300210000, 2), (800010000, 2),
)
SD = Level(
    nama="SD", bentuk_pendidikan_id=5, usia=(5, 15), tingkat=(1, 2, 3, 4, 5, 6),
    kurikulum_id=201,
    sizes=_sizes(
        _SD_SUBJECTS,
        small=(100014000, 200040000, 300110000, 401000000, 500020000, 600010000),
        medium=(100014000, 200040000, 300110000, 401000000, 401300000, 500020000,
                600010000, 800010000),
        rombels=((1, 12), (2, 28), (4, 28)), staff=((11,), (11, 40), (11, 11, 40, 42))),
    expired_mapel=100100000,  # Tematik, retired June 2023
    rombel_nama="{kelas}{huruf}",
    rooms=tuple(r for r in _ROOMS_COMMON if r[0] not in ("Ruang Tata Usaha", "Ruang BK")),
    sekolah_asal=("TK Negeri {n} {kota}", "TK Aisyiyah {n} {kota}", "RA Al Falah {n} {kota}",
                  "TK Islam Terpadu {n} {kota}", "TK Kristen {n} {kota}"),
    pindahan=(("TK", "SD"), ("RA ", "MI ")),
    badan=((108, 152), (17, 45), (48, 54)),
    wakasek=(),
    guru_kelas=frozenset((200040000, 300110000, 401000000, 401300000, 500020000, 800010000)),
)

_SMP_SUBJECTS = (
    (100014200, 3), (200040200, 3), (300110200, 6), (401000200, 5), (401200200, 5),
    (401300200, 4), (300210200, 4), (500000200, 3), (600010200, 3), (700010200, 3),
    (700020200, 2), (800020200, 2),
)
SMP = Level(
    nama="SMP", bentuk_pendidikan_id=6, usia=(11, 18), tingkat=(7, 8, 9), kurikulum_id=202,
    sizes=_sizes(
        _SMP_SUBJECTS,
        small=(100014200, 300110200, 401000200, 401200200, 300210200, 600010200),
        medium=(100014200, 200040200, 300110200, 401000200, 401200200, 401300200,
                300210200, 500000200, 600010200, 700010200),
        rombels=((1, 20), (4, 32), (11, 32)), staff=_STAFF),
    expired_mapel=700030200,  # Teknologi Informasi dan Komunikasi, retired 2014
    rombel_nama="{romawi} {huruf}",
    rooms=(("Laboratorium IPA", 2, 36), ("Laboratorium Komputer", 6, 36), *_ROOMS_COMMON),
    sekolah_asal=("SD Negeri {n} {kota}", "SD Muhammadiyah {n} {kota}",
                  "MI Negeri {n} {kota}", "SD Islam Terpadu {n} {kota}",
                  "SD Kristen {n} {kota}"),
    pindahan=(("SD", "SMP"), ("MI ", "MTs ")),
    badan=((130, 175), (28, 70), (50, 57)),
)

_SMA_SUBJECTS = (
    (100014300, 3), (200040300, 2), (300110300, 4), (401000300, 4), (300210300, 3),
    (500100300, 2), (401210300, 3), (401220300, 3), (401230300, 3), (401310300, 2),
    (401320300, 2), (401330300, 2), (500010300, 2), (600010300, 3), (700010300, 2),
)
_SMA_SMALL = (100014300, 300110300, 401000300, 300210300, 600010300, 700010300)
SMA = Level(
    nama="SMA", bentuk_pendidikan_id=13, usia=(14, 21), tingkat=(10, 11, 12),
    kurikulum_id=203,
    sizes=_sizes(
        _SMA_SUBJECTS, small=_SMA_SMALL,
        medium=_SMA_SMALL[:5] + (200040300, 500100300, 401210300, 401230300, 500010300),
        rombels=((1, 20), (4, 33), (15, 33)), staff=_STAFF),
    expired_mapel=700030300,  # Teknologi Informasi dan Komunikasi, retired 2014
    rombel_nama="{romawi}-{nomor}",
    rooms=(("Laboratorium Fisika", 3, 36), ("Laboratorium Kimia", 4, 36),
           ("Laboratorium Biologi", 5, 36), ("Laboratorium Komputer", 6, 36),
           *_ROOMS_COMMON),
    sekolah_asal=_SMP_ASAL,
    pindahan=(("SMP", "SMA"), ("MTs", "MA")),
    badan=((145, 182), (38, 85), (51, 58)),
)

_SMK_SUBJECTS = (
    (100014300, 3), (200040300, 2), (300110300, 4), (401000300, 4), (300210300, 4),
    (500100300, 2), (600010300, 2), (500000300, 2), (700010300, 4), (DASAR_DASAR, 12),
    (820030400, 5), (800020300, 2),
)
SMK = Level(
    nama="SMK", bentuk_pendidikan_id=15, usia=(14, 21), tingkat=(10, 11, 12),
    kurikulum_id=204,  # each jurusan has its own; this is TJKT's
    sizes=_sizes(
        _SMK_SUBJECTS,
        small=(100014300, 300110300, 401000300, 300210300, 600010300, DASAR_DASAR),
        medium=(100014300, 200040300, 300110300, 401000300, 300210300, 500100300,
                600010300, 700010300, DASAR_DASAR, 820030400),
        rombels=((2, 12), (4, 33), (15, 33)), staff=_STAFF),
    expired_mapel=820040400,  # Simulasi dan Komunikasi Digital, retired 2022
    rombel_nama="{romawi} {jurusan} {nomor}",
    rooms=(("Laboratorium Komputer", 6, 36), ("Laboratorium Jaringan Komputer", 6, 36),
           ("Laboratorium Akuntansi", 6, 36), *_ROOMS_COMMON),
    sekolah_asal=_SMP_ASAL,
    pindahan=(("SMP", "SMK"), ("MTs", "SMK")),
    badan=((145, 182), (38, 85), (51, 58)),
    jurusan=(Jurusan("TJKT", 204, 820010400), Jurusan("AKL", 205, 820020400)),
)

LEVELS = {level.nama: level for level in (SD, SMP, SMA, SMK)}
SIZES = SMA.sizes  # every level has these sizes; SMA is the default level

ERROR_KINDS = (
    "nik_15_digits", "nisn_missing", "nipd_duplicate", "two_regular_rombels",
    "nilai_over_100", "teacher_double_booked", "expired_mata_pelajaran", "student_too_old",
    "rombel_without_wali", "pembelajaran_without_teacher", "illegal_name_characters",
    "ptk_too_young", "second_principal", "nilai_not_member", "duplicate_rombel_name",
)

ORDER = (
    "sekolah_longitudinal", "tanah", "bangunan", "ruang", "alat", "ptk", "ptk_terdaftar",
    "tugas_tambahan", "peserta_didik", "registrasi_peserta_didik",
    "peserta_didik_longitudinal", "rombongan_belajar", "anggota_rombel", "pembelajaran",
    "jadwal", "nilai", "pengguna",
)


class TooManyErrors(ValueError):
    """The school has no row left to break in the asked way."""

    def __init__(self, kind: str, errors: int) -> None:
        super().__init__(kind, errors)
        self.kind, self.errors = kind, errors

    def __str__(self) -> str:
        return (f"cannot place {self.errors} errors: no row left for kind {self.kind!r}; "
                "use a larger size or scale")


# -- people -------------------------------------------------------------------------------

_MALE = (
    "Ahmad", "Budi", "Rizky", "Fajar", "Dimas", "Arif", "Bayu", "Dedi", "Eko", "Fauzan",
    "Galih", "Hendra", "Ilham", "Joko", "Kevin", "Lukman", "Naufal", "Rafi", "Reza", "Satria",
    "Taufik", "Wahyu", "Yoga", "Zaki", "Aditya", "Agus", "Andi", "Bagus", "Dani", "Farhan",
    "Gilang", "Hafiz", "Irfan", "Rendi", "Rian", "Surya", "Teguh", "Yusuf", "Alif", "Daffa",
    "Haikal", "Raka", "Rizal", "Fikri", "Iqbal", "Angga", "Nanda", "Rangga", "Bima", "Arya",
)
_FEMALE = (
    "Siti", "Dewi", "Putri", "Ayu", "Anisa", "Aulia", "Citra", "Dinda", "Eka", "Fitri",
    "Indah", "Intan", "Kartika", "Maya", "Nabila", "Nadia", "Nurul", "Rina", "Salsabila",
    "Sari", "Tiara", "Wulan", "Yuni", "Zahra", "Amelia", "Bunga", "Cahya", "Dian", "Elisa",
    "Fara", "Gita", "Hana", "Ika", "Kirana", "Laila", "Mega", "Nisa", "Rahma", "Ratna",
    "Shinta", "Vina", "Yulia", "Alya", "Keisha", "Naura", "Syifa", "Annisa", "Aisyah", "Zaskia",
)
_MALE_LAST = (
    "Pratama", "Saputra", "Ramadhan", "Hidayat", "Nugroho", "Setiawan", "Santoso", "Wibowo",
    "Kurniawan", "Firmansyah", "Maulana", "Prasetyo", "Hakim", "Permana", "Gunawan",
    "Syahputra", "Hermawan", "Purnomo", "Rahman", "Fadillah", "Akbar", "Hidayatullah",
)
_FEMALE_LAST = (
    "Lestari", "Rahmawati", "Permatasari", "Anggraini", "Wulandari", "Saputri", "Puspitasari",
    "Maharani", "Safitri", "Handayani", "Kurniasari", "Oktaviani", "Pertiwi", "Nurhaliza",
    "Amalia", "Febriani", "Ramadhani", "Rahmadani", "Utami", "Purnamasari",
)
_EITHER_LAST = ("Wijaya", "Kusuma", "Siregar", "Nasution", "Lubis", "Harahap", "Simanjuntak",
                "Sinaga", "Tanjung", "Lim", "Halim", "Wirawan")
_FATHER = ("Suparman", "Sutrisno", "Bambang", "Slamet", "Joko", "Agus", "Asep", "Dadang",
           "Ujang", "Heri", "Rudi", "Hadi", "Yusuf", "Darmawan", "Mulyadi", "Sugeng",
           "Wahyudi", "Hasan", "Iwan", "Supriyadi", "Ahmad", "Budi", "Dedi", "Hendra")
_MOTHER = ("Sri", "Siti", "Tuti", "Endang", "Yanti", "Wati", "Nining", "Ani", "Rini", "Lilis",
           "Euis", "Dedeh", "Suryani", "Sulastri", "Suparmi", "Nurhayati", "Ratna", "Yuliani",
           "Kartini", "Fatimah", "Aminah", "Rohimah", "Dewi", "Sumarni")
_JALAN = ("Jl. Merdeka", "Jl. Sudirman", "Jl. Diponegoro", "Jl. Ahmad Yani", "Jl. Pahlawan",
          "Jl. Gatot Subroto", "Jl. Melati", "Jl. Kenanga", "Jl. Mawar", "Jl. Cempaka",
          "Gg. Masjid", "Jl. Pemuda", "Jl. Kartini", "Jl. Veteran", "Jl. Flamboyan",
          "Jl. Anggrek", "Jl. Kaliurang", "Jl. Imam Bonjol", "Jl. Hasanuddin", "Gg. Haji Mansur")
# agama_id with cumulative weight (Islam 87 %, Kristen 7 %, Katholik 3 %, ...)
_AGAMA = ((1, 0.870), (2, 0.940), (3, 0.970), (4, 0.987), (5, 0.997), (6, 1.0))


@dataclass(frozen=True)
class Region:
    """A kabupaten/kota of Referensi with what its people's data looks like."""

    kode: str  # Dapodik kode_wilayah (level 2)
    bps: str  # the region code that opens a NIK
    kota: str
    kode_pos: str
    tempat: tuple[str, ...]
    kelurahan: tuple[str, ...]
    lintang: float = 0.0
    bujur: float = 0.0


REGIONS = (
    Region("026000", "3273", "Bandung", "40",
           ("Bandung", "Cimahi", "Garut", "Sumedang", "Tasikmalaya", "Cianjur", "Subang"),
           ("Sukajadi", "Sekeloa", "Dago", "Lebakgede", "Cigadung", "Turangga", "Cijagra",
            "Lingkar Selatan", "Burangrang", "Sukaluyu"),
           -6.9147, 107.6098),
    Region("036300", "3374", "Semarang", "50",
           ("Semarang", "Kendal", "Demak", "Salatiga", "Ungaran", "Kudus", "Pati"),
           ("Sekayu", "Pekunden", "Jatingaleh", "Tembalang", "Sumurboto", "Banyumanik",
            "Candi", "Jomblang"),
           -6.9932, 110.4203),
    Region("046000", "3471", "Yogyakarta", "55",
           ("Yogyakarta", "Sleman", "Bantul", "Klaten", "Magelang", "Wonosari", "Wates"),
           ("Baciro", "Demangan", "Klitren", "Terban", "Cokrodiningratan", "Gowongan",
            "Warungboto", "Prenggan"),
           -7.7956, 110.3695),
    Region("056000", "3578", "Surabaya", "60",
           ("Surabaya", "Sidoarjo", "Gresik", "Mojokerto", "Lamongan", "Bangkalan", "Malang"),
           ("Embong Kaliasin", "Ketabang", "Airlangga", "Gubeng", "Darmo", "Jagir",
            "Kalirungkut", "Penjaringan Sari"),
           -7.2575, 112.7521),
    Region("076000", "1275", "Medan", "20",
           ("Medan", "Binjai", "Pematangsiantar", "Tebing Tinggi", "Deli Serdang", "Tarutung"),
           ("Babura", "Darat", "Petisah Tengah", "Sei Sikambing D", "Kwala Bekala",
            "Gedung Johor", "Titi Kuning"),
           3.5952, 98.6722),
)


def school_id(npsn: str) -> str:
    """The school's sekolah_id, derived from its NPSN as every replica derives it."""
    return stable_row_id("sekolah", npsn)


def level_of(bentuk: str) -> Level:
    """The level called ``bentuk`` (SD, SMP, SMA, SMK; any case); ValueError if none is."""
    level = LEVELS.get(bentuk.upper())
    if level is None:
        raise ValueError(f"bentuk must be one of {', '.join(LEVELS)}, not {bentuk!r}")
    return level


def region_of(npsn: str) -> Region:
    return REGIONS[zlib.crc32(npsn.encode()) % len(REGIONS)]


def sekolah_row(npsn: str, bentuk: str = "SMA") -> Row:
    """The centre's sekolah row for the generated school (not part of ``generate``)."""
    level = level_of(bentuk)
    region = region_of(npsn)
    kecamatan = _kecamatan(referensi_rows(), region)
    n = zlib.crc32(f"nomor/{npsn}".encode()) % 20 + 1
    return {
        "sekolah_id": school_id(npsn), "nama": f"{level.nama} Negeri {n} {region.kota}",
        "npsn": npsn, "bentuk_pendidikan_id": level.bentuk_pendidikan_id, "status_sekolah": 1,
        "alamat_jalan": f"{_JALAN[n % len(_JALAN)]} No. {n * 7}", "rt": 1 + n % 9,
        "rw": 1 + n % 7, "desa_kelurahan": region.kelurahan[n % len(region.kelurahan)],
        "kode_wilayah": kecamatan[n % len(kecamatan)], "kode_pos": f"{region.kode_pos}{n:03d}",
        "lintang": round(region.lintang + n / 1000, 6), "bujur": round(region.bujur - n / 1000, 6),
        "sk_pendirian_sekolah": f"0{n}/O/1985", "tanggal_sk_pendirian": "1985-07-01",
        "soft_delete": 0,
    }


def _kecamatan(refs: dict[str, list[dict]], region: Region) -> list[str]:
    return [str(r["kode_wilayah"]) for r in refs["ref.mst_wilayah"]
            if r["mst_kode_wilayah"] == region.kode and r["expired_date"] is None]


# -- identifiers --------------------------------------------------------------------------

_V4_CLEAR = ((1 << 128) - 1) ^ ((0xF << 76) | (0x3 << 62))
_V4_SET = (4 << 76) | (2 << 62)


def _uuid4(bits: int) -> str:
    """A version-4 UUID string from 128 random bits (uuid.UUID's format, without its cost)."""
    h = f"{(bits & _V4_CLEAR) | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _age_range(age: int, on: dt.date = AGE_DAY) -> tuple[int, int]:
    """First and last ordinal of the birth dates giving ``age`` whole years ``on``."""
    first = dt.date(on.year - age - 1, on.month, on.day) + dt.timedelta(days=1)
    return first.toordinal(), dt.date(on.year - age, on.month, on.day).toordinal()


def _birth(rng: random.Random, age: int) -> dt.date:
    return dt.date.fromordinal(rng.randint(*_age_range(age)))


def age_on(born: dt.date, on: dt.date = AGE_DAY) -> int:
    """Whole years of age ``on`` a day (2 July of the semester's year by default)."""
    return on.year - born.year - ((born.month, born.day) > (on.month, on.day))


# Unique numbers that look random: a counter through x -> (A * x + B) mod M, a bijection
# when A is coprime with M (NISN: M = 10**7; NUPTK: M = 9 * 10**15).
_NISN_A = 7_654_321
_NUPTK_A = 6_364_136_223_846_793


def _nik(region6: str, born: dt.date, female: bool, serial: int) -> str:
    return f"{region6}{born.day + 40 * female:02d}{born.month:02d}{born.year % 100:02d}{serial:04d}"


# -- the plan of one copy of the school -----------------------------------------------------

@dataclass(frozen=True)
class Role:
    jenis_ptk_id: int
    subjects: tuple[int, ...] = ()  # indexes into the plan's subjects
    rombels: tuple[int, ...] = ()


@dataclass
class Plan:
    """The shape of one copy of the school; every copy has the same shape."""

    level: Level
    preset: Preset
    rombels: int
    students: int
    subjects: tuple[tuple[int, int], ...]
    block: tuple[int, ...]  # first timetable position of each subject in a rombel's week
    hours: int  # a rombel's hours a week
    slots: int  # DAYS * jam_per_hari
    step: int  # rombel r's week starts at position (step * r) % slots
    roles: tuple[Role, ...]  # the PTK of a copy; copy 0 adds the principal at the end
    teacher_of: dict[tuple[int, int], int] = field(default_factory=dict)  # (rombel, subj)
    wali: tuple[int, ...] = ()
    rooms: tuple[tuple[str, int, int], ...] = ()  # (nama, jenis_prasarana_id, kapasitas)

    def tingkat(self, r: int) -> int:
        return self.level.tingkat[r // self.preset.rombels_per_tingkat]

    def rombel_of(self, student: int) -> int:
        return student // self.preset.students_per_rombel

    def angkatan(self, student: int) -> int:
        """The year a student's cohort entered the school's first grade."""
        return 2023 - (self.tingkat(self.rombel_of(student)) - self.level.tingkat[0])

    def jurusan(self, r: int) -> Jurusan | None:
        return _jurusan(self.level, self.preset, r)

    def mapel(self, r: int, subject: int) -> int:
        """The mata_pelajaran_id of a subject in rombel r (an SMK's differs by jurusan)."""
        mapel = self.subjects[subject][0]
        jurusan = self.jurusan(r)
        return jurusan.dasar_dasar if mapel == DASAR_DASAR and jurusan else mapel

    def all_mapel(self) -> set[int]:
        return {self.mapel(r, s) for r in range(self.rombels) for s in range(len(self.subjects))}

    def position(self, r: int, subject: int, hour: int) -> int:
        return (self.step * r + self.block[subject] + hour) % self.slots

    def slot(self, position: int) -> tuple[int, int]:
        """(hari, jam_ke) of a timetable position: consecutive positions change day."""
        return position % DAYS + 1, position // DAYS + 1

    def busy(self, teacher: int) -> dict[int, int]:
        """Timetable positions of a teacher -> the rombel taught there."""
        role = self.roles[teacher]
        assert role.subjects
        return {self.position(r, s, h): r for r in role.rombels for s in role.subjects
                for h in range(self.subjects[s][1])}


def _jurusan(level: Level, preset: Preset, r: int) -> Jurusan | None:
    """An SMK's rombels of each tingkat are split among its jurusan, in order."""
    if not level.jurusan:
        return None
    per = preset.rombels_per_tingkat
    return level.jurusan[r % per * len(level.jurusan) // per]


ROOMS_PER_BANGUNAN = 8
TEACHER_LOAD = 24  # hours a week a teacher is given, about


def make_plan(level: Level, size: str) -> Plan:
    """Lay out one copy: rombels, teachers and their rombels, a clash-free timetable.

    A rombel's week is its subjects' hours laid end to end from position
    ``step * r``; position p is day ``p % 6``, hour ``p // 6``. A subject
    teacher takes one subject in a few rombels (consecutive ones, or an SMK
    jurusan's), so the teacher's hours never clash when the rombels' starting
    positions are at least the subject's hours apart (mod the week):
    ``make_plan`` picks a step for which they are and checks the result. An
    SD's class teacher teaches most subjects of a single rombel.
    """
    preset = level.sizes[size]
    n_rombel = len(level.tingkat) * preset.rombels_per_tingkat
    subjects = preset.subjects
    slots = DAYS * preset.jam_per_hari
    block, start = [], 0
    for _, h in subjects:
        block.append(start)
        start += h
    hours = start
    assert hours <= slots, "the week is too short for the subjects"
    roles: list[Role] = []
    teacher_of: dict[tuple[int, int], int] = {}
    groups = []  # (rombels, hours) of each subject teacher
    kelas = tuple(s for s, (m, _) in enumerate(subjects) if m in level.guru_kelas)
    for s, (mapel, h) in enumerate(subjects):
        if s in kelas:
            continue
        runs = [list(range(n_rombel))]
        if mapel == DASAR_DASAR:  # a jurusan's own subject is taught by its own teachers
            runs = [[r for r in range(n_rombel) if _jurusan(level, preset, r) == j]
                    for j in level.jurusan]
        for run in filter(None, runs):
            per_teacher = max(1, min(len(run), round(TEACHER_LOAD / h)))
            n_teachers = -(-len(run) // per_teacher)
            base, extra = divmod(len(run), n_teachers)
            i = 0
            for t in range(n_teachers):
                k = base + (t < extra)
                group = tuple(run[i:i + k])
                for g in group:
                    teacher_of[(g, s)] = len(roles)
                roles.append(Role(GURU_MAPEL, (s,), group))
                groups.append((group, h))
                i += k
    if kelas:
        for r in range(n_rombel):
            for s in kelas:
                teacher_of[(r, s)] = len(roles)
            roles.append(Role(GURU_KELAS, kelas, (r,)))
    roles += [Role(j) for j in preset.staff]

    def clash_free(step: int) -> bool:
        for group, h in groups:
            for a in group:
                for b in group:
                    d = step * (b - a) % slots
                    if b > a and min(d, slots - d) < h:
                        return False
        return True

    step = next(s for s in range(1, slots) if clash_free(s))
    plan = Plan(level, preset, n_rombel, n_rombel * preset.students_per_rombel, subjects,
                tuple(block), hours, slots, step, tuple(roles), teacher_of)
    # a homeroom teacher per rombel, each one who teaches the rombel, none twice: in an SD
    # its class teacher
    wali: list[int] = []
    for r in range(n_rombel):
        mine = [teacher_of[(r, s)] for s in range(len(subjects))]
        free = [t for t in mine if roles[t].jenis_ptk_id == GURU_KELAS] or [
            t for t in mine if t not in wali] or [
            t for t in range(len(roles)) if roles[t].subjects and t not in wali]
        wali.append(free[r % len(free)])
    plan.wali = tuple(wali)
    plan.rooms = tuple([(f"Ruang Kelas {r + 1}", 1, 36) for r in range(n_rombel)]
                       + list(level.rooms))
    _check_timetable(plan)
    return plan


def _check_timetable(plan: Plan) -> None:
    for t, role in enumerate(plan.roles):
        if role.subjects:
            h = sum(plan.subjects[s][1] for s in role.subjects)
            assert len(plan.busy(t)) == h * len(role.rombels), f"teacher {t} double-booked"
    for r in range(plan.rombels):
        positions = {plan.position(r, s, h) for s, (_, n) in enumerate(plan.subjects)
                     for h in range(n)}
        assert len(positions) == plan.hours, f"rombel {r} double-booked"


# -- generation ---------------------------------------------------------------------------

Mutation = Callable[[Row], None]


@dataclass
class _Ctx:
    seed: int
    npsn: str
    scale: int
    plan: Plan
    sekolah_id: str
    region: Region
    kecamatan: list[str]
    mapel: dict[int, str]
    mutations: dict[tuple[str, int], dict[int, Mutation]] = field(default_factory=dict)
    additions: dict[str, list[Row]] = field(default_factory=dict)
    nik_serial: dict[str, int] = field(default_factory=dict)
    nip_serial: dict[str, int] = field(default_factory=dict)
    nisn_count: dict[int, int] = field(default_factory=dict)
    nuptk_count: int = 0
    nuptk_b: int = 0
    nisn_b: int = 0

    def rng(self, entity: str, copy: int) -> random.Random:
        return random.Random(f"{self.seed}/{entity}/{copy}")

    def ids(self, entity: str, copy: int, n: int) -> list[str]:
        """The ids of an entity's rows in one copy: the same list whenever asked."""
        bits = random.Random(f"{self.seed}/{entity}/{copy}/id").getrandbits
        return [_uuid4(bits(128)) for _ in range(n)]

    def n_ptk(self, copy: int) -> int:
        return len(self.plan.roles) + (copy == 0)

    def principal(self) -> int:
        """The principal: the last PTK of copy 0."""
        return len(self.plan.roles)

    def profiles(self, copy: int) -> list[tuple[str, bool, int]]:
        """(nama, female, status_kepegawaian_id) of each PTK of a copy."""
        rng = self.rng("ptk-profile", copy)
        out = []
        for t in range(self.n_ptk(copy)):
            female = rng.random() < 0.55
            teacher = t == len(self.plan.roles) or bool(self.plan.roles[t].subjects)
            x = rng.random()
            if t == len(self.plan.roles):
                status = PNS
            elif teacher:
                status = PNS if x < 0.45 else PPPK if x < 0.65 else 5 if x < 0.75 else 8
            else:
                status = PNS if x < 0.2 else 6 if x < 0.4 else 9
            out.append((_adult_name(rng, female), female, status))
        return out

    def nik(self, born: dt.date, female: bool, region6: str) -> str:
        prefix = _nik(region6, born, female, 0)[:12]
        serial = self.nik_serial.get(prefix, 0) + 1
        self.nik_serial[prefix] = serial
        return prefix + f"{serial:04d}"

    def region6(self, rng: random.Random) -> tuple[str, str]:
        """A kecamatan of the school's region: its kode_wilayah and its NIK region code."""
        i = rng.randrange(len(self.kecamatan))
        return self.kecamatan[i], f"{self.region.bps}{i + 1:02d}"

    def nipd(self, copy: int, student: int) -> str:
        angkatan = self.plan.angkatan(student)
        return f"{angkatan % 100:02d}{(angkatan + 1) % 100:02d}" \
               f"{copy * self.plan.students + student + 1:05d}"

    def rombel_nama(self, copy: int, r: int) -> str:
        """Numbered on from the rombels of the same tingkat (and jurusan) of earlier copies."""
        plan = self.plan
        jurusan = plan.jurusan(r)
        first = r - r % plan.preset.rombels_per_tingkat
        mates = [x for x in range(first, first + plan.preset.rombels_per_tingkat)
                 if plan.jurusan(x) == jurusan]
        nomor = copy * len(mates) + mates.index(r) + 1
        tingkat = plan.tingkat(r)
        return plan.level.rombel_nama.format(
            kelas=tingkat, romawi=ROMAN[tingkat], huruf=_huruf(nomor), nomor=nomor,
            jurusan=jurusan.singkatan if jurusan else "")

    def mutate(self, entity: str, copy: int, index: int, fn: Mutation) -> None:
        rows = self.mutations.setdefault((entity, copy), {})
        assert index not in rows, "one error per row"
        rows[index] = fn


def _huruf(n: int) -> str:
    """The n-th class letter (n >= 1): A to Z, then AA, AB, ..."""
    letters = ""
    while n:
        n, k = divmod(n - 1, 26)
        letters = chr(ord("A") + k) + letters
    return letters


def _adult_name(rng: random.Random, female: bool) -> str:
    first = rng.choice(_FEMALE if female else _MALE)
    x = rng.random()
    if x < 0.12:
        return rng.choice(_MOTHER if female else _FATHER)
    last = rng.choice(_EITHER_LAST if x < 0.3 else _FEMALE_LAST if female else _MALE_LAST)
    return f"{first} {last}"


def _student_name(rng: random.Random, female: bool) -> str:
    x = rng.random()
    if female:
        first = rng.choice(_FEMALE)
        if x < 0.35:
            return f"{first} {rng.choice(_FEMALE)} {rng.choice(_FEMALE_LAST)}"
        if x < 0.5:
            return f"{first} {rng.choice(_EITHER_LAST)}"
        return f"{first} {rng.choice(_FEMALE_LAST)}"
    first = rng.choice(_MALE)
    if x < 0.15:
        return f"Muhammad {first} {rng.choice(_MALE_LAST)}"
    if x < 0.45:
        return f"{first} {rng.choice(_MALE)} {rng.choice(_MALE_LAST)}"
    if x < 0.6:
        return f"{first} {rng.choice(_EITHER_LAST)}"
    return f"{first} {rng.choice(_MALE_LAST)}"


def _date(rng: random.Random, first: dt.date, last: dt.date) -> str:
    return dt.date.fromordinal(rng.randint(first.toordinal(), last.toordinal())).isoformat()


def _phone(rng: random.Random) -> str:
    return f"08{rng.choice((11, 12, 13, 21, 22, 52, 56, 57, 77, 78, 81, 95))}" \
           f"{rng.randrange(10**7, 10**8)}"


def _predikat(n: int) -> str:
    return "A" if n >= 90 else "B" if n >= 80 else "C" if n >= 70 else "D"


_DESKRIPSI = {
    "A": "Sangat baik dalam memahami dan menerapkan materi {}.",
    "B": "Baik dalam memahami materi {}; perlu memperdalam beberapa kompetensi.",
    "C": "Cukup dalam memahami materi {}; perlu bimbingan pada sebagian kompetensi.",
    "D": "Perlu bimbingan dalam memahami materi {}.",
}


def _sekolah_longitudinal(ctx: _Ctx, c: int) -> Iterator[Row]:
    if c:
        return
    (sid,) = ctx.ids("sekolah_longitudinal", 0, 1)
    yield {"sekolah_longitudinal_id": sid, "sekolah_id": ctx.sekolah_id,
           "semester_id": SEMESTER_ID, "daya_listrik": 16500 * ctx.scale, "akses_internet": 1,
           "partisipasi_bos": 1, "sertifikasi_iso": 0, "soft_delete": 0}


def _n_bangunan(plan: Plan) -> int:
    return -(-len(plan.rooms) // ROOMS_PER_BANGUNAN)


def _tanah(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("tanah", c)
    (tid,) = ctx.ids("tanah", c, 1)
    p, lebar = rng.randrange(90, 160), rng.randrange(60, 110)
    yield {"tanah_id": tid, "sekolah_id": ctx.sekolah_id,
           "nama": "Tanah Sekolah" if c == 0 else f"Tanah Sekolah {c + 1}",
           "no_sertifikat_tanah": f"10.{ctx.region.bps[:2]}.{ctx.region.bps[2:]}."
                                  f"{rng.randrange(1, 40):02d}.1.{rng.randrange(100, 9999):05d}",
           "panjang": p, "lebar": lebar, "luas": p * lebar, "kepemilikan_sarpras_id": 1,
           "soft_delete": 0}


def _bangunan(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("bangunan", c)
    (tid,) = ctx.ids("tanah", c, 1)
    n = _n_bangunan(ctx.plan)
    for i, bid in enumerate(ctx.ids("bangunan", c, n)):
        p, lebar = rng.choice((36, 40, 45, 48)), rng.choice((9, 10, 12))
        yield {"bangunan_id": bid, "sekolah_id": ctx.sekolah_id, "tanah_id": tid,
               "nama": f"Gedung {c * n + i + 1}", "panjang": p, "lebar": lebar,
               "luas_tapak": p * lebar, "jumlah_lantai": 2,
               "tahun_dibangun": rng.randrange(1985, 2021), "kepemilikan_sarpras_id": 1,
               "kerusakan_persen": rng.choice((0, 0, 5, 10, 15)), "soft_delete": 0}


def _ruang(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("ruang", c)
    plan = ctx.plan
    bangunan = ctx.ids("bangunan", c, _n_bangunan(plan))
    for i, rid in enumerate(ctx.ids("ruang", c, len(plan.rooms))):
        nama, jenis, kapasitas = plan.rooms[i]
        if i < plan.rombels:
            nama = f"Ruang Kelas {c * plan.rombels + i + 1}"
        elif c:
            nama = f"{nama} {c + 1}"
        row: Row = {"id_ruang": rid, "sekolah_id": ctx.sekolah_id,
                    "bangunan_id": bangunan[i // ROOMS_PER_BANGUNAN],
                    "kode_ruang": f"R{c * len(plan.rooms) + i + 1:04d}", "nama": nama,
                    "jenis_prasarana_id": jenis, "lantai": 1 + i % ROOMS_PER_BANGUNAN // 4,
                    "panjang": 9 if jenis == 1 else rng.choice((3, 6, 9, 12)), "lebar": 8,
                    "kerusakan_persen": rng.choice((0, 0, 0, 5, 10, 20)), "soft_delete": 0}
        if kapasitas:
            row["kapasitas"] = kapasitas
        yield row


_ALAT_KELAS = (("Meja Siswa", 1, 36), ("Kursi Siswa", 2, 36), ("Meja Guru", 3, 1),
               ("Kursi Guru", 4, 1), ("Papan Tulis", 5, 1), ("Lemari", 6, 1))
_ALAT_LAIN = (("Lemari", 6, 2), ("Komputer", 21, 4))


def _alat_layout(plan: Plan) -> list[tuple[int, tuple[str, int, int]]]:
    return [(i, a) for i in range(len(plan.rooms))
            for a in (_ALAT_KELAS if i < plan.rombels else _ALAT_LAIN)]


def _alat(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("alat", c)
    layout = _alat_layout(ctx.plan)
    ruang = ctx.ids("ruang", c, len(ctx.plan.rooms))
    for aid, (room, (nama, jenis, jumlah)) in zip(ctx.ids("alat", c, len(layout)), layout,
                                                  strict=True):
        yield {"alat_id": aid, "sekolah_id": ctx.sekolah_id, "id_ruang": ruang[room],
               "nama": nama, "jenis_sarana_id": jenis, "jumlah": jumlah,
               "kepemilikan_sarpras_id": 1, "kerusakan_persen": rng.choice((0, 0, 5, 10)),
               "soft_delete": 0}


def _ptk_age(rng: random.Random, jenis: int, principal: bool) -> int:
    if principal:
        return rng.randint(45, 56)
    return rng.randint(24, 58) if jenis in TEACHING else rng.randint(22, 55)


def _ptk(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("ptk", c)
    roles = ctx.plan.roles
    muts = ctx.mutations.get(("ptk", c), {})
    for t, (pid, (nama, female, status)) in enumerate(
            zip(ctx.ids("ptk", c, ctx.n_ptk(c)), ctx.profiles(c), strict=True)):
        principal = t == len(roles)
        jenis = KEPALA_SEKOLAH_PTK if principal else roles[t].jenis_ptk_id
        born = _birth(rng, _ptk_age(rng, jenis, principal))
        _, region6 = ctx.region6(rng)
        row: Row = {"ptk_id": pid, "nama": nama, "nik": ctx.nik(born, female, region6)}
        if jenis in TEACHING:
            ctx.nuptk_count += 1
            row["nuptk"] = str(10**15 + (_NUPTK_A * ctx.nuptk_count + ctx.nuptk_b) % (9 * 10**15))
        if status in NIP_STATUS:
            tmt = born.year + rng.randint(24, max(24, min(35, 2022 - born.year)))
            prefix = f"{born:%Y%m%d}{tmt:04d}{rng.randint(1, 12):02d}{2 if female else 1}"
            serial = ctx.nip_serial.get(prefix, 0) + 1
            ctx.nip_serial[prefix] = serial
            row["nip"] = f"{prefix}{serial:03d}"
        row |= {"jenis_kelamin": "P" if female else "L",
                "tempat_lahir": rng.choice(ctx.region.tempat),
                "tanggal_lahir": born.isoformat(), "agama_id": _agama(rng),
                "status_kepegawaian_id": status, "jenis_ptk_id": jenis}
        if status == PNS:
            row["pangkat_golongan_id"] = rng.randint(9, 14)  # III/a .. IV/b
        row |= {"nama_ibu_kandung": rng.choice(_MOTHER) + " " + rng.choice(_FEMALE_LAST),
                "email": f"{nama.split()[0].lower()}.{c * 1000 + t + 1}"
                         f"@guru.{ctx.plan.level.nama.lower()}.belajar.id",
                "no_hp": _phone(rng), "soft_delete": 0}
        if t in muts:
            muts[t](row)
        yield row


def _agama(rng: random.Random) -> int:
    x = rng.random()
    return next(a for a, w in _AGAMA if x < w)


def _ptk_terdaftar(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("ptk_terdaftar", c)
    roles = ctx.plan.roles
    ptk = ctx.ids("ptk", c, ctx.n_ptk(c))
    for t, tid in enumerate(ctx.ids("ptk_terdaftar", c, len(ptk))):
        jenis = KEPALA_SEKOLAH_PTK if t == len(roles) else roles[t].jenis_ptk_id
        tanggal = _date(rng, dt.date(2008, 1, 1), dt.date(2023, 6, 30))
        yield {"ptk_terdaftar_id": tid, "ptk_id": ptk[t], "sekolah_id": ctx.sekolah_id,
               "tahun_ajaran_id": TAHUN_AJARAN_ID, "jenis_ptk_id": jenis,
               "nomor_surat_tugas": f"800/{rng.randrange(100, 9999)}/Disdik/{tanggal[:4]}",
               "tanggal_surat_tugas": tanggal, "tmt_tugas": tanggal, "ptk_induk": 1,
               "soft_delete": 0}


def _tugas_tambahan(ctx: _Ctx, c: int) -> Iterator[Row]:
    if c:
        return
    rng = ctx.rng("tugas_tambahan", 0)
    ptk = ctx.ids("ptk", 0, ctx.n_ptk(0))
    plan = ctx.plan
    teachers = [t for t, r in enumerate(plan.roles) if r.subjects]
    duties = [(ctx.principal(), KEPALA_SEKOLAH, 18)]
    duties += [(t, j, 12) for t, j in zip(teachers[:-1:2], plan.level.wakasek, strict=False)]
    # an SMK's program keahlian is led by a teacher of its dasar-dasar subject
    heads: dict[Jurusan | None, int] = {}
    for r in range(plan.rombels):
        for s, (mapel, _) in enumerate(plan.subjects):
            if mapel == DASAR_DASAR:
                heads.setdefault(plan.jurusan(r), plan.teacher_of[(r, s)])
    duties += [(t, KETUA_PROGRAM_KEAHLIAN, 12) for t in heads.values()]
    for (t, jabatan, jam), tid in zip(duties, ctx.ids("tugas_tambahan", 0, len(duties)),
                                      strict=True):
        tmt = _date(rng, dt.date(2019, 1, 1), dt.date(2023, 6, 30))
        yield {"ptk_tugas_tambahan_id": tid, "ptk_id": ptk[t], "sekolah_id": ctx.sekolah_id,
               "jabatan_ptk_id": jabatan,
               "nomor_sk": f"800/{rng.randrange(100, 9999)}/BKD/{tmt[:4]}",
               "tmt_tambahan": tmt, "jumlah_jam": jam, "soft_delete": 0}


def _student_age(rng: random.Random, tingkat: int) -> int:
    x = rng.random()
    return tingkat + (5 if x < 0.65 else 6 if x < 0.90 else 4 if x < 0.97 else 7)


def _peserta_didik(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("peserta_didik", c)
    plan = ctx.plan
    muts = ctx.mutations.get(("peserta_didik", c), {})
    for i, pid in enumerate(ctx.ids("peserta_didik", c, plan.students)):
        female = rng.random() < 0.51
        born = _birth(rng, _student_age(rng, plan.tingkat(plan.rombel_of(i))))
        kode_wilayah, region6 = ctx.region6(rng)
        n = ctx.nisn_count[born.year] = ctx.nisn_count.get(born.year, 0) + 1
        father_born = _birth(rng, rng.randint(38, 56))
        mother_born = _birth(rng, rng.randint(35, 50))
        kk = _date(rng, dt.date(2005, 1, 1), dt.date(2022, 12, 31))
        nama = _student_name(rng, female)
        mother = _adult_name(rng, True)
        while mother == nama:  # a mother named like her child is a finding (PD-006)
            mother = _adult_name(rng, True)
        row: Row = {
            "peserta_didik_id": pid, "nama": nama,
            "jenis_kelamin": "P" if female else "L",
            "nisn": f"{born.year % 1000:03d}{(_NISN_A * n + ctx.nisn_b) % 10**7:07d}",
            "nik": ctx.nik(born, female, region6),
            "no_kk": f"{region6}{kk[8:10]}{kk[5:7]}{kk[2:4]}{rng.randrange(1, 10**4):04d}",
            "tempat_lahir": rng.choice(ctx.region.tempat), "tanggal_lahir": born.isoformat(),
            "agama_id": _agama(rng), "kebutuhan_khusus_id": 0, "kewarganegaraan": "ID",
            "alamat_jalan": f"{rng.choice(_JALAN)} No. {rng.randint(1, 150)}",
            "rt": rng.randint(1, 12), "rw": rng.randint(1, 9),
            "desa_kelurahan": rng.choice(ctx.region.kelurahan), "kode_wilayah": kode_wilayah,
            "kode_pos": f"{ctx.region.kode_pos}{rng.randrange(111, 999)}",
            "nama_ibu_kandung": mother, "nama_ayah": _adult_name(rng, False),
            "nik_ayah": ctx.nik(father_born, False, region6),
            "nik_ibu": ctx.nik(mother_born, True, region6),
            "penerima_kip": int(rng.random() < 0.12), "layak_pip": int(rng.random() < 0.2),
            "nomor_telepon_seluler": _phone(rng), "soft_delete": 0,
        }
        if i in muts:
            muts[i](row)
        yield row


def _entry(ctx: _Ctx, student: int) -> dt.date:
    """The day a student's cohort started at the school."""
    first = dt.date(ctx.plan.angkatan(student), 7, 11)  # the school year opens on the Monday after
    return first + dt.timedelta(days=-first.weekday() % 7)


def _registrasi(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("registrasi_peserta_didik", c)
    plan = ctx.plan
    muts = ctx.mutations.get(("registrasi_peserta_didik", c), {})
    pd = ctx.ids("peserta_didik", c, plan.students)
    for i, rid in enumerate(ctx.ids("registrasi_peserta_didik", c, plan.students)):
        entry = _entry(ctx, i)
        pindahan = plan.tingkat(plan.rombel_of(i)) > plan.level.tingkat[0] \
            and rng.random() < 0.03
        masuk = _date(rng, entry, SEMESTER_START) if pindahan else entry.isoformat()
        asal = rng.choice(plan.level.sekolah_asal).format(n=rng.randint(1, 60),
                                                          kota=ctx.region.kota)
        if pindahan:  # from a school of the same level
            for old, new in plan.level.pindahan:
                asal = asal.replace(old, new)
        row: Row = {"registrasi_id": rid, "peserta_didik_id": pd[i],
                    "sekolah_id": ctx.sekolah_id, "jenis_pendaftaran_id": 2 if pindahan else 1,
                    "nipd": ctx.nipd(c, i), "tanggal_masuk_sekolah": masuk,
                    "sekolah_asal": asal, "soft_delete": 0}
        if i in muts:
            muts[i](row)
        yield row


def _pd_longitudinal(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("peserta_didik_longitudinal", c)
    pd = ctx.ids("peserta_didik", c, ctx.plan.students)
    tinggi, berat, kepala = ctx.plan.level.badan
    for i, lid in enumerate(ctx.ids("peserta_didik_longitudinal", c, len(pd))):
        jarak = round(rng.uniform(0.3, 15.0), 1)
        yield {"peserta_didik_longitudinal_id": lid, "peserta_didik_id": pd[i],
               "semester_id": SEMESTER_ID, "tinggi_badan": rng.randint(*tinggi),
               "berat_badan": rng.randint(*berat), "lingkar_kepala": rng.randint(*kepala),
               "jarak_rumah_ke_sekolah_km": jarak,
               "waktu_tempuh_menit": max(5, int(jarak * rng.uniform(2.5, 5))),
               "jumlah_saudara_kandung": rng.choice((0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5)),
               "soft_delete": 0}


def _rombongan_belajar(ctx: _Ctx, c: int) -> Iterator[Row]:
    plan = ctx.plan
    muts = ctx.mutations.get(("rombongan_belajar", c), {})
    ptk = ctx.ids("ptk", c, ctx.n_ptk(c))
    ruang = ctx.ids("ruang", c, len(plan.rooms))
    for r, rid in enumerate(ctx.ids("rombongan_belajar", c, plan.rombels)):
        jurusan = plan.jurusan(r)
        row: Row = {"rombongan_belajar_id": rid, "semester_id": SEMESTER_ID,
                    "sekolah_id": ctx.sekolah_id, "tingkat_pendidikan_id": plan.tingkat(r)}
        if jurusan:  # the id of the school's jurusan_sp row, which the schema does not hold
            row["jurusan_sp_id"] = stable_row_id("jurusan_sp", ctx.npsn, jurusan.singkatan)
        row |= {"kurikulum_id": jurusan.kurikulum_id if jurusan else plan.level.kurikulum_id,
                "nama": ctx.rombel_nama(c, r), "ptk_id": ptk[plan.wali[r]],
                "id_ruang": ruang[r], "jenis_rombel": 1, "soft_delete": 0}
        if r in muts:
            muts[r](row)
        yield row


def _anggota_rombel(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("anggota_rombel", c)
    plan = ctx.plan
    pd = ctx.ids("peserta_didik", c, plan.students)
    rombel = ctx.ids("rombongan_belajar", c, plan.rombels)
    for i, aid in enumerate(ctx.ids("anggota_rombel", c, plan.students)):
        r = plan.rombel_of(i)
        first_grade = plan.tingkat(r) == plan.level.tingkat[0]
        jenis = 1 if first_grade else 5 if rng.random() < 0.01 else 3
        yield {"anggota_rombel_id": aid, "rombongan_belajar_id": rombel[r],
               "peserta_didik_id": pd[i], "jenis_pendaftaran_id": jenis, "soft_delete": 0}


def _pembelajaran(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("pembelajaran", c)
    plan = ctx.plan
    muts = ctx.mutations.get(("pembelajaran", c), {})
    rombel = ctx.ids("rombongan_belajar", c, plan.rombels)
    terdaftar = ctx.ids("ptk_terdaftar", c, ctx.n_ptk(c))
    n_subj = len(plan.subjects)
    sk = f"421.3/{rng.randrange(100, 999)}/{plan.level.nama}/VII/2023"
    for i, pid in enumerate(ctx.ids("pembelajaran", c, plan.rombels * n_subj)):
        r, s = divmod(i, n_subj)
        mapel, hours = plan.mapel(r, s), plan.subjects[s][1]
        row: Row = {"pembelajaran_id": pid, "rombongan_belajar_id": rombel[r],
                    "semester_id": SEMESTER_ID, "mata_pelajaran_id": mapel,
                    "ptk_terdaftar_id": terdaftar[plan.teacher_of[(r, s)]],
                    "nama_mata_pelajaran": ctx.mapel[mapel], "sk_mengajar": sk,
                    "tanggal_sk_mengajar": "2023-07-10", "jam_mengajar_per_minggu": hours,
                    "status_di_kurikulum": 1, "soft_delete": 0}
        if i in muts:
            muts[i](row)
        yield row


def _jadwal_layout(plan: Plan) -> list[tuple[int, int, int]]:
    """(rombel, subject, hour) of each jadwal row of a copy, in row order."""
    return [(r, s, h) for r in range(plan.rombels) for s, (_, n) in enumerate(plan.subjects)
            for h in range(n)]


def _jadwal(ctx: _Ctx, c: int) -> Iterator[Row]:
    plan = ctx.plan
    muts = ctx.mutations.get(("jadwal", c), {})
    rombel = ctx.ids("rombongan_belajar", c, plan.rombels)
    ruang = ctx.ids("ruang", c, len(plan.rooms))
    n_subj = len(plan.subjects)
    pemb = ctx.ids("pembelajaran", c, plan.rombels * n_subj)
    layout = _jadwal_layout(plan)
    for i, (jid, (r, s, h)) in enumerate(zip(ctx.ids("jadwal", c, len(layout)), layout,
                                             strict=True)):
        hari, jam = plan.slot(plan.position(r, s, h))
        row: Row = {"jadwal_id": jid, "rombongan_belajar_id": rombel[r],
                    "pembelajaran_id": pemb[r * n_subj + s], "semester_id": SEMESTER_ID,
                    "hari": hari, "jam_ke": jam, "id_ruang": ruang[r], "soft_delete": 0}
        if i in muts:
            muts[i](row)
        yield row


def _nilai(ctx: _Ctx, c: int) -> Iterator[Row]:
    rng = ctx.rng("nilai", c)
    plan = ctx.plan
    muts = ctx.mutations.get(("nilai", c), {})
    per = plan.preset.students_per_rombel
    n_subj = len(plan.subjects)
    pd = ctx.ids("peserta_didik", c, plan.students)
    pemb = ctx.ids("pembelajaran", c, plan.rombels * n_subj)
    ability = [rng.gauss(81, 6) for _ in range(plan.students)]
    texts = {m: {p: d.format(ctx.mapel[m]) for p, d in _DESKRIPSI.items()}
             for m in plan.all_mapel()}
    ids = ctx.ids("nilai", c, plan.students * n_subj)
    gauss = rng.gauss
    i = 0
    for r in range(plan.rombels):
        for s in range(n_subj):
            pid = pemb[r * n_subj + s]
            text = texts[plan.mapel(r, s)]
            for k in range(r * per, (r + 1) * per):
                n = min(100, max(55, round(ability[k] + gauss(0, 5))))
                p = _predikat(n)
                row: Row = {"nilai_id": ids[i], "peserta_didik_id": pd[k], "pembelajaran_id": pid,
                            "semester_id": SEMESTER_ID, "nilai_angka": n, "predikat": p,
                            "deskripsi": text[p], "soft_delete": 0}
                if i in muts:
                    muts[i](row)
                yield row
                i += 1


def _pengguna(ctx: _Ctx, c: int) -> Iterator[Row]:
    if c:
        return
    ptk = ctx.ids("ptk", 0, ctx.n_ptk(0))
    profiles = ctx.profiles(0)
    operator = len(ctx.plan.roles) - len(ctx.plan.preset.staff)  # the first staff member
    domain = f"admin.{ctx.plan.level.nama.lower()}.belajar.id"
    users = ((operator, "operator", f"operator.{ctx.npsn}@{domain}"),
             (ctx.principal(), "kepala_sekolah", f"kepsek.{ctx.npsn}@{domain}"))
    for (t, peran, username), uid in zip(users, ctx.ids("pengguna", 0, 2), strict=True):
        yield {"pengguna_id": uid, "sekolah_id": ctx.sekolah_id, "username": username,
               "nama": profiles[t][0], "peran": peran, "ptk_id": ptk[t], "aktif": 1,
               "soft_delete": 0}


_ENTITY_ROWS: dict[str, Callable[[_Ctx, int], Iterator[Row]]] = {
    "sekolah_longitudinal": _sekolah_longitudinal, "tanah": _tanah, "bangunan": _bangunan,
    "ruang": _ruang, "alat": _alat, "ptk": _ptk, "ptk_terdaftar": _ptk_terdaftar,
    "tugas_tambahan": _tugas_tambahan, "peserta_didik": _peserta_didik,
    "registrasi_peserta_didik": _registrasi, "peserta_didik_longitudinal": _pd_longitudinal,
    "rombongan_belajar": _rombongan_belajar, "anggota_rombel": _anggota_rombel,
    "pembelajaran": _pembelajaran, "jadwal": _jadwal, "nilai": _nilai, "pengguna": _pengguna,
}
assert tuple(_ENTITY_ROWS) == ORDER


# -- errors -------------------------------------------------------------------------------

class _Errors:
    """Places the broken rows: each error claims what it relies on, so none undoes another."""

    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx
        self.rng = random.Random(f"{ctx.seed}/errors")
        self.claimed: set[tuple[object, ...]] = set()
        self.n = 0

    def place(self, kind: str) -> None:
        method = getattr(self, kind)
        for _ in range(2000):
            if method(self.rng.randrange(self.ctx.scale)):
                self.n += 1
                return
        raise TooManyErrors(kind, self.n + 1)

    def claim(self, *keys: tuple[object, ...]) -> bool:
        if any(k in self.claimed for k in keys):
            return False
        self.claimed.update(keys)
        return True

    def new_id(self) -> str:
        return _uuid4(self.rng.getrandbits(128))

    def _student(self, c: int, *tags: str) -> int | None:
        s = self.rng.randrange(self.ctx.plan.students)
        return s if self.claim(*((tag, c, s) for tag in tags)) else None

    # kinds on peserta_didik rows
    def nik_15_digits(self, c: int) -> bool:
        s = self._student(c, "pd")
        if s is not None:
            self.ctx.mutate("peserta_didik", c, s, _set(nik=lambda v: str(v)[:15]))
        return s is not None

    def nisn_missing(self, c: int) -> bool:
        s = self._student(c, "pd")
        if s is not None:
            self.ctx.mutate("peserta_didik", c, s, _drop("nisn"))
        return s is not None

    def illegal_name_characters(self, c: int) -> bool:
        s = self._student(c, "pd")
        if s is not None:
            self.ctx.mutate("peserta_didik", c, s, _set(nama=lambda v: f"{v} #2"))
        return s is not None

    def student_too_old(self, c: int) -> bool:
        s = self._student(c, "pd")
        if s is not None:
            too_old = self.ctx.plan.level.usia[1] + 3
            self.ctx.mutate("peserta_didik", c, s, _reborn(too_old, 9000 + self.n))
        return s is not None

    def nipd_duplicate(self, c: int) -> bool:
        s, other = (self.rng.randrange(self.ctx.plan.students) for _ in range(2))
        if s == other or not self.claim(("reg", c, s), ("reg", c, other)):
            return False
        nipd = self.ctx.nipd(c, other)
        self.ctx.mutate("registrasi_peserta_didik", c, s, _set(nipd=lambda _: nipd))
        return True

    # kinds on membership and grades
    def two_regular_rombels(self, c: int) -> bool:
        plan = self.ctx.plan
        s = self._student(c, "member")
        if s is None:
            return False
        r = (plan.rombel_of(s) + 1 + self.rng.randrange(plan.rombels - 1)) % plan.rombels \
            if plan.rombels > 1 else None
        if r is None:
            return False
        self.ctx.additions.setdefault("anggota_rombel", []).append({
            "anggota_rombel_id": self.new_id(),
            "rombongan_belajar_id": self.ctx.ids("rombongan_belajar", c, plan.rombels)[r],
            "peserta_didik_id": self.ctx.ids("peserta_didik", c, plan.students)[s],
            "jenis_pendaftaran_id": 3, "soft_delete": 0})
        return True

    def nilai_over_100(self, c: int) -> bool:
        plan = self.ctx.plan
        i = self.rng.randrange(plan.students * len(plan.subjects))
        if not self.claim(("nilai", c, i)):
            return False
        self.ctx.mutate("nilai", c, i, _set(nilai_angka=lambda _: 105, predikat=lambda _: "A"))
        return True

    def nilai_not_member(self, c: int) -> bool:
        plan = self.ctx.plan
        s = self._student(c, "member")
        if s is None or plan.rombels < 2:
            return False
        r = (plan.rombel_of(s) + 1 + self.rng.randrange(plan.rombels - 1)) % plan.rombels
        subj = self.rng.randrange(len(plan.subjects))
        n_pemb = plan.rombels * len(plan.subjects)
        self.ctx.additions.setdefault("nilai", []).append({
            "nilai_id": self.new_id(),
            "peserta_didik_id": self.ctx.ids("peserta_didik", c, plan.students)[s],
            "pembelajaran_id": self.ctx.ids("pembelajaran", c, n_pemb)[
                r * len(plan.subjects) + subj],
            "semester_id": SEMESTER_ID, "nilai_angka": 84, "predikat": "B",
            "deskripsi": _DESKRIPSI["B"].format(self.ctx.mapel[plan.mapel(r, subj)]),
            "soft_delete": 0})
        return True

    # kinds on rombel, pembelajaran, jadwal
    def _pembelajaran(self, c: int) -> tuple[int, int, int] | None:
        plan = self.ctx.plan
        r, s = self.rng.randrange(plan.rombels), self.rng.randrange(len(plan.subjects))
        t = plan.teacher_of[(r, s)]
        return (r, s, t) if self.claim(("pemb", c, r, s)) else None

    def expired_mata_pelajaran(self, c: int) -> bool:
        picked = self._pembelajaran(c)
        if picked:
            r, s, _ = picked
            expired = self.ctx.plan.level.expired_mapel
            nama = self.ctx.mapel[expired]
            self.ctx.mutate("pembelajaran", c, r * len(self.ctx.plan.subjects) + s,
                            _set(mata_pelajaran_id=lambda _: expired,
                                 nama_mata_pelajaran=lambda _: nama))
        return picked is not None

    def pembelajaran_without_teacher(self, c: int) -> bool:
        plan = self.ctx.plan
        r, s = self.rng.randrange(plan.rombels), self.rng.randrange(len(plan.subjects))
        if not self.claim(("pemb", c, r, s), ("teacher", c, plan.teacher_of[(r, s)])):
            return False
        self.ctx.mutate("pembelajaran", c, r * len(plan.subjects) + s, _drop("ptk_terdaftar_id"))
        return True

    def rombel_without_wali(self, c: int) -> bool:
        r = self.rng.randrange(self.ctx.plan.rombels)
        if not self.claim(("rombel", c, r)):
            return False
        self.ctx.mutate("rombongan_belajar", c, r, _drop("ptk_id"))
        return True

    def duplicate_rombel_name(self, c: int) -> bool:
        plan = self.ctx.plan
        r, other = self.rng.randrange(plan.rombels), self.rng.randrange(plan.rombels)
        if r == other or not self.claim(("rombel", c, r), ("rombel-name", c, r),
                                        ("rombel-name", c, other)):
            return False
        nama = self.ctx.rombel_nama(c, other)
        self.ctx.mutate("rombongan_belajar", c, r, _set(nama=lambda _: nama))
        return True

    def teacher_double_booked(self, c: int) -> bool:
        plan = self.ctx.plan
        t = self.rng.randrange(len(plan.roles))
        role = plan.roles[t]
        if not role.subjects or len(role.rombels) < 2 or ("teacher", c, t) in self.claimed:
            return False
        s, busy = role.subjects[0], plan.busy(t)  # a subject teacher has one
        r = self.rng.choice(role.rombels)
        taken = {plan.position(r, x, h) for x, (_, n) in enumerate(plan.subjects)
                 for h in range(n)}
        targets = [p for p, other in sorted(busy.items())
                   if other != r and p not in taken and ("cell", c, r, p) not in self.claimed]
        if not targets:
            return False
        p = self.rng.choice(targets)
        h = self.rng.randrange(plan.subjects[s][1])
        self.claim(("teacher", c, t), ("cell", c, r, p))
        hari, jam = plan.slot(p)
        self.ctx.mutate("jadwal", c, r * plan.hours + plan.block[s] + h,
                        _set(hari=lambda _: hari, jam_ke=lambda _: jam))
        return True

    # kinds on PTK
    def ptk_too_young(self, c: int) -> bool:
        profiles = self.ctx.profiles(c)
        t = self.rng.randrange(len(self.ctx.plan.roles))
        if profiles[t][2] in NIP_STATUS or not self.claim(("ptk", c, t)):
            return False
        self.ctx.mutate("ptk", c, t, _reborn(14, 9000 + self.n))
        return True

    def second_principal(self, c: int) -> bool:
        plan = self.ctx.plan
        t = self.rng.randrange(len(plan.roles))
        if not plan.roles[t].subjects or not self.claim(("principal", c, t)):
            return False
        self.ctx.additions.setdefault("tugas_tambahan", []).append({
            "ptk_tugas_tambahan_id": self.new_id(),
            "ptk_id": self.ctx.ids("ptk", c, self.ctx.n_ptk(c))[t],
            "sekolah_id": self.ctx.sekolah_id, "jabatan_ptk_id": KEPALA_SEKOLAH,
            "nomor_sk": f"800/{self.rng.randrange(100, 9999)}/BKD/2023",
            "tmt_tambahan": "2023-07-03", "jumlah_jam": 18, "soft_delete": 0})
        return True


def _set(**changes: Callable[[object], object]) -> Mutation:
    def mutation(row: Row) -> None:
        for k, fn in changes.items():
            row[k] = fn(row.get(k))
    return mutation


def _drop(name: str) -> Mutation:
    def mutation(row: Row) -> None:
        row.pop(name, None)
    return mutation


def _reborn(age: int, serial: int) -> Mutation:
    """A new birth date giving ``age`` on 2 July; the NIK's date part follows it."""
    def mutation(row: Row) -> None:
        born = dt.date.fromordinal(_age_range(age)[0] + 100)
        nik = str(row["nik"])
        row["tanggal_lahir"] = born.isoformat()
        row["nik"] = _nik(nik[:6], born, row["jenis_kelamin"] == "P", serial)
    return mutation


# -- the public functions -----------------------------------------------------------------

def _check_codes(refs: dict[str, list[dict]], plan: Plan, region: Region) -> dict[int, str]:
    """Fail loudly if Referensi lost a code the generator uses; the subjects' names."""
    def live(entity: str, column: str) -> dict[object, dict]:
        return {r[column]: r for r in refs[entity] if r["expired_date"] is None}

    level = plan.level
    mapel = {int(str(r["mata_pelajaran_id"])): str(r["nama"])
             for r in refs["ref.mata_pelajaran"]}
    wanted: dict[tuple[str, str], set[object]] = {
        ("ref.mata_pelajaran", "mata_pelajaran_id"): plan.all_mapel(),
        ("ref.agama", "agama_id"): {a for a, _ in _AGAMA},
        ("ref.jenis_pendaftaran", "jenis_pendaftaran_id"): {1, 2, 3, 5},
        ("ref.jenis_ptk", "jenis_ptk_id"): {r.jenis_ptk_id for r in plan.roles}
                                           | {KEPALA_SEKOLAH_PTK},
        ("ref.status_kepegawaian", "status_kepegawaian_id"): {1, 5, 6, 8, 9, 12},
        ("ref.jabatan_tugas_ptk", "jabatan_ptk_id"): {KEPALA_SEKOLAH, *level.wakasek,
                                                      KETUA_PROGRAM_KEAHLIAN},
        ("ref.kurikulum", "kurikulum_id"): {level.kurikulum_id}
                                           | {j.kurikulum_id for j in level.jurusan},
        ("ref.tingkat_pendidikan", "tingkat_pendidikan_id"): set(level.tingkat),
        ("ref.semester", "semester_id"): {SEMESTER_ID},
        ("ref.tahun_ajaran", "tahun_ajaran_id"): {TAHUN_AJARAN_ID},
        ("ref.bentuk_pendidikan", "bentuk_pendidikan_id"): {level.bentuk_pendidikan_id},
        ("ref.mst_wilayah", "kode_wilayah"): {region.kode},
    }
    for (entity, column), codes in wanted.items():
        missing = codes - set(live(entity, column))
        assert not missing, f"Referensi has no live {entity} {sorted(map(str, missing))}"
    # what Validasi Lokal checks against the school's bentuk: its name (how `selaras init
    # --bentuk` finds it), the students' ages, the grades' and the subjects' jenjang
    bentuk = live("ref.bentuk_pendidikan", "bentuk_pendidikan_id")[level.bentuk_pendidikan_id]
    assert bentuk["nama"] == level.nama
    assert (bentuk["usia_min"], bentuk["usia_max"]) == level.usia
    assert level.usia[0] <= level.tingkat[0] + 4 and level.tingkat[-1] + 7 <= level.usia[1], \
        "_student_age gives ages outside the level's bounds"
    tingkat = live("ref.tingkat_pendidikan", "tingkat_pendidikan_id")
    subjects = live("ref.mata_pelajaran", "mata_pelajaran_id")
    assert {tingkat[t]["jenjang"] for t in level.tingkat} == {bentuk["jenjang"]}
    assert {subjects[m]["jenjang"] for m in plan.all_mapel()} == {bentuk["jenjang"]}
    assert level.expired_mapel in mapel and level.expired_mapel not in subjects
    return mapel


def generate(size: str, scale: int, npsn: str, seed: int, errors: int = 0, *,
             bentuk: str = "SMA") -> Iterator[tuple[str, Row]]:
    """The school's rows, ``(entity, row)``, entity by entity, parents first.

    ``size`` is a key of SIZES, ``scale`` >= 1 multiplies the school, ``errors``
    >= 0 rows break validation rules (see the module docstring), ``bentuk`` is
    the school's level, a key of LEVELS. ValueError on bad arguments;
    TooManyErrors when the school is too small for ``errors``.
    """
    level = level_of(bentuk)
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, not {size!r}")
    if scale < 1 or errors < 0:
        raise ValueError("scale must be >= 1 and errors >= 0")
    npsn = str(npsn)
    if len(npsn) != 8 or not npsn.isalnum():
        raise ValueError(f"an NPSN has 8 letters or digits, not {npsn!r}")
    plan = make_plan(level, size)
    refs = referensi_rows()
    region = region_of(npsn)
    ctx = _Ctx(seed, npsn, scale, plan, school_id(npsn), region, _kecamatan(refs, region),
               _check_codes(refs, plan, region))
    ctx.nisn_b = random.Random(f"{seed}/nisn").randrange(10**7)
    ctx.nuptk_b = random.Random(f"{seed}/nuptk").randrange(9 * 10**15)
    placer = _Errors(ctx)
    for j in range(errors):
        placer.place(ERROR_KINDS[j % len(ERROR_KINDS)])
    return _rows(ctx)


def _rows(ctx: _Ctx) -> Iterator[tuple[str, Row]]:
    for entity in ORDER:
        make = _ENTITY_ROWS[entity]
        for c in range(ctx.scale):
            for row in make(ctx, c):
                yield entity, row
        for row in ctx.additions.get(entity, ()):
            yield entity, row


_FLUSH = 1 << 20


def rows_file(folder: Path, size: str, scale: int, npsn: str, seed: int) -> Path:
    """The generated school's rows file, written once: under ``$SELARAS_BENCH_CACHE``
    (kept between runs) if set, else in ``folder``."""
    path = Path(os.environ.get("SELARAS_BENCH_CACHE") or folder) / f"{size}-{scale}-{seed}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(path.name + f".{os.getpid()}.part")
        write(aside, generate(size, scale, npsn, seed))
        os.replace(aside, path)
    return path


def write(path: str | Path, rows: Iterable[tuple[str, Row]]) -> dict[str, int]:
    """Write rows as JSON lines (``"entity"`` first); the number of rows per entity."""
    encode_into = msgspec.json.Encoder().encode_into
    heads = {name: b'{"entity":' + msgspec.json.encode(name) for name in BY_NAME}
    counts: dict[str, int] = {}
    buf = bytearray()
    with open(path, "wb") as out:
        for entity, row in rows:
            buf += heads[entity]
            at = len(buf)
            encode_into(row, buf, at)
            buf[at] = 0x2C  # the row's "{" becomes the "," after "entity"
            buf += b"\n"
            counts[entity] = counts.get(entity, 0) + 1
            if len(buf) >= _FLUSH:
                out.write(buf)
                buf.clear()
        out.write(buf)
    return counts
