"""SIGKILL mid-sync: the client process, then the server process (docs/protocol.md R9, R12).

The client: a generated medium school is imported into an install, and ``selaras
sync`` runs as a subprocess; it is killed with SIGKILL once the centre holds a
seeded part of the push. The next sync completes: the centre holds each event
exactly once and the checksums are equal.

The server: ``selaras server`` runs as a child process behind a slowed
``FlakyProxy`` and is SIGKILLed at seeded moments, then restarted on its data
folder, while one install pushes a medium school (four kills in one long sync)
and while a second install pulls it (two kills). A moment is a seeded point of
the transfer, counted in bytes through the proxy (``moments``); for half of the
push's kills it is then the instant the centre's DuckDB files change, so the
kill lands in a commit of the group-commit writer or just after it, its ack
still on the wire (the link has 20 ms of latency). While the centre restarts
the proxy cuts every connection, so what the restarted centre holds is exactly
what survived the kill. After each kill: every event the centre had
acknowledged to the client (Ack or Welcome) is held, each event once without
gaps, and the kill landed mid-session (part of the push held, part of the pull
received). The client's own retry loop (``run_sync``) then finishes: equal
vectors, equal checksums, at most a window resent per kill.

``SELARAS_KILL_SEED`` changes the moments; run with ``-s`` to see where they landed
(mid-receive, mid-commit, after a commit before its ack, mid-send).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from selaras.bench import generate
from selaras.bench.proxy import Faults, FlakyProxy
from selaras.client import sync as client_sync
from selaras.client.install import Install, Session, import_rows
from selaras.client.sync import SyncConnection, register, run_sync
from selaras.engine.clocks import VersionVector, merge_vectors
from selaras.engine.outbox import Outbox
from selaras.engine.protocol import AdminReply, BatchAcked, BatchReceived, Limits, Welcomed
from selaras.server.app import ADMIN_TOKEN, DB_FILE
from selaras.server.remote import admin_request
from selaras.server.testing import RunningServer, running_server

NPSN = "20100001"
USER, PASSWORD = "op@sekolah.id", "rahasia123"
EXE = shutil.which("selaras", path=str(Path(sys.executable).parent))

pytestmark = pytest.mark.skipif(EXE is None or not hasattr(signal, "SIGKILL"),
                                reason="needs the selaras entry point and SIGKILL")
SEED = int(os.environ.get("SELARAS_KILL_SEED", "20241"))

async def selaras(*args: str) -> tuple[int, str, str]:
    assert EXE is not None
    proc = await asyncio.create_subprocess_exec(EXE, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def centre_held(srv: RunningServer, origin: str) -> tuple[int, int]:
    reply = await srv.admin("query", npsn=NPSN, sql="SELECT count(*), count(DISTINCT seq) "
                            f"FROM event WHERE origin = '{origin}'")
    assert reply.columns != ["error"], reply.message
    (row,) = reply.rows
    return int(row[0]), int(row[1])


def local(folder: Path) -> tuple[str, dict[str, int], dict[str, str]]:
    with Install(folder).open() as s:
        vector = {o: q for o, q in s.store.vector().items() if q}
        return s.identity.origin, vector, s.store.checksums()


def test_client_killed_mid_sync_then_synced_again_loses_and_duplicates_nothing(
        tmp_path: Path) -> None:
    rows = tmp_path / "medium.jsonl"
    generate.write(rows, generate.generate("medium", 1, NPSN, 0))
    data = str(tmp_path / "school")

    async def main() -> None:
        # Small batches and window: the push takes many round trips, so a kill lands mid-way.
        limits = Limits(max_batch_events=250, window_batches=2)
        window = limits.max_batch_events * limits.window_batches
        async with running_server(tmp_path / "centre", limits=limits) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            rc, out, err = await selaras("--data", data, "init", "--server", srv.url,
                                         "--npsn", NPSN, "--kode", kode, "--user", USER,
                                         "--password", PASSWORD, "--json", "--timeout", "60")
            assert rc == 0, err
            rc, out, err = await selaras("--data", data, "import", str(rows), "--json")
            assert rc == 0, err
            # The principal confirms the push (tests/test_principal.py tests that part).
            principal = ["--user", "kepsek@sekolah.id", "--password", "rahasia", "--kode", kode]
            for args in (["account", "add", "--role", "kepala_sekolah", *principal],
                         ["switch-user", *principal], ["confirm", "--all"]):
                rc, out, err = await selaras("--data", data, *args)
                assert rc == 0, err
            origin, vector, _ = local(tmp_path / "school")
            total = vector[origin]
            assert total > 3000
            # The kill: once the centre holds a seeded number of events, more than a window
            # (so some acks reached the client) and up to half the push.
            target = random.Random(f"{SEED}/client").randint(window + 1, total // 2)

            assert EXE is not None
            proc = await asyncio.create_subprocess_exec(
                EXE, "--data", data, "sync", "--json", "--timeout", "60",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            held = 0
            while proc.returncode is None:
                held, _ = await centre_held(srv, origin)
                if held >= target:
                    break
                await asyncio.sleep(0.005)
            assert target <= held < total, f"seed {SEED}: the push ended before the kill"
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
            held, _ = await centre_held(srv, origin)  # with what was in flight at the kill

            rc, out, err = await selaras("--data", data, "sync", "--json", "--timeout", "60")
            assert rc == 0, err
            report = json.loads(out)
            assert report["ok"] and report["vectors_equal"] and report["checksums_equal"]
            # Resumed (R12): of what the centre held, at most one window (the batches
            # whose ack the killed client never saw) was sent again.
            assert total - held <= report["events_up"] <= total - held + window
            assert await centre_held(srv, origin) == (total, total)
            checksum = await srv.admin("checksum", npsn=NPSN)
            _, _, sums = local(tmp_path / "school")
            assert dict(checksum.rows) == sums
    asyncio.run(main())


WINDOW, BATCH_EVENTS = 2, 500  # many batches, so kills land between and inside commits
LATENCY_MS = 20  # an ack is this far from the client when its commit ends
LINK = Faults(bandwidth_bytes_per_s=1_000_000, latency_ms=LATENCY_MS)  # a push of seconds
DOWN = Faults(cut_after_bytes=(0, 0))  # while the centre restarts: no client gets through
FAST = {"backoff_base_s": 0.05, "backoff_cap_s": 0.2}
PUSH_KILLS = ["bytes", "commit", "bytes", "commit"]  # one long sync, four kills in a row
PULL_KILLS = 2


def moments(phase: str, kills: int) -> list[float]:
    """Where the kills go, as fractions of the transfer: one seeded point in each of
    ``kills`` equal slices of 20 % to 80 %, off the slices' edges. So the first kill
    comes after a few batches (with a window of 2, the first was committed), each lands
    well into a resumed session, and the last leaves a few batches to go."""
    rng = random.Random(f"{SEED}/{phase}")
    return [0.2 + 0.6 * (i + rng.uniform(0.2, 0.8)) / kills for i in range(kills)]


@dataclass
class Kill:
    phase: str
    trigger: str  # bytes: at a random point of the transfer; commit: then at the next write
    at: float  # that point, a fraction of the transfer
    at_bytes: int  # into the session, in the direction of the data, at the kill
    acked: int  # push: the top seq the centre had acknowledged; pull: events received
    acked_at_write: int  # push, trigger commit: ``acked`` when the write was seen
    held: int  # push: the top seq the restarted centre held
    total: int

    def __str__(self) -> str:
        if self.phase == "pull":
            return (f"seed {SEED}, pull kill at {self.at:.2f} ({self.at_bytes} bytes in): "
                    f"{self.acked} of {self.total} events received")
        return (f"seed {SEED}, push kill ({self.trigger}) at {self.at:.2f} "
                f"({self.at_bytes} bytes in): acked {self.acked}, held {self.held} of "
                f"{self.total}")

    @property
    def moment(self) -> str:
        if self.phase == "pull":
            return "mid-send"
        if self.held > self.acked:
            return "after a commit, its ack not yet at the client"
        if self.trigger == "commit" and self.acked == self.acked_at_write:
            return "mid-commit (its write had begun; nothing of it kept)"
        return "mid-receive"


KILLS: list[Kill] = []


@pytest.fixture(autouse=True)
def report_kills() -> Iterator[None]:
    """Print where the kills landed (shown with ``pytest -s``)."""
    KILLS.clear()
    yield
    if KILLS:
        print(f"\n{len(KILLS)} SIGKILLs of the centre (seed {SEED}):")
        for k in KILLS:
            print(f"  {k}: {k.moment}")


class Centre:
    """``selaras server`` as a child process on a fixed port, SIGKILLed and restarted."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.url = f"ws://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        assert EXE is not None
        self.starts += 1
        log = self.folder.with_name(f"server-{self.starts}.log")
        with open(log, "wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                EXE, "server", "--data", str(self.folder), "--port", str(self.port),
                "--window", str(WINDOW), "--batch-events", str(BATCH_EVENTS),
                "--no-consent-gate", stdout=asyncio.subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert b"listening on" in line, f"the centre did not start: {log.read_text()}"

    async def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):  # kill_at_next_write may have been first
            self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    def kill_at_next_write(self, seen: Callable[[], int]) -> int:
        """SIGKILL the centre the instant its files change (a commit is being written) and
        return ``seen()`` at that instant. Blocks, polling every 0.1 ms: run it in a thread."""
        assert self.proc is not None
        files, deadline = self.files(), time.monotonic() + 30
        while self.files() == files:
            assert time.monotonic() < deadline, "the centre wrote nothing"
            time.sleep(0.0001)
        before = seen()
        os.kill(self.proc.pid, signal.SIGKILL)
        return before

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await self.proc.wait()

    def files(self) -> tuple[tuple[int, int] | None, ...]:
        """Size and mtime of the centre's DuckDB file and its WAL: a commit changes them."""
        out: list[tuple[int, int] | None] = []
        for name in (DB_FILE, DB_FILE + ".wal"):
            try:
                st = (self.folder / name).stat()
                out.append((st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    async def admin(self, command: str, **args: str) -> AdminReply:
        token = (self.folder / ADMIN_TOKEN).read_text(encoding="utf-8").strip()
        reply = await admin_request(self.url, token, command, **args)
        assert reply.columns != ["error"], reply.message
        return reply

    async def held(self) -> dict[str, tuple[int, int, int]]:
        """Per origin: events held, distinct seqs, top seq."""
        reply = await self.admin("query", npsn=NPSN, sql=(
            "SELECT origin::VARCHAR, count(*), count(DISTINCT seq), max(seq) FROM event "
            "GROUP BY ALL"))
        return {str(o): (int(n), int(d), int(t)) for o, n, d, t in reply.rows}

    async def checksums(self) -> dict[str, str]:
        return {str(e): str(c) for e, c in (await self.admin("checksum", npsn=NPSN)).rows}


def once_each(held: dict[str, tuple[int, int, int]]) -> bool:
    """Each origin's events held exactly once, without gaps: count == distinct == top."""
    return all(n == d == t for n, d, t in held.values())


@dataclass
class Heard:
    """What the in-process client heard over all its sessions."""

    acked: VersionVector  # what the centre said it holds: every Ack's and Welcome's vector
    received: int  # events in the batches it received (each committed before the next read)
    running: int  # sessions (websockets) open now
    idle: asyncio.Event


def watch(monkeypatch: pytest.MonkeyPatch) -> Heard:
    """Make run_sync's sessions tell the returned ``Heard`` what they hear."""
    heard = Heard({}, 0, 0, asyncio.Event())
    heard.idle.set()

    class Watched(SyncConnection):
        async def run(self) -> Any:
            heard.running += 1
            heard.idle.clear()
            try:
                return await super().run()
            finally:
                heard.running -= 1
                if not heard.running:
                    heard.idle.set()

        async def _handle(self, fact: Any) -> None:
            if isinstance(fact, BatchAcked | Welcomed):
                vector = fact.vector if isinstance(fact, BatchAcked) else fact.welcome.vector
                heard.acked = merge_vectors(heard.acked, vector)
            elif isinstance(fact, BatchReceived):
                heard.received += fact.count
            await super()._handle(fact)

    monkeypatch.setattr(client_sync, "SyncConnection", Watched)
    return heard


async def until(ready: Callable[[], bool], sync: asyncio.Task[Any], what: str) -> None:
    """Poll ``ready`` every millisecond; fail if the sync ends first."""
    async with asyncio.timeout(60):
        while not ready():
            assert not sync.done(), f"the sync ended before {what}"
            await asyncio.sleep(0.001)


async def bytes_past(count: Callable[[], int], at: int, sync: asyncio.Task[Any],
                     what: str) -> Callable[[], int]:
    """Wait until ``at`` more bytes have crossed; returns the count since now."""
    start = count()
    await until(lambda: count() - start >= at, sync, f"{what} ({at} bytes in)")
    return lambda: count() - start


async def kill_and_restart(centre: Centre, link: FlakyProxy, heard: Heard) -> None:
    """SIGKILL the centre (if not yet) and restart it with the link down: the caller reads
    what survived the kill, then brings the link up."""
    await centre.kill()
    link.set_faults(DOWN)
    # The cut session has ended: every ack the killed centre sent is counted.
    await asyncio.wait_for(heard.idle.wait(), 30)
    await centre.start()


def test_server_killed_at_random_moments_mid_push_and_mid_pull_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = tmp_path / "medium.jsonl"
    generate.write(rows, generate.generate("medium", 1, NPSN, 0))

    async def main() -> None:
        centre = Centre(tmp_path / "centre", _free_port())
        await centre.start()
        try:
            async with FlakyProxy("127.0.0.1", centre.port, LINK) as link:
                with ExitStack() as stack:
                    kode = str((await centre.admin("school_add", npsn=NPSN, nama="SMA Negeri 1",
                                                   bentuk="SMA")).rows[0][2])
                    a = await enrol(centre, kode, "a", link, stack)
                    held, per_event = await push(centre, link, a)
                    b = await enrol(centre, kode, "b", link, stack)
                    await pull(centre, link, b, held, per_event)
        finally:
            await centre.stop()

    async def enrol(centre: Centre, kode: str, name: str, link: FlakyProxy,
                    stack: ExitStack) -> Session:
        """A registered install whose URL is the slowed link."""
        answer = await register(centre.url, NPSN, kode, USER, PASSWORD)
        install = Install(tmp_path / name)
        install.init_registered(NPSN, origin=answer.install, token=answer.token,
                                url=f"ws://127.0.0.1:{link.port}", user=USER, role=answer.role)
        return stack.enter_context(install.open())

    async def push(centre: Centre, link: FlakyProxy,
                   a: Session) -> tuple[dict[str, tuple[int, int, int]], float]:
        """A medium school pushed in one long sync, the centre killed four times.
        Returns what the centre holds and the bytes per event of the push's batches."""
        r = await run_sync(a.store, a.identity, mode="pull", url=centre.url, timeout_s=30)
        assert r.ok
        import_rows(a, rows)
        me = a.identity.origin
        total = a.store.vector()[me]
        outbox = Outbox(a.store, me, 0, total, Limits(max_batch_events=BATCH_EVENTS))
        push_bytes = 0
        while outbox:
            push_bytes += len(outbox.next()[0])
        others = await centre.held()

        heard = watch(monkeypatch)
        sync = asyncio.create_task(run_sync(a.store, a.identity, mode="sync", timeout_s=90,
                                            rng=random.Random(SEED), **FAST))
        held_before = 0
        half_batch = push_bytes * BATCH_EVENTS // total // 2  # at least this far into a session
        try:
            for i, (trigger, at) in enumerate(zip(PUSH_KILLS, moments("push", len(PUSH_KILLS)),
                                                  strict=True)):
                # The session resumes above what the centre held: that much is behind us.
                ahead = max(int(push_bytes * (at - held_before / total)), half_batch)
                sent = await bytes_past(lambda: link.stats.bytes_to_server, ahead, sync,
                                        f"push kill {i}")
                assert heard.running, f"push kill {i} did not land inside a session"
                acked_at_write = heard.acked.get(me, 0)
                if trigger == "commit":
                    acked_at_write = await asyncio.to_thread(
                        centre.kill_at_next_write, lambda: heard.acked.get(me, 0))
                at_bytes = sent()
                await kill_and_restart(centre, link, heard)
                held = await centre.held()
                kill = Kill("push", trigger, at, at_bytes, heard.acked.get(me, 0),
                            acked_at_write, held.get(me, (0, 0, 0))[2], total)
                KILLS.append(kill)
                assert once_each(held), f"{kill}: not each event once: {held}"
                assert kill.acked <= kill.held, f"{kill}: an acknowledged event was lost"
                assert 0 < kill.held < total, f"{kill}: not mid-push"
                assert held_before <= kill.held, f"{kill}: the centre lost events"
                assert {o: h for o, h in held.items() if o != me} == others, f"{kill}: {held}"
                held_before = kill.held
                link.set_faults(LINK)
            report = await asyncio.wait_for(sync, 90)
        finally:
            sync.cancel()
        assert report.ok and report.vectors_equal and report.checksums_equal, report
        assert report.attempts > len(PUSH_KILLS)
        # Resumed each time: at most the window in flight was sent again (R12).
        assert report.totals.events_up <= total + len(PUSH_KILLS) * WINDOW * BATCH_EVENTS
        held = await centre.held()
        assert held[me] == (total, total, total) and once_each(held)
        assert await centre.checksums() == a.store.checksums()
        return held, push_bytes / total

    async def pull(centre: Centre, link: FlakyProxy, b: Session,
                   held: dict[str, tuple[int, int, int]], per_event: float) -> None:
        """A new install pulls the whole school, the centre killed twice."""
        total = sum(top for _, _, top in held.values())
        pull_bytes = per_event * total
        heard = watch(monkeypatch)
        sync = asyncio.create_task(run_sync(b.store, b.identity, mode="pull", timeout_s=90,
                                            rng=random.Random(SEED), **FAST))
        try:
            for i, at in enumerate(moments("pull", PULL_KILLS)):
                ahead = max(int(pull_bytes * (at - heard.received / total)),
                            int(per_event * BATCH_EVENTS / 2))
                sent = await bytes_past(lambda: link.stats.bytes_to_client, ahead, sync,
                                        f"pull kill {i}")
                at_bytes = sent()
                assert heard.running, f"pull kill {i} did not land inside a session"
                await kill_and_restart(centre, link, heard)
                kill = Kill("pull", "bytes", at, at_bytes, heard.received, 0, 0, total)
                KILLS.append(kill)
                assert 0 < heard.received < total, f"{kill}: not mid-pull"
                assert await centre.held() == held, f"{kill}: the centre's log changed"
                link.set_faults(LINK)
            report = await asyncio.wait_for(sync, 90)
        finally:
            sync.cancel()
        assert report.ok and report.vectors_equal and report.checksums_equal, report
        assert report.totals.events_down <= total + PULL_KILLS * WINDOW * BATCH_EVENTS
        _, log = b.store.query("SELECT origin::VARCHAR, count(*), count(DISTINCT seq), max(seq) "
                               "FROM event GROUP BY ALL")
        assert {str(o): (int(n), int(d), int(t)) for o, n, d, t in log} == held
        assert await centre.checksums() == b.store.checksums()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
