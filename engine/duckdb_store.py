"""The DuckDB store: the only module that talks to DuckDB (DESIGN.md section 5).

One file per install holds:

- ``log.event``      (origin, seq) -> entity: the primary key makes a second
                     event under one id impossible.
- ``log.<entity>``   the events of one entity, columnar: metadata, the LWW key
                     packed into one integer (derived: a clock bound arriving
                     later rewrites it), the change mask, the field values.
- ``log.context``    causal contexts, one row per peer, only where they changed.
- ``log.signature``  the centre's signature of each centre event that came with one.
- ``<entity>``       the materialised tables (``ref.*`` in schema ref).
- ``replica.*``      replica-local state: meta, conflicts, validation results
                     (not ``selaras.*``: a file named selaras.duckdb is catalog
                     ``selaras``, and ``selaras.meta`` would be ambiguous).

Every append is one explicit transaction: a crash leaves all of it or none.
The merge here is set-based SQL equal to ``merge.fold`` (property-tested).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import msgspec
import pyarrow.compute as pc

from .clocks import MAX_AHEAD_MS, VersionVector, hlc_from_ms, local_clock, origin_rank
from .events import (
    REFERENSI_ORIGIN,
    SIGNATURE_SCHEMA,
    Batch,
    Event,
    MalformedBatch,
    arrow_schema,
    central_origins,
    centre_origin,
)
from .merge import Sibling
from .schema import (
    BY_NAME,
    CLOCK_BOUND,
    ENTITIES,
    SQL_TYPES,
    Entity,
    Owner,
)
from .signatures import CentreKey
from .store import (
    AppendReport,
    DataInUse,
    EventCollision,
    ImportRefused,
    QueryRefused,
    StoreError,
    check_signatures,
)
from .values import EXPECTED, MAX_TEXT, from_python, table_digest

MEMORY_LIMIT = "1GB"
CENTRE_CHECKPOINT = "256MB"  # WAL size that makes the centre checkpoint
EMPTY_DIGEST = table_digest([])  # checksums() of an empty table


def connect(path: str | os.PathLike[str], *, read_only: bool = False,
            memory_limit: str = MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file as every store here wants it; DataInUse if another process has it."""
    try:
        con = duckdb.connect(str(path), read_only=read_only,
                             config={"memory_limit": memory_limit,
                                     # UUIDs cross Arrow as 16 bytes, not text
                                     "arrow_lossless_conversion": True})
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise DataInUse() from exc
        raise
    # Else any query over 2 s draws a progress bar on stdout (a pipe too), into --json
    # output. Cursors have no progress bar by default.
    con.execute("SET enable_progress_bar_print = false")
    return con


