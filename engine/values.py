"""Field values: parsing what people type, and the canonical text of a value.

Inside events a value is a JSON scalar in its canonical form: uuid and text as
str, int as int, date as 'YYYY-MM-DD', decimal as a str with exactly
``DECIMAL_SCALE`` places. Every replica and both stores produce these forms,
so equal data compares and checksums equal everywhere (DESIGN.md section 5).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import InputError
from .schema import DECIMAL_SCALE, Entity, Field

Value = str | int | None

_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_MAX_INT = 2**63 - 1
_WHOLE = re.compile(r"[+-]?[0-9]+")
# The limits of a value on every path: typed, imported, or decoded from the wire or a bundle.
MAX_TEXT = 4096  # characters
MAX_DECIMAL = 10**12  # a decimal's magnitude stays below this: DECIMAL(18, 6)
FIRST_DATE, LAST_DATE = dt.date.min, dt.date.max  # years 1 to 9999
SHOWN = 40  # characters of a bad value an error line echoes


class BadValue(InputError):
    """A value that does not fit its field; ``problem`` says how (``PROBLEMS``) and
    ``limit`` what the bound is, for a value out of range or too long."""

    def __init__(self, entity: str, field: str, value: object, expected: str,
                 problem: str = "type", limit: str = "") -> None:
        super().__init__(entity, field, value, expected, problem, limit)
        self.entity, self.field, self.value, self.expected = entity, field, value, expected
        self.problem, self.limit = problem, limit

    def __str__(self) -> str:
        v = shown(self.value)
        match self.problem:
            case "range":
                what = f"{v} di luar batas {self.expected} ({self.limit})"
            case "long":
                n = len(self.value) if isinstance(self.value, str) else 0
                what = f"{v} terlalu panjang: {n} karakter ({self.limit})"
            case "nested":
                kind = "objek" if str(self.value)[:1] == "{" else "daftar"
                what = f"berisi {kind} {v}, padahal harus satu nilai ({self.expected})"
            case _:
                what = f"{v} bukan {self.expected}"
        return f"{self.entity}.{self.field}: {what}; perbaiki nilainya"


# How a value can fail its field: not of its type, a number out of its type's range,
# a text longer than MAX_TEXT, a list or an object (JSON) where one value goes.
PROBLEMS = ("type", "range", "long", "nested")


def shown(value: object) -> str:
    """A bad value as an error line echoes it: quoted, on one line, and no more than
    its first ``SHOWN`` characters (a 5000-character value is not worth a screen)."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= SHOWN:
        return repr(text) if isinstance(value, str) else text
    cut = text[:SHOWN]
    return (repr(cut) if isinstance(value, str) else cut) + "..."


def parse(e: Entity, f: Field, raw: object) -> Value:
    """The canonical value of ``raw`` (a str typed by a person, or a JSON scalar)."""
    if raw is None or raw == "" and f.type != "text":
        return None
    if isinstance(raw, list | dict | tuple):  # JSON where one value goes
        raise bad_value(e, f, raw, "nested")
    problem = "type"
    try:
        match f.type:
            case "text":
                if not isinstance(raw, str):
                    raise ValueError
                if len(raw) > MAX_TEXT:
                    problem = "long"
                    raise ValueError
                return raw
            case "uuid":
                if not isinstance(raw, str):
                    raise ValueError
                return str(uuid.UUID(raw))
            case "int":
                if isinstance(raw, bool) or not isinstance(raw, int | str):
                    raise ValueError
                if isinstance(raw, str) and _WHOLE.fullmatch(raw.strip()):
                    problem = "range"  # if int() fails now, it has too many digits
                n = int(raw)
                if abs(n) > _MAX_INT:
                    problem = "range"
                    raise ValueError
                return n
            case "date":
                if not isinstance(raw, str):
                    raise ValueError
                return dt.date.fromisoformat(raw).isoformat()
            case "decimal":
                if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                    raise ValueError
                d = Decimal(str(raw))
                if d.is_finite() and abs(d) >= MAX_DECIMAL:
                    problem = "range"
                    raise ValueError
                d = d.quantize(_QUANTUM)
                if not d.is_finite() or abs(d) >= MAX_DECIMAL:  # 999999999999.9999999 rounds up
                    problem = "range" if d.is_finite() else problem
                    raise ValueError
                return str(d)
    except (ValueError, TypeError, InvalidOperation):
        pass
    raise bad_value(e, f, raw, problem)


