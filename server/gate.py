"""The centre's gate on a school's push (docs/protocol.md, R20).

With the gate on, a push is checked whole before any of it counts: each batch
of a session whose consent covers it is kept in the spool (``registry.spool``,
durable, acknowledged with the centre's vector as it was: the batch is not yet
the centre's data); at the session's ``Done`` the spooled batches are appended
in one transaction and Validasi Lokal's rules that a school can fix run over
the school's state as it would then be. Any invalid finding rolls it all back,
spool included, and the session is refused ``invalid_data_pending``: the
centre's data never holds what the gate refused. The install sends the same
changes again (they stay pending there) under a new consent once it is fixed.

Both functions run on the writer thread (``CentreWriter.call``).
"""

from __future__ import annotations

import msgspec

from selaras.engine.clocks import VersionVector
from selaras.engine.events import Batch
from selaras.engine.store import AppendReport, CentreStore, Registry, SchoolStore
from selaras.engine.validation import invalid_counts_sql, invalid_per_tab


class _Invalid(Exception):
    def __init__(self, per_tab: dict[str, int]) -> None:
        super().__init__(per_tab)
        self.per_tab = per_tab


def spool(centre: CentreStore, registry: Registry, npsn: str, origin: str,
          batch: Batch) -> tuple[AppendReport, VersionVector]:
    """Keep one admissible batch of a gated push; the school's vector, unchanged."""
    lowest = min(int(t["seq"].to_numpy().min()) for t in batch.tables.values())
    with centre.transaction():
        registry.spool(npsn, origin, lowest, batch.max_seq(), batch.to_bytes())
    return AppendReport(), centre.school(npsn).vector()


def commit(centre: CentreStore, registry: Registry, npsn: str, origin: str,
           now_ms: int) -> AppendReport | dict[str, int] | None:
    """Append ``origin``'s spooled batches and check the school: the report, or the invalid
    findings per tab that refused it all (nothing kept); None if nothing was spooled.
    Store errors (an event collision, say) come out as raised, with nothing kept."""
    try:
        with centre.transaction():
            payloads = registry.unspool(npsn, origin)
            if not payloads:
                return None
            total = AppendReport()
            for payload in payloads:
                r = centre.admit(npsn, Batch.from_bytes(payload), now_ms)
                total = msgspec.structs.replace(
                    total, applied=total.applied + r.applied,
                    duplicates=total.duplicates + r.duplicates,
                    held_back=total.held_back + r.held_back,
                    clock_bounded=total.clock_bounded + r.clock_bounded)
            per_tab = invalid_findings(centre.school(npsn))
            if per_tab:
                raise _Invalid(per_tab)
            return total
    except _Invalid as refused:
        return refused.per_tab


def invalid_findings(school: SchoolStore) -> dict[str, int]:
    """The school's invalid findings per tab, by the rules an install runs (Validasi
    Lokal), over the school's rows as the store's own transaction sees them."""
    _, rows = school.query(invalid_counts_sql())
    return invalid_per_tab((str(r[0]), int(r[1])) for r in rows)


def refusal_text(per_tab: dict[str, int]) -> str:
    tabs = ", ".join(f"{tab} {n}" for tab, n in per_tab.items())
    return (f"Validasi di server pusat menemukan {sum(per_tab.values())} data invalid "
            f"({tabs}): perbaiki di Validasi Lokal, minta kepala sekolah mengonfirmasi ulang, "
            "lalu kirim lagi; perubahan ini belum diterima server pusat")
