"""The Dapodik schema as data: every entity, its fields, who owns them.

Everything else (storage DDL, value parsing, merge authority, validation,
the data generator, the command line) reads this module; nothing restates it.

Ownership (DESIGN.md section 3):
- ``SCHOOL``: the school's installs and the centre may write it.
- ``CENTRE``: only the centre (school identity: VervalSP; every ref.* table).
- ``VERVAL``: the school may write it until the centre has verified the
  person (``Entity.verified_by`` set to 1); from then on only the centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .errors import InputError

SCHEMA_VERSION = 3  # 2: koreksi_jam; 3: a student's NIK and nama ibu kandung verified,
# validasi_pusat


class Owner(Enum):
    SCHOOL = "school"
    CENTRE = "centre"
    VERVAL = "verval"


# Field types and the DuckDB column type each one materialises into.
SQL_TYPES = {
    "uuid": "UUID",
    "text": "VARCHAR",
    "int": "BIGINT",
    "date": "DATE",
    "decimal": "DECIMAL(18,6)",
}
DECIMAL_SCALE = 6


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    required: bool = False
    ref: str | None = None  # "entity.column" this field points at
    owner: Owner = Owner.SCHOOL


@dataclass(frozen=True)
class Entity:
    name: str  # "peserta_didik", "ref.agama"
    key: str  # column holding the row's UUID
    tab: str  # the Validasi Lokal tab it belongs to
    fields: tuple[Field, ...]
    semester_scoped: bool = False
    verified_by: str | None = None  # centre-owned flag that locks VERVAL fields
    school_field: str | None = None  # field that names the school (sekolah_id)
    by_name: dict[str, Field] = field(init=False, repr=False, compare=False)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})
        # bit() runs per field of every event on the reference paths: a lookup, not a scan
        object.__setattr__(self, "_index", {f.name: i for i, f in enumerate(self.fields)})
        assert len(self.fields) <= 63, "the change mask is one 64-bit integer"

    @property
    def is_reference(self) -> bool:
        return self.name.startswith("ref.")

    @property
    def slug(self) -> str:
        """Identifier-safe name: ``ref.agama`` -> ``ref_agama``."""
        return self.name.replace(".", "_")

    @property
    def table(self) -> str:
        """The materialised table's SQL name (``ref.agama`` lives in schema ref)."""
        return self.name

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.key, *(f.name for f in self.fields))

    def bit(self, field_name: str) -> int:
        """The field's bit in an event's change mask."""
        return 1 << self.field_index(field_name)

    def field_index(self, field_name: str) -> int:
        return self._index[field_name]


def _f(name: str, type: str = "text", *, req: bool = False, ref: str | None = None,
       owner: Owner = Owner.SCHOOL) -> Field:
    return Field(name, type, req, ref, owner)


C, V = Owner.CENTRE, Owner.VERVAL
SOFT_DELETE = _f("soft_delete", "int")
SEKOLAH = "sekolah.sekolah_id"
CLOCK_BOUND = "koreksi_jam"
VALIDASI_PUSAT = "validasi_pusat"  # the centre's findings on a school's rows


def _ref(name: str, code: str, code_type: str, *extra: Field) -> Entity:
    """A reference table: a code, a name, extra columns and expired_date; all centre-owned."""
    fields = (
        _f(code, code_type, req=True, owner=C),
        _f("nama", req=True, owner=C),
        *(Field(f.name, f.type, f.required, f.ref, C) for f in extra),
        _f("expired_date", "date", owner=C),
    )
    return Entity(f"ref.{name}", "ref_id", "Referensi", fields)


