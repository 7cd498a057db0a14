"""Centre signatures (docs/protocol.md R18): the centre signs its events, installs check them.

Events of a centre origin (``central_origins(npsn)``: the school's centre
origin and the Referensi origin) carry the centre's authority, so the centre
signs each one with its Ed25519 key over ``signed_bytes(event)``, the one
canonical encoding of an event, used both to sign and to check. Signatures
travel beside the events (``Batch.signatures``, one row per (origin, seq)) and
stores keep them in their log, so bundles carry them from install to install.

A store that knows the centre's public key refuses a batch holding a new
centre event whose signature is missing or wrong (``store.BadSignature``):
only the centre-origin rows are looked at, picked out with Arrow compute, so
a batch of school events costs two column comparisons.

Sans-I/O: keys come in as bytes or hex; the server keeps the private key in
its data folder, an install the public key in its meta.
"""

from __future__ import annotations

import functools
import uuid

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .clocks import VersionVector
from .events import SIGNATURE_SCHEMA, Batch, Event

# Signed bytes start with this, so a signature over an event is good for nothing else.
DOMAIN = b"selaras centre event v1\n"
SEED_BYTES = 32  # an Ed25519 private key is a 32-byte random seed


def signed_bytes(ev: Event) -> bytes:
    """What the centre signs for ``ev``: every part of it, in a fixed order.

    Values are in their canonical form (engine/values.py) and the changed
    fields and the causal context are sorted, so every replica encodes a
    received event to the very same bytes.
    """
    return DOMAIN + msgspec.msgpack.encode([
        ev.origin, ev.seq, ev.hlc, ev.entity, ev.row_id, ev.author, ev.role,
        sorted(ev.changes.items()), sorted((ev.context or {}).items())])


class CentreKey:
    """The centre's signing key; ``public`` (hex) is what installs hold."""

    def __init__(self, seed: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._key.public_key().public_bytes_raw().hex()

    def sign(self, batch: Batch) -> Batch:
        """``batch`` with the centre's signature of each of its events."""
        rows = [{"origin": uuid.UUID(ev.origin).bytes, "seq": ev.seq,
                 "sig": self._key.sign(signed_bytes(ev))} for ev in batch.events()]
        return Batch(batch.tables, batch.contexts,
                     pa.Table.from_pylist(rows, schema=SIGNATURE_SCHEMA))


def first_unsigned(batch: Batch, public: str, vector: VersionVector,
                   central: frozenset[str]) -> tuple[str, int, str] | None:
    """The first new centre event of ``batch`` without a good signature, else None.

    New: of an origin in ``central``, above ``vector`` (what is held needs no
    check: a different event under a held id is a collision anyway). Returns
    (origin, seq, "missing" or "wrong"); "wrong" also when any of several
    signatures given for one event fails.
    """
    new = Batch({name: _new_central(t, vector, central) for name, t in batch.tables.items()},
                _new_central(batch.contexts, vector, central))
    if not len(new):
        return None
    events = sorted(new.events(), key=lambda ev: ev.id)
    given: dict[tuple[str, int], list[bytes]] = {}
    for r in _new_central(batch.signatures, vector, central).to_pylist():
        given.setdefault((str(r["origin"]), r["seq"]), []).append(r["sig"])
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
    except ValueError:  # a damaged key in the meta: nothing can be trusted
        return (*events[0].id, "wrong")
    for ev in events:
        sigs = given.get(ev.id)
        if not sigs:
            return (*ev.id, "missing")
        for sig in sigs:
            try:
                key.verify(sig, signed_bytes(ev))
            except InvalidSignature:
                return (*ev.id, "wrong")
    return None


def _new_central(t: pa.Table, vector: VersionVector, central: frozenset[str]) -> pa.Table:
    """The rows of ``t`` (with origin and seq columns) of a central origin above ``vector``."""
    if not t.num_rows:
        return t
    col = t["origin"]
    origins = pa.chunked_array([c.storage for c in col.chunks], type=pa.binary(16))
    masks = [pc.and_(pc.equal(origins, pa.scalar(uuid.UUID(o).bytes, pa.binary(16))),
                     pc.greater(t["seq"], vector.get(o, 0))) for o in sorted(central)]
    return t.filter(functools.reduce(pc.or_, masks)) if masks else t.slice(0, 0)
