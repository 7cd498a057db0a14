"""The connection check (client/connection.py, protocol R17 ``Check``), and sync and pull
made on it.

Against the real centre on 127.0.0.1 (``running_server``, port 0): connected; refused
(a wrong token, a reset code, a revoked install, another schema, busy until a time of
the school's); a port nothing listens on; a silent peer. A host name that cannot
resolve is answered by a stand-in resolver, so no test asks a DNS server or talks to
anything but loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from structlog.testing import capture_logs

from selaras.client import connection
from selaras.client.cli import cli
from selaras.client.connection import (
    VERDICTS,
    ConnectionStatus,
    Reason,
    Verdict,
    check_connection,
    check_install,
    checked_sync,
    failure,
)
from selaras.client.install import Install, Session
from selaras.client.sync import RETRYABLE, SyncRefused, SyncTimedOut, register, run_sync
from selaras.engine import protocol as p
from selaras.engine.localtime import Zone, format_local, minute_after, school_zone, zone_of
from selaras.engine.refusals import TEXT, Code
from selaras.engine.replica import Identity
from selaras.server.testing import RunningServer, running_server

NPSN = "20100001"
USER, PASSWORD = "op@sekolah.id", "rahasia123"
NO_SUCH_HOST = "selaras-no-such-host.invalid"
QUICK = 5.0  # seconds: "at once", generously


# -- helpers ------------------------------------------------------------------------------------


@asynccontextmanager
async def school(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[RunningServer, Session]]:
    """A centre with one school, and one install of it that has pulled its data."""
    async with running_server(tmp_path / "centre", **options) as srv:
        kode = await srv.add_school(NPSN, "SMA Negeri 1")
        answer = await register(srv.url, NPSN, kode, USER, PASSWORD)
        install = Install(tmp_path / "a")
        install.init_registered(NPSN, origin=answer.install, token=answer.token, url=srv.url,
                                user=USER, role=answer.role, centre_key=answer.centre_key)
        with ExitStack() as stack:
            s = stack.enter_context(install.open())
            assert (await run_sync(s.store, s.identity, mode="pull", timeout_s=20)).ok
            await recorded(srv, 1)
            yield srv, s


async def recorded(srv: RunningServer, sessions: int) -> None:
    """Wait until the centre has recorded the school's ``sessions``: it records a session
    as it ends, which may be after the client is done with it."""
    for _ in range(200):
        if len((await srv.admin("history", npsn=NPSN)).data["sessions"]) >= sessions:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the centre did not record {sessions} session(s) in 10 s")


async def check(s: Session, url: str | None = None, timeout_s: float = 5.0) -> ConnectionStatus:
    return await check_install(s.store, s.identity, url=url, timeout_s=timeout_s)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names under .invalid never resolve, and no DNS server is asked: the resolver is a
    stand-in for them (RFC 6761). Yields the names asked for."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".invalid"):
            asked.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked


def selaras(data: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, ["--data", str(data), *args])
    assert result.exit_code == code, (args, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


async def run(data: Path, *args: str, code: int = 0) -> Result:
    """A command on a data folder, off the event loop that serves the centre."""
    return await asyncio.to_thread(selaras, data, *args, code=code)


def serving(main: Coroutine[Any, Any, None]) -> None:
    """Run a test that serves the centre in-process to commands: the centre's log lines
    go to the test, not into the commands' stdout."""
    with capture_logs():
        asyncio.run(main)


# -- the protocol ---------------------------------------------------------------------------------


def test_a_check_is_one_request_and_one_answer() -> None:
    client, server = p.SyncProtocol(p.Side.CLIENT), p.SyncProtocol(p.Side.SERVER)
    client.send_request(p.Check(p.PROTOCOL_VERSION, "test", 1, NPSN, "origin", "token", 5))
    for frame in client.data_to_send():
        server.receive_data(frame)
    [opened] = server.facts()
    assert isinstance(opened.message, p.Check) and opened.message.token == "token"
    server.answer(p.Checked(7))
    for frame in server.data_to_send():
        client.receive_data(frame)
    [answered] = client.facts()
    assert answered.answer == p.Checked(7)
    assert client.state is server.state is p.State.CLOSED


def test_a_check_of_another_protocol_version_is_refused() -> None:
    server = p.SyncProtocol(p.Side.SERVER)
    server.receive_data(p.encode(p.Check(p.PROTOCOL_VERSION - 1, "test", 1, NPSN, "o", "t", 0)))
    [refused] = server.facts()
    assert refused.refuse.code is Code.VERSION_MISMATCH


def test_a_checked_answers_only_a_request() -> None:
    client = p.SyncProtocol(p.Side.CLIENT)
    client.send_hello(p.Hello(p.PROTOCOL_VERSION, "test", 1, NPSN, "o", "t", "pull", {}, 0))
    client.receive_data(p.encode(p.Checked(1)))
    [refused] = client.facts()
    assert refused.refuse.code is Code.UNEXPECTED_MESSAGE


