"""Points 3, 4 and 6 of docs/security.md over a real centre on loopback: decoded sizes
are bounded, a bad batch costs only itself, and the centre decides who wrote what.

Each attack comes from a registered install of school A; each asserts the refusal,
that A's data did not change, and that school B syncs meanwhile with equal checksums.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import uuid

import duckdb
import msgspec
import pyarrow as pa
import pytest
from attack import A, B, bystander_syncs, install, pd_batch, state
from websockets.asyncio.client import connect

from selaras.engine.events import MAX_CONTEXT_PEERS, Batch, BatchFile, Event
from selaras.engine.protocol import Code, Limits
from selaras.engine.storage import log as duckdb_log
from selaras.engine.storage import pg_log
from selaras.engine.values import MAX_TEXT
from selaras.server.testing import ProtocolClient, RunningServer, events_frame, running_server


def run(coro):
    return asyncio.run(coro)


async def refused(client: ProtocolClient, batch: Batch | bytes) -> tuple[Code, str]:
    frame = batch if isinstance(batch, bytes) else events_frame(1, batch)
    out = await client.raw_session([frame])
    assert out.refused is not None, out
    return out.refused.code, out.refused.message


def with_table(batch: Batch, name: str, blob: bytes) -> bytes:
    """``batch`` as a frame, its table ``name`` replaced by Arrow IPC ``blob``."""
    f = msgspec.msgpack.decode(batch.to_bytes(), type=BatchFile)
    payload = msgspec.msgpack.encode(BatchFile({**f.tables, name: blob}, f.contexts))
    from selaras.engine.protocol import Events, encode
    return encode(Events(1, len(batch), payload))


def ipc(table: pa.Table, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def claiming_rows(blob: bytes, rows: int) -> bytes:
    """An IPC stream whose record batch says it has ``rows`` rows (its buffers unchanged):
    field 0 (``length``) of the RecordBatch table in the message's flatbuffer."""
    meta = list(pa.ipc.MessageReader.open_stream(blob))[1].metadata.to_pybytes()

    def field(table: int, i: int) -> int:
        vtable = table - struct.unpack_from("<i", meta, table)[0]
        return int(struct.unpack_from("<H", meta, vtable + 4 + 2 * i)[0])

    root = struct.unpack_from("<I", meta, 0)[0]
    header = root + field(root, 2)
    batch = header + struct.unpack_from("<I", meta, header)[0]
    at = blob.find(meta) + batch + field(batch, 0)
    assert int.from_bytes(blob[at:at + 8], "little") == 2
    return blob[:at] + rows.to_bytes(8, "little") + blob[at + 8:]


# -- 3: decoded size is bounded ---------------------------------------------------------------


def test_a_compressed_bomb_is_refused_before_it_is_inflated(tmp_path):
    async def main():
        async with running_server(tmp_path) as server:
            a, b = await install(server, A), await install(server, B)
            before = await state(server, A)
            # Arrow IPC with zstd bodies: 1.6 M rows in a few KB of batch.
            honest = pd_batch(a.install, 1, 1)
            t = honest.tables["peserta_didik"]
            big = pa.concat_tables([t] * (1 << 14)).combine_chunks()
            bomb = with_table(honest, "peserta_didik", ipc(big, "zstd"))
            assert len(bomb) < Limits().max_batch_bytes
            code, message = await refused(a, bomb)
            assert code is Code.MALFORMED_MESSAGE and "compressed" in message
            # permessage-deflate: 64 MiB of zeros in a small frame is cut at the frame limit
            async with connect(server.url, compression="deflate", max_size=None) as ws:
                await ws.send(bytes(64 << 20))
                with pytest.raises(Exception) as closed:
                    await ws.recv()
            assert closed.value.rcvd.code == 1009  # message too big
            await bystander_syncs(server, b, 1)
            assert await state(server, A) == before
    run(main())


