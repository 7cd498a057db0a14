"""The centre at many schools (issue 8): memory, disk, start-up and one more school, against N.

One ``selaras server`` process on a data folder that grows, the way a deadline
fills a centre: schools are added (``school_add`` over the websocket; NPSNs in no order), each
registers one install and pushes its first sync of ``SCHOOL_EVENTS`` events
(the testing client, 16 schools at a time, in a child process). At each N of
``STEPS`` (100, 1,000 and 5,000; ``SELARAS_BENCH_STEPS=100,1000`` overrides):

- disk: the centre's files (``centre.duckdb`` and its WAL), or its PostgreSQL
  database (``pg_database_size``: tables and indexes, not the WAL), per event
  stored, against the Arrow payload bytes per event that the pushes sent;
- start-up: from the process start to "listening on", best of 3 restarts;
- idle RSS just after start-up, and the peak RSS once one more school is in;
- one more school: ``school_add``, register, and its first sync through the
  real client (an ``Install``, a generated small school imported, not timed,
  then ``run_sync``): seconds from the add to the end of the sync.

Targets: no failure at any N; idle RSS, start-up and one more school at the
largest N within 1.2x of those at the smallest; disk per stored event within
2x of the wire's. Runs on each store of ``SELARAS_BENCH_STORES`` (DuckDB, and
PostgreSQL on a durable throwaway cluster; RSS is the server process's, not
PostgreSQL's own). Prints a table; writes ``docs/bench/centre-scale-<store>.png``
(matplotlib) and ``.json`` beside it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from selaras.bench.conftest import BenchStore
from selaras.bench.test_sync_bench import (
    PASSWORD,
    USER,
    Centre,
    mib,
    run_child,
    small_batches,
    vm_hwm,
)

MODULE = "selaras.bench.test_centre_scale_bench"
STEPS = [int(n) for n in os.environ.get("SELARAS_BENCH_STEPS", "100,1000,5000").split(",")]
SCHOOL_EVENTS = 300
AT_ONCE = 16
DOCS = Path(__file__).resolve().parent.parent / "docs" / "bench"


def npsn_of(i: int) -> str:
    """The i-th school's NPSN, spread over the whole range the way real NPSNs arrive (in no
    order), so that no school's rows sit beside its neighbours' by luck."""
    return f"{(i * 48_271 + 10_000_000) % 100_000_000:08d}"


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


# -- children ---------------------------------------------------------------------------------

async def grow(url: str, token: str, first: int, count: int) -> dict[str, Any]:
    """Add schools first .. first+count-1; each registers and pushes its first sync."""
    from selaras.engine.protocol import Code, Limits, Registered
    from selaras.server.remote import admin_request
    from selaras.server.testing import ProtocolClient

    gate = asyncio.Semaphore(AT_ONCE)
    per_batch = Limits().max_batch_events
    sent = {"events": 0, "bytes": 0, "busy": 0}

    async def one(i: int) -> None:
        async with gate:
            npsn = npsn_of(i)
            reply = await admin_request(url, token, "school_add", npsn=npsn, nama=f"SMP {npsn}")
            assert reply.columns != ["error"], reply.message
            client = ProtocolClient(url, npsn)
            assert isinstance(await client.register(str(reply.rows[0][2]), USER, PASSWORD),
                              Registered)
            batches = small_batches(client.install, SCHOOL_EVENTS, per_batch)
            while True:
                out = await client.session("sync", {}, batches)
                if out.refused is not None and out.refused.code == Code.SERVER_BUSY:
                    sent["busy"] += 1
                    await asyncio.sleep(out.refused.retry_after_s or 1.0)
                    continue
                assert out.summary is not None, (out.refused, out.closed_code)
                assert out.summary[0].get(client.install) == SCHOOL_EVENTS
                break
            sent["events"] += SCHOOL_EVENTS
            sent["bytes"] += sum(len(b.to_bytes()) for b in batches)

    await asyncio.gather(*(one(i) for i in range(first, first + count)))
    return sent


async def one_more(url: str, token: str, npsn: str, rows: str, folder: str) -> dict[str, Any]:
    """Add, register and first-sync one school through the real client; seconds taken."""
    from selaras.client.install import Install, import_rows
    from selaras.client.sync import register, run_sync
    from selaras.server.remote import admin_request

    t = time.perf_counter()
    reply = await admin_request(url, token, "school_add", npsn=npsn, nama=f"SMP {npsn}")
    assert reply.columns != ["error"], reply.message
    answer = await register(url, npsn, str(reply.rows[0][2]), USER, PASSWORD)
    install = Install(Path(folder))
    install.init_registered(npsn, origin=answer.install, token=answer.token, url=url,
                            user=USER, role=answer.role, centre_key=answer.centre_key)
    with install.open() as session:
        setup_s = time.perf_counter() - t
        await asyncio.to_thread(import_rows, session, Path(rows))  # the operator's work
        t = time.perf_counter()
        report = await run_sync(session.store, session.identity, mode="sync", timeout_s=600)
        sync_s = time.perf_counter() - t
    assert report.ok and report.vectors_equal and report.checksums_equal, report.as_json()
    return {"seconds": setup_s + sync_s, "events": report.totals.events_up}


def child(what: str, *args: str) -> None:
    if what == "grow":
        result = asyncio.run(grow(args[0], args[1], int(args[2]), int(args[3])))
    else:
        result = asyncio.run(one_more(*args))
    print(json.dumps(result), flush=True)


# -- the parent -------------------------------------------------------------------------------

def start(data: Path, store: BenchStore) -> tuple[Centre, float]:
    t = time.perf_counter()
    centre = Centre(data, *store.args)
    return centre, time.perf_counter() - t


def test_centre_at_many_schools(folder: Path, centre_store: BenchStore,
                                bench_results: list[dict[str, Any]]) -> None:
    from selaras.bench.generate import generate, write

    data = folder / f"centre-scale-{centre_store.name}"
    centre, _ = start(data, centre_store)
    token = centre.token
    grown = {"events": 0, "bytes": 0, "busy": 0}
    schools, stored, figures = 0, 0, []
    try:
        for step in STEPS:
            r = run_child(folder / "grow.stderr", "grow", centre.url, token, str(schools),
                          str(step - schools), module=MODULE)
            grown = {k: grown[k] + r[k] for k in grown}
            schools = step
            stored = grown["events"]
            centre.stop()
            disk = centre_store.size(data)
            startups = []
            for _ in range(3):
                centre, seconds = start(data, centre_store)
                startups.append(seconds)
                idle = vm_rss(centre.proc.pid)
                if len(startups) < 3:
                    centre.stop()
            npsn = npsn_of(10_000_000 + step)  # not one of the grown schools'
            rows = folder / f"{npsn}.jsonl"
            write(rows, generate("small", 1, npsn, 1))
            one = run_child(folder / "one.stderr", "one", centre.url, token, npsn, str(rows),
                            str(folder / f"install-{npsn}"), module=MODULE)
            figures.append({
                "schools": schools, "events_stored": stored, "disk_bytes": disk,
                "disk_per_event": disk / stored,
                "wire_per_event": grown["bytes"] / grown["events"],
                "startup_s": min(startups), "idle_rss": idle,
                "peak_rss_one_more": vm_hwm(centre.proc.pid),
                "one_more_s": one["seconds"], "one_more_events": one["events"],
                "busy_retries": grown["busy"]})
            schools += 1
            print(f"\n{schools - 1:,} schools: {json.dumps(figures[-1])}", flush=True)
    finally:
        centre.stop()
    report(figures, centre_store.name)
    first, last = figures[0], figures[-1]
    for f in figures:
        bench_results.append({"scenario": f"centre ({centre_store.name}) at "
                                          f"{f['schools']:,} schools: one more",
                              "events": f["one_more_events"], "seconds": f["one_more_s"],
                              "rss": f["peak_rss_one_more"], "min_rate": 0,
                              "max_rss": int(1.2 * first["peak_rss_one_more"])})
    assert [f["schools"] for f in figures] == STEPS  # no failure at any N
    print(f"\n{centre_store.name}: ratios {last['schools']:,} / {first['schools']:,} schools: "
          "idle RSS "
          f"{last['idle_rss'] / first['idle_rss']:.2f}, start-up "
          f"{last['startup_s'] / first['startup_s']:.2f}, one more school "
          f"{last['one_more_s'] / first['one_more_s']:.2f} (targets <= 1.2); disk per event "
          f"/ wire per event {last['disk_per_event'] / last['wire_per_event']:.2f} "
          "(target <= 2)")


def report(figures: list[dict[str, Any]], store: str) -> None:
    head = ("schools", "events", "disk", "disk/ev", "wire/ev", "start-up", "idle RSS",
            "peak RSS +1", "one more")
    rows = [head] + [(
        f"{f['schools']:,}", f"{f['events_stored']:,}", f"{f['disk_bytes'] / 2**20:,.0f} MiB",
        f"{f['disk_per_event']:,.0f} B", f"{f['wire_per_event']:,.0f} B",
        f"{f['startup_s']:.2f} s", mib(f["idle_rss"]), mib(f["peak_rss_one_more"]),
        f"{f['one_more_s']:.2f} s") for f in figures]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    print()
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / f"centre-scale-{store}.json").write_text(json.dumps(figures, indent=1) + "\n")
    plot(figures, DOCS / f"centre-scale-{store}.png", store)


def plot(figures: list[dict[str, Any]], path: Path, store: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [f["schools"] for f in figures]
    fig, (mem, secs, disk) = plt.subplots(1, 3, figsize=(14, 4))
    mem.plot(n, [f["idle_rss"] / 2**20 for f in figures], "o-", label="idle after start-up")
    mem.plot(n, [f["peak_rss_one_more"] / 2**20 for f in figures], "s-",
             label="peak, one more school")
    mem.set(xscale="log", xlabel="schools registered", ylabel="MiB", ylim=(0, None),
            title=f"Centre server memory ({store})")
    mem.legend()
    secs.plot(n, [f["startup_s"] for f in figures], "o-", label="start-up")
    secs.plot(n, [f["one_more_s"] for f in figures], "s-", label="one more school")
    secs.set(xscale="log", xlabel="schools registered", ylabel="seconds", ylim=(0, None),
             title=f"Centre time ({store})")
    secs.legend()
    disk.plot(n, [f["disk_per_event"] for f in figures], "o-", label="disk per stored event")
    disk.plot(n, [f["wire_per_event"] for f in figures], "s--", label="wire per event")
    disk.set(xscale="log", xlabel="schools registered", ylabel="bytes", ylim=(0, None),
             title=f"Centre disk ({store})")
    disk.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    child(*sys.argv[1:])
