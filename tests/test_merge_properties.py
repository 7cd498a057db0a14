"""The merge laws, on random histories of three installs and the centre.

Whatever the delivery order, repetition or cutting into partial bundles,
every replica ends with the same rows, checksums and conflicts; the DuckDB
merge and the PostgreSQL store equal the reference fold; incremental
materialisation equals a rebuild.
"""

import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selaras.engine.events import Batch, central_origins
from selaras.engine.merge import fold, written_once
from selaras.engine.storage import DuckDBStore
from selaras.engine.storage.pg_centre import PgCentre
from selaras.engine.storage.pg_log import PgStore
from selaras.engine.store import MemoryStore
from selaras.engine.testing import Simulation

NPSN = "20100001"
INSTALLS = ["a0000000-0000-4000-8000-000000000001", "b0000000-0000-4000-8000-000000000002",
            "c0000000-0000-4000-8000-000000000003"]
ENTITIES = ("peserta_didik", "sekolah", "koreksi_jam")
ROWS = {"peserta_didik": ["d0000000-0000-4000-8000-00000000000d",
                          "d0000000-0000-4000-8000-00000000000e"],
        "sekolah": ["5e000000-0000-4000-8000-00000000005e"]}
# Fields of every kind of ownership: school, verval, centre (and the verification flag).
FIELDS = {"peserta_didik": ["nama", "nik", "soft_delete", "status_verval_pd"],
          "sekolah": ["nama", "email"]}
VALUES = {"nama": st.sampled_from(["Budi", "Ani", None]),
          "nik": st.sampled_from(["1", "2", ""]),
          "soft_delete": st.sampled_from([0, 1]),
          "status_verval_pd": st.sampled_from([1, 1, 0]),
          "email": st.sampled_from(["a@b", "c@d"])}

write = st.tuples(st.just("write"), st.integers(0, 3),
                  st.sampled_from(["peserta_didik", "peserta_didik", "sekolah"]),
                  st.integers(0, 3), st.data())
swap = st.tuples(st.just("sync"), st.integers(0, 3), st.integers(0, 3))
# An install syncs to the centre, which bounds its last few events (merge rule 5).
bound = st.tuples(st.just("bound"), st.integers(1, 3), st.integers(0, 3))
YEARS_AHEAD = 3 * 365 * 86_400_000


@st.composite
def histories(draw):
    skews = draw(st.lists(st.integers(-5_000, 5_000), min_size=4, max_size=4))
    if draw(st.booleans()):
        skews[draw(st.integers(1, 3))] = YEARS_AHEAD
        ops = st.one_of(write, write, swap, bound)
    else:
        ops = st.one_of(write, write, swap)
    sim = Simulation(NPSN, INSTALLS, skews)
    for op in draw(st.lists(ops, min_size=8, max_size=30)):
        if op[0] == "sync":
            sim.sync(op[1], op[2])
            continue
        if op[0] == "bound":
            origin = INSTALLS[op[1] - 1]
            sim.sync(op[1], 0)
            top = sim.replicas[0].vector().get(origin, 0)
            if top:
                sim.write(0, "koreksi_jam", f"e0000000-0000-4000-8000-{len(sim.events):012d}",
                          {"install_id": origin, "seq_from": max(1, top - op[2]),
                           "seq_to": top, "hlc_from": sim.replicas[0].clock.tick(sim.now_ms)})
            continue
        _, who, entity, row, data = op
        names = data.draw(st.lists(st.sampled_from(FIELDS[entity]), min_size=1, max_size=2,
                                   unique=True))
        sim.write(who, entity, ROWS[entity][min(row, 1) % len(ROWS[entity])],
                  {n: data.draw(VALUES[n]) for n in names})
    return sim.events


def deliver(store, events, rng):
    """Random partial bundles with duplicates, then whatever is still missing."""
    for _ in range(rng.randint(0, 4)):
        chunk = rng.sample(events, rng.randint(0, len(events)))
        store.append(Batch.from_events(chunk + chunk[: len(chunk) // 3]))
    while len(store.events_after({})) < len(events):
        store.append(Batch.from_events(rng.sample(events, len(events))))


def snapshot(store):
    return (store.checksums(), store.conflicts(),
            {name: store.rows(name) for name in ENTITIES})


# Seven tenths of the profile's examples: each costs a second, most of it the DuckDB
# rebuild (it plans every one of the 33 entities); a third of the histories still bound
# clocks, two fifths make conflicts.
@settings(max_examples=settings.default.max_examples * 7 // 10)
@given(histories(), st.randoms(use_true_random=False))
def test_every_replica_converges_whatever_the_delivery(tmp_path_factory, events, rng):
    central = central_origins(NPSN)
    memory, other_memory = MemoryStore(central), MemoryStore(central)
    duck = DuckDBStore(tmp_path_factory.mktemp("d") / "r.duckdb", central)
    try:
        for store in (memory, other_memory, duck):
            deliver(store, events, random.Random(rng.random()))
        expected = snapshot(memory)
        assert snapshot(other_memory) == expected
        assert snapshot(duck) == expected
        state = fold(events, central)
        assert state.conflicts == duck.conflicts()
        assert {n: MemoryStore.rows_of(state.rows, n) for n in ENTITIES} == expected[2]
        duck.rebuild()
        assert snapshot(duck) == expected
    finally:
        duck.close()


@pytest.fixture(scope="module")
def pg_centre(postgres_module_url):
    centre = PgCentre(postgres_module_url)
    yield centre
    centre.close()


@given(histories(), st.randoms(use_true_random=False))
def test_the_postgresql_store_merges_as_the_fold(pg_centre, events, rng):
    """The PostgreSQL centre's store (a school of its own per example) after any delivery."""
    central = central_origins(NPSN)
    store = PgStore(pg_centre.db, uuid.uuid4().hex[:8], central)
    deliver(store, events, rng)
    memory = MemoryStore(central)
    memory.append(Batch.from_events(events))
    assert snapshot(store) == snapshot(memory)
    assert store.checksums(full=True) == store.checksums()
    assert store.vector() == memory.vector()


@given(histories())
def test_a_row_written_once_is_the_fold_of_its_event(events):
    central = central_origins(NPSN)
    for ev in events:
        assert written_once(ev, central) == fold([ev], central).rows[ev.entity].get(ev.row_id)


@given(histories())
def test_fold_is_order_and_duplicate_insensitive(events):
    central = central_origins(NPSN)
    shuffled = events[::-1] + events[: len(events) // 2]
    assert fold(events, central) == fold(shuffled, central)