# -- connected, and refused ----------------------------------------------------------------------


def test_connected(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path) as (srv, s):
            sessions = await srv.admin("history", npsn=NPSN)
            status = await check(s)
            assert status.connected and status.reason is None and not status.final
            assert status.message == f"Terhubung ke server pusat {srv.url}"
            assert status.clock_offset_ms is not None and abs(status.clock_offset_ms) < 5_000
            # Nothing is recorded as a sync, at the centre or here.
            assert (await srv.admin("history", npsn=NPSN)).data == sessions.data
            assert len(s.store.history()) == 1  # the pull
            data = status.as_json()
            assert data["connected"] is True and data["reason"] is None
            assert data["code"] is None and data["retry_at"] is None
    asyncio.run(main())


def test_a_wrong_token_is_refused_with_the_bad_credential_text(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path) as (srv, s):
            status = await check_connection(srv.url, s.identity, "not-the-token", timeout_s=5)
            assert not status.connected and status.reason is Reason.REFUSED and status.final
            assert status.code == Code.BAD_CREDENTIAL
            assert status.message == ("Tidak terhubung: ditolak server pusat (bad_credential): "
                                      f"{TEXT[Code.BAD_CREDENTIAL]}")
            assert json.loads(json.dumps(status.as_json()))["reason"] == "refused"
    asyncio.run(main())


@pytest.mark.parametrize("code", [Code.CODE_RESET, Code.INSTALL_REVOKED])
def test_a_reset_code_or_a_revoked_install_is_refused(tmp_path: Path, code: Code) -> None:
    async def main() -> None:
        async with school(tmp_path) as (srv, s):
            if code is Code.CODE_RESET:
                reply = await srv.admin("reset_kode", npsn=NPSN)
            else:
                reply = await srv.admin("revoke", install=s.identity.origin)
            assert reply.columns != ["error"], reply.message
            status = await check(s)
            assert status.reason is Reason.REFUSED and status.code == code and status.final
            assert TEXT[code] in status.message
            if code is Code.CODE_RESET:  # says how to mend it, as a refused sync does
                assert f"selaras init --reregister --server {srv.url}" in status.message
    asyncio.run(main())


