"""Plotly figure builders for the pairs-trading dashboard.

Every builder takes data (pandas objects indexed by int64 epoch ms, see the project
conventions) plus a few keyword options and returns a ``plotly.graph_objects.Figure``.
This module imports nothing of the project and never touches Streamlit or I/O, so figures
can be built and inspected in tests exactly as the page will show them.

Design decisions
----------------
Time values
    x values are sent as float epoch milliseconds with ``xaxis.type = "date"``. Plotly
    serialises float arrays as compact base64 typed arrays; datetime values would become one
    ISO string per point (slow and 3-4x larger).
Time zone
    Plotly.js draws numeric dates as UTC wall-clock time and has no notion of a display
    zone. To show times in zone ``tz`` each x value is shifted by that zone's UTC offset *at
    that instant* (``to_display_ms``), so daylight-saving changes are handled per point, and
    the axis is labelled ``"time (<tz>)"``. All computation stays in UTC; only the plotted x
    is shifted. Known limit: in the hour repeated when clocks go back, the two real hours
    are drawn over the same wall-clock hour (that is what a local clock shows).
Downsampling
    Lines go through ``downsample_line``: MinMax-preselected LTTB (Steinarsson 2013; Van Der
    Donckt et al. 2023) plus the global minimum and maximum, with NaN gaps kept as gaps.
    Candles are aggregated into coarser, epoch-aligned time buckets (first open, max high,
    min low, last close, summed volume) by ``aggregate_ohlc``; epoch alignment keeps bucket
    edges stable from one refresh to the next. Downsampling never invents values: every
    plotted value is an input value (lines) or an exact aggregate of input bars (candles).
    Full resolution stays with the caller (for CSV export).
Rendering
    Only SVG traces (``go.Scatter``, ``go.Candlestick``, ``go.Heatmap``): with at most a few
    thousand points per trace SVG is fast enough, and browsers allow only 8-16 WebGL
    contexts per page, which ``Scattergl`` charts across many tabs would exhaust. But one
    SVG element per point is not fast: volume is a filled step line, not ``go.Bar``, and
    candles are capped at ``DEFAULT_MAX_CANDLES`` (more than a chart's width in pixels).
Zoom across refreshes
    ``layout.uirevision`` is a constant key per chart (the ``uirevision`` option), so a
    user's zoom and legend choices survive data refreshes. Include in the key whatever
    changes the meaning of the axes (symbol, timeframe, tz) so that changing it resets the
    view.
Theme
    One small template per theme (``"dark"`` or ``"light"``): compact margins, unified
    hover on x, legend on top, zoom drag, no range slider. Builders apply it while building;
    ``apply_theme`` gives any other figure the same look. The page should call
    ``st.plotly_chart(fig, theme=None)`` so Streamlit's own theme does not override it.
"""

from __future__ import annotations

import math
import zoneinfo
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

DEFAULT_MAX_POINTS = 2000
DEFAULT_MAX_CANDLES = 1000  # each candle is its own SVG path: the browser's drawing cost
MIN_MAX_POINTS = 10  # fewer points than this cannot show the shape of a series
MINMAX_PRESELECT_RATIO = 4  # LTTB candidates kept per output point before LTTB runs
TIME_HOVER_FORMAT = "%Y-%m-%d %H:%M:%S"
# Plotly checks every property as a figure is built (``_validate``): 70-90 % of building a
# chart (~10 ms for 1,000 candles), paid on every live refresh. The builders set only
# properties their tests check, so they skip it; the tests build every figure both ways
# and compare (tests/test_visualizations.py), with it on.
VALIDATE_FIGURES = False

UP_COLOR = "#26a69a"
DOWN_COLOR = "#ef5350"
PRICE_LINE_COLOR = "#4c9be8"
CHART_STYLES = ("candles", "line", "area")
# Range buttons of the price charts: (label, count, step) as Plotly's rangeselector takes
# them; "all" shows every bar drawn.
RANGE_BUTTONS = (("15m", 15, "minute"), ("1h", 1, "hour"), ("6h", 6, "hour"),
                 ("24h", 24, "hour"))
BAND_COLOR = "#8c8c8c"
ENTRY_COLOR = "#ef8a3a"
EXIT_COLOR = "#7f8c9a"
# On every time axis: a vertical line through all subplots at the hovered time
CROSSHAIR = dict(showspikes=True, spikemode="across", spikesnap="cursor", spikethickness=1,
                 spikedash="dot", spikecolor=BAND_COLOR)

_THEMES = {
    "dark": dict(
        paper="#0e1117", plot="#0e1117", font="#e6e6e6", grid="#262a33", zero="#3a3f4b",
        colorway=["#4c9be8", "#f5a623", "#b57edc", "#5fd3bc", "#e8684a", "#c9c9c9"],
    ),
    "light": dict(
        paper="#ffffff", plot="#ffffff", font="#31333f", grid="#e8e8e8", zero="#c8c8c8",
        colorway=["#1f6fbf", "#d9822b", "#8e5ac8", "#2a9d8f", "#d1495b", "#555555"],
    ),
}

# Nice candle widths, tried in order; the first one that is a multiple of the bar interval
# and wide enough wins, so an aggregated chart reads "5min candles", not "37s candles".
_NICE_BUCKET_MS = [
    1_000, 2_000, 5_000, 10_000, 15_000, 30_000,
    60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
    3_600_000, 7_200_000, 14_400_000, 21_600_000, 43_200_000,
    86_400_000, 172_800_000, 604_800_000,
]


# --------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------

def _check_max_points(max_points: int) -> None:
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)):
        raise ValueError(f"max_points ({max_points!r}) must be an integer")
    if max_points < MIN_MAX_POINTS:
        raise ValueError(f"max_points ({max_points}) must be at least {MIN_MAX_POINTS}")


def _zone(tz: str) -> zoneinfo.ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise ValueError(f"tz ({tz!r}) must be an IANA time zone name such as 'UTC'")
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"tz ({tz!r}) is not a known IANA time zone name") from exc


def _check_theme(theme: str) -> dict:
    if theme not in _THEMES:
        raise ValueError(f"theme ({theme!r}) must be one of {sorted(_THEMES)}")
    return _THEMES[theme]


