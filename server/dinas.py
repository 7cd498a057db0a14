"""The offline route through the dinas: a school's bundle on a flash disk, both ways.

``import_bundle`` applies a school's bundle (``selaras bundle export --for-centre``,
the principal's consent inside) exactly as a sync session's push: the install
must be the school's and let in (not revoked, the current registration code, its
account enabled); the principal's consent must cover every event (R20); the
events are appended in a push transaction of their own, Validasi Lokal's rules
run on the school with them, and it commits, or keeps nothing
(``invalid_data_pending``). Importing it again changes nothing. Each import is
kept in the school's history, mode ``bundle``. ``export_bundle`` gives the school
the centre's events it lacks, which it imports with ``selaras bundle import``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from selaras.engine import bundle, consent
from selaras.engine.clocks import VersionVector
from selaras.engine.errors import InputError
from selaras.engine.events import MalformedBatch, centre_origin
from selaras.engine.protocol import Code
from selaras.engine.refusals import TEXT, Detail
from selaras.engine.store import CentreStore, Registry, StoreError

from . import manajemen, validasi_pusat
from .gate import invalid_findings, refusal_text
from .push import Refusal, admissible, principal_consent, refusal_of


class BundleRefused(InputError):
    """The centre refused the bundle as it would refuse the sync; nothing was kept."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"bundel ditolak ({self.code}): {self.message}"


@dataclass(frozen=True)
class Imported:
    npsn: str
    install: str
    events: int  # in the bundle
    applied: int  # new to the centre
    principal: str
    consent: str  # the consent's digest


def import_bundle(centre: CentreStore, registry: Registry, data: bytes,
                  now_ms: int) -> Imported:
    b = bundle.decode(data)
    record = {"session": uuid.uuid4().hex, "npsn": b.npsn, "install": b.origin,
              "mode": "bundle", "started_ms": now_ms, "events_out": 0, "bytes_in": len(data),
              "bytes_out": 0}
    try:
        done = _apply(centre, registry, b, data, now_ms, record)
    except BundleRefused as exc:
        if registry.school(b.npsn) is not None:
            registry.record_session({**record, "outcome": f"refused:{exc.code}",
                                     "ended_ms": now_ms})
        raise
    registry.record_session({**record, "outcome": "done", "ended_ms": now_ms})
    if done.applied:
        manajemen.follow_home_school(centre, done.npsn, now_ms)
        validasi_pusat.after_change(centre, done.npsn, now_ms)
    return done


def _apply(centre: CentreStore, registry: Registry, b: bundle.Bundle, data: bytes,
           now_ms: int, record: dict[str, object]) -> Imported:
    school = registry.school(b.npsn)
    install = registry.install(b.origin, b.npsn)
    if school is None or install is None:
        raise BundleRefused(Code.BAD_CREDENTIAL, "bundel dari instalasi yang tidak dikenal "
                            f"server pusat (sekolah {b.npsn})")
    if install["revoked"]:
        raise BundleRefused(Code.INSTALL_REVOKED, TEXT[Code.INSTALL_REVOKED])
    if school["generation"] != install["generation"]:
        raise BundleRefused(Code.CODE_RESET, TEXT[Code.CODE_RESET])
    account = registry.account(b.npsn, install["email"])
    if account is not None and account["disabled"]:
        raise BundleRefused(Code.ACCOUNT_DISABLED, TEXT[Code.ACCOUNT_DISABLED])
    given = consent.decode(b.consent)
    signer = None if given is None else registry.account(b.npsn, given.account)
    agreed = principal_consent(given, b.npsn, b.origin, signer)
    record.update(account=install["email"], principal=agreed.account if agreed else None,
                  consent=agreed.digest if agreed else None)
    role = account["role"] if account else "operator"
    events = b.events()
    record["events_in"] = len(events)
    batch = admissible(events.to_bytes(), len(events), b.origin, (install["email"], role),
                       agreed.vector.get(b.origin, 0) if agreed else -1,
                       Detail.BAD_CONSENT if b.consent else Detail.NO_CONSENT)
    if isinstance(batch, Refusal):
        raise BundleRefused(batch.code, batch.message)
    push, committed = centre.push_transaction(b.npsn), False
    try:
        report = push.append(batch, now_ms)
        per_tab = invalid_findings(push.store)
        record["invalid"] = sum(per_tab.values())
        if per_tab:
            raise BundleRefused(Code.INVALID_DATA_PENDING, refusal_text(per_tab))
        push.commit()
        committed = True
    except (StoreError, MalformedBatch) as exc:
        raise BundleRefused(*refusal_of(exc)) from None
    finally:
        if not committed:
            push.rollback()
    return Imported(b.npsn, b.origin, len(events), report.applied,
                    agreed.account if agreed else "", agreed.digest if agreed else "")


def export_bundle(centre: CentreStore, npsn: str, theirs: VersionVector) -> tuple[bytes, int]:
    """The centre's events for school ``npsn`` that ``theirs`` lacks, as a bundle the
    school imports (``selaras bundle import``): its origin is the centre's."""
    store = centre.school(npsn)
    batch = store.events_after(theirs)
    data = bundle.encode(npsn=npsn, origin=centre_origin(npsn), vector=store.vector(),
                         batch=batch)
    return data, len(batch)
