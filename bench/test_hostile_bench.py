"""Hostile input against a real ``selaras server`` process (issue 9's figures).

Run with ``make bench`` (or ``pytest bench/test_hostile_bench.py -q --benchmark-only -s``).

a. ``test_a_sync_while_another_school_floods``: a new school pushes
   ``SYNC_EVENTS`` events (batches of 1,000, ``server.testing.ProtocolClient``)
   on a quiet server, then another new school the same while a child process
   floods the server on behalf of school A (``REPS`` times, side by side):
   registration
   guesses, Hellos with wrong tokens, silent connections, garbage and
   zstd-compressed batches of the batch limit from A's install, and deflate
   bombs. Reported: B's median (min-max) sync time of ``REPS`` each way and
   their ratio (target: under 1.5), and what the flood got done.
b. ``test_peak_memory_of_hostile_input``: a fresh server's peak RSS (``VmHWM``)
   once a school is registered, then after each of the worst inputs tried (each
   sent three times, the answer noted), then after an honest push for
   comparison: the growth against the batch limit (4 MiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
from websockets.asyncio.client import connect

from selaras.engine.events import Batch, BatchFile, Event
from selaras.engine.protocol import Events, Limits, Registered, encode
from selaras.server.testing import ProtocolClient

from .test_sync_bench import Centre, mib, vm_hwm

A, B = "20100001", "20100002"
USER, PASSWORD = "op@sekolah.id", "rahasia-bench"
SYNC_EVENTS = int(os.environ.get("SELARAS_BENCH_FLOOD_EVENTS", "20000"))
REPS = 3
MODULE = "selaras.bench.test_hostile_bench"


def events(origin: str, first: int, n: int) -> list[Batch]:
    """``n`` events of ``origin`` from seq ``first``, in batches of 1,000."""
    out = []
    for start in range(first, first + n, 1000):
        out.append(Batch.from_events([
            Event(origin=origin, seq=s, hlc=1_000 + s, entity="peserta_didik",
                  row_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{origin}/{s % 500}")),
                  changes={"nama": f"Murid {s}", "nik": f"{s:016d}"}, author=USER,
                  role="operator")
            for s in range(start, min(first + n, start + 1000))]))
    return out


# -- the worst inputs ----------------------------------------------------------------------------


def zstd_bomb(origin: str) -> bytes:
    """A frame whose batch is Arrow IPC with zstd bodies: a million rows (212 MiB
    inflated) in 3.4 MiB, under the batch limit."""
    honest = Batch.from_events([Event(origin=origin, seq=1, hlc=5, entity="peserta_didik",
                                      row_id=str(uuid.uuid4()), changes={"nama": "x"})])
    t = honest.tables["peserta_didik"]
    big = pa.concat_tables([t] * (1 << 14)).combine_chunks()
    big = pa.concat_tables([big] * 64).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, big.schema,
                           options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(big)
    f = msgspec.msgpack.decode(honest.to_bytes(), type=BatchFile)
    payload = msgspec.msgpack.encode(BatchFile({"peserta_didik": sink.getvalue().to_pybytes()},
                                               f.contexts))
    return encode(Events(1, 1, payload))


def garbage(limits: Limits) -> bytes:
    """A frame of the batch limit whose payload is random bytes."""
    return encode(Events(1, limits.max_batch_events, os.urandom(limits.max_batch_bytes - 64)))


def widest(origin: str) -> bytes:
    """As many events as fit the batch limit, each as small as an event gets."""
    batch = Batch.from_events([Event(origin=origin, seq=s, hlc=s, entity="peserta_didik",
                                     row_id=str(uuid.uuid4()), changes={})
                               for s in range(1, 19_000)])
    return encode(Events(1, len(batch), batch.to_bytes()))


async def send_raw(client: ProtocolClient, frame: bytes) -> str:
    out = await client.raw_session([frame], wait_s=20)
    return str(out.refused.code) if out.refused else f"closed {out.closed_code}"


async def deflate_bomb(url: str) -> str:
    async with connect(url, compression="deflate", max_size=None) as ws:
        await ws.send(bytes(256 << 20))
        try:
            await ws.recv()
        except Exception as exc:  # the close is what we wait for
            return type(exc).__name__
    return "answered"


# -- child: the flood ------------------------------------------------------------------------------


async def flood(url: str, install: str, token: str, seconds: float) -> dict[str, int]:
    """School A's install and strangers at every door, for ``seconds``."""
    a = ProtocolClient(url, A, install, token)
    limits = Limits()
    frames = [garbage(limits), zstd_bomb(install)]
    done = DONE
    stop = time.monotonic() + seconds

    async def loop(name: str, attempt: Any) -> None:
        while time.monotonic() < stop:
            with contextlib.suppress(Exception):
                await attempt()
            done[name] = done.get(name, 0) + 1

    async def guess() -> None:
        await ProtocolClient(url, A).register("AAAA-BBBB-CCCC", USER, "x")

    async def bad_hello() -> None:
        await ProtocolClient(url, A, install, "wrong").session("pull")

    async def junk() -> None:
        await send_raw(a, frames[done.get("junk", 0) % 2])

    async def bomb() -> None:
        await deflate_bomb(url)

    async def silent() -> None:
        async with connect(url, compression=None) as ws:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.recv(), 15)

    tasks = ([loop("guess", guess) for _ in range(8)] + [loop("bad_hello", bad_hello)
                                                         for _ in range(4)]
             + [loop("junk", junk) for _ in range(2)] + [loop("bomb", bomb)]
             + [loop("silent", silent) for _ in range(50)])
    await asyncio.gather(*tasks)
    return done


