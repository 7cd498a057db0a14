"""A school's pushed events as the centre takes them, however they come: a sync
session's batches or a bundle the dinas imports (``server/dinas.py``)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from selaras.engine import consent
from selaras.engine.consent import Consent
from selaras.engine.events import Batch, MalformedBatch
from selaras.engine.protocol import Code
from selaras.engine.refusals import TEXT, Detail
from selaras.engine.stages import stage
from selaras.engine.store import BadSignature, EventCollision

from .accounts import PRINCIPAL


class Refusal(msgspec.Struct, frozen=True):
    code: Code
    message: str


@stage("decode")
def admissible(payload: bytes, count: int, install: str, account: tuple[str, str],
               covered: int | None = None, no_consent: str = Detail.NO_CONSENT,
               ) -> Batch | Refusal:
    """The pushed batch as the centre stores it, or why it is refused: it must decode,
    hold ``count`` events, all of ``install``'s origin, none past ``covered`` (the seq
    the principal's consent covers: -1 without one, None when no consent is needed);
    their author and role become the session's ``account`` (docs/security.md)."""
    try:
        batch = Batch.from_bytes(payload)
    except MalformedBatch as exc:
        return Refusal(Code.MALFORMED_MESSAGE, f"{Detail.BAD_BATCH} ({exc.reason})"[:200])
    if len(batch) != count:
        return Refusal(Code.MALFORMED_MESSAGE, Detail.BATCH_COUNT)
    if not only_origin(batch, install):
        return Refusal(Code.FORBIDDEN, TEXT[Code.FORBIDDEN])
    if covered is not None and count:
        if covered < 0:
            return Refusal(Code.NOT_PRINCIPAL, no_consent)
        if batch.max_seq() > covered:
            return Refusal(Code.NOT_PRINCIPAL, Detail.NOT_COVERED)
    return batch.authored(*account)


def refusal_of(error: object) -> tuple[Code, str]:
    """The refusal for a batch the store would not take."""
    match error:
        case EventCollision():
            return Code.EVENT_COLLISION, TEXT[Code.EVENT_COLLISION]
        case MalformedBatch():
            return Code.MALFORMED_MESSAGE, f"{Detail.BAD_BATCH} ({error.reason})"[:200]
        case BadSignature():
            return Code.BAD_SIGNATURE, TEXT[Code.BAD_SIGNATURE]
    return Code.INTERNAL_ERROR, TEXT[Code.INTERNAL_ERROR]


def only_origin(batch: Batch, origin: str) -> bool:
    """True if every event (and causal context, signature) of ``batch`` is of ``origin`` (R6)."""
    try:
        mine = pa.scalar(uuid.UUID(origin).bytes, pa.binary(16))
    except ValueError:
        return False
    cols = [t["origin"] for t in batch.tables.values()] + [batch.contexts["origin"],
                                                           batch.signatures["origin"]]
    for col in cols:
        if len(col) == 0:
            continue
        storage = pa.chunked_array([c.storage for c in col.chunks], type=pa.binary(16))
        if not pc.all(pc.equal(storage, mine)).as_py():
            return False
    return True


def principal_consent(given: Consent | None, npsn: str, install: str,
                      account: dict[str, Any] | None) -> Consent | None:
    """``given`` if a principal of school ``npsn`` (``account``, its signer's, as the
    registry holds it: enabled) signed it for ``install``; else None (R20)."""
    if given is None or given.npsn != npsn or given.install != install:
        return None
    if (account is None or account["disabled"] or account["role"] != PRINCIPAL
            or not consent.verify(given, account["public_key"] or "")):
        return None
    return given
