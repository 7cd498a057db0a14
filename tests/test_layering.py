"""The layering rules of DESIGN.md section 2, checked on the source with ast.

- engine/ (but its storage module) is sans-I/O: no event loop, sockets,
  clocks, threads, logging framework or DuckDB. engine/storage/ runs the
  databases, and a timer thread that stops a query at its time limit.
  engine/stages.py is a stopwatch: it reads a clock and takes a lock, and
  decides nothing.
- engine/storage/ is the only package that imports duckdb, psycopg (or any database).
- client/ and server/ reach storage through the engine's store Protocols: from
  engine/storage/ they take only the functions that open a store, and they
  hold no SQL.
- no module reaches into another object's private attributes (``x._name``).
- client/ and server/ never import each other; client/ never imports bench/
  (bench plugs its commands in through an entry point).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"engine": "selaras.engine", "server": "selaras.server",
            "client": "selaras.client", "bench": "selaras.bench"}
STORAGE = "engine/storage/"
DATABASES = {"duckdb", "psycopg", "psycopg_pool"}
IO_MODULES = {"asyncio", "websockets", "structlog", "socket", "time", "threading", *DATABASES}
STOPWATCH = "engine/stages.py"


def modules(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def package_of(path: Path) -> list[str]:
    """The dotted package ``path`` belongs to, as installed: engine/x.py -> selaras.engine."""
    parts = path.relative_to(ROOT).parts
    return PACKAGES[parts[0]].split(".") + list(parts[1:-1])


def imported(source: str, package: list[str]) -> set[str]:
    """Every module ``source`` imports, relative imports made absolute (selaras.*)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            # ``from selaras import server`` and ``from . import cli`` name modules too
            names.update(f"{prefix}.{a.name}" for a in node.names)
    return names


def under(name: str, top: str) -> bool:
    return name == top or name.startswith(top + ".")


def offending(path: Path, forbidden: set[str]) -> list[str]:
    names = imported(path.read_text(encoding="utf-8"), package_of(path))
    return sorted(n for n in names if any(under(n, f) for f in forbidden))


def rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", modules("engine"), ids=rel)
def test_engine_is_sans_io(path: Path) -> None:
    forbidden = (IO_MODULES - DATABASES - {"threading"} if rel(path).startswith(STORAGE)
                 else IO_MODULES - {"time", "threading"} if rel(path) == STOPWATCH
                 else IO_MODULES)
    forbidden |= {"selaras.server", "selaras.client", "selaras.bench"}
    assert offending(path, forbidden) == []


@pytest.mark.parametrize("path", modules("server", "client", "bench"), ids=rel)
def test_only_the_storage_module_imports_a_database(path: Path) -> None:
    assert offending(path, DATABASES) == []


@pytest.mark.parametrize("path", modules("client"), ids=rel)
def test_client_imports_neither_server_nor_bench(path: Path) -> None:
    assert offending(path, {"selaras.server", "selaras.bench", "server", "bench"}) == []


@pytest.mark.parametrize("path", modules("server"), ids=rel)
def test_server_never_imports_client(path: Path) -> None:
    assert offending(path, {"selaras.client", "client"}) == []


STORE_OPENERS = {"open_install", "open_centre", "is_postgres"}
SQL = re.compile(r"\b(SELECT\b.+\bFROM|INSERT INTO|DELETE FROM|CREATE (TEMP )?TABLE"
                 r"|UPDATE \w+ SET)\b", re.IGNORECASE | re.DOTALL)


def storage_names(source: str) -> set[str]:
    """The names a module imports from selaras.engine.storage (or below it)."""
    return {a.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
            and under(node.module or "", "selaras.engine.storage") for a in node.names}


def sql_strings(source: str) -> list[str]:
    """String literals (docstrings aside) that read like SQL."""
    tree = ast.parse(source)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body and isinstance(n.body[0], ast.Expr)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs and SQL.search(n.value)]


@pytest.mark.parametrize("path", modules("server", "client"), ids=rel)
def test_adapters_use_the_store_protocols(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert storage_names(source) <= STORE_OPENERS
    assert sql_strings(source) == []


def test_the_store_checkers_see_concrete_classes_and_sql() -> None:
    source = ('"""Docs may say SELECT x FROM y."""\n'
              "from selaras.engine.storage.log import DuckDBStore\n"
              "q = 'select nama from peserta_didik'\n")
    assert storage_names(source) == {"DuckDBStore"}
    assert sql_strings(source) == ["select nama from peserta_didik"]


# NamedTuple's public API is spelled with an underscore.
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_make"}


def private_reaches(source: str) -> list[str]:
    """Every ``x._name`` in ``source`` where x is not self or cls."""
    return [ast.unparse(node) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr.startswith("_")
            and not node.attr.startswith("__") and node.attr not in PUBLIC_UNDERSCORED
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))]


@pytest.mark.parametrize("path", modules("engine", "server", "client"), ids=rel)
def test_no_module_uses_anothers_private_attributes(path: Path) -> None:
    assert private_reaches(path.read_text(encoding="utf-8")) == []


def test_the_private_checker_sees_a_reach() -> None:
    assert private_reaches("store._append(b)\nself._x = 1\nr._replace(a=1)\n") == [
        "store._append"]


def test_the_checker_sees_relative_and_aliased_imports() -> None:
    # The rules above are only as good as ``imported``: check it on known input.
    source = ("import duckdb as db\nfrom .. import server\nfrom ..bench.cli import bench\n"
              "from time import monotonic\nfrom . import output\nimport asyncio.tasks\n")
    names = imported(source, ["selaras", "client"])
    assert {"duckdb", "selaras.server", "selaras.bench.cli", "time",
            "selaras.client.output", "asyncio.tasks"} <= names
    assert under("asyncio.tasks", "asyncio") and not under("timeit", "time")
