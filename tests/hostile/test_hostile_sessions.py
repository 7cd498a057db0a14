"""Point 5 of docs/security.md: fair sessions at the deadline, over a real centre.

Caps per install and per school, an idle limit that pings do not reset, a bound on
connections not yet answered and on the size of their first message, and
credential checks that are rate-limited and run on a pool of their own. Each flood
comes from school A (or from nobody at all) while school B syncs to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from attack import A, B, bystander_syncs, install
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from selaras.engine.protocol import Code, Refuse, Welcome, decode, encode
from selaras.engine.refusals import Detail
from selaras.server.testing import ProtocolClient, running_server


def run(coro):
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def held_session(client: ProtocolClient, **hello_args):
    """A session that says Hello and then nothing: what the server answered, while open."""
    async with connect(client.url, compression=None, max_size=None) as ws:
        await ws.send(encode(client.hello("pull", **hello_args)))
        yield ws, decode(await ws.recv(decode=False))


def assert_busy(message: object, says: str) -> None:
    assert isinstance(message, Refuse) and message.code is Code.SERVER_BUSY, message
    assert message.retry_after_s and message.retry_after_s > 0
    assert says in message.message and "coba lagi dalam" in message.message, message.message


def test_sessions_are_capped_per_install_and_per_school(tmp_path):
    async def main():
        async with running_server(tmp_path, max_install_sessions=2,
                                  max_school_sessions=3) as server:
            a = await install(server, A)
            b = await install(server, B)
            async with held_session(a) as (_, w1), held_session(a) as (_, w2):
                assert isinstance(w1, Welcome) and isinstance(w2, Welcome)
                async with held_session(a) as (_, third):
                    assert_busy(third, Detail.BUSY_INSTALL)
                kode = await server.admin("reset_kode", npsn=A)  # new installs of A
                others = [ProtocolClient(server.url, A) for _ in range(2)]
                for c in others:
                    await c.register(kode.rows[0][2], "op@sekolah.id", "rahasia-1")
                async with held_session(others[0]) as (_, w3):
                    assert isinstance(w3, Welcome)
                    async with held_session(others[1]) as (_, fourth):
                        assert_busy(fourth, Detail.BUSY_SCHOOL)
                    await bystander_syncs(server, b, 1)  # another school is not held up
    run(main())


def test_an_idle_session_is_closed_and_pings_do_not_keep_it(tmp_path):
    async def main():
        async with running_server(tmp_path, idle_timeout_s=1.0, ping_interval=0.2,
                                  ping_timeout=5) as server:
            a, b = await install(server, A), await install(server, B)
            t0 = time.monotonic()
            async with held_session(a) as (ws, welcome):
                assert isinstance(welcome, Welcome)
                # the server sends what A lacks, then waits; we ack nothing and say nothing
                refuse = None
                with contextlib.suppress(ConnectionClosed):
                    while refuse is None:
                        msg = decode(await ws.recv(decode=False))
                        refuse = msg if isinstance(msg, Refuse) else None
            assert refuse is not None and refuse.code is Code.IDLE_TIMEOUT
            assert 1.0 <= time.monotonic() - t0 < 5
            await bystander_syncs(server, b, 1)
    run(main())


def test_unanswered_connections_are_bounded_in_number_and_first_message(tmp_path):
    async def main():
        async with running_server(tmp_path, max_unauthenticated=3, open_timeout_s=1.0,
                                  max_opening_bytes=4096) as server:
            b = await install(server, B)
            silent = [await connect(server.url, compression=None) for _ in range(3)]
            extra = await connect(server.url, compression=None)
            try:
                await asyncio.wait_for(extra.recv(), 2)
            except ConnectionClosed as exc:
                assert exc.rcvd.code == 1013  # try again later: not a byte of it was read
            for ws in silent:
                await ws.close()
            # a Hello far over a few KB is cut by the websocket layer, not decoded
            huge = b.hello("pull", {f"{i:08d}-0000-4000-8000-000000000000": 1
                                    for i in range(200)})
            async with connect(server.url, compression="deflate") as ws:
                await ws.send(encode(huge))
                try:
                    await asyncio.wait_for(ws.recv(), 2)
                except ConnectionClosed as exc:
                    assert exc.rcvd.code == 1009  # message too big
            async with asyncio.timeout(5):
                while server.server.stats.opening:
                    await asyncio.sleep(0.05)
            await bystander_syncs(server, b, 1)
    run(main())


def test_guessing_codes_is_rate_limited_and_slows_no_sync(tmp_path):
    async def main():
        async with running_server(tmp_path, failed_register_per_minute=6.0,
                                  credential_workers=1, credential_queue=2) as server:
            b = await install(server, B)
            await server.add_school(A, "SMA A")

            async def guess(i: int) -> Refuse:
                answer = await ProtocolClient(server.url, A).register(
                    f"AAAA-BBBB-{i:04d}", "op@sekolah.id", "x")
                assert isinstance(answer, Refuse)
                return answer

            flood = asyncio.gather(*(guess(i) for i in range(30)))
            t0 = time.monotonic()
            await bystander_syncs(server, b, 1)
            synced_s = time.monotonic() - t0
            answers = await flood
            assert synced_s < 5
            # the pool takes one check and queues two: the rest are told the centre is busy
            assert {a.code for a in answers} == {Code.BAD_CREDENTIAL, Code.SERVER_BUSY}
            for a in answers:
                if a.code is Code.SERVER_BUSY:
                    assert_busy(a, "")
            # one guess after another: after the school's budget of failures, it must wait
            failures = sum(a.code is Code.BAD_CREDENTIAL for a in answers)
            for i in range(10 - failures):  # burst 10
                assert (await guess(100 + i)).code is Code.BAD_CREDENTIAL
            assert_busy(await guess(99), Detail.TOO_MANY_ATTEMPTS)
    run(main())
