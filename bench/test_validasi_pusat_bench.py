"""Validasi Pusat over a thousand schools (issue 12): the full run, and what it adds to a push.

Run on demand: ``pytest bench/test_validasi_pusat_bench.py -q --benchmark-only -s``
(``make bench`` runs it with the others). docs/benchmarks.md ("Validasi Pusat") has the
figures.

The centre (DuckDB, built once and kept under ``$SELARAS_BENCH_CACHE`` if set: it takes
about a quarter of an hour): ``SCHOOLS`` schools (default 1,000) added as an admin adds
them, each holding a generated large school of the four levels in turn (SD, SMP, SMA,
SMK; 672 to 1,485 students), appended as its pushes would be: 1.17 million students.
Every entity but ``nilai`` is loaded: no central rule reads grades, and they would be 12.7
million rows more to load. NIK and NISN are numbered per school (the generator's own
collide across schools, which would be findings), and ``PLANTED`` pairs of neighbouring
schools share a student's NIK, another's NISN and a home-school teacher (VP-001, VP-002,
VP-005), so the run has findings to write.

- The full run: ``selaras admin central-validation --all`` (the same service, in process,
  the server stopped): every rule at every school, findings written.
- Per push: a real ``selaras server`` on that centre, with Validasi Pusat and with
  ``--no-central-validation``, alternating per repetition. A new school (the large SMA,
  31,000 rows, a seed of its own) registers, imports its rows and syncs (every rule
  runs), then 100 students' addresses are edited and synced (the students' rules run).
  Each sync is timed in the client, from the start to every event durable at the centre
  and the Summary. Ratio of the medians on / off (target: at most 1.3).
- A transfer's latency: ``TRANSFERS`` students of the first school that pushed leave it
  (``exit_person``, synced); the second asks for each (``request_transfer``, Tarik Data PD
  among 1.17 million students) and pulls: seconds from the request to the pull's end.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from selaras.bench.generate import generate, write
from selaras.bench.test_sync_bench import PASSWORD, USER, Centre, run_child

MODULE = "selaras.bench.test_validasi_pusat_bench"
SCHOOLS = int(os.environ.get("SELARAS_BENCH_VP_SCHOOLS", "1000"))
REPS = int(os.environ.get("SELARAS_BENCH_REPS", "3"))
PLANTED = 10
LEVELS = ("SD", "SMP", "SMA", "SMK")
EDITS = 100
TRANSFERS = 10
TARGET = 1.3
TIMEOUT_S = 1800.0
DOCS = Path(__file__).resolve().parent.parent / "docs" / "bench"


def npsn_of(i: int) -> str:
    return f"{(i * 48_271 + 10_000_000) % 100_000_000:08d}"


# -- the centre of a thousand schools, built once ------------------------------------------------

def numbered(k: int, rows: Iterable[tuple[str, dict[str, Any]]],
             ) -> Iterator[tuple[str, dict[str, Any]]]:
    """School k's rows with NIKs and NISNs numbered by school: the generator's would meet
    other schools' (a region code, a birth date, a serial), which would all be findings."""
    students = teachers = 0
    for name, row in rows:
        if name == "peserta_didik":
            row["nik"], row["nisn"] = f"99{k:04d}{students:010d}", f"9{k:04d}{students:05d}"
            students += 1
        elif name == "ptk":
            row["nik"] = f"98{k:04d}{teachers:010d}"
            teachers += 1
        yield name, row


def school_rows(i: int, before: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """School i's rows, less the grades. The odd schools of the first 2 * PLANTED also hold
    a student with the NIK of one of the school before (``before``, updated), another with
    its NISN, and register its home-school teacher as at home here too."""
    plant = i % 2 == 1 and i < 2 * PLANTED
    rows, mine = [], {}
    for name, row in numbered(i, generate("large", 1, npsn_of(i), 1_000 + i,
                                          bentuk=LEVELS[i % 4])):
        if name == "nilai":
            continue
        if name == "peserta_didik" and "nisn" not in mine:
            field = "nik" if "nik" not in mine else "nisn"
            mine[field] = row[field]
            if plant:
                row[field] = before[field]
        if name == "ptk_terdaftar" and row["ptk_induk"] == 1 and "induk" not in mine:
            mine["induk"] = row
            if plant:
                rows.append((name, {**before["induk"], "sekolah_id": row["sekolah_id"],
                                    "ptk_terdaftar_id": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                                       f"induk/{i}"))}))
        rows.append((name, row))
    before.update(mine)
    return rows


