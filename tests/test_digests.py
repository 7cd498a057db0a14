"""Maintained checksums (replica.digest) equal a full recompute, whatever happened.

The merge properties (test_merge_properties.py) hold the kept checksums equal
across replicas and stores; here a DuckDB store goes through random histories
of deliveries, JSON-lines imports over the same rows, and rebuilds, and after
every step its kept digests equal those recomputed from its rows and those of
the reference fold of its log.
"""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_merge_properties import INSTALLS, NPSN, ROWS, deliver, histories

from selaras.engine.events import central_origins
from selaras.engine.merge import fold
from selaras.engine.storage import DuckDBStore, log
from selaras.engine.store import checksums_of, verify
from selaras.engine.values import EMPTY_DIGEST, digest, row_hash, table_digest

IMPORTER = "f0000000-0000-4000-8000-00000000000f"  # an origin of its own: no seq clashes
SEKOLAH_ID = ROWS["sekolah"][0]

step = st.one_of(st.just(("deliver",)), st.just(("rebuild",)),
                 st.tuples(st.just("import"), st.lists(st.sampled_from(
                     [*ROWS["peserta_didik"], "d0000000-0000-4000-8000-0000000000ff"]),
                     min_size=1, max_size=3), st.sampled_from(["Budi", "Citra", None])))


def kept_equals_recomputed(store):
    kept = store.checksums()
    assert kept == store.checksums(full=True)
    assert kept == checksums_of(fold(store.events_after({}).events(), store.central).rows)


# 15 histories a way, not 20: each costs about two seconds (DuckDB plans its statements
# over all 33 entities), and one step in three is still a rebuild, a delivery or an import.
@pytest.mark.parametrize("small", [log.SMALL, 0], ids=["rows-returned", "in-sql"])
@settings(max_examples=15, deadline=None)
@given(histories(), st.lists(step, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_kept_digests_equal_a_full_recompute(tmp_path_factory, small, events, steps, rng):
    """Both ways of keeping digests: from the rows a small change returns, and in SQL."""
    folder = tmp_path_factory.mktemp("digest")
    store = DuckDBStore(folder / "r.duckdb", central_origins(NPSN))
    kept_small, log.SMALL = log.SMALL, small
    try:
        imported = 0
        for i, (kind, *args) in enumerate(steps):
            if kind == "deliver":
                cut = rng.randint(0, len(events))
                deliver(store, events[:cut], random.Random(rng.random()))
            elif kind == "rebuild":
                store.rebuild()
            else:
                ids, nama = args
                path = folder / f"rows{i}.jsonl"
                path.write_text("".join(json.dumps(
                    {"entity": "peserta_didik", "peserta_didik_id": rid, "nama": nama,
                     "nik": str(imported + n)}) + "\n" for n, rid in enumerate(ids)))
                store.import_jsonl(path, origin=IMPORTER, author="op", role="operator",
                                   sekolah_id=SEKOLAH_ID, now_ms=1_000 + i)
                imported += len(ids)
            kept_equals_recomputed(store)
        deliver(store, events, rng)
        kept_equals_recomputed(store)
        assert verify(store) == []
    finally:
        log.SMALL = kept_small
        store.close()


def test_one_changed_field_changes_the_digest() -> None:
    key = INSTALLS[0]
    row = [key, "Budi", 3, "2020-01-01", None]
    assert table_digest([row]) == table_digest([list(row)])
    for i, other in ((1, "Budi "), (2, 4), (3, "2020-01-02"), (4, "")):
        assert table_digest([row[:i] + [other] + row[i + 1:]]) != table_digest([row])
    # Order-independent, and a value cannot slide into its neighbour.
    assert table_digest([row, [INSTALLS[1], "x"]]) == table_digest([[INSTALLS[1], "x"], row])
    assert row_hash(["a", "bc"]) != row_hash(["ab", "c"])
    assert table_digest([]) == EMPTY_DIGEST == digest(0, 0)


def test_a_file_made_before_digests_and_heads_were_kept_gets_them_on_opening(tmp_path) -> None:
    central = central_origins(NPSN)
    store = DuckDBStore(tmp_path / "r.duckdb", central)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"entity": "peserta_didik", "peserta_didik_id": rid,
                                        "nama": "Ani"}) + "\n" for rid in ROWS["peserta_didik"]))
    store.import_jsonl(path, origin=IMPORTER, author="op", role="operator",
                       sekolah_id=SEKOLAH_ID, now_ms=1_000)
    before, vector = store.checksums(), store.vector()
    assert before["peserta_didik"] != EMPTY_DIGEST
    assert vector == {IMPORTER: len(ROWS["peserta_didik"])}
    store.con.execute("DROP TABLE replica.digest; DROP TABLE replica.head")
    store.close()
    store = DuckDBStore(tmp_path / "r.duckdb", central)
    try:
        assert store.checksums() == before == store.checksums(full=True)
        assert store.vector() == vector
    finally:
        store.close()
