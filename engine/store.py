"""The store seam: what a replica's storage must do, and a plain in-memory store.

Errors (their place in the engine's tree: engine/errors.py)::

    StoreError
    ├── EventCollision    a different event under an (origin, seq) already held
    ├── BadSignature      a new centre event without the centre's good signature (R18)
    ├── DataInUse         another process holds the install's file
    ├── StoreFailure      the database failed (out of memory, disk full, I/O): nothing kept
    └── RegistryError     a registry change that cannot be made (an unknown or duplicate key)
    InputError
    ├── ImportRefused     a rows file with problems: nothing of it was imported
    └── QueryRefused      a query that is not one read statement, or SQL the store rejects

A store that knows the centre's public key (``centre_key``: an install
registered with a centre) checks the signature of every new centre event
before it appends anything; one without (the centre itself, an offline
install) keeps whatever signatures come, so it can pass them on.

``MemoryStore`` keeps the log in dicts and lists and materialises with the
reference fold; ``DuckDBStore`` is the production one. Both pass the same
contract suite (tests/test_store_contract.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import msgspec

from .clocks import VersionVector, hlc_from_ms, local_clock, merge_vectors
from .errors import InputError, SelarasError
from .events import Batch, Event, MalformedBatch
from .merge import Rows, Sibling, clock_bounds, effective_hlc, fold
from .schema import BY_NAME, CLOCK_BOUND
from .signatures import CentreKey, first_unsigned
from .validasi_pusat import RULES, CentralRule
from .values import table_digest


class StoreError(SelarasError):
    """The store could not do what was asked; nothing of it was stored."""


class EventCollision(StoreError):
    """A different event arrived under an (origin, seq) this replica holds.

    It means a copied or restored data folder is writing as an origin that
    has moved on elsewhere: the batch is refused whole.
    """

    def __init__(self, origin: str, seq: int) -> None:
        super().__init__(origin, seq)
        self.origin, self.seq = origin, seq

    def __str__(self) -> str:
        return (f"event ({self.origin}, {self.seq}) is already held with different content: "
                "this data folder was copied or restored from a backup; register it again")


class BadSignature(StoreError):
    """A new centre event whose signature is missing or wrong: the batch is refused whole.

    Nobody but the centre can make such an event, so the batch (a bundle, a
    sync batch) was forged or altered on the way.
    """

    def __init__(self, origin: str, seq: int, problem: str) -> None:
        super().__init__(origin, seq, problem)
        self.origin, self.seq, self.problem = origin, seq, problem  # "missing" or "wrong"

    def __str__(self) -> str:
        what = "no signature" if self.problem == "missing" else "a wrong signature"
        return (f"centre event ({self.origin}, {self.seq}) has {what}: the centre did not make "
                "it (forged or altered); refused whole, nothing was stored")


def check_signatures(batch: Batch, centre_key: str | None, vector: VersionVector,
                     central: frozenset[str]) -> None:
    """BadSignature unless every new centre event of ``batch`` is signed with ``centre_key``."""
    if centre_key:
        bad = first_unsigned(batch, centre_key, vector, central)
        if bad is not None:
            raise BadSignature(*bad)


class ImportRefused(InputError):
    """A rows file that cannot be imported; ``problems`` are (line, message) pairs."""

    def __init__(self, path: str, problems: list[tuple[int, str]]) -> None:
        super().__init__(path, problems)
        self.path, self.problems = path, problems

    def __str__(self) -> str:
        n, msg = self.problems[0] if self.problems else (0, "tidak dapat dibaca")
        more = len(self.problems) - 1
        return (f"{self.path}: {f'baris {n}: ' if n else ''}{msg}"
                + (f" (dan {more} masalah lain)" if more > 0 else "")
                + "; tidak ada yang diimpor: perbaiki filenya lalu impor lagi")


class QueryRefused(InputError):
    """An operator's or admin's query that did not run; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class DataInUse(StoreError):
    def __str__(self) -> str:
        return ("folder data sedang dipakai proses selaras lain (sinkronisasi?): "
                "coba lagi sebentar lagi")


