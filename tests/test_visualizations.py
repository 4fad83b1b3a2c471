"""Tests for visualizations.py: figure contracts, downsampling, time zones, empty and NaN data.

Figures are inspected through their serialised form (``to_plotly_json`` / ``to_json``), which
is what Streamlit sends to the browser. Plotly serialises numpy arrays as base64 typed arrays
({"dtype": "f8", "bdata": ...}); ``decode`` turns them back into numpy arrays.
"""

import base64
import json
import math
import re
import time

import numpy as np
import pandas as pd
import pytest

import visualizations as viz

START_MS = 1_741_400_000_000  # 2025-03-08 02:13:20 UTC
HOUR_MS = 3_600_000
ISO_DATE = re.compile(r'"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}')


# --------------------------------------------------------------------------------------
# factories and helpers
# --------------------------------------------------------------------------------------

def make_bars(n, *, seed=0, start=START_MS, step_ms=1_000, drop_every=None):
    """Random-walk OHLCV bars indexed by int64 ms; every ``drop_every``-th bar absent."""
    rng = np.random.default_rng(seed)
    ts = start + np.arange(n, dtype=np.int64) * step_ms
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-4, n)))
    open_ = np.concatenate(([close[0]], close[:-1])) * (1 + rng.normal(0.0, 2e-5, n))
    high = np.maximum(open_, close) * (1 + rng.exponential(1e-4, n))
    low = np.minimum(open_, close) * (1 - rng.exponential(1e-4, n))
    bars = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": rng.exponential(2.0, n)},
        index=pd.Index(ts, name="ts"),
    )
    if drop_every:
        bars = bars[np.arange(n) % drop_every != 1]
    return bars


def make_series(n, *, seed=0, start=START_MS, step_ms=1_000, nan_slices=()):
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(0.0, 0.1, n))
    for piece in nan_slices:
        values[piece] = np.nan
    return pd.Series(values, index=pd.Index(start + np.arange(n, dtype=np.int64) * step_ms, name="ts"))


