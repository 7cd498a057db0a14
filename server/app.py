"""The central server: one asyncio websockets server, one writer thread.

``SelarasServer`` owns the centre's DuckDB file (``DATA/centre.duckdb``), the
writer (``CentreWriter``), the secrets, the signing key (``DATA/centre.key``,
protocol R18: every centre event is signed, its public half goes out in
``Registered`` and ``Welcome``) and the listening socket.
``SyncConnection`` is one websocket: it drives a ``SyncProtocol(Side.SERVER)``
and answers the opening message (docs/protocol.md section 5):

- ``Hello``: authenticate, ``Welcome``, then three tasks: receiving frames,
  committing received batches in order through the writer (ack after commit),
  and sending the school what the client lacks within the window.
- ``Register``: a new install of a school (R17).
- ``AdminRequest``: one admin command (server/admin.py) with the admin secret.
- ``Check``: is this install let in? The Hello's checks, no session (R17).

Each sync session is recorded in the registry and logged as one structlog line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from selaras.engine import compare, consent, passwords
from selaras.engine.consent import Consent
from selaras.engine.errors import InputError
from selaras.engine.events import REFERENSI_ORIGIN, MalformedBatch, central_origins
from selaras.engine.outbox import Outbox
from selaras.engine.protocol import (
    AccountReply,
    AccountRequest,
    AdminRequest,
    BatchAcked,
    BatchReceived,
    Check,
    Checked,
    Code,
    CompareReceived,
    DoneReceived,
    Hello,
    Limits,
    Opened,
    Refused,
    Register,
    Registered,
    RemoteError,
    Side,
    State,
    SyncProtocol,
    TransferReply,
    TransferRequest,
    Welcome,
    account_name,
)
from selaras.engine.refusals import TEXT, Detail, busy
from selaras.engine.schema import SCHEMA_VERSION
from selaras.engine.stages import spent, stage
from selaras.engine.storage import open_centre
from selaras.engine.store import (
    REFERENSI,
    AppendReport,
    BadSignature,
    CentreReader,
    CentreStore,
    EventCollision,
    Registry,
    RegistryError,
    SessionCaps,
    StoreError,
)

from . import accounts, credentials, gate, manajemen, validasi_pusat
from .admin import AdminError, run_admin, run_query, table
from .guard import CredentialChecks, RateLimit
from .push import Refusal, admissible, principal_consent, refusal_of
from .writer import CentreWriter

T = TypeVar("T")
log = structlog.get_logger("selaras.server")

DB_FILE = "centre.duckdb"
SERVER_JSON = "server.json"
ADMIN_TOKEN = "admin.token"
SECRET = "secret"
LEASE_MS = 60_000  # a live session not renewed for this long lapsed (its process died)

def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    # Live sessions in every process on the store: in all, per school, per install;
    # beyond any of them, server_busy.
    max_sessions: int = 64
    max_school_sessions: int = 8
    max_install_sessions: int = 2
    busy_retry_s: float = 5.0  # retry_after_s = this ± 25 %
    idle_timeout_s: float = 60.0  # an authenticated session with no message for this long
    max_unauthenticated: int = 256  # connections that have not yet been answered
    max_opening_bytes: int = 16 << 10  # the first message (Hello, Register, AdminRequest)
    credential_workers: int = 1  # threads for the slow hash of codes and passwords
    credential_queue: int = 16  # checks waiting for them; beyond: server_busy
    # Failed credential checks: after a burst, one more per 60 / rate seconds.
    failed_register_per_minute: float = 10.0  # per school, and per peer address
    failed_hello_per_minute: float = 60.0  # per peer address
    limits: Limits = field(default_factory=Limits)
    max_queue: int = 4  # frames buffered per connection before TCP back-pressure
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    open_timeout_s: float = 10.0  # for the opening message
    drain_timeout_s: float = 10.0  # SIGTERM: how long live sessions get to finish a batch
    compression: str | None = "deflate"  # accepted when a client on a slow link offers it (R1)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    memory_limit: str = "1GB"
    store: str | None = None  # a postgresql:// URL; None: DuckDB in DATA/centre.duckdb
    # A push needs the principal's signed consent covering it (R20). Off only to measure
    # what the gate costs, and for tests of what lies behind it.
    consent_gate: bool = True
    # Validasi Pusat after each committed push (server/validasi_pusat.py). Off only to
    # measure what it costs.
    central_validation: bool = True


@dataclass
class ServerStats:
    opening: int = 0  # connections not yet answered (unauthenticated)
    sessions: int = 0  # sync and pull sessions accepted
    active: int = 0
    busy_refusals: int = 0
    refusals: int = 0
    registrations: int = 0


class SelarasServer:
    """The centre: ``await start()``, then ``url``; ``await stop()`` drains and closes."""

    def __init__(self, data: Path, options: ServerOptions | None = None) -> None:
        self.data = Path(data)
        self.options = options or ServerOptions()
        self.stats = ServerStats()
        self.draining = asyncio.Event()
        self._server: Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.live: set[SyncConnection] = set()  # admitted sessions of this process
        self.url = ""
        self.port = 0

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        o = self.options
        self.data.mkdir(parents=True, exist_ok=True)
        self.secret = credentials.private_secret(self.data / SECRET)
        self.admin_token = credentials.private_secret(self.data / ADMIN_TOKEN).decode()
        self.key = credentials.centre_key(self.data)
        self.centre = open_centre(o.store or self.data / DB_FILE, key=self.key,
                                  memory_limit=o.memory_limit)
        self.registry = self.centre.registry
        self.caps = SessionCaps(o.max_sessions, o.max_school_sessions, o.max_install_sessions)
        self.credentials = CredentialChecks(o.credential_workers, o.credential_queue)
        self.failed_registers = RateLimit(o.failed_register_per_minute, burst=10)
        self.failed_hellos = RateLimit(o.failed_hello_per_minute, burst=20)
        # Reads of the registry (authentication) use a reader of their own, one at a time.
        self._registry_reader = self.centre.reader()
        self._registry_lock = threading.Lock()
        self._live_registry, self._live_lock = self.centre.reader(), threading.Lock()
        # Each session reads its school on a reader of its own, from a pool made here,
        # before the writer thread runs (readers are cursors of the writer's connection).
        self.readers: asyncio.Queue[CentreReader] = asyncio.Queue()
        for _ in range(o.max_sessions + 1):
            self.readers.put_nowait(self.centre.reader())
        self.writer = CentreWriter(self.centre, self.registry)
        self.writer.start()
        self._renewer = asyncio.create_task(self._renewing())
        tls = None
        if o.tls_cert:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(o.tls_cert, o.tls_key)
        self._server = await serve(
            self._handle, o.host, o.port, ssl=tls, compression=o.compression,
            # Until a connection is answered, its one message may be a few KB; an
            # authenticated session then gets the frame limit (SyncConnection.authenticated).
            max_size=o.max_opening_bytes, max_queue=o.max_queue,
            ping_interval=o.ping_interval, ping_timeout=o.ping_timeout)
        self.port = self._server.sockets[0].getsockname()[1]
        host = o.host if ":" not in o.host else f"[{o.host}]"
        self.url = f"{'wss' if tls else 'ws'}://{host}:{self.port}"
        info = {"url": self.url, "pid": os.getpid(),
                "tls_cert": str(o.tls_cert) if o.tls_cert else None}
        (self.data / SERVER_JSON).write_text(json.dumps(info), encoding="utf-8")

    async def stop(self) -> None:
        """Stop accepting, let live sessions finish their current batch, close the store."""
        if self._server is None:
            return
        self.draining.set()
        self._server.close(close_connections=False)
        if self._connections:
            await asyncio.wait(self._connections, timeout=self.options.drain_timeout_s + 5)
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        self._renewer.cancel()
        await asyncio.to_thread(self.writer.stop)
        self.credentials.close()
        self._registry_reader.close()
        self._live_registry.close()
        while not self.readers.empty():
            self.readers.get_nowait().close()
        self.centre.close()
        with contextlib.suppress(FileNotFoundError, ValueError):
            # Processes sharing a data folder: server.json names the last one started.
            info = self.data / SERVER_JSON
            if json.loads(info.read_text(encoding="utf-8"))["pid"] == os.getpid():
                info.unlink()

    async def __aenter__(self) -> SelarasServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def all_stats(self) -> dict[str, Any]:
        s = self.stats
        return {"sessions": s.sessions, "active": s.active, "busy_refusals": s.busy_refusals,
                "refusals": s.refusals, "registrations": s.registrations,
                **self.writer.stats.as_dict(),
                **{f"{name}_s": round(s, 3) for name, s in spent().items()}}

    # -- helpers for connections ---------------------------------------------------------

    async def after_change(self, npsn: str, entities: Collection[str] | None = None) -> None:
        """What the centre does once a school's data (of ``entities``, None: any) changed:
        the teachers it shares with other schools follow their home school, then Validasi
        Pusat. A failure is logged, never the school's (its change is committed: the next
        one does this again)."""
        try:
            if entities is None or not manajemen.FOLLOWS_HOME.isdisjoint(entities):
                await self.write(lambda c, _: manajemen.follow_home_school(c, npsn, now_ms()))
            if not self.options.central_validation:
                return
            changed = await self.write(
                lambda c, _: validasi_pusat.after_change(c, npsn, now_ms(), entities))
        except Exception as exc:  # noqa: BLE001 - logged, and the change stays committed
            log.error("after_change_failed", npsn=npsn, error=repr(exc))
            return
        if changed.raised or changed.cleared:
            log.info("validasi_pusat", npsn=npsn, raised=changed.raised,
                     cleared=changed.cleared)

    async def write(self, fn: Callable[[CentreStore, Registry], T]) -> T:
        """Run ``fn`` on the writer thread."""
        return await asyncio.wrap_future(self.writer.call(fn))

    async def read_registry(self, fn: Callable[[Registry], T]) -> T:
        def locked() -> T:
            # A thread lock, not an asyncio one: a cancelled caller must not free the reader
            # while its thread still uses it.
            with self._registry_lock:
                return fn(self._registry_reader.registry)
        return await asyncio.to_thread(locked)

    async def admit(self, conn: SyncConnection) -> str | None:
        """Admit a session unless one of the session caps is reached in every process on
        the store (the registry counts them, so the caps hold across processes); the
        cap reached, or None."""
        full = await self.live_sessions(lambda r: r.admit(
            conn.npsn, conn.session, conn.install, now_ms(), self.caps, LEASE_MS))
        if full is None:
            self.live.add(conn)
        return full

    async def leave(self, conn: SyncConnection) -> None:
        """Free the session's slot (once; a second call does nothing)."""
        if conn not in self.live:
            return
        self.live.discard(conn)
        with contextlib.suppress(StoreError):  # unrenewed, it lapses
            await self.live_sessions(lambda r: r.leave(conn.npsn, conn.session))

    async def live_sessions(self, fn: Callable[[Registry], T]) -> T:
        """Run ``fn`` on the registry connection that alone changes the live sessions:
        not the writer's, so admission never waits for a group commit."""
        def locked() -> T:
            with self._live_lock:
                return fn(self._live_registry.registry)
        return await asyncio.to_thread(locked)

    async def _renewing(self) -> None:
        """Renew this process's live sessions, well within their lease."""
        while True:
            await asyncio.sleep(LEASE_MS / 3000)
            await self._renew()

    async def _renew(self) -> None:
        sessions = [(c.npsn, c.session) for c in self.live]
        if sessions:
            with contextlib.suppress(StoreError):  # a lapse costs a slot, not a session
                await self.live_sessions(lambda r: r.renew(sessions, now_ms()))

    def busy_retry(self) -> float:
        base = self.options.busy_retry_s
        return round(base * random.uniform(0.75, 1.25), 1)

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await SyncConnection(self, ws).run()
        finally:
            self._connections.discard(task)


