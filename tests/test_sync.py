"""The school client's sync against the real centre, over websockets on 127.0.0.1.

Every test starts the real server in-process (``selaras.server.testing.running_server``,
port 0) and talks to it through real sockets; the flaky-link test puts
``bench.proxy.FlakyProxy`` in between. What the centre holds is read back through its
admin commands (``query``, ``checksum``), as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Coroutine
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from selaras.bench.proxy import Faults, FlakyProxy
from selaras.client import sync as client_sync
from selaras.client.cli import cli
from selaras.client.install import Install, Session, export_bundle, import_bundle
from selaras.client.sync import SyncRefused, now_ms, register, run_sync
from selaras.engine.events import Batch
from selaras.engine.outbox import Outbox
from selaras.engine.protocol import Code, Limits, Registered
from selaras.server.testing import ProtocolClient, RunningServer, running_server

NPSN = "20100001"
USER, PASSWORD = "op@sekolah.id", "rahasia123"
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.1}


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def enrol(srv: RunningServer, kode: str, folder: Path, stack: ExitStack,
                url: str | None = None) -> Session:
    """Register an install with the centre's kode, open it and pull, as 'selaras init' does."""
    answer = await register(srv.url, NPSN, kode, USER, PASSWORD)
    install = Install(folder)
    install.init_registered(NPSN, origin=answer.install, token=answer.token,
                            url=url or srv.url, user=USER, role=answer.role,
                            centre_key=answer.centre_key)
    session = stack.enter_context(install.open())
    report = await run_sync(session.store, session.identity, mode="pull", timeout_s=20, **FAST)
    assert report.ok and report.vectors_equal and report.checksums_equal
    return session


def add_tanah(session: Session, n: int, tag: str) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    session.replica.record([("tanah", i, {"nama": f"{tag} {k}"}) for k, i in enumerate(ids)],
                           now_ms())
    return ids


async def centre_query(srv: RunningServer, sql: str) -> list[Any]:
    reply = await srv.admin("query", npsn=NPSN, sql=sql)
    assert reply.columns != ["error"], reply.message
    return list(reply.rows)


async def centre_state(srv: RunningServer) -> tuple[dict[str, int], dict[str, str]]:
    """The centre's vector and per-entity checksums for the school."""
    rows = await centre_query(srv, "SELECT CAST(origin AS VARCHAR), max(seq) FROM event GROUP BY 1")
    reply = await srv.admin("checksum", npsn=NPSN)
    assert reply.columns == ["entity", "checksum"], reply.message
    return {str(o): int(s) for o, s in rows}, {str(e): str(c) for e, c in reply.rows}


async def held_once(srv: RunningServer, origin: str) -> tuple[int, int, int]:
    """How many events of ``origin`` the centre holds, how many distinct, the top seq."""
    (row,) = await centre_query(
        srv, "SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM event "
             f"WHERE origin = '{origin}'")
    return int(row[0]), int(row[1]), int(row[2])


def local_state(s: Session) -> tuple[dict[str, int], dict[str, str]]:
    return ({o: q for o, q in s.store.vector().items() if q}, s.store.checksums())


def test_register_and_first_pull_gives_the_centres_data(tmp_path: Path,
        centre_store: str | None) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre", store=centre_store) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                s = await enrol(srv, kode, tmp_path / "a", stack)
                assert local_state(s) == await centre_state(srv)
                meta = s.store.meta()
                assert meta["url"] == srv.url and meta["token"]
                assert "clock_offset_ms" in meta
                (rec,) = s.store.history()
                assert rec["outcome"] == "ok" and rec["mode"] == "pull"
                assert rec["events_down"] == len(s.store.events_after({})) > 0
                installs = await srv.admin("installs", npsn=NPSN)
                assert [r[0] for r in installs.rows] == [s.identity.origin]
    run(main())


