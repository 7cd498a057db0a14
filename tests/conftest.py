import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from selaras.bench.postgres import ThrowawayCluster, Unavailable

# A quick profile for `make test`; SELARAS_HYPOTHESIS=thorough digs deeper.
settings.register_profile("default", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("SELARAS_HYPOTHESIS", "default"))


# -- PostgreSQL: a throwaway cluster for the whole run (bench/postgres.py) -------------------

REQUIRE_POSTGRES = "SELARAS_REQUIRE_POSTGRES"  # CI sets it: no PostgreSQL is a failure there
_POSTGRES_MISSING: list[str] = []


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[str]:
    """The URL of a throwaway cluster's maintenance database. Where the machine has no
    PostgreSQL the tests that need it are skipped (one line says so at the end), unless
    SELARAS_REQUIRE_POSTGRES=1."""
    try:
        cluster = ThrowawayCluster()
        url = cluster.start()
    except Unavailable as exc:
        if os.environ.get(REQUIRE_POSTGRES) == "1":
            pytest.fail(f"PostgreSQL is required here ({REQUIRE_POSTGRES}=1): {exc}")
        _POSTGRES_MISSING.append(str(exc))
        pytest.skip(f"PostgreSQL: {exc}")
    try:
        _make_template(url)
        yield url
    finally:
        cluster.stop()


TEMPLATE = "selaras_template"


def _make_template(url: str) -> None:
    """A database with the centre's tables made once, that each test's copies: making
    the partitioned tables takes seconds, copying them a fraction of one."""
    import psycopg

    from selaras.engine.storage.pg_centre import PgCentre

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {TEMPLATE}")
    PgCentre(url.rsplit("/", 1)[0] + "/" + TEMPLATE).close()


@contextlib.contextmanager
def _fresh_database(cluster: str) -> Iterator[str]:
    """A fresh database with the centre's tables and no rows; dropped after."""
    import psycopg

    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(cluster, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield cluster.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(cluster, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def postgres_url(postgres_cluster: str) -> Iterator[str]:
    """A fresh database for one test, with the centre's tables and no rows."""
    with _fresh_database(postgres_cluster) as url:
        yield url


@pytest.fixture(scope="module")
def postgres_module_url(postgres_cluster: str) -> Iterator[str]:
    """A fresh database shared by one module's tests (each keeping to schools of its own)."""
    with _fresh_database(postgres_cluster) as url:
        yield url


@pytest.fixture(params=["duckdb", "postgresql"])
def centre_store(request: pytest.FixtureRequest) -> str | None:
    """Where a test's centre keeps its data: None for DuckDB in its data folder, or the URL
    of a fresh PostgreSQL database (``ServerOptions.store``)."""
    return None if request.param == "duckdb" else request.getfixturevalue("postgres_url")


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real ``selaras server`` (the gate on, as schools get it) on 127.0.0.1 for one
    module's tests (``test_principal.Centre``); a module with a ``centre`` of its own
    uses that one."""
    from test_principal import SELARAS, Centre

    if SELARAS is None:
        pytest.skip("the selaras command is not installed")
    c = Centre(tmp_path_factory.mktemp("centre"))
    yield c
    c.proc.terminate()
    c.proc.wait(timeout=30)
    assert c.proc.stdout is not None
    c.proc.stdout.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _POSTGRES_MISSING:
        terminalreporter.write_line(
            f"PostgreSQL not found ({_POSTGRES_MISSING[0]}): its tests were skipped, "
            "the rest ran")
