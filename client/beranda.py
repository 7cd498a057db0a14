"""The Beranda (home screen) of an install, as a service: ``selaras status`` calls it.

One look at where the school stands: the school, the working semester, who is
logged in (client/semester.py) and whether the principal's session is open
(client/principal.py), the centre, the last successful sync and the last Tarik
Data (the install's sync history), the changes not yet sent (client/changes.py),
Validasi Lokal's counts (engine/validation.py: the rules run) and the fields in
conflict. ``beranda`` returns plain data; the text is client/output.py's
``beranda_text``; times are the school's (engine/localtime.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from selaras.engine import validation
from selaras.engine.localtime import Zone, iso_local, school_zone

from . import principal
from .changes import Counts, tab_counts
from .install import Session
from .semester import Login, Semester, logged_in, working_semester

HISTORY_LIMIT = 500  # sync sessions read back for the last good sync and pull


@dataclass(frozen=True)
class LastSession:
    """A sync session of the history: ``mode`` sync or pull, how it ended and when."""

    mode: str
    outcome: str  # "ok", "busy", "timeout", "disconnected", "refused:CODE", ...
    ended_ms: int


@dataclass(frozen=True)
class PrincipalOpen:
    """The principal's open session (Tukar Pengguna)."""

    user: str
    nama: str
    until_ms: int


@dataclass(frozen=True)
class Beranda:
    npsn: str
    school: str  # the sekolah row's nama; "" before the school's data has come
    zone: Zone
    server: str | None  # the centre's URL; None for an offline install
    semester: Semester | None  # the working semester
    login: Login | None  # the operator's session
    principal: PrincipalOpen | None
    last_sync: LastSession | None  # the last sync that ended well
    last_pull: LastSession | None  # the last Tarik Data that ended well
    last_failed: LastSession | None  # the latest session, when it did not end well
    pending: dict[str, Counts]  # per tab that may change (zero included)
    invalid: int
    warnings: int
    conflicts: int  # fields in conflict: (entity, row, field)

    @property
    def pending_total(self) -> Counts:
        return sum(self.pending.values(), Counts())

    def as_json(self) -> dict[str, Any]:
        def local(ms: int | None) -> str | None:
            return None if ms is None else iso_local(ms, self.zone)

        def session(s: LastSession | None) -> dict[str, Any] | None:
            return None if s is None else {"mode": s.mode, "outcome": s.outcome,
                                           "ended": local(s.ended_ms)}

        return {
            "npsn": self.npsn, "school": self.school, "zone": self.zone.name,
            "server": self.server,
            "semester": None if self.semester is None else self.semester.as_json(),
            "login": None if self.login is None else {
                "user": self.login.user, "nama": self.login.nama, "peran": self.login.peran,
                "semester_id": self.login.semester.semester_id,
                "since": local(self.login.since_ms)},
            "principal": None if self.principal is None else {
                "user": self.principal.user, "nama": self.principal.nama,
                "until": local(self.principal.until_ms)},
            "last_sync": session(self.last_sync), "last_pull": session(self.last_pull),
            "last_failed": session(self.last_failed),
            "pending": {"total": self.pending_total.total, **self.pending_total.as_json(),
                        "tabs": {t: c.as_json() for t, c in self.pending.items()}},
            "invalid": self.invalid, "warnings": self.warnings, "conflicts": self.conflicts,
        }


def beranda(session: Session) -> Beranda:
    """Where the install stands now. Runs Validasi Lokal (it keeps the findings)."""
    store, me = session.store, session.identity
    school = store.rows("sekolah").get(me.sekolah_id) or {}
    opened = principal.principal_session(session)
    last_sync, last_pull, last_failed = last_sessions(store.history(HISTORY_LIMIT))
    report = validation.validate(store)
    return Beranda(
        npsn=me.npsn, school=str(school.get("nama") or ""),
        zone=school_zone(store, me.sekolah_id),
        server=store.meta().get("url") or None, semester=working_semester(session),
        login=logged_in(session),
        principal=None if opened is None else PrincipalOpen(
            str(opened["user"]), str(opened.get("nama") or ""), int(opened["until_ms"])),
        last_sync=last_sync, last_pull=last_pull, last_failed=last_failed,
        pending=tab_counts(session), invalid=report.invalid, warnings=report.warnings,
        conflicts=len({(s.entity, s.row_id, s.field) for s in store.conflicts()}))


def last_sessions(history: list[dict[str, Any]],
                  ) -> tuple[LastSession | None, LastSession | None, LastSession | None]:
    """From the history (newest first): the last good sync, the last good pull, and the
    latest session if it did not end well (a failure since the last good one)."""
    sessions = [LastSession(str(h.get("mode")), str(h.get("outcome")), _ms(h))
                for h in history if h.get("ended") or h.get("started")]
    sessions.sort(key=lambda s: s.ended_ms, reverse=True)
    good = [s for s in sessions if s.outcome == "ok"]
    sync = next((s for s in good if s.mode == "sync"), None)
    pull = next((s for s in good if s.mode == "pull"), None)
    failed = sessions[0] if sessions and sessions[0].outcome != "ok" else None
    return sync, pull, failed


def _ms(record: dict[str, Any]) -> int:
    at = record.get("ended") or record.get("started")
    assert isinstance(at, dt.datetime)
    if at.tzinfo is None:  # the history keeps TIMESTAMPTZ; a naive one is UTC
        at = at.replace(tzinfo=dt.UTC)
    return int(at.timestamp() * 1000)
