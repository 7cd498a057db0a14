"""DuckDB's progress bar never reaches stdout.

DuckDB's Python client prints a progress bar on stdout (not only on a terminal)
for any query that runs longer than two seconds: on a school's slow PC that
corrupts ``selaras ... --json`` output, and it broke tests/test_crash.py's child,
whose parent reads its stdout line by line. Every store's connection turns the
printing off (cursors have no progress bar unless asked).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from selaras.engine.storage.database import connect


def test_a_long_query_prints_no_progress_bar(tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    con = connect(tmp_path / "store.duckdb")
    try:
        con.execute("SET progress_bar_time = 0")  # as if the query took minutes
        assert con.execute("SELECT sum(range) FROM range(20000000)").fetchall()
    finally:
        con.close()
    assert capfd.readouterr().out == ""

