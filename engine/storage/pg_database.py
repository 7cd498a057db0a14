"""The PostgreSQL database under the centre: connecting, transactions, failures in words.

Every school-keyed table is hash-partitioned by school (``partitioned``), every
primary key starts with the school and no constraint spans schools, so the
schema can be distributed by school on Citus as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors

from ..store import StoreFailure

PARTITIONS = 16  # hash partitions of each school-keyed table


class PgDatabase:
    """One PostgreSQL connection and its transaction, shared by the stores that use it.

    Statements take ``?`` parameters, as DuckDB's do. Not thread-safe: one
    thread at a time, like ``database.Database``.
    """

    def __init__(self, url: str) -> None:
        try:
            self.con = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise failure(exc) from exc
        self._open = False

    @contextmanager
    def transaction(self) -> Iterator[PgDatabase]:
        """BEGIN ... COMMIT; inside a transaction already open, a part of it. A failure of
        the database comes out as StoreFailure, in plain words."""
        if self._open:
            yield self
            return
        self._open = True
        try:
            with self.con.transaction():
                yield self
        except psycopg.Error as exc:
            raise failure(exc) from exc
        finally:
            self._open = False

    def run(self, sql: str, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """One statement: the column names and the rows (none for a statement without)."""
        try:
            cur = self.con.execute(sql.replace("?", "%s"), params)
            if cur.description is None:
                return [], []
            return [d.name for d in cur.description], cur.fetchall()
        except psycopg.Error as exc:
            if self._open:
                raise  # the transaction's end says what failed
            raise failure(exc) from exc

    def close(self) -> None:
        self.con.close()


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
    elif isinstance(exc, psycopg.OperationalError):
        reason = f"the database cannot be reached ({detail})"
    else:
        reason = f"the database failed ({detail})"
    return StoreFailure(reason, detail)