def decode(value):
    """A trace array from ``to_plotly_json()``/``to_json()`` as a numpy array."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value)


def trace_json(fig, i=0):
    return fig.to_plotly_json()["data"][i]


def annotation_texts(fig):
    return [a.text for a in fig.layout.annotations]


def make_inputs(seed=0, n=600):
    """Inputs of every time-axis builder, length n (different data for a different seed)."""
    s = make_series(n, seed=seed)
    return dict(bars_y=make_bars(n, seed=seed), bars_x=make_bars(n, seed=seed + 100), s=s,
                equity=pd.Series(10_000 * np.exp(s.to_numpy() / 50), index=s.index))


def build_all_time_figures(seed=0, n=600, inputs=None, **options):
    """Every time-axis builder on ``inputs`` (default ``make_inputs(seed, n)``)."""
    inputs = inputs or make_inputs(seed, n)
    bars_y, bars_x, s, equity = inputs["bars_y"], inputs["bars_x"], inputs["s"], inputs["equity"]
    return {
        "candles": viz.candlestick_figure(bars_y, "ETHUSDT", **options),
        "overlay": viz.normalised_overlay_figure(bars_y, bars_x, "ETHUSDT", "BTCUSDT", **options),
        "spread": viz.spread_figure(s, s * 0.5, s * 0.5 + 1, s * 0.5 - 1, **options),
        "zscore": viz.zscore_figure(s, 2.0, 0.5, **options),
        "beta": viz.beta_figure(s, s * 1.1, **options),
        "correlation": viz.correlation_figure(np.tanh(s), **options),
        "equity": viz.equity_figure(equity, **options),
    }


TIME_BUILDERS = ["candles", "overlay", "spread", "zscore", "beta", "correlation", "equity"]


@pytest.fixture(autouse=True)
def validated_figures(monkeypatch):
    """Every figure built in this module goes through Plotly's property checks (the page
    skips them, ``viz.VALIDATE_FIGURES``): a misspelt or invalid property fails here."""
    monkeypatch.setattr(viz, "VALIDATE_FIGURES", True)


def build_every_figure(seed=0):
    """Every builder, in every style and with markers, crosshair and light colours."""
    inputs = make_inputs(seed, 1_500)  # more bars than candles: aggregated candles too
    figures = build_all_time_figures(inputs=inputs, tz="Europe/Berlin")
    for style in viz.CHART_STYLES:
        for log_y in (False, True):
            figures[f"{style}|{log_y}"] = viz.candlestick_figure(
                inputs["bars_y"], "ETHUSDT", style=style, log_y=log_y)
    marked = viz.zscore_figure(inputs["s"], 2.0, 0.5)
    viz.add_markers(marked, inputs["s"].index[[10, 500]], inputs["s"], "long entry",
                    hover=["a", "b"])
    figures["marked"] = viz.apply_colors(marked, "light")
    figures["heatmap"] = viz.heatmap_figure(
        pd.DataFrame([[1.0, np.nan], [0.3, 1.0]], index=["A", "B"], columns=["A", "B"]),
        "corr", zmin=-1, zmax=1)
    figures["empty"] = viz.empty_figure("nothing yet")
    figures["zoomed"] = viz.show_time_range(viz.candlestick_figure(inputs["bars_y"], "E"),
                                            [START_MS + 100_000.0, START_MS + 400_000.0])
    return figures


def test_figures_built_without_validation_serialise_exactly_as_validated_ones(monkeypatch):
    # as parsed JSON: the order of keys inside a property may differ, nothing else
    validated = {name: json.loads(fig.to_json()) for name, fig in build_every_figure().items()}
    monkeypatch.setattr(viz, "VALIDATE_FIGURES", False)
    unvalidated = build_every_figure()
    assert not unvalidated["candles"]._validate  # the page's path: no property checks
    assert set(unvalidated) == set(validated)
    for name, fig in unvalidated.items():
        assert json.loads(fig.to_json()) == validated[name], name


def test_validation_is_on_in_these_tests_and_catches_a_bad_property():
    with pytest.raises(ValueError, match="colour"):
        viz.go.Scatter(_validate=viz.VALIDATE_FIGURES, colour="red")


def test_recolouring_equals_plotlys_axis_updates():
    fig = viz.candlestick_figure(make_bars(50), "BTCUSDT")
    expected = viz.go.Figure(fig)
    expected.update_layout(template=viz._theme_layout("light", "x")["template"])
    expected.update_xaxes(**viz._axis_style("light"))
    expected.update_yaxes(**viz._axis_style("light"))
    assert json.loads(viz.apply_colors(fig, "light").to_json()) == \
        json.loads(expected.to_json())


# --------------------------------------------------------------------------------------
# figure contract: float epoch-ms x, date axis, no ISO strings, constant uirevision
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TIME_BUILDERS)
def test_traces_carry_float_epoch_ms_x_on_a_date_axis(name):
    fig = build_all_time_figures()[name]
    ts = make_bars(600).index.to_numpy(dtype=np.int64)

    assert fig.layout.xaxis.type == "date"
    assert fig.layout.xaxis.title.text == "time (UTC)"
    assert len(fig.data) >= 1
    for trace in fig.to_plotly_json()["data"]:
        assert isinstance(trace["x"], dict) and trace["x"]["dtype"] == "f8"  # a typed float array
        x = decode(trace["x"])
        if trace.get("line", {}).get("shape") == "hv":  # volume columns: opens + the last close
            x = x[:-1]
        # 600 points < max_points: nothing is downsampled, x is exactly the input ms in UTC
        np.testing.assert_array_equal(x, ts[-x.size:].astype(np.float64))
    assert not ISO_DATE.search(fig.to_json())


@pytest.mark.parametrize("name", TIME_BUILDERS)
def test_uirevision_is_constant_across_calls_with_different_data(name):
    first = build_all_time_figures(seed=1, n=300)[name]
    second = build_all_time_figures(seed=2, n=900)[name]

    assert first.layout.uirevision == second.layout.uirevision
    assert first.layout.uirevision  # set, not None
    assert build_all_time_figures(seed=3, uirevision="pair-ETH-BTC-1s")[name].layout.uirevision \
        == "pair-ETH-BTC-1s"


def test_uirevision_is_shared_by_a_chart_and_its_warming_up_placeholder():
    warming_up = viz.zscore_figure(make_series(50) * np.nan, 2.0, 0.5, empty_message="needs 60 bars, has 14")
    ready = viz.zscore_figure(make_series(100), 2.0, 0.5)

    assert warming_up.layout.uirevision == ready.layout.uirevision == "zscore"


def test_heatmap_uirevision_is_constant_across_calls_with_different_data():
    rng = np.random.default_rng(0)
    first = viz.heatmap_figure(pd.DataFrame(rng.uniform(-1, 1, (2, 2)), index=["A", "B"], columns=["A", "B"]))
    second = viz.heatmap_figure(pd.DataFrame(rng.uniform(-1, 1, (3, 3)), index=list("ABC"), columns=list("ABC")))

    assert first.layout.uirevision == second.layout.uirevision == "heatmap"


@pytest.mark.parametrize("theme", ["dark", "light"])
def test_theme_sets_one_consistent_look(theme):
    figs = build_all_time_figures(theme=theme)
    backgrounds = {fig.layout.template.layout.paper_bgcolor for fig in figs.values()}

    assert len(backgrounds) == 1
    for fig in figs.values():
        assert fig.layout.hovermode == "x unified"
        assert fig.layout.dragmode == "zoom"
        assert fig.layout.legend.orientation == "h" and fig.layout.legend.y >= 1.0
        assert fig.layout.margin.t <= 40 and fig.layout.margin.l <= 60
        assert fig.layout.xaxis.rangeslider.visible is False
        assert not any(t.type == "scattergl" for t in fig.data)  # SVG only: WebGL contexts are scarce


def test_dark_and_light_themes_differ_and_unknown_theme_is_rejected():
    dark = viz.empty_figure("x", theme="dark").layout.template.layout.paper_bgcolor
    light = viz.empty_figure("x", theme="light").layout.template.layout.paper_bgcolor

    assert dark != light
    with pytest.raises(ValueError, match=r"theme \('blue'\)"):
        viz.zscore_figure(make_series(10), 2.0, 0.5, theme="blue")


def test_apply_theme_themes_an_external_figure_in_place():
    import plotly.graph_objects as go

    fig = go.Figure(go.Candlestick(x=[1.0, 2.0], open=[1, 2], high=[2, 3], low=[0, 1], close=[2, 1]))
    result = viz.apply_theme(fig, theme="light", uirevision="mine")

    assert result is fig
    assert fig.layout.uirevision == "mine"
    assert fig.layout.hovermode == "x unified"
    assert fig.layout.xaxis.rangeslider.visible is False
    with pytest.raises(ValueError, match="uirevision"):
        viz.apply_theme(fig, uirevision="")


# --------------------------------------------------------------------------------------
# LTTB and min/max downsampling
# --------------------------------------------------------------------------------------

def reference_lttb(x, y, n_out):
    """Straight transcription of Steinarsson's (2013) LTTB loop, for comparison."""
    n = len(x)
    every = (n - 2) / (n_out - 2)
    a, kept = 0, [0]
    for i in range(n_out - 2):
        avg_start = int(math.floor((i + 1) * every)) + 1
        avg_end = min(int(math.floor((i + 2) * every)) + 1, n)
        cx, cy = np.mean(x[avg_start:avg_end]), np.mean(y[avg_start:avg_end])
        lo, hi = int(math.floor(i * every)) + 1, int(math.floor((i + 1) * every)) + 1
        areas = [abs((x[a] - cx) * (y[b] - y[a]) - (x[a] - x[b]) * (cy - y[a])) for b in range(lo, hi)]
        a = lo + int(np.argmax(areas))
        kept.append(a)
    kept.append(n - 1)
    return np.array(kept)


