"""Text and JSON renderings of what the commands print.

Functions here return strings and never print, so that the command line and
the demo share them and tests can read them.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import groupby
from typing import TYPE_CHECKING, Any

from selaras.engine.clocks import VersionVector
from selaras.engine.localtime import format_local
from selaras.engine.merge import Sibling
from selaras.engine.store import AppendReport

if TYPE_CHECKING:
    from selaras.engine.validation import Report

    from .changes import Changes, Counts
    from .install import BundleWarnings

NULL = "NULL"
Labeller = Callable[[str], str]


def to_json(obj: object) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=_plain)


def _plain(v: object) -> object:
    if isinstance(v, dt.date | dt.datetime | dt.time | uuid.UUID | decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return v.hex()
    raise TypeError(f"{type(v).__name__} is not JSON")


def cell(v: object) -> str:
    return NULL if v is None else str(v)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], indent: str = "") -> str:
    """A plain aligned text table (no box drawing: Windows consoles mangle it)."""
    text = [[cell(v).replace("\n", " ") for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return indent + "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in text)])


def short(origin: str) -> str:
    return origin[:8]


def vector_table(vector: VersionVector, label: Labeller) -> str:
    return table(["origin", "seq", "who"],
                 [(o, s, label(o)) for o, s in sorted(vector.items(), key=lambda i: label(i[0]))])


def counts_text(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    return "\n".join([table(["entity", "rows"], sorted(counts.items())),
                      f"{total} rows imported"])


def append_text(report: AppendReport) -> str:
    text = (f"{report.applied} events applied, {report.duplicates} duplicates, "
            f"{report.held_back} held back")
    if report.held_back:
        text += " (they wait for earlier events: import the bundles made before this one)"
    return text


def bundle_warnings(w: BundleWarnings) -> list[str]:
    """What the operator must know of an imported bundle, in their words."""
    lines = []
    if w.unchecked_centre_events:
        lines.append(f"{w.unchecked_centre_events} data pusat diterima tanpa diperiksa: "
                     "instalasi ini belum terdaftar di server pusat, jadi tidak punya kunci "
                     "untuk memeriksa tanda tangannya (diperiksa begitu terdaftar)")
    if w.clock_ahead_ms:
        lines.append(f"jam komputer pembuat bundel ini {w.clock_ahead_ms // 60_000} menit lebih "
                     "cepat dari jam komputer ini: periksa jam kedua komputer; server pusat "
                     "akan mengoreksinya saat sinkronisasi")
    return lines


def clock_behind(ms: int) -> str:
    return (f"jam komputer ini {max(1, ms // 60_000)} menit lebih lambat dari data yang sudah "
            "ada: perubahan ini tetap dicatat setelahnya, tetapi perbaiki jam komputer ini")


def report_json(report: AppendReport) -> dict[str, int]:
    return {"applied": report.applied, "duplicates": report.duplicates,
            "held_back": report.held_back}


# -- conflicts ----------------------------------------------------------------------------


def conflict_key(s: Sibling) -> tuple[str, str, str]:
    return (s.entity, s.row_id, s.field)


def conflicts_text(siblings: Sequence[Sibling], label: Labeller) -> str:
    if not siblings:
        return "no conflicts"
    blocks = []
    groups = groupby(sorted(siblings, key=conflict_key), key=conflict_key)
    for n, ((entity, row_id, field), group) in enumerate(groups, start=1):
        rows = [("*" if s.winner else "", _quoted(s.value), s.author, s.role,
                 f"{short(s.origin)} ({label(s.origin)})", s.seq) for s in group]
        blocks.append(f"{entity} {row_id} {field}\n"
                      + table(["wins", "value", "author", "role", "origin", "seq"], rows, "  "))
        last = n
    blocks.append(f"{last} conflicted field(s); settle one with "
                  "'selaras conflicts resolve ENTITY ROW_ID FIELD VALUE'")
    return "\n\n".join(blocks)


def conflicts_json(siblings: Sequence[Sibling], label: Labeller) -> list[dict[str, Any]]:
    out = []
    for (entity, row_id, field), group in groupby(sorted(siblings, key=conflict_key),
                                                  key=conflict_key):
        out.append({"entity": entity, "row_id": row_id, "field": field, "siblings": [
            {"value": s.value, "author": s.author, "role": s.role, "origin": s.origin,
             "who": label(s.origin), "seq": s.seq, "winner": s.winner} for s in group]})
    return out


def _quoted(v: object) -> str:
    return NULL if v is None else json.dumps(v, ensure_ascii=False)


# -- validation -----------------------------------------------------------------------------


SEVERITY = {"invalid": "Invalid", "warning": "Peringatan"}


def findings_text(report: Report) -> str:
    """Validasi Lokal as the operator reads it: per tab a heading with its counts (zero
    included), under it each finding: severity and the row's name, then the field's form
    label, the message, the detail and the rule. No UUIDs: rows are named for people."""
    by_tab: dict[str, list[Mapping[str, Any]]] = {t.tab: [] for t in report.tabs}
    for finding in report.findings:
        by_tab.setdefault(finding["tab"], []).append(finding)
    lines = []
    for t in report.tabs:
        lines.append(f"{t.tab}: {t.invalid} invalid, {t.warnings} peringatan")
        for f in sorted(by_tab[t.tab], key=_finding_order):
            field = f"{f['label']}: " if f.get("label") else ""
            detail = f" ({f['detail']})" if f.get("detail") else ""
            lines += [f"  {SEVERITY.get(f['severity'], f['severity'])}: {f['nama']}",
                      f"    {field}{f['message']}{detail} [{f['rule_id']}]"]
        if by_tab[t.tab]:
            lines.append("")
    if len(report.tabs) > 1:  # the verdict on the sync needs every tab
        lines += [""] if lines[-1] else []
        lines.append(f"Validasi Lokal: {findings_summary(report.findings)}")
    return "\n".join(lines).rstrip("\n")


def _finding_order(f: Mapping[str, Any]) -> tuple[int, str, str]:
    return (0 if f["severity"] == "invalid" else 1, f["rule_id"], f.get("nama") or "")


def findings_summary(findings: Sequence[Mapping[str, Any]]) -> str:
    """The counts and what they mean for the principal's sync, in the operator's words."""
    invalid = sum(f["severity"] == "invalid" for f in findings)
    warnings = len(findings) - invalid
    verdict = ("sinkronisasi diblokir sampai data invalid diperbaiki" if invalid
               else "sinkronisasi boleh dilakukan")
    return f"{invalid} invalid, {warnings} peringatan: {verdict}"


# -- checksums --------------------------------------------------------------------------------


def checksums_side_by_side(names: tuple[str, str], ours: Mapping[str, str],
                           theirs: Mapping[str, str]) -> str:
    """Two installs' per-entity digests in two columns, and whether each pair is equal."""
    rows = [(e, ours.get(e, NULL), theirs.get(e, NULL),
             "equal" if ours.get(e) == theirs.get(e) else "DIFFERENT")
            for e in sorted(ours.keys() | theirs.keys())]
    return table(["entity", *names, ""], rows)


