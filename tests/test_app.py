"""Tests for app.py (the Streamlit page) through ``streamlit.testing.v1.AppTest``.

Every test runs the real page against real components: a SQLite file in ``tmp_path``, the
real collector pointed either at a closed 127.0.0.1 port (nothing is ever written by it) or
at the built-in simulated market, the real alert evaluator. Trades recorded on Binance
futures (tests/data/app_futures_2025-12-15T0843Z_btc_eth_first5000.ndjson: the first 5,000
lines of /work/shared/data/ticks/futures_2025-12-15T0843Z_btc_eth.ndjson) are imported
with ``uploads.parse_tick_file`` + ``database.import_ticks``; reference values are computed
independently from the same file with plain pandas.

AppTest facts used here (Streamlit 1.67)
- Lazy tabs (``st.tabs(..., key="tab", on_change="rerun")``): a tab opens by setting
  ``at.session_state["tab"]`` to its label and running again; closed tabs render nothing.
- Fragments run once per ``run()``; their timers never tick.
- Download buttons: an eager one carries ``proto.url`` = ``/mock/media/<file_id>.<ext>``,
  a deferred one (``data=`` a callable) ``proto.deferred_file_id``. Each run builds its own
  ``MediaFileManager``; the ``media`` fixture records it so a test can read the bytes
  (``read_file``) or run the deferred callable (``execute_deferred``) as a click would.
- A chart with ``on_select`` and a key takes a selection through
  ``at.session_state[<key>]`` (what a dragged box would send), so the zoom that the page
  re-applies on every refresh can be driven without a browser. Zoom in a real browser was
  checked with headless Chromium (Streamlit 1.67 remounts a chart whose data changed, so
  ``uirevision`` alone does not keep a zoom; see ``app.chart``).
- Threads started in ``st.cache_resource`` outlive a test: every test stops the collector
  and the evaluator and clears Streamlit's caches.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import alerts
import analytics
import backtest
import collector
import dashboard_data as dd
import database
import services
import uploads
import visualizations as viz
from page_helpers import media  # noqa: F401  (a fixture: download payloads)

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
DATA = Path(__file__).resolve().parent / "data"
TRADES_FILE = DATA / "app_futures_2025-12-15T0843Z_btc_eth_first5000.ndjson"
GOOD_OHLC = DATA / "upload_spot_1m_2025-12-15_btc_eth.csv"
TABS = ("Prices", "Spread & z-score", "Statistics", "Correlation", "Pairs", "Backtest",
        "Paper", "Alerts", "Data", "Health")
TEXT_ELEMENTS = ("markdown", "caption", "info", "warning", "error", "success", "text")


# --------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------


@pytest.fixture
def closed_port():
    """A 127.0.0.1 port nobody listens on: the feed's connects are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def page_environment(monkeypatch, closed_port: int, db: str, uploads_db: str):
    """Environment of a page whose feed cannot connect, its live database at ``db`` (a file
    or a URL); yields the paths, then cleans up threads and caches."""
    paths = {"db": db, "uploads": uploads_db}
    for name in ("CRYPTO_DEMO_SEED", "CRYPTO_REPLAY_FILE", "CRYPTO_STREAM", "CRYPTO_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRYPTO_FEED", "binance-futures")
    monkeypatch.setenv("BINANCE_WS_URL", f"ws://127.0.0.1:{closed_port}")
    monkeypatch.setenv("CRYPTO_SYMBOLS", "btcusdt,ethusdt")
    monkeypatch.setenv("CRYPTO_DB_PATH", paths["db"])
    monkeypatch.setenv("CRYPTO_UPLOAD_DB", paths["uploads"])
    monkeypatch.setenv("CRYPTO_DISPLAY_TZ", "UTC")
    st.cache_data.clear()
    st.cache_resource.clear()
    yield paths
    collector.stop()
    alerts.stop_evaluator()
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def app_env(tmp_path, monkeypatch, closed_port):
    """Environment of a page whose feed cannot connect; cleans up threads and caches."""
    with page_environment(monkeypatch, closed_port, str(tmp_path / "live.db"),
                          str(tmp_path / "uploads.db")) as paths:
        yield paths


@pytest.fixture
def recorded_db(app_env):
    """The recorded trades imported into the page's live database."""
    parsed = uploads.parse_tick_file(TRADES_FILE, filename=TRADES_FILE.name)
    assert parsed.ok, parsed.error
    conn = database.connect(app_env["db"])
    try:
        database.import_ticks(conn, uploads.to_trade_tuples(parsed.trades, received_ms=1))
    finally:
        conn.close()
    return app_env


