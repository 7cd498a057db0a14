"""Validasi Pusat's rules (engine/validasi_pusat.py) on both centre stores, and running only
the rules a change can touch (server/validasi_pusat.py)."""

import uuid

import pytest

from selaras.engine.events import Batch, Event
from selaras.engine.schema import VALIDASI_PUSAT
from selaras.engine.signatures import CentreKey
from selaras.engine.storage import open_centre
from selaras.engine.validasi_pusat import RULES, rules_reading
from selaras.server import validasi_pusat
from selaras.server.admin import run_admin

NOW = 1_790_000_000_000


def rid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


class School:
    """One school's rows, pushed as its install's events."""

    def __init__(self, centre, npsn: str) -> None:
        self.centre, self.npsn, self.seq = centre, npsn, 0
        self.origin = rid(f"install/{npsn}")

    def push(self, *rows: tuple[str, str, dict]) -> None:
        events = []
        for entity, name, changes in rows:
            self.seq += 1
            events.append(Event(origin=self.origin, seq=self.seq, hlc=self.seq, entity=entity,
                                row_id=rid(f"{self.npsn}/{name}"), changes=changes,
                                author="op", role="operator"))
        with self.centre.transaction():
            self.centre.admit(self.npsn, Batch.from_events(events), NOW)

    def student(self, name: str, nik: str, nisn: str, keluar: str | None = None) -> None:
        person = rid(f"{self.npsn}/{name}")
        self.push(("peserta_didik", name, {"nama": name, "nik": nik, "nisn": nisn}),
                  ("registrasi_peserta_didik", f"reg-{name}",
                   {"peserta_didik_id": person, "jenis_keluar_id": keluar}))

    def member(self, name: str, person: str, rombel: str, semester: str = "20231",
               jenis: int = 1) -> None:
        self.push(("rombongan_belajar", rombel, {"nama": rombel, "semester_id": semester,
                                                 "jenis_rombel": jenis}),
                  ("anggota_rombel", name, {"peserta_didik_id": person,
                                            "rombongan_belajar_id": rid(f"{self.npsn}/{rombel}")}))

    def teacher(self, name: str, ptk: str, hours: int, induk: int) -> None:
        self.push(("ptk_terdaftar", name, {"ptk_id": ptk, "tahun_ajaran_id": 2023,
                                           "ptk_induk": induk}),
                  ("pembelajaran", f"mengajar-{name}",
                   {"ptk_terdaftar_id": rid(f"{self.npsn}/{name}"), "semester_id": "20231",
                    "jam_mengajar_per_minggu": hours}))


@pytest.fixture(params=["duckdb", "postgresql"])
def centre(request, tmp_path):
    where = (tmp_path / "centre.duckdb" if request.param == "duckdb"
             else request.getfixturevalue("postgres_url"))
    c = open_centre(where, key=CentreKey(bytes(32)))
    yield c
    c.close()


def found(centre, npsn: str) -> set[tuple[str, str, str]]:
    return {(f["rule_id"], f["row_ref"], f["sekolah_lain"])
            for f in centre.central_findings(npsn)}


def test_each_rule_flags_both_schools_and_nothing_else(centre):
    a, b, c = (School(centre, n) for n in ("10000001", "10000002", "10000003"))
    a.student("ani", "3201010101010001", "0012345678")
    b.student("ani", "3201010101010001", "0099999999")  # one NIK at two schools
    b.student("budi", "3201010101010002", "0012345678")  # one NISN at two schools
    c.student("ani", "3201010101010001", "0012345678", keluar="2")  # left: registered nowhere
    person = rid("a-person")
    a.member("ani-x", person, "X-1")
    b.member("ani-y", person, "X-2")  # two regular rombels in one semester
    c.member("ani-z", person, "Ekskul", jenis=51)  # not a regular rombel
    ptk, light = rid("guru"), rid("guru-ringan")
    a.teacher("guru", ptk, 30, induk=1)
    b.teacher("guru", ptk, 20, induk=1)  # 50 hours, and two home schools
    a.teacher("ringan", light, 10, induk=1)
    c.teacher("ringan", light, 10, induk=0)  # 20 hours, one home school

    def at(school, name):
        return rid(f"{school.npsn}/{name}")

    assert found(centre, a.npsn) == {
        ("VP-001", at(a, "ani"), b.npsn), ("VP-002", at(a, "ani"), b.npsn),
        ("VP-003", at(a, "ani-x"), b.npsn), ("VP-004", ptk, b.npsn),
        ("VP-005", at(a, "guru"), b.npsn)}
    assert found(centre, b.npsn) == {
        ("VP-001", at(b, "ani"), a.npsn), ("VP-002", at(b, "budi"), a.npsn),
        ("VP-003", at(b, "ani-y"), a.npsn), ("VP-004", ptk, a.npsn),
        ("VP-005", at(b, "guru"), a.npsn)}
    assert found(centre, c.npsn) == set()


def test_a_change_runs_only_the_rules_that_read_it(centre):
    assert rules_reading(None) == RULES
    assert rules_reading({"nilai", "jadwal"}) == ()
    assert [r.id for r in rules_reading({"ptk_terdaftar"})] == ["VP-004", "VP-005"]
    a, b = School(centre, "10000001"), School(centre, "10000002")
    ptk = rid("guru")
    a.teacher("guru", ptk, 30, induk=1)
    b.teacher("guru", ptk, 20, induk=1)
    a.student("ani", "3201010101010001", "0012345678")
    b.student("ani", "3201010101010001", "0099999999")

    def live(school):
        return sorted(row["rule_id"] for row in centre.school(school.npsn).rows(VALIDASI_PUSAT)
                      .values() if not row["soft_delete"])

    assert validasi_pusat.after_change(centre, a.npsn, NOW, {"nilai"}).raised == {}
    assert live(a) == live(b) == []
    changed = validasi_pusat.after_change(centre, a.npsn, NOW, {"ptk_terdaftar"})
    assert changed.raised == {a.npsn: 2, b.npsn: 2}
    assert live(a) == live(b) == ["VP-004", "VP-005"]
    # The students' rule runs later; the teachers' findings stay as they are.
    validasi_pusat.after_change(centre, b.npsn, NOW, {"peserta_didik"})
    assert live(a) == live(b) == ["VP-001", "VP-004", "VP-005"]
    b.teacher("guru", ptk, 5, induk=0)  # B is no longer a home school, and 35 hours in all
    changed = validasi_pusat.after_change(centre, b.npsn, NOW, {"ptk_terdaftar"})
    assert changed.cleared == {a.npsn: 2, b.npsn: 2}
    assert live(a) == live(b) == ["VP-001"]


def test_a_full_run_writes_every_schools_findings_once(centre):
    for npsn in ("10000001", "10000002", "10000003"):
        run_admin(centre, centre.registry, "school_add", {"npsn": npsn, "bentuk": "SMA"}, NOW)
    a, b = School(centre, "10000001"), School(centre, "10000002")
    a.student("ani", "3201010101010001", "0012345678")
    b.student("ani", "3201010101010001", "0099999999")

    def run(**args):
        return run_admin(centre, centre.registry, "central_validation", args, NOW)

    first = run(all="1")
    assert first.rows == [[a.npsn, 1, 0], [b.npsn, 1, 0]]
    assert first.message == ("Validasi Pusat dijalankan di 3 sekolah: 2 temuan baru atau "
                             "berubah, 0 selesai")
    assert run(all="1").rows == []  # nothing changed since: nothing written
    [listed] = run(npsn=b.npsn).rows
    assert listed[0] == "VP-001" and listed[-1] == a.npsn
