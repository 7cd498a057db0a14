"""The operator's and admin's query: one read statement over one school's data.

Every store answers a query the same way (docs/security.md): the statement is
parsed and checked first; the school's rows of the views it names are then
copied into a private in-memory DuckDB with external access off and its
configuration locked, and the statement runs there, interrupted after a time
limit. The store itself only ever runs selaras's own statements.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pyarrow as pa

from ..schema import ENTITIES, SQL_TYPES
from ..store import QueryRefused

READ_ONLY = "queries are read-only: give exactly one SELECT statement"

# What a query may name: each view and its columns (name, SQL type).
VIEWS: dict[str, tuple[tuple[str, str], ...]] = {
    **{e.name: ((e.key, "UUID"), *((f.name, SQL_TYPES[f.type]) for f in e.fields))
       for e in ENTITIES},
    "event": (("origin", "UUID"), ("seq", "BIGINT"), ("entity", "VARCHAR")),
    "context": (("origin", "UUID"), ("seq", "BIGINT"), ("peer", "UUID"), ("held", "BIGINT")),
    "signature": (("origin", "UUID"), ("seq", "BIGINT"), ("sig", "BLOB")),
}
# Where a store finds each view's rows (every table has the school column too).
SOURCES = {**{e.name: e.table for e in ENTITIES},
           "event": "log.event", "context": "log.context", "signature": "log.signature"}

# Table references a read statement is made of; anything else (table functions,
# DESCRIBE and SHOW, ...) is refused.
_READ_REFS = {"BASE_TABLE", "JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY", "PIVOT"}

Fetch = Callable[[str], pa.Table]  # a view's name -> the school's rows, in VIEWS' columns


def query_school(sql: str, fetch: Fetch, time_limit_s: float | None = None,
                 ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` over one school's views, whose rows ``fetch`` gives.

    Unqualified names are the school's entity tables and the log's ``event``,
    ``context`` and ``signature``; Referensi's tables are ``ref.<name>``.
    QueryRefused if it is not one SELECT of those, if DuckDB rejects it (one
    line), or if it runs longer than ``time_limit_s``.
    """
    with _private() as con:
        names = views_named(con, sql)
        for name in sorted(names):
            _load(con, name, fetch(name))
        timer = threading.Timer(time_limit_s, con.interrupt) if time_limit_s else None
        if timer:
            timer.start()
        try:
            cur = con.execute(sql)
            return [d[0] for d in cur.description or []], cur.fetchall()
        except duckdb.InterruptException:
            raise QueryRefused(f"the query ran longer than {time_limit_s:g} s and was "
                               "stopped: narrow it down") from None
        except duckdb.Error as exc:
            raise QueryRefused(f"SQL: {_sql_error_text(exc)}") from None
        finally:
            if timer:
                timer.cancel()


def views_named(con: duckdb.DuckDBPyConnection, sql: str) -> set[str]:
    """The views ``sql`` reads; QueryRefused unless it is one SELECT of views alone."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"SQL: {_sql_error_text(exc)}") from None
    if len(statements) != 1 or statements[0].type is not duckdb.StatementType.SELECT:
        raise QueryRefused(READ_ONLY)
    (tree,) = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0]
    parsed = json.loads(tree)
    if parsed.get("error"):
        raise QueryRefused(READ_ONLY)
    ctes = {c["key"] for node in _nodes(parsed) for c in node.get("cte_map", {}).get("map", [])}
    names: set[str] = set()
    for node in _nodes(parsed):
        kind = node.get("type")
        if "sample" not in node or "class" in node or str(kind).endswith("_NODE"):
            continue  # not a table reference: an expression or a query node
        if kind not in _READ_REFS:
            raise QueryRefused(f"{READ_ONLY}, reading only the school's tables "
                               f"(not {str(kind).lower().replace('_', ' ')})")
        if kind != "BASE_TABLE":
            continue
        schema, table = node["schema_name"], node["table_name"]
        name = f"{schema}.{table}" if schema else table
        if not node["catalog_name"] and (schema == "ref" or not schema) and name in VIEWS:
            names.add(name)
        elif node["catalog_name"] or schema or table not in ctes:
            raise QueryRefused(f"SQL: table {name!r} does not exist here: a query reads the "
                               "school's tables (peserta_didik, ptk, ...), event, context, "
                               "signature and ref.<table>")
    return names


def _nodes(tree: object) -> Iterator[dict[str, Any]]:
    """Every object in a parsed statement, depth first."""
    stack = [tree]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            yield x
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


class _private:
    """An in-memory DuckDB for one query: no files, no network, no extension loading,
    configuration locked, one thread."""

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        self.con = duckdb.connect(":memory:", config={
            "enable_external_access": False, "autoload_known_extensions": False,
            "autoinstall_known_extensions": False, "arrow_lossless_conversion": True,
            "threads": 1, "memory_limit": "1GB"})
        self.con.execute("SET enable_progress_bar_print = false")
        self.con.execute("CREATE SCHEMA ref")
        self.con.execute("SET lock_configuration = true")
        return self.con

    def __exit__(self, *exc: object) -> None:
        self.con.close()


def _load(con: duckdb.DuckDBPyConnection, name: str, rows: pa.Table) -> None:
    """Make view ``name`` a table of ``rows``, its columns cast to their declared types."""
    con.register("incoming", rows)
    try:
        cols = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in VIEWS[name])
        con.execute(f"CREATE TABLE {name} AS SELECT {cols} FROM incoming")
    finally:
        con.unregister("incoming")


def _sql_error_text(exc: duckdb.Error) -> str:
    """DuckDB's message in one line: its first line and any 'Did you mean' hint."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    hints = [s for s in lines[1:] if s.startswith("Did you mean")]
    return " ".join([lines[0] if lines else type(exc).__name__, *hints])
