"""Pending changes: what changed since the last acknowledged sync, as a service.

``selaras changes`` and (later) the local web app call ``pending_changes``;
the Lembar Konfirmasi can take its per-tab counts from ``tab_counts``. Both
return plain data: rows are named for people (engine/labels.py), fields by
their form labels; the text is client/output.py's ``changes_text``.

What is pending (the issue's definition):

- this install's own events with a seq above the meta's ``acked_seq`` (the top
  of its own events the centre acknowledged);
- the events of the school's other PCs this install holds that the centre did
  not have at this install's last successful sync: above ``centre_vector``, the
  centre's vector that client/sync.py keeps when a session ends with a Summary.
  Without it (never synced, an offline install) all of them;
- never the centre's events (its own, and Referensi's).

Per row changed: added (its first event is pending), deleted (a pending event
set soft_delete to 1), else updated, with the fields set; and every PC that
touched it. Counted in SQL by the store (``InstallStore.pending_changes``);
only the rows listed are named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from selaras.engine.clocks import VersionVector, hlc_ms
from selaras.engine.labels import entity_label, label
from selaras.engine.localtime import Zone, iso_local, school_zone
from selaras.engine.schema import BY_NAME, ENTITIES, TABS

from .install import ACKED_SEQ, ClientError, Session

CENTRE_VECTOR = "centre_vector"  # meta: the centre's vector when the last sync session ended
CENTRE_VECTOR_MS = "centre_vector_ms"  # meta: and when that was (epoch ms)
DEFAULT_LIMIT = 20  # rows listed per table
# Tabs that may hold pending changes (Referensi is written by the centre alone).
CHANGE_TABS = tuple(t for t in TABS if t != "Referensi")

Change = Literal["added", "updated", "deleted"]


@dataclass(frozen=True)
class Counts:
    """Rows changed: each row counted once, as added, updated or deleted."""

    added: int = 0
    updated: int = 0
    deleted: int = 0

    @property
    def total(self) -> int:
        return self.added + self.updated + self.deleted

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.added + other.added, self.updated + other.updated,
                      self.deleted + other.deleted)

    def as_json(self) -> dict[str, int]:
        return {"added": self.added, "updated": self.updated, "deleted": self.deleted}


@dataclass(frozen=True)
class Pc:
    """A PC (an install's origin) that made changes."""

    origin: str
    author: str  # the account on its latest pending event (the centre stamps it)
    this_pc: bool

    def text(self) -> str:
        """"PC ini", or the account and a short origin: "op@sekolah.id (PC 1a2b3c4d)"."""
        if self.this_pc:
            return "PC ini"
        return f"{self.author} (PC {self.origin[:8]})" if self.author else f"PC {self.origin[:8]}"


@dataclass(frozen=True)
class ChangedRow:
    entity: str
    row_id: str  # for machines (--json); people read ``nama``
    nama: str  # the row's name (engine/labels.py)
    change: Change
    fields: tuple[str, ...]  # the fields the pending events set (schema names)
    labels: tuple[str, ...]  # their form labels
    by: tuple[Pc, ...]  # every PC whose pending events touched the row
    changed_ms: int  # its latest pending event's clock


@dataclass(frozen=True)
class TableChanges:
    """One table's pending changes: its counts and up to ``limit`` rows."""

    entity: str
    label: str  # the table's name for people ("Peserta Didik")
    counts: Counts
    events: int
    rows: tuple[ChangedRow, ...]

    @property
    def more(self) -> int:
        """Changed rows not listed."""
        return self.counts.total - len(self.rows)


@dataclass(frozen=True)
class TabChanges:
    tab: str
    tables: tuple[TableChanges, ...]

    @property
    def counts(self) -> Counts:
        return sum((t.counts for t in self.tables), Counts())


@dataclass(frozen=True)
class Changes:
    """What changed since the last acknowledged sync, per Dapodik tab (TABS order) and
    table (schema order); only tabs and tables with changes."""

    tabs: tuple[TabChanges, ...]
    pcs: tuple[tuple[Pc, int], ...]  # every PC with pending changes, and the rows it touched
    synced_ms: int | None  # when the last sync session ended; None: never synced
    zone: Zone  # the school's, for the times shown
    tab: str | None = None  # the one tab asked for; None: every tab

    @property
    def counts(self) -> Counts:
        return sum((t.counts for t in self.tabs), Counts())

    def per_tab(self) -> dict[str, Counts]:
        """Every tab that may change (CHANGE_TABS) and its counts, zero included."""
        found = {t.tab: t.counts for t in self.tabs}
        return {tab: found.get(tab, Counts()) for tab in CHANGE_TABS}

    def as_json(self) -> dict[str, Any]:
        def local(ms: int | None) -> str | None:
            return None if ms is None else iso_local(ms, self.zone)

        def pc(p: Pc) -> dict[str, Any]:
            return {"origin": p.origin, "author": p.author, "this_pc": p.this_pc,
                    "text": p.text()}

        return {
            "tab": self.tab, "synced": local(self.synced_ms), "zone": self.zone.name,
            **self.counts.as_json(),
            "pcs": [pc(p) | {"rows": n} for p, n in self.pcs],
            "tabs": [{"tab": tab.tab, **tab.counts.as_json(), "tables": [
                {"entity": t.entity, "label": t.label, **t.counts.as_json(),
                 "events": t.events, "more": t.more, "rows": [
                     {"row_id": r.row_id, "nama": r.nama, "change": r.change,
                      "fields": list(r.fields), "labels": list(r.labels),
                      "by": [pc(p) for p in r.by], "changed": local(r.changed_ms)}
                     for r in t.rows]}
                for t in tab.tables]} for tab in self.tabs],
        }


def pending_after(session: Session) -> VersionVector:
    """Per origin, the seq above which its events are pending (module docstring)."""
    return _after(session.store.meta(), session.identity.origin)


def _after(meta: dict[str, str], me: str) -> VersionVector:
    try:
        after: VersionVector = {str(o): int(s) for o, s in
                                json.loads(meta.get(CENTRE_VECTOR) or "{}").items()}
    except (ValueError, AttributeError):
        after = {}  # a damaged key: count everything as pending rather than hide it
    after[me] = int(meta.get(ACKED_SEQ) or 0)
    return after


def pending_changes(session: Session, limit: int = DEFAULT_LIMIT,
                    tab: str | None = None) -> Changes:
    """What changed since the last acknowledged sync (of one tab, or all), with up to
    ``limit`` rows listed per table. ClientError for a tab that is not one."""
    if tab is not None and tab not in CHANGE_TABS:
        raise ClientError(f"Tab {tab} tidak dikenal; yang dikenal: {', '.join(CHANGE_TABS)}")
    me, meta = session.identity.origin, session.store.meta()
    names = None if tab is None else [e.name for e in ENTITIES if e.tab == tab]
    found = session.store.pending_changes(_after(meta, me), max(0, limit), names)
    authors: dict[str, tuple[int, str]] = {}  # per origin: its latest pending event's author
    touched: dict[str, int] = {}
    for table in found:
        for origin, o in table["origins"].items():
            authors[origin] = max(authors.get(origin, (0, "")), (o["seq"], o["author"]))
            touched[origin] = touched.get(origin, 0) + o["rows"]

    def pc(origin: str) -> Pc:
        return Pc(origin, authors.get(origin, (0, ""))[1], origin == me)

    tables: dict[str, list[TableChanges]] = {}
    for table in found:
        entity = table["entity"]
        rows = tuple(ChangedRow(
            entity, r["row_id"], r["nama"], r["change"], tuple(r["fields"]),
            tuple(label(entity, f) for f in r["fields"]),
            tuple(sorted((pc(o) for o in r["origins"]), key=_pc_order)), hlc_ms(r["hlc"]))
            for r in table["rows"])
        tables.setdefault(BY_NAME[entity].tab, []).append(TableChanges(
            entity, entity_label(entity),
            Counts(table["added"], table["updated"], table["deleted"]), table["events"], rows))
    tabs = tuple(TabChanges(t, tuple(tables[t])) for t in TABS if t in tables)
    pcs = tuple(sorted(((pc(o), n) for o, n in touched.items()), key=lambda p: _pc_order(p[0])))
    synced = meta.get(CENTRE_VECTOR_MS)
    return Changes(tabs, pcs, int(synced) if synced else None,
                   school_zone(session.store, session.identity.sekolah_id), tab)


def tab_counts(session: Session) -> dict[str, Counts]:
    """Per tab that may change (CHANGE_TABS, zero included), the rows added, updated and
    deleted since the last acknowledged sync: for the Lembar Konfirmasi."""
    return pending_changes(session, limit=0).per_tab()


def _pc_order(p: Pc) -> tuple[bool, str, str]:
    return (not p.this_pc, p.author, p.origin)


def centre_vector_meta(vector: VersionVector, now_ms: int) -> dict[str, str]:
    """The meta a sync session that ended with the centre's ``vector`` keeps (client/sync.py):
    other PCs' events above it are pending."""
    return {CENTRE_VECTOR: json.dumps(dict(sorted(vector.items()))),
            CENTRE_VECTOR_MS: str(now_ms)}
