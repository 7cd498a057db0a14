"""Re-registering a copied or restored data folder (``selaras init --reregister``).

The real centre runs in-process on 127.0.0.1 (``running_server``); the two PCs
are data folders driven through the ``selaras`` command line, run in a worker
thread (``asyncio.to_thread``) so that the centre's event loop keeps serving.
What the centre holds is read back through its admin commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from structlog.testing import capture_logs

from selaras.client.cli import cli
from selaras.client.install import Install
from selaras.client.reregister import reissue
from selaras.client.sync import SyncRefused, run_sync
from selaras.engine.events import Event
from selaras.engine.storage import DuckDBStore
from selaras.server.testing import RunningServer, running_server

NPSN = "20100001"
USER, PASSWORD = "op@sekolah.id", "rahasia123"
OLD, PEER, NEW = ("00000000-0000-4000-8000-00000000000" + c for c in "abc")


def selaras(data: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, ["--data", str(data), *args])
    assert result.exit_code == code, (args, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


async def run(data: Path, *args: str, code: int = 0) -> Result:
    """A command on a data folder, off the event loop that serves the centre."""
    return await asyncio.to_thread(selaras, data, *args, code=code)


async def refused(data: Path, *args: str) -> str:
    """Run a command that must fail: its one line on stderr."""
    result = await run(data, *args, code=1)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("selaras: error: ")
    return line


async def sync(data: Path, *, ok: bool = True) -> str:
    """Sync through the library, as 'selaras sync' does after its own gate: these tests
    are of re-registration; the principal's gate has its own (tests/test_principal.py).
    The refusal's line, or '' when it completed."""
    def go() -> str:
        with Install(data).open() as session:
            try:
                asyncio.run(run_sync(session.store, session.identity, mode="sync",
                                     timeout_s=60))
            except SyncRefused as exc:
                return f"selaras: error: {exc}"
        return ""

    line = await asyncio.to_thread(go)
    assert bool(line) != ok, line
    return line


async def state(data: Path) -> tuple[dict[str, str], dict[str, int], list[Any]]:
    """Checksums, vector and conflicts (as the reader sees them), for 'changes nothing'."""
    sums = json.loads((await run(data, "checksum", "--json")).stdout)
    conflicts = json.loads((await run(data, "conflicts", "--json")).stdout)
    return sums["checksums"], sums["vector"], conflicts


