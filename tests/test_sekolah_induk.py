"""A teacher registered at several schools is edited by their home school (sekolah induk)
only; the others get its edits as the centre's, source "Sekolah Induk".

End to end on a real ``selaras server`` on 127.0.0.1 (the module's ``centre``, gate on)
and two real installs, home school A and school B, driven in-process (``CliRunner``, the
store, admin requests): Tarik Data PTK --non-induk, B's local edit refused, A's edit
coming down to B, a stray edit at B undone, the refusals. Then ``follow_home_school`` on
a bare centre store, on DuckDB and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_principal import KEPSEK, PASSWORD, SELARAS, Centre

from selaras.client import mutasi
from selaras.client.cli import cli
from selaras.client.install import ClientError, Install, now_ms
from selaras.engine.events import Batch, Event, centre_origin
from selaras.engine.signatures import CentreKey
from selaras.engine.storage import open_centre
from selaras.engine.store import SEKOLAH_INDUK, CentreStore
from selaras.server.app import ADMIN_TOKEN
from selaras.server.manajemen import follow_home_school
from selaras.server.remote import admin_request

A, B = "20100061", "20100062"
NON_INDUK = "biodatanya diubah di sekolah induknya dan turun dari sana"
pytestmark = pytest.mark.skipif(SELARAS is None, reason="the selaras command is not installed")


def run(data: Path | None, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, [*(["--data", str(data)] if data else []), *args])
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def query(data: Path, sql: str) -> list[dict[str, Any]]:
    return list(json.loads(run(data, "query", sql, "--json").stdout))


def admin(centre: Centre, command: str, **args: str) -> Any:
    token = (centre.folder / ADMIN_TOKEN).read_text(encoding="utf-8").strip()
    return asyncio.run(admin_request(centre.url, token, command, **args))


def ptk_at_centre(centre: Centre, npsn: str, ptk_id: str, field: str) -> object:
    [[value]] = admin(centre, "query", npsn=npsn,
                      sql=f"SELECT {field} FROM ptk WHERE ptk_id = '{ptk_id}'").rows
    return value


def ptk_at(data: Path, ptk_id: str, field: str) -> object:
    [row] = query(data, f"SELECT {field} FROM ptk WHERE ptk_id = '{ptk_id}'")
    return row[field]


def send(data: Path) -> dict[str, Any]:
    """Confirm (the principal is logged in) and sync: the sync's report."""
    run(data, "confirm", "--all")
    return dict(json.loads(run(data, "sync", "--json").stdout))


@dataclass
class Schools:
    a: Path
    b: Path
    teachers: list[dict[str, Any]]  # teachers of A without tugas tambahan, A their home


@pytest.fixture(scope="module")
def schools(centre: Centre, tmp_path_factory: pytest.TempPathFactory) -> Schools:
    """A and B: generated, registered, confirmed by their principals, synced."""
    folder = tmp_path_factory.mktemp("induk")
    for npsn, seed in ((A, "21"), (B, "22")):
        rows = folder / f"{npsn}.jsonl"
        run(None, "bench", "generate", "--size", "small", "--npsn", npsn, "--seed", seed,
            "--out", str(rows))
        added = run(None, "admin", "--data", str(centre.folder), "school", "add", "--npsn",
                    npsn, "--nama", f"SMA Uji {npsn}").stdout
        kode = added.split("(shown once): ")[1].split()[0]
        data = folder / npsn
        run(data, "init", "--server", centre.url, "--npsn", npsn, "--kode", kode, "--user",
            f"op@{npsn}.sch.id", "--password", "pw")
        run(data, "import", str(rows))
        run(data, "account", "add", "--role", "kepala_sekolah", "--user", KEPSEK,
            "--password", PASSWORD, "--kode", kode)
        run(data, "switch-user", "--user", KEPSEK, "--password", PASSWORD, "--kode", kode)
        send(data)
    teachers = query(folder / A, "SELECT p.ptk_id, p.nama, p.nuptk, t.ptk_terdaftar_id "
                     "FROM ptk p JOIN ptk_terdaftar t USING (ptk_id) WHERE t.ptk_induk = 1 "
                     "AND p.nuptk IS NOT NULL "
                     "AND p.ptk_id NOT IN (SELECT ptk_id FROM tugas_tambahan) "
                     "ORDER BY p.nama LIMIT 2")
    return Schools(folder / A, folder / B, teachers)


