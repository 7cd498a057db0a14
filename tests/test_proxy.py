"""The flaky link (bench/proxy.py): its pure parts without sockets, then the proxy on loopback.

The sans-I/O parts (``FaultSchedule``, ``TokenBucket``) are driven with
explicit byte counts and a fake clock. The proxy runs between real servers
and clients on 127.0.0.1 port 0: a counting echo/sink server written as an
``asyncio.Protocol`` (it counts what reached the socket, even when a reset
follows at once) and a real websockets server. Timeouts below only guard
against hangs; nothing asserts that something was fast.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from selaras.bench.proxy import (
    Faults,
    FaultSchedule,
    FlakyProxy,
    TokenBucket,
    burst_for,
)

HOST = "127.0.0.1"
HANG_GUARD_S = 5.0


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    async def guarded() -> Any:
        async with asyncio.timeout(HANG_GUARD_S):
            return await test()
    return asyncio.run(guarded())


# --- FaultSchedule: where a connection is cut, when it stalls ------------------------------

def cut_points(faults: Faults, n: int = 50) -> list[int | None]:
    return [FaultSchedule(faults, i).cut_at for i in range(n)]


def test_a_perfect_link_never_cuts_nor_stalls() -> None:
    s = FaultSchedule(Faults(), 0)
    assert s.cut_at is None
    assert s.pass_bytes(10**9) == 10**9
    assert not s.cut_due
    assert [s.stall_s() for _ in range(100)] == [0.0] * 100


def test_cut_points_are_in_range_and_a_function_of_seed_and_connection_number() -> None:
    faults = Faults(cut_after_bytes=(100, 5_000), seed=7)
    points = cut_points(faults)
    assert all(p is not None and 100 <= p <= 5_000 for p in points)
    assert points == cut_points(Faults(cut_after_bytes=(100, 5_000), seed=7))
    assert len(set(points)) > 40  # really drawn, not one value
    assert points != cut_points(Faults(cut_after_bytes=(100, 5_000), seed=8))
    # Stall settings draw from their own stream: they do not move the cuts.
    assert points == cut_points(Faults(cut_after_bytes=(100, 5_000), seed=7,
                                       stall_ms=(1, 5), stall_probability=0.5))


def test_cut_probability_decides_which_connections_are_cut() -> None:
    assert cut_points(Faults(cut_after_bytes=(10, 10), cut_probability=0.0)) == [None] * 50
    assert cut_points(Faults(cut_after_bytes=(10, 10), cut_probability=1.0)) == [10] * 50
    half = cut_points(Faults(cut_after_bytes=(10, 10), cut_probability=0.5), n=200)
    assert set(half) == {None, 10}
    assert 50 < half.count(None) < 150


@given(cut_at=st.integers(0, 3_000), chunks=st.lists(st.integers(0, 700), max_size=12))
def test_exactly_cut_at_bytes_pass_then_none(cut_at: int, chunks: list[int]) -> None:
    s = FaultSchedule(Faults(cut_after_bytes=(cut_at, cut_at)), 0)
    passed = 0
    for n in chunks:
        was_due = s.cut_due
        allowed = s.pass_bytes(n)
        assert 0 <= allowed <= n
        assert allowed == 0 or not was_due  # nothing crosses after the cut
        passed += allowed
        assert s.cut_due == (passed == cut_at)
    assert passed == min(cut_at, sum(chunks))


def test_stalls_follow_probability_and_range() -> None:
    always = FaultSchedule(Faults(stall_ms=(20, 40), stall_probability=1.0), 0)
    assert all(0.020 <= always.stall_s() <= 0.040 for _ in range(100))
    never = FaultSchedule(Faults(stall_ms=(20, 40), stall_probability=0.0), 0)
    assert {never.stall_s() for _ in range(100)} == {0.0}
    some = FaultSchedule(Faults(stall_ms=(20, 40), stall_probability=0.3, seed=1), 0)
    draws = [some.stall_s() for _ in range(200)]
    assert 20 < sum(d > 0 for d in draws) < 100
    again = FaultSchedule(Faults(stall_ms=(20, 40), stall_probability=0.3, seed=1), 0)
    assert [again.stall_s() for _ in range(200)] == draws


@pytest.mark.parametrize("bad", [
    {"cut_after_bytes": (5, 4)}, {"cut_after_bytes": (-1, 4)}, {"stall_ms": (3, 2)},
    {"cut_probability": 1.5}, {"stall_probability": -0.1}, {"bandwidth_bytes_per_s": 0},
    {"latency_ms": -1},
])
def test_nonsense_faults_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Faults(**bad)


# --- TokenBucket: the bandwidth limit, on a fake clock ------------------------------------

steps = st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(1, 50_000)), max_size=60)


@given(rate=st.integers(1, 200_000), steps=steps)
def test_bucket_never_grants_more_than_burst_plus_rate_times_time(
        rate: int, steps: list[tuple[float, int]]) -> None:
    burst = burst_for(rate)
    now = 100.0
    bucket = TokenBucket(rate, burst, now)
    history: list[tuple[float, int]] = []  # (time, granted)
    for advance, wanted in steps:
        now += advance
        granted = bucket.take(wanted, now)
        assert granted in (0, min(wanted, burst))
        history.append((now, granted))
    # Every window [t_i, t_j]: at most burst + rate * (t_j - t_i) bytes.
    for i in range(len(history)):
        total = 0
        for j in range(i, len(history)):
            total += history[j][1]
            assert total <= burst + rate * (history[j][0] - history[i][0]) + 1e-6


@given(rate=st.integers(1, 200_000), drain=st.integers(0, 10), wanted=st.integers(1, 50_000))
def test_waiting_the_given_delay_is_enough(rate: int, drain: int, wanted: int) -> None:
    burst = burst_for(rate)
    bucket = TokenBucket(rate, burst, 0.0)
    for _ in range(drain):
        bucket.take(burst, 0.0)
    delay = bucket.delay(wanted, 0.0)
    assert bucket.take(wanted, delay) == min(wanted, burst)


def test_an_empty_bucket_refills_at_the_rate() -> None:
    bucket = TokenBucket(1_000, 100, 0.0)
    assert bucket.take(100, 0.0) == 100
    assert bucket.take(100, 0.0) == 0
    assert bucket.delay(100, 0.0) == pytest.approx(0.1)
    assert bucket.take(100, 0.05) == 0       # half full
    assert bucket.take(100, 0.1) == 100
    assert bucket.take(10, 10.0) == 10       # idle time refills up to the burst only
    assert bucket.take(100, 10.0) == 0


# --- Real sockets: a counting server and client -------------------------------------------

@dataclass
class Peer(asyncio.Protocol):
    """One end of a TCP connection that records every byte and how it ended."""

    echo: bool = False
    received: bytearray = field(default_factory=bytearray)
    eof: bool = False
    lost: asyncio.Future[Exception | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.echo:
            assert self.transport is not None
            self.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class CountingServer:
    """A real TCP server on loopback; ``peers`` in the order connections arrived."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.peers: list[Peer] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> CountingServer:
        def make() -> Peer:
            peer = Peer(echo=self.echo)
            self.peers.append(peer)
            return peer
        self.server = await asyncio.get_running_loop().create_server(make, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for peer in self.peers:
            if peer.transport is not None:
                peer.transport.abort()
        await self.server.wait_closed()

    async def next_peer(self, index: int) -> Peer:
        """Connection ``index``, once connected (the factory runs before connection_made)."""
        while len(self.peers) <= index or self.peers[index].transport is None:
            await asyncio.sleep(0.001)
        return self.peers[index]


async def open_client(port: int) -> Peer:
    _, peer = await asyncio.get_running_loop().create_connection(Peer, HOST, port)
    return peer


async def send_in_chunks(peer: Peer, payload: bytes, chunk: int = 1_500) -> None:
    assert peer.transport is not None
    for i in range(0, len(payload), chunk):
        if peer.transport.is_closing():
            return
        peer.transport.write(payload[i:i + chunk])
        await asyncio.sleep(0)  # let the proxy read in several chunks


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.001)


