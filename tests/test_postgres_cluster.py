"""The test infrastructure itself: the session's throwaway PostgreSQL server answers on
127.0.0.1 and every test gets a database of its own."""

import psycopg


def test_server_answers_on_loopback(postgres_url):
    assert postgres_url.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(postgres_url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        address = conn.execute("SELECT inet_server_addr()").fetchone()[0]
    assert int(version) >= 150000
    assert str(address) == "127.0.0.1"


def test_each_test_gets_an_empty_database(postgres_db, postgres_url):
    assert postgres_db != postgres_url
    with psycopg.connect(postgres_db) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                              ).fetchone()[0]
    assert tables == 0
