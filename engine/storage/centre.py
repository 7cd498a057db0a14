"""The centre's embedded store: every school in one DuckDB file (``DuckDBCentre``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec
import pyarrow.compute as pc

from .. import validasi_pusat
from ..clocks import MAX_AHEAD_MS, VersionVector, hlc_from_ms
from ..events import Batch, Event, MalformedBatch, central_origins, centre_origin
from ..schema import entity as schema_entity
from ..signatures import CentreKey
from ..store import Admitted, AppendReport, SchoolStore, StoreError, StoreFailure
from .database import MEMORY_LIMIT, Database, connect, create_tables
from .log import DuckDBStore
from .registry import DuckDBRegistry

CHECKPOINT = "256MB"  # the WAL size that makes the centre checkpoint


class BoundingStore(SchoolStore, Protocol):
    """A school's store at the centre: it can also bound a clock far ahead (merge rule 5)."""

    def clock_bound(self, centre: str, held: VersionVector, limit: int, now_ms: int,
                    ) -> tuple[Event, int] | None: ...


class GroupCommit:
    """What every centre store does the same way over its ``transaction`` and ``school``:
    the centre's signed events and group commit."""

    key: CentreKey | None

    def transaction(self) -> contextlib.AbstractContextManager[object]:
        raise NotImplementedError

    def school(self, npsn: str) -> BoundingStore:
        raise NotImplementedError

    def _run(self, sql: str, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        raise NotImplementedError

    def people(self, entity: str, field: str, value: str,
               ) -> list[tuple[str, str, dict[str, object]]]:
        e = schema_entity(entity)
        if field not in e.by_name:
            raise ValueError(f"{entity} has no field {field!r}")
        names, rows = self._run(
            f"SELECT school, {e.key}::VARCHAR AS row_id, {', '.join(e.by_name)} FROM {e.table} "
            f"WHERE {field} = ? AND coalesce(soft_delete, 0) = 0 AND school <> '' "
            "ORDER BY school", [value])
        return [(str(r[0]), str(r[1]), dict(zip(names[2:], r[2:], strict=True))) for r in rows]

    def ptk_holders(self, npsn: str) -> list[tuple[str, str, int]]:
        _, rows = self._run(
            """WITH mine AS (SELECT ptk_id FROM ptk
                             WHERE school = ? AND coalesce(soft_delete, 0) = 0),
               held AS (SELECT p.school, p.ptk_id FROM ptk p JOIN mine ON mine.ptk_id = p.ptk_id
                        WHERE coalesce(p.soft_delete, 0) = 0 AND p.school <> '')
               SELECT h.ptk_id::VARCHAR, h.school, count(t.ptk_terdaftar_id)
               FROM held h LEFT JOIN ptk_terdaftar t
                 ON t.school = h.school AND t.ptk_id = h.ptk_id
                AND coalesce(t.soft_delete, 0) = 0 AND t.jenis_keluar_id IS NULL
                AND t.ptk_induk = 1
               GROUP BY h.ptk_id, h.school ORDER BY 1, 2""", [npsn])
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def central_findings(self, npsn: str,
                         rules: Iterable[validasi_pusat.CentralRule] = validasi_pusat.RULES,
                         ) -> list[dict[str, object]]:
        findings = []
        for rule in rules:
            for row_ref, detail, other in self._run(rule.sql, rule.params(npsn))[1]:
                findings.append({"rule_id": rule.id, "severity": rule.severity,
                                 "entity": rule.entity, "row_ref": str(row_ref),
                                 "field": rule.field, "message": rule.message,
                                 "detail": None if detail is None else str(detail),
                                 "sekolah_lain": other})
        return findings

    def lock(self, npsns: list[str]) -> None:
        """Before a group: take what the schools' appends will wait for, in one order."""

    def append_centre(self, npsn: str, events: list[Event]) -> AppendReport:
        """Append the centre's own events for school ``npsn``, signed with ``key`` (R18).

        The one way the centre writes events of its origins, so each is signed
        and installs can check it. ValueError without a key or for an event of
        another origin (a bug here, not a school's).
        """
        if self.key is None:
            raise ValueError("this centre has no signing key")
        if not {ev.origin for ev in events} <= central_origins(npsn):
            raise ValueError(f"append_centre takes only the centre's events for {npsn}")
        return self.school(npsn).append(self.key.sign(Batch.from_events(events)))

    def append_group(self, items: list[tuple[str, Batch]], now_ms: int) -> list[Admitted]:
        """Admit each (npsn, batch), all in one transaction when all succeed.

        If one fails, the group is rolled back and each item is retried in a
        transaction of its own, so a bad batch costs only itself; its error
        takes its place in the result.
        """
        if not items:
            return []
        try:
            with self.transaction():
                self.lock([npsn for npsn, _ in items])
                return [self.admit(npsn, batch, now_ms) for npsn, batch in items]
        except Exception:  # whichever batch it was, each on its own now tells
            pass
        results: list[Admitted] = []
        for npsn, batch in items:
            try:
                with self.transaction():
                    results.append(self.admit(npsn, batch, now_ms))
            except (StoreError, MalformedBatch) as exc:
                results.append(exc)
            except Exception as exc:  # a bug this batch set off: it alone fails
                results.append(StoreFailure("the centre could not store this batch",
                                            repr(exc)))
        return results

    def admit(self, npsn: str, batch: Batch, now_ms: int) -> AppendReport:
        """Append a school's batch, less the events whose causal contexts name events the
        school does not have (held back: they come again); if its new events carry a
        clock more than MAX_AHEAD_MS ahead of ours, bound them in the same transaction
        (merge rule 5)."""
        limit = hlc_from_ms(now_ms + MAX_AHEAD_MS)
        ahead = any(t.num_rows and pc.max(t["hlc"]).as_py() > limit
                    for t in batch.tables.values())
        store = self.school(npsn)
        held = store.vector() if ahead or batch.contexts.num_rows else {}
        batch, unseen = batch.causally_ready(held)
        report = store.append(batch)
        if unseen:
            report = msgspec.structs.replace(report, held_back=report.held_back + unseen)
        if ahead:
            bound = store.clock_bound(centre_origin(npsn), held, limit, now_ms)
            if bound is not None:
                event, n = bound
                self.append_centre(npsn, [event])
                return msgspec.structs.replace(report, clock_bounded=n)
        return report


class Transactional(Protocol):
    def transaction(self) -> contextlib.AbstractContextManager[Any]: ...


class _RolledBack(Exception):
    """Ends an open push's transaction with nothing kept."""


class OpenPush(GroupCommit):
    """One school's push in a transaction of its own, held open across the session (the
    centre's gate, ``PushTransaction``): appended as the writer appends, seen by nothing
    else until ``commit``. Its own connection (``db``) is used by one thread."""

    def __init__(self, db: Transactional, store: Callable[[str], BoundingStore],
                 key: CentreKey | None, npsn: str, on_end: Callable[[], None] = lambda: None,
                 ) -> None:
        self.db, self._stores, self.key, self.npsn = db, store, key, npsn
        self._on_end = on_end
        self._open = contextlib.ExitStack()
        self._open.enter_context(db.transaction())

    def transaction(self) -> contextlib.AbstractContextManager[object]:
        return self.db.transaction()  # a part of the open one

    def school(self, npsn: str) -> BoundingStore:
        return self._stores(npsn)

    @property
    def store(self) -> BoundingStore:
        return self._stores(self.npsn)

    def append(self, batch: Batch, now_ms: int) -> AppendReport:
        return self.admit(self.npsn, batch, now_ms)

    def commit(self) -> None:
        try:
            self._open.close()
        finally:
            self._on_end()

    def rollback(self) -> None:
        try:
            self._open.__exit__(_RolledBack, _RolledBack(), None)
        finally:
            self._on_end()


class DuckDBCentre(GroupCommit):
    """The centre's embedded store: every school in one DuckDB file.

    One connection writes: the schools' rows in one set of tables, and the
    registry beside them. ``append_group`` commits the batches of many schools
    in one transaction (group commit); ``append_centre`` writes the centre's own
    events, signed. Readers on other threads each use a ``reader()`` of their own.
    """

    def __init__(self, path: str | os.PathLike[str], *, key: CentreKey | None = None,
                 memory_limit: str = MEMORY_LIMIT) -> None:
        self.db = Database(connect(path, memory_limit=memory_limit))
        create_tables(self.db)
        # Fewer, larger checkpoints: at DuckDB's default 16 MB of WAL nearly every group
        # commit was one. The WAL is as durable.
        self.db.con.execute(f"SET checkpoint_threshold = '{CHECKPOINT}'")
        self.key = key  # signs the centre's own events (R18)
        self.registry = DuckDBRegistry(self.db)

    def transaction(self) -> contextlib.AbstractContextManager[object]:
        """One transaction for what follows: school stores, registry, centre events."""
        return self.db.transaction()

    def _run(self, sql: str, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.db.con.execute(sql, params)
        return [d[0] for d in cur.description or []], cur.fetchall()

    def school(self, npsn: str) -> DuckDBStore:
        """One school's store on the writer's connection (rows of the shared tables)."""
        return DuckDBStore("", central_origins(npsn), school=npsn, db=self.db)

    def reader(self) -> CentreReader:
        """A connection of its own for another thread: its schools' stores and registry."""
        return CentreReader(self.db.cursor())

    def push_transaction(self, npsn: str) -> OpenPush:
        """A push to ``npsn`` on a connection of its own. DuckDB's transactions are
        optimistic: one that changed a row another changed since it began fails at its
        commit (two pushes of one school at once, the second to commit)."""
        db = self.db.cursor()
        return OpenPush(db, lambda n: DuckDBStore("", central_origins(n), school=n, db=db),
                        self.key, npsn, on_end=db.close)

    def close(self) -> None:
        self.db.close()


class CentreReader:
    """The centre seen from one reader thread: school stores and the registry, read-only
    by use (the writer thread alone writes)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.registry = DuckDBRegistry(db, create=False)

    def school(self, npsn: str) -> DuckDBStore:
        return DuckDBStore("", central_origins(npsn), school=npsn, db=self.db)

    def close(self) -> None:
        self.db.close()