def test_lttb_matches_a_hand_computed_selection():
    x = np.arange(8, dtype=float)
    y = np.array([0.0, 1.0, 5.0, 2.0, 3.0, 9.0, 1.0, 0.0])
    # Hand count, n=8, n_out=4, every=(8-2)/(4-2)=3:
    # bucket 1 = indices 1..3, C = mean of indices 4..6 = (5, 13/3), A = (0, 0):
    #   2*area(B) = |(0-5)(By-0) - (0-Bx)(13/3-0)| = |-5By + 13Bx/3|
    #   -> idx1: 0.667, idx2: 16.33, idx3: 3.0 -> keep 2
    # bucket 2 = indices 4..6, C = last point (7, 0), A = (2, 5):
    #   2*area(B) = |(2-7)(By-5) - (2-Bx)(0-5)| = 5|7 - Bx - By|
    #   -> idx4: 0, idx5: 35, idx6: 0 -> keep 5
    expected = np.array([0, 2, 5, 7])

    result = viz.lttb(x, y, 4)

    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("n, n_out", [(50, 7), (1_001, 100), (5_000, 333), (20_000, 2_000)])
@pytest.mark.parametrize("seed", [0, 1])
def test_lttb_equals_the_reference_loop(n, n_out, seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1e6, n))
    y = np.cumsum(rng.normal(size=n))

    result = viz.lttb(x, y, n_out)

    np.testing.assert_array_equal(result, reference_lttb(x, y, n_out))
    assert result[0] == 0 and result[-1] == n - 1


