"""What the centre's gate costs (issue 11): the same push with the gate on and skipped.

Run on demand: ``pytest bench/test_gate_bench.py -q --benchmark-only -s``
(``make bench`` runs it with the others). docs/benchmarks.md ("The gate") has
the figures.

Per repetition and per centre store, two fresh centres: one as schools get it
(the consent gate on: each batch appended as it comes in the push's own
transaction, at Done checked by Validasi Lokal's rules and committed, protocol
R20) and one started with
``--no-consent-gate``. Each gets a fresh install of the large school
(``SELARAS_BENCH_GATE_SCALE``, default 4: about 100,000 rows), set up the
same way and not timed: registered, pulled, the rows imported, the principal's
account added, Tukar Pengguna, the sheet confirmed. The timed part is the push,
``run_sync(mode="sync")``, until the session ends with every event durable at
the centre. The order of the two alternates per repetition; the ratio of the
medians is gated / ungated (target: at most 1.25), with the centre's ``gate``
stage time beside it.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from selaras.bench.conftest import BenchStore, ThrowawayCluster
from selaras.bench.generate import rows_file
from selaras.bench.test_sync_bench import NPSN, PASSWORD, SEED, SIZE, USER, Centre, run_child

MODULE = "selaras.bench.test_gate_bench"
SCALE = int(os.environ.get("SELARAS_BENCH_GATE_SCALE", "4"))
REPS = int(os.environ.get("SELARAS_BENCH_REPS", "3"))
KEPSEK = "kepsek@sekolah.id"
TARGET = 1.25
TIMEOUT_S = 3600.0
DOCS = Path(__file__).resolve().parent.parent / "docs" / "bench"


# -- child: one install set up as a school does, then its push timed --------------------------

def push(url: str, kode: str, token: str, rows: str, folder: str) -> dict[str, Any]:
    from selaras.client import principal
    from selaras.client.install import Install, import_rows
    from selaras.client.sync import register, run_sync
    from selaras.server.remote import admin_request

    def centre_stages() -> dict[str, float]:
        reply = asyncio.run(admin_request(url, token, "stats"))
        return {str(k)[:-2]: float(v) for k, v in reply.rows if str(k).endswith("_s")}

    answer = asyncio.run(register(url, NPSN, kode, USER, PASSWORD))
    install = Install(Path(folder))
    install.init_registered(NPSN, origin=answer.install, token=answer.token, url=url,
                            user=USER, role=answer.role, centre_key=answer.centre_key)
    with install.open() as s:
        assert asyncio.run(run_sync(s.store, s.identity, mode="pull", timeout_s=TIMEOUT_S)).ok
        import_rows(s, Path(rows))
        principal.add_principal(s, kode, KEPSEK, PASSWORD)
        principal.switch_user(s, kode, KEPSEK, PASSWORD)
        principal.confirm(s, principal.sheet(s))
        before = centre_stages()
        t = time.perf_counter()
        report = asyncio.run(run_sync(s.store, s.identity, mode="sync", timeout_s=TIMEOUT_S))
        seconds = time.perf_counter() - t
        assert report.ok and report.vectors_equal and report.checksums_equal, report.as_json()
        after = centre_stages()
    return {"seconds": seconds, "events": report.totals.events_up,
            "centre": {k: round(v - before.get(k, 0.0), 6)
                       for k, v in after.items() if v > before.get(k, 0.0)}}


def child(*args: str) -> None:
    print(json.dumps(push(*args)), flush=True)


# -- the parent ------------------------------------------------------------------------------

def test_gate_cost(benchmark: Any, folder: Path, centre_store: BenchStore,
                   request: pytest.FixtureRequest) -> None:
    """The large school's push through a gated centre and an ungated one, REPS times."""
    rows = rows_file(folder, SIZE, SCALE, NPSN, SEED)
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}

    def store_args() -> list[str]:
        if centre_store.name == "duckdb":
            return []
        cluster: ThrowawayCluster = request.getfixturevalue("postgres")
        return ["--store", cluster.create_database(f"gate_{uuid.uuid4().hex[:12]}")]

    def run_all() -> None:
        for rep in range(REPS):
            for gate in (("on", "off") if rep % 2 == 0 else ("off", "on")):
                name = f"gate-{centre_store.name}-{rep}-{gate}"
                centre = Centre(folder / f"centre-{name}", *store_args(), gate=gate == "on")
                try:
                    kode = centre.add_school(NPSN)
                    runs[gate].append(run_child(
                        folder / "gate.stderr", centre.url, kode, centre.token, str(rows),
                        str(folder / f"install-{name}"), module=MODULE))
                finally:
                    centre.stop()

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    lines = report(centre_store.name, runs)
    print("\n" + "\n".join(lines))
    DOCS.mkdir(exist_ok=True)
    (DOCS / f"gate-{centre_store.name}.txt").write_text("\n".join(lines) + "\n")
    benchmark.extra_info.update(runs=runs)
    assert all(r["events"] == runs["on"][0]["events"] for r in runs["on"] + runs["off"])


def report(store: str, runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    on = [r["seconds"] for r in runs["on"]]
    off = [r["seconds"] for r in runs["off"]]
    check = [r["centre"].get("gate.check", 0.0) for r in runs["on"]]
    commit = [r["centre"].get("gate.commit", 0.0) for r in runs["on"]]
    ratio = statistics.median(on) / statistics.median(off)
    events = runs["on"][0]["events"]
    return [
        f"the consent gate's cost, centre on {store}: the large school x{SCALE} "
        f"({events:,} events) pushed, {len(on)} repetitions (median, min-max)",
        f"  gate on:      {statistics.median(on):.2f} s ({min(on):.2f}-{max(on):.2f}); "
        f"at Done: Validasi Lokal {statistics.median(check):.2f} s, the commit "
        f"{statistics.median(commit):.2f} s",
        f"  gate skipped: {statistics.median(off):.2f} s ({min(off):.2f}-{max(off):.2f})",
        f"  on / skipped: {ratio:.2f} (target <= {TARGET}: "
        f"{'met' if ratio <= TARGET else 'NOT met'})",
    ]


if __name__ == "__main__":
    child(*sys.argv[1:])
