"""The school client's sync over real websockets on 127.0.0.1 (docs/protocol.md).

The centre here is ``tests/centre_stub.py`` (a small SyncProtocol server) until
``selaras.server.testing`` lands; every test talks to it through real sockets,
and the flaky-link test through ``bench.proxy.FlakyProxy``.
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
from centre_stub import CentreStub, running_stub
from click.testing import CliRunner
from selaras.bench.proxy import Faults, FlakyProxy
from selaras.client.cli import cli
from selaras.client.install import Install, Session, export_bundle, import_bundle
from selaras.client.sync import SyncRefused, now_ms, register, run_sync
from selaras.engine.protocol import Code, Limits

NPSN = "20100001"
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.1}


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def enrol(centre: CentreStub, folder: Path, stack: ExitStack, url: str | None = None,
                ) -> Session:
    """Register an install (init --server), open it and pull, as 'selaras init' does."""
    answer = await register(centre.url, NPSN, centre.schools[NPSN].kode, "op@sekolah.id", "pw")
    install = Install(folder)
    install.init_registered(NPSN, origin=answer.install, token=answer.token,
                            url=url or centre.url, user="op@sekolah.id", role=answer.role)
    session = stack.enter_context(install.open())
    report = await run_sync(session.store, session.identity, mode="pull", timeout_s=20, **FAST)
    assert report.ok and report.vectors_equal and report.checksums_equal
    return session


def add_tanah(session: Session, n: int, tag: str) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    session.replica.record([("tanah", i, {"nama": f"{tag} {k}"}) for k, i in enumerate(ids)],
                           now_ms())
    return ids


def centre_state(centre: CentreStub) -> tuple[dict[str, int], dict[str, str]]:
    store = centre.schools[NPSN].store
    return store.vector(), store.checksums()


def test_register_and_first_pull_gives_the_centres_data(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stub() as centre:
            centre.add_school(NPSN)
            with ExitStack() as stack:
                s = await enrol(centre, tmp_path / "a", stack)
                assert (s.store.vector(), s.store.checksums()) == centre_state(centre)
                meta = s.store.meta()
                assert meta["url"] == centre.url and meta["token"]
                assert "clock_offset_ms" in meta
                (rec,) = s.store.history()
                assert rec["outcome"] == "ok" and rec["mode"] == "pull"
                assert rec["events_down"] == len(s.store.events_after({}))
    run(main())


def test_three_installs_and_the_centre_converge(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stub() as centre:
            centre.add_school(NPSN)
            with ExitStack() as stack:
                a, b, c = [await enrol(centre, tmp_path / n, stack) for n in "abc"]
                # Offline for a while: each edits; a and b also swap bundles directly.
                row = add_tanah(a, 1, "a")[0]
                add_tanah(b, 5, "b")
                add_tanah(c, 7, "c")
                a.replica.edit("tanah", row, {"nama": "dari a"}, now_ms())
                data, _ = export_bundle(b, a.store.vector())
                import_bundle(a, data)
                b.replica.edit("tanah", row if row in b.store.rows("tanah") else
                               next(iter(b.store.rows("tanah"))), {"nama": "dari b"}, now_ms())
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
                state = centre_state(centre)
                for s in (a, b, c):
                    assert (s.store.vector(), s.store.checksums()) == state
                assert len(a.store.rows("tanah")) == 13
    run(main())


def test_flaky_link_completes_without_duplicates_and_resends_little(tmp_path: Path) -> None:
    async def main() -> None:
        limits = Limits(max_batch_events=50, window_batches=2)
        async with running_stub(limits) as centre:
            centre.add_school(NPSN)
            async with FlakyProxy("127.0.0.1", centre.port, Faults()) as proxy:
                with ExitStack() as stack:
                    url = f"ws://127.0.0.1:{proxy.port}"
                    s = await enrol(centre, tmp_path / "a", stack, url=url)
                    add_tanah(s, 3000, "t")
                    payload = len(s.store.events_after(
                        {o: q for o, q in centre_state(centre)[0].items()}).to_bytes())
                    proxy.set_faults(Faults(cut_after_bytes=(60_000, 120_000), seed=7))
                    r = await run_sync(s.store, s.identity, mode="sync", timeout_s=60,
                                       rng=random.Random(1), **FAST)
                    assert r.ok and r.attempts > 3 and proxy.stats.cuts >= 3
                    vector, sums = centre_state(centre)
                    assert vector[s.identity.origin] == 3000
                    _, rows = centre.schools[NPSN].store.query(
                        "SELECT count(*), count(DISTINCT (origin, seq)) FROM log.event "
                        f"WHERE origin = '{s.identity.origin}'")
                    assert rows[0] == (3000, 3000)
                    assert (s.store.vector(), s.store.checksums()) == (vector, sums)
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
        async with running_stub() as centre:
            centre.add_school(NPSN)
            with ExitStack() as stack:
                s = await enrol(centre, tmp_path / "a", stack)
                add_tanah(s, 3, "t")
                centre.busy = 2
                r = await run_sync(s.store, s.identity, mode="sync", timeout_s=20, **FAST)
                assert r.ok and r.busy_retries == 2 and r.attempts == 3
                assert [h["outcome"] for h in s.store.history()][:3] == ["ok", "busy", "busy"]
    run(main())


@pytest.mark.parametrize(("code", "text"), [
    (Code.CODE_RESET, "kode registrasi sudah direset: daftarkan ulang instalasi ini"),
    (Code.INSTALL_REVOKED, "dicabut"),
])
def test_final_refusals_are_clear_and_change_nothing(tmp_path: Path, code: Code,
                                                     text: str) -> None:
    async def main() -> None:
        async with running_stub() as centre:
            centre.add_school(NPSN)
            with ExitStack() as stack:
                s = await enrol(centre, tmp_path / "a", stack)
                add_tanah(s, 2, "t")
                before, centre_before = s.store.vector(), centre_state(centre)
                if code is Code.CODE_RESET:
                    centre.reset_kode(NPSN)
                else:
                    centre.revoke(NPSN, s.identity.origin)
                with pytest.raises(SyncRefused) as info:
                    await run_sync(s.store, s.identity, mode="sync", timeout_s=20, **FAST)
                assert info.value.code == code and text in str(info.value)
                assert s.store.vector() == before and centre_state(centre) == centre_before
                assert s.store.history()[0]["outcome"] == f"refused:{code}"
    run(main())


def test_a_pc_clock_years_ahead_is_reported(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stub() as centre:
            centre.add_school(NPSN)
            with ExitStack() as stack:
                s = await enrol(centre, tmp_path / "a", stack)
                centre.clock_skew_ms = -3 * 365 * 86_400_000  # the PC is 3 years ahead
                r = await run_sync(s.store, s.identity, mode="pull", timeout_s=20, **FAST)
                assert r.clock_warning and "terlalu cepat" in r.clock_warning
                assert int(s.store.meta()["clock_offset_ms"]) < -1_000 * 86_400_000
    run(main())


def test_history_command_lists_sessions(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stub() as centre:
            centre.add_school(NPSN)
            with ExitStack() as stack:
                await enrol(centre, tmp_path / "a", stack)
    run(main())
    out = CliRunner().invoke(cli, ["--data", str(tmp_path / "a"), "history", "--json"])
    assert out.exit_code == 0, out.output
    (rec,) = json.loads(out.output)
    assert rec["outcome"] == "ok" and rec["mode"] == "pull"


def test_against_the_real_server_two_installs_converge(tmp_path: Path) -> None:
    from selaras.server.testing import running_server

    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                sessions = []
                for n in "ab":
                    a = await register(srv.url, NPSN, kode, "op@sekolah.id", "rahasia123")
                    install = Install(tmp_path / n)
                    install.init_registered(NPSN, origin=a.install, token=a.token, url=srv.url,
                                            user="op@sekolah.id", role=a.role)
                    s = stack.enter_context(install.open())
                    r = await run_sync(s.store, s.identity, mode="pull", timeout_s=20, **FAST)
                    assert r.ok and r.checksums_equal and r.totals.events_down > 0
                    sessions.append(s)
                for i, s in enumerate(sessions):
                    add_tanah(s, 3 + i, str(i))
                for s in sessions + sessions[:1]:
                    r = await run_sync(s.store, s.identity, mode="sync", timeout_s=20, **FAST)
                    assert r.ok
                assert r.vectors_equal and r.checksums_equal
                a, b = sessions
                assert (a.store.vector(), a.store.checksums()) == (b.store.vector(),
                                                                   b.store.checksums())
    run(main())
