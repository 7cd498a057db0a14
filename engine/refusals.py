"""Every refusal code, and the one catalogue of what a school reads for it.

Bahasa Indonesia, from the school's side (DESIGN.md section 8). The centre
sends ``TEXT[code]`` in a Refuse unless a ``Detail`` says more precisely what
was wrong; the client shows ``TEXT[code]`` for a refusal it knows, so an
operator reads the same words whichever side spoke. Codes: docs/protocol.md,
section 7.
"""

from __future__ import annotations

import enum


class Code(enum.StrEnum):
    """Every refusal code (docs/protocol.md, section 7)."""

    VERSION_MISMATCH = "version_mismatch"
    BAD_CREDENTIAL = "bad_credential"
    CODE_RESET = "code_reset"
    INSTALL_REVOKED = "install_revoked"
    ACCOUNT_DISABLED = "account_disabled"
    NOT_PRINCIPAL = "not_principal"
    INVALID_DATA_PENDING = "invalid_data_pending"
    SERVER_BUSY = "server_busy"
    MESSAGE_TOO_LARGE = "message_too_large"
    MALFORMED_MESSAGE = "malformed_message"
    UNEXPECTED_MESSAGE = "unexpected_message"
    FORBIDDEN = "forbidden"
    WINDOW_OVERRUN = "window_overrun"
    EVENT_COLLISION = "event_collision"
    BAD_SIGNATURE = "bad_signature"
    INTERNAL_ERROR = "internal_error"
    IDLE_TIMEOUT = "idle_timeout"
    TRANSFER_REFUSED = "transfer_refused"


TEXT: dict[Code, str] = {
    Code.VERSION_MISMATCH: "versi aplikasi tidak cocok dengan server pusat: perbarui aplikasi",
    Code.BAD_CREDENTIAL: "instalasi ini tidak dikenal server pusat (kredensial salah)",
    Code.CODE_RESET: "kode registrasi sudah direset: daftarkan ulang instalasi ini",
    Code.INSTALL_REVOKED: "instalasi ini sudah dicabut oleh admin: hubungi dinas",
    Code.ACCOUNT_DISABLED: "akun pengguna instalasi ini sudah dinonaktifkan: hubungi dinas",
    Code.NOT_PRINCIPAL: "pengiriman data harus oleh kepala sekolah",
    Code.INVALID_DATA_PENDING: "masih ada data invalid di Validasi Lokal: perbaiki dulu",
    Code.SERVER_BUSY: "server pusat sedang sibuk: coba lagi sebentar lagi",
    Code.MESSAGE_TOO_LARGE: "pesan terlalu besar",
    Code.MALFORMED_MESSAGE: "pesan tidak dapat dibaca",
    Code.UNEXPECTED_MESSAGE: "pesan tidak diharapkan",
    Code.FORBIDDEN: "instalasi hanya boleh mengirim data miliknya sendiri",
    Code.WINDOW_OVERRUN: "batch melebihi jendela yang disepakati",
    Code.EVENT_COLLISION: ("data folder ini salinan atau pemulihan dari cadangan "
                           "(bertabrakan dengan data di server pusat): daftarkan ulang folder ini"),
    Code.BAD_SIGNATURE: "tanda tangan data pusat tidak sah",
    Code.INTERNAL_ERROR: "server pusat gagal memproses: coba lagi nanti",
    Code.IDLE_TIMEOUT: "sesi ditutup karena terlalu lama tanpa kemajuan: sinkronkan lagi",
    Code.TRANSFER_REFUSED: "Tarik Data PD/PTK ditolak server pusat",
}


class Detail(enum.StrEnum):
    """What exactly was wrong, where a refusal says more than its code."""

    TEXT_FRAME = "pesan harus berupa frame biner"
    BAD_BATCH = "isi batch tidak dapat dibaca"
    BATCH_COUNT = "jumlah event batch tidak sesuai"
    BAD_VECTOR = "vektor versi tidak valid"
    BAD_KODE = "NPSN atau kode registrasi salah"
    BAD_PASSWORD = "kata sandi salah"
    UNKNOWN_ACCOUNT = ("akun tidak dikenal untuk sekolah ini; gunakan akun operator yang "
                       "sudah terdaftar")
    PROTOCOL_VERSION = "versi protokol aplikasi tidak cocok; perbarui aplikasi"
    ACK_UNKNOWN_BATCH = "ack untuk batch yang tidak ada"
    BATCH_TOTAL = "jumlah batch tidak sesuai"
    NOT_FINISHED = "sesi belum selesai"
    PULL_SENDS = "mode Tarik Data tidak boleh mengirim data"
    BATCH_ORDER = "nomor batch tidak berurutan"
    BATCH_TOO_LARGE = "batch melebihi batas"
    BAD_COMPARE = "permintaan perbandingan tidak valid"
    ADMIN_SECRET = "admin secret is wrong"  # for the dinas's tools, not a school
    BUSY_SCHOOL = "terlalu banyak sesi sekaligus dari sekolah ini"
    BUSY_INSTALL = "instalasi ini masih punya sesi yang berjalan"
    TOO_MANY_ATTEMPTS = "terlalu banyak percobaan kode atau kata sandi"
    ACCOUNT_EXISTS = "akun itu sudah ada di sekolah ini: pakai Tukar Pengguna"
    NOT_PRINCIPAL_ACCOUNT = "akun itu bukan akun kepala sekolah"
    NO_CONSENT = ("belum ada Persetujuan Pengiriman Data kepala sekolah: jalankan "
                  "Tukar Pengguna dan Lembar Konfirmasi dulu")
    BAD_CONSENT = "persetujuan pengiriman tidak sah (bukan tanda tangan kepala sekolah ini)"
    NOT_COVERED = ("ada perubahan setelah Lembar Konfirmasi: kepala sekolah harus "
                   "mengonfirmasi ulang")


def busy(reason: str, retry_after_s: float) -> str:
    """A server_busy message that says until when."""
    return f"{reason}: coba lagi dalam {max(1, round(retry_after_s))} detik"


def unexpected(message_type: str) -> str:
    """The detail of an unexpected message: which one."""
    return f"pesan {message_type} tidak diharapkan di tahap ini"


def text_of(code: str, otherwise: str) -> str:
    """What the school reads for refusal ``code``; ``otherwise`` for a code this version
    does not know (a newer centre's)."""
    try:
        return TEXT[Code(code)]
    except ValueError:
        return otherwise
