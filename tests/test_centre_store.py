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


def test_the_gate_keeps_nothing_of_a_push_that_leaves_invalid_data(centre):
    """server/gate.py on each store: spooled, appended, checked, rolled back whole."""
    from selaras.server import gate

    registry = centre.registry
    assert gate.commit(centre, registry, "20100001", A, NOW) is None  # nothing spooled
    gate.spool(centre, registry, "20100001", A, batch(A, 1, 2))
    refused = gate.commit(centre, registry, "20100001", A, NOW)
    assert isinstance(refused, dict) and refused.get("Peserta Didik", 0) >= 1
    assert centre.school("20100001").vector() == {}  # nothing of it is the centre's data
    assert gate.commit(centre, registry, "20100001", A, NOW) == refused  # the spool is back
    assert centre.school("20100002").vector() == {}


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
