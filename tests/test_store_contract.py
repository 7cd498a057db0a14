"""The store contract: every Store implementation passes these same tests.

The stores: the reference ``MemoryStore``, an install's ``DuckDBStore``, and one
school's store at the centre (``DuckDBCentre.school``), whose tables hold
another school's rows too (same origins, same row ids: they must not show).
The bulk import path and the centre's registry have contracts of their own below.
"""

import json
import uuid

import msgspec
import pytest

from selaras.engine.events import Batch, Event, centre_origin
from selaras.engine.signatures import CentreKey
from selaras.engine.storage import DuckDBCentre, DuckDBStore
from selaras.engine.storage.pg_centre import PgCentre
from selaras.engine.storage.pg_database import PgDatabase
from selaras.engine.storage.pg_registry import PostgresRegistry
from selaras.engine.store import (
    BadSignature,
    EventCollision,
    MemoryStore,
    RegistryError,
    StoreFailure,
    verify,
)

NPSN = "20100001"
CENTRE = centre_origin(NPSN)
A, B = "a0000000-0000-4000-8000-000000000001", "b0000000-0000-4000-8000-000000000002"
PD = "d0000000-0000-4000-8000-00000000000d"
SEKOLAH = "5e000000-0000-4000-8000-00000000005e"
CENTRAL = frozenset({CENTRE})
KEY, OTHER_KEY = CentreKey(bytes(range(32))), CentreKey(bytes(32))


OTHER_NPSN = "20100002"


