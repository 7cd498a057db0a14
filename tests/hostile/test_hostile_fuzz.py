"""docs/security.md, the wire and bundles: every decoder of outside bytes, fuzzed.

A peer's frame, a pushed batch and a bundle file may hold anything. Each decoder
(bench/fuzz.py names them and their contracts) must answer with its documented
error and nothing else: ``protocol.decode`` RemoteError; a session receiving a
frame never raises, a bad frame becomes a refusal; ``Batch.from_bytes``
MalformedBatch, and a batch it accepted survives being read (InputError at
worst); ``bundle.decode`` and ``Bundle.events`` BundleError.

A short run (bench/test_fuzz_bench.py is the long one): Hypothesis with random
bytes, edited seeds and msgpack documents of the real fields holding hostile
values, derandomized so that CI sees the same inputs; then a seeded mutation loop
per decoder, each in a child process so that a crash is a failure with its input
rather than the end of the suite, and that watches memory per input.

What the fuzz found once is kept below, one test per finding, with its input.
"""

from __future__ import annotations

import contextlib
import struct
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selaras.bench import fuzz
from selaras.engine import bundle
from selaras.engine.errors import InputError
from selaras.engine.events import Batch, BatchFile, MalformedBatch
from selaras.engine.schema import BY_NAME

FUZZ = settings(max_examples=200, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LOOP_INPUTS, LOOP_SEED = 8_000, 2024  # per decoder


def decode(name: str, data: bytes) -> None:
    """One input through decoder ``name``: any undocumented exception fails the test."""
    fuzz.DECODERS[name].decode(data)


# -- Hypothesis: random bytes, edited seeds, hostile msgpack documents ------------------------

DECODERS = list(fuzz.DECODERS)
FRAMES = ["protocol.decode", "server (opening)", "server (streaming)", "client (streaming)"]


def sealed(body: bytes) -> bytes:
    """A bundle around ``body`` with the right digest, as an attacker would make it."""
    return fuzz.seal(bundle.MAGIC + bytes(32) + body)


@pytest.mark.parametrize("name", DECODERS)
@FUZZ
@given(data=st.binary(max_size=2048) | st.binary(max_size=2048).map(sealed))
def test_random_bytes(name: str, data: bytes) -> None:
    decode(name, data)


EDIT = st.tuples(st.sampled_from(["set", "insert", "delete", "cut", "repeat"]),
                 st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8))


def edited(seed: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    """``seed`` with byte edits at positions taken modulo its length."""
    data = seed
    for op, at, value in edits:
        at %= len(data) + 1
        data = {"set": data[:at] + value + data[at + len(value):],
                "insert": data[:at] + value + data[at:],
                "delete": data[:at] + data[at + len(value):],
                "cut": data[:at],
                "repeat": data[:at] + data[at:at + 64 * len(value)] * 3 + data[at:]}[op]
    return data


@pytest.mark.parametrize("name", DECODERS)
@FUZZ
@given(data=st.data())
def test_edited_seeds(name: str, data: st.DataObject) -> None:
    decoder = fuzz.DECODERS[name]
    mutated = edited(data.draw(st.sampled_from(decoder.seeds())),
                     data.draw(st.lists(EDIT, min_size=1, max_size=4)))
    decode(name, fuzz.seal(mutated) if decoder.sealed and data.draw(st.booleans()) else mutated)


# Any msgpack value: what a field may be given instead of its own type.
LEAF = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
        | st.text(max_size=16) | st.binary(max_size=16)
        | st.sampled_from([2**64 - 1, -(2**63), "x" * 5_000, bytes(5_000)]))
MSGPACK = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


@st.composite
def reshaped(draw: st.DrawFn, doc: dict[str, object],
             values: st.SearchStrategy[object] = MSGPACK) -> dict[str, object]:
    """A msgpack map with some fields given other values or dropped, maybe one added."""
    out = dict(doc)
    for key in draw(st.lists(st.sampled_from(sorted(doc)), max_size=3, unique=True)):
        if draw(st.booleans()):
            out[key] = draw(values)
        else:
            del out[key]
    if draw(st.integers(0, 4)) == 0:
        out[draw(st.text(max_size=8))] = draw(values)
    return out


def documents(seeds: tuple[bytes, ...]) -> list[dict[str, object]]:
    return [msgspec.msgpack.decode(s) for s in seeds]


@pytest.mark.parametrize("name", FRAMES)
@FUZZ
@given(data=st.data())
def test_messages_with_hostile_fields(name: str, data: st.DataObject) -> None:
    doc = data.draw(st.sampled_from(documents(fuzz.frame_seeds())).flatmap(reshaped))
    decode(name, msgspec.msgpack.encode(doc))


def arrow_blobs() -> list[bytes]:
    """Every Arrow IPC stream inside the batch seeds: tables, contexts, signatures."""
    blobs = []
    for seed in fuzz.batch_seeds():
        f = msgspec.msgpack.decode(seed, type=BatchFile)
        blobs += [*f.tables.values(), f.contexts] + ([f.signatures] if f.signatures else [])
    return blobs


# A blob where an Arrow stream goes: a real one (maybe another entity's), edited, or junk.
BLOB = (st.sampled_from(arrow_blobs())
        | st.builds(edited, st.sampled_from(arrow_blobs()), st.lists(EDIT, min_size=1,
                                                                      max_size=2))
        | st.binary(max_size=64))
BATCH_DOC = st.fixed_dictionaries(
    {"tables": st.dictionaries(st.sampled_from(sorted(BY_NAME)) | st.text(max_size=12), BLOB,
                               max_size=3),
     "contexts": BLOB},
    optional={"signatures": BLOB, "extra": MSGPACK})


