"""What people call rows and fields: Dapodik's words, never a UUID.

Two things, for every screen that shows school data to a person (Validasi
Lokal, the list of pending changes, the confirmation sheet, the web app):

- :func:`label` gives a field's label as Dapodik's forms show it
  (``label("peserta_didik", "nama_ibu_kandung") == "Nama Ibu Kandung"``); a
  field not listed here gets a readable label made from its name.
- :data:`NAMINGS` says, for every entity of the schema, how one of its rows is
  named: a template over the row's fields and the rows it points at, and the
  identifiers that tell two people of one name apart. :func:`name_sql` turns
  it into one SQL expression and the LEFT JOINs it needs, so a store names any
  number of rows in one set-based query; :func:`names_sql` is the whole query
  for one entity. Like engine/validation.py this module only writes SQL: the
  storage package runs it (DESIGN.md section 2).

A template is text with placeholders in braces. A placeholder is a *path*, or
several separated by ``|`` (the first one filled wins):

- ``nama``: a field of the row, as text (``hari`` as the day's name);
- ``peserta_didik_id``: a field pointing at another row: that row's name,
  itself named by its own template (so a nilai is named through its student
  and its pembelajaran);
- ``agama_id``: a reference code: the name of that code in ``ref.*``;
- ``pembelajaran_id.rombongan_belajar_id``: through a pointed-at row to one of
  its fields (dots chain);
- ``^registrasi_peserta_didik.nipd``: a field of the live rows that point at
  this one (their largest value), e.g. a student's NIPD.

A placeholder whose value is empty is said so in words, "(Nama kosong)",
"(Peserta Didik tidak ditemukan)", or, for a reference code the centre does
not know, the code itself; one ending in ``?`` is optional: when empty it
vanishes with the text before it. ``Naming.ids`` are (label, path) pairs: the
first one filled follows the name in parentheses, "Ahmad (NISN 0012345678)".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

from .schema import BY_NAME, ENTITIES, Entity
from .schema import entity as schema_entity

__all__ = ["NAMINGS", "Naming", "RowName", "entity_label", "label", "name_sql", "names_sql"]


@dataclass(frozen=True)
class Naming:
    """How a row of one entity is named (module docstring)."""

    template: str
    ids: tuple[tuple[str, str], ...] = ()  # (label, path): the first filled one, in brackets


_PD_IDS = (("NISN", "nisn"), ("NIPD", "^registrasi_peserta_didik.nipd"), ("NIK", "nik"))
_PTK_IDS = (("NUPTK", "nuptk"), ("NIP", "nip"), ("NIK", "nik"))
_MAPEL = "pembelajaran_id.mata_pelajaran_id|pembelajaran_id.nama_mata_pelajaran"

NAMINGS: dict[str, Naming] = {
    "sekolah": Naming("{nama}", (("NPSN", "npsn"),)),
    "sekolah_longitudinal": Naming("Data periodik sekolah {semester_id}"),
    "tanah": Naming("{nama}", (("No. Sertifikat", "no_sertifikat_tanah"),)),
    "bangunan": Naming("{nama}"),
    "ruang": Naming("{nama}", (("Kode", "kode_ruang"),)),
    "alat": Naming("{nama} di {id_ruang?}"),
    "peserta_didik": Naming("{nama}", _PD_IDS),
    "registrasi_peserta_didik": Naming("{peserta_didik_id}, masuk {tanggal_masuk_sekolah?}"),
    "peserta_didik_longitudinal": Naming("{peserta_didik_id}, data periodik {semester_id}"),
    "ptk": Naming("{nama}", _PTK_IDS),
    "ptk_terdaftar": Naming("{ptk_id}, penugasan {tahun_ajaran_id}"),
    "tugas_tambahan": Naming("{ptk_id}, {jabatan_ptk_id}"),
    "rombongan_belajar": Naming("{nama}"),
    "anggota_rombel": Naming("{peserta_didik_id}, anggota {rombongan_belajar_id}"),
    "pembelajaran": Naming("{mata_pelajaran_id|nama_mata_pelajaran} {rombongan_belajar_id}, "
                           "guru {ptk_terdaftar_id.ptk_id.nama?}"),
    "nilai": Naming(f"{{peserta_didik_id}}, {{{_MAPEL}}} "
                    "{pembelajaran_id.rombongan_belajar_id?}"),
    "jadwal": Naming(f"{{{_MAPEL}}} {{rombongan_belajar_id}}, {{hari}} jam ke-{{jam_ke}}"),
    "pengguna": Naming("{nama}", (("", "username"),)),
    "koreksi_jam": Naming("Koreksi jam, perubahan {seq_from} s.d. {seq_to}"),
    "validasi_pusat": Naming("{rule_id} {message}"),
    # Every ref.* table: its name and its code.
    **{e.name: Naming("{nama}", (("Kode", e.fields[0].name),)) for e in ENTITIES
       if e.is_reference},
}

# -- labels --------------------------------------------------------------------------------

# Labels of a field name wherever it appears; per-entity ones below win.
_FIELDS: dict[str, str] = {
    "nama": "Nama", "nik": "NIK", "nisn": "NISN", "nuptk": "NUPTK", "nip": "NIP",
    "npsn": "NPSN", "nss": "NSS", "no_kk": "No. KK", "nipd": "NIPD",
    "jenis_kelamin": "Jenis Kelamin", "tempat_lahir": "Tempat Lahir",
    "tanggal_lahir": "Tanggal Lahir", "agama_id": "Agama",
    "kebutuhan_khusus_id": "Berkebutuhan Khusus", "kewarganegaraan": "Kewarganegaraan",
    "alamat_jalan": "Alamat Jalan", "rt": "RT", "rw": "RW", "nama_dusun": "Nama Dusun",
    "desa_kelurahan": "Desa/Kelurahan", "kode_wilayah": "Kecamatan", "kode_pos": "Kode Pos",
    "lintang": "Lintang", "bujur": "Bujur",
    "nama_ibu_kandung": "Nama Ibu Kandung", "nama_ayah": "Nama Ayah Kandung",
    "nik_ayah": "NIK Ayah", "nik_ibu": "NIK Ibu", "nama_wali": "Nama Wali",
    "penerima_kip": "Penerima KIP", "layak_pip": "Layak PIP",
    "nomor_telepon_seluler": "Nomor HP", "no_hp": "Nomor HP", "nomor_telepon": "Nomor Telepon",
    "email": "Email", "website": "Website",
    "status_verval_pd": "Status Verval PD", "status_verval_ptk": "Status Verval PTK",
    "sekolah_id": "Sekolah", "semester_id": "Semester", "tahun_ajaran_id": "Tahun Ajaran",
    "peserta_didik_id": "Peserta Didik", "ptk_id": "PTK", "ptk_terdaftar_id": "Guru (PTK)",
    "rombongan_belajar_id": "Rombongan Belajar", "pembelajaran_id": "Pembelajaran",
    "mata_pelajaran_id": "Mata Pelajaran", "nama_mata_pelajaran": "Nama Mata Pelajaran",
    "id_ruang": "Ruang", "tanah_id": "Tanah", "bangunan_id": "Bangunan",
    "jenis_pendaftaran_id": "Jenis Pendaftaran", "jenis_keluar_id": "Keluar Karena",
    "tanggal_masuk_sekolah": "Tanggal Masuk Sekolah", "tanggal_keluar": "Tanggal Keluar",
    "sekolah_asal": "Sekolah Asal",
    "bentuk_pendidikan_id": "Bentuk Pendidikan", "status_sekolah": "Status Sekolah",
    "sk_pendirian_sekolah": "SK Pendirian Sekolah",
    "tanggal_sk_pendirian": "Tanggal SK Pendirian",
    "sk_izin_operasional": "SK Izin Operasional",
    "tanggal_sk_izin_operasional": "Tanggal SK Izin Operasional",
    "daya_listrik": "Daya Listrik (watt)", "akses_internet": "Akses Internet",
    "partisipasi_bos": "Partisipasi BOS", "sertifikasi_iso": "Sertifikasi ISO",
    "no_sertifikat_tanah": "No. Sertifikat Tanah", "panjang": "Panjang (m)",
    "lebar": "Lebar (m)", "luas": "Luas (m²)", "luas_tapak": "Luas Tapak Bangunan (m²)",
    "kepemilikan_sarpras_id": "Kepemilikan", "keterangan": "Keterangan",
    "jumlah_lantai": "Jumlah Lantai", "tahun_dibangun": "Tahun Dibangun",
    "kerusakan_persen": "Kerusakan (%)", "kode_ruang": "Kode Ruang",
    "jenis_prasarana_id": "Jenis Prasarana", "lantai": "Lantai Ke-",
    "kapasitas": "Kapasitas", "jenis_sarana_id": "Jenis Sarana", "jumlah": "Jumlah",
    "tinggi_badan": "Tinggi Badan (cm)", "berat_badan": "Berat Badan (kg)",
    "lingkar_kepala": "Lingkar Kepala (cm)",
    "jarak_rumah_ke_sekolah_km": "Jarak Rumah ke Sekolah (km)",
    "waktu_tempuh_menit": "Waktu Tempuh (menit)",
    "jumlah_saudara_kandung": "Jumlah Saudara Kandung",
    "status_kepegawaian_id": "Status Kepegawaian", "jenis_ptk_id": "Jenis PTK",
    "pangkat_golongan_id": "Pangkat/Golongan",
    "nomor_surat_tugas": "Nomor Surat Tugas", "tanggal_surat_tugas": "Tanggal Surat Tugas",
    "tmt_tugas": "TMT Tugas", "ptk_induk": "PTK Induk", "tgl_ptk_keluar": "Tanggal Keluar",
    "jabatan_ptk_id": "Jabatan PTK", "nomor_sk": "Nomor SK", "tmt_tambahan": "TMT Tambahan",
    "tst_tambahan": "TST Tambahan", "jumlah_jam": "Jumlah Jam",
    "tingkat_pendidikan_id": "Tingkat Pendidikan", "jurusan_sp_id": "Jurusan",
    "kurikulum_id": "Kurikulum", "jenis_rombel": "Jenis Rombel",
    "sk_mengajar": "SK Mengajar", "tanggal_sk_mengajar": "Tanggal SK Mengajar",
    "jam_mengajar_per_minggu": "Jam Mengajar per Minggu",
    "status_di_kurikulum": "Status di Kurikulum",
    "nilai_angka": "Nilai Angka", "predikat": "Predikat", "deskripsi": "Deskripsi",
    "hari": "Hari", "jam_ke": "Jam Ke", "username": "Username (Email)", "peran": "Peran",
    "password": "Password", "aktif": "Aktif", "soft_delete": "Dihapus",
    "install_id": "Instalasi", "seq_from": "Perubahan Dari", "seq_to": "Perubahan Sampai",
    "hlc_from": "Waktu Awal",
    "expired_date": "Tanggal Kedaluwarsa", "tanggal_mulai": "Tanggal Mulai",
    "tanggal_selesai": "Tanggal Selesai", "kelompok": "Kelompok", "jenjang": "Jenjang",
    "keluar_pd": "Keluar Peserta Didik", "keluar_ptk": "Keluar PTK", "guru": "Guru",
    "kepala_sekolah": "Kepala Sekolah", "usia_min": "Usia Minimal",
    "usia_max": "Usia Maksimal", "id_level_wilayah": "Tingkat Wilayah",
    "mst_kode_wilayah": "Induk Wilayah",
}

_BY_ENTITY: dict[tuple[str, str], str] = {
    ("sekolah", "nama"): "Nama Sekolah",
    ("sekolah", "kode_wilayah"): "Kode Wilayah",
    ("sekolah", "email"): "Email Sekolah",
    ("rombongan_belajar", "nama"): "Nama Rombel",
    ("rombongan_belajar", "ptk_id"): "Wali Kelas",
    ("pengguna", "ptk_id"): "PTK Terkait",
    ("ptk_terdaftar", "jenis_keluar_id"): "Jenis Keluar",
    ("registrasi_peserta_didik", "nipd"): "NIPD",
    ("ref.semester", "semester"): "Ganjil/Genap",
    ("ref.semester", "semester_id"): "Kode Semester",
    ("ref.mst_wilayah", "kode_wilayah"): "Kode Wilayah",
}

# Entity names as an operator reads them (headings, "Data Peserta Didik").
_ENTITIES: dict[str, str] = {
    "sekolah": "Sekolah", "sekolah_longitudinal": "Data Periodik Sekolah", "tanah": "Tanah",
    "bangunan": "Bangunan", "ruang": "Ruang", "alat": "Alat",
    "peserta_didik": "Peserta Didik", "registrasi_peserta_didik": "Registrasi Peserta Didik",
    "peserta_didik_longitudinal": "Data Periodik Peserta Didik", "ptk": "PTK",
    "ptk_terdaftar": "Penugasan PTK", "tugas_tambahan": "Tugas Tambahan",
    "rombongan_belajar": "Rombongan Belajar", "anggota_rombel": "Anggota Rombel",
    "pembelajaran": "Pembelajaran", "nilai": "Nilai", "jadwal": "Jadwal",
    "pengguna": "Pengguna", "koreksi_jam": "Koreksi Jam",
    "validasi_pusat": "Validasi Pusat",
}

# Words a derived label writes in capitals.
_ACRONYMS = frozenset({"bos", "hp", "iso", "kip", "kk", "nik", "nip", "nipd", "nisn", "npsn",
                       "nss", "nuptk", "pd", "pip", "ptk", "rt", "rw", "sk", "sp", "tmt",
                       "tst"})

# Codes whose meaning a name shows instead of the number.
_VALUES: dict[str, dict[int, str]] = {
    "hari": {1: "Senin", 2: "Selasa", 3: "Rabu", 4: "Kamis", 5: "Jumat", 6: "Sabtu",
             7: "Minggu"},
}


def label(entity: str, field: str) -> str:
    """The label of ``field`` of ``entity`` as Dapodik's forms show it.

    Any column of the entity has one: a field not listed gets its name made
    readable (``jumlah_rombel_id`` -> "Jumlah Rombel").
    """
    return _BY_ENTITY.get((entity, field)) or _FIELDS.get(field) or _derived(field)


def entity_label(entity: str) -> str:
    """The entity's name for people: "Peserta Didik", "Penugasan PTK", "Ref. Agama"."""
    if entity.startswith("ref."):
        return "Ref. " + _derived(entity[4:])
    return _ENTITIES.get(entity) or _derived(entity)


