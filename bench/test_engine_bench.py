"""Engine throughput: bulk import, bundle apply, duplicates (DESIGN.md sections 4 and 5).

Run on demand with ``make bench`` (``pytest bench -q --benchmark-only -s``);
``make test`` does not collect bench/. docs/benchmarks.md has the figures.

The data is the generated large school at scale 40 (about 1.25 million rows),
made once per session. Scenarios:

a. ``import``: ``import_jsonl`` of the school into a fresh store seeded with
   Referensi and the school's identity: one event per row.
b. ``apply``: a bundle of every event of that store (``events_after({})``,
   ``to_bytes``) decoded with ``Batch.from_bytes`` and appended to an empty
   replica; the decode is timed with the append.
c. ``duplicates``: the same bundle again, to the replica that holds it: every
   event is a duplicate.

Each round runs in a child process of its own (this module run with ``-m``),
so that each scenario's peak RSS is its own: the child sets up (opens and
seeds the store, reads the bundle file), says ``ready``, waits for ``go``,
runs the timed operation, which returns after the commit, and reports its
time and its peak RSS (``ru_maxrss``, the setup included). Events per second
counts events (row changes), never fields.

``SELARAS_BENCH_SCALE`` runs a smaller school (a quick check of the harness);
``SELARAS_BENCH_CACHE`` names a folder that keeps the generated file between
runs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from selaras.bench.generate import rows_file, sekolah_row
from selaras.bench.rounds import Round
from selaras.engine.events import Batch
from selaras.engine.replica import Identity, referensi_events, school_identity_event
from selaras.engine.storage import DuckDBStore
from selaras.engine.store import AppendReport

MODULE = "selaras.bench.test_engine_bench"
SIZE, SCALE, SEED = "large", int(os.environ.get("SELARAS_BENCH_SCALE", "40")), 1
ME = Identity(npsn="20219151", origin="be4c0000-0000-4000-8000-0000000be4c0")
NOW_MS = 1_700_000_000_000
ROUNDS = {"import": 2, "apply": 2, "duplicates": 3}
MIN_RATE = {"import": 150_000, "apply": 150_000, "duplicates": 1_000_000}  # events/s
MAX_RSS = 1536 * 1024 * 1024  # 1.5 GiB, per scenario


# -- the child: one round of one scenario -------------------------------------------------

def seed_batch() -> Batch:
    fields = {k: v for k, v in sekolah_row(ME.npsn).items() if k not in ("sekolah_id", "npsn")}
    return Batch.from_events([*referensi_events(), school_identity_event(ME.npsn, fields)])


def peak_rss() -> int | None:
    """This process's peak resident set size in bytes (None where unknown)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def child(scenario: str, store_path: str, data: str) -> None:
    """Set up, say ready, wait for go, run the operation, print what it did as JSON."""
    store = DuckDBStore(store_path, ME.central)
    blob = b""
    if scenario == "import":
        store.append(seed_batch())
    elif scenario in ("apply", "duplicates"):
        blob = Path(data).read_bytes()
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    if scenario == "import":
        report = store.import_jsonl(data, origin=ME.origin, author=ME.author, role=ME.role,
                                    sekolah_id=ME.sekolah_id, now_ms=NOW_MS)
    elif scenario == "export":
        batch = store.events_after({})
        Path(data).write_bytes(batch.to_bytes())
        report = AppendReport(applied=len(batch))
    else:
        report = store.append(Batch.from_bytes(blob))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "applied": report.applied,
                      "duplicates": report.duplicates, "held_back": report.held_back,
                      "rss": peak_rss()}), flush=True)
    store.close()


# -- the parent -----------------------------------------------------------------------------

def start_round(scenario: str, store: Path, data: Path) -> Round:
    return Round([sys.executable, "-m", MODULE, scenario, str(store), str(data)],
                 store.with_name(store.name + f".{scenario}.stderr"))


def run_once(scenario: str, store: Path, data: Path) -> dict[str, Any]:
    r = start_round(scenario, store, data)
    r.go()
    return r.finish()


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            n += chunk.count(b"\n")
    return n


@dataclass
class Workspace:
    """The session's data; stores made by one scenario are reused by the next."""

    folder: Path
    rows: Path
    n_rows: int
    imported: Path | None = None
    bundle: Path | None = None
    replica: Path | None = None
    seeded_events: int = field(default_factory=lambda: len(seed_batch()))

    def imported_store(self) -> Path:
        if self.imported is None:
            self.imported = self.folder / "imported.duckdb"
            run_once("import", self.imported, self.rows)
        return self.imported

    def bundle_file(self) -> Path:
        if self.bundle is None:
            self.bundle = self.folder / "bundle.bin"
            run_once("export", self.imported_store(), self.bundle)
        return self.bundle

    def replica_store(self) -> Path:
        if self.replica is None:
            self.replica = self.folder / "replica.duckdb"
            run_once("apply", self.replica, self.bundle_file())
        return self.replica


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    folder = tmp_path_factory.mktemp("bench")
    rows = rows_file(folder, SIZE, SCALE, ME.npsn, SEED)
    yield Workspace(folder, rows, count_lines(rows))
    shutil.rmtree(folder, ignore_errors=True)


