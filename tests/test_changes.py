"""Pending changes (``selaras changes``, client/changes.py): what changed since the last
acknowledged sync, per tab and table, named for people, with the PC that made it.

Offline installs swap bundles; the sync cases run the real centre on 127.0.0.1
(``running_server``) and real installs registered with it, as tests/test_sync.py does.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from click.testing import CliRunner

from selaras.client import output
from selaras.client.changes import (
    CENTRE_VECTOR,
    CHANGE_TABS,
    Changes,
    Counts,
    pending_changes,
    tab_counts,
)
from selaras.client.cli import cli
from selaras.client.install import (
    ACKED_SEQ,
    Install,
    Session,
    export_bundle,
    import_bundle,
    import_rows,
    now_ms,
)
from selaras.client.sync import Mode, register, run_sync
from selaras.server.testing import RunningServer, running_server

NPSN = "20100001"
USER, PASSWORD = "op@sekolah.id", "rahasia123"
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.1}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)

AHMAD, BUDI = "Ahmad Fauzi (NISN 0012345678)", "Budi Santoso (NISN 0012345679)"


def school_rows(session: Session) -> dict[str, str]:
    """Two students (each with a registrasi) and a teacher, as an import file brings them:
    the file's path, and their ids under "ahmad", "budi", "guru"."""
    sekolah = session.identity.sekolah_id
    ids = {k: str(uuid.uuid4()) for k in ("ahmad", "budi", "guru", "reg_a", "reg_b")}
    rows = [
        {"entity": "peserta_didik", "peserta_didik_id": ids["ahmad"], "nama": "Ahmad Fauzi",
         "jenis_kelamin": "L", "nisn": "0012345678", "tanggal_lahir": "2008-01-02",
         "agama_id": 1, "nama_ibu_kandung": "Siti", "soft_delete": 0},
        {"entity": "peserta_didik", "peserta_didik_id": ids["budi"], "nama": "Budi Santoso",
         "jenis_kelamin": "L", "nisn": "0012345679", "tanggal_lahir": "2008-03-04",
         "agama_id": 1, "nama_ibu_kandung": "Ani", "soft_delete": 0},
        {"entity": "registrasi_peserta_didik", "registrasi_id": ids["reg_a"],
         "peserta_didik_id": ids["ahmad"], "sekolah_id": sekolah, "jenis_pendaftaran_id": 1,
         "nipd": "232400001", "tanggal_masuk_sekolah": "2023-07-17", "soft_delete": 0},
        {"entity": "registrasi_peserta_didik", "registrasi_id": ids["reg_b"],
         "peserta_didik_id": ids["budi"], "sekolah_id": sekolah, "jenis_pendaftaran_id": 1,
         "nipd": "232400002", "tanggal_masuk_sekolah": "2023-07-17", "soft_delete": 0},
        {"entity": "ptk", "ptk_id": ids["guru"], "nama": "Nabila Purnamasari",
         "nuptk": "1829214784194180", "jenis_kelamin": "P", "tanggal_lahir": "1978-11-22",
         "agama_id": 1, "soft_delete": 0},
    ]
    return ids | {"rows": "\n".join(json.dumps(r) for r in rows) + "\n"}


def imported(session: Session, folder: Path) -> dict[str, str]:
    ids = school_rows(session)
    path = folder / "rows.jsonl"
    path.write_text(ids["rows"], encoding="utf-8")
    import_rows(session, path)
    return ids


def acknowledge_all(session: Session) -> None:
    """As if the centre had acknowledged every event of this install's own."""
    top = session.store.vector()[session.identity.origin]
    session.store.set_meta(**{ACKED_SEQ: str(top)})


def table(changes: Changes, entity: str) -> tuple[Counts, list[tuple[str, str, list[str]]]]:
    """One table's counts and its rows as (change, nama, labels)."""
    (found,) = [t for tab in changes.tabs for t in tab.tables if t.entity == entity]
    return found.counts, [(r.change, r.nama, list(r.labels)) for r in found.rows]


