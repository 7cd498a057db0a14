"""The bare pipeline (bench/baseline.py) on the small school: every row once, nothing else.

Its rate at scale is measured by ``make bench`` (bench/test_baseline_bench.py);
here only that it delivers, counts and fails honestly.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from selaras.bench.baseline import (
    KEYS,
    PipelineFailed,
    bare_pipeline,
    delivered,
    load_rows,
    main,
    run_pipeline,
    stored_rows,
)
from selaras.bench.generate import generate, write

NPSN = "20219151"


@pytest.fixture(scope="module")
def small_school(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("baseline") / "small.jsonl"
    counts = write(path, generate("small", 1, NPSN, 1))
    return path, counts


def check_exactly_once(db: Path, rows: list[dict], counts: dict[str, int]) -> None:
    assert delivered(db) == {entity: (n, n) for entity, n in counts.items()}
    sample = rows[::37] + rows[-1:]
    ids = [str(r[KEYS[str(r["entity"])]]) for r in sample]
    back = stored_rows(db, ids)
    assert [back[i] for i in ids] == sample


@pytest.mark.parametrize("window", [1, 4])
def test_every_row_arrives_once(small_school: tuple[Path, dict[str, int]], tmp_path: Path,
                                window: int) -> None:
    path, counts = small_school
    n = sum(counts.values())
    db = tmp_path / "bare.duckdb"
    result = asyncio.run(bare_pipeline(str(path), str(db), batch_rows=100, window=window))
    assert (result.rows, result.batches, result.window) == (n, -(-n // 100), window)
    assert result.seconds > 0 and result.rows_per_s > 0 and result.bytes_sent > 0
    check_exactly_once(db, load_rows(path), counts)


def test_the_callers_rows_are_left_alone(small_school: tuple[Path, dict[str, int]],
                                         tmp_path: Path) -> None:
    path, counts = small_school
    rows = load_rows(path)
    before = [dict(r) for r in rows]
    result = asyncio.run(run_pipeline(rows, tmp_path / "bare.duckdb", batch_rows=1000))
    assert result.rows == len(rows) == sum(counts.values()) and result.batches == 1
    assert rows == before


def test_a_fresh_file_only(small_school: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    db = tmp_path / "bare.duckdb"
    db.write_bytes(b"")
    with pytest.raises(FileExistsError):
        asyncio.run(bare_pipeline(str(small_school[0]), str(db)))


def test_a_failing_server_is_not_a_result(tmp_path: Path) -> None:
    # The server cannot place a row of an unknown entity: the handler fails, the
    # connection closes, and the client says so instead of waiting or reporting.
    rows = [{"entity": "nilai", "nilai_id": f"n{i}", "nilai_akhir": i} for i in range(30)]
    rows[25] = {"entity": "no_such_entity", "x": 1}
    with pytest.raises(PipelineFailed, match="2 of 3 acknowledgements"):
        asyncio.run(run_pipeline(rows, tmp_path / "bare.duckdb", batch_rows=10, window=1))
    assert delivered(tmp_path / "bare.duckdb") == {"nilai": (20, 20)}


def test_by_hand(small_school: tuple[Path, dict[str, int]], tmp_path: Path,
                 capsys: pytest.CaptureFixture[str]) -> None:
    path, counts = small_school
    main([str(path), "--batch-rows", "200", "--rounds", "2"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert all(line.startswith(f"bare pipeline: {sum(counts.values()):,} rows in ")
               and " rows/s, " in line for line in out)
    assert Counter(r["entity"] for r in load_rows(path)) == counts