ANY_SCHOOL = ""  # the school of Referensi's events and rows (every school's), and an install's


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The tables of every store, if missing: one set, whatever the number of schools.

    ``school`` leads every key, so registering a school adds rows, never tables.
    """
    c = con
    c.execute("BEGIN")
    for schema in ("log", "ref", "replica"):
        c.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    c.execute("""CREATE TABLE IF NOT EXISTS log.event (school VARCHAR, origin UUID, seq BIGINT,
        entity VARCHAR NOT NULL, PRIMARY KEY (school, origin, seq))""")
    c.execute("""CREATE TABLE IF NOT EXISTS log.context (school VARCHAR NOT NULL,
        origin UUID NOT NULL, seq BIGINT NOT NULL, peer UUID NOT NULL, held BIGINT NOT NULL)""")
    c.execute("""CREATE TABLE IF NOT EXISTS log.signature (school VARCHAR, origin UUID,
        seq BIGINT, sig BLOB NOT NULL, PRIMARY KEY (school, origin, seq))""")
    c.execute("CREATE TABLE IF NOT EXISTS replica.meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    c.execute("""CREATE TABLE IF NOT EXISTS replica.conflict (school VARCHAR NOT NULL,
        entity VARCHAR, row_id UUID, field VARCHAR, origin UUID, seq BIGINT,
        value VARCHAR, author VARCHAR, role VARCHAR, winner BOOLEAN)""")
    c.execute("""CREATE TABLE IF NOT EXISTS replica.sync_history (
        session VARCHAR, mode VARCHAR, started TIMESTAMPTZ, ended TIMESTAMPTZ,
        outcome VARCHAR, clock_offset_ms BIGINT, events_up BIGINT, events_down BIGINT,
        bytes_up BIGINT, bytes_down BIGINT, detail JSON)""")
    c.execute("""CREATE TABLE IF NOT EXISTS replica.validation (
        rule_id VARCHAR, tab VARCHAR, severity VARCHAR, entity VARCHAR, row_id UUID,
        field VARCHAR, message VARCHAR, detail VARCHAR)""")
    for e in ENTITIES:
        values = [f"{f.name} {SQL_TYPES[f.type]}" for f in e.fields]
        # The change log: one row per event; lww packs the LWW order (hlc, origin) in one integer.
        c.execute(f"""CREATE TABLE IF NOT EXISTS log.{e.slug} (school VARCHAR NOT NULL,
            origin UUID NOT NULL, seq BIGINT NOT NULL, hlc BIGINT NOT NULL,
            lww HUGEINT NOT NULL, row_id UUID NOT NULL, author VARCHAR NOT NULL,
            role VARCHAR NOT NULL, mask UBIGINT NOT NULL, {", ".join(values)})""")
        c.execute(f"CREATE TABLE IF NOT EXISTS {e.table} (school VARCHAR NOT NULL, "
                  f"{e.key} UUID, {', '.join(values)})")
    c.execute("COMMIT")


def _fields(e: Entity, prefix: str = "") -> str:
    return ", ".join(prefix + f.name for f in e.fields)


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class DuckDBStore:
    """One school's replica in a DuckDB file (or ``:memory:``).

    Every table is keyed by ``school`` (an NPSN): the centre keeps all its
    schools in one set of tables (``DuckDBCentre``), an install keeps its one
    school under ``""``. Referensi's events and rows belong to every school and
    are kept once, under ``""`` (``ANY_SCHOOL``). A store reads and writes its
    school and Referensi, nothing else.
    """

    def __init__(self, path: str | os.PathLike[str], central: frozenset[str],
                 *, read_only: bool = False, memory_limit: str = MEMORY_LIMIT,
                 school: str = ANY_SCHOOL,
                 con: duckdb.DuckDBPyConnection | None = None) -> None:
        self.central = central
        if con is None:
            con = connect(path, read_only=read_only, memory_limit=memory_limit)
            if not read_only:
                create_tables(con)
        self.con = con
        self.school = school
        self._scope = f"school IN ({_q(school)}, {_q(ANY_SCHOOL)})"
        self._central_sql = ", ".join(f"'{o}'::UUID" for o in sorted(central)) or "NULL"

    def _school_of(self, x: str) -> str:
        """SQL: the school an event ``x`` belongs to (Referensi's belong to every school)."""
        if self.school == ANY_SCHOOL:
            return _q(ANY_SCHOOL)
        return (f"CASE WHEN {x}.origin = '{REFERENSI_ORIGIN}'::UUID THEN {_q(ANY_SCHOOL)} "
                f"ELSE {_q(self.school)} END")

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.con.execute("BEGIN")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def close(self) -> None:
        self.con.close()

    # -- meta ---------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM replica.meta").fetchall())

    def set_meta(self, **values: str) -> None:
        with self.transaction() as c:
            for k, v in values.items():
                c.execute("INSERT OR REPLACE INTO replica.meta VALUES (?, ?)", [k, v])

    @property
    def centre_key(self) -> str | None:
        """The centre's public key from the meta (an install registered with a centre)."""
        row = self.con.execute("SELECT value FROM replica.meta "
                               "WHERE key = 'centre_key'").fetchall()
        return str(row[0][0]) if row and row[0][0] else None

    def record_session(self, record: dict[str, Any]) -> None:
        """Keep one sync session in the history (keys: the sync_history columns)."""
        record = {**record, "detail": json.dumps(record.get("detail"))}
        with self.transaction() as c:
            c.execute(f"INSERT INTO replica.sync_history ({', '.join(record)}) "
                      f"VALUES ({', '.join('?' * len(record))})", list(record.values()))

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        cur = self.con.execute("SELECT * FROM replica.sync_history "
                               "ORDER BY started DESC LIMIT ?", [limit])
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # -- reading --------------------------------------------------------------------

    def vector(self) -> VersionVector:
        return dict(self.con.execute(
            f"SELECT origin::VARCHAR, max(seq) FROM log.event WHERE {self._scope} "
            "GROUP BY origin").fetchall())

    def max_hlc(self, origin: str | None = None) -> int:
        col, where = ("hlc", f"AND origin = '{uuid.UUID(origin)}'") if origin else (
            "lww >> 64", "")
        union = " UNION ALL ".join(
            f"SELECT max({col}) h FROM log.{e.slug} WHERE {self._scope} {where}"
            for e in ENTITIES)
        (h,) = self.con.execute(f"SELECT coalesce(max(h), 0) FROM ({union})").fetchall()[0]
        return int(h)

    def context(self, origin: str) -> VersionVector:
        """The last causal context ``origin`` carried (contexts only grow)."""
        return dict(self.con.execute(
            f"SELECT peer::VARCHAR, max(held) FROM log.context WHERE {self._scope} "
            "AND origin = ? GROUP BY peer",
            [origin]).fetchall())

    def events_after(self, vector: VersionVector) -> Batch:
        c = self.con
        c.execute("CREATE OR REPLACE TEMP TABLE theirs (origin UUID, seq BIGINT)")
        if vector:
            c.executemany("INSERT INTO theirs VALUES (?, ?)", list(vector.items()))
        return self._events("LEFT JOIN theirs t USING (origin)", "x.seq > coalesce(t.seq, 0)")

    def events_between(self, origin: str, after: int, upto: int) -> Batch:
        """The events of ``origin`` with ``after < seq <= upto`` (one batch of a push)."""
        return self._events("", f"x.origin = '{uuid.UUID(origin)}' "
                                f"AND x.seq > {int(after)} AND x.seq <= {int(upto)}")

    def _events(self, join: str, where: str) -> Batch:
        """Held events as a Batch: each log table ``x`` with ``join`` and ``where``."""
        c = self.con
        where = f"x.{self._scope} AND {where}"
        # Only the entities that have events there: a small batch touches few of them.
        present = {name for (name,) in c.execute(
            f"SELECT DISTINCT x.entity FROM log.event x {join} WHERE {where}").fetchall()}
        tables = {}
        for e in (e for e in ENTITIES if e.name in present):
            t = c.sql(f"""
                SELECT x.origin, x.seq, x.hlc, x.row_id, x.author, x.role, x.mask,
                       {_fields(e, 'x.')}
                FROM log.{e.slug} x {join} WHERE {where}
                ORDER BY x.origin, x.seq""").to_arrow_table()
            if t.num_rows:
                tables[e.name] = t.cast(arrow_schema(e))
        contexts = c.sql(f"""SELECT x.origin, x.seq, x.peer, x.held
            FROM log.context x {join} WHERE {where} ORDER BY ALL""").to_arrow_table()
        signatures = c.sql(f"""SELECT x.origin, x.seq, x.sig
            FROM log.signature x {join} WHERE {where} ORDER BY ALL""").to_arrow_table()
        return Batch(tables, contexts, signatures.cast(SIGNATURE_SCHEMA))

    def rows(self, entity: str) -> dict[str, dict[str, object]]:
        e = BY_NAME[entity]
        cur = self.con.execute(f"SELECT * EXCLUDE (school) FROM {e.table} WHERE {self._scope}")
        out = {}
        for r in cur.fetchall():
            row: dict[str, object] = {e.key: str(r[0])}
            row.update((f.name, from_python(f, v)) for f, v in zip(e.fields, r[1:], strict=True))
            out[str(r[0])] = row
        return out

    def conflicts(self) -> list[Sibling]:
        out = []
        for entity, row_id, field, origin, seq, value, author, role, winner in self.con.execute(
                "SELECT entity, row_id::VARCHAR, field, origin::VARCHAR, seq, value, author, "
                f"role, winner FROM replica.conflict WHERE {self._scope}").fetchall():
            if value is not None and BY_NAME[entity].by_name[field].type == "int":
                value = int(value)
            out.append(Sibling(entity, row_id, field, origin, seq, value, author, role, winner))
        return sorted(out)

    def checksums(self) -> dict[str, str]:
        """Per entity, a digest of the materialised values (values.table_digest in SQL)."""
        # An empty table's digest needs no query (the one per entity costs a few ms).
        filled = {name for (name,) in self.con.execute(" UNION ALL ".join(
            f"SELECT '{e.name}' FROM (FROM {e.table} WHERE {self._scope} LIMIT 1)"
            for e in ENTITIES),
        ).fetchall()}
        out = {}
        for e in ENTITIES:
            if e.name not in filled:
                out[e.name] = EMPTY_DIGEST
                continue
            enc = ", ".join(
                f"CASE WHEN {c} IS NULL THEN '-' "
                f"ELSE length({c}::VARCHAR)::VARCHAR || ':' || {c}::VARCHAR END"
                for c in e.columns)
            (digest,) = self.con.execute(f"""
                SELECT md5(coalesce(string_agg(d, ',' ORDER BY k), ''))
                FROM (SELECT {e.key}::VARCHAR AS k, md5(concat({enc})) AS d
                      FROM {e.table} WHERE {self._scope})
                """).fetchall()[0]
            out[e.name] = digest
        return out

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read statement over this school's data (``query_school``)."""
        return query_school(self.con, self.school, sql)

    def row_counts(self) -> dict[str, int]:
        """Per entity, the rows materialised."""
        union = " UNION ALL ".join(
            f"SELECT '{e.name}', count(*) FROM {e.table} WHERE {self._scope}" for e in ENTITIES)
        return {str(n): int(c) for n, c in self.con.execute(union).fetchall()}

    def event_counts(self, origin: str, after: int = 0) -> dict[str, int]:
        """Per entity, the events of ``origin`` held past seq ``after``."""
        return {str(n): int(c) for n, c in self.con.execute(
            f"SELECT entity, count(*) FROM log.event WHERE {self._scope} AND origin = ? "
            "AND seq > ? GROUP BY entity ORDER BY entity", [origin, after]).fetchall()}

    # -- appending ------------------------------------------------------------------

    def append(self, batch: Batch) -> AppendReport:
        with self.transaction():
            return self._append(batch)

    def _append(self, batch: Batch) -> AppendReport:
        c = self.con
        # Clock bounds first: the other entities' new events take their LWW keys from them.
        staged = sorted((BY_NAME[name] for name in batch.tables),
                        key=lambda e: e.name != CLOCK_BOUND)
        if not staged:
            return AppendReport()
        c.execute("CREATE OR REPLACE TEMP TABLE ours AS "
                  f"SELECT origin, max(seq) AS seq FROM log.event WHERE {self._scope} "
                  "GROUP BY origin")
        key = self.centre_key
        if key:
            held = dict(c.execute("SELECT origin::VARCHAR, seq FROM ours").fetchall())
            check_signatures(batch, key, held, self.central)
        duplicates = 0
        for e in staged:
            c.register("incoming", batch.tables[e.name])
            try:
                duplicates += self._check_held(e)
                self._stage(e)
            finally:
                c.unregister("incoming")
        ids = " UNION ALL ".join(f"SELECT origin, seq, '{e.name}' AS entity FROM s_{e.slug}"
                                 for e in staged)
        runs = self._runs(ids)
        if any(n > distinct for _, _, n, distinct in runs.values()):
            # The same event more than once in the batch: keep one, unless they differ.
            for e in staged:
                c.execute(f"CREATE OR REPLACE TEMP TABLE s_{e.slug} AS "
                          f"SELECT DISTINCT * FROM s_{e.slug}")
            clash = c.execute(f"SELECT origin::VARCHAR, seq FROM ({ids}) GROUP BY ALL "
                              "HAVING count(*) > 1 LIMIT 1").fetchall()
            if clash:
                raise EventCollision(*clash[0])
            runs = self._runs(ids)
        fresh = sum(n for _, _, n, _ in runs.values())
        ours = self.vector()
        if all(first == ours.get(o, 0) + 1 and last - first + 1 == n
               for o, (first, last, n, _) in runs.items()):
            accepted, only_accepted = ids, ""  # gap-free: everything goes in
        else:
            # Per origin, the run of new events that follows what we hold without a gap.
            c.execute(f"""CREATE OR REPLACE TEMP TABLE accepted AS
                SELECT origin, seq, entity FROM (
                    SELECT s.*, coalesce(o.seq, 0) AS base,
                           row_number() OVER (PARTITION BY s.origin ORDER BY s.seq) AS rn
                    FROM ({ids}) s LEFT JOIN ours o USING (origin))
                WHERE seq = base + rn""")
            accepted = "SELECT * FROM accepted"
            only_accepted = "SEMI JOIN accepted a ON a.origin = s.origin AND a.seq = s.seq"
        (applied,) = c.execute(f"SELECT count(*) FROM ({accepted})").fetchall()[0]
        if not applied:
            return AppendReport(0, duplicates, fresh)
        c.execute(f"INSERT INTO log.event SELECT {self._school_of('a')}, a.* FROM ({accepted}) a")
        c.register("incoming_context", batch.contexts)
        try:
            c.execute(f"""INSERT INTO log.context
                          SELECT {self._school_of('c')}, c.* FROM incoming_context c
                          SEMI JOIN ({accepted}) a ON a.origin = c.origin AND a.seq = c.seq""")
        finally:
            c.unregister("incoming_context")
        if batch.signatures.num_rows:
            c.register("incoming_signature", batch.signatures)
            try:  # only centre events' signatures mean anything; one per event is kept
                c.execute(f"""INSERT INTO log.signature
                    SELECT {self._school_of('s')}, s.origin, s.seq, any_value(s.sig)
                    FROM incoming_signature s
                    SEMI JOIN ({accepted}) a ON a.origin = s.origin AND a.seq = s.seq
                    WHERE s.origin IN ({self._central_sql}) AND s.sig IS NOT NULL
                    GROUP BY s.origin, s.seq""")
            finally:
                c.unregister("incoming_signature")
        ranks = " UNION ALL ".join(f"SELECT '{o}'::UUID AS origin, {origin_rank(o)} AS rank"
                                   for o in runs)
        for e in staged:
            new = f"""SELECT {self._school_of('s')} AS school, s.origin, s.seq, s.hlc,
                             ({self._effective_hlc('s')}::HUGEINT << 64) | r.rank::HUGEINT
                             AS lww, s.row_id, s.author, s.role, s.mask, {_fields(e, 's.')}
                      FROM s_{e.slug} s JOIN ({ranks}) r ON r.origin = s.origin {only_accepted}"""
            self._write(e, new)
            if e.name == CLOCK_BOUND:
                self._rebound()
            c.execute(f"DROP TABLE s_{e.slug}")
        return AppendReport(applied, duplicates, fresh - applied)

    # -- clock bounds (merge rule 5) ---------------------------------------------------------

    def _effective_hlc(self, x: str) -> str:
        """SQL: the effective hlc of event ``x``: its own, or the least a bound gives it."""
        bounds = BY_NAME[CLOCK_BOUND].table
        if not self.con.execute(f"SELECT 1 FROM {bounds} WHERE {self._scope} LIMIT 1",
                                ).fetchall():
            return f"{x}.hlc"  # the usual case, and the bulk path: nothing to look up
        return f"""coalesce((SELECT min(b.hlc_from + {x}.seq - b.seq_from) FROM {bounds} b
                             WHERE b.{self._scope} AND b.install_id = {x}.origin
                             AND {x}.seq BETWEEN b.seq_from
                             AND b.seq_to AND {x}.origin NOT IN ({self._central_sql})),
                            {x}.hlc)"""

    def _rebound(self) -> None:
        """Rewrite the LWW keys of held events the bounds cover, and remerge their rows."""
        c = self.con
        bounds = BY_NAME[CLOCK_BOUND].table
        for e in ENTITIES:
            c.execute(f"""CREATE OR REPLACE TEMP TABLE rebound AS
                SELECT school, origin, seq, {self._effective_hlc('x')} AS hlc
                FROM log.{e.slug} x WHERE {self._scope}
                AND origin IN (SELECT install_id FROM {bounds} WHERE {self._scope})""")
            c.execute(f"""CREATE OR REPLACE TEMP TABLE touched AS SELECT DISTINCT x.school, x.row_id
                FROM log.{e.slug} x JOIN rebound r USING (school, origin, seq)
                WHERE x.lww >> 64 <> r.hlc""")
            if not c.execute("SELECT 1 FROM touched LIMIT 1").fetchall():
                continue
            c.execute(f"""UPDATE log.{e.slug} x
                SET lww = (r.hlc::HUGEINT << 64) | (x.lww % (1::HUGEINT << 64))
                FROM rebound r WHERE x.school = r.school AND x.origin = r.origin
                AND x.seq = r.seq
                AND x.lww >> 64 <> r.hlc""")
            self._materialise(e)

    def _clock_bound(self, centre: str, held: VersionVector, limit: int, now_ms: int,
                     ) -> tuple[Event, int] | None:
        """The centre's koreksi_jam event bounding the new events past ``limit`` of
        one school origin, at our clock, after that origin's previous event; and
        how many events it bounds."""
        union = " UNION ALL ".join(
            f"SELECT origin, seq FROM log.{e.slug} WHERE {self._scope} AND hlc > {limit}"
            for e in ENTITIES)
        held_sql = " UNION ALL ".join(
            [f"SELECT '{uuid.UUID(o)}'::UUID AS origin, {int(s)} AS seq" for o, s in held.items()]
            or ["SELECT NULL::UUID AS origin, 0 AS seq"])
        found = self.con.execute(f"""SELECT a.origin::VARCHAR, min(a.seq), max(a.seq)
            FROM ({union}) a LEFT JOIN ({held_sql}) h USING (origin)
            WHERE a.seq > coalesce(h.seq, 0) AND a.origin NOT IN ({self._central_sql})
            GROUP BY a.origin ORDER BY 1 LIMIT 1""").fetchall()
        if not found:
            return None
        origin, first, last = found[0]
        (before,) = self.con.execute(f"""SELECT coalesce(max(lww >> 64), 0) FROM ({
            " UNION ALL ".join(f"SELECT lww FROM log.{e.slug} WHERE {self._scope} AND "
                               f"origin = '{origin}' AND seq = {first - 1}" for e in ENTITIES)
            })""",
                                     ).fetchall()[0]
        clock = local_clock(self.max_hlc(centre), self.max_hlc(), now_ms)
        hlc_from = max(hlc_from_ms(now_ms), int(before) + 1)
        vector = self.vector()
        context = {o: s for o, s in vector.items() if o != centre}
        return Event(origin=centre, seq=vector.get(centre, 0) + 1, hlc=clock.tick(now_ms),
                     entity=CLOCK_BOUND, row_id=str(uuid.uuid4()), author="pusat", role="pusat",
                     changes={"install_id": origin, "seq_from": first, "seq_to": last,
                              "hlc_from": hlc_from},
                     context=context if context != self.context(centre) else None), \
            last - first + 1

    def neutralised(self, origin: str, after: int, upto: int) -> dict[str, dict[str, int]]:
        """Per entity, the events of ``origin`` with ``after < seq <= upto`` that the
        centre's rules changed (``neutralised``: a write without effect, or a clock
        bound), and of those, how many were bounded (``clock``)."""
        out: dict[str, dict[str, int]] = {}
        o = uuid.UUID(origin)
        for e in ENTITIES:
            guarded = self._centre_mask(e) | sum(
                e.bit(f.name) for f in e.fields if f.owner is Owner.VERVAL)
            mine = (f"{self._scope} AND origin = '{o}' "
                    f"AND seq > {int(after)} AND seq <= {int(upto)} "
                    f"AND (mask & {guarded} <> 0 OR lww >> 64 <> hlc)")
            n, clock = self.con.execute(f"""SELECT count(*), count(*) FILTER (lww >> 64 <> hlc)
                FROM ({self._effective(e, f"SELECT school, row_id FROM log.{e.slug} WHERE {mine}")})
                WHERE {mine} AND (eff <> mask OR lww >> 64 <> hlc)""").fetchall()[0]
            if n:
                out[e.name] = {"neutralised": int(n), "clock": int(clock)}
        return out

    def _runs(self, ids: str) -> dict[str, tuple[int, int, int, int]]:
        """Per origin in the staged events: first seq, last seq, count, distinct seqs."""
        return {o: tuple(r) for o, *r in self.con.execute(
            f"SELECT origin::VARCHAR, min(seq), max(seq), count(*), count(DISTINCT seq) "
            f"FROM ({ids}) GROUP BY origin").fetchall()}

    def _masked(self, e: Entity) -> str:
        """The incoming columns, a field the mask does not set being NULL whatever was sent."""
        return ", ".join(["origin", "seq", "hlc", "row_id", "author", "role", "mask"] + [
            f"CASE WHEN mask & {e.bit(f.name)} <> 0 THEN {f.name} END AS {f.name}"
            for f in e.fields])

    def _check_held(self, e: Entity) -> int:
        """Check the registered ``incoming`` events: MalformedBatch if any is not an
        event, EventCollision if one we hold differs; the number we hold already."""
        c = self.con
        (bad,) = c.execute(f"""SELECT count(*) FROM incoming WHERE origin IS NULL
            OR row_id IS NULL OR seq IS NULL OR seq < 1 OR hlc IS NULL OR hlc < 0
            OR mask IS NULL OR mask >> {len(e.fields)} <> 0 OR author IS NULL OR role IS NULL
            """).fetchall()[0]
        if bad:
            raise MalformedBatch(f"{bad} {e.name} events with bad ids, seq, clock or mask")
        old = (f"(SELECT {self._masked(e)} FROM incoming i "
               "SEMI JOIN ours o ON i.origin = o.origin AND i.seq <= o.seq)")
        differs = " OR ".join(f"s.{col} IS DISTINCT FROM l.{col}" for col in
                              ("hlc", "row_id", "author", "role", "mask",
                               *(f.name for f in e.fields)))
        (held, clash) = c.execute(f"""
            SELECT count(*), arg_min((s.origin::VARCHAR, s.seq), s.seq)
                             FILTER (WHERE l.seq IS NULL OR {differs})
            FROM {old} s LEFT JOIN (FROM log.{e.slug} WHERE {self._scope}) l USING (origin, seq)
            """).fetchall()[0]
        if clash:
            raise EventCollision(*clash)
        return int(held)

    def _stage(self, e: Entity) -> None:
        """Copy the registered ``incoming`` events we do not hold into s_<entity>."""
        self.con.execute(f"""CREATE OR REPLACE TEMP TABLE s_{e.slug} AS
            SELECT {self._masked(e)} FROM incoming i
            ANTI JOIN ours o ON i.origin = o.origin AND i.seq <= o.seq""")

    # -- bulk import ---------------------------------------------------------------------

    def import_jsonl(self, path: str, *, origin: str, author: str, role: str,
                     sekolah_id: str, now_ms: int) -> AppendReport:
        """Import a JSON-lines rows file as this origin's events: one event per row.

        Each line is ``{"entity": NAME, <key>: UUID, field: value, ...}``. The file
        is parsed by DuckDB and goes in columnar, in one transaction; any problem
        (unknown entity or field, a value of the wrong type, a row of another
        school, centre data) refuses the whole file with ImportRefused.
        """
        with self.transaction():
            return self._import(str(path), origin, author, role, sekolah_id, now_ms)

    def _import(self, path: str, origin: str, author: str, role: str, sekolah_id: str,
                now_ms: int) -> AppendReport:
        c = self.con
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
            problems += self._typed_rows(e, sekolah_id)
        if problems:
            raise ImportRefused(path, sorted(problems))
        (n,) = c.execute("SELECT count(*) FROM raw").fetchall()[0]
        c.execute("DROP TABLE raw")
        if not n:
            return AppendReport()
        vector = self.vector()
        base = vector.get(origin, 0)
        first = local_clock(self.max_hlc(origin), self.max_hlc(), now_ms).tick(now_ms, n)
        context = {o: s for o, s in vector.items() if o != origin}
        if context != self.context(origin):
            c.executemany("INSERT INTO log.context VALUES (?, ?, ?, ?, ?)",
                          [(self.school, origin, base + 1, peer, held)
                           for peer, held in context.items()])
        lww = f"(({first - 1} + line)::HUGEINT << 64) | {origin_rank(origin)}::HUGEINT"
        for e in entities:
            mask = " + ".join(f"CASE WHEN {f.name} IS NOT NULL THEN {e.bit(f.name)} ELSE 0 END"
                              for f in e.fields)
            c.execute(f"INSERT INTO log.event SELECT {_q(self.school)}, '{origin}', "
                      f"{base} + line, '{e.name}' FROM t_{e.slug}")
            self._write(e, f"""
                SELECT {_q(self.school)} AS school, '{origin}'::UUID AS origin,
                       {base} + line AS seq, {first - 1} + line AS hlc,
                       {lww} AS lww, row_id, {_q(author)} AS author, {_q(role)} AS role,
                       ({mask})::UBIGINT AS mask, {_fields(e)}
                FROM t_{e.slug}""")
            c.execute(f"DROP TABLE t_{e.slug}")
        return AppendReport(applied=n)

    def _typed_rows(self, e: Entity, sekolah_id: str) -> list[tuple[int, str]]:
        """Cast the raw rows of ``e`` into t_<entity> in one pass; the problems found."""
        c = self.con
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
            FROM (SELECT line, unnest(json_transform(json, {_q(as_text)}))
                  FROM raw WHERE entity = '{e.name}')""")
        return [(int(n), str(m)) for n, m in c.execute(
            f"SELECT line, problem FROM t_{e.slug} WHERE problem IS NOT NULL LIMIT 20"
        ).fetchall()]

    # -- the set-based merge -----------------------------------------------------------

    @staticmethod
    def _centre_mask(e: Entity) -> int:
        return sum(e.bit(f.name) for f in e.fields if f.owner is Owner.CENTRE)

    def _effective(self, e: Entity, rows_sql: str) -> str:
        """SQL: the events of the given rows with ``eff``, the mask of writes with effect
        (merge rule 2)."""
        centre = self._centre_mask(e)
        verval = sum(e.bit(f.name) for f in e.fields if f.owner is Owner.VERVAL)
        is_central = f"origin IN ({self._central_sql})"
        lock = "NULL::HUGEINT"
        if e.verified_by:
            vb = e.bit(e.verified_by)
            lock = (f"min(lww) FILTER (WHERE {is_central} AND mask & {vb} <> 0 "
                    f"AND {e.verified_by} = 1) OVER (PARTITION BY school, row_id)")
        return f"""
            SELECT *, CASE WHEN {is_central} THEN mask
                           WHEN lww > lock THEN mask & ~{centre | verval}::UBIGINT
                           ELSE mask & ~{centre}::UBIGINT END AS eff
            FROM (SELECT *, {lock} AS lock FROM log.{e.slug}
                  SEMI JOIN ({rows_sql}) USING (school, row_id))"""

    def _write(self, e: Entity, new: str) -> None:
        """Append the new events of ``e`` (a query in log column order) to its log,
        and bring the materialised rows and conflicts they touch up to date."""
        c = self.con
        c.execute(f"""CREATE OR REPLACE TEMP TABLE prior AS SELECT DISTINCT school, row_id
                      FROM log.{e.slug} SEMI JOIN (SELECT school, row_id FROM ({new}))
                      USING (school, row_id)""")
        c.execute(f"INSERT INTO log.{e.slug} {new}")
        c.execute(f"""CREATE OR REPLACE TEMP TABLE touched AS
            SELECT school, row_id FROM ({new}) GROUP BY ALL HAVING count(*) > 1
            UNION SELECT school, row_id FROM prior""")
        # A row this replica has never seen, written once (most of a bulk load): its
        # values are the event's, less what authority takes away; nothing to merge.
        once = ", ".join(f"CASE WHEN eff & {e.bit(f.name)} <> 0 THEN {f.name} END"
                         for f in e.fields)
        c.execute(f"""INSERT INTO {e.table} SELECT school, row_id, {once}
            FROM (SELECT *, CASE WHEN origin IN ({self._central_sql}) THEN mask
                                 ELSE mask & ~{self._centre_mask(e)}::UBIGINT END AS eff
                  FROM ({new}) ANTI JOIN touched USING (school, row_id))
            WHERE eff <> 0""")
        if c.execute("SELECT 1 FROM touched LIMIT 1").fetchall():
            self._materialise(e)

    def _materialise(self, e: Entity) -> None:
        """Recompute the ``touched`` rows of ``e`` and their conflicts from the log."""
        c = self.con
        c.execute(f"CREATE OR REPLACE TEMP TABLE eff AS {self._effective(e, 'FROM touched')}")
        c.execute(f"DELETE FROM {e.table} x USING touched t "
                  f"WHERE x.school = t.school AND x.{e.key} = t.row_id")
        winners = ", ".join(
            f"arg_max_null({f.name}, lww) FILTER (WHERE eff & {e.bit(f.name)} <> 0)"
            for f in e.fields)
        c.execute(f"""INSERT INTO {e.table} SELECT school, row_id, {winners} FROM eff
                      GROUP BY school, row_id HAVING bit_or(eff) <> 0""")
        self._find_conflicts(e)

    def _find_conflicts(self, e: Entity) -> None:
        """Merge rule 4, for the touched rows written by more than one origin."""
        c = self.con
        c.execute(f"DELETE FROM replica.conflict x USING touched t WHERE x.entity = '{e.name}' "
                  "AND x.school = t.school AND x.row_id = t.row_id")
        c.execute("""CREATE OR REPLACE TEMP TABLE multi AS SELECT * FROM eff
                     SEMI JOIN (SELECT school, row_id FROM eff WHERE eff <> 0 GROUP BY ALL
                                HAVING count(DISTINCT origin) > 1) USING (school, row_id)""")
        (n,) = c.execute("SELECT count(*) FROM multi").fetchall()[0]
        if not n:
            return
        writes = " UNION ALL ".join(
            f"SELECT school, row_id, '{f.name}' AS field, origin, seq, lww, "
            f"{f.name}::VARCHAR AS value, author, role FROM multi "
            f"WHERE eff & {e.bit(f.name)} <> 0" for f in e.fields)
        c.execute(f"CREATE OR REPLACE TEMP TABLE w AS {writes}")
        c.execute(f"""INSERT INTO replica.conflict
            WITH siblings AS (
                SELECT * FROM w WHERE NOT EXISTS (
                    SELECT 1 FROM w AS w2 WHERE w2.school = w.school AND w2.row_id = w.row_id
                    AND w2.field = w.field
                    AND (w2.origin = w.origin AND w2.seq > w.seq
                         OR w2.origin <> w.origin AND w.seq <= (
                             SELECT coalesce(max(held), 0) FROM log.context x
                             WHERE x.school = w2.school AND x.origin = w2.origin
                               AND x.peer = w.origin AND x.seq <= w2.seq)))),
            winners AS (SELECT school, row_id, field, max(lww) AS lww FROM w GROUP BY ALL)
            SELECT s.school, '{e.name}', s.row_id, s.field, s.origin, s.seq, s.value, s.author,
                   s.role, s.lww = win.lww
            FROM siblings s JOIN winners win USING (school, row_id, field)
            WHERE (s.school, s.row_id, s.field) IN (
                SELECT (school, row_id, field) FROM siblings GROUP BY ALL
                HAVING count(DISTINCT value) + max((value IS NULL)::INT) > 1)""")

    def rebuild(self) -> None:
        """Recompute every materialised table and conflict from the log."""
        with self.transaction() as c:
            c.execute(f"DELETE FROM replica.conflict WHERE {self._scope}")
            for e in ENTITIES:
                c.execute(f"DELETE FROM {e.table} WHERE {self._scope}")
                c.execute(f"CREATE OR REPLACE TEMP TABLE touched AS "
                          f"SELECT DISTINCT school, row_id FROM log.{e.slug} WHERE {self._scope}")
                self._materialise(e)

    # -- validation ----------------------------------------------------------------------

    def validate(self) -> None:
        """Run every Validasi Lokal rule over the materialised state; keep the results."""
        from .validation import RULES, validation_sql

        rules = ", ".join(
            f"({_q(r.id)}, {_q(r.tab)}, {_q(r.severity)}, {_q(r.entity)}, "
            f"{_q(r.field) if r.field else 'NULL'}, {_q(r.message)})" for r in RULES)
        with self.transaction() as c:
            c.execute("DELETE FROM replica.validation")
            c.execute(f"""INSERT INTO replica.validation
                SELECT r.rule_id, r.tab, r.severity, r.entity, f.row_id, r.field, r.message,
                       f.detail
                FROM ({validation_sql()}) f
                JOIN (VALUES {rules}) r(rule_id, tab, severity, entity, field, message)
                USING (rule_id)""")

    def findings(self, tab: str | None = None) -> list[dict[str, Any]]:
        cur = self.con.execute(
            "SELECT rule_id, tab, severity, entity, row_id::VARCHAR AS row_id, field, message, "
            "detail FROM replica.validation WHERE ? IS NULL OR tab = ? "
            "ORDER BY severity, rule_id, row_id", [tab, tab])
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


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


class DuckDBCentre:
    """The centre's embedded store: every school in one DuckDB file.

    One connection writes; ``append_group`` commits the batches of many
    schools in one transaction (group commit); ``append_centre`` writes the
    centre's own events, signed. Readers on other threads use
    ``reader(npsn)``, a store on a cursor of their own.
    """

    def __init__(self, path: str | os.PathLike[str], *, key: CentreKey | None = None,
                 memory_limit: str = MEMORY_LIMIT) -> None:
        self.con = connect(path, memory_limit=memory_limit)
        create_tables(self.con)
        # Fewer, larger checkpoints: at DuckDB's default 16 MB of WAL nearly every group
        # commit was one. The WAL is as durable.
        self.con.execute(f"SET checkpoint_threshold = '{CENTRE_CHECKPOINT}'")
        self.key = key  # signs the centre's own events (R18)

    def school(self, npsn: str) -> DuckDBStore:
        """One school's store on the writer's connection (rows of the shared tables)."""
        return DuckDBStore("", central_origins(npsn), school=npsn, con=self.con)

    def reader(self, npsn: str) -> DuckDBStore:
        """One school's store on a cursor of its own, for another thread."""
        return DuckDBStore("", central_origins(npsn), school=npsn, con=self.con.cursor())

    def append_centre(self, npsn: str, events: list[Event]) -> AppendReport:
        """Append the centre's own events for school ``npsn``, signed with ``key`` (R18).

        The one way the centre writes events of its origins, so each is signed
        and installs can check it. ValueError without a key or for an event of
        another origin (a bug here, not a school's).
        """
        with self.school(npsn).transaction():
            return self._append_centre(npsn, events)

    def _append_centre(self, npsn: str, events: list[Event]) -> AppendReport:
        if self.key is None:
            raise ValueError("this centre has no signing key")
        if not {ev.origin for ev in events} <= central_origins(npsn):
            raise ValueError(f"append_centre takes only the centre's events for {npsn}")
        return self.school(npsn)._append(self.key.sign(Batch.from_events(events)))

    def append_group(self, items: list[tuple[str, Batch]], now_ms: int,
                     ) -> list[AppendReport | StoreError | MalformedBatch]:
        """Admit each (npsn, batch), all in one transaction when all succeed.

        If one fails, the group is rolled back and each item is retried in a
        transaction of its own, so a bad batch costs only itself; its error
        takes its place in the result.
        """
        pairs = [(npsn, self.school(npsn), batch) for npsn, batch in items]
        if not pairs:
            return []
        try:
            with pairs[0][1].transaction():
                return [self._admit(npsn, store, batch, now_ms) for npsn, store, batch in pairs]
        except (StoreError, MalformedBatch):
            pass
        results: list[AppendReport | StoreError | MalformedBatch] = []
        for npsn, store, batch in pairs:
            try:
                with store.transaction():
                    results.append(self._admit(npsn, store, batch, now_ms))
            except (StoreError, MalformedBatch) as exc:
                results.append(exc)
        return results

    def _admit(self, npsn: str, store: DuckDBStore, batch: Batch, now_ms: int) -> AppendReport:
        """Append a school's batch; if its new events carry a clock more than
        MAX_AHEAD_MS ahead of ours, bound them in the same transaction (merge rule 5)."""
        limit = hlc_from_ms(now_ms + MAX_AHEAD_MS)
        ahead = any(t.num_rows and pc.max(t["hlc"]).as_py() > limit
                    for t in batch.tables.values())
        held = store.vector() if ahead else {}
        report = store._append(batch)
        if ahead:
            bound = store._clock_bound(centre_origin(npsn), held, limit, now_ms)
            if bound is not None:
                event, n = bound
                self._append_centre(npsn, [event])
                return msgspec.structs.replace(report, clock_bounded=n)
        return report

    def close(self) -> None:
        self.con.close()



# == the centre's registry ================================================================
#
# Schools, accounts, installs and sessions of the central server, in schema ``registry``
# of the centre's file (beside the tenants' schemas). Only SQL lives here: hashing,
# secrets and the rules of registration are server/credentials.py's and server/app.py's.
# Times come in as milliseconds since the epoch (the caller owns the clock).


class RegistryError(StoreError):
    """A registry change that cannot be made (an unknown or duplicate key)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what

    def __str__(self) -> str:
        return self.what


class DuckDBRegistry:
    """The centre's registry on a connection of the centre's file (its writer's or a cursor)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, create: bool = True) -> None:
        self.con = con
        if create:
            self._create()

    def _create(self) -> None:
        c = self.con
        c.execute("BEGIN")
        c.execute("CREATE SCHEMA IF NOT EXISTS registry")
        c.execute("""CREATE TABLE IF NOT EXISTS registry.school (
            npsn VARCHAR PRIMARY KEY, nama VARCHAR NOT NULL, kode_hash VARCHAR NOT NULL,
            generation INTEGER NOT NULL, created_ms BIGINT NOT NULL)""")
        c.execute("""CREATE TABLE IF NOT EXISTS registry.account (
            npsn VARCHAR NOT NULL, email VARCHAR NOT NULL, role VARCHAR NOT NULL,
            password_hash VARCHAR NOT NULL, created_ms BIGINT NOT NULL,
            PRIMARY KEY (npsn, email))""")
        c.execute("""CREATE TABLE IF NOT EXISTS registry.install (
            origin UUID PRIMARY KEY, npsn VARCHAR NOT NULL, email VARCHAR NOT NULL,
            token_hash VARCHAR NOT NULL, generation INTEGER NOT NULL,
            revoked BOOLEAN NOT NULL, created_ms BIGINT NOT NULL)""")
        c.execute("""CREATE TABLE IF NOT EXISTS registry.session (
            session VARCHAR, npsn VARCHAR, install VARCHAR, mode VARCHAR,
            started_ms BIGINT, ended_ms BIGINT, outcome VARCHAR,
            events_in BIGINT, events_out BIGINT, bytes_in BIGINT, bytes_out BIGINT)""")
        c.execute("COMMIT")

    def _one(self, sql: str, params: list[Any]) -> dict[str, Any] | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, params)
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # -- schools ------------------------------------------------------------------------

    def add_school(self, npsn: str, nama: str, kode_hash: str, now_ms: int) -> None:
        if self.school(npsn) is not None:
            raise RegistryError(f"school {npsn} is already registered")
        self.con.execute("INSERT INTO registry.school VALUES (?, ?, ?, 1, ?)",
                         [npsn, nama, kode_hash, now_ms])

    def school(self, npsn: str) -> dict[str, Any] | None:
        """npsn, nama, kode_hash, generation, created_ms; None if unknown."""
        return self._one("SELECT * FROM registry.school WHERE npsn = ?", [npsn])

    def schools(self) -> list[dict[str, Any]]:
        return self._all("SELECT npsn, nama, generation, created_ms FROM registry.school "
                         "ORDER BY npsn", [])

    def reset_kode(self, npsn: str, kode_hash: str) -> int:
        """A new registration code: generation + 1 (older installs get code_reset)."""
        row = self._one("UPDATE registry.school SET kode_hash = ?, generation = generation + 1 "
                        "WHERE npsn = ? RETURNING generation", [kode_hash, npsn])
        if row is None:
            raise RegistryError(f"school {npsn} is not registered")
        return int(row["generation"])

    # -- accounts -----------------------------------------------------------------------

    def account(self, npsn: str, email: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM registry.account WHERE npsn = ? AND email = ?",
                         [npsn, email])

    def account_count(self, npsn: str) -> int:
        (n,) = self.con.execute("SELECT count(*) FROM registry.account WHERE npsn = ?",
                                [npsn]).fetchall()[0]
        return int(n)

    def add_account(self, npsn: str, email: str, role: str, password_hash: str,
                    now_ms: int) -> None:
        self.con.execute("INSERT INTO registry.account VALUES (?, ?, ?, ?, ?)",
                         [npsn, email, role, password_hash, now_ms])

    # -- installs -----------------------------------------------------------------------

    def add_install(self, origin: str, npsn: str, email: str, token_hash: str, generation: int,
                    now_ms: int) -> None:
        self.con.execute("INSERT INTO registry.install VALUES (?, ?, ?, ?, ?, false, ?)",
                         [origin, npsn, email, token_hash, generation, now_ms])

    def install(self, origin: str) -> dict[str, Any] | None:
        """origin, npsn, email, token_hash, generation, revoked, created_ms; None if unknown."""
        return self._one("SELECT * EXCLUDE (origin), origin::VARCHAR AS origin "
                         "FROM registry.install WHERE origin = TRY_CAST(? AS UUID)", [origin])

    def installs(self, npsn: str) -> list[dict[str, Any]]:
        return self._all("SELECT origin::VARCHAR AS origin, email, generation, revoked, "
                         "created_ms FROM registry.install WHERE npsn = ? ORDER BY created_ms",
                         [npsn])

    def revoke(self, origin: str) -> None:
        row = self._one("UPDATE registry.install SET revoked = true "
                        "WHERE origin = TRY_CAST(? AS UUID) RETURNING npsn", [origin])
        if row is None:
            raise RegistryError(f"no install {origin}")

    # -- sessions -----------------------------------------------------------------------

    def record_session(self, record: dict[str, Any]) -> None:
        """Keep one session (keys: the registry.session columns)."""
        self.con.execute(f"INSERT INTO registry.session ({', '.join(record)}) "
                         f"VALUES ({', '.join('?' * len(record))})", list(record.values()))

    def sessions(self, npsn: str, limit: int = 20) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM registry.session WHERE npsn = ? "
                         "ORDER BY started_ms DESC LIMIT ?", [npsn, limit])


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
        raise QueryRefused("queries are read-only: give exactly one SELECT statement")
    (db,) = con.execute("SELECT current_database()").fetchall()[0]
    views = [(e.name, f"main.{e.name}") for e in ENTITIES if not e.is_reference] + [
        (name, f"log.{name}") for name in ("event", "context", "signature")]
    try:
        for name, table in views:
            con.execute(f'CREATE OR REPLACE TEMP VIEW {name} AS SELECT * EXCLUDE (school) '
                        f'FROM "{db}".{table} WHERE school IN ({_q(npsn)}, {_q(ANY_SCHOOL)})')
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