def entities(changes: Changes) -> list[str]:
    return [t.entity for tab in changes.tabs for t in tab.tables]


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[tuple[Session, dict[str, str]]]:
    """An offline install with the imported rows, and their ids."""
    install = Install(tmp_path / "a")
    install.init_offline(NPSN)
    with install.open() as session:
        yield session, imported(session, tmp_path)


def test_a_fresh_offline_install_lists_its_imported_rows_as_added(
        offline: tuple[Session, dict[str, str]]) -> None:
    session, _ = offline
    changes = pending_changes(session)
    # Referensi and the school's identity are the centre's events: never pending.
    assert entities(changes) == ["peserta_didik", "registrasi_peserta_didik", "ptk"]
    assert [t.tab for t in changes.tabs] == ["Peserta Didik", "GTK"]  # TABS order
    assert changes.counts == Counts(added=5)
    assert changes.synced_ms is None
    assert table(changes, "peserta_didik") == (Counts(added=2), [
        ("added", AHMAD, _labels_of_import()), ("added", BUDI, _labels_of_import())])
    counts, rows = table(changes, "ptk")
    assert counts == Counts(added=1) and rows[0][1] == "Nabila Purnamasari (NUPTK 1829214784194180)"
    assert {pc.text() for tab in changes.tabs for t in tab.tables for r in t.rows
            for pc in r.by} == {"PC ini"}
    text = output.changes_text(changes)
    assert text.startswith("Perubahan belum terkirim (instalasi ini belum pernah "
                           "sinkronisasi dengan server pusat): 5 data, 5 ditambah, 0 diubah, "
                           "0 dihapus")
    assert f"    Ditambah: {AHMAD}; oleh PC ini, " in text
    assert "  Registrasi Peserta Didik: 2 ditambah, 0 diubah, 0 dihapus" in text
    assert not UUID.search(text)
    assert tab_counts(session) == {tab: Counts(added={"Peserta Didik": 4, "GTK": 1}.get(tab, 0))
                                   for tab in CHANGE_TABS}


def _labels_of_import() -> list[str]:
    return ["Nama", "Jenis Kelamin", "NISN", "Tanggal Lahir", "Agama", "Nama Ibu Kandung",
            "Dihapus"]


def test_an_edit_is_updated_with_the_form_labels_of_its_fields(
        offline: tuple[Session, dict[str, str]]) -> None:
    session, ids = offline
    acknowledge_all(session)
    assert pending_changes(session).counts == Counts()
    session.replica.edit("peserta_didik", ids["ahmad"],
                         {"nama_ibu_kandung": "Siti Aminah",
                          "nomor_telepon_seluler": "081234567890"}, now_ms())
    changes = pending_changes(session)
    assert entities(changes) == ["peserta_didik"]
    assert table(changes, "peserta_didik") == (Counts(updated=1), [
        ("updated", AHMAD, ["Nama Ibu Kandung", "Nomor HP"])])
    text = output.changes_text(changes)
    assert f"    Diubah: {AHMAD}: Nama Ibu Kandung, Nomor HP; oleh PC ini, " in text
    assert not UUID.search(text)


def test_a_delete_is_deleted_and_each_row_is_counted_once(
        offline: tuple[Session, dict[str, str]]) -> None:
    session, ids = offline
    acknowledge_all(session)
    session.replica.edit("peserta_didik", ids["budi"], {"nama": "Budi S."}, now_ms())
    session.replica.delete("peserta_didik", ids["budi"], now_ms())
    added = session.replica.add("tanah", {"nama": "Kebun Sekolah"}, now_ms())
    session.replica.delete("tanah", added, now_ms())  # added and deleted: deleted
    changes = pending_changes(session)
    assert table(changes, "peserta_didik") == (Counts(deleted=1), [
        ("deleted", "Budi S. (NISN 0012345679)", ["Nama", "Dihapus"])])
    assert table(changes, "tanah") == (Counts(deleted=1), [
        ("deleted", "Kebun Sekolah", ["Sekolah", "Nama", "Dihapus"])])
    text = output.changes_text(changes)
    assert "    Dihapus: Budi S. (NISN 0012345679); oleh PC ini, " in text
    assert "Tab Sarpras: 0 ditambah, 0 diubah, 1 dihapus" in text
    assert not UUID.search(text)