def build_centre(data: Path) -> dict[str, Any]:
    """The data folder of a centre holding SCHOOLS schools; what it holds."""
    from selaras.engine.clocks import hlc_from_ms
    from selaras.engine.events import Batch, Event
    from selaras.engine.schema import entity
    from selaras.engine.storage import open_centre
    from selaras.engine.values import parse
    from selaras.server import credentials
    from selaras.server.admin import run_admin
    from selaras.server.app import DB_FILE

    Centre(data).stop()  # the folder as the server makes it: its key, its database
    centre = open_centre(data / DB_FILE, key=credentials.centre_key(data))
    held = {"schools": 0, "students": 0, "events": 0}
    before: dict[str, Any] = {}
    t = time.perf_counter()
    for i in range(SCHOOLS):
        npsn, now = npsn_of(i), int(time.time() * 1000)
        run_admin(centre, centre.registry, "school_add",
                  {"npsn": npsn, "nama": f"{LEVELS[i % 4]} {npsn}", "bentuk": LEVELS[i % 4]}, now)
        rows = school_rows(i, before)
        origin = str(uuid.uuid5(uuid.NAMESPACE_URL, f"vp-install/{npsn}"))
        events = []
        for seq, (name, row) in enumerate(rows, 1):
            e = entity(name)
            events.append(Event(origin=origin, seq=seq, hlc=hlc_from_ms(now) + seq, entity=name,
                                row_id=str(row[e.key]), author=USER, role="operator",
                                changes={k: parse(e, e.by_name[k], v) for k, v in row.items()
                                         if k != e.key and k in e.by_name}))
        with centre.transaction():
            centre.admit(npsn, Batch.from_events(events), now)
        held["schools"] += 1
        held["students"] += sum(name == "peserta_didik" for name, _ in rows)
        held["events"] += len(events)
        if i % 100 == 99:
            print(f"  {i + 1} schools loaded, {time.perf_counter() - t:.0f} s", flush=True)
    centre.close()
    held["load_s"] = round(time.perf_counter() - t, 1)
    return held


def full_run(data: Path) -> dict[str, Any]:
    from selaras.engine.storage import open_centre
    from selaras.server import credentials
    from selaras.server.admin import run_admin
    from selaras.server.app import DB_FILE

    centre = open_centre(data / DB_FILE, key=credentials.centre_key(data))
    try:
        t = time.perf_counter()
        reply = run_admin(centre, centre.registry, "central_validation", {"all": "1"},
                          int(time.time() * 1000))
        seconds = time.perf_counter() - t
        planted = run_admin(centre, centre.registry, "central_validation",
                            {"npsn": npsn_of(1)}, 0)
        return {"seconds": seconds, "message": reply.message,
                "planted_found": sorted(str(row[0]) for row in planted.rows)}
    finally:
        centre.close()


# -- child: a new school's first sync, then an edit, timed -----------------------------------------

def syncs(url: str, npsn: str, kode: str, rows: str, folder: str) -> dict[str, Any]:
    from selaras.client.install import Install, import_rows
    from selaras.client.sync import register, run_sync

    answer = asyncio.run(register(url, npsn, kode, USER, PASSWORD))
    install = Install(Path(folder))
    install.init_registered(npsn, origin=answer.install, token=answer.token, url=url,
                            user=USER, role=answer.role, centre_key=answer.centre_key)
    out: dict[str, Any] = {}
    with install.open() as s:
        assert asyncio.run(run_sync(s.store, s.identity, mode="pull", timeout_s=TIMEOUT_S)).ok
        edits = Path(folder) / "edits.jsonl"
        with open(rows, encoding="utf-8") as f:
            students = [r for r in map(json.loads, f) if r["entity"] == "peserta_didik"][:EDITS]
        edits.write_text("".join(json.dumps({"entity": "peserta_didik", "peserta_didik_id":
                                             r["peserta_didik_id"], "alamat_jalan":
                                             f"{r['alamat_jalan']} (pindah)"}) + "\n"
                                 for r in students))
        for name, path in (("first", rows), ("edit", str(edits))):
            import_rows(s, Path(path))
            t = time.perf_counter()
            report = asyncio.run(run_sync(s.store, s.identity, mode="sync",
                                          timeout_s=TIMEOUT_S))
            out[name] = {"seconds": time.perf_counter() - t,
                         "events": report.totals.events_up}
            assert report.ok and report.vectors_equal and report.checksums_equal, \
                report.as_json()
    return out


def transfers(url: str, origin: str, receiving: str, rows: str) -> dict[str, Any]:
    """TRANSFERS students leave the school at ``origin`` (its install's folder), which
    syncs; then each is asked for by the school at ``receiving`` and pulled there: the
    seconds from the request to the end of that pull, per student."""
    from selaras.client import mutasi
    from selaras.client.install import Install
    from selaras.client.sync import run_sync

    with open(rows, encoding="utf-8") as f:
        nisns = [row["nisn"] for row in map(json.loads, f)
                 if row["entity"] == "peserta_didik"][:TRANSFERS]
    with Install(Path(origin)).open() as s:
        s.store.set_meta(url=url)  # this run's centre, on a port of its own
        for nisn in nisns:
            mutasi.exit_person(s, "pd", nisn, "mutasi", "2024-01-15")
        assert asyncio.run(run_sync(s.store, s.identity, mode="sync", timeout_s=TIMEOUT_S)).ok
    seconds = []
    with Install(Path(receiving)).open() as s:
        s.store.set_meta(url=url)
        for nisn in nisns:
            t = time.perf_counter()
            mutasi.request_transfer(s, "pd", nisn)
            report = asyncio.run(run_sync(s.store, s.identity, mode="pull", timeout_s=TIMEOUT_S))
            seconds.append(time.perf_counter() - t)
            assert report.ok and report.totals.events_down > 0, report.as_json()
    return {"seconds": seconds}