def test_bytes_pass_unchanged_both_ways_and_a_graceful_close_stays_graceful() -> None:
    payload = os.urandom(1_000_000)

    async def scenario() -> None:
        async with CountingServer(echo=True) as server, \
                FlakyProxy(HOST, server.port, Faults()) as proxy:
            client = await open_client(proxy.port)
            await send_in_chunks(client, payload, chunk=50_000)
            await wait_until(lambda: len(client.received) >= len(payload))
            assert client.transport is not None
            client.transport.write_eof()  # half-close: the FIN must reach the server
            assert await client.lost is None  # the server closed after EOF: no reset
            assert bytes(server.peers[0].received) == payload
            assert server.peers[0].eof
            assert bytes(client.received) == payload
            assert (proxy.stats.connections, proxy.stats.cuts) == (1, 0)
            assert proxy.stats.bytes_to_server == proxy.stats.bytes_to_client == len(payload)

    run(scenario)


@pytest.mark.parametrize("cut_at", [0, 1, 1_499, 1_500, 4_097, 9_999, 10_000])
def test_a_cut_lets_exactly_the_chosen_number_of_bytes_through(cut_at: int) -> None:
    payload = os.urandom(10_000)

    async def scenario() -> None:
        async with CountingServer(echo=False) as server, \
                FlakyProxy(HOST, server.port, Faults(cut_after_bytes=(cut_at, cut_at))) as proxy:
            client = await open_client(proxy.port)
            await send_in_chunks(client, payload)
            far = await server.next_peer(0)
            await far.lost
            await client.lost
            assert bytes(far.received) == payload[:cut_at]
            assert isinstance(far.lost.result(), ConnectionResetError)  # a reset, not a FIN
            assert not far.eof
            assert proxy.stats.cuts == 1
            assert proxy.stats.bytes_to_server == cut_at

    run(scenario)


