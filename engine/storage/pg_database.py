"""The PostgreSQL database under the centre: a connection pool, transactions, failures in words.

Every school-keyed table is hash-partitioned by school (``partitioned``), every
primary key starts with the school and no constraint spans schools, so the
schema can be distributed by school on Citus as it is (docs/scale-out.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout

from ..store import StoreFailure
from .database import BUSY_SCHOOL

PARTITIONS = 16  # hash partitions of each school-keyed table
POOL_SIZE = 8  # reader connections per server process (the writer has one of its own)
POOL_WAIT_S = 30.0  # how long a reader waits for a free connection


class PgDatabase:
    """Connections from one pool, and the transaction open on one of them.

    Statements take ``?`` parameters, as DuckDB's do. Each ``PgDatabase`` is used
    by one thread at a time (like ``database.Database``); ``sibling()`` gives
    another thread its own, on the same pool.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._con: psycopg.Connection[Any] | None = None  # the open transaction's

    @classmethod
    def connect(cls, url: str, *, size: int = POOL_SIZE) -> PgDatabase:
        try:  # once by hand: the pool would retry for seconds and hide the reason
            psycopg.connect(url, connect_timeout=10).close()
            pool = ConnectionPool(url, min_size=1, max_size=size, timeout=POOL_WAIT_S,
                                  kwargs={"autocommit": True}, open=False)
            pool.open(wait=True, timeout=10)
        except psycopg.Error as exc:
            raise failure(exc) from exc
        return cls(pool)

    def sibling(self) -> PgDatabase:
        return PgDatabase(self.pool)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """BEGIN ... COMMIT; inside a transaction already open, a part of it. A failure of
        the database comes out as StoreFailure, in plain words."""
        if self._con is not None:
            yield self._con
            return
        try:
            with self.pool.connection() as con:
                self._con = con
                try:
                    with con.transaction():
                        yield con
                finally:
                    self._con = None
        except psycopg.Error as exc:
            raise failure(exc) from exc

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The open transaction's connection, or one from the pool for a read."""
        if self._con is not None:
            yield self._con
            return
        try:
            with self.pool.connection() as con:
                yield con
        except psycopg.Error as exc:
            raise failure(exc) from exc

    def run(self, sql: str, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """One statement: the column names and the rows (none for a statement without)."""
        with self.connection() as con:
            cur = con.execute(sql.replace("?", "%s"), params)
            if cur.description is None:
                return [], []
            return [d.name for d in cur.description], cur.fetchall()

    def close(self) -> None:
        self.pool.close()


def partitioned(table: str, columns: str, key: str = "npsn") -> list[str]:
    """DDL: ``table`` hash-partitioned by ``key`` in PARTITIONS parts, if missing."""
    return [f"CREATE TABLE IF NOT EXISTS {table} ({columns}) PARTITION BY HASH ({key})"] + [
        f"CREATE TABLE IF NOT EXISTS {table}_p{i} PARTITION OF {table} "
        f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {i})" for i in range(PARTITIONS)]


def failure(exc: psycopg.Error) -> StoreFailure:
    """What went wrong in PostgreSQL, in words an admin can act on."""
    detail = (str(exc).splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, errors.DiskFull):
        reason = "the database's disk is full (free some space)"
    elif isinstance(exc, errors.OutOfMemory):
        reason = "the database ran out of memory"
    elif isinstance(exc, errors.TooManyConnections):
        reason = "the database takes no more connections (raise max_connections)"
    elif isinstance(exc, errors.LockNotAvailable):
        reason = BUSY_SCHOOL
    elif isinstance(exc, PoolTimeout):
        reason = f"no database connection came free in time ({detail})"
    elif isinstance(exc, psycopg.OperationalError):
        reason = f"the database cannot be reached ({detail})"
    else:
        reason = f"the database failed ({detail})"
    return StoreFailure(reason, detail)
