"""The DuckDB database under every store: opening it, its tables, its transactions.

One set of tables holds any number of schools (DESIGN.md section 5); ``school``
leads every key. The centre keeps every school in them; an install keeps its
one school under ``ANY_SCHOOL``, which is also where Referensi lives, once,
for every school:

- ``log.event``      (school, origin, seq) -> entity: the primary key makes a
                     second event under one id impossible.
- ``log.<entity>``   the events of one entity, columnar: metadata, the LWW key
                     packed into one integer (derived: a clock bound arriving
                     later rewrites it), the change mask, the field values.
- ``log.context``    causal contexts, one row per peer, only where they changed.
- ``log.signature``  the centre's signature of each centre event that came with one.
- ``<entity>``       the materialised tables (``ref.*`` in schema ref).
- ``replica.head``   per origin, the highest seq held: the version vector, kept up to
                     date with log.event (reading it costs no scan of the log).
- ``replica.digest`` per entity and bucket of keys, the count and the sum of the
                     materialised rows' hashes (``values.row_hash``), kept up to
                     date in the transaction that changes the rows.
- ``replica.*``      replica-local state: meta, conflicts, validation results,
                     sync history (not ``selaras.*``: a file named selaras.duckdb
                     is catalog ``selaras``, and ``selaras.meta`` would be ambiguous).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from ..schema import ENTITIES, SQL_TYPES, Entity
from ..store import DataInUse, StoreFailure
from ..values import HASH_HEX

MEMORY_LIMIT = "1GB"


def connect(path: str | os.PathLike[str], *, read_only: bool = False,
            memory_limit: str = MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file as every store here wants it; DataInUse if another process has it."""
    try:
        con = duckdb.connect(str(path), read_only=read_only,
                             config={"memory_limit": memory_limit,
                                     # UUIDs cross Arrow as 16 bytes, not text
                                     "arrow_lossless_conversion": True})
    except duckdb.IOException as exc:
        text = str(exc).lower()
        if "set lock on file" in text or "conflicting lock" in text:
            raise DataInUse() from exc
        raise failure(exc) from exc  # a read-only folder, a full disk, a damaged file
    # Else any query over 2 s draws a progress bar on stdout (a pipe too), into --json
    # output. Cursors have no progress bar by default.
    con.execute("SET enable_progress_bar_print = false")
    if con.execute("""SELECT 1 FROM duckdb_tables() WHERE schema_name = 'log'
                      AND table_name = 'event' AND NOT contains(sql, 'school')""").fetchall():
        con.close()
        raise StoreFailure(f"{path} dibuat oleh selaras versi lama (tabelnya tanpa kolom "
                           "sekolah) dan tidak dapat dibaca versi ini: sinkronkan dengan versi "
                           "yang membuatnya, lalu buat folder data baru")
    return con


ANY_SCHOOL = ""  # the school of Referensi's events and rows (every school's), and an install's


def create_tables(db: Database) -> None:
    """The tables of every store, if missing: one set, whatever the number of schools.

    ``school`` leads every key, so registering a school adds rows, never tables.
    """
    with db.transaction() as c:
        _create(c)


TABLES = frozenset({"log.event", "log.context", "log.signature", "replica.meta",
                    "replica.conflict", "replica.sync_history", "replica.validation",
                    "replica.digest", "replica.head", *(f"log.{e.slug}" for e in ENTITIES),
                    *(e.table if "." in e.table else f"main.{e.table}" for e in ENTITIES)})


def _create(c: duckdb.DuckDBPyConnection) -> None:
    made = {f"{s}.{t}" for s, t in c.execute(
        "SELECT schema_name, table_name FROM duckdb_tables()").fetchall()}
    if made >= TABLES:
        return  # a store opened again: dozens of CREATE ... IF NOT EXISTS cost 30 ms
    fill_digests = "log.event" in made and "replica.digest" not in made  # made before digests
    fill_head = "log.event" in made and "replica.head" not in made
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
    c.execute("""CREATE TABLE IF NOT EXISTS replica.digest (school VARCHAR, entity VARCHAR,
        bucket SMALLINT, rows BIGINT NOT NULL, total HUGEINT NOT NULL,
        PRIMARY KEY (school, entity, bucket))""")
    c.execute("""CREATE TABLE IF NOT EXISTS replica.head (school VARCHAR, origin UUID,
        seq BIGINT NOT NULL, PRIMARY KEY (school, origin))""")
    if fill_head:
        c.execute(advance_head_sql("log.event"))
    for e in ENTITIES:
        values = [f"{f.name} {SQL_TYPES[f.type]}" for f in e.fields]
        # The change log: one row per event; lww packs the LWW order (hlc, origin) in one integer.
        c.execute(f"""CREATE TABLE IF NOT EXISTS log.{e.slug} (school VARCHAR NOT NULL,
            origin UUID NOT NULL, seq BIGINT NOT NULL, hlc BIGINT NOT NULL,
            lww HUGEINT NOT NULL, row_id UUID NOT NULL, author VARCHAR NOT NULL,
            role VARCHAR NOT NULL, mask UBIGINT NOT NULL, {", ".join(values)})""")
        c.execute(f"CREATE TABLE IF NOT EXISTS {e.table} (school VARCHAR NOT NULL, "
                  f"{e.key} UUID, {', '.join(values)})")
        if fill_digests:
            c.execute(add_digests_sql(e, f"FROM {e.table}"))