def test_the_limit_lists_a_share_of_each_kind_and_counts_the_rest(
        offline: tuple[Session, dict[str, str]]) -> None:
    session, ids = offline
    acknowledge_all(session)
    session.replica.edit("peserta_didik", ids["ahmad"], {"nama": "Ahmad F."}, now_ms())
    for n in range(3):
        session.replica.add("peserta_didik", {"nama": f"Siswa {n}", "jenis_kelamin": "P"},
                            now_ms())
    changes = pending_changes(session, limit=2)
    counts, rows = table(changes, "peserta_didik")
    assert counts == Counts(added=3, updated=1)
    # The one update is listed though three later rows were added.
    assert [r[0] for r in rows] == ["added", "updated"]
    assert "    ... dan 2 lainnya" in output.changes_text(changes)
    assert table(pending_changes(session, limit=0), "peserta_didik") == (counts, [])


def test_a_change_from_another_pc_by_bundle_shows_that_pcs_author(tmp_path: Path) -> None:
    a_install, b_install = Install(tmp_path / "a"), Install(tmp_path / "b")
    a_install.init_offline(NPSN)
    b_install.init_offline(NPSN, user="budi@sekolah.id")
    with a_install.open() as a, b_install.open() as b:
        ids = imported(a, tmp_path)
        acknowledge_all(a)
        import_bundle(b, export_bundle(a, b.store.vector())[0])
        b.replica.edit("peserta_didik", ids["ahmad"], {"nama_ayah": "Hasan"}, now_ms())
        b.replica.add("tanah", {"nama": "Kebun Sekolah"}, now_ms())
        import_bundle(a, export_bundle(b, a.store.vector())[0])
        changes = pending_changes(a)
        assert entities(changes) == ["tanah", "peserta_didik"]
        (row,) = [r for tab in changes.tabs for t in tab.tables for r in t.rows
                  if r.entity == "peserta_didik"]
        assert (row.change, row.nama, row.labels) == ("updated", AHMAD, ("Nama Ayah Kandung",))
        short = b.identity.origin[:8]
        assert [pc.text() for pc in row.by] == [f"budi@sekolah.id (PC {short})"]
        text = output.changes_text(changes)
        assert (f"    Diubah: {AHMAD}: Nama Ayah Kandung; oleh budi@sekolah.id (PC {short}), "
                in text)
        assert f"    Ditambah: Kebun Sekolah; oleh budi@sekolah.id (PC {short}), " in text
        assert f"Dibuat oleh: budi@sekolah.id (PC {short}) 2 data" in text
        assert b.identity.origin not in text and not UUID.search(text)
        # A's own edit of the same row: both PCs are named, this one first.
        a.replica.edit("peserta_didik", ids["ahmad"], {"nama_ayah": "Hasan Basri"}, now_ms())
        (row,) = [r for tab in pending_changes(a).tabs for t in tab.tables for r in t.rows
                  if r.entity == "peserta_didik"]
        assert [pc.text() for pc in row.by] == ["PC ini", f"budi@sekolah.id (PC {short})"]


