"""Re-registering a copied or restored data folder (``selaras init --reregister``).

A data folder copied to a second PC, or restored from an old backup, writes
under an origin that has moved on elsewhere, and the centre refuses its push
with ``event_collision`` (client/sync.py). Re-registering makes the folder a
new install and loses nothing of it:

1. its last sync must have been refused for that, or for ``code_reset``;
   anything else is refused before the centre is asked;
2. a new install (origin and credential) is registered, and the school's
   whole log pulled into a fresh store beside the old one;
3. every event of the old origin that the centre does not hold identically
   is re-issued as the new origin's, in seq order (``reissue``); events of
   other installs that the centre lacks (from bundles) are kept as they are;
4. the old file stays beside the new one as a backup, and the fresh store
   takes its place by one rename: killed at any point, the folder holds the
   old install, whole and in use, or the new one, complete.

Errors are ``ClientError`` (one line); a refusal changes nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from selaras.engine.clocks import VersionVector, merge_vectors
from selaras.engine.events import Batch, Event
from selaras.engine.replica import Identity
from selaras.engine.storage import open_install
from selaras.engine.store import EventCollision

from .install import DB_FILE, ClientError, Install, Session, remove_db

# The sync outcomes (sync_history) that re-registering mends.
MENDS = ("refused:event_collision", "refused:code_reset")
HISTORY_LIMIT = 1000


@dataclass
class CarriedOver:
    """What the new install took over from the old folder's log."""

    reissued: int = 0  # events of the old origin the centre lacks, now the new origin's
    kept: int = 0  # other installs' events the centre lacks, kept as they are
    dropped: dict[str, int] = field(default_factory=dict)  # origin -> events that differ
    # from the centre's copy of that origin (they stay in the backup only)


def reissue(mine: Iterable[Event], held: Mapping[int, Event], origin: str) -> list[Event]:
    """The events of ``mine`` (one origin's, in seq order) that ``held`` (the centre's
    events of that origin, by seq) lacks or holds differently, as ``origin``'s 1, 2, 3 ...

    Each keeps its entity, row, changes, author, role and clock: re-registering
    changes who wrote it, not when, so last-writer-wins orders it as before. Its
    causal context is what the folder had seen when it wrote: the other origins'
    contexts, and the old origin up to the last seq before the first divergence.
    A write concurrent with the original PC's later writes stays concurrent (a
    conflict both sides can see), rather than silently overriding them.
    """
    mine = list(mine)
    old = mine[0].origin if mine else ""
    shared = 0  # the old origin's events 1..shared are the centre's, as held
    for ev in mine:
        if held.get(ev.seq) != ev:
            break
        shared = ev.seq
    out: list[Event] = []
    seen: VersionVector = {}
    last: VersionVector = {}
    for ev in mine:
        seen = merge_vectors(seen, ev.context or {})
        if held.get(ev.seq) == ev:
            continue
        context = {**seen, old: shared} if shared else dict(seen)
        out.append(Event(origin=origin, seq=len(out) + 1, hlc=ev.hlc, entity=ev.entity,
                         row_id=ev.row_id, changes=ev.changes, author=ev.author,
                         role=ev.role, context=context if context != last else None))
        last = context
    return out


def check(session: Session, npsn: str) -> None:
    """Refuse (ClientError) unless re-registering is what this folder needs."""
    me = session.identity
    if npsn != me.npsn:
        raise ClientError(f"this data folder holds school {me.npsn}, not {npsn}; "
                          "nothing was changed")
    if "token" not in session.store.meta():
        raise ClientError("this data folder was never registered with a centre (an offline "
                          "install); nothing was changed")
    for record in session.store.history(HISTORY_LIMIT):
        if record["outcome"] in MENDS:
            return
        if record["mode"] == "sync" and record["outcome"] == "ok":
            break
    raise ClientError("this data folder's last sync was not refused as a copied or restored "
                      "folder (event_collision) or for a reset registration code, so it needs "
                      "no re-registering; nothing was changed")


