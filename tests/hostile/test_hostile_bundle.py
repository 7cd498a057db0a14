"""Point 7 (and the import side of 8) of docs/security.md: a bundle belongs to one school,
is trusted no more than the install that made it, and says what it could not check.

Bundles are made as a doctoring operator would make them (re-headed, rows of another
school, another school's centre events) and imported with `selaras bundle import`;
each refused one changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from selaras.client.cli import cli
from selaras.engine import bundle
from selaras.engine.clocks import hlc_from_ms
from selaras.engine.events import Batch, Event, centre_origin, school_row_id
from selaras.engine.signatures import CentreKey

A, B = "20100001", "20100002"


def cli_run(data: Path, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["--data", str(data), *args])
    return r.exit_code, r.stdout, r.stderr


def checksum(data: Path) -> object:
    code, out, _ = cli_run(data, "checksum", "--json")
    assert code == 0
    return json.loads(out)


@pytest.fixture
def schools(tmp_path: Path) -> tuple[Path, Path]:
    """An offline install of school A and one of school B, each with a student."""
    out = []
    for npsn in (A, B):
        folder = tmp_path / npsn
        assert cli_run(folder, "init", "--offline", "--npsn", npsn)[0] == 0
        code, _, err = cli_run(folder, "add", "peserta_didik", f"nama=Murid {npsn}",
                               "jenis_kelamin=L", "tanggal_lahir=2009-03-04",
                               "tempat_lahir=Bogor")
        assert code == 0, err
        out.append(folder)
    return out[0], out[1]


def export(folder: Path, tmp_path: Path) -> bytes:
    out = tmp_path / f"{folder.name}.bundle"
    code, _, err = cli_run(folder, "bundle", "export", "--out", str(out))
    assert code == 0, err
    return out.read_bytes()


def reheaded(data: bytes, npsn: str) -> bytes:
    """The bundle with another school in its header and a digest that matches again:
    anyone can do this (the digest is no signature)."""
    body = msgspec.msgpack.decode(data[len(bundle.MAGIC) + 32:])
    body["npsn"] = npsn
    raw = msgspec.msgpack.encode(body)
    return bundle.MAGIC + hashlib.sha256(raw).digest() + raw


def of_events(npsn: str, events: list[Event], signatures=None) -> bytes:
    return bundle.encode(npsn=npsn, origin=str(uuid.uuid4()), vector={},
                         batch=Batch.from_events(events, signatures))


def imported(folder: Path, data: bytes, tmp_path: Path) -> tuple[int, str, str]:
    path = tmp_path / "in.bundle"
    path.write_bytes(data)
    return cli_run(folder, "bundle", "import", str(path), "--json")


def refused_and_unchanged(folder: Path, data: bytes, tmp_path: Path, says: str) -> None:
    before = checksum(folder)
    code, out, err = imported(folder, data, tmp_path)
    assert code == 1 and out == "", (out, err)
    [line] = err.strip().splitlines()
    assert says in line, line
    assert checksum(folder) == before


def test_a_bundle_reheaded_to_another_school_is_refused(schools, tmp_path):
    a, b = schools
    refused_and_unchanged(b, reheaded(export(a, tmp_path), B), tmp_path, "milik sekolah lain")


def test_rows_naming_another_school_are_refused(schools, tmp_path):
    _, b = schools
    stranger = str(uuid.uuid4())
    rombel = Event(origin=stranger, seq=1, hlc=5, entity="rombongan_belajar",
                   row_id=str(uuid.uuid4()), changes={"nama": "X", "sekolah_id": school_row_id(A)},
                   author="op", role="operator")
    refused_and_unchanged(b, of_events(B, [rombel]), tmp_path,
                          "baris rombongan_belajar milik sekolah lain")
    school = Event(origin=stranger, seq=1, hlc=5, entity="sekolah", row_id=school_row_id(A),
                   changes={"nama": "X"}, author="op", role="operator")
    refused_and_unchanged(b, of_events(B, [school]), tmp_path, "baris sekolah milik sekolah lain")


def test_a_centre_event_of_another_school_is_refused(schools, tmp_path):
    _, b = schools
    ev = Event(origin=centre_origin(A), seq=2, hlc=5, entity="sekolah", row_id=school_row_id(B),
               changes={"nama": "X"}, author="pusat", role="pusat")
    signed = CentreKey(bytes(32)).sign(Batch.from_events([ev]))
    data = bundle.encode(npsn=B, origin=str(uuid.uuid4()), vector={}, batch=signed)
    refused_and_unchanged(b, data, tmp_path, "data pusat milik sekolah lain")


def test_an_offline_install_says_it_took_centre_events_unchecked(schools, tmp_path):
    _, b = schools
    ev = Event(origin=centre_origin(B), seq=2, hlc=hlc_from_ms(int(time.time() * 1000)),
               entity="sekolah", row_id=school_row_id(B), changes={"nama": "SMA BARU"},
               author="pusat", role="pusat")
    code, out, err = imported(b, of_events(B, [ev]), tmp_path)
    assert code == 0, err
    assert json.loads(out)["unchecked_centre_events"] == 1
    assert "1 data pusat diterima tanpa diperiksa" in err


def test_a_clock_far_ahead_is_warned_at_import(schools, tmp_path):
    _, b = schools
    hour_ahead = hlc_from_ms(int(time.time() * 1000) + 3_600_000)
    ev = Event(origin=str(uuid.uuid4()), seq=1, hlc=hour_ahead, entity="peserta_didik",
               row_id=str(uuid.uuid4()), changes={"nama": "Y"}, author="op", role="operator")
    code, out, err = imported(b, of_events(B, [ev]), tmp_path)
    assert code == 0, err
    assert 59 <= json.loads(out)["clock_ahead_ms"] // 60_000 <= 60
    assert "menit lebih cepat" in err
    # the same bundle again: nothing new, nothing to warn about
    code, out, err = imported(b, of_events(B, [ev]), tmp_path)
    assert json.loads(out)["clock_ahead_ms"] == 0 and err == ""