def bad_value(e: Entity, f: Field, raw: object, problem: str = "type") -> BadValue:
    """The BadValue for ``raw`` in field ``f``, with the words for its type and bounds."""
    limit = LIMITS.get("text" if problem == "long" else f.type, "")
    return BadValue(e.name, f.name, raw, EXPECTED[f.type], problem, limit)


# What each type takes, and the bounds of its values, in the words of an error line.
EXPECTED = {
    "text": "teks",
    "uuid": "UUID",
    "int": "bilangan bulat",
    "date": "tanggal (YYYY-MM-DD)",
    "decimal": "angka",
}
LIMITS = {
    "text": f"paling panjang {MAX_TEXT} karakter",
    "int": f"-{_MAX_INT} s.d. {_MAX_INT}",
    "decimal": "lebih dari -1.000.000.000.000 dan kurang dari 1.000.000.000.000",
}


def is_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
    except ValueError:
        return False
    return True


def canonical_text(v: Value) -> str:
    """A value's place in a row's checksum text: NULL marked, length-prefixed."""
    if v is None:
        return "-"
    s = str(v)
    return f"{len(s)}:{s}"


# A table's digest is order-independent, so it can be kept up to date as rows
# change (add a row's hash, subtract it) instead of recomputed (DESIGN.md section 5):
# the count of rows and the exact sum of their hashes, per bucket of keys. Every
# store computes the same numbers (DuckDB in SQL, PostgreSQL and MemoryStore here).
HASH_HEX = 15  # a row's hash: the first 60 bits of the md5 of its canonical text
BUCKETS = 256  # a row's bucket: the first byte of the md5 of its key


def row_hash(values: Iterable[Value]) -> int:
    """The hash of a row (its key first, then its fields in schema order)."""
    text = "".join(canonical_text(v) for v in values)
    return int(hashlib.md5(text.encode()).hexdigest()[:HASH_HEX], 16)


def bucket_of(key: str) -> int:
    return int(hashlib.md5(key.encode()).hexdigest()[:2], 16)


def digest(rows: int, total: int) -> str:
    """The digest shown for ``rows`` rows whose hashes sum to ``total``."""
    return hashlib.md5(f"{rows}:{total}".encode()).hexdigest()


def table_digest(rows: Sequence[Sequence[Value]]) -> str:
    """The digest of a table, computed from its rows (column 0 is the key)."""
    return digest(len(rows), sum(row_hash(r) for r in rows))


EMPTY_DIGEST = digest(0, 0)

DigestChange = dict[tuple[str, int], list[int]]  # (school, bucket) -> [rows, hash total]


def digest_change(e: Entity, added: Iterable[Sequence[Any]],
                  removed: Iterable[Sequence[Any]] = ()) -> DigestChange:
    """What rows (school first, then ``e``'s columns, as a store reads them back)
    ``added`` to ``e``'s table and ``removed`` from it change in its digests."""
    change: DigestChange = {}
    for sign, rows in ((1, added), (-1, removed)):
        for school, key, *values in rows:
            canonical = [str(key), *(from_python(f, v) for f, v in
                                     zip(e.fields, values, strict=True))]
            d = change.setdefault((school, bucket_of(str(key))), [0, 0])
            d[0] += sign
            d[1] += sign * row_hash(canonical)
    return change


def from_python(f: Field, v: Any) -> Value:
    """A value read back from storage (date, Decimal, UUID objects) in canonical form."""
    if v is None:
        return None
    if f.type == "decimal":
        return str(Decimal(v).quantize(_QUANTUM))
    if f.type in ("date", "uuid"):
        return str(v)
    return int(v) if f.type == "int" else str(v)


def assignments(items: Iterable[str]) -> dict[str, str]:
    """``["nama=Ahmad", "rt=3"]`` as ``{"nama": "Ahmad", "rt": "3"}``, as a command line
    gives fields; InputError for an item without ``=`` or a field given twice."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"{shown(item)} is not field=value")
        if name in out:
            raise InputError(f"field {shown(name)} given twice")
        out[name] = value
    return out
