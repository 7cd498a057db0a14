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
from selaras.engine.labels import entity_label
from selaras.engine.localtime import format_local
from selaras.engine.merge import Sibling
from selaras.engine.protocol import MODE_WORDS
from selaras.engine.store import AppendReport
from selaras.engine.validation import CENTRAL

if TYPE_CHECKING:
    from selaras.engine.validation import Report

    from .beranda import Beranda, LastSession
    from .changes import Changes, Counts
    from .install import BundleWarnings
    from .semester import CopyForward, Login, Semesters

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
            rule = (f"{f['rule_id']}, Validasi Pusat" if f.get("source") == CENTRAL
                    else f["rule_id"])
            lines += [f"  {SEVERITY.get(f['severity'], f['severity'])}: {f['nama']}",
                      f"    {field}{f['message']}{detail} [{rule}]"]
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
    central = sum(f["severity"] == "invalid" and f.get("source") == CENTRAL for f in findings)
    verdict = ("sinkronisasi diblokir sampai data invalid diperbaiki" if invalid > central
               else "sinkronisasi boleh dilakukan")
    if central:
        verdict += (f"; {central} invalid dari Validasi Pusat: perbaiki, lalu sinkronisasi "
                    "(diperiksa ulang di server pusat)")
    return f"{invalid} invalid, {warnings} peringatan: {verdict}"


# -- checksums --------------------------------------------------------------------------------


def checksums_side_by_side(names: tuple[str, str], ours: Mapping[str, str],
                           theirs: Mapping[str, str]) -> str:
    """Two installs' per-entity digests in two columns, and whether each pair is equal."""
    rows = [(e, ours.get(e, NULL), theirs.get(e, NULL),
             "equal" if ours.get(e) == theirs.get(e) else "DIFFERENT")
            for e in sorted(ours.keys() | theirs.keys())]
    return table(["entity", *names, ""], rows)


# -- the sync's summary (client/sync.py's SyncReport.as_json) ---------------------------------

TABLES_LISTED = 10  # tables the summary lists one per line; the rest in one line


def number(n: int) -> str:
    """A count as Indonesian write it: 3.128."""
    return f"{n:,}".replace(",", ".")


def size(n: float) -> str:
    """Bytes as Indonesian read them: 512 B, 12,3 KB, 1,2 MB."""
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}".replace(".", ",")
        n /= 1024
    return f"{n:.1f} GB".replace(".", ",")


def per_table(counts: Mapping[str, int], most: int | None = None) -> str:
    """"Nilai 1.628, Peserta Didik 1.500": the tables as people call them, most first;
    past ``most`` of them, the rest as "lainnya"."""
    shown = sorted(((entity_label(e), n) for e, n in counts.items() if n),
                   key=lambda t: (-t[1], t[0]))
    words = [f"{name} {number(n)}" for name, n in shown[:most]]
    if rest := sum(n for _, n in shown[len(words):]):
        words.append(f"lainnya {number(rest)}")
    return ", ".join(words)


