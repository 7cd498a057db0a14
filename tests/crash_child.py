"""The process tests/test_crash.py kills: seed a DuckDB store, then make one big write.

Usage::

    python crash_child.py (import|bundle) STORE DATA (wal|ckpt)

It opens STORE (a fresh file), appends the seed (Referensi and the school's
identity, one batch) and says ``ready``; then it imports the JSON-lines rows
file DATA as the install ``ME`` (``import``) or appends the bundle in DATA,
decoded beforehand (``bundle``), and says ``committed``; then it runs an
explicit CHECKPOINT and says ``checkpointed``. Each word comes with the
``time.monotonic()`` it was said at, so that a parent starved of CPU still
knows when things happened. It then waits for its stdin to
close before it closes the store and exits. The parent SIGKILLs it somewhere
along the way.

Checkpoint modes: ``wal`` keeps DuckDB's default checkpoint_threshold (16 MiB),
above the ~3 MB of WAL the write makes, so the commit only writes the WAL;
``ckpt`` sets it to 1 KB, so every commit checkpoints (DuckDB then writes the
transaction straight into the database file instead of the WAL).

The constants and helpers here are shared with the test, so that the parent
finishes a killed write exactly as the child would have.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from selaras.bench.generate import sekolah_row
from selaras.engine.events import Batch
from selaras.engine.replica import Identity, referensi_events, school_identity_event
from selaras.engine.storage import DuckDBStore
from selaras.engine.store import AppendReport

NPSN = "20219151"
ME = Identity(npsn=NPSN, origin="c4a5e000-0000-4000-8000-00000000c4a5")
NOW_MS = 1_700_000_000_000  # fixed, so a repeated import makes the very same events
THRESHOLDS = {"wal": None, "ckpt": "1KB"}


def seed_batch() -> Batch:
    """The centre's seed of a new install: Referensi and the school's sekolah row."""
    fields = {k: v for k, v in sekolah_row(NPSN).items() if k not in ("sekolah_id", "npsn")}
    return Batch.from_events([*referensi_events(), school_identity_event(NPSN, fields)])


def import_rows(store: DuckDBStore, path: str | Path) -> AppendReport:
    return store.import_jsonl(str(path), origin=ME.origin, author=ME.author, role=ME.role,
                              sekolah_id=ME.sekolah_id, now_ms=NOW_MS)


def say(word: str) -> None:
    """Print ``word`` and when it was said (monotonic clocks are system-wide).

    One write: with PYTHONUNBUFFERED, print(a, b) makes four, and a SIGKILL between
    them left the parent half a line."""
    sys.stdout.write(f"{word} {time.monotonic()}\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    op, store_path, data_path, mode = argv
    store = DuckDBStore(store_path, ME.central)
    if THRESHOLDS[mode]:
        store.con.execute(f"SET checkpoint_threshold = '{THRESHOLDS[mode]}'")
    store.append(seed_batch())
    bundle = Batch.from_bytes(Path(data_path).read_bytes()) if op == "bundle" else None
    say("ready")
    if bundle is None:
        import_rows(store, data_path)
    else:
        store.append(bundle)
    say("committed")
    store.con.execute("CHECKPOINT")
    say("checkpointed")
    sys.stdin.read()
    store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