class StoreFailure(StoreError):
    """The database under a store failed; the change was rolled back whole.

    ``reason`` says what happened in plain words (out of memory, disk full ...);
    ``detail`` is the database's own first line, for the log.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail

    def __str__(self) -> str:
        return f"{self.reason}; tidak ada yang diubah"


class RegistryError(StoreError):
    """A registry change that cannot be made (an unknown or duplicate key)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what

    def __str__(self) -> str:
        return self.what


class SessionCaps(msgspec.Struct, frozen=True):
    """Sessions live at once, in every server process on one store (docs/security.md)."""

    total: int = 64
    school: int = 8  # of one school: its PCs, and a flood from one of them
    install: int = 2  # of one install: a retry while its last session is still closing


class AppendReport(msgspec.Struct, frozen=True):
    """What one append did: events stored, duplicates skipped, events held back
    because an earlier event of their origin is missing (they come again later)."""

    applied: int = 0
    duplicates: int = 0
    held_back: int = 0
    clock_bounded: int = 0  # of the applied, how many the centre bounded (merge rule 5)
    # An edit: how far this PC's clock was behind what it had seen of the row, when more
    # than the clock may take in (MAX_AHEAD_MS): the edit was dated just after what was
    # seen instead, so that it supersedes it.
    clock_behind_ms: int = 0


# What admitting one batch came to: its report, or the error that refused it alone.
Admitted = AppendReport | StoreError | MalformedBatch


class Store(Protocol):
    """A replica's log and materialised state. One append is all or nothing."""

    central: frozenset[str]  # origins with the centre's authority

    @property
    def centre_key(self) -> str | None:
        """The centre's public key (hex) if this replica checks signatures (R18)."""
        ...

    def vector(self) -> VersionVector: ...

    def max_hlc(self, origin: str | None = None) -> int:
        """The highest hlc of ``origin``'s events; without it, the highest effective
        hlc held (merge rule 5): what a clock observes."""
        ...

    def row_hlc(self, entity: str, row_id: str) -> int:
        """The highest effective hlc of the events held for one row: a write made after
        seeing the row is dated above it, whatever this PC's clock says."""
        ...

    def context(self, origin: str) -> VersionVector:
        """The last causal context ``origin``'s events carried."""
        ...

    def append(self, batch: Batch) -> AppendReport:
        """Store the events not yet held, contiguous per origin, and materialise.

        Keeps the signatures of the centre events it stores. Raises (nothing
        stored) EventCollision on a different event under a held id, and
        BadSignature on a new centre event that ``centre_key`` does not sign.
        """
        ...

    def events_after(self, vector: VersionVector) -> Batch:
        """Every held event that ``vector`` lacks."""
        ...

    def events_between(self, origin: str, after: int, upto: int) -> Batch:
        """The held events of ``origin`` with ``after < seq <= upto``."""
        ...

    def rows(self, entity: str) -> dict[str, dict[str, object]]: ...

    def conflicts(self) -> list[Sibling]: ...

    def checksums(self, *, full: bool = False) -> dict[str, str]:
        """Per entity, ``values.table_digest`` of the materialised rows: as kept up to
        date with them, or (``full``) recomputed from them."""
        ...

    def close(self) -> None: ...