def _derived(name: str) -> str:
    words = [w for w in re.sub(r"^id_|_id$", "", name).split("_") if w]
    return " ".join(w.upper() if w in _ACRONYMS else w.capitalize() for w in words) or name


# -- names in SQL ----------------------------------------------------------------------------


class RowName(NamedTuple):
    """A row's name as SQL: ``expr`` over the row's alias and ``joins``.

    ``joins`` are LEFT JOINs (each matches at most one row per row named)
    whose aliases are the row's alias, an underscore and a number; put them
    after the row's table in a FROM clause.
    """

    expr: str
    joins: tuple[str, ...]


@cache
def name_sql(entity: str, alias: str = "x") -> RowName:
    """The name of the row of ``entity`` at ``alias``, as a VARCHAR expression (never NULL).

    ``alias`` is a table alias of ``entity``'s table (with its ``school``
    column) in the caller's query. UnknownEntity for an entity not in the schema.
    """
    builder = _Joins(alias)
    expr = builder.name(schema_entity(entity), alias, depth=0)
    return RowName(expr, tuple(builder.joins))


def names_sql(entity: str, where: str = "true") -> str:
    """SQL: the columns ``school``, ``row_id`` (the key) and ``nama`` for the rows of
    ``entity`` (alias ``x``) that satisfy ``where``."""
    e = schema_entity(entity)
    name = name_sql(entity)
    return (f"SELECT x.school, x.{e.key} AS row_id, {name.expr} AS nama "
            f"FROM {e.table} x {' '.join(name.joins)} WHERE {where}")


