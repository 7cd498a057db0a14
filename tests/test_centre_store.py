"""The centre's store: many schools in one file, group commit, isolation."""

import pytest

from selaras.engine.duckdb_store import DuckDBCentre
from selaras.engine.events import Batch, Event
from selaras.engine.signatures import CentreKey
from selaras.engine.store import EventCollision

A = "a0000000-0000-4000-8000-000000000001"
PD = "d0000000-0000-4000-8000-00000000000d"
NOW = 1_790_000_000_000  # ms; every hlc here is far behind it


def batch(origin, first, n, nik="1"):
    return Batch.from_events([
        Event(origin=origin, seq=s, hlc=s, entity="peserta_didik", row_id=PD,
              changes={"nik": f"{nik}{s}"}, author="op", role="operator")
        for s in range(first, first + n)])


@pytest.fixture
def centre(tmp_path):
    c = DuckDBCentre(tmp_path / "centre.duckdb", key=CentreKey(bytes(32)))
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
    reader = centre.reader("20100001")
    assert reader.vector() == {A: 2}
    assert len(reader.events_after({A: 1})) == 1
    assert reader.checksums() == centre.school("20100001").checksums()