async def tanah(data: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads((await run(data, "query", "SELECT * FROM tanah", "--json")).stdout)
    return {r["tanah_id"]: r for r in rows}


async def siblings(data: Path, row: str) -> set[str]:
    conflicts = json.loads((await run(data, "conflicts", "--json")).stdout)
    return {str(s["value"]) for c in conflicts if c["row_id"] == row and c["field"] == "nama"
            for s in c["siblings"]}


async def centre_checksums(srv: RunningServer) -> dict[str, str]:
    reply = await srv.admin("checksum", npsn=NPSN)
    assert reply.columns == ["entity", "checksum"], reply.message
    return {str(e): str(c) for e, c in reply.rows}


async def installs(srv: RunningServer) -> list[str]:
    return [str(r[0]) for r in (await srv.admin("installs", npsn=NPSN)).rows]


async def add(data: Path, nama: str) -> str:
    return (await run(data, "add", "tanah", f"nama={nama}", "luas=10",
                      "kepemilikan_sarpras_id=1")).stdout.strip()


async def copied_and_collided(srv: RunningServer, tmp_path: Path,
                              ) -> tuple[str, Path, Path, list[str]]:
    """An install, synced, copied to a second PC; both edit; the original syncs; the
    copy's sync is refused. Returns the kode, both folders and the shared rows."""
    kode = await srv.add_school(NPSN, "SMA Negeri 1")
    a, b = tmp_path / "a", tmp_path / "b"
    await run(a, "init", "--server", srv.url, "--npsn", NPSN, "--kode", kode, "--user", USER,
              "--password", PASSWORD)
    rows = [await add(a, "Kebun"), await add(a, "Sawah")]
    await sync(a)
    shutil.copytree(a, b)  # the folder on a second PC (or a backup, restored)
    # The copy writes first: a different field of one row, the same field of another, a row.
    await run(b, "edit", "tanah", rows[0], "luas=77")
    await run(b, "edit", "tanah", rows[1], "nama=Sawah (salinan)")
    await add(b, "Lapangan (salinan)")
    # Then the original: another field of the first row, the same field later, a row.
    await run(a, "edit", "tanah", rows[0], "nama=Kebun (asli)")
    await run(a, "edit", "tanah", rows[1], "nama=Sawah (asli)")
    await add(a, "Taman (asli)")
    await sync(a)
    line = await sync(b, ok=False)
    assert "event_collision" in line
    assert (f"'selaras init --reregister --server {srv.url} --npsn {NPSN} --kode <kode "
            f"registrasi> --user {USER} --password <kata sandi>'") in line
    return kode, a, b, rows


def test_a_copied_folder_reregisters_and_converges_losing_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode, a, b, rows = await copied_and_collided(srv, tmp_path)
            old = json.loads((await run(b, "checksum", "--json")).stdout)["vector"]
            done = json.loads((await run(
                b, "init", "--reregister", "--server", srv.url, "--npsn", NPSN, "--kode",
                kode, "--user", USER, "--password", PASSWORD, "--json")).stdout)
            assert done["reissued"] == 3 and done["kept"] == 0 and not done["dropped"]
            assert done["origin"] != done["previous_origin"]
            assert sorted(await installs(srv)) == sorted([done["previous_origin"],
                                                          done["origin"]])
            # The old file is kept, untouched: the old install, with its own events.
            backup = Path(done["backup"])
            assert backup.parent == b and backup.exists()
            kept = DuckDBStore(backup, frozenset(), read_only=True)
            try:
                assert kept.meta()["origin"] == done["previous_origin"]
                assert kept.vector() == old
            finally:
                kept.close()
            assert sorted(p.name for p in b.iterdir()) == sorted(["selaras.duckdb",
                                                                  backup.name])
            # Every edit of both PCs is there, before the copy has sent anything.
            land = await tanah(b)
            assert land[rows[0]]["nama"] == "Kebun (asli)" and float(land[rows[0]]["luas"]) == 77
            # Re-issued changes keep their time: the original's later write wins, and the
            # two concurrent writes stay a conflict that shows both.
            assert land[rows[1]]["nama"] == "Sawah (asli)"
            assert await siblings(b, rows[1]) == {"Sawah (asli)", "Sawah (salinan)"}
            assert {"Lapangan (salinan)", "Taman (asli)"} <= {r["nama"] for r in land.values()}
            assert len(land) == 4
            await sync(b)
            await sync(a)
            sums_a, vector_a, conflicts_a = await state(a)
            sums_b, vector_b, conflicts_b = await state(b)
            assert sums_a == sums_b == await centre_checksums(srv)
            assert vector_a == vector_b
            assert await tanah(a) == land
            assert await siblings(a, rows[1]) == {"Sawah (asli)", "Sawah (salinan)"}
            # Nothing left to re-register: the new install's sync is fine.
            assert "needs no re-registering" in await refused(
                b, "init", "--reregister", "--server", srv.url, "--npsn", NPSN, "--kode",
                kode, "--user", USER, "--password", PASSWORD)

    with capture_logs():
        asyncio.run(main())


def test_bad_reregistering_changes_nothing(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode, a, b, _ = await copied_and_collided(srv, tmp_path)
            args = ["--server", srv.url, "--npsn", NPSN, "--user", USER]
            # The original has not collided: it needs no re-registering.
            before_a = await state(a)
            assert "needs no re-registering" in await refused(
                a, "init", "--reregister", *args, "--kode", kode, "--password", PASSWORD)
            assert await state(a) == before_a
            before, files = await state(b), sorted(os.listdir(b))
            for wrong, says in [(["--kode", "XXXX-XXXX", "--password", PASSWORD], "kode"),
                                (["--kode", kode, "--password", "salah"], "kata sandi"),
                                (["--kode", kode, "--password", PASSWORD, "--npsn",
                                  "20100002"], "not 20100002")]:
                assert says in await refused(b, "init", "--reregister", *args, *wrong)
                assert await state(b) == before and sorted(os.listdir(b)) == files
            assert len(await installs(srv)) == 1
            # Killed (here: failing) at the last step, the old install stays, whole.
            real_replace = os.replace

            def failing(src: Any, dst: Any) -> None:
                if Path(src).name == ".selaras.duckdb.reregister":
                    raise OSError(28, "No space left on device")
                real_replace(src, dst)

            monkeypatch.setattr(os, "replace", failing)
            assert "disk penuh" in await refused(
                b, "init", "--reregister", *args, "--kode", kode, "--password", PASSWORD)
            monkeypatch.undo()
            assert await state(b) == before
            assert not (b / ".selaras.duckdb.reregister").exists()
            # The folder works as before: it edits, and its sync is refused the same way.
            await add(b, "Kolam")
            assert "event_collision" in await sync(b, ok=False)

    with capture_logs():
        asyncio.run(main())


def test_only_a_refused_registered_folder_is_reregistered(tmp_path: Path) -> None:
    folder = tmp_path / "offline"
    selaras(folder, "init", "--offline", "--npsn", NPSN)
    args = ["init", "--reregister", "--server", "ws://127.0.0.1:9", "--npsn", NPSN,
            "--kode", "K", "--password", "p"]
    assert "never registered" in selaras(folder, *args, code=1).stderr
    assert "tidak ada instalasi" in selaras(tmp_path / "empty", *args, code=1).stderr
    assert "--offline" in selaras(folder, *args[:1], "--offline", *args[1:], code=2).stderr


def event(origin: str, seq: int, nama: str, context: dict[str, int] | None = None) -> Event:
    return Event(origin=origin, seq=seq, hlc=1000 + seq, entity="tanah",
                 row_id="5d0f6f0e-6a1c-4c1e-9c84-000000000001", changes={"nama": nama},
                 author="op", role="operator", context=context)


def test_reissue_takes_what_the_centre_lacks_with_what_it_had_seen() -> None:
    shared = [event(OLD, 1, "a", {PEER: 2}), event(OLD, 2, "b")]
    mine = [*shared, event(OLD, 3, "copy"), event(OLD, 4, "centre's too"),
            event(OLD, 5, "copy again", {PEER: 3})]
    held = {ev.seq: ev for ev in [*shared, event(OLD, 3, "original"), mine[3]]}
    out = reissue(mine, held, NEW)
    assert [(ev.origin, ev.seq, ev.changes["nama"], ev.hlc) for ev in out] == [
        (NEW, 1, "copy", 1003), (NEW, 2, "copy again", 1005)]
    # Concurrent with the original's writes above seq 2, after what the copy had seen.
    assert [ev.context for ev in out] == [{PEER: 2, OLD: 2}, {PEER: 3, OLD: 2}]
    assert reissue(shared, held, NEW) == []
