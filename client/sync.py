"""The school side of sync: ``SyncProtocol(Side.CLIENT)`` over a websocket.

``run_sync`` is what ``selaras sync`` / ``selaras pull`` / ``selaras init``
call. It opens sessions (``SyncConnection``, one per websocket) until one
ends with a ``Summary`` (docs/protocol.md R13), retrying after any
disconnect or centre failure (``internal_error``) with exponential backoff
and full jitter, and after ``server_busy`` once ``retry_after_s`` (plus
jitter) has passed, until ``timeout``. The backoff restarts only after
acknowledged progress (a batch of ours acked, or one of the centre's
committed here), never for bytes merely sent (docs/security.md, Back-off).
Each session resumes from the durable vectors (R12): what the centre
acknowledged is never sent again.

All DuckDB work runs off the event loop (``asyncio.to_thread``), one call at
a time on the store (``_StoreWorker``).

A copied or restored data folder writes under an origin that has moved on
elsewhere. To let the centre see that, the push starts at ``acked_seq`` (in
the store's meta: the top of this install's events the centre acknowledged)
whenever the centre holds more of our origin than that: events it holds are
then compared, and a different one is refused with ``event_collision``
(docs/protocol.md R7, R12). The refusal names the command that mends it,
``selaras init --reregister`` (client/reregister.py).

Errors (each a ``ClientError``: one line for the operator)::

    SyncError          the sync did not complete
    ├── SyncRefused    the centre refused the session (final; ``code``)
    │   ├── SyncUntrusted  we refused the centre's data: a bad signature or a new key (R18)
    │   └── RegistrationRefused   ... refused to register (wrong kode, password)
    ├── SyncDiverged   equal vectors but different checksums (a bug: loud)
    └── SyncTimedOut   --timeout passed before a session completed
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, NoReturn, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from selaras.engine import compare, stages
from selaras.engine.clocks import VersionVector
from selaras.engine.events import REFERENSI_ORIGIN, Batch, MalformedBatch
from selaras.engine.labels import entity_label
from selaras.engine.outbox import Outbox
from selaras.engine.protocol import (
    MAX_COMPARE_ROWS,
    PROTOCOL_VERSION,
    AccountRequest,
    Answer,
    Answered,
    BatchAcked,
    BatchReceived,
    Code,
    Compare,
    Compared,
    ComparedReceived,
    Hello,
    Limits,
    PeerSent,
    Refused,
    Register,
    Registered,
    Side,
    State,
    SummaryReceived,
    SyncProtocol,
    TransferRequest,
    Welcome,
    Welcomed,
)
from selaras.engine.refusals import text_of
from selaras.engine.replica import Identity
from selaras.engine.schema import BY_NAME, SCHEMA_VERSION
from selaras.engine.store import CENTRE, REFERENSI, BadSignature, InstallStore

from .changes import centre_vector_meta
from .install import ACKED_SEQ, ClientError

Mode = Literal["pull", "sync"]

CLOCK_WARN_MS = 5 * 60_000  # tell the school when its PC clock is off by more than this
PING_INTERVAL_S = 10.0
PING_TIMEOUT_S = 20.0
OPEN_TIMEOUT_S = 10.0
MAX_QUEUE = 4  # frames buffered by the websocket layer: about one window
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0

RETRYABLE = {Code.SERVER_BUSY, Code.INTERNAL_ERROR, Code.IDLE_TIMEOUT}
# Refusals that re-registering the data folder mends; their text ends with the command.
REREGISTER = {Code.EVENT_COLLISION, Code.CODE_RESET}
GATE = {Code.NOT_PRINCIPAL, Code.INVALID_DATA_PENDING}  # the principal's gate (R20)
# Why a session ended early, as the operator reads it in a retry (``Retrying``).
UNREACHABLE = "server pusat tidak dapat dihubungi"
CONNECTION_LOST = "koneksi ke server pusat terputus"
# Why the client waits after the centre failed (disk full, say): the operator reads it.
CENTRE_FAILED = ("server pusat gagal memproses data ({code}), bukan kesalahan sekolah; "
                 "dicoba lagi dengan jeda yang makin lama")


class SyncError(ClientError):
    pass


class SyncRefused(SyncError):
    def __init__(self, code: str, message: str, command: str = "") -> None:
        super().__init__(code, message)
        self.code, self.message = code, message
        self.command = command  # what mends it (``reregister_command``), if anything

    def __str__(self) -> str:
        # The gate's refusals say which step is missing: the centre's words, not the code's.
        text = self.message if self.code in GATE and self.message else text_of(
            self.code, self.message)
        if self.code in REREGISTER:
            text += f" dengan '{self.command or reregister_command('URL', 'NPSN', 'EMAIL')}'"
            text += "; data yang belum terkirim tidak hilang"
        return f"ditolak server pusat ({self.code}): {text}"


class SyncUntrusted(SyncRefused):
    """This install refused what the centre sent (R18): nothing of that batch was stored."""

    def __init__(self, reason: str) -> None:
        super().__init__(Code.BAD_SIGNATURE, reason)
        self.reason = reason

    def __str__(self) -> str:
        return (f"data dari server pusat ditolak: {self.reason}; tidak ada yang diubah, "
                "laporkan ke dinas")


class RegistrationRefused(SyncRefused):
    def __str__(self) -> str:
        # The centre's own message says which part was wrong (R15: it is for the school).
        return f"pendaftaran ditolak server pusat ({self.code}): {self.message}"


def reregister_command(url: str, npsn: str, user: str) -> str:
    """The command that re-registers this data folder (client/reregister.py)."""
    return (f"selaras init --reregister --server {url} --npsn {npsn} "
            f"--kode <kode registrasi> --user {user} --password <kata sandi>")


class SyncDiverged(SyncError):
    def __init__(self, entities: list[str], rows: dict[str, list[str]]) -> None:
        super().__init__(entities, rows)
        self.entities, self.rows = entities, rows  # rows: those found to differ (R19)

    def __str__(self) -> str:
        found = "; ".join(f"{e}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
                          for e, ids in self.rows.items() if ids)
        return ("DIVERGED: data berbeda dengan server pusat walau perubahannya sudah sama, "
                f"di {', '.join(entity_label(e) for e in self.entities)}"
                f"{f' (baris {found})' if found else ''}; laporkan ke dinas")


class SyncTimedOut(SyncError):
    def __init__(self, timeout_s: float, last: str) -> None:
        super().__init__(timeout_s, last)
        self.timeout_s, self.last = timeout_s, last

    def __str__(self) -> str:
        return (f"sinkronisasi belum selesai setelah {self.timeout_s:g} detik "
                f"(terakhir: {self.last}); coba lagi nanti, data yang sudah terkirim aman")


A = TypeVar("A")  # a fact the session waits for


class _Retry(Exception):
    """This session ended early; try again (after ``delay_s`` if given).

    ``code``: the centre's retryable refusal, if it refused.
    """

    def __init__(self, reason: str, delay_s: float | None = None, busy: bool = False,
                 code: str = "") -> None:
        super().__init__(reason)
        self.reason, self.delay_s, self.busy, self.code = reason, delay_s, busy, code


def app_version() -> str:
    try:
        return version("selaras")
    except PackageNotFoundError:
        return "0"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- results ------------------------------------------------------------------------------


@dataclass
class Counters:
    events_up: int = 0
    events_down: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class Stage(enum.Enum):
    """Where a session stands, for the progress line (client/progress.py)."""

    CONNECT = "connect"  # opening the connection, waiting for the centre's Welcome
    TRANSFER = "transfer"  # sending ours and receiving the centre's
    CHECK = "check"  # comparing with the centre (Done, Summary, repairs)


@dataclass
class ProgressFacts(Counters):
    """What ``progress`` hears after each frame: the whole sync's counters (as before),
    and where the current session (attempt number ``attempt``) stands.

    ``to_send``: per table, this install's changes the session will send (known before
    the first is sent; empty for a pull or nothing to send); ``sent``: per table, those
    sent so far. ``to_receive``: how many the centre lacks here, known from its Welcome
    (None before); ``received``: per table, those received so far (the tables of what
    comes are not known in advance).
    """

    stage: Stage = Stage.CONNECT
    attempt: int = 1
    to_send: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    to_receive: int | None = None
    received: dict[str, int] = field(default_factory=dict)


@dataclass
class SyncReport:
    """What a whole sync did, over every attempt.

    Added since the first version (each with a default): ``acknowledged``, per table
    this install's changes the centre acknowledged during the sync; ``from_centre``,
    the changes received that the centre wrote (its own, Referensi), and
    ``from_centre_sources`` the same per source (Manajemen Dapodik, VervalPD, ...,
    Referensi); ``from_pcs``, per
    other PC of the school (its origin), per author, the changes received;
    ``conflicts_new`` / ``conflicts_resolved``, per table the conflicted fields (row,
    field) the sync added / settled, never negative; ``refusals``, the centre's
    refusals met on the way that a retry got past (``code``, ``message``).
    """

    mode: str
    ok: bool = False
    attempts: int = 0
    busy_retries: int = 0
    totals: Counters = field(default_factory=Counters)
    clock_offset_ms: int | None = None
    clock_warning: str | None = None
    sent: dict[str, dict[str, int]] = field(default_factory=dict)
    received: dict[str, dict[str, int]] = field(default_factory=dict)
    vectors_equal: bool | None = None
    checksums_equal: bool | None = None
    repaired: dict[str, list[str]] = field(default_factory=dict)  # rows recomputed (R19)
    note: str = ""
    sessions: list[str] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)
    from_centre: int = 0
    from_centre_sources: dict[str, int] = field(default_factory=dict)
    from_pcs: dict[str, dict[str, int]] = field(default_factory=dict)
    conflicts_new: dict[str, int] = field(default_factory=dict)
    conflicts_resolved: dict[str, int] = field(default_factory=dict)
    refusals: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "ok": self.ok, "attempts": self.attempts,
            "busy_retries": self.busy_retries, **vars(self.totals),
            "clock_offset_ms": self.clock_offset_ms, "clock_warning": self.clock_warning,
            "sent": self.sent, "received": self.received,
            "vectors_equal": self.vectors_equal, "checksums_equal": self.checksums_equal,
            "repaired": self.repaired, "note": self.note, "sessions": self.sessions,
            # The centre does not report neutralised events in Summary (yet).
            "neutralised": None,
            "acknowledged": self.acknowledged,
            "received_from": {
                "centre": self.from_centre,
                "centre_sources": dict(sorted(self.from_centre_sources.items())),
                "pcs": {o: {"events": sum(by.values()), "authors": sorted(a for a in by if a)}
                        for o, by in sorted(self.from_pcs.items())}},
            "conflicts_new": self.conflicts_new,
            "conflicts_resolved": self.conflicts_resolved,
            "refusals": self.refusals,
        }


# Hears a ``ProgressFacts`` (a ``Counters``: a callback taking Counters still fits).
Progress = Callable[[ProgressFacts], None]


@dataclass(frozen=True)
class Retrying:
    """The sync waits ``delay_s``, then makes attempt number ``attempt``; ``reason``:
    why the last one ended (for the operator, in Indonesian)."""

    attempt: int
    delay_s: float
    reason: str


OnRetry = Callable[[Retrying], None]


# -- the store, off the event loop -----------------------------------------------------------


class _StoreWorker:
    """Runs store calls in a thread, one at a time (a DuckDB connection is not shared).

    The lock is taken in the thread: a call whose session was cancelled keeps
    running there, and the next call must wait for it.
    """

    def __init__(self, store: InstallStore) -> None:
        self.store = store
        self._lock = threading.Lock()

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(self._locked, fn, *args)

    def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            return fn(*args)


Field = tuple[str, str, str]  # (entity, row_id, field)


def conflicted_fields(store: InstallStore) -> set[Field]:
    """The fields in conflict: one per (row, field), however many values compete."""
    return {(s.entity, s.row_id, s.field) for s in store.conflicts()}


def conflict_counts(store: InstallStore) -> dict[str, int]:
    """Per entity, its conflicted fields."""
    return _per_entity(conflicted_fields(store))


def _per_entity(fields: set[Field]) -> dict[str, int]:
    out: dict[str, int] = {}
    for entity, _, _ in fields:
        out[entity] = out.get(entity, 0) + 1
    return out


# -- one session ----------------------------------------------------------------------------


@dataclass
class SessionResult:
    session: str
    counters: Counters
    clock_offset_ms: int | None
    sent: dict[str, int]
    received_events: dict[str, int]
    received_deleted: dict[str, int]
    vectors_equal: bool
    checksums_equal: bool | None
    centre_ahead: bool  # the centre holds events we lack (made while we pushed, say)
    repaired: dict[str, list[str]]  # rows that differed from the centre's, recomputed


class SyncConnection:
    """One websocket session of one install: Hello ... Summary (or an error).

    ``run()`` returns a ``SessionResult``, or raises ``_Retry`` (disconnect,
    busy), ``SyncRefused`` (final) or ``SyncDiverged``.
    """

    def __init__(self, worker: _StoreWorker, identity: Identity, meta: dict[str, str],
                 url: str, mode: Mode, *, compress: bool, counters: Counters,
                 progress: Progress | None) -> None:
        self.worker = worker
        self.identity = identity
        self.meta = meta
        self.url = url
        self.mode = mode
        self.compress = compress
        self.proto = SyncProtocol(Side.CLIENT)
        self.counters = counters  # this session's, shared with the caller for the record
        self.progress = progress
        self.session = ""
        self.clock_offset_ms: int | None = None
        self.their_vector: VersionVector = {}
        self.sent: dict[str, int] = {}
        self.received_events: dict[str, int] = {}
        self.received_deleted: dict[str, int] = {}
        # Per origin, per author: the changes received (who wrote what came down).
        self.received_from: dict[str, dict[str, int]] = {}
        # Where the session stands, for ``progress`` (``ProgressFacts``).
        self.stage = Stage.CONNECT
        self.our_vector: VersionVector = {}
        self.to_send: dict[str, int] = {}
        self.to_receive: int | None = None
        self.progressed = False  # the centre acked a batch of ours, or we committed one of its
        self.repaired: dict[str, list[str]] = {}
        self._send_lock = asyncio.Lock()
        self._acked = asyncio.Event()
        self._tops: dict[int, int] = {}  # our batch number -> the top seq it carried
        self._ws: ClientConnection | None = None
        self._started = 0.0

    async def run(self) -> SessionResult:
        self._started = time.perf_counter()
        try:
            async with connect(self.url, compression="deflate" if self.compress else None,
                               max_size=Limits().max_frame_bytes, max_queue=MAX_QUEUE,
                               ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S,
                               open_timeout=OPEN_TIMEOUT_S, proxy=None) as ws:
                self._ws = ws
                return await self._session()
        except (ConnectionClosed, OSError, TimeoutError, InvalidHandshake) as exc:
            raise _Retry(UNREACHABLE if self._ws is None else CONNECTION_LOST) from exc

    async def _flush(self) -> None:
        assert self._ws is not None
        async with self._send_lock:
            for frame in self.proto.data_to_send():
                await self._ws.send(frame)
                self.counters.bytes_up += len(frame)

    async def _recv(self) -> None:
        """Read one frame, feed it in, handle what it means."""
        assert self._ws is not None
        frame = await self._ws.recv(decode=False)
        self.counters.bytes_down += len(frame)
        self.proto.receive_data(frame)
        for fact in self.proto.facts():
            await self._handle(fact)
        await self._flush()
        self._report()

    async def _acked_upto(self, top: int) -> None:
        """Everything of ours up to ``top`` is held by the centre as its data."""
        store = self.worker.store

        def advance() -> None:
            if top > int(store.meta().get(ACKED_SEQ, 0)):
                store.set_meta(**{ACKED_SEQ: str(top)})

        await self.worker(advance)

    async def _handle(self, fact: Any) -> None:
        match fact:
            case Welcomed(welcome):
                self._welcomed(welcome)
                await self._check_centre_key(welcome.centre_key)
            case BatchReceived(batch, count, payload):
                await self._store_batch(batch, count, payload)
            case BatchAcked(batch, vector):
                # A gated push is held aside until the session's end (R20): the centre's
                # vector says what of ours it holds as its data.
                await self._acked_upto(min(self._tops.pop(batch, 0),
                                           vector.get(self.identity.origin, 0)))
                self.progressed = True
                self._acked.set()
            case PeerSent():
                pass
            case Refused(refuse, by_peer):
                if refuse.code in RETRYABLE:
                    busy = refuse.code == Code.SERVER_BUSY
                    reason = (CENTRE_FAILED.format(code=refuse.code)
                              if refuse.code == Code.INTERNAL_ERROR else refuse.message)
                    raise _Retry(reason, refuse.retry_after_s, busy=busy, code=refuse.code)
                if not by_peer:
                    await self._flush()  # our Refuse, then close
                raise SyncRefused(refuse.code, refuse.message)
            case SummaryReceived():
                pass

    def _welcomed(self, welcome: Welcome) -> None:
        self.session = welcome.session
        received = now_ms()
        # R14: the server's clock at the midpoint of our send and receive.
        self.clock_offset_ms = welcome.server_ms - (self._hello_ms + received) // 2
        self.their_vector = welcome.vector
        # What the centre will send: all it holds that we lack.
        self.to_receive = sum(max(0, seq - self.our_vector.get(o, 0))
                              for o, seq in welcome.vector.items())
        stages.add("connect", time.perf_counter() - self._started)

    async def _check_centre_key(self, key: str) -> None:
        """Refuse a centre whose signing key is not the one this install registered with."""
        known = self.meta.get("centre_key", "")
        if key == known:
            return
        if known:
            await self._refuse_untrusted("kunci tanda tangan server pusat berbeda dengan saat "
                                         "instalasi ini didaftarkan")
        # Registered without a key (before R18): keep this one, as registering would have.
        await _set_meta(self.worker, centre_key=key)
        self.meta["centre_key"] = key

    async def _refuse_untrusted(self, reason: str) -> NoReturn:
        self.proto.refuse(Code.BAD_SIGNATURE, "data pusat tidak dapat dipercaya")
        await self._flush()
        raise SyncUntrusted(reason)

    async def _store_batch(self, batch: int, count: int, payload: bytes) -> None:
        try:
            with stages.stage("decode"):
                b = Batch.from_bytes(payload)
        except MalformedBatch:
            self.proto.refuse(Code.MALFORMED_MESSAGE, "batch tidak dapat dibaca")
            await self._flush()
            raise SyncRefused(Code.MALFORMED_MESSAGE, "the centre sent a malformed batch") \
                from None
        for name, t in b.tables.items():
            self.received_events[name] = self.received_events.get(name, 0) + t.num_rows
            _count_authors(t, self.received_from)
            e = BY_NAME[name]
            if "soft_delete" in e.by_name:
                bit = e.bit("soft_delete")
                dels = pc.sum(pc.and_(
                    pc.not_equal(pc.bit_wise_and(t["mask"], pa.scalar(bit, pa.uint64())),
                                 pa.scalar(0, pa.uint64())),
                    pc.equal(t["soft_delete"], 1))).as_py() or 0
                if dels:
                    self.received_deleted[name] = self.received_deleted.get(name, 0) + dels
        store = self.worker.store
        append = stages.stage("append")(store.append)
        read_vector = stages.stage("vector")(store.vector)  # the ack carries it
        try:
            vector = await self.worker(lambda: (append(b), read_vector())[1])
        except BadSignature as exc:
            await self._refuse_untrusted(f"event pusat ({exc.origin}, {exc.seq}) tanpa tanda "
                                         "tangan pusat yang sah")
        self.counters.events_down += count
        self.progressed = True
        self.proto.ack(batch, vector)  # R9: only after the commit

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(ProgressFacts(
                **vars(self.counters), stage=self.stage, to_send=dict(self.to_send),
                sent=dict(self.sent), to_receive=self.to_receive,
                received=dict(self.received_events)))

    async def _session(self) -> SessionResult:
        store = self.worker.store
        vector: VersionVector = await self.worker(store.vector)
        self.our_vector = vector
        self._hello_ms = now_ms()
        self.proto.send_hello(Hello(
            protocol=PROTOCOL_VERSION, app=app_version(), schema=SCHEMA_VERSION,
            npsn=self.identity.npsn, install=self.identity.origin,
            token=self.meta.get("token", ""), mode=self.mode, vector=vector,
            sent_ms=self._hello_ms,
            consent=bytes.fromhex(self.meta.get("consent", "")) if self.mode == "sync" else b""))
        await self._flush()
        while self.proto.state is State.HELLO_SENT:
            await self._recv()
        if self.mode == "sync":
            me = self.identity.origin
            # R7: our events above the centre's seq for us, up to what we hold now; and
            # again those it holds but never acknowledged to us, so that it compares them
            # (a copied folder's events collide; a resumed push's are duplicates, R12).
            acked = int((await self.worker(store.meta)).get(ACKED_SEQ, 0))
            outbox = Outbox(store, me, min(acked, self.their_vector.get(me, 0)),
                            vector.get(me, 0), self.proto.limits)
            if outbox:  # how many it will send, per table, before the first is sent
                self.to_send = await self.worker(store.event_counts, me, outbox.pos)
        else:
            outbox = None
        self.stage = Stage.TRANSFER
        self._report()
        sender = asyncio.create_task(self._send_all(outbox))
        try:
            while not self.proto.ready_for_done:
                if sender.done():
                    sender.result()  # its error, if any
                recv = asyncio.ensure_future(self._recv())
                done, _ = await asyncio.wait({recv, sender},
                                             return_when=asyncio.FIRST_COMPLETED)
                if recv not in done:
                    sender.result()
                    await recv
                else:
                    recv.result()
            await sender
        finally:
            if not sender.done():
                sender.cancel()
        self.stage = Stage.CHECK
        self._report()
        check = stages.stage("check")(lambda: (store.vector(), store.checksums()))
        ours = await self.worker(check)
        self.proto.send_done(*ours)
        await self._flush()
        summary = await self._answer(SummaryReceived)
        if _nonzero(ours[0]) == _nonzero(summary.summary.vector):
            differ = compare.differing(ours[1], summary.summary.checksums)
            if differ:
                ours = (ours[0], await self._repair(differ, summary.summary.checksums))
        # What the centre held as the session ended: other PCs' changes it lacked stay
        # pending (client/changes.py).
        await _set_meta(self.worker, **centre_vector_meta(summary.summary.vector, now_ms()))
        await self._acked_upto(summary.summary.vector.get(self.identity.origin, 0))
        self.proto.close()
        return self._result(ours, summary.summary.vector, summary.summary.checksums)

    async def _answer(self, kind: type[A]) -> A:
        """Frames in until the fact ``kind`` (the Summary, or a Compared) comes."""
        while self.proto.state is not State.CLOSED:
            frame = await self._ws.recv(decode=False)  # type: ignore[union-attr]
            self.counters.bytes_down += len(frame)
            self.proto.receive_data(frame)
            for fact in self.proto.facts():
                if isinstance(fact, kind):
                    return fact
                await self._handle(fact)
        raise _Retry(CONNECTION_LOST)

    async def _ask(self, q: Compare) -> Compared:
        self.proto.send_compare(q)
        await self._flush()
        return (await self._answer(ComparedReceived)).compared

    async def _repair(self, differ: list[str], theirs: dict[str, str]) -> dict[str, str]:
        """Equal vectors, different checksums of ``differ``: find the rows that differ
        (R19), re-pull their events and recompute them from our log; our checksums
        after. SyncDiverged, naming the rows, if they still differ."""
        store = self.worker.store
        rows: dict[str, list[str]] = {}
        for entity in differ:
            ours = await self.worker(store.bucket_digests, entity)
            buckets = compare.differing(ours, (await self._ask(Compare(entity))).buckets)
            rows[entity] = []
            for chunk in compare.in_chunks(buckets):
                mine = await self.worker(store.row_hashes, entity, chunk)
                rows[entity] += compare.differing(
                    mine, (await self._ask(Compare(entity, buckets=chunk))).rows)
            for ids in compare.in_chunks(rows[entity], MAX_COMPARE_ROWS):
                b = Batch.from_bytes((await self._ask(Compare(entity, rows=ids))).payload)
                await self.worker(store.append, b)
            await self.worker(store.rematerialise, entity, rows[entity])
        sums: dict[str, str] = await self.worker(store.checksums)
        still = compare.differing(sums, theirs)
        if still:
            raise SyncDiverged(still, {e: rows.get(e, []) for e in still})
        self.repaired = rows
        return sums

    def _result(self, ours: tuple[VersionVector, dict[str, str]], their_vector: VersionVector,
                their_sums: dict[str, str]) -> SessionResult:
        our_vector, our_sums = ours
        equal = _nonzero(our_vector) == _nonzero(their_vector)
        ahead = any(seq > our_vector.get(o, 0) for o, seq in their_vector.items())
        sums_equal = None
        if equal:
            differ = compare.differing(our_sums, their_sums)
            if differ:
                raise SyncDiverged(differ, {})
            sums_equal = True
        return SessionResult(self.session, self.counters, self.clock_offset_ms, self.sent,
                             self.received_events, self.received_deleted, equal, sums_equal,
                             ahead, self.repaired)

    async def _send_all(self, outbox: Outbox | None) -> None:
        while outbox:
            while not self.proto.can_send_batch:
                self._acked.clear()
                await self._acked.wait()
            payload, count = await self.worker(outbox.next)  # one batch read at a time
            self._tops[self.proto.send_batch(payload, count)] = outbox.pos
            self.counters.events_up += count
            self.sent = dict(outbox.sent)  # read here: next() is done with it
            await self._flush()
            self._report()
        if outbox is not None:
            self.sent = dict(outbox.sent)
        self.proto.finish_sending()
        await self._flush()


def _nonzero(v: VersionVector) -> VersionVector:
    return {o: s for o, s in v.items() if s}


def _count_authors(t: pa.Table, into: dict[str, dict[str, int]]) -> None:
    """Add one table of a received batch to ``into``: per origin, per author, its events."""
    origin = t["origin"]
    if isinstance(origin.type, pa.BaseExtensionType):  # uuid: group by its 16 bytes
        origin = pa.chunked_array([c.storage for c in origin.chunks],
                                  origin.type.storage_type)
    counts = pa.table({"origin": origin, "author": t["author"]}).group_by(
        ["origin", "author"]).aggregate([([], "count_all")])
    for o, author, n in zip(*(counts[c].to_pylist() for c in ("origin", "author", "count_all")),
                            strict=True):
        key = str(uuid.UUID(bytes=o)) if isinstance(o, bytes) else str(o)
        by = into.setdefault(key, {})
        by[author or ""] = by.get(author or "", 0) + n


# -- many sessions: retries, backoff, the record ------------------------------------------------


async def run_sync(store: InstallStore, identity: Identity, *, mode: Mode,
                   url: str | None = None, timeout_s: float | None = None,
                   compress: bool = False, progress: Progress | None = None,
                   backoff_base_s: float = BACKOFF_BASE_S, backoff_cap_s: float = BACKOFF_CAP_S,
                   rng: random.Random | None = None,
                   on_retry: OnRetry | None = None) -> SyncReport:
    """Sync (or pull) until a session completes, a refusal is final, or ``timeout_s``.
    ``on_retry`` hears of each wait before another attempt."""
    meta = store.meta()
    url = url or meta.get("url")
    if not url:
        raise ClientError("this install has no server: run 'selaras init --server URL ...'")
    rng = rng or random.Random()
    worker = _StoreWorker(store)
    report = SyncReport(mode)
    before = await worker(lambda: Before(store.row_counts(), conflicted_fields(store),
                                         int(store.meta().get(ACKED_SEQ, 0))))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    failures = 0  # consecutive sessions that ended without progress
    followed_up = False
    pushed_after: int | None = None  # the centre's seq for us when we first connected
    last = "belum terhubung"
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            raise SyncTimedOut(timeout_s or 0, last)
        report.attempts += 1
        counters = Counters()
        conn = SyncConnection(worker, identity, meta, url, mode, compress=compress,
                              counters=counters,
                              progress=None if progress is None else
                              _whole_sync(progress, report))
        started = dt.datetime.now(dt.UTC)
        detail: dict[str, Any] = {}
        outcome, delay = "ok", 0.0
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            async with asyncio.timeout(remaining):
                result = await conn.run()
        except _Retry as exc:
            outcome = ("busy" if exc.busy else f"refused:{exc.code}" if exc.code
                       else "disconnected")
            detail, last = {"reason": exc.reason}, exc.reason
            if exc.code:  # the centre refused; a retry may get past it (the summary says)
                report.refusals.append({"code": str(exc.code), "message": exc.reason})
            if exc.__cause__ is not None:
                detail["error"] = type(exc.__cause__).__name__
            if exc.busy:
                report.busy_retries += 1
                delay = (exc.delay_s or 1.0) * (1 + 0.5 * rng.random())
                failures = 0
            else:
                # Only what the centre acknowledged (or we committed) is progress: batches
                # sent to a centre that keeps failing must not restart the backoff.
                failures = 1 if conn.progressed else failures + 1
                delay = rng.uniform(0, min(backoff_cap_s, backoff_base_s * 2 ** failures))
            detail["retry_in_s"] = round(delay, 3)  # in the history: why and how long it waits
        except TimeoutError:
            outcome, detail = "timeout", {"reason": "timeout"}
            if conn.session:  # else the last reason stands: it never got that far
                last = "sesi masih berjalan saat batas waktu habis"
        except SyncRefused as exc:
            outcome, detail = f"refused:{exc.code}", {"code": str(exc.code),
                                                      "message": exc.message}
            exc.command = reregister_command(url, identity.npsn, identity.author)
            await _record(worker, conn, mode, started, outcome, counters, detail)
            _add(report.totals, counters)
            raise
        except SyncDiverged as exc:
            outcome, detail = "diverged", {"entities": exc.entities, "rows": exc.rows}
            await _record(worker, conn, mode, started, outcome, counters, detail)
            raise
        finally:
            if pushed_after is None and conn.session:
                pushed_after = conn.their_vector.get(identity.origin, 0)
        if outcome == "ok":
            assert pushed_after is not None
            _merge_counts(report.sent, {k: {"events": v} for k, v in result.sent.items()})
            if result.centre_ahead and not followed_up:
                # What the centre made of our push (a clock bound, say) comes in one more
                # session at once, so that this sync ends with equal vectors and tells the
                # school.
                followed_up, detail = True, {"follow_up": True}
            else:
                _add(report.totals, counters)
                report.ok = True
                report.sessions.append(result.session)
                report.vectors_equal = result.vectors_equal
                report.checksums_equal = result.checksums_equal
                report.repaired = result.repaired
                if not result.vectors_equal:
                    report.note = ("belum sama dengan server pusat: ada perubahan lain di "
                                   "server pusat atau di komputer ini sejak sinkronisasi "
                                   "dimulai; sinkronkan lagi nanti")
                await _finish(worker, store, report, conn, result, before, pushed_after)
                await _record(worker, conn, mode, started, "ok", counters,
                              {"vectors_equal": result.vectors_equal,
                               "checksums_equal": result.checksums_equal,
                               "attempts": report.attempts,
                               "busy_retries": report.busy_retries,
                               **_recorded(report)})
                return report
        if conn.session:
            report.sessions.append(conn.session)
        _add(report.totals, counters)
        _merge_counts(report.received,
                      {k: {"events": v} for k, v in conn.received_events.items()})
        _merge_sources(report, conn)
        await _record(worker, conn, mode, started, outcome, counters, detail)
        if outcome == "timeout":
            raise SyncTimedOut(timeout_s or 0, last)
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - time.monotonic()))
        if on_retry is not None and outcome != "ok":  # not a follow-up session
            on_retry(Retrying(report.attempts + 1, delay, last))
        await asyncio.sleep(delay)


@dataclass(frozen=True)
class Before:
    """What the summary compares with: the install as the sync began."""

    rows: dict[str, int]  # per entity, rows materialised
    conflicts: set[Field]
    acked_seq: int  # the top of this install's events the centre had acknowledged


def _whole_sync(progress: Progress, report: SyncReport) -> Progress:
    """A session's progress as the whole sync's: its counters added to the attempts
    before, and the attempt's number."""
    def tell(facts: ProgressFacts) -> None:
        _add(facts, report.totals)
        facts.attempt = report.attempts
        progress(facts)
    return tell