def sync_text(r: Mapping[str, Any]) -> str:
    """The end-of-sync summary: per entity, what came and went, and the final check."""
    names = sorted(set(r["received"]) | set(r["sent"]))
    rows = []
    for n in names:
        got, sent = r["received"].get(n, {}), r["sent"].get(n, {})
        rows.append((n, got.get("events", 0), got.get("added", 0), got.get("updated", 0),
                     got.get("deleted", 0), got.get("conflicts", 0), sent.get("events", 0),
                     sent.get("neutralised", 0)))
    lines = []
    if r.get("clock_warning"):
        lines.append(r["clock_warning"])
    if rows:
        lines.append(table(["entity", "received", "added", "updated", "deleted", "conflicts",
                            "sent", "neutralised"], rows))
    else:
        lines.append("nothing to send or receive")
    lines.append(f"{r['mode']}: {r['events_up']} events sent ({r['bytes_up']} bytes), "
                 f"{r['events_down']} received ({r['bytes_down']} bytes) in "
                 f"{r['attempts']} attempt(s), {r['busy_retries']} busy retr(ies)")
    if r.get("repaired"):
        found = ", ".join(f"{e} {len(ids)}" for e, ids in sorted(r["repaired"].items()) if ids)
        lines.append(f"check: baris yang berbeda dari server pusat ({found}) dihitung ulang "
                     "dari log dan kini sama")
    if r.get("vectors_equal"):
        lines.append("check: vectors equal, checksums equal (data sama dengan server pusat)")
    elif r.get("note"):
        lines.append(f"check: {r['note']}")
    return "\n".join(lines)


