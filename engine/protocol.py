"""The sync protocol, sans-I/O (docs/protocol.md is the specification).

A ``SyncProtocol`` is one side of one session. Feed it every frame received
(``receive_data``), then:

- send every frame ``data_to_send()`` returns, in order;
- handle every fact ``facts()`` returns: authenticate a ``HelloReceived``,
  append a ``BatchReceived`` durably and then call ``ack``, and so on;
- after a ``Refused`` or once ``state`` is CLOSED, close the connection.

It never touches a socket, a clock or a store: time and data come in as
arguments. Anything outside the transition table ends the session with a
``Refuse`` carrying the matching code.

Errors::

    ProtocolError                a local misuse of this object (a bug in the adapter)
    RemoteError                  what the peer did wrong; carries the Refuse code
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import msgspec

from .clocks import VersionVector
from .errors import SelarasError, UsageError
from .refusals import TEXT, Detail, unexpected
from .refusals import Code as Code  # the protocol speaks it: Refuse.code

# 2: centre signatures (R18); 3: Compare after the Summary (R19); 4: Check, the
# connection check (R17); 5: TransferRequest (R21)
PROTOCOL_VERSION = 5


# -- messages (frozen, tagged; new fields get defaults and go last) ---------------------


class Limits(msgspec.Struct, frozen=True):
    """What the server allows in this session; both sides hold to it."""

    max_frame_bytes: int = 8 << 20
    max_batch_events: int = 20_000
    max_batch_bytes: int = 4 << 20
    window_batches: int = 4


# The two kinds of session, in the operator's words.
MODE_WORDS = {"sync": "Sinkronisasi", "pull": "Tarik Data", "bundle": "Bundel (dinas)"}


class Hello(msgspec.Struct, frozen=True, tag="hello"):
    protocol: int
    app: str
    schema: int
    npsn: str
    install: str  # the install's origin
    token: str  # the install credential
    mode: Literal["pull", "sync"]
    vector: VersionVector
    sent_ms: int  # the client's clock, to learn its offset
    # The principal's signed Persetujuan Pengiriman Data (consent.encode), covering every
    # event a sync session pushes (R20); empty for a pull or a sync with nothing to send.
    consent: bytes = b""


class Register(msgspec.Struct, frozen=True, tag="register"):
    """Register a new install of a school (``selaras init --server``)."""

    protocol: int
    app: str
    schema: int
    npsn: str
    kode: str  # the school's registration code
    user: str  # an operator account of the school (made on the first registration)
    password: str
    sent_ms: int


def account_name(user: str) -> str:
    """An account's name (an e-mail) as the centre keys it: no case, no outer spaces."""
    return user.strip().lower()


class Registered(msgspec.Struct, frozen=True, tag="registered"):
    install: str  # the new install's origin
    token: str  # its credential: shown once, kept by the install
    server_ms: int
    role: str
    centre_key: str = ""  # the centre's Ed25519 public key (hex): checks centre events (R18)
    user: str = ""  # the account as the centre knows it: the author of the install's events


class AccountRequest(msgspec.Struct, frozen=True, tag="account"):
    """From an install, with the school's registration code (R20): add the principal's
    account (``selaras account add``), or log in to it (``selaras switch-user``)."""

    protocol: int
    app: str
    schema: int
    npsn: str
    install: str
    token: str  # the install credential
    kode: str
    action: Literal["add_principal", "login"]
    user: str
    password: str
    nama: str = ""  # add_principal: the PTK who holds the tugas tambahan
    ptk_id: str = ""
    nip: str = ""
    pengguna_id: str = ""  # add_principal: the school's pengguna row of this username, if any


class AccountReply(msgspec.Struct, frozen=True, tag="account_reply"):
    """The principal's account: its profile and its signing key, sealed with its password."""

    user: str
    role: str
    nama: str
    ptk_id: str
    nip: str
    public_key: str
    sealed_key: str


class TransferRequest(msgspec.Struct, frozen=True, tag="transfer"):
    """From the receiving school's install (R21): Tarik Data PD or PTK, the person named by
    NISN or NIK (``pd``), NUPTK or NIK (``ptk``)."""

    protocol: int
    app: str
    schema: int
    npsn: str
    install: str
    token: str  # the install credential
    kind: Literal["pd", "ptk"]
    key: str
    # A teacher staying registered at their home school, taken as non-induk (R21); an old
    # centre ignores it, and refuses as for a plain Tarik Data PTK.
    non_induk: bool = False


