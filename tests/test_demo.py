"""``selaras demo``: the networked demo (a centre and two installs) and ``--offline``.

Both run through the click group (CliRunner). Convergence is read from what
the demo prints (the checksum table, one column per holder) and checked again
afterwards on the folders it kept (--dir): the installs' and the centre's
checksums, through the commands. The centre's gate is on: the story is read
for the principal's procedure (a refused sync, Tukar Pengguna, the sheet, the
consent) before every sync that sends, and the centre's own session records
are read for its refusal.

The full story runs its dozen ``selaras admin`` commands in this process (a process
costs a second to start); the small school's story runs them as the demo does, each in
a ``selaras`` process.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from selaras.client import demo
from selaras.client.cli import cli
from selaras.client.install import ClientError

NPSN = "20219876"
DIGEST = re.compile(r"[0-9a-f]{32}")


def run(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, (args, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def checksum_table(text: str, columns: int) -> dict[str, list[str]]:
    """Entity -> its digests in the demo's side-by-side table."""
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = line.split()
        if (len(cells) == columns + 2 and all(DIGEST.fullmatch(c) for c in cells[1:-1])):
            assert cells[0] not in table
            table[cells[0]] = cells[1:-1]
            assert cells[-1] in ("equal", "DIFFERENT")
    return table


def sends_under_consent(out: str) -> list[tuple[str, int]]:
    """Each sync line that sends events: (install, events sent). Checks that it names the
    consent the principal signed last on that install, with no edit since."""
    consents: dict[str, str] = {}
    sent = []
    for line in out.splitlines():
        if signed := CONSENT.match(line):
            consents[signed["install"]] = signed["consent"]
        elif edited := EDIT.match(line):
            consents.pop(edited["install"], None)  # a change after the confirmation
        elif (synced := SYNCED.match(line)) and int(synced["sent"]):
            install = synced["install"]
            assert synced["consent"] is not None, line
            assert synced["consent"] == consents.get(install), (line, consents)
            sent.append((install, int(synced["sent"])))
    return sent


CONSENT = re.compile(r"^\S.* signs the Persetujuan Pengiriman Data: consent (?P<consent>[0-9a-f]+)"
                     r", covering (?P<install>[AB])'s changes up to #\d+")
EDIT = re.compile(r"^(?:  )?(?P<install>[AB])(?:: \w+ = | resolves )")
SYNCED = re.compile(r"^(?P<install>[AB]) syncs.*?(?: under the principal's consent "
                    r"(?P<consent>[0-9a-f]+))?(?: \(nothing of its own to send: no consent "
                    r"needed\))?: (?P<sent>\d+) events sent, \d+ received")


def admin_here(centre: demo.Centre, *args: str) -> str:
    """``demo.Centre.admin`` with the same command in this process: its stdout, or the
    same ClientError."""
    result = CliRunner().invoke(cli, ["admin", "--data", str(centre.data), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception)
    if result.exit_code != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.exit_code}"]
        raise ClientError(f"selaras admin {' '.join(args[:2])}: {lines[-1]}")
    return result.stdout


