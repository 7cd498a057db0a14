"""A school install on this PC: its data folder, its store and who it is.

The command line and the demo both work through this module: it is the one
place that opens the store and builds the Replica. An install's identity
(npsn, origin, user, role) lives in the store's meta table, so a data folder
is self-describing and can be moved whole.

Errors raised here are ``ClientError`` (one line, shown as is); the engine's
own errors pass through to the caller's handler.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from selaras.engine import bundle
from selaras.engine.clocks import MAX_AHEAD_MS, VersionVector, hlc_ms
from selaras.engine.events import REFERENSI_ORIGIN, Batch, centre_origin
from selaras.engine.replica import (
    Identity,
    Replica,
    new_origin,
    referensi_events,
    school_fields,
    school_identity_event,
)
from selaras.engine.storage import open_install
from selaras.engine.store import AppendReport, DataInUse, EventCollision, InstallStore
from selaras.engine.values import shown

DB_FILE = "selaras.duckdb"
DEFAULT_DATA = "selaras-data"
ENV_DATA = "SELARAS_DATA"
BUSY_WAIT_S = 2.0  # how long a command waits for another process to let go of the file
NPSN = re.compile(r"[0-9]{8}")
MAX_VECTOR_FILE = 1 << 20
MAX_SEQ = 2**63 - 1  # a seq the store holds (BIGINT)
ACKED_SEQ = "acked_seq"  # meta: the top of our own events the centre acknowledged


class ClientError(Exception):
    """Something the operator can fix; the message says what (one line)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def data_folder(option: str | os.PathLike[str] | None) -> Path:
    """--data, else $SELARAS_DATA, else ./selaras-data."""
    return Path(option or os.environ.get(ENV_DATA) or DEFAULT_DATA)


@dataclass
class Session:
    """An open install: its store and identity. Close it by leaving ``Install.open``."""

    store: InstallStore
    identity: Identity

    @property
    def replica(self) -> Replica:
        return Replica(self.store, self.identity)

    def origin_label(self, origin: str) -> str:
        """Who an origin is, from this install's point of view."""
        if origin == self.identity.origin:
            return "this install"
        if origin == centre_origin(self.identity.npsn):
            return "centre"
        if origin == REFERENSI_ORIGIN:
            return "referensi"
        return "another install"