def test_three_installs_and_the_centre_converge(tmp_path: Path,
        centre_store: str | None) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre", store=centre_store) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                a, b, c = [await enrol(srv, kode, tmp_path / n, stack) for n in "abc"]
                # Offline for a while: each edits; a and b also swap bundles directly.
                row = add_tanah(a, 1, "a")[0]
                add_tanah(b, 5, "b")
                add_tanah(c, 7, "c")
                a.replica.edit("tanah", row, {"nama": "dari a"}, now_ms())
                data, _ = export_bundle(b, a.store.vector())
                import_bundle(a, data)
                data, _ = export_bundle(a, b.store.vector())
                import_bundle(b, data)
                b.replica.edit("tanah", row, {"nama": "dari b"}, now_ms())
                # Concurrent syncs, then one more round so everyone has everything.
                reports = await asyncio.gather(*(
                    run_sync(s.store, s.identity, mode="sync", timeout_s=20, **FAST)
                    for s in (a, b, c)))
                assert all(r.ok for r in reports)
                for s in (a, b, c):
                    r = await run_sync(s.store, s.identity, mode="sync", timeout_s=20, **FAST)
                    assert r.ok
                for s in (a, b, c):
                    r = await run_sync(s.store, s.identity, mode="pull", timeout_s=20, **FAST)
                    assert r.vectors_equal and r.checksums_equal
                state = await centre_state(srv)
                for s in (a, b, c):
                    assert local_state(s) == state
                    # Bundles carried a's and b's events too: still each once at the centre.
                    count, distinct, top = await held_once(srv, s.identity.origin)
                    assert count == distinct == top == s.store.vector()[s.identity.origin]
                tanah = a.store.rows("tanah")
                assert len(tanah) == 13 and tanah[row]["nama"] == "dari b"
    run(main())


def test_flaky_link_completes_without_duplicates_and_resends_little(tmp_path: Path,
        centre_store: str | None) -> None:
    async def main() -> None:
        limits = Limits(max_batch_events=50, window_batches=2)
        async with running_server(tmp_path / "centre", limits=limits,
                                  store=centre_store) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            async with FlakyProxy("127.0.0.1", srv.port, Faults()) as proxy:
                with ExitStack() as stack:
                    url = f"ws://127.0.0.1:{proxy.port}"
                    s = await enrol(srv, kode, tmp_path / "a", stack, url=url)
                    add_tanah(s, 3000, "t")
                    payload = len(s.store.events_after(
                        (await centre_state(srv))[0]).to_bytes())
                    proxy.set_faults(Faults(cut_after_bytes=(60_000, 120_000), seed=7))
                    r = await run_sync(s.store, s.identity, mode="sync", timeout_s=60,
                                       rng=random.Random(1), **FAST)
                    assert r.ok and r.attempts > 3 and proxy.stats.cuts >= 3
                    proxy.set_faults(Faults())
                    assert await held_once(srv, s.identity.origin) == (3000, 3000, 3000)
                    assert local_state(s) == await centre_state(srv)
                    # Resent after cuts: at most the window in flight at each cut (R12),
                    # and a small part of the whole.
                    resent = r.totals.events_up - 3000
                    assert resent <= proxy.stats.cuts * 2 * 50
                    assert r.totals.events_up < 3000 * 1.35, r.totals
                    per_event = r.totals.bytes_up / r.totals.events_up
                    assert r.totals.bytes_up - 3000 * per_event < 0.35 * 3000 * per_event
                    assert payload < r.totals.bytes_up  # batches of 50 cost framing too
                    history = s.store.history(100)
                    assert sum(h["outcome"] == "disconnected" for h in history) >= 3
    run(main())