def test_lying_arrow_lengths_and_foreign_types_are_refused(tmp_path):
    async def main():
        async with running_server(tmp_path) as server:
            a = await install(server, A)
            before = await state(server, A)
            honest = pd_batch(a.install, 1, 2)
            t = honest.tables["peserta_didik"]
            for frame in (with_table(honest, "peserta_didik", claiming_rows(ipc(t), 10**9)),
                          with_table(honest, "peserta_didik", ipc(t.cast(pa.schema(
                              [f.with_type(pa.large_string()) if f.type == pa.string() else f
                               for f in t.schema])))),
                          with_table(honest, "peserta_didik", ipc(t, "lz4"))):
                code, _ = await refused(a, frame)
                assert code is Code.MALFORMED_MESSAGE
            assert await state(server, A) == before
    run(main())


# -- 4: a bad batch costs only itself ------------------------------------------------------------


def test_invalid_utf8_and_out_of_range_values_are_refused(tmp_path):
    async def main():
        async with running_server(tmp_path) as server:
            a = await install(server, A)
            before = await state(server, A)
            honest = pd_batch(a.install, 1, 1, nama="Budi")
            t = honest.tables["peserta_didik"]
            i = t.schema.get_field_index("nama")
            bad_utf8 = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(
                b"\x00\x00\x00\x00\x02\x00\x00\x00"), pa.py_buffer(b"\xff\xfe")])
            too_late = pa.array([9999 * 366 * 2], pa.int32()).view(pa.date32())
            huge = pa.Array.from_buffers(pa.decimal128(18, 6), 1, [None, pa.py_buffer(
                (10**26).to_bytes(16, "little", signed=True))])
            cases = [t.set_column(i, "nama", bad_utf8)]
            for field, array in (("tanggal_lahir", too_late),):
                cases.append(t.set_column(t.schema.get_field_index(field), field, array))
            cases.append(t.set_column(t.schema.get_field_index("author"), "author",
                                      pa.array(["x" * (MAX_TEXT + 1)])))
            for bad in cases:
                code, _ = await refused(a, with_table(honest, "peserta_didik", ipc(bad)))
                assert code is Code.MALFORMED_MESSAGE
            tanah = Batch.from_events([Event(
                origin=a.install, seq=1, hlc=5, entity="tanah", row_id=str(uuid.uuid4()),
                changes={"luas": "1"}, author="op", role="operator")])
            tt = tanah.tables["tanah"]
            bad = tt.set_column(tt.schema.get_field_index("luas"), "luas", huge)
            code, message = await refused(a, with_table(tanah, "tanah", ipc(bad)))
            assert code is Code.MALFORMED_MESSAGE and "does not fit" in message
            assert await state(server, A) == before
    run(main())


def test_a_store_error_fails_its_session_alone_in_a_group_commit(tmp_path, centre_store,
                                                                 monkeypatch):
    """Any error of the store on one school's batch: that session is refused, the other
    school's batch in the same group commit is committed."""
    poison = "6666"
    for module, error in ((duckdb_log.DuckDBStore, duckdb.ConversionException),
                          (pg_log.PgStore, RuntimeError)):
        append = module.append

        def failing(self, batch, append=append, error=error):
            if any(poison in str(v) for t in batch.tables.values() if "nik" in t.column_names
                   for v in t["nik"].to_pylist()):
                raise error("Conversion Error: a value the column refuses")
            return append(self, batch)
        monkeypatch.setattr(module, "append", failing)

    async def main():
        async with running_server(tmp_path, store=centre_store) as server:
            a, b = await install(server, A), await install(server, B)
            before = await state(server, A)
            writer = server.server.writer
            gate, entered = threading.Event(), threading.Event()
            writer.call(lambda c, r: (entered.set(), gate.wait(10)))
            await asyncio.to_thread(entered.wait, 10)
            commits = server.stats()["commits"]
            bad = asyncio.create_task(a.session("sync", before[0], [
                pd_batch(a.install, 1, 2, nik=poison)]))
            good = asyncio.create_task(b.session("sync", {}, [pd_batch(b.install, 1, 2)]))
            async with asyncio.timeout(10):
                while writer._queue.qsize() < 2:  # both appends wait for one group
                    await asyncio.sleep(0.01)
            gate.set()
            bad_out, good_out = await asyncio.gather(bad, good)
            assert bad_out.refused is not None
            assert bad_out.refused.code is Code.INTERNAL_ERROR
            assert good_out.refused is None and good_out.summary is not None
            assert good_out.summary == await state(server, B)
            assert (await state(server, B))[0][b.install] == 2
            assert server.stats()["commits"] > commits
            assert await state(server, A) == before
    run(main())


