"""Shared test setup: single-threaded BLAS (2-core machine), the project root on sys.path and
the collector factory the collector suites share."""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402  (after sys.path: the fixture below imports the project)


@pytest.fixture
def make_collector():
    """Build collectors with fast backoff; stop every one at the end of the test."""
    import collector

    made = []

    def make(settings, **kwargs):
        kwargs.setdefault("backoff_base", 0.05)
        kwargs.setdefault("backoff_cap", 0.5)
        kwargs.setdefault("seed", 7)
        c = collector.Collector(settings, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


# ---- PostgreSQL: one throwaway cluster per test session (tests/pg_cluster.py) ------------


@pytest.fixture(scope="session")
def postgres_cluster():
    """A PostgreSQL server on 127.0.0.1 for the session; skipped (with the reason) only when
    none can be started here, and a failure instead when ``CI`` is set."""
    import pg_cluster

    try:
        cluster = pg_cluster.start()
    except pg_cluster.ClusterUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests, but no server starts: {exc}")
        pytest.skip(f"no PostgreSQL server can be started here: {exc}")
    yield cluster
    import database_postgres

    database_postgres.close_pools()  # before the server goes: no pool reconnects to nothing
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster):
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of the session's server."""
    return postgres_cluster.url


_DATABASES = iter(range(1, 1_000_000))


@pytest.fixture
def postgres_db(postgres_cluster):
    """The URL of a new, empty database on the session's server (one per test)."""
    import psycopg

    import database_postgres

    name = f"test_{os.getpid()}_{next(_DATABASES)}"
    with psycopg.connect(postgres_cluster.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # a generated name, never user text
    url = postgres_cluster.url_of(name)
    yield url
    database_postgres.close_pools(url)  # its connections and pool threads end with the test


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request, tmp_path):
    """Where the storage tests write: a SQLite file, then a PostgreSQL database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "test.db")
    return request.getfixturevalue("postgres_db")