def test_lttb_passes_small_inputs_through_and_validates_arguments():
    x, y = np.arange(5.0), np.array([1.0, 3.0, 2.0, 5.0, 4.0])

    np.testing.assert_array_equal(viz.lttb(x, y, 5), np.arange(5))
    np.testing.assert_array_equal(viz.lttb(x, y, 50), np.arange(5))
    with pytest.raises(ValueError, match=r"n_out \(2\)"):
        viz.lttb(x, y, 2)
    with pytest.raises(ValueError, match="finite"):
        viz.lttb(x, np.array([1.0, np.nan, 2.0, 3.0, 4.0]), 3)
    with pytest.raises(ValueError, match="sorted"):
        viz.lttb(x[::-1], y, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_downsample_minmax_keeps_ends_and_every_buckets_extremes(seed):
    rng = np.random.default_rng(seed)
    n, n_out = 10_000, 202
    x = np.arange(n, dtype=float)
    y = np.cumsum(rng.normal(size=n))

    kept = viz.downsample_minmax(x, y, n_out)

    assert kept.size <= n_out
    assert kept[0] == 0 and kept[-1] == n - 1
    assert np.argmin(y) in kept and np.argmax(y) in kept
    assert np.all(np.diff(kept) > 0)
    # every bucket's min and max (bucket = LTTB split of the interior into 100) is kept
    edges = np.floor(np.arange(101) * (n - 2) / 100).astype(int) + 1
    for lo, hi in zip(edges[:-1], edges[1:]):
        assert lo + np.argmin(y[lo:hi]) in kept and lo + np.argmax(y[lo:hi]) in kept


@pytest.mark.parametrize("n, max_points", [(100_000, 2_000), (30_000, 500), (2_001, 2_000), (11, 10)])
@pytest.mark.parametrize("seed", [0, 1])
def test_downsample_line_caps_points_and_keeps_ends_and_extremes(n, max_points, seed):
    rng = np.random.default_rng(seed)
    x = START_MS + np.arange(n, dtype=float) * 1000
    y = np.cumsum(rng.normal(size=n))
    y[rng.integers(1, n - 1)] += 50.0  # a one-bar spike LTTB alone might smooth away

    kept = viz.downsample_line(x, y, max_points)

    assert kept.size <= max_points
    assert kept[0] == 0 and kept[-1] == n - 1
    assert np.argmax(y) in kept and np.argmin(y) in kept
    assert np.all(np.diff(kept) > 0)  # sorted, no duplicates: kept values are input values


def test_downsample_line_passes_small_inputs_through_unchanged():
    y = np.array([1.0, np.nan, 3.0, 2.0])

    np.testing.assert_array_equal(viz.downsample_line(np.arange(4.0), y, 10), np.arange(4))


@pytest.mark.parametrize("pattern", ["warm-up", "gaps", "every-third", "trailing"])
def test_downsample_line_keeps_nan_gaps_as_gaps_within_the_cap(pattern):
    n, max_points = 20_000, 400
    rng = np.random.default_rng(7)
    x = np.arange(n, dtype=float)
    y = np.cumsum(rng.normal(size=n))
    if pattern == "warm-up":
        y[:600] = np.nan
    elif pattern == "gaps":
        for start in range(1_000, n, 3_000):
            y[start:start + 200] = np.nan
    elif pattern == "every-third":  # thousands of NaN runs: the cap must still hold
        y[::3] = np.nan
    else:
        y[-500:] = np.nan

    kept = viz.downsample_line(x, y, max_points)
    values = y[kept]

    assert kept.size <= max_points
    assert kept[0] == 0 and kept[-1] == n - 1
    # each NaN run of the input that separates two kept finite points leaves a NaN between them
    finite_kept = kept[np.isfinite(values)]
    for left, right in zip(finite_kept[:-1], finite_kept[1:]):
        if np.isnan(y[left:right]).any():
            between = kept[(kept > left) & (kept < right)]
            assert np.isnan(y[between]).any()


def test_downsample_line_of_100k_points_takes_a_few_ms():
    rng = np.random.default_rng(0)
    x = np.arange(100_000, dtype=float)
    y = np.cumsum(rng.normal(size=100_000))
    viz.downsample_line(x, y, 2_000)  # warm-up

    started = time.perf_counter()
    kept = viz.downsample_line(x, y, 2_000)
    elapsed_ms = (time.perf_counter() - started) * 1e3

    print(f"\ndownsample_line 100k -> {kept.size} points: {elapsed_ms:.1f} ms")
    assert kept.size <= 2_000


def test_downsample_line_rejects_too_small_max_points():
    with pytest.raises(ValueError, match=r"max_points \(5\)"):
        viz.downsample_line(np.arange(20.0), np.arange(20.0), 5)


# --------------------------------------------------------------------------------------
# candle aggregation
# --------------------------------------------------------------------------------------

def pandas_ohlc_reference(bars, bucket_ms):
    """Independent reference: pandas resample on epoch-aligned buckets, empty buckets dropped."""
    frame = bars.set_axis(pd.to_datetime(bars.index.to_numpy(), unit="ms"))
    agg = frame.resample(f"{bucket_ms}ms", origin="epoch").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    agg = agg[agg["open"].notna()]
    agg.index = pd.Index(agg.index.as_unit("ms").asi8, name="ts")
    return agg


@pytest.mark.parametrize("bucket_ms", [5_000, 60_000, 7_000])
def test_aggregate_ohlc_matches_pandas_resample(bucket_ms):
    bars = make_bars(3_000, seed=3, drop_every=7)  # absent bars, like quiet seconds

    result = viz.aggregate_ohlc(bars, bucket_ms)
    expected = pandas_ohlc_reference(bars, bucket_ms)

    pd.testing.assert_frame_equal(result[expected.columns], expected, check_exact=False, rtol=1e-12)


def test_aggregate_ohlc_sums_volume_columns_and_recomputes_vwap():
    ts = START_MS - START_MS % 10_000 + np.array([0, 1_000, 2_000, 10_000], dtype=np.int64)
    bars = pd.DataFrame(
        {"open": [10.0, 11.0, 12.0, 20.0], "high": [11.0, 13.0, 12.5, 21.0],
         "low": [9.0, 10.5, 11.5, 19.0], "close": [11.0, 12.0, 12.2, 20.5],
         "volume": [1.0, 2.0, 3.0, 4.0], "buy_volume": [np.nan, np.nan, np.nan, 1.0],
         "trades": [1, 2, 3, 4], "notional": [10.0, 24.0, 36.0, 82.0]},
        index=pd.Index(ts, name="ts"),
    )

    result = viz.aggregate_ohlc(bars, 10_000)

    # hand count: bucket 1 = first three bars, bucket 2 = the last bar
    np.testing.assert_array_equal(result.index, [ts[0], ts[3]])
    np.testing.assert_allclose(result["open"], [10.0, 20.0])
    np.testing.assert_allclose(result["high"], [13.0, 21.0])
    np.testing.assert_allclose(result["low"], [9.0, 19.0])
    np.testing.assert_allclose(result["close"], [12.2, 20.5])
    np.testing.assert_allclose(result["volume"], [6.0, 4.0])
    np.testing.assert_allclose(result["trades"], [6, 4])
    assert np.isnan(result["buy_volume"].iloc[0]) and result["buy_volume"].iloc[1] == 1.0
    np.testing.assert_allclose(result["vwap"], [70.0 / 6.0, 82.0 / 4.0])


def test_choose_bucket_ms_picks_a_nice_width():
    one_day_of_1s_bars = START_MS + np.arange(86_400, dtype=np.int64) * 1_000

    # needed width > 86_399 s / 1_999 = 43.2 s; first nice multiple of 1 s above it is 1 min
    assert viz.choose_bucket_ms(one_day_of_1s_bars, 2_000) == 60_000
    assert viz.choose_bucket_ms(one_day_of_1s_bars[:2_000], 2_000) is None


@pytest.mark.parametrize("seed", range(5))
def test_choose_bucket_ms_never_yields_more_buckets_than_allowed(seed):
    rng = np.random.default_rng(seed)
    step = int(rng.choice([1_000, 5_000, 7_000, 60_000]))
    n = int(rng.integers(2_000, 50_000))
    max_bars = int(rng.integers(10, 1_500))
    ts = START_MS + int(rng.integers(0, 10**6)) * step + np.arange(n, dtype=np.int64) * step

    width = viz.choose_bucket_ms(ts, max_bars)

    assert width % step == 0
    assert np.unique(ts // width).size <= max_bars


def test_candles_are_capped_and_keep_first_last_and_global_extremes():
    bars = make_bars(50_000, seed=4, drop_every=11)
    max_points = 500

    fig = viz.candlestick_figure(bars, "BTCUSDT", max_points=max_points)
    candles = trace_json(fig, 0)
    volume = decode(trace_json(fig, 1)["y"]) + decode(trace_json(fig, 2)["y"])

    assert decode(candles["x"]).size <= max_points
    assert decode(candles["open"])[0] == bars["open"].iloc[0]
    assert decode(candles["close"])[-1] == bars["close"].iloc[-1]
    assert decode(candles["high"]).max() == bars["high"].max()
    assert decode(candles["low"]).min() == bars["low"].min()
    assert volume.sum() == pytest.approx(bars["volume"].sum(), rel=1e-12)
    assert "candles)" in candles["name"]  # the legend names the aggregated width


def test_candles_pass_through_when_short_and_colour_volume_by_direction():
    bars = make_bars(120, seed=5)

    fig = viz.candlestick_figure(bars, "ETHUSDT")
    candles, up_volume, down_volume = (trace_json(fig, i) for i in range(3))
    up = (bars["close"] >= bars["open"]).to_numpy()
    volume = bars["volume"].to_numpy()

    np.testing.assert_array_equal(decode(candles["open"]), bars["open"].to_numpy())
    assert candles["name"] == "ETHUSDT"
    assert fig.data[0].yaxis == "y" and fig.data[1].yaxis == fig.data[2].yaxis == "y2"
    # one column per bar (then a drop to zero after the last): up bars green, down bars red
    np.testing.assert_array_equal(decode(up_volume["y"])[:-1], np.where(up, volume, 0.0))
    np.testing.assert_array_equal(decode(down_volume["y"])[:-1], np.where(up, 0.0, volume))
    assert fig.data[1].fillcolor == viz.UP_COLOR and fig.data[2].fillcolor == viz.DOWN_COLOR
    assert fig.data[1].line.shape == "hv" and fig.data[1].fill == "tozeroy"
    assert candles["text"][0] == f"volume {volume[0]:,.4f}"  # hover shows the bar's volume
    assert fig.layout.xaxis.rangeslider.visible is False


def test_volume_columns_drop_to_zero_across_a_gap_in_the_bars():
    bars = make_bars(6, seed=7).drop(index=START_MS + np.array([2_000, 3_000]))

    fig = viz.candlestick_figure(bars, "BTCUSDT")
    x = decode(trace_json(fig, 1)["x"])
    total = decode(trace_json(fig, 1)["y"]) + decode(trace_json(fig, 2)["y"])
    volume = bars["volume"].to_numpy()

    # bars open at 0, 1, 4, 5 s: columns [0, 1), [1, 2), zero until 4 s, [4, 5), [5, 6), zero
    np.testing.assert_array_equal(x - START_MS, [0, 1_000, 2_000, 4_000, 5_000, 6_000])
    np.testing.assert_array_equal(total, [volume[0], volume[1], 0.0, volume[2], volume[3], 0.0])


def test_candles_skip_bars_with_missing_prices():
    bars = make_bars(20, seed=6)
    bars.iloc[5, bars.columns.get_loc("high")] = np.nan

    fig = viz.candlestick_figure(bars, "ETHUSDT")

    x = decode(trace_json(fig, 0)["x"])
    assert x.size == 19 and float(bars.index[5]) not in x


# --------------------------------------------------------------------------------------
# time zones
# --------------------------------------------------------------------------------------

def test_kolkata_shifts_by_five_and_a_half_hours():
    ts = START_MS + np.arange(0, 48, dtype=np.int64) * HOUR_MS

    result = viz.to_display_ms(ts, "Asia/Kolkata")

    # India Standard Time is UTC+05:30 all year (no DST): 5.5 h = 19_800_000 ms
    np.testing.assert_array_equal(result, (ts + 19_800_000).astype(float))


@pytest.mark.parametrize("change_utc_ms, before_h, after_h", [
    (1_741_503_600_000, -5, -4),  # 2025-03-09 07:00 UTC = 02:00 EST: clocks go forward
    (1_762_063_200_000, -4, -5),  # 2025-11-02 06:00 UTC = 02:00 EDT: clocks go back
])
def test_new_york_shift_follows_daylight_saving(change_utc_ms, before_h, after_h):
    ts = change_utc_ms + np.arange(-3, 3, dtype=np.int64) * 1_800_000  # 30 min steps around the change

    result = viz.to_display_ms(ts, "America/New_York")

    offsets_h = (result - ts) / HOUR_MS
    np.testing.assert_array_equal(offsets_h, [before_h] * 3 + [after_h] * 3)


def test_builder_plots_in_the_display_zone_and_labels_the_axis():
    change = 1_741_503_600_000  # NY spring forward, see above
    z = pd.Series(np.linspace(-1, 1, 8), index=pd.Index(change + np.arange(-4, 4, dtype=np.int64) * HOUR_MS))

    fig = viz.zscore_figure(z, 2.0, 0.5, tz="America/New_York")
    x = decode(trace_json(fig)["x"])

    expected = z.index.to_numpy() + np.where(z.index.to_numpy() < change, -5, -4) * HOUR_MS
    np.testing.assert_array_equal(x, expected.astype(float))
    assert fig.layout.xaxis.title.text == "time (America/New_York)"
    assert "America/New_York" in fig.layout.xaxis.unifiedhovertitle.text


def test_europe_london_label_and_utc_default():
    assert viz.time_axis_title("Europe/London") == "time (Europe/London)"
    fig = viz.correlation_figure(make_series(10, step_ms=HOUR_MS).clip(-1, 1), tz="Europe/London")
    assert fig.layout.xaxis.title.text == "time (Europe/London)"
    # 2025-03-08 is winter time in London: GMT = UTC, no shift
    np.testing.assert_array_equal(decode(trace_json(fig)["x"]), make_series(10, step_ms=HOUR_MS).index.to_numpy())


def test_unknown_zone_is_rejected():
    with pytest.raises(ValueError, match=r"tz \('Mars/Olympus'\)"):
        viz.spread_figure(make_series(10), tz="Mars/Olympus")
    with pytest.raises(ValueError, match="tz"):
        viz.to_display_ms([START_MS], "")


# --------------------------------------------------------------------------------------
# empty inputs and warm-up
# --------------------------------------------------------------------------------------

EMPTY_SERIES = pd.Series(dtype=float)
EMPTY_BARS = make_bars(3).iloc[:0]


@pytest.mark.parametrize("build", [
    lambda **kw: viz.candlestick_figure(EMPTY_BARS, "BTCUSDT", **kw),
    lambda **kw: viz.normalised_overlay_figure(EMPTY_BARS, make_bars(5), "ETH", "BTC", **kw),
    lambda **kw: viz.spread_figure(EMPTY_SERIES, EMPTY_SERIES, EMPTY_SERIES, EMPTY_SERIES, **kw),
    lambda **kw: viz.zscore_figure(EMPTY_SERIES, 2.0, 0.5, **kw),
    lambda **kw: viz.beta_figure(EMPTY_SERIES, None, **kw),
    lambda **kw: viz.correlation_figure(EMPTY_SERIES, **kw),
    lambda **kw: viz.equity_figure(EMPTY_SERIES, **kw),
    lambda **kw: viz.heatmap_figure(pd.DataFrame(), "p-values", **kw),
], ids=["candles", "overlay", "spread", "zscore", "beta", "correlation", "equity", "heatmap"])
@pytest.mark.parametrize("message", [None, "needs 60 bars, has 14"])
def test_empty_input_returns_a_placeholder_instead_of_raising(build, message):
    fig = build(empty_message=message) if message else build()

    assert len(fig.data) == 0
    texts = annotation_texts(fig)
    assert len(texts) == 1 and texts[0]
    if message:
        assert texts[0] == message
    assert fig.layout.xaxis.visible is False


def test_all_nan_series_is_warming_up_not_a_flat_line():
    z = make_series(30) * np.nan

    fig = viz.zscore_figure(z, 2.0, 0.5, empty_message="z-score: needs 60 bars, has 30")

    assert len(fig.data) == 0
    assert annotation_texts(fig) == ["z-score: needs 60 bars, has 30"]


def test_overlay_without_common_bars_is_a_placeholder():
    fig = viz.normalised_overlay_figure(make_bars(10), make_bars(10, start=START_MS + 10**9), "ETH", "BTC")

    assert len(fig.data) == 0
    assert "no common bars" in annotation_texts(fig)[0]


def test_empty_figure_centres_its_message():
    fig = viz.empty_figure("needs 60 bars, has 14", uirevision="z")
    annotation = fig.layout.annotations[0]

    assert (annotation.text, annotation.x, annotation.y, annotation.xref, annotation.yref) == \
        ("needs 60 bars, has 14", 0.5, 0.5, "paper", "paper")
    assert fig.layout.uirevision == "z"


# --------------------------------------------------------------------------------------
# NaN handling
# --------------------------------------------------------------------------------------

def test_nan_values_are_sent_as_nan_not_zero():
    z = make_series(50, nan_slices=[slice(0, 10), slice(30, 33)])

    fig = viz.zscore_figure(z, 2.0, 0.5)
    payload = json.loads(fig.to_json())["data"][0]
    y = decode(payload["y"])

    assert y.size == 50
    np.testing.assert_array_equal(np.isnan(y), z.isna().to_numpy())
    assert not np.any(y[np.isnan(z.to_numpy())] == 0.0)
    assert fig.data[0].connectgaps in (None, False)  # Plotly breaks the line at NaN


def test_downsampled_values_are_input_values_and_gaps_survive():
    z = make_series(50_000, seed=8, nan_slices=[slice(0, 500), slice(20_000, 22_000)])

    fig = viz.zscore_figure(z, 2.0, 0.5, max_points=1_000)
    trace = trace_json(fig)
    x, y = decode(trace["x"]), decode(trace["y"])
    original = z.reindex(x.astype(np.int64)).to_numpy()

    assert x.size <= 1_000
    np.testing.assert_array_equal(y, original)  # NaN where the input was NaN, else the same value
    inside_gap = (x >= z.index[20_000]) & (x < z.index[22_000])
    assert inside_gap.any() and np.isnan(y[inside_gap]).all()
    assert np.nanmax(y) == np.nanmax(z) and np.nanmin(y) == np.nanmin(z)


def test_heatmap_margins_grow_to_fit_long_symbol_labels():
    names = ["1000SHIBUSDT", "BTCUSDT"]
    fig = viz.heatmap_figure(pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=names, columns=names))

    assert fig.layout.yaxis.automargin is True and fig.layout.xaxis.automargin is True


def test_heatmap_nan_cells_are_blank_with_na_hover():
    matrix = pd.DataFrame([[np.nan, 0.012345], [0.2, np.nan]], index=["BTC", "ETH"], columns=["BTC", "ETH"])

    fig = viz.heatmap_figure(matrix, "EG p-value (BH)", 0, 1, viz.pvalue_colorscale(0.05), ".3f")
    heatmap = fig.data[0]

    assert [list(row) for row in heatmap.z] == [[None, 0.012345], [0.2, None]]
    assert [list(row) for row in heatmap.text] == [["", "0.012"], ["0.200", ""]]
    assert heatmap.customdata[0][0] == "n/a" and heatmap.customdata[1][1] == "n/a"
    assert heatmap.customdata[0][1] == "0.012"
    assert "%{customdata}" in heatmap.hovertemplate


# --------------------------------------------------------------------------------------
# individual builders
# --------------------------------------------------------------------------------------

def test_heatmap_layout_and_argument_checks():
    matrix = pd.DataFrame([[1.0, -0.25], [-0.25, 1.0]], index=["BTC", "ETH"], columns=["BTC", "ETH"])

    fig = viz.heatmap_figure(matrix, "correlation", -1, 1, "RdBu", ".2f")

    assert fig.data[0].x == ("BTC", "ETH") and fig.data[0].y == ("BTC", "ETH")
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1, 1)
    assert fig.data[0].text[0][1] == "-0.25"
    assert fig.layout.yaxis.autorange == "reversed"  # first row on top, like a table
    assert fig.layout.title.text == "correlation"
    assert fig.layout.hovermode == "closest"
    with pytest.raises(ValueError, match="text_fmt"):
        viz.heatmap_figure(matrix, text_fmt="%d%q")
    with pytest.raises(ValueError, match=r"zmin \(1\)"):
        viz.heatmap_figure(matrix, zmin=1, zmax=0)


