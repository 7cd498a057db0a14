"""Fuzzing the decoders of outside bytes: seeds, mutations, and what each decoder may raise.

Every decoder that takes bytes from outside (a peer's frame, a pushed batch, a
bundle file) is held to its documented errors (docs/security.md):

- ``protocol.decode``: a ``Message`` or RemoteError;
- a ``SyncProtocol`` receiving a frame (the server before and after the Hello,
  the client after the Welcome): never raises; a bad frame becomes a Refused
  fact and the session is CLOSED;
- ``Batch.from_bytes``: a batch or MalformedBatch; a batch it accepted also
  survives ``len``, ``vector``, ``signatures_by_id``, ``causally_ready`` (the
  centre's first step) and, when small, ``events()`` (InputError at worst);
- ``bundle.decode`` and ``Bundle.events``: BundleError; the batch inside as above.

Inputs are valid messages, batches and bundles made by the real encoders,
mutated (bytes flipped, cut, spliced, repeated; msgpack fields replaced by huge
ints, lists and maps; Arrow columns replaced by hostile values; bundles re-sealed
with a correct digest, as an attacker would), and purely random bytes. Anything
else that comes out is a finding, and so is one input that makes the process
grow by ``MEMORY_SPIKE`` (RSS, or Arrow's allocations).

``fuzz(decoder, start, end, seed)`` runs inputs ``start`` to ``end`` of one
seed in this process: the same inputs every time. ``run`` runs them in a child
process (``python -m selaras.bench.fuzz DECODER START END SEED TRACE``, which
prints the tally as JSON), keeping the input being decoded in the TRACE file:
after a crash that file names the input, the crash is a finding, and the rest
of the range runs in another child. The quick test
(tests/hostile/test_hostile_fuzz.py) and the long run
(bench/test_fuzz_bench.py) share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import random
import re
import resource
import struct
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from signal import Signals
from typing import Any, Literal

import msgspec
import pyarrow as pa

from selaras.engine import bundle
from selaras.engine import protocol as p
from selaras.engine.bundle import BundleError
from selaras.engine.errors import InputError
from selaras.engine.events import REFERENSI_ORIGIN, Batch, Event, MalformedBatch, school_row_id

NPSN = "20100001"
INSTALL = "a0000000-0000-4000-8000-000000000001"
PEER = "b0000000-0000-4000-8000-000000000002"
ROW = "d0000000-0000-4000-8000-00000000000d"
SMALL_BATCH = 64  # events() is the slow reference path: only on batches this small
MAX_INPUT = 256 * 1024  # mutations that grow past this start again from a seed
MEMORY_SPIKE = 64 * 1024 * 1024  # one input that grows the process this much is a finding
MiB = 1024 * 1024


# -- seeds: valid inputs made by the real encoders ----------------------------------------

def sample_events() -> list[Event]:
    """A few events of every value type (text, date, int, uuid, decimal), a causal context
    and a Referensi event (a centre origin's); all of school NPSN, so that a bundle of them
    is valid."""
    pd: dict[str, Any] = dict(origin=INSTALL, entity="peserta_didik", row_id=ROW, author="op",
                              role="operator")
    return [
        Event(seq=1, hlc=1_001, changes={"nama": "Siti Aminah", "tanggal_lahir": "2008-01-02",
                                         "agama_id": 1, "nik": "3201010101080001"}, **pd),
        Event(seq=2, hlc=1_002, changes={"nama_ayah": "Ahmad"}, context={PEER: 3}, **pd),
        Event(origin=INSTALL, seq=3, hlc=1_003, entity="tanah", row_id=PEER,
              changes={"sekolah_id": school_row_id(NPSN), "nama": "Tanah 1",
                       "luas": "1250.500000", "kepemilikan_sarpras_id": 1},
              author="op", role="operator"),
        Event(origin=REFERENSI_ORIGIN, seq=1, hlc=900, entity="ref.agama", row_id=INSTALL,
              changes={"agama_id": 1, "nama": "Islam"}),  # signed in a seed
    ]


@cache
def batch_seeds() -> tuple[bytes, ...]:
    evs = sample_events()
    signed = Batch.from_events(evs[3:], signatures={evs[3].id: bytes(range(64))})
    return (Batch.from_events(evs).to_bytes(), Batch.from_events(evs[:1]).to_bytes(),
            Batch.from_events(evs[2:3]).to_bytes(), signed.to_bytes(),
            Batch.from_events([]).to_bytes())


def hello(mode: Literal["pull", "sync"] = "sync") -> p.Hello:
    return p.Hello(protocol=p.PROTOCOL_VERSION, app="fuzz", schema=1, npsn=NPSN,
                   install=INSTALL, token="t" * 32, mode=mode, vector={INSTALL: 2},
                   sent_ms=1_700_000_000_000)


WELCOME = p.Welcome("s1", 1_700_000_000_000, {INSTALL: 1}, p.Limits())


@cache
def frame_seeds() -> tuple[bytes, ...]:
    batches = batch_seeds()
    messages: list[p.Message] = [
        hello(), hello("pull"), WELCOME,
        p.Register(p.PROTOCOL_VERSION, "fuzz", 1, NPSN, "kode", "op@sekolah.id", "rahasia", 0),
        p.Registered(INSTALL, "token", 1, "operator"),
        p.AdminRequest("secret", "installs", {"npsn": NPSN}),
        p.AdminReply(["a", "b"], [[1, "x", None, 1.5, True]], "ok"),
        p.Refuse(p.Code.SERVER_BUSY, "sibuk", 1.5),
        p.Events(1, 4, batches[0]), p.Events(1, 1, batches[1]), p.Events(2, 0, batches[4]),
        p.Ack(1, {INSTALL: 1}), p.Sent(0), p.Sent(1),
        p.Done({INSTALL: 2}, {"peserta_didik": "ab" * 32}), p.Summary({INSTALL: 2}, {}),
    ]
    return tuple(p.encode(m) for m in messages)


def seal(data: bytes) -> bytes:
    """The bundle with its digest made right again: the digest tells damage, not intent."""
    head = len(bundle.MAGIC) + 32
    if len(data) < head:
        return data
    return data[:len(bundle.MAGIC)] + hashlib.sha256(data[head:]).digest() + data[head:]


@cache
def bundle_seeds() -> tuple[bytes, ...]:
    return tuple(bundle.encode(npsn=NPSN, origin=INSTALL, vector={INSTALL: 3, PEER: 1},
                               batch=Batch.from_bytes(b)) for b in batch_seeds())


# -- mutations ------------------------------------------------------------------------------

# Byte strings that mean "huge" or "odd" to msgpack, flatbuffers and Arrow.
INTERESTING = [
    b"\x00", b"\xff", b"\x7f", b"\x80", b"\xc1",  # \xc1: never used by msgpack
    b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",  # array32, map32 of 4 G entries
    b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",  # str32, bin32 of 4 GiB
    b"\xcf" + b"\xff" * 8, b"\xd3\x80" + b"\x00" * 7,  # uint64 max, int64 min
    b"\xd6\xff\x00\x00\x00\x00", b"\xc7\x05\x01",  # a timestamp, a cut ext
    b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",  # int32 lengths, offsets
    b"\xff" * 7 + b"\x7f", b"\x00" * 7 + b"\x80",  # int64 lengths
]


def deep(depth: int) -> object:
    """Lists in lists, ``depth`` of them."""
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


# Values put in place of a msgpack field: wrong types, extremes, big containers.
HOSTILE: list[object] = [
    2**64 - 1, 2**63, 2**63 - 1, -(2**63), -1, 0, 10**12, 1.5, float("nan"), float("-inf"),
    None, True, "", "x" * 70_000, "\u0000", b"", bytes(70_000), b"\xff\xfe", [], [0] * 10_000,
    {}, {"": None}, {str(i): i for i in range(2_000)}, deep(200), msgspec.msgpack.Ext(1, b"x"),
]


def raw_decimal(units: int) -> pa.Array:
    """A decimal(18, 6) array of one value given in millionths, whatever its digits."""
    data = pa.py_buffer(units.to_bytes(16, "little", signed=True))
    return pa.Array.from_buffers(pa.decimal128(18, 6), 1, [None, data])


# Values put in place of an Arrow column, by type: nulls, extremes, bad UTF-8, far dates.
ARROW_HOSTILE: dict[str, list[pa.Array]] = {
    "int64": [pa.array([None], pa.int64()), pa.array([-(2**63)], pa.int64()),
              pa.array([2**63 - 1], pa.int64())],
    "uint64": [pa.array([None], pa.uint64()), pa.array([2**64 - 1], pa.uint64())],
    "string": [pa.array([None], pa.string()), pa.array([b"\xff\xfe"]).view(pa.string()),
               pa.array(["x" * 5_000]), pa.array([""])],
    "date32[day]": [pa.array([None], pa.int32()).view(pa.date32()),
                    pa.array([-(2**31)], pa.int32()).view(pa.date32()),
                    pa.array([2**31 - 1], pa.int32()).view(pa.date32()),
                    pa.array([-719_163], pa.int32()).view(pa.date32()),  # year 0
                    pa.array([2_932_897], pa.int32()).view(pa.date32())],  # year 10000
    "decimal128(18, 6)": [
        pa.array([None], pa.decimal128(18, 6)),
        raw_decimal(10**37),  # 38 digits in an 18-digit column
        raw_decimal(10**18),  # 10**12: just out of range, 19 digits
        raw_decimal(10**18 - 1), raw_decimal(-(10**18 - 1))],  # just within
    "binary": [pa.array([None], pa.binary()), pa.array([b""]), pa.array([bytes(100_000)])],
    "extension<arrow.uuid>": [pa.array([None], pa.uuid()), pa.array([bytes(16)], pa.uuid())],
}


class Mutator:
    """Mutates seeds with a seeded Random: the same seed gives the same inputs."""

    def __init__(self, rng: random.Random, seeds: tuple[bytes, ...]) -> None:
        self.rng, self.seeds = rng, seeds
        self.byte_level: list[Callable[[bytes], bytes]] = [
            self.flip_bits, self.set_bytes, self.interesting, self.truncate, self.delete,
            self.insert, self.duplicate, self.splice]

    def input(self) -> bytes:
        """One input: mostly a mutated seed, sometimes random bytes."""
        if self.rng.random() < 0.05:
            return self.rng.randbytes(self.rng.randrange(self.rng.choice((4, 16, 256, 4096))))
        data = self.rng.choice(self.seeds)
        for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
            data = self.mutate(data)
            if len(data) > MAX_INPUT:
                data = self.rng.choice(self.seeds)
        return data

    def mutate(self, data: bytes, depth: int = 0) -> bytes:
        """One mutation: of the msgpack or Arrow structure where there is one, else of bytes."""
        if depth < 3 and self.rng.random() < 0.6:
            if data.startswith(b"\xff\xff\xff\xff"):  # an Arrow IPC stream
                return self.arrow(data) or self.rng.choice(self.byte_level)(data)
            if data.startswith(bundle.MAGIC[:-1]):
                return data[:40] + self.mutate(data[40:], depth + 1)
            structured = self.msgpack(data, depth)
            if structured is not None:
                return structured
        return self.rng.choice(self.byte_level)(data)

    # bytes

    def _at(self, data: bytes) -> int:
        return self.rng.randrange(len(data) + 1)

    def flip_bits(self, data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(self.rng.randint(1, 8)):
            if out:
                out[self.rng.randrange(len(out))] ^= 1 << self.rng.randrange(8)
        return bytes(out)

    def set_bytes(self, data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            if out:
                out[self.rng.randrange(len(out))] = self.rng.randrange(256)
        return bytes(out)

    def interesting(self, data: bytes) -> bytes:
        at, value = self._at(data), self.rng.choice(INTERESTING)
        cut = at + len(value) if self.rng.random() < 0.7 else at  # overwrite or insert
        return data[:at] + value + data[cut:]

    def truncate(self, data: bytes) -> bytes:
        return data[:self._at(data)]

    def delete(self, data: bytes) -> bytes:
        at = self._at(data)
        return data[:at] + data[at + self.rng.randint(1, 64):]

    def insert(self, data: bytes) -> bytes:
        at = self._at(data)
        return data[:at] + self.rng.randbytes(self.rng.randint(1, 64)) + data[at:]

    def duplicate(self, data: bytes) -> bytes:
        start = self._at(data)
        region = data[start:start + self.rng.randint(1, 4096)]
        at = self._at(data)
        return data[:at] + region * self.rng.choice((1, 2, 16)) + data[at:]

    def splice(self, data: bytes) -> bytes:
        other = self.rng.choice(self.seeds)
        return data[:self._at(data)] + other[self._at(other):]

    # msgpack

    def msgpack(self, data: bytes, depth: int) -> bytes | None:
        """Replace one node of the msgpack document: a hostile value, a dropped or added
        key, or (for bytes holding a batch or an Arrow stream) a mutation inside it."""
        try:
            doc = msgspec.msgpack.decode(data)
        except (msgspec.DecodeError, ValueError, RecursionError):  # bad UTF-8, too deep
            return None
        slots: list[tuple[Any, Any]] = []  # (container, key or index)
        stack: list[object] = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                slots += [(node, k) for k in node]
                stack += node.values()
            elif isinstance(node, list) and len(node) < 64:
                slots += [(node, i) for i in range(len(node))]
                stack += node
        if not slots:
            return None
        parent, key = self.rng.choice(slots)
        value = parent[key]
        roll = self.rng.random()
        if isinstance(value, bytes) and value and roll < 0.6:
            parent[key] = self.mutate(value, depth + 1)
        elif isinstance(parent, dict) and roll < 0.7:
            if self.rng.random() < 0.5:
                del parent[key]
            else:
                parent[self.rng.choice(["extra", key * 2 if isinstance(key, str) else 1])] = 1
        else:
            parent[key] = self.rng.choice(HOSTILE)
        return msgspec.msgpack.encode(doc)

    # Arrow

    def arrow(self, blob: bytes) -> bytes | None:
        """The IPC stream with one column replaced by hostile values, its rows repeated or
        dropped, or written compressed."""
        try:  # the blob may be mutated already: only a valid one is safe to work on
            table = pa.ipc.open_stream(blob).read_all()
            table.validate(full=True)
            return self._arrow(table)
        except (pa.ArrowException, OSError, ValueError):
            return None

    def _arrow(self, table: pa.Table) -> bytes | None:
        if not table.num_rows or not table.num_columns:
            return None
        roll = self.rng.random()
        if roll < 0.7:
            i = self.rng.randrange(table.num_columns)
            col = table.schema.field(i)
            choices = ARROW_HOSTILE.get(str(col.type))
            if choices is None:
                return None
            hostile = self.rng.choice(choices)
            row = self.rng.randrange(table.num_rows)
            values = pa.concat_arrays([table[i].combine_chunks()[:row], hostile.cast(col.type),
                                       table[i].combine_chunks()[row + 1:]])
            table = table.set_column(i, col, values)
        elif roll < 0.85:  # rows repeated (the input stays small: its decoder is measured)
            times = self.rng.choice((0, 2, 100))
            if table.nbytes * times > MAX_INPUT:
                return None
            table = pa.concat_tables([table] * times or [table[:0]])
        options = pa.ipc.IpcWriteOptions(
            compression=self.rng.choice(("zstd", "lz4")) if roll >= 0.85 else None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        return bytes(sink.getvalue().to_pybytes())


# -- the decoders and their contracts -------------------------------------------------------

class Undocumented(Exception):
    """A decoder broke its contract otherwise than by raising (a wrong state, a bad fact)."""


def check_batch(batch: Batch) -> None:
    """What a receiver does with a batch that decoded (the centre: ``causally_ready``);
    InputError at worst."""
    len(batch)
    batch.vector()
    batch.signatures_by_id()
    batch.causally_ready({})
    if len(batch) <= SMALL_BATCH:
        list(batch.events())


def decode_frame(data: bytes) -> bool:
    try:
        p.decode(data)
    except p.RemoteError:
        return False
    return True


def check_session(proto: p.SyncProtocol, data: bytes) -> bool:
    """Feed one frame; it must not raise, and a refusal must close the session."""
    proto.receive_data(data)
    refused = False
    for fact in proto.facts():
        if isinstance(fact, p.Refused) and not fact.by_peer:
            refused = True
            if proto.state is not p.State.CLOSED or fact.refuse.code not in set(p.Code):
                raise Undocumented(f"refused with {fact.refuse.code!r} in {proto.state}")
    for frame in proto.data_to_send():
        p.decode(frame)  # what we answer is a message
    return not refused


def server_opening(data: bytes) -> bool:
    return check_session(p.SyncProtocol(p.Side.SERVER), data)


HELLO = p.encode(hello())


def server_streaming(data: bytes) -> bool:
    server = p.SyncProtocol(p.Side.SERVER)
    server.receive_data(HELLO)
    server.facts()
    server.accept(WELCOME)
    server.data_to_send()
    return check_session(server, data)


def client_streaming(data: bytes) -> bool:
    client = p.SyncProtocol(p.Side.CLIENT)
    client.send_hello(hello())
    client.data_to_send()
    client.receive_data(p.encode(WELCOME))
    client.facts()
    return check_session(client, data)


def decode_batch(data: bytes) -> bool:
    try:
        batch = Batch.from_bytes(data)
    except MalformedBatch:
        return False
    try:
        check_batch(batch)
    except InputError:
        return False
    return True


def decode_bundle(data: bytes) -> bool:
    try:
        batch = bundle.decode(data, npsn=NPSN).events()
    except BundleError:
        return False
    try:
        check_batch(batch)
    except InputError:
        return False
    return True


@dataclass(frozen=True)
class Decoder:
    decode: Callable[[bytes], bool]  # True: accepted; False: refused as documented
    seeds: Callable[[], tuple[bytes, ...]]
    sealed: bool = False  # bundles: most inputs get a correct digest again
    sessions: bool = False  # a session takes only some messages in its state


DECODERS = {
    "protocol.decode": Decoder(decode_frame, frame_seeds),
    "server (opening)": Decoder(server_opening, frame_seeds, sessions=True),
    "server (streaming)": Decoder(server_streaming, frame_seeds, sessions=True),
    "client (streaming)": Decoder(client_streaming, frame_seeds, sessions=True),
    "Batch.from_bytes": Decoder(decode_batch, batch_seeds),
    "bundle.decode": Decoder(decode_bundle, bundle_seeds, sealed=True),
}


# -- running --------------------------------------------------------------------------------

@dataclass
class Finding:
    """One kind of contract break: the exception (or crash, or memory spike), where it came
    from, and the shortest input seen that does it."""

    decoder: str
    kind: str  # the exception's class, "SIGSEGV" ..., or "memory"
    message: str
    where: str  # innermost selaras frame (file:line function), then pyarrow's if deeper
    function: str  # the innermost named selaras function: "events.signatures_by_id"
    data: bytes
    count: int = 1

    @property
    def key(self) -> str:
        """What tells findings apart across runs and edits (not the line)."""
        return f"{self.kind} in {self.function}"

    def __str__(self) -> str:
        return (f"{self.decoder}: {self.kind}: {self.message} at {self.where} ({self.count} "
                f"inputs; the shortest, {len(self.data)} bytes: {self.data.hex()})")


@dataclass
class Tally:
    decoder: str
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    seconds: float = 0.0
    start_rss: int = 0  # peak RSS (bytes) once set up, before the first input
    peak_rss: int = 0  # ... after the last
    findings: dict[str, Finding] = field(default_factory=dict)

    def add(self, other: Tally) -> None:
        self.inputs += other.inputs
        self.accepted += other.accepted
        self.refused += other.refused
        self.seconds += other.seconds
        self.start_rss = min((s for s in (self.start_rss, other.start_rss) if s), default=0)
        self.peak_rss = max(self.peak_rss, other.peak_rss)
        for f in other.findings.values():
            self.note(f)

    def note(self, f: Finding) -> None:
        held = self.findings.setdefault(f.key, f)
        if held is not f:
            held.count += f.count
            if len(f.data) < len(held.data):
                held.data = f.data


def peak_rss() -> int:
    """This process's peak resident set size in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


ROOT = Path(p.__file__).resolve().parents[1]  # the folder of engine/, server/ ...


def ours(filename: str) -> bool:
    """Whether a frame's file is selaras code but this file (pyarrow's Cython frames name
    relative paths such as pyarrow/ipc.pxi)."""
    path = Path(filename)
    return (path.is_absolute() and path.resolve().is_relative_to(ROOT)
            and path.resolve() != Path(__file__).resolve())


Frame = tuple[str, int, str]  # file, line, function


def place(frames: list[Frame]) -> tuple[str, str]:
    """Where a finding happened, from its frames (innermost last): the innermost selaras
    frame and the innermost of all where that is another (pyarrow's); and the innermost
    named selaras function, which tells findings apart."""
    mine = [f for f in frames if ours(f[0])]
    shown = [f"{Path(f[0]).name}:{f[1]} {f[2]}" for f in mine[-1:] + frames[-1:]]
    named = [f"{Path(f[0]).stem}.{f[2]}" for f in mine if not f[2].startswith("<")]
    if not shown:
        return "(no stack)", "?"
    return (shown[0] if shown[0] == shown[-1] else " -> ".join(shown)), (named or ["?"])[-1]


def exception_frames(exc: BaseException) -> list[Frame]:
    return [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__)]


