"""The centre's store, on DuckDB and on PostgreSQL: many schools in one set of tables,
group commit, isolation."""

import contextlib
import os
import subprocess

import duckdb
import pytest

from selaras.engine.events import REFERENSI_ORIGIN, Batch, Event, centre_origin
from selaras.engine.signatures import CentreKey
from selaras.engine.storage import DuckDBCentre, open_centre
from selaras.engine.store import EventCollision, StoreError
from selaras.server.admin import AdminError, run_admin

A = "a0000000-0000-4000-8000-000000000001"
B = "b0000000-0000-4000-8000-000000000002"
PD = "d0000000-0000-4000-8000-00000000000d"
NOW = 1_790_000_000_000  # ms; every hlc here is far behind it


def batch(origin, first, n, nik="1"):
    return Batch.from_events([
        Event(origin=origin, seq=s, hlc=s, entity="peserta_didik", row_id=PD,
              changes={"nik": f"{nik}{s}"}, author="op", role="operator")
        for s in range(first, first + n)])


@pytest.fixture(params=["duckdb", "postgresql"])
def centre(request, tmp_path):
    where = (tmp_path / "centre.duckdb" if request.param == "duckdb"
             else request.getfixturevalue("postgres_url"))
    c = open_centre(where, key=CentreKey(bytes(32)))
    yield c
    c.close()


def test_schools_are_kept_apart(centre):
    [r1, r2] = centre.append_group(
        [("20100001", batch(A, 1, 3)), ("20100002", batch(A, 1, 1))], NOW)
    assert (r1.applied, r2.applied) == (3, 1)
    assert centre.school("20100001").vector() == {A: 3}
    assert centre.school("20100002").vector() == {A: 1}
    assert centre.school("20100001").rows("peserta_didik")[PD]["nik"] == "13"
    assert centre.school("20100002").rows("peserta_didik")[PD]["nik"] == "11"


def test_a_bad_batch_in_a_group_costs_only_itself(centre):
    centre.append_group([("20100001", batch(A, 1, 2))], NOW)
    results = centre.append_group([
        ("20100002", batch(A, 1, 2)),
        ("20100001", batch(A, 1, 1, nik="9")),  # a different event under (A, 1)
        ("20100003", batch(A, 1, 1)),
    ], NOW)
    assert results[0].applied == 2 and results[2].applied == 1
    assert isinstance(results[1], EventCollision)
    assert centre.school("20100001").vector() == {A: 2}
    assert centre.school("20100001").rows("peserta_didik")[PD]["nik"] == "12"


def test_readers_see_committed_data_on_their_own_cursor(centre, tmp_path):
    centre.append_group([("20100001", batch(A, 1, 2))], NOW)
    reader = centre.reader().school("20100001")
    assert reader.vector() == {A: 2}
    assert len(reader.events_after({A: 1})) == 1
    assert reader.checksums() == centre.school("20100001").checksums()


def one(centre, sql):
    """The one value ``sql`` gives, on the centre's own database."""
    if isinstance(centre, DuckDBCentre):
        return centre.db.con.execute(sql).fetchall()[0][0]
    return centre.db.run(sql, [])[1][0][0]


def tables(centre):
    return one(centre, "SELECT count(*) FROM duckdb_tables() WHERE NOT temporary"
               if isinstance(centre, DuckDBCentre)
               else "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p')")


def test_registering_schools_adds_rows_never_tables(centre):
    before = tables(centre)
    for npsn in ("20100001", "20100002", "20100003"):
        run_admin(centre, centre.registry, "school_add", {"npsn": npsn}, NOW)
    assert tables(centre) == before
    assert [s["npsn"] for s in centre.registry.schools()] == ["20100001", "20100002", "20100003"]
    # Referensi is kept once for all of them, and each school's log holds it.
    vectors = [centre.school(n).vector() for n in ("20100001", "20100002")]
    assert vectors[0][REFERENSI_ORIGIN] == vectors[1][REFERENSI_ORIGIN] > 200
    held = one(centre, f"SELECT count(*) FROM log.event WHERE origin = '{REFERENSI_ORIGIN}'")
    assert held == vectors[0][REFERENSI_ORIGIN]
    assert centre.school("20100001").checksums() != centre.school("20100002").checksums()


def test_a_school_add_that_runs_out_of_memory_leaves_nothing_and_says_so(tmp_path):
    starved = DuckDBCentre(tmp_path / "starved.duckdb", key=CentreKey(bytes(32)),
                           memory_limit="1MB")
    try:
        with pytest.raises(AdminError, match="kehabisan memori .*; tidak ada yang diubah"):
            run_admin(starved, starved.registry, "school_add", {"npsn": "20100001"}, NOW)
        assert starved.registry.schools() == []
        assert starved.school("20100001").vector() == {}
    finally:
        starved.close()


