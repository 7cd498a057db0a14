"""Persetujuan Pengiriman Data: the principal's consent, signed, and what it covers.

The principal of a school (its kepala sekolah or Plt.) holds an Ed25519 key
pair: the public half is kept by the centre with the principal's account, the
private half travels sealed with the principal's password
(``passwords.seal``), so only someone who knows that password can sign. After
Validasi Lokal and the Lembar Konfirmasi Sinkronisasi, the principal signs a
``Consent``: who, when, the semester, the hash of the confirmed sheet, and the
version vector it covers. A push of install X is covered when every event of
X it holds has a seq at most ``consent.vector[X]``: changes made after the
confirmation are not sent under it. The centre checks the signature against
the account's key (docs/protocol.md, R20); a client that skips its own gate
and speaks the protocol directly cannot make one.

Sans-I/O: keys and times come in as arguments.
"""

from __future__ import annotations

import hashlib

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .clocks import VersionVector

DOMAIN = b"selaras consent v1\n"  # a consent signature is good for nothing else


class Consent(msgspec.Struct, frozen=True):
    npsn: str
    install: str  # the install whose events it covers (its origin)
    account: str  # the principal's account (an e-mail)
    ptk_id: str  # the PTK who holds the kepala sekolah tugas tambahan
    nama: str
    nip: str
    semester_id: str
    made_ms: int
    sheet_hash: str  # sha256 (hex) of the confirmed Lembar Konfirmasi
    vector: VersionVector  # what the install held when the principal confirmed
    signature: bytes = b""

    def covers(self, origin: str, seq: int) -> bool:
        return origin == self.install and seq <= self.vector.get(origin, 0)

    @property
    def digest(self) -> str:
        """The consent's hash as records and the centre's history show it."""
        return hashlib.sha256(encode(self)).hexdigest()


def signed_bytes(c: Consent) -> bytes:
    """What the principal signs: every field but the signature, the vector sorted."""
    return DOMAIN + msgspec.msgpack.encode(
        [c.npsn, c.install, c.account, c.ptk_id, c.nama, c.nip, c.semester_id, c.made_ms,
         c.sheet_hash, sorted(c.vector.items())])


def new_key() -> tuple[bytes, str]:
    """A principal's key pair: the private seed (32 bytes) and the public key (hex)."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes_raw(), public_of(key.private_bytes_raw())


def public_of(seed: bytes) -> str:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw).hex()


def sign(consent: Consent, seed: bytes) -> Consent:
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(signed_bytes(consent))
    return msgspec.structs.replace(consent, signature=signature)


def verify(consent: Consent, public_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
            consent.signature, signed_bytes(consent))
    except (InvalidSignature, ValueError):
        return False
    return True


def encode(consent: Consent) -> bytes:
    return msgspec.msgpack.encode(consent)


def decode(data: bytes) -> Consent | None:
    """A consent from its bytes; None if they are not one."""
    try:
        return msgspec.msgpack.decode(data, type=Consent)
    except msgspec.DecodeError:
        return None


def sheet_hash(sheet: object) -> str:
    """The hash of a confirmed sheet (any msgspec-encodable value, encoded canonically)."""
    return hashlib.sha256(msgspec.json.encode(sheet, order="sorted")).hexdigest()
