"""Slow salted hashes of secrets people type: registration codes and passwords.

One format everywhere, ``scrypt$n$r$p$salt$hash``: the centre keeps its
accounts' passwords and each school's code this way, and an install keeps the
code it registered with, so Tukar Pengguna can check it with no line. Also
the principal's signing key, sealed with a key derived from the password
(``seal``/``unseal``): only the password opens it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
KODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud over the phone


def new_kode() -> str:
    """A registration code like ``K7PQ-3MZX-R2TA``."""
    raw = "".join(secrets.choice(KODE_ALPHABET) for _ in range(12))
    return "-".join(raw[i:i + 4] for i in range(0, 12, 4))


def normal_kode(kode: str) -> str:
    """Codes are compared without case, spaces or dashes."""
    return "".join(ch for ch in kode.upper() if ch.isalnum())


def _scrypt(secret: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R,
            p: int = SCRYPT_P) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p)


def slow_hash(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def slow_verify(secret: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        mine = _scrypt(secret, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(mine.hex(), digest)


def seal(secret: bytes, password: str) -> str:
    """``secret`` encrypted (AES-GCM) under a key scrypt derives from ``password``."""
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    sealed = AESGCM(_scrypt(password, salt)[:32]).encrypt(nonce, secret, None)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${nonce.hex()}${sealed.hex()}"


def unseal(sealed: str, password: str) -> bytes | None:
    """The secret ``seal`` sealed; None if the password is wrong (or ``sealed`` is not one)."""
    try:
        _, n, r, p, salt, nonce, data = sealed.split("$")
        key = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))[:32]
        return AESGCM(key).decrypt(bytes.fromhex(nonce), bytes.fromhex(data), None)
    except (ValueError, InvalidTag):
        return None