def _merge_sources(report: SyncReport, conn: SyncConnection) -> None:
    """Who wrote what ``conn`` received: the centre (its own, Referensi), or another PC."""
    central = conn.identity.central
    for origin, by in conn.received_from.items():
        if origin in central:
            report.from_centre += sum(by.values())
            for author, n in by.items():
                source = REFERENSI if origin == REFERENSI_ORIGIN else author or CENTRE
                sources = report.from_centre_sources
                sources[source] = sources.get(source, 0) + n
        else:
            _merge_counts(report.from_pcs, {origin: by})


def _recorded(report: SyncReport) -> dict[str, int]:
    """The summary's counts, kept in the history's detail."""
    return {"acknowledged": sum(report.acknowledged.values()),
            "from_centre": report.from_centre,
            "from_pcs": sum(sum(by.values()) for by in report.from_pcs.values()),
            "conflicts_new": sum(report.conflicts_new.values()),
            "conflicts_resolved": sum(report.conflicts_resolved.values())}


async def _finish(worker: _StoreWorker, store: InstallStore, report: SyncReport,
                  conn: SyncConnection, result: SessionResult, before: Before,
                  pushed_after: int) -> None:
    me = conn.identity.origin

    def after() -> tuple[dict[str, int], set[Field], dict[str, dict[str, int]],
                         dict[str, int]]:
        acked_seq = int(store.meta().get(ACKED_SEQ, 0))
        # Ours in (acked before, acked now]: what the centre acknowledged in this sync.
        acked = _minus(store.event_counts(me, before.acked_seq),
                       store.event_counts(me, acked_seq)) if acked_seq > before.acked_seq else {}
        return (store.row_counts(), conflicted_fields(store),
                store.neutralised(me, pushed_after, store.vector().get(me, 0))
                if report.mode == "sync" else {}, acked)

    rows_after, conflicts_after, neutralised, acked = await worker(
        stages.stage("finish")(after))
    report.acknowledged = acked
    _merge_counts(report.received,
                  {k: {"events": v} for k, v in result.received_events.items()})
    _merge_sources(report, conn)
    for name, counts in report.received.items():
        added = max(0, rows_after.get(name, 0) - before.rows.get(name, 0))
        deleted = result.received_deleted.get(name, 0)
        counts["added"] = added
        counts["deleted"] = deleted
        counts["updated"] = max(0, counts["events"] - added - deleted)
    # Conflicts are fields (row, field): one that appeared counts 1, one settled counts 1
    # the other way; neither is ever negative.
    report.conflicts_new = _per_entity(conflicts_after - before.conflicts)
    report.conflicts_resolved = _per_entity(before.conflicts - conflicts_after)
    for name, n in report.conflicts_new.items():
        report.received.setdefault(name, {"events": 0})["conflicts"] = n
    for name, counts in neutralised.items():
        report.sent.setdefault(name, {"events": 0})["neutralised"] = counts["neutralised"]
    offset = conn.clock_offset_ms
    report.clock_offset_ms = offset
    if offset is not None:
        await _set_meta(worker, clock_offset_ms=str(offset))
        if abs(offset) > CLOCK_WARN_MS:
            report.clock_warning = clock_warning(offset)
    bounded = sum(counts["clock"] for counts in neutralised.values())
    if bounded:
        report.clock_warning = "\n".join(filter(None, [report.clock_warning, (
            f"PERINGATAN: {bounded} perubahan dari komputer ini bertanggal jauh di depan "
            "jam server pusat; pusat mencatatnya dengan waktu penerimaan, sehingga tidak "
            "mengalahkan perubahan yang lebih baru")]))