class Reregistration:
    """The old install, open (and so locked against other selaras processes), and
    the fresh store being built beside it; see ``reregistering``."""

    def __init__(self, install: Install, old: Session) -> None:
        self.install, self.old = install, old
        self.new: Session | None = None
        self.aside = install.folder / f".{DB_FILE}.reregister"
        self.backup = install.folder / f"{DB_FILE}.{old.identity.origin[:8]}.bak"

    def start(self, *, origin: str, token: str, url: str, user: str, role: str,
              centre_key: str, kode_hash: str = "") -> Session:
        """The fresh store of the newly registered install (empty: pull into it)."""
        remove_db(self.aside)  # left by an attempt that was killed
        me = self.old.identity
        identity = Identity(npsn=me.npsn, origin=origin, author=user, role=role)
        store = open_install(self.aside, identity.central)
        self.new = Session(store, identity)
        # The credential first: the centre shows it once.
        store.set_meta(npsn=me.npsn, origin=origin, user=user, role=role, token=token,
                       url=url, centre_key=centre_key, kode_hash=kode_hash,
                       reregistered_from=me.origin)
        return self.new

    def carry_over(self) -> CarriedOver:
        """Take over what the old folder holds and the centre (the pulled store) lacks."""
        assert self.new is not None
        old, new = self.old.store, self.new.store
        me = self.old.identity.origin
        ours, theirs = old.vector(), new.vector()
        done = CarriedOver()
        for origin, top in sorted(ours.items()):
            if origin == me or top <= theirs.get(origin, 0):
                continue
            try:  # from the first seq, so that a held event that differs is noticed
                done.kept += new.append(old.events_between(origin, 0, top)).applied
            except EventCollision:
                done.dropped[origin] = top - theirs.get(origin, 0)
        mine = sorted(old.events_between(me, 0, ours.get(me, 0)).events(),
                      key=lambda ev: ev.seq)
        held = {ev.seq: ev for ev in new.events_between(me, 0, theirs.get(me, 0)).events()}
        events = reissue(mine, held, self.new.identity.origin)
        if events:
            new.append(Batch.from_events(events))
        done.reissued = len(events)
        return done

    def discard(self) -> None:
        if self.new is not None:
            self.new.store.close()
        remove_db(self.aside)

    def close_new(self) -> None:
        """Close the fresh store; it must be whole in its one file (no WAL left)."""
        assert self.new is not None, "start() was not called"
        self.new.store.close()
        if _wal(self.aside).exists():
            raise ClientError("the new store could not be written completely (a WAL was "
                              "left); nothing was changed")

    def swap(self) -> None:
        """Keep the old file as the backup, then move the fresh store into its place.

        The old file is closed (so checkpointed). Its backup is a hard link (a
        copy where links are not supported) made under a temporary name and
        renamed; then one rename puts the new store in place.
        """
        db = self.install.db
        if _wal(db).exists():
            raise ClientError(f"{db} could not be checkpointed (its WAL is still there); "
                              "nothing was changed, try again")
        part = self.backup.with_name(self.backup.name + ".part")
        remove_db(part)
        try:
            os.link(db, part)
        except OSError:  # a file system without hard links
            shutil.copyfile(db, part)
        os.replace(part, self.backup)
        os.replace(self.aside, db)
        self.install.forget_identity()


@contextmanager
def reregistering(install: Install, npsn: str) -> Iterator[Reregistration]:
    """Open the old install and check it; the caller registers, ``start``s, pulls and
    ``carry_over``s. Leaving the block without an error swaps the new store in;
    with one, the fresh store is removed and the old folder is as it was."""
    with install.open() as old:
        check(old, npsn)
        rereg = Reregistration(install, old)
        try:
            yield rereg
            rereg.close_new()
        except BaseException:
            rereg.discard()
            raise
    try:
        rereg.swap()
    except BaseException:
        remove_db(rereg.aside)
        raise


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")
