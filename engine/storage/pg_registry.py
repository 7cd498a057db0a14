"""The centre's registry in PostgreSQL: the same queries, tables partitioned by school."""

from __future__ import annotations

from ..store import SessionCaps
from .pg_database import PgDatabase, partitioned
from .registry import SqlRegistry, added_columns

TABLES = [
    "CREATE SCHEMA IF NOT EXISTS registry",
    *partitioned("registry.school", """npsn text PRIMARY KEY, nama text NOT NULL,
        kode_hash text NOT NULL, generation integer NOT NULL, created_ms bigint NOT NULL"""),
    *partitioned("registry.account", """npsn text NOT NULL, email text NOT NULL,
        role text NOT NULL, password_hash text NOT NULL, created_ms bigint NOT NULL,
        PRIMARY KEY (npsn, email)"""),
    *partitioned("registry.install", """npsn text NOT NULL, origin uuid NOT NULL,
        email text NOT NULL, token_hash text NOT NULL, generation integer NOT NULL,
        revoked boolean NOT NULL, created_ms bigint NOT NULL, PRIMARY KEY (npsn, origin)"""),
    # A Hello names its install: found without the school (each partition's own index).
    "CREATE INDEX IF NOT EXISTS install_origin ON registry.install (origin)",
    *partitioned("registry.session", """session text, npsn text NOT NULL, install text,
        mode text, started_ms bigint, ended_ms bigint, outcome text, events_in bigint,
        events_out bigint, bytes_in bigint, bytes_out bigint"""),
    *added_columns("text"),
    *partitioned("registry.live", """npsn text, session text, install text,
        started_ms bigint NOT NULL, seen_ms bigint NOT NULL, PRIMARY KEY (npsn, session)"""),
]


class PostgresRegistry(SqlRegistry):
    """The registry on a PostgreSQL connection; its changes join the transaction open on
    ``db``, if any."""

    def __init__(self, db: PgDatabase, *, create: bool = True) -> None:
        super().__init__(db.run)
        self.db = db
        if create:
            with db.transaction():
                # Server processes starting at once make the tables one at a time.
                db.run("SELECT pg_advisory_xact_lock(5774)", [])
                for statement in TABLES:
                    db.run(statement, [])

    def admit(self, npsn: str, session: str, install: str, now_ms: int, caps: SessionCaps,
              lease_ms: int) -> str | None:
        with self.db.transaction() as con:
            # Every process admits through this one lock: the count is the database's.
            con.execute("SELECT pg_advisory_xact_lock(5775)")
            return super().admit(npsn, session, install, now_ms, caps, lease_ms)
