"""The operator's and admin's query: one read statement over one school's data."""

from __future__ import annotations

from typing import Any

import duckdb

from ..schema import ENTITIES
from ..store import QueryRefused
from .database import ANY_SCHOOL, quote

READ_ONLY = "queries are read-only: give exactly one SELECT statement"


def query_school(con: duckdb.DuckDBPyConnection, npsn: str, sql: str,
                 ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one SELECT over school ``npsn``'s data (``ANY_SCHOOL`` on an install).

    Unqualified names are views of the school's rows and Referensi's events, made
    on ``con`` for this query alone: the entity tables and the log's ``event``,
    ``context`` and ``signature``, without the ``school`` column; Referensi's rows
    are ``ref.<name>``.
    Only a single SELECT runs, in a transaction that is rolled back.
    QueryRefused for anything else, or SQL that DuckDB rejects (one line).
    """
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"SQL: {_sql_error_text(exc)}") from None
    if len(statements) != 1 or statements[0].type is not duckdb.StatementType.SELECT:
        raise QueryRefused(READ_ONLY)
    (db,) = con.execute("SELECT current_database()").fetchall()[0]
    views = [(e.name, f"main.{e.name}") for e in ENTITIES if not e.is_reference] + [
        (name, f"log.{name}") for name in ("event", "context", "signature")]
    try:
        for name, table in views:
            con.execute(f'CREATE OR REPLACE TEMP VIEW {name} AS SELECT * EXCLUDE (school) '
                        f'FROM "{db}".{table} WHERE school IN ({quote(npsn)}, {quote(ANY_SCHOOL)})')
        con.execute("BEGIN")
        try:
            cur = con.execute(sql)
            return [d[0] for d in cur.description or []], cur.fetchall()
        except duckdb.Error as exc:
            raise QueryRefused(f"SQL: {_sql_error_text(exc)}") from None
        finally:
            con.execute("ROLLBACK")
    finally:  # the writer's own SQL names these tables unqualified
        for name, _ in views:
            con.execute(f"DROP VIEW IF EXISTS temp.main.{name}")


def _sql_error_text(exc: duckdb.Error) -> str:
    """DuckDB's message in one line: its first line and any 'Did you mean' hint."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    hints = [s for s in lines[1:] if s.startswith("Did you mean")]
    return " ".join([lines[0] if lines else type(exc).__name__, *hints])