def sync_text(r: Mapping[str, Any]) -> str:
    """The end-of-sync summary, in the operator's words: what the centre acknowledged,
    what came down and from whom (the centre, or the school's other PCs), per table what
    it did, the conflicts it made or settled (counted as fields, never negative), what
    the centre's rules or refusals left out, and the final check."""
    lines = []
    if r.get("clock_warning"):
        lines.append(r["clock_warning"])
    acked = r.get("acknowledged") or {}
    if sum(acked.values()):
        lines.append(f"Terkirim dan diterima server pusat: {number(sum(acked.values()))} "
                     f"perubahan ({per_table(acked)})")
    received = {n: c for n, c in r["received"].items() if c.get("events")}
    if received:
        total = sum(c["events"] for c in received.values())
        lines.append(f"Diterima: {number(total)} perubahan{_sources(r.get('received_from'))}")
        ranked = sorted(received.items(), key=lambda i: (-i[1]["events"], entity_label(i[0])))
        for name, c in ranked[:TABLES_LISTED]:
            done = [f"{number(c[k])} {w}" for k, w in (("added", "ditambah"),
                    ("updated", "diubah"), ("deleted", "dihapus")) if c.get(k)]
            lines.append(f"  {entity_label(name)}: {number(c['events'])} perubahan"
                         + (f" ({', '.join(done)})" if done else ""))
        if rest := ranked[TABLES_LISTED:]:
            lines.append(f"  Tabel lainnya ({number(len(rest))}): "
                         f"{number(sum(c['events'] for _, c in rest))} perubahan")
    if not acked and not received:
        lines.append("Tidak ada perubahan untuk dikirim atau diterima")
    new = r.get("conflicts_new")
    if new is None:  # a report of an older version: per entity, in "received"
        new = {n: c["conflicts"] for n, c in r["received"].items() if c.get("conflicts", 0) > 0}
    if sum(new.values()):
        lines.append(f"Konflik baru: {number(sum(new.values()))} kolom ({per_table(new)}); "
                     "lihat dan selesaikan dengan 'selaras conflicts'")
    settled = r.get("conflicts_resolved") or {}
    if sum(settled.values()):
        lines.append(f"Konflik terselesaikan: {number(sum(settled.values()))} kolom "
                     f"({per_table(settled)})")
    neutralised = {n: c["neutralised"] for n, c in r["sent"].items() if c.get("neutralised")}
    if neutralised:
        lines.append(f"Tidak berlaku menurut aturan server pusat: "
                     f"{number(sum(neutralised.values()))} perubahan ({per_table(neutralised)}): "
                     "kolom yang hanya boleh diubah pusat atau Verval, atau bertanggal jauh "
                     "di depan jam server pusat")
    lines += _refusals(r.get("refusals") or [])
    if r.get("repaired"):
        found = per_table({e: len(ids) for e, ids in r["repaired"].items()})
        lines.append(f"Data yang berbeda dari server pusat ({found}) dihitung ulang dari "
                     "riwayat perubahan dan kini sama")
    lines.append(f"{MODE_WORDS.get(r['mode'], r['mode'])} selesai dalam "
                 f"{number(r['attempts'])} percobaan; dikirim {size(r['bytes_up'])}, "
                 f"diterima {size(r['bytes_down'])}")
    if r.get("vectors_equal") and r.get("checksums_equal") is not False:
        lines.append("Data sama dengan server pusat")
    elif r.get("note"):
        lines.append(_capital(r["note"]))
    return "\n".join(lines)


def _sources(received_from: Mapping[str, Any] | None) -> str:
    """": 12 dari server pusat, 5 dari PC lain sekolah ini (op2@sekolah.id)"."""
    if not received_from:
        return ""
    parts = []
    if received_from.get("centre"):
        sources = received_from.get("centre_sources") or {}
        by = ", ".join(f"{s} {number(n)}" for s, n in sources.items())
        parts.append(f"{number(received_from['centre'])} dari server pusat"
                     + (f" ({by})" if by else ""))
    pcs = received_from.get("pcs") or {}
    if pcs:
        n = sum(pc["events"] for pc in pcs.values())
        who = sorted({a for pc in pcs.values() for a in pc.get("authors", [])})
        many = f"{len(pcs)} " if len(pcs) > 1 else ""
        parts.append(f"{number(n)} dari {many}PC lain sekolah ini"
                     + (f" ({', '.join(who)})" if who else ""))
    return f": {', '.join(parts)}" if parts else ""


def _refusals(refusals: Sequence[Mapping[str, str]]) -> list[str]:
    """The centre's refusals a retry got past, once per reason, with how often."""
    by_code: dict[str, list[str]] = {}
    for refusal in refusals:
        by_code.setdefault(refusal["code"], []).append(refusal["message"])
    return [f"Sempat ditolak server pusat, lalu dicoba lagi: {messages[-1]}"
            + (f" ({len(messages)} kali)" if len(messages) > 1 else "")
            for messages in by_code.values()]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


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


# -- the working semester and the Beranda (client/semester.py, client/beranda.py) ----------------


def login_text(login: Login) -> str:
    return f"Masuk sebagai {login.who}, semester {login.semester.label}"


def semesters_text(found: Semesters) -> str:
    """``selaras semester show``: the working semester, then every semester of Referensi
    with its dates and the rows it holds."""
    from selaras.engine.labels import entity_label

    how = ("dipilih saat login" if found.chosen_at_login
           else "semester berjalan; pilih yang lain dengan 'selaras login --semester'")
    lines = [f"Semester kerja: {found.working.label} ({how})" if found.working
             else "Semester kerja: belum ada (Referensi belum berisi semester: lakukan "
                  "Tarik Data)", "Semester di Referensi:"]
    for s in found.semesters:
        dates = (f", {_date(s.semester.mulai)} s.d. {_date(s.semester.selesai)}"
                 if s.semester.mulai and s.semester.selesai else "")
        held = (", ".join(f"{entity_label(e)} {n}" for e, n in s.rows.items())
                if s.rows else "belum ada data")
        mark = " [semester kerja]" if s.working else ""
        lines.append(f"  {s.semester.label}{mark}{dates}: {held}")
    return "\n".join(lines)


