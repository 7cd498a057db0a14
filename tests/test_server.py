"""The central server over real websockets on 127.0.0.1 (port 0): no mocks.

Registration, pull and sync sessions, group commit, every refusal (with its
code, changing nothing), SIGTERM drain of a ``selaras server`` process, and the
admin commands against a running server and a stopped store.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from selaras.engine.events import Batch, Event, centre_origin
from selaras.engine.protocol import Code, Limits, Registered, Sent
from selaras.engine.protocol import encode as encode_message
from selaras.engine.replica import referensi_events
from selaras.engine.storage import DuckDBCentre, open_centre
from selaras.server.remote import admin_request
from selaras.server.testing import ProtocolClient, events_frame, running_server

A, B = "20100001", "20100002"
SELARAS = str(Path(sys.executable).with_name("selaras"))


def run(coro):
    return asyncio.run(coro)


def pd_batch(origin: str, first: int, n: int, nik: str = "1") -> Batch:
    row = str(uuid.uuid5(uuid.NAMESPACE_URL, origin))
    return Batch.from_events([
        Event(origin=origin, seq=s, hlc=1_000 + s, entity="peserta_didik", row_id=row,
              changes={"nik": f"{nik}{s}"}, author="op", role="operator")
        for s in range(first, first + n)])


async def school_with_install(server, npsn: str = A) -> tuple[ProtocolClient, str]:
    kode = await server.add_school(npsn, f"SMA {npsn}")
    client = ProtocolClient(server.url, npsn)
    answer = await client.register(kode, "op@sekolah.id", "rahasia-1")
    assert isinstance(answer, Registered)
    return client, kode


async def centre_vector(server, npsn: str) -> dict[str, int]:
    return await server.server.write(lambda c, _: c.school(npsn).vector())


# -- registration ------------------------------------------------------------------------


def test_registration_makes_the_account_then_checks_it(tmp_path):
    async def main():
        async with running_server(tmp_path) as server:
            kode = await server.add_school(A, "SMA Satu")
            first = ProtocolClient(server.url, A)
            answer = await first.register(kode.lower().replace("-", ""), "Op@Sekolah.id", "pw-1")
            assert isinstance(answer, Registered) and answer.role == "operator"
            again = await ProtocolClient(server.url, A).register(kode, "op@sekolah.id", "pw-1")
            assert isinstance(again, Registered) and again.install != answer.install
            wrong_kode = await ProtocolClient(server.url, A).register("AAAA-BBBB-CCCC",
                                                                     "op@sekolah.id", "pw-1")
            wrong_pw = await ProtocolClient(server.url, A).register(kode, "op@sekolah.id", "x")
            stranger = await ProtocolClient(server.url, A).register(kode, "new@x.id", "pw-2")
            unknown = await ProtocolClient(server.url, B).register(kode, "op@sekolah.id", "pw-1")
            for refused in (wrong_kode, wrong_pw, stranger, unknown):
                assert refused.code is Code.BAD_CREDENTIAL and refused.message
            installs = await server.admin("installs", npsn=A)
            assert sorted(r[0] for r in installs.rows) == sorted([answer.install, again.install])
    run(main())


# -- sessions -----------------------------------------------------------------------------


def test_pull_receives_the_schools_centre_events(tmp_path):
    async def main():
        async with running_server(tmp_path, limits=Limits(max_batch_events=50)) as server:
            client, _ = await school_with_install(server)
            out = await client.session("pull")
            assert out.refused is None and out.summary is not None
            # The school's identity and the first operator's account as its pengguna row.
            assert out.welcome_vector[centre_origin(A)] == 2
            assert out.events_received == sum(out.welcome_vector.values())
            assert len(out.received) > 1  # cut into batches of at most 50
            assert all(len(b) <= 50 for b in out.received)
            assert out.summary[0] == out.welcome_vector
            checksum = await server.admin("checksum", npsn=A)
            assert out.summary[1] == dict(checksum.rows)
            again = await client.session("pull", out.welcome_vector)  # resumes: nothing new
            assert again.events_received == 0 and again.summary is not None
    run(main())


def test_sync_push_is_acked_after_commit_and_durable(tmp_path, centre_store):
    async def main():
        async with running_server(tmp_path, store=centre_store) as server:
            client, _ = await school_with_install(server)
            with capture_logs() as logs:
                pulled = await client.session("pull")
                out = await client.session("sync", pulled.welcome_vector,
                                           [pd_batch(client.install, 1, 3),
                                            pd_batch(client.install, 4, 2)])
                async with asyncio.timeout(5):  # the line comes once the session is recorded
                    while len([e for e in logs if e["event"] == "session"]) < 2:
                        await asyncio.sleep(0.01)
            assert out.refused is None and out.summary is not None
            assert [n for n, _ in out.acks] == [1, 2]
            assert out.acks[-1][1][client.install] == 5
            assert out.summary[0][client.install] == 5
            line = [e for e in logs if e["event"] == "session"][-1]
            assert (line["outcome"], line["events_in"], line["mode"]) == ("done", 5, "sync")
            assert line["bytes_in"] > 0 and "duration_s" in line
            history = await server.admin("history", npsn=A)
            assert [r["outcome"] for r in history.data["sessions"]] == ["done", "done"]
            assert [r[-1] for r in history.rows] == ["berhasil", "berhasil"]
        return client.install

    install = run(main())
    centre = open_centre(centre_store or tmp_path / "centre.duckdb")  # reopened, server stopped
    try:
        assert centre.school(A).vector()[install] == 5
        assert len(centre.school(A).rows("peserta_didik")) == 1
    finally:
        centre.close()


def test_group_commit_takes_two_schools_in_one_transaction(tmp_path, centre_store):
    async def main():
        async with running_server(tmp_path, store=centre_store) as server:
            a, _ = await school_with_install(server, A)
            b, _ = await school_with_install(server, B)
            writer = server.server.writer
            gate, entered = threading.Event(), threading.Event()
            writer.call(lambda c, r: (entered.set(), gate.wait(10)))
            await asyncio.to_thread(entered.wait, 10)
            before = dict(server.stats())
            acked = lambda msgs: any(type(m).__name__ == "Ack" for m in msgs)  # noqa: E731
            sessions = [asyncio.create_task(c.raw_session(
                [events_frame(1, pd_batch(c.install, 1, 4))], until=acked)) for c in (a, b)]
            async with asyncio.timeout(10):
                while writer._queue.qsize() < 2:  # the writer is held: both appends queue
                    await asyncio.sleep(0.01)
            gate.set()
            outs = await asyncio.gather(*sessions)
            assert all(acked(o.messages) for o in outs)
            stats = server.stats()
            assert stats["commits"] == before["commits"] + 1
            assert stats["schools_in_one_commit"] == 2 and stats["events"] >= 8
            assert stats["events_per_commit"] > 0
    run(main())


# -- refusals: each with its code, each changing nothing ---------------------------------------


def test_refusals_of_credentials_and_versions(tmp_path):
    async def main():
        async with running_server(tmp_path) as server:
            client, _ = await school_with_install(server)
            before = await centre_vector(server, A)
            bad = ProtocolClient(server.url, A, client.install, "not-the-token")
            assert (await bad.session("pull")).refused.code is Code.BAD_CREDENTIAL
            other = await server.add_school(B, "SMA Dua")
            assert other
            elsewhere = ProtocolClient(server.url, B, client.install, client.token)
            assert (await elsewhere.session("pull")).refused.code is Code.BAD_CREDENTIAL
            old = await client.session("sync", hello=client.hello("sync", schema=99))
            assert old.refused.code is Code.VERSION_MISMATCH
            # a reset code: every install registered before it must register again
            second = ProtocolClient(server.url, A)
            await second.register((await server.admin("reset_kode", npsn=A)).rows[0][2],
                                  "op@sekolah.id", "rahasia-1")
            assert (await client.session("pull")).refused.code is Code.CODE_RESET
            assert (await second.session("pull")).refused is None
            await server.admin("revoke", install=second.install)
            refused = await second.session("sync", batches=[pd_batch(second.install, 1, 1)])
            assert refused.refused.code is Code.INSTALL_REVOKED
            assert await centre_vector(server, A) == before
            assert server.stats()["refusals"] >= 5
    run(main())


def test_refusals_of_hostile_input(tmp_path):
    limits = Limits(max_frame_bytes=64 << 10, max_batch_bytes=48 << 10, window_batches=1)

    async def main():
        async with running_server(tmp_path, limits=limits) as server:
            client, _ = await school_with_install(server)
            me = client.install
            before = await centre_vector(server, A)

            async def refused(frames, mode="sync"):
                out = await client.raw_session(frames, mode)
                assert out.refused is not None, out
                return out.refused.code

            assert await refused([b"\xc1garbage"]) is Code.MALFORMED_MESSAGE
            assert await refused(["text"]) is Code.MALFORMED_MESSAGE
            bad_payload = encode_message_events(1, 3, b"not a batch")
            assert await refused([bad_payload]) is Code.MALFORMED_MESSAGE
            assert await refused([b"\x00" * (65 << 10)]) is Code.MESSAGE_TOO_LARGE
            stranger = str(uuid.uuid4())
            assert await refused([events_frame(1, pd_batch(stranger, 1, 2))]) is Code.FORBIDDEN
            assert await refused([events_frame(1, pd_batch(me, 1, 2))], "pull") is Code.FORBIDDEN
            assert await refused([encode_message(Sent(3))]) is Code.UNEXPECTED_MESSAGE
            junk = await client.raw_session([], hello=client.hello("pull", {"not-a-uuid": 1}))
            assert junk.refused.code is Code.MALFORMED_MESSAGE
            assert await centre_vector(server, A) == before

            # window overrun: batch 1 cannot commit (the writer is held), batch 2 overruns
            gate = threading.Event()
            server.server.writer.call(lambda c, r: gate.wait(10))
            out = asyncio.create_task(client.raw_session(
                [events_frame(1, pd_batch(me, 1, 2)), events_frame(2, pd_batch(me, 3, 2))]))
            result = await out
            gate.set()
            assert result.refused.code is Code.WINDOW_OVERRUN
            assert (await centre_vector(server, A)).get(me, 0) == 0  # nothing of the session

            # a copied data folder: a different event under an (origin, seq) the centre holds
            ok = await client.session("sync", await centre_vector(server, A),
                                      [pd_batch(me, 1, 2)])
            assert ok.refused is None
            held = await centre_vector(server, A)
            clash = await client.raw_session([events_frame(1, pd_batch(me, 1, 1, nik="9"))])
            assert clash.refused.code is Code.EVENT_COLLISION
            assert await centre_vector(server, A) == held
    run(main())


def encode_message_events(batch: int, count: int, payload: bytes) -> bytes:
    from selaras.engine.protocol import Events
    return encode_message(Events(batch, count, payload))


def test_busy_beyond_the_session_bound_with_retry_after(tmp_path):
    async def main():
        async with running_server(tmp_path, max_sessions=1, busy_retry_s=4.0) as server:
            client, _ = await school_with_install(server)
            welcomed = asyncio.Event()

            def hold(msgs):
                if msgs:
                    welcomed.set()
                return False
            holder = asyncio.create_task(client.raw_session([], "pull", until=hold, wait_s=2))
            await asyncio.wait_for(welcomed.wait(), 5)
            busy = await client.session("pull")
            assert busy.refused.code is Code.SERVER_BUSY
            assert 3.0 <= busy.refused.retry_after_s <= 5.0
            await holder
            assert server.stats()["busy_refusals"] == 1
            assert (await client.session("pull")).refused is None  # room again
    run(main())


# -- the command line: SIGTERM drain, admin online and offline -----------------------------------


def selaras(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([SELARAS, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_server_process_drains_on_sigterm_and_admin_works_on_and_off(tmp_path):
    data = str(tmp_path / "centre")
    added = selaras("admin", "--data", data, "school", "add", "--npsn", A, "--nama", "SMA Satu")
    kode = added.stdout.split("(shown once): ")[1].split()[0]
    with open(tmp_path / "server.log", "w") as err, subprocess.Popen(
            [SELARAS, "server", "--data", data, "--port", "0", "--no-consent-gate"],
            stdout=subprocess.PIPE, stderr=err, text=True) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith("listening on ws://127.0.0.1:"), line
            url = line.split()[-1]
            assert json.loads((tmp_path / "centre" / "server.json").read_text())["url"] == url
            # admin against the running server (it holds the file)
            selaras("admin", "--data", data, "school", "add", "--npsn", B)
            listed = selaras("admin", "--data", data, "school", "list").stdout
            assert A in listed and B in listed
            assert "commits" in selaras("admin", "--data", data, "stats").stdout

            async def live_session():
                client = ProtocolClient(url, A)
                assert isinstance(await client.register(kode, "op@x.id", "pw"), Registered)
                pushed = await client.session("sync", batches=[pd_batch(client.install, 1, 3)])
                assert pushed.refused is None
                started = asyncio.Event()

                def hold(msgs):
                    if msgs:  # welcomed
                        started.set()
                    return False
                task = asyncio.create_task(client.raw_session([], "pull", until=hold, wait_s=20))
                await started.wait()
                proc.send_signal(signal.SIGTERM)
                return await task, client.install
            held, install = run(live_session())
            assert held.closed_code == 1001  # drained: going away
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:  # the test failed on the way: do not leave it running
                proc.kill()
    assert not (tmp_path / "centre" / "server.json").exists()
    # admin on the stopped store
    installs = selaras("admin", "--data", data, "installs", "--npsn", A).stdout
    assert install in installs
    rows = selaras("admin", "--data", data, "query", "--npsn", A, "--json",
                   "select count(*) AS n from event").stdout
    referensi = len(referensi_events())
    # + sekolah + the operator's pengguna row + the pushed
    assert json.loads(rows)["rows"] == [[referensi + 1 + 1 + 3]]
    assert "peserta_didik" in selaras("admin", "--data", data, "checksum", "--npsn", A).stdout
    refused = selaras("admin", "--data", data, "query", "--npsn", A, "delete from event",
                      check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("selaras: error: ")
    assert len(refused.stderr.strip().splitlines()) == 1
    selaras("admin", "--data", data, "revoke", "--install", install)
    centre = DuckDBCentre(tmp_path / "centre" / "centre.duckdb")
    try:
        assert centre.registry.install(install)["revoked"] is True
    finally:
        centre.close()
    if os.name == "posix":
        assert (tmp_path / "centre" / "secret").stat().st_mode & 0o077 == 0
    assert time.time()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for a test cert")
def test_tls_serves_wss(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)

    async def main():
        async with running_server(tmp_path / "centre", tls_cert=cert, tls_key=key) as server:
            assert server.url.startswith("wss://127.0.0.1:")
            reply = await admin_request(server.url, server.admin_token, "school_add", npsn=A,
                                        nama="SMA Aman", bentuk="SMA", cafile=str(cert))
            kode = str(reply.rows[0][2])
            client = ProtocolClient(server.url, A, cafile=str(cert))
            assert isinstance(await client.register(kode, "op@x.id", "pw"), Registered)
            out = await client.session("pull")
            assert out.summary is not None and out.events_received > 0
    run(main())


def test_compression_is_off_unless_the_client_offers_it(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    async def main() -> list[list[str]]:
        async with running_server(tmp_path / "centre") as srv:
            negotiated = []
            for offer in ("deflate", None):
                async with connect(srv.url, compression=offer) as ws:
                    negotiated.append([type(e).__name__ for e in ws.protocol.extensions])
            return negotiated

    assert asyncio.run(main()) == [["PerMessageDeflate"], []]


@pytest.mark.parametrize("option, value", [("--window", "0"), ("--max-sessions", "-3"),
                                           ("--batch-events", "0"), ("--port", "70000")])
def test_server_options_out_of_range_are_refused(tmp_path: Path, option: str, value: str,
                                                 ) -> None:
    data = tmp_path / "centre"
    run = subprocess.run([SELARAS, "server", "--data", str(data), option, value],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert f"Invalid value for '{option}'" in run.stderr
    assert not data.exists()  # refused before anything was made
