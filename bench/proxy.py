"""A flaky link: a TCP proxy on loopback that cuts, stalls, slows and delays.

Put it between a client and a real server to test (or benchmark) a sync that
must survive bad school internet (DESIGN.md section 7: nothing acknowledged is
lost, whatever the interruption)::

    async with FlakyProxy("127.0.0.1", server_port, Faults(cut_after_bytes=(200, 5_000))) as proxy:
        ...  # connect the client to ws://127.0.0.1:{proxy.port}
        proxy.set_faults(Faults())  # heal the link for the next connections

The faults of one connection are decided by two sans-I/O classes that tests
can drive without sockets or sleeping: ``FaultSchedule`` (where the
connection is cut, when it stalls: a pure function of the seed and the
connection's number) and ``TokenBucket`` (the bandwidth limit, time passed
in). ``FlakyProxy`` is the asyncio adapter around them.

What a fault does, exactly:

- A *cut* happens once ``cut_at`` bytes have crossed the link, counting both
  directions together (the link dies after N bytes, whichever way they
  went). The chunk that crosses the mark is split so exactly ``cut_at`` bytes
  are forwarded; then both sockets are reset (SO_LINGER 0 and
  ``transport.abort()``: a TCP RST, no FIN, no websocket close frame). Before
  the reset the proxy waits, at most ``FLUSH_TIMEOUT_S``, until those bytes
  have left its buffers and (on Linux, where the kernel says so) the kernel's
  send queue, so the far side receives exactly ``cut_at`` bytes as long as it
  reads them in time; what it leaves unread is lost with the link.
- A *stall*: before forwarding each chunk read from a socket (up to
  ``CHUNK_BYTES``), with probability ``stall_probability``, that direction
  stops for a random time in ``stall_ms``. Reading goes on until the bounded
  queue fills, then backpressure reaches the sender.
- *Bandwidth*: a token bucket per direction, ``bandwidth_bytes_per_s`` with a
  burst of a tenth of a second's worth (``burst_for``).
- *Latency*: each chunk is delivered ``latency_ms`` after it was read (a delay
  line, not a pause per chunk: chunks in flight overlap).

Nothing buffers without bound: a direction holds at most ``QUEUE_CHUNKS``
chunks of ``CHUNK_BYTES``, and every write awaits ``drain()``.
Faults apply to connections accepted after they are set; connections are
numbered from 0 in the order they are accepted, for the proxy's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import sys
from dataclasses import dataclass
from types import TracebackType

__all__ = ["CHUNK_BYTES", "FLUSH_TIMEOUT_S", "QUEUE_CHUNKS", "FaultSchedule", "Faults",
           "FlakyProxy", "ProxyStats", "TokenBucket", "burst_for"]

CHUNK_BYTES = 64 * 1024   # one read from a socket
QUEUE_CHUNKS = 32         # chunks in flight per direction (the delay line's bound)
FLUSH_TIMEOUT_S = 1.0     # how long a cut waits for the bytes it let through to reach the peer


@dataclass(frozen=True)
class Faults:
    """What goes wrong on the link. The default is a perfect link.

    ``cut_after_bytes=(lo, hi)``: each connection is cut after a random number
    of bytes in ``[lo, hi]`` (both ends included), counted over both
    directions together; ``cut_probability`` is the chance that a given
    connection is cut at all. ``stall_ms=(lo, hi)`` with ``stall_probability``
    per chunk: pauses. ``seed`` makes every draw reproducible.
    """

    cut_after_bytes: tuple[int, int] | None = None
    cut_probability: float = 1.0
    stall_ms: tuple[int, int] | None = None
    stall_probability: float = 0.0
    bandwidth_bytes_per_s: int | None = None
    latency_ms: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("cut_after_bytes", "stall_ms"):
            span = getattr(self, name)
            if span is not None and not 0 <= span[0] <= span[1]:
                raise ValueError(f"{name} must be (lo, hi) with 0 <= lo <= hi, not {span}")
        for name in ("cut_probability", "stall_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)}")
        if self.bandwidth_bytes_per_s is not None and self.bandwidth_bytes_per_s <= 0:
            raise ValueError(f"bandwidth_bytes_per_s must be > 0, not {self.bandwidth_bytes_per_s}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, not {self.latency_ms}")


class FaultSchedule:
    """The faults of connection number ``index``: sans-I/O, reproducible.

    ``cut_at`` is drawn at construction, from its own random stream, so it
    depends only on ``(faults.seed, faults.cut_after_bytes,
    faults.cut_probability, index)``. The caller must pass every byte it
    means to forward through ``pass_bytes`` first, forward exactly what it
    returns, and cut the connection as soon as ``cut_due`` is true.
    """

    def __init__(self, faults: Faults, index: int) -> None:
        self.faults = faults
        self.index = index
        cut_rng = random.Random(f"selaras-proxy:{faults.seed}:{index}:cut")
        self.cut_at: int | None = None
        if faults.cut_after_bytes is not None and cut_rng.random() < faults.cut_probability:
            self.cut_at = cut_rng.randint(*faults.cut_after_bytes)
        self._stall_rng = random.Random(f"selaras-proxy:{faults.seed}:{index}:stall")
        self.passed = 0

    @property
    def cut_due(self) -> bool:
        return self.cut_at is not None and self.passed >= self.cut_at

    def pass_bytes(self, n: int) -> int:
        """Count up to ``n`` bytes as crossing the link; return how many may (0 once cut)."""
        allowed = n if self.cut_at is None else max(0, min(n, self.cut_at - self.passed))
        self.passed += allowed
        return allowed

    def stall_s(self) -> float:
        """Seconds to pause before the next chunk (0.0: none). One draw per chunk."""
        f = self.faults
        if f.stall_ms is None or f.stall_probability == 0.0:
            return 0.0
        if self._stall_rng.random() >= f.stall_probability:
            return 0.0
        return self._stall_rng.randint(*f.stall_ms) / 1000


def burst_for(rate: int) -> int:
    """The bucket size for a link of ``rate`` bytes a second: a tenth of a second's worth."""
    return max(1, rate // 10)


class TokenBucket:
    """A bandwidth limit: sans-I/O, every call takes ``now`` in seconds (monotonic).

    Over any interval ``[t0, t1]``, ``take`` grants at most
    ``burst + rate * (t1 - t0)`` bytes. It grants ``min(wanted, burst)``
    bytes or nothing, so a slow link sends whole slices rather than dribbles;
    after a 0, wait ``delay(wanted, now)`` seconds and ask again.
    """

    _EPSILON = 1e-9  # float rounding: waiting exactly ``delay`` must be enough

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, not {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now

    def take(self, wanted: int, now: float) -> int:
        """Grant and consume ``min(wanted, burst)`` bytes if the bucket holds them, else 0."""
        self._refill(now)
        grant = min(wanted, self.burst)
        if self._tokens + self._EPSILON < grant:
            return 0
        self._tokens -= grant
        return grant

    def delay(self, wanted: int, now: float) -> float:
        """Seconds from ``now`` until ``take(wanted, ...)`` would grant."""
        self._refill(now)
        return max(0.0, (min(wanted, self.burst) - self._tokens) / self.rate)


@dataclass
class ProxyStats:
    """Counts since the proxy started, over all connections."""

    connections: int = 0      # accepted from clients
    cuts: int = 0             # connections the proxy cut (a fault, not a peer's doing)
    stalls: int = 0
    bytes_to_server: int = 0  # forwarded, client to server
    bytes_to_client: int = 0  # forwarded, server to client


class _Cut(Exception):
    """The fault schedule says the link dies now."""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close abruptly with a TCP RST: SO_LINGER on, timeout 0, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None and not writer.transport.is_closing():
        # struct linger is two ints on POSIX, two u_shorts on Windows.
        linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    writer.transport.abort()


def _unsent_in_kernel(writer: asyncio.StreamWriter) -> int:
    """Bytes the kernel still holds for the peer (unsent or unacknowledged): Linux only, else 0."""
    sock = writer.get_extra_info("socket")
    if sys.platform != "linux" or sock is None or writer.transport.is_closing():
        return 0
    import fcntl  # POSIX-only modules, imported where they are known to exist
    import termios
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))  # SIOCOUTQ
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