def remove_store(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


def bench_rounds(benchmark: Any, scenario: str, store_of: Any, data: Path,
                 ) -> list[dict[str, Any]]:
    """Run the scenario's rounds under pytest-benchmark; what each child reported."""
    rounds: list[Round] = []
    results: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[Round], dict[str, Any]]:
        if rounds:  # the previous child closes its store before the next one starts
            results.append(rounds[-1].finish())
        rounds.append(start_round(scenario, store_of(len(rounds)), data))
        return (rounds[-1],), {}

    benchmark.pedantic(Round.go, setup=setup, rounds=ROUNDS[scenario], iterations=1)
    results.append(rounds[-1].finish())
    return results


LABELS = {"import": "a. import", "apply": "b. apply bundle", "duplicates": "c. duplicates"}


def record(benchmark: Any, bench_results: list[dict[str, Any]], scenario: str,
           events: int, results: list[dict[str, Any]]) -> None:
    seconds = min(r["seconds"] for r in results)  # the best round: noise only adds
    rss = max((r["rss"] for r in results if r["rss"] is not None), default=None)
    rate = events / seconds
    benchmark.extra_info.update(events=events, seconds=seconds, events_per_s=round(rate),
                                peak_rss_bytes=rss)
    bench_results.append({"scenario": LABELS[scenario], "events": events, "seconds": seconds,
                          "rss": rss, "min_rate": MIN_RATE[scenario], "max_rss": MAX_RSS})
    rss_text = "n/a" if rss is None else f"{rss / 2**20:,.0f} MiB"
    print(f"\n{LABELS[scenario]}: {events:,} events in {seconds:.2f} s = {rate:,.0f} events/s, "
          f"peak RSS {rss_text}")


def test_import(benchmark: Any, work: Workspace, bench_results: list[dict[str, Any]]) -> None:
    """(a) Bulk import of the school into a fresh seeded store."""

    def store(i: int) -> Path:
        path = work.folder / f"import-{i}.duckdb"
        remove_store(path)
        return path

    results = bench_rounds(benchmark, "import", store, work.rows)
    for r in results:
        assert (r["applied"], r["duplicates"], r["held_back"]) == (work.n_rows, 0, 0)
    for i in range(len(results) - 1):
        remove_store(work.folder / f"import-{i}.duckdb")
    if work.imported is None:
        work.imported = work.folder / f"import-{len(results) - 1}.duckdb"
    record(benchmark, bench_results, "import", work.n_rows, results)


def test_apply_bundle(benchmark: Any, work: Workspace, bench_results: list[dict[str, Any]],
                      ) -> None:
    """(b) A bundle of every event, decoded and appended to an empty replica."""
    bundle = work.bundle_file()
    events = work.n_rows + work.seeded_events

    def store(i: int) -> Path:
        path = work.folder / f"apply-{i}.duckdb"
        remove_store(path)
        return path

    results = bench_rounds(benchmark, "apply", store, bundle)
    for r in results:
        assert (r["applied"], r["duplicates"], r["held_back"]) == (events, 0, 0)
    for i in range(len(results) - 1):
        remove_store(work.folder / f"apply-{i}.duckdb")
    if work.replica is None:
        work.replica = work.folder / f"apply-{len(results) - 1}.duckdb"
    record(benchmark, bench_results, "apply", events, results)
    benchmark.extra_info["bundle_bytes"] = bundle.stat().st_size
    print(f"bundle: {bundle.stat().st_size / 2**20:,.0f} MiB, "
          f"{work.rows.stat().st_size / 2**20:,.0f} MiB of JSON lines imported")


def test_apply_duplicates(benchmark: Any, work: Workspace,
                          bench_results: list[dict[str, Any]]) -> None:
    """(c) The same bundle again, to the replica that holds it: all duplicates."""
    bundle = work.bundle_file()
    replica = work.replica_store()
    events = work.n_rows + work.seeded_events
    results = bench_rounds(benchmark, "duplicates", lambda i: replica, bundle)
    for r in results:
        assert (r["applied"], r["duplicates"], r["held_back"]) == (0, events, 0)
    record(benchmark, bench_results, "duplicates", events, results)


if __name__ == "__main__":
    child(*sys.argv[1:])