class TransferReply(msgspec.Struct, frozen=True, tag="transfer_reply"):
    """The person written into the receiving school's log as centre events: it arrives
    with the next sync or Tarik Data."""

    entity: str
    row_id: str
    nama: str
    origin_npsn: str  # the school the person left
    events: int


class AdminRequest(msgspec.Struct, frozen=True, tag="admin"):
    """An admin command for a running server (``selaras admin ...``)."""

    token: str  # the server's admin secret
    command: str
    args: dict[str, str]


class AdminReply(msgspec.Struct, frozen=True, tag="admin_reply"):
    columns: list[str]
    rows: list[list[str | int | float | bool | None]]
    message: str = ""
    # What --json prints, where a command has a shape of its own (checksum: the same
    # {"checksums", "vector"} as the install's `selaras checksum --json`; history and
    # school list: records with machine keys, beside a table in the operator's words).
    data: dict[str, Any] = {}


class Welcome(msgspec.Struct, frozen=True, tag="welcome"):
    session: str
    server_ms: int
    vector: VersionVector  # the centre's durable vector for this school
    limits: Limits
    centre_key: str = ""  # as in Registered: an install refuses a centre whose key changed


class Refuse(msgspec.Struct, frozen=True, tag="refuse"):
    code: Code
    message: str  # for the school, in Bahasa Indonesia; never internal exception text
    retry_after_s: float | None = None


class Events(msgspec.Struct, frozen=True, tag="events"):
    batch: int  # 1, 2, 3 ... per direction per session
    count: int  # events in the payload
    payload: bytes  # events.Batch.to_bytes(): columnar


class Ack(msgspec.Struct, frozen=True, tag="ack"):
    batch: int
    vector: VersionVector  # the receiver's durable vector after committing it


class Sent(msgspec.Struct, frozen=True, tag="sent"):
    """The sender has nothing more to send in this session."""

    batches: int


class Done(msgspec.Struct, frozen=True, tag="done"):
    vector: VersionVector
    checksums: dict[str, str]


class Summary(msgspec.Struct, frozen=True, tag="summary"):
    vector: VersionVector
    checksums: dict[str, str]


class Compare(msgspec.Struct, frozen=True, tag="compare"):
    """Client, after the Summary: narrow a difference of ``entity`` down (R19). With
    neither ``buckets`` nor ``rows``: its bucket digests; with ``buckets``: the hashes
    of the rows in them; with ``rows``: those rows' events."""

    entity: str
    buckets: list[int] = []
    rows: list[str] = []


class Compared(msgspec.Struct, frozen=True, tag="compared"):
    entity: str
    buckets: dict[int, str] = {}  # bucket -> digest, buckets with rows only
    rows: dict[str, int] = {}  # row id -> values.row_hash
    payload: bytes = b""  # events.Batch.to_bytes() of the rows' events


class Check(msgspec.Struct, frozen=True, tag="check"):
    """Is this install let in? (``selaras check-connection``, R17). Hello's identity
    without a session: the centre answers ``Checked`` or the Refuse a Hello would get,
    and records nothing."""

    protocol: int
    app: str
    schema: int
    npsn: str
    install: str  # the install's origin
    token: str  # the install credential
    sent_ms: int  # the client's clock, to learn its offset (R14)


class Checked(msgspec.Struct, frozen=True, tag="checked"):
    server_ms: int  # the centre's clock when it answered


MAX_COMPARE_BUCKETS = 16  # buckets one Compare may ask for
MAX_COMPARE_ROWS = 100  # rows whose events one Compare may ask for

Message = (Hello | Register | AdminRequest | Welcome | Registered | AdminReply | Refuse | Events
           | Ack | Sent | Done | Summary | Compare | Compared | AccountRequest | AccountReply
           | Check | Checked | TransferRequest | TransferReply)
Opening = Hello | Register | AdminRequest | AccountRequest | Check | TransferRequest
Answer = Registered | AdminReply | AccountReply | Checked | TransferReply

_decoder = msgspec.msgpack.Decoder(Message)
_encoder = msgspec.msgpack.Encoder()


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> Message:
    """Decode one frame; RemoteError(MALFORMED_MESSAGE) if it is not a message."""
    try:
        message: Message = _decoder.decode(data)
        return message
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
        raise RemoteError(Code.MALFORMED_MESSAGE, TEXT[Code.MALFORMED_MESSAGE]) from exc


# -- facts handed to the adapter -------------------------------------------------------


class Opened(msgspec.Struct, frozen=True):
    """Server: the client's first message, for the adapter to check and answer."""

    message: Opening


class Welcomed(msgspec.Struct, frozen=True):
    welcome: Welcome