@FUZZ
@given(doc=BATCH_DOC | st.sampled_from(documents(fuzz.batch_seeds())).flatmap(reshaped))
def test_batches_of_hostile_arrow_streams(doc: dict[str, object]) -> None:
    decode("Batch.from_bytes", msgspec.msgpack.encode(doc))


BUNDLE_DOCS = [msgspec.msgpack.decode(b[40:]) for b in fuzz.bundle_seeds()]


@FUZZ
@given(doc=st.sampled_from(BUNDLE_DOCS).flatmap(reshaped),
       batch=st.none() | BATCH_DOC.map(msgspec.msgpack.encode))
def test_bundles_with_hostile_fields(doc: dict[str, object], batch: bytes | None) -> None:
    if batch is not None:
        doc["batch"] = batch
    decode("bundle.decode", sealed(msgspec.msgpack.encode(doc)))


# -- the seeded mutation loop, in child processes --------------------------------------------

@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Future[fuzz.Tally]]:
    """LOOP_INPUTS mutated inputs per decoder, two decoders at a time."""
    folder = tmp_path_factory.mktemp("fuzz")
    with ThreadPoolExecutor(2) as pool:
        return {name: pool.submit(fuzz.run, name, 0, LOOP_INPUTS, LOOP_SEED, folder)
                for name in DECODERS}


@pytest.mark.parametrize("name", DECODERS)
def test_seeded_mutations(loop: dict[str, Future[fuzz.Tally]], name: str) -> None:
    tally = loop[name].result()
    assert tally.inputs == LOOP_INPUTS
    assert tally.accepted and tally.refused  # the mutations reach past the first check
    assert not tally.findings, "\n".join(map(str, tally.findings.values()))


# -- what the fuzz found (fixed), one test each ----------------------------------------

def batch_with(entity: str, column: str, values: pa.Array) -> bytes:
    """The seed batch with one column of table ``entity`` replaced by ``values``."""
    batch = Batch.from_bytes(fuzz.batch_seeds()[0])
    table = batch.tables[entity]
    i = table.schema.get_field_index(column)
    values = pa.concat_arrays([values, table[i].combine_chunks()[len(values):]])
    tables = {**batch.tables, entity: table.set_column(i, table.schema.field(i), values)}
    return Batch(tables, batch.contexts, batch.signatures).to_bytes()


def read(data: bytes) -> None:
    """Decode a batch and read it as a receiver does; MalformedBatch or InputError at worst."""
    with contextlib.suppress(InputError):  # MalformedBatch among them
        fuzz.check_batch(Batch.from_bytes(data))


def test_an_empty_arrow_stream_is_a_malformed_batch() -> None:
    # {"tables": {}, "contexts": b"", "signatures": b""}: pyarrow's MessageReader raises
    # StopIteration on an empty stream. A Future cannot carry it, so at the centre the
    # session's await asyncio.to_thread(admissible, ...) never returns: no refusal, the
    # session hangs until the peer leaves.
    data = bytes.fromhex("83a67461626c657380a8636f6e7465787473c400aa7369676e617475726573c400")
    with pytest.raises(MalformedBatch):
        Batch.from_bytes(data)
    with pytest.raises(bundle.BundleCorrupt):
        bundle.decode(sealed(msgspec.msgpack.encode({**BUNDLE_DOCS[0], "batch": data})),
                      npsn=fuzz.NPSN).events()


def test_a_null_change_mask_is_refused() -> None:
    read(batch_with("peserta_didik", "mask", pa.array([None], pa.uint64())))


def test_a_null_seq_is_refused() -> None:
    read(batch_with("peserta_didik", "seq", pa.array([None], pa.int64())))


def test_a_null_in_a_causal_context_is_refused() -> None:
    batch = Batch.from_bytes(fuzz.batch_seeds()[0])
    contexts = batch.contexts.set_column(3, "held", pa.array([None], pa.int64()))
    read(Batch(batch.tables, contexts, batch.signatures).to_bytes())


def signature_offsets_past_their_data() -> bytes:
    """The signed seed batch, its one signature's offsets (0, 64) made (0, 2**31 - 1) in the
    Arrow body: the signatures table is not validated as the entity tables are."""
    f = msgspec.msgpack.decode(fuzz.batch_seeds()[3], type=BatchFile)
    at = f.signatures.rindex(struct.pack("<ii", 0, 64)) + 4  # the body follows the metadata
    lying = f.signatures[:at] + struct.pack("<i", 2**31 - 1) + f.signatures[at + 4:]
    return msgspec.msgpack.encode(BatchFile(f.tables, f.contexts, lying))


def test_signature_offsets_past_their_data_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "batch"
    data.write_bytes(signature_offsets_past_their_data())
    # In a child: what this does is crash the process.
    child = subprocess.run([sys.executable, "-X", "faulthandler", "-c", (
        "import sys; from pathlib import Path; from selaras.bench.fuzz import decode_batch; "
        "decode_batch(Path(sys.argv[1]).read_bytes())"), str(data)],
        capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]


def test_a_bundle_signature_of_no_origin_is_refused() -> None:
    batch = Batch.from_bytes(fuzz.batch_seeds()[3])
    signatures = batch.signatures.set_column(0, "origin", pa.array([None], pa.uuid()))
    data = bundle.encode(npsn=fuzz.NPSN, origin=fuzz.INSTALL, vector={},
                         batch=Batch(batch.tables, batch.contexts, signatures))
    with pytest.raises(bundle.BundleError):
        fuzz.check_batch(bundle.decode(data, npsn=fuzz.NPSN).events())
