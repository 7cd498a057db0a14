"""The centre's registry: schools, accounts, installs and sessions.

In schema ``registry`` of the centre's database, beside the schools' data.
``SqlRegistry`` holds the queries, the same on every database; each store
makes the tables its way (``DuckDBRegistry`` here, ``PostgresRegistry`` in
``pg_registry``). Only SQL lives here: hashing, secrets and the rules of
registration are server/credentials.py's and server/app.py's. Times come in
as milliseconds since the epoch (the caller owns the clock).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import duckdb

from ..store import RegistryError, SessionCaps
from .database import Database, failure

# Runs one statement with ``?`` parameters: the column names and the rows.
Run = Callable[[str, list[Any]], tuple[list[str], list[tuple[Any, ...]]]]


class SqlRegistry:
    """The registry's queries over ``run`` (one statement, ``?`` parameters).

    Every table is keyed by the school (``npsn``) first: no key spans schools.
    """

    def __init__(self, run: Run) -> None:
        self._run = run

    def _one(self, sql: str, params: list[Any]) -> dict[str, Any] | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        names, rows = self._run(sql, params)
        return [dict(zip(names, r, strict=True)) for r in rows]

    # -- schools ------------------------------------------------------------------------

    def add_school(self, npsn: str, nama: str, kode_hash: str, now_ms: int) -> None:
        if self.school(npsn) is not None:
            raise RegistryError(f"school {npsn} is already registered")
        self._run("INSERT INTO registry.school (npsn, nama, kode_hash, generation, created_ms) "
                  "VALUES (?, ?, ?, 1, ?)", [npsn, nama, kode_hash, now_ms])

    def school(self, npsn: str) -> dict[str, Any] | None:
        """npsn, nama, kode_hash, generation, created_ms; None if unknown."""
        return self._one("SELECT npsn, nama, kode_hash, generation, created_ms "
                         "FROM registry.school WHERE npsn = ?", [npsn])

    def schools(self) -> list[dict[str, Any]]:
        """npsn, nama, generation, created_ms, and from the sessions: the end of the last
        sync and the last Tarik Data that succeeded, the invalid findings the last gated
        push left (None before any), what the last session to bring the centre's changes
        down brought, per source (``sources``, JSON)."""
        return self._all(
            "SELECT npsn, nama, generation, created_ms, "
            "(SELECT max(ended_ms) FROM registry.session x WHERE x.npsn = s.npsn "
            " AND x.mode = 'sync' AND x.outcome = 'done') AS last_sync_ms, "
            "(SELECT max(ended_ms) FROM registry.session x WHERE x.npsn = s.npsn "
            " AND x.mode = 'pull' AND x.outcome = 'done') AS last_pull_ms, "
            "(SELECT x.invalid FROM registry.session x WHERE x.npsn = s.npsn "
            " AND x.invalid IS NOT NULL ORDER BY x.ended_ms DESC LIMIT 1) AS invalid, "
            "(SELECT x.sources FROM registry.session x WHERE x.npsn = s.npsn "
            " AND x.sources IS NOT NULL ORDER BY x.ended_ms DESC LIMIT 1) AS sources "
            "FROM registry.school s ORDER BY npsn", [])

    def reset_kode(self, npsn: str, kode_hash: str) -> int:
        """A new registration code: generation + 1 (older installs get code_reset)."""
        row = self._one("UPDATE registry.school SET kode_hash = ?, generation = generation + 1 "
                        "WHERE npsn = ? RETURNING generation", [kode_hash, npsn])
        if row is None:
            raise RegistryError(f"school {npsn} is not registered")
        return int(row["generation"])

    # -- accounts -----------------------------------------------------------------------

    def account(self, npsn: str, email: str) -> dict[str, Any] | None:
        """The account's ACCOUNT_COLUMNS and its password_hash; None if unknown."""
        return self._one(f"SELECT {ACCOUNT_COLUMNS}, password_hash FROM registry.account "
                         "WHERE npsn = ? AND email = ?", [npsn, email])

    def accounts(self, npsn: str) -> list[dict[str, Any]]:
        return self._all(f"SELECT {ACCOUNT_COLUMNS} FROM registry.account WHERE npsn = ? "
                         "ORDER BY created_ms, email", [npsn])

    def account_count(self, npsn: str) -> int:
        row = self._one("SELECT count(*) AS n FROM registry.account WHERE npsn = ?", [npsn])
        return int(row["n"]) if row else 0

    def add_account(self, npsn: str, email: str, role: str, password_hash: str,
                    now_ms: int, **profile: str) -> None:
        """A new account; ``profile``: nama, ptk_id, nip, public_key, sealed_key,
        pengguna_id."""
        if self.account(npsn, email) is not None:
            raise RegistryError(f"account {email} of school {npsn} already exists")
        record = {"npsn": npsn, "email": email, "role": role, "password_hash": password_hash,
                  "created_ms": now_ms, "disabled": False, **profile}
        self._run(f"INSERT INTO registry.account ({', '.join(record)}) "
                  f"VALUES ({', '.join('?' * len(record))})", list(record.values()))

    def update_account(self, npsn: str, email: str, **values: Any) -> None:
        """Set columns of an account (password_hash, disabled, public_key, sealed_key)."""
        if self.account(npsn, email) is None:
            raise RegistryError(f"no account {email} of school {npsn}")
        self._run(f"UPDATE registry.account SET {', '.join(f'{k} = ?' for k in values)} "
                  "WHERE npsn = ? AND email = ?", [*values.values(), npsn, email])

    # -- installs -----------------------------------------------------------------------

    def add_install(self, origin: str, npsn: str, email: str, token_hash: str, generation: int,
                    now_ms: int) -> None:
        self._run("INSERT INTO registry.install (npsn, origin, email, token_hash, generation, "
                  "revoked, created_ms) VALUES (?, ?, ?, ?, ?, false, ?)",
                  [npsn, uuid.UUID(origin), email, token_hash, generation, now_ms])

    def install(self, origin: str, npsn: str | None = None) -> dict[str, Any] | None:
        """origin, npsn, email, token_hash, generation, revoked, created_ms; None if unknown.
        Given the school too, the lookup stays within it (one shard on Citus)."""
        try:
            key = uuid.UUID(origin)
        except ValueError:
            return None
        school = "" if npsn is None else " AND npsn = ?"
        return self._one("SELECT origin::VARCHAR AS origin, npsn, email, token_hash, generation, "
                         f"revoked, created_ms FROM registry.install WHERE origin = ?{school}",
                         [key] + ([] if npsn is None else [npsn]))

    def installs(self, npsn: str) -> list[dict[str, Any]]:
        return self._all("SELECT origin::VARCHAR AS origin, email, generation, revoked, "
                         "created_ms FROM registry.install WHERE npsn = ? ORDER BY created_ms",
                         [npsn])

    def revoke(self, origin: str) -> None:
        found = self.install(origin)
        if found is None:
            raise RegistryError(f"no install {origin}")
        self._run("UPDATE registry.install SET revoked = true WHERE npsn = ? AND origin = ?",
                  [found["npsn"], uuid.UUID(origin)])

    # -- sessions -----------------------------------------------------------------------

    def record_session(self, record: dict[str, Any]) -> None:
        """Keep one session (keys: the registry.session columns)."""
        self._run(f"INSERT INTO registry.session ({', '.join(record)}) "
                  f"VALUES ({', '.join('?' * len(record))})", list(record.values()))

    def sessions(self, npsn: str, limit: int = 20) -> list[dict[str, Any]]:
        """The school's latest sessions, newest first (keys: SESSION_COLUMNS)."""
        return self._all(f"SELECT {SESSION_COLUMNS} FROM registry.session WHERE npsn = ? "
                         "ORDER BY started_ms DESC LIMIT ?", [npsn, limit])

    # -- sessions in flight: admission across every server process on the store --------------

    def admit(self, npsn: str, session: str, install: str, now_ms: int, caps: SessionCaps,
              lease_ms: int) -> str | None:
        """Admit a session unless a cap is reached (counting those renewed within
        ``lease_ms``: those of a process that died lapse); the cap reached, or None.
        Needs the caller's transaction and exclusion."""
        self._run("DELETE FROM registry.live WHERE seen_ms < ?", [now_ms - lease_ms])
        total, school, mine = self._run(
            "SELECT count(*), count(*) FILTER (WHERE npsn = ?), "
            "count(*) FILTER (WHERE npsn = ? AND install = ?) FROM registry.live",
            [npsn, npsn, install])[1][0]
        for cap, live, limit in (("install", mine, caps.install),
                                 ("school", school, caps.school), ("total", total, caps.total)):
            if live >= limit:
                return cap
        self._run("INSERT INTO registry.live (npsn, session, install, started_ms, seen_ms) "
                  "VALUES (?, ?, ?, ?, ?)", [npsn, session, install, now_ms, now_ms])
        return None

    def renew(self, sessions: list[tuple[str, str]], now_ms: int) -> None:
        """Keep these (npsn, session) live for another lease."""
        for npsn, session in sessions:
            self._run("UPDATE registry.live SET seen_ms = ? WHERE npsn = ? AND session = ?",
                      [now_ms, npsn, session])

    def leave(self, npsn: str, session: str) -> None:
        self._run("DELETE FROM registry.live WHERE npsn = ? AND session = ?", [npsn, session])

    def live(self) -> int:
        """The sessions live now, in every process."""
        return int(self._run("SELECT count(*) FROM registry.live", [])[1][0][0])