def _date(iso: str | None) -> str:
    """'2023-07-17' as the school reads it: 17-07-2023."""
    return "-".join(reversed((iso or "").split("-")))


def copy_forward_text(done: CopyForward) -> str:
    from selaras.engine.labels import entity_label

    head = f"Salin ke semester berikutnya: {done.source.label} ke {done.target.label}"
    if not done.total:
        lines = [f"{head}: tidak ada yang disalin (semua sudah ada di semester tujuan)"]
    else:
        lines = [f"{head}: {done.total} data disalin"]
        lines += [f"  {entity_label(e)}: {n} disalin" for e, n in done.copied.items()]
    lines += [f"  {entity_label(e)}: {n} sudah ada, dibiarkan" for e, n in done.present.items()]
    if done.not_registered:
        lines.append(f"  Data periodik {done.not_registered} peserta didik tidak disalin: "
                     "tidak terdaftar di sekolah pada semester tujuan")
    if done.rombel and done.copied.get("rombongan_belajar"):
        lines.append("  Rombel disalin tanpa anggota: isi anggota rombel dan pembelajaran "
                     "semester baru")
    if done.total:
        lines.append("Salinan ini perubahan instalasi ini: terkirim saat sinkronisasi")
    return "\n".join(lines)


OUTCOME_WORDS = {"busy": "server pusat sibuk", "timeout": "waktu habis",
                 "disconnected": "koneksi terputus",
                 "diverged": "data berbeda dari server pusat"}


def outcome_text(outcome: str) -> str:
    """A sync session's outcome (the history's) in the operator's words."""
    if outcome.startswith("refused:"):
        return f"ditolak server pusat ({outcome.partition(':')[2]})"
    return OUTCOME_WORDS.get(outcome, outcome)


def beranda_text(b: Beranda) -> str:
    """``selaras status``: the Beranda, one line per fact, in school time, no UUIDs."""

    def when(s: LastSession | None) -> str:
        return "belum pernah" if s is None else format_local(s.ended_ms, b.zone)

    school = f"{b.school} (NPSN {b.npsn})" if b.school else f"NPSN {b.npsn}"
    lines = [f"Sekolah: {school}",
             f"Semester: {b.semester.label if b.semester else 'belum ada (lakukan Tarik Data)'}"]
    if b.login is not None:
        lines.append(f"Pengguna: {b.login.who}, masuk sejak "
                     f"{format_local(b.login.since_ms, b.zone)}")
    else:
        lines.append("Pengguna: belum masuk ('selaras login')")
    if b.principal is not None:
        who = f"{b.principal.nama} ({b.principal.user})" if b.principal.nama else b.principal.user
        lines.append(f"Kepala sekolah: {who}, sesi terbuka sampai "
                     f"{format_local(b.principal.until_ms, b.zone)}")
    else:
        lines.append("Kepala sekolah: tidak ada sesi terbuka (Tukar Pengguna: "
                     "'selaras switch-user')")
    lines.append(f"Server pusat: {b.server}" if b.server
                 else "Server pusat: tidak ada (instalasi offline)")
    lines += [f"Sinkronisasi terakhir: {when(b.last_sync)}",
              f"Tarik Data terakhir: {when(b.last_pull)}"]
    if b.last_failed is not None:
        mode = MODE_WORDS.get(b.last_failed.mode, b.last_failed.mode)
        lines.append(f"Percobaan terakhir gagal: {mode}, "
                     f"{format_local(b.last_failed.ended_ms, b.zone)} "
                     f"({outcome_text(b.last_failed.outcome)})")
    total = b.pending_total
    if total.total:
        lines.append(f"Perubahan belum terkirim: {total.total} data "
                     f"({change_counts_text(total)})")
        lines += [f"  {tab}: {change_counts_text(c)}" for tab, c in b.pending.items()
                  if c.total]
    else:
        lines.append("Perubahan belum terkirim: tidak ada")
    verdict = ("sinkronisasi diblokir sampai data invalid diperbaiki" if b.invalid
               else "sinkronisasi boleh dilakukan")
    lines.append(f"Validasi Lokal: {b.invalid} invalid, {b.warnings} peringatan: {verdict}")
    lines.append(f"Konflik: {b.conflicts} isian" + (
        " ('selaras conflicts' untuk melihat dan menyelesaikannya)" if b.conflicts else ""))
    return "\n".join(lines)
