"""Helpers to run the centre in-process and talk to it, for tests (ours and others').

``running_server`` starts a real ``SelarasServer`` on 127.0.0.1, port 0::

    async with running_server(tmp_path / "centre", max_sessions=4) as server:
        server.url                     # "ws://127.0.0.1:PORT"
        server.port
        kode = await server.add_school("20100001", "SMA Negeri 1")
        reply = await server.admin("installs", npsn="20100001")  # an AdminReply
        server.stats()                 # sessions, busy_refusals, events, commits, ...

Options are ``ServerOptions`` fields (``limits=Limits(...)``, ``busy_retry_s`` ...);
``consent_gate`` is off unless a test turns it on (the principal's consent, R20).

``ProtocolClient`` is a minimal school side on ``SyncProtocol(Side.CLIENT)``:
``register`` an install, then ``session(mode, vector, batches)`` runs one whole
session and returns what happened (events received, acks, summary or refusal).
``raw_session`` lets a test send whatever frames it likes after the Hello.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from selaras.engine.clocks import VersionVector, merge_vectors
from selaras.engine.events import Batch
from selaras.engine.protocol import (
    PROTOCOL_VERSION,
    AdminReply,
    BatchAcked,
    BatchReceived,
    Events,
    Hello,
    Message,
    PeerSent,
    Refuse,
    Refused,
    Register,
    Registered,
    Side,
    State,
    SummaryReceived,
    SyncProtocol,
    Welcomed,
    decode,
    encode,
)
from selaras.engine.schema import SCHEMA_VERSION

from .app import SelarasServer, ServerOptions
from .remote import admin_request, one_shot, tls_context


class RunningServer:
    def __init__(self, server: SelarasServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def admin_token(self) -> str:
        return self.server.admin_token

    def stats(self) -> dict[str, Any]:
        return self.server.all_stats()

    async def admin(self, command: str, **args: str) -> AdminReply:
        return await admin_request(self.url, self.admin_token, command, **args)

    async def add_school(self, npsn: str, nama: str = "", bentuk: str = "SMA") -> str:
        """Add a school; returns its registration code."""
        reply = await self.admin("school_add", npsn=npsn, nama=nama, bentuk=bentuk)
        if reply.columns == ["error"]:
            raise RuntimeError(reply.message)
        return str(reply.rows[0][2])


@contextlib.asynccontextmanager
async def running_server(data_dir: str | Path, **options: Any) -> AsyncIterator[RunningServer]:
    options.setdefault("port", 0)
    options.setdefault("consent_gate", False)  # tests of the gate turn it on
    server = SelarasServer(Path(data_dir), ServerOptions(**options))
    await server.start()
    try:
        yield RunningServer(server)
    finally:
        await server.stop()


@dataclass
class Outcome:
    """What one session did, seen from the client."""

    welcome_vector: VersionVector = field(default_factory=dict)
    received: list[Batch] = field(default_factory=list)
    acks: list[tuple[int, VersionVector]] = field(default_factory=list)
    summary: tuple[VersionVector, dict[str, str]] | None = None
    refused: Refuse | None = None
    closed_code: int | None = None
    messages: list[Message] = field(default_factory=list)  # raw_session: all received

    @property
    def events_received(self) -> int:
        return sum(len(b) for b in self.received)


class ProtocolClient:
    """One install (origin + token) of one school, speaking the protocol directly."""

    def __init__(self, url: str, npsn: str, install: str = "", token: str = "",
                 cafile: str | None = None) -> None:
        self.url, self.npsn, self.install, self.token = url, npsn, install, token
        self.cafile = cafile  # wss://: trust this certificate (a self-signed test one)
        self._tls = tls_context(cafile) if url.startswith("wss:") else None

    async def register(self, kode: str, user: str, password: str,
                       schema: int = SCHEMA_VERSION) -> Registered | Refuse:
        answer = await one_shot(self.url, Register(PROTOCOL_VERSION, "test", schema, self.npsn,
                                                    kode, user, password, _ms()),
                                cafile=self.cafile)
        assert isinstance(answer, Registered | Refuse), answer
        if isinstance(answer, Registered):
            self.install, self.token = answer.install, answer.token
        return answer

    def hello(self, mode: Literal["pull", "sync"] = "sync", vector: VersionVector | None = None,
              schema: int = SCHEMA_VERSION) -> Hello:
        return Hello(PROTOCOL_VERSION, "test", schema, self.npsn, self.install, self.token,
                     mode, vector or {}, _ms())

    async def session(self, mode: Literal["pull", "sync"] = "sync",
                      vector: VersionVector | None = None, batches: Sequence[Batch] = (),
                      *, hello: Hello | None = None) -> Outcome:
        """A whole, well-behaved session: push ``batches`` (sync), take what comes, Done."""
        proto = SyncProtocol(Side.CLIENT)
        proto.send_hello(hello or self.hello(mode, vector))
        out = Outcome()
        ours = dict(vector or {})
        todo = list(batches)
        async with connect(self.url, compression=None, max_size=None, ssl=self._tls) as ws:
            try:
                await _flush(proto, ws)
                while proto.state is not State.CLOSED:
                    proto.receive_data(await ws.recv(decode=False))
                    for f in proto.facts():
                        match f:
                            case Welcomed(welcome=w):
                                out.welcome_vector = w.vector
                            case BatchReceived(batch=n, payload=p):
                                b = Batch.from_bytes(p)
                                out.received.append(b)
                                ours = merge_vectors(ours, b.vector())
                                proto.ack(n, ours)
                            case BatchAcked(batch=n, vector=v):
                                out.acks.append((n, v))
                            case PeerSent():
                                pass
                            case SummaryReceived(summary=s):
                                out.summary = (s.vector, s.checksums)
                                proto.close()
                            case Refused(refuse=r):
                                out.refused = r
                    if proto.state is State.STREAMING:
                        while todo and proto.can_send_batch:
                            b = todo.pop(0)
                            proto.send_batch(b.to_bytes(), len(b))
                        if not todo and not proto.finished_sending:
                            proto.finish_sending()
                        if proto.ready_for_done:
                            proto.send_done(ours, {})
                    await _flush(proto, ws)
            except ConnectionClosed as exc:
                out.closed_code = exc.rcvd.code if exc.rcvd else None
        return out

    async def raw_session(self, frames: Sequence[bytes | str],
                          mode: Literal["pull", "sync"] = "sync",
                          vector: VersionVector | None = None, *, hello: Hello | None = None,
                          until: Callable[[list[Message]], bool] | None = None,
                          wait_s: float = 5.0) -> Outcome:
        """Hello, then ``frames`` as they are once the server answered it (until then it
        takes a few KB: ServerOptions.max_opening_bytes), without waiting for any ack.

        Collects every message until a Refuse, a close, ``until(messages)`` or ``wait_s``.
        """
        proto = SyncProtocol(Side.CLIENT)
        proto.send_hello(hello or self.hello(mode, vector))
        out = Outcome()
        async with connect(self.url, compression=None, max_size=None, ssl=self._tls) as ws:
            await _flush(proto, ws)
            try:
                async with asyncio.timeout(wait_s):
                    out.messages.append(decode(await ws.recv(decode=False)))
                if isinstance(out.messages[0], Refuse):
                    out.refused = out.messages[0]
                    return out
            except (ConnectionClosed, TimeoutError):
                return out
            with contextlib.suppress(ConnectionClosed):  # the server may refuse mid-way
                for f in frames:
                    await ws.send(f)
            try:
                async with asyncio.timeout(wait_s):
                    while not (until and until(out.messages)):
                        msg = decode(await ws.recv(decode=False))
                        out.messages.append(msg)
                        if isinstance(msg, Refuse):
                            out.refused = msg
                            break
            except ConnectionClosed as exc:
                out.closed_code = exc.rcvd.code if exc.rcvd else None
            except TimeoutError:
                pass
        return out


def events_frame(batch_no: int, batch: Batch) -> bytes:
    """An Events message as a raw frame."""
    frame: bytes = encode(Events(batch_no, len(batch), batch.to_bytes()))
    return frame


async def _flush(proto: SyncProtocol, ws: ClientConnection) -> None:
    for d in proto.data_to_send():
        await ws.send(d)


def _ms() -> int:
    return time.time_ns() // 1_000_000
