"""Sync throughput against a real ``selaras server`` process over loopback (issue 3, item 9).

Run on demand with ``make bench`` (``pytest bench -q --benchmark-only -s``);
``make test`` does not collect bench/. docs/benchmarks.md ("Sync") has the figures.

a. ``test_push_and_pull_large_school``: the large school at scale 40 (about
   1.25 million rows, the engine bench's file; ``SELARAS_BENCH_CACHE`` keeps it)
   is imported (not timed) into a fresh install registered with a fresh
   centre, then ``run_sync(mode="sync")`` pushes it to the empty centre: events
   per second durable at the centre (the clock stops when the session ends,
   every batch acknowledged after its commit). Then a second fresh install
   registers and pulls it all (``mode="pull"``): events per second durable in
   that install. In the same run the bare pipeline (``bench.baseline``, a child
   process like ``test_baseline_bench``) sends the same rows, for the ratio
   (target: end to end at least half the bare rate). The server's peak RSS is
   its ``VmHWM`` (``/proc/PID/status``), read after the push and after the pull
   (target: below 2 GiB). It runs once per store of ``SELARAS_BENCH_STORES``
   (DuckDB, PostgreSQL on a durable throwaway cluster), beside one bare round.
b. ``test_many_schools_at_once``, the deadline: one school pushes 500 events
   alone (the single-school figure), then 500 schools (``SELARAS_BENCH_SCHOOLS``),
   each with one install, push about 500 events each at once; the clients are
   asyncio sessions (``server.testing.ProtocolClient``) in one child process. A
   ``server_busy`` refusal is honoured (sleep ``retry_after_s``, again) and
   counted. Reported: completed and failed sessions (target: none failed), the
   events/s of all against the school alone, p50 / p99 / max session time (from
   the first attempt to the summary; their distribution in
   ``docs/bench/deadline-<store>-<processes>.png``), busy retries, the servers'
   commits and events per commit. Through one server process on each store, and
   through two processes sharing the PostgreSQL store (the schools take them in
   turn).

The clients run in a child process (this module with ``-m``), the server in
another (``selaras server --port 0``); the pytest process only drives them.
``SELARAS_BENCH_SCALE`` runs a smaller school (a quick check of the harness).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from selaras.bench.conftest import BenchStore
from selaras.bench.generate import rows_file
from selaras.bench.test_baseline_bench import start_round as start_bare_round
from selaras.engine.events import Batch, Event

MODULE = "selaras.bench.test_sync_bench"
SIZE, SCALE, SEED = "large", int(os.environ.get("SELARAS_BENCH_SCALE", "40")), 1
NPSN = "20219151"  # the engine and baseline benches' school: one cached file for all
USER, PASSWORD = "op@sekolah.id", "rahasia-bench"
SWARM_SCHOOLS = int(os.environ.get("SELARAS_BENCH_SCHOOLS", "500"))  # + 1 alone first
SWARM_EVENTS = 500
MAX_SERVER_RSS = 2 * 1024**3
TIMEOUT_S = 3600.0
DOCS = Path(__file__).resolve().parent.parent / "docs" / "bench"
SELARAS = str(Path(sys.executable).with_name("selaras"))


def vm_hwm(pid: int) -> int | None:
    """Peak resident set of process ``pid`` in bytes (Linux ``VmHWM``), None elsewhere."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def own_peak_rss() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# -- child: the large school, pushed by one install and pulled by another ------------------

async def large(url: str, kode: str, rows: str, folder: str, server_pid: int) -> dict[str, Any]:
    from selaras.client.install import Install, import_rows
    from selaras.client.sync import register, run_sync

    async def enrol(name: str) -> Any:
        answer = await register(url, NPSN, kode, USER, PASSWORD)
        install = Install(Path(folder) / name)
        install.init_registered(NPSN, origin=answer.install, token=answer.token, url=url,
                                user=USER, role=answer.role, centre_key=answer.centre_key)
        return install

    out: dict[str, Any] = {}
    with (await enrol("a")).open() as a:
        first = await run_sync(a.store, a.identity, mode="pull", timeout_s=600)
        assert first.ok
        t = time.perf_counter()
        await asyncio.to_thread(import_rows, a, Path(rows))
        out["import_s"] = time.perf_counter() - t
        t = time.perf_counter()
        push = await run_sync(a.store, a.identity, mode="sync", timeout_s=TIMEOUT_S)
        out["push_s"] = time.perf_counter() - t
        assert push.ok and push.vectors_equal and push.checksums_equal, push.as_json()
        out["push_events"] = push.totals.events_up
        out["push_bytes"] = push.totals.bytes_up
        out["push_attempts"] = push.attempts
        out["server_rss_after_push"] = vm_hwm(server_pid)
    b_install = await enrol("b")  # registered like `selaras init`; its pull is timed
    with b_install.open() as b:
        t = time.perf_counter()
        pull = await run_sync(b.store, b.identity, mode="pull", timeout_s=TIMEOUT_S)
        out["pull_s"] = time.perf_counter() - t
        assert pull.ok and pull.vectors_equal and pull.checksums_equal, pull.as_json()
        out["pull_events"] = pull.totals.events_down
        out["pull_bytes"] = pull.totals.bytes_down
        out["pull_attempts"] = pull.attempts
        out["server_rss_after_pull"] = vm_hwm(server_pid)
    out["client_rss"] = own_peak_rss()
    return out


