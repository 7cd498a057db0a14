"""``selaras demo``: the networked demo (a centre and two installs) and ``--offline``.

Both run through the click group (CliRunner). Convergence is read from what
the demo prints (the checksum table, one column per holder) and checked again
afterwards on the folders it kept (--dir): the installs' and the centre's
checksums, through the commands.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from selaras.client import demo
from selaras.client.cli import cli

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


def test_networked_demo_converges(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    result = run("demo", "--dir", str(work))
    out = result.stdout
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
    assert re.search(r"^A sync history: pull ok .*; sync ok", out, re.M)
    assert re.search(r"^B sync history: pull ok .*; pull ok", out, re.M)
    assert "A, B and the centre hold the same data." in out
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
    def broken(out: Path, npsn: str) -> str | None:
        raise RuntimeError("generator failed")

    said: list[str] = []
    work = tmp_path / "demo"
    with pytest.raises(RuntimeError, match="generator failed"):
        demo.run(work, said.append, broken)
    assert said[-1] == "The centre drained and stopped (exit status 0)"
    assert not (work / "centre" / "server.json").exists()  # removed by a clean stop
