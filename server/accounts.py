"""The school's accounts at the centre: operators and the principal (kepala sekolah).

The registry's accounts are the one source of truth for who may register an
install, log in and consent to a sync: the password's slow hash, the role,
whether the account is disabled, and for a principal the PTK it belongs to and
the signing key of its consents (``engine/consent.py``), sealed with the
password. Each account the dinas or the principal's procedure adds or changes is
mirrored into the school's data as the centre's event on its ``pengguna`` row:
the school's own row for that username when there is one (the install names
it, or the centre's copy of the school has it), else a row whose id derives
from the account. So the school sees its users in its own tables, and a
school's edit of a pengguna row changes nothing of who may do what
(docs/design.md, "Accounts").

Every function runs on the writer (one transaction each) and takes the
password's slow hash ready made: the caller hashes on the credential pool.
"""

from __future__ import annotations

from typing import Any

from selaras.engine import consent, passwords
from selaras.engine.events import centre_origin, school_row_id, stable_row_id
from selaras.engine.schema import entity
from selaras.engine.store import CentreStore, Registry, centre_event
from selaras.engine.values import parse

OPERATOR, PRINCIPAL = "operator", "kepala_sekolah"
ROLES = (OPERATOR, PRINCIPAL)


class AccountError(Exception):
    """An account change that cannot be made; the message says why (Indonesian)."""


def sealed_profile(role: str, password: str) -> dict[str, str]:
    """For a principal, a new signing key: its public half and the private half sealed with
    ``password`` (slow: run it where the password is hashed)."""
    if role != PRINCIPAL:
        return {}
    seed, public = consent.new_key()
    return {"public_key": public, "sealed_key": passwords.seal(seed, password)}


def add(centre: CentreStore, registry: Registry, npsn: str, email: str, role: str,
        password_hash: str, now_ms: int, **profile: str) -> None:
    if role not in ROLES:
        raise AccountError(f"peran harus salah satu dari {', '.join(ROLES)}, bukan {role!r}")
    if registry.school(npsn) is None:
        raise AccountError(f"sekolah {npsn} belum terdaftar")
    if registry.account(npsn, email) is not None:
        raise AccountError(f"akun {email} sudah ada di sekolah {npsn}")
    profile["pengguna_id"] = profile.get("pengguna_id") or pengguna_of(centre, npsn, email)
    with centre.transaction():
        registry.add_account(npsn, email, role, password_hash, now_ms, **profile)
        mirror(centre, registry, npsn, email, now_ms)


def pengguna_of(centre: CentreStore, npsn: str, email: str) -> str:
    """The school's own pengguna row for ``email``, as the centre holds the school; else
    the id derived from the account."""
    for row_id, row in centre.school(npsn).rows("pengguna").items():
        if str(row.get("username") or "").strip().lower() == email \
                and not row.get("soft_delete"):
            return row_id
    return stable_row_id("pengguna", npsn, email)


def update(centre: CentreStore, registry: Registry, npsn: str, email: str, now_ms: int,
           **values: Any) -> None:
    """Set a known account's password_hash, disabled, public_key or sealed_key."""
    if registry.account(npsn, email) is None:
        raise AccountError(f"tidak ada akun {email} di sekolah {npsn}")
    with centre.transaction():
        registry.update_account(npsn, email, **values)
        mirror(centre, registry, npsn, email, now_ms)


def mirror(centre: CentreStore, registry: Registry, npsn: str, email: str,
           now_ms: int) -> None:
    """The account as the school's pengguna row, written as the centre's signed event. On
    the school's own row only what the registry decides (peran, aktif): the rest is the
    school's, and writing it too would make conflicts of equal intent."""
    account = registry.account(npsn, email)
    assert account is not None
    store = centre.school(npsn)
    e = entity("pengguna")
    derived = stable_row_id("pengguna", npsn, email)
    row_id = account["pengguna_id"] or derived
    row = {"peran": account["role"], "aktif": 0 if account["disabled"] else 1}
    if row_id == derived:
        row |= {"sekolah_id": school_row_id(npsn), "username": email,
                "nama": account["nama"] or email, "ptk_id": account["ptk_id"] or None}
    row = {k: parse(e, e.by_name[k], v) for k, v in row.items()}
    centre.append_centre(npsn, [centre_event(store, centre_origin(npsn), "pengguna",
                                             row_id, row, now_ms)])