def test_busy_refusal_is_honoured_and_retried(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre", max_sessions=1,
                                  busy_retry_s=0.2) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                s = await enrol(srv, kode, tmp_path / "a", stack)
                add_tanah(s, 3, "t")
                # Another install holds the only session slot for a while (it never acks).
                holder = ProtocolClient(srv.url, NPSN)
                assert isinstance(await holder.register(kode, USER, PASSWORD), Registered)
                held = asyncio.create_task(holder.raw_session([], mode="pull", wait_s=1.0))
                while srv.stats()["active"] < 1:
                    await asyncio.sleep(0.01)
                busy_before = srv.stats()["busy_refusals"]
                r = await run_sync(s.store, s.identity, mode="sync", timeout_s=20, **FAST)
                await held
                assert r.ok and r.busy_retries >= 2 and r.attempts == r.busy_retries + 1
                assert srv.stats()["busy_refusals"] - busy_before == r.busy_retries
                outcomes = [h["outcome"] for h in s.store.history()]
                assert outcomes[:r.attempts] == ["ok"] + ["busy"] * r.busy_retries
                assert local_state(s) == await centre_state(srv)
    run(main())


@pytest.mark.parametrize(("code", "text"), [
    (Code.CODE_RESET, "kode registrasi sudah direset: daftarkan ulang instalasi ini"),
    (Code.INSTALL_REVOKED, "dicabut"),
])
def test_final_refusals_are_clear_and_change_nothing(tmp_path: Path, code: Code,
                                                     text: str) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                s = await enrol(srv, kode, tmp_path / "a", stack)
                add_tanah(s, 2, "t")
                before, centre_before = local_state(s), await centre_state(srv)
                if code is Code.CODE_RESET:
                    reply = await srv.admin("reset_kode", npsn=NPSN)
                else:
                    reply = await srv.admin("revoke", install=s.identity.origin)
                assert reply.columns != ["error"], reply.message
                with pytest.raises(SyncRefused) as info:
                    await run_sync(s.store, s.identity, mode="sync", timeout_s=20, **FAST)
                assert info.value.code == code and text in str(info.value)
                assert local_state(s) == before
                assert await centre_state(srv) == centre_before
                assert s.store.history()[0]["outcome"] == f"refused:{code}"
    run(main())


def test_a_pc_clock_years_ahead_is_reported(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    three_years_ms = 3 * 365 * 86_400_000

    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                s = await enrol(srv, kode, tmp_path / "a", stack)
                # The PC's clock (what the client reads) is three years ahead of the centre's.
                monkeypatch.setattr(client_sync, "now_ms", lambda: now_ms() + three_years_ms)
                r = await run_sync(s.store, s.identity, mode="pull", timeout_s=20, **FAST)
                assert r.ok and r.clock_warning and "terlalu cepat" in r.clock_warning
                assert int(s.store.meta()["clock_offset_ms"]) < -1_000 * 86_400_000
    run(main())


def test_a_pc_clock_years_ahead_does_not_beat_later_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, centre_store: str | None) -> None:
    three_years_ms = 3 * 365 * 86_400_000

    async def main() -> None:
        async with running_server(tmp_path / "centre", store=centre_store) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                a = await enrol(srv, kode, tmp_path / "a", stack)
                b = await enrol(srv, kode, tmp_path / "b", stack)
                [row] = add_tanah(b, 1, "Tanah")
                assert (await run_sync(b.store, b.identity, mode="sync", **FAST)).ok
                assert (await run_sync(a.store, a.identity, mode="pull", **FAST)).ok
                # A's PC clock runs three years ahead: its edit and its sync say so.
                monkeypatch.setattr(client_sync, "now_ms", lambda: now_ms() + three_years_ms)
                a.replica.edit("tanah", row, {"nama": "from A"}, now_ms() + three_years_ms)
                r = await run_sync(a.store, a.identity, mode="sync", **FAST)
                assert r.ok and r.vectors_equal and r.checksums_equal
                assert r.sent["tanah"] == {"events": 1, "neutralised": 1}
                assert r.clock_warning and "1 perubahan dari komputer ini" in r.clock_warning
                assert srv.stats()["clock_bounded"] == 1
                monkeypatch.undo()
                # Later, B (a right clock) edits the same field: B's write wins everywhere.
                b.replica.edit("tanah", row, {"nama": "from B"}, now_ms())
                assert (await run_sync(b.store, b.identity, mode="sync", **FAST)).ok
                r = await run_sync(a.store, a.identity, mode="sync", **FAST)
                assert r.ok and r.vectors_equal and r.checksums_equal
                [(nama,)] = await centre_query(srv, f"SELECT nama FROM tanah WHERE tanah_id = "
                                                    f"'{row}'")
                assert nama == a.store.rows("tanah")[row]["nama"] == "from B"
                assert local_state(a) == local_state(b) == await centre_state(srv)
    run(main())


