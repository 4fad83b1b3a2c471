"""Price charts (issue 14): candles, line or area; a log price axis; range buttons. Figure
specs checked directly, and the Prices tab's switches through AppTest."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import dashboard_data as dd
import database
import visualizations as viz
from page_helpers import closed_feed_env, page, run, stop_page_services

T0 = 1_765_000_000_000


def bars(n: int = 600) -> pd.DataFrame:
    """1 s bars of a BTC-like price moving ~1e-4 per bar."""
    rng = np.random.default_rng(5)
    close = 87_000 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) + 1,
                         "low": np.minimum(open_, close) - 1, "close": close,
                         "volume": rng.uniform(0.1, 1, n)},
                        index=pd.Index(T0 + 1000 * np.arange(n), name="ts"))


def test_candles_by_default_with_range_buttons():
    fig = viz.candlestick_figure(bars(), "BTCUSDT")
    assert fig.data[0].type == "candlestick"
    buttons = fig.layout.xaxis.rangeselector.buttons
    assert [b.label for b in buttons] == ["15m", "1h", "6h", "24h", "all"]
    assert (buttons[0].count, buttons[0].step) == (15, "minute")
    assert (buttons[3].count, buttons[3].step) == (24, "hour")
    assert fig.layout.yaxis.type in (None, "linear", "-")


@pytest.mark.parametrize("style", ["line", "area"])
def test_line_and_area_draw_the_closes(style):
    data = bars()
    fig = viz.candlestick_figure(data, "BTCUSDT", style=style)
    price = fig.data[0]
    assert price.type == "scatter" and price.mode == "lines"
    assert np.asarray(price.y) == pytest.approx(data["close"].to_numpy())
    assert (price.fill == "tozeroy") == (style == "area")
    if style == "area":  # the area's floor sits just under the lowest close, not at zero
        low, high = fig.layout.yaxis.range
        assert data["close"].min() - low < 0.1 * (high - low) and low > 0


def test_log_price_axis():
    fig = viz.candlestick_figure(bars(), "BTCUSDT", log_y=True)
    assert fig.layout.yaxis.type == "log"
    area = viz.candlestick_figure(bars(), "BTCUSDT", style="area", log_y=True)
    low, high = area.layout.yaxis.range  # log10 units on a log axis
    assert 10 ** low < bars()["close"].min() < 10 ** high
    assert math.isclose(10 ** high, bars()["close"].max(), rel_tol=0.01)


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="style"):
        viz.candlestick_figure(bars(), "BTCUSDT", style="renko")


@pytest.fixture
def prices_page(tmp_path, monkeypatch):
    path = closed_feed_env(tmp_path, monkeypatch)
    now = dd.now_ms() // 1000 * 1000
    rows = [(symbol, k + 1, now - 120_000 + k * 1000 + offset, price + k * 0.01, 0.01, 0, 0)
            for k in range(120)
            for symbol, price, offset in (("BTCUSDT", 87_000.0, 0), ("ETHUSDT", 3_000.0, 3))]
    with dd.writing(path) as conn:
        database.import_ticks(conn, rows)
    yield path
    stop_page_services()


def chart_spec(at, key: str) -> dict:
    chart = next(c for c in at.get("plotly_chart") if c.proto.id.endswith(key))
    return json.loads(chart.proto.spec)


def test_prices_tab_switches_chart_type_and_log_axis(prices_page):
    at = page(tab="Prices")
    assert chart_spec(at, "candles_y")["data"][0]["type"] == "candlestick"
    at.radio(key="chart_style_y").set_value("area")
    at.toggle(key="chart_log_x").set_value(True)
    at = run(at)
    y_spec, x_spec = chart_spec(at, "candles_y"), chart_spec(at, "candles_x")
    assert y_spec["data"][0]["type"] == "scatter" and y_spec["data"][0]["fill"] == "tozeroy"
    assert y_spec["layout"]["yaxis"].get("type") != "log"
    assert x_spec["data"][0]["type"] == "candlestick"
    assert x_spec["layout"]["yaxis"]["type"] == "log"
    labels = [b["label"] for b in y_spec["layout"]["xaxis"]["rangeselector"]["buttons"]]
    assert labels == ["15m", "1h", "6h", "24h", "all"]
