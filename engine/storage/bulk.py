"""Bulk import: a rows file parsed by DuckDB, gone in columnar as one origin's events.

The file is read here, as bytes, and handed to DuckDB as Arrow batches of its
lines: a file name is the file's own, never a pattern (DuckDB's file readers
expand ``*``, ``?`` and ``[...]``; docs/security.md, "Errors").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ..clocks import local_clock, origin_rank
from ..schema import BY_NAME, SQL_TYPES, Entity
from ..store import AppendReport, ImportRefused
from ..values import EXPECTED, MAX_TEXT, BadValue, bad_value, shown
from .database import advance_head_sql, fields_sql, quote

if TYPE_CHECKING:
    from .log import DuckDBStore

MAX_OBJECT = 1 << 20  # bytes of one line (one row) of a rows file
CHUNK = 1 << 20  # bytes read at a time: DuckDB buffers fewer, smaller batches
BOM = b"\xef\xbb\xbf"
LINES = pa.schema([("line", pa.int64()), ("source_line", pa.int64()), ("json", pa.large_string())])
NOT_JSON_LINES = "file impor harus berisi satu objek JSON per baris (JSON Lines)"


def import_jsonl(store: DuckDBStore, path: str, *, origin: str, author: str, role: str,
                 sekolah_id: str, now_ms: int) -> AppendReport:
    """Import a JSON-lines rows file as ``origin``'s events into ``store``: one event per row.

    Each line is ``{"entity": NAME, <key>: UUID, field: value, ...}``; blank
    lines are skipped. The file is parsed by DuckDB and goes in columnar, in the
    caller's transaction; any problem (a line that is not a JSON object, unknown
    entity or field, a value of the wrong type or out of range, a list or object
    where a value goes, a row of another school, centre data) refuses the whole
    file with ImportRefused, whose problems name the line (of the file, from 1).
    """
    c = store.con
    problems: list[tuple[int, str]] = []
    with open(path, "rb") as f:
        c.register("rows_file", pa.RecordBatchReader.from_batches(LINES, _lines(f, problems)))
        try:
            # ``line`` numbers the rows (the events' seq), ``source_line`` the file's lines.
            c.execute("""CREATE OR REPLACE TEMP TABLE raw AS
                SELECT line, source_line, json, json->>'entity' AS entity
                FROM (SELECT line, source_line, TRY_CAST(json AS JSON) AS json FROM rows_file)""")
        finally:
            c.unregister("rows_file")
    if problems:
        raise ImportRefused(path, problems)
    (not_json, not_object) = c.execute("""SELECT min(source_line) FILTER (WHERE json IS NULL),
        -- valid JSON that opens with a brace is an object
        min(source_line) FILTER (WHERE NOT regexp_matches(json, '^\\s*\\{'))
        FROM raw""").fetchall()[0]
    bad = sorted([(n, "bukan JSON") for n in [not_json] if n]
                 + [(n, "bukan objek JSON {...}") for n in [not_object] if n])
    if bad:
        raise ImportRefused(path, [(int(bad[0][0]), f"{bad[0][1]}: {NOT_JSON_LINES}")])
    keysets = c.execute("""SELECT entity, any_value(keys), min(source_line) FROM (
        SELECT entity, json_keys(json) AS keys, source_line FROM raw)
        GROUP BY entity, hash(keys)""").fetchall()
    problems = _keyset_problems(keysets)
    if problems:
        raise ImportRefused(path, problems)
    entities = [BY_NAME[name] for name in sorted({k[0] for k in keysets})]
    for e in entities:
        problems += _typed_rows(c, e, sekolah_id)
    if problems:
        raise ImportRefused(path, sorted(problems))
    if BY_NAME["pengguna"] in entities:
        _one_row_per_username(c, store.school)
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
        c.execute(advance_head_sql(f"(SELECT {quote(store.school)} AS school, "
                                   f"'{origin}'::UUID AS origin, {base} + line AS seq "
                                   f"FROM t_{e.slug})"))
        store.write(e, f"""
            SELECT {quote(store.school)} AS school, '{origin}'::UUID AS origin,
                   {base} + line AS seq, {first - 1} + line AS hlc,
                   {lww} AS lww, row_id, {quote(author)} AS author, {quote(role)} AS role,
                   ({mask})::UBIGINT AS mask, {fields_sql(e)}
            FROM t_{e.slug}""")
        c.execute(f"DROP TABLE t_{e.slug}")
    return AppendReport(applied=n)


def _lines(f: BinaryIO, problems: list[tuple[int, str]]) -> Iterator[pa.RecordBatch]:
    """The non-blank lines of ``f`` as batches of (line, source_line, json), ``CHUNK`` bytes at a
    time. A line that is not UTF-8 or is longer than ``MAX_OBJECT`` bytes goes into
    ``problems`` and ends the batches (the caller then refuses the file)."""
    rows = lines = 0  # rows and lines before this chunk
    rest = b""
    while True:
        chunk = f.read(CHUNK)
        data = rest + chunk
        if not lines and not rest:
            data = data.removeprefix(BOM)
        cut = data.rfind(b"\n") + 1 if chunk else len(data)
        data, rest = data[:cut], data[cut:]
        if len(rest) > MAX_OBJECT:
            problems.append((lines + data.count(b"\n") + 1, _too_long()))
            return
        if data:
            split = pc.split_pattern(pa.array([data], pa.large_binary()), b"\n").flatten()
            try:
                text = split.cast(pa.large_string())
            except pa.ArrowInvalid:
                problems.append((lines + _first_not_utf8(split) + 1,
                                 "bukan teks UTF-8: simpan file sebagai UTF-8"))
                return
            lengths = pc.binary_length(text)
            if pc.max(lengths).as_py() > MAX_OBJECT:
                long = pc.index(pc.greater(lengths, MAX_OBJECT), True).as_py()
                problems.append((lines + long + 1, _too_long()))
                return
            keep = pc.and_(pc.greater(lengths, 0), pc.invert(pc.ascii_is_space(text)))
            kept = pc.filter(text, keep)
            yield pa.record_batch([
                pc.filter(pc.add(pc.cumulative_sum(keep.cast(pa.int64())), rows), keep),
                pc.add(pc.indices_nonzero(keep).cast(pa.int64()), lines + 1),
                kept], schema=LINES)
            rows, lines = rows + len(kept), lines + len(split) - 1
        if not chunk:
            return


def _too_long() -> str:
    return f"baris lebih dari {MAX_OBJECT} byte (1 MiB), batas satu baris"


def _first_not_utf8(lines: pa.Array) -> int:
    """The index of the first of ``lines`` (binary) that is not UTF-8."""
    for i, raw in enumerate(lines.to_pylist()):
        try:
            raw.decode()
        except UnicodeDecodeError:
            return i
    return 0


def _typed_rows(c: duckdb.DuckDBPyConnection, e: Entity, sekolah_id: str,
                ) -> list[tuple[int, str]]:
    """Cast the raw rows of ``e`` into t_<entity> in one pass; the problems found.

    A problem row keeps which check failed (``problem``: its kind and column);
    the value as given is read back for the few shown, and the words come from
    ``values`` (BadValue), as for a value typed in.
    """
    as_text = json.dumps(dict.fromkeys(e.columns, "VARCHAR"))
    paths = "[" + ", ".join(quote(f"$.{name}") for name in e.columns) + "]"
    checks = [(f"types[{i}] IN ('ARRAY', 'OBJECT')", f"nested:{name}")
              for i, name in enumerate(e.columns, start=1)]
    checks.append((f"TRY_CAST({e.key} AS UUID) IS NULL", f"key:{e.key}"))
    typed = [f"TRY_CAST({e.key} AS UUID) AS row_id"]
    for f in e.fields:
        cast = f"TRY_CAST({f.name} AS {SQL_TYPES[f.type]})"
        if f.name == e.school_field:  # a row without it belongs to this school
            cast = f"coalesce({cast}, '{sekolah_id}'::UUID)"
        typed.append(f"{cast} AS {f.name}")
        given = f"{f.name} IS NOT NULL"
        if f.type == "int":  # TRY_CAST rounds '5.7' to 6: demand a whole number
            checks.append((f"{given} AND NOT regexp_full_match({f.name}, '-?[0-9]+')",
                           f"type:{f.name}"))
            checks.append((f"{given} AND {cast} IS NULL", f"range:{f.name}"))
        elif f.type == "decimal":
            checks.append((f"{given} AND {cast} IS NULL AND "
                           f"isfinite(TRY_CAST({f.name} AS DOUBLE))", f"range:{f.name}"))
            checks.append((f"{given} AND {cast} IS NULL", f"type:{f.name}"))
        elif f.type == "text":
            checks.append((f"length({f.name}) > {MAX_TEXT}", f"long:{f.name}"))
        else:
            checks.append((f"{given} AND {cast} IS NULL", f"type:{f.name}"))
    if e.school_field:
        checks.append((f"{e.school_field} IS NOT NULL AND {e.school_field}::UUID "
                       f"IS DISTINCT FROM '{sekolah_id}'", f"school:{e.school_field}"))
    problem = " ".join(f"WHEN {when} THEN {quote(tag)}" for when, tag in checks)
    c.execute(f"""CREATE OR REPLACE TEMP TABLE t_{e.slug} AS
        SELECT line, source_line, {', '.join(typed)}, CASE {problem} END AS problem
        FROM (SELECT line, source_line, unnest(json_transform(json, {quote(as_text)})),
                     -- a value that opens a list or an object follows a colon; most rows
                     -- have none, and skip a second parse
                     CASE WHEN regexp_matches(json, ':\\s*[\\[{{]')
                          THEN json_type(json, {paths}) END AS types
              FROM raw WHERE entity = '{e.name}')""")
    found = c.execute(f"""SELECT source_line, line, problem FROM t_{e.slug}
        WHERE problem IS NOT NULL ORDER BY source_line LIMIT 20""").fetchall()
    problems = []
    for at, line, tag in found:
        kind, _, column = str(tag).partition(":")
        (value,) = c.execute("SELECT json->>? FROM raw WHERE line = ?",
                             [column, line]).fetchall()[0]
        problems.append((int(at), _problem(e, kind, column, value, sekolah_id)))
    return problems


def _one_row_per_username(c: duckdb.DuckDBPyConnection, school: str) -> None:
    """An imported pengguna row whose username this replica holds already (the account
    the centre mirrored when the install registered, say) is that row: one username is
    one user (SEK-008), and the school's data joins the account's row instead of
    doubling it."""
    c.execute(f"""UPDATE t_pengguna t SET row_id = p.pengguna_id FROM pengguna p
        WHERE p.school = {quote(school)} AND coalesce(p.soft_delete, 0) = 0
          AND lower(trim(p.username)) = lower(trim(t.username))""")


def _problem(e: Entity, kind: str, column: str, value: str | None, sekolah_id: str) -> str:
    """The words for a problem ``_typed_rows`` found in ``column`` of a row."""
    if kind == "school":
        return (f"data sekolah lain ({column} {shown(value)}); instalasi ini memegang "
                f"sekolah {sekolah_id}")
    if column == e.key:
        if kind == "nested":
            return str(BadValue(e.name, column, value, EXPECTED["uuid"], "nested"))
        return (f"kunci {column} kosong" if value is None
                else f"kunci {column}: {shown(value)} bukan UUID")
    return str(bad_value(e, e.by_name[column], value, kind))


def _keyset_problems(keysets: list[tuple[str | None, list[str] | None, int]],
                     ) -> list[tuple[int, str]]:
    """What is wrong with the distinct (entity, keys) shapes of a rows file."""
    problems = []
    for name, keys, line in keysets:
        e = BY_NAME.get(name or "")
        if e is None:
            problems.append((line, f"entitas {shown(name)} tidak dikenal" if name
                             else 'tanpa "entity" (nama entitas)'))
        elif e.is_reference or e.name == "sekolah":
            problems.append((line, f"data {e.name} datang dari server pusat, tidak dapat "
                                   "diimpor"))
        elif e.key not in (keys or ()):
            problems.append((line, f"baris {e.name} tanpa kuncinya, {e.key}"))
        else:
            unknown = sorted(set(keys or ()) - {"entity", *e.columns})
            if unknown:
                listed = ", ".join(shown(k) for k in unknown[:3])
                more = f" dan {len(unknown) - 3} lainnya" if len(unknown) > 3 else ""
                problems.append((line, f"{e.name} tidak punya isian {listed}{more}"))
    return sorted(problems)