def test_another_schema_version_is_refused(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with school(tmp_path) as (_, s):
            monkeypatch.setattr(connection, "SCHEMA_VERSION", connection.SCHEMA_VERSION + 1)
            status = await check(s)
            assert status.code == Code.VERSION_MISMATCH and status.final
            assert "perbarui aplikasi" in status.message
    asyncio.run(main())


def test_a_busy_centre_says_until_when_in_the_schools_time(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path, busy_retry_s=120) as (srv, s):
            zone = school_zone(s.store, s.identity.sekolah_id)
            kode = s.store.rows("sekolah")[s.identity.sekolah_id]["kode_wilayah"]
            assert zone is zone_of(str(kode)) is Zone.WIB  # the test referensi is Java's
            srv.server.draining.set()  # shutting down: every Hello is refused busy
            before = int(time.time() * 1000)
            status = await check(s)
            assert status.reason is Reason.REFUSED and status.code == Code.SERVER_BUSY
            assert not status.final  # a sync waits and retries
            assert status.retry_after_s is not None and 90 <= status.retry_after_s <= 150
            assert status.retry_at_ms is not None
            assert before + 90_000 <= status.retry_at_ms <= before + 160_000
            until = format_local(minute_after(status.retry_at_ms), Zone.WIB)
            assert re.fullmatch(r"\d\d-\d\d-\d{4} \d\d:\d\d WIB", until)
            assert status.message == ("Tidak terhubung: ditolak server pusat (server_busy): "
                                      f"server pusat sedang sibuk: coba lagi setelah {until}")
            assert status.as_json()["retry_at"].endswith("+07:00")
            # A school in another zone reads its own time.
            wit = await check_connection(srv.url, s.identity, s.store.meta()["token"],
                                         timeout_s=5, zone=Zone.WIT)
            assert wit.retry_at_ms is not None
            assert wit.message.endswith(
                f"coba lagi setelah {format_local(minute_after(wit.retry_at_ms), Zone.WIT)}")
            assert wit.message.endswith(" WIT") and wit.as_json()["retry_at"].endswith("+09:00")
            srv.server.draining.clear()
    asyncio.run(main())


def test_too_many_wrong_tokens_make_the_centre_busy_for_a_while(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path, failed_hello_per_minute=1) as (srv, s):
            for _ in range(20):  # the burst of failures the centre allows
                wrong = await check_connection(srv.url, s.identity, "wrong", timeout_s=5)
                assert wrong.code == Code.BAD_CREDENTIAL
            status = await check(s)  # the right token, but from the same address
            assert status.code == Code.SERVER_BUSY and not status.final
            assert "terlalu banyak percobaan" in status.message
            assert status.message.endswith(" WIB")
    asyncio.run(main())


# -- no network, unreachable, silent ---------------------------------------------------------------


def test_a_port_nothing_listens_on_is_unreachable(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path) as (_, s):
            url = f"ws://127.0.0.1:{free_port()}"
            t0 = time.monotonic()
            status = await check(s, url)
            assert time.monotonic() - t0 < QUICK
            assert status.reason is Reason.UNREACHABLE and not status.final
            assert status.message.startswith(
                f"Tidak terhubung: server pusat {url} tidak dapat dihubungi")
            assert status.as_json()["reason"] == "unreachable"
    asyncio.run(main())


def test_a_name_that_does_not_resolve_is_no_network(tmp_path: Path, no_dns: list[str]) -> None:
    async def main() -> None:
        async with school(tmp_path) as (_, s):
            status = await check(s, f"ws://{NO_SUCH_HOST}:1")
            assert no_dns == [NO_SUCH_HOST]  # asked, and answered here
            assert status.reason is Reason.NO_NETWORK and not status.final
            assert status.message.startswith("Tidak terhubung: tidak ada jaringan")
            assert NO_SUCH_HOST in status.message
    asyncio.run(main())


@pytest.mark.parametrize("number", [errno.ENETUNREACH, errno.EHOSTUNREACH])
def test_no_route_is_no_network(number: int) -> None:
    status = failure("ws://10.1.2.3:8765", OSError(number, "unreachable"))
    assert status.reason is Reason.NO_NETWORK and "10.1.2.3" in status.message


def test_a_bad_url_says_so() -> None:
    async def main() -> None:
        status = await check_connection("http//nowhere", Identity(NPSN, "o"), "t", timeout_s=1)
        assert status.reason is Reason.BAD_URL and "ws://HOST:PORT" in status.message
    asyncio.run(main())


@asynccontextmanager
async def silent_tcp() -> AsyncIterator[str]:
    """A peer that takes the connection and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def mute_websocket() -> AsyncIterator[str]:
    """A websocket server that opens the connection, then never answers."""
    from websockets.asyncio.server import ServerConnection, serve

    async def mute(ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            await ws.wait_closed()

    async with serve(mute, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_a_peer_that_never_answers_the_opening_is_unreachable(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path) as (_, s), silent_tcp() as url:
            t0 = time.monotonic()
            status = await check(s, url, timeout_s=0.5)
            assert time.monotonic() - t0 < QUICK
            assert status.reason is Reason.UNREACHABLE
            assert "tidak menjawab dalam 0.5 detik" in status.message
    asyncio.run(main())


def test_a_centre_that_never_answers_the_check_is_a_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path) as (_, s), mute_websocket() as url:
            t0 = time.monotonic()
            status = await check(s, url, timeout_s=0.5)
            assert time.monotonic() - t0 < QUICK
            assert status.reason is Reason.TIMEOUT and not status.final
            assert status.as_json()["reason"] == "timeout"
    asyncio.run(main())


class Rows:
    """A store's ``rows`` only: what ``school_zone`` reads."""

    def __init__(self, tables: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.tables = tables

    def rows(self, entity: str) -> dict[str, dict[str, Any]]:
        return self.tables.get(entity, {})


def test_a_province_this_version_does_not_list_is_known_by_its_name() -> None:
    me = Identity(NPSN, "o")
    wilayah = {"r1": {"kode_wilayah": "380000", "nama": "Prov. Papua Tengah"},
               "r2": {"kode_wilayah": "380100", "nama": "Kab. Nabire"}}
    store: Any = Rows({"sekolah": {me.sekolah_id: {"kode_wilayah": "380101"}},
                       "ref.mst_wilayah": wilayah})
    assert school_zone(store, me.sekolah_id) is Zone.WIT
    store = Rows({"sekolah": {me.sekolah_id: {"kode_wilayah": "220101"}}})
    assert school_zone(store, me.sekolah_id) is Zone.WITA
    assert school_zone(Rows({}), me.sekolah_id) is Zone.WIB  # before the school's data came


def test_the_verdicts_agree_with_the_syncs_retries() -> None:
    assert {c for c, v in VERDICTS.items() if v is not Verdict.FINAL} == RETRYABLE
    status = ConnectionStatus("ws://x", Reason.REFUSED, "?", code="a_newer_centres_code")
    assert status.final  # a code this version does not know: not retried


# -- the command line ------------------------------------------------------------------------------


def test_the_command_says_connected_or_not_and_why(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path) as (srv, s):
            data = tmp_path / "a"
            s.store.close()  # the command opens the folder itself
            out = await run(data, "check-connection")
            assert out.stdout == f"Terhubung ke server pusat {srv.url}\n"
            js = json.loads((await run(data, "check-connection", "--json")).stdout)
            assert js["connected"] is True and js["zone"] == "WIB"
            url = f"ws://127.0.0.1:{free_port()}"
            out = await run(data, "check-connection", "--server", url, code=1)
            assert out.stdout.startswith(f"Tidak terhubung: server pusat {url} tidak dapat")
            js = json.loads((await run(data, "check-connection", "--server", url, "--json",
                                       code=1)).stdout)
            assert (js["connected"], js["reason"], js["code"]) == (False, "unreachable", None)
    serving(main())


def test_an_offline_install_says_it_has_no_centre(tmp_path: Path) -> None:
    data = tmp_path / "offline"
    selaras(data, "init", "--offline", "--npsn", NPSN)
    out = selaras(data, "check-connection", code=1)
    assert out.stdout.startswith("Tidak terhubung: instalasi ini offline")
    js = json.loads(selaras(data, "check-connection", "--json", code=1).stdout)
    assert (js["connected"], js["reason"]) == (False, "offline")
    line = selaras(data, "sync", code=1).stderr.strip()
    assert line.startswith("selaras: error: instalasi ini offline")


def test_sync_and_pull_show_a_finite_timeout_in_help(tmp_path: Path) -> None:
    for command in ("sync", "pull"):
        text = " ".join(selaras(tmp_path, command, "--help").stdout.split())
        assert "--timeout SECONDS" in text and "[default: 120;" in text


def test_a_sync_refused_its_credential_stops_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path) as (srv, s):
            s.store.set_meta(token="not-the-token")
            s.store.close()
            refusals = srv.stats()["refusals"]
            t0 = time.monotonic()
            result = await run(tmp_path / "a", "sync", code=1)
            assert time.monotonic() - t0 < QUICK  # not retried until the 120 s timeout
            (line,) = result.stderr.strip().splitlines()
            assert line == ("selaras: error: ditolak server pusat (bad_credential): "
                            f"{TEXT[Code.BAD_CREDENTIAL]}")
            assert srv.stats()["refusals"] - refusals == 1  # the check, no Hello after it
    serving(main())


def test_the_service_raises_what_a_refused_sync_raises(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path) as (srv, s):
            reply = await srv.admin("reset_kode", npsn=NPSN)
            assert reply.columns != ["error"], reply.message
            history = s.store.history()
            with pytest.raises(SyncRefused) as checked:
                await checked_sync(s.store, s.identity, mode="sync", timeout_s=20)
            with pytest.raises(SyncRefused) as synced:
                await run_sync(s.store, s.identity, mode="sync", timeout_s=20)
            assert checked.value.code == synced.value.code == Code.CODE_RESET
            assert str(checked.value) == str(synced.value)
            # The check recorded nothing; the sync its refused session.
            assert len(s.store.history()) == len(history) + 1
    serving(main())


def test_a_sync_to_an_unreachable_centre_retries_visibly_then_gives_up(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path) as (_, s):
            url = f"ws://127.0.0.1:{free_port()}"
            s.store.close()
            t0 = time.monotonic()
            result = await run(tmp_path / "a", "pull", "--server", url, "--timeout", "2",
                               code=1)
            elapsed = time.monotonic() - t0
            assert 1.9 <= elapsed < 2 + QUICK
            lines = result.stderr.strip().splitlines()
            assert lines[0] == (f"Tidak terhubung: server pusat {url} tidak dapat dihubungi: "
                                "tidak ada yang melayani di alamat itu (server mati, atau "
                                "alamat atau port salah); sinkronisasi tetap dicoba sampai "
                                "2 detik")
            retries = [ln for ln in lines if ln.startswith("Mencoba lagi")]
            assert retries and retries[0].startswith("Mencoba lagi (percobaan 2) dalam ")
            assert all(ln.endswith(" detik: server pusat tidak dapat dihubungi")
                       for ln in retries)
            assert lines[-1] == ("selaras: error: sinkronisasi belum selesai setelah 2 detik "
                                 "(terakhir: server pusat tidak dapat dihubungi); coba lagi "
                                 "nanti, data yang sudah terkirim aman")
    serving(main())


def test_the_whole_timeout_bounds_the_check_and_the_sync(tmp_path: Path) -> None:
    async def main() -> None:
        async with school(tmp_path) as (_, s), silent_tcp() as url:
            t0 = time.monotonic()
            with pytest.raises(SyncTimedOut) as info:
                await checked_sync(s.store, s.identity, mode="pull", url=url, timeout_s=1.0)
            assert time.monotonic() - t0 < QUICK
            assert info.value.timeout_s == 1.0 and "tidak dapat dihubungi" in str(info.value)
    serving(main())