@pytest.fixture(params=["memory", "duckdb", "centre", "postgresql"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore(CENTRAL)
    elif request.param == "duckdb":
        s = DuckDBStore(tmp_path / "s.duckdb", CENTRAL)
        yield s
        s.close()
    else:
        centre = (DuckDBCentre(tmp_path / "centre.duckdb") if request.param == "centre"
                  else PgCentre(request.getfixturevalue("postgres_url")))
        # Another school with the same origins and rows: none of it may show in ours.
        noise = [ev(A, seq, 100 + seq, {"nama": f"Lain {seq}", "nik": str(seq)})
                 for seq in range(1, 4)] + [ev(B, 1, 50, {"nik": "9"}, row=SEKOLAH)]
        centre.school(OTHER_NPSN).append(Batch.from_events(noise))
        yield centre.school(NPSN)
        centre.close()


@pytest.fixture(params=["memory", "duckdb"])
def keyed_store(request, tmp_path):
    """A store that knows the centre's key, as a registered install's does."""
    if request.param == "memory":
        s = MemoryStore(CENTRAL, centre_key=KEY.public)
    else:
        s = DuckDBStore(tmp_path / "s.duckdb", CENTRAL)
        s.set_meta(centre_key=KEY.public)
    yield s
    s.close()


def ev(origin, seq, hlc, changes, *, entity="peserta_didik", row=PD, context=None):
    return Event(origin=origin, seq=seq, hlc=hlc, entity=entity, row_id=row, changes=changes,
                 author=origin[:1], role="pusat" if origin == CENTRE else "operator",
                 context=context)


def put(store, *events):
    return store.append(Batch.from_events(events))


def state(store):
    return store.vector(), store.checksums(), store.conflicts()


def test_append_materialises_and_round_trips(store):
    report = put(store, ev(A, 1, 10, {"nama": "Budi", "nik": "1"}), ev(A, 2, 11, {"nik": "2"}))
    assert (report.applied, report.duplicates, report.held_back) == (2, 0, 0)
    assert store.vector() == {A: 2}
    assert store.rows("peserta_didik")[PD]["nama"] == "Budi"
    assert store.rows("peserta_didik")[PD]["nik"] == "2"
    again = list(store.events_after({}).events())
    assert [e.id for e in sorted(again, key=lambda e: e.id)] == [(A, 1), (A, 2)]
    assert store.events_after({A: 1}).vector() == {A: 2}
    assert len(store.events_after({A: 2})) == 0
    middle = list(store.events_between(A, 1, 2).events())
    assert [e.id for e in middle] == [(A, 2)] and middle[0].changes == {"nik": "2"}
    assert len(store.events_between(B, 0, 9)) == 0
    assert verify(store) == []


def test_duplicates_change_nothing(store):
    put(store, ev(A, 1, 10, {"nama": "Budi"}))
    before = state(store)
    report = put(store, ev(A, 1, 10, {"nama": "Budi"}))
    assert (report.applied, report.duplicates) == (0, 1)
    assert state(store) == before


def test_collision_is_refused_and_changes_nothing(store):
    put(store, ev(A, 1, 10, {"nama": "Budi"}))
    before = state(store)
    with pytest.raises(EventCollision) as err:
        put(store, ev(A, 2, 12, {"nik": "9"}), ev(A, 1, 10, {"nama": "Bukan Budi"}))
    assert (err.value.origin, err.value.seq) == (A, 1)
    assert "copied or restored" in str(err.value)
    assert state(store) == before


def test_events_after_a_gap_are_held_back_until_the_gap_fills(store):
    report = put(store, ev(A, 2, 11, {"nik": "2"}), ev(A, 3, 12, {"nik": "3"}))
    assert (report.applied, report.held_back) == (0, 2)
    assert store.vector() == {}
    put(store, ev(A, 1, 10, {"nik": "1"}))
    report = put(store, ev(A, 2, 11, {"nik": "2"}), ev(A, 3, 12, {"nik": "3"}))
    assert report.applied == 2
    assert store.rows("peserta_didik")[PD]["nik"] == "3"


def test_last_writer_wins_by_hlc_then_origin(store):
    put(store, ev(A, 1, 20, {"nik": "from A"}), ev(B, 1, 10, {"nik": "from B"}))
    assert store.rows("peserta_didik")[PD]["nik"] == "from A"
    put(store, ev(B, 2, 20, {"nama": "B at 20"}), ev(A, 2, 20, {"nama": "A at 20"}))
    assert store.rows("peserta_didik")[PD]["nama"] == "B at 20"  # b... ranks above a...


@pytest.mark.parametrize("centre_first", [True, False])
def test_school_write_to_centre_field_has_no_effect_in_either_order(store, centre_first):
    centre = ev(CENTRE, 1, 10, {"nama": "SMA Negeri 1", "email": "a@b"}, entity="sekolah",
                row=SEKOLAH)
    school = ev(A, 1, 99, {"nama": "Nama Palsu", "email": "x@y"}, entity="sekolah", row=SEKOLAH)
    for e in [centre, school] if centre_first else [school, centre]:
        put(store, e)
    row = store.rows("sekolah")[SEKOLAH]
    assert row["nama"] == "SMA Negeri 1"  # the centre's, although the school wrote later
    assert row["email"] == "x@y"  # a school-owned field: the later write wins


def test_school_write_to_ref_table_has_no_effect(store):
    put(store, ev(A, 1, 10, {"agama_id": 99, "nama": "Bukan"}, entity="ref.agama"))
    assert store.rows("ref.agama") == {}


@pytest.mark.parametrize("verification_first", [True, False])
def test_verification_locks_verval_fields_whatever_the_arrival_order(store,
                                                                     verification_first):
    before = ev(A, 1, 10, {"nama": "Budi", "nik": "1", "tempat_lahir": "Bandung"})
    verify_ = ev(CENTRE, 1, 20, {"status_verval_pd": 1, "nama": "BUDI SANTOSO"},
                 context={A: 1})
    after = ev(A, 2, 30, {"nama": "Budi Baru", "nik": "2", "tempat_lahir": "Bogor"},
               context={CENTRE: 1})
    order = [before, verify_, after] if verification_first else [before, after, verify_]
    for e in order:
        put(store, e)
    row = store.rows("peserta_didik")[PD]
    assert row["nama"] == "BUDI SANTOSO"  # locked: the later school write has no effect
    assert row["nik"] == "1"  # locked too (schema 3), though Verval did not write it
    assert row["tempat_lahir"] == "Bogor"  # not a verval field
    assert row["status_verval_pd"] == 1
    assert store.conflicts() == []


def test_soft_delete_is_a_field(store):
    put(store, ev(A, 1, 10, {"nama": "Budi"}), ev(A, 2, 11, {"soft_delete": 1}))
    assert store.rows("peserta_didik")[PD]["soft_delete"] == 1
    put(store, ev(B, 1, 12, {"soft_delete": 0}, context={A: 2}))
    assert store.rows("peserta_didik")[PD]["soft_delete"] == 0
    assert store.conflicts() == []


def test_concurrent_differing_writes_are_a_conflict(store):
    put(store, ev(A, 1, 10, {"nama": "Budi"}))
    put(store, ev(A, 2, 20, {"nama": "Budi A"}), ev(B, 1, 21, {"nama": "Budi B"}, context={A: 1}))
    siblings = store.conflicts()
    assert {(s.origin, s.value, s.winner) for s in siblings} == {
        (A, "Budi A", False), (B, "Budi B", True)}
    assert store.rows("peserta_didik")[PD]["nama"] == "Budi B"
    # A resolution is a new write that has seen both.
    put(store, ev(A, 3, 30, {"nama": "Budi AB"}, context={B: 1}))
    assert store.conflicts() == []
    assert store.rows("peserta_didik")[PD]["nama"] == "Budi AB"


def test_causally_ordered_writes_are_never_conflicts(store):
    put(store, ev(A, 1, 50, {"nama": "Budi"}),
        ev(B, 1, 40, {"nama": "Budi B"}, context={A: 1}))  # B saw A, even with a slow clock
    assert store.conflicts() == []
    assert store.rows("peserta_didik")[PD]["nama"] == "Budi"  # LWW still orders by hlc


def test_concurrent_equal_writes_are_not_conflicts(store):
    put(store, ev(A, 1, 10, {"nama": "Budi"}), ev(B, 1, 11, {"nama": "Budi"}))
    assert store.conflicts() == []


def test_checksums_equal_for_equal_data_in_any_order(store):
    evs = [ev(A, 1, 10, {"nama": "Budi"}), ev(B, 1, 11, {"nik": "1"}),
           ev(A, 2, 12, {"nama": "Ani"}, row=str(uuid.UUID(int=5)))]
    other = MemoryStore(CENTRAL)
    put(store, *evs)
    for e in (evs[1], evs[0], evs[2]):
        put(other, e)
    assert store.checksums() == other.checksums()


@pytest.mark.parametrize("change", [
    {"nik": "2"},  # one field changes
    {"nama_ayah": ""},  # NULL becomes ''
    {"nik": None, "no_kk": "1"},  # a value moves to another field
])
def test_checksums_change_with_any_single_difference(store, change):
    put(store, ev(A, 1, 10, {"nama": "Budi", "nik": "1"}))
    before = store.checksums()
    put(store, ev(A, 2, 11, change))
    after = store.checksums()
    assert after["peserta_didik"] != before["peserta_didik"]
    assert {k for k in after if after[k] != before[k]} == {"peserta_didik"}


def test_a_batch_repeating_an_event_around_a_gap(store):
    one = ev(A, 1, 10, {"nik": "1"})
    report = put(store, one, one, ev(A, 3, 12, {"nik": "3"}))
    assert (report.applied, report.held_back) == (1, 1)
    assert store.vector() == {A: 1}


# -- centre signatures (R18) ---------------------------------------------------------------


def centre_events(first=1, n=2):
    return [ev(CENTRE, seq, 10 + seq, {"nama": f"SMA {seq}"}, entity="sekolah", row=SEKOLAH)
            for seq in range(first, first + n)]


def test_signatures_survive_append_and_read_back(store):
    signed = KEY.sign(Batch.from_events(centre_events()))
    sigs = signed.signatures_by_id()
    store.append(Batch(signed.tables, signed.contexts, signed.signatures))
    # A school event's signature means nothing: it is not kept.
    school = ev(A, 1, 10, {"nama": "Budi"})
    put_signed = KEY.sign(Batch.from_events([school]))
    store.append(put_signed)
    assert store.events_after({}).signatures_by_id() == sigs
    assert store.events_after({CENTRE: 1}).signatures_by_id() == {(CENTRE, 2): sigs[(CENTRE, 2)]}
    assert store.events_between(CENTRE, 1, 2).signatures_by_id() == {
        (CENTRE, 2): sigs[(CENTRE, 2)]}
    wire = Batch.from_bytes(store.events_after({}).to_bytes())
    assert wire.signatures_by_id() == sigs


def forged(kind):
    """A batch of two new centre events the centre did not sign as they are."""
    events = centre_events()
    if kind == "unsigned":
        return Batch.from_events(events)
    if kind == "other key":
        return OTHER_KEY.sign(Batch.from_events(events))
    signed = KEY.sign(Batch.from_events(events))
    if kind == "one unsigned":
        return Batch.from_events(events, {(CENTRE, 1): signed.signatures_by_id()[(CENTRE, 1)]})
    # "altered": signed by the centre, then a value changed
    altered = [events[0], msgspec.structs.replace(events[1], changes={"nama": "Palsu"})]
    return Batch.from_events(altered, signed.signatures_by_id())


@pytest.mark.parametrize("kind", ["unsigned", "other key", "one unsigned", "altered"])
def test_a_store_with_the_centre_key_refuses_forged_centre_events(keyed_store, kind):
    put(keyed_store, ev(A, 1, 10, {"nama": "Budi"}))
    before = state(keyed_store)
    batch = forged(kind)
    school = Batch.from_events([ev(A, 2, 11, {"nama": "Ani"})])  # refused with it: whole batch
    with pytest.raises(BadSignature) as err:
        keyed_store.append(Batch({**batch.tables, **school.tables}, batch.contexts,
                                 batch.signatures))
    problem = "missing" if kind in ("unsigned", "one unsigned") else "wrong"
    seq = 2 if kind in ("one unsigned", "altered") else 1
    assert (err.value.origin, err.value.seq, err.value.problem) == (CENTRE, seq, problem)
    assert "nothing was stored" in str(err.value)
    assert state(keyed_store) == before


def test_a_store_with_the_centre_key_takes_signed_events_and_known_ones_unsigned(keyed_store):
    events = centre_events()
    report = keyed_store.append(KEY.sign(Batch.from_events(events)))
    assert report.applied == 2
    assert keyed_store.rows("sekolah")[SEKOLAH]["nama"] == "SMA 2"
    # Held already: a duplicate needs no signature; school events never do.
    report = put(keyed_store, *events, ev(A, 1, 10, {"nama": "Budi"}))
    assert (report.applied, report.duplicates) == (1, 2)
    assert keyed_store.events_after({}).signatures_by_id().keys() == {(CENTRE, 1), (CENTRE, 2)}


def test_a_store_without_the_key_keeps_what_comes(store):
    report = store.append(forged("unsigned"))
    assert report.applied == 2  # an offline install has no centre to check against


# -- the bulk import path ------------------------------------------------------------------


def test_bulk_import_equals_its_events_appended_one_by_one(tmp_path):
    """import_jsonl writes events and rows columnar; the reference store, given the
    very events it logged, must hold the same rows and checksums."""
    from selaras.bench.generate import generate, write
    from selaras.engine.events import school_row_id

    npsn = "20219876"
    rows = tmp_path / "rows.jsonl"
    write(rows, generate("small", 1, npsn, 7))
    store = DuckDBStore(tmp_path / "bulk.duckdb", CENTRAL)
    try:
        report = store.import_jsonl(str(rows), origin=A, author="op", role="operator",
                                    sekolah_id=school_row_id(npsn), now_ms=1_790_000_000_000)
        logged = store.events_after({})
        assert report.applied == len(logged) == len(rows.read_text("utf-8").splitlines())
        reference = MemoryStore(CENTRAL)
        reference.append(logged)
        assert store.checksums() == reference.checksums()
        assert store.rows("peserta_didik") == reference.rows("peserta_didik")
        assert verify(store) == []
    finally:
        store.close()


def test_an_imported_user_the_install_holds_joins_its_row(tmp_path):
    """The account the centre mirrored at registration and the school's own pengguna row
    for that username are one row after the import, whatever their case and spaces."""
    from selaras.engine.events import school_row_id

    npsn = "20219876"
    sekolah, held, own = school_row_id(npsn), str(uuid.uuid4()), str(uuid.uuid4())
    store = DuckDBStore(tmp_path / "users.duckdb", CENTRAL)
    try:
        store.append(Batch.from_events([Event(
            origin=centre_origin(npsn), seq=1, hlc=1, entity="pengguna", row_id=held,
            changes={"sekolah_id": sekolah, "username": "op@sekolah.id", "nama": "op@sekolah.id",
                     "peran": "operator", "aktif": 1})]))
        rows = tmp_path / "rows.jsonl"
        rows.write_text("".join(json.dumps(r) + "\n" for r in [
            {"entity": "pengguna", "pengguna_id": own, "sekolah_id": sekolah,
             "username": " OP@sekolah.id", "nama": "Sri Wahyuni", "peran": "operator"},
            {"entity": "pengguna", "pengguna_id": str(uuid.uuid4()), "sekolah_id": sekolah,
             "username": "tu@sekolah.id", "nama": "Budi", "peran": "operator"}]))
        store.import_jsonl(str(rows), origin=A, author="op", role="operator",
                           sekolah_id=sekolah, now_ms=1_790_000_000_000)
        users = store.rows("pengguna")
        assert own not in users and len(users) == 2
        assert users[held]["nama"] == "Sri Wahyuni"
    finally:
        store.close()


# -- the centre's registry -----------------------------------------------------------------


@pytest.fixture(params=["duckdb", "postgresql"])
def registry(request, tmp_path):
    if request.param == "duckdb":
        centre = DuckDBCentre(tmp_path / "centre.duckdb")
        yield centre.registry
        centre.close()
    else:
        db = PgDatabase.connect(request.getfixturevalue("postgres_url"))
        yield PostgresRegistry(db)
        db.close()


def test_registry_schools_accounts_installs_and_sessions(registry):
    registry.add_school(NPSN, "SMA Satu", "hash-1", 1)
    with pytest.raises(RegistryError):
        registry.add_school(NPSN, "again", "hash-x", 2)
    assert registry.school(NPSN)["generation"] == 1 and registry.school(OTHER_NPSN) is None
    assert registry.reset_kode(NPSN, "hash-2") == 2
    with pytest.raises(RegistryError):
        registry.reset_kode(OTHER_NPSN, "hash")
    registry.add_account(NPSN, "op@sekolah.id", "operator", "pw", 3)
    assert registry.account_count(NPSN) == 1 and registry.account_count(OTHER_NPSN) == 0
    registry.add_install(A, NPSN, "op@sekolah.id", "token", 2, 4)
    assert registry.install(A)["npsn"] == NPSN and registry.install(A)["revoked"] is False
    assert registry.install("not a uuid") is None
    assert registry.install(A, NPSN)["origin"] == A and registry.install(A, OTHER_NPSN) is None
    registry.revoke(A)
    assert registry.install(A)["revoked"] is True
    with pytest.raises(RegistryError):
        registry.revoke(B)
    assert [i["origin"] for i in registry.installs(NPSN)] == [A]
    for started in (5, 7, 6):
        registry.record_session({"session": str(started), "npsn": NPSN, "started_ms": started})
    assert [s["session"] for s in registry.sessions(NPSN, limit=2)] == ["7", "6"]
    assert [s["npsn"] for s in registry.schools()] == [NPSN]


def test_a_file_made_by_the_older_layout_is_refused_in_words(tmp_path):
    import duckdb

    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE SCHEMA log")
    con.execute("CREATE TABLE log.event (origin UUID, seq BIGINT, entity VARCHAR, "
                "PRIMARY KEY (origin, seq))")
    con.close()
    with pytest.raises(StoreFailure, match="dibuat oleh selaras versi lama"):
        DuckDBStore(old, CENTRAL)
    with pytest.raises(StoreFailure, match="dibuat oleh selaras versi lama"):
        DuckDBCentre(old)