async def _set_meta(worker: _StoreWorker, **values: str) -> None:
    store = worker.store
    await worker(lambda: store.set_meta(**values))


def clock_warning(offset_ms: int) -> str:
    minutes = abs(offset_ms) / 60_000
    how = "terlambat" if offset_ms > 0 else "terlalu cepat"
    span = f"{minutes / 1440:.0f} hari" if minutes >= 1440 else f"{minutes:.0f} menit"
    return (f"PERINGATAN: jam komputer ini {how} {span} dibanding server pusat; "
            "perbaiki tanggal dan jam Windows agar data tercatat dengan waktu yang benar")


async def _record(worker: _StoreWorker, conn: SyncConnection, mode: str,
                  started: dt.datetime, outcome: str, c: Counters,
                  detail: dict[str, Any]) -> None:
    store = worker.store
    record = {"session": conn.session or None, "mode": mode, "started": started,
              "ended": dt.datetime.now(dt.UTC), "outcome": outcome,
              "clock_offset_ms": conn.clock_offset_ms, "events_up": c.events_up,
              "events_down": c.events_down, "bytes_up": c.bytes_up,
              "bytes_down": c.bytes_down, "detail": detail}
    await worker(store.record_session, record)


def _add(total: Counters, c: Counters) -> None:
    total.events_up += c.events_up
    total.events_down += c.events_down
    total.bytes_up += c.bytes_up
    total.bytes_down += c.bytes_down


