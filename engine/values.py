"""Field values: parsing what people type, and the canonical text of a value.

Inside events a value is a JSON scalar in its canonical form: uuid and text as
str, int as int, date as 'YYYY-MM-DD', decimal as a str with exactly
``DECIMAL_SCALE`` places. Every replica and both stores produce these forms,
so equal data compares and checksums equal everywhere (DESIGN.md section 5).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import InputError
from .schema import DECIMAL_SCALE, Entity, Field

Value = str | int | None

_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_MAX_INT = 2**63 - 1
# The limits of a value on every path: typed, imported, or decoded from the wire or a bundle.
MAX_TEXT = 4096  # characters
MAX_DECIMAL = 10**12  # a decimal's magnitude stays below this: DECIMAL(18, 6)
FIRST_DATE, LAST_DATE = dt.date.min, dt.date.max  # years 1 to 9999


class BadValue(InputError):
    """A value that does not fit its field."""

    def __init__(self, entity: str, field: str, value: object, expected: str) -> None:
        super().__init__(entity, field, value, expected)
        self.entity, self.field, self.value, self.expected = entity, field, value, expected

    def __str__(self) -> str:
        return f"{self.entity}.{self.field}: {self.value!r} is not {self.expected}"


def parse(e: Entity, f: Field, raw: object) -> Value:
    """The canonical value of ``raw`` (a str typed by a person, or a JSON scalar)."""
    if raw is None or raw == "" and f.type != "text":
        return None
    try:
        match f.type:
            case "text":
                if not isinstance(raw, str) or len(raw) > MAX_TEXT:
                    raise ValueError
                return raw
            case "uuid":
                if not isinstance(raw, str):
                    raise ValueError
                return str(uuid.UUID(raw))
            case "int":
                if isinstance(raw, bool) or not isinstance(raw, int | str):
                    raise ValueError
                n = int(raw)
                if abs(n) > _MAX_INT:
                    raise ValueError
                return n
            case "date":
                if not isinstance(raw, str):
                    raise ValueError
                return dt.date.fromisoformat(raw).isoformat()
            case "decimal":
                if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                    raise ValueError
                d = Decimal(str(raw)).quantize(_QUANTUM)
                if not d.is_finite() or abs(d) >= MAX_DECIMAL:
                    raise ValueError
                return str(d)
    except (ValueError, TypeError, InvalidOperation):
        pass
    raise BadValue(e.name, f.name, raw, EXPECTED[f.type])


EXPECTED = {
    "text": f"text of at most {MAX_TEXT} characters",
    "uuid": "a UUID",
    "int": "a whole number",
    "date": "a date (YYYY-MM-DD)",
    "decimal": "a number",
}


def canonical_text(v: Value) -> str:
    """A value's place in a row's checksum text: NULL marked, length-prefixed."""
    if v is None:
        return "-"
    s = str(v)
    return f"{len(s)}:{s}"


def row_digest(values: Iterable[Value]) -> str:
    return hashlib.md5("".join(canonical_text(v) for v in values).encode()).hexdigest()


def table_digest(rows: Sequence[Sequence[Value]]) -> str:
    """The digest of a table: its row digests in key order (column 0 is the key)."""
    digests = [row_digest(r) for r in sorted(rows, key=lambda r: str(r[0]))]
    return hashlib.md5(",".join(digests).encode()).hexdigest()


def from_python(f: Field, v: Any) -> Value:
    """A value read back from storage (date, Decimal, UUID objects) in canonical form."""
    if v is None:
        return None
    if f.type == "decimal":
        return str(Decimal(v).quantize(_QUANTUM))
    if f.type in ("date", "uuid"):
        return str(v)
    return int(v) if f.type == "int" else str(v)