def test_pvalue_colorscale_is_neutral_at_alpha():
    scale = viz.pvalue_colorscale(0.05)

    positions = [position for position, _ in scale]
    assert positions[0] == 0.0 and positions[-1] == 1.0
    assert positions == sorted(positions)
    assert dict(scale)[0.05] == "#ffffbf"  # the neutral colour sits exactly at alpha
    with pytest.raises(ValueError, match=r"alpha \(1.5\)"):
        viz.pvalue_colorscale(1.5)


def test_zscore_draws_entry_exit_and_zero_levels():
    fig = viz.zscore_figure(make_series(100), 2.0, 0.5)

    levels = sorted(shape.y0 for shape in fig.layout.shapes)
    assert levels == [-2.0, -0.5, 0.0, 0.5, 2.0]
    assert all(shape.xref == "x domain" and shape.x0 == 0 and shape.x1 == 1 for shape in fig.layout.shapes)
    assert {a.text for a in fig.layout.annotations} == {"+2 entry", "-2 entry", "+0.5 exit", "-0.5 exit"}
    assert sorted(s.y0 for s in viz.zscore_figure(make_series(10), 1.5, 0).layout.shapes) == [-1.5, 0.0, 1.5]


@pytest.mark.parametrize("entry, exit, match", [
    (0.0, 0.0, r"entry \(0.0\)"),
    (2.0, 2.0, r"exit \(2.0\)"),
    (2.0, -0.5, r"exit \(-0.5\)"),
    (float("nan"), 0.5, r"entry \(nan\)"),
])
def test_zscore_rejects_bad_thresholds(entry, exit, match):
    with pytest.raises(ValueError, match=match):
        viz.zscore_figure(make_series(10), entry, exit)


