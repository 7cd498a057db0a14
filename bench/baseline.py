"""The bare pipeline: the yardstick the sync target is measured against.

The sync issue's target: the end-to-end rate (durable on the receiving side)
is at least half the rate of a bare pipeline that encodes the same rows with
msgspec, sends them over one websocket, decodes them and inserts them into one
DuckDB table, measured in the same run. This module is that bare pipeline,
built the honest simple way a developer would write it, with none of the
engine (no events, clocks, log, merge or validation):

- the client holds the rows as dicts, as read from the JSON-lines file
  (``load_rows``: reading and parsing the file is not timed);
- it cuts them into batches of ``batch_rows`` and sends each batch as one
  binary frame: ``msgspec.msgpack`` of a list of row dicts (one row = one
  msgpack map, ``"entity"`` included);
- one websocket on 127.0.0.1 (an ephemeral port), permessage-deflate off,
  keepalive pings off; at most ``window`` batches unacknowledged (the sync
  protocol has a window too, DESIGN.md section 6; ``window=1`` is
  stop-and-wait);
- the server decodes each frame back to dicts, turns the batch into three
  columns and inserts it into one generic table, committed per batch::

      CREATE TABLE bare_rows (entity VARCHAR, row_id VARCHAR, data JSON)

  ``row_id`` is the row's primary key (the entity's key field) and ``data``
  the rest of the row re-encoded as JSON by msgspec. A generic
  (entity, id, document) table is what a bare pipeline that knows nothing of
  the 17 entities' columns would do; the columns go in through Arrow (one
  ``INSERT ... SELECT`` per batch), the way DuckDB is meant to be fed, not
  row-by-row SQL;
- the server acknowledges each batch after its COMMIT (DuckDB syncs its WAL
  at commit), so the rate counts only rows that are durable on the receiving
  side: the clock runs from the first encode to the last acknowledgement.

The decode, the conversion and the insert run in a worker thread
(``asyncio.to_thread``), off the event loop. Client and server share one
process and one event loop: like the engine's end-to-end figure when it is
measured in one process, both sides share one GIL.

DuckDB is reached through ``DuckDBStore`` (its connection and its
``transaction()``): the layering rules (tests/test_layering.py) let only the
storage module import duckdb. The store also creates its own (empty) schema in
the file; that is not timed and the bare pipeline never touches it.

By hand::

    python -m selaras.bench.baseline ROWS_FILE [--batch-rows N] [--window N]
                                               [--rounds N] [--db FILE] [--json]

``bench/test_baseline_bench.py`` runs it on the large school at scale 40
(``make bench``); tests/test_baseline.py checks it on the small school.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from selaras.engine.schema import BY_NAME
from selaras.engine.storage import DuckDBStore

TABLE = "bare_rows"
BATCH_ROWS = 10_000
WINDOW = 4
HOST = "127.0.0.1"
MAX_FRAME = 256 * 1024 * 1024  # a batch is one frame; websockets' default cap is 1 MiB
KEYS = {name: e.key for name, e in BY_NAME.items()}  # entity -> its primary key field

Row = dict[str, Any]


@dataclass(frozen=True)
class PipelineResult:
    """What one run of the bare pipeline delivered, and how fast."""

    rows: int  # rows committed by the server and acknowledged to the client
    seconds: float  # first encode to last acknowledgement
    bytes_sent: int  # the client's frames' payloads (websocket framing not counted)
    batches: int
    batch_rows: int
    window: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_s": self.rows_per_s}

    def summary(self) -> str:
        return (f"bare pipeline: {self.rows:,} rows in {self.seconds:.2f} s = "
                f"{self.rows_per_s:,.0f} rows/s, {self.bytes_sent / 2**20:,.1f} MiB sent "
                f"in {self.batches:,} batches of <= {self.batch_rows:,} rows "
                f"(window {self.window})")


class PipelineFailed(RuntimeError):
    """The connection ended before every batch was acknowledged."""


def load_rows(path: str | os.PathLike[str]) -> list[Row]:
    """The rows of a JSON-lines file (``bench.generate.write``'s format), as dicts."""
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    with open(path, "rb") as f:
        return [decode(line) for line in f if line.strip()]


# -- the receiving side ---------------------------------------------------------------------

class Sink:
    """One DuckDB table in a file; ``insert`` decodes a frame and commits it.

    A fresh file by default; with ``update`` the table of an earlier run, where
    each batch replaces the rows it sends again (edited rows), in one transaction.
    """

    def __init__(self, db_path: str | os.PathLike[str], *, update: bool = False) -> None:
        if Path(db_path).exists() != update:
            raise FileExistsError(f"the bare pipeline writes a fresh file; {db_path} exists"
                                  if not update else f"no earlier run's file {db_path}")
        self.store = DuckDBStore(db_path, frozenset())
        self.update = update
        if not update:
            with self.store.transaction() as c:
                c.execute(f"CREATE TABLE {TABLE} (entity VARCHAR, row_id VARCHAR, data JSON)")
        self._decode = msgspec.msgpack.Decoder(list[dict[str, Any]]).decode
        self._json = msgspec.json.Encoder().encode

    def insert(self, frame: bytes) -> int:
        """Decode one batch, insert it, commit; the number of rows committed."""
        rows = self._decode(frame)
        entities: list[str] = []
        ids: list[object] = []
        docs: list[bytes] = []
        for row in rows:
            entity = row.pop("entity")
            entities.append(entity)
            ids.append(row[KEYS[entity]])
            docs.append(self._json(row))
        batch = pa.table({"entity": pa.array(entities, pa.string()),
                          "row_id": pa.array(ids, pa.string()),
                          "data": pa.array(docs, pa.string())})
        with self.store.transaction() as c:
            c.register("batch", batch)
            if self.update:
                c.execute(f"DELETE FROM {TABLE} t USING batch b "
                          f"WHERE t.entity = b.entity AND t.row_id = b.row_id")
            c.execute(f"INSERT INTO {TABLE} SELECT entity, row_id, data FROM batch")
            c.unregister("batch")
        return len(rows)

    def close(self) -> None:
        self.store.close()


async def _serve_one(ws: ServerConnection, sink: Sink) -> None:
    """Insert each frame in a worker thread, then acknowledge it: (batch number, rows)."""
    ack = msgspec.msgpack.Encoder().encode
    number = 0
    async for frame in ws:
        if isinstance(frame, str):
            await ws.close(1003, "binary frames only")
            return
        n = await asyncio.to_thread(sink.insert, frame)
        await ws.send(ack((number, n)))
        number += 1


# -- the sending side -----------------------------------------------------------------------

async def _send_all(uri: str, rows: Sequence[Row], batch_rows: int, window: int,
                    ) -> PipelineResult:
    encode = msgspec.msgpack.Encoder().encode
    decode_ack = msgspec.msgpack.Decoder(tuple[int, int]).decode
    n_batches = -(-len(rows) // batch_rows)
    credits = asyncio.Semaphore(window)
    acked = {"rows": 0, "batches": 0}
    bytes_sent = 0
    async with connect(uri, compression=None, max_size=MAX_FRAME, ping_interval=None,
                       proxy=None) as ws:

        async def read_acks() -> None:
            try:
                while acked["batches"] < n_batches:
                    number, n = decode_ack(await ws.recv(decode=False))
                    if number != acked["batches"]:
                        raise PipelineFailed(f"ack for batch {number}, "
                                             f"expected {acked['batches']}")
                    acked["batches"] += 1
                    acked["rows"] += n
                    credits.release()
            finally:  # unblock the sender whatever happened; it checks below
                for _ in range(window + 1):
                    credits.release()

        start = time.perf_counter()
        reader = asyncio.create_task(read_acks())
        try:
            for at in range(0, len(rows), batch_rows):
                await credits.acquire()
                if reader.done():
                    break
                frame = encode(rows[at:at + batch_rows])
                bytes_sent += len(frame)
                await ws.send(frame)
            await reader
        except ConnectionClosed as exc:
            reader.cancel()
            raise PipelineFailed(f"the connection closed after {acked['batches']} of "
                                 f"{n_batches} acknowledgements: {exc}") from exc
        except BaseException:
            reader.cancel()
            raise
        seconds = time.perf_counter() - start
    if acked["batches"] != n_batches:
        raise PipelineFailed(f"{acked['batches']} of {n_batches} batches acknowledged")
    return PipelineResult(rows=acked["rows"], seconds=seconds, bytes_sent=bytes_sent,
                          batches=n_batches, batch_rows=batch_rows, window=window)


async def run_pipeline(rows: Sequence[Row], db_path: str | os.PathLike[str],
                       batch_rows: int = BATCH_ROWS, *, window: int = WINDOW,
                       update: bool = False) -> PipelineResult:
    """Send ``rows`` (already in memory) through the bare pipeline into a fresh ``db_path``
    (or, with ``update``, over the rows an earlier run left there: ``Sink``).

    The rows are not modified (the server decodes its own copies). Only the
    transfer is timed; the server's table is created before the clock starts.
    """
    if batch_rows < 1 or window < 1:
        raise ValueError("batch_rows and window must be >= 1")
    sink = await asyncio.to_thread(lambda: Sink(db_path, update=update))
    try:
        async with serve(lambda ws: _serve_one(ws, sink), HOST, 0, compression=None,
                         max_size=MAX_FRAME, ping_interval=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            return await _send_all(f"ws://{HOST}:{port}", rows, batch_rows, window)
    finally:
        await asyncio.to_thread(sink.close)


async def bare_pipeline(rows_path: str, db_path: str, batch_rows: int = BATCH_ROWS, *,
                        window: int = WINDOW) -> PipelineResult:
    """Load the JSON-lines rows (not timed), then send them through the bare pipeline."""
    rows = await asyncio.to_thread(load_rows, rows_path)
    return await run_pipeline(rows, db_path, batch_rows, window=window)


# -- reading the table back (the exactly-once checks) ---------------------------------------

def delivered(db_path: str | os.PathLike[str]) -> dict[str, tuple[int, int]]:
    """Per entity: the rows in the table and their distinct row ids."""
    store = DuckDBStore(db_path, frozenset(), read_only=True)
    try:
        with store.transaction() as c:  # not store.query: that reads only the school's tables
            found = c.execute(f"SELECT entity, count(*), count(DISTINCT row_id) "
                              f"FROM {TABLE} GROUP BY entity").fetchall()
    finally:
        store.close()
    return {entity: (int(n), int(ids)) for entity, n, ids in found}


def stored_rows(db_path: str | os.PathLike[str], row_ids: Sequence[str]) -> dict[str, Row]:
    """The rows under ``row_ids`` as they went in (``entity`` and the key included)."""
    store = DuckDBStore(db_path, frozenset(), read_only=True)
    try:
        with store.transaction() as c:
            found = c.execute(f"SELECT entity, row_id, data FROM {TABLE} "
                              f"WHERE list_contains(?, row_id)", [list(row_ids)]).fetchall()
    finally:
        store.close()
    return {row_id: {"entity": entity, **json.loads(data)} for entity, row_id, data in found}


# -- by hand --------------------------------------------------------------------------------

def peak_rss() -> int | None:
    """This process's peak resident set size in bytes (None where unknown)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def remove_db(path: str | os.PathLike[str]) -> None:
    for p in (Path(path), Path(f"{path}.wal")):
        p.unlink(missing_ok=True)


def _child(args: argparse.Namespace, rows: list[Row]) -> None:
    """One round for the benchmark: say ready, wait for go, run, print the result as JSON."""
    print("ready", flush=True)
    sys.stdin.readline()
    result = asyncio.run(run_pipeline(rows, args.db, args.batch_rows, window=args.window))
    print(json.dumps({**result.as_dict(), "rss": peak_rss()}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m selaras.bench.baseline",
        description="The bare pipeline (msgspec, one websocket, one DuckDB table): "
                    "rows/s of a JSON-lines rows file, durable on the receiving side.")
    parser.add_argument("rows_file", help="JSON-lines rows (selaras bench generate --out ...)")
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS,
                        help=f"rows per frame and per commit (default {BATCH_ROWS:,})")
    parser.add_argument("--window", type=int, default=WINDOW,
                        help=f"unacknowledged batches at most (default {WINDOW})")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs, each into a fresh file (default 1)")
    parser.add_argument("--db", help="the DuckDB file to write (default: a temporary one, "
                                     "removed afterwards); must not exist")
    parser.add_argument("--json", action="store_true", help="one JSON line per round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_rows < 1 or args.window < 1 or args.rounds < 1:
        parser.error("--batch-rows, --window and --rounds must be >= 1")
    start = time.perf_counter()
    rows = load_rows(args.rows_file)
    if args.child:
        _child(args, rows)
        return
    if not args.json:
        print(f"loaded {len(rows):,} rows from {args.rows_file} in "
              f"{time.perf_counter() - start:.1f} s (not timed)", file=sys.stderr)
    folder = "" if args.db else tempfile.mkdtemp(prefix="selaras-baseline-")
    try:
        for i in range(args.rounds):
            db = args.db or os.path.join(folder, f"bare-{i}.duckdb")
            if args.db and i:
                remove_db(db)
            result = asyncio.run(run_pipeline(rows, db, args.batch_rows, window=args.window))
            if args.json:
                print(json.dumps({**result.as_dict(), "rss": peak_rss()}), flush=True)
            else:
                print(result.summary(), flush=True)
            if folder:
                remove_db(db)
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
    if not args.json:
        rss = peak_rss()
        print("peak RSS " + ("n/a" if rss is None else f"{rss / 2**20:,.0f} MiB")
              + " (the rows held in memory included)", file=sys.stderr)


if __name__ == "__main__":
    main()