def child(step: str, *args: str) -> None:
    print(json.dumps({"syncs": syncs, "transfers": transfers}[step](*args)), flush=True)


# -- the parent ------------------------------------------------------------------------------

def test_validasi_pusat_at_a_thousand_schools(benchmark: Any, folder: Path) -> None:
    cache = Path(os.environ.get("SELARAS_BENCH_CACHE") or folder)
    data = cache / f"validasi-pusat-{SCHOOLS}"
    manifest = data / "bench.json"
    if not manifest.exists():
        held = build_centre(data)
        manifest.write_text(json.dumps(held))
    held = json.loads(manifest.read_text())
    # The schools that push are new at each run (the centre keeps earlier runs' schools).
    base = SCHOOLS + 100 * held.get("runs", 0)
    manifest.write_text(json.dumps({**held, "runs": held.get("runs", 0) + 1}))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        "on": {"first": [], "edit": []}, "off": {"first": [], "edit": []}}
    full: dict[str, Any] = {}
    moved: dict[str, Any] = {}

    def run_all() -> None:
        full.update(full_run(data))
        for rep in range(REPS):
            for mode in (("on", "off") if rep % 2 == 0 else ("off", "on")):
                extra = [] if mode == "on" else ["--no-central-validation"]
                centre = Centre(data, *extra, log=folder / f"vp-{rep}-{mode}.stderr")
                try:
                    k = base + 2 * rep + (mode == "on")
                    npsn = npsn_of(k)
                    rows = folder / f"rows-{npsn}.jsonl"
                    write(rows, numbered(k, generate("large", 1, npsn, k, bentuk="SMA")))
                    kode = centre.add_school(npsn)
                    out = run_child(folder / "vp.stderr", "syncs", centre.url, npsn, kode,
                                    str(rows), str(folder / f"install-{npsn}"), module=MODULE)
                finally:
                    centre.stop()
                for name, r in out.items():
                    runs[mode][name].append(r)
        # Tarik Data PD between the first two schools that pushed, Validasi Pusat on.
        first, second = npsn_of(base), npsn_of(base + 1)
        centre = Centre(data, log=folder / "vp-transfers.stderr")
        try:
            moved.update(run_child(folder / "vp.stderr", "transfers", centre.url,
                                   str(folder / f"install-{first}"),
                                   str(folder / f"install-{second}"),
                                   str(folder / f"rows-{first}.jsonl"), module=MODULE))
        finally:
            centre.stop()

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    lines = report(held, full, runs, moved["seconds"])
    print("\n" + "\n".join(lines))
    DOCS.mkdir(exist_ok=True)
    (DOCS / "validasi-pusat-duckdb.txt").write_text("\n".join(lines) + "\n")
    benchmark.extra_info.update(held=held, full=full, runs=runs, transfers=moved)
    assert held["schools"] == SCHOOLS
    assert full["planted_found"] == ["VP-001", "VP-002", "VP-005"]


def report(held: dict[str, Any], full: dict[str, Any],
           runs: dict[str, dict[str, list[dict[str, Any]]]], moved: list[float]) -> list[str]:
    lines = [f"Validasi Pusat, centre on DuckDB: {held['schools']:,} schools, "
             f"{held['students']:,} students, {held['events']:,} events (loaded in "
             f"{held['load_s']:,.0f} s)",
             f"  full run (admin central-validation --all): {full['seconds']:.1f} s, "
             f"{full['seconds'] / held['schools'] * 1000:.0f} ms a school; {full['message']}"]
    for name, what in (("first", "a new school's first sync"),
                       ("edit", f"{EDITS} students edited, synced")):
        on = [r["seconds"] for r in runs["on"][name]]
        off = [r["seconds"] for r in runs["off"][name]]
        ratio = statistics.median(on) / statistics.median(off)
        lines += [f"  {what} ({runs['on'][name][0]['events']:,} events), {len(on)} "
                  "repetitions (median, min-max):",
                  f"    Validasi Pusat on:  {statistics.median(on):.3f} s "
                  f"({min(on):.3f}-{max(on):.3f})",
                  f"    Validasi Pusat off: {statistics.median(off):.3f} s "
                  f"({min(off):.3f}-{max(off):.3f})",
                  f"    on / off: {ratio:.2f} (target <= {TARGET}: "
                  f"{'met' if ratio <= TARGET else 'NOT met'})"]
    return lines + [f"  Tarik Data PD, from the request to the end of the receiving school's "
                    f"pull, {len(moved)} students: median {statistics.median(moved):.3f} s "
                    f"({min(moved):.3f}-{max(moved):.3f})"]


if __name__ == "__main__":
    child(*sys.argv[1:])
