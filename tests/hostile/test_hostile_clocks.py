"""Point 8 of docs/security.md: a PC whose clock is behind never loses an edit silently.

Two offline installs of one school swap bundles; the second PC's clock is an hour
behind. Its edit of a value it has seen still wins on both replicas, and its
operator is told to fix the clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from selaras.client import cli as cli_module
from selaras.client.cli import cli

NPSN = "20100001"
HOUR_MS = 3_600_000


def cli_run(data: Path, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["--data", str(data), *args])
    return r.exit_code, r.stdout, r.stderr


def ok(data: Path, *args: str) -> str:
    code, out, err = cli_run(data, *args)
    assert code == 0, err
    return out


def swap(src: Path, dst: Path, tmp: Path) -> None:
    bundle = tmp / f"{src.name}.bundle"
    ok(src, "bundle", "export", "--out", str(bundle))
    ok(dst, "bundle", "import", str(bundle))


def nama(data: Path) -> list[str]:
    return [r["nama"] for r in json.loads(ok(data, "query", "--json",
                                             "SELECT nama FROM peserta_didik"))]


def test_an_edit_on_a_pc_an_hour_behind_supersedes_what_it_saw(tmp_path, monkeypatch):
    right, behind = tmp_path / "right", tmp_path / "behind"
    for folder in (right, behind):
        ok(folder, "init", "--offline", "--npsn", NPSN)
    row = ok(right, "add", "peserta_didik", "nama=Budi", "jenis_kelamin=L",
             "tanggal_lahir=2009-01-01", "tempat_lahir=Garut").strip()
    ok(right, "edit", "peserta_didik", row, "nama=Budi Santoso")
    swap(right, behind, tmp_path)
    assert nama(behind) == ["Budi Santoso"]

    real = cli_module.now_ms
    monkeypatch.setattr(cli_module, "now_ms", lambda: real() - HOUR_MS)
    code, _, err = cli_run(behind, "edit", "peserta_didik", row, "nama=Budi Santosa")
    assert code == 0, err
    assert "menit lebih lambat" in err and "perbaiki jam" in err
    minutes = int(err.split("jam komputer ini ")[1].split(" menit")[0])
    assert 59 <= minutes <= 60
    monkeypatch.setattr(cli_module, "now_ms", real)

    swap(behind, right, tmp_path)
    assert nama(behind) == nama(right) == ["Budi Santosa"]  # the later edit, everywhere
    assert json.loads(ok(right, "conflicts", "--json")) == []  # it saw the value: no conflict
    sums = [json.loads(ok(f, "checksum", "--json"))["checksums"] for f in (right, behind)]
    assert sums[0] == sums[1]


def test_an_edit_on_a_pc_with_the_right_time_says_nothing(tmp_path):
    folder = tmp_path / "one"
    ok(folder, "init", "--offline", "--npsn", NPSN)
    row = ok(folder, "add", "peserta_didik", "nama=Ani", "jenis_kelamin=P",
             "tanggal_lahir=2009-01-01", "tempat_lahir=Garut").strip()
    time.sleep(0.01)
    code, _, err = cli_run(folder, "edit", "peserta_didik", row, "nama=Ani Lestari")
    assert code == 0 and err == ""