def _minus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: v - b.get(k, 0) for k, v in a.items() if v > b.get(k, 0)}


def _merge_counts(into: dict[str, dict[str, int]], add: dict[str, dict[str, int]]) -> None:
    for name, counts in add.items():
        slot = into.setdefault(name, {})
        for k, v in counts.items():
            slot[k] = slot.get(k, 0) + v


# -- registration ----------------------------------------------------------------------------


async def register(url: str, npsn: str, kode: str, user: str, password: str) -> Registered:
    """Send Register (R17); the answer, or SyncRefused / SyncError."""
    answer = await request(url, Register(
        protocol=PROTOCOL_VERSION, app=app_version(), schema=SCHEMA_VERSION, npsn=npsn,
        kode=kode, user=user, password=password, sent_ms=now_ms()))
    if not isinstance(answer, Registered):
        raise SyncError("server pusat tidak menjawab pendaftaran")
    return answer


async def request(url: str, message: Register | AccountRequest | TransferRequest) -> Answer:
    """A one-shot request (R17, R20): the answer, or RegistrationRefused / SyncError."""
    proto = SyncProtocol(Side.CLIENT)
    proto.send_request(message)
    try:
        async with connect(url, compression=None, max_size=Limits().max_frame_bytes,
                           open_timeout=OPEN_TIMEOUT_S, proxy=None) as ws:
            for frame in proto.data_to_send():
                await ws.send(frame)
            while proto.state is not State.CLOSED:
                proto.receive_data(await ws.recv(decode=False))
                for frame in proto.data_to_send():
                    await ws.send(frame)
    except (ConnectionClosed, OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise SyncError(f"tidak dapat menghubungi server pusat {url}: "
                        f"{type(exc).__name__}") from exc
    for fact in proto.facts():
        match fact:
            case Answered(answer):
                return answer
            case Refused(refuse, _):
                raise RegistrationRefused(refuse.code, refuse.message)
    raise SyncError("server pusat tidak menjawab")
