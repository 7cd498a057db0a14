"""Centre signatures (protocol R18) end to end: a real centre on 127.0.0.1, real installs.

An install registered with the centre learns the centre's public key and
checks every new centre event it is given: from the centre in a sync, and from
a bundle passed hand to hand. A forged centre event (unsigned, signed with
another key, or signed and then altered) is refused whole and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from selaras.client.cli import cli
from selaras.client.install import Install
from selaras.client.sync import SyncUntrusted, register, run_sync
from selaras.engine import bundle
from selaras.engine.events import Batch, Event, central_origins, centre_origin, school_row_id
from selaras.engine.replica import SEED_HLC
from selaras.engine.signatures import CentreKey, first_unsigned
from selaras.engine.storage import DuckDBCentre
from selaras.server import credentials
from selaras.server.testing import RunningServer, running_server

NPSN = "20100001"
USER, PASSWORD = "op@sekolah.id", "rahasia123"
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.1}
CENTRE = centre_origin(NPSN)


def cli_run(data: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--data", str(data), *args])


async def enrol(srv: RunningServer, kode: str, folder: Path) -> None:
    """'selaras init --server': register and pull (in a thread: it runs its own loop)."""
    result = await asyncio.to_thread(
        cli_run, folder, "init", "--server", srv.url, "--npsn", NPSN, "--kode", kode,
        "--user", USER, "--password", PASSWORD, "--timeout", "20", "--json")
    assert result.exit_code == 0, result.output


def state(folder: Path) -> dict[str, Any]:
    with Install(folder).open(read_only=True) as s:
        return {"vector": s.store.vector(), "checksums": s.store.checksums()}


def new_centre_event(seq: int, nama: str) -> Event:
    """A write of the centre to a centre-owned field (the school's name)."""
    return Event(origin=CENTRE, seq=seq, hlc=SEED_HLC + 1000, entity="sekolah",
                 row_id=school_row_id(NPSN), changes={"nama": nama}, author="pusat",
                 role="pusat")


def forged(kind: str, key: CentreKey, seq: int) -> Batch:
    event = new_centre_event(seq, "SMA Palsu")
    match kind:
        case "unsigned":
            return Batch.from_events([event])
        case "other key":
            return CentreKey(os.urandom(32)).sign(Batch.from_events([event]))
        case _:  # "altered": the centre signed another value
            signed = key.sign(Batch.from_events([new_centre_event(seq, "SMA Asli")]))
            return Batch.from_events([event], signed.signatures_by_id())


def write_bundle(path: Path, batch: Batch) -> Path:
    path.write_bytes(bundle.encode(npsn=NPSN, origin=str(uuid.uuid4()), vector=batch.vector(),
                                   batch=batch))
    return path


def test_a_registered_install_holds_and_checks_the_centres_signatures(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            await enrol(srv, kode, tmp_path / "a")
            answer = await register(srv.url, NPSN, kode, USER, PASSWORD)
        key = credentials.centre_key(tmp_path / "centre")
        assert answer.centre_key == key.public
        assert os.stat(tmp_path / "centre" / credentials.CENTRE_KEY).st_mode & 0o077 == 0
        with Install(tmp_path / "a").open() as s:
            assert s.store.centre_key == key.public  # learnt at registration
            held = s.store.events_after({})
            central = central_origins(NPSN)
            centre_events = sum(n for o, n in s.store.query(
                "SELECT origin::VARCHAR, count(*) FROM event GROUP BY ALL")[1]
                if o in central)
            assert len(held.signatures_by_id()) == centre_events > 200  # referensi + sekolah
            assert first_unsigned(held, key.public, {}, central) is None
            other = CentreKey(bytes(32)).public
            assert first_unsigned(held, other, {}, central) is not None
    asyncio.run(main())


@pytest.mark.parametrize("kind", ["unsigned", "other key", "altered"])
def test_forged_centre_events_are_refused_in_bundles_and_in_sync(tmp_path: Path,
                                                                  kind: str) -> None:
    centre_dir, a = tmp_path / "centre", tmp_path / "a"

    async def setup() -> None:
        async with running_server(centre_dir) as srv:
            await enrol(srv, await srv.add_school(NPSN, "SMA Negeri 1"), a)
    asyncio.run(setup())
    key = credentials.centre_key(centre_dir)
    before = state(a)
    seq = before["vector"][CENTRE] + 1
    batch = forged(kind, key, seq)

    # Hand to hand: 'selaras bundle import' refuses it in one line, and nothing changes.
    result = cli_run(a, "bundle", "import", str(write_bundle(tmp_path / "f.bundle", batch)))
    assert result.exit_code == 1
    problem = "no signature" if kind == "unsigned" else "a wrong signature"
    assert result.stderr == (f"selaras: error: centre event ({CENTRE}, {seq}) has {problem}: "
                             "the centre did not make it (forged or altered); refused whole, "
                             "nothing was stored\n")
    assert state(a) == before

    # The same batch from the centre (its store tampered with): the sync refuses it.
    centre = DuckDBCentre(centre_dir / "centre.duckdb")
    centre.school(NPSN).append(batch)
    centre.close()

    async def pull() -> None:
        async with running_server(centre_dir) as srv:
            with Install(a).open() as s:
                with pytest.raises(SyncUntrusted) as err:
                    await run_sync(s.store, s.identity, mode="pull", url=srv.url,
                                   timeout_s=20, **FAST)
                assert str(err.value).startswith(
                    f"data dari server pusat ditolak: event pusat ({CENTRE}, {seq}) tanpa")
                assert s.store.history()[0]["outcome"] == "refused:bad_signature"
            history = await srv.admin("history", npsn=NPSN)
            assert history.data["sessions"][0]["outcome"] == "refused_by_client:bad_signature"
            assert history.rows[0][-1] == "dihentikan sekolah (bad_signature)"
    asyncio.run(pull())
    assert state(a) == before


def test_genuine_centre_events_pass_hand_to_hand_and_a_new_key_is_refused(
        tmp_path: Path) -> None:
    centre_dir, a, b = tmp_path / "centre", tmp_path / "a", tmp_path / "b"

    async def setup() -> None:
        async with running_server(centre_dir) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            await enrol(srv, kode, a)
            await enrol(srv, kode, b)
    asyncio.run(setup())
    # The centre writes a new centre event (signed, the one way it writes them); A pulls it.
    centre = DuckDBCentre(centre_dir / "centre.duckdb", key=credentials.centre_key(centre_dir))
    seq = state(a)["vector"][CENTRE] + 1
    centre.append_centre(NPSN, [new_centre_event(seq, "SMA Negeri 1 Kota")])
    with pytest.raises(ValueError):
        centre.append_centre(NPSN, [msgspec.structs.replace(
            new_centre_event(seq + 1, "x"), origin=str(uuid.uuid4()))])
    centre.close()

    async def pull(folder: Path) -> None:
        async with running_server(centre_dir) as srv:
            with Install(folder).open() as s:
                report = await run_sync(s.store, s.identity, mode="pull", url=srv.url,
                                        timeout_s=20, **FAST)
                assert report.ok and report.checksums_equal
    asyncio.run(pull(a))
    # A's bundle carries the centre's signature: B, which has not pulled, takes it.
    out = tmp_path / "a.bundle"
    assert cli_run(a, "bundle", "export", "--out", str(out)).exit_code == 0
    result = cli_run(b, "bundle", "import", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["applied"] == 1
    assert state(b)["checksums"] == state(a)["checksums"]

    # The centre's key file replaced: B refuses the centre, changing nothing.
    (centre_dir / credentials.CENTRE_KEY).unlink()
    before = state(b)

    async def refused() -> None:
        async with running_server(centre_dir) as srv:
            with (Install(b).open() as s,
                  pytest.raises(SyncUntrusted, match="kunci tanda tangan server pusat")):
                await run_sync(s.store, s.identity, mode="sync", url=srv.url, timeout_s=20,
                               **FAST)
    asyncio.run(refused())
    assert state(b) == before


def test_an_install_registered_without_the_key_learns_it_at_its_next_sync(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            answer = await register(srv.url, NPSN, kode, USER, PASSWORD)
            install = Install(tmp_path / "a")
            install.init_registered(NPSN, origin=answer.install, token=answer.token,
                                    url=srv.url, user=USER, role=answer.role)
            with install.open() as s:
                assert s.store.centre_key is None
                report = await run_sync(s.store, s.identity, mode="pull", timeout_s=20, **FAST)
                assert report.ok
                assert s.store.centre_key == answer.centre_key
    asyncio.run(main())