def quote(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def fields_sql(e: Entity, prefix: str = "") -> str:
    """The field columns of ``e``, in order, each with ``prefix``."""
    return ", ".join(prefix + f.name for f in e.fields)


def bucket_sql(key: str) -> str:
    """SQL: the bucket of the row whose key is in column ``key`` (``values.bucket_of``)."""
    return f"('0x' || md5({key}::VARCHAR)[1:2])::SMALLINT"


def row_hashes_sql(e: Entity, rows: str) -> str:
    """SQL: the school, bucket, key and hash (``values.row_hash``) of each of ``rows``,
    a query with the columns of ``e``'s table."""
    text = ", ".join(f"CASE WHEN {c} IS NULL THEN '-' "
                     f"ELSE length({c}::VARCHAR)::VARCHAR || ':' || {c}::VARCHAR END"
                     for c in e.columns)
    return f"""SELECT school, {bucket_sql(e.key)} AS bucket, {e.key}::VARCHAR AS row_id,
                      ('0x' || md5(concat({text}))[1:{HASH_HEX}])::BIGINT AS h
               FROM ({rows})"""


def add_digests_sql(e: Entity, rows: str, sign: int = 1) -> str:
    """SQL: add (``sign`` 1) or take away (-1) ``rows`` of ``e``'s table from its digests."""
    return f"""INSERT INTO replica.digest
        SELECT school, '{e.name}', bucket, {sign} * count(*), {sign} * sum(h)
        FROM ({row_hashes_sql(e, rows)}) GROUP BY school, bucket
        ON CONFLICT DO UPDATE SET rows = rows + excluded.rows, total = total + excluded.total"""


def advance_head_sql(events: str) -> str:
    """SQL: raise replica.head to the highest seqs of ``events`` (school, origin, seq)."""
    return f"""INSERT INTO replica.head SELECT school, origin, max(seq) FROM {events}
        GROUP BY school, origin ON CONFLICT DO UPDATE SET seq = greatest(seq, excluded.seq)"""


class Database:
    """One DuckDB connection and its transaction, shared by the stores that use it.

    The centre's writer and many school stores share one; each reader thread has
    its own (``cursor``). Not thread-safe: one thread at a time.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._open = False

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN ... COMMIT; inside a transaction already open, a part of it.

        On any failure the whole transaction is rolled back; a failure of the
        database itself comes out as StoreFailure, in plain words.
        """
        if self._open:
            yield self.con
            return
        self.con.execute("BEGIN")
        self._open = True
        try:
            yield self.con
            self.con.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT has ended it already
                self.con.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise failure(exc) from exc
            raise
        finally:
            self._open = False

    def cursor(self) -> Database:
        """A connection of its own to the same database, for another thread."""
        return Database(self.con.cursor())

    def close(self) -> None:
        self.con.close()


# Two writers changed one school's rows at once (a push holds its transaction open across its
# session): the later to commit fails, and tries again.
BUSY_SCHOOL = "data sekolah ini sedang diubah sesi lain: coba lagi sebentar lagi"


def failure(exc: duckdb.Error) -> StoreFailure:
    """What went wrong underneath, in words an admin or operator can act on.

    A statement run after a failure inside a transaction fails again with
    'transaction is aborted': the cause is the first failure in the chain.
    """
    cause: BaseException = exc
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, duckdb.Error) and "transaction is aborted" not in str(seen):
            cause = seen
        seen = seen.__context__
    detail = (str(cause).splitlines() or [type(cause).__name__])[0]
    text = detail.lower()
    if isinstance(cause, duckdb.OutOfMemoryException) or "out of memory" in text:
        reason = ("basis data kehabisan memori (naikkan batas memorinya, atau kurangi sesi "
                  "yang berjalan bersamaan)")
    elif "no space left" in text or "disk is full" in text:
        reason = "disk penuh (kosongkan sebagian ruang disk, lalu coba lagi)"
    elif "read-only" in text or "permission denied" in text:
        reason = ("folder data tidak dapat ditulis (hanya-baca, atau tanpa izin tulis): "
                  "periksa izin folder itu atau pakai folder lain")
    elif "transactioncontext error" in text:  # a conflict, found at the latest at commit
        reason = BUSY_SCHOOL
    elif isinstance(cause, duckdb.IOException):
        reason = f"basis data tidak dapat membaca atau menulis filenya ({_short(detail)})"
    else:
        reason = f"basis data gagal ({_short(detail)})"
    return StoreFailure(reason, detail)


def _short(detail: str, limit: int = 200) -> str:
    """The database's own words, cut short: they may quote a value of any length."""
    return detail if len(detail) <= limit else detail[:limit] + "..."