def reregister_text(reissued: int, kept: int, dropped: Mapping[str, int], backup: object) -> str:
    lines = [f"re-issued {reissued} change{'s' if reissued != 1 else ''} of this folder that "
             "the centre lacked, as this install's: run 'selaras sync' to send them"]
    if kept:
        lines.append(f"kept {kept} changes of other installs that the centre lacks")
    for origin, n in sorted(dropped.items()):
        lines.append(f"left out {n} changes of install {short(origin)}: they differ from the "
                     "centre's copy of that install")
    lines.append(f"the previous data is kept in {backup}")
    return "\n".join(lines)


# -- the connection to the centre ---------------------------------------------------------------


def retrying_text(attempt: int, delay_s: float, reason: str) -> str:
    """A sync that waits before its next attempt, as the operator reads it meanwhile."""
    return (f"Mencoba lagi (percobaan {attempt}) dalam {max(1, round(delay_s))} detik: "
            f"{reason}")


def check_failed_text(message: str, timeout_s: float) -> str:
    """The check before a sync failed for a reason retrying may mend: the sync goes on."""
    return f"{message}; sinkronisasi tetap dicoba sampai {timeout_s:g} detik"


# -- pending changes (client/changes.py) ---------------------------------------------------------

CHANGE_WORDS = {"added": "Ditambah", "updated": "Diubah", "deleted": "Dihapus"}


def change_counts_text(counts: Counts) -> str:
    return f"{counts.added} ditambah, {counts.updated} diubah, {counts.deleted} dihapus"


def changes_text(changes: Changes) -> str:
    """``selaras changes`` as the operator reads it: since when, per PC, then per tab and
    table its counts and the rows (named for people, never by UUID), each with what
    happened, the fields changed (form labels), who changed it and when (school time)."""
    since = ("sejak sinkronisasi terakhir "
             f"({format_local(changes.synced_ms, changes.zone)})" if changes.synced_ms
             else "(instalasi ini belum pernah sinkronisasi dengan server pusat)")
    where = f" di tab {changes.tab}" if changes.tab else ""
    if not changes.counts.total:
        return f"Tidak ada perubahan belum terkirim{where} {since}"
    lines = [f"Perubahan belum terkirim{where} {since}: {changes.counts.total} data, "
             f"{change_counts_text(changes.counts)}",
             "Dibuat oleh: " + ", ".join(f"{pc.text()} {n} data" for pc, n in changes.pcs)]
    for tab in changes.tabs:
        lines += ["", f"Tab {tab.tab}: {change_counts_text(tab.counts)}"]
        for t in tab.tables:
            lines.append(f"  {t.label}: {change_counts_text(t.counts)}")
            for r in t.rows:
                fields = f": {', '.join(r.labels)}" if r.change == "updated" else ""
                by = _and([pc.text() for pc in r.by])
                lines.append(f"    {CHANGE_WORDS[r.change]}: {r.nama}{fields}; oleh {by}, "
                             f"{format_local(r.changed_ms, changes.zone)}")
            if t.more and t.rows:
                lines.append(f"    ... dan {t.more} lainnya")
    return "\n".join(lines)


def _and(items: Sequence[str]) -> str:
    """"a", "a dan b", "a, b dan c"."""
    return " dan ".join(filter(None, [", ".join(items[:-1]), *items[-1:]]))
