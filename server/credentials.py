"""Secrets of the centre: how they are made, stored and checked (DESIGN.md section 7).

- Registration codes and passwords: a slow salted hash (scrypt), stored as
  ``scrypt$n$r$p$salt$hash``.
- Install tokens: long random strings, stored as an HMAC-SHA256 keyed with the
  server secret (``DATA/secret``, made on first start, readable by the owner only).
- The admin secret (``DATA/admin.token``) authenticates ``AdminRequest``s.
- The centre's signing key (``DATA/centre.key``: an Ed25519 seed, made on first
  start, owner only) signs every centre event (protocol R18); installs learn its
  public half when they register.

No SQL here: the registry's tables are engine/storage/registry.py's (``SqlRegistry``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from selaras.engine.signatures import CentreKey

CENTRE_KEY = "centre.key"

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
KODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud over the phone


def new_kode() -> str:
    """A registration code like ``K7PQ-3MZX-R2TA``."""
    raw = "".join(secrets.choice(KODE_ALPHABET) for _ in range(12))
    return "-".join(raw[i:i + 4] for i in range(0, 12, 4))


def normal_kode(kode: str) -> str:
    """Codes are compared without case, spaces or dashes."""
    return "".join(ch for ch in kode.upper() if ch.isalnum())


def new_token() -> str:
    return secrets.token_urlsafe(32)


def slow_hash(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def slow_verify(secret: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        mine = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                              p=int(p))
    except ValueError:
        return False
    return hmac.compare_digest(mine.hex(), digest)


def token_hash(key: bytes, token: str) -> str:
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def token_matches(key: bytes, token: str, stored: str) -> bool:
    return hmac.compare_digest(token_hash(key, token), stored)


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def private_secret(path: Path, make: bool = True) -> bytes:
    """Read a secret file, making it (32 random bytes, hex, mode 0600) if absent."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        if not make:
            raise
    data = secrets.token_hex(32).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


def centre_key(data: Path) -> CentreKey:
    """The centre's signing key in data folder ``data``, made on first use."""
    return CentreKey(bytes.fromhex(private_secret(data / CENTRE_KEY).decode()))