def test_overlay_rebases_both_legs_to_100_at_the_first_common_bar():
    bars_y = make_bars(100, seed=9)
    bars_x = make_bars(100, seed=10).iloc[20:]  # x leg starts 20 bars later
    bars_y.iloc[20, bars_y.columns.get_loc("close")] = np.nan  # so t0 moves to bar 21

    fig = viz.normalised_overlay_figure(bars_y, bars_x, "ETHUSDT", "BTCUSDT")
    leg_y, leg_x = trace_json(fig, 0), trace_json(fig, 1)
    t0 = bars_y.index[21]

    assert decode(leg_y["x"])[0] == t0 and decode(leg_x["x"])[0] == t0
    assert decode(leg_y["y"])[0] == 100.0 and decode(leg_x["y"])[0] == 100.0
    expected_y = 100 * bars_y["close"].loc[t0:].dropna() / bars_y["close"].loc[t0]
    np.testing.assert_allclose(decode(leg_y["y"]), expected_y.to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(decode(leg_x["customdata"]), bars_x["close"].loc[t0:].to_numpy())
    assert (fig.data[0].name, fig.data[1].name) == ("ETHUSDT", "BTCUSDT")


def test_spread_figure_draws_spread_mean_and_bands():
    spread = make_series(200, nan_slices=[slice(0, 20)])
    mean = spread.rolling(20).mean()
    std = spread.rolling(20).std()

    fig = viz.spread_figure(spread, mean, mean + 2 * std, mean - 2 * std, name="log spread")

    assert [t.name for t in fig.data] == ["log spread", "rolling mean", "upper band", "lower band"]
    np.testing.assert_allclose(decode(trace_json(fig, 2)["y"]), (mean + 2 * std).to_numpy(), equal_nan=True)
    assert [t.name for t in viz.spread_figure(spread).data] == ["spread"]  # bands are optional


def test_beta_figure_draws_the_series_that_have_data():
    rolling = make_series(100, nan_slices=[slice(0, 100)])
    kalman = make_series(100, seed=3)

    assert [t.name for t in viz.beta_figure(make_series(100)).data] == ["rolling β"]
    assert [t.name for t in viz.beta_figure(make_series(100), kalman).data] == ["rolling β", "Kalman β"]
    assert [t.name for t in viz.beta_figure(rolling, kalman).data] == ["Kalman β"]


def test_correlation_axis_is_kept_within_minus_one_and_one():
    fig = viz.correlation_figure(np.tanh(make_series(100)))

    options = fig.layout.yaxis.autorangeoptions
    assert (options.minallowed, options.maxallowed) == (-1.0, 1.0)


def test_equity_drawdown_is_computed_from_full_resolution_equity():
    rng = np.random.default_rng(11)
    ts = START_MS + np.arange(30_000, dtype=np.int64) * 1_000
    equity = pd.Series(10_000 * np.exp(np.cumsum(rng.normal(0, 1e-3, ts.size))), index=ts)
    equity.iloc[:5] = np.nan  # before the first trade
    expected = equity / equity.cummax() - 1  # pandas reference

    small = viz.equity_figure(equity.iloc[:1_500])
    large = viz.equity_figure(equity, max_points=800)

    np.testing.assert_allclose(decode(trace_json(small, 1)["y"]), expected.iloc[:1_500].to_numpy(),
                               rtol=1e-12, equal_nan=True)
    drawdown = decode(trace_json(large, 1)["y"])
    assert drawdown.size <= 800
    assert np.nanmin(drawdown) == pytest.approx(expected.min(), rel=1e-12)  # deepest point kept
    assert large.data[1].yaxis == "y2"


@pytest.mark.parametrize("depth, tickformat", [(0.0049, ".2%"), (0.05, ".1%"), (0.30, ".0%")])
def test_drawdown_axis_has_decimals_enough_to_tell_its_ticks_apart(depth, tickformat):
    equity = make_series(50) * 0 + 10_000
    equity.iloc[25:] = 10_000 * (1 - depth)  # one fall of ``depth``, never recovered

    fig = viz.equity_figure(equity)

    assert np.nanmin(decode(trace_json(fig, 1)["y"])) == pytest.approx(-depth)
    assert fig.layout.yaxis2.tickformat == tickformat


def test_equity_uses_a_given_drawdown_and_rejects_non_positive_equity():
    equity = make_series(50) + 100
    drawdown = pd.Series(-np.linspace(0, 0.1, 50), index=equity.index)

    fig = viz.equity_figure(equity, drawdown)

    np.testing.assert_array_equal(decode(trace_json(fig, 1)["y"]), drawdown.to_numpy())
    with pytest.raises(ValueError, match="equity must be positive"):
        viz.equity_figure(make_series(50) - 100)


# --------------------------------------------------------------------------------------
# input contract
# --------------------------------------------------------------------------------------

def test_inputs_must_be_indexed_by_sorted_epoch_ms():
    z = make_series(10)

    with pytest.raises(ValueError, match="z must be indexed by int64 epoch ms"):
        viz.zscore_figure(z.set_axis(pd.to_datetime(z.index, unit="ms")), 2.0, 0.5)
    with pytest.raises(ValueError, match="sorted ascending"):
        viz.zscore_figure(z.iloc[::-1], 2.0, 0.5)
    with pytest.raises(ValueError, match="spread must be a pandas Series"):
        viz.spread_figure(z.to_numpy())
    with pytest.raises(ValueError, match=r"bars is missing column\(s\) \['high'\]"):
        viz.candlestick_figure(make_bars(5).drop(columns="high"), "BTCUSDT")
    with pytest.raises(ValueError, match=r"max_points \(3\)"):
        viz.beta_figure(z, max_points=3)


# --------------------------------------------------------------------------------------
# 100k points: build + serialise (timings printed, never asserted)
# --------------------------------------------------------------------------------------

def test_100k_point_inputs_serialise_compactly():
    inputs = make_inputs(n=100_000)
    build_all_time_figures(n=50)  # first use imports Plotly's validators: keep it out of the timing
    started = time.perf_counter()
    figs = build_all_time_figures(inputs=inputs)
    build_ms = (time.perf_counter() - started) * 1e3

    lines = [f"\nbuild all 7 time figures from 100k points (11 traces): {build_ms:.0f} ms"]
    for name, fig in figs.items():
        started = time.perf_counter()
        payload = fig.to_json()
        json_ms = (time.perf_counter() - started) * 1e3
        lines.append(f"  {name:<12} to_json {json_ms:5.1f} ms  {len(payload) / 1e3:6.0f} kB")
        for trace in json.loads(payload)["data"]:
            assert decode(trace["x"]).size <= viz.DEFAULT_MAX_POINTS
        assert not ISO_DATE.search(payload)
        assert len(payload) < 400_000  # 2 k points/trace as typed arrays, not 100 k ISO strings
    print("\n".join(lines))


# --------------------------------------------------------------------------------------
# linked time axes, markers, crosshair (issue 15)
# --------------------------------------------------------------------------------------


def test_level_labels_sit_left_clear_of_the_plotly_toolbar():
    fig = viz.zscore_figure(make_series(100), 2.0, 0.5)
    assert all(a.x == 0.0 and a.xanchor == "left" for a in fig.layout.annotations)


def test_a_time_range_fits_every_y_axis_to_what_is_visible():
    bars = make_bars(600)
    fig = viz.candlestick_figure(bars, "BTCUSDT")
    lo_ms, hi_ms = START_MS + 100_000, START_MS + 199_000  # bars 100..199
    window = [pd.Timestamp(lo_ms, unit="ms").strftime("%Y-%m-%d %H:%M:%S"),
              pd.Timestamp(hi_ms, unit="ms").strftime("%Y-%m-%d %H:%M:%S")]
    viz.show_time_range(fig, window, padding=0.0)

    visible = bars.loc[lo_ms:hi_ms]
    assert list(fig.layout.xaxis.range) == window and fig.layout.xaxis.autorange is False
    assert list(fig.layout.yaxis.range) == pytest.approx([visible["low"].min(),
                                                          visible["high"].max()])
    assert list(fig.layout.yaxis2.range) == pytest.approx([0.0, visible["volume"].max()])
    # the whole series' range is wider: the fit is not autorange
    assert bars["high"].max() > visible["high"].max() or bars["low"].min() < visible["low"].min()


def test_a_time_range_pads_and_leaves_empty_axes_alone():
    z = make_series(300)
    fig = viz.zscore_figure(z, 2.0, 0.0)
    viz.show_time_range(fig, [START_MS + 10_000.0, START_MS + 20_000.0])
    visible = z.loc[START_MS + 10_000:START_MS + 20_000]
    span = visible.max() - visible.min()
    assert list(fig.layout.yaxis.range) == pytest.approx([visible.min() - 0.05 * span,
                                                          visible.max() + 0.05 * span])
    far = viz.zscore_figure(z, 2.0, 0.0)
    viz.show_time_range(far, [0.0, 1000.0])  # nothing visible: y keeps its autorange
    assert far.layout.yaxis.range is None


def test_markers_sit_on_the_series_at_the_event_time():
    z = make_series(100)
    fig = viz.zscore_figure(z, 2.0, 0.0, tz="Asia/Kolkata")
    events = [START_MS - 5_000, START_MS + 10_500, START_MS + 42_000]  # before the data: dropped
    viz.add_markers(fig, events, z, "long entry", hover=["a", "b", "c"], tz="Asia/Kolkata")

    marks = fig.data[-1]
    assert marks.mode == "markers" and marks.name == "long entry"
    assert marks.marker.symbol == "triangle-up"
    assert list(marks.y) == [z.loc[START_MS + 10_000], z.loc[START_MS + 42_000]]
    assert list(marks.x) == list(viz.to_display_ms(np.array(events[1:]), "Asia/Kolkata"))
    assert list(marks.text) == ["b", "c"]
    before = len(fig.data)
    viz.add_markers(fig, [], z, "exit")
    assert len(fig.data) == before
    with pytest.raises(ValueError, match="kind"):
        viz.add_markers(fig, events, z, "entry")


@pytest.mark.parametrize("name", TIME_BUILDERS)
def test_every_time_chart_has_a_crosshair_across_its_subplots(name):
    fig = build_all_time_figures()[name]
    axis = fig.layout.xaxis.to_plotly_json()
    assert {key: axis.get(key) for key in viz.CROSSHAIR} == viz.CROSSHAIR
    assert viz.CROSSHAIR["showspikes"] and viz.CROSSHAIR["spikemode"] == "across"
    assert fig.layout.hovermode == "x unified"


def test_a_figure_recoloured_for_the_light_theme_keeps_its_layout():
    fig = viz.candlestick_figure(make_bars(50), "BTCUSDT")  # built dark
    margin, domain = fig.layout.margin.to_plotly_json(), list(fig.layout.yaxis.domain)
    viz.apply_colors(fig, "light")
    assert fig.layout.template.layout.paper_bgcolor == "#ffffff"
    assert fig.layout.template.layout.font.color == "#31333f"  # dark text on white
    assert fig.layout.xaxis.gridcolor == "#e8e8e8" and fig.layout.yaxis2.gridcolor == "#e8e8e8"
    assert fig.layout.margin.to_plotly_json() == margin and list(fig.layout.yaxis.domain) == domain


def test_newest_x_is_the_last_time_drawn():
    z = make_series(100)
    fig = viz.zscore_figure(z, 2.0, 0.0, tz="Europe/Berlin")
    assert viz.newest_x(fig) == viz.to_display_ms(np.array([z.index[-1]]), "Europe/Berlin")[0]
    assert viz.newest_x(viz.empty_figure("nothing yet")) == -math.inf


@pytest.mark.parametrize("validate", [True, False])
def test_a_copied_figure_is_independent_and_equal(monkeypatch, validate):
    monkeypatch.setattr(viz, "VALIDATE_FIGURES", validate)
    bars = make_bars(50)
    fig = viz.candlestick_figure(bars, "BTCUSDT")
    copy = viz.copy_figure(fig)
    assert json.loads(copy.to_json()) == json.loads(fig.to_json())
    # what the page does to a copy: zoom (reads the arrays), select-drag, markers
    window = [START_MS + 10_000.0, START_MS + 30_000.0]
    viz.show_time_range(copy, window)
    fresh = viz.show_time_range(viz.candlestick_figure(bars, "BTCUSDT"), window)
    assert json.loads(copy.to_json()) == json.loads(fresh.to_json())
    copy.update_layout(dragmode="select")
    copy.add_traces([viz.go.Scatter(x=[1], y=[2])])
    assert fig.layout.dragmode == "zoom" and fig.layout.xaxis.range is None
    assert fig.layout.yaxis.range is None and len(fig.data) == 3