def test_networked_demo_converges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.Centre, "admin", admin_here)
    work = tmp_path / "demo"
    result = run("demo", "--dir", str(work))
    out = result.stdout
    lines = out.splitlines()

    # The operator's first sync is refused (the client's own check, then the centre's gate),
    # then the procedure: the principal's account, Tukar Pengguna, the sheet, the consent.
    story = [
        "A's operator syncs (selaras sync): Sinkronisasi ditolak: belum ada Persetujuan "
        "Pengiriman Data",
        "  Sent anyway, past that check, the centre refuses it too: ditolak server pusat "
        "(not_principal)",
        "A's operator adds the principal's account (selaras account add --role kepala_sekolah)",
        "Tukar Pengguna on A (selaras switch-user): ",
        "The principal reads the Lembar Konfirmasi Sinkronisasi on A",
        "  [x] Peserta Didik: ",
        " signs the Persetujuan Pengiriman Data: consent ",
        "A syncs under the principal's consent ",
        # An invalid row blocks the sync until it is fixed; the fix needs a new consent.
        "  Invalid: ",
        "A syncs: Sinkronisasi ditolak: Validasi Lokal masih menemukan 1 data invalid",
        "A's operator fixes the NIK:",
        "A runs Validasi Lokal: 0 invalid",
        "A syncs its edits: Sinkronisasi ditolak: ada perubahan setelah Lembar Konfirmasi",
        " signs the Persetujuan Pengiriman Data: consent ",
        "A syncs its edits under the principal's consent ",
        # On B the centre hands over the principal's account.
        "Tukar Pengguna on B (selaras switch-user; the centre hands B the principal's account)",
        "The principal reads the Lembar Konfirmasi Sinkronisasi on B",
        " signs the Persetujuan Pengiriman Data: consent ",
        "B syncs under the principal's consent ",
        "A syncs and receives B's edit (nothing of its own to send: no consent needed)",
    ]
    at = 0
    for expected in story:
        found = next((i for i in range(at, len(lines)) if expected in lines[i]), None)
        assert found is not None, f"{expected!r} not found after line {at}:\n{out}"
        at = found + 1
    assert re.search(r"^  Invalid: .*NIK peserta didik harus 16 digit angka .*\[PD-002\]$",
                     out, re.M)
    assert re.search(r"^Tukar Pengguna on A .*: .+ \(kepsek@sman1sukamaju\.sch\.id\) "
                     r"signs in as kepala sekolah$", out, re.M)
    # Every sync that sends does so under the consent the principal signed last on that
    # install, after its last edit: four of them, A's import first.
    sent = sends_under_consent(out)
    assert [install for install, _ in sent] == ["A", "A", "B", "A"]
    assert sent[0][1] > 100 and sent[1:] == [("A", 3), ("B", 1), ("A", 1)]

    assert re.search(r"^The centre is up \(selaras server\): ws://127\.0\.0\.1:\d+$", out, re.M)
    assert re.search(r"^The centre is up \(selaras server\): ws://127\.0\.0\.1:\d+$", out, re.M)
    assert "registration code" in out
    # B's sync shows the conflict on nama_ayah, with both installs' writes.
    conflict = out[out.index("B sees the conflict"):out.index("conflicted field(s); settle")]
    assert '"Ahmad Suryadi"' in conflict and '"Achmad Suryadi"' in conflict
    assert "(this install)" in conflict and "(another install)" in conflict

    table = checksum_table(out, 3)
    assert {"peserta_didik", "sekolah", "ptk"} <= table.keys()
    for entity, (a, b, centre) in table.items():
        assert a == b == centre, entity
    assert "DIFFERENT" not in out
    assert re.search(r"^A sync history: pull ok .*; sync refused:not_principal .*; sync ok",
                     out, re.M)
    assert re.search(r"^B sync history: pull ok .*; pull ok", out, re.M)
    assert "A, B and the centre hold the same data." in out

    # The second act: the centre's changes flow down to an SD and an SMP.
    act = out[out.index("Second act"):]
    assert re.search(r"the SMP pulls the student .*\n  refused: .*masih terdaftar di sekolah "
                     r"asal 20219877", act)
    assert re.search(r"the SMP pulls: \d+ received \(from the centre: Tarik Data PD \d+", act)
    assert re.search(r"VervalPD issues a new NISN .*nisn = (\d{10}),", act)
    assert "(as issued)" in act and "(verified: True)" in act
    assert re.search(r"The SMP pulls: \d+ received \(from the centre: Validasi Pusat 1\)", act)
    assert act.count("[VP-001, Validasi Pusat]") == 2  # at both schools, then cleared
    assert "diterima: 1 perubahan baru dari 1" in act and "1 new, and again: 0 new" in act
    assert "Each school's install and the centre: 20219877 equal; 20219878 equal" in act
    assert out.splitlines()[-1] == "The centre drained and stopped (exit status 0)"

    # The folders it kept: the installs and the (stopped) centre agree with the table.
    for name, column in (("install-a", 0), ("install-b", 1)):
        sums = json.loads(run("--data", str(work / name), "checksum", "--json").stdout)
        assert sums["checksums"] == {e: v[column] for e, v in table.items()}
    centre = json.loads(run("admin", "--data", str(work / "centre"), "checksum",
                            "--npsn", NPSN, "--json").stdout)
    assert centre["checksums"] == {e: v[2] for e, v in table.items()}
    a = json.loads(run("--data", str(work / "install-a"), "checksum", "--json").stdout)
    b = json.loads(run("--data", str(work / "install-b"), "checksum", "--json").stdout)
    assert a["vector"] == b["vector"] == centre["vector"]
    assert a.keys() == centre.keys()  # selaras checksum and admin checksum: one shape
    assert json.loads(run("--data", str(work / "install-a"), "conflicts", "--json").stdout) == []

    # The centre's own records: its gate refused the push without consent, stored nothing
    # of it, and took the four pushes made under one.
    records = json.loads(run("admin", "--data", str(work / "centre"), "history",
                             "--npsn", NPSN, "--json").stdout)["sessions"]
    refused = [r for r in records if r["outcome"] == "refused:not_principal"]
    assert len(refused) == 1 and refused[0]["events_in"] == 0
    pushed = sorted(r["events_in"] for r in records if r["events_in"])
    assert pushed == sorted(n for _, n in sent)
    assert all(r["outcome"] == "done" for r in records if r["events_in"])


def test_networked_demo_with_its_own_small_school(tmp_path: Path) -> None:
    """Without 'selaras bench', the demo writes its school itself; that one holds pengguna
    rows of its own, and the story still ends converged."""
    said: list[str] = []
    assert demo.run(tmp_path / "demo", said.append, None)
    out = "\n".join(said)
    assert "A imports a school generated by the demo: " in out
    assert "Sinkronisasi ditolak: belum ada Persetujuan Pengiriman Data" in out
    assert "Tukar Pengguna on B" in out
    assert [install for install, _ in sends_under_consent(out)] == ["A", "A", "B", "A"]
    assert "A, B and the centre hold the same data." in said
    assert said[-1] == "The centre drained and stopped (exit status 0)"


def test_offline_demo_converges(tmp_path: Path) -> None:
    result = run("demo", "--offline", "--dir", str(tmp_path / "demo"))
    out = result.stdout
    assert "Swap bundles #1" in out
    assert any("conflict" in line for line in out.splitlines())
    table = checksum_table(out, 2)
    assert {"peserta_didik", "sekolah"} <= table.keys()
    for entity, (a, b) in table.items():
        assert a == b, entity
    assert "DIFFERENT" not in out
    assert out.splitlines()[-1] == "A and B hold the same data and the same vector."


def test_networked_demo_stops_the_centre_on_an_error(tmp_path: Path) -> None:
    def broken(out: Path, npsn: str, bentuk: str) -> str | None:
        raise RuntimeError("generator failed")

    said: list[str] = []
    work = tmp_path / "demo"
    with pytest.raises(RuntimeError, match="generator failed"):
        demo.run(work, said.append, broken)
    assert said[-1] == "The centre drained and stopped (exit status 0)"
    assert not (work / "centre" / "server.json").exists()  # removed by a clean stop
