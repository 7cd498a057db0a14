"""Bundles: events carried between installs of one school on a USB stick.

The real app's sneaker-net file (.syc), done so that it can be imported any
number of times in any order: a bundle is one school's events that the
receiver may lack (``store.events_after(their_vector)``), with who made it.
Importing one is an ordinary ``store.append``: duplicates change nothing and
a gap is held back until the missing events come (DESIGN.md section 4).

Sans-I/O: ``encode`` gives bytes and ``decode`` takes bytes; the caller reads
and writes the files.

Layout: ``MAGIC`` (8 bytes: "SLRSBDL" and the envelope version, 0), the
SHA-256 of the rest (32 bytes), then one msgpack map (``Bundle``) whose batch
is ``Batch.to_bytes()``. The digest is checked before anything is decoded, so
a truncated or damaged file is told apart from a well-formed bundle with bad
events, and no damaged byte is ever trusted.

Errors (all ValueError, message in ``__str__``)::

    BundleError
    ├── NotABundle       the bytes do not start with MAGIC
    ├── BundleCorrupt    truncated or damaged: cannot be decoded, digest differs
    ├── BundleMismatch   another bundle format or schema version
    ├── WrongSchool      a bundle of another school
    └── NotOfSchool      a bundle holding another school's rows or centre events
"""

from __future__ import annotations

import hashlib
import re
import uuid

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from .clocks import VersionVector
from .errors import InputError
from .events import Batch, MalformedBatch, central_origins, school_row_id
from .schema import BY_NAME, SCHEMA_VERSION
from .values import is_uuid

MAGIC = b"SLRSBDL\x00"
FORMAT_VERSION = 1
_DIGEST = 32
MAX_BUNDLE_BYTES = 1 << 30  # one school's whole log fits many times over
_NPSN = re.compile(r"[0-9]{8}")


