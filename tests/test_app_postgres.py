"""The page on PostgreSQL: ``CRYPTO_DB_PATH=postgresql://...`` (or ``CRYPTO_DB_URL``) shows
that database. test_app.py's page tests run here again, unchanged, with its ``app_env``
pointing the page (and its collector) at a database on the session's throwaway server; the
recorded trades are imported into it through ``database`` exactly as test_app.py does into
SQLite, and the numbers on screen are checked against the same pandas recomputation.
"""

from __future__ import annotations

import pandas as pd
import pytest

import dashboard_data as dd
import database
import services
from config import Settings
from test_app import (  # noqa: F401  (imported tests run here on PostgreSQL)
    closed_port, new_app, page_environment, recorded_db, reference_trades, run,
    test_every_tab_renders_with_recorded_trades,
    test_recorded_trades_give_the_expected_bars_and_statistics,
    test_timeframe_changes_the_bars_shown,
)


@pytest.fixture
def app_env(tmp_path, monkeypatch, closed_port, postgres_db):  # noqa: F811
    """test_app's environment with the live database on PostgreSQL."""
    with page_environment(monkeypatch, closed_port, postgres_db,
                          str(tmp_path / "uploads.db")) as paths:
        yield paths
    services.stop_all()  # the paper monitor too: it holds a connection to this database


def test_the_page_reads_the_server_database_it_was_given(recorded_db):
    at = run(new_app(lookback="15 min"))
    assert not at.error, [e.value for e in at.error]
    trades = reference_trades()
    source = dd.DataSource("live", recorded_db["db"])
    assert dd.database_ready(recorded_db["db"])
    assert dd.stored_symbols(source) == ["BTCUSDT", "ETHUSDT"]
    conn = database.connect(recorded_db["db"], readonly=True)
    try:
        newest = database.latest_bar_version(conn, "BTCUSDT")
    finally:
        conn.close()
    btc = trades[trades["symbol"] == "BTCUSDT"]
    assert newest[0] == btc["ts"].max() - btc["ts"].max() % 1000
    assert dd.data_version(source, ("BTCUSDT", "ETHUSDT"))[0][0] == newest


def test_crypto_db_url_names_the_database_too(postgres_db):
    assert Settings.from_env({"CRYPTO_DB_URL": postgres_db}).db_path == postgres_db
    both = {"CRYPTO_DB_PATH": "data/other.db", "CRYPTO_DB_URL": postgres_db}
    assert Settings.from_env(both).db_path == postgres_db  # the URL wins


def test_uploads_live_in_the_server_database_too(tmp_path, postgres_db):
    """Issue 13: bars, gaps, uploads, alerts... in the same database. With the live database
    on a server and no CRYPTO_UPLOAD_DB, uploads go to that server; what is stored there
    reads back bar for bar like the SQLite upload of the same file."""
    import uploads
    from test_app import GOOD_OHLC

    settings = Settings.from_env({"CRYPTO_DB_URL": postgres_db})
    assert settings.upload_db_path == postgres_db
    local = Settings.from_env({"CRYPTO_DB_URL": postgres_db,
                               "CRYPTO_UPLOAD_DB": str(tmp_path / "mine.db")})
    assert local.upload_db_path == str(tmp_path / "mine.db")  # an explicit choice wins
    parsed = uploads.parse_ohlc_csv(GOOD_OHLC.read_bytes(), filename=GOOD_OHLC.name)
    assert parsed.ok, parsed.error
    sqlite_path = str(tmp_path / "uploads.db")
    for target in (postgres_db, sqlite_path):
        assert dd.save_uploaded(target, GOOD_OHLC.name, parsed.bars) == len(parsed.bars)
    assert list(dd.list_uploads(postgres_db)["source"].unique()) == [GOOD_OHLC.name]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        on_server = dd.load_bars(dd.DataSource("uploaded", postgres_db, GOOD_OHLC.name),
                                 symbol, "1min", None, None)
        in_file = dd.load_bars(dd.DataSource("uploaded", sqlite_path, GOOD_OHLC.name),
                               symbol, "1min", None, None)
        assert len(on_server) > 400
        pd.testing.assert_frame_equal(on_server, in_file)