# -- 6: the centre decides who wrote what ----------------------------------------------------------


async def stored_authors(server: RunningServer, npsn: str, origin: str) -> set[tuple[str, str]]:
    batch = await server.server.write(lambda c, _: c.school(npsn).events_after({}))
    return {(ev.author, ev.role) for ev in batch.events() if ev.origin == origin}


def test_the_author_and_role_stored_are_the_sessions(tmp_path, centre_store):
    async def main():
        async with running_server(tmp_path, store=centre_store) as server:
            a = await install(server, A, user="  Op@Sekolah.ID ")
            forged = Batch.from_events([Event(
                origin=a.install, seq=s, hlc=5 + s, entity="peserta_didik",
                row_id=str(uuid.uuid4()), changes={"nama": "X"}, author="kepala@sekolah.id",
                role="kepala_sekolah") for s in (1, 2)])
            out = await a.session("sync", {}, [forged])
            assert out.refused is None
            assert await stored_authors(server, A, a.install) == {("op@sekolah.id",
                                                                   "operator")}
            # sent again (a resend after a cut) it is the same event, not a collision
            again = await a.session("sync", {}, [forged])
            assert again.refused is None
    run(main())


def test_a_forged_causal_context_is_held_back_and_cannot_hide_a_conflict(tmp_path):
    async def main():
        async with running_server(tmp_path) as server:
            kode = await server.add_school(A, "SMA A")
            one, two = ProtocolClient(server.url, A), ProtocolClient(server.url, A)
            for c in (one, two):
                await c.register(kode, "op@sekolah.id", "rahasia-1")
            row = str(uuid.uuid4())

            def write(client, seq, nik, context=None):
                return Batch.from_events([Event(
                    origin=client.install, seq=seq, hlc=1_000 + seq, entity="peserta_didik",
                    row_id=row, changes={"nik": nik}, author="op", role="operator",
                    context=context)])
            first = await one.session("sync", {}, [write(one, 1, "1111")])
            assert first.refused is None
            start = await state(server, A)
            # two claims to have seen 50 of one's events: one has sent only 1
            out = await two.session("sync", start[0], [write(two, 1, "2222",
                                                             {one.install: 50})])
            assert out.refused is None
            assert (await state(server, A))[0].get(two.install, 0) == 0  # held back
            assert out.summary[0].get(two.install, 0) == 0
            # told the truth, the write is taken and the conflict shows
            honest = await two.session("sync", start[0], [write(two, 1, "2222")])
            assert honest.refused is None
            conflicts = await server.server.write(lambda c, _: c.school(A).conflicts())
            assert {s.value for s in conflicts} == {"1111", "2222"}
    run(main())


def test_text_and_contexts_over_their_limits_are_refused(tmp_path):
    async def main():
        async with running_server(tmp_path) as server:
            a, b = await install(server, A), await install(server, B)
            before = await state(server, A)
            long_text = Batch.from_events([Event(
                origin=a.install, seq=1, hlc=5, entity="peserta_didik", row_id=str(uuid.uuid4()),
                changes={"nama": "x" * (MAX_TEXT + 1)}, author="op", role="operator")])
            code, message = await refused(a, long_text)
            assert code is Code.MALFORMED_MESSAGE and str(MAX_TEXT) in message
            wide = Batch.from_events([Event(
                origin=a.install, seq=1, hlc=5, entity="peserta_didik", row_id=str(uuid.uuid4()),
                changes={"nama": "x"}, author="op", role="operator",
                context={str(uuid.uuid4()): 1 for _ in range(MAX_CONTEXT_PEERS + 1)})])
            code, message = await refused(a, wide)
            assert code is Code.MALFORMED_MESSAGE and "context" in message
            await bystander_syncs(server, b, 1)
            assert await state(server, A) == before
    run(main())
