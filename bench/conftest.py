"""Benchmark plumbing: the scenarios' results, and the table printed at the end of the run."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from selaras.bench.postgres import ThrowawayCluster, Unavailable

RESULTS = pytest.StashKey[list[dict[str, Any]]]()
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def bench_results(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Each scenario appends one dict: scenario, events, seconds, rss, min_rate, max_rss."""
    return request.config.stash.setdefault(RESULTS, [])


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayCluster]:
    """A durable throwaway PostgreSQL cluster for the run (skipped where there is none)."""
    try:
        cluster = ThrowawayCluster(durable=True)
        cluster.start()
    except Unavailable as exc:
        pytest.skip(f"PostgreSQL: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


STORES = os.environ.get("SELARAS_BENCH_STORES", "duckdb,postgresql").split(",")


@dataclass
class BenchStore:
    """Where a bench's centre keeps its data: ``args`` for ``selaras server``, and its bytes
    on disk for a data folder."""

    name: str
    args: list[str]
    size: Callable[[Path], int]


@pytest.fixture(params=STORES)
def centre_store(request: pytest.FixtureRequest) -> BenchStore:
    """DuckDB in the data folder, or a fresh database of the durable PostgreSQL cluster
    (``SELARAS_BENCH_STORES=duckdb`` runs one)."""
    if request.param == "duckdb":
        return BenchStore("duckdb", [], lambda data: sum(
            p.stat().st_size for p in data.glob("centre.duckdb*")))
    cluster: ThrowawayCluster = request.getfixturevalue("postgres")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    url = cluster.create_database(name)
    return BenchStore("postgresql", ["--store", url], lambda _: cluster.database_size(name))


@pytest.fixture(scope="session")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch folder for the whole benchmark run, removed at its end."""
    path = tmp_path_factory.mktemp("bench")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def table(results: list[dict[str, Any]]) -> list[str]:
    head = ("scenario", "events", "seconds", "events/s", "peak RSS MiB", "target", "met?")
    rows = [head]
    for r in results:
        rate = r["events"] / r["seconds"]
        rss_ok = r["rss"] is None or r["rss"] < r["max_rss"]
        missed = [what for what, ok in (("rate", rate >= r["min_rate"]), ("memory", rss_ok))
                  if not ok]
        rows.append((
            r["scenario"], f"{r['events']:,}", f"{r['seconds']:.2f}", f"{rate:,.0f}",
            "n/a" if r["rss"] is None else f"{r['rss'] / MiB:,.0f}",
            f">= {r['min_rate']:,} ev/s, < {r['max_rss'] / MiB:,.0f} MiB",
            "yes" if not missed else "no (" + ", ".join(missed) + ")"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i in (0, 5, 6) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, [])
    if results:
        terminalreporter.section("selaras engine throughput "
                                 "(seconds: best round; peak RSS: worst round)")
        for line in table(results):
            terminalreporter.write_line(line)
        if hasattr(os, "getloadavg"):  # other work on the machine slows the figures down
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            terminalreporter.write_line(f"load average now (1, 5, 15 min): {load}; "
                                        f"{os.cpu_count()} CPUs")
