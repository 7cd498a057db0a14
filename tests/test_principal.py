"""The principal's sync end to end: a real ``selaras server`` (gate on, as schools get it)
on 127.0.0.1 and real installs driven by the ``selaras`` command, plus a client that skips
its own gate and speaks the protocol directly. Every refusal of issue 11's list: no
consent, not a principal, a consent older than the changes, a forged consent, a reset code,
a disabled account; and the happy path with two PCs of one school.

A ``selaras`` process costs a second to start: the steps that only set up or read back
state run the same click group in this process (``selaras_here``); what a command
prints is checked through the real command at least once."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from selaras.client.cli import cli
from selaras.engine import consent
from selaras.engine.clocks import hlc_from_ms
from selaras.engine.events import Batch, Event
from selaras.engine.protocol import Code, Hello
from selaras.server.testing import ProtocolClient

SELARAS = shutil.which("selaras", path=os.path.dirname(sys.executable))
pytestmark = pytest.mark.skipif(SELARAS is None, reason="the selaras command is not installed")
KEPSEK, PASSWORD = "kepsek@sekolah.id", "rahasia-kepsek"


def selaras(*args: str, data: Path | None = None,
            ok: bool = True) -> subprocess.CompletedProcess[str]:
    assert SELARAS is not None
    done = subprocess.run([SELARAS, *(["--data", str(data)] if data else []), *args],
                          capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def selaras_here(*args: str, data: Path | None = None,
                 ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``selaras`` in this process (CliRunner through the same error handler): the same
    exit status, stdout and stderr as the real command."""
    argv = [*(["--data", str(data)] if data else []), *args]
    result = CliRunner().invoke(cli, argv)
    # Anything but the handler's exit would be a traceback from the real command.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception)
    done = subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