def test_b_takes_a_teacher_of_a_as_non_induk_and_cannot_edit_the_biodata(
        schools: Schools) -> None:
    teacher = schools.teachers[0]
    plain = run(schools.b, "transfer", "ptk", "--nuptk", teacher["nuptk"], code=1).stderr
    assert f"masih terdaftar di sekolah asal {A}" in plain and "--non-induk" in plain
    moved = json.loads(run(schools.b, "transfer", "ptk", "--nuptk", teacher["nuptk"],
                           "--non-induk", "--json").stdout)
    assert (moved["row_id"], moved["origin_npsn"], moved["non_induk"]) == (
        teacher["ptk_id"], A, True)
    assert moved["pull"]["received_from"]["centre_sources"] == {"Tarik Data PTK": 1}
    assert ptk_at(schools.b, teacher["ptk_id"], "nama") == teacher["nama"]

    # B registers the teacher as it would any PTK: its own ptk_terdaftar, non-induk.
    [home] = query(schools.a, "SELECT tahun_ajaran_id, jenis_ptk_id, nomor_surat_tugas, "
                   "tanggal_surat_tugas, tmt_tugas FROM ptk_terdaftar WHERE "
                   f"ptk_terdaftar_id = '{teacher['ptk_terdaftar_id']}'")
    with Install(schools.b).open() as s:
        registered = s.replica.add("ptk_terdaftar", {
            **{k: str(v) for k, v in home.items()}, "ptk_id": teacher["ptk_id"],
            "ptk_induk": "0"}, now_ms())
    refused = run(schools.b, "edit", "ptk", teacher["nuptk"], "no_hp=081299999999",
                  code=1).stderr
    assert NON_INDUK in refused
    run(schools.b, "edit", "ptk_terdaftar", registered, "nomor_surat_tugas=800/7/B/2023")
    assert send(schools.b)["ok"]


def test_the_home_schools_edit_comes_down_to_b_as_sekolah_induk(
        centre: Centre, schools: Schools) -> None:
    teacher = schools.teachers[0]
    run(schools.a, "edit", "ptk", teacher["nuptk"], "nama=Ratna Sari Dewi")
    send(schools.a)
    pulled = run(schools.b, "pull").stdout
    assert "dari server pusat (Sekolah Induk 1)" in pulled
    assert ptk_at(schools.b, teacher["ptk_id"], "nama") == "Ratna Sari Dewi"
    # The centre's history of B says so too (it records a session as the session ends).
    for _ in range(50):
        [latest] = admin(centre, "history", npsn=B, limit="1").data["sessions"]
        if latest["mode"] == "pull":
            break
    assert json.loads(latest["sources"]) == {SEKOLAH_INDUK: 1}


def test_a_stray_edit_at_b_is_undone_by_the_next_change(centre: Centre,
                                                        schools: Schools) -> None:
    teacher = schools.teachers[0]
    home_nama = ptk_at(schools.a, teacher["ptk_id"], "nama")
    with Install(schools.b).open() as s:  # past the lock: an old client, say
        s.replica.record([("ptk", teacher["ptk_id"], {"nama": "Nama Keliru"})], now_ms())
    report = send(schools.b)
    assert report["received_from"]["centre_sources"] == {SEKOLAH_INDUK: 1}
    assert ptk_at(schools.b, teacher["ptk_id"], "nama") == home_nama
    assert ptk_at_centre(centre, B, teacher["ptk_id"], "nama") == home_nama

    # Manajemen Dapodik's edits: at A they reach B at once; at B they are undone at once.
    admin(centre, "edit", npsn=A, entity="ptk", row=teacher["nuptk"],
          fields=json.dumps({"no_hp": "081311112222"}))
    assert ptk_at_centre(centre, B, teacher["ptk_id"], "no_hp") == "081311112222"
    admin(centre, "edit", npsn=B, entity="ptk", row=teacher["nuptk"],
          fields=json.dumps({"nama": "Dari Pusat Di B"}))
    assert ptk_at_centre(centre, B, teacher["ptk_id"], "nama") == home_nama