@dataclass(frozen=True)
class Install:
    folder: Path
    # The identity never changes once made: read once per process.
    _identity: list[Identity] = field(default_factory=list, compare=False, hash=False,
                                      repr=False)

    @property
    def db(self) -> Path:
        return self.folder / DB_FILE

    def exists(self) -> bool:
        return self.db.exists()

    @contextmanager
    def open(self, *, read_only: bool = False) -> Iterator[Session]:
        if not self.exists():
            raise ClientError(f"tidak ada instalasi di {self.folder}: jalankan 'selaras init', "
                              "atau beri --data / SELARAS_DATA")
        store = _connect(self.db, None, read_only=read_only)  # central: the meta's school
        try:
            if not self._identity:
                self._identity.append(_identity_from(store.meta(), self.db))
            yield Session(store, self._identity[0])
        finally:
            store.close()

    def forget_identity(self) -> None:
        """The folder holds another install now (re-registered): read it again."""
        self._identity.clear()

    def identity(self) -> Identity:
        """Who this install is (from the store's meta)."""
        if not self._identity:
            # The identity decides which origins carry the centre's authority, and the
            # store needs those when it opens: read it first from a read-only peek.
            peek = _connect(self.db, frozenset(), read_only=True)
            try:
                self._identity.append(_identity_from(peek.meta(), self.db))
            finally:
                peek.close()
        return self._identity[0]

    def init_offline(self, npsn: str, *, nama: str | None = None, bentuk: str = "SMA",
                     user: str = "operator") -> Identity:
        """A new replica of school ``npsn`` without a server.

        The school's identity is recorded as the centre would record it, from
        defaults derived from (npsn, nama, bentuk) only: two installs of one
        school initialised alike hold byte-identical centre events and can
        swap bundles. The store is built aside and moved into place last, so
        an interrupted init leaves no half install behind.
        """
        if not NPSN.fullmatch(npsn):
            raise ClientError(f"NPSN harus 8 angka, bukan {shown(npsn)}")
        if self.exists():
            raise ClientError(f"{self.folder} sudah berisi instalasi ({self.db.name}): "
                              "pakai --data lain")
        refs = referensi_events()
        fields = school_fields(npsn, nama, bentuk, refs)
        identity = Identity(npsn=npsn, origin=new_origin(), author=user, role="operator")
        self.folder.mkdir(parents=True, exist_ok=True)
        aside = self.folder / f".{DB_FILE}.init-{identity.origin[:8]}"
        store = _open_aside(aside, identity.central)
        try:
            store.append(Batch.from_events([*refs, school_identity_event(npsn, fields)]))
            store.set_meta(npsn=npsn, origin=identity.origin, user=user, role=identity.role)
        except BaseException:
            store.close()
            remove_db(aside)
            raise
        store.close()
        wal = aside.with_name(aside.name + ".wal")
        if wal.exists():  # DuckDB checkpoints on close; should it not have, keep the WAL
            os.replace(wal, self.db.with_name(self.db.name + ".wal"))
        os.replace(aside, self.db)
        self._identity[:] = [identity]
        return identity


    def init_registered(self, npsn: str, *, origin: str, token: str, url: str, user: str,
                        role: str, centre_key: str = "", kode_hash: str = "") -> Identity:
        """A new, empty install registered with the centre at ``url``.

        The credential is stored before anything else can fail (the centre shows
        it once); the school's data comes with the first pull. ``centre_key``
        (from ``Registered``) makes the store check every centre event it is
        given (R18); without it, the first Welcome's is kept. ``kode_hash``: the
        registration code's slow hash, for Tukar Pengguna with no line. Built aside and
        moved into place, like ``init_offline``.
        """
        if self.exists():
            raise ClientError(f"{self.folder} sudah berisi instalasi ({self.db.name}): "
                              "pakai --data lain")
        identity = Identity(npsn=npsn, origin=origin, author=user, role=role)
        self.folder.mkdir(parents=True, exist_ok=True)
        aside = self.folder / f".{DB_FILE}.init-{origin[:8]}"
        store = _open_aside(aside, identity.central)
        try:
            store.set_meta(npsn=npsn, origin=origin, user=user, role=role, token=token,
                           url=url, centre_key=centre_key, kode_hash=kode_hash)
        except BaseException:
            store.close()
            remove_db(aside)
            raise
        store.close()
        os.replace(aside, self.db)
        self._identity[:] = [identity]
        return identity


def _open_aside(path: Path, central: frozenset[str]) -> InstallStore:
    """A new store at ``path``; if it cannot be made (a full disk), no file left there."""
    try:
        return open_install(path, central)
    except BaseException:
        remove_db(path)
        raise


def _connect(path: Path, central: frozenset[str] | None, *, read_only: bool) -> InstallStore:
    """Open the store, waiting a little while another process (a sync) holds it."""
    deadline = time.monotonic() + BUSY_WAIT_S
    while True:
        try:
            return open_install(path, central, read_only=read_only)
        except DataInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _identity_from(meta: Mapping[str, str], db: Path) -> Identity:
    try:
        return Identity(npsn=meta["npsn"], origin=meta["origin"], author=meta["user"],
                        role=meta["role"])
    except KeyError:
        raise ClientError(f"{db} bukan instalasi selaras (tidak mencatat identitasnya)") from None


