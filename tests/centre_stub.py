"""A small stand-in centre for the client's sync tests, until server/testing.py lands.

It drives ``SyncProtocol(Side.SERVER)`` over real websockets on 127.0.0.1 with
one in-memory DuckDBStore per school: Register, Hello checks (token, revoked,
code reset), both streams with acks after commit, Summary. Knobs for tests:
``busy`` (refuse that many sessions with server_busy), ``clock_skew_ms``.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from selaras.client.install import school_fields
from selaras.client.sync import Outbox, now_ms
from selaras.engine.duckdb_store import DuckDBStore
from selaras.engine.events import Batch, central_origins
from selaras.engine.protocol import (
    BatchReceived,
    Code,
    DoneReceived,
    Hello,
    Limits,
    Opened,
    Register,
    Registered,
    Side,
    State,
    SyncProtocol,
    Welcome,
)
from selaras.engine.replica import referensi_events, school_identity_event
from selaras.engine.store import EventCollision
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


@dataclass
class School:
    npsn: str
    store: DuckDBStore
    kode: str
    installs: dict[str, str] = field(default_factory=dict)  # origin -> token
    kode_of: dict[str, str] = field(default_factory=dict)  # origin -> kode it registered with
    revoked: set[str] = field(default_factory=set)


class CentreStub:
    def __init__(self, limits: Limits | None = None) -> None:
        self.schools: dict[str, School] = {}
        self.limits = limits or Limits()
        self.busy = 0
        self.busy_refusals = 0
        self.clock_skew_ms = 0
        self.port = 0
        self.lock = asyncio.Lock()

    def add_school(self, npsn: str) -> str:
        store = DuckDBStore(":memory:", central_origins(npsn))
        refs = referensi_events()
        store.append(Batch.from_events(
            [*refs, school_identity_event(npsn, school_fields(npsn, None, "SMA", refs))]))
        kode = secrets.token_hex(4)
        self.schools[npsn] = School(npsn, store, kode)
        return kode

    def reset_kode(self, npsn: str) -> str:
        self.schools[npsn].kode = secrets.token_hex(4)
        return self.schools[npsn].kode

    def revoke(self, npsn: str, origin: str) -> None:
        self.schools[npsn].revoked.add(origin)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def handler(self, ws: ServerConnection) -> None:
        proto = SyncProtocol(Side.SERVER, self.limits)

        async def flush() -> None:
            for frame in proto.data_to_send():
                await ws.send(frame)

        try:
            school: School | None = None
            sender: asyncio.Task[None] | None = None
            async for frame in ws:
                assert isinstance(frame, bytes)
                proto.receive_data(frame)
                for fact in proto.facts():
                    match fact:
                        case Opened(Register() as r):
                            s = self.schools.get(r.npsn)
                            if s is None or r.kode != s.kode:
                                proto.refuse(Code.BAD_CREDENTIAL, "kode registrasi salah")
                            else:
                                origin, token = str(uuid.uuid4()), secrets.token_hex(16)
                                s.installs[origin] = token
                                s.kode_of[origin] = s.kode
                                proto.answer(Registered(origin, token, now_ms(), "operator"))
                        case Opened(Hello() as h):
                            school = self._check(proto, h)
                            if school is not None:
                                proto.accept(Welcome(uuid.uuid4().hex, now_ms()
                                                     + self.clock_skew_ms,
                                                     school.store.vector(), self.limits))
                                await flush()
                                sender = asyncio.create_task(
                                    self._send_all(proto, school, h.vector, flush))
                        case BatchReceived(batch, _, payload):
                            assert school is not None
                            b = Batch.from_bytes(payload)
                            async with self.lock:
                                try:
                                    school.store.append(b)
                                except EventCollision:
                                    proto.refuse(Code.EVENT_COLLISION, "tabrakan")
                                    break
                                vec = school.store.vector()
                            proto.ack(batch, vec)
                        case DoneReceived():
                            assert school is not None
                            proto.send_summary(school.store.vector(), school.store.checksums())
                        case _:
                            pass
                await flush()
                if proto.state is State.CLOSED:
                    break
            if sender is not None:
                sender.cancel()
        except ConnectionClosed:
            pass

    def _check(self, proto: SyncProtocol, h: Hello) -> School | None:
        if self.busy > 0:
            self.busy -= 1
            self.busy_refusals += 1
            proto.refuse(Code.SERVER_BUSY, "server sibuk", 0.05)
            return None
        s = self.schools.get(h.npsn)
        if s is None or s.installs.get(h.install) != h.token:
            proto.refuse(Code.BAD_CREDENTIAL, "kredensial salah")
            return None
        if h.install in s.revoked:
            proto.refuse(Code.INSTALL_REVOKED, "instalasi dicabut")
            return None
        if s.kode_of[h.install] != s.kode:
            proto.refuse(Code.CODE_RESET, "kode direset")
            return None
        return s

    async def _send_all(self, proto: SyncProtocol, school: School, their: dict[str, int],
                        flush: object) -> None:
        batch = school.store.events_after(their)
        for origin in sorted(batch.vector()):
            outbox = Outbox(Batch(dict(batch.tables), batch.contexts), origin, proto.limits)
            while outbox:
                while not proto.can_send_batch:
                    await asyncio.sleep(0.002)
                proto.send_batch(*outbox.next())
                await flush()  # type: ignore[operator]
        proto.finish_sending()
        await flush()  # type: ignore[operator]


@asynccontextmanager
async def running_stub(limits: Limits | None = None) -> AsyncIterator[CentreStub]:
    centre = CentreStub(limits)
    async with serve(centre.handler, "127.0.0.1", 0, compression=None,
                     max_size=centre.limits.max_frame_bytes) as server:
        centre.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        yield centre