class SyncConnection:
    """One websocket of the centre, driving one ``SyncProtocol(Side.SERVER)``."""

    def __init__(self, server: SelarasServer, ws: ServerConnection) -> None:
        self.server, self.ws = server, ws
        self.proto = SyncProtocol(Side.SERVER, server.options.limits)
        self._send_lock = asyncio.Lock()
        self._window = asyncio.Event()
        self._pending: asyncio.Queue[tuple[int, int, Any] | None] = asyncio.Queue()
        self._over = asyncio.Event()
        self.session = uuid.uuid4().hex
        self.npsn = self.install = ""
        self.account = ("", "")  # (author, role) the session's events are stored with
        # The principal's consent from the Hello, verified; else why a push is refused (R20).
        self.consent: Consent | None = None
        self.no_consent: str = Detail.NO_CONSENT
        self.invalid: int | None = None  # invalid findings after the push, when checked
        self.centre_sent: list[tuple[str, int, int]] = []  # the centre's (origin, after, top)
        self.sources: str | None = None  # what came down from the centre, per source (JSON)
        self.gate: gate.Gate | None = None  # the push in its transaction, when gated
        self.peer = str((ws.remote_address or ("?",))[0])
        self._committing_now = False  # a batch of this session is with the writer
        self._opening = False
        self.outcome = "dropped"
        self.events_in = self.events_out = self.bytes_in = self.bytes_out = 0
        self.entities_in: set[str] = set()  # of the events pushed (Validasi Pusat's input)
        self.clock_bounded = 0  # events of this session's pushes with a clock far ahead
        self._reads: set[asyncio.Future[Any]] = set()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` (a read on this session's reader) off the loop. Shielded: a cancelled
        session still waits for it before its reader goes back to the pool."""
        fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._reads.add(fut)
        fut.add_done_callback(self._reads.discard)
        return await asyncio.shield(fut)

    # -- plumbing ------------------------------------------------------------------------

    async def flush(self) -> None:
        async with self._send_lock:
            for data in self.proto.data_to_send():
                self.bytes_out += len(data)
                await self.ws.send(data)

    async def refuse(self, code: Code, message: str | None = None,
                     retry_after_s: float | None = None) -> None:
        self.proto.refuse(code, message or TEXT[code], retry_after_s)
        await self.end_refused()

    async def end_refused(self) -> None:
        err = self.proto.error
        self.outcome = f"refused:{err.code}" if err else "refused"
        self.server.stats.refusals += 1
        if self.gate is None and not self._reads:
            # Nothing left to undo: the slot is free before the client hears, so it may
            # open its next session at once (else the session's end frees it).
            await self.server.leave(self)
        with contextlib.suppress(ConnectionClosed):
            await self.flush()
        self._over.set()

    async def run(self) -> None:
        stats, o = self.server.stats, self.server.options
        if stats.opening >= o.max_unauthenticated:
            await self.ws.close(1013, "try again later")  # before reading a byte of it
            return
        stats.opening += 1
        self._opening = True
        try:
            try:
                first = await asyncio.wait_for(self.ws.recv(), o.open_timeout_s)
            except (TimeoutError, ConnectionClosed):
                return
            await self._open(first)
        except ConnectionClosed:
            pass
        finally:
            self.answered()
            await self.ws.close(1001 if self.outcome == "drained" else 1000)

    def answered(self) -> None:
        """This connection's opening is dealt with: it no longer counts as unanswered."""
        if self._opening:
            self._opening = False
            self.server.stats.opening -= 1

    def authenticated(self) -> None:
        """From now on frames may be as large as the session's limits allow. A little
        over, so that a frame just over them gets a Refuse (R11) rather than only a
        close; far bigger ones are cut by the websocket layer, compressed or not."""
        self.answered()
        self.ws.protocol.max_message_size = self.proto.limits.max_frame_bytes + 4096

    async def _open(self, first: str | bytes) -> None:
        if isinstance(first, str):
            await self.refuse(Code.MALFORMED_MESSAGE, Detail.TEXT_FRAME)
            return
        self.bytes_in += len(first)
        self.proto.receive_data(first)
        facts = self.proto.facts()
        opened = next((f for f in facts if isinstance(f, Opened)), None)
        if opened is None:  # refused by the protocol: malformed, too large, unexpected...
            await self.end_refused()
            return
        match opened.message:
            case Hello() as hello:
                await self._sync(hello)
            case Register() as register:
                await self._register(register)
            case AdminRequest() as request:
                await self._admin(request)
            case AccountRequest() as request:
                await self._account(request)
            case Check() as check:
                await self._check(check)
            case TransferRequest() as request:
                await self._transfer(request)

    # -- Register --------------------------------------------------------------------------

    async def _register(self, reg: Register) -> None:
        server = self.server
        if reg.schema != SCHEMA_VERSION:
            await self.refuse(Code.VERSION_MISMATCH)
            return
        keys = (f"school:{reg.npsn}", f"peer:{self.peer}")
        if await self._too_many_failures(server.failed_registers, keys):
            return
        email = account_name(reg.user)
        school = await server.read_registry(lambda r: r.school(reg.npsn))
        account = await server.read_registry(lambda r: r.account(reg.npsn, email))
        count = await server.read_registry(lambda r: r.account_count(reg.npsn))
        checked = await server.credentials.run(check_register, reg, school, account, count)
        if checked is None:
            await self.refuse_busy(TEXT[Code.SERVER_BUSY])
            return
        failure, new_hash = checked
        if failure:
            for key in keys:
                server.failed_registers.failed(key, time.monotonic())
            await self.refuse(Code.BAD_CREDENTIAL, failure)
            return
        origin, token = str(uuid.uuid4()), credentials.new_token()
        token_hash = credentials.token_hash(server.secret, token)
        t = now_ms()

        def create(c: CentreStore, r: Registry) -> str:
            with c.transaction():
                if new_hash is not None:  # the school's first account, its pengguna row too
                    if r.account_count(reg.npsn):  # another first registration won the race
                        raise RegistryError("account race")
                    accounts.add(c, r, reg.npsn, email, accounts.OPERATOR, new_hash, t)
                account = r.account(reg.npsn, email)
                assert account is not None
                current = r.school(reg.npsn)
                assert current is not None
                r.add_install(origin, reg.npsn, email, token_hash, current["generation"], t)
                return str(account["role"])

        try:
            role = await server.write(create)
        except RegistryError:
            await self.refuse(Code.BAD_CREDENTIAL, Detail.UNKNOWN_ACCOUNT)
            return
        server.stats.registrations += 1
        self.proto.answer(Registered(origin, token, now_ms(), role, server.key.public, email))
        await self.flush()
        log.info("register", npsn=reg.npsn, install=origin, user=email, role=role)

    async def _too_many_failures(self, limit: RateLimit, keys: tuple[str, ...]) -> bool:
        """Refuse (server_busy, saying until when) if any of ``keys`` failed too often."""
        wait = max(limit.wait(key, time.monotonic()) for key in keys)
        if wait:
            await self.refuse_busy(Detail.TOO_MANY_ATTEMPTS, wait)
        return bool(wait)

    async def refuse_busy(self, reason: str, retry_after_s: float | None = None) -> None:
        self.server.stats.busy_refusals += 1
        wait = retry_after_s or self.server.busy_retry()
        await self.refuse(Code.SERVER_BUSY, busy(reason, wait), retry_after_s=round(wait, 1))

    # -- AccountRequest: the principal's account ---------------------------------------------

    async def _account(self, req: AccountRequest) -> None:
        """Add the principal's account from a school install, or log in to it (R20)."""
        server = self.server
        if req.schema != SCHEMA_VERSION:
            await self.refuse(Code.VERSION_MISMATCH)
            return
        keys = (f"school:{req.npsn}", f"peer:{self.peer}")
        if await self._too_many_failures(server.failed_registers, keys):
            return
        code = await self._authenticate(req)
        if code is not None:
            await self.refuse(code)
            return
        email = account_name(req.user)
        school, account = await server.read_registry(
            lambda r: (r.school(req.npsn), r.account(req.npsn, email)))
        checked = await server.credentials.run(check_account, req, school, account)
        if checked is None:
            await self.refuse_busy(TEXT[Code.SERVER_BUSY])
            return
        refusal, made = checked
        if refusal is not None:
            for key in keys:
                server.failed_registers.failed(key, time.monotonic())
            await self.refuse(refusal.code, refusal.message)
            return
        if made is not None:
            profile = {"nama": req.nama, "ptk_id": req.ptk_id, "nip": req.nip,
                       "pengguna_id": req.pengguna_id, **made}
            t = now_ms()
            try:
                await server.write(lambda c, r: accounts.add(
                    c, r, req.npsn, email, accounts.PRINCIPAL, profile.pop("password_hash"), t,
                    **profile))
            except accounts.AccountError as exc:
                await self.refuse(Code.BAD_CREDENTIAL, str(exc))
                return
            account = await server.read_registry(lambda r: r.account(req.npsn, email))
        assert account is not None
        self.proto.answer(AccountReply(
            email, account["role"], account["nama"] or "", account["ptk_id"] or "",
            account["nip"] or "", account["public_key"] or "", account["sealed_key"] or ""))
        await self.flush()
        log.info("account", npsn=req.npsn, action=req.action, user=email)

    # -- Check: the connection check ---------------------------------------------------------

    async def _check(self, check: Check) -> None:
        """Answer as this install's Hello would be answered up to admission (R17): the
        same refusals, a failed credential counted alike; but no session is admitted,
        opened or recorded, so the session caps do not apply."""
        server = self.server
        if check.schema != SCHEMA_VERSION:
            await self.refuse(Code.VERSION_MISMATCH)
            return
        peer = (f"peer:{self.peer}",)
        if await self._too_many_failures(server.failed_hellos, peer):
            return
        code = await self._authenticate(check)
        if code is not None:
            if code is Code.BAD_CREDENTIAL:
                server.failed_hellos.failed(peer[0], time.monotonic())
            await self.refuse(code)
            return
        if server.draining.is_set():
            await self.refuse_busy(BUSY["total"])
            return
        self.proto.answer(Checked(now_ms()))
        await self.flush()
        log.info("check", npsn=check.npsn, install=check.install)

    # -- TransferRequest: Tarik Data PD and PTK ----------------------------------------------

    async def _transfer(self, req: TransferRequest) -> None:
        """Write the person into the requesting school's log as centre events (R21), or
        refuse ``transfer_refused`` with the reason (still registered at the school they
        left, already at this school, unknown)."""
        server = self.server
        if req.schema != SCHEMA_VERSION:
            await self.refuse(Code.VERSION_MISMATCH)
            return
        peer = (f"peer:{self.peer}",)
        if await self._too_many_failures(server.failed_hellos, peer):
            return
        code = await self._authenticate(req)
        if code is not None:
            if code is Code.BAD_CREDENTIAL:
                server.failed_hellos.failed(peer[0], time.monotonic())
            await self.refuse(code)
            return
        t = now_ms()
        try:
            done = await server.write(lambda c, _: manajemen.transfer(
                c, req.npsn, req.kind, req.key, t, req.non_induk))
        except InputError as exc:
            await self.refuse(Code.TRANSFER_REFUSED, str(exc))
            return
        self.proto.answer(TransferReply(done.entity, done.row_id, done.nama, done.origin_npsn,
                                        done.events))
        await self.flush()
        await server.after_change(req.npsn)
        log.info("transfer", npsn=req.npsn, install=req.install, kind=req.kind,
                 row=done.row_id, origin=done.origin_npsn, events=done.events)

    # -- AdminRequest -----------------------------------------------------------------------

    async def _admin(self, req: AdminRequest) -> None:
        server = self.server
        peer = (f"peer:{self.peer}",)
        if await self._too_many_failures(server.failed_hellos, peer):
            return
        if not credentials.same_secret(req.token, server.admin_token):
            server.failed_hellos.failed(peer[0], time.monotonic())
            await self.refuse(Code.BAD_CREDENTIAL, Detail.ADMIN_SECRET)
            return
        self.authenticated()
        t = now_ms()
        try:
            if req.command == "stats":
                reply = table(["stat", "value"], sorted(server.all_stats().items()))
            elif req.command == "query":
                reader = await server.readers.get()
                # Back to the pool when the thread is done with it, even if we are cancelled.
                fut = asyncio.ensure_future(asyncio.to_thread(run_query, reader, req.args))
                fut.add_done_callback(lambda _: server.readers.put_nowait(reader))
                reply = await asyncio.shield(fut)
            else:
                reply = await server.write(
                    lambda c, r: run_admin(c, r, req.command, req.args, t))
        except AdminError as exc:
            reply = table(["error"], [[str(exc)]], str(exc))
        except Exception as exc:  # a bug: logged here, not sent
            log.error("admin_failed", command=req.command, error=repr(exc))
            text = "internal error at the centre; see its log"
            reply = table(["error"], [[text]], text)
        self.proto.answer(reply)
        await self.flush()
        log.info("admin", command=req.command, ok=reply.columns != ["error"])

    # -- Hello: a sync or pull session ------------------------------------------------------

    async def _sync(self, hello: Hello) -> None:
        server = self.server
        self.npsn, self.install = hello.npsn, hello.install
        if hello.schema != SCHEMA_VERSION:
            await self.refuse(Code.VERSION_MISMATCH)
            return
        peer = (f"peer:{self.peer}",)
        if await self._too_many_failures(server.failed_hellos, peer):
            return
        code = await self._authenticate(hello)  # before admission: a guess takes no slot
        if code is not None:
            if code is Code.BAD_CREDENTIAL:
                server.failed_hellos.failed(peer[0], time.monotonic())
            await self.refuse(code)
            return
        if hello.consent:
            await self._check_consent(hello)
        full = "total" if server.draining.is_set() else await server.admit(self)
        if full is not None:
            await self.refuse_busy(BUSY[full])
            return
        server.stats.active += 1
        started = now_ms()
        t0 = time.monotonic()
        try:
            await self._session(hello)
        finally:
            server.stats.active -= 1
            await self._record(hello, started, time.monotonic() - t0)

    async def _authenticate(self, hello: Hello | AccountRequest | Check | TransferRequest,
                            ) -> Code | None:
        server = self.server

        def look_up(r: Registry) -> tuple[dict[str, Any] | None, ...]:
            install = r.install(hello.install, hello.npsn)
            if install is None:
                return None, None, None
            return install, r.school(hello.npsn), r.account(hello.npsn, install["email"])

        install, school, account = await server.read_registry(look_up)  # one thread hop
        if install is None or not credentials.token_matches(
                server.secret, hello.token, install["token_hash"]):
            return Code.BAD_CREDENTIAL
        if install["revoked"]:
            return Code.INSTALL_REVOKED
        if school is None or school["generation"] != install["generation"]:
            return Code.CODE_RESET
        if account is not None and account["disabled"]:
            return Code.ACCOUNT_DISABLED
        self.account = (install["email"], account["role"] if account else "operator")
        return None

    async def _check_consent(self, hello: Hello) -> None:
        """Keep the Hello's consent if a principal of the school signed it for this install."""
        given = consent.decode(hello.consent)
        account = None if given is None else await self.server.read_registry(
            lambda r: r.account(hello.npsn, given.account))
        self.consent = principal_consent(given, hello.npsn, hello.install, account)
        if self.consent is None:
            self.no_consent = Detail.BAD_CONSENT

    async def _session(self, hello: Hello) -> None:
        server = self.server
        if not valid_vector(hello.vector):
            await self.refuse(Code.MALFORMED_MESSAGE, Detail.BAD_VECTOR)
            return
        reader = await server.readers.get()
        self.reader = reader.school(hello.npsn)
        try:
            vector = await self.read(self.reader.vector)
            server.stats.sessions += 1
            self.authenticated()
            self.proto.accept(Welcome(self.session, now_ms(), vector, self.proto.limits,
                                      server.key.public))
            await self.flush()
            tasks = [asyncio.create_task(self._receiving()),
                     asyncio.create_task(self._committing()),
                     asyncio.create_task(self._sending(hello))]
            drain = asyncio.create_task(server.draining.wait())
            over = asyncio.create_task(self._over.wait())
            await asyncio.wait([over, drain, *tasks[:1]], return_when=asyncio.FIRST_COMPLETED)
            if not self._over.is_set() and server.draining.is_set():
                # SIGTERM: read no more, commit and ack what came, then close (R12 resumes).
                tasks[0].cancel()
                tasks[2].cancel()
                await self._pending.put(None)
                with contextlib.suppress(TimeoutError, ConnectionClosed):
                    await asyncio.wait_for(tasks[1], server.options.drain_timeout_s)
                self.outcome = "drained"
            for t in [*tasks, drain, over]:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for r in results:
                if isinstance(r, Exception) and not isinstance(
                        r, ConnectionClosed | asyncio.CancelledError):
                    log.error("session_task_failed", error=repr(r))
        finally:
            if self.gate is not None:  # whatever did not pass the gate is rolled back
                await asyncio.wrap_future(self.gate.close())
            if self._reads:
                await asyncio.wait(set(self._reads))
            await server.leave(self)  # the client is gone: free its slot before the books
            if self.outcome == "done" and self.centre_sent:
                try:
                    self.sources = await self._sources()
                except Exception as exc:  # noqa: BLE001 - the history's detail only
                    log.warning("sources_failed", npsn=self.npsn, error=repr(exc))
            server.readers.put_nowait(reader)

    async def _receiving(self) -> None:
        """Frames in: feed the protocol, queue batches for the writer in order."""
        idle_s = self.server.options.idle_timeout_s
        try:
            while self.proto.state is not State.CLOSED:
                try:
                    data = await asyncio.wait_for(self.ws.recv(), idle_s)
                except TimeoutError:
                    if self._committing_now or not self._pending.empty():
                        continue  # the client waits for us, not we for it
                    await self.refuse(Code.IDLE_TIMEOUT)
                    return
                if isinstance(data, str):
                    await self.refuse(Code.MALFORMED_MESSAGE, Detail.TEXT_FRAME)
                    return
                self.bytes_in += len(data)
                self.proto.receive_data(data)
                for fact in self.proto.facts():
                    await self._on(fact)
                await self.flush()
        except ConnectionClosed:
            if not self._over.is_set() and self.outcome != "done":
                self.outcome = "dropped"
        finally:
            self._over.set()

    async def _on(self, fact: object) -> None:
        match fact:
            case BatchReceived(batch=n, count=count, payload=payload):
                # Decoding a large batch takes a while: off the event loop.
                covered = (None if not self.server.options.consent_gate else
                           self.consent.vector.get(self.install, 0) if self.consent else -1)
                batch = await asyncio.to_thread(admissible, payload, count, self.install,
                                                self.account, covered, self.no_consent)
                if isinstance(batch, Refusal):
                    await self.refuse(batch.code, batch.message)
                    return
                self.events_in += count
                self.entities_in |= {name for name, t in batch.tables.items() if t.num_rows}
                future = (self._gate().append(batch, now_ms()) if self.gated
                          else self.server.writer.append(self.npsn, batch))
                await self._pending.put((n, count, future))
            case BatchAcked():
                self._window.set()
            case DoneReceived():
                await self._pending.join()
                if self.gated and not await self._through_the_gate():
                    return
                if self.events_in:
                    # Before the Summary: its vector counts what the centre writes here then,
                    # which the client fetches in a follow-up session, as it does a clock bound.
                    await self.server.after_change(self.npsn, self.entities_in)
                check = stage("check")(lambda: (self.reader.vector(), self.reader.checksums()))
                vector, checksums = await self.read(check)
                self.proto.send_summary(vector, checksums)
                self.outcome = "done"  # the client may still compare (R19), then closes
                await self.flush()
            case CompareReceived(compare=q):
                try:
                    answer = await self.read(compare.answer, self.reader, q)
                except RemoteError as exc:
                    await self.refuse(exc.code, exc.message)
                    return
                self.proto.send_compared(answer)
                await self.flush()
            case Refused(refuse=r, by_peer=by_peer):
                if not by_peer:
                    await self.end_refused()
                else:
                    self.outcome = f"refused_by_client:{r.code}"
                    self._over.set()

    @property
    def gated(self) -> bool:
        """A push of this session goes through the gate (R20, server/gate.py)."""
        return self.server.options.consent_gate and self.consent is not None

    def _gate(self) -> gate.Gate:
        if self.gate is None:
            self.gate = gate.Gate(self.server.centre, self.npsn)
        return self.gate

    async def _through_the_gate(self) -> bool:
        """At Done: check the school with the push and commit it; refuse
        ``invalid_data_pending`` (nothing kept) if it would hold invalid findings."""
        if self.gate is None:
            return True
        try:
            per_tab = await asyncio.wrap_future(self.gate.finish())
        except StoreError as exc:
            log.error("gate_failed", npsn=self.npsn, error=repr(exc))
            await self.refuse(*refusal_of(exc))
            return False
        self.invalid = sum(per_tab.values())
        if per_tab:
            await self.refuse(Code.INVALID_DATA_PENDING, gate.refusal_text(per_tab))
            return False
        return True

    async def _committing(self) -> None:
        """Await each batch's commit, in order, and ack it with the durable vector (R9)."""
        while True:
            item = await self._pending.get()
            try:
                if item is None:
                    return
                n, _, future = item
                try:
                    self._committing_now = True
                    result, vector = await asyncio.wrap_future(future)
                except Exception as exc:
                    log.error("append_failed", npsn=self.npsn, error=repr(exc))
                    await self.refuse(Code.INTERNAL_ERROR)
                    return
                if not isinstance(result, AppendReport):
                    if not isinstance(result, EventCollision | MalformedBatch | BadSignature):
                        log.error("append_failed", npsn=self.npsn, error=repr(result))
                    await self.refuse(*refusal_of(result))
                    return
                self.clock_bounded += result.clock_bounded
                if self.proto.state is State.CLOSED:
                    return
                self.proto.ack(n, vector)
                await self.flush()
            finally:
                self._committing_now = False
                self._pending.task_done()

    async def _sending(self, hello: Hello) -> None:
        """The school's events the client lacks, batch by batch within the window."""
        try:
            await self._send_lacking(hello)
        except (ConnectionClosed, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug or a store failure: the school hears only the code
            log.error("sending_failed", npsn=self.npsn, error=repr(exc))
            await self.refuse(Code.INTERNAL_ERROR)

    async def _send_lacking(self, hello: Hello) -> None:
        """Per origin the client lacks, one seq range read and cut at a time (``Outbox``),
        so a pull of a million events holds about one window in memory (R5, R7, R8)."""
        held = await self.read(self.reader.vector)
        central = central_origins(hello.npsn)
        self.centre_sent = [(o, hello.vector.get(o, 0), top) for o, top in held.items()
                            if o in central and top > hello.vector.get(o, 0)]
        for origin, top in sorted(held.items()):
            outbox = Outbox(self.reader, origin, hello.vector.get(origin, 0), top,
                            self.proto.limits)
            while outbox:
                while not self.proto.can_send_batch:
                    if self.proto.state is not State.STREAMING:
                        return
                    self._window.clear()
                    await self._window.wait()
                payload, count = await self.read(outbox.next)
                if not count:
                    continue
                self.proto.send_batch(payload, count)
                self.events_out += count
                await self.flush()
        if self.proto.state is State.STREAMING:
            self.proto.finish_sending()
            await self.flush()

    async def _sources(self) -> str | None:
        """What the session brought down from the centre, per source (JSON), for the
        school's history: Manajemen Dapodik, VervalPD, Validasi Pusat, Referensi, ..."""
        counts: dict[str, int] = {}
        for origin, after, top in self.centre_sent:
            by = await self.read(self.reader.author_counts, origin, after, top)
            for author, n in by.items():
                source = REFERENSI if origin == REFERENSI_ORIGIN else author
                counts[source] = counts.get(source, 0) + n
        return json.dumps(dict(sorted(counts.items()))) if counts else None

    async def _record(self, hello: Hello, started: int, seconds: float) -> None:
        record = {"session": self.session, "npsn": hello.npsn, "install": hello.install,
                  "mode": hello.mode, "started_ms": started, "ended_ms": now_ms(),
                  "outcome": self.outcome, "events_in": self.events_in,
                  "events_out": self.events_out, "bytes_in": self.bytes_in,
                  "bytes_out": self.bytes_out, "account": self.account[0],
                  "principal": self.consent.account if self.consent else None,
                  "consent": self.consent.digest if self.consent else None,
                  "invalid": self.invalid,
                  "sources": self.sources}
        await self.server.leave(self)
        with contextlib.suppress(Exception):
            await self.server.write(lambda _, r: r.record_session(record))
        log.info("session", **{k: v for k, v in record.items() if not k.endswith("_ms")},
                 clock_bounded=self.clock_bounded, duration_s=round(seconds, 3))


# What a school reads when a session cap is reached.
BUSY = {"total": TEXT[Code.SERVER_BUSY], "school": Detail.BUSY_SCHOOL,
        "install": Detail.BUSY_INSTALL}


def check_register(reg: Register, school: dict[str, Any] | None,
                   account: dict[str, Any] | None, accounts: int,
                   ) -> tuple[str | None, str | None]:
    """The slow part of a Register, on the credential pool: why it fails (or None), and
    the password hash of the school's first account, if this makes it."""
    if school is None or not passwords.slow_verify(passwords.normal_kode(reg.kode),
                                                     school["kode_hash"]):
        return Detail.BAD_KODE, None
    if account is None:
        if accounts or not account_name(reg.user) or not reg.password:
            return Detail.UNKNOWN_ACCOUNT, None
        return None, passwords.slow_hash(reg.password)
    if account["disabled"]:
        return TEXT[Code.ACCOUNT_DISABLED], None
    if not passwords.slow_verify(reg.password, account["password_hash"]):
        return Detail.BAD_PASSWORD, None
    return None, None


def check_account(req: AccountRequest, school: dict[str, Any] | None,
                  account: dict[str, Any] | None) -> tuple[Refusal | None, dict[str, str] | None]:
    """The slow part of an AccountRequest, on the credential pool: why it is refused (or
    None), and for a new principal's account its password hash and signing key."""
    if school is None or not passwords.slow_verify(passwords.normal_kode(req.kode),
                                                   school["kode_hash"]):
        return Refusal(Code.BAD_CREDENTIAL, Detail.BAD_KODE), None
    if req.action == "add_principal":
        if account is not None:
            return Refusal(Code.BAD_CREDENTIAL, Detail.ACCOUNT_EXISTS), None
        if not account_name(req.user) or not req.password:
            return Refusal(Code.BAD_CREDENTIAL, Detail.UNKNOWN_ACCOUNT), None
        return None, {"password_hash": passwords.slow_hash(req.password),
                      **accounts.sealed_profile(accounts.PRINCIPAL, req.password)}
    if account is None:
        return Refusal(Code.BAD_CREDENTIAL, Detail.UNKNOWN_ACCOUNT), None
    if not passwords.slow_verify(req.password, account["password_hash"]):
        return Refusal(Code.BAD_CREDENTIAL, Detail.BAD_PASSWORD), None
    if account["disabled"]:
        return Refusal(Code.ACCOUNT_DISABLED, TEXT[Code.ACCOUNT_DISABLED]), None
    if account["role"] != accounts.PRINCIPAL or not account["sealed_key"]:
        return Refusal(Code.NOT_PRINCIPAL, Detail.NOT_PRINCIPAL_ACCOUNT), None
    return None, None


def valid_vector(vector: dict[str, int]) -> bool:
    """Every key a UUID, every seq a non-negative integer."""
    try:
        return all(isinstance(seq, int) and seq >= 0 and uuid.UUID(origin)
                   for origin, seq in vector.items())
    except (ValueError, TypeError, AttributeError):
        return False
