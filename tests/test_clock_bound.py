"""A PC clock set years ahead (merge rule 5): the centre bounds what it admits."""

import pytest

from selaras.engine.clocks import MAX_AHEAD_MS, hlc_from_ms, hlc_ms
from selaras.engine.events import Batch, Event, central_origins, centre_origin
from selaras.engine.replica import Identity, Replica
from selaras.engine.signatures import CentreKey
from selaras.engine.storage import DuckDBCentre, DuckDBStore
from selaras.engine.store import verify

NPSN = "20100001"
CENTRE = centre_origin(NPSN)
A = "a0000000-0000-4000-8000-000000000001"  # its PC clock is three years ahead
B = "b0000000-0000-4000-8000-000000000002"
PD = "d0000000-0000-4000-8000-00000000000d"
NOW = 1_790_000_000_000
YEARS = 3 * 365 * 86_400_000


def edits(origin, first, n, at_ms, field="nik", value="x"):
    """Events ``first``.. of ``origin`` made at ``at_ms``; status_verval_pd gets 1."""
    return Batch.from_events([
        Event(origin=origin, seq=s, hlc=hlc_from_ms(at_ms) + s, entity="peserta_didik",
              row_id=PD, changes={field: f"{value}{s}" if field == "nik" else 1},
              author="op", role="operator")
        for s in range(first, first + n)])


@pytest.fixture
def centre(tmp_path):
    c = DuckDBCentre(tmp_path / "centre.duckdb", key=CentreKey(bytes(32)))
    yield c
    c.close()


def bounds(store):
    return sorted((r["install_id"], r["seq_from"], r["seq_to"], r["hlc_from"])
                  for r in store.rows("koreksi_jam").values())


def test_a_clock_far_ahead_is_bounded_and_later_writes_win(centre):
    [report] = centre.append_group([(NPSN, edits(A, 1, 3, NOW + YEARS, value="a"))], NOW)
    school = centre.school(NPSN)
    assert (report.applied, report.clock_bounded) == (3, 3)
    [(origin, first, last, hlc_from)] = bounds(school)
    assert (origin, first, last) == (A, 1, 3)
    assert hlc_ms(hlc_from) == NOW  # A's writes count as made when the centre admitted them
    assert school.vector() == {A: 3, CENTRE: 1}
    assert school.rows("peserta_didik")[PD]["nik"] == "a3"
    # B writes a minute later with a right clock: its write wins, though its hlc is smaller.
    centre.append_group([(NPSN, edits(B, 1, 1, NOW + 60_000, value="b"))], NOW + 60_000)
    assert school.rows("peserta_didik")[PD]["nik"] == "b1"
    assert verify(school) == []


def test_a_clock_a_little_ahead_is_left_alone(centre):
    centre.append_group([(NPSN, edits(A, 1, 2, NOW + MAX_AHEAD_MS - 1000))], NOW)
    assert bounds(centre.school(NPSN)) == []
    assert centre.school(NPSN).vector() == {A: 2}


def test_bounds_follow_each_other_per_origin(centre):
    """A's second push is bounded after its first: its own later write still wins."""
    centre.append_group([(NPSN, edits(A, 1, 2, NOW + YEARS))], NOW)
    centre.append_group([(NPSN, edits(A, 3, 2, NOW + YEARS + 10))], NOW - 50_000)  # our clock
    school = centre.school(NPSN)
    [one, two] = bounds(school)
    assert (one[1:3], two[1:3]) == ((1, 2), (3, 4))
    assert two[3] > one[3] + 1
    assert school.rows("peserta_didik")[PD]["nik"] == "x4"
    assert verify(school) == []


@pytest.mark.parametrize("order", ["events first", "bound first"])
def test_an_install_applies_a_bound_whatever_the_arrival_order(centre, tmp_path, order):
    centre.append_group([(NPSN, edits(A, 1, 3, NOW + YEARS, value="a"))], NOW)
    centre.append_group([(NPSN, edits(B, 1, 1, NOW + 60_000, value="b"))], NOW + 60_000)
    held = centre.school(NPSN).events_after({})
    mine = DuckDBStore(tmp_path / "install.duckdb", central_origins(NPSN))
    try:
        a_events = mine_of(held, A)
        rest = Batch.from_events([ev for ev in held.events() if ev.origin != A])
        for batch in ([a_events, rest] if order == "events first" else [rest, a_events]):
            mine.append(batch)
        assert mine.rows("peserta_didik")[PD]["nik"] == "b1"
        assert mine.checksums() == centre.school(NPSN).checksums()
        assert verify(mine) == []
    finally:
        mine.close()


def mine_of(batch, origin):
    return Batch.from_events([ev for ev in batch.events() if ev.origin == origin])


def test_a_peer_far_ahead_does_not_drag_our_clock_along(tmp_path):
    store = DuckDBStore(tmp_path / "b.duckdb", central_origins(NPSN))
    other = "d0000000-0000-4000-8000-0000000000ee"
    try:
        store.append(edits(A, 1, 1, NOW + YEARS))
        store.append(Batch.from_events([Event(  # a row of B's own
            origin=B, seq=1, hlc=hlc_from_ms(NOW - 1000), entity="peserta_didik", row_id=other,
            changes={"nik": "b0"}, author="op", role="operator")]))
        report = Replica(store, Identity(NPSN, B)).edit("peserta_didik", other, {"nik": "b"},
                                                        NOW)
        mine = store.max_hlc(B)
        assert hlc_from_ms(NOW) <= mine <= hlc_from_ms(NOW + MAX_AHEAD_MS) + 1
        assert report.clock_behind_ms == 0
    finally:
        store.close()


def test_an_edit_of_what_a_peer_far_ahead_wrote_goes_above_it_and_says_so(tmp_path):
    """Seen from B, A's clock years ahead looks like B's years behind: B's edit made after
    seeing A's value supersedes it (the centre bounds both as soon as it sees them)."""
    store = DuckDBStore(tmp_path / "b.duckdb", central_origins(NPSN))
    try:
        store.append(edits(A, 1, 1, NOW + YEARS))
        report = Replica(store, Identity(NPSN, B)).edit("peserta_didik", PD, {"nik": "b"}, NOW)
        assert store.rows("peserta_didik")[PD]["nik"] == "b"
        assert report.clock_behind_ms == YEARS
        assert store.conflicts() == []
    finally:
        store.close()


def test_neutralised_counts_bounded_and_powerless_writes(centre):
    centre.append_group([(NPSN, edits(A, 1, 2, NOW + YEARS))], NOW)
    # A's write to a centre-owned field has no effect either.
    centre.append_group([(NPSN, edits(A, 3, 1, NOW + 1000, field="status_verval_pd"))], NOW)
    school = centre.school(NPSN)
    assert school.neutralised(A, 0, 3) == {"peserta_didik": {"neutralised": 3, "clock": 2}}
    assert school.neutralised(A, 2, 3) == {"peserta_didik": {"neutralised": 1, "clock": 0}}
    assert school.neutralised(B, 0, 9) == {}