def crash_frames(stderr: str) -> list[Frame]:
    """faulthandler's stack (innermost first): '  File "/x/engine/events.py", line 168 in f'."""
    found = re.findall(r'File "(.+)", line (\d+) in (\S+)', stderr)
    return [(name, int(line), function) for name, line, function in reversed(found)]


NOTHING = 2**64 - 1  # the index in a trace before any input


class Trace:
    """The input being decoded, kept in a shared file: after a crash it names the input."""

    def __init__(self, path: Path) -> None:
        with open(path, "wb") as f:
            f.write(struct.pack("<QQ", NOTHING, 0))  # a crash before the first input
            f.truncate(16 + MAX_INPUT * 2)
        self._file = open(path, "r+b")  # noqa: SIM115 - open while the chunk runs
        self._map = mmap.mmap(self._file.fileno(), 0)

    def record(self, index: int, data: bytes) -> None:
        self._map[16:16 + len(data)] = data
        self._map[:16] = struct.pack("<QQ", index, len(data))

    @staticmethod
    def read(path: Path) -> tuple[int, bytes]:
        raw = path.read_bytes()
        index, size = struct.unpack_from("<QQ", raw)
        return index, raw[16:16 + size]


def fuzz(name: str, start: int, end: int, seed: int, trace: Trace | None = None) -> Tally:
    """Inputs ``start`` to ``end`` (excluded) of seed ``seed`` through decoder ``name``: the
    inputs before ``start`` are made, not decoded, so any range is the same inputs."""
    decoder = DECODERS[name]
    rng = random.Random(f"{name}/{seed}")
    mutator = Mutator(rng, decoder.seeds())
    tally = Tally(name)
    for data in decoder.seeds():  # valid: refusing one is a finding (a session takes some)
        try:
            if not decoder.decode(data) and not decoder.sessions:
                tally.note(Finding(name, "refused", "a valid seed", "", name, data))
        except Exception as exc:
            tally.note(Finding(name, type(exc).__name__, f"a valid seed: {str(exc)[:200]}",
                               *place(exception_frames(exc)), data))
    pool = pa.default_memory_pool()
    tally.start_rss = peak_rss()
    began = time.perf_counter()
    for i in range(end):
        data = mutator.input()
        if decoder.sealed and rng.random() < 0.9:
            data = seal(data)
        if i < start:
            continue
        if trace is not None:
            trace.record(i, data)
        rss, arrow = peak_rss(), pool.max_memory()
        tally.inputs += 1
        try:
            accepted = decoder.decode(data)
        except Exception as exc:
            tally.note(Finding(name, type(exc).__name__, str(exc)[:200],
                               *place(exception_frames(exc)), data))
            continue
        grew = max(peak_rss() - rss, pool.max_memory() - arrow)
        if grew >= MEMORY_SPIKE:
            tally.note(Finding(name, "memory", f"grew {grew / MiB:,.0f} MiB", "", name, data))
        tally.accepted += accepted
        tally.refused += not accepted
    tally.seconds = time.perf_counter() - began
    tally.peak_rss = peak_rss()
    return tally


