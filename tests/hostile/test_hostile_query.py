"""Point 1 and 2 of docs/security.md: a query is one read of one school, for real.

Each hostile statement is tried at the install's prompt (`selaras query`) and as an
admin query over a running centre on both stores; each is refused before it runs,
and neither the install nor any school at the centre changes. The admin's query runs
off the writer, under a time limit.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from attack import A, B, bystander_syncs, install, pd_batch, state
from click.testing import CliRunner

from selaras.client.cli import cli
from selaras.server import admin
from selaras.server.testing import running_server

HOSTILE = [
    # writing
    "INSERT INTO ref.agama VALUES ('00000000-0000-4000-8000-000000000000', 50, 'X', NULL)",
    "UPDATE peserta_didik SET nama = 'X'",
    "DELETE FROM sekolah",
    "CREATE TABLE t AS SELECT 1",
    "DROP TABLE peserta_didik",
    "CREATE OR REPLACE VIEW peserta_didik AS SELECT 1",
    # several statements in one string
    "SELECT 1; DELETE FROM peserta_didik",
    "SELECT 1; ATTACH 'x.duckdb' AS x",
    "SELECT 1;SELECT 2",
    # attaching, detaching
    "ATTACH ':memory:' AS other",
    "DETACH centre",
    "USE other",
    # files
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('*')",
    "SELECT * FROM 'rows.csv'",
    "COPY peserta_didik TO 'leak.csv'",
    "COPY (SELECT 1) TO 'leak.csv'",
    "EXPORT DATABASE 'leak'",
    "SELECT * FROM peserta_didik, LATERAL (SELECT * FROM read_blob('/etc/hostname'))",
    # settings
    "SET enable_external_access = true",
    "SET memory_limit = '1MB'",
    "RESET lock_configuration",
    "PRAGMA memory_limit = '1MB'",
    "CALL pragma_version()",
    # extensions and the network
    "INSTALL httpfs",
    "LOAD httpfs",
    "FORCE INSTALL httpfs FROM 'http://127.0.0.1:9/'",
    "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
    # the catalog, other schemas, other schools, the registry
    "SELECT * FROM duckdb_tables()",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM main.peserta_didik",
    "SELECT * FROM log.event",
    "SELECT * FROM log.peserta_didik",
    "SELECT * FROM registry.install",
    "SELECT * FROM registry.school",
    "SELECT * FROM centre.main.peserta_didik",
    "SELECT * FROM temp.main.peserta_didik",
    "SELECT * FROM query('DELETE FROM peserta_didik')",
    "SELECT * FROM query_table('registry.install')",
    "DESCRIBE peserta_didik",
    "SHOW TABLES",
    "SUMMARIZE peserta_didik",
    "EXPLAIN SELECT 1",
    "CHECKPOINT",
    "VACUUM",
]


def cli_run(data: Path, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["--data", str(data), *args])
    return r.exit_code, r.stdout, r.stderr


def checksum(data: Path) -> object:
    code, out, _ = cli_run(data, "checksum", "--json")
    assert code == 0
    return json.loads(out)


@pytest.fixture(scope="module")
def school(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "school"
    code, _, err = cli_run(folder, "init", "--offline", "--npsn", A, "--nama", "SMA SATU")
    assert code == 0, err
    code, _, err = cli_run(folder, "add", "peserta_didik", "nama=Siti Aminah",
                           "nik=3201010101010001", "jenis_kelamin=P",
                           "tanggal_lahir=2008-01-02", "tempat_lahir=Bandung")
    assert code == 0, err
    return folder


@pytest.mark.parametrize("sql", HOSTILE)
def test_the_install_prompt_refuses_it_and_nothing_changes(school: Path, tmp_path: Path,
                                                           sql: str, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.csv").write_text("a\n1\n")
    before = checksum(school)
    files = sorted(p.name for p in school.iterdir())
    code, out, err = cli_run(school, "query", sql)
    assert code == 1 and out == "", (out, err)
    [line] = err.strip().splitlines()
    assert line.startswith("selaras: error: ") and ("read-only" in line or "SQL:" in line)
    assert checksum(school) == before
    assert sorted(p.name for p in school.iterdir()) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]


def test_the_install_prompt_still_reads_its_school(school: Path) -> None:
    code, out, err = cli_run(school, "query", "--json", """
        WITH pd AS (SELECT nama FROM peserta_didik)
        SELECT pd.nama, a.nama AS agama FROM pd, ref.agama a WHERE a.agama_id = 1
        UNION ALL SELECT 'events', count(*)::VARCHAR FROM event""")
    assert code == 0, err
    rows = json.loads(out)
    assert rows[0] == {"nama": "Siti Aminah", "agama": "Islam"}
    assert rows[1]["nama"] == "events" and int(rows[1]["agama"]) > 1


def test_admin_queries_see_one_school_and_change_nothing(tmp_path: Path, centre_store) -> None:
    async def main() -> None:
        async with running_server(tmp_path, store=centre_store) as server:
            a, b = await install(server, A), await install(server, B)
            for c, nik in ((a, "7"), (b, "8")):
                out = await c.session("sync", {}, [pd_batch(c.install, 1, 2, nik=nik)])
                assert out.summary is not None
            before = [await state(server, n) for n in (A, B)]
            reply = await server.admin("query", npsn=A, sql="SELECT nik FROM peserta_didik")
            assert reply.rows == [["72"]]
            reply = await server.admin("query", npsn=A, sql="SELECT count(*) FROM event "
                                       f"WHERE origin = '{b.install}'")
            assert reply.rows == [[0]]
            for sql in HOSTILE:
                reply = await server.admin("query", npsn=A, sql=sql)
                assert reply.columns == ["error"], (sql, reply)
                assert "read-only" in reply.message or "SQL:" in reply.message, reply.message
            assert [await state(server, n) for n in (A, B)] == before
            assert sorted(p.name for p in tmp_path.iterdir() if "leak" in p.name) == []
    asyncio.run(main())


def test_a_long_admin_query_is_stopped_and_stalls_no_push(tmp_path: Path, centre_store,
                                                          monkeypatch) -> None:
    monkeypatch.setattr(admin, "QUERY_TIME_LIMIT_S", 3.0)
    endless = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 5000) "
               "SELECT count(*) FROM r a, r b, r c")

    async def main() -> None:
        async with running_server(tmp_path, store=centre_store) as server:
            b = await install(server, B)
            await bystander_syncs(server, b, 1)
            query = asyncio.create_task(server.admin("query", npsn=B, sql=endless))
            await asyncio.sleep(0.5)
            t0 = asyncio.get_running_loop().time()
            await bystander_syncs(server, b, 3)
            pushed_s = asyncio.get_running_loop().time() - t0
            assert not query.done()  # the push went through while the query ran
            reply = await query
            assert reply.columns == ["error"] and "longer than 3 s" in reply.message
            assert pushed_s < 2.5
    asyncio.run(main())
