"""Rows found by what people know them by, not by UUID.

A student by NISN, NIK or NIPD, a teacher by NUPTK, NIK or NIP, a rombel by
its name, the school by its NPSN, a user by username; any row by its id. The
operator's ``selaras edit`` and the centre's ``admin edit`` and Verval name
rows the same way. A key that fits no row, or more than one, is an EditError
that says which rows it fits, by name.
"""

from __future__ import annotations

import uuid

from .labels import entity_label, label
from .replica import EditError
from .schema import entity
from .store import Store

# Per entity, the fields a row is known by, in the order they are tried.
KEYS: dict[str, tuple[str, ...]] = {
    "peserta_didik": ("nisn", "nik"),
    "ptk": ("nuptk", "nik", "nip"),
    "rombongan_belajar": ("nama",),
    "sekolah": ("npsn",),
    "pengguna": ("username",),
}
ROW_HELP = ("ROW is what people know the row by: a student's NISN, NIK or NIPD, a "
            "teacher's NUPTK, NIK or NIP, a rombel's name, the school's NPSN; or its id.")
ROW_HELP_SHORT = "NISN, NIK, NUPTK, nama rombel, NPSN, atau id barisnya"
SHOWN_AMBIGUOUS = 5  # rows an ambiguous key lists by name


def find_row(store: Store, entity_name: str, key: str) -> str:
    """The id of the one live row of ``entity_name`` that ``key`` names."""
    e = entity(entity_name)
    rows = store.rows(e.name)
    try:
        row_id = str(uuid.UUID(key))
    except ValueError:
        pass
    else:
        if row_id in rows:
            return row_id
        raise EditError(f"{entity_label(e.name)} tidak punya baris {row_id}")
    wanted = _normal(key)
    fields = KEYS.get(e.name, ())
    if not wanted:  # an empty key would name every row whose key field is empty
        raise EditError(f"baris {entity_label(e.name)} tidak disebut: beri {ROW_HELP_SHORT}")
    found = [row_id for row_id, row in rows.items() if not row.get("soft_delete")
             and any(_normal(row.get(f)) == wanted for f in fields)]
    if e.name == "peserta_didik":  # the school's own number, on the registration
        registered = store.rows("registrasi_peserta_didik").values()
        found += [str(r["peserta_didik_id"]) for r in registered
                  if not r.get("soft_delete") and _normal(r.get("nipd")) == wanted
                  and str(r["peserta_didik_id"]) not in found]
    if len(found) == 1:
        return found[0]
    known = ", ".join(label(e.name, f) for f in fields) + (", NIPD" if e.name == "peserta_didik"
                                                            else "")
    if not found:
        by = f" dengan {known}" if known else ""
        raise EditError(f"tidak ada {entity_label(e.name)}{by} {key!r}"
                        + ("" if known else ": beri id barisnya"))
    names = "; ".join(describe(e.name, row_id, rows[row_id]) for row_id in found[:SHOWN_AMBIGUOUS])
    raise EditError(f"{key!r} cocok dengan {len(found)} {entity_label(e.name)}: {names}; "
                    "beri id barisnya")


def describe(entity_name: str, row_id: str, row: dict[str, object]) -> str:
    """"Ahmad Fauzi (NISN 0081234567)": the row's name and its first key that is filled
    (for a row known by none, its id)."""
    name = str(row.get("nama") or row.get("username") or "")
    for f in KEYS.get(entity_name, ()):
        value = row.get(f)
        if value and f != "nama":
            return f"{name} ({label(entity_name, f)} {value})".strip()
    return f"{name} ({row_id})" if name else row_id


def _normal(value: object) -> str:
    return str(value if value is not None else "").strip().lower()
