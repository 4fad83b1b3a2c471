"""REST backfill and gap repair end to end: real SQLite files, the built-in market and
loopback REST + WebSocket servers, the collector as the user runs it.

The klines/ticks join of ``database.read_bars`` is tested here too, since it exists for
the backfilled history.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

import database

MINUTE = 60_000
T0 = 1_765_000_000_000 - 1_765_000_000_000 % (5 * MINUTE)  # a whole 5 minutes


def kline(ts, open_, high, low, close, volume, trades=10):
    """A klines row as binance_rest.parse_klines returns it."""
    return (ts, open_, high, low, close, volume, ts + MINUTE - 1, volume * close, trades,
            volume / 2)


def write_ticks(conn, rows):
    database.TickWriter(conn).write([("BTCUSDT", trade_id, ts, price, qty, 0, ts)
                                     for trade_id, ts, price, qty in rows])


def test_klines_join_tick_bars_one_bar_per_minute_live_minute_from_ticks(tmp_path):
    conn = database.connect(tmp_path / "join.db")
    # Klines for minutes 0..3 (closed); ticks: minute 2 partly (less volume than its
    # kline), minute 3 completely (same volume), minute 4 live (no kline yet).
    database.save_klines(conn, "btcusdt", [
        kline(T0 + 0 * MINUTE, 100, 101, 99, 100.5, 2.0),
        kline(T0 + 1 * MINUTE, 100.5, 102, 100, 101, 2.0),
        kline(T0 + 2 * MINUTE, 101, 103, 100, 102, 3.0),
        kline(T0 + 3 * MINUTE, 102, 104, 101, 103, 2.0),
    ])
    write_ticks(conn, [
        (1, T0 + 2 * MINUTE + 30_000, 102.5, 1.0),  # minute 2: 1.0 of 3.0 - incomplete
        (2, T0 + 3 * MINUTE + 1_000, 102.0, 1.0),  # minute 3: 2.0 of 2.0 - complete
        (3, T0 + 3 * MINUTE + 59_000, 103.0, 1.0),
        (4, T0 + 4 * MINUTE + 5_000, 103.5, 0.5),  # minute 4: live
    ])
    bars = database.read_bars(conn, "BTCUSDT", timeframe="1min")
    assert bars.index.tolist() == [T0 + k * MINUTE for k in range(5)]
    assert bars["close"].tolist() == [100.5, 101, 102, 103.0, 103.5]
    assert bars.loc[T0 + 2 * MINUTE, "volume"] == 3.0  # the kline, not the partial ticks
    assert bars.loc[T0 + 3 * MINUTE, "trades"] == 2  # the complete tick bar
    assert bars.loc[T0 + 4 * MINUTE, "volume"] == 0.5  # the live minute from ticks
    # 5-minute bars are built from the joined minutes.
    five = database.read_bars(conn, "BTCUSDT", timeframe="5min")
    assert five.index.tolist() == [T0]
    row = five.loc[T0]
    assert (row["open"], row["high"], row["low"], row["close"]) == (100, 103.5, 99, 103.5)
    assert row["volume"] == pytest.approx(2 + 2 + 3 + 2 + 0.5)
    # 1 s bars never contain klines.
    assert database.read_bars(conn, "BTCUSDT", timeframe="1s")["volume"].sum() == 3.5
    conn.close()


def test_a_demo_restart_simulates_only_the_time_since_the_files_newest_trade(tmp_path):
    # Two simulations must never overlap in one file: on a demo.db whose newest trade is
    # 2 minutes old, the market simulates less than 2 minutes of past (trades, no klines).
    import collector
    from config import Settings

    settings = Settings(feed="demo", db_path=str(tmp_path / "demo.db"), backfill="60m",
                        backfill_klines="24h")
    c = collector.Collector(settings)
    fresh = c._market_past("demo", settings.db_path)  # no file yet: the full windows
    assert (fresh["history_s"], fresh["kline_history_s"]) == (3600.0, 86400.0 - 3600.0)
    two_minutes_ago = int(time.time() * 1000) - 2 * MINUTE
    conn = database.connect(settings.db_path)
    write_ticks(conn, [(1, two_minutes_ago, 100.0, 1.0)])
    conn.close()
    restart = c._market_past("demo", settings.db_path)
    assert 118 < restart["history_s"] < 121 and restart["kline_history_s"] == 0.0


def test_bars_without_klines_read_as_before(tmp_path):
    conn = database.connect(tmp_path / "plain.db")
    write_ticks(conn, [(1, T0 + 1_000, 100.0, 1.0), (2, T0 + MINUTE + 1_000, 101.0, 2.0)])
    bars = database.read_bars(conn, "BTCUSDT", timeframe="1min")
    assert bars["close"].tolist() == [100.0, 101.0] and database.history_version(conn) == 0
    database.save_klines(conn, "ETHUSDT", [kline(T0, 1, 1, 1, 1, 1.0)])  # another symbol
    pd.testing.assert_frame_equal(database.read_bars(conn, "BTCUSDT", timeframe="1min"), bars)
    assert database.history_version(conn) == 1
    conn.close()


# --------------------------------------------------------------------------------------
# The collector against the built-in market serving WebSocket and REST on one base
# --------------------------------------------------------------------------------------

import sqlite3  # noqa: E402
import threading  # noqa: E402

import binance_rest  # noqa: E402
import collector  # noqa: E402
import services  # noqa: E402
import market  # noqa: E402
from config import Settings  # noqa: E402
from tests.helpers import wait_until  # noqa: E402


@pytest.fixture
def live_market():
    """A simulated futures market with 5 minutes of past, streaming in real time."""
    server = market.MarketServer(market.SimulatedMarket(seed=21), history_s=300,
                                 kline_history_s=0)
    server.start()
    yield server
    server.stop()


def make_collector(tmp_path, server, **changes):
    values = dict(feed="binance-futures", ws_url=server.url, stream="aggTrade",
                  rest_url=server.url.replace("ws://", "http://"),
                  db_path=str(tmp_path / "rec.db"), backfill="2m", backfill_klines="0",
                  flush_interval=0.05)
    values.update(changes)
    # Seeded backoff of 0.1-0.4 s: each reconnect misses a few dozen streamed trades.
    return collector.Collector(Settings(**values), backoff_base=1.0, backoff_cap=2.0, seed=4)


def stored(db_path, symbol):
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT trade_id, ts, price, qty, is_buyer_maker FROM ticks "
                            "WHERE symbol = ? ORDER BY trade_id", (symbol,)).fetchall()


def server_rows(server, symbol, first_id, last_id):
    agg, _tid, ts, price, qty, maker = server.past.trades(symbol)
    keep = (agg >= first_id) & (agg <= last_id)
    return list(zip(agg[keep].tolist(), ts[keep].tolist(), price[keep].tolist(),
                    qty[keep].tolist(), maker[keep].astype(int).tolist()))


def wait_for_repair(c, timeout=20):
    """Until the initial backfill is over and no gap of the pair is open."""
    def settled():
        if c.health()["backfill"]["state"] != "repairing":
            return False
        conn = database.connect(c.db_path, readonly=True)
        try:
            return not database.open_gaps(conn, ["BTCUSDT", "ETHUSDT"])
        finally:
            conn.close()
    return wait_until(settled, timeout, interval=0.2)


def test_backfill_of_n_minutes_is_exactly_the_servers_trades_in_that_window(tmp_path,
                                                                            live_market):
    c = make_collector(tmp_path, live_market).start()
    try:
        assert wait_until(lambda: c.stored > 100, 10)
        assert wait_for_repair(c)
        from_ms = c._backfiller.trades_from_ms
    finally:
        final = c.stop()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        rows = stored(c.db_path, symbol)
        agg, _tid, ts, *_ = live_market.past.trades(symbol)
        first = int(agg[ts >= from_ms][0])  # the server's first trade of the window
        assert rows[0][0] == first and rows[0][1] >= from_ms
        # Every stored row is the server's row (REST and stream rows alike), no hole.
        assert rows == server_rows(live_market, symbol, first, rows[-1][0])
    assert final["backfilled"] > 0 and final["gaps_open"] == 0
    assert final["backfill"]["state"] in ("stopped", "repairing")


def test_rest_and_stream_overlap_without_duplicates(tmp_path, live_market):
    """REST pages over trades the stream stored already: each trade stays one row."""
    c = make_collector(tmp_path, live_market, backfill="0").start()
    try:
        assert wait_until(lambda: c.stored > 150, 10)  # the stream alone, for a while
        assert c.health()["backfill"]["pace"] == 1.0  # headless: full speed
        rest = binance_rest.RestClient(live_market.url.replace("ws://", "http://"))
        # Started after the stream stored trades, like a backfill behind a fast stream.
        late = binance_rest.Backfiller(rest, ["BTCUSDT", "ETHUSDT"],
                                       database.BackfillLedger(c.db_path),
                                       trade_history_s=30, kline_history_s=0, repair=False,
                                       started_ms=c.started_ms)
        late.start()
        assert wait_until(lambda: late.state == "done", 15), late.health()
        assert wait_for_repair(c)
    finally:
        final = c.stop()
    assert late.duplicates > 0  # the newest REST pages met the streamed rows
    with sqlite3.connect(c.db_path) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT symbol || ':' || trade_id) FROM ticks").fetchone()
    assert total == distinct == final["stored"] + final["backfilled"] + late.backfilled
    for symbol in ("BTCUSDT", "ETHUSDT"):
        rows = stored(c.db_path, symbol)
        agg, _tid, ts, *_ = live_market.past.trades(symbol)
        assert rows[0][0] == int(agg[ts >= late.trades_from_ms][0])  # the whole window
        assert rows == server_rows(live_market, symbol, rows[0][0], rows[-1][0])


def test_restart_repairs_the_downtime_from_the_last_stored_id(tmp_path, live_market):
    first = make_collector(tmp_path, live_market, backfill="20s").start()
    try:
        assert wait_for_repair(first)
    finally:
        first.stop()
    before = {s: stored(first.db_path, s)[-1][0] for s in ("BTCUSDT", "ETHUSDT")}
    time.sleep(1.5)  # trades the recorder never saw
    second = make_collector(tmp_path, live_market, backfill="10m").start()
    try:
        assert wait_for_repair(second)
        assert wait_until(lambda: second.stored > 50, 10)
    finally:
        final = second.stop()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        rows = stored(first.db_path, symbol)
        expected = server_rows(live_market, symbol, rows[0][0], rows[-1][0])
        assert rows == expected
        assert rows[-1][0] > before[symbol] + 50
    assert final["gaps_open"] == 0


def test_three_disconnects_are_repaired_to_the_servers_full_sequence(tmp_path, live_market):
    c = make_collector(tmp_path, live_market, backfill="30s").start()
    try:
        assert wait_for_repair(c)
        for _ in range(3):
            connections = c.connections
            assert wait_until(lambda: c.stored > 0 and c.state.value == "connected", 10)
            live_market.drop_connections()
            # Trades go on while the collector waits to reconnect (backoff >= 0 s).
            assert wait_until(lambda: c.connections > connections, 10)
            time.sleep(0.5)
        assert c.reconnects >= 3
        assert wait_for_repair(c)
    finally:
        final = c.stop()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        rows = stored(c.db_path, symbol)
        assert rows == server_rows(live_market, symbol, rows[0][0], rows[-1][0])
    assert final["gaps_opened"] >= 3 and final["gaps_repaired"] >= 3
    assert final["gaps_open"] == 0
    with sqlite3.connect(c.db_path) as conn:
        notes = conn.execute("SELECT count(*) FROM gap_notes WHERE repaired = 1").fetchone()[0]
    assert notes >= 3


# --------------------------------------------------------------------------------------
# The page on the demo feed: a day at 1m and the 1 s analytics right after the start
# --------------------------------------------------------------------------------------


@pytest.fixture
def demo_app_env(tmp_path, monkeypatch):
    import alerts
    import streamlit as st
    for name in ("CRYPTO_REPLAY_FILE", "CRYPTO_STREAM", "BINANCE_WS_URL", "BINANCE_REST_URL",
                 "CRYPTO_BACKFILL", "CRYPTO_BACKFILL_KLINES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRYPTO_FEED", "demo")
    monkeypatch.setenv("CRYPTO_DEMO_SEED", "7")
    monkeypatch.setenv("CRYPTO_SYMBOLS", "btcusdt,ethusdt")
    monkeypatch.setenv("CRYPTO_DB_PATH", str(tmp_path / "demo.db"))
    monkeypatch.setenv("CRYPTO_UPLOAD_DB", str(tmp_path / "uploads.db"))
    monkeypatch.setenv("CRYPTO_DISPLAY_TZ", "UTC")
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    collector.stop()
    alerts.stop_evaluator()
    st.cache_data.clear()
    st.cache_resource.clear()


def _metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def _bars_in_caption(at):
    import re
    for caption in at.caption:
        match = re.search(r"(\d+) bars", str(caption.value))
        if match:
            return int(match.group(1))
    return 0


def test_app_on_the_demo_feed_shows_a_day_at_1m_and_a_1s_zscore_soon(demo_app_env):
    from streamlit.testing.v1 import AppTest
    app = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=60)
    at.session_state["timeframe"] = "1m"
    at.session_state["lookback"] = "24 h"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    feed = collector.running_collector()
    assert feed.health()["backfill"]["pace"] == services.PAGE_BACKFILL_PACE  # the page's
    # The page drew without waiting; the backfill runs on its own thread meanwhile, newest
    # trades first: 30 % of the 60 minutes cover the 15-minute view below.
    def covered(fraction):
        progress = feed.health()["backfill"]["symbols"].values()
        return all(p["klines"] >= 1439 and p["fraction"] >= fraction for p in progress)
    assert wait_until(lambda: covered(0.3), 30), feed.health()["backfill"]
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert _bars_in_caption(at) >= 1400  # a full day of 1-minute bars
    assert _metric(at, "z-score") != "—"
    at.session_state["timeframe"] = "1s"
    at.session_state["lookback"] = "15 min"
    for _ in range(6):  # the live strip's latest bar may lack one leg for a second
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        if _metric(at, "z-score") != "—":
            break
        time.sleep(0.5)
    assert _metric(at, "z-score") != "—", ([str(c.value)[:300] for c in at.caption],
                                           [str(c.value)[:300] for c in at.info])
    assert _bars_in_caption(at) >= 800  # 15 minutes of 1 s bars from the backfill
    assert wait_until(lambda: feed.health()["backfill"]["state"] == "repairing", 60)
    at.session_state["tab"] = "Health"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(str(m.value).startswith("**History over REST**") for m in at.markdown)
    assert int(_metric(at, "rows backfilled").replace(",", "")) > 100_000


def test_browser_shows_a_day_at_1m_with_a_z_score_after_start(tmp_path):
    """``streamlit run app.py`` on the demo feed, Chromium on ``?tf=1m&lookback=24+h``: the
    live strip draws a z-score over a full day of 1-minute bars (klines + ticks)."""
    import os

    from tests.browser import CHROMIUM, CHROMIUM_ARGS, StreamlitServer, demo_env
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium')")
    sync_api = pytest.importorskip("playwright.sync_api")
    strip_js = """() => {
      const metric = Array.from(document.querySelectorAll('[data-testid="stMetric"]'))
          .find(m => m.innerText.trim().startsWith('z-score'));
      const plot = document.querySelector('.st-key-live_z .js-plotly-plot');
      const bars = Array.from(document.querySelectorAll('[data-testid="stCaptionContainer"]'))
          .map(c => (c.innerText.match(/(\\d[\\d,]*) bars/) || [null, '0'])[1])
          .map(b => parseInt(b.replace(/,/g, ''), 10));
      const z = metric ? metric.innerText.trim().split('\\n').pop() : '—';
      return z !== '—' && plot && plot._fullLayout && Math.max(0, ...bars) >= 1400
          ? {z: z, bars: Math.max(...bars)} : false;
    }"""
    with StreamlitServer(demo_env(str(tmp_path)), tmp_path) as server:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(server.url + "?tf=1m&lookback=24+h")
                found = page.wait_for_function(strip_js, timeout=180_000, polling=250)
                result = found.json_value()
            finally:
                browser.close()
    assert result["bars"] >= 1400 and result["z"] != "—"


def test_newest_trades_come_first_and_are_announced_then_the_rest_is_paced(tmp_path):
    """The newest ``urgent_s`` of trades (what a page opens on) are fetched at full speed
    and announced to readers the moment both legs have them; older pages then wait
    ``(1 - pace) / pace`` times as long as each took (on the built-in market)."""
    server = market.MarketServer(market.SimulatedMarket(seed=5), history_s=1200,
                                 kline_history_s=0,
                                 rest_weight_limit=market.DEMO_REST_WEIGHT_LIMIT)
    server.start()
    path = tmp_path / "paced.db"
    announced: list[dict] = []

    class RecordingLedger(database.BackfillLedger):
        def mark_history(self):  # every announcement, with how far back each leg was
            if self._unannounced:
                announced.append({s: self.conn.execute(
                    "SELECT min(ts) FROM ticks WHERE symbol = ?", (s,)).fetchone()[0]
                    for s in ("BTCUSDT", "ETHUSDT")} | {"at": time.monotonic()})
            super().mark_history()

    waits: list[tuple[float, float]] = []

    class RecordingStop(threading.Event):
        def wait(self, timeout=None):
            if timeout is not None:
                waits.append((time.monotonic(), timeout))
            return super().wait(timeout)

    try:
        rest = binance_rest.RestClient(server.url.replace("ws://", "http://"))
        rest.stop = RecordingStop()
        backfiller = binance_rest.Backfiller(
            rest, ["BTCUSDT", "ETHUSDT"], RecordingLedger(path), trade_history_s=1200,
            kline_history_s=0, repair=False, urgent_s=300, pace=0.25)
        backfiller.start()
        assert wait_until(lambda: backfiller.state == "done", 60), backfiller.health()
        ended = time.monotonic()
    finally:
        server.stop()
    window_start = backfiller.trades_from_ms
    urgent_from = window_start + (1200 - 300) * 1000
    # The first announcement with both legs' newest 5 minutes came as the later leg got
    # there: that leg's walk was at most a page or two (< 2 min of trades) further back.
    first = next(a for a in announced
                 if a["BTCUSDT"] <= urgent_from and a["ETHUSDT"] <= urgent_from)
    assert max(first["BTCUSDT"], first["ETHUSDT"]) > urgent_from - 120_000, first
    assert min(first["BTCUSDT"], first["ETHUSDT"]) > window_start  # the rest came later
    for symbol in ("BTCUSDT", "ETHUSDT"):
        rows = stored(path, symbol)  # the whole window, each trade once, nothing missing
        agg, _tid, ts, *_ = server.past.trades(symbol)
        assert rows[0][0] == int(agg[ts >= window_start][0])
        assert rows == server_rows(server, symbol, rows[0][0], rows[-1][0])
    # Pages before the announcement: no waiting; after it: waits, 3x each page's time.
    assert rest.stats.paced_s == 0  # no rate-limit waits: every wait is the Backfiller's
    assert waits and all(at >= first["at"] for at, _ in waits)
    paced_wall = ended - first["at"]
    waited = sum(timeout for _, timeout in waits)
    assert 0.6 < waited / paced_wall < 0.85, (waited, paced_wall)


def test_the_newest_minutes_are_announced_before_the_urgent_window_is_complete(tmp_path):
    """Readers hear of the trades twice before the urgent window is over: as soon as both
    legs have their newest ``first_s`` (enough for the 1 s z-score), and again at
    ``urgent_s`` (a 1 s view need not wait for the requests of the whole 15 minutes)."""
    server = market.MarketServer(market.SimulatedMarket(seed=5), history_s=1200,
                                 kline_history_s=0,
                                 rest_weight_limit=market.DEMO_REST_WEIGHT_LIMIT)
    server.start()
    announced: list[dict] = []

    class RecordingLedger(database.BackfillLedger):
        HISTORY_BUMP_EVERY_S = 3600.0  # only the announcements this test is about

        def mark_history(self):
            if self._unannounced:
                announced.append({s: self.conn.execute(
                    "SELECT min(ts) FROM ticks WHERE symbol = ?", (s,)).fetchone()[0]
                    for s in ("BTCUSDT", "ETHUSDT")})
            super().mark_history()

    try:
        rest = binance_rest.RestClient(server.url.replace("ws://", "http://"))
        backfiller = binance_rest.Backfiller(
            rest, ["BTCUSDT", "ETHUSDT"], RecordingLedger(tmp_path / "first.db"),
            trade_history_s=1200, kline_history_s=0, repair=False, urgent_s=600, first_s=120)
        backfiller.start()
        assert wait_until(lambda: backfiller.state == "done", 60), backfiller.health()
    finally:
        server.stop()
    now_ms = backfiller.trades_from_ms + 1200 * 1000
    first_from, urgent_from = now_ms - 120_000, now_ms - 600_000
    legs = ("BTCUSDT", "ETHUSDT")
    reached = [a for a in announced if all(a[s] is not None for s in legs)]
    # 1st: both legs back past first_s, the later one by at most a page or two
    assert all(reached[0][s] <= first_from for s in legs), reached
    assert max(reached[0][s] for s in legs) > first_from - 120_000, reached
    assert min(reached[0][s] for s in legs) > urgent_from, reached  # long before urgent_s
    # 2nd: the urgent window, in the same way; the rest once the walk is over
    assert all(reached[1][s] <= urgent_from for s in legs), reached
    assert max(reached[1][s] for s in legs) > urgent_from - 120_000, reached
    assert len(reached) == 3, reached
