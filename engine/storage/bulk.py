"""Bulk import: a rows file parsed by DuckDB, gone in columnar as one origin's events."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import duckdb

from ..clocks import local_clock, origin_rank
from ..schema import BY_NAME, SQL_TYPES, Entity
from ..store import AppendReport, ImportRefused
from ..values import EXPECTED, MAX_TEXT
from .database import fields_sql, quote

if TYPE_CHECKING:
    from .log import DuckDBStore


def import_jsonl(store: DuckDBStore, path: str, *, origin: str, author: str, role: str,
                 sekolah_id: str, now_ms: int) -> AppendReport:
    """Import a JSON-lines rows file as ``origin``'s events into ``store``: one event per row.

    Each line is ``{"entity": NAME, <key>: UUID, field: value, ...}``. The file
    is parsed by DuckDB and goes in columnar, in the caller's transaction; any
    problem (unknown entity or field, a value of the wrong type, a row of another
    school, centre data) refuses the whole file with ImportRefused.
    """
    c = store.con
    try:
        c.execute("""CREATE OR REPLACE TEMP TABLE raw AS
            SELECT row_number() OVER () AS line, json->>'entity' AS entity, json
            FROM read_ndjson_objects(?, maximum_object_size = 1048576)""", [path])
        keysets = c.execute("""SELECT entity, any_value(keys), min(line) FROM (
            SELECT entity, json_keys(json) AS keys, line FROM raw)
            GROUP BY entity, hash(keys)""").fetchall()
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0]
        raise ImportRefused(path, [(0, f"not a JSON-lines rows file ({reason})")]) from None
    problems = _keyset_problems(keysets)
    if problems:
        raise ImportRefused(path, problems)
    entities = [BY_NAME[name] for name in sorted({k[0] for k in keysets})]
    for e in entities:
        problems += _typed_rows(c, e, sekolah_id)
    if problems:
        raise ImportRefused(path, sorted(problems))
    (n,) = c.execute("SELECT count(*) FROM raw").fetchall()[0]
    c.execute("DROP TABLE raw")
    if not n:
        return AppendReport()
    vector = store.vector()
    base = vector.get(origin, 0)
    first = local_clock(store.max_hlc(origin), store.max_hlc(), now_ms).tick(now_ms, n)
    context = {o: s for o, s in vector.items() if o != origin}
    if context != store.context(origin):
        c.executemany("INSERT INTO log.context VALUES (?, ?, ?, ?, ?)",
                      [(store.school, origin, base + 1, peer, held)
                       for peer, held in context.items()])
    lww = f"(({first - 1} + line)::HUGEINT << 64) | {origin_rank(origin)}::HUGEINT"
    for e in entities:
        mask = " + ".join(f"CASE WHEN {f.name} IS NOT NULL THEN {e.bit(f.name)} ELSE 0 END"
                          for f in e.fields)
        c.execute(f"INSERT INTO log.event SELECT {quote(store.school)}, '{origin}', "
                  f"{base} + line, '{e.name}' FROM t_{e.slug}")
        store.write(e, f"""
            SELECT {quote(store.school)} AS school, '{origin}'::UUID AS origin,
                   {base} + line AS seq, {first - 1} + line AS hlc,
                   {lww} AS lww, row_id, {quote(author)} AS author, {quote(role)} AS role,
                   ({mask})::UBIGINT AS mask, {fields_sql(e)}
            FROM t_{e.slug}""")
        c.execute(f"DROP TABLE t_{e.slug}")
    return AppendReport(applied=n)

def _typed_rows(c: duckdb.DuckDBPyConnection, e: Entity, sekolah_id: str,
                ) -> list[tuple[int, str]]:
    """Cast the raw rows of ``e`` into t_<entity> in one pass; the problems found."""
    as_text = json.dumps(dict.fromkeys(e.columns, "VARCHAR"))
    typed, checks = [f"TRY_CAST({e.key} AS UUID) AS row_id"], [
        f"WHEN TRY_CAST({e.key} AS UUID) IS NULL THEN "
        f"'key {e.key}: ' || coalesce({e.key}, 'missing') || ' is not a UUID'"]
    for f in e.fields:
        cast = f"TRY_CAST({f.name} AS {SQL_TYPES[f.type]})"
        if f.name == e.school_field:  # a row without it belongs to this school
            cast = f"coalesce({cast}, '{sekolah_id}'::UUID)"
        typed.append(f"{cast} AS {f.name}")
        bad = f"{f.name} IS NOT NULL AND {cast} IS NULL"
        if f.type == "int":  # TRY_CAST rounds '5.7' to 6: demand a whole number
            bad = f"{f.name} IS NOT NULL AND NOT regexp_full_match({f.name}, '-?[0-9]+')"
        elif f.type == "text":
            bad = f"length({f.name}) > {MAX_TEXT}"
        checks.append(f"WHEN {bad} THEN '{e.name}.{f.name}: ' || {f.name} || "
                      f"' is not {EXPECTED[f.type]}'")
    if e.school_field:
        checks.append(
            f"WHEN {e.school_field}::UUID IS DISTINCT FROM '{sekolah_id}' THEN 'a row of "
            f"another school ({e.school_field} ' || {e.school_field} || '); this install "
            f"holds {sekolah_id}'")
    c.execute(f"""CREATE OR REPLACE TEMP TABLE t_{e.slug} AS
        SELECT line, {', '.join(typed)}, CASE {' '.join(checks)} END AS problem
        FROM (SELECT line, unnest(json_transform(json, {quote(as_text)}))
              FROM raw WHERE entity = '{e.name}')""")
    return [(int(n), str(m)) for n, m in c.execute(
        f"SELECT line, problem FROM t_{e.slug} WHERE problem IS NOT NULL LIMIT 20"
    ).fetchall()]

def _keyset_problems(keysets: list[tuple[str | None, list[str] | None, int]],
                     ) -> list[tuple[int, str]]:
    """What is wrong with the distinct (entity, keys) shapes of a rows file."""
    problems = []
    for name, keys, line in keysets:
        e = BY_NAME.get(name or "")
        if e is None:
            problems.append((line, f"unknown entity {name!r}" if name else "no entity"))
        elif e.is_reference or e.name == "sekolah":
            problems.append((line, f"{e.name} rows come from the centre"))
        elif e.key not in (keys or ()):
            problems.append((line, f"{e.name} row without its key {e.key}"))
        else:
            unknown = sorted(set(keys or ()) - {"entity", *e.columns})
            if unknown:
                problems.append((line, f"{e.name} has no field {', '.join(unknown)}"))
    return sorted(problems)