def test_the_command_prints_text_and_json(offline: tuple[Session, dict[str, str]],
                                          tmp_path: Path) -> None:
    session, ids = offline
    session.replica.delete("ptk", ids["guru"], now_ms())
    session.store.close()  # the command opens the install itself
    runner = CliRunner()
    data = ["--data", str(tmp_path / "a")]
    done = runner.invoke(cli, [*data, "changes", "--limit", "1"])
    assert done.exit_code == 0, done.output
    assert "Tab GTK: 0 ditambah, 0 diubah, 1 dihapus" in done.output
    assert "    ... dan 1 lainnya" in done.output
    assert not UUID.search(done.output)
    # Each line starts with a capital (but "... dan N lainnya").
    assert all(line.strip()[:1].isupper() or line.strip().startswith("... dan ")
               for line in done.output.splitlines() if line.strip())
    done = runner.invoke(cli, [*data, "changes", "--tab", "gtk", "--json"])
    assert done.exit_code == 0, done.output
    found = json.loads(done.output)
    assert (found["tab"], found["added"], found["deleted"]) == ("GTK", 0, 1)
    (tab,) = found["tabs"]
    (ptk,) = tab["tables"]
    assert ptk["entity"] == "ptk" and ptk["label"] == "PTK"
    (row,) = ptk["rows"]
    assert row["row_id"] == ids["guru"] and row["change"] == "deleted"
    assert row["by"][0]["this_pc"] and row["changed"]
    done = runner.invoke(cli, [*data, "changes", "--tab", "Sarpras"])
    semester, first = done.output.splitlines()[:2]  # the working semester opens the screen
    assert semester.startswith("Semester: ")
    assert first.startswith("Tidak ada perubahan belum terkirim di tab Sarpras")


# -- with the centre -------------------------------------------------------------------------


async def enrol(srv: RunningServer, kode: str, folder: Path, stack: ExitStack) -> Session:
    """Register an install with the centre's kode, open it and pull (tests/test_sync.py)."""
    answer = await register(srv.url, NPSN, kode, USER, PASSWORD)
    install = Install(folder)
    install.init_registered(NPSN, origin=answer.install, token=answer.token, url=srv.url,
                            user=USER, role=answer.role, centre_key=answer.centre_key)
    session = stack.enter_context(install.open())
    report = await run_sync(session.store, session.identity, mode="pull", timeout_s=20, **FAST)
    assert report.ok
    return session


async def synced(session: Session, mode: Mode = "sync") -> None:
    report = await run_sync(session.store, session.identity, mode=mode,
                            timeout_s=20, **FAST)
    assert report.ok


def test_after_a_sync_with_the_centre_nothing_is_pending(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                a = await enrol(srv, kode, tmp_path / "a", stack)
                # The first pull brought only the centre's events: nothing pending.
                assert pending_changes(a).counts == Counts()
                assert CENTRE_VECTOR in a.store.meta()
                ids = imported(a, tmp_path)
                assert pending_changes(a).counts == Counts(added=5)
                await synced(a)
                changes = pending_changes(a)
                assert changes.counts == Counts() and changes.synced_ms is not None
                assert output.changes_text(changes).startswith(
                    "Tidak ada perubahan belum terkirim sejak sinkronisasi terakhir (")
                # Another PC pulls A's rows: the centre had them, so they are not pending.
                b = await enrol(srv, kode, tmp_path / "b", stack)
                assert pending_changes(b).counts == Counts()
                # B's edit reaches A by bundle, before B syncs: pending at A, as B's.
                b.replica.edit("peserta_didik", ids["budi"], {"nama_ibu_kandung": "Ani S."},
                               now_ms())
                import_bundle(a, export_bundle(b, a.store.vector())[0])
                changes = pending_changes(a)
                assert table(changes, "peserta_didik") == (Counts(updated=1), [
                    ("updated", BUDI, ["Nama Ibu Kandung"])])
                (pc,) = changes.pcs
                assert pc[0].text() == f"{USER} (PC {b.identity.origin[:8]})"
                # A syncing does not send B's events: they stay pending until the centre
                # has them; after B syncs and A pulls, nothing is.
                await synced(a)
                assert pending_changes(a).counts == Counts(updated=1)
                await synced(b)
                await synced(a, "pull")
                assert pending_changes(a).counts == Counts()
                # A pull does not send A's own edit: it stays pending.
                a.replica.edit("ptk", ids["guru"], {"no_hp": "081200000000"}, now_ms())
                await synced(a, "pull")
                assert table(pending_changes(a), "ptk") == (Counts(updated=1), [
                    ("updated", "Nabila Purnamasari (NUPTK 1829214784194180)", ["Nomor HP"])])
    asyncio.run(main())