@pytest.mark.parametrize("cut_at", [1, 2_000, 7_777, 15_000])
def test_a_cut_counts_both_directions_together(cut_at: int) -> None:
    payload = os.urandom(10_000)

    async def scenario() -> None:
        async with CountingServer(echo=True) as server, \
                FlakyProxy(HOST, server.port, Faults(cut_after_bytes=(cut_at, cut_at))) as proxy:
            client = await open_client(proxy.port)
            await send_in_chunks(client, payload)
            far = await server.next_peer(0)
            await far.lost
            await client.lost
            assert len(far.received) + len(client.received) == cut_at
            assert bytes(far.received) == payload[:len(far.received)]
            assert bytes(client.received) == payload[:len(client.received)]
            s = proxy.stats
            assert (s.cuts, s.bytes_to_server, s.bytes_to_client) == (
                1, len(far.received), len(client.received))

    run(scenario)


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's send queue is read on Linux only")
def test_a_cut_first_flushes_the_bytes_counted_but_still_buffered_for_a_slow_reader() -> None:
    # The server stops reading, so the proxy's upload backs up into its own buffer
    # (beyond the kernel's); then the server's download crosses the cut mark. The
    # bytes counted upward but still buffered must reach the server before the reset.
    cut_at = 20_000_000
    upload = os.urandom(16_000_000)  # more than loopback's kernel buffers hold

    async def scenario() -> None:
        async with CountingServer(echo=False) as server, \
                FlakyProxy(HOST, server.port, Faults(cut_after_bytes=(cut_at, cut_at))) as proxy:
            client = await open_client(proxy.port)
            far = await server.next_peer(0)
            assert client.transport is not None and far.transport is not None
            far.transport.pause_reading()
            client.transport.write(upload)
            stable, last = 0, -1
            while stable < 20:  # the upload has backed up: the proxy waits in drain()
                await asyncio.sleep(0.005)
                stable, last = (stable + 1, last) if proxy.stats.bytes_to_server == last \
                    else (0, proxy.stats.bytes_to_server)
            far.transport.write(os.urandom(cut_at - last + 100_000))
            await wait_until(
                lambda: proxy.stats.bytes_to_server + proxy.stats.bytes_to_client == cut_at)
            far.transport.resume_reading()
            await far.lost
            await client.lost
            assert len(far.received) == proxy.stats.bytes_to_server
            assert len(far.received) + len(client.received) == cut_at
            assert bytes(far.received) == upload[:len(far.received)]
            assert proxy.stats.cuts == 1

    run(scenario)


