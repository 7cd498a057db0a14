"""Validasi Pusat at the centre: its findings kept as the schools' own rows.

After a school's push commits (a sync, a bundle through the dinas, a transfer),
``after_change`` runs the central rules (engine/validasi_pusat.py) for that
school, and for every school its findings or its earlier ones name: a NIK at two
schools is a finding at both, and clears at both when one of them fixes it. Each
school's findings are its ``validasi_pusat`` rows, one per (rule, row), written
and cleared (soft_delete = 1) as centre events by source "Validasi Pusat": they
come down with the school's next sync or Tarik Data and show in its Validasi
Lokal, marked. Only what changed is written (in one append per school), and only
the rules that read what the push changed are run (a push of grades runs none).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from selaras.engine.events import centre_origin, stable_row_id
from selaras.engine.schema import VALIDASI_PUSAT, entity
from selaras.engine.store import CentreStore, centre_events
from selaras.engine.validasi_pusat import RULES, CentralRule, rules_reading
from selaras.engine.values import parse

SOURCE = "Validasi Pusat"
KEPT = ("rule_id", "severity", "entity", "row_ref", "field", "message", "detail",
        "sekolah_lain")


@dataclass
class Changed:
    """Per school, the findings raised (new or changed) and cleared."""

    raised: dict[str, int] = field(default_factory=dict)
    cleared: dict[str, int] = field(default_factory=dict)


def after_change(centre: CentreStore, npsn: str, now_ms: int,
                 changed_entities: Collection[str] | None = None) -> Changed:
    """Bring the findings of ``npsn``, and of the schools they involve, up to date after a
    change of ``changed_entities`` there (None: of anything)."""
    changed = Changed()
    rules = rules_reading(changed_entities)
    if not rules:
        return changed
    ids = {r.id for r in rules}
    with centre.transaction():
        findings = {npsn: centre.central_findings(npsn, rules)}
        others = {str(f["sekolah_lain"]) for f in findings[npsn] if f["sekolah_lain"]}
        others |= {str(row["sekolah_lain"]) for _, _, row in current(centre, npsn)
                   if row.get("sekolah_lain") and row["rule_id"] in ids}
        others |= {school for school, _, row in centre.people(VALIDASI_PUSAT, "sekolah_lain",
                                                               npsn) if row["rule_id"] in ids}
        for school in sorted(others - {npsn}):
            findings[school] = centre.central_findings(school, rules)
        for school, found in findings.items():
            raised, cleared = _write(centre, school, rules, found, now_ms)
            if raised:
                changed.raised[school] = raised
            if cleared:
                changed.cleared[school] = cleared
    return changed


def run_all(centre: CentreStore, schools: Iterable[str], now_ms: int) -> Changed:
    """Every rule at each of ``schools`` (after a rule changes, or as a nightly check), one
    transaction per school: a school's rows are read while nothing else writes them."""
    changed = Changed()
    for npsn in schools:
        with centre.transaction():
            raised, cleared = _write(centre, npsn, RULES, centre.central_findings(npsn), now_ms)
        if raised:
            changed.raised[npsn] = raised
        if cleared:
            changed.cleared[npsn] = cleared
    return changed


def current(centre: CentreStore, npsn: str) -> list[tuple[str, str, dict[str, object]]]:
    """The school's live findings: (npsn, row id, row), by rule then row."""
    rows = [(npsn, row_id, row) for row_id, row in centre.school(npsn).rows(VALIDASI_PUSAT).items()
            if not row.get("soft_delete")]
    return sorted(rows, key=lambda r: (str(r[2]["rule_id"]), str(r[2]["row_ref"])))


def _write(centre: CentreStore, npsn: str, rules: Collection[CentralRule],
           found: list[dict[str, object]], now_ms: int) -> tuple[int, int]:
    """Write school ``npsn``'s findings of ``rules``: ``found`` raised, the rest cleared."""
    store = centre.school(npsn)
    ids = {r.id for r in rules}
    held = {row_id: row for row_id, row in store.rows(VALIDASI_PUSAT).items()
            if row.get("rule_id") in ids}
    wanted = {stable_row_id(VALIDASI_PUSAT, f["rule_id"], f["row_ref"]): f for f in found}
    writes: list[tuple[str, dict[str, object]]] = []
    for row_id, f in wanted.items():
        row = held.get(row_id) or {}
        fields = {k: f[k] for k in KEPT}
        if row.get("soft_delete") or any(_text(row.get(k)) != _text(v)
                                         for k, v in fields.items()):
            writes.append((row_id, {**fields, "soft_delete": 0}))
    raised = len(writes)
    writes += [(row_id, {"soft_delete": 1}) for row_id, row in held.items()
               if row_id not in wanted and not row.get("soft_delete")]
    e = entity(VALIDASI_PUSAT)
    if writes:
        centre.append_centre(npsn, centre_events(
            store, centre_origin(npsn),
            [(VALIDASI_PUSAT, row_id, {k: parse(e, e.by_name[k], v) for k, v in fields.items()})
             for row_id, fields in writes], now_ms, SOURCE))
    return raised, len(writes) - raised


def _text(value: object) -> str:
    return "" if value is None else str(value)
