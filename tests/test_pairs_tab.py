"""The Pairs tab (issue 16) through AppTest, and the watchlist table it stores pins in.

The page runs against a real SQLite file holding two hours of the built-in market's planted
universe (BTC/ETH, groups G1 and G2 of two members each, two noise symbols; 1 trade/s per
symbol), imported through ``database.import_ticks``; its collector points at a closed
127.0.0.1 port, so nothing else is written. See tests/test_app.py for the AppTest facts
relied on (lazy tabs opened through ``session_state["tab"]``, fragments run once per run).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import analytics
import dashboard_data as dd
import database
import market
import uploads
from page_helpers import APP, closed_feed_env, stop_page_services

T0 = 1_764_979_200_000  # 2025-12-06 00:00 UTC
SYMBOLS = [s.upper() for s in market.universe_symbols(groups=2, group_size=2, noise=2)]


@pytest.fixture(scope="module")
def universe_trades():
    simulated = market.SimulatedMarket(SYMBOLS, seed=22, start_ms=T0, speed=0,
                                       rates={s: 1.0 for s in SYMBOLS})
    trades = simulated.generate(2 * 3600)
    trades = trades[trades["status"] == "MARKET"]
    columns = ["symbol", "trade_id", "ts", "price", "qty", "is_buyer_maker"]
    return uploads.to_trade_tuples(trades[columns].astype({"symbol": str}), received_ms=1)


@pytest.fixture
def page_db(tmp_path, monkeypatch, universe_trades):
    db_path = closed_feed_env(tmp_path, monkeypatch)
    monkeypatch.setenv("CRYPTO_SYMBOLS", ",".join(s.lower() for s in SYMBOLS))
    conn = database.connect(db_path)
    try:
        database.import_ticks(conn, universe_trades)
    finally:
        conn.close()
    yield db_path
    stop_page_services()


def pairs_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.session_state["tab"] = "Pairs"
    at.run()
    assert not at.exception, at.exception
    return at


def run_screen(at: AppTest) -> AppTest:
    at.selectbox(key="screen_tf").set_value("10s")
    at.selectbox(key="screen_lookback").set_value("1 h")
    next(b for b in at.button if b.label == "Run the screen").click()
    at.run()
    assert not at.exception, at.exception
    return at


def watchlist(db_path: str) -> pd.DataFrame:
    with dd.reading(db_path) as conn:
        return database.list_watchlist(conn)


def texts(at: AppTest) -> str:
    return "\n".join(e.value for kind in ("markdown", "caption", "info", "success", "error")
                     for e in getattr(at, kind))


def test_screen_then_pin_alert_and_open_a_pair(page_db):
    at = run_screen(pairs_page())
    result = at.session_state["pair_screen"]["result"]
    assert len(result) == 8 * 7 // 2  # every pair of the 8 symbols once
    best = {tuple(p) for p in result[["y", "x"]].head(3).to_numpy()}
    assert ("G1AUSDT", "G1BUSDT") in best and bool(result["passed"].iloc[0])
    assert "28 pairs tested, all pairs" in texts(at)
    assert len(result["z_spark"].iloc[0]) > 10  # a sparkline for the best pair
    table = at.dataframe[0].value
    assert list(table.columns[:4]) == ["y", "x", "passed", "z_spark"]
    assert at.selectbox(key="pairs_choice").value == f"{result['y'][0]} / {result['x'][0]}"

    at.selectbox(key="pairs_choice").set_value("G1AUSDT / G1BUSDT")
    at.run()
    at.button(key="screen_pin").click()
    at.run()
    assert not at.exception, at.exception
    pinned = watchlist(page_db)
    assert pinned[["y_symbol", "x_symbol", "timeframe"]].values.tolist() == [
        ["G1AUSDT", "G1BUSDT", "10s"]]
    assert pinned["beta"].iloc[0] == pytest.approx(1 / 0.8, rel=0.15)  # loadings A / B
    assert "pinned G1AUSDT / G1BUSDT" in texts(at)

    at.button(key="screen_alert").click()
    at.run()
    assert not at.exception, at.exception
    with dd.reading(page_db) as conn:
        rules = database.list_alert_rules(conn)
    mine = rules[(rules["y_symbol"] == "G1AUSDT") & (rules["x_symbol"] == "G1BUSDT")]
    assert len(mine) == 1
    rule = mine.iloc[0]
    assert (rule["metric"], rule["comparison"], rule["threshold"], rule["timeframe"]) == (
        "zscore", "abs>", 2.0, "10s")
    assert bool(rule["enabled"])
    assert "alert rule" in texts(at) and "created" in texts(at)
    at.button(key="screen_alert").click()  # a second click does not duplicate the rule
    at.run()
    assert "already watches" in texts(at)

    at.selectbox(key="pairs_choice").set_value("G2AUSDT / G2BUSDT")
    at.run()
    at.button(key="screen_open").click()
    at.run()
    assert not at.exception, at.exception
    assert (at.session_state["y_symbol"], at.session_state["x_symbol"]) == ("G2AUSDT",
                                                                          "G2BUSDT")
    assert at.session_state["timeframe"] == "10s"
    assert at.session_state["tab"] == "Spread & z-score"
    assert at.selectbox(key="y_symbol").value == "G2AUSDT"


def test_watchlist_is_shared_live_and_unpins(page_db):
    conn = database.connect(page_db)
    try:  # pinned by another session (or before a restart)
        database.pin_pair(conn, "G1AUSDT", "G1BUSDT", timeframe="10s", beta=1.25)
    finally:
        conn.close()
    at = pairs_page()
    assert "Watchlist** (1 pinned" in texts(at)
    live = next(d.value for d in at.dataframe if "since_cross" in d.value.columns)
    assert live["pair"].tolist() == ["G1AUSDT / G1BUSDT"]
    assert live["z"].notna().all() and live["beta"].notna().all()
    assert live["since_cross"].iloc[0] != "—" and len(live["z_spark"].iloc[0]) > 10
    at.button(key="watch_unpin").click()
    at.run()
    assert not at.exception, at.exception
    assert watchlist(page_db).empty
    assert "unpinned G1AUSDT / G1BUSDT" in texts(at)


def test_watch_row_is_the_trailing_ols_signal_of_the_price_levels(page_db):
    """A pinned pair's row: the latest of ``pair_signals`` on the legs' closes (levels; it
    takes the logs) over the last hour of its own bars, the same z as its sparkline path."""
    pinned = {"y_symbol": "G1AUSDT", "x_symbol": "G1BUSDT", "timeframe": "10s", "beta": 1.25}
    store = dd.BarStore()
    row = dd.watch_row(page_db, pinned, entry=0.5, store=store)
    for again in (dd.watch_row(page_db, pinned, entry=0.5, store=store),  # held windows
                  dd.watch_row(page_db, pinned, entry=0.5)):  # read whole
        pd.testing.assert_series_equal(again.pop("z_path"), row["z_path"])
        assert pd.Series(again).equals(pd.Series(row).drop("z_path"))
    conn = database.connect(page_db, readonly=True)
    try:
        end = database.latest_bar_ts(conn, "G1AUSDT")
        closes = {s: database.read_bars(conn, s, end - 3_600_000, None, "10s")["close"]
                  for s in ("G1AUSDT", "G1BUSDT")}
    finally:
        conn.close()
    grid = pd.DataFrame(closes)
    grid = grid.reindex(range(int(grid.index[0]), int(grid.index[-1]) + 1, 10_000))
    reference = analytics.pair_signals(grid["G1AUSDT"], grid["G1BUSDT"], method="ols",
                                       window=90, z_window=90).frame
    pd.testing.assert_series_equal(row["z_path"], reference["z"], check_names=False)
    latest = reference.dropna(subset=["z"]).iloc[-1]
    assert row["z"] == pytest.approx(latest["z"]) and row["beta"] == pytest.approx(
        latest["beta"])
    assert row["timeframe"] == "10s" and row["screened_beta"] == 1.25
    assert row["status"] == ("|z| beyond entry 0.5" if abs(row["z"]) >= 0.5 else "")
    empty = dd.watch_row(page_db, dict(pinned, x_symbol="NOPEUSDT"), entry=0.5)
    assert empty["status"] == "no bars yet" and math.isnan(empty["z"])


# --------------------------------------------------------------------------------------
# The watchlist table
# --------------------------------------------------------------------------------------


def test_watchlist_pin_update_unpin(tmp_path):
    conn = database.connect(tmp_path / "w.db")
    try:
        assert database.list_watchlist(conn).empty
        database.pin_pair(conn, "ethusdt", "btcusdt", timeframe="1min", beta=1.2,
                          half_life=float("nan"), eg_qvalue=0.01, now_ms=1_000)
        database.pin_pair(conn, "G1AUSDT", "G1BUSDT", timeframe="10s", now_ms=2_000)
        database.pin_pair(conn, "ETHUSDT", "BTCUSDT", timeframe="5min", beta=1.3,
                          now_ms=3_000)  # pinned again: values refreshed, place kept
        table = database.list_watchlist(conn)
        assert table[["y_symbol", "x_symbol", "timeframe", "added_ms"]].values.tolist() == [
            ["ETHUSDT", "BTCUSDT", "5min", 1_000], ["G1AUSDT", "G1BUSDT", "10s", 2_000]]
        assert table["beta"].iloc[0] == 1.3 and pd.isna(table["half_life"].iloc[0])
        assert database.unpin_pair(conn, "ETHUSDT", "BTCUSDT") is True
        assert database.unpin_pair(conn, "ETHUSDT", "BTCUSDT") is False
        reader = database.connect(tmp_path / "w.db", readonly=True)
        try:
            assert database.list_watchlist(reader)["y_symbol"].tolist() == ["G1AUSDT"]
        finally:
            reader.close()
    finally:
        conn.close()


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("BTCUSDT", "btcusdt"), {"timeframe": "1min"}, r"must differ"),
    (("", "BTCUSDT"), {"timeframe": "1min"}, r"y_symbol \(''\) must be a non-empty symbol"),
    (("ETHUSDT", "BTCUSDT"), {"timeframe": "2min"}, r"timeframe \('2min'\) must be one of"),
    (("ETHUSDT", "BTCUSDT"), {"timeframe": "1min", "beta": "big"},
     r"beta \('big'\) must be a number"),
])
def test_watchlist_rejects_bad_pins(tmp_path, args, kwargs, message):
    conn = database.connect(tmp_path / "w.db")
    try:
        with pytest.raises(ValueError, match=message):
            database.pin_pair(conn, *args, **kwargs)
        assert database.list_watchlist(conn).empty
    finally:
        conn.close()


def test_watchlist_is_served_by_the_rest_api(tmp_path, monkeypatch):
    import asyncio
    import json

    from starlette.applications import Starlette

    import api

    db_path = str(tmp_path / "api.db")
    monkeypatch.setenv("CRYPTO_DB_PATH", db_path)
    # No collector in this process: the API reads the configured file (a page test earlier
    # in the session may have left the process's service registry pointing elsewhere).
    monkeypatch.setattr(api.services, "db_path", lambda: None)

    def get(path: str) -> tuple[int, object]:
        """One GET through the API's Starlette routes (no socket)."""
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "server": ("127.0.0.1", 80),
                 "client": ("127.0.0.1", 40000), "headers": []}
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(Starlette(routes=api.routes())(scope, receive, send))
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return status, json.loads(body)

    assert get("/api/watchlist") == (200, [])  # no database yet
    conn = database.connect(db_path)
    try:
        database.pin_pair(conn, "G1AUSDT", "G1BUSDT", timeframe="1min", beta=1.25,
                          half_life=3.5, eg_qvalue=1e-6, now_ms=1_000)
    finally:
        conn.close()
    status, body = get("/api/watchlist")
    assert status == 200
    assert body == [{"y_symbol": "G1AUSDT", "x_symbol": "G1BUSDT", "timeframe": "1min",
                     "beta": 1.25, "half_life": 3.5, "eg_qvalue": 1e-6, "added_ms": 1_000}]
