"""Secrets of the centre: how they are made, stored and checked (DESIGN.md section 7).

- Registration codes and passwords: a slow salted hash (engine/passwords.py).
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

def new_token() -> str:
    return secrets.token_urlsafe(32)


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