ATTACKER = "127.0.0.2"  # loopback too, but not the schools' address
DONE: dict[str, int] = {}  # attempts of each kind: printed when the parent stops the flood


def child(what: str, *args: str) -> None:
    # The flood comes from an address of its own, as it would: what limits it per address
    # then limits it alone.
    from selaras.server import remote, testing
    testing.connect = remote.connect = functools.partial(connect, local_addr=(ATTACKER, 0))
    globals()["connect"] = testing.connect

    def stopped(*_: object) -> None:
        print(json.dumps(DONE), flush=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, stopped)
    asyncio.run(flood(args[0], args[1], args[2], float(args[3])))
    stopped()


# -- the parent ------------------------------------------------------------------------------------


def registered(centre: Centre, npsn: str) -> ProtocolClient:
    kode = centre.add_school(npsn)
    client = ProtocolClient(centre.url, npsn)
    assert isinstance(asyncio.run(client.register(kode, USER, PASSWORD)), Registered)
    return client


async def timed_sync(b: ProtocolClient, first: int) -> float:
    batches = events(b.install, first, SYNC_EVENTS)
    vector = {} if first == 1 else {b.install: first - 1}
    t0 = time.perf_counter()
    out = await b.session("sync", vector, batches)
    seconds = time.perf_counter() - t0
    assert out.refused is None and out.summary is not None, out
    assert out.summary[0][b.install] == first + SYNC_EVENTS - 1
    return seconds


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def test_a_sync_while_another_school_floods(benchmark: Any, folder: Path) -> None:
    centre = Centre(folder / "flood-centre")
    quiet: list[float] = []
    loud: list[float] = []
    floods: list[dict[str, int]] = []
    try:
        a = registered(centre, A)
        # Side by side: a fresh school each time, quiet then flooded.
        schools = [(registered(centre, f"2020{rep:04d}"), registered(centre, f"2030{rep:04d}"))
                   for rep in range(REPS)]
        for rep, (calm, busy) in enumerate(schools):
            quiet.append(asyncio.run(timed_sync(calm, 1)))
            with flooding(centre.url, a, folder / f"flood-{rep}.stderr") as done:
                loud.append(asyncio.run(timed_sync(busy, 1)))
            floods.append(done)
        stats = centre.stats()
    finally:
        rss = centre.stop()
    ratio = statistics.median(loud) / statistics.median(quiet)
    print(f"\na school pushes {SYNC_EVENTS} events: quiet {spread(quiet)}, "
          f"while school A floods {spread(loud)}: ratio {ratio:.2f} (target < 1.5); "
          f"refusals {stats.get('refusals', 0):.0f}, busy {stats.get('busy_refusals', 0):.0f}, "
          f"server peak RSS {mib(rss)}")
    print(f"the flood's attempts, each time: {floods}")
    benchmark.extra_info.update(quiet_s=quiet, flood_s=loud, ratio=ratio)
    benchmark.pedantic(lambda: None, rounds=1)
    assert ratio < 1.5


@contextlib.contextmanager
def flooding(url: str, a: ProtocolClient, log: Path) -> Any:
    """A child process flooding the centre on behalf of school A, at full strength."""
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", MODULE, "flood", url, a.install, a.token,
                                 "3600"], stdout=subprocess.PIPE, stderr=err, text=True)
    done: dict[str, int] = {}
    try:
        time.sleep(3)
        yield done
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        done.update(json.loads(out.strip().splitlines()[-1]) if out.strip() else {})


def test_peak_memory_of_hostile_input(benchmark: Any, folder: Path) -> None:
    centre = Centre(folder / "memory-centre")
    limits = Limits()
    rows = []
    try:
        a = registered(centre, A)
        base = vm_hwm(centre.proc.pid) or 0
        rows.append(("started, one school registered", base, ""))
        refused = [("garbage payload at the batch limit", lambda: send_raw(a, garbage(limits))),
                   ("zstd Arrow: 1 M rows, 212 MiB inflated", lambda: send_raw(a, zstd_bomb(
                       a.install))),
                   ("256 MiB of zeros, deflated", lambda: deflate_bomb(centre.url))]
        # Taken, not refused: the most events a batch holds, as small as they get.
        attempts = [*refused, ("the widest batch (19,000 empty events)", lambda: send_raw(
            a, widest(a.install)))]
        for name, attempt in attempts:
            answers = {asyncio.run(attempt()) for _ in range(3)}
            rows.append((name, vm_hwm(centre.proc.pid) or 0, ", ".join(sorted(answers))))
        asyncio.run(timed_sync(registered(centre, B), 1))  # for comparison: an honest push
        rows.append((f"an honest push of {SYNC_EVENTS} events", vm_hwm(centre.proc.pid) or 0,
                     "done"))
    finally:
        centre.stop()
    print(f"\nserver peak RSS after each input, three times each (batch limit "
          f"{mib(limits.max_batch_bytes)}):")
    for name, peak, answer in rows:
        print(f"  {name:40} {mib(peak):>9} (+{mib(peak - base)})  {answer}")
    worst = max(peak for _, peak, _ in rows[:len(refused) + 1]) - base
    print(f"worst growth from a refused input: {mib(worst)} = "
          f"{worst / limits.max_batch_bytes:.1f} x the batch limit")
    benchmark.extra_info.update(peaks={n: p for n, p, _ in rows}, worst_growth=worst)
    benchmark.pedantic(lambda: None, rounds=1)
    assert worst < 64 * limits.max_batch_bytes


if __name__ == "__main__":
    child(*sys.argv[1:])
