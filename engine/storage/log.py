"""One school's log, its set-based merge and what is read from it (``DuckDBStore``).

Every append is one transaction: a crash leaves all of it or none. The merge
here is set-based SQL equal to ``merge.fold`` (property-tested).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Collection
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ..clocks import VersionVector, origin_rank
from ..events import REFERENSI_ORIGIN, SIGNATURE_SCHEMA, Batch, Event, arrow_schema
from ..labels import entity_label, label, names_sql
from ..merge import Sibling
from ..schema import BY_NAME, CLOCK_BOUND, ENTITIES, VALIDASI_PUSAT, Entity, Owner
from ..stages import stage
from ..store import AppendReport, EventCollision, check_signatures, clock_bound_event
from ..values import EMPTY_DIGEST, bucket_of, digest, digest_change, from_python
from . import bulk
from .database import (
    ANY_SCHOOL,
    MEMORY_LIMIT,
    Database,
    add_digests_sql,
    advance_head_sql,
    bucket_sql,
    connect,
    create_tables,
    fields_sql,
    quote,
    row_hashes_sql,
)
from .query import SOURCES, VIEWS, query_school


def _may_hold(t: pa.Table, ours: VersionVector) -> bool:
    """Whether we may hold some of the events ``t`` (we hold each origin's seqs up to
    ``ours``): the usual new events need no look at the log."""
    if not t.num_rows:
        return False
    lowest = pc.min(t["seq"]).as_py()
    return any(ours.get(str(uuid.UUID(bytes=o)), 0) >= lowest
               for o in pc.unique(t["origin"].combine_chunks().storage).to_pylist())


PENDING_KINDS = ("added", "updated", "deleted")  # pending_changes: a row's change

SMALL = 500  # rows of one entity changed at once: up to this many, their digests are kept
# from the rows the change returns (``_add_digests``); more are hashed in SQL.

_REF, _UNQUALIFIED = re.compile(r"\bref\.(\w+)"), r"ref_\1"  # ref.agama -> ref_agama


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
                 school: str = ANY_SCHOOL, db: Database | None = None) -> None:
        self.central = central
        if db is None:
            db = Database(connect(path, read_only=read_only, memory_limit=memory_limit))
            if not read_only:
                create_tables(db)
        self.db, self.con = db, db.con
        self.school = school
        self._staged: dict[str, int] = {}  # events staged per entity, in the append running
        self._scope = f"school IN ({quote(school)}, {quote(ANY_SCHOOL)})"
        self._central_sql = ", ".join(f"'{o}'::UUID" for o in sorted(central)) or "NULL"

    def _school_of(self, x: str) -> str:
        """SQL: the school an event ``x`` belongs to (Referensi's belong to every school)."""
        if self.school == ANY_SCHOOL:
            return quote(ANY_SCHOOL)
        return (f"CASE WHEN {x}.origin = '{REFERENSI_ORIGIN}'::UUID THEN {quote(ANY_SCHOOL)} "
                f"ELSE {quote(self.school)} END")

    def transaction(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """The database's transaction (a part of one already open)."""
        return self.db.transaction()

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
            f"SELECT origin::VARCHAR, seq FROM replica.head WHERE {self._scope}").fetchall())

    def max_hlc(self, origin: str | None = None) -> int:
        col, where = ("hlc", f"AND origin = '{uuid.UUID(origin)}'") if origin else (
            "lww >> 64", "")
        union = " UNION ALL ".join(
            f"SELECT max({col}) h FROM log.{e.slug} WHERE {self._scope} {where}"
            for e in ENTITIES)
        (h,) = self.con.execute(f"SELECT coalesce(max(h), 0) FROM ({union})").fetchall()[0]
        return int(h)

    def row_hlc(self, entity: str, row_id: str) -> int:
        (h,) = self.con.execute(
            f"SELECT coalesce(max(lww >> 64), 0) FROM log.{BY_NAME[entity].slug} "
            f"WHERE {self._scope} AND row_id = ?", [uuid.UUID(row_id)]).fetchall()[0]
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
                                f"AND x.seq > {int(after)} AND x.seq <= {int(upto)}",
                            signed=origin in self.central)

    def _events(self, join: str, where: str, *, signed: bool = True) -> Batch:
        """Held events as a Batch: each log table ``x`` with ``join`` and ``where``
        (``signed``: signatures may be among them; only the centre's events have one)."""
        c = self.con
        where = f"x.{self._scope} AND {where}"
        # Only the entities that have events there: a small batch touches few of them.
        present = {name for (name,) in c.execute(
            f"SELECT DISTINCT x.entity FROM log.event x {join} WHERE {where}").fetchall()}
        tables = {}
        for e in (e for e in ENTITIES if e.name in present):
            t = c.sql(f"""
                SELECT x.origin, x.seq, x.hlc, x.row_id, x.author, x.role, x.mask,
                       {fields_sql(e, 'x.')}
                FROM log.{e.slug} x {join} WHERE {where}
                ORDER BY x.origin, x.seq""").to_arrow_table()
            if t.num_rows:
                tables[e.name] = t.cast(arrow_schema(e))
        contexts = c.sql(f"""SELECT x.origin, x.seq, x.peer, x.held
            FROM log.context x {join} WHERE {where} ORDER BY ALL""").to_arrow_table()
        if not signed:
            return Batch(tables, contexts)
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

    def checksums(self, *, full: bool = False) -> dict[str, str]:
        """Per entity, the digest of the materialised rows (``values.table_digest``): as
        kept in replica.digest, or (``full``) recomputed from the rows."""
        if full:
            source = " UNION ALL ".join(
                f"SELECT '{e.name}' AS entity, count(*) AS rows, coalesce(sum(h), 0) AS total "
                f"FROM ({row_hashes_sql(e, f'FROM {e.table} WHERE {self._scope}')})"
                for e in ENTITIES)
        else:
            source = f"FROM replica.digest WHERE {self._scope}"
        sums = {entity: digest(int(rows), int(total)) for entity, rows, total in self.con.execute(
            f"SELECT entity, sum(rows), sum(total) FROM ({source}) GROUP BY entity").fetchall()}
        return {e.name: sums.get(e.name, EMPTY_DIGEST) for e in ENTITIES}

    # -- comparing with a peer (engine/compare.py) ---------------------------------------

    def bucket_digests(self, entity: str) -> dict[int, str]:
        return {int(b): digest(int(n), int(t)) for b, n, t in self.con.execute(
            f"""SELECT bucket, sum(rows), sum(total) FROM replica.digest
                WHERE {self._scope} AND entity = ? GROUP BY bucket
                HAVING sum(rows) <> 0 OR sum(total) <> 0""", [entity]).fetchall()}

    def row_hashes(self, entity: str, buckets: list[int]) -> dict[str, int]:
        e = BY_NAME[entity]
        return {row_id: int(h) for row_id, h in self.con.execute(
            f"SELECT row_id, h FROM ({row_hashes_sql(e, self._in_buckets(e, buckets))})",
        ).fetchall()}

    def _in_buckets(self, e: Entity, buckets: list[int]) -> str:
        """SQL: this school's rows of ``e`` in ``buckets``."""
        listed = ", ".join(str(int(b)) for b in buckets) or "NULL"
        return f"FROM {e.table} WHERE {self._scope} AND {bucket_sql(e.key)} IN ({listed})"

    def events_of_rows(self, entity: str, row_ids: list[str]) -> Batch:
        e = BY_NAME[entity]
        listed = ", ".join(f"'{uuid.UUID(r)}'" for r in row_ids) or "NULL"
        self.con.execute(f"""CREATE OR REPLACE TEMP TABLE wanted AS SELECT origin, seq
            FROM log.{e.slug} WHERE {self._scope} AND row_id IN ({listed})""")
        return self._events("SEMI JOIN wanted w ON w.origin = x.origin AND w.seq = x.seq",
                            "true")

    def rematerialise(self, entity: str, row_ids: list[str]) -> None:
        """Recompute the rows ``row_ids`` of ``entity`` from the log, and the kept digests
        of their buckets from the rows (a repair after comparing with a peer)."""
        e = BY_NAME[entity]
        school = ANY_SCHOOL if e.is_reference else self.school
        buckets = sorted({bucket_of(r) for r in row_ids})
        with self.transaction() as c:
            c.execute("CREATE OR REPLACE TEMP TABLE touched (school VARCHAR, row_id UUID)")
            c.executemany("INSERT INTO touched VALUES (?, ?)", [(school, r) for r in row_ids])
            self._materialise(e)
            c.execute(f"""DELETE FROM replica.digest WHERE {self._scope} AND entity = ?
                          AND bucket IN ({', '.join(map(str, buckets)) or 'NULL'})""",
                      [e.name])
            c.execute(add_digests_sql(e, self._in_buckets(e, buckets)))

    def query(self, sql: str, time_limit_s: float | None = None,
              ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read statement over this school's data (``query_school``)."""
        return query_school(sql, self._view_rows, time_limit_s)

    def rule_rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Validasi Lokal's ``sql`` run here. At the centre every table holds every school:
        a common table expression of the same name narrows each to this one (Referensi's
        ``ref.x`` read as ``ref_x``)."""
        if self.school != ANY_SCHOOL:
            scoped = ", ".join(f"{e.slug} AS (SELECT * EXCLUDE (school) FROM "
                               f"{e.table if e.is_reference else 'main.' + e.table} "
                               f"WHERE {self._scope})" for e in ENTITIES)
            sql = f"WITH {scoped} SELECT * FROM ({_REF.sub(_UNQUALIFIED, sql)})"
        return self.con.execute(sql).fetchall()

    def _view_rows(self, name: str) -> pa.Table:
        """The school's rows of query view ``name``."""
        cols = ", ".join(c for c, _ in VIEWS[name])
        return self.con.sql(f"SELECT {cols} FROM {SOURCES[name]} WHERE {self._scope}",
                            ).to_arrow_table()

    def row_counts(self) -> dict[str, int]:
        """Per entity, the rows materialised (the digests count them: no table is scanned)."""
        counted = dict(self.con.execute(f"SELECT entity, sum(rows) FROM replica.digest "
                                        f"WHERE {self._scope} GROUP BY entity").fetchall())
        return {e.name: int(counted.get(e.name, 0)) for e in ENTITIES}

    def event_counts(self, origin: str, after: int = 0) -> dict[str, int]:
        """Per entity, the events of ``origin`` held past seq ``after``."""
        return {str(n): int(c) for n, c in self.con.execute(
            f"SELECT entity, count(*) FROM log.event WHERE {self._scope} AND origin = ? "
            "AND seq > ? GROUP BY entity ORDER BY entity", [origin, after]).fetchall()}

    def author_counts(self, origin: str, after: int, upto: int) -> dict[str, int]:
        parts = " UNION ALL ".join(
            f"SELECT author FROM log.{e.slug} WHERE {self._scope} AND origin = ? "
            "AND seq > ? AND seq <= ?" for e in ENTITIES)
        return {str(a): int(n) for a, n in self.con.execute(
            f"SELECT author, count(*) FROM ({parts}) GROUP BY author ORDER BY author",
            [origin, after, upto] * len(ENTITIES)).fetchall()}

    # -- pending changes (client/changes.py) ----------------------------------------------

    def pending_changes(self, after: VersionVector, limit: int,
                        entities: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The rows changed by the held events past ``after`` (of each origin, those
        with a seq above ``after[origin]``, 0 if absent); the centre's events
        (``central``) never count.

        One dict per entity with such events (of ``entities``, if given), in schema
        order: ``entity``; ``events``; the rows ``added`` (their first event, in LWW
        order, is one of these), ``deleted`` (the last of these events to write
        soft_delete set it to 1: this wins over added) and ``updated`` (the rest), each
        row counted once; ``origins``: per origin of these events, its latest one's
        ``seq`` and ``author``, and the ``rows`` it touched; ``rows``: up to ``limit`` of the
        changed rows (each kind gets its share, the latest first), sorted by kind and
        name, each with ``row_id``, ``nama`` (``labels.name_sql``), ``change``
        ("added", "updated" or "deleted"), ``fields`` (the fields these events set,
        in schema order), ``origins`` (those that wrote them) and ``hlc`` (the latest
        one's). Counted in SQL; only the rows listed are named.
        """
        held = " UNION ALL ".join(
            [f"SELECT '{uuid.UUID(o)}'::UUID AS origin, {int(s)} AS seq"
             for o, s in after.items()] or ["SELECT NULL::UUID AS origin, 0 AS seq"])
        join = f"LEFT JOIN ({held}) a ON a.origin = x.origin"
        pending = f"x.{self._scope} AND x.seq > coalesce(a.seq, 0)" + (
            f" AND x.origin NOT IN ({self._central_sql})" if self.central else "")
        events = dict(self.con.execute(f"SELECT x.entity, count(*) FROM log.event x {join} "
                                       f"WHERE {pending} GROUP BY x.entity").fetchall())
        out = []
        try:
            for e in ENTITIES:
                if e.name in events and (entities is None or e.name in entities):
                    out.append({"entity": e.name, "events": int(events[e.name]),
                                **self._pending_rows(e, join, pending, limit)})
        finally:
            self.con.execute("DROP TABLE IF EXISTS pending_events; "
                             "DROP TABLE IF EXISTS pending_rows")
        return out

    def _pending_rows(self, e: Entity, join: str, pending: str, limit: int) -> dict[str, Any]:
        """``pending_changes`` for one entity, less its name and event count."""
        c = self.con
        deletes = "soft_delete" in e.by_name
        c.execute(f"""CREATE OR REPLACE TEMP TABLE pending_events AS
            SELECT x.row_id, x.origin, x.seq, x.hlc, x.lww, x.mask, x.author,
                   {"x.soft_delete" if deletes else "NULL::BIGINT AS soft_delete"}
            FROM log.{e.slug} x {join} WHERE {pending}""")
        deleted = (f"coalesce(arg_max(soft_delete, lww) FILTER (WHERE mask & "
                   f"{e.bit('soft_delete')} <> 0), 0) = 1" if deletes else "false")
        # kind: 0 added, 1 updated, 2 deleted (PENDING_KINDS)
        c.execute(f"""CREATE OR REPLACE TEMP TABLE pending_rows AS
            WITH r AS (SELECT row_id, bit_or(mask) AS mask, min(lww) AS first,
                              max(lww) AS last, max(hlc) AS hlc, {deleted} AS deleted,
                              list(DISTINCT origin::VARCHAR ORDER BY origin::VARCHAR) AS origins
                       FROM pending_events GROUP BY row_id),
                 f AS (SELECT row_id, min(lww) AS first FROM log.{e.slug}
                       WHERE {self._scope} AND row_id IN (SELECT row_id FROM r) GROUP BY row_id)
            SELECT r.*, CASE WHEN r.deleted THEN 2 WHEN r.first = f.first THEN 0 ELSE 1 END
                        AS kind
            FROM r JOIN f USING (row_id)""")
        kinds = dict(c.execute("SELECT kind, count(*) FROM pending_rows GROUP BY kind",
                               ).fetchall())
        origins = {o: {"author": a, "seq": int(q), "rows": int(n)} for o, a, q, n in c.execute(
            "SELECT origin::VARCHAR, arg_max(author, seq), max(seq), count(DISTINCT row_id) "
            "FROM pending_events GROUP BY origin ORDER BY 1").fetchall()}
        rows = []
        if limit > 0:
            named = names_sql(e.name, f"x.{self._scope} AND x.{e.key} IN "
                                      "(SELECT row_id FROM listed)")
            for row_id, nama, kind, mask, by, hlc in c.execute(f"""
                    WITH listed AS (
                        SELECT * FROM (SELECT *, row_number() OVER (
                                           PARTITION BY kind ORDER BY last DESC, row_id) AS rn
                                       FROM pending_rows)
                        ORDER BY rn, kind LIMIT {int(limit)})
                    SELECT l.row_id::VARCHAR, n.nama, l.kind, l.mask, l.origins, l.hlc
                    FROM listed l LEFT JOIN ({named}) n ON n.row_id = l.row_id
                    ORDER BY l.kind, n.nama NULLS LAST, l.row_id""").fetchall():
                rows.append({"row_id": row_id, "nama": nama or entity_label(e.name),
                             "change": PENDING_KINDS[kind],
                             "fields": [f.name for f in e.fields if mask & e.bit(f.name)],
                             "origins": list(by), "hlc": int(hlc)})
        return {**{k: int(kinds.get(i, 0)) for i, k in enumerate(PENDING_KINDS)},
                "origins": origins, "rows": rows}

    # -- appending ------------------------------------------------------------------

    def append(self, batch: Batch) -> AppendReport:
        with self.transaction():
            return self._append(batch)

    def _append(self, batch: Batch) -> AppendReport:
        # Clock bounds first: the other entities' new events take their LWW keys from them.
        staged = sorted((BY_NAME[name] for name in batch.tables),
                        key=lambda e: e.name != CLOCK_BOUND)
        if not staged:
            return AppendReport()
        with stage("append.check"):
            duplicates = self._stage_new(batch, staged)
            ids = " UNION ALL ".join(f"SELECT origin, seq, '{e.name}' AS entity FROM s_{e.slug}"
                                     for e in staged)
            runs = self._runs_once_each(staged, ids)
            fresh = sum(n for _, _, n, _ in runs.values())
            accepted, only_accepted = self._accepted(runs, ids)
            (applied,) = self.con.execute(f"SELECT count(*) FROM ({accepted})").fetchall()[0]
        if applied:
            with stage("append.log"):
                self._log_ids(batch, accepted)
            self._write_staged(staged, runs, only_accepted)
        return AppendReport(applied, duplicates, fresh - applied)

    def _stage_new(self, batch: Batch, staged: list[Entity]) -> int:
        """Check the batch (signatures, held events) and copy what we lack into s_<entity>;
        the number of events already held."""
        c = self.con
        c.execute("CREATE OR REPLACE TEMP TABLE ours AS "
                  f"SELECT origin, seq FROM replica.head WHERE {self._scope}")
        batch.check_well_formed()
        ours = self._ours()
        key = self.centre_key
        if key:
            check_signatures(batch, key, ours, self.central)
        duplicates = 0
        for e in staged:
            c.register("incoming", batch.tables[e.name])
            try:
                if _may_hold(batch.tables[e.name], ours):
                    duplicates += self._check_held(e)
                self._staged[e.name] = self._stage(e)
            finally:
                c.unregister("incoming")
        return duplicates

    def _ours(self) -> VersionVector:
        """The vector staged in ``ours`` for this append (no second scan of the log)."""
        return dict(self.con.execute("SELECT origin::VARCHAR, seq FROM ours").fetchall())

    def _runs_once_each(self, staged: list[Entity], ids: str,
                        ) -> dict[str, tuple[int, int, int, int]]:
        """The staged runs per origin (``_runs``), an event sent twice in the batch kept
        once; EventCollision if the two differ."""
        runs = self._runs(ids)
        if all(n == distinct for _, _, n, distinct in runs.values()):
            return runs
        for e in staged:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE s_{e.slug} AS "
                             f"SELECT DISTINCT * FROM s_{e.slug}")
        clash = self.con.execute(f"SELECT origin::VARCHAR, seq FROM ({ids}) GROUP BY ALL "
                                 "HAVING count(*) > 1 LIMIT 1").fetchall()
        if clash:
            raise EventCollision(*clash[0])
        return self._runs(ids)

    def _accepted(self, runs: dict[str, tuple[int, int, int, int]], ids: str,
                  ) -> tuple[str, str]:
        """SQL for the staged ids that go in, and the join that keeps only them (or "")."""
        ours = self._ours()
        if all(first == ours.get(o, 0) + 1 and last - first + 1 == n
               for o, (first, last, n, _) in runs.items()):
            return ids, ""  # gap-free: everything goes in
        # Per origin, the run of new events that follows what we hold without a gap.
        self.con.execute(f"""CREATE OR REPLACE TEMP TABLE accepted AS
            SELECT origin, seq, entity FROM (
                SELECT s.*, coalesce(o.seq, 0) AS base,
                       row_number() OVER (PARTITION BY s.origin ORDER BY s.seq) AS rn
                FROM ({ids}) s LEFT JOIN ours o USING (origin))
            WHERE seq = base + rn""")
        return ("SELECT * FROM accepted",
                "SEMI JOIN accepted a ON a.origin = s.origin AND a.seq = s.seq")

    def _log_ids(self, batch: Batch, accepted: str) -> None:
        """The accepted events' ids, their causal contexts and centre signatures."""
        c = self.con
        c.execute(f"INSERT INTO log.event SELECT {self._school_of('a')}, a.* FROM ({accepted}) a")
        c.execute(advance_head_sql(f"(SELECT {self._school_of('a')} AS school, a.origin, a.seq "
                                   f"FROM ({accepted}) a)"))
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

    def _write_staged(self, staged: list[Entity], runs: dict[str, tuple[int, int, int, int]],
                      only_accepted: str) -> None:
        """Log and merge the accepted staged events of each entity, with their LWW keys."""
        ranks = " UNION ALL ".join(f"SELECT '{o}'::UUID AS origin, {origin_rank(o)} AS rank"
                                   for o in runs)
        hlc = self._effective_hlc("s")
        for e in staged:
            # The events as logged, made once: write() reads them several times.
            (n,) = self.con.execute(f"""CREATE OR REPLACE TEMP TABLE n_{e.slug} AS
                SELECT {self._school_of('s')} AS school, s.origin, s.seq, s.hlc,
                       ({hlc}::HUGEINT << 64) | r.rank::HUGEINT
                       AS lww, s.row_id, s.author, s.role, s.mask, {fields_sql(e, 's.')}
                FROM s_{e.slug} s JOIN ({ranks}) r ON r.origin = s.origin {only_accepted}
                """).fetchall()[0]
            self.write(e, f"FROM n_{e.slug}", n)
            if e.name == CLOCK_BOUND:  # staged first: the other entities' keys follow it
                self._rebound()
                hlc = self._effective_hlc("s")
            self.con.execute(f"DROP TABLE s_{e.slug}; DROP TABLE n_{e.slug}")

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

    def clock_bound(self, centre: str, held: VersionVector, limit: int, now_ms: int,
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
        return clock_bound_event(self, centre, origin, first, last, int(before), now_ms)

    def neutralised(self, origin: str, after: int, upto: int) -> dict[str, dict[str, int]]:
        """Per entity, the events of ``origin`` with ``after < seq <= upto`` that the
        centre's rules changed (``neutralised``: a write without effect, or a clock
        bound), and of those, how many were bounded (``clock``)."""
        out: dict[str, dict[str, int]] = {}
        o = uuid.UUID(origin)
        # Only the entities written in that range: an empty push costs no query per entity.
        written = {name for (name,) in self.con.execute(
            f"SELECT DISTINCT entity FROM log.event WHERE {self._scope} AND origin = ? "
            "AND seq > ? AND seq <= ?", [str(o), after, upto]).fetchall()} if upto > after else ()
        mine = {}  # per entity written, its events that the rules may have changed
        for e in (e for e in ENTITIES if e.name in written):
            guarded = self._centre_mask(e) | sum(
                e.bit(f.name) for f in e.fields if f.owner is Owner.VERVAL)
            mine[e] = (f"{self._scope} AND origin = '{o}' "
                       f"AND seq > {int(after)} AND seq <= {int(upto)} "
                       f"AND (mask & {guarded} <> 0 OR lww >> 64 <> hlc)")
        # Most pushes write only the school's own fields: one look finds none to check.
        maybe = {name for (name,) in self.con.execute(" UNION ALL ".join(
            f"(SELECT '{e.name}' FROM log.{e.slug} WHERE {where} LIMIT 1)"
            for e, where in mine.items())).fetchall()} if mine else set()
        for e, where in mine.items():
            if e.name not in maybe:
                continue
            rows = f"SELECT school, row_id FROM log.{e.slug} WHERE {where}"
            n, clock = self.con.execute(f"""SELECT count(*), count(*) FILTER (lww >> 64 <> hlc)
                FROM ({self._effective(e, rows)})
                WHERE {where} AND (eff <> mask OR lww >> 64 <> hlc)""").fetchall()[0]
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
        """Check the registered ``incoming`` events: EventCollision if one we hold
        differs; the number we hold already."""
        old = (f"(SELECT {self._masked(e)} FROM incoming i "
               "SEMI JOIN ours o ON i.origin = o.origin AND i.seq <= o.seq)")
        differs = " OR ".join(f"s.{col} IS DISTINCT FROM l.{col}" for col in
                              ("hlc", "row_id", "author", "role", "mask",
                               *(f.name for f in e.fields)))
        (held, clash) = self.con.execute(f"""
            SELECT count(*), arg_min((s.origin::VARCHAR, s.seq), s.seq)
                             FILTER (WHERE l.seq IS NULL OR {differs})
            FROM {old} s LEFT JOIN (FROM log.{e.slug} WHERE {self._scope}) l USING (origin, seq)
            """).fetchall()[0]
        if clash:
            raise EventCollision(*clash)
        return int(held)

    def _stage(self, e: Entity) -> int:
        """Copy the registered ``incoming`` events we do not hold into s_<entity>; how many."""
        (n,) = self.con.execute(f"""CREATE OR REPLACE TEMP TABLE s_{e.slug} AS
            SELECT {self._masked(e)} FROM incoming i
            ANTI JOIN ours o ON i.origin = o.origin AND i.seq <= o.seq""").fetchall()[0]
        return int(n)

    # -- bulk import ---------------------------------------------------------------------

    def import_jsonl(self, path: str, *, origin: str, author: str, role: str,
                     sekolah_id: str, now_ms: int) -> AppendReport:
        """Import a JSON-lines rows file as ``origin``'s events (``bulk.import_jsonl``)."""
        with self.transaction():
            return bulk.import_jsonl(self, str(path), origin=origin, author=author, role=role,
                                     sekolah_id=sekolah_id, now_ms=now_ms)


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

    def write(self, e: Entity, new: str, events: int | None = None) -> None:
        """Append the new events of ``e`` (a query in log column order; ``events`` of
        them at most, if known) to its log, and bring the materialised rows and
        conflicts they touch up to date."""
        c = self.con
        with stage("append.log"):
            # The rows to merge: those written before, and those written twice here.
            (touched,) = c.execute(f"""CREATE OR REPLACE TEMP TABLE touched AS
                SELECT school, row_id FROM ({new}) GROUP BY ALL HAVING count(*) > 1
                UNION SELECT school, row_id FROM log.{e.slug}
                      SEMI JOIN (SELECT school, row_id FROM ({new})) USING (school, row_id)
                """).fetchall()[0]
            c.execute(f"INSERT INTO log.{e.slug} {new}")
        # A row this replica has never seen, written once (most of a bulk load): its
        # values are the event's, less what authority takes away; nothing to merge.
        once = ", ".join(f"CASE WHEN eff & {e.bit(f.name)} <> 0 THEN {f.name} END AS {f.name}"
                         for f in e.fields)
        once_rows = f"""SELECT school, row_id AS {e.key}, {once}
            FROM (SELECT *, CASE WHEN origin IN ({self._central_sql}) THEN mask
                                 ELSE mask & ~{self._centre_mask(e)}::UBIGINT END AS eff
                  FROM ({new}) ANTI JOIN touched USING (school, row_id))
            WHERE eff <> 0"""
        if events is not None and touched >= events:
            pass  # every row is one to merge (edits)
        elif events is not None and events <= SMALL:
            with stage("append.rows"):
                added = c.execute(f"INSERT INTO {e.table} {once_rows} RETURNING *").fetchall()
            self._add_digests(e, added)
        else:
            with stage("append.rows"):
                (once,) = c.execute(f"INSERT INTO {e.table} {once_rows}").fetchall()[0]
            if once:
                with stage("append.digests"):
                    c.execute(add_digests_sql(e, once_rows))
        if touched:
            self._materialise(e, touched)

    def _add_digests(self, e: Entity, added: list[tuple[Any, ...]],
                     removed: list[tuple[Any, ...]] | None = None) -> None:
        """Keep the digests up to date with a few rows ``added`` and ``removed`` (as the
        change returned them): hashed here, which costs less than a statement that
        hashes them in SQL."""
        with stage("append.digests"):
            change = [(school, bucket, n, total) for (school, bucket), (n, total)
                      in digest_change(e, added, removed or ()).items() if n or total]
            if change:
                self.con.execute(f"""INSERT INTO replica.digest VALUES {", ".join(
                    f"({quote(school)}, '{e.name}', {b}, {n}, {t})" for school, b, n, t in change)}
                    ON CONFLICT DO UPDATE SET rows = rows + excluded.rows,
                                              total = total + excluded.total""")

    def _materialise(self, e: Entity, touched: int | None = None) -> None:
        """Recompute the ``touched`` rows of ``e`` (that many, if known) and their
        conflicts from the log."""
        c = self.con
        small = touched is not None and touched <= SMALL
        rows = (f"FROM {e.table} x SEMI JOIN touched t "
                f"ON x.school = t.school AND x.{e.key} = t.row_id")
        if not small:
            with stage("append.digests"):
                c.execute(add_digests_sql(e, rows, -1))
        returning = " RETURNING *" if small else ""
        with stage("append.merge"):
            c.execute(f"CREATE OR REPLACE TEMP TABLE eff AS {self._effective(e, 'FROM touched')}")
            gone = c.execute(f"DELETE FROM {e.table} x USING touched t WHERE x.school = t.school "
                             f"AND x.{e.key} = t.row_id{returning}").fetchall()
            winners = ", ".join(
                f"arg_max_null({f.name}, lww) FILTER (WHERE eff & {e.bit(f.name)} <> 0)"
                for f in e.fields)
            added = c.execute(f"""INSERT INTO {e.table} SELECT school, row_id, {winners} FROM eff
                GROUP BY school, row_id HAVING bit_or(eff) <> 0{returning}""").fetchall()
        if small:
            self._add_digests(e, added, gone)
        else:
            with stage("append.digests"):
                c.execute(add_digests_sql(e, rows))
        with stage("append.conflicts"):
            self._find_conflicts(e)

    def _find_conflicts(self, e: Entity) -> None:
        """Merge rule 4, for the touched rows written by more than one origin."""
        c = self.con
        c.execute(f"DELETE FROM replica.conflict x USING touched t WHERE x.entity = '{e.name}' "
                  "AND x.school = t.school AND x.row_id = t.row_id")
        (n,) = c.execute("""CREATE OR REPLACE TEMP TABLE multi AS SELECT * FROM eff
            SEMI JOIN (SELECT school, row_id FROM eff WHERE eff <> 0 GROUP BY ALL
                       HAVING count(DISTINCT origin) > 1) USING (school, row_id)""").fetchall()[0]
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
            c.execute(f"DELETE FROM replica.digest WHERE {self._scope}")
            for e in ENTITIES:
                c.execute(f"DELETE FROM {e.table} WHERE {self._scope}")
                c.execute(f"CREATE OR REPLACE TEMP TABLE touched AS "
                          f"SELECT DISTINCT school, row_id FROM log.{e.slug} WHERE {self._scope}")
                if c.execute("SELECT count(*) FROM touched").fetchone() != (0,):
                    self._materialise(e)  # a dozen statements: not for an entity with no log

    # -- validation ----------------------------------------------------------------------

    def validate(self) -> None:
        """Run every Validasi Lokal rule over the materialised state; keep the results."""
        from ..validation import RULES, validation_sql

        rules = ", ".join(
            f"({quote(r.id)}, {quote(r.tab)}, {quote(r.severity)}, {quote(r.entity)}, "
            f"{quote(r.field) if r.field else 'NULL'}, {quote(r.message)})" for r in RULES)
        with self.transaction() as c:
            c.execute("DELETE FROM replica.validation")
            c.execute(f"""INSERT INTO replica.validation
                SELECT r.rule_id, r.tab, r.severity, r.entity, f.row_id, r.field, r.message,
                       f.detail
                FROM ({validation_sql()}) f
                JOIN (VALUES {rules}) r(rule_id, tab, severity, entity, field, message)
                USING (rule_id)""")

    def principals(self) -> list[dict[str, Any]]:
        """The PTK who hold the kepala sekolah tugas tambahan now (ptk_id, nama, nip,
        semester_id): one in a school whose data is right."""
        from ..validation import PRINCIPALS_SQL

        cur = self.con.execute(PRINCIPALS_SQL)
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def findings(self, tab: str | None = None) -> list[dict[str, Any]]:
        """The findings of the last ``validate``, of one tab or all.

        Each has its rule's columns, the row's name for people (``nama``,
        ``labels.name_sql``: never a UUID) and the field's form label (``label``,
        None for a rule about the whole row). The names come from one set-based
        query over the entities that have findings (each entity costs planning).
        """
        flagged = [BY_NAME[n] for (n,) in self.con.execute(
            f"SELECT DISTINCT entity FROM ({_found_sql(self.school)}) "
            "WHERE ? IS NULL OR tab = ? ORDER BY entity", [tab, tab]).fetchall()]
        if not flagged:
            return []
        cur = self.con.execute(_findings_sql(self.school, flagged), [tab, tab])
        names = [d[0] for d in cur.description or []]
        out = []
        for r in cur.fetchall():
            f = dict(zip(names, r, strict=True))
            f["nama"] = f["nama"] or entity_label(f["entity"])  # a row gone since validate
            f["label"] = label(f["entity"], f["field"]) if f["field"] else None
            out.append(f)
        return out


def _found_sql(school: str) -> str:
    """SQL: every finding the school holds, Validasi Lokal's of its last ``validate`` and
    the centre's (Validasi Pusat: its live ``validasi_pusat`` rows), each with its
    ``source`` and the tab of the row it flags."""
    tabs = " ".join(f"WHEN {quote(e.name)} THEN {quote(e.tab)}" for e in ENTITIES)
    return f"""SELECT rule_id, tab, severity, entity, row_id, field, message, detail,
                      'Validasi Lokal' AS source
               FROM replica.validation
               UNION ALL
               SELECT rule_id, CASE entity {tabs} END, severity, entity, row_ref, field,
                      message, detail || coalesce(', sekolah ' || sekolah_lain, ''),
                      'Validasi Pusat'
               FROM {VALIDASI_PUSAT}
               WHERE school = {quote(school)} AND coalesce(soft_delete, 0) = 0"""


def _findings_sql(school: str, entities: list[Entity]) -> str:
    """SQL: the kept findings of tab ``?`` (NULL: every tab; the parameter comes twice),
    each with its row's name; only the flagged rows of ``entities`` are named."""
    scope = f"x.school IN ({quote(school)}, {quote(ANY_SCHOOL)})"
    parts = []
    for e in entities:
        flagged = f"x.{e.key} IN (SELECT row_id FROM found WHERE entity = {quote(e.name)})"
        parts.append(f"SELECT {quote(e.name)} AS entity, row_id, nama "
                     f"FROM ({names_sql(e.name, f'{scope} AND {flagged}')})")
    return f"""WITH found AS (SELECT * FROM ({_found_sql(school)}) WHERE ? IS NULL OR tab = ?),
        named AS ({" UNION ALL ".join(parts)})
        SELECT f.rule_id, f.tab, f.severity, f.entity, f.row_id::VARCHAR AS row_id, f.field,
               f.message, f.detail, n.nama, f.source
        FROM found f LEFT JOIN named n ON n.entity = f.entity AND n.row_id = f.row_id
        ORDER BY f.severity, f.rule_id, n.nama, f.row_id"""
