"""Storage: the only code that talks to a database (DESIGN.md sections 2 and 5).

One module a job:

- ``database``  opening a file, the one set of tables for any number of schools,
                transactions, database failures in plain words
- ``log``       one school's log, the set-based merge, reads (``DuckDBStore``)
- ``bulk``      a rows file imported in columnar form
- ``query``     the operator's and admin's read-only query over one school
- ``centre``    every school in one file, group commit, signed centre events
- ``registry``  the centre's schools, accounts, installs and sessions
- ``pg_database``, ``pg_log``, ``pg_registry``, ``pg_centre``  the centre on PostgreSQL

The rest of selaras imports what it needs from here, never ``duckdb``.
"""

from __future__ import annotations

import os

from ..events import central_origins
from ..signatures import CentreKey
from ..store import CentreStore, InstallStore
from .centre import DuckDBCentre
from .database import MEMORY_LIMIT
from .log import DuckDBStore
from .registry import DuckDBRegistry


def open_install(path: str | os.PathLike[str], central: frozenset[str] | None = None, *,
                 read_only: bool = False) -> InstallStore:
    """An install's store in the DuckDB file at ``path`` (made if missing and writable).
    ``central``: the origins with the centre's authority; None, those of the school its
    meta names (one connection, where reading the meta first would take two).
    DataInUse while another process holds it."""
    store = DuckDBStore(path, central or frozenset(), read_only=read_only)
    npsn = store.meta().get("npsn") if central is None else None
    return DuckDBStore("", central_origins(npsn), db=store.db) if npsn else store


def open_centre(where: str | os.PathLike[str], *, key: CentreKey | None = None,
                memory_limit: str = MEMORY_LIMIT) -> CentreStore:
    """The centre's store: in the PostgreSQL database at a ``postgresql://`` URL, else in
    the DuckDB file at ``where`` (made if missing)."""
    if is_postgres(where):
        from .pg_centre import PgCentre  # psycopg is loaded only for a PostgreSQL centre

        return PgCentre(str(where), key=key)
    return DuckDBCentre(where, key=key, memory_limit=memory_limit)


def is_postgres(where: str | os.PathLike[str]) -> bool:
    return str(where).startswith(("postgresql://", "postgres://"))


__all__ = ["DuckDBCentre", "DuckDBRegistry", "DuckDBStore", "is_postgres", "open_centre",
           "open_install"]