def test_admin_query_sees_one_school(centre):
    centre.append_group([("20100001", batch(A, 1, 3)), ("20100002", batch(A, 1, 1, nik="7"))],
                        NOW)
    for npsn in ("20100001", "20100002"):
        centre.registry.add_school(npsn, "SMA", "-", NOW)

    def query(npsn, sql):
        return run_admin(centre, centre.registry, "query", {"npsn": npsn, "sql": sql}, NOW).rows

    assert query("20100001", "SELECT nik FROM peserta_didik") == [["13"]]
    assert query("20100002", "SELECT nik FROM peserta_didik") == [["71"]]
    assert query("20100002", "SELECT count(*) FROM event") == [[1]]
    for sql in ("DELETE FROM peserta_didik", "SELECT 1; DELETE FROM peserta_didik",
                "SELECT 1; SELECT 2"):
        with pytest.raises(AdminError, match="exactly one SELECT"):
            query("20100001", sql)
    assert centre.school("20100001").rows("peserta_didik")[PD]["nik"] == "13"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="mounting a small file system needs root")
def test_a_school_add_on_a_full_disk_leaves_nothing_and_says_so(tmp_path):
    """A real full disk: a 400 KiB tmpfs, schools added until it is full."""
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(small)],
                      capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a small file system here")
    try:
        full = DuckDBCentre(small / "centre.duckdb", key=CentreKey(bytes(32)))
        added = 0
        with pytest.raises(AdminError, match=r"disk penuh .*; tidak ada yang diubah"):
            for i in range(2000):
                run_admin(full, full.registry, "school_add", {"npsn": f"2010{i:04d}"}, NOW)
                added += 1
        refused = f"2010{added:04d}"
        assert 0 < added < 2000
        assert full.registry.school(refused) is None
        assert centre_origin(refused) not in full.school(refused).vector()
        assert len(full.registry.schools()) == added
        with contextlib.suppress(StoreError, duckdb.Error):  # its checkpoint may not fit
            full.close()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.parametrize("store", ["duckdb", "postgresql"])
def test_a_centre_made_before_the_vector_was_kept_gets_it_on_opening(request, tmp_path, store):
    where = (tmp_path / "centre.duckdb" if store == "duckdb"
             else request.getfixturevalue("postgres_url"))
    c = open_centre(where, key=CentreKey(bytes(32)))
    c.append_group([("20100001", batch(A, 1, 3)), ("20100002", batch(A, 1, 2))], NOW)
    c.close()
    if store == "duckdb":  # the head gone, as in a centre of an earlier version
        with contextlib.closing(duckdb.connect(str(where))) as con:
            con.execute("DROP TABLE replica.head")
    else:
        import psycopg
        with psycopg.connect(where, autocommit=True) as con:
            con.execute("DROP TABLE replica.head CASCADE")
    c = open_centre(where, key=CentreKey(bytes(32)))
    try:
        assert c.school("20100001").vector() == {A: 3}
        assert c.school("20100002").vector() == {A: 2}
    finally:
        c.close()


def deleted(origin, seq):
    """A row made and deleted at once: no finding of Validasi Lokal holds it."""
    return Batch.from_events([Event(origin=origin, seq=seq, hlc=seq, entity="peserta_didik",
                                    row_id=PD, changes={"nik": "1", "soft_delete": 1},
                                    author="op", role="operator")])


def test_the_gate_keeps_nothing_of_a_push_that_leaves_invalid_data(centre):
    """server/gate.py on each store: the push in a transaction of its own, unseen until
    checked; refused, it is rolled back whole; the writer commits meanwhile."""
    from selaras.server.gate import Gate

    refused = Gate(centre, "20100001")
    report, before = refused.append(batch(A, 1, 2), NOW).result()
    assert report.applied == 2 and before == {}
    assert centre.school("20100001").vector() == {}  # not the centre's data yet
    # Another school's batch commits while the push is open: the writer does not wait.
    [other] = centre.append_group([("20100002", batch(A, 1, 1))], NOW)
    assert other.applied == 1
    per_tab = refused.finish().result()
    assert per_tab.get("Peserta Didik", 0) >= 1
    refused.close().result()
    assert centre.school("20100001").vector() == {}  # nothing of it is the centre's data
    assert centre.school("20100002").vector() == {A: 1}

    passed = Gate(centre, "20100001")
    assert passed.append(deleted(A, 1), NOW).result()[0].applied == 1
    assert passed.finish().result() == {}
    passed.close().result()
    school = centre.school("20100001")
    assert school.vector() == {A: 1}
    assert school.checksums() == school.checksums(full=True)