class Bundle(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    schema_version: int
    npsn: str
    origin: str  # the exporting install
    vector: VersionVector  # the exporter's vector when it exported
    batch: bytes  # Batch.to_bytes()
    # For the centre, by the dinas (the offline route): the principal's consent covering
    # the exporter's events, as a sync's Hello carries it (consent.encode; R20).
    consent: bytes = b""

    def events(self) -> Batch:
        """The events inside; BundleCorrupt if they do not decode, NotOfSchool if any
        belongs to another school than the bundle's."""
        try:
            batch = Batch.from_bytes(self.batch)
        except MalformedBatch as exc:
            raise BundleCorrupt(str(exc)) from None
        foreign = _foreign(batch, self.npsn)
        if foreign:
            raise NotOfSchool(self.npsn, foreign)
        return batch


def _foreign(batch: Batch, npsn: str) -> str | None:
    """What in ``batch`` belongs to another school than ``npsn``, if anything: a centre
    event signed for another school, the row of another school, or a row naming one."""
    central = central_origins(npsn)
    signed = pc.unique(batch.signatures["origin"].combine_chunks().storage).to_pylist()
    if any(str(uuid.UUID(bytes=o)) not in central for o in signed):
        return "a centre event of another school"
    school = uuid.UUID(school_row_id(npsn)).bytes
    for name, t in batch.tables.items():
        e = BY_NAME[name]
        for column in [c for c in ("row_id" if name == "sekolah" else None, e.school_field) if c]:
            ids = pc.drop_null(t[column].combine_chunks().storage)
            if len(ids) and not pc.all(pc.equal(ids, pa.scalar(school, ids.type))).as_py():
                return f"{name} rows of another school"
    return None


class _Head(msgspec.Struct):
    """What every format version keeps, read before the rest."""

    format: int
    schema_version: int
    npsn: str


def encode(*, npsn: str, origin: str, vector: VersionVector, batch: Batch,
           consent: bytes = b"") -> bytes:
    body = msgspec.msgpack.encode(Bundle(
        format=FORMAT_VERSION, schema_version=SCHEMA_VERSION, npsn=npsn, origin=origin,
        vector=dict(vector), batch=batch.to_bytes(), consent=consent))
    return MAGIC + hashlib.sha256(body).digest() + body


def is_bundle(head: bytes) -> bool:
    """Whether bytes (the start of a file will do) look like a bundle of any version."""
    return head.startswith(MAGIC[:-1])


def decode(data: bytes, *, npsn: str | None = None) -> Bundle:
    """The bundle in ``data``, checked whole and checked to belong to school ``npsn`` (the
    centre, which holds every school, takes it of any).

    Raises a BundleError subclass; the caller imports ``bundle.events()``.
    """
    if not is_bundle(data):
        raise NotABundle()
    if len(data) < len(MAGIC) + _DIGEST:
        raise BundleCorrupt("truncated")
    if data[len(MAGIC) - 1] != MAGIC[-1]:
        raise BundleMismatch("envelope version", data[len(MAGIC) - 1], MAGIC[-1])
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleCorrupt(f"larger than {MAX_BUNDLE_BYTES} bytes")
    digest, body = data[len(MAGIC):len(MAGIC) + _DIGEST], memoryview(data)[len(MAGIC) + _DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise BundleCorrupt("its content does not match its checksum")
    try:
        head = msgspec.msgpack.decode(body, type=_Head)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec lets the latter out
        raise BundleCorrupt(_reason(exc)) from None
    if head.format != FORMAT_VERSION:
        raise BundleMismatch("bundle format", head.format, FORMAT_VERSION)
    if head.schema_version != SCHEMA_VERSION:
        raise BundleMismatch("schema version", head.schema_version, SCHEMA_VERSION)
    if npsn is not None and head.npsn != npsn:
        raise WrongSchool(head.npsn, npsn)
    if not _NPSN.fullmatch(head.npsn):
        raise BundleCorrupt("its NPSN is not 8 digits")
    try:
        bundle = msgspec.msgpack.decode(body, type=Bundle)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BundleCorrupt(_reason(exc)) from None
    if not is_uuid(bundle.origin) or not all(
            is_uuid(o) and s >= 0 for o, s in bundle.vector.items()):
        raise BundleCorrupt("the exporter's origin or vector is not made of UUIDs")
    return bundle


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "text that is not UTF-8"
    text = str(exc)
    return "truncated" if "truncated" in text.lower() else text


class BundleError(InputError):
    """A bundle that cannot be imported here; nothing was imported."""


class NotABundle(BundleError):
    def __str__(self) -> str:
        return ("bukan file bundel selaras: pilih file yang dibuat 'selaras bundle export' "
                "di instalasi lain sekolah ini")


class BundleCorrupt(BundleError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        if self.reason == "truncated":
            how = "terpotong"
        elif "checksum" in self.reason:
            how = "isinya tidak cocok dengan checksum-nya"
        elif self.reason.startswith("larger than"):
            how = "terlalu besar"
        else:  # the decoder's own words (msgspec, Arrow) tell a developer, not an operator
            how = "isinya tidak dapat dibaca"
        return (f"bundel rusak atau tidak lengkap ({how}); tidak ada yang diimpor: salin "
                "ulang file bundel dari komputer pembuatnya, atau ekspor ulang di sana")


class NotOfSchool(BundleError):
    def __init__(self, npsn: str, what: str) -> None:
        super().__init__(npsn, what)
        self.npsn, self.what = npsn, what

    def __str__(self) -> str:
        if self.what == "a centre event of another school":
            what = "data pusat milik sekolah lain"
        elif self.what.endswith(" rows of another school"):
            what = f"baris {self.what.split()[0]} milik sekolah lain"
        else:
            what = self.what
        return (f"bundel sekolah {self.npsn} berisi {what}: bundel ini dibuat untuk sekolah "
                "lain atau sudah diubah; tidak ada yang diimpor")


class BundleMismatch(BundleError):
    def __init__(self, what: str, theirs: int, ours: int) -> None:
        super().__init__(what, theirs, ours)
        self.what, self.theirs, self.ours = what, theirs, ours

    def __str__(self) -> str:
        what = {"envelope version": "versi amplop", "bundle format": "format",
                "schema version": "versi skema"}.get(self.what, self.what)
        return (f"{what} bundel ini {self.theirs}, {what} instalasi ini {self.ours}: perbarui "
                "selaras di komputer yang versinya lebih lama; tidak ada yang diimpor")


class WrongSchool(BundleError):
    def __init__(self, theirs: str, ours: str) -> None:
        super().__init__(theirs, ours)
        self.theirs, self.ours = theirs, ours

    def __str__(self) -> str:
        shown = self.theirs if _NPSN.fullmatch(self.theirs) else (
            repr(self.theirs[:40]) + ("..." if len(self.theirs) > 40 else ""))
        return (f"bundel ini milik sekolah {shown}, sedangkan instalasi ini milik sekolah "
                f"{self.ours}: impor bundel ini di instalasi sekolahnya; tidak ada yang diimpor")
