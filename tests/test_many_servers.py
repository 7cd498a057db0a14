"""Several ``selaras server`` processes on one PostgreSQL database (issue 8, point 5).

Each test starts real server processes sharing one data folder (secrets, signing key)
and one fresh database, and talks to them over loopback: a school's PCs connected
to different processes converge with every event held once; a push cut by killing
its process resumes through the other; the session cap counts the sessions of every
process, since the database holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from selaras.client.install import Install, Session
from selaras.client.sync import register, run_sync
from selaras.engine.events import Batch, Event
from selaras.engine.protocol import AdminReply, Code, Limits
from selaras.server.app import ADMIN_TOKEN
from selaras.server.remote import admin_request
from selaras.server.testing import ProtocolClient, events_frame

NPSN = "20100001"
USER, PASSWORD = "op@sekolah.id", "rahasia123"
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.1}
EXE = shutil.which("selaras", path=str(Path(sys.executable).parent))

pytestmark = pytest.mark.skipif(EXE is None, reason="needs the selaras entry point")


class Servers:
    """Server processes on one data folder and one PostgreSQL database."""

    def __init__(self, data: Path, store: str, max_sessions: int) -> None:
        self.data, self.store, self.max_sessions = data, store, max_sessions
        self.procs: list[subprocess.Popen[str]] = []
        self.urls: list[str] = []

    def start(self) -> str:
        assert EXE is not None
        proc = subprocess.Popen(
            [EXE, "server", "--data", str(self.data), "--store", self.store, "--port", "0",
             "--max-sessions", str(self.max_sessions), "--no-consent-gate"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(proc)
        line = _line_within(proc, 30)
        assert line.startswith("listening on "), line
        self.urls.append(line.split()[-1])
        return self.urls[-1]

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()

    async def admin(self, command: str, **args: str) -> AdminReply:
        token = (self.data / ADMIN_TOKEN).read_text(encoding="utf-8").strip()
        reply = await admin_request(self.urls[0], token, command, **args)
        assert reply.columns != ["error"], reply.message
        return reply


def _line_within(proc: subprocess.Popen[str], seconds: float) -> str:
    """The process's first line of output, or a failure after ``seconds``."""
    got: list[str] = []
    out = proc.stdout
    assert out is not None
    reader = threading.Thread(target=lambda: got.append(out.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    assert got, "the server did not start in time"
    return got[0].strip()


@contextlib.contextmanager
def servers(tmp_path: Path, store: str, n: int = 2, max_sessions: int = 64) -> Iterator[Servers]:
    s = Servers(tmp_path / "centre", store, max_sessions)
    try:
        for _ in range(n):  # one after the other: the first makes the secrets
            s.start()
        yield s
    finally:
        s.stop()


async def enrol(s: Servers, url: str, kode: str, folder: Path, stack: ExitStack) -> Session:
    answer = await register(url, NPSN, kode, USER, PASSWORD)
    install = Install(folder)
    install.init_registered(NPSN, origin=answer.install, token=answer.token, url=url,
                            user=USER, role=answer.role, centre_key=answer.centre_key)
    session = stack.enter_context(install.open())
    report = await run_sync(session.store, session.identity, mode="pull", timeout_s=30, **FAST)
    assert report.ok
    return session


async def held(s: Servers, origin: str) -> tuple[int, int, int]:
    """Events of ``origin`` at the centre: how many, how many distinct, the top seq."""
    reply = await s.admin("query", npsn=NPSN, sql="SELECT count(*), count(DISTINCT seq), "
                          f"coalesce(max(seq), 0) FROM event WHERE origin = '{origin}'")
    (row,) = reply.rows
    return int(row[0]), int(row[1]), int(row[2])


def add_tanah(session: Session, n: int, tag: str) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    session.replica.record([("tanah", i, {"nama": f"{tag} {k}"}) for k, i in enumerate(ids)],
                           1_790_000_000_000)
    return ids


def test_a_schools_pcs_on_two_processes_converge_with_each_event_once(tmp_path: Path,
                                                                      postgres_url: str) -> None:
    async def main() -> None:
        with servers(tmp_path, postgres_url) as s, ExitStack() as stack:
            kode = str((await s.admin("school_add", npsn=NPSN, nama="SMA Satu")).rows[0][2])
            a = await enrol(s, s.urls[0], kode, tmp_path / "a", stack)
            b = await enrol(s, s.urls[1], kode, tmp_path / "b", stack)
            shared = add_tanah(a, 40, "a")[0]
            add_tanah(b, 40, "b")
            for _ in range(2):  # both at once, each through its own process, then again
                reports = await asyncio.gather(*(
                    run_sync(x.store, x.identity, mode="sync", timeout_s=30, **FAST)
                    for x in (a, b)))
                assert all(r.ok for r in reports)
            b.replica.edit("tanah", shared, {"nama": "dari b"}, 1_790_000_000_001)
            a.replica.edit("tanah", shared, {"nama": "dari a"}, 1_790_000_000_002)
            for x in (a, b, a, b):
                assert (await run_sync(x.store, x.identity, mode="sync", timeout_s=30,
                                       **FAST)).ok
            for x in (a, b):
                report = await run_sync(x.store, x.identity, mode="pull", timeout_s=30, **FAST)
                assert report.vectors_equal and report.checksums_equal
                count, distinct, top = await held(s, x.identity.origin)
                assert count == distinct == top == x.store.vector()[x.identity.origin]
            assert a.store.checksums() == b.store.checksums()
            assert len(a.store.rows("tanah")) == 80
            assert a.store.rows("tanah")[shared]["nama"] == "dari a"
    asyncio.run(main())


def pd_batch(origin: str, first: int, n: int) -> Batch:
    return Batch.from_events([
        Event(origin=origin, seq=q, hlc=q, entity="peserta_didik", row_id=str(uuid.uuid4()),
              changes={"nama": f"Siswa {q}"}, author="op", role="operator")
        for q in range(first, first + n)])


def test_a_push_cut_by_killing_its_process_resumes_through_the_other(
        tmp_path: Path, postgres_url: str) -> None:
    async def main() -> None:
        with servers(tmp_path, postgres_url) as s:
            kode = str((await s.admin("school_add", npsn=NPSN, nama="SMA Satu")).rows[0][2])
            first = ProtocolClient(s.urls[0], NPSN)
            assert not isinstance(await first.register(kode, USER, PASSWORD), Exception)
            origin = first.install
            window = Limits().window_batches
            frames = [events_frame(n, pd_batch(origin, 1 + (n - 1) * 50, 50))
                      for n in range(1, window + 1)]

            def acked(msgs: list[object]) -> bool:
                return any(type(m).__name__ == "Ack" for m in msgs)

            cut = await first.raw_session(frames, until=acked, wait_s=20)
            acks = [m for m in cut.messages if type(m).__name__ == "Ack"]
            assert acks, cut.messages
            s.kill(0)  # mid-push: a window of batches sent, at least one acknowledged
            other = ProtocolClient(s.urls[1], NPSN, origin, first.token)
            probe = await other.session("pull")
            held_before = probe.welcome_vector.get(origin, 0)
            assert held_before >= max(a.vector[origin] for a in acks)  # acked: durable
            rest = [pd_batch(origin, q, min(50, 501 - q))
                    for q in range(held_before + 1, 501, 50)]
            out = await other.session("sync", probe.welcome_vector, rest)
            assert out.refused is None and out.summary is not None
            assert out.summary[0][origin] == 500
            s.urls.pop(0)  # admin through the live process
            assert await held(s, origin) == (500, 500, 500)
    asyncio.run(main())


def test_the_session_cap_counts_every_process(tmp_path: Path, postgres_url: str) -> None:
    async def main() -> None:
        with servers(tmp_path, postgres_url, max_sessions=1) as s:
            kode = str((await s.admin("school_add", npsn=NPSN, nama="SMA Satu")).rows[0][2])
            on_a = ProtocolClient(s.urls[0], NPSN)
            await on_a.register(kode, USER, PASSWORD)
            on_b = ProtocolClient(s.urls[1], NPSN, on_a.install, on_a.token)
            welcomed = asyncio.Event()

            def hold(msgs: list[object]) -> bool:
                if msgs:
                    welcomed.set()
                return False

            holder = asyncio.create_task(on_a.raw_session([], "pull", until=hold, wait_s=3))
            await asyncio.wait_for(welcomed.wait(), 10)
            busy = await on_b.session("pull")  # the other process: its own count is 0
            assert busy.refused is not None and busy.refused.code is Code.SERVER_BUSY
            await holder
            assert (await on_b.session("pull")).refused is None  # room again
    asyncio.run(main())


def selaras(*args: str) -> subprocess.CompletedProcess[str]:
    assert EXE is not None
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=60, check=False)


def test_admin_on_the_stopped_store_and_bad_stores_said_in_words(tmp_path: Path,
                                                                 postgres_url: str) -> None:
    data = str(tmp_path / "centre")
    added = selaras("admin", "--data", data, "--store", postgres_url, "school", "add",
                    "--npsn", NPSN, "--nama", "SMA Satu")
    assert added.returncode == 0, added.stderr
    listed = selaras("admin", "--data", data, "--store", postgres_url, "school", "list")
    assert NPSN in listed.stdout
    assert not (tmp_path / "centre" / "centre.duckdb").exists()  # all of it in PostgreSQL
    wrong = selaras("server", "--data", data, "--store", "sqlite:///centre.db")
    assert wrong.returncode == 2 and "beri URL postgresql://" in wrong.stderr
    gone = selaras("server", "--data", data, "--store", "postgresql://nobody@127.0.0.1:1/none")
    assert gone.returncode == 1
    assert "basis data pusat: the database cannot be reached" in gone.stderr
    assert "Traceback" not in gone.stderr