async def _flush(writers: list[asyncio.StreamWriter]) -> None:
    """Wait, at most FLUSH_TIMEOUT_S, until the bytes already written reach the peers.

    A reset discards what is still buffered: first the transport's buffer,
    then (SO_LINGER 0) the kernel's send queue.
    """
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(FLUSH_TIMEOUT_S):
            for w in writers:
                if not w.transport.is_closing():
                    w.transport.set_write_buffer_limits(high=0)  # drain() waits for empty
                    await w.drain()
            while any(_unsent_in_kernel(w) for w in writers):
                await asyncio.sleep(0.001)


class _ProxiedConnection:
    """One client connection and its connection to the target, pumped both ways."""

    def __init__(self, proxy: FlakyProxy, schedule: FaultSchedule,
                 client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                 ) -> None:
        self.proxy = proxy
        self.schedule = schedule
        self.client_reader = client_reader
        self.client_writer = client_writer

    async def run(self) -> None:
        proxy, faults = self.proxy, self.schedule.faults
        writers = [self.client_writer]
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(
                    proxy.target_host, proxy.target_port)
            except OSError:
                return  # the far end is down: the client sees its connection reset
            writers.append(server_writer)
            cut = broken = False
            try:
                if self.schedule.cut_due:  # cut_at == 0: the link is dead from the start
                    raise _Cut
                async with asyncio.TaskGroup() as tasks:
                    for reader, writer, to_server in (
                            (self.client_reader, server_writer, True),
                            (server_reader, self.client_writer, False)):
                        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
                        tasks.create_task(self._read(reader, queue, faults.latency_ms / 1000))
                        tasks.create_task(self._write(queue, writer, to_server))
            except* _Cut:
                cut = True
            except* OSError:
                broken = True  # a peer reset or vanished: pass the reset on
            if cut:
                await _flush(writers)  # the bytes already counted must get through
                proxy.stats.cuts += 1
            if cut or broken:
                for w in writers:
                    _reset(w)
            else:
                for w in writers:
                    w.close()
                for w in writers:
                    with contextlib.suppress(OSError):
                        await w.wait_closed()
        finally:  # cancelled (aclose) or failed: nothing stays open
            for w in writers:
                if not w.transport.is_closing():
                    _reset(w)

    async def _read(self, reader: asyncio.StreamReader,
                    queue: asyncio.Queue[tuple[float, bytes]], latency_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await reader.read(CHUNK_BYTES)
            await queue.put((loop.time() + latency_s, data))  # b"": end of stream
            if not data:
                return

    async def _write(self, queue: asyncio.Queue[tuple[float, bytes]],
                     writer: asyncio.StreamWriter, to_server: bool) -> None:
        loop = asyncio.get_running_loop()
        rate = self.schedule.faults.bandwidth_bytes_per_s
        bucket = None if rate is None else TokenBucket(rate, burst_for(rate), loop.time())
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:  # half-close: pass the FIN on, keep the other direction going
                if writer.can_write_eof():
                    writer.write_eof()
                return
            if (stall := self.schedule.stall_s()) > 0:
                self.proxy.stats.stalls += 1
                await asyncio.sleep(stall)
            while data:
                n = len(data)
                if bucket is not None:
                    now = loop.time()
                    n = bucket.take(n, now)
                    if n == 0:
                        await asyncio.sleep(bucket.delay(len(data), now))
                        continue
                n = self.schedule.pass_bytes(n)
                if n:
                    writer.write(data[:n])
                    if to_server:
                        self.proxy.stats.bytes_to_server += n
                    else:
                        self.proxy.stats.bytes_to_client += n
                if self.schedule.cut_due:
                    raise _Cut
                await writer.drain()
                data = data[n:]


class FlakyProxy:
    """A TCP proxy to ``target_host:target_port`` that injects ``faults``.

    ``await start()`` listens (on 127.0.0.1, a free port by default: read
    ``port``); ``await aclose()`` stops listening and resets every live
    connection, and returns once all of the proxy's tasks have ended. Or use
    ``async with``. ``stats`` counts connections, cuts, stalls and bytes.
    """

    def __init__(self, target_host: str, target_port: int, faults: Faults) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.stats = ProxyStats()
        self._faults = faults
        self._accepted = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Use ``faults`` for connections accepted from now on; live ones keep theirs."""
        self._faults = faults

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        self._closing = False
        self._server = await asyncio.start_server(self._accept, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: the task is ours, registered before it runs,
        # so aclose() can cancel and await every connection.
        if self._closing:
            _reset(writer)
            return
        schedule = FaultSchedule(self._faults, self._accepted)
        self._accepted += 1
        self.stats.connections += 1
        task = asyncio.create_task(_ProxiedConnection(self, schedule, reader, writer).run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FlakyProxy:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
