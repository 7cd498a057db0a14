"""The centre's one writer: a thread that owns CentreStore's write connection.

Sessions submit ``(npsn, batch)`` and await the returned future; the writer
takes everything queued at once and commits the batches of many schools in one
transaction (``CentreStore.append_group``: group commit), then resolves each
future with ``(AppendReport or the batch's error, the school's durable vector)``.
Other work that must write (registrations, admin commands, session records) is
queued as a ``call`` and runs on the same thread, in queue order. The writer
never touches a socket: a slow school only waits for its own future.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from selaras.engine.clocks import VersionVector
from selaras.engine.events import Batch
from selaras.engine.stages import stage
from selaras.engine.store import Admitted, AppendReport, CentreStore, Registry

T = TypeVar("T")
AppendResult = tuple[Admitted, VersionVector]


@dataclass
class WriterStats:
    batches: int = 0  # batches appended
    events: int = 0  # events stored (applied)
    commits: int = 0  # append transactions (groups)
    largest_group: int = 0  # most batches in one commit
    schools_in_one_commit: int = 0  # most distinct schools in one commit
    clock_bounded: int = 0  # events admitted with a clock far ahead, bounded (merge rule 5)

    def as_dict(self) -> dict[str, float]:
        return {"batches": self.batches, "events": self.events, "commits": self.commits,
                "events_per_commit": round(self.events / self.commits, 1) if self.commits else 0,
                "largest_group": self.largest_group,
                "schools_in_one_commit": self.schools_in_one_commit,
                "clock_bounded": self.clock_bounded}


@dataclass
class _Append:
    npsn: str
    batch: Batch
    future: concurrent.futures.Future[AppendResult]


@dataclass
class _Call:
    fn: Callable[[CentreStore, Registry], Any]
    future: concurrent.futures.Future[Any]


_STOP = object()


class CentreWriter:
    """Owns ``centre`` (and the registry on its connection) from its own thread."""

    def __init__(self, centre: CentreStore, registry: Registry) -> None:
        self.centre, self.registry = centre, registry
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="selaras-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def append(self, npsn: str, batch: Batch) -> concurrent.futures.Future[AppendResult]:
        f: concurrent.futures.Future[AppendResult] = concurrent.futures.Future()
        self._queue.put(_Append(npsn, batch, f))
        return f

    def call(self, fn: Callable[[CentreStore, Registry], T],
             ) -> concurrent.futures.Future[T]:
        f: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Call(fn, f))
        return f

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while True:  # take everything queued: that is the group
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in jobs
            jobs = [j for j in jobs if j is not _STOP]
            run: list[_Append] = []
            for job in jobs:
                if isinstance(job, _Append):
                    run.append(job)
                    continue
                self._append(run)
                run = []
                assert isinstance(job, _Call)
                if not job.future.set_running_or_notify_cancel():
                    continue  # its session is gone
                try:
                    job.future.set_result(job.fn(self.centre, self.registry))
                except BaseException as exc:  # handed to the awaiting session
                    job.future.set_exception(exc)
            self._append(run)
            if stop:
                return

    def _append(self, jobs: list[_Append]) -> None:
        # A batch whose session ended (refused, dropped) before its turn is not appended:
        # a refused session changes nothing (protocol R15). Once running, it cannot cancel.
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        try:
            with stage("append"):
                results = self.centre.append_group([(j.npsn, j.batch) for j in jobs],
                                                   int(time.time() * 1000))
            with stage("vector"):  # the acks carry it
                vectors = {n: self.centre.school(n).vector() for n in {j.npsn for j in jobs}}
        except BaseException as exc:
            for j in jobs:
                j.future.set_exception(exc)
            return
        s = self.stats
        s.commits += 1
        s.batches += len(jobs)
        s.events += sum(r.applied for r in results if isinstance(r, AppendReport))
        s.clock_bounded += sum(r.clock_bounded for r in results if isinstance(r, AppendReport))
        s.largest_group = max(s.largest_group, len(jobs))
        s.schools_in_one_commit = max(s.schools_in_one_commit, len(vectors))
        for j, r in zip(jobs, results, strict=True):
            j.future.set_result((r, vectors[j.npsn]))