SESSION_COLUMNS = ("session, npsn, install, mode, started_ms, ended_ms, outcome, events_in, "
                   "events_out, bytes_in, bytes_out, account, principal, consent, invalid, "
                   "sources")
ACCOUNT_COLUMNS = ("npsn, email, role, created_ms, disabled, nama, ptk_id, nip, public_key, "
                   "sealed_key, pengguna_id")
# Columns added since the tables were first made: a centre made before gets them on opening.
ADDED_COLUMNS = {
    "registry.account": ["disabled BOOLEAN DEFAULT false", "nama VARCHAR", "ptk_id VARCHAR",
                         "nip VARCHAR", "public_key VARCHAR", "sealed_key VARCHAR",
                         "pengguna_id VARCHAR"],
    "registry.session": ["account VARCHAR", "principal VARCHAR", "consent VARCHAR",
                         "invalid INTEGER", "sources VARCHAR"],
}


def added_columns(text_type: str = "VARCHAR") -> list[str]:
    return [f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column.replace('VARCHAR', text_type)}"
            for table, columns in ADDED_COLUMNS.items() for column in columns]


class DuckDBRegistry(SqlRegistry):
    """The registry in the centre's DuckDB file, on one of its connections (the writer's or
    a reader's). Its changes join the transaction open on ``db``, if any (a school added
    with its first events is one transaction)."""

    def __init__(self, db: Database, *, create: bool = True) -> None:
        super().__init__(self._query)
        self.db = db
        if create:
            with db.transaction() as c:
                for statement in TABLES:
                    c.execute(statement)
                # One process has the file: sessions left live were a dead process's.
                c.execute("DELETE FROM registry.live")

    def admit(self, npsn: str, session: str, install: str, now_ms: int, caps: SessionCaps,
              lease_ms: int) -> str | None:
        with self.db.transaction():  # the writer alone writes: that is the exclusion
            return super().admit(npsn, session, install, now_ms, caps, lease_ms)

    def _query(self, sql: str, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            cur = self.db.con.execute(sql, params)
            return [d[0] for d in cur.description or []], cur.fetchall()
        except duckdb.Error as exc:
            raise failure(exc) from exc


TABLES = [
    "CREATE SCHEMA IF NOT EXISTS registry",
    """CREATE TABLE IF NOT EXISTS registry.school (
        npsn VARCHAR PRIMARY KEY, nama VARCHAR NOT NULL, kode_hash VARCHAR NOT NULL,
        generation INTEGER NOT NULL, created_ms BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS registry.account (
        npsn VARCHAR NOT NULL, email VARCHAR NOT NULL, role VARCHAR NOT NULL,
        password_hash VARCHAR NOT NULL, created_ms BIGINT NOT NULL,
        PRIMARY KEY (npsn, email))""",
    """CREATE TABLE IF NOT EXISTS registry.install (
        npsn VARCHAR NOT NULL, origin UUID NOT NULL, email VARCHAR NOT NULL,
        token_hash VARCHAR NOT NULL, generation INTEGER NOT NULL,
        revoked BOOLEAN NOT NULL, created_ms BIGINT NOT NULL, PRIMARY KEY (npsn, origin))""",
    """CREATE TABLE IF NOT EXISTS registry.session (
        session VARCHAR, npsn VARCHAR, install VARCHAR, mode VARCHAR,
        started_ms BIGINT, ended_ms BIGINT, outcome VARCHAR,
        events_in BIGINT, events_out BIGINT, bytes_in BIGINT, bytes_out BIGINT)""",
    *added_columns(),
    """CREATE TABLE IF NOT EXISTS registry.live (
        npsn VARCHAR, session VARCHAR, install VARCHAR, started_ms BIGINT NOT NULL,
        seen_ms BIGINT NOT NULL, PRIMARY KEY (npsn, session))""",
]