class Answered(msgspec.Struct, frozen=True):
    """Client: the answer to a Register or AdminRequest; the session is over."""

    answer: Answer


class Refused(msgspec.Struct, frozen=True):
    refuse: Refuse
    by_peer: bool  # False: we refused the peer


class BatchReceived(msgspec.Struct, frozen=True):
    batch: int
    count: int
    payload: bytes


class BatchAcked(msgspec.Struct, frozen=True):
    batch: int
    vector: VersionVector


class PeerSent(msgspec.Struct, frozen=True):
    batches: int


class DoneReceived(msgspec.Struct, frozen=True):
    done: Done


class SummaryReceived(msgspec.Struct, frozen=True):
    summary: Summary


class CompareReceived(msgspec.Struct, frozen=True):
    compare: Compare


class ComparedReceived(msgspec.Struct, frozen=True):
    compared: Compared


Fact = (Opened | Welcomed | Answered | Refused | BatchReceived | BatchAcked | PeerSent
        | DoneReceived | SummaryReceived | CompareReceived | ComparedReceived)


# -- errors -----------------------------------------------------------------------------


class ProtocolError(UsageError):
    """The adapter used the protocol object wrongly (a bug here, not the peer's)."""


class RemoteError(SelarasError):
    """The peer broke the protocol; the session ends with ``code``."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# -- states and transitions ------------------------------------------------------------


class Side(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    START = "start"  # client: before its first message; server: waiting for it
    AUTHENTICATING = "authenticating"  # server: first message received, adapter checking it
    HELLO_SENT = "hello_sent"  # client: waiting for Welcome
    REQUEST_SENT = "request_sent"  # client: Register or AdminRequest sent, waiting
    STREAMING = "streaming"  # both: Events, Ack, Sent flow both ways
    DONE_SENT = "done_sent"  # client: Done sent, waiting for Summary
    SUMMARISING = "summarising"  # server: Done received, the adapter reading the Summary
    COMPARING = "comparing"  # both, after the Summary: Compare and Compared, or the close
    COMPARE_SENT = "compare_sent"  # client: waiting for Compared
    CLOSED = "closed"


# (side, state, message received) -> next state. Anything else: UNEXPECTED_MESSAGE.
TRANSITIONS: dict[tuple[Side, State, type], State] = {
    (Side.SERVER, State.START, Hello): State.AUTHENTICATING,
    (Side.SERVER, State.START, Register): State.AUTHENTICATING,
    (Side.SERVER, State.START, AdminRequest): State.AUTHENTICATING,
    (Side.SERVER, State.START, AccountRequest): State.AUTHENTICATING,
    (Side.CLIENT, State.HELLO_SENT, Welcome): State.STREAMING,
    (Side.CLIENT, State.REQUEST_SENT, Registered): State.CLOSED,
    (Side.CLIENT, State.REQUEST_SENT, AdminReply): State.CLOSED,
    (Side.CLIENT, State.REQUEST_SENT, AccountReply): State.CLOSED,
    (Side.SERVER, State.START, Check): State.AUTHENTICATING,
    (Side.CLIENT, State.REQUEST_SENT, Checked): State.CLOSED,
    (Side.SERVER, State.START, TransferRequest): State.AUTHENTICATING,
    (Side.CLIENT, State.REQUEST_SENT, TransferReply): State.CLOSED,
    (Side.CLIENT, State.STREAMING, Events): State.STREAMING,
    (Side.CLIENT, State.STREAMING, Ack): State.STREAMING,
    (Side.CLIENT, State.STREAMING, Sent): State.STREAMING,
    (Side.CLIENT, State.DONE_SENT, Summary): State.COMPARING,
    (Side.CLIENT, State.COMPARE_SENT, Compared): State.COMPARING,
    (Side.SERVER, State.STREAMING, Events): State.STREAMING,
    (Side.SERVER, State.STREAMING, Ack): State.STREAMING,
    (Side.SERVER, State.STREAMING, Sent): State.STREAMING,
    (Side.SERVER, State.STREAMING, Done): State.SUMMARISING,
    (Side.SERVER, State.COMPARING, Compare): State.COMPARING,
}
# A Refuse from the peer ends the session in any open state.


class SyncProtocol:
    """One side of one sync session."""

    def __init__(self, side: Side, limits: Limits | None = None) -> None:
        self.side = side
        self.state = State.START
        self.limits = limits or Limits()
        self.mode: Literal["pull", "sync"] = "pull"
        self.error: RemoteError | None = None  # set when the session ended badly
        self._out: list[bytes] = []
        self._facts: list[Fact] = []
        self._sent_batches = 0  # batches we sent
        self._acked: set[int] = set()  # ... that the peer acknowledged
        self._received = 0  # batches we received
        self._unacked_in: set[int] = set()  # ... that we have not acknowledged yet
        self._we_finished = False
        self._peer_sent: int | None = None  # the peer's Sent count, once it came

    # -- what the adapter reads ---------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def facts(self) -> list[Fact]:
        facts, self._facts = self._facts, []
        return facts

    @property
    def can_send_batch(self) -> bool:
        """True while the window has room for one more outgoing batch."""
        return (self.state is State.STREAMING and not self._we_finished
                and self._sending_allowed()
                and self._sent_batches - len(self._acked) < self.limits.window_batches)

    @property
    def finished_sending(self) -> bool:
        """True once ``finish_sending`` was called: no more batches go out."""
        return self._we_finished

    @property
    def all_acked(self) -> bool:
        return len(self._acked) == self._sent_batches

    @property
    def ready_for_done(self) -> bool:
        """Client: both streams are over and everything is acknowledged both ways."""
        return (self.side is Side.CLIENT and self.state is State.STREAMING
                and self._we_finished and self.all_acked
                and self._peer_sent is not None and self._received == self._peer_sent
                and not self._unacked_in)

    # -- what the adapter does ----------------------------------------------------------

    def send_hello(self, hello: Hello) -> None:
        self._expect(Side.CLIENT, State.START)
        self.mode = hello.mode
        self._send(hello)
        self.state = State.HELLO_SENT

    def send_request(self, request: Register | AdminRequest | AccountRequest | Check
                     | TransferRequest) -> None:
        """Client: a one-shot request; the answer ends the session."""
        self._expect(Side.CLIENT, State.START)
        self._send(request)
        self.state = State.REQUEST_SENT

    def accept(self, welcome: Welcome) -> None:
        """Server: the Hello checked out."""
        self._expect(Side.SERVER, State.AUTHENTICATING)
        self.limits = welcome.limits
        self._send(welcome)
        self.state = State.STREAMING

    def answer(self, answer: Answer) -> None:
        """Server: the Register or AdminRequest checked out; the session is over."""
        self._expect(Side.SERVER, State.AUTHENTICATING)
        self._send(answer)
        self.state = State.CLOSED

    def refuse(self, code: Code, message: str, retry_after_s: float | None = None) -> None:
        """End the session with a refusal (either side, any open state)."""
        if self.state is State.CLOSED:
            return
        refuse = Refuse(code, message, retry_after_s)
        self._send(refuse)
        self._facts.append(Refused(refuse, by_peer=False))
        self.error = RemoteError(code, message)
        self.state = State.CLOSED

    def send_batch(self, payload: bytes, count: int) -> int:
        """Queue one Events message; returns its batch number."""
        if not self.can_send_batch:
            raise ProtocolError("no room in the window (or nothing may be sent now)")
        if count > self.limits.max_batch_events or len(payload) > self.limits.max_batch_bytes:
            raise ProtocolError("batch over the session's limits")
        self._sent_batches += 1
        self._send(Events(self._sent_batches, count, payload))
        return self._sent_batches

    def ack(self, batch: int, vector: VersionVector) -> None:
        """Acknowledge a received batch once it is durably committed."""
        if batch not in self._unacked_in:
            raise ProtocolError(f"batch {batch} is not waiting for an ack")
        self._unacked_in.discard(batch)
        self._send(Ack(batch, vector))

    def finish_sending(self) -> None:
        """Nothing more to send in this session."""
        if self.state is not State.STREAMING or self._we_finished:
            raise ProtocolError("finish_sending outside streaming, or twice")
        self._we_finished = True
        self._send(Sent(self._sent_batches))

    def send_done(self, vector: VersionVector, checksums: dict[str, str]) -> None:
        if not self.ready_for_done:
            raise ProtocolError("Done before both streams are over and acknowledged")
        self._send(Done(vector, checksums))
        self.state = State.DONE_SENT

    def send_summary(self, vector: VersionVector, checksums: dict[str, str]) -> None:
        """Server: answer the client's Done; then the client compares, or closes."""
        self._expect(Side.SERVER, State.SUMMARISING)
        self._send(Summary(vector, checksums))
        self.state = State.COMPARING

    def send_compare(self, compare: Compare) -> None:
        """Client, after the Summary: one question about a difference (R19)."""
        self._expect(Side.CLIENT, State.COMPARING)
        self._send(compare)
        self.state = State.COMPARE_SENT

    def send_compared(self, compared: Compared) -> None:
        """Server: the answer to the Compare received last."""
        self._expect(Side.SERVER, State.COMPARING)
        self._send(compared)

    def close(self) -> None:
        """Client: the session is over (after the Summary, or the last Compared)."""
        self._expect(Side.CLIENT, State.COMPARING)
        self.state = State.CLOSED

    # -- receiving ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take in one frame from the peer."""
        if self.state is State.CLOSED:
            return
        try:
            if len(data) > self.limits.max_frame_bytes:
                raise RemoteError(Code.MESSAGE_TOO_LARGE, TEXT[Code.MESSAGE_TOO_LARGE])
            self._receive(decode(data))
        except RemoteError as exc:
            self.refuse(exc.code, exc.message)

    def _receive(self, msg: Message) -> None:
        if isinstance(msg, Refuse):
            self._facts.append(Refused(msg, by_peer=True))
            self.error = RemoteError(msg.code, msg.message)
            self.state = State.CLOSED
            return
        after = TRANSITIONS.get((self.side, self.state, type(msg)))
        if after is None:
            raise RemoteError(Code.UNEXPECTED_MESSAGE,
                              unexpected(type(msg).__name__))
        match msg:
            case Hello() | Register() | AccountRequest() | Check() | TransferRequest():
                if msg.protocol != PROTOCOL_VERSION:
                    raise RemoteError(Code.VERSION_MISMATCH,
                                      Detail.PROTOCOL_VERSION)
                if isinstance(msg, Hello):
                    self.mode = msg.mode
                self._facts.append(Opened(msg))
            case AdminRequest():
                self._facts.append(Opened(msg))
            case Welcome():
                self.limits = msg.limits
                self._facts.append(Welcomed(msg))
            case Registered() | AdminReply() | AccountReply() | Checked() | TransferReply():
                self._facts.append(Answered(msg))
            case Events():
                self._receive_events(msg)
            case Ack():
                if msg.batch in self._acked or not 1 <= msg.batch <= self._sent_batches:
                    raise RemoteError(Code.UNEXPECTED_MESSAGE, Detail.ACK_UNKNOWN_BATCH)
                self._acked.add(msg.batch)
                self._facts.append(BatchAcked(msg.batch, msg.vector))
            case Sent():
                if self._peer_sent is not None or msg.batches != self._received:
                    raise RemoteError(Code.UNEXPECTED_MESSAGE, Detail.BATCH_TOTAL)
                self._peer_sent = msg.batches
                self._facts.append(PeerSent(msg.batches))
            case Done():
                if not (self.all_acked and self._we_finished and not self._unacked_in
                        and self._peer_sent == self._received):
                    raise RemoteError(Code.UNEXPECTED_MESSAGE, Detail.NOT_FINISHED)
                self._facts.append(DoneReceived(msg))
            case Summary():
                self._facts.append(SummaryReceived(msg))
            case Compare():
                if (len(msg.buckets) > MAX_COMPARE_BUCKETS or len(msg.rows) > MAX_COMPARE_ROWS
                        or (msg.buckets and msg.rows)):
                    raise RemoteError(Code.MALFORMED_MESSAGE, Detail.BAD_COMPARE)
                self._facts.append(CompareReceived(msg))
            case Compared():
                self._facts.append(ComparedReceived(msg))
        self.state = after

    def _receive_events(self, msg: Events) -> None:
        if self.side is Side.SERVER and self.mode == "pull":
            raise RemoteError(Code.FORBIDDEN, Detail.PULL_SENDS)
        if self._peer_sent is not None or msg.batch != self._received + 1:
            raise RemoteError(Code.UNEXPECTED_MESSAGE, Detail.BATCH_ORDER)
        if len(self._unacked_in) >= self.limits.window_batches:
            raise RemoteError(Code.WINDOW_OVERRUN, TEXT[Code.WINDOW_OVERRUN])
        if msg.count > self.limits.max_batch_events or \
                len(msg.payload) > self.limits.max_batch_bytes:
            raise RemoteError(Code.MESSAGE_TOO_LARGE, Detail.BATCH_TOO_LARGE)
        self._received = msg.batch
        self._unacked_in.add(msg.batch)
        self._facts.append(BatchReceived(msg.batch, msg.count, msg.payload))

    # -- helpers ----------------------------------------------------------------------------

    def _sending_allowed(self) -> bool:
        """In pull mode only the server sends events."""
        return self.mode == "sync" or self.side is Side.SERVER

    def _expect(self, side: Side, state: State) -> None:
        if self.side is not side or self.state is not state:
            raise ProtocolError(f"not allowed for the {self.side.value} in {self.state.value}")

    def _send(self, message: Message) -> None:
        self._out.append(encode(message))
