"""The centre's store on PostgreSQL: every school in one database (``PgCentre``).

What a ministry would run: several server processes on one database (each with
a pool of connections), the schema distributable by school on Citus
(docs/scale-out.md).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..events import Event, central_origins
from ..signatures import CentreKey
from ..store import AppendReport
from .centre import GroupCommit, OpenPush
from .pg_database import POOL_SIZE, PgDatabase
from .pg_log import PgStore, fill_digests, fill_head, tables
from .pg_registry import PostgresRegistry

PUSH_POOL_SIZE = 16  # pushes open at once per server process (each holds a connection)
WRITER_LOCK_WAIT = "2s"  # how long the writer waits for a school a push holds


class PgCentre(GroupCommit):
    """The centre's store in the PostgreSQL database at ``url``: the same tables for
    every school, the registry beside them, group commit as ``DuckDBCentre``'s.

    Appends to one school wait for each other (its lock); to different schools
    they run at once, from as many processes as share the database.
    """

    def __init__(self, url: str, *, key: CentreKey | None = None,
                 pool_size: int = POOL_SIZE) -> None:
        self.db = PgDatabase.connect(url, size=1)  # the writer's: never behind a reader
        try:
            with self.db.transaction() as con:
                # Server processes starting at once make the tables one at a time.
                con.execute("SELECT pg_advisory_xact_lock(5774)")
                (before_digests, before_head) = con.execute(
                    "SELECT to_regclass('log.event') IS NOT NULL "
                    "AND to_regclass('replica.digest') IS NULL, "
                    "to_regclass('log.event') IS NOT NULL "
                    "AND to_regclass('replica.head') IS NULL").fetchone() or (False, False)
                for statement in tables():
                    con.execute(statement)
                if before_digests:
                    fill_digests(con)
                if before_head:
                    fill_head(con)
            self.registry = PostgresRegistry(self.db)
            self._readers = PgDatabase.connect(url, size=pool_size)
            self._pushes = PgDatabase.connect(url, size=PUSH_POOL_SIZE)
        except BaseException:
            self.db.close()
            raise
        self.key = key  # signs the centre's own events (R18)

    def transaction(self) -> contextlib.AbstractContextManager[object]:
        """One transaction for what follows: school stores, registry, centre events."""
        return self.db.transaction()

    def school(self, npsn: str) -> PgStore:
        return PgStore(self.db, npsn, central_origins(npsn))

    def _run(self, sql: str, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        return self.db.run(sql, params)

    def lock(self, npsns: list[str]) -> None:
        with self.db.transaction() as con:
            PgStore.lock_schools(con, npsns)

    def reader(self) -> PgCentreReader:
        """Another thread's view: the readers' pool, a connection only while it reads."""
        return PgCentreReader(self._readers.sibling())

    def push_transaction(self, npsn: str) -> OpenPush:
        """A push to ``npsn`` on a connection of the pushes' pool, held to its end. Its
        first append takes the school's lock: another push to the school waits for it."""
        db = self._pushes.sibling()
        return OpenPush(db, lambda n: PgStore(db, n, central_origins(n)), self.key, npsn)

    def append_centre(self, npsn: str, events: list[Event]) -> AppendReport:
        """As ``GroupCommit``'s, but the writer never waits long for a school's lock: a
        push holds it to its session's end (StoreFailure: try again later)."""
        with self.db.transaction() as con:
            con.execute(f"SET LOCAL lock_timeout = '{WRITER_LOCK_WAIT}'")
            return super().append_centre(npsn, events)

    def close(self) -> None:
        self._pushes.close()
        self._readers.close()
        self.db.close()


class PgCentreReader:
    """The centre seen from one reader thread."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db
        self.registry = PostgresRegistry(db, create=False)

    def school(self, npsn: str) -> PgStore:
        return PgStore(self.db, npsn, central_origins(npsn))

    def close(self) -> None:
        pass  # the pool is the centre's