def _xy_arrays(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
    if x.size > 1 and np.any(np.diff(x) < 0):
        raise ValueError("x must be sorted ascending")
    return x, y


def _series_arrays(series, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (ts int64 ms, values float64) of a Series indexed by epoch ms."""
    if not isinstance(series, pd.Series):
        raise ValueError(
            f"{name} must be a pandas Series indexed by int64 epoch ms, got {type(series).__name__}"
        )
    if len(series) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    _check_ms_index(series.index, name)
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    return series.index.to_numpy(dtype=np.int64), values


def _check_ms_index(index: pd.Index, name: str) -> None:
    if not pd.api.types.is_integer_dtype(index.dtype):
        raise ValueError(f"{name} must be indexed by int64 epoch ms, got index dtype {index.dtype}")
    if not index.is_monotonic_increasing:
        raise ValueError(f"{name} index (epoch ms) must be sorted ascending")


def _check_bars(bars, name: str) -> None:
    if not isinstance(bars, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame of bars, got {type(bars).__name__}")
    missing = [c for c in ("open", "high", "low", "close") if c not in bars.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}")
    if len(bars):
        _check_ms_index(bars.index, name)


# --------------------------------------------------------------------------------------
# downsampling
# --------------------------------------------------------------------------------------

def _bucket_bounds(n: int, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Split points 1..n-2 into n_buckets contiguous buckets (the LTTB split).

    Bucket i covers [floor(i*every)+1, floor((i+1)*every)+1) with every = (n-2)/n_buckets,
    exactly as in Steinarsson's reference implementation.
    """
    every = (n - 2) / n_buckets
    edges = np.floor(np.arange(n_buckets + 1) * every).astype(np.int64) + 1
    edges[-1] = n - 1  # guard against rounding: the last bucket ends before the last point
    return edges[:-1], edges[1:]


def lttb(x, y, n_out: int) -> np.ndarray:
    """Largest-Triangle-Three-Buckets selection of ``n_out`` points.

    Parameters
    ----------
    x : array_like of float
        Sorted ascending x values (e.g. epoch ms), finite.
    y : array_like of float
        Values, finite (drop or split NaN gaps first; ``downsample_line`` does that).
    n_out : int
        Number of points to keep, at least 3.

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices into ``x``/``y`` of the kept points; ``arange(n)`` when
        ``n_out >= n`` (small inputs pass through unchanged).

    Notes
    -----
    Exact LTTB (Steinarsson 2013): the first and last points are kept; the n-2 interior
    points are split into n_out-2 equal-count buckets; in each bucket the point B that
    maximises the triangle area |(Ax-Cx)(By-Ay) - (Ax-Bx)(Cy-Ay)| / 2 is kept, where A is
    the point kept in the previous bucket and C the mean of the next bucket (the last point
    for the final bucket). Kept values are input values, so nothing leaves the input range.

    The dependency on the previous choice is resolved without a per-bucket Python loop: for
    every bucket and every possible A in the previous bucket the best B is computed at once
    (the area is linear in B for fixed A and C), then the chain of choices is followed
    through that table. Work is O(n * n/n_out): a few ms when n/n_out is small (as after
    ``downsample_minmax``), about 0.1 s for 100k -> 2k. Use ``downsample_line`` for long
    raw series.
    """
    x, y = _xy_arrays(x, y)
    if isinstance(n_out, bool) or not isinstance(n_out, (int, np.integer)) or n_out < 3:
        raise ValueError(f"n_out ({n_out!r}) must be an integer of at least 3")
    if not np.all(np.isfinite(y)) or not np.all(np.isfinite(x)):
        raise ValueError("x and y must be finite for lttb; use downsample_line for data with NaN")
    n = x.size
    if n_out >= n:
        return np.arange(n, dtype=np.int64)

    inner_starts, inner_stops = _bucket_bounds(n, n_out - 2)
    starts = np.concatenate(([0], inner_starts, [n - 1]))
    stops = np.concatenate(([1], inner_stops, [n]))
    sizes = stops - starts
    width = int(sizes.max())
    offsets = np.arange(width)
    valid = offsets[None, :] < sizes[:, None]
    # pad short buckets with their first point; padding is masked out of the argmax
    member = np.where(valid, starts[:, None] + offsets[None, :], starts[:, None])
    x = x - x[0]  # areas depend on differences only; epoch ms near 1.7e12 would cost precision
    bx, by = x[member], y[member]
    mean_x = np.add.reduceat(x, starts) / sizes
    mean_y = np.add.reduceat(y, starts) / sizes

    n_buckets = starts.size
    best = np.zeros((n_buckets, width), dtype=np.int64)
    chunk = max(1, 4_000_000 // (width * width))  # bound the (chunk, width, width) temporaries
    for k0 in range(1, n_buckets - 1, chunk):
        k1 = min(n_buckets - 1, k0 + chunk)
        ax, ay = bx[k0 - 1:k1 - 1, :, None], by[k0 - 1:k1 - 1, :, None]
        cx, cy = mean_x[k0 + 1:k1 + 1, None, None], mean_y[k0 + 1:k1 + 1, None, None]
        # twice the triangle area, written as a linear function of B for each A
        area = np.abs(
            by[k0:k1, None, :] * (ax - cx) + bx[k0:k1, None, :] * (cy - ay) + (cx * ay - ax * cy)
        )
        area = np.where(valid[k0:k1, None, :], area, -1.0)
        best[k0:k1] = np.argmax(area, axis=2)

    table = best.ravel().tolist()  # flat: table[k * width + a] = best B in bucket k after A = a
    choice = [0]
    for k in range(1, n_buckets - 1):
        choice.append(table[k * width + choice[-1]])
    choice.append(0)
    return starts + np.asarray(choice, dtype=np.int64)


def downsample_minmax(x, y, n_out: int) -> np.ndarray:
    """Keep the minimum and the maximum of equal-count buckets (plus first and last point).

    Parameters
    ----------
    x : array_like of float
        Sorted ascending x values, finite.
    y : array_like of float
        Values, finite.
    n_out : int
        Maximum number of points to keep, at least 4.

    Returns
    -------
    numpy.ndarray of int64
        Sorted, unique indices of at most ``n_out`` points; ``arange(n)`` when
        ``n_out >= n``.

    Notes
    -----
    The interior points are split into (n_out-2)//2 equal-count buckets; each bucket keeps
    its argmin and argmax in time order. The global minimum and maximum are therefore always
    kept, as are the first and last points, and the envelope of the series is exact at
    bucket resolution. Vectorised: one padded (buckets x width) argmin/argmax.
    """
    x, y = _xy_arrays(x, y)
    if isinstance(n_out, bool) or not isinstance(n_out, (int, np.integer)) or n_out < 4:
        raise ValueError(f"n_out ({n_out!r}) must be an integer of at least 4")
    if not np.all(np.isfinite(y)):
        raise ValueError("y must be finite for downsample_minmax; use downsample_line for data with NaN")
    n = x.size
    if n_out >= n:
        return np.arange(n, dtype=np.int64)
    return _minmax_candidates(y, (n_out - 2) // 2, unique=True)


def _minmax_candidates(y: np.ndarray, n_buckets: int, *, unique: bool) -> np.ndarray:
    """First point, (argmin, argmax) in time order per bucket, last point."""
    n = y.size
    starts, stops = _bucket_bounds(n, n_buckets)
    width = int((stops - starts).max())
    # pad with the bucket's last point: a repeat cannot change its min or max
    member = np.minimum(starts[:, None] + np.arange(width)[None, :], stops[:, None] - 1)
    values = y[member]
    rows = np.arange(n_buckets)
    lo = member[rows, np.argmin(values, axis=1)]
    hi = member[rows, np.argmax(values, axis=1)]
    pairs = np.sort(np.stack([lo, hi], axis=1), axis=1).ravel()
    picked = np.concatenate(([0], pairs, [n - 1]))
    return np.unique(picked) if unique else picked


def _minmax_lttb(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    """LTTB on MinMax-preselected candidates (MinMaxLTTB); finite input, n_out >= 3."""
    n = x.size
    if n_out >= n:
        return np.arange(n, dtype=np.int64)
    if n <= MINMAX_PRESELECT_RATIO * n_out:
        return lttb(x, y, n_out)
    # MINMAX_PRESELECT_RATIO/2 min-max pairs per LTTB bucket; duplicates (argmin == argmax)
    # are kept so every LTTB bucket spans the same number of preselection buckets
    candidates = _minmax_candidates(y, (n_out - 2) * MINMAX_PRESELECT_RATIO // 2, unique=False)
    return candidates[lttb(x[candidates], y[candidates], n_out)]


def downsample_line(x, y, max_points: int = DEFAULT_MAX_POINTS) -> np.ndarray:
    """Indices of at most ``max_points`` points that preserve a line's shape and its gaps.

    Parameters
    ----------
    x : array_like of float
        Sorted ascending x values (epoch ms), finite.
    y : array_like of float
        Values; NaN marks a gap (e.g. a rolling window still warming up).
    max_points : int, default 2000
        Upper bound on the number of points returned, at least 10.

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices into ``x``/``y``; ``arange(n)`` when ``n <= max_points``.

    Notes
    -----
    Finite points: MinMax preselection (per-bucket min and max, 4 candidates per output
    point) followed by exact LTTB on the candidates, plus the global minimum and maximum of
    y, which LTTB alone may drop (a z-score peak or the maximum drawdown must stay visible).
    Gaps: the first and the last input point are always kept (as NaN if they are NaN), and
    between two consecutive kept finite points that straddle NaN input one NaN point is
    kept, so Plotly breaks the line there instead of bridging the gap. The finite budget is
    reduced by the number of gap markers so the total never exceeds ``max_points``.
    About 2-6 ms for 100k -> 2k points on the 2-core reference machine.
    """
    x, y = _xy_arrays(x, y)
    _check_max_points(max_points)
    n = x.size
    if n <= max_points:
        return np.arange(n, dtype=np.int64)

    finite = np.isfinite(y)
    if finite.all():  # the common case: no index bookkeeping, no copies
        return _finite_selection(x, y, max_points)
    finite_idx = np.flatnonzero(finite)
    if finite_idx.size == 0:
        return np.array([0, n - 1], dtype=np.int64)

    edge_markers = [i for i in (0, n - 1) if not finite[i]]
    is_nan = ~finite
    run_starts = np.flatnonzero(is_nan & ~np.concatenate(([False], is_nan[:-1])))
    interior_runs = int(np.count_nonzero((run_starts > finite_idx[0]) & (run_starts < finite_idx[-1])))
    budget = max_points - len(edge_markers)
    n_finite_out = budget - min(interior_runs, budget // 2)

    kept = finite_idx[_finite_selection(x[finite_idx], y[finite_idx], n_finite_out)]

    markers = list(edge_markers)
    if interior_runs:
        # a NaN lies between kept[i] and kept[i+1] iff the finite count between them is
        # smaller than the index distance; mark the first NaN after kept[i]
        finite_before = np.cumsum(finite)  # finite_before[j] = finite points in [0, j]
        between_finite = finite_before[kept[1:]] - finite_before[kept[:-1]]
        straddles = np.flatnonzero(between_finite < kept[1:] - kept[:-1])
        nan_idx = np.flatnonzero(is_nan)
        first_nan_after = nan_idx[np.searchsorted(nan_idx, kept[straddles])]
        markers.extend(first_nan_after.tolist())
    return np.unique(np.concatenate((kept, np.asarray(markers, dtype=np.int64))))


def _finite_selection(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    """MinMaxLTTB with the global min and max forced in; at most n_out indices."""
    if n_out >= x.size:
        return np.arange(x.size, dtype=np.int64)
    extremes = np.array([np.argmin(y), np.argmax(y)], dtype=np.int64)
    if n_out - 2 < 3:  # too small for LTTB: the ends and the extremes are the shape
        return np.unique(np.concatenate(([0, x.size - 1], extremes)))[:n_out]
    chosen = _minmax_lttb(x, y, n_out - 2)
    return np.unique(np.concatenate((chosen, extremes)))


def choose_bucket_ms(ts, max_bars: int = DEFAULT_MAX_POINTS) -> int | None:
    """Candle width (ms) that shows the bars in ``ts`` as at most ``max_bars`` candles.

    Parameters
    ----------
    ts : array_like of int
        Bar open times, epoch ms, sorted ascending.
    max_bars : int, default 2000
        Maximum number of candles, at least 10.

    Returns
    -------
    int or None
        None when no aggregation is needed (``len(ts) <= max_bars``); otherwise the width of
        epoch-aligned buckets for ``aggregate_ohlc``.

    Notes
    -----
    The bar interval is the smallest positive gap between bar opens. The width is the
    first "nice" duration (1s, 2s, 5s, ..., 1min, 5min, ..., 1h, ..., 1d, 2d, 7d) that is a
    multiple of the bar interval and wider than span / (max_bars - 1), otherwise the
    smallest multiple of the interval that is. With epoch-aligned buckets that guarantees
    at most max_bars buckets: floor(last/w) - floor(first/w) + 1 <= floor(span/w) + 2.
    """
    _check_max_points(max_bars)
    ts = np.asarray(ts, dtype=np.int64)
    if ts.size <= max_bars:
        return None
    interval = _bar_interval_ms(ts)
    span = int(ts[-1] - ts[0])
    needed = span / (max_bars - 1)
    for width in _NICE_BUCKET_MS:
        if width > needed and width % interval == 0:
            return width
    return interval * (math.floor(needed / interval) + 1)


def aggregate_ohlc(bars: pd.DataFrame, bucket_ms: int) -> pd.DataFrame:
    """Aggregate bars into epoch-aligned buckets of ``bucket_ms``.

    Parameters
    ----------
    bars : pandas.DataFrame
        Bars indexed by ``ts`` (int64 epoch ms of the bar open), sorted ascending, with
        open, high, low, close and optionally volume, buy_volume, trades, notional.
    bucket_ms : int
        Bucket width in ms (positive).

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bucket, indexed by ``ts`` = bucket open (``ts // bucket_ms *
        bucket_ms``): open = first open, high = max high, low = min low, close = last close;
        volume, buy_volume, trades, notional = sums (NaN when every input is NaN); vwap =
        notional / volume when both exist. Empty buckets are absent, as in the input.

    Notes
    -----
    Bars with a missing open, high, low or close are dropped first: they have no candle.
    Buckets are aligned to the epoch (not to the first bar), so their edges do not move
    when new bars arrive or old ones scroll out. Equivalent to pandas
    ``resample(f"{bucket_ms}ms", origin="epoch")`` with first/max/min/last/sum.
    """
    _check_bars(bars, "bars")
    if isinstance(bucket_ms, bool) or not isinstance(bucket_ms, (int, np.integer)) or bucket_ms <= 0:
        raise ValueError(f"bucket_ms ({bucket_ms!r}) must be a positive integer")
    price_cols = ["open", "high", "low", "close"]
    bars = bars[bars[price_cols].notna().all(axis=1)]
    sum_cols = [c for c in ("volume", "buy_volume", "trades", "notional") if c in bars.columns]
    if len(bars) == 0:
        return pd.DataFrame(columns=price_cols + sum_cols, index=pd.Index([], dtype=np.int64, name="ts"))

    ts = bars.index.to_numpy(dtype=np.int64)
    bucket = ts // bucket_ms
    starts = np.concatenate(([0], np.flatnonzero(np.diff(bucket)) + 1))
    ends = np.concatenate((starts[1:], [ts.size])) - 1

    def column(name: str) -> np.ndarray:
        return bars[name].to_numpy(dtype=np.float64, na_value=np.nan)

    out = {
        "open": column("open")[starts],
        "high": np.maximum.reduceat(column("high"), starts),
        "low": np.minimum.reduceat(column("low"), starts),
        "close": column("close")[ends],
    }
    for name in sum_cols:
        values = column(name)
        present = np.isfinite(values)
        total = np.add.reduceat(np.where(present, values, 0.0), starts)
        count = np.add.reduceat(present.astype(np.int64), starts)
        out[name] = np.where(count > 0, total, np.nan)
    if "notional" in out and "volume" in out:
        with np.errstate(divide="ignore", invalid="ignore"):
            out["vwap"] = np.where(out["volume"] > 0, out["notional"] / out["volume"], np.nan)
    index = pd.Index(bucket[starts] * bucket_ms, dtype=np.int64, name="ts")
    return pd.DataFrame(out, index=index)


# --------------------------------------------------------------------------------------
# time axis
# --------------------------------------------------------------------------------------

def to_display_ms(ts_ms, tz: str = "UTC") -> np.ndarray:
    """Shift UTC epoch ms so Plotly's UTC date axis shows wall-clock time in ``tz``.

    Parameters
    ----------
    ts_ms : array_like of int
        UTC epoch milliseconds.
    tz : str, default "UTC"
        IANA zone name, e.g. "Europe/London", "Asia/Kolkata".

    Returns
    -------
    numpy.ndarray of float64
        ``ts_ms + utc_offset_ms(tz, ts_ms)`` for each value.

    Notes
    -----
    Plotly.js interprets numeric date values as ms since the epoch and draws them as UTC.
    Adding the zone's offset at each instant (pandas ``tz_convert``, tz database rules)
    makes the drawn label equal the local wall-clock time, including across daylight-saving
    changes (New York: -5 h before the March change, -4 h after). The values are for
    display only; never feed them back into computations.
    """
    zone = _zone(tz)
    ts = np.asarray(ts_ms, dtype=np.int64)
    if zone.key == "UTC" or ts.size == 0:
        return ts.astype(np.float64)
    utc = pd.DatetimeIndex(ts.astype("datetime64[ms]")).tz_localize("UTC")
    wall = utc.tz_convert(zone).tz_localize(None).as_unit("ms").asi8
    return wall.astype(np.float64)


def time_axis_title(tz: str = "UTC") -> str:
    """Axis title naming the display zone, e.g. ``"time (Europe/London)"``."""
    _zone(tz)
    return f"time ({tz})"


def _time_xaxis(tz: str) -> dict:
    """A time axis: dates in zone ``tz`` and the crosshair (``CROSSHAIR``)."""
    return dict(
        type="date",
        title=dict(text=time_axis_title(tz)),
        hoverformat=TIME_HOVER_FORMAT,
        unifiedhovertitle=dict(text=f"%{{x|{TIME_HOVER_FORMAT}}} ({tz})"),
        rangeslider=dict(visible=False),
        **CROSSHAIR,
    )


# --------------------------------------------------------------------------------------
# theme and shared pieces
# --------------------------------------------------------------------------------------

def _theme_layout(theme: str, uirevision: str) -> dict:
    """Layout properties of the theme, except per-axis styling (see ``_axis_style``)."""
    colors = _check_theme(theme)
    if not isinstance(uirevision, str) or not uirevision:
        raise ValueError(f"uirevision ({uirevision!r}) must be a non-empty string")
    # a small explicit template: the default "plotly" template would otherwise be embedded
    # in every figure's JSON; axis defaults are set per axis because axis entries in a
    # template cost ~5 ms of validation per figure
    template = dict(layout=dict(
        paper_bgcolor=colors["paper"],
        plot_bgcolor=colors["plot"],
        font=dict(color=colors["font"], size=12),
        colorway=colors["colorway"],
        hoverlabel=dict(font=dict(size=12)),
    ))
    return dict(
        template=template,
        margin=dict(l=55, r=20, t=36, b=40),
        hovermode="x unified",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0.0),
        dragmode="zoom",
        uirevision=uirevision,
    )


def _axis_style(theme: str) -> dict:
    colors = _check_theme(theme)
    return dict(gridcolor=colors["grid"], zerolinecolor=colors["zero"], linecolor=colors["grid"])


def apply_theme(fig: go.Figure, *, theme: str = "dark", uirevision: str = "chart") -> go.Figure:
    """Apply the dashboard's look to ``fig`` in place and return it.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
    theme : {"dark", "light"}, default "dark"
    uirevision : str, default "chart"
        Constant key stored in ``layout.uirevision``: while it stays the same between
        updates, Plotly keeps the user's zoom, pan and legend choices.

    Returns
    -------
    plotly.graph_objects.Figure
        The same figure with: a small template (background, font, colorway), grid colours
        on every axis, compact margins, ``hovermode="x unified"``, a horizontal legend
        above the plot, ``dragmode="zoom"``, range sliders off, ``uirevision`` set. The
        builders below produce exactly this look without calling it (one validation pass).
    """
    fig.update_layout(_theme_layout(theme, uirevision))
    style = _axis_style(theme)
    fig.update_xaxes(rangeslider_visible=False, **style)
    fig.update_yaxes(**style)
    return fig


def _figure(traces, *, theme: str, uirevision: str, **layout_parts) -> go.Figure:
    """Build a themed figure in one pass; axis dicts in ``layout_parts`` get the axis style."""
    layout = _theme_layout(theme, uirevision)
    style = _axis_style(theme)
    for key, value in layout_parts.items():
        if key.startswith(("xaxis", "yaxis")):
            value = {**style, **value}
            if key.startswith("xaxis"):
                value.setdefault("rangeslider", dict(visible=False))
        layout[key] = value
    return go.Figure(data=list(traces), layout=layout, _validate=VALIDATE_FIGURES)


def empty_figure(message: str, *, theme: str = "dark", uirevision: str = "empty") -> go.Figure:
    """A placeholder with ``message`` centred, e.g. "z-score: needs 60 bars, has 14".

    Parameters
    ----------
    message : str
        Text to show (why there is nothing to plot yet).
    theme : {"dark", "light"}, default "dark"
    uirevision : str, default "empty"
        Builders pass their chart's key, so the chart keeps one identity while warming up.

    Returns
    -------
    plotly.graph_objects.Figure
        No traces, hidden axes, one centred annotation.
    """
    annotation = dict(text=str(message), x=0.5, y=0.5, xref="paper", yref="paper",
                      showarrow=False, font=dict(size=14))
    return _figure([], theme=theme, uirevision=uirevision, annotations=[annotation],
                   xaxis=dict(visible=False), yaxis=dict(visible=False))


def _value_format(values: np.ndarray, significant: int) -> str:
    """d3 format with enough decimals for ``significant`` digits of the largest |value|."""
    finite = np.abs(values[np.isfinite(values)])
    largest = float(finite.max()) if finite.size else 0.0
    if largest == 0.0:
        return ",.2f"
    digits_before_point = math.floor(math.log10(largest)) + 1
    decimals = min(10, max(0, significant - digits_before_point))
    return f",.{decimals}f"


def _percent_format(fractions: np.ndarray) -> str:
    """d3 percent format with enough decimals that ticks of a shallow range differ (0.25 %)."""
    finite = np.abs(fractions[np.isfinite(fractions)])
    largest = float(finite.max()) if finite.size else 0.0
    if largest >= 0.1:
        return ".0%"
    return ".1%" if largest >= 0.01 else ".2%"


def _line(ts: np.ndarray, values: np.ndarray, *, name: str, tz: str, max_points: int,
          hover_format: str, color: str | None = None, dash: str | None = None,
          width: float = 1.5, **trace_options) -> go.Scatter:
    keep = downsample_line(ts.astype(np.float64), values, max_points)
    return go.Scatter(
        _validate=VALIDATE_FIGURES,
        x=to_display_ms(ts[keep], tz),
        y=values[keep],
        name=name,
        mode="lines",
        line={key: value for key, value in (("color", color), ("dash", dash), ("width", width))
              if value is not None},
        yhoverformat=hover_format,
        **trace_options,
    )


def _has_values(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).any())


def _level(y: float, *, color: str, dash: str, label: str | None) -> tuple[dict, dict | None]:
    """A horizontal line across the plot at ``y`` (a layout shape) and its label."""
    shape = dict(type="line", xref="x domain", x0=0.0, x1=1.0, yref="y", y0=y, y1=y,
                 line=dict(color=color, dash=dash, width=1), layer="below")
    if label is None:
        return shape, None
    # at the left edge: the right one is under Plotly's toolbar, which hid "+2 entry"
    annotation = dict(xref="x domain", x=0.0, xanchor="left", yref="y", y=y, yanchor="bottom",
                      text=label, showarrow=False, font=dict(size=10, color=color))
    return shape, annotation


def _first_common(a: np.ndarray, b: np.ndarray) -> int | None:
    """First value of sorted ``a`` that also occurs in sorted ``b`` (binary search)."""
    if a.size == 0 or b.size == 0:
        return None
    position = np.minimum(np.searchsorted(b, a), b.size - 1)
    found = np.flatnonzero(b[position] == a)
    return int(a[found[0]]) if found.size else None


def _format_duration(ms: int) -> str:
    for unit_ms, unit in ((86_400_000, "d"), (3_600_000, "h"), (60_000, "min"), (1_000, "s")):
        if ms % unit_ms == 0:
            return f"{ms // unit_ms}{unit}"
    return f"{ms}ms"


def _bar_interval_ms(ts: np.ndarray) -> int:
    """The bar length implied by sorted bar open times: their smallest positive gap (1 s for one bar)."""
    gaps = np.diff(ts)
    positive = gaps[gaps > 0]
    return int(positive.min()) if positive.size else 1_000


def _volume_traces(ts: np.ndarray, x_open: np.ndarray, volume: np.ndarray, up: np.ndarray,
                   width_ms: int, tz: str) -> list[go.Scatter]:
    """Volume columns as two filled step lines, bars that closed up and bars that closed down.

    One SVG path per trace instead of one element per bar: a ``go.Bar`` of 1,800 bars costs
    the browser about a quarter of a second per chart to draw. Each column spans
    ``width_ms`` from its bar's open; where the next bar does not start at the end of this
    one the line drops to zero, so a gap in the data stays a gap. Hover is on the candles.
    ``x_open`` is ``to_display_ms(ts, tz)``, already computed for the candles.
    """
    ends = ts + width_ms
    gap_after = np.append(ts[1:] != ends[:-1], True)
    slot = np.arange(ts.size) + np.concatenate(([0], np.cumsum(gap_after)[:-1]))
    size = ts.size + int(gap_after.sum())
    x = np.empty(size)
    heights = np.zeros(size)
    is_up = np.zeros(size, dtype=bool)
    x[slot] = x_open
    heights[slot] = np.nan_to_num(volume, nan=0.0)
    is_up[slot] = up
    x[slot[gap_after] + 1] = to_display_ms(ends[gap_after], tz)
    return [go.Scatter(_validate=VALIDATE_FIGURES,
                       x=x, y=np.where(is_up == side, heights, 0.0), name=name, mode="lines",
                       line=dict(shape="hv", width=0, color=color), fill="tozeroy",
                       fillcolor=color, opacity=0.6, hoverinfo="skip", showlegend=False,
                       yaxis="y2")
            for side, name, color in ((True, "volume (up bars)", UP_COLOR),
                                      (False, "volume (down bars)", DOWN_COLOR))]


# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------

def candlestick_figure(bars: pd.DataFrame, symbol: str, *, tz: str = "UTC", theme: str = "dark",
                       uirevision: str = "candles", max_points: int = DEFAULT_MAX_CANDLES,
                       empty_message: str | None = None, style: str = "candles",
                       log_y: bool = False, range_buttons: bool = True) -> go.Figure:
    """Candlesticks (or a close line or area) with a volume panel below, one time axis.

    Parameters
    ----------
    bars : pandas.DataFrame
        Bars indexed by ``ts`` (int64 epoch ms, bar open): open, high, low, close and
        optionally volume.
    symbol : str
        Shown in the legend.
    tz : str, default "UTC"
        Display zone (IANA name).
    theme : {"dark", "light"}, default "dark"
    uirevision : str, default "candles"
        Constant key that keeps the user's zoom across refreshes.
    max_points : int, default 1000
        Maximum number of candles; longer inputs are aggregated with ``choose_bucket_ms`` /
        ``aggregate_ohlc`` and the legend names the candle width ("BTCUSDT (1min candles)").
    empty_message : str, optional
        Message of the placeholder returned when there is no bar to draw.
    style : {"candles", "line", "area"}, default "candles"
        Candlesticks, or the closes as a line, or as a filled area (the fill reaches down
        to the lowest low drawn, not to zero, so the moves stay visible).
    log_y : bool, default False
        Logarithmic price axis (equal percentage moves look equal).
    range_buttons : bool, default True
        Buttons above the chart that show the last 15m, 1h, 6h, 24h or all of the bars
        (Plotly's range selector: no rerun of the page).

    Returns
    -------
    plotly.graph_objects.Figure
        Trace 0: ``go.Candlestick`` (``go.Scatter`` of the closes for "line" and "area")
        on y (upper 72 %), its hover text the bar's volume;
        traces 1 and 2 (when a volume column exists): volume columns on y2 as filled step
        lines (``_volume_traces``), green for bars that closed at or above their open, red
        otherwise. One x axis (``type="date"``) for both panels, so zoom and the unified
        hover cover both.

    Notes
    -----
    Bars with a missing price are not drawn; a NaN volume draws no volume bar.
    """
    _check_bars(bars, "bars")
    _check_max_points(max_points)
    _zone(tz)
    if style not in CHART_STYLES:
        raise ValueError(f"style ({style!r}) must be one of {', '.join(CHART_STYLES)}")
    drawable = bars[bars[["open", "high", "low", "close"]].notna().all(axis=1)]
    if len(drawable) == 0:
        return empty_figure(empty_message or f"{symbol}: no bars yet", theme=theme, uirevision=uirevision)

    bucket_ms = choose_bucket_ms(drawable.index.to_numpy(dtype=np.int64), max_points)
    label = symbol
    if bucket_ms is not None:
        drawable = aggregate_ohlc(drawable, bucket_ms)
        label = f"{symbol} ({_format_duration(bucket_ms)} candles)"

    x = to_display_ms(drawable.index.to_numpy(dtype=np.int64), tz)
    open_ = drawable["open"].to_numpy(dtype=np.float64)
    close = drawable["close"].to_numpy(dtype=np.float64)
    price_axis = dict(domain=[0.28, 1.0], title=dict(text="price"))
    if style == "candles":
        traces = [go.Candlestick(
            _validate=VALIDATE_FIGURES,
            x=x,
            open=open_,
            high=drawable["high"].to_numpy(dtype=np.float64),
            low=drawable["low"].to_numpy(dtype=np.float64),
            close=close,
            name=label,
            increasing=dict(line=dict(color=UP_COLOR, width=1), fillcolor=UP_COLOR),
            decreasing=dict(line=dict(color=DOWN_COLOR, width=1), fillcolor=DOWN_COLOR),
            yhoverformat=_value_format(np.concatenate((open_, close)), significant=7),
            yaxis="y",
        )]
    else:
        traces = [go.Scatter(
            _validate=VALIDATE_FIGURES,
            x=x, y=close, mode="lines", name=label.replace("candles", "bars"),
            line=dict(color=PRICE_LINE_COLOR, width=1.5),
            fill="tozeroy" if style == "area" else None,
            yhoverformat=_value_format(close, significant=7), yaxis="y")]
        if style == "area":  # the fill's floor: just under the lowest close, not zero
            low, high = float(np.min(close)), float(np.max(close))
            pad = (high - low) * 0.05 or abs(high) * 1e-4 or 1.0
            price_axis["range"] = ([math.log10(max(low - pad, low / 2)),
                                    math.log10(high + pad)] if log_y else
                                   [low - pad, high + pad])
    if log_y:
        price_axis["type"] = "log"
    time_axis = dict(_time_xaxis(tz), anchor="y2")
    if range_buttons:
        time_axis["rangeselector"] = dict(
            buttons=[dict(label=label_, count=count, step=step, stepmode="backward")
                     for label_, count, step in RANGE_BUTTONS] + [dict(label="all",
                                                                      step="all")],
            # top right, clear of the legend; translucent so both themes read it
            x=1.0, xanchor="right", y=1.0, yanchor="bottom",
            bgcolor="rgba(128,128,128,0.18)", activecolor="rgba(128,128,128,0.45)",
            font=dict(size=11, color=_THEMES[theme]["font"] if theme in _THEMES else None))
    if "volume" in drawable.columns:
        ts = drawable.index.to_numpy(dtype=np.int64)
        volume = drawable["volume"].to_numpy(dtype=np.float64, na_value=np.nan)
        spec = _value_format(volume, significant=5)[1:]  # the d3 format is a Python spec too
        traces[0].update(text=[f"volume {v:{spec}}" if math.isfinite(v) else "volume —"
                               for v in volume.tolist()])
        traces.extend(_volume_traces(ts, x, volume, close >= open_,
                                     bucket_ms or _bar_interval_ms(ts), tz))
    return _figure(
        traces, theme=theme, uirevision=uirevision,
        xaxis=time_axis,
        yaxis=price_axis,
        yaxis2=dict(domain=[0.0, 0.22], title=dict(text="volume"), anchor="x"),
        hoversubplots="axis",
        bargap=0.1,
    )


def normalised_overlay_figure(bars_y: pd.DataFrame, bars_x: pd.DataFrame, y_name: str, x_name: str, *,
                              tz: str = "UTC", theme: str = "dark", uirevision: str = "overlay",
                              max_points: int = DEFAULT_MAX_POINTS,
                              empty_message: str | None = None) -> go.Figure:
    """The two legs' closes rebased to 100 at their first common bar.

    Parameters
    ----------
    bars_y, bars_x : pandas.DataFrame
        Bars of the dependent (y) and the independent (x) leg, indexed by int64 epoch ms,
        with a ``close`` column.
    y_name, x_name : str
        Leg names for the legend.
    tz, theme, uirevision, max_points, empty_message
        As in ``candlestick_figure``.

    Returns
    -------
    plotly.graph_objects.Figure
        Two lines (y leg first), ``100 * close / close[t0]`` from t0 on, where t0 is the
        first ``ts`` at which both legs have a finite, non-zero close. Hover shows the
        rebased value and the actual close.

    Notes
    -----
    Rebasing (rather than two y axes) puts both legs on one readable scale: the vertical
    gap between the lines is the legs' relative performance since t0. Each leg is drawn at
    its own bar times; nothing is forward-filled.
    """
    for bars, arg in ((bars_y, "bars_y"), (bars_x, "bars_x")):
        if not isinstance(bars, pd.DataFrame) or "close" not in bars.columns:
            raise ValueError(f"{arg} must be a pandas DataFrame with a 'close' column")
        if len(bars):
            _check_ms_index(bars.index, arg)
    _check_max_points(max_points)
    _zone(tz)

    legs = []
    for bars, name in ((bars_y, y_name), (bars_x, x_name)):
        close = bars["close"].to_numpy(dtype=np.float64, na_value=np.nan)
        usable = np.isfinite(close) & (close != 0)
        legs.append((bars.index.to_numpy(dtype=np.int64)[usable], close[usable], name))
    t0 = _first_common(legs[0][0], legs[1][0])
    if t0 is None:
        return empty_figure(empty_message or f"{y_name} / {x_name}: no common bars yet",
                            theme=theme, uirevision=uirevision)

    traces = []
    for ts, close, name in legs:
        from_t0 = ts >= t0
        ts, close = ts[from_t0], close[from_t0]
        rebased = 100.0 * close / close[0]  # ts[0] == t0: t0 is a usable bar of both legs
        keep = downsample_line(ts.astype(np.float64), rebased, max_points)
        price_format = _value_format(close, significant=7)
        traces.append(go.Scatter(
            _validate=VALIDATE_FIGURES,
            x=to_display_ms(ts[keep], tz),
            y=rebased[keep],
            customdata=close[keep],
            name=name,
            mode="lines",
            line=dict(width=1.5),
            hovertemplate=f"{name}: %{{y:.2f}} (close %{{customdata:{price_format}}})<extra></extra>",
        ))
    return _figure(traces, theme=theme, uirevision=uirevision, xaxis=_time_xaxis(tz),
                   yaxis=dict(title=dict(text="rebased (first common bar = 100)")))


def spread_figure(spread: pd.Series, mean: pd.Series | None = None, upper: pd.Series | None = None,
                  lower: pd.Series | None = None, *, name: str = "spread", tz: str = "UTC",
                  theme: str = "dark", uirevision: str = "spread", max_points: int = DEFAULT_MAX_POINTS,
                  empty_message: str | None = None) -> go.Figure:
    """The spread with its rolling mean and ±k·std bands.

    Parameters
    ----------
    spread : pandas.Series
        Spread indexed by int64 epoch ms.
    mean, upper, lower : pandas.Series, optional
        Rolling mean and mean ± k·std (computed by the caller with trailing windows), same
        kind of index. Omitted or all-NaN series are not drawn.
    name : str, default "spread"
        Legend and y-axis name (e.g. "log spread").
    tz, theme, uirevision, max_points, empty_message
        As in ``candlestick_figure``.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces in order: spread (solid), rolling mean (dotted), upper band, lower band
        (dashed grey). NaN values (window still filling) are gaps. An empty figure when
        the spread has no finite value.
    """
    _check_max_points(max_points)
    _zone(tz)
    ts, values = _series_arrays(spread, "spread")
    if not _has_values(values):
        return empty_figure(empty_message or f"{name}: no data yet", theme=theme, uirevision=uirevision)
    hover_format = _value_format(values, significant=5)
    traces = [_line(ts, values, name=name, tz=tz, max_points=max_points, hover_format=hover_format)]
    for series, arg, label, dash in ((mean, "mean", "rolling mean", "dot"),
                                     (upper, "upper", "upper band", "dash"),
                                     (lower, "lower", "lower band", "dash")):
        if series is None:
            continue
        band_ts, band = _series_arrays(series, arg)
        if _has_values(band):
            traces.append(_line(band_ts, band, name=label, tz=tz, max_points=max_points,
                                hover_format=hover_format, color=BAND_COLOR, dash=dash, width=1))
    return _figure(traces, theme=theme, uirevision=uirevision, xaxis=_time_xaxis(tz),
                   yaxis=dict(title=dict(text=name)))


def zscore_figure(z: pd.Series, entry: float, exit: float, *, tz: str = "UTC", theme: str = "dark",
                  uirevision: str = "zscore", max_points: int = DEFAULT_MAX_POINTS,
                  empty_message: str | None = None) -> go.Figure:
    """The z-score with ±entry and ±exit thresholds and the zero line.

    Parameters
    ----------
    z : pandas.Series
        z-score indexed by int64 epoch ms.
    entry : float
        Entry threshold, > 0; lines at +entry and -entry.
    exit : float
        Exit threshold, 0 <= exit < entry; lines at ±exit (none besides 0 when exit is 0).
    tz, theme, uirevision, max_points, empty_message
        As in ``candlestick_figure``.

    Returns
    -------
    plotly.graph_objects.Figure
        One line trace; the levels are layout shapes spanning the plot width (0, ±entry
        dashed, ±exit dotted), labelled "+2 entry", "-0.5 exit", ...

    Notes
    -----
    Downsampling keeps the largest and smallest z, so the extreme excursion is never
    hidden by the display.
    """
    for value, arg in ((entry, "entry"), (exit, "exit")):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(value):
            raise ValueError(f"{arg} ({value!r}) must be a finite number")
    if entry <= 0:
        raise ValueError(f"entry ({entry}) must be positive")
    if not 0 <= exit < entry:
        raise ValueError(f"exit ({exit}) must satisfy 0 <= exit < entry ({entry})")
    _check_max_points(max_points)
    _zone(tz)
    ts, values = _series_arrays(z, "z")
    if not _has_values(values):
        return empty_figure(empty_message or "z-score: no data yet", theme=theme, uirevision=uirevision)

    levels = [_level(0.0, color=BAND_COLOR, dash="solid", label=None),
              _level(entry, color=ENTRY_COLOR, dash="dash", label=f"+{entry:g} entry"),
              _level(-entry, color=ENTRY_COLOR, dash="dash", label=f"-{entry:g} entry")]
    if exit > 0:
        levels += [_level(exit, color=EXIT_COLOR, dash="dot", label=f"+{exit:g} exit"),
                   _level(-exit, color=EXIT_COLOR, dash="dot", label=f"-{exit:g} exit")]
    return _figure(
        [_line(ts, values, name="z-score", tz=tz, max_points=max_points, hover_format=".2f")],
        theme=theme, uirevision=uirevision,
        shapes=[shape for shape, _ in levels],
        annotations=[label for _, label in levels if label is not None],
        xaxis=_time_xaxis(tz),
        yaxis=dict(title=dict(text="z-score")),
    )


def beta_figure(rolling_beta: pd.Series, kalman_beta: pd.Series | None = None, *, tz: str = "UTC",
                theme: str = "dark", uirevision: str = "beta", max_points: int = DEFAULT_MAX_POINTS,
                empty_message: str | None = None) -> go.Figure:
    """Hedge ratio β over time: rolling regression and, optionally, Kalman filter.

    Parameters
    ----------
    rolling_beta : pandas.Series
        Rolling β indexed by int64 epoch ms.
    kalman_beta : pandas.Series, optional
        Kalman β (whichever estimate the caller trades on, e.g. the prior β(t|t-1)).
    tz, theme, uirevision, max_points, empty_message
        As in ``candlestick_figure``.

    Returns
    -------
    plotly.graph_objects.Figure
        One line per series with data ("rolling β", then "Kalman β"), hover to 4 decimals.
        An empty figure only when neither series has a finite value.
    """
    _check_max_points(max_points)
    _zone(tz)
    inputs = [(rolling_beta, "rolling_beta", "rolling β")]
    if kalman_beta is not None:
        inputs.append((kalman_beta, "kalman_beta", "Kalman β"))
    traces = []
    for series, arg, label in inputs:
        ts, values = _series_arrays(series, arg)
        if _has_values(values):
            traces.append(_line(ts, values, name=label, tz=tz, max_points=max_points, hover_format=".4f"))
    if not traces:
        return empty_figure(empty_message or "β: no data yet", theme=theme, uirevision=uirevision)
    return _figure(traces, theme=theme, uirevision=uirevision, xaxis=_time_xaxis(tz),
                   yaxis=dict(title=dict(text="β (hedge ratio)")))


def correlation_figure(rolling_corr: pd.Series, *, name: str = "rolling correlation", tz: str = "UTC",
                       theme: str = "dark", uirevision: str = "correlation",
                       max_points: int = DEFAULT_MAX_POINTS, empty_message: str | None = None) -> go.Figure:
    """Rolling correlation over time, y axis kept within [-1, 1].

    Parameters
    ----------
    rolling_corr : pandas.Series
        Rolling correlation (of log returns; see the analytics module) indexed by int64
        epoch ms.
    name : str, default "rolling correlation"
        Legend and y-axis name, e.g. "corr of log returns (60 bars)".
    tz, theme, uirevision, max_points, empty_message
        As in ``candlestick_figure``.

    Returns
    -------
    plotly.graph_objects.Figure
        One line and a zero line; autorange clipped to [-1, 1]; hover to 3 decimals.
    """
    _check_max_points(max_points)
    _zone(tz)
    ts, values = _series_arrays(rolling_corr, "rolling_corr")
    if not _has_values(values):
        return empty_figure(empty_message or f"{name}: no data yet", theme=theme, uirevision=uirevision)
    zero_line, _ = _level(0.0, color=BAND_COLOR, dash="solid", label=None)
    return _figure(
        [_line(ts, values, name=name, tz=tz, max_points=max_points, hover_format=".3f")],
        theme=theme, uirevision=uirevision,
        shapes=[zero_line],
        xaxis=_time_xaxis(tz),
        yaxis=dict(title=dict(text=name), autorangeoptions=dict(minallowed=-1.0, maxallowed=1.0)),
    )


def pvalue_colorscale(alpha: float = 0.05, zmin: float = 0.0, zmax: float = 1.0) -> list[list]:
    """Diverging colour scale for p-values whose neutral midpoint is ``alpha``.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level; must lie strictly between zmin and zmax.
    zmin, zmax : float, default 0 and 1
        The heatmap's colour range (pass the same values to ``heatmap_figure``).

    Returns
    -------
    list of [position, colour]
        Greens below alpha (darker = smaller p = stronger evidence against "no
        cointegration"), pale yellow at alpha, orange to red above it.
    """
    if not zmin < alpha < zmax:
        raise ValueError(f"alpha ({alpha}) must lie strictly between zmin ({zmin}) and zmax ({zmax})")
    mid = (alpha - zmin) / (zmax - zmin)
    return [
        [0.0, "#006837"],
        [mid / 2, "#66bd63"],
        [mid, "#ffffbf"],
        [mid + (1 - mid) / 4, "#fdae61"],
        [1.0, "#d73027"],
    ]


def heatmap_figure(matrix: pd.DataFrame, title: str = "", zmin: float | None = None,
                   zmax: float | None = None, colorscale: str | Sequence = "RdBu",
                   text_fmt: str = ".2f", *, theme: str = "dark", uirevision: str = "heatmap",
                   empty_message: str | None = None) -> go.Figure:
    """Annotated heatmap of a symbol x symbol matrix (correlations, corrected p-values).

    Parameters
    ----------
    matrix : pandas.DataFrame
        Values; rows and columns labelled by symbol. NaN cells (the diagonal of a p-value
        matrix, untested pairs) are left blank.
    title : str, default ""
    zmin, zmax : float, optional
        Colour range, e.g. -1, 1 for correlation, 0, 1 for p-values. Default: data range.
    colorscale : str or list, default "RdBu"
        Any Plotly colour scale; for p-values use ``pvalue_colorscale(0.05)``.
    text_fmt : str, default ".2f"
        Python format spec of the cell text and hover value (".3f", ".1e", ...).
    theme, uirevision, empty_message
        As in ``candlestick_figure``.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``go.Heatmap``, first row at the top (read like a table), categorical axes.
        NaN cells: z is None (drawn blank), text "", hover "n/a". Hover mode "closest".
    """
    if not isinstance(matrix, pd.DataFrame):
        raise ValueError(f"matrix must be a pandas DataFrame, got {type(matrix).__name__}")
    try:
        format(0.5, text_fmt)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"text_fmt ({text_fmt!r}) is not a valid format spec") from exc
    if zmin is not None and zmax is not None and not zmin < zmax:
        raise ValueError(f"zmin ({zmin}) must be smaller than zmax ({zmax})")
    if matrix.size == 0:
        return empty_figure(empty_message or f"{title or 'matrix'}: no data yet",
                            theme=theme, uirevision=uirevision)

    values = matrix.to_numpy(dtype=np.float64, na_value=np.nan)
    cells = [[(float(v), format(v, text_fmt)) if math.isfinite(v) else (None, "") for v in row]
             for row in values]
    heatmap = go.Heatmap(  # validated: it expands a named colour scale as Python's Plotly has it
        z=[[value for value, _ in row] for row in cells],
        x=[str(c) for c in matrix.columns],
        y=[str(i) for i in matrix.index],
        zmin=zmin,
        zmax=zmax,
        colorscale=colorscale,
        text=[[text for _, text in row] for row in cells],
        texttemplate="%{text}",
        customdata=[[text or "n/a" for _, text in row] for row in cells],
        hovertemplate="%{y} / %{x}: %{customdata}<extra></extra>",
        hoverongaps=True,
        xgap=1,
        ygap=1,
        colorbar=dict(thickness=12),
    )
    return _figure(
        [heatmap], theme=theme, uirevision=uirevision,
        title=dict(text=title, xref="paper", x=0.0, xanchor="left"),
        hovermode="closest",
        margin=dict(l=10, r=20, t=44 if title else 20, b=10),
        # automargin: the margins grow to fit symbol labels of any length
        xaxis=dict(type="category", showgrid=False, automargin=True),
        yaxis=dict(type="category", autorange="reversed", showgrid=False, automargin=True),
    )


def equity_figure(equity: pd.Series, drawdown: pd.Series | None = None, *, tz: str = "UTC",
                  theme: str = "dark", uirevision: str = "equity", max_points: int = DEFAULT_MAX_POINTS,
                  empty_message: str | None = None) -> go.Figure:
    """Equity curve with a drawdown panel below, sharing one time axis.

    Parameters
    ----------
    equity : pandas.Series
        Equity (capital, > 0) indexed by int64 epoch ms.
    drawdown : pandas.Series, optional
        Drawdown as a fraction (<= 0). Default: ``equity / equity.cummax() - 1``, computed
        here on the full-resolution equity, before any downsampling.
    tz, theme, uirevision, max_points, empty_message
        As in ``candlestick_figure``.

    Returns
    -------
    plotly.graph_objects.Figure
        Trace 0: equity line on y (upper 68 %); trace 1: drawdown filled to zero on y2
        with a percent axis. Downsampling keeps the deepest drawdown point.

    Notes
    -----
    The default drawdown needs positive equity; for a P&L series that starts at 0, pass
    the drawdown explicitly (a ValueError says so otherwise).
    """
    _check_max_points(max_points)
    _zone(tz)
    ts, values = _series_arrays(equity, "equity")
    if not _has_values(values):
        return empty_figure(empty_message or "equity: no data yet", theme=theme, uirevision=uirevision)
    if drawdown is None:
        lowest = np.nanmin(values)
        if lowest <= 0:
            raise ValueError(
                f"equity must be positive to compute drawdown (minimum {lowest:g}); pass drawdown"
            )
        dd_ts = ts
        dd = values / np.fmax.accumulate(values) - 1.0  # fmax skips NaN like pandas cummax
    else:
        dd_ts, dd = _series_arrays(drawdown, "drawdown")

    traces = [_line(ts, values, name="equity", tz=tz, max_points=max_points,
                    hover_format=_value_format(values, significant=7))]
    if _has_values(dd):
        traces.append(_line(dd_ts, dd, name="drawdown", tz=tz, max_points=max_points,
                            hover_format=".2%", color=DOWN_COLOR, width=1, fill="tozeroy",
                            yaxis="y2"))
    return _figure(
        traces, theme=theme, uirevision=uirevision,
        xaxis=dict(_time_xaxis(tz), anchor="y2"),
        yaxis=dict(domain=[0.32, 1.0], title=dict(text="equity")),
        yaxis2=dict(domain=[0.0, 0.26], title=dict(text="drawdown"),
                    tickformat=_percent_format(dd), anchor="x"),
        hoversubplots="axis",
    )


# --------------------------------------------------------------------------------------
# linked time axes, markers, crosshair
# --------------------------------------------------------------------------------------

MARKER_STYLES = {  # kind -> (Plotly marker symbol, colour, legend name)
    "long entry": ("triangle-up", UP_COLOR, "long entry"),
    "short entry": ("triangle-down", DOWN_COLOR, "short entry"),
    "exit": ("x-thin-open", "#9aa0a6", "exit"),
    "alert": ("diamond", ENTRY_COLOR, "alert fired"),
}


def time_range_ms(x_range) -> tuple[float, float]:
    """An x range as Plotly reports it (date strings such as ``"2025-12-15 08:44:00.5"``,
    or numbers) -> (low, high) in the figures' display milliseconds."""
    def to_ms(value) -> float:
        if isinstance(value, str):
            return pd.Timestamp(value).value / 1e6  # naive = the display clock, as drawn
        return float(value)

    low, high = sorted(to_ms(v) for v in x_range)
    return low, high


def show_time_range(fig: go.Figure, x_range, *, padding: float = 0.05) -> go.Figure:
    """Show ``x_range`` on every x-axis of ``fig`` and fit each y-axis to the data inside it.

    What a trader expects from zooming into a time window: the y-axis rescales to the
    visible values (Plotly's autorange would keep the whole series' range). Each y-axis
    gets [min, max] of its traces' values whose x lies in the window (candles: low and
    high), widened by ``padding`` of the span on each side; an axis with no visible
    finite value keeps its autorange. Returns ``fig``, changed in place.
    """
    low, high = time_range_ms(x_range)
    bounds: dict[str, list[float]] = {}
    for trace in fig.data:
        if trace.x is None:
            continue
        x = np.asarray(trace.x, dtype=np.float64)
        inside = (x >= low) & (x <= high)
        if trace.type == "candlestick":
            columns = (trace.low, trace.high)
        else:
            columns = (trace.y,)
        values = np.concatenate([np.asarray(c, dtype=np.float64)[inside] for c in columns
                                 if c is not None] or [np.array([])])
        values = values[np.isfinite(values)]
        if len(values):
            axis = "yaxis" + (trace.yaxis or "y")[1:]
            seen = bounds.setdefault(axis, [math.inf, -math.inf])
            seen[0], seen[1] = min(seen[0], values.min()), max(seen[1], values.max())
    layout = {axis: {"range": list(x_range), "autorange": False}
              for axis in _axis_names(fig, "xaxis")}
    for axis, (lo, hi) in bounds.items():
        pad = (hi - lo) * padding if hi > lo else (abs(hi) * 1e-4 or 1.0)  # one value
        layout[axis] = {"range": [lo - pad, hi + pad], "autorange": False}
    fig.update_layout(layout)
    return fig


def _axis_names(fig: go.Figure, kind: str) -> list[str]:
    """"xaxis", "xaxis2", ... (``kind`` "xaxis" or "yaxis") in ``fig``'s layout. A direct
    ``update_layout`` of these is ~10x cheaper than ``update_xaxes``, which walks the
    subplot grid."""
    return [name for name in fig.layout.to_plotly_json() if name.startswith(kind)] or [kind]


def marker_trace(ts_ms, on: pd.Series, kind: str, *, hover: Sequence[str] = (),
                 tz: str = "UTC", yaxis: str = "y") -> go.Scatter | None:
    """Markers for events (backtest entries and exits, alert firings) on a time chart.

    Parameters
    ----------
    ts_ms : array-like of int
        Event times, epoch ms.
    on : pandas.Series
        The series drawn on the chart (indexed by epoch ms): each marker sits on its value
        at the event time (the last value at or before it), so a marker lies on the line.
        Events before the series' first value are not drawn.
    kind : {"long entry", "short entry", "exit", "alert"}
        The marker's shape, colour and legend name (``MARKER_STYLES``).
    hover : sequence of str
        One hover text per event (e.g. "long entry, z 2.13"); optional.
    tz, yaxis
        The display zone and the y-axis the series uses.

    Returns
    -------
    plotly.graph_objects.Scatter or None
        One markers-only trace; None without an event to draw.
    """
    if kind not in MARKER_STYLES:
        raise ValueError(f"kind ({kind!r}) must be one of {', '.join(MARKER_STYLES)}")
    _check_ms_index(on.index, "on")
    ts = np.asarray(ts_ms, dtype=np.int64)
    values = on.sort_index().reindex(ts, method="ffill").to_numpy(dtype=np.float64) \
        if len(on) else np.full(len(ts), np.nan)
    keep = np.isfinite(values)
    if not keep.any():
        return None
    symbol, color, name = MARKER_STYLES[kind]
    text = list(np.asarray(hover, dtype=object)[keep]) if len(hover) else None
    return go.Scatter(
        _validate=VALIDATE_FIGURES,
        x=to_display_ms(ts[keep], tz), y=values[keep], mode="markers", name=name, text=text,
        hovertemplate="%{text}<extra></extra>" if text else None, yaxis=yaxis,
        marker=dict(symbol=symbol, color=color, size=11,
                    line=dict(width=2 if kind == "exit" else 1, color=color)))


def add_markers(fig: go.Figure, ts_ms, on: pd.Series, kind: str, *, hover: Sequence[str] = (),
                tz: str = "UTC", yaxis: str = "y") -> go.Figure:
    """``fig`` with ``marker_trace(...)`` added (nothing without events); see there.
    Several kinds: build the traces with ``marker_trace`` and add them with one
    ``fig.add_traces`` (each ``add_trace`` re-validates the figure: 4x slower)."""
    trace = marker_trace(ts_ms, on, kind, hover=hover, tz=tz, yaxis=yaxis)
    if trace is not None:
        fig.add_traces([trace])
    return fig


def apply_colors(fig: go.Figure, theme: str) -> go.Figure:
    """Recolour a built figure for ``theme`` ("dark" or "light": background, font,
    colorway, grid lines) and leave the rest of its layout (margins, axes, legend) alone.
    For a page that switches theme after the figure was built. Returns ``fig``."""
    style = _axis_style(theme)
    fig.update_layout({"template": _theme_layout(theme, "recolour")["template"],
                       **{axis: style for axis in (*_axis_names(fig, "xaxis"),
                                                   *_axis_names(fig, "yaxis"))}})
    return fig


def copy_figure(fig: go.Figure) -> go.Figure:
    """An independent copy of ``fig`` (~1 ms for 1,000 candles against ~4 ms to build them:
    no property checks, see ``VALIDATE_FIGURES``). Its data stay numpy arrays;
    ``go.Figure(fig)`` goes through ``to_dict``, which turns them into base64 specs that the
    time-range code (``show_time_range``, ``newest_x``) cannot read."""
    return go.Figure(data=[trace.to_plotly_json() for trace in fig.data],
                     layout=fig.layout.to_plotly_json(), _validate=VALIDATE_FIGURES)


def newest_x(fig: go.Figure) -> float:
    """The largest x drawn in ``fig`` (display ms for time charts); -inf without data."""
    newest = -math.inf
    for trace in fig.data:
        if trace.x is not None and len(trace.x):
            x = np.asarray(trace.x, dtype=np.float64)
            if np.isfinite(x).any():
                newest = max(newest, float(np.nanmax(x)))
    return newest


# --------------------------------------------------------------------------------------
# Sparklines (issue 16: the Pairs tab's tables)
# --------------------------------------------------------------------------------------

SPARKLINE_POINTS = 60  # a table cell is ~120 px wide: 2 px per point


def sparkline_points(series, points: int = SPARKLINE_POINTS) -> list[float]:
    """A series as a short list of numbers for ``st.column_config.LineChartColumn``.

    Parameters
    ----------
    series : pandas.Series or array_like
        Values in time order (e.g. a pair's trailing z); NaN values are skipped.
    points : int, default 60
        Largest number of values returned (>= ``MIN_MAX_POINTS``).

    Returns
    -------
    list of float
        The finite values, thinned with ``downsample_line`` (LTTB after a min/max
        preselection, so spikes such as a z beyond entry survive) when there are more than
        ``points``; an empty list when none is finite.
    """
    _check_max_points(points)
    values = np.asarray(series, dtype=float)
    values = values[np.isfinite(values)]
    if values.size <= points:
        return values.tolist()
    keep = downsample_line(np.arange(values.size, dtype=float), values, points)
    return values[keep].tolist()


def highlight_beyond(values, threshold: float, color: str = ENTRY_COLOR) -> list[str]:
    """CSS per cell for a pandas Styler: colour ``|value| >= threshold`` (e.g. |z| beyond
    entry); NaN and smaller values get no style."""
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold ({threshold!r}) must be a positive number")
    numbers = np.asarray(values, dtype=float)
    return [f"background-color: {color}; color: black" if math.isfinite(v) and abs(v) >= threshold
            else "" for v in numbers]