class SchoolStore(Store, Protocol):
    """One school's replica as the centre and the install both read it."""

    def query(self, sql: str, time_limit_s: float | None = None,
              ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """One read statement over this school's data: the columns and rows.
        QueryRefused for anything else, SQL the store rejects, or one that runs
        longer than ``time_limit_s`` (docs/security.md)."""
        ...

    def rule_rows(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of ``sql``, one of Validasi Lokal's own statements (engine/validation.py:
        DuckDB's dialect, the entity tables by their names), over this school's data as
        this store's transaction sees it."""
        ...

    def row_counts(self) -> dict[str, int]:
        """Per entity, the rows materialised."""
        ...

    def event_counts(self, origin: str, after: int = 0) -> dict[str, int]:
        """Per entity, the events of ``origin`` held past seq ``after``."""
        ...

    def author_counts(self, origin: str, after: int, upto: int) -> dict[str, int]:
        """Per author, ``origin``'s events in (after, upto]: of the centre's, their source."""
        ...

    def neutralised(self, origin: str, after: int, upto: int) -> dict[str, dict[str, int]]:
        """Per entity, ``origin``'s events in (after, upto] that the centre's rules changed:
        ``neutralised`` (without effect or clock-bounded), and of those ``clock``."""
        ...

    # Comparing with a peer (engine/compare.py).

    def bucket_digests(self, entity: str) -> dict[int, str]:
        """Per bucket holding rows of ``entity``, the kept digest of those rows."""
        ...

    def row_hashes(self, entity: str, buckets: list[int]) -> dict[str, int]:
        """Per row of ``entity`` in ``buckets``, its ``values.row_hash``."""
        ...

    def events_of_rows(self, entity: str, row_ids: list[str]) -> Batch:
        """Every held event of the rows ``row_ids`` of ``entity``."""
        ...


class InstallStore(SchoolStore, Protocol):
    """An install's store: its school's replica, and what is local to the install."""

    def meta(self) -> dict[str, str]: ...

    def set_meta(self, **values: str) -> None: ...

    def record_session(self, record: dict[str, Any]) -> None:
        """Keep one sync session in the history."""
        ...

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        """The sync sessions kept, newest first."""
        ...

    def import_jsonl(self, path: str, *, origin: str, author: str, role: str,
                     sekolah_id: str, now_ms: int) -> AppendReport:
        """A JSON-lines rows file as ``origin``'s events, all or nothing (ImportRefused)."""
        ...

    def rebuild(self) -> None:
        """Recompute the materialised state from the log."""
        ...

    def rematerialise(self, entity: str, row_ids: list[str]) -> None:
        """Recompute those rows from the log, and their buckets' kept digests from them."""
        ...

    def validate(self) -> None:
        """Run Validasi Lokal over the materialised state; keep the findings."""
        ...

    def principals(self) -> list[dict[str, Any]]:
        """The PTK who hold the kepala sekolah tugas tambahan now (ptk_id, nama, nip,
        semester_id)."""
        ...

    def findings(self, tab: str | None = None) -> list[dict[str, Any]]:
        """The findings of the last ``validate``, of one tab or all."""
        ...

    def pending_changes(self, after: VersionVector, limit: int,
                        entities: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Per entity, the rows changed by the held events past ``after`` that are not
        the centre's: counts added, updated, deleted; up to ``limit`` rows named for
        people, with the fields changed and the origins that changed them
        (client/changes.py; ``DuckDBStore.pending_changes`` has the dict's keys)."""
        ...


class Registry(Protocol):
    """The centre's schools, accounts, installs and sessions. Rows are dicts of columns;
    times are milliseconds since the epoch; RegistryError for an unknown or duplicate key."""

    def add_school(self, npsn: str, nama: str, kode_hash: str, now_ms: int) -> None: ...

    def school(self, npsn: str) -> dict[str, Any] | None: ...

    def schools(self) -> list[dict[str, Any]]: ...

    def reset_kode(self, npsn: str, kode_hash: str) -> int: ...

    def account(self, npsn: str, email: str) -> dict[str, Any] | None: ...

    def accounts(self, npsn: str) -> list[dict[str, Any]]: ...

    def account_count(self, npsn: str) -> int: ...

    def add_account(self, npsn: str, email: str, role: str, password_hash: str,
                    now_ms: int, **profile: str) -> None: ...

    def update_account(self, npsn: str, email: str, **values: Any) -> None: ...

    def add_install(self, origin: str, npsn: str, email: str, token_hash: str,
                    generation: int, now_ms: int) -> None: ...

    def install(self, origin: str, npsn: str | None = None) -> dict[str, Any] | None:
        """The install ``origin`` (of school ``npsn`` if given); None if unknown."""
        ...

    def installs(self, npsn: str) -> list[dict[str, Any]]: ...

    def revoke(self, origin: str) -> None: ...

    def record_session(self, record: dict[str, Any]) -> None: ...

    def sessions(self, npsn: str, limit: int = 20) -> list[dict[str, Any]]: ...

    def admit(self, npsn: str, session: str, install: str, now_ms: int, caps: SessionCaps,
              lease_ms: int) -> str | None:
        """Admit a session unless one of ``caps`` is reached, counted over every server
        process on the store (a session not renewed within ``lease_ms`` has lapsed);
        the name of the cap reached ("total", "school", "install"), or None if admitted."""
        ...

    def renew(self, sessions: list[tuple[str, str]], now_ms: int) -> None:
        """Keep these (npsn, session) live for another lease."""
        ...

    def leave(self, npsn: str, session: str) -> None: ...

    def live(self) -> int:
        """The sessions live now, in every process."""
        ...


class PushTransaction(Protocol):
    """One school's push in a transaction of its own, open across its session (the
    centre's gate, protocol R20): nothing else sees what it appends until ``commit``.
    Used from one thread; it never waits on the writer, nor the writer on it."""

    @property
    def store(self) -> SchoolStore:
        """The school as the open transaction sees it: the push included."""
        ...

    def append(self, batch: Batch, now_ms: int) -> AppendReport:
        """``CentreStore.admit`` for this school, in the open transaction."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None:
        """End it with nothing kept (also after ``commit``: then it does nothing)."""
        ...


class CentreReader(Protocol):
    """The centre seen from one reader thread (the writer alone writes)."""

    @property
    def registry(self) -> Registry: ...

    def school(self, npsn: str) -> SchoolStore: ...

    def close(self) -> None: ...


class CentreStore(Protocol):
    """The centre's store: every school, the registry, the centre's own signed events.

    One writer uses it; readers on other threads use ``reader()``.
    """

    @property
    def key(self) -> CentreKey | None:
        """Signs the centre's own events (R18)."""
        ...

    @property
    def registry(self) -> Registry: ...

    def transaction(self) -> AbstractContextManager[object]:
        """One transaction for what follows: school stores, registry, centre events."""
        ...

    def school(self, npsn: str) -> SchoolStore: ...

    def reader(self) -> CentreReader: ...

    def push_transaction(self, npsn: str) -> PushTransaction:
        """Begin a push to ``npsn`` in a transaction of its own (on a connection of its
        own: another thread may use it)."""
        ...

    def append_centre(self, npsn: str, events: list[Event]) -> AppendReport:
        """The centre's own events for ``npsn``, signed with ``key``."""
        ...

    def central_findings(self, npsn: str, rules: Iterable[CentralRule] = RULES,
                         ) -> list[dict[str, object]]:
        """The findings of ``rules`` (of Validasi Pusat, engine/validasi_pusat.py) on school
        ``npsn``'s rows now: rule_id, severity, entity, row_ref, field, message, detail,
        sekolah_lain."""
        ...

    def people(self, entity: str, field: str, value: str,
               ) -> list[tuple[str, str, dict[str, object]]]:
        """The live rows of ``entity`` at every school whose ``field`` is ``value``:
        (npsn, row id, row). A person's identity (NIK, NISN, NUPTK) across schools."""
        ...

    def ptk_holders(self, npsn: str) -> list[tuple[str, str, int]]:
        """Every school holding a live ``ptk`` row that school ``npsn`` holds live, ``npsn``
        included: (ptk_id, npsn of the holder, how many live current (no jenis_keluar_id)
        ``ptk_terdaftar`` rows with ptk_induk = 1 the holder has for it), by ptk_id."""
        ...

    def admit(self, npsn: str, batch: Batch, now_ms: int) -> AppendReport:
        """A school's pushed batch, appended in the open transaction (held-back events
        left out, a clock far ahead bounded): what ``append_group`` does for each."""
        ...

    def append_group(self, items: list[tuple[str, Batch]], now_ms: int,
                     ) -> list[Admitted]:
        """Each (npsn, batch) admitted, in one transaction when all succeed; a bad batch
        costs only itself (its error takes its place)."""
        ...

    def close(self) -> None: ...


# Who at the centre wrote one of its events (the event's author): the school is shown it.
# Referensi's events are known by their origin. SEKOLAH_INDUK: a teacher's biodata as their
# home school holds it, copied to the other schools they teach at.
CENTRE, MANAJEMEN, VERVAL_PD, VERVAL_PTK, VERVAL_SP, REFERENSI, SEKOLAH_INDUK = (
    "pusat", "Manajemen Dapodik", "VervalPD", "VervalPTK", "VervalSP", "Referensi",
    "Sekolah Induk")


def centre_event(store: Store, centre: str, entity: str, row_id: str,
                 changes: dict[str, Any], now_ms: int, source: str = CENTRE) -> Event:
    """The centre's next event on ``store`` (one school's): at the centre's clock, after
    everything the store holds, by ``source``."""
    [event] = centre_events(store, centre, [(entity, row_id, changes)], now_ms, source)
    return event


def centre_events(store: Store, centre: str, writes: list[tuple[str, str, dict[str, Any]]],
                  now_ms: int, source: str = CENTRE) -> list[Event]:
    """The centre's next events on ``store``, one per (entity, row id, changes) of
    ``writes``, in order: appended together, in one append rather than one each."""
    clock = local_clock(store.max_hlc(centre), store.max_hlc(), now_ms)
    vector = store.vector()
    context = {o: s for o, s in vector.items() if o != centre}
    first = vector.get(centre, 0) + 1
    return [Event(origin=centre, seq=first + i, hlc=clock.tick(now_ms), entity=entity,
                  row_id=row_id, author=source, role=CENTRE, changes=changes,
                  context=context if i == 0 and context != store.context(centre) else None)
            for i, (entity, row_id, changes) in enumerate(writes)]


def clock_bound_event(store: Store, centre: str, origin: str, first: int, last: int,
                      before: int, now_ms: int) -> tuple[Event, int]:
    """The centre's koreksi_jam event bounding ``origin``'s events ``first..last`` (merge
    rule 5), at the centre's clock, after ``before`` (the effective hlc of the event
    before them); and how many events it bounds."""
    return centre_event(store, centre, CLOCK_BOUND, str(uuid.uuid4()),
                        {"install_id": origin, "seq_from": first, "seq_to": last,
                         "hlc_from": max(hlc_from_ms(now_ms), before + 1)}, now_ms), \
        last - first + 1


def check_and_order(held: dict[tuple[str, int], Event], vector: VersionVector,
                    incoming: Iterable[Event]) -> tuple[list[Event], AppendReport]:
    """Split incoming events into new (contiguous per origin), duplicate, held back."""
    fresh: dict[tuple[str, int], Event] = {}
    duplicates = 0
    for ev in incoming:
        known = held.get(ev.id) or fresh.get(ev.id)
        if known is None:
            fresh[ev.id] = ev
        elif known == ev:
            duplicates += 1
        else:
            raise EventCollision(*ev.id)
    accepted: list[Event] = []
    held_back = 0
    top = dict(vector)
    for ev in sorted(fresh.values(), key=lambda ev: ev.id):
        if ev.seq == top.get(ev.origin, 0) + 1:
            top[ev.origin] = ev.seq
            accepted.append(ev)
        else:
            held_back += 1
    return accepted, AppendReport(len(accepted), duplicates, held_back)


class MemoryStore:
    """The reference store: a dict of events, materialised by the fold."""

    def __init__(self, central: frozenset[str], centre_key: str | None = None) -> None:
        self.central = central
        self._centre_key = centre_key
        self._log: dict[tuple[str, int], Event] = {}
        self._signatures: dict[tuple[str, int], bytes] = {}
        self._vector: VersionVector = {}
        self._rows: Rows = {}
        self._conflicts: list[Sibling] = []
        self._refold()

    @property
    def centre_key(self) -> str | None:
        return self._centre_key

    def vector(self) -> VersionVector:
        return dict(self._vector)

    def row_hlc(self, entity: str, row_id: str) -> int:
        bounds = clock_bounds(self._log.values(), self.central)
        return max((effective_hlc(ev.origin, ev.seq, ev.hlc, bounds, self.central)
                    for ev in self._log.values() if (ev.entity, ev.row_id) == (entity, row_id)),
                   default=0)

    def max_hlc(self, origin: str | None = None) -> int:
        if origin is not None:
            return max((ev.hlc for ev in self._log.values() if ev.origin == origin), default=0)
        bounds = clock_bounds(self._log.values(), self.central)
        return max((effective_hlc(ev.origin, ev.seq, ev.hlc, bounds, self.central)
                    for ev in self._log.values()),
                   default=0)

    def context(self, origin: str) -> VersionVector:
        return merge_vectors(*(ev.context for ev in self._log.values()
                               if ev.origin == origin and ev.context))

    def append(self, batch: Batch) -> AppendReport:
        check_signatures(batch, self.centre_key, self._vector, self.central)
        accepted, report = check_and_order(self._log, self._vector, batch.events())
        signatures = batch.signatures_by_id()
        for ev in accepted:
            self._log[ev.id] = ev
            self._vector[ev.origin] = ev.seq
            if ev.origin in self.central and ev.id in signatures:
                self._signatures[ev.id] = signatures[ev.id]
        if accepted:
            self._refold()
        return report

    def events_after(self, vector: VersionVector) -> Batch:
        return Batch.from_events(sorted(
            (ev for ev in self._log.values() if ev.seq > vector.get(ev.origin, 0)),
            key=lambda ev: ev.id), self._signatures)

    def events_between(self, origin: str, after: int, upto: int) -> Batch:
        return Batch.from_events((ev for ev in sorted(self._log.values(), key=lambda ev: ev.id)
                                  if ev.origin == origin and after < ev.seq <= upto),
                                 self._signatures)

    def rows(self, entity: str) -> dict[str, dict[str, object]]:
        return self.rows_of(self._rows, entity)

    @staticmethod
    def rows_of(rows: Rows, entity: str) -> dict[str, dict[str, object]]:
        e = BY_NAME[entity]
        return {rid: {e.key: rid, **r} for rid, r in rows[entity].items()}

    def conflicts(self) -> list[Sibling]:
        return list(self._conflicts)

    def checksums(self, *, full: bool = False) -> dict[str, str]:
        return checksums_of(self._rows)

    def close(self) -> None:
        pass

    def _refold(self) -> None:
        state = fold(self._log.values(), self.central)
        self._rows, self._conflicts = state.rows, state.conflicts


def verify(store: Store) -> list[str]:
    """Replay the store's whole log with the reference fold; the differences found.

    An empty list means the materialised state and conflicts equal the fold's.
    """
    held = store.events_after({})
    state = fold(held.events(), store.central)
    problems = []
    if store.vector() != held.vector():
        problems.append(f"the kept vector {store.vector()} != the log's {held.vector()}")
    for name in BY_NAME:
        ours, spec = store.rows(name), MemoryStore.rows_of(state.rows, name)
        for row_id in sorted(ours.keys() | spec.keys()):
            if ours.get(row_id) != spec.get(row_id):
                problems.append(f"{name} {row_id}: materialised {ours.get(row_id)} "
                                f"!= replayed {spec.get(row_id)}")
    if store.conflicts() != state.conflicts:
        problems.append("conflicts differ from the replayed ones")
    kept = store.checksums()
    problems += [f"{name}: kept checksum {kept[name]} != replayed {digest}"
                 for name, digest in checksums_of(state.rows).items() if kept[name] != digest]
    return problems


def checksums_of(rows: Rows) -> dict[str, str]:
    """Per entity, ``values.table_digest`` of ``rows``."""
    return {name: table_digest([[rid, *r.values()] for rid, r in by_id.items()])
            for name, by_id in rows.items()}
