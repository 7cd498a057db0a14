"""Point 10 of docs/security.md: back off on failure.

A real centre on 127.0.0.1 whose store fails every append (disk full: the writer's
``append_group`` raises ``StoreFailure``, so the session is refused with
``internal_error``), and a real install pushing to it. The client must count only
acknowledged progress: it backs off exponentially (full jitter) instead of resending
the same batch in a loop, tells the operator in Indonesian that the centre failed,
and completes once the centre recovers. Nothing of a failed batch is stored.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from selaras.client.install import Install, Session
from selaras.client.sync import SyncTimedOut, now_ms, register, run_sync
from selaras.engine.events import Batch
from selaras.engine.protocol import Limits
from selaras.engine.store import Admitted, StoreFailure
from selaras.server.testing import RunningServer, running_server

NPSN = "20100001"
USER, PASSWORD = "op@sekolah.id", "rahasia123"
CENTRE_FAILED = "server pusat gagal"  # what the operator reads (Indonesian)


class TopOfJitter(random.Random):
    """Every draw at the top of its range: each back-off is its full ceiling."""

    def random(self) -> float:
        return 1.0


class FailingStore:
    """The centre's writer appends through this: it fails while ``failing(n)`` says so
    (``n``: the append's number, from 1) and records when each append came."""

    def __init__(self, srv: RunningServer) -> None:
        self.centre = srv.server.writer.centre
        self.real = self.centre.append_group
        self.failing: Callable[[int], bool] = lambda n: True
        self.calls: list[tuple[float, bool]] = []  # (monotonic time, failed)
        self._lock = threading.Lock()

    def append_group(self, items: list[tuple[str, Batch]], now: int) -> list[Admitted]:
        with self._lock:
            fail = self.failing(len(self.calls) + 1)
            self.calls.append((time.monotonic(), fail))
        if fail:
            raise StoreFailure("disk penuh", "IO Error: No space left on device")
        return self.real(items, now)

    def failed(self) -> list[float]:
        return [t for t, f in self.calls if f]


@contextmanager
def failing_store(srv: RunningServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FailingStore]:
    store = FailingStore(srv)
    monkeypatch.setattr(store.centre, "append_group", store.append_group)
    try:
        yield store
    finally:
        monkeypatch.undo()


@asynccontextmanager
async def school(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[RunningServer, Session]]:
    """A centre with one school and one registered install that has pulled."""
    async with running_server(tmp_path / "centre", **options) as srv:
        kode = await srv.add_school(NPSN, "SMA Negeri 1")
        answer = await register(srv.url, NPSN, kode, USER, PASSWORD)
        install = Install(tmp_path / "a")
        install.init_registered(NPSN, origin=answer.install, token=answer.token, url=srv.url,
                                user=USER, role=answer.role, centre_key=answer.centre_key)
        with ExitStack() as stack:
            s = stack.enter_context(install.open())
            r = await run_sync(s.store, s.identity, mode="pull", timeout_s=20,
                               backoff_base_s=0.01, backoff_cap_s=0.1)
            assert r.ok
            yield srv, s


def add_tanah(s: Session, n: int) -> None:
    s.replica.record([("tanah", str(uuid.uuid4()), {"nama": f"Tanah {k}"}) for k in range(n)],
                     now_ms())


async def held(srv: RunningServer, origin: str) -> tuple[int, int]:
    """How many events of ``origin`` the centre holds, and the top seq."""
    reply = await srv.admin("query", npsn=NPSN, sql="SELECT count(*), coalesce(max(seq), 0) "
                            f"FROM event WHERE origin = '{origin}'")
    assert reply.columns != ["error"], reply.message
    ((count, top),) = reply.rows
    return int(str(count)), int(str(top))


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def failed_sessions(s: Session) -> list[dict[str, Any]]:
    """The install's history of sessions the centre's failure ended, oldest first."""
    return [h for h in reversed(s.store.history(1000))
            if h["outcome"] == "refused:internal_error"]


def test_a_failing_centre_gets_exponential_backoff_not_a_resend_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with school(tmp_path) as (srv, s):
            add_tanah(s, 3)
            with failing_store(srv, monkeypatch) as store:
                t0 = time.monotonic()
                with pytest.raises(SyncTimedOut) as info:
                    await run_sync(s.store, s.identity, mode="sync", timeout_s=3.0,
                                   backoff_base_s=0.05, backoff_cap_s=30.0,
                                   rng=random.Random(10))
                elapsed = time.monotonic() - t0
            attempts = len(store.failed())
            # Full jitter from 0.05 s doubling: about 6 sessions in 3 s (a resend loop,
            # or a back-off reset by every batch merely sent, makes 20 to 40).
            assert 2 <= attempts <= 10, (attempts, gaps(store.failed()))
            assert 2.9 <= elapsed < 4.0  # it waited out the timeout, not a final refusal
            message = str(info.value)
            assert CENTRE_FAILED in message and "internal_error" in message, message
            assert CENTRE_FAILED in info.value.last
            history = failed_sessions(s)
            assert len(history) == attempts
            for h in history:
                assert CENTRE_FAILED in json.loads(h["detail"])["reason"]
            # Nothing of the failed batch was stored at the centre.
            assert await held(srv, s.identity.origin) == (0, 0)
            assert srv.stats()["batches"] == 0
    asyncio.run(main())


def test_the_delays_between_attempts_grow(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with school(tmp_path) as (srv, s):
            add_tanah(s, 3)
            with failing_store(srv, monkeypatch) as store, pytest.raises(SyncTimedOut):
                await run_sync(s.store, s.identity, mode="sync", timeout_s=3.0,
                               backoff_base_s=0.05, backoff_cap_s=30.0, rng=TopOfJitter())
            # Ceilings 0.1, 0.2, 0.4, 0.8, 1.6 s: five sessions in 3 s, each wait about
            # double the one before (the centre sees when each attempt's batch comes).
            between = gaps(store.failed())
            assert 3 <= len(between) <= 4, between
            assert between[0] >= 0.1
            for a, b in zip(between, between[1:], strict=False):
                assert b > 1.6 * a, between
            delays = [json.loads(h["detail"])["retry_in_s"] for h in failed_sessions(s)]
            assert delays[:4] == [0.1, 0.2, 0.4, 0.8], delays
            assert await held(srv, s.identity.origin) == (0, 0)
    asyncio.run(main())


def test_the_sync_completes_once_the_centre_recovers(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with school(tmp_path) as (srv, s):
            add_tanah(s, 3)
            with failing_store(srv, monkeypatch) as store:
                sync = asyncio.create_task(run_sync(
                    s.store, s.identity, mode="sync", timeout_s=30, backoff_base_s=0.05,
                    backoff_cap_s=0.4, rng=random.Random(3)))
                async with asyncio.timeout(20):
                    while len(store.failed()) < 3:
                        assert not sync.done(), sync
                        await asyncio.sleep(0.01)
                assert await held(srv, s.identity.origin) == (0, 0)
                store.failing = lambda n: False  # the disk has room again
                r = await sync
            failures = len(store.failed())
            assert r.ok and r.vectors_equal and r.checksums_equal
            assert r.attempts == failures + 1
            me = s.identity.origin
            assert await held(srv, me) == (3, s.store.vector()[me])
            history = failed_sessions(s)
            assert len(history) == failures
            assert all(CENTRE_FAILED in json.loads(h["detail"])["reason"] for h in history)
            assert s.store.history()[0]["outcome"] == "ok"
    asyncio.run(main())


def test_acknowledged_progress_resets_the_backoff(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A centre that acks a batch, then fails the next: each session got somewhere, so
    the wait stays at its first step instead of doubling."""
    async def main() -> None:
        limits = Limits(max_batch_events=10, window_batches=1)
        async with school(tmp_path, limits=limits) as (srv, s):
            add_tanah(s, 40)  # four batches
            with failing_store(srv, monkeypatch) as store:
                store.failing = lambda n: n % 2 == 0
                r = await run_sync(s.store, s.identity, mode="sync", timeout_s=30,
                                   backoff_base_s=0.2, backoff_cap_s=30.0, rng=TopOfJitter())
            assert r.ok and r.vectors_equal and r.checksums_equal
            history = failed_sessions(s)
            assert len(history) == 3 and r.attempts == 4
            # Each failed session had one batch acknowledged first: 0.4 s every time,
            # not 0.4, 0.8, 1.6.
            assert [json.loads(h["detail"])["retry_in_s"] for h in history] == [0.4] * 3
            me = s.identity.origin
            assert await held(srv, me) == (40, s.store.vector()[me])
    asyncio.run(main())