ENTITIES: tuple[Entity, ...] = (
    Entity("sekolah", "sekolah_id", "Sekolah", (
        _f("nama", req=True, owner=C),
        _f("npsn", req=True, owner=C),
        _f("nss", owner=C),
        _f("bentuk_pendidikan_id", "int", req=True,
           ref="ref.bentuk_pendidikan.bentuk_pendidikan_id", owner=C),
        _f("status_sekolah", "int", req=True, owner=C),
        _f("alamat_jalan", req=True, owner=C),
        _f("rt", "int", owner=C),
        _f("rw", "int", owner=C),
        _f("nama_dusun", owner=C),
        _f("desa_kelurahan", req=True, owner=C),
        _f("kode_wilayah", req=True, ref="ref.mst_wilayah.kode_wilayah", owner=C),
        _f("kode_pos", owner=C),
        _f("lintang", "decimal", owner=C),
        _f("bujur", "decimal", owner=C),
        _f("sk_pendirian_sekolah", owner=C),
        _f("tanggal_sk_pendirian", "date", owner=C),
        _f("sk_izin_operasional", owner=C),
        _f("tanggal_sk_izin_operasional", "date", owner=C),
        _f("nomor_telepon"),
        _f("email"),
        _f("website"),
        SOFT_DELETE,
    )),
    Entity("sekolah_longitudinal", "sekolah_longitudinal_id", "Sekolah", (
        _f("sekolah_id", "uuid", req=True, ref=SEKOLAH),
        _f("semester_id", req=True, ref="ref.semester.semester_id"),
        _f("daya_listrik", "int"),
        _f("akses_internet", "int"),
        _f("partisipasi_bos", "int"),
        _f("sertifikasi_iso", "int"),
        SOFT_DELETE,
    ), semester_scoped=True, school_field="sekolah_id"),
    Entity("tanah", "tanah_id", "Sarpras", (
        _f("sekolah_id", "uuid", req=True, ref=SEKOLAH),
        _f("nama", req=True),
        _f("no_sertifikat_tanah"),
        _f("panjang", "decimal"),
        _f("lebar", "decimal"),
        _f("luas", "decimal", req=True),
        _f("kepemilikan_sarpras_id", "int", req=True),
        _f("keterangan"),
        SOFT_DELETE,
    ), school_field="sekolah_id"),
    Entity("bangunan", "bangunan_id", "Sarpras", (
        _f("sekolah_id", "uuid", req=True, ref=SEKOLAH),
        _f("tanah_id", "uuid", req=True, ref="tanah.tanah_id"),
        _f("nama", req=True),
        _f("panjang", "decimal"),
        _f("lebar", "decimal"),
        _f("luas_tapak", "decimal", req=True),
        _f("jumlah_lantai", "int", req=True),
        _f("tahun_dibangun", "int"),
        _f("kepemilikan_sarpras_id", "int", req=True),
        _f("kerusakan_persen", "int"),
        SOFT_DELETE,
    ), school_field="sekolah_id"),
    Entity("ruang", "id_ruang", "Sarpras", (
        _f("sekolah_id", "uuid", req=True, ref=SEKOLAH),
        _f("bangunan_id", "uuid", req=True, ref="bangunan.bangunan_id"),
        _f("kode_ruang", req=True),
        _f("nama", req=True),
        _f("jenis_prasarana_id", "int", req=True),
        _f("lantai", "int"),
        _f("panjang", "decimal"),
        _f("lebar", "decimal"),
        _f("kapasitas", "int"),
        _f("kerusakan_persen", "int"),
        SOFT_DELETE,
    ), school_field="sekolah_id"),
    Entity("alat", "alat_id", "Sarpras", (
        _f("sekolah_id", "uuid", req=True, ref=SEKOLAH),
        _f("id_ruang", "uuid", ref="ruang.id_ruang"),
        _f("nama", req=True),
        _f("jenis_sarana_id", "int", req=True),
        _f("jumlah", "int", req=True),
        _f("kepemilikan_sarpras_id", "int"),
        _f("kerusakan_persen", "int"),
        SOFT_DELETE,
    ), school_field="sekolah_id"),
    Entity("peserta_didik", "peserta_didik_id", "Peserta Didik", (
        _f("nama", req=True, owner=V),
        _f("jenis_kelamin", req=True),
        _f("nisn", owner=V),
        _f("nik", req=True, owner=V),
        _f("no_kk"),
        _f("tempat_lahir", req=True),
        _f("tanggal_lahir", "date", req=True, owner=V),
        _f("agama_id", "int", req=True, ref="ref.agama.agama_id"),
        _f("kebutuhan_khusus_id", "int"),
        _f("kewarganegaraan"),
        _f("alamat_jalan"),
        _f("rt", "int"),
        _f("rw", "int"),
        _f("nama_dusun"),
        _f("desa_kelurahan"),
        _f("kode_wilayah", ref="ref.mst_wilayah.kode_wilayah"),
        _f("kode_pos"),
        _f("nama_ibu_kandung", req=True, owner=V),
        _f("nama_ayah"),
        _f("nik_ayah"),
        _f("nik_ibu"),
        _f("nama_wali"),
        _f("penerima_kip", "int"),
        _f("layak_pip", "int"),
        _f("nomor_telepon_seluler"),
        _f("email"),
        _f("status_verval_pd", "int", owner=C),
        SOFT_DELETE,
    ), verified_by="status_verval_pd"),
    Entity("registrasi_peserta_didik", "registrasi_id", "Peserta Didik", (
        _f("peserta_didik_id", "uuid", req=True, ref="peserta_didik.peserta_didik_id"),
        _f("sekolah_id", "uuid", req=True, ref=SEKOLAH),
        _f("jenis_pendaftaran_id", "int", req=True,
           ref="ref.jenis_pendaftaran.jenis_pendaftaran_id"),
        _f("nipd", req=True),
        _f("tanggal_masuk_sekolah", "date", req=True),
        _f("jenis_keluar_id", ref="ref.jenis_keluar.jenis_keluar_id"),
        _f("tanggal_keluar", "date"),
        _f("sekolah_asal"),
        SOFT_DELETE,
    ), school_field="sekolah_id"),
    Entity("peserta_didik_longitudinal", "peserta_didik_longitudinal_id", "Peserta Didik", (
        _f("peserta_didik_id", "uuid", req=True, ref="peserta_didik.peserta_didik_id"),
        _f("semester_id", req=True, ref="ref.semester.semester_id"),
        _f("tinggi_badan", "int"),
        _f("berat_badan", "int"),
        _f("lingkar_kepala", "int"),
        _f("jarak_rumah_ke_sekolah_km", "decimal"),
        _f("waktu_tempuh_menit", "int"),
        _f("jumlah_saudara_kandung", "int"),
        SOFT_DELETE,
    ), semester_scoped=True),
    Entity("ptk", "ptk_id", "GTK", (
        _f("nama", req=True, owner=V),
        _f("nik", req=True),
        _f("nuptk", owner=V),
        _f("nip"),
        _f("jenis_kelamin", req=True),
        _f("tempat_lahir", req=True),
        _f("tanggal_lahir", "date", req=True, owner=V),
        _f("agama_id", "int", req=True, ref="ref.agama.agama_id"),
        _f("status_kepegawaian_id", "int", req=True,
           ref="ref.status_kepegawaian.status_kepegawaian_id"),
        _f("jenis_ptk_id", "int", req=True, ref="ref.jenis_ptk.jenis_ptk_id"),
        _f("pangkat_golongan_id", "int"),
        _f("nama_ibu_kandung", req=True),
        _f("email"),
        _f("no_hp"),
        _f("status_verval_ptk", "int", owner=C),
        SOFT_DELETE,
    ), verified_by="status_verval_ptk"),
    Entity("ptk_terdaftar", "ptk_terdaftar_id", "GTK", (
        _f("ptk_id", "uuid", req=True, ref="ptk.ptk_id"),
        _f("sekolah_id", "uuid", req=True, ref=SEKOLAH),
        _f("tahun_ajaran_id", "int", req=True, ref="ref.tahun_ajaran.tahun_ajaran_id"),
        _f("jenis_ptk_id", "int", req=True, ref="ref.jenis_ptk.jenis_ptk_id"),
        _f("nomor_surat_tugas", req=True),
        _f("tanggal_surat_tugas", "date", req=True),
        _f("tmt_tugas", "date", req=True),
        _f("ptk_induk", "int", req=True),
        _f("jenis_keluar_id", ref="ref.jenis_keluar.jenis_keluar_id"),
        _f("tgl_ptk_keluar", "date"),
        SOFT_DELETE,
    ), school_field="sekolah_id"),
    Entity("tugas_tambahan", "ptk_tugas_tambahan_id", "GTK", (
        _f("ptk_id", "uuid", req=True, ref="ptk.ptk_id"),
        _f("sekolah_id", "uuid", req=True, ref=SEKOLAH),
        _f("jabatan_ptk_id", "int", req=True, ref="ref.jabatan_tugas_ptk.jabatan_ptk_id"),
        _f("nomor_sk", req=True),
        _f("tmt_tambahan", "date", req=True),
        _f("tst_tambahan", "date"),
        _f("jumlah_jam", "int"),
        SOFT_DELETE,
    ), school_field="sekolah_id"),
    Entity("rombongan_belajar", "rombongan_belajar_id", "Rombongan Belajar & Jadwal", (
        _f("semester_id", req=True, ref="ref.semester.semester_id"),
        _f("sekolah_id", "uuid", req=True, ref=SEKOLAH),
        _f("tingkat_pendidikan_id", "int", req=True,
           ref="ref.tingkat_pendidikan.tingkat_pendidikan_id"),
        _f("jurusan_sp_id"),
        _f("kurikulum_id", "int", req=True, ref="ref.kurikulum.kurikulum_id"),
        _f("nama", req=True),
        _f("ptk_id", "uuid", ref="ptk.ptk_id"),
        _f("id_ruang", "uuid", ref="ruang.id_ruang"),
        _f("jenis_rombel", "int", req=True),
        SOFT_DELETE,
    ), semester_scoped=True, school_field="sekolah_id"),
    Entity("anggota_rombel", "anggota_rombel_id", "Rombongan Belajar & Jadwal", (
        _f("rombongan_belajar_id", "uuid", req=True,
           ref="rombongan_belajar.rombongan_belajar_id"),
        _f("peserta_didik_id", "uuid", req=True, ref="peserta_didik.peserta_didik_id"),
        _f("jenis_pendaftaran_id", "int", ref="ref.jenis_pendaftaran.jenis_pendaftaran_id"),
        SOFT_DELETE,
    )),
    Entity("pembelajaran", "pembelajaran_id", "Pembelajaran", (
        _f("rombongan_belajar_id", "uuid", req=True,
           ref="rombongan_belajar.rombongan_belajar_id"),
        _f("semester_id", req=True, ref="ref.semester.semester_id"),
        _f("mata_pelajaran_id", "int", req=True, ref="ref.mata_pelajaran.mata_pelajaran_id"),
        _f("ptk_terdaftar_id", "uuid", ref="ptk_terdaftar.ptk_terdaftar_id"),
        _f("nama_mata_pelajaran"),
        _f("sk_mengajar"),
        _f("tanggal_sk_mengajar", "date"),
        _f("jam_mengajar_per_minggu", "int", req=True),
        _f("status_di_kurikulum", "int"),
        SOFT_DELETE,
    ), semester_scoped=True),
    Entity("nilai", "nilai_id", "Nilai", (
        _f("peserta_didik_id", "uuid", req=True, ref="peserta_didik.peserta_didik_id"),
        _f("pembelajaran_id", "uuid", req=True, ref="pembelajaran.pembelajaran_id"),
        _f("semester_id", req=True, ref="ref.semester.semester_id"),
        _f("nilai_angka", "int", req=True),
        _f("predikat"),
        _f("deskripsi"),
        SOFT_DELETE,
    ), semester_scoped=True),
    Entity("jadwal", "jadwal_id", "Rombongan Belajar & Jadwal", (
        _f("rombongan_belajar_id", "uuid", req=True,
           ref="rombongan_belajar.rombongan_belajar_id"),
        _f("pembelajaran_id", "uuid", req=True, ref="pembelajaran.pembelajaran_id"),
        _f("semester_id", req=True, ref="ref.semester.semester_id"),
        _f("hari", "int", req=True),
        _f("jam_ke", "int", req=True),
        _f("id_ruang", "uuid", ref="ruang.id_ruang"),
        SOFT_DELETE,
    ), semester_scoped=True),
    Entity("pengguna", "pengguna_id", "Sekolah", (
        _f("sekolah_id", "uuid", req=True, ref=SEKOLAH),
        _f("username", req=True),
        _f("nama", req=True),
        _f("peran", req=True),  # operator | kepala_sekolah | ptk
        _f("ptk_id", "uuid", ref="ptk.ptk_id"),
        _f("password", owner=C),  # a salted slow hash, set by the centre
        _f("aktif", "int"),
        SOFT_DELETE,
    ), school_field="sekolah_id"),
    # The centre's clock bound on an install whose PC clock ran ahead (merge rule 5):
    # events seq_from..seq_to of install_id count as written at hlc_from, hlc_from + 1, ...
    # One finding of Validasi Pusat on one row of the school (``row_ref`` of ``entity``),
    # written and cleared (soft_delete = 1) by the centre alone.
    Entity(VALIDASI_PUSAT, "validasi_pusat_id", "Referensi", (
        _f("rule_id", owner=C),  # every field filled by the centre: none for a form to ask
        _f("severity", owner=C),
        _f("entity", owner=C),
        _f("row_ref", "uuid", owner=C),
        _f("field", owner=C),
        _f("message", owner=C),
        _f("detail", owner=C),
        _f("sekolah_lain", owner=C),  # the other school of the finding (its NPSN)
        _f("soft_delete", "int", owner=C),
    )),
    Entity(CLOCK_BOUND, "koreksi_jam_id", "Sekolah", (
        _f("install_id", "uuid", owner=C),
        _f("seq_from", "int", owner=C),
        _f("seq_to", "int", owner=C),
        _f("hlc_from", "int", owner=C),
    )),
    _ref("semester", "semester_id", "text",
         _f("tahun_ajaran_id", "int", req=True, ref="ref.tahun_ajaran.tahun_ajaran_id"),
         _f("semester", "int", req=True),
         _f("tanggal_mulai", "date", req=True),
         _f("tanggal_selesai", "date", req=True)),
    _ref("tahun_ajaran", "tahun_ajaran_id", "int",
         _f("tanggal_mulai", "date", req=True),
         _f("tanggal_selesai", "date", req=True)),
    _ref("mata_pelajaran", "mata_pelajaran_id", "int",
         _f("kelompok"),
         _f("jenjang")),
    _ref("kurikulum", "kurikulum_id", "int"),
    _ref("agama", "agama_id", "int"),
    _ref("jenis_keluar", "jenis_keluar_id", "text",
         _f("keluar_pd", "int"),
         _f("keluar_ptk", "int")),
    _ref("jenis_pendaftaran", "jenis_pendaftaran_id", "int"),
    _ref("jenis_ptk", "jenis_ptk_id", "int",
         _f("guru", "int")),
    _ref("status_kepegawaian", "status_kepegawaian_id", "int"),
    _ref("jabatan_tugas_ptk", "jabatan_ptk_id", "int",
         _f("kepala_sekolah", "int")),
    _ref("bentuk_pendidikan", "bentuk_pendidikan_id", "int",
         _f("jenjang"),
         _f("usia_min", "int"),
         _f("usia_max", "int")),
    _ref("tingkat_pendidikan", "tingkat_pendidikan_id", "int",
         _f("jenjang")),
    _ref("mst_wilayah", "kode_wilayah", "text",
         _f("id_level_wilayah", "int", req=True),
         _f("mst_kode_wilayah")),
)

BY_NAME: dict[str, Entity] = {e.name: e for e in ENTITIES}
TABS = ("Sekolah", "Sarpras", "Peserta Didik", "GTK", "Rombongan Belajar & Jadwal",
        "Pembelajaran", "Nilai", "Referensi")


def entity(name: str) -> Entity:
    """The entity called ``name``; UnknownEntity (a ValueError) if there is none."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownEntity(name) from None


class UnknownEntity(InputError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown entity {self.name!r}; known: {', '.join(BY_NAME)}"


def field_types() -> dict[str, str]:
    """Every field name across all entities with its one type (see test_schema)."""
    types: dict[str, str] = {}
    for e in ENTITIES:
        types[e.key] = "uuid"
        for f in e.fields:
            types.setdefault(f.name, f.type)
    return types
