"""Crash safety (DESIGN.md sections 5 and 7): a SIGKILL never leaves half a write.

Each case runs tests/crash_child.py, which seeds a fresh DuckDB store and says
``ready``, then makes one big write: the import of a generated medium school
(~6,200 rows, one transaction) or the append of a bundle of that school
(~6,450 events, decoded from bytes beforehand). The parent SIGKILLs it after a
seeded random delay inside one of three windows, measured once per
(write, checkpoint mode) by a calibration run that is not killed:

- ``body``: from ``ready`` to the first write to the store's files, i.e. in
  the middle of the transaction;
- ``commit``: from that first write until the call returns. In mode ``wal``
  (DuckDB's default checkpoint_threshold) the commit writes and syncs the
  WAL; in mode ``ckpt`` (threshold 1 KB) DuckDB checkpoints at commit,
  writing the transaction straight into the database file;
- ``checkpoint``: the explicit CHECKPOINT the child runs after the write
  (mode ``wal``, so the data moves from the WAL into the database file).

After each kill: the store opens; its log is gap-free and the materialised
state equals the reference fold's replay (``verify``); it holds all of the
write or none of it (the vector is the seed's or the clean run's); and
finishing the work (importing again if the import is not there, appending
the bundle again in any case) reaches exactly the clean run's checksums.

``SELARAS_CRASH_SEED`` changes the delays; run with ``-s`` to see where the
kills landed.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from crash_child import ME, import_rows, say, seed_batch

from selaras.bench.generate import generate, write
from selaras.engine.clocks import VersionVector
from selaras.engine.events import Batch
from selaras.engine.merge import Sibling
from selaras.engine.storage import DuckDBStore
from selaras.engine.store import verify

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX-only"),
]

CHILD = Path(__file__).with_name("crash_child.py")
SEED = int(os.environ.get("SELARAS_CRASH_SEED", "20231"))
TIMEOUT_S = 120.0  # a hung child fails the case instead of hanging the run

# (window, checkpoint mode, kills): 12 kills per write, 24 in all.
SCHEDULE = [("body", "wal", 2), ("body", "ckpt", 2), ("commit", "wal", 2),
            ("commit", "ckpt", 3), ("checkpoint", "wal", 3)]
CASES = [(op, window, mode, i) for op in ("import", "bundle")
         for window, mode, n in SCHEDULE for i in range(n)]


@dataclass
class Clean:
    """The uninterrupted run every killed one must end up equal to."""

    rows: Path
    bundle: Path
    bundle_batch: Batch
    seed_vector: VersionVector
    vector: VersionVector
    checksums: dict[str, str]
    conflicts: list[Sibling]


@dataclass
class Kill:
    op: str
    window: str
    mode: str
    delay_ms: float
    moment: str
    kept: bool


KILLS: list[Kill] = []


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Clean:
    folder = tmp_path_factory.mktemp("crash")
    rows = folder / "medium.jsonl"
    write(rows, generate("medium", 1, ME.npsn, seed=7))
    store = DuckDBStore(folder / "clean.duckdb", ME.central)
    try:
        store.append(seed_batch())
        seed_vector = store.vector()
        import_rows(store, rows)
        assert verify(store) == []
        bundle = folder / "bundle.bin"
        bundle.write_bytes(store.events_after({}).to_bytes())
        return Clean(rows, bundle, Batch.from_bytes(bundle.read_bytes()), seed_vector,
                     store.vector(), store.checksums(), store.conflicts())
    finally:
        store.close()


class Child:
    """crash_child.py running; its words arrive with the time it said them."""

    def __init__(self, op: str, store: Path, data: Path, mode: str) -> None:
        self.store = store
        self.stderr = store.with_suffix(".stderr")
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), op, str(store), str(data), mode],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        self.lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, said_at = line.split()
            self.lines.put((float(said_at), word))
        self.lines.put((time.monotonic(), None))

    def _next(self, timeout: float) -> tuple[float, str | None] | None:
        try:
            at, line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            raise AssertionError(f"the child exited after {self.seen}: "
                                 f"{self.stderr.read_text(errors='replace')}")
        self.seen.append(line)
        return at, line

    def wait_for(self, word: str) -> float:
        """The time the child said ``word``."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            got = self._next(timeout=1.0)
            if got and got[1] == word:
                return got[0]
        raise AssertionError(f"the child did not say {word!r} in time (said {self.seen})")

    def files(self) -> tuple[tuple[int, int] | None, ...]:
        """Size and mtime of the store's file and its WAL."""
        out: list[tuple[int, int] | None] = []
        for p in (self.store, self.store.with_name(self.store.name + ".wal")):
            try:
                st = p.stat()
                out.append((st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def wait_for_first_write(self) -> float:
        """The time the store's files first change (or the write returns, if sooner)."""
        before = self.files()
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if self.files() != before:
                return time.monotonic()
            got = self._next(timeout=0.0005)
            if got:
                return got[0]
        raise AssertionError("the child never wrote to its store")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=TIMEOUT_S)
        self._drain()
        assert code == -signal.SIGKILL, self.stderr.read_text(errors="replace")

    def finish(self) -> None:
        """Let the child close the store and exit."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=TIMEOUT_S) == 0, self.stderr.read_text(errors="replace")
        self._drain()

    def _drain(self) -> None:
        self.reader.join(timeout=TIMEOUT_S)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        while True:
            at, line = self.lines.get_nowait()
            if line is None:
                return
            self.seen.append(line)


def data_of(op: str, clean: Clean) -> Path:
    return clean.rows if op == "import" else clean.bundle


@pytest.fixture(scope="module")
def windows(clean: Clean, tmp_path_factory: pytest.TempPathFactory,
            ) -> dict[tuple[str, str], dict[str, float]]:
    """Per (write, mode), how long each window lasted in one run that was not killed."""
    folder = tmp_path_factory.mktemp("calibration")
    out = {}
    for op in ("import", "bundle"):
        for mode in ("wal", "ckpt"):
            path = folder / f"{op}-{mode}.duckdb"
            child = Child(op, path, data_of(op, clean), mode)
            ready = child.wait_for("ready")
            first_write = child.wait_for_first_write()
            committed = child.wait_for("committed")
            checkpointed = child.wait_for("checkpointed")
            child.finish()
            out[op, mode] = {"body": first_write - ready, "commit": committed - first_write,
                             "checkpoint": checkpointed - committed}
            store = DuckDBStore(path, ME.central)
            try:  # the child, left alone, makes the clean run
                assert store.checksums() == clean.checksums
            finally:
                store.close()
    return out


@pytest.fixture(scope="module", autouse=True)
def report_kills() -> Iterator[None]:
    """Print where the kills landed (shown with ``pytest -s``)."""
    yield
    if not KILLS:
        return
    print(f"\n{len(KILLS)} SIGKILLs (seed {SEED}):")
    print(f"  {'write':7} {'window':10} {'mode':5} {'delay ms':>9}  {'kept':5} moment")
    for k in KILLS:
        print(f"  {k.op:7} {k.window:10} {k.mode:5} {k.delay_ms:9.1f}  {str(k.kept):5} "
              f"{k.moment}")
    moments: dict[str, int] = {}
    for k in KILLS:
        moments[k.moment] = moments.get(k.moment, 0) + 1
    print("  " + "; ".join(f"{m}: {n}" for m, n in moments.items()))


def moment_of(child: Child, mode: str, files_changed: bool) -> str:
    if "checkpointed" in child.seen:
        return "after the write and its checkpoint"
    if "committed" in child.seen:
        return "in the explicit CHECKPOINT"
    if files_changed:
        return "at commit, in the checkpoint" if mode == "ckpt" else "at commit, writing the WAL"
    return "mid-transaction"


@pytest.mark.parametrize(("op", "window", "mode", "i"), CASES,
                         ids=[f"{op}-{w}-{m}-{i}" for op, w, m, i in CASES])
def test_sigkill_leaves_all_or_nothing(op: str, window: str, mode: str, i: int, clean: Clean,
                                       windows: dict[tuple[str, str], dict[str, float]],
                                       tmp_path: Path) -> None:
    delay = random.Random(f"{SEED}/{op}/{window}/{mode}/{i}").uniform(
        0, windows[op, mode][window])
    path = tmp_path / "store.duckdb"
    child = Child(op, path, data_of(op, clean), mode)
    start = child.wait_for("ready")
    untouched = child.files()
    if window == "commit":
        start = child.wait_for_first_write()
    elif window == "checkpoint":
        start = child.wait_for("committed")
    time.sleep(max(0.0, start + delay - time.monotonic()))
    files_changed = child.files() != untouched
    child.kill()

    store = DuckDBStore(path, ME.central)
    try:
        vector = store.vector()
        assert vector in (clean.seed_vector, clean.vector), "half a write survived the kill"
        kept = vector == clean.vector
        KILLS.append(Kill(op, window, mode, delay * 1000, moment_of(child, mode, files_changed),
                          kept))
        # Gap-free: the log holds exactly the events the vector counts.
        assert len(store.events_after({})) == sum(vector.values())
        assert verify(store) == []

        if op == "import" and not kept:
            assert import_rows(store, clean.rows).applied == sum(clean.vector.values()) - sum(
                clean.seed_vector.values())
        elif op == "bundle":
            report = store.append(clean.bundle_batch)
            held = sum(vector.values())
            assert (report.applied, report.duplicates) == (len(clean.bundle_batch) - held, held)
        assert store.vector() == clean.vector
        assert store.checksums() == clean.checksums
        assert store.conflicts() == clean.conflicts
    finally:
        store.close()


def test_the_child_says_each_word_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGKILL cannot cut a line the parent reads in half: with PYTHONUNBUFFERED,
    print(a, b) writes each piece on its own."""
    writes: list[str] = []

    class Pipe:
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stdout", Pipe())
    say("committed")
    (line,) = writes
    word, said_at = line.split()
    assert (word, line[-1]) == ("committed", "\n") and float(said_at) > 0