def test_cuts_land_where_the_seed_says_connection_after_connection() -> None:
    faults = Faults(cut_after_bytes=(100, 8_000), cut_probability=0.7, seed=42)
    payload = os.urandom(10_000)

    async def far_side_counts() -> list[int]:
        async with CountingServer(echo=False) as server, \
                FlakyProxy(HOST, server.port, faults) as proxy:
            for i in range(8):
                client = await open_client(proxy.port)
                await send_in_chunks(client, payload)
                assert client.transport is not None
                client.transport.write_eof()  # an uncut connection ends gracefully
                far = await server.next_peer(i)
                await far.lost
                await client.lost
            return [len(p.received) for p in server.peers]

    expected = [len(payload) if p is None else p for p in cut_points(faults, 8)]
    assert None in cut_points(faults, 8)  # the sample holds cut and uncut connections
    assert run(far_side_counts) == expected
    assert run(far_side_counts) == expected


def test_bandwidth_limit_holds_while_sampled_and_data_arrives_intact() -> None:
    rate = 100_000
    payload = os.urandom(50_000)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with CountingServer(echo=False) as server, \
                FlakyProxy(HOST, server.port, Faults(bandwidth_bytes_per_s=rate)) as proxy:
            started = loop.time()  # before the bucket exists: the bound only gets looser
            client = await open_client(proxy.port)
            await send_in_chunks(client, payload, chunk=10_000)
            samples: list[tuple[int, float]] = []
            while proxy.stats.bytes_to_server < len(payload):
                forwarded = proxy.stats.bytes_to_server
                samples.append((forwarded, loop.time() - started))  # time read after bytes
                await asyncio.sleep(0.005)
            for forwarded, elapsed in samples:
                assert forwarded <= rate * elapsed + burst_for(rate)
            assert any(0 < forwarded < len(payload) for forwarded, _ in samples)
            far = await server.next_peer(0)
            await wait_until(lambda: len(far.received) == len(payload))
            assert bytes(far.received) == payload

    run(scenario)


def test_latency_delays_each_direction_and_keeps_the_bytes() -> None:
    latency_ms = 40

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with CountingServer(echo=True) as server, \
                FlakyProxy(HOST, server.port, Faults(latency_ms=latency_ms)) as proxy:
            client = await open_client(proxy.port)
            assert client.transport is not None
            for i in range(3):
                sent = loop.time()
                ping = b"ping %d" % i
                client.transport.write(ping)
                while not client.received.endswith(ping):
                    await asyncio.sleep(0.001)
                # A lower bound the proxy enforces: one latency out, one back.
                assert loop.time() - sent >= 2 * latency_ms / 1000 * 0.9
            assert bytes(client.received) == b"ping 0ping 1ping 2"

    run(scenario)


def test_stalls_are_counted_and_lose_nothing() -> None:
    payload = os.urandom(20_000)

    async def scenario() -> None:
        faults = Faults(stall_ms=(1, 3), stall_probability=1.0)
        async with CountingServer(echo=True) as server, \
                FlakyProxy(HOST, server.port, faults) as proxy:
            client = await open_client(proxy.port)
            await send_in_chunks(client, payload)
            await wait_until(lambda: len(client.received) == len(payload))
            assert bytes(client.received) == payload
            assert proxy.stats.stalls >= 2  # at least one chunk each way

    run(scenario)


