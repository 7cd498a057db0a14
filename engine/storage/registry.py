"""The centre's registry: schools, accounts, installs and sessions (``DuckDBRegistry``).

In schema ``registry`` of the centre's file, beside the schools' data. Only SQL
lives here: hashing, secrets and the rules of registration are
server/credentials.py's and server/app.py's. Times come in as milliseconds
since the epoch (the caller owns the clock).
"""

from __future__ import annotations

from typing import Any

from ..store import RegistryError
from .database import Database


class DuckDBRegistry:
    """The centre's registry on a connection of the centre's file (its writer's or a cursor).

    Its changes join the transaction open on ``db``, if any (a school added with
    its first events is one transaction).
    """

    def __init__(self, db: Database, *, create: bool = True) -> None:
        self.db, self.con = db, db.con
        if create:
            with self.db.transaction():
                self._create()

    def _create(self) -> None:
        c = self.con
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


