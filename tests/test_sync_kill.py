"""SIGKILL mid-sync: the client process, then the server process (docs/protocol.md R9, R12).

A generated medium school is imported into an install, and ``selaras sync`` runs as a
subprocess; it is killed with SIGKILL while the centre holds part of the push. The next
sync completes: the centre holds each event exactly once and the checksums are equal.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from selaras.bench import generate
from selaras.bench.proxy import Faults, FlakyProxy
from selaras.client.install import Install
from selaras.engine.protocol import Limits
from selaras.server.testing import RunningServer, running_server

NPSN = "20100001"
USER, PASSWORD = "op@sekolah.id", "rahasia123"
EXE = shutil.which("selaras", path=str(Path(sys.executable).parent))

pytestmark = pytest.mark.skipif(EXE is None or not hasattr(signal, "SIGKILL"),
                                reason="needs the selaras entry point and SIGKILL")


async def selaras(*args: str) -> tuple[int, str, str]:
    assert EXE is not None
    proc = await asyncio.create_subprocess_exec(EXE, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def centre_held(srv: RunningServer, origin: str) -> tuple[int, int]:
    reply = await srv.admin("query", npsn=NPSN, sql="SELECT count(*), count(DISTINCT seq) "
                            f"FROM event WHERE origin = '{origin}'")
    assert reply.columns != ["error"], reply.message
    (row,) = reply.rows
    return int(row[0]), int(row[1])


def local(folder: Path) -> tuple[str, dict[str, int], dict[str, str]]:
    with Install(folder).open() as s:
        vector = {o: q for o, q in s.store.vector().items() if q}
        return s.identity.origin, vector, s.store.checksums()


def test_client_killed_mid_sync_then_synced_again_loses_and_duplicates_nothing(
        tmp_path: Path) -> None:
    rows = tmp_path / "medium.jsonl"
    generate.write(rows, generate.generate("medium", 1, NPSN, 0))
    data = str(tmp_path / "school")

    async def main() -> None:
        # Small batches and window: the push takes many round trips, so a kill lands mid-way.
        limits = Limits(max_batch_events=250, window_batches=2)
        window = limits.max_batch_events * limits.window_batches
        async with running_server(tmp_path / "centre", limits=limits) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            rc, out, err = await selaras("--data", data, "init", "--server", srv.url,
                                         "--npsn", NPSN, "--kode", kode, "--user", USER,
                                         "--password", PASSWORD, "--json", "--timeout", "60")
            assert rc == 0, err
            rc, out, err = await selaras("--data", data, "import", str(rows), "--json")
            assert rc == 0, err
            origin, vector, _ = local(tmp_path / "school")
            total = vector[origin]
            assert total > 3000

            assert EXE is not None
            proc = await asyncio.create_subprocess_exec(
                EXE, "--data", data, "sync", "--json", "--timeout", "60",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            held = 0
            while proc.returncode is None:
                held, _ = await centre_held(srv, origin)
                if held > window:
                    break
                await asyncio.sleep(0.005)
            assert window < held < total, "the push ended before it could be cut"
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
            held, _ = await centre_held(srv, origin)  # with what was in flight at the kill

            rc, out, err = await selaras("--data", data, "sync", "--json", "--timeout", "60")
            assert rc == 0, err
            report = json.loads(out)
            assert report["ok"] and report["vectors_equal"] and report["checksums_equal"]
            # Resumed (R12): of what the centre held, at most one window (the batches
            # whose ack the killed client never saw) was sent again.
            assert total - held <= report["events_up"] <= total - held + window
            assert await centre_held(srv, origin) == (total, total)
            checksum = await srv.admin("checksum", npsn=NPSN)
            _, _, sums = local(tmp_path / "school")
            assert dict(checksum.rows) == sums
    asyncio.run(main())


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_server(data: str, port: int) -> asyncio.subprocess.Process:
    assert EXE is not None
    proc = await asyncio.create_subprocess_exec(
        EXE, "server", "--data", data, "--port", str(port), "--window", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b"listening on" in line, line
    return proc


def test_server_killed_mid_sync_and_restarted_the_client_resumes(tmp_path: Path) -> None:
    rows = tmp_path / "medium.jsonl"
    generate.write(rows, generate.generate("medium", 1, NPSN, 0))
    data, centre = str(tmp_path / "school"), str(tmp_path / "centre")

    async def admin(*args: str) -> Any:
        rc, out, err = await selaras("admin", "--data", centre, *args)
        assert rc == 0, err
        return out

    async def main() -> None:
        port = _free_port()
        server = await _start_server(centre, port)
        # A slow link between them: the push takes seconds, so the kill lands inside it.
        async with FlakyProxy("127.0.0.1", port, Faults(bandwidth_bytes_per_s=300_000)) as link:
            url = f"ws://127.0.0.1:{link.port}"
            try:
                added = await admin("school", "add", "--npsn", NPSN, "--nama", "SMA Negeri 1")
                kode = added.split("(shown once): ")[1].split()[0].strip()
                rc, _, err = await selaras("--data", data, "init", "--server", url, "--npsn",
                                           NPSN, "--kode", kode, "--user", USER, "--password",
                                           PASSWORD, "--json", "--timeout", "60")
                assert rc == 0, err
                rc, _, err = await selaras("--data", data, "import", str(rows), "--json")
                assert rc == 0, err
                origin, vector, _ = local(tmp_path / "school")
                total = vector[origin]

                assert EXE is not None
                before = link.stats.bytes_to_server
                client = await asyncio.create_subprocess_exec(
                    EXE, "--data", data, "sync", "--json", "--timeout", "90",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                while link.stats.bytes_to_server - before < 200_000:  # the push is under way
                    assert client.returncode is None, "the sync ended before it could be cut"
                    await asyncio.sleep(0.01)
                server.send_signal(signal.SIGKILL)
                assert await server.wait() == -signal.SIGKILL
                await asyncio.sleep(0.5)
                server = await _start_server(centre, port)
                out, err = await asyncio.wait_for(client.communicate(), 120)
                assert client.returncode == 0, err.decode()
                report = json.loads(out)
                assert report["ok"] and report["vectors_equal"] and report["checksums_equal"]
                assert report["attempts"] >= 2, report  # the kill did cut a session
                counted = json.loads(await admin(
                    "query", "--npsn", NPSN, "--json",
                    f"SELECT count(*), count(DISTINCT seq) FROM event WHERE origin = '{origin}'"))
                assert counted["rows"] == [[total, total]]
                sums = json.loads(await admin("checksum", "--npsn", NPSN, "--json"))
                assert dict(map(tuple, sums["rows"])) == local(tmp_path / "school")[2]
            finally:
                if server.returncode is None:
                    server.send_signal(signal.SIGTERM)
                    await server.wait()
    asyncio.run(main())