def remove_db(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        with suppress(FileNotFoundError):
            p.unlink()


# -- the school's identity, as an offline install records it -------------------------


# -- operations shared by the command line and the demo ---------------------------------


def import_rows(session: Session, path: Path) -> dict[str, int]:
    """Import a JSON-lines rows file as this install's events; rows per entity."""
    me = session.identity
    before = session.store.vector().get(me.origin, 0)
    session.store.import_jsonl(str(path), origin=me.origin, author=me.author, role=me.role,
                               sekolah_id=me.sekolah_id, now_ms=now_ms())
    counts: dict[str, int] = session.store.event_counts(me.origin, before)
    return counts


def export_bundle(session: Session, their_vector: VersionVector) -> tuple[bytes, int]:
    """A bundle of every event ``their_vector`` lacks, and how many events it holds."""
    batch = session.store.events_after(their_vector)
    me = session.identity
    data = bundle.encode(npsn=me.npsn, origin=me.origin, vector=session.store.vector(),
                         batch=batch)
    return data, len(batch)


@dataclass(frozen=True)
class BundleWarnings:
    """What an install should know of a bundle it imports (docs/security.md)."""

    unchecked_centre_events: int  # new centre events it had no centre key to check
    clock_ahead_ms: int  # how far the bundle's newest clock is past this PC's, if too far


def import_bundle(session: Session, data: bytes,
                  ) -> tuple[bundle.Bundle, AppendReport, BundleWarnings]:
    """Append a bundle's events: all or nothing; a second import changes nothing."""
    b = bundle.decode(data, npsn=session.identity.npsn)
    batch = b.events()
    warnings = bundle_warnings(session, batch)
    try:
        report = session.store.append(batch)
    except EventCollision as exc:
        if exc.origin == centre_origin(session.identity.npsn):
            raise ClientError(
                "kedua instalasi mencatat identitas sekolah secara berbeda (dibuat offline "
                "dengan --nama atau --bentuk lain?); tidak ada yang diimpor") from None
        if exc.origin == REFERENSI_ORIGIN:
            raise ClientError("kedua instalasi memegang Referensi yang berbeda (versi "
                              "selaras berbeda?); tidak ada yang diimpor") from None
        raise
    return b, report, warnings


def bundle_warnings(session: Session, batch: Batch) -> BundleWarnings:
    held = session.store.vector()
    new = [(str(o), s, h) for t in batch.tables.values() for o, s, h in zip(
        t["origin"].to_pylist(), t["seq"].to_pylist(), t["hlc"].to_pylist(), strict=True)
        if s > held.get(str(o), 0)]
    unchecked = 0 if session.store.centre_key else sum(
        1 for o, _, _ in new if o in session.identity.central)
    newest_ms = max((hlc_ms(h) for _, _, h in new), default=0)
    ahead = newest_ms - now_ms()
    return BundleWarnings(unchecked, ahead if ahead > MAX_AHEAD_MS else 0)


def read_vector(path: Path, npsn: str) -> VersionVector:
    """A version vector from a file written by 'selaras vector' (or from a bundle)."""
    data = _read_limited(path, bundle.MAX_BUNDLE_BYTES if _is_bundle(path) else MAX_VECTOR_FILE)
    if bundle.is_bundle(data):
        theirs = bundle.decode(data, npsn=npsn).vector
        try:
            check_vector(theirs)
        except ValueError:
            raise bundle.BundleCorrupt("its vector is out of range") from None
        return theirs
    try:
        vector = msgspec.json.decode(data, type=dict[str, int])
        check_vector(vector)
    except (msgspec.DecodeError, ValueError):
        raise ClientError(f"{path} bukan vektor versi (JSON {{origin: seq}}, seperti yang "
                          "ditulis 'selaras vector')") from None
    return vector


def check_vector(vector: VersionVector) -> None:
    """ValueError unless every origin is a UUID and every seq a count the store can hold."""
    for origin, seq in vector.items():
        uuid.UUID(origin)
        if not 0 <= seq <= MAX_SEQ:
            raise ValueError(origin)


def vector_json(vector: VersionVector) -> str:
    return json.dumps(dict(sorted(vector.items())), indent=2)


def read_bundle_file(path: Path) -> bytes:
    return _read_limited(path, bundle.MAX_BUNDLE_BYTES)


def _is_bundle(path: Path) -> bool:
    with path.open("rb") as f:
        return bool(bundle.is_bundle(f.read(len(bundle.MAGIC))))


def _read_limited(path: Path, limit: int) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise ClientError(f"{path} terlalu besar ({size} byte; paling besar {limit} byte)")
    return path.read_bytes()


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file so that a reader never sees half of it."""
    aside = path.with_name(f".{path.name}.part")
    try:
        aside.write_bytes(data)
        os.replace(aside, path)
    except BaseException:  # a full disk: leave no half file behind
        with suppress(OSError):
            aside.unlink()
        raise