def test_history_command_lists_sessions(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                await enrol(srv, kode, tmp_path / "a", stack)
    run(main())
    out = CliRunner().invoke(cli, ["--data", str(tmp_path / "a"), "history", "--json"])
    assert out.exit_code == 0, out.output
    (rec,) = json.loads(out.output)
    assert rec["outcome"] == "ok" and rec["mode"] == "pull"


def test_two_installs_converge(tmp_path: Path,
        centre_store: str | None) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre", store=centre_store) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                sessions = [await enrol(srv, kode, tmp_path / n, stack) for n in "ab"]
                for i, s in enumerate(sessions):
                    add_tanah(s, 3 + i, str(i))
                for s in sessions + sessions[:1]:
                    r = await run_sync(s.store, s.identity, mode="sync", timeout_s=20, **FAST)
                    assert r.ok
                assert r.vectors_equal and r.checksums_equal
                a, b = sessions
                assert local_state(a) == local_state(b) == await centre_state(srv)
    run(main())


def test_the_outbox_reads_one_batch_at_a_time_and_covers_the_push(tmp_path: Path) -> None:
    install = Install(tmp_path / "a")
    install.init_offline(NPSN, nama=None, bentuk="SMA", user=USER)
    with install.open() as s:
        add_tanah(s, 3000, "t")
        me = s.identity.origin
        top = s.store.vector()[me]
        outbox = Outbox(s.store, me, 10, top, Limits(max_batch_events=400))
        seqs: list[int] = []
        while outbox:
            payload, count = outbox.next()
            batch = Batch.from_bytes(payload)
            assert count == len(batch) <= 400
            seqs += sorted(q for t in batch.tables.values() for q in t["seq"].to_pylist())
        assert seqs == list(range(11, top + 1))
        assert sum(outbox.sent.values()) == top - 10


def test_rows_that_differ_from_the_centre_are_found_and_recomputed(
        tmp_path: Path, centre_store: str | None) -> None:
    """Equal vectors, different checksums (R19): the client narrows the difference down to
    the rows, re-pulls their events, recomputes them from its log, and says which."""
    from selaras.engine.schema import ENTITIES
    from selaras.engine.storage.database import add_digests_sql

    async def main() -> None:
        async with running_server(tmp_path / "centre", store=centre_store) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                s = await enrol(srv, kode, tmp_path / "a", stack)
                ids = add_tanah(s, 600, "tanah")  # rows in most of the 256 buckets
                assert (await run_sync(s.store, s.identity, mode="sync", timeout_s=20,
                                       **FAST)).checksums_equal
                right = s.store.rows("tanah")
                # Damage two rows behind the merge's back, and the kept digests with them,
                # as a bug in the merge would.
                con = s.store.con
                con.execute("UPDATE tanah SET nama = 'Rusak' WHERE tanah_id IN (?, ?)",
                            [ids[7], ids[400]])
                con.execute("DELETE FROM replica.digest")
                for e in ENTITIES:
                    con.execute(add_digests_sql(e, f"FROM {e.table}"))
                assert local_state(s) != await centre_state(srv)
                r = await run_sync(s.store, s.identity, mode="sync", timeout_s=20, **FAST)
                assert r.ok and r.checksums_equal
                assert r.repaired == {"tanah": sorted([ids[7], ids[400]])}
                assert s.store.rows("tanah") == right
                assert local_state(s) == await centre_state(srv)
                assert s.store.checksums(full=True) == s.store.checksums()
                # A clean sync compares nothing.
                r = await run_sync(s.store, s.identity, mode="sync", timeout_s=20, **FAST)
                assert r.checksums_equal and r.repaired == {}
    run(main())