# -- child: many schools at once -------------------------------------------------------------

def small_batches(origin: str, n: int, per_batch: int) -> list[Batch]:
    events = [Event(origin=origin, seq=s, hlc=1_700_000_000_000 + s, entity="peserta_didik",
                    row_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{origin}/{s}")),
                    changes={"nik": f"{s:016d}", "nama": f"Siswa {s}"},
                    author=USER, role="operator")
              for s in range(1, n + 1)]
    return [Batch.from_events(events[i:i + per_batch]) for i in range(0, n, per_batch)]


async def swarm(urls: str, schools_file: str) -> dict[str, Any]:
    """The deadline's clients; ``urls`` (comma-separated) take the schools in turn."""
    from selaras.engine.protocol import Code, Limits, Registered
    from selaras.server.testing import ProtocolClient

    schools: list[tuple[str, str]] = json.loads(Path(schools_file).read_text())
    servers = urls.split(",")
    clients = [ProtocolClient(servers[i % len(servers)], npsn)
               for i, (npsn, _) in enumerate(schools)]
    registering = asyncio.Semaphore(16)

    async def reg(c: ProtocolClient, kode: str) -> None:
        async with registering:
            assert isinstance(await c.register(kode, USER, PASSWORD), Registered)

    await asyncio.gather(*(reg(c, k) for c, (_, k) in zip(clients, schools, strict=True)))
    per_batch = Limits().max_batch_events
    work = [small_batches(c.install, SWARM_EVENTS, per_batch) for c in clients]
    busy = [0] * len(clients)
    times = [0.0] * len(clients)
    failed: list[str] = []
    start = asyncio.Event()

    async def one(i: int) -> None:
        await start.wait()
        t = time.perf_counter()
        try:
            while True:
                out = await clients[i].session("sync", {}, work[i])
                if out.refused is not None and out.refused.code == Code.SERVER_BUSY:
                    busy[i] += 1
                    await asyncio.sleep(out.refused.retry_after_s or 1.0)
                    continue
                assert out.summary is not None, (out.refused, out.closed_code)
                assert out.summary[0].get(clients[i].install) == SWARM_EVENTS
                break
        except Exception as exc:  # counted and reported: the target is none
            failed.append(f"{clients[i].npsn}: {exc!r}"[:300])
        times[i] = time.perf_counter() - t

    # The single-school figure first: the first school alone on the quiet server.
    start.set()
    t = time.perf_counter()
    await one(0)
    alone_s = time.perf_counter() - t
    start.clear()
    tasks = [asyncio.create_task(one(i)) for i in range(1, len(clients))]
    await asyncio.sleep(0.1)
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    return {"seconds": time.perf_counter() - t0, "times": times[1:], "busy": busy[1:],
            "events": SWARM_EVENTS * (len(clients) - 1), "alone_s": alone_s,
            "failed": failed, "client_rss": own_peak_rss()}


def child(what: str, *args: str) -> None:
    if what == "large":
        result = asyncio.run(large(args[0], args[1], args[2], args[3], int(args[4])))
    else:
        result = asyncio.run(swarm(args[0], args[1]))
    print(json.dumps(result), flush=True)


