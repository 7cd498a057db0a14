"""The bare pipeline's rate (bench/baseline.py): the yardstick of the sync target.

Run on demand with ``make bench`` (``pytest bench -q --benchmark-only -s``);
``make test`` does not collect bench/ (tests/test_baseline.py is its quick
check there).

The sync target is at least half the rate of a bare pipeline (msgspec, one
websocket, one DuckDB table, committed and acknowledged per batch) measured in
the same run. This measures that pipeline on the generated large school at
scale 40 (about 1.25 million rows), made once per session:

- ``test_bare_pipeline``: each round runs in a child process of its own
  (``python -m selaras.bench.baseline ROWS --child``), so that its peak RSS is
  its own: the child reads the rows into memory (not timed), says ``ready``,
  waits for ``go``, runs the pipeline into a fresh file and reports its time
  (first encode to last acknowledgement) and peak RSS (the rows held in
  memory included). The best round counts: noise only adds. Afterwards the
  last round's table is checked to hold every row once.
- ``test_small_school_exactly_once``: the small school, in this process, with
  batches small enough to need many frames: every row arrives once, equal to
  what was sent.

``SELARAS_BENCH_SCALE`` runs a smaller school (a quick check of the harness);
``SELARAS_BENCH_CACHE`` names a folder that keeps the generated file between
runs (the same file name as the engine benchmarks, so they share it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from selaras.bench.baseline import (
    BATCH_ROWS,
    KEYS,
    WINDOW,
    delivered,
    load_rows,
    remove_db,
    run_pipeline,
    stored_rows,
)
from selaras.bench.generate import generate, rows_file, write
from selaras.bench.rounds import Round

MODULE = "selaras.bench.baseline"
SIZE, SCALE, SEED = "large", int(os.environ.get("SELARAS_BENCH_SCALE", "40")), 1
NPSN = "20219151"
ROUNDS = 3
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def school(folder: Path) -> tuple[Path, dict[str, int]]:
    """The large school's rows file and its rows per entity (generated or reused)."""
    rows = rows_file(folder, SIZE, SCALE, NPSN, SEED)
    counts: dict[str, int] = {}
    with open(rows, "rb") as f:  # the entity is the first field of every line
        for line in f:
            entity = line[11:line.index(b'"', 11)].decode()
            counts[entity] = counts.get(entity, 0) + 1
    return rows, counts


def start_round(rows: Path, db: Path) -> Round:
    return Round([sys.executable, "-m", MODULE, str(rows), "--db", str(db), "--child",
                  "--batch-rows", str(BATCH_ROWS), "--window", str(WINDOW)],
                 db.with_name(db.name + ".stderr"))


def test_bare_pipeline(benchmark: Any, school: tuple[Path, dict[str, int]],
                       folder: Path) -> None:
    """The large school at scale 40 through the bare pipeline: rows/s, durable."""
    rows_file, counts = school
    n_rows = sum(counts.values())
    rounds: list[Round] = []
    results: list[dict[str, Any]] = []

    def db(i: int) -> Path:
        path = folder / f"bare-{i}.duckdb"
        remove_db(path)
        return path

    def setup() -> tuple[tuple[Round], dict[str, Any]]:
        if rounds:  # the previous child exits (and its file goes) before the next starts
            results.append(rounds[-1].finish())
            remove_db(db(len(rounds) - 1))
        rounds.append(start_round(rows_file, db(len(rounds))))
        return (rounds[-1],), {}

    benchmark.pedantic(Round.go, setup=setup, rounds=ROUNDS, iterations=1)
    results.append(rounds[-1].finish())
    assert [r["rows"] for r in results] == [n_rows] * ROUNDS
    last = folder / f"bare-{ROUNDS - 1}.duckdb"
    assert delivered(last) == {entity: (n, n) for entity, n in counts.items()}
    remove_db(last)

    best = min(results, key=lambda r: r["seconds"])  # the best round: noise only adds
    rate = best["rows"] / best["seconds"]
    rss = max((r["rss"] for r in results if r["rss"] is not None), default=None)
    benchmark.extra_info.update(rows=n_rows, seconds=best["seconds"], rows_per_s=round(rate),
                                bytes_sent=best["bytes_sent"], batch_rows=BATCH_ROWS,
                                window=WINDOW, peak_rss_bytes=rss,
                                rounds_rows_per_s=[round(r["rows_per_s"]) for r in results])
    rss_text = "n/a" if rss is None else f"{rss / MiB:,.0f} MiB"
    every = ", ".join(f"{r['rows_per_s']:,.0f}" for r in results)
    print(f"\nbare pipeline ({SIZE} x{SCALE}, batches of {BATCH_ROWS:,} rows, window {WINDOW}): "
          f"{n_rows:,} rows in {best['seconds']:.2f} s = {rate:,.0f} rows/s "
          f"(rounds: {every}), {best['bytes_sent'] / MiB:,.1f} MiB sent, peak RSS {rss_text} "
          f"(the rows held in memory included); the sync target (half): "
          f">= {rate / 2:,.0f} rows/s")


def test_small_school_exactly_once(benchmark: Any, folder: Path) -> None:
    """The small school in many frames: every row arrives once, as it was sent."""
    path = folder / "small.jsonl"
    counts = write(path, generate("small", 1, NPSN, SEED))
    rows = load_rows(path)
    db = folder / "small.duckdb"
    remove_db(db)
    result = benchmark.pedantic(lambda: asyncio.run(run_pipeline(rows, db, batch_rows=50)),
                                rounds=1, iterations=1)
    assert (result.rows, result.batches) == (len(rows), -(-len(rows) // 50))
    assert delivered(db) == {entity: (n, n) for entity, n in counts.items()}
    ids = [str(r[KEYS[str(r["entity"])]]) for r in rows]
    back = stored_rows(db, ids)
    assert [back[i] for i in ids] == rows
    print(f"\n{result.summary()} (small school, an exactly-once check)")