def test_non_induk_is_refused_for_a_student_and_for_a_teacher_without_a_home(
        centre: Centre, schools: Schools) -> None:
    [student] = query(schools.a, "SELECT nisn FROM peserta_didik ORDER BY nisn LIMIT 1")
    with Install(schools.b).open() as s, pytest.raises(ClientError, match="hanya untuk PTK"):
        mutasi.request_transfer(s, "pd", student["nisn"], non_induk=True)
    # A teacher registered at A, but as non-induk: no home school anywhere.
    teacher = schools.teachers[1]
    admin(centre, "edit", npsn=A, entity="ptk_terdaftar", row=teacher["ptk_terdaftar_id"],
          fields=json.dumps({"ptk_induk": "0"}))
    refused = run(schools.b, "transfer", "ptk", "--nuptk", teacher["nuptk"], "--non-induk",
                  code=1).stderr
    assert "tidak berinduk di sekolah mana pun" in refused
    plain = run(schools.b, "transfer", "ptk", "--nuptk", teacher["nuptk"], code=1).stderr
    assert f"masih terdaftar di sekolah asal {A}" in plain and "--non-induk" not in plain


# -- follow_home_school on a bare centre store ---------------------------------------------

X, Y = "20100071", "20100072"
PTK = "e0000000-0000-4000-8000-00000000000e"
PC_X, PC_Y = "a0000000-0000-4000-8000-000000000001", "b0000000-0000-4000-8000-000000000002"
NOW = 1_790_000_000_000


@pytest.fixture(params=["duckdb", "postgresql"])
def bare(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CentreStore]:
    where = (tmp_path / "centre.duckdb" if request.param == "duckdb"
             else request.getfixturevalue("postgres_url"))
    c = open_centre(where, key=CentreKey(bytes(32)))
    yield c
    c.close()


def push(centre: CentreStore, npsn: str, pc: str, changes: list[tuple[str, str, dict[str, Any]]],
         ) -> None:
    """A school PC's events, one per (entity, row, changes), after all the school holds."""
    store = centre.school(npsn)
    seq, hlc = store.vector().get(pc, 0), store.max_hlc()
    events = [Event(origin=pc, seq=seq + i, hlc=hlc + i, entity=name, row_id=row,
                    changes=fields, author="op", role="operator")
              for i, (name, row, fields) in enumerate(changes, start=1)]
    [report] = centre.append_group([(npsn, Batch.from_events(events))], NOW)
    assert not isinstance(report, Exception)


def registered(row: str, induk: int) -> tuple[str, str, dict[str, Any]]:
    return ("ptk_terdaftar", row, {"ptk_id": PTK, "ptk_induk": induk, "soft_delete": 0})


def test_the_home_schools_biodata_is_written_where_it_differs(bare: CentreStore) -> None:
    push(bare, X, PC_X, [("ptk", PTK, {"nama": "Ani", "nik": "3201", "soft_delete": 0}),
                         registered("f0000000-0000-4000-8000-000000000001", 1)])
    push(bare, Y, PC_Y, [("ptk", PTK, {"nama": "Ana", "nik": "3201", "no_hp": "08",
                                       "soft_delete": 0}),
                         registered("f0000000-0000-4000-8000-000000000002", 0)])
    assert bare.ptk_holders(X) == [(PTK, X, 1), (PTK, Y, 0)]
    assert follow_home_school(bare, Y, NOW) == 1  # Y's change: Y's row is X's again
    assert {k: bare.school(Y).rows("ptk")[PTK][k] for k in ("nama", "no_hp")} == {
        "nama": "Ani", "no_hp": None}
    top = bare.school(Y).vector()[centre_origin(Y)]
    assert bare.school(Y).author_counts(centre_origin(Y), 0, top) == {SEKOLAH_INDUK: 1}
    assert follow_home_school(bare, X, NOW) == 0  # nothing differs

    # Two homes (VP-005's finding), or none: nothing is written.
    push(bare, Y, PC_Y, [registered("f0000000-0000-4000-8000-000000000003", 1),
                         ("ptk", PTK, {"nama": "Ana"})])
    assert follow_home_school(bare, X, NOW) == 0
    push(bare, Y, PC_Y, [("ptk_terdaftar", "f0000000-0000-4000-8000-000000000003",
                          {"soft_delete": 1})])
    push(bare, X, PC_X, [("ptk_terdaftar", "f0000000-0000-4000-8000-000000000001",
                          {"jenis_keluar_id": "1"})])
    assert follow_home_school(bare, X, NOW) == 0
    assert bare.school(Y).rows("ptk")[PTK]["nama"] == "Ana"
