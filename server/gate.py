"""The centre's gate on a school's push (docs/protocol.md, R20).

With the gate on, the push of a session whose consent covers it is appended in
a transaction of its own (``CentreStore.push_transaction``), held open across
the session on a thread of its own: the writer and the other schools never
wait for it, and nothing else sees the push until it has passed. Each batch is
acknowledged with the school's vector as it was before the push: the batch is
not yet the centre's data, and the install keeps it pending. At the session's
``Done`` the rules of Validasi Lokal that a school can fix run over the school
as the transaction sees it (push included); any invalid finding rolls it all
back and the session is refused ``invalid_data_pending``, else it commits. A
session that ends any other way (refused, dropped, drained, timed out) rolls
back: the centre's data never holds what the gate did not pass.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from selaras.engine.clocks import VersionVector
from selaras.engine.events import Batch, MalformedBatch
from selaras.engine.stages import stage
from selaras.engine.store import (
    Admitted,
    CentreStore,
    PushTransaction,
    SchoolStore,
    StoreError,
)
from selaras.engine.validation import invalid_counts_sql, invalid_per_tab


class Gate:
    """One session's gated push: its transaction, on its own thread."""

    def __init__(self, centre: CentreStore, npsn: str) -> None:
        self.centre, self.npsn = centre, npsn
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="selaras-push")
        self._push: PushTransaction | None = None
        self._before: VersionVector = {}  # the school's vector when the push began

    def append(self, batch: Batch, now_ms: int,
               ) -> Future[tuple[Admitted, VersionVector]]:
        """Append a batch in the push's transaction (begun by the first); resolves to what
        the writer's ``append`` gives: the report or the batch's error, and the vector to
        acknowledge it with (the school's before the push)."""
        return self._thread.submit(self._append, batch, now_ms)

    def finish(self) -> Future[dict[str, int]]:
        """At ``Done``: check the school with the push and commit it; or, if it would hold
        invalid findings, roll it back and give them per tab."""
        return self._thread.submit(self._finish)

    def close(self) -> Future[None]:
        """Roll back whatever was not committed, then end the thread."""
        done = self._thread.submit(self._rollback)
        self._thread.shutdown(wait=False)
        return done

    def _append(self, batch: Batch, now_ms: int) -> tuple[Admitted, VersionVector]:
        try:
            if self._push is None:
                self._push = self.centre.push_transaction(self.npsn)
                self._before = self._push.store.vector()
            with stage("append"):
                return self._push.append(batch, now_ms), self._before
        except (StoreError, MalformedBatch) as exc:  # the session is refused: rolled back
            return exc, self._before

    def _finish(self) -> dict[str, int]:
        if self._push is None:
            return {}
        with stage("gate.check"):
            per_tab = invalid_findings(self._push.store)
        if per_tab:
            self._rollback()
        else:
            push, self._push = self._push, None
            with stage("gate.commit"):
                push.commit()
        return per_tab

    def _rollback(self) -> None:
        push, self._push = self._push, None
        if push is not None:
            push.rollback()


def invalid_findings(school: SchoolStore) -> dict[str, int]:
    """The school's invalid findings per tab, by the rules an install runs (Validasi
    Lokal), over the school's rows as the store's own transaction sees them."""
    return invalid_per_tab((str(r[0]), int(r[1])) for r in school.rule_rows(invalid_counts_sql()))


def refusal_text(per_tab: dict[str, int]) -> str:
    tabs = ", ".join(f"{tab} {n}" for tab, n in per_tab.items())
    return (f"Validasi di server pusat menemukan {sum(per_tab.values())} data invalid "
            f"({tabs}): perbaiki di Validasi Lokal, minta kepala sekolah mengonfirmasi ulang, "
            "lalu kirim lagi; perubahan ini belum diterima server pusat")