def run_child(log: Path, *args: str, module: str = MODULE) -> dict[str, Any]:
    """Run ``module``'s ``child(*args)`` in a process; the JSON it printed last."""
    with open(log, "wb") as err:
        proc = subprocess.run([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                              stderr=err, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, log.read_text(errors="replace")[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- the parent ------------------------------------------------------------------------------

class Centre:
    """A ``selaras server`` process on 127.0.0.1, any free port; without the consent gate
    unless ``gate`` (what the gate costs is test_gate_bench's)."""

    def __init__(self, data: Path, *extra: str, log: Path | None = None,
                 gate: bool = False) -> None:
        self.data = data
        self.log = log or data.with_name(data.name + ".stderr")
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [SELARAS, "server", "--data", str(data), "--port", "0",
                 *([] if gate else ["--no-consent-gate"]), *extra],
                stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), self.log.read_text(errors="replace")
        self.url = line.removeprefix("listening on ")
        self.token = (data / "admin.token").read_text().strip()

    def admin(self, command: str, **args: str) -> Any:
        from selaras.server.remote import admin_request
        return asyncio.run(admin_request(self.url, self.token, command, **args))

    def add_school(self, npsn: str) -> str:
        reply = self.admin("school_add", npsn=npsn, nama=f"SMA {npsn}", bentuk="SMA")
        assert reply.columns != ["error"], reply.message
        return str(reply.rows[0][2])

    def stats(self) -> dict[str, float]:
        reply = self.admin("stats")
        return {str(k): float(v) for k, v in reply.rows}

    def stop(self) -> int | None:
        """SIGTERM; the peak RSS read just before."""
        rss = vm_hwm(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        assert code == 0, self.log.read_text(errors="replace")[-4000:]
        return rss


@pytest.fixture(name="rows_file", scope="session")
def large_school(folder: Path) -> Path:
    return rows_file(folder, SIZE, SCALE, NPSN, SEED)


def mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


@pytest.fixture(scope="session")
def bare(folder: Path, rows_file: Path) -> dict[str, Any]:
    """The bare pipeline's round with the same rows, once for the run."""
    bare = start_bare_round(rows_file, folder / "bare.duckdb")
    bare.go()
    result: dict[str, Any] = bare.finish()
    print(f"\nbare pipeline: {result['rows']:,} rows in {result['seconds']:.2f} s = "
          f"{result['rows'] / result['seconds']:,.0f} rows/s (its process: "
          f"{mib(result.get('rss'))})")
    return result


def test_push_and_pull_large_school(benchmark: Any, folder: Path, rows_file: Path,
                                    bare: dict[str, Any], centre_store: BenchStore,
                                    bench_results: list[dict[str, Any]]) -> None:
    """(a) Push the large school to an empty centre, pull it into a second install."""
    bare_rate = bare["rows"] / bare["seconds"]
    centre = Centre(folder / f"centre-a-{centre_store.name}", *centre_store.args)
    try:
        kode = centre.add_school(NPSN)
        box: dict[str, Any] = {}

        def once() -> None:
            box.update(run_child(folder / "large.stderr", "large", centre.url, kode,
                                 str(rows_file), str(folder / f"installs-{centre_store.name}"),
                                 str(centre.proc.pid)))

        benchmark.pedantic(once, rounds=1, iterations=1)
        stats = centre.stats()
    finally:
        server_rss = centre.stop()
    r = box
    push_rate, pull_rate = r["push_events"] / r["push_s"], r["pull_events"] / r["pull_s"]
    benchmark.extra_info.update(r, bare_rows_per_s=round(bare_rate), server_peak_rss=server_rss,
                                push_events_per_s=round(push_rate),
                                pull_events_per_s=round(pull_rate))
    on = f" ({centre_store.name})"
    for name, events, seconds in (("sync a. push to centre" + on, r["push_events"], r["push_s"]),
                                  ("sync a. pull from centre" + on, r["pull_events"],
                                   r["pull_s"])):
        bench_results.append({"scenario": name, "events": events, "seconds": seconds,
                              "rss": server_rss, "min_rate": int(bare_rate / 2),
                              "max_rss": MAX_SERVER_RSS})
    print(f"\ncentre on {centre_store.name}:")
    print(f"import into install A (not timed): {r['import_s']:.1f} s")
    print(f"push:  {r['push_events']:,} events, {r['push_bytes'] / 2**20:,.0f} MiB in "
          f"{r['push_s']:.2f} s = {push_rate:,.0f} events/s "
          f"({push_rate / bare_rate:.2f} of bare), {r['push_attempts']} session(s); "
          f"server peak RSS so far {mib(r['server_rss_after_push'])}")
    print(f"pull:  {r['pull_events']:,} events, {r['pull_bytes'] / 2**20:,.0f} MiB in "
          f"{r['pull_s']:.2f} s = {pull_rate:,.0f} events/s "
          f"({pull_rate / bare_rate:.2f} of bare), {r['pull_attempts']} session(s); "
          f"server peak RSS {mib(server_rss)}; client process peak RSS {mib(r['client_rss'])}")
    print(f"server stats: commits {stats.get('commits', 0):,.0f}, "
          f"events per commit {stats.get('events_per_commit', 0):,.0f}")
    assert r["pull_events"] >= r["push_events"]  # the pull has the centre's seed events too


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


@pytest.mark.parametrize("processes", [1, 2])
def test_many_schools_at_once(benchmark: Any, folder: Path, centre_store: BenchStore,
                              processes: int, bench_results: list[dict[str, Any]]) -> None:
    """(b) The deadline: 500 schools push about 500 events each at once, through one server
    process (or two sharing the PostgreSQL store)."""
    if processes > 1 and centre_store.name == "duckdb":
        pytest.skip("one process has a DuckDB file")
    data = folder / f"centre-b-{centre_store.name}-{processes}"
    centres = [Centre(data, *centre_store.args, log=folder / f"{data.name}-{i}.stderr")
               for i in range(processes)]
    centre = centres[0]
    try:
        schools = [(f"30{i:06d}", centre.add_school(f"30{i:06d}"))
                   for i in range(SWARM_SCHOOLS + 1)]
        schools_file = folder / "schools.json"
        schools_file.write_text(json.dumps(schools))
        box: dict[str, Any] = {}

        def once() -> None:
            box.update(run_child(folder / "swarm.stderr", "swarm",
                                 ",".join(c.url for c in centres), str(schools_file)))

        benchmark.pedantic(once, rounds=1, iterations=1)
        stats = [c.stats() for c in centres]
    finally:
        peaks = [c.stop() for c in centres]
    r = box
    times, failed = r["times"], r["failed"]
    p50, p99 = percentile(times, 50), percentile(times, 99)
    retries = sum(r["busy"])
    rate, alone_rate = r["events"] / r["seconds"], SWARM_EVENTS / r["alone_s"]
    server_rss = max(p or 0 for p in peaks)
    where = f"{processes} server process{'es' if processes > 1 else ''} ({centre_store.name})"
    benchmark.extra_info.update(p50_s=p50, p99_s=p99, busy_retries=retries, failed=len(failed),
                                server_peak_rss=server_rss, store=centre_store.name,
                                processes=processes)
    bench_results.append({"scenario": f"sync b. {len(times)} schools at once, {where}",
                          "events": r["events"], "seconds": r["seconds"], "rss": server_rss,
                          "min_rate": 0, "max_rss": MAX_SERVER_RSS})
    print(f"\n{where}: one school alone first: {SWARM_EVENTS} events in {r['alone_s']:.2f} s "
          f"= {alone_rate:,.0f} events/s")
    print(f"{len(times)} schools x {SWARM_EVENTS} events at once: "
          f"{len(times) - len(failed)} completed, {len(failed)} failed, in {r['seconds']:.2f} s "
          f"= {rate:,.0f} events/s ({rate / alone_rate:.1f}x the school alone); session p50 "
          f"{p50:.2f} s, p99 {p99:.2f} s, max {max(times):.2f} s; busy retries {retries} "
          f"(schools retried: {sum(1 for b in r['busy'] if b)}); "
          f"server peak RSS {mib(server_rss)} (largest process)")
    for i, st in enumerate(stats):
        print(f"server {i} stats: " + ", ".join(f"{k} {v:,.1f}" for k, v in sorted(st.items())))
    for line in failed[:5]:
        print(f"failed: {line}")
    plot_latencies(times, DOCS / f"deadline-{centre_store.name}-{processes}.png",
                   f"{len(times)} schools at once, {where}")
    assert len(times) == SWARM_SCHOOLS and not failed


def plot_latencies(times: list[float], path: Path, title: str) -> None:
    """The distribution of session times, p50 and p99 marked (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(times, bins=40)
    for p in (50, 99):
        ax.axvline(percentile(times, p), linestyle="--", color="black")
        ax.text(percentile(times, p), ax.get_ylim()[1] * 0.95, f" p{p}", va="top")
    ax.set(xlabel="session time, first attempt to summary (s)", ylabel="schools", title=title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    child(*sys.argv[1:])
