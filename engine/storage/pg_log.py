"""One school's log at a PostgreSQL centre, its merge and what is read from it (``PgStore``).

The same tables as DuckDB's (database.py), in PostgreSQL: ``school`` leads every
key, school-keyed tables are hash-partitioned by school, Referensi's rows
(``ref.*``) are tables of their own. Events go in by COPY; the rows they touch
are recomputed with the engine's own fold (``merge.fold``), so this store
merges exactly as the specification does. An append holds its school's lock
(a transaction-scoped advisory lock), so server processes sharing the database
append to one school one at a time and to different schools at once.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import msgspec
import psycopg
import pyarrow as pa

from ..clocks import VersionVector, lww_key
from ..events import (
    CONTEXT_SCHEMA,
    REFERENSI_ORIGIN,
    SIGNATURE_SCHEMA,
    Batch,
    Event,
    arrow_schema,
)
from ..merge import Sibling, effective_hlc, fold, written_once
from ..schema import BY_NAME, CLOCK_BOUND, ENTITIES, Entity, Owner
from ..store import AppendReport, check_and_order, clock_bound_event
from ..values import (
    EMPTY_DIGEST,
    Value,
    digest,
    digest_change,
    from_python,
    row_hash,
    table_digest,
)
from .database import ANY_SCHOOL
from .pg_database import PgDatabase, partitioned
from .query import SOURCES, VIEWS, query_school

TYPES = {"uuid": "uuid", "text": "text", "int": "bigint", "date": "date",
         "decimal": "numeric(18,6)"}
META = ["origin", "seq", "hlc", "row_id", "author", "role", "mask"]
PEOPLE_INDEXES = [("peserta_didik", "nisn"), ("peserta_didik", "nik"), ("ptk", "nuptk"),
                  ("ptk", "nik"), ("ptk", "ptk_id")]  # ptk_id: CentreStore.ptk_holders


def tables() -> list[str]:
    """DDL: the log, the materialised tables and the conflicts, if missing."""
    out = [f"CREATE SCHEMA IF NOT EXISTS {s}" for s in ("log", "ref", "replica")]
    out += partitioned("log.context", """school text, origin uuid, seq bigint, peer uuid,
        held bigint NOT NULL, PRIMARY KEY (school, origin, seq, peer)""", "school")
    out += partitioned("log.signature", """school text, origin uuid, seq bigint,
        sig bytea NOT NULL, PRIMARY KEY (school, origin, seq)""", "school")
    out += partitioned("replica.conflict", """school text NOT NULL, entity text NOT NULL,
        row_id uuid NOT NULL, field text, origin uuid, seq bigint, value text, author text,
        role text, winner boolean""", "school")
    out.append("CREATE INDEX IF NOT EXISTS conflict_row ON replica.conflict "
               "(school, entity, row_id)")
    out += partitioned("replica.digest", """school text, entity text, bucket smallint,
        rows bigint NOT NULL, total numeric NOT NULL, PRIMARY KEY (school, entity, bucket)""",
                       "school")
    # Per origin, the highest seq held: the vector without grouping the school's log.
    out += partitioned("replica.head", """school text, origin uuid, seq bigint NOT NULL,
        PRIMARY KEY (school, origin)""", "school")
    for e in ENTITIES:
        values = ", ".join(f"{f.name} {TYPES[f.type]}" for f in e.fields)
        out += partitioned(f"log.{e.slug}", f"""school text, origin uuid, seq bigint,
            hlc bigint NOT NULL, row_id uuid NOT NULL, author text NOT NULL,
            role text NOT NULL, mask bigint NOT NULL, {values},
            PRIMARY KEY (school, origin, seq)""", "school")
        out.append(f"CREATE INDEX IF NOT EXISTS {e.slug}_row ON log.{e.slug} (school, row_id)")
        columns = f"school text, {e.key} uuid, {values}, PRIMARY KEY (school, {e.key})"
        if e.is_reference:  # Referensi: every school's, kept once (a Citus reference table)
            out.append(f"CREATE TABLE IF NOT EXISTS {e.table} ({columns})")
        else:
            out += partitioned(e.table, columns, "school")
    # A person's identity across schools (engine/store.py CentreStore.people).
    out += [f"CREATE INDEX IF NOT EXISTS {table}_{field} ON {table} ({field})"
            for table, field in PEOPLE_INDEXES]
    # Every event's id and entity: a view, not a table (each log table's key has them; a
    # table of its own cost a quarter of the disk an event takes).
    out.append("CREATE OR REPLACE VIEW log.event AS " + " UNION ALL ".join(
        f"SELECT school, origin, seq, '{e.name}'::text AS entity FROM log.{e.slug}"
        for e in ENTITIES))
    return out


class PgStore:
    """One school's replica in the centre's PostgreSQL database (``PgCentre.school``).

    Reads and writes rows of ``school`` and Referensi's (``ANY_SCHOOL``), nothing
    else; its changes join the transaction open on ``db``, if any.
    """

    centre_key = None  # the centre keeps whatever signatures come, to pass them on

    def __init__(self, db: PgDatabase, school: str, central: frozenset[str]) -> None:
        self.db, self.school, self.central = db, school, central
        self._schools = [school, ANY_SCHOOL]

    def _all(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, whose ``%(s)s`` is this store's schools."""
        with self.db.connection() as con:
            return con.execute(sql, {"s": self._schools, "c": list(self.central),
                                     **params}).fetchall()

    def close(self) -> None:
        pass  # the connections are the centre's

    # -- reading --------------------------------------------------------------------

    def vector(self) -> VersionVector:
        return {str(o): int(n) for o, n in self._all(
            "SELECT origin, seq FROM replica.head WHERE school = ANY(%(s)s)")}

    def max_hlc(self, origin: str | None = None) -> int:
        params: dict[str, Any]
        if origin is not None:
            hlc, where, params = "hlc", "AND origin = %(o)s", {"o": origin}
        else:
            hlc, where, params = self._effective_hlc_sql(), "", self._bound_params()
        union = " UNION ALL ".join(f"SELECT max({hlc}) AS h FROM log.{e.slug} x "
                                   f"WHERE school = ANY(%(s)s) {where}" for e in ENTITIES)
        (h,) = self._all(f"SELECT coalesce(max(h), 0) FROM ({union}) m", **params)[0]
        return int(h)

    def row_hlc(self, entity: str, row_id: str) -> int:
        (h,) = self._all(f"SELECT coalesce(max({self._effective_hlc_sql()}), 0) "
                         f"FROM log.{BY_NAME[entity].slug} x "
                         "WHERE school = ANY(%(s)s) AND row_id = %(r)s",
                         r=row_id, **self._bound_params())[0]
        return int(h)

    def context(self, origin: str) -> VersionVector:
        return {str(p): int(n) for p, n in self._all(
            "SELECT peer, max(held) FROM log.context WHERE school = ANY(%(s)s) AND origin = %(o)s "
            "GROUP BY peer", o=origin)}

    def events_after(self, vector: VersionVector) -> Batch:
        return self._events("LEFT JOIN unnest(%(vo)s::uuid[], %(vs)s::bigint[]) t(origin, seq) "
                            "USING (origin)", "x.seq > coalesce(t.seq, 0)",
                            vo=list(vector), vs=list(vector.values()))

    def events_between(self, origin: str, after: int, upto: int) -> Batch:
        return self._events("", "x.origin = %(o)s AND x.seq > %(a)s AND x.seq <= %(u)s",
                            o=origin, a=after, u=upto)

    def _events(self, join: str, where: str, **params: Any) -> Batch:
        where = f"x.school = ANY(%(s)s) AND {where}"
        present = {n for (n,) in self._all(
            f"SELECT DISTINCT x.entity FROM log.event x {join} WHERE {where}", **params)}
        tables = {}
        for e in (e for e in ENTITIES if e.name in present):
            rows = self._all(f"""SELECT {", ".join("x." + c for c in META)},
                                        {", ".join("x." + f.name for f in e.fields)}
                                 FROM log.{e.slug} x {join} WHERE {where}
                                 ORDER BY x.origin, x.seq""", **params)
            tables[e.name] = _arrow(rows, arrow_schema(e))
        contexts = self._all(f"""SELECT x.origin, x.seq, x.peer, x.held FROM log.context x
            {join} WHERE {where} ORDER BY 1, 2, 3""", **params)
        signatures = self._all(f"""SELECT x.origin, x.seq, x.sig FROM log.signature x
            {join} WHERE {where} ORDER BY 1, 2""", **params)
        return Batch(tables, _arrow(contexts, CONTEXT_SCHEMA), _arrow(signatures, SIGNATURE_SCHEMA))

    def rows(self, entity: str) -> dict[str, dict[str, object]]:
        e = BY_NAME[entity]
        return {str(r[0]): dict(zip(e.columns, r, strict=True)) for r in self._rows(e)}

    def _rows(self, e: Entity) -> list[list[Value]]:
        """The materialised rows of ``e`` in canonical form, key first."""
        return [[str(key), *(from_python(f, v) for f, v in zip(e.fields, values, strict=True))]
                for key, *values in self._all(f"SELECT {', '.join(e.columns)} FROM {e.table} "
                                              "WHERE school = ANY(%(s)s)")]

    def conflicts(self) -> list[Sibling]:
        out = []
        for entity, row_id, field, origin, seq, value, author, role, winner in self._all(
                "SELECT entity, row_id, field, origin, seq, value, author, role, winner "
                "FROM replica.conflict WHERE school = ANY(%(s)s)"):
            if value is not None and BY_NAME[entity].by_name[field].type == "int":
                value = int(value)
            out.append(Sibling(entity, str(row_id), field, str(origin), seq, value, author,
                               role, winner))
        return sorted(out)

    def checksums(self, *, full: bool = False) -> dict[str, str]:
        """Per entity, ``values.table_digest`` of the materialised rows (equal to DuckDB's):
        as kept in replica.digest, or (``full``) recomputed from the rows."""
        if full:
            return {e.name: table_digest(self._rows(e)) for e in ENTITIES}
        sums = {entity: digest(int(rows), int(total)) for entity, rows, total in self._all(
            "SELECT entity, sum(rows), sum(total) FROM replica.digest "
            "WHERE school = ANY(%(s)s) GROUP BY entity")}
        return {e.name: sums.get(e.name, EMPTY_DIGEST) for e in ENTITIES}

    # -- comparing with a peer (engine/compare.py) ---------------------------------------

    def bucket_digests(self, entity: str) -> dict[int, str]:
        return {int(b): digest(int(n), int(t)) for b, n, t in self._all(
            """SELECT bucket, sum(rows), sum(total) FROM replica.digest
               WHERE school = ANY(%(s)s) AND entity = %(e)s GROUP BY bucket
               HAVING sum(rows) <> 0 OR sum(total) <> 0""", e=entity)}

    def row_hashes(self, entity: str, buckets: list[int]) -> dict[str, int]:
        e = BY_NAME[entity]
        rows = self._all(f"""SELECT {', '.join(e.columns)} FROM {e.table}
            WHERE school = ANY(%(s)s) AND substr(md5({e.key}::text), 1, 2) = ANY(%(b)s)""",
                         b=[f"{b:02x}" for b in buckets])
        return {str(key): row_hash([str(key), *(from_python(f, v) for f, v in
                                                zip(e.fields, values, strict=True))])
                for key, *values in rows}

    def events_of_rows(self, entity: str, row_ids: list[str]) -> Batch:
        return self._events(f"""JOIN (SELECT origin, seq FROM log.{BY_NAME[entity].slug}
            WHERE school = ANY(%(s)s) AND row_id = ANY(%(r)s::uuid[])) w USING (origin, seq)""",
                            "true", r=row_ids)

    def query(self, sql: str, time_limit_s: float | None = None,
              ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """One read statement over this school's data (``query_school``: it runs in a
        private DuckDB, on copies of this school's rows of the views it names)."""
        return query_school(sql, self._view_rows, time_limit_s)

    def rule_rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Validasi Lokal's ``sql`` (DuckDB's dialect) run as a query is: in a private
        DuckDB, on copies of the rows it names."""
        return query_school(sql, self._view_rows)[1]

    def _view_rows(self, name: str) -> pa.Table:
        """The school's rows of query view ``name``, as Arrow (UUIDs as text)."""
        columns = VIEWS[name]
        rows = self._all(f"SELECT {', '.join(c for c, _ in columns)} FROM {SOURCES[name]} "
                         "WHERE school = ANY(%(s)s)")
        return pa.table({c: pa.array([None if r[i] is None else _arrow_value(t, r[i])
                                      for r in rows], type=_ARROW_OF.get(t, pa.string()))
                         for i, (c, t) in enumerate(columns)})

    def row_counts(self) -> dict[str, int]:
        counted = dict(self._all("SELECT entity, sum(rows) FROM replica.digest "
                                 "WHERE school = ANY(%(s)s) GROUP BY entity"))
        return {e.name: int(counted.get(e.name, 0)) for e in ENTITIES}

    def author_counts(self, origin: str, after: int, upto: int) -> dict[str, int]:
        parts = " UNION ALL ".join(
            f"SELECT author FROM log.{e.slug} WHERE school = ANY(%(s)s) AND origin = %(o)s "
            "AND seq > %(a)s AND seq <= %(u)s" for e in ENTITIES)
        return {str(a): int(n) for a, n in self._all(
            f"SELECT author, count(*) FROM ({parts}) x GROUP BY author ORDER BY author",
            o=origin, a=after, u=upto)}

    def event_counts(self, origin: str, after: int = 0) -> dict[str, int]:
        return {str(n): int(c) for n, c in self._all(
            "SELECT entity, count(*) FROM log.event WHERE school = ANY(%(s)s) AND origin = %(o)s "
            "AND seq > %(a)s GROUP BY entity ORDER BY entity", o=origin, a=after)}

    def neutralised(self, origin: str, after: int, upto: int) -> dict[str, dict[str, int]]:
        """Per entity, ``origin``'s events in (after, upto] that the centre's rules changed
        (a write without effect, or a clock bound), and of those, how many were bounded."""
        bounds = self._bounds()
        out: dict[str, dict[str, int]] = {}
        present = {n for (n,) in self._all(
            "SELECT DISTINCT entity FROM log.event WHERE school = ANY(%(s)s) AND origin = %(o)s "
            "AND seq > %(a)s AND seq <= %(u)s", o=origin, a=after, u=upto)}
        for e in (e for e in ENTITIES if e.name in present):
            centre = _mask(e, Owner.CENTRE)
            verval = _mask(e, Owner.VERVAL)
            events = self._all(f"""SELECT row_id::text, seq, hlc, mask FROM log.{e.slug}
                WHERE school = ANY(%(s)s) AND origin = %(o)s AND seq > %(a)s AND seq <= %(u)s""",
                               o=origin, a=after, u=upto)
            locks = self._locks(e, {r for r, *_ in events})
            n = clock = 0
            for row_id, seq, hlc, mask in events:
                effective = effective_hlc(origin, seq, hlc, bounds, self.central)
                eff = mask
                if origin not in self.central:
                    eff &= ~centre
                    if lww_key(effective, origin) > locks.get(row_id, lww_key(effective, origin)):
                        eff &= ~verval
                if eff != mask or effective != hlc:
                    n += 1
                    clock += effective != hlc
            if n:
                out[e.name] = {"neutralised": n, "clock": clock}
        return out

    def _locks(self, e: Entity, row_ids: set[str]) -> dict[str, int]:
        """Per row of ``e``, the LWW key of the centre's first verification (merge rule 2)."""
        if not e.verified_by or not row_ids:
            return {}
        locks: dict[str, int] = {}
        for row_id, origin, hlc in self._all(f"""SELECT row_id::text, origin::text, hlc
                FROM log.{e.slug} WHERE school = ANY(%(s)s) AND origin = ANY(%(c)s::uuid[])
                AND row_id = ANY(%(r)s::uuid[]) AND mask & {e.bit(e.verified_by)} <> 0
                AND {e.verified_by} = 1""", r=list(row_ids)):
            k = lww_key(hlc, origin)
            locks[row_id] = min(k, locks.get(row_id, k))
        return locks

    def clock_bound(self, centre: str, held: VersionVector, limit: int, now_ms: int,
                    ) -> tuple[Event, int] | None:
        """The centre's koreksi_jam event bounding the new events past ``limit`` of one
        school origin (as ``DuckDBStore.clock_bound``)."""
        union = " UNION ALL ".join(
            f"SELECT origin, seq FROM log.{e.slug} WHERE school = ANY(%(s)s) AND hlc > %(l)s"
            for e in ENTITIES)
        found = self._all(f"""SELECT a.origin::text, min(a.seq), max(a.seq) FROM ({union}) a
            LEFT JOIN unnest(%(ho)s::uuid[], %(hs)s::bigint[]) h(origin, seq) USING (origin)
            WHERE a.seq > coalesce(h.seq, 0) AND NOT a.origin = ANY(%(c)s::uuid[])
            GROUP BY 1 ORDER BY 1 LIMIT 1""", l=limit, ho=list(held), hs=list(held.values()))
        if not found:
            return None
        origin, first, last = found[0]
        prior = self._all(" UNION ALL ".join(
            f"SELECT hlc FROM log.{e.slug} WHERE school = ANY(%(s)s) AND origin = %(o)s "
            "AND seq = %(q)s" for e in ENTITIES), o=origin, q=first - 1)
        before = effective_hlc(origin, first - 1, prior[0][0], self._bounds(),
                               self.central) if prior else 0
        return clock_bound_event(self, centre, origin, first, last, before, now_ms)

    # -- clock bounds (merge rule 5) --------------------------------------------------------

    def _bounds(self) -> dict[str, list[tuple[int, int, int]]]:
        """Per school origin, its complete clock bounds, as ``merge.clock_bounds`` finds."""
        out: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for origin, first, last, hlc in self._all(
                f"""SELECT install_id::text, seq_from, seq_to, hlc_from
                    FROM {BY_NAME[CLOCK_BOUND].table} WHERE school = ANY(%(s)s)
                    AND install_id IS NOT NULL AND seq_from IS NOT NULL
                    AND seq_to IS NOT NULL AND hlc_from IS NOT NULL"""):
            out[origin].append((first, last, hlc))
        return out

    def _bound_params(self) -> dict[str, list[Any]]:
        rows = [(o, *b) for o, bs in self._bounds().items() for b in bs]
        return {name: [r[i] for r in rows] for i, name in enumerate(("bo", "bf", "bt", "bh"))}

    def _effective_hlc_sql(self) -> str:
        """SQL: the effective hlc of event ``x`` (its own, or the least a bound gives it);
        parameters from ``_bound_params``."""
        return """coalesce((SELECT min(b.h + x.seq - b.f)
            FROM unnest(%(bo)s::uuid[], %(bf)s::bigint[], %(bt)s::bigint[], %(bh)s::bigint[])
                 b(o, f, t, h)
            WHERE b.o = x.origin AND x.seq BETWEEN b.f AND b.t
            AND NOT x.origin = ANY(%(c)s::uuid[])), x.hlc)"""

    # -- appending ------------------------------------------------------------------

    def append(self, batch: Batch) -> AppendReport:
        with self.db.transaction() as con:
            return self._append(con, batch)

    @staticmethod
    def lock_schools(con: psycopg.Connection[Any], schools: Iterable[str]) -> None:
        """Wait for the schools' append locks (held to the transaction's end), in one
        order, so that no two appenders deadlock."""
        for school in sorted(set(schools)):
            con.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        [f"selaras school {school}"])

    def _append(self, con: psycopg.Connection[Any], batch: Batch) -> AppendReport:
        if not batch.tables:
            return AppendReport()
        batch.check_well_formed()
        incoming = list(batch.events())
        self.lock_schools(con, {self._school_of(ev) for ev in incoming})
        ours = self.vector()
        held = self._held({ev.id: ev.context for ev in incoming
                           if ev.seq <= ours.get(ev.origin, 0)})
        accepted, report = check_and_order(held, ours, incoming)
        if accepted:
            prior = self._prior(self._touched(accepted))
            self._log(con, accepted, batch.signatures_by_id())
            self._merge(con, accepted, prior)
        return report

    def _school_of(self, ev: Event) -> str:
        return ANY_SCHOOL if ev.origin == REFERENSI_ORIGIN else self.school

    def _held(self, ids: dict[tuple[str, int], VersionVector | None],
              ) -> dict[tuple[str, int], Event]:
        """The held events under the ids of ``ids``, each with the context given there (a
        held event is the one sent if all but its context is equal)."""
        if not ids:
            return {}
        origins, seqs = [o for o, _ in ids], [q for _, q in ids]
        join = "JOIN unnest(%(io)s::uuid[], %(iq)s::bigint[]) i(origin, seq) USING (origin, seq)"
        entities = {n for (n,) in self._all(
            f"SELECT DISTINCT entity FROM log.event x {join} WHERE school = ANY(%(s)s)",
            io=origins, iq=seqs)}
        held = {}
        for e in (BY_NAME[n] for n in entities):
            for row in self._all(f"SELECT {', '.join(META)}, {', '.join(f.name for f in e.fields)} "
                                 f"FROM log.{e.slug} x {join} WHERE school = ANY(%(s)s)",
                                 io=origins, iq=seqs):
                ev = _event(e, tuple(row))
                held[ev.id] = msgspec.structs.replace(ev, context=ids[ev.id])
        return held

    def _log(self, con: psycopg.Connection[Any], events: list[Event],
             signatures: dict[tuple[str, int], bytes]) -> None:
        """The accepted events into the log, with their contexts and centre signatures."""
        cur = con.cursor()
        by_entity: dict[str, list[Event]] = defaultdict(list)
        for ev in events:
            by_entity[ev.entity].append(ev)
        for name, evs in by_entity.items():
            e = BY_NAME[name]
            with cur.copy(f"COPY log.{e.slug} (school, {', '.join(META)}, "
                          f"{', '.join(f.name for f in e.fields)}) FROM STDIN") as copy:
                for ev in evs:
                    copy.write_row((self._school_of(ev), ev.origin, ev.seq, ev.hlc, ev.row_id,
                                    ev.author, ev.role, sum(e.bit(k) for k in ev.changes),
                                    *(ev.changes.get(f.name) for f in e.fields)))
        with cur.copy("COPY log.context (school, origin, seq, peer, held) FROM STDIN") as copy:
            for ev in events:
                for peer, n in (ev.context or {}).items():
                    copy.write_row((self._school_of(ev), ev.origin, ev.seq, peer, n))
        with cur.copy("COPY log.signature (school, origin, seq, sig) FROM STDIN") as copy:
            for ev in events:  # only centre events' signatures mean anything
                if ev.origin in self.central and ev.id in signatures:
                    copy.write_row((self._school_of(ev), ev.origin, ev.seq, signatures[ev.id]))
        heads: dict[tuple[str, str], int] = {}
        for ev in events:
            key = (self._school_of(ev), ev.origin)
            heads[key] = max(heads.get(key, 0), ev.seq)
        cur.executemany("""INSERT INTO replica.head VALUES (%s, %s, %s)
            ON CONFLICT (school, origin) DO UPDATE
            SET seq = greatest(replica.head.seq, excluded.seq)""",
                        [(school, origin, seq) for (school, origin), seq in heads.items()])

    def _touched(self, events: list[Event]) -> dict[str, set[tuple[str, str]]]:
        """Per entity, the (school, row_id) the events write."""
        touched: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for ev in events:
            touched[ev.entity].add((self._school_of(ev), ev.row_id))
        return touched

    def _prior(self, touched: dict[str, set[tuple[str, str]]]) -> set[tuple[str, str, str]]:
        """The (entity, school, row_id) of ``touched`` with events held already."""
        prior = set()
        for name, keys in touched.items():
            prior |= {(name, s, str(r)) for s, r in self._all(
                f"SELECT DISTINCT school, row_id FROM log.{BY_NAME[name].slug} "
                f"JOIN {KEYS} USING (school, row_id) WHERE school = ANY(%(s)s)", **_keys(keys))}
        return prior

    def _merge(self, con: psycopg.Connection[Any], events: list[Event],
               prior: set[tuple[str, str, str]]) -> None:
        """Recompute the rows the new events touch, and their conflicts, with the fold.

        A row first written by these events merges from them alone; any other is read
        back from the log whole.
        """
        touched = self._touched(events)
        bounded = [str(ev.changes["install_id"]) for ev in events
                   if ev.entity == CLOCK_BOUND and ev.changes.get("install_id")]
        if bounded:  # a new bound changes the order of every row its origin wrote
            for e in ENTITIES:
                again = {(s, str(r)) for s, r in self._all(
                    f"SELECT DISTINCT school, row_id FROM log.{e.slug} "
                    "WHERE school = ANY(%(s)s) AND origin = ANY(%(b)s::uuid[])", b=bounded)}
                touched[e.name] |= again
                prior |= {(e.name, s, r) for s, r in again}
        bounds: list[Event] | None = None  # the school's clock bounds, read if a fold runs
        for name, keys in touched.items():
            e = BY_NAME[name]
            old = {(s, r) for s, r in keys if (name, s, r) in prior}
            fresh = [(self._school_of(ev), ev) for ev in events if ev.entity == name
                     and (self._school_of(ev), ev.row_id) not in old]
            writes = Counter((s, ev.row_id) for s, ev in fresh)
            rows: list[tuple[Any, ...]] = []
            for school, ev in fresh:  # a row written once, first: no merge to do
                if writes[(school, ev.row_id)] == 1:
                    row = written_once(ev, self.central)
                    if row is not None:
                        rows.append((school, ev.row_id, *row.values()))
            fresh = [(s, ev) for s, ev in fresh if writes[(s, ev.row_id)] > 1]
            events_of_rows = fresh + self._stored(e, old)
            if len({ev.origin for _, ev in events_of_rows}) > 1:
                # Contexts decide conflicts between origins; one origin's writes need none.
                events_of_rows = self._in_force(events_of_rows)
            by_school: dict[str, list[Event]] = defaultdict(list)
            for school, ev in events_of_rows:
                by_school[school].append(ev)
            siblings: list[tuple[Any, ...]] = []
            for school, evs in by_school.items():
                if bounds is None:
                    bounds = [ev for _, ev in self._stored(BY_NAME[CLOCK_BOUND], None)]
                state = fold(bounds + evs, self.central)  # the rows' own copies last: kept
                mine = {r for s, r in keys if s == school}
                rows += [(school, rid, *row.values())
                         for rid, row in state.rows[name].items() if rid in mine]
                siblings += [(school, name, c.row_id, c.field, c.origin, c.seq,
                              None if c.value is None else str(c.value), c.author, c.role,
                              c.winner)
                             for c in state.conflicts if c.entity == name and c.row_id in mine]
            self._replace(con, e, old, rows, siblings)

    def _stored(self, e: Entity, keys: set[tuple[str, str]] | None,
                ) -> list[tuple[str, Event]]:
        """The held events of ``e`` for the (school, row_id) ``keys`` (all if None), each with
        its school (without contexts: ``_in_force`` adds them)."""
        if keys is not None and not keys:
            return []
        join, params = "", {}
        if keys is not None:
            join, params = f"JOIN {KEYS} USING (school, row_id)", _keys(keys)
        rows = self._all(f"""SELECT x.school, {", ".join("x." + c for c in META)},
            {", ".join("x." + f.name for f in e.fields)}
            FROM log.{e.slug} x {join} WHERE x.school = ANY(%(s)s)""", **params)
        return [(school, _event(e, tuple(row))) for school, *row in rows]

    def _in_force(self, events: list[tuple[str, Event]]) -> list[tuple[str, Event]]:
        """The events, each with the causal context in force at it (its origin's latest
        held at or before it), as the fold needs for a part of the log."""
        if not events:
            return []
        contexts: dict[str, list[tuple[int, VersionVector]]] = defaultdict(list)
        for origin, seq, peers, held in self._all(
                "SELECT origin::text, seq, array_agg(peer::text), array_agg(held) "
                "FROM log.context WHERE school = ANY(%(s)s) AND origin = ANY(%(o)s::uuid[]) "
                "GROUP BY 1, 2 ORDER BY 1, 2", o=list({ev.origin for _, ev in events})):
            contexts[origin].append((seq, dict(zip(peers, held, strict=True))))
        out = []
        for school, ev in events:
            carried = contexts.get(ev.origin, [])
            i = bisect.bisect_right(carried, ev.seq, key=lambda c: c[0])
            out.append((school, msgspec.structs.replace(
                ev, context=carried[i - 1][1] if i else {})))
        return out

    def _replace(self, con: psycopg.Connection[Any], e: Entity, old: set[tuple[str, str]],
                 rows: list[tuple[Any, ...]], siblings: list[tuple[Any, ...]]) -> None:
        """The materialised rows and conflicts of ``old`` (the rows there may be) replaced,
        and new ones added: ``rows`` and ``siblings``."""
        gone: list[tuple[Any, ...]] = []
        if old:
            params = _keys(old)
            keyed = "(school, {}) IN (SELECT * FROM " + KEYS + ")"
            gone = con.execute(f"DELETE FROM {e.table} WHERE {keyed.format(e.key)} "
                               f"RETURNING school, {', '.join(e.columns)}", params).fetchall()
            con.execute(f"DELETE FROM replica.conflict WHERE entity = %(e)s AND "
                        f"{keyed.format('row_id')}", {**params, "e": e.name})
        cur = con.cursor()
        with cur.copy(f"COPY {e.table} (school, {', '.join(e.columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        if siblings:
            with cur.copy("COPY replica.conflict (school, entity, row_id, field, origin, seq, "
                          "value, author, role, winner) FROM STDIN") as copy:
                for sibling in siblings:
                    copy.write_row(sibling)
        add_digests(con, e, rows, gone)


def fill_head(con: psycopg.Connection[Any]) -> None:
    """replica.head from the log (a database made before the vector was kept)."""
    con.execute("INSERT INTO replica.head SELECT school, origin, max(seq) FROM log.event "
                "GROUP BY school, origin")


def fill_digests(con: psycopg.Connection[Any]) -> None:
    """replica.digest computed from the rows (a database made before digests were kept)."""
    for e in ENTITIES:
        with con.cursor(name=f"fill_{e.slug}") as rows:  # on the server: streamed
            rows.execute(f"SELECT school, {', '.join(e.columns)} FROM {e.table}")
            add_digests(con, e, rows)


def add_digests(con: psycopg.Connection[Any], e: Entity, added: Iterable[tuple[Any, ...]],
                removed: Iterable[tuple[Any, ...]] = ()) -> None:
    """Keep replica.digest up to date: rows (school first, then ``e``'s columns, as
    stored) ``added`` to ``e``'s table and ``removed`` from it."""
    change = digest_change(e, added, removed)
    con.cursor().executemany(
        """INSERT INTO replica.digest VALUES (%s, %s, %s, %s, %s) ON CONFLICT
           (school, entity, bucket) DO UPDATE SET rows = replica.digest.rows + excluded.rows,
           total = replica.digest.total + excluded.total""",
        [(school, e.name, bucket, n, total) for (school, bucket), (n, total) in change.items()])


KEYS = "unnest(%(ks)s::text[], %(kr)s::uuid[]) k(school, row_id)"  # rows by (school, row_id)


def _keys(keys: set[tuple[str, str]]) -> dict[str, list[str]]:
    """The parameters of ``KEYS``."""
    return {"ks": [s for s, _ in keys], "kr": [r for _, r in keys]}


def _mask(e: Entity, owner: Owner) -> int:
    return sum(e.bit(f.name) for f in e.fields if f.owner is owner)


def _event(e: Entity, row: tuple[Any, ...]) -> Event:
    """An event of ``e`` from a log row: META columns, then the fields."""
    origin, seq, hlc, row_id, author, role, mask, *values = row
    return Event(origin=str(origin), seq=seq, hlc=hlc, entity=e.name, row_id=str(row_id),
                 author=author, role=role,
                 changes={f.name: from_python(f, v) for f, v in zip(e.fields, values, strict=True)
                          if mask & e.bit(f.name)})


def _arrow(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Rows read back as an Arrow table of ``schema`` (UUIDs as their 16 bytes)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for values, field in zip(columns, schema, strict=True):
        if field.type == pa.uuid():
            values = tuple(None if v is None else v.bytes for v in values)
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# A query view's column types as Arrow (``query_school`` casts them to the SQL types).
_ARROW_OF = {"BIGINT": pa.int64(), "DATE": pa.date32(), "DECIMAL(18,6)": pa.decimal128(18, 6),
             "BLOB": pa.binary()}


def _arrow_value(sql_type: str, v: Any) -> Any:
    return v if sql_type in _ARROW_OF else str(v)