def run(name: str, start: int, end: int, seed: int, folder: Path) -> Tally:
    """``fuzz`` in a child process, so that a crash is a finding and not the end of the run:
    after one, the inputs before the one that crashed are run again, and those after it."""
    trace = folder / f"trace-{uuid.uuid4().hex}"
    child = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-m", "selaras.bench.fuzz", name,
         str(start), str(end), str(seed), str(trace)], capture_output=True, text=True)
    if child.returncode == 0:
        trace.unlink()
        return msgspec.json.decode(child.stdout, type=Tally)
    if child.returncode > 0:  # not a crash: the harness itself failed
        raise RuntimeError(f"fuzz {name} {start} {end} {seed}: {child.stderr}")
    crashed, data = Trace.read(trace)
    trace.unlink()
    if not start <= crashed < end:
        raise RuntimeError(f"fuzz {name} {start} {end} {seed} crashed before its inputs: "
                           f"{child.stderr}")
    tally = run(name, start, crashed, seed, folder) if crashed > start else Tally(name)
    signal = f"SIG{-child.returncode}"
    with contextlib.suppress(ValueError):
        signal = Signals(-child.returncode).name
    tally.note(Finding(name, signal, "the process crashed", *place(crash_frames(child.stderr)),
                       data))
    tally.inputs += 1
    if crashed + 1 < end:
        tally.add(run(name, crashed + 1, end, seed, folder))
    return tally


def main(args: list[str]) -> None:
    """The child of ``run``: one range, its tally as JSON on stdout."""
    name, start, end, seed, trace = args
    tally = fuzz(name, int(start), int(end), int(seed), Trace(Path(trace)))
    sys.stdout.write(msgspec.json.encode(tally).decode())


if __name__ == "__main__":
    main(sys.argv[1:])