_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_MAX_DEPTH = 4  # nilai -> pembelajaran -> rombongan_belajar: names nest a few deep


def _text(expr: str) -> str:
    """SQL: ``expr`` as text, NULL when empty."""
    return f"nullif(trim(CAST({expr} AS VARCHAR)), '')"


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class _Joins:
    """The LEFT JOINs one name needs, each made once (a path walked twice reuses it)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.joins: list[str] = []
        self._made: dict[tuple[str, str], str] = {}

    def _join(self, key: tuple[str, str], sql: str) -> str:
        """The alias of the join ``sql`` (``{b}`` stands for its alias), made if new."""
        if key not in self._made:
            b = f"{self.alias}_{len(self._made) + 1}"
            self._made[key] = b
            self.joins.append(sql.format(b=b))
        return self._made[key]

    def row(self, e: Entity, a: str, field: str) -> tuple[Entity, str]:
        """The row that ``field`` of the row at ``a`` points at, and its alias."""
        t = BY_NAME[_target(e, field)]
        b = self._join((a, field), f"LEFT JOIN {t.table} {{b}} ON {{b}}.{t.key} = {a}.{field} "
                                   f"AND {{b}}.school = {a}.school")
        return t, b

    def code(self, e: Entity, a: str, field: str) -> str:
        """The alias of the name of the reference code in ``field`` (columns code, nama)."""
        ref = e.by_name[field].ref
        assert ref is not None and ref.startswith("ref.")
        table, column = ref.rsplit(".", 1)
        # A code may have several rows (the centre re-issues one); the live one names it.
        return self._join((a, field), f"""LEFT JOIN (SELECT {column} AS code,
                arg_max(nama, coalesce(expired_date, DATE '9999-12-31')) AS nama
                FROM {table} GROUP BY {column}) {{b}} ON {{b}}.code = {a}.{field}""")

    def pointing(self, e: Entity, a: str, path: str) -> str:
        """SQL: ``^entity.field``: the largest filled value among the live rows pointing at
        the row at ``a``."""
        source, field = path[1:].split(".")
        t = BY_NAME[source]
        (by,) = [f.name for f in t.fields if f.ref == f"{e.name}.{e.key}"]
        b = self._join((a, path), f"""LEFT JOIN (SELECT school, {by} AS k, max({field}) AS v
                FROM {t.table} WHERE coalesce(soft_delete, 0) = 0
                  AND {_text(field)} IS NOT NULL GROUP BY school, {by}) {{b}}
                ON {{b}}.k = {a}.{e.key} AND {{b}}.school = {a}.school""")
        return f"{b}.v"

    def name(self, e: Entity, a: str, depth: int) -> str:
        """SQL: the name of the row of ``e`` at ``a`` (its template and its ids)."""
        if depth > _MAX_DEPTH:
            raise ValueError(f"names nest deeper than {_MAX_DEPTH} at {e.name}")
        naming = NAMINGS[e.name]
        parts = _PLACEHOLDER.split(naming.template)  # text, placeholder, text, ..., text
        pieces, text = [], parts[0]
        for spec, after in zip(parts[1::2], parts[2::2], strict=True):
            paths = spec.removesuffix("?").split("|")
            value = "coalesce(" + ", ".join(self.path(e, a, p, depth) for p in paths) + ")"
            if spec.endswith("?"):  # optional: empty, it takes the text before it along
                pieces.append(f"coalesce({_literal(text)} || {value}, '')")
            else:
                pieces += [_literal(text)] if text else []
                pieces.append(f"coalesce({value}, {self.missing(e, a, paths[0])})")
            text = after
        pieces += [_literal(text)] if text else []
        if naming.ids:
            found = [(tag, self.path(e, a, p, depth)) for tag, p in naming.ids]
            cases = " ".join(f"WHEN {v} IS NOT NULL THEN {_literal(f' ({tag} ' if tag else ' (')}"
                             f" || {v} || ')'" for tag, v in found)
            pieces.append(f"CASE {cases} ELSE '' END")
        return f"concat({', '.join(pieces)})"

    def path(self, e: Entity, a: str, path: str, depth: int) -> str:
        """SQL: the text a path names (NULL when empty or missing)."""
        if path.startswith("^"):
            return _text(self.pointing(e, a, path))
        *through, last = path.split(".")
        for field in through:
            e, a = self.row(e, a, field)
        f = e.by_name[last]
        if f.type == "uuid" and f.ref:
            t, b = self.row(e, a, last)
            return f"CASE WHEN {b}.{t.key} IS NOT NULL THEN {self.name(t, b, depth + 1)} END"
        if f.ref:
            return _text(f"{self.code(e, a, last)}.nama")
        if last in _VALUES:
            cases = " ".join(f"WHEN {k} THEN {_literal(v)}" for k, v in _VALUES[last].items())
            return _text(f"CASE {a}.{last} {cases} ELSE CAST({a}.{last} AS VARCHAR) END")
        return _text(f"{a}.{last}")

    def missing(self, e: Entity, a: str, path: str) -> str:
        """SQL: what a required placeholder says, in words, when ``path`` names nothing."""
        if path.startswith("^"):
            return _literal(f"({label(*path[1:].split('.'))} kosong)")
        whens = []
        *through, last = path.split(".")
        for field in through:
            said = label(e.name, field)
            t, b = self.row(e, a, field)
            whens += [f"WHEN {a}.{field} IS NULL THEN {_literal(f'({said} kosong)')}",
                      f"WHEN {b}.{t.key} IS NULL THEN {_literal(f'({said} tidak ditemukan)')}"]
            e, a = t, b
        f, said = e.by_name[last], label(e.name, last)
        if f.ref and f.type != "uuid":
            # A code the centre does not know: the code itself says more than "missing".
            whens.append(f"WHEN {_text(f'{a}.{last}')} IS NOT NULL "
                         f"THEN {_literal(said + ' ')} || CAST({a}.{last} AS VARCHAR)")
        elif f.ref:
            whens.append(f"WHEN {a}.{last} IS NOT NULL "
                         f"THEN {_literal(f'({said} tidak ditemukan)')}")
        empty = _literal(f"({said} kosong)")
        return f"CASE {' '.join(whens)} ELSE {empty} END" if whens else empty


def _target(e: Entity, field: str) -> str:
    """The entity that ``field`` of ``e`` points at."""
    ref = e.by_name[field].ref
    if ref is None or e.by_name[field].type != "uuid":
        raise ValueError(f"{e.name}.{field} points at no row")
    return ref.rsplit(".", 1)[0]