class Centre:
    def __init__(self, folder: Path) -> None:
        assert SELARAS is not None
        self.folder = folder
        self.proc = subprocess.Popen([SELARAS, "server", "--data", str(folder), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = re.search(r"ws://[\d.]+:\d+", line)
        assert found, line
        self.url = found.group(0)

    def admin(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return selaras("admin", "--data", str(self.folder), *args, ok=ok)

    def admin_here(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return selaras_here("admin", "--data", str(self.folder), *args, ok=ok)

    def add_school(self, npsn: str) -> str:
        out = self.admin_here("school", "add", "--npsn", npsn, "--nama", "SMA Uji").stdout
        return out.split("(shown once): ")[1].split()[0]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small generated school per NPSN used here (generated once). A seed per school:
    schools of one seed share their NISNs, and the centre's Validasi Pusat would spend
    seconds on findings no test here is about."""
    folder = tmp_path_factory.mktemp("rows")
    out = {}
    for npsn in ("20100011", "20100012", "20100013", "20100014", "20100017"):
        out[npsn] = folder / f"{npsn}.jsonl"
        selaras_here("bench", "generate", "--size", "small", "--npsn", npsn, "--seed", npsn,
                     "--out", str(out[npsn]))
    return out


def school(centre: Centre, rows: dict[str, Path], npsn: str, folder: Path,
           user: str = "op@sekolah.id") -> tuple[Path, str]:
    """A registered install with the generated school imported (nothing sent yet)."""
    kode = centre.add_school(npsn)
    data = folder / "a"
    selaras_here("init", "--server", centre.url, "--npsn", npsn, "--kode", kode, "--user",
                 user, "--password", "pw", data=data)
    selaras_here("import", str(rows[npsn]), data=data)
    return data, kode


def some_peserta_didik(data: Path) -> str:
    out = selaras_here("query", "SELECT peserta_didik_id FROM peserta_didik ORDER BY 1 "
                       "LIMIT 1", "--json", data=data).stdout
    return str(json.loads(out)[0]["peserta_didik_id"])


def test_two_pcs_each_send_what_the_principal_confirmed(centre: Centre, rows: dict[str, Path],
                                                        tmp_path: Path) -> None:
    npsn = "20100011"
    a, kode = school(centre, rows, npsn, tmp_path)
    refused = selaras("sync", data=a, ok=False)
    assert refused.returncode == 1 and "belum ada Persetujuan Pengiriman Data" in refused.stderr
    added = selaras("account", "add", "--role", "kepala_sekolah", "--user", KEPSEK,
                    "--password", PASSWORD, "--kode", kode, data=a).stdout
    assert "Akun kepala sekolah" in added
    selaras("switch-user", "--user", KEPSEK, "--password", PASSWORD, "--kode", kode, data=a)
    sheet = selaras("confirm", "--all", data=a).stdout
    assert "Lembar Konfirmasi Sinkronisasi" in sheet and "[x] Peserta Didik" in sheet
    selaras("sync", data=a)
    held = json.loads(centre.admin("query", "--npsn", npsn, "--json",
                                   "SELECT count(*) AS n FROM peserta_didik").stdout)
    assert held["rows"][0][0] > 0

    # A second PC registers with an account of its own, made by the dinas.
    centre.admin_here("account", "add", "--npsn", npsn, "--user", "op2@sekolah.id",
                      "--password", "pw2")
    b = tmp_path / "b"
    selaras_here("init", "--server", centre.url, "--npsn", npsn, "--kode", kode, "--user",
                 "op2@sekolah.id", "--password", "pw2", data=b)
    row = some_peserta_didik(b)
    selaras_here("edit", "peserta_didik", row, "nama_ayah=Ahmad Suryadi", data=b)
    assert "belum ada Persetujuan" in selaras_here("sync", data=b, ok=False).stderr
    # Tukar Pengguna on B: the centre hands it the principal's account.
    selaras_here("switch-user", "--user", KEPSEK, "--password", PASSWORD, "--kode", kode,
                 data=b)
    selaras_here("confirm", "--all", data=b)
    selaras_here("sync", data=b)
    selaras_here("sync", data=a)  # A receives B's change
    got = selaras_here("query", "SELECT nama_ayah FROM peserta_didik WHERE peserta_didik_id "
                       f"= '{row}'", "--json", data=a).stdout
    assert json.loads(got) == [{"nama_ayah": "Ahmad Suryadi"}]
    # Both operators' accounts are pengguna rows of the school, the first one's (made at
    # its registration) as much as the one the dinas added; the installs have them too.
    users = ("SELECT username, peran FROM pengguna "
             "WHERE username IN ('op@sekolah.id', 'op2@sekolah.id') ORDER BY 1")
    held = json.loads(centre.admin_here("query", "--npsn", npsn, "--json",
                                        users).stdout)["rows"]
    assert held == [["op2@sekolah.id", "operator"], ["op@sekolah.id", "operator"]]
    assert json.loads(selaras_here("query", users, "--json", data=a).stdout) == [
        {"username": u, "peran": p} for u, p in held]
    sessions = json.loads(centre.admin_here("history", "--npsn", npsn,
                                            "--json").stdout)["sessions"]
    assert any(r["outcome"] == "refused:not_principal"
               for r in sessions) is False  # the client's own gate spoke first


def test_changes_after_the_confirmation_are_not_sent_under_it(
        centre: Centre, rows: dict[str, Path], tmp_path: Path) -> None:
    a, kode = school(centre, rows, "20100012", tmp_path)
    selaras_here("account", "add", "--role", "kepala_sekolah", "--user", KEPSEK, "--password",
                 PASSWORD, "--kode", kode, data=a)
    selaras_here("switch-user", "--user", KEPSEK, "--password", PASSWORD, "--kode", kode,
                 data=a)
    selaras_here("confirm", "--all", data=a)
    selaras_here("edit", "peserta_didik", some_peserta_didik(a), "nama_ayah=Budi", data=a)
    refused = selaras_here("sync", data=a, ok=False)
    assert "perubahan setelah Lembar Konfirmasi" in refused.stderr

    # A client that skips its own gate: the centre refuses what the consent does not cover.
    given = _meta_consent(a)
    token, origin = _meta(a, "token"), _meta(a, "origin")
    client = ProtocolClient(centre.url, "20100012", origin, token)
    beyond = Batch.from_events([_tanah(origin, given.vector[origin] + 1)])
    out = asyncio.run(client.session("sync", batches=[beyond], hello=with_consent(
        client, given)))
    assert out.refused is not None and out.refused.code is Code.NOT_PRINCIPAL
    assert "setelah Lembar Konfirmasi" in out.refused.message


def test_forged_or_missing_consent_is_refused_by_the_centre(
        centre: Centre, rows: dict[str, Path], tmp_path: Path) -> None:
    a, kode = school(centre, rows, "20100013", tmp_path)
    selaras_here("account", "add", "--role", "kepala_sekolah", "--user", KEPSEK, "--password",
                 PASSWORD, "--kode", kode, data=a)
    token, origin = _meta(a, "token"), _meta(a, "origin")
    client = ProtocolClient(centre.url, "20100013", origin, token)
    batch = Batch.from_events([_tanah(origin, 1)])
    none = asyncio.run(client.session("sync", batches=[batch]))
    assert none.refused is not None and none.refused.code is Code.NOT_PRINCIPAL
    # Signed with a key of the operator's own making, in the principal's name.
    seed, _ = consent.new_key()
    forged = consent.sign(consent.Consent(
        npsn="20100013", install=origin, account=KEPSEK, ptk_id="", nama="", nip="",
        semester_id="20231", made_ms=0, sheet_hash="", vector={origin: 10}), seed)
    out = asyncio.run(client.session("sync", batches=[batch],
                                     hello=with_consent(client, forged)))
    assert out.refused is not None and out.refused.code is Code.NOT_PRINCIPAL
    assert "tidak sah" in out.refused.message
    # The operator's own account is no principal: Tukar Pengguna refuses it.
    wrong = selaras_here("switch-user", "--user", "op@sekolah.id", "--password", "pw",
                         "--kode", kode, data=a, ok=False)
    assert "bukan akun kepala sekolah" in wrong.stderr
    bad_password = selaras_here("switch-user", "--user", KEPSEK, "--password", "salah",
                                "--kode", kode, data=a, ok=False)
    assert "kata sandi salah" in bad_password.stderr


def test_switch_user_offline_disabled_account_and_reset_code(
        centre: Centre, rows: dict[str, Path], tmp_path: Path) -> None:
    npsn = "20100014"
    a, kode = school(centre, rows, npsn, tmp_path)
    selaras_here("account", "add", "--role", "kepala_sekolah", "--user", KEPSEK, "--password",
                 PASSWORD, "--kode", kode, data=a)
    # With no line (a copy whose centre is unreachable), the code is checked against the
    # hash kept at registration and the password opens the key kept from the account.
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    _set_meta(copy, url="ws://127.0.0.1:9")
    assert "Kode registrasi salah" in selaras_here(
        "switch-user", "--user", KEPSEK, "--password", PASSWORD, "--kode", "AAAA-BBBB-CCCC",
        data=copy, ok=False).stderr
    assert "Kata sandi salah" in selaras_here(
        "switch-user", "--user", KEPSEK, "--password", "salah", "--kode", kode, data=copy,
        ok=False).stderr
    assert "masuk sebagai kepala sekolah" in selaras(
        "switch-user", "--user", KEPSEK, "--password", PASSWORD, "--kode", kode,
        data=copy).stdout

    centre.admin_here("account", "disable", "--npsn", npsn, "--user", KEPSEK)
    assert "dinonaktifkan" in selaras_here("switch-user", "--user", KEPSEK, "--password",
                                           PASSWORD, "--kode", kode, data=a, ok=False).stderr
    centre.admin_here("account", "disable", "--npsn", npsn, "--user", "op@sekolah.id")
    assert "account_disabled" in selaras_here("pull", data=a, ok=False).stderr
    centre.admin_here("school", "reset-kode", "--npsn", npsn)
    assert "code_reset" in selaras_here("switch-user", "--user", KEPSEK, "--password",
                                        PASSWORD, "--kode", kode, data=a, ok=False).stderr


def test_no_single_active_principal_names_the_tab_to_fix(rows: dict[str, Path],
                                                        tmp_path: Path) -> None:
    data = tmp_path / "offline"
    selaras_here("init", "--offline", "--npsn", "20100011", data=data)
    selaras_here("import", str(rows["20100011"]), data=data)
    ids = json.loads(selaras_here("query", "SELECT ptk_tugas_tambahan_id AS id FROM "
                                  "tugas_tambahan", "--json", data=data).stdout)
    for row in ids:
        selaras_here("delete", "tugas_tambahan", row["id"], data=data)
    refused = selaras_here("account", "add", "--role", "kepala_sekolah", "--user", KEPSEK,
                           "--password", PASSWORD, "--kode", "X", data=data, ok=False)
    assert "Tidak ada kepala sekolah aktif" in refused.stderr and "tab GTK" in refused.stderr


def with_consent(client: ProtocolClient, given: consent.Consent) -> Hello:
    return msgspec.structs.replace(client.hello("sync", {}), consent=consent.encode(given))


def _set_meta(data: Path, **values: str) -> None:
    from selaras.engine.storage import open_install

    store = open_install(data / "selaras.duckdb", None)
    try:
        store.set_meta(**values)
    finally:
        store.close()


def _meta(data: Path, key: str) -> str:
    from selaras.engine.storage import open_install

    store = open_install(data / "selaras.duckdb", None, read_only=True)
    try:
        return store.meta()[key]
    finally:
        store.close()


def _meta_consent(data: Path) -> consent.Consent:
    given = consent.decode(bytes.fromhex(_meta(data, "consent")))
    assert given is not None
    return given


def _tanah(origin: str, seq: int) -> Event:
    return Event(origin=origin, seq=seq, hlc=(1 << 20) * seq, entity="tanah",
                 row_id=str(uuid.uuid4()), changes={"nama": f"tanah {seq}"},
                 author="x", role="operator")


def test_the_centre_refuses_a_push_that_would_leave_invalid_data_and_keeps_none_of_it(
        centre: Centre, rows: dict[str, Path], tmp_path: Path) -> None:
    """A client that skips its own gate, with the principal's own key (a modified app):
    the centre runs Validasi Lokal's rules on the state the push would make."""
    npsn = "20100017"
    a, kode = school(centre, rows, npsn, tmp_path)
    selaras_here("account", "add", "--role", "kepala_sekolah", "--user", KEPSEK, "--password",
                 PASSWORD, "--kode", kode, data=a)
    selaras_here("switch-user", "--user", KEPSEK, "--password", PASSWORD, "--kode", kode,
                 data=a)
    selaras_here("confirm", "--all", data=a)
    selaras_here("sync", data=a)
    student = some_peserta_didik(a)
    nik = f"SELECT nik FROM peserta_didik WHERE peserta_didik_id = '{student}'"
    before = json.loads(centre.admin_here("query", "--npsn", npsn, nik, "--json").stdout)["rows"]

    origin, token = _meta(a, "origin"), _meta(a, "token")
    key = bytes.fromhex(json.loads(_meta(a, "session"))["key"])
    top = _meta_consent(a).vector[origin]
    bad = _edit(origin, top + 1, "peserta_didik", student, {"nik": "123"})
    fix = _edit(origin, top + 2, "peserta_didik", student, {"nik": "3201234567890123"})

    def push(events: list[Event]) -> Any:
        signed = consent.sign(msgspec.structs.replace(
            _meta_consent(a), vector={origin: events[-1].seq}, signature=b""), key)
        client = ProtocolClient(centre.url, npsn, origin, token)
        return asyncio.run(client.session("sync", batches=[Batch.from_events(events)],
                                          hello=with_consent(client, signed)))

    refused = push([bad])
    assert refused.refused is not None and refused.refused.code is Code.INVALID_DATA_PENDING
    assert "Peserta Didik 1" in refused.refused.message
    after = json.loads(centre.admin_here("query", "--npsn", npsn, nik, "--json").stdout)["rows"]
    assert after == before  # nothing of the refused push is the centre's data
    assert _listed(centre, npsn)["invalid"] == 1  # the school list shows it pending
    # The same change again with its fix after it: the state is valid, both are taken.
    done = push([bad, fix])
    assert done.refused is None and done.summary is not None
    fixed = json.loads(centre.admin_here("query", "--npsn", npsn, nik, "--json").stdout)["rows"]
    assert fixed == [["3201234567890123"]]
    listed = _listed(centre, npsn)
    assert listed["invalid"] == 0

    # The centre's record, newest first: the two pushes under the principal's consents.
    sessions = json.loads(centre.admin_here("history", "--npsn", npsn,
                                            "--json").stdout)["sessions"]
    assert [r["outcome"] for r in sessions[:2]] == ["done", "refused:invalid_data_pending"]
    assert [r["invalid"] for r in sessions[:2]] == [0, 1]
    assert {r["principal"] for r in sessions[:2]} == {KEPSEK}
    assert listed["last_sync_ms"] == sessions[0]["ended_ms"]
    assert listed["last_pull_ms"] < sessions[0]["started_ms"]  # init's Tarik Data
    lines = centre.admin("history", "--npsn", npsn, "--limit", "2").stdout.splitlines()
    assert lines[0].split()[:4] == ["waktu", "jenis", "instalasi", "akun"]
    newest, refusal = lines[1:3]
    assert re.match(r"\d\d-\d\d-\d{4} \d\d:\d\d WI[BT]A? +Sinkronisasi", newest)
    assert origin[:8] in newest and "op@sekolah.id" in newest
    assert sessions[0]["consent"][:12] in newest and sessions[0]["consent"] not in newest
    assert newest.endswith("berhasil") and refusal.endswith("ditolak (invalid_data_pending)")
    assert lines[3].startswith("2 sesi terakhir sekolah " + npsn)
    listing = centre.admin("school", "list").stdout
    when = r"\d\d-\d\d-\d{4} \d\d:\d\d WI[BT]A?"
    assert re.search(rf"{npsn} +SMA Uji +1 +{when} +{when} +0 +Referensi \d+", listing,
                     re.M), listing


def _listed(centre: Centre, npsn: str) -> dict[str, Any]:
    schools = json.loads(centre.admin_here("school", "list", "--json").stdout)["schools"]
    return next(s for s in schools if s["npsn"] == npsn)


def _edit(origin: str, seq: int, entity: str, row: str, changes: dict[str, Any]) -> Event:
    return Event(origin=origin, seq=seq, hlc=hlc_from_ms(int(time.time() * 1000)) + seq,
                 entity=entity, row_id=row, changes=changes, author="x", role="operator")