def test_a_reset_from_one_side_is_passed_on_as_a_reset() -> None:
    async def scenario() -> None:
        async with CountingServer(echo=True) as server, \
                FlakyProxy(HOST, server.port, Faults()) as proxy:
            client = await open_client(proxy.port)
            assert client.transport is not None
            client.transport.write(b"hello")
            await wait_until(lambda: client.received == b"hello")
            sock = client.transport.get_extra_info("socket")
            linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            client.transport.abort()
            far = await server.next_peer(0)
            assert isinstance(await far.lost, ConnectionResetError)
            assert not far.eof
            assert proxy.stats.cuts == 0  # the client's doing, not a fault

    run(scenario)


def test_a_dead_target_resets_the_client_and_the_proxy_goes_on() -> None:
    async def scenario() -> None:
        async with CountingServer(echo=True) as gone:
            dead_port = gone.port
        async with FlakyProxy(HOST, dead_port, Faults()) as proxy:
            client = await open_client(proxy.port)
            await client.lost
            assert client.received == b""
            async with CountingServer(echo=True) as server:
                proxy.target_port = server.port
                client = await open_client(proxy.port)
                assert client.transport is not None
                client.transport.write(b"hello")
                await wait_until(lambda: client.received == b"hello")
            assert proxy.stats.connections == 2

    run(scenario)


# --- websockets through the flaky link ----------------------------------------------------

async def echo_handler(connection: ServerConnection) -> None:
    try:
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        pass


def test_a_cut_websocket_raises_connection_closed_and_a_healed_link_works() -> None:
    async def scenario() -> None:
        async with serve(echo_handler, HOST, 0) as server:
            port = server.sockets[0].getsockname()[1]
            faults = Faults(cut_after_bytes=(1_000, 1_500), seed=3)
            async with FlakyProxy(HOST, port, faults) as proxy:
                async with connect(f"ws://{HOST}:{proxy.port}") as ws:
                    with pytest.raises(ConnectionClosed):
                        for i in range(1_000):
                            await ws.send(f"message {i:04d} " + "x" * 100)
                            assert await ws.recv() == f"message {i:04d} " + "x" * 100
                assert proxy.stats.cuts == 1
                # Heal the link: the next connection carries everything.
                proxy.set_faults(Faults())
                async with connect(f"ws://{HOST}:{proxy.port}") as ws:
                    for i in range(100):
                        await ws.send(f"again {i}")
                        assert await ws.recv() == f"again {i}"
                assert (proxy.stats.connections, proxy.stats.cuts) == (2, 1)

    run(scenario)


# --- aclose -------------------------------------------------------------------------------

def test_aclose_closes_every_connection_and_leaves_no_task_behind() -> None:
    async def scenario() -> None:
        async with CountingServer(echo=True) as server:
            # One connection stalled for far longer than the test may last.
            faults = Faults(stall_ms=(60_000, 60_000), stall_probability=1.0)
            proxy = FlakyProxy(HOST, server.port, faults)
            await proxy.start()
            clients = [await open_client(proxy.port) for _ in range(3)]
            assert clients[0].transport is not None
            clients[0].transport.write(b"stuck in a stall")
            await wait_until(lambda: proxy.stats.stalls == 1)
            await proxy.aclose()
            assert asyncio.all_tasks() == {asyncio.current_task()}
            for client in clients:
                await client.lost
            await proxy.aclose()  # twice is harmless
            assert proxy.stats.connections == 3

    run(scenario)


def test_aclose_ends_a_live_websocket() -> None:
    async def scenario() -> None:
        async with serve(echo_handler, HOST, 0) as server:
            port = server.sockets[0].getsockname()[1]
            proxy = FlakyProxy(HOST, port, Faults())
            await proxy.start()
            async with connect(f"ws://{HOST}:{proxy.port}") as ws:
                await ws.send("hello")
                assert await ws.recv() == "hello"
                await proxy.aclose()
                with pytest.raises(ConnectionClosed):
                    await ws.recv()

    run(scenario)