def test_two_pushes_of_one_school_at_once_keep_one_state(centre):
    """Two PCs of a school pushing at once: PostgreSQL makes the second wait for the
    first's end; DuckDB lets both run and fails the second to commit (it tries again)."""
    from selaras.server.gate import Gate

    first, second = Gate(centre, "20100001"), Gate(centre, "20100001")
    assert first.append(deleted(A, 1), NOW).result()[0].applied == 1
    waiting = second.append(deleted(B, 1), NOW)
    if isinstance(centre, DuckDBCentre):
        assert waiting.result()[0].applied == 1
        assert first.finish().result() == {}
        with pytest.raises(StoreError, match="sedang diubah sesi lain"):
            second.finish().result()
        kept = {A: 1}
    else:
        with pytest.raises(TimeoutError):
            waiting.result(timeout=1)  # the school's lock is the first push's
        assert first.finish().result() == {}
        assert waiting.result(timeout=30)[0].applied == 1
        assert second.finish().result() == {}
        kept = {A: 1, B: 1}
    for g in (first, second):
        g.close().result()
    school = centre.school("20100001")
    assert school.vector() == kept
    assert school.checksums() == school.checksums(full=True)


def test_the_writer_does_not_wait_for_an_open_push(centre):
    """The centre's own event for a school whose push is open: PostgreSQL's writer gives up
    on the school's lock within WRITER_LOCK_WAIT; on DuckDB the push fails at commit."""
    import time

    from selaras.server.gate import Gate

    push = Gate(centre, "20100001")
    assert push.append(deleted(A, 1), NOW).result()[0].applied == 1
    own = Event(origin=centre_origin("20100001"), seq=1, hlc=1, entity="peserta_didik",
                row_id=PD, changes={"nama": "Pusat"}, author="pusat", role="pusat")
    t = time.monotonic()
    if isinstance(centre, DuckDBCentre):
        centre.append_centre("20100001", [own])
        with pytest.raises(StoreError, match="sedang diubah sesi lain"):
            push.finish().result()
        kept = {centre_origin("20100001"): 1}
    else:
        with pytest.raises(StoreError, match="sedang diubah sesi lain"):
            centre.append_centre("20100001", [own])
        assert push.finish().result() == {}
        kept = {A: 1}
    assert time.monotonic() - t < 10
    push.close().result()
    assert centre.school("20100001").vector() == kept


def test_validasi_lokal_at_the_centre_reads_one_school(centre):
    """rule_rows (the gate's check) sees the school's rows alone, as a query does."""
    from selaras.engine.validation import invalid_counts_sql

    other = Batch.from_events([
        Event(origin=A, seq=s, hlc=s, entity="peserta_didik", row_id=f"{PD[:-2]}{s:02x}",
              changes={"nik": str(s)}, author="op", role="operator") for s in range(1, 6)])
    centre.append_group([("20100001", batch(A, 1, 1)), ("20100002", other)], NOW)
    counts = {}
    for npsn in ("20100001", "20100002"):
        school = centre.school(npsn)
        counts[npsn] = sorted(school.rule_rows(invalid_counts_sql()))
        assert counts[npsn] == sorted(school.query(invalid_counts_sql())[1])
    rule = counts["20100001"][0][0]
    assert dict(counts["20100002"])[rule] == 5 * dict(counts["20100001"])[rule]


def test_accounts_are_mirrored_and_disabled_on_each_store(centre):
    run_admin(centre, centre.registry, "school_add", {"npsn": "20100001"}, NOW)
    run_admin(centre, centre.registry, "account_add",
              {"npsn": "20100001", "user": "KS@x.id", "role": "kepala_sekolah",
               "password": "pw", "nama": "Bu Kepala"}, NOW)
    run_admin(centre, centre.registry, "disable_account",
              {"npsn": "20100001", "user": "ks@x.id"}, NOW + 1)
    account = centre.registry.account("20100001", "ks@x.id")
    assert account["disabled"] and account["public_key"] and account["sealed_key"]
    [row] = centre.school("20100001").rows("pengguna").values()
    assert (row["username"], row["peran"], row["aktif"]) == ("ks@x.id", "kepala_sekolah", 0)


def test_people_are_found_across_schools_by_their_identity(centre):
    """CentreStore.people: one NIK at two schools is found at both; a deleted row and
    Referensi are not; a field the entity lacks is refused."""
    centre.append_group([("20100001", batch(A, 1, 1, nik="320")),   # nik 3201
                         ("20100002", batch(A, 1, 1, nik="320"))], NOW)
    assert [(school, row) for school, row, _ in centre.people("peserta_didik", "nik", "3201")] \
        == [("20100001", PD), ("20100002", PD)]
    assert centre.people("peserta_didik", "nik", "3202") == []
    centre.append_group([("20100002", deleted(A, 2))], NOW)  # nik 1, deleted
    [(school, _, row)] = centre.people("peserta_didik", "nik", "3201")
    assert school == "20100001" and row["nik"] == "3201"
    assert centre.people("peserta_didik", "nik", "1") == []
    with pytest.raises(ValueError):
        centre.people("peserta_didik", "warna", "biru")