def reference_trades() -> pd.DataFrame:
    """The fixture's market trades read with plain json/pandas (placeholders removed)."""
    with open(TRADES_FILE, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    frame = pd.DataFrame(rows)
    frame = frame[(frame["price"] > 0) & (frame["size"] > 0)].copy()
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    frame["ts"] = (pd.to_datetime(frame["ts"], utc=True) - epoch) // pd.Timedelta(milliseconds=1)
    return frame.reset_index(drop=True)


def new_app(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def open_tab(at: AppTest, name: str) -> AppTest:
    at.session_state["tab"] = name
    return run(at)


def texts(at: AppTest) -> list[str]:
    found = []
    for kind in TEXT_ELEMENTS:
        found.extend(str(element.value) for element in at.get(kind))
    return found


def metric(at: AppTest, label: str) -> str:
    matches = [m.value for m in at.metric if m.label == label]
    assert matches, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return matches[0]


def dataframe_with_row(at: AppTest, row: str) -> pd.DataFrame:
    for frame in at.dataframe:
        if row in frame.value.index:
            return frame.value
    raise AssertionError(f"no dataframe with a row {row!r}")


def download(at: AppTest, managers: list, key: str) -> bytes:
    """The bytes a click on download button ``key`` would deliver."""
    buttons = [b for b in at.get("download_button") if b.proto.id.endswith(key)]
    assert buttons, f"no download button {key!r}"
    proto = buttons[0].proto
    manager = managers[-1]
    url = manager.execute_deferred(proto.deferred_file_id) if proto.deferred_file_id \
        else proto.url
    file_id = url.rsplit("/", 1)[1].split(".")[0]
    return manager.read_file(file_id).content


def stored_bars(db_path: str, symbol: str, timeframe: str = "1s") -> pd.DataFrame:
    conn = database.connect(db_path, readonly=True)
    try:
        return database.read_bars(conn, symbol, timeframe=timeframe)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# start-up, empty database, configuration
# --------------------------------------------------------------------------------------


def test_starts_on_an_empty_database(app_env):
    at = run(new_app())

    assert dd.WAITING_MESSAGE in texts(at)
    assert not Path(app_env["db"]).exists()  # the page never creates the collector's file
    assert dd.BUILTIN_MARKET_LABEL not in " ".join(texts(at))
    feed_words = " ".join(texts(at))
    assert "Binance futures" in feed_words and "live —" not in feed_words


@pytest.mark.parametrize("timeframe, tab, builder, keys", [
    ("1m", "Prices", "candlestick_figure", ("candles_y", "candles_x")),
    ("1m", "Spread & z-score", "zscore_figure", ("zscore",)),
    ("1s", "Prices", "candlestick_figure", ("candles_y", "candles_x"))])
def test_minute_charts_are_built_once_per_bar_close_not_every_refresh(
        recorded_db, monkeypatch, timeframe, tab, builder, keys):
    # Cost caught: at 1m bars a refresh between closes rebuilt the same figures each time.
    import visualizations

    built = []
    original = getattr(visualizations, builder)
    monkeypatch.setattr(visualizations, builder,
                        lambda *a, **k: built.append(1) or original(*a, **k))
    at = open_tab(run(new_app(lookback="15 min", timeframe=timeframe)), tab)
    first = {key: chart_layout(at, key) | {"data": chart_data(at, key)} for key in keys}
    built.clear()
    at = run(at)  # a refresh: no new trade, so no new closed bar
    assert {key: chart_layout(at, key) | {"data": chart_data(at, key)} for key in keys} == first
    assert len(built) == (len(keys) if timeframe == "1s" else 0)
    if tab == "Prices":  # a setting that changes the figure builds it again
        at.radio(key="chart_style_y").set_value("line")
        at = run(at)
        assert chart_data(at, "candles_y")[0]["type"] == "scatter"
        assert chart_data(at, "candles_x")[0]["type"] == "candlestick"


def chart_data(at: AppTest, key: str) -> list:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    return json.loads(charts[0].proto.spec)["data"]


@pytest.mark.parametrize("tab", TABS)
def test_every_tab_renders_on_an_empty_database(app_env, tab):
    at = open_tab(run(new_app()), tab)

    assert not at.error, [e.value for e in at.error]
    if tab in ("Prices", "Spread & z-score", "Statistics", "Correlation", "Backtest", "Data"):
        assert dd.WAITING_MESSAGE in [i.value for i in at.info]


def test_a_bad_setting_is_shown_not_raised(app_env, monkeypatch):
    monkeypatch.setenv("CRYPTO_FEED", "nasdaq")
    at = run(new_app())

    assert any("CRYPTO_FEED='nasdaq'" in e.value for e in at.error)
    assert not at.tabs


def test_only_the_open_tab_runs(recorded_db):
    at = run(new_app())
    assert [t.label for t in at.tabs] == list(TABS)
    assert not at.get("file_uploader")  # Data tab closed: its widgets were never created

    at = open_tab(at, "Data")
    assert len(at.get("file_uploader")) == 2
    candles = [c for c in at.get("plotly_chart") if c.proto.id.endswith("candles_y")]
    assert not candles  # Prices is closed now


def test_a_servers_first_page_reads_the_view_before_it_draws_a_chart(recorded_db,
                                                                     monkeypatch):
    """No chart goes out before the view is read, not even on a server's first page: a
    placeholder chart sent first there (so that a just-opened browser would fetch Plotly
    sooner) had the browser compile Plotly's 4.7 MB, a second of its main thread, before it
    drew anything else, and the full view came later (README, Backfill benchmark)."""
    from streamlit.elements.plotly_chart import PlotlyMixin

    monkeypatch.setitem(services._PROCESS, "page_served", threading.Event())  # a new server
    events = []
    draw, draw_main, load = PlotlyMixin.plotly_chart, st.plotly_chart, dd.load_pair_view
    monkeypatch.setattr(PlotlyMixin, "plotly_chart",  # charts in a container
                        lambda self, fig, *a, **k: events.append(("chart", k.get("key")))
                        or draw(self, fig, *a, **k))
    monkeypatch.setattr(st, "plotly_chart",  # st.plotly_chart, bound at import
                        lambda fig, *a, **k: events.append(("chart", k.get("key")))
                        or draw_main(fig, *a, **k))
    monkeypatch.setattr(dd, "load_pair_view",
                        lambda *a, **k: events.append(("view", None)) or load(*a, **k))
    at = run(new_app(lookback="15 min"))

    assert events[0] == ("view", None)
    assert next(key for kind, key in events if kind == "chart") == "live_z"
    assert len([c for c in at.get("plotly_chart") if c.proto.id.endswith("live_z")]) == 1


def test_last_prices_are_a_fragment_of_their_own_on_a_faster_timer(recorded_db,
                                                                    monkeypatch):
    """The strip's last prices rerun by themselves every 0.25 s, inside the 0.5 s strip
    (AppTest does not tick timers: the registered periods are what is checked; the browser
    test sees the price change by itself)."""
    periods = {}
    real_fragment = st.fragment

    def recording_fragment(func=None, **options):
        def register(function):
            periods[function.__name__] = options.get("run_every")
            return real_fragment(function, **options)
        return register if func is None else register(func)

    monkeypatch.setattr(st, "fragment", recording_fragment)
    at = run(new_app(lookback="15 min"))

    assert periods["live_strip"] == dd.LIVE_STRIP_EVERY_S == 0.5
    assert periods["last_prices"] == dd.LIVE_PRICE_EVERY_S == 0.25
    newest = dd.newest_prices(recorded_db["db"], ("ETHUSDT", "BTCUSDT"))
    assert metric(at, "ETHUSDT last") == dd.format_price(newest[0])
    assert metric(at, "BTCUSDT last") == dd.format_price(newest[1])


def test_a_sessions_first_run_draws_in_the_configured_theme(recorded_db):
    """A new browser reports its system's theme (light) with the first run, before it has
    applied the page's own (dark, .streamlit/config.toml): the first run draws dark, as the
    page shows, instead of drawing every chart light and again dark at its next refresh.
    A browser that still reports light on the next run shows light: its user chose it."""
    assert st.get_option("theme.base") == "dark"

    def backgrounds(at: AppTest) -> set:
        return {json.loads(c.proto.spec)["layout"]["template"]["layout"]["paper_bgcolor"]
                for c in at.get("plotly_chart")}

    dark, light = ({viz.apply_colors(go.Figure(), theme).layout.template.layout.paper_bgcolor}
                   for theme in ("dark", "light"))
    at = new_app(lookback="15 min")
    at.context = {"theme": "light"}

    assert backgrounds(run(at)) == dark
    assert backgrounds(run(at)) == light


def test_a_session_gets_its_first_strip_numbers_before_the_charts(recorded_db, monkeypatch):
    """Once per session the strip pauses after its numbers, before its chart and the tabs'
    charts are sent, so the starting browser shows the numbers first (page.numbers_first);
    later runs and refreshes do not pause, a new session does."""
    import types

    from streamlit.delta_generator import DeltaGenerator

    import page

    sent = []
    draw_metric, draw_chart = DeltaGenerator.metric, st.plotly_chart

    def metric(self, *args, **kwargs):
        sent.append("metric")
        return draw_metric(self, *args, **kwargs)

    def plotly_chart(*args, **kwargs):
        sent.append("plotly_chart")
        return draw_chart(*args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "metric", metric)
    monkeypatch.setattr(st, "plotly_chart", plotly_chart)
    monkeypatch.setattr(page, "time", types.SimpleNamespace(
        sleep=lambda seconds: sent.append(("pause", seconds))))

    at = run(new_app(lookback="15 min"))
    pause = sent.index(("pause", page.FIRST_NUMBERS_LEAD_S))
    assert sent[:pause] == ["metric"] * 7  # the strip's numbers, and no chart yet
    assert sent[pause + 1:].count("plotly_chart") == len(at.get("plotly_chart")) >= 4

    run(at)
    run(new_app(lookback="15 min"))
    assert sum(isinstance(item, tuple) for item in sent) == 2  # one per session


def test_the_long_lived_heap_is_frozen_after_the_first_run(recorded_db):
    """Streamlit's gc.collect(2) after every run then walks only what the run created, not
    the ~120,000 objects of modules and caches (README Performance)."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    run(new_app(lookback="15 min"))

    assert gc.get_freeze_count() > 50_000


def test_a_page_without_data_draws_no_chart(app_env):
    at = run(new_app())

    assert dd.WAITING_MESSAGE in texts(at)
    assert not at.get("plotly_chart")


# --------------------------------------------------------------------------------------
# recorded trades: numbers on screen equal a pandas recomputation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tab", TABS)
def test_every_tab_renders_with_recorded_trades(recorded_db, tab):
    at = open_tab(run(new_app(lookback="15 min")), tab)

    assert not at.error, [e.value for e in at.error]


def test_recorded_trades_give_the_expected_bars_and_statistics(recorded_db):
    trades = reference_trades()
    at = open_tab(run(new_app(lookback="15 min")), "Statistics")

    table = dataframe_with_row(at, "vwap")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        mine = trades[trades["symbol"] == symbol]
        seconds = mine["ts"] // 1000
        # Close of the last second = last trade of that second in file order (ids are given
        # in file order and the bar keeps the largest (ts, id)).
        last = mine.loc[mine["ts"] == mine["ts"].max(), "price"].iloc[-1]
        vwap = (mine["price"] * mine["size"]).sum() / mine["size"].sum()
        assert table.loc["bars", symbol] == seconds.nunique()
        assert table.loc["trades", symbol] == len(mine)
        assert table.loc["last", symbol] == last
        assert table.loc["high", symbol] == mine["price"].max()
        assert table.loc["vwap", symbol] == pytest.approx(vwap, rel=1e-12)  # sum order only
        assert table.loc["volume", symbol] == pytest.approx(mine["size"].sum(), rel=1e-12)
        assert metric(at, f"{symbol} last") == dd.format_price(last)
    union_seconds = (trades["ts"] // 1000).nunique()
    assert any(f"· {union_seconds} bars" in c.value for c in at.caption)


def test_timeframe_changes_the_bars_shown(recorded_db):
    trades = reference_trades()
    at = run(new_app(lookback="15 min"))
    at.selectbox(key="timeframe").set_value("10s")
    at = run(at)

    buckets = (trades["ts"] // 10_000).nunique()  # 10 s bars of either leg
    assert any("10s bars" in c.value and f"· {buckets} bars" in c.value
               for c in at.caption), [c.value for c in at.caption]


def test_minute_charts_show_closed_bars_and_the_strip_the_forming_one(recorded_db):
    trades = reference_trades()
    at = run(new_app(lookback="15 min", timeframe="1m"))
    at = open_tab(at, "Prices")

    minutes = np.unique(trades["ts"].to_numpy() // 60_000)
    forming = minutes[-1]  # the newest trade's minute has not closed
    close = pd.Timestamp(int(forming) * 60_000, unit="ms", tz="UTC").strftime("%H:%M UTC")
    # the live strip counts the forming bar and says so: the tab's count is of closed bars
    assert any(f"· {minutes.size} bars incl. the forming one ·" in c.value for c in at.caption)
    assert f"{minutes.size - 1} closed 1m bars up to {close}; the charts update at each bar " \
        "close, the live strip above every trade" in [c.value for c in at.caption]


@pytest.mark.parametrize("tab", TABS)
def test_minute_tabs_wait_for_the_first_bar_close(app_env, tab):
    start = 1_700_000_040_000  # 40 s into a minute: no 1m bar has closed yet
    trades = [(symbol, start + 500 * i, 1_000 + i, price * (1 + 1e-4 * (i % 3)), 0.5,
               i % 2 == 0, 1) for symbol, price in (("BTCUSDT", 60_000.0), ("ETHUSDT", 3_000.0))
              for i in range(30)]
    conn = database.connect(app_env["db"])
    try:
        database.import_ticks(conn, trades)
    finally:
        conn.close()

    at = open_tab(run(new_app(timeframe="1m", lookback="15 min")), tab)

    assert not at.error, [e.value for e in at.error]
    assert metric(at, "BTCUSDT last") != "—"  # the strip shows the forming bar
    assert not any("closed 1m bars" in c.value for c in at.caption)
    if tab in ("Prices", "Spread & z-score", "Statistics", "Correlation"):
        assert any(i.value.startswith("no 1m bar has closed yet") for i in at.info)


@pytest.mark.parametrize("tf_label, kind, paused, every, at_close", [
    ("1s", "live", False, 2.0, False), ("1m", "live", False, 2.0, True),
    ("5m", "live", False, 2.0, True), ("1m", "live", True, None, True),
    ("1m", "uploaded", False, None, False),
])
def test_charts_rerun_at_the_refresh_interval_and_minute_bars_wait_for_the_close(
        tf_label, kind, paused, every, at_close):
    controls = dd.Controls(
        source=dd.DataSource(kind, "x.db", "" if kind == "live" else "f.csv"), y="BTCUSDT",
        x="ETHUSDT", tf_label=tf_label, timeframe=dd.timeframe_of(tf_label),
        lookback_label="1 h", lookback_ms=3_600_000, method_label="OLS", method="ols",
        window=60, log_prices=True, entry=2.0, exit=0.0, tz="UTC", refresh_s=2.0,
        paused=paused)

    assert controls.chart_every == every
    assert controls.charts_at_bar_close is at_close


@pytest.mark.parametrize("label, latest, expected", [
    ("1m", (125_000, 119_000), 120_000), ("5m", (None, 899_999), 600_000),
    ("1m", (None, None), None), ("30s", (125_000, 119_000), None),
])
def test_closed_bars_end_where_the_newest_second_begins_its_bar(label, latest, expected):
    assert dd.closed_bars_before(label, latest) == expected


@pytest.mark.parametrize("method_label", ["OLS", "Kalman"])
def test_method_changes_the_live_z_score(recorded_db, method_label):
    at = run(new_app(lookback="15 min", method=method_label, window=60))

    # The page must show pair_signals' latest z for the chosen method on the aligned legs
    # (the default pair: ETH on BTC), windows in bars of clock time.
    bars_y = stored_bars(recorded_db["db"], "ETHUSDT")
    bars_x = stored_bars(recorded_db["db"], "BTCUSDT")
    aligned = analytics.align(bars_y, bars_x, timeframe="1s")
    signals = analytics.pair_signals(aligned.y, aligned.x, method=dd.METHODS[method_label],
                                     window=60, log_prices=True, bar_ms=1000)
    expected = signals.latest
    assert metric(at, "z-score") == f"{expected['z']:.2f}"
    assert metric(at, "β") == f"{expected['beta']:.4f}"
    assert metric(at, "spread") == f"{expected['spread'] * 10_000:,.1f} bp"  # log spread
    assert any(f"{method_label}, log prices" in c.value for c in at.caption)


def test_ols_and_kalman_show_different_hedges(recorded_db):
    at = run(new_app(lookback="15 min"))
    ols_beta = metric(at, "β")
    at.selectbox(key="method").set_value("Kalman")
    kalman_beta = metric(run(at), "β")

    assert ols_beta != kalman_beta


def test_warming_up_says_what_it_needs(recorded_db):
    trades = reference_trades()
    at = run(new_app(lookback="15 min"))
    at.number_input(key="window").set_value(100)
    at = run(at)

    # Bars with a level for both legs: a leg's close is carried at most 5 bars (align's
    # default limit), counted here from the raw trades.
    traded = {s: set(trades.loc[trades["symbol"] == s, "ts"] // 1000)
              for s in ("BTCUSDT", "ETHUSDT")}
    union = sorted(traded["BTCUSDT"] | traded["ETHUSDT"])

    def has_level(symbol, second):
        return any(second - k in traded[symbol] for k in range(6))

    nobs = sum(has_level("BTCUSDT", s) and has_level("ETHUSDT", s) for s in union)
    expected = f"z-score: needs 200 bars, has {nobs} — about {200 - nobs} s more at 1s bars"
    assert expected in [i.value for i in at.info]
    assert metric(at, "z-score") == "—"


@pytest.mark.parametrize("value, log_prices, shown", [
    (-0.000123, True, "-1.2 bp"), (0.0125, True, "125.0 bp"), (1234.567, False, "1,235"),
    (-12.3456, False, "-12.35"), (0.00123456, False, "0.001235"), (0.0, False, "0.000"),
    (float("nan"), True, "—"),
])
def test_strip_spread_is_short_enough_for_its_column(value, log_prices, shown):
    assert dd.format_spread(value, log_prices) == shown


def test_sidebar_activity_is_a_markdown_table_with_a_dash_for_no_trade_yet():
    health = {"symbols": {
        "BTCUSDT": {"trades_per_s": 36.64, "last_trade_age_s": 0.0132, "received": 10},
        "SOLUSDT": {"trades_per_s": 0.0, "last_trade_age_s": None, "received": 0}}}

    assert dd.symbol_activity_markdown(health).splitlines() == [
        "| symbol | trades/s | age |", "|---|--:|--:|",
        "| BTCUSDT | 36.6 | 0.01 |", "| SOLUSDT | 0.0 | — |"]
    assert dd.symbol_activity_markdown({"symbols": {}}) == ""


def test_swap_exchanges_the_legs(recorded_db):
    at = run(new_app(lookback="15 min"))
    at.button(key="swap").click()
    at = run(at)

    assert at.session_state["y_symbol"] == "BTCUSDT"  # from the default ETH on BTC
    assert at.session_state["x_symbol"] == "ETHUSDT"
    assert any("BTCUSDT on ETHUSDT" in c.value for c in at.caption)


def test_statistics_tests_run_on_request_with_a_verdict(recorded_db):
    # A 30-bar window: the recording is 141 s, shorter than the 1 s default (300) needs.
    at = open_tab(run(new_app(lookback="15 min", window=30)), "Statistics")
    assert not any(s.value.startswith("Engle–Granger:") for s in at.success)

    at.button(key="run_tests").click()
    at = run(at)

    # each verdict is green only when the statistic is below its 5 % critical value
    figures = [m.value for m in at.markdown if m.value.startswith("statistic ")]
    boxes = [(kind, box.value) for kind in ("success", "warning") for box in getattr(at, kind)
             if box.value.startswith(("ADF: ", "Engle–Granger: "))]
    assert len(figures) == 2 and len(boxes) == 2
    for name, text in zip(("ADF: ", "Engle–Granger: "), figures):
        statistic, critical = (float(re.search(pattern, text).group(1)) for pattern in
                               (r"statistic (-?[\d.]+)", r"5 % critical (-?[\d.]+)"))
        kind, verdict = next(b for b in boxes if b[1].startswith(name))
        assert kind == ("success" if statistic < critical else "warning"), (text, verdict)
    assert any("cointegrated" in verdict for _, verdict in boxes)


# --------------------------------------------------------------------------------------
# downloads
# --------------------------------------------------------------------------------------


def test_minute_statistics_csv_download(recorded_db, media):
    trades = reference_trades()
    at = open_tab(run(new_app(lookback="15 min")), "Statistics")

    csv = pd.read_csv(io.BytesIO(download(at, media, "download_minute_stats")))
    eth = trades[trades["symbol"] == "ETHUSDT"].copy()  # y of the default pair
    eth["minute"] = eth["ts"] // 60_000 * 60_000
    last_per_minute = eth.groupby("minute")["price"].last()  # file order within a minute
    assert csv["ts"].tolist() == sorted((trades["ts"] // 60_000 * 60_000).unique().tolist())
    assert csv.set_index("ts")["y_close"].to_dict() == last_per_minute.to_dict()
    assert csv["time"].iloc[0] == "2025-12-15T08:43:00.000+00:00"
    assert set(analytics.MINUTE_STATS_COLUMNS) <= set(csv.columns)


def test_data_tab_exports_bars_ticks_and_analytics(recorded_db, media):
    trades = reference_trades()
    at = open_tab(run(new_app(lookback="15 min")), "Data")

    bars = pd.read_csv(io.BytesIO(download(at, media, "download_bars")))
    for symbol in ("BTCUSDT", "ETHUSDT"):
        expected = stored_bars(recorded_db["db"], symbol)
        mine = bars[bars["symbol"] == symbol].set_index("ts")
        assert mine.index.tolist() == expected.index.tolist()
        # prices read back exactly; computed values (vwap) without float noise: rounded
        # to 15 significant digits (exports.round_significant)
        assert mine["close"].tolist() == expected["close"].tolist()
        assert mine["vwap"].tolist() == pytest.approx(expected["vwap"].tolist(), rel=1e-14)
        assert mine["vwap"].map(lambda v: len(repr(v).replace(".", "").lstrip("0"))).max() <= 15
    ticks = pd.read_csv(io.BytesIO(download(at, media, "download_ticks")))
    assert len(ticks) == len(trades)
    assert ticks.groupby("symbol")["price"].sum().to_dict() == pytest.approx(
        trades.groupby("symbol")["price"].sum().to_dict(), rel=1e-9)
    table = pd.read_csv(io.BytesIO(download(at, media, "download_analytics")))
    assert len(table) == (trades["ts"] // 1000).nunique()
    assert {"y_close", "x_close", "beta", "spread", "z", "kalman_beta",
            "correlation"} <= set(table.columns)


def test_backtest_trades_download_matches_the_table(recorded_db, media):
    at = run(new_app(lookback="15 min"))
    at.number_input(key="window").set_value(20)
    at.number_input(key="entry_z").set_value(1.0)
    at = open_tab(run(at), "Backtest")

    count = int(metric(at, "trades"))
    csv = pd.read_csv(io.BytesIO(download(at, media, "download_trades")))
    assert count >= 1
    assert len(csv) == count
    assert list(csv.columns) == ["time", *backtest.TRADE_COLUMNS]
    # minutes of 1 s bars: Sharpe is not annualised on screen, and the page says why
    assert metric(at, "Sharpe") == "—"
    assert any(c.value.startswith("Sharpe and Sortino need at least 100 bars covering 60 min")
               for c in at.caption)


# --------------------------------------------------------------------------------------
# uploads
# --------------------------------------------------------------------------------------


def test_a_good_ohlc_upload_is_stored_and_analysed(app_env):
    data = GOOD_OHLC.read_bytes()
    expected = uploads.parse_ohlc_csv(data, filename=GOOD_OHLC.name)
    at = open_tab(run(new_app()), "Data")
    at.get("file_uploader")[0].upload(GOOD_OHLC.name, data, "text/csv")
    at = run(at)
    assert any(f"{expected.n_accepted} accepted, {expected.n_rejected} rejected" in t
               for t in texts(at))

    at.button(key="store_ohlc").click()
    at = run(at)
    assert at.session_state["source_kind"] == "uploaded"
    assert at.session_state["upload_name"] == GOOD_OHLC.name
    at = open_tab(at, "Statistics")

    table = dataframe_with_row(at, "vwap")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        bars = expected.bars[expected.bars["symbol"] == symbol]
        assert table.loc["bars", symbol] == len(bars)
        assert table.loc["last", symbol] == bars["close"].iloc[-1]
    assert any("uploaded: " + GOOD_OHLC.name in c.value for c in at.caption)


@pytest.mark.parametrize("coin, rejected", [("btc", 57), ("eth", 45)])
def test_invalid_ohlc_rows_are_rejected_with_counts(app_env, coin, rejected):
    # 57 (BTC) and 45 (ETH) rows with high < max(open, close) or low > min(open, close):
    # counted by the data set's publishers (/work/shared/data/README.md, bad/).
    path = DATA / f"upload_ohlc_1m_{coin}_invalid_high_low.csv"
    at = open_tab(run(new_app()), "Data")
    at.text_input(key="upload_symbol").set_value(f"{coin}usdt")
    at.get("file_uploader")[0].upload(path.name, path.read_bytes(), "text/csv")
    at = run(at)

    assert any(f"{200 - rejected} accepted, {rejected} rejected" in t for t in texts(at))
    assert any(e.value.startswith(f"{rejected} rows rejected") for e in at.error)
    listed = [f.value for f in at.dataframe if "reason" in f.value.columns]
    assert len(listed) == 1 and len(listed[0]) == rejected
    assert listed[0]["reason"].str.contains("high|low").all()


def test_a_tick_file_upload_becomes_one_second_bars(app_env):
    trades = reference_trades()
    at = open_tab(run(new_app()), "Data")
    at.get("file_uploader")[1].upload(TRADES_FILE.name, TRADES_FILE.read_bytes(),
                                      "application/x-ndjson")
    at = run(at)
    at.button(key="store_ticks").click()
    at = open_tab(run(at), "Statistics")

    table = dataframe_with_row(at, "vwap")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        mine = trades[trades["symbol"] == symbol]
        assert table.loc["bars", symbol] == (mine["ts"] // 1000).nunique()
        vwap = (mine["price"] * mine["size"]).sum() / mine["size"].sum()
        assert table.loc["vwap", symbol] == pytest.approx(vwap, rel=1e-12)


# --------------------------------------------------------------------------------------
# feed label, symbols, alerts
# --------------------------------------------------------------------------------------


def test_the_simulated_market_is_labelled(app_env, monkeypatch):
    monkeypatch.setenv("CRYPTO_FEED", "demo")
    monkeypatch.setenv("CRYPTO_DEMO_SEED", "11")
    at = run(new_app())
    deadline = time.monotonic() + 20
    while dd.WAITING_MESSAGE in texts(at) and time.monotonic() < deadline:
        time.sleep(0.5)
        at = run(at)

    label = dd.BUILTIN_MARKET_LABEL
    assert label in [w.value for w in at.sidebar.warning]  # sidebar
    assert any(label in w.value for w in at.main.warning)  # banner
    assert any(c.value.startswith(label) for c in at.caption)  # live strip caption


def test_symbols_are_validated_added_and_removed(app_env, monkeypatch):
    monkeypatch.setenv("CRYPTO_FEED", "demo")
    monkeypatch.setenv("CRYPTO_DEMO_SEED", "5")
    at = run(new_app())
    at.text_input(key="new_symbol").set_value("btc-usdt!")
    at.button(key="add_symbol").click()
    at = run(at)
    assert any("is not valid" in e.value for e in at.sidebar.error)
    assert collector.running_collector().settings.symbols == ("btcusdt", "ethusdt")

    at.text_input(key="new_symbol").set_value("SOLUSDT")
    at.button(key="add_symbol").click()
    at = run(at)
    assert collector.running_collector().settings.symbols == ("btcusdt", "ethusdt", "solusdt")
    assert "SOLUSDT" in at.selectbox(key="y_symbol").options

    at.selectbox(key="remove_choice").set_value("SOLUSDT")
    at.button(key="remove_symbol").click()
    run(at)
    assert collector.running_collector().settings.symbols == ("btcusdt", "ethusdt")


def submit_alert(at: AppTest, *, threshold: float, comparison: str = "abs>") -> AppTest:
    at.selectbox(key="alert_metric").set_value("zscore")
    at.selectbox(key="alert_comparison").set_value(comparison)
    at.number_input(key="alert_threshold").set_value(threshold)
    next(b for b in at.button if b.label == "Create alert").click()
    return run(at)


def rules_table(at: AppTest) -> pd.DataFrame:
    return next(f.value for f in at.dataframe if "comparison" in f.value.columns)


def test_alert_rules_are_created_listed_and_deleted(recorded_db):
    at = open_tab(run(new_app(lookback="15 min")), "Alerts")
    defaults = rules_table(at)
    assert len(defaults) == 2 and not defaults["enabled"].any()  # |z| > 2, > 3, disabled

    at = submit_alert(at, threshold=0.0)  # abs> needs a positive threshold
    assert at.error and "threshold" in at.error[0].value
    at = submit_alert(at, threshold=2.5)
    created = [s.value for s in at.success if s.value.startswith("rule ")]
    assert created
    rule_id = int(re.match(r"rule (\d+) created", created[0]).group(1))
    at = run(at)
    assert rule_id in rules_table(at)["id"].tolist()

    at.selectbox(key="alert_rule_choice").set_value(rule_id)
    at.button(key="alert_delete").click()
    at = run(at)
    assert rule_id not in rules_table(at)["id"].tolist()


def test_new_alert_events_toast_and_old_ones_do_not(recorded_db):
    conn = database.connect(recorded_db["db"])
    event = dict(rule_id=1, value=2.4, threshold=2.0, rule_name="z", metric="zscore",
                 subject="BTCUSDT/ETHUSDT", comparison="abs>")
    try:
        database.insert_alert_event(conn, ts=1, message="old event", **event)
        at = run(new_app(lookback="15 min"))
        assert not at.toast
        database.insert_alert_event(conn, ts=2, message="z-score beyond 2", **event)
    finally:
        conn.close()
    at = run(at)

    assert [t.value for t in at.toast] == ["🔔 z-score beyond 2"]
    at = run(at)
    assert not at.toast  # shown once


def test_health_tab_shows_collector_counters_and_gaps(recorded_db):
    at = open_tab(run(new_app(lookback="15 min")), "Health")

    assert metric(at, "reconnects").replace(",", "").isdigit()
    assert metric(at, "stored") == "0"  # the feed never connected
    assert any(m.value.startswith("**Trade-id gaps** (0)") for m in at.markdown)
    assert any("collector database" in t and "MB" in t for t in texts(at))
    assert math.isfinite(float(metric(at, "queue max").replace(",", "")))


# --------------------------------------------------------------------------------------
# zoom that survives refreshes
# --------------------------------------------------------------------------------------


def chart_layout(at: AppTest, key: str) -> dict:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert charts, f"no chart {key!r}"
    return json.loads(charts[0].proto.spec)["layout"]


def box_selection(x, y, xref="x", yref="y"):
    """The selection state Streamlit stores when a box is dragged on a chart."""
    return {"selection": {"points": [], "point_indices": [], "lasso": [],
                          "box": [{"xref": xref, "yref": yref, "x": x, "y": y}]}}


def test_zoom_from_selection_reads_the_newest_box():
    state = box_selection([5, 1], [3, 4], yref="y2")
    state["selection"]["box"].insert(0, {"xref": "x", "yref": "y", "x": [0, 9], "y": [0, 9]})

    assert dd.zoom_from_selection(state) == {"xaxis": [1, 5], "yaxis2": [3, 4]}
    assert dd.zoom_from_selection(box_selection([], [])) is None
    assert dd.zoom_from_selection(None) is None


def test_a_dragged_box_zooms_every_time_chart_until_reset(recorded_db):
    # Linked charts (issue 15): a box on one time chart sets the time window of all of them
    # (the other charts of the tab, the live strip, the other tabs), each y-axis fitted to
    # the values inside the window.
    x_range = ["2025-12-15 08:44:00", "2025-12-15 08:44:30"]
    lo, hi = (pd.Timestamp(t, tz="UTC").value // 1_000_000 for t in x_range)
    at = run(new_app(lookback="15 min", window=60))
    assert "range" not in chart_layout(at, "candles_y")["xaxis"]
    assert chart_layout(at, "candles_y")["dragmode"] == "select"

    at.session_state["candles_y"] = box_selection(x_range, [1, 2])
    at = run(at)
    for key in ("candles_y", "candles_x", "overlay", "live_z"):
        assert chart_layout(at, key)["xaxis"]["range"] == x_range, key
    for key, symbol in (("candles_y", "ETHUSDT"), ("candles_x", "BTCUSDT")):
        bars = stored_bars(recorded_db["db"], symbol).loc[lo:hi]
        y_lo, y_hi = chart_layout(at, key)["yaxis"]["range"]
        assert y_lo <= bars["low"].min() < bars["high"].max() <= y_hi
        assert y_hi - y_lo < 1.2 * (bars["high"].max() - bars["low"].min())  # fitted, not auto
    at = open_tab(at, "Spread & z-score")  # another tab keeps the window
    for key in ("spread", "zscore", "beta"):
        assert chart_layout(at, key)["xaxis"]["range"] == x_range, key
        assert chart_layout(at, key)["xaxis"]["showspikes"] is True  # crosshair

    at.button(key="zscore_reset").click()
    at = run(at)
    for key in ("spread", "zscore", "beta", "live_z"):
        assert "range" not in chart_layout(at, key)["xaxis"], key
    at = open_tab(at, "Prices")  # the old box on candles_y is not re-applied
    assert "range" not in chart_layout(at, "candles_y")["xaxis"]


def marker_traces(at: AppTest, key: str) -> dict[str, dict]:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert charts, f"no chart {key!r}"
    return {t["name"]: t for t in json.loads(charts[0].proto.spec)["data"]
            if t.get("mode") == "markers"}


def decoded(values) -> np.ndarray:
    if isinstance(values, dict):
        import base64
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
    return np.asarray(values, dtype=np.float64)


def test_backtest_trades_and_alert_firings_are_marked_on_z_and_price(recorded_db):
    at = run(new_app(lookback="15 min", entry_z=1.0, window=30))
    at = open_tab(at, "Backtest")
    trades = next(f.value for f in at.dataframe if "entry_ts" in f.value.columns)
    assert len(trades) >= 2
    fired_at = int(trades["entry_ts"].iloc[0])
    conn = database.connect(recorded_db["db"])
    try:
        database.insert_alert_event(conn, ts=fired_at + 400, as_of_ts=fired_at,
                                    message="z beyond 1", rule_id=1, value=1.3, threshold=1.0,
                                    rule_name="z", metric="zscore",
                                    subject="ETHUSDT/BTCUSDT", comparison="abs>")
    finally:
        conn.close()

    for tab, key in (("Spread & z-score", "zscore"), ("Prices", "candles_y")):
        at = open_tab(at, tab)
        marks = marker_traces(at, key)
        longs = trades[trades["side"] == "long"]
        shorts = trades[trades["side"] == "short"]
        shown = {name: len(decoded(t["x"])) for name, t in marks.items()}
        assert shown.get("long entry", 0) == len(longs), (key, shown)
        assert shown.get("short entry", 0) == len(shorts), (key, shown)
        assert shown.get("exit", 0) == trades["exit_ts"].notna().sum(), (key, shown)
        assert decoded(marks["alert fired"]["x"]).tolist() == [float(fired_at)], key
        assert any("long entry" in c.value and "alert" in c.value for c in at.caption), key


def test_markers_run_their_own_backtest_before_the_backtest_tab_opens(recorded_db):
    at = open_tab(run(new_app(lookback="15 min", entry_z=1.0, window=30)), "Spread & z-score")
    marks = marker_traces(at, "zscore")
    at = open_tab(at, "Backtest")  # same settings: the trades the markers showed
    trades = next(f.value for f in at.dataframe if "entry_ts" in f.value.columns)
    assert len(trades) >= 2
    for side in ("long", "short"):
        entries = trades.loc[trades["side"] == side, "entry_ts"].astype(float).tolist()
        marked = marks.get(f"{side} entry")  # no trace for a side without trades
        assert (decoded(marked["x"]).tolist() if marked else []) == entries, side


def test_markers_backtest_runs_again_once_older_than_30_seconds(recorded_db, monkeypatch):
    clock = [1_765_800_000_000]  # 2025-12-15 12:00:00 UTC
    monkeypatch.setattr(dd, "now_ms", lambda: clock[0])

    def run_at() -> str:
        captions = [c.value for c in at.caption if c.value.startswith("markers:")]
        assert len(captions) == 1, [c.value for c in at.caption]
        return re.search(r"run at (\d\d:\d\d:\d\d)", captions[0]).group(1)

    at = open_tab(run(new_app(lookback="15 min", entry_z=1.0, window=30)), "Spread & z-score")
    assert run_at() == "12:00:00"
    clock[0] += 30_000  # not older than 30 s: the trades held are marked, no new run
    at = run(at)
    assert run_at() == "12:00:00"
    clock[0] += 1_000
    at = run(at)
    assert run_at() == "12:00:31"


def test_naive_upload_times_follow_the_chosen_zone(app_env, media):
    path = DATA / "upload_spot_bars_1s_1m_5m_IST_naive_first3000.csv"
    at = open_tab(run(new_app()), "Data")
    at.selectbox(key="naive_tz").set_value("Asia/Kolkata")
    at.selectbox(key="upload_timeframe").set_value("1m")
    at.get("file_uploader")[0].upload(path.name, path.read_bytes(), "text/csv")
    at = run(at)
    at.button(key="store_ohlc").click()
    at = open_tab(run(at), "Data")

    bars = pd.read_csv(io.BytesIO(download(at, media, "download_bars")))
    # The file's first 1m bar is 2025-12-16 16:39 in India (UTC+05:30) = 11:09 UTC, by hand.
    assert bars["ts"].min() == pd.Timestamp("2025-12-16 11:09", tz="UTC").value // 1_000_000
    assert bars["time"].min() == "2025-12-16T11:09:00.000+00:00"


def test_lookback_all_is_offered_for_uploads_only(app_env):
    at = run(new_app())
    assert "all" not in at.selectbox(key="lookback").options


# --------------------------------------------------------------------------------------
# dashboard_data: the page's loading helpers and words
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeframe", ["1s", "10s"])
def test_bar_store_top_ups_equal_a_full_read(tmp_path, timeframe):
    parsed = uploads.parse_tick_file(TRADES_FILE)
    records = uploads.to_trade_tuples(parsed.trades, received_ms=1)
    records.sort(key=lambda r: r[2])
    path = str(tmp_path / "bars.db")
    conn = database.connect(path)
    store = dd.BarStore()
    lookback = 60_000
    # Cut inside a second (odd trade indices) so that the held last bar must grow.
    cuts = [0, len(records) // 3 + 1, 2 * len(records) // 3 + 1, len(records)]
    try:
        for start, stop in zip(cuts, cuts[1:]):
            database.import_ticks(conn, records[start:stop])
            anchor = database.latest_bar_ts(conn, "ETHUSDT")
            result = store.bars(path, "ETHUSDT", timeframe, lookback, anchor)
            expected = database.read_bars(conn, "ETHUSDT", anchor - lookback, None, timeframe)
            pd.testing.assert_frame_equal(result, expected)
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["ols", "kalman"])
def test_the_live_pair_view_is_topped_up_not_read_again(tmp_path, monkeypatch, method):
    """The page's pair view loads from a history start that moves with every new bar (the
    lookback plus the method's warm-up): the store must still top up what it holds rather
    than read the whole window on every refresh (it did: 3x slower fragment reruns)."""
    parsed = uploads.parse_tick_file(TRADES_FILE)
    records = sorted(uploads.to_trade_tuples(parsed.trades, received_ms=1), key=lambda r: r[2])
    path = str(tmp_path / "bars.db")
    source = dd.DataSource("live", path)
    store = dd.BarStore()
    reads = []  # (symbol, first bar asked) of every read the store makes
    real_read_bars = database.read_bars
    monkeypatch.setattr(database, "read_bars",
                        lambda conn, symbol, start_ms=None, *a, **k: reads.append(
                            (symbol, start_ms)) or real_read_bars(conn, symbol, start_ms,
                                                                  *a, **k))
    conn = database.connect(path)
    cuts = [0, len(records) // 3 + 1, 2 * len(records) // 3 + 1, len(records)]
    previous_anchor = None
    try:
        for start, stop in zip(cuts, cuts[1:]):
            database.import_ticks(conn, records[start:stop])
            anchor = database.latest_bar_ts(conn, "ETHUSDT")
            args = (source, "ETHUSDT", "BTCUSDT", "1s", 60_000, anchor, method, 20, True)
            reads.clear()
            view = dd.load_pair_view(*args, store=store)
            if previous_anchor is not None:  # a refresh reads only from the bars held last
                assert len(reads) == 2 and all(first is not None and first >= previous_anchor
                                               - 1000 for _, first in reads), reads
            expected = dd.load_pair_view(*args)  # no store: reads the window whole
            pd.testing.assert_frame_equal(view.signals.frame, expected.signals.frame)
            previous_anchor = anchor
    finally:
        conn.close()


def test_bar_store_reads_again_when_rest_stores_the_past(tmp_path):
    """A top-up reads only from the newest bar held: klines REST stores before it are seen
    because ``database.history_version`` changed, and the window is read whole again."""
    parsed = uploads.parse_tick_file(TRADES_FILE)
    path = str(tmp_path / "bars.db")
    conn = database.connect(path)
    store = dd.BarStore()
    try:
        database.import_ticks(conn, uploads.to_trade_tuples(parsed.trades, received_ms=1))
        anchor = database.latest_bar_ts(conn, "ETHUSDT")
        before = store.bars(path, "ETHUSDT", "1min", None, anchor)
        first = int(before.index[0])
        past = first - 10 * 60_000  # a minute ten minutes before the first trade
        database.save_klines(conn, "ETHUSDT", [(past, 3000.0, 3001.0, 2999.0, 3000.5, 2.0,
                                                past + 59_999, 6001.0, 7, 1.0)])
        after = store.bars(path, "ETHUSDT", "1min", None, anchor)
        pd.testing.assert_frame_equal(after, database.read_bars(conn, "ETHUSDT", None, None,
                                                                "1min"))
        assert int(after.index[0]) == past and after["close"].iloc[0] == 3000.5
    finally:
        conn.close()


T0_MS = 1_765_800_000_000  # 2025-12-15 12:00:00 UTC, a whole second


def test_data_version_changes_with_a_trade_and_with_rest_history(tmp_path):
    path = str(tmp_path / "live.db")
    source = dd.DataSource("live", path)
    assert dd.data_version(source, ("ETHUSDT", "BTCUSDT")) == ((None, None), 0)  # no file
    conn = database.connect(path)
    try:
        database.import_ticks(conn, [("ETHUSDT", 1, T0_MS + 100, 3000.0, 0.1, 0, 0)])
        first = dd.data_version(source, ("ETHUSDT", "BTCUSDT"))
        assert first == (((T0_MS, 1), None), 0)
        database.import_ticks(conn, [("ETHUSDT", 2, T0_MS + 900, 3001.0, 0.1, 0, 0)])
        assert dd.data_version(source, ("ETHUSDT", "BTCUSDT")) == (((T0_MS, 2), None), 0)
        past = T0_MS - 3_600_000  # REST stores an hour-old minute: no newer bar, new key
        database.save_klines(conn, "ETHUSDT", [(past, 1, 1, 1, 1, 1, past + 59_999, 1, 1, 1)])
        assert dd.data_version(source, ("ETHUSDT", "BTCUSDT")) == (((T0_MS, 2), None), 1)
    finally:
        conn.close()


def test_database_ready_needs_the_file_and_its_schema(tmp_path):
    path = tmp_path / "live.db"
    assert not dd.database_ready(str(path))  # no file yet
    path.write_bytes(b"")  # a file without the schema (SQLite reads it as empty)
    assert not dd.database_ready(str(path))
    path.unlink()
    database.connect(str(path)).close()
    assert dd.database_ready(str(path)) and dd.database_ready(str(path))  # remembered
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert not dd.database_ready(str(path))  # deleted: not ready, remembered or not


def test_warming_message_reads_like_the_issue():
    assert dd.warming_message(60, 14, "1s", 1.0) == \
        "needs 60 bars, has 14 — about 46 s more at 1s bars"
    assert dd.warming_message(120, 20, "1m", 60.0) == \
        "needs 120 bars, has 20 — about 100 min more at 1m bars"


def test_feed_status_names_every_state():
    fallback = dict(state="connected", feed="demo", requested_feed="auto", builtin_market=True,
                    fallback_reason="connect failed: refused", last_close_reason="")
    status = dd.feed_status(fallback)
    assert status.label == dd.BUILTIN_MARKET_LABEL and status.builtin
    assert "connect failed: refused" in status.detail
    live = dict(state="connected", feed="binance-futures", requested_feed="binance-futures",
                builtin_market=False)
    assert dd.feed_status(live).label == "live — Binance futures"
    down = dict(live, state="reconnecting", last_close_reason="no data for 30 s")
    assert dd.feed_status(down).label == "reconnecting — Binance futures"
    assert dd.feed_status(down).detail == "no data for 30 s"


def test_silent_symbols_are_named_after_ten_seconds():
    now = 1_000_000
    health = {"started_ms": now - 60_000, "symbols": {
        "BTCUSDT": {"last_trade_ms": now - 500, "last_trade_age_s": 0.5},
        "ETHUSDT": {"last_trade_ms": now - 12_000, "last_trade_age_s": 12.0},
        "XYZUSDT": {"last_trade_ms": None, "last_trade_age_s": None},
        "SOLUSDT": {"last_trade_ms": None, "last_trade_age_s": None}}}
    since = {"SOLUSDT": now - 3_000}  # subscribed 3 s ago: not yet suspicious

    assert dd.silent_symbols(health, since, now) == [("ETHUSDT", 12.0), ("XYZUSDT", 60.0)]


def test_a_chart_zoomed_into_the_past_is_not_redrawn_by_new_bars(app_env):
    # A chart whose figure changes is remounted by Streamlit, which cancels a drag in
    # progress (Plotly's "_hoverlayer" errors): while the window lies in the past, new
    # bars do not change what is shown, so the same figure is sent again.
    parsed = uploads.parse_tick_file(TRADES_FILE, filename=TRADES_FILE.name)
    records = sorted(uploads.to_trade_tuples(parsed.trades, received_ms=1), key=lambda r: r[2])
    conn = database.connect(app_env["db"])
    try:
        database.import_ticks(conn, records[:3000])
        at = run(new_app(lookback="15 min", window=60))
        at.session_state["candles_y"] = box_selection(
            ["2025-12-15 08:44:00", "2025-12-15 08:44:20"], [1, 2])
        at = run(at)
        zoomed = {key: chart_spec_id(at, key) for key in ("candles_y", "overlay")}
        database.import_ticks(conn, records[3000:])
    finally:
        conn.close()
    at = run(at)  # a refresh with new bars after the window
    assert {key: chart_spec_id(at, key) for key in zoomed} == zoomed
    at.button(key="candles_y_reset").click()
    at = run(at)
    assert chart_spec_id(at, "candles_y") != zoomed["candles_y"]  # live again
    assert "range" not in chart_layout(at, "candles_y")["xaxis"]


def chart_spec_id(at: AppTest, key: str) -> str:
    """The element id Streamlit derives from the figure: it changes when the chart must be
    remounted."""
    return next(c.proto.id for c in at.get("plotly_chart") if c.proto.id.endswith(key))


def test_the_strip_at_minute_bars_shows_the_whole_views_numbers(app_env):
    # The strip at 1m bars shows the forming bar, the tabs the closed ones; mistake caught:
    # the strip's numbers from another view than the one alerts and exports compute.
    import market

    start = (int(time.time() * 1000) // 60_000 - 5 * 60) * 60_000  # 5 hours, ending now
    simulated = market.SimulatedMarket(("BTCUSDT", "ETHUSDT"), seed=4, start_ms=start, speed=0,
                                       rates={"BTCUSDT": 0.5, "ETHUSDT": 0.5})
    trades = simulated.generate(5 * 3600 - 30)
    trades = trades[trades["status"] == "MARKET"]
    columns = ["symbol", "trade_id", "ts", "price", "qty", "is_buyer_maker"]
    conn = database.connect(app_env["db"])
    try:
        database.import_ticks(conn, uploads.to_trade_tuples(
            trades[columns].astype({"symbol": str}), received_ms=1))
    finally:
        conn.close()
    source = dd.DataSource("live", app_env["db"])
    for method in ("OLS", "Kalman"):
        at = run(new_app(timeframe="1m", lookback="6 h", method=method))
        latest = dd.latest_bar_times(source, ("ETHUSDT", "BTCUSDT"))
        whole = dd.load_pair_view(source, "ETHUSDT", "BTCUSDT", "1min", 6 * 3_600_000,
                                  max(latest), dd.METHODS[method], 60, True)
        values = dd.live_values(whole)
        assert math.isfinite(values.z), method
        assert metric(at, "z-score") == dd.format_number(values.z, ".2f"), method
        assert metric(at, "β") == dd.format_number(values.beta, ".4f"), method
        assert metric(at, "spread") == dd.format_spread(values.spread, True), method
        assert metric(at, "correlation") == dd.format_number(values.correlation, ".3f"), method
