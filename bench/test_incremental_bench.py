"""Small and incremental syncs against the bare pipeline, side by side (issue 10).

Run on demand with ``make bench`` (``pytest bench -q --benchmark-only -s``), or
alone: ``pytest bench/test_incremental_bench.py -q --benchmark-only -s``.
docs/benchmarks.md ("Incremental sync") has the figures.

For the large school at each scale of ``SELARAS_BENCH_SCALES`` (default 1 and
4: about 31k and 125k rows), ``SELARAS_BENCH_REPS`` times (default 3), a
fresh ``selaras server`` process (``SELARAS_BENCH_STORES``: DuckDB, then
PostgreSQL) and a fresh registered install go through these rounds, each timed
as one ``run_sync(mode="sync")`` (connection to the session's end, every batch
durable at the centre and the checksums compared):

- ``first``: the school's rows, imported (not timed), pushed to the empty centre;
- ``10%``: a tenth of the rows edited (one field each, imported as an edit, not
  timed) and synced;
- ``10``: ten rows edited and synced;
- ``0``: nothing changed, synced: the fixed cost of a session through the library;
- at the largest scale also 100, 1,000, 10,000 and 100,000 edited rows (those
  up to 80 % of the rows): the curve of time against changed rows
  (``docs/bench/incremental-sync-<store>.png``).

Then, the centre still up, ``selaras sync`` with nothing to send runs as a command
(its wall time, process start included: the ``cli`` round; target under 0.5 s,
and the library's ``0`` round under 50 ms). Right after, in the same
repetition, the bare pipeline (``bench.baseline``: msgspec, one
websocket, one DuckDB table, a commit per batch, no CRDT work) does the same:
the rows into a fresh file, then each round's edited rows (whole rows, as a
bare pipeline holds them) replacing their old versions. Both run in child
processes. The ratio is selaras's rate over the bare rate (bare seconds over
selaras seconds); the targets: first sync >= 0.7, 10 % edits >= 0.6, and the
10-row sync under 0.1 s. Figures are medians with min-max over the repetitions.

The per-stage split comes from ``engine.stages``: the client's own sums (in the
child) and the centre's (``selaras admin stats``, read before and after each
round). What neither side spent in a stage is waiting: the network, the event
loop and the other side.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from selaras.bench.conftest import BenchStore
from selaras.bench.generate import rows_file
from selaras.bench.postgres import ThrowawayCluster
from selaras.bench.test_sync_bench import DOCS, NPSN, PASSWORD, SEED, SIZE, USER, Centre, run_child
from selaras.engine.schema import BY_NAME, Owner

MODULE = "selaras.bench.test_incremental_bench"
SCALES = [int(s) for s in os.environ.get("SELARAS_BENCH_SCALES", "1,4").split(",")]
REPS = int(os.environ.get("SELARAS_BENCH_REPS", "3"))
CURVE = (10, 100, 1_000, 10_000, 100_000)  # edited rows, at the largest scale
TIMEOUT_S = 1800.0
TARGETS = {"first": ("ratio", 0.7), "10%": ("ratio", 0.6), "10": ("seconds", 0.1),
           "0": ("seconds", 0.05), "cli": ("seconds", 0.5)}
SELARAS = str(Path(sys.executable).with_name("selaras"))
# The field each edit changes: the school's own, free text, no rule checks its form.
EDITED = {"nilai": "deskripsi", "peserta_didik": "alamat_jalan", "tanah": "nama",
          "registrasi_peserta_didik": "sekolah_asal", "pembelajaran": "sk_mengajar",
          "alat": "nama", "ruang": "nama", "bangunan": "nama",
          "ptk_terdaftar": "nomor_surat_tugas", "tugas_tambahan": "nomor_sk"}
assert all(BY_NAME[e].by_name[f].owner is Owner.SCHOOL for e, f in EDITED.items())


# -- the rounds' files ---------------------------------------------------------------------------

def write_edits(rows: Path, sizes: list[int], folder: Path) -> dict[int, Path]:
    """Per size n, a file of n edits (``{"entity", key, field}``) spread evenly over
    the rows with an ``EDITED`` field; each size writes its own value."""
    eligible = []
    with open(rows, "rb") as f:
        for line in f:
            row = json.loads(line)
            if row["entity"] in EDITED:
                eligible.append(row)
    out = {}
    for round_no, n in enumerate(sizes):
        assert n <= len(eligible), f"{n} edits asked, {len(eligible)} rows can take one"
        path = out[n] = folder / f"edits-{rows.stem}-{n}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i in range(n):
                row = eligible[i * len(eligible) // n]
                e = BY_NAME[row["entity"]]
                field = EDITED[e.name]
                value = f"{row.get(field) or 'Isian'} diubah {chr(65 + round_no)}"
                f.write(json.dumps({"entity": e.name, e.key: row[e.key], field: value}) + "\n")
    return out


# -- child: selaras's rounds -------------------------------------------------------------------

async def selaras_rounds(url: str, kode: str, token: str, folder: str, plan_file: str,
                         ) -> list[dict[str, Any]]:
    from selaras.client.install import Install, import_rows
    from selaras.client.sync import register, run_sync
    from selaras.engine import stages
    from selaras.server.remote import admin_request

    async def centre_stages() -> dict[str, float]:
        reply = await admin_request(url, token, "stats")
        return {str(k)[:-2]: float(v) for k, v in reply.rows if str(k).endswith("_s")}

    plan: list[tuple[str, str]] = json.loads(Path(plan_file).read_text())
    answer = await register(url, NPSN, kode, USER, PASSWORD)
    install = Install(Path(folder))
    install.init_registered(NPSN, origin=answer.install, token=answer.token, url=url,
                            user=USER, role=answer.role, centre_key=answer.centre_key)
    out = []
    with install.open() as s:
        assert (await run_sync(s.store, s.identity, mode="pull", timeout_s=TIMEOUT_S)).ok
        for name, path in plan:
            if path:
                await asyncio.to_thread(import_rows, s, Path(path))
            client, centre = stages.spent(), await centre_stages()
            t = time.perf_counter()
            report = await run_sync(s.store, s.identity, mode="sync", timeout_s=TIMEOUT_S)
            seconds = time.perf_counter() - t
            assert report.ok and report.vectors_equal and report.checksums_equal, \
                report.as_json()
            after = await centre_stages()
            out.append({"round": name, "seconds": seconds, "events": report.totals.events_up,
                        "client": stages.since(client),
                        "centre": {k: round(v - centre.get(k, 0.0), 6)
                                   for k, v in after.items() if v > centre.get(k, 0.0)}})
    return out


# -- child: the bare pipeline's rounds -----------------------------------------------------------

def bare_rounds(rows_path: str, db: str, plan_file: str) -> list[dict[str, Any]]:
    from selaras.bench.baseline import KEYS, load_rows, run_pipeline

    plan: list[tuple[str, str]] = json.loads(Path(plan_file).read_text())
    rows = load_rows(rows_path)
    by_id = {(str(r["entity"]), str(r[KEYS[str(r["entity"])]])): r for r in rows}
    out = []
    for name, path in plan:
        if not path:
            continue  # nothing to send
        if name == "first":
            batch = rows
        else:  # the edited rows whole, as the bare pipeline's client holds them
            batch = []
            for edit in load_rows(path):
                key = (str(edit["entity"]), str(edit[KEYS[str(edit["entity"])]]))
                by_id[key] = {**by_id[key], **edit}
                batch.append(by_id[key])
        result = asyncio.run(run_pipeline(batch, db, update=name != "first"))
        out.append({"round": name, "seconds": result.seconds, "events": result.rows})
    return out


def child(what: str, *args: str) -> None:
    result = asyncio.run(selaras_rounds(*args)) if what == "selaras" else bare_rounds(*args)
    print(json.dumps(result), flush=True)


# -- the parent ------------------------------------------------------------------------------------

def median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def stage_line(reps: list[dict[str, float]]) -> str:
    """The median of each stage over the repetitions, largest first."""
    names = {k for r in reps for k in r}
    med = {k: statistics.median(r.get(k, 0.0) for r in reps) for k in names}
    return ", ".join(f"{k} {ms(v)}" for k, v in sorted(med.items(), key=lambda kv: -kv[1])
                     if v >= 0.0005) or "-"


def test_incremental_sync(benchmark: Any, folder: Path, centre_store: BenchStore,
                          request: pytest.FixtureRequest) -> None:
    """Per scale: first sync, 10 % edited, 10 rows edited (and the curve at the largest),
    selaras and the bare pipeline side by side, REPS times."""
    report: dict[str, Any] = {"store": centre_store.name, "reps": REPS, "scales": {}}

    def fresh_store() -> list[str]:
        """The ``selaras server`` options of an empty store (a data folder is new anyway)."""
        if centre_store.name == "duckdb":
            return []
        cluster: ThrowawayCluster = request.getfixturevalue("postgres")
        return ["--store", cluster.create_database(f"inc_{uuid.uuid4().hex[:12]}")]

    def run_all() -> None:
        for scale in SCALES:
            rows = rows_file(folder, SIZE, scale, NPSN, SEED)
            with open(rows, "rb") as f:
                n_rows = sum(1 for _ in f)
            curve = [n for n in CURVE if n <= 0.8 * n_rows] if scale == max(SCALES) else []
            sizes = sorted({n_rows // 10, 10, *curve})
            edits = write_edits(rows, sizes, folder)
            names = {n: "10%" if n == n_rows // 10 else str(n) for n in sizes}
            plan = ([("first", str(rows))] + [(names[n], str(edits[n])) for n in sizes]
                    + [("0", "")])
            plan_file = folder / f"plan-{scale}.json"
            plan_file.write_text(json.dumps(plan))
            reps: dict[str, list[Any]] = {"selaras": [], "bare": []}
            for rep in range(REPS):
                run = f"{centre_store.name}-{scale}-{rep}"
                centre = Centre(folder / f"centre-inc-{run}", *fresh_store())
                try:
                    kode = centre.add_school(NPSN)
                    install = folder / f"install-{run}"
                    rounds = run_child(folder / "inc.stderr", "selaras", centre.url, kode,
                                       centre.token, str(install), str(plan_file),
                                       module=MODULE)
                    reps["selaras"].append([*rounds, command_sync(install)])
                finally:
                    centre.stop()
                bare_db = folder / f"bare-inc-{run}.duckdb"
                reps["bare"].append(run_child(folder / "bare-inc.stderr", "bare", str(rows),
                                              str(bare_db), str(plan_file), module=MODULE))
            report["scales"][scale] = {"rows": n_rows, "sizes": names, **reps}

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    lines = print_report(report)
    (DOCS / f"incremental-sync-{centre_store.name}.txt").write_text("\n".join(lines) + "\n")
    (DOCS / f"incremental-sync-{centre_store.name}.json").write_text(
        json.dumps(report, indent=1) + "\n")
    plot(report, DOCS / f"incremental-sync-{centre_store.name}.png")


def command_sync(install: Path) -> dict[str, Any]:
    """``selaras sync`` with nothing to send, as an operator runs it: its wall time."""
    t = time.perf_counter()
    done = subprocess.run([SELARAS, "--data", str(install), "sync"], capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)
    seconds = time.perf_counter() - t
    assert done.returncode == 0, done.stdout + done.stderr
    return {"round": "cli", "seconds": seconds, "events": 0, "client": {}, "centre": {}}


def rounds_of(report: dict[str, Any], scale: int, who: str, name: str) -> list[dict[str, Any]]:
    return [next(r for r in rep if r["round"] == name) for rep in report["scales"][scale][who]]


def print_report(report: dict[str, Any]) -> list[str]:
    lines = [f"incremental sync, centre on {report['store']}, {report['reps']} repetitions "
             f"(median, min-max); ratio = bare seconds / selaras seconds"]
    for scale, s in report["scales"].items():
        lines.append(f"large school x{scale} ({s['rows']:,} rows):")
        for name in ["first", *s["sizes"].values(), "0", "cli"]:
            ours = rounds_of(report, scale, "selaras", name)
            t, t_lo, t_hi = median_range([r["seconds"] for r in ours])
            line = (f"  {name:>6}: {ours[0]['events']:>7,} events; selaras {ms(t)} "
                    f"({ms(t_lo)}-{ms(t_hi)})")
            ratio = 0.0
            if name not in ("0", "cli"):
                bare = rounds_of(report, scale, "bare", name)
                b, b_lo, b_hi = median_range([r["seconds"] for r in bare])
                ratio, r_lo, r_hi = median_range(
                    [x["seconds"] / y["seconds"] for x, y in zip(bare, ours, strict=True)])
                line += (f", bare {ms(b)} ({ms(b_lo)}-{ms(b_hi)}); "
                         f"ratio {ratio:.2f} ({r_lo:.2f}-{r_hi:.2f})")
            if name in TARGETS:
                kind, target = TARGETS[name]
                met = ratio >= target if kind == "ratio" else t < target
                line += (f"; target {'ratio >= ' if kind == 'ratio' else '< '}{target}"
                         f"{'' if kind == 'ratio' else ' s'}: {'met' if met else 'NOT met'}")
            lines.append(line)
            if name == "cli":
                continue
            lines.append(f"          client stages: {stage_line([r['client'] for r in ours])}")
            lines.append(f"          centre stages: {stage_line([r['centre'] for r in ours])}")
    for line in lines:
        print(line)
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """Seconds against edited rows at the largest scale: selaras and the bare pipeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = max(report["scales"])
    s = report["scales"][scale]
    sizes = sorted(int(n) for n in s["sizes"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for who, label in (("selaras", "selaras (sync session)"), ("bare", "bare pipeline")):
        mids, lows, highs = [], [], []
        for n in sizes:
            m, lo, hi = median_range([r["seconds"] for r in
                                      rounds_of(report, scale, who, s["sizes"][n])])
            mids.append(m)
            lows.append(m - lo)
            highs.append(hi - m)
        ax.errorbar(sizes, mids, yerr=[lows, highs], marker="o", capsize=3, label=label)
    ax.axhline(0.1, linestyle=":", color="grey")
    ax.text(sizes[0], 0.1, " 0.1 s", va="bottom", color="grey")
    ax.set(xscale="log", yscale="log", xlabel="rows edited, then synced",
           ylabel="seconds (median, min-max)",
           title=f"Edits synced: large school x{scale} ({s['rows']:,} rows), "
                 f"centre on {report['store']}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    child(*sys.argv[1:])
