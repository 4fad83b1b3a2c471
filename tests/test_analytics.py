"""Tests for analytics.py: planted parameters, library references, look-ahead invariance, edges.

Reference values come from (a) the statsmodels / scipy / pandas call named next to each
assertion, (b) hand counts written in comments, or (c) parameters planted in seeded
synthetic data. Tolerances are explained where they are not machine precision.
"""

import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import statsmodels.api as sm
from statsmodels.stats.multitest import multipletests
from statsmodels.tsa.stattools import adfuller, coint

import analytics

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
# A multiple of 1 h, so every timeframe's buckets start here.
T0 = 1_699_999_200_000
MINUTE = 60_000


# --------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------


def make_cointegrated_pair(n, beta, half_life, seed, alpha=0.3, x_vol=0.002, spread_vol=0.001,
                           bar_ms=MINUTE):
    """Log prices: x a random walk around ln(30000); y = alpha + beta x + OU spread.

    The OU spread is an AR(1) with rho = 2^(-1/half_life), i.e. a planted half-life in bars.
    """
    rng = np.random.default_rng(seed)
    log_x = math.log(30_000) + np.cumsum(rng.normal(0.0, x_vol, n))
    rho = 2.0 ** (-1.0 / half_life)
    shocks = rng.normal(0.0, spread_vol, n)
    ou = np.zeros(n)
    for i in range(1, n):
        ou[i] = rho * ou[i - 1] + shocks[i]
    index = pd.Index(T0 + bar_ms * np.arange(n), dtype=np.int64, name="ts")
    y = pd.Series(alpha + beta * log_x + ou, index=index, name="y")
    x = pd.Series(log_x, index=index, name="x")
    return y, x


def make_random_walks(n, seed, vol=0.002):
    rng = np.random.default_rng(seed)
    index = pd.Index(T0 + MINUTE * np.arange(n), dtype=np.int64, name="ts")
    y = pd.Series(math.log(2_000) + np.cumsum(rng.normal(0.0, vol, n)), index=index)
    x = pd.Series(math.log(30_000) + np.cumsum(rng.normal(0.0, vol, n)), index=index)
    return y, x


def make_ou(n, half_life, seed, vol=1.0):
    rng = np.random.default_rng(seed)
    rho = 2.0 ** (-1.0 / half_life)
    shocks = rng.normal(0.0, vol, n)
    values = np.zeros(n)
    for i in range(1, n):
        values[i] = rho * values[i - 1] + shocks[i]
    return pd.Series(values)


def bars_from_closes(closes, ts, trades=1, volume=1.0):
    """Bars with open = high = low = close (enough for align / correlation tests)."""
    closes = np.asarray(closes, dtype=float)
    frame = pd.DataFrame(
        {
            "open": closes, "high": closes, "low": closes, "close": closes,
            "volume": volume, "buy_volume": np.nan, "trades": trades,
            "notional": closes * volume, "vwap": closes,
        },
        index=pd.Index(np.asarray(ts, dtype=np.int64), name="ts"),
    )
    return frame


def random_ticks(n, seed, span_ms=600_000):
    rng = np.random.default_rng(seed)
    ts = T0 + np.sort(rng.integers(0, span_ms, n))
    ts[10:20] = ts[10]  # a run of identical timestamps
    return pd.DataFrame({
        "ts": ts,
        "trade_id": rng.permutation(n) + 1_000,  # ids not in ts order: ties resolved by id
        "price": 100.0 + np.cumsum(rng.normal(0, 0.05, n)),
        "qty": rng.exponential(1.0, n),
        "is_buyer_maker": rng.integers(0, 2, n),
    })


@pytest.fixture(scope="module")
def coint_csv_pair():
    """tests/data copy of /work/shared/data/synthetic/coint_pair_true_beta_0.06.csv."""
    frame = pd.read_csv(os.path.join(DATA_DIR, "analytics_coint_pair_true_beta_0.06.csv"))
    # pandas 3 parses to microsecond resolution: convert the unit explicitly, never assume ns.
    frame["ts"] = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("ms").astype("int64")
    wide = frame.pivot(index="ts", columns="symbol", values="close")
    return wide["ETHUSDT"], wide["BTCUSDT"]


# --------------------------------------------------------------------------------------
# resample / resample_bars
# --------------------------------------------------------------------------------------

HAND_TICKS = pd.DataFrame(
    [
        # ts,        trade_id, price, qty, is_buyer_maker
        (T0 + 200, 2, 101.0, 1.0, 0),
        (T0 + 200, 1, 100.0, 2.0, 1),  # same ms, lower id: this one opens the first bar
        (T0 + 900, 3, 102.0, 1.0, 0),
        # second T0+1000 .. T0+1999 has no trade: its bar must be absent
        (T0 + 2000, 4, 99.0, 3.0, 1),  # exactly on a boundary: belongs to the bar at T0+2000
        (T0 + 2999, 5, 98.0, 1.0, 0),
        (T0 + 5000, 6, 103.0, 1.0, 0),  # opens the second 5 s bucket
    ],
    columns=["ts", "trade_id", "price", "qty", "is_buyer_maker"],
)


def test_resample_hand_counted_1s_bars():
    shuffled = HAND_TICKS.sample(frac=1.0, random_state=3)  # input order must not matter
    result = analytics.resample(shuffled, "1s")
    # Hand count: bar T0 = ids 1, 2, 3; bar T0+2000 = ids 4, 5; bar T0+5000 = id 6.
    assert result.index.tolist() == [T0, T0 + 2000, T0 + 5000]
    assert result.index.dtype == np.int64 and result.index.name == "ts"
    assert list(result.columns) == list(analytics.BAR_COLUMNS)
    first = result.loc[T0]
    assert (first.open, first.high, first.low, first.close) == (100.0, 102.0, 100.0, 102.0)
    assert first.volume == 4.0 and first.trades == 3
    assert first.buy_volume == 2.0  # ids 2 and 3 are taker buys (is_buyer_maker == 0)
    assert first.notional == pytest.approx(100 * 2 + 101 + 102)
    assert first.vwap == pytest.approx(403 / 4)
    boundary = result.loc[T0 + 2000]
    assert (boundary.open, boundary.close, boundary.trades) == (99.0, 98.0, 2)
    assert boundary.buy_volume == 1.0
    assert result.loc[T0 + 5000].open == result.loc[T0 + 5000].close == 103.0


def test_resample_hand_counted_5s_and_1min_buckets():
    five = analytics.resample(HAND_TICKS, "5s")
    assert five.index.tolist() == [T0, T0 + 5000]
    # ids 1..5 in the first 5 s bucket: open id 1 (100), close id 5 (98), low 98.
    assert (five.iloc[0].open, five.iloc[0].close, five.iloc[0].low) == (100.0, 98.0, 98.0)
    assert five.iloc[0].volume == 8.0 and five.iloc[0].trades == 5
    minute = analytics.resample(HAND_TICKS, "1min")
    assert minute.index.tolist() == [T0]
    assert (minute.iloc[0].open, minute.iloc[0].high, minute.iloc[0].close) == (100.0, 103.0, 103.0)
    assert minute.iloc[0].trades == 6 and minute.iloc[0].buy_volume == 4.0


def test_resample_ties_without_trade_id_keep_input_order():
    ticks = pd.DataFrame({"ts": [T0, T0, T0], "price": [5.0, 7.0, 6.0], "qty": [1.0, 1.0, 1.0]})
    result = analytics.resample(ticks, "1s")
    assert (result.iloc[0].open, result.iloc[0].close) == (5.0, 6.0)


def test_resample_counts_duplicated_trades_and_drops_placeholders():
    # Exact repeats are distinct real trades (no trade id in some captures): never dedupe.
    # price == 0 and qty == 0 rows are futures "X":"NA" placeholders: never in a bar.
    ticks = pd.DataFrame({
        "ts": [T0 + 10, T0 + 10, T0 + 10, T0 + 20],
        "price": [50.0, 50.0, 0.0, 51.0],
        "qty": [0.5, 0.5, 0.0, 1.0],
    })
    result = analytics.resample(ticks, "1s")
    assert result.iloc[0].trades == 3
    assert result.iloc[0].volume == 2.0
    assert result.iloc[0].low == 50.0


def test_resample_buy_volume_nan_when_side_unknown():
    without_side = analytics.resample(HAND_TICKS.drop(columns="is_buyer_maker"), "1s")
    assert without_side["buy_volume"].isna().all()
    partly_known = HAND_TICKS.astype({"is_buyer_maker": float})
    partly_known.loc[partly_known.trade_id == 6, "is_buyer_maker"] = np.nan
    result = analytics.resample(partly_known, "1s")
    assert result.loc[T0, "buy_volume"] == 2.0
    assert math.isnan(result.loc[T0 + 5000, "buy_volume"])


@pytest.mark.parametrize("timeframe", ["1s", "5s", "10s", "30s", "1min", "5min", "15min", "1h"])
def test_resample_matches_pandas_groupby_reference(timeframe):
    ticks = random_ticks(3_000, seed=11)
    size = analytics.TIMEFRAME_MS[timeframe]
    ordered = ticks.sort_values(["ts", "trade_id"])
    bucket = ordered["ts"] // size * size
    grouped = ordered.assign(
        notional=ordered.price * ordered.qty,
        buy=np.where(ordered.is_buyer_maker == 0, ordered.qty, 0.0),
    ).groupby(bucket)
    expected = pd.DataFrame({
        "open": grouped.price.first(), "high": grouped.price.max(), "low": grouped.price.min(),
        "close": grouped.price.last(), "volume": grouped.qty.sum(), "buy_volume": grouped.buy.sum(),
        "trades": grouped.price.size(), "notional": grouped.notional.sum(),
    })
    result = analytics.resample(ticks, timeframe)
    assert result.index.tolist() == expected.index.tolist()
    for column in expected.columns:
        np.testing.assert_allclose(result[column], expected[column], rtol=1e-12, err_msg=column)
    np.testing.assert_allclose(result.vwap, expected.notional / expected.volume, rtol=1e-12)


@pytest.mark.parametrize("bad", ["1S", "1T", "2min", "", None])
def test_resample_rejects_unknown_timeframe(bad):
    with pytest.raises(ValueError, match=r"timeframe \("):
        analytics.resample(HAND_TICKS, bad)


def test_timeframe_ui_aliases_map_to_pandas_3_names():
    assert analytics.normalize_timeframe("1m") == "1min"
    assert analytics.normalize_timeframe("5m") == "5min"
    assert analytics.resample(HAND_TICKS, "1m").equals(analytics.resample(HAND_TICKS, "1min"))


def test_resample_empty_ticks_gives_empty_bars():
    empty = HAND_TICKS.iloc[0:0]
    result = analytics.resample(empty, "1s")
    assert len(result) == 0 and list(result.columns) == list(analytics.BAR_COLUMNS)
    assert result.index.dtype == np.int64


def test_resample_bars_equals_resampling_ticks_directly():
    ticks = random_ticks(3_000, seed=5)
    seconds = analytics.resample(ticks, "1s")
    for timeframe in ("5s", "1min", "5min"):
        direct = analytics.resample(ticks, timeframe)
        coarse = analytics.resample_bars(seconds, timeframe)
        assert coarse.index.tolist() == direct.index.tolist()
        for column in analytics.BAR_COLUMNS:
            np.testing.assert_allclose(coarse[column], direct[column], rtol=1e-12, err_msg=column)
        assert coarse["trades"].dtype == np.int64


def test_resample_bars_uploaded_ohlc_without_flow_columns():
    # Uploaded klines: vwap is 0.0 on most rows and there is no notional / trades column.
    uploaded = pd.DataFrame(
        {"open": [1.0, 2.0, 3.0], "high": [2.0, 4.0, 3.5], "low": [0.5, 1.5, 2.5],
         "close": [2.0, 3.0, 3.2], "volume": [1.0, 2.0, 3.0], "vwap": [0.0, 0.0, 3.1]},
        index=pd.Index([T0 + 2 * MINUTE, T0, T0 + MINUTE], name="ts"),  # unsorted on purpose
    )
    result = analytics.resample_bars(uploaded, "5min")
    row = result.iloc[0]
    # sorted: T0 (2,4,1.5,3), T0+1m (3,3.5,2.5,3.2), T0+2m (1,2,0.5,2)
    assert (row.open, row.high, row.low, row.close, row.volume) == (2.0, 4.0, 0.5, 2.0, 6.0)
    assert math.isnan(row.notional) and math.isnan(row.vwap) and math.isnan(row.trades)


# --------------------------------------------------------------------------------------
# align / rolling correlation
# --------------------------------------------------------------------------------------


def test_align_forward_fills_levels_with_limit_and_reports_ages():
    seconds = T0 + 1000 * np.arange(20)
    bars_y = bars_from_closes(100 + np.arange(20), seconds)
    x_seconds = np.r_[seconds[1:5], seconds[15:]]  # x starts late and is silent for 10 s
    bars_x = bars_from_closes(50 + np.arange(x_seconds.size), x_seconds)
    frame = analytics.align(bars_y, bars_x, ffill_limit=3, timeframe="1s").frame
    assert frame.index.tolist() == seconds.tolist()
    assert math.isnan(frame.x.iloc[0])  # never back-filled
    # x last traded at second 4 (close 53): filled at 5, 6, 7 (ages 1..3), NaN from 8 to 14.
    assert frame.x.iloc[5:8].tolist() == [53.0, 53.0, 53.0]
    assert frame.x.iloc[8:15].isna().all()
    assert frame.x_age_bars.iloc[4:15].tolist() == list(range(0, 11))
    assert frame.y_age_bars.eq(0).all()
    assert frame.both_traded.tolist() == [False] + [True] * 4 + [False] * 10 + [True] * 5


def _align_with_pandas(bars_y, bars_x, ffill_limit, bar_ms):
    """The rule of ``analytics.align`` written with pandas reindex/ffill (its first form)."""
    union = np.union1d(np.asarray(bars_y.index, dtype=np.int64),
                       np.asarray(bars_x.index, dtype=np.int64))
    index = pd.Index(union, dtype=np.int64, name="ts")
    columns = {}
    for leg, bars in (("y", bars_y), ("x", bars_x)):
        bars = bars[~bars.index.duplicated(keep="last")]
        traded = np.isfinite(bars["close"].to_numpy(dtype=float)) & ~(bars["trades"] <= 0)
        traded = pd.Series(traded, index=bars.index).reindex(index, fill_value=False)
        close = bars["close"].astype(float).reindex(index).where(traded)
        last_trade_ts = pd.Series(np.where(traded, union, np.nan), index=index).ffill()
        age = (union - last_trade_ts) / bar_ms
        level = close.ffill()
        if ffill_limit is not None:
            level = level.where(age <= ffill_limit)
        columns[leg], columns[f"{leg}_traded"], columns[f"{leg}_age_bars"] = level, traded, age
    columns["both_traded"] = columns["y_traded"] & columns["x_traded"]
    order = ("y", "x", "y_traded", "x_traded", "both_traded", "y_age_bars", "x_age_bars")
    return pd.DataFrame({name: columns[name] for name in order}, index=index)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ffill_limit", [None, 0, 5])
def test_align_equals_the_pandas_formulation_on_sparse_legs(seed, ffill_limit):
    # Sparse 1 s legs with gaps, re-sent (duplicate) bars, missing closes and zero-trade
    # bars: every cell as the reindex/ffill formulation gives it.
    rng = np.random.default_rng(seed)
    legs = []
    for share in (0.3, 0.8):
        ts = np.flatnonzero(rng.random(3_000) < share).astype(np.int64) * 1_000 + 1_700_000_000_000
        ts = np.sort(np.concatenate([ts, rng.choice(ts, 20)]))  # duplicates: last wins
        close = np.exp(11.4 + np.cumsum(rng.normal(0, 1e-4, ts.size)))
        close[rng.random(ts.size) < 0.02] = np.nan
        trades = rng.integers(0, 5, ts.size)
        legs.append(pd.DataFrame({"close": close, "trades": trades},
                                 index=pd.Index(ts, name="ts")))
    got = analytics.align(*legs, ffill_limit=ffill_limit, timeframe="1s").frame
    pd.testing.assert_frame_equal(got, _align_with_pandas(*legs, ffill_limit, 1_000),
                                  check_exact=True)


def test_align_ffill_limit_zero_and_invalid():
    seconds = T0 + 1000 * np.arange(4)
    bars_y = bars_from_closes([1.0, 2, 3, 4], seconds)
    bars_x = bars_from_closes([5.0, 6], seconds[[0, 2]])
    frame = analytics.align(bars_y, bars_x, ffill_limit=0, timeframe="1s").frame
    assert frame.x.isna().tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match=r"ffill_limit \(-1\)"):
        analytics.align(bars_y, bars_x, ffill_limit=-1)


def test_align_treats_zero_trade_bars_as_not_traded():
    seconds = T0 + 1000 * np.arange(3)
    bars_y = bars_from_closes([1.0, 2.0, 3.0], seconds)
    bars_x = bars_from_closes([5.0, 5.0, 6.0], seconds, trades=np.array([1, 0, 1]))
    frame = analytics.align(bars_y, bars_x, timeframe="1s").frame
    assert frame.both_traded.tolist() == [True, False, True]
    assert frame.x_age_bars.tolist() == [0.0, 1.0, 0.0]


def _sparse_correlated_legs(n, rho, x_trade_prob, seed):
    """1 s latent log prices with return correlation rho; x prints in a fraction of seconds."""
    rng = np.random.default_rng(seed)
    first = rng.normal(0, 1e-4, n)
    second = rho * first + math.sqrt(1 - rho**2) * rng.normal(0, 1e-4, n)
    latent_y = 2_000 * np.exp(np.cumsum(first))
    latent_x = 30_000 * np.exp(np.cumsum(second))
    seconds = T0 + 1000 * np.arange(n)
    x_rows = rng.random(n) < x_trade_prob
    x_rows[0] = True
    return bars_from_closes(latent_y, seconds), bars_from_closes(latent_x[x_rows], seconds[x_rows])


def test_correlation_on_co_traded_bars_recovers_true_value_where_ffill_destroys_it():
    bars_y, bars_x = _sparse_correlated_legs(20_000, rho=0.9, x_trade_prob=0.2, seed=4)
    aligned = analytics.align(bars_y, bars_x, ffill_limit=None, timeframe="1s")
    result = analytics.rolling_correlation(aligned.y, aligned.x, window=2_000,
                                           co_traded=aligned.both_traded)
    # Both legs' returns span the same interval between co-traded bars: ~0.9 (sampling
    # error of a correlation at n=2000 is ~(1-0.81)/sqrt(2000) = 0.004; allow 0.03).
    assert result.dropna().iloc[-1] == pytest.approx(0.9, abs=0.03)
    # The trap the alignment rule avoids: returns of forward-filled levels on every bar.
    naive = np.log(aligned.y).diff().rolling(2_000).corr(np.log(aligned.x).diff())
    assert naive.iloc[-1] < 0.6
    assert result[~aligned.both_traded].isna().all()


def test_correlation_nan_while_one_leg_is_silent_for_a_minute():
    n = 300
    bars_y, bars_x = _sparse_correlated_legs(n, rho=0.8, x_trade_prob=1.0, seed=8)
    silent = (bars_x.index >= T0 + 100_000) & (bars_x.index < T0 + 160_000)
    aligned = analytics.align(bars_y, bars_x[~silent], ffill_limit=5, timeframe="1s")
    frame = aligned.frame
    minute = (frame.index >= T0 + 100_000) & (frame.index < T0 + 160_000)
    assert not frame.both_traded[minute].any()
    assert frame.x[minute][5:].isna().all()  # 5-bar fill limit respected
    result = analytics.rolling_correlation(aligned.y, aligned.x, window=20,
                                           co_traded=aligned.both_traded)
    assert result[minute].isna().all()
    assert result[frame.index >= T0 + 200_000].notna().all()


def test_rolling_correlation_matches_pandas_reference():
    y, x = make_cointegrated_pair(2_000, beta=0.8, half_life=20, seed=2)
    a, b = np.exp(y), np.exp(x)
    result = analytics.rolling_correlation(a, b, window=100)
    expected = np.log(a).diff().rolling(100).corr(np.log(b).diff())  # plain pandas formula
    np.testing.assert_allclose(result, expected, rtol=1e-12, equal_nan=True)
    on_prices = analytics.rolling_correlation(a, b, window=100, on="prices")
    np.testing.assert_allclose(on_prices, a.rolling(100).corr(b), rtol=1e-12, equal_nan=True)


def test_default_correlation_is_of_returns_because_levels_are_spurious():
    walk_y, walk_x = make_random_walks(3_000, seed=21)
    a, b = np.exp(walk_y), np.exp(walk_x)
    returns_corr = analytics.rolling_correlation(a, b, window=2_999).iloc[-1]  # 2,999 returns
    levels_corr = analytics.rolling_correlation(a, b, window=3_000, on="prices").iloc[-1]
    # Independent walks: true correlation 0. Returns: sampling error ~1/sqrt(3000) = 0.018.
    assert abs(returns_corr) < 0.06
    # Seeded illustration of pitfall 9 (seeds 17..24 give levels rho from -0.88 to 0.56):
    # the levels of these independent walks look strongly correlated.
    assert abs(levels_corr) > 0.5


def test_rolling_correlation_constant_leg_is_nan_not_inf():
    a = pd.Series(np.r_[np.full(50, 10.0), 10 + np.arange(50)])
    b = pd.Series(20 + np.sin(np.arange(100.0)))
    result = analytics.rolling_correlation(a, b, window=10, on="prices")
    assert result.iloc[9:50].isna().all()
    assert np.isfinite(result.dropna()).all()


def test_rolling_correlation_argument_errors():
    a = pd.Series([1.0, 2, 3, 4])
    with pytest.raises(ValueError, match=r"on \('levels'\)"):
        analytics.rolling_correlation(a, a, window=2, on="levels")
    with pytest.raises(ValueError, match=r"window \(1\)"):
        analytics.rolling_correlation(a, a, window=1)
    with pytest.raises(ValueError, match="prices must be > 0"):
        analytics.rolling_correlation(a - 2, a, window=2)


def test_log_returns_only_between_adjacent_bars():
    close = pd.Series([100.0, 110.0, 121.0, 133.1], index=pd.Index(
        [T0, T0 + MINUTE, T0 + 3 * MINUTE, T0 + 4 * MINUTE], name="ts"))
    result = analytics.log_returns(close, "1min")
    expected = [math.nan, math.log(1.1), math.nan, math.log(1.1)]  # gap before the third bar
    np.testing.assert_allclose(result, expected, equal_nan=True)


# --------------------------------------------------------------------------------------
# hedge ratios
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", analytics.HEDGE_METHODS)
def test_hedge_ratio_recovers_planted_beta(method):
    y, x = make_cointegrated_pair(10_000, beta=0.8, half_life=20, seed=1)
    result = analytics.hedge_ratio(y, x, method=method)
    # x moves ~0.2 in log units over the sample against a spread std of ~0.004: the slope
    # is pinned to about 1 %; 3 % leaves room for subsampling (theil-sen uses 1,000 points).
    assert result.beta == pytest.approx(0.8, rel=0.03)
    assert result.method == method and result.log_prices is True
    assert result.enough_data and result.reason == ""


def test_ols_beta_on_shared_synthetic_csv_is_the_planted_006(coint_csv_pair):
    eth, btc = coint_csv_pair
    result = analytics.hedge_ratio(eth, btc, method="ols", log_prices=False)
    # File: ETH = 1000 + 0.06 BTC + N(0, 50). Standard error of the slope =
    # residual_std / (std(BTC) sqrt(n)) ~ 50 / (480 * 31.6) = 0.0033 (5.5 % of 0.06),
    # so "within a few %" is honest only as 2 standard errors.
    standard_error = result.residual_std / (btc.std(ddof=0) * math.sqrt(result.nobs))
    assert abs(result.beta - 0.06) < 2 * standard_error
    assert result.nobs == 1_000 and result.log_prices is False


def test_ols_matches_statsmodels():
    y, x = make_cointegrated_pair(500, beta=1.2, half_life=10, seed=3)
    result = analytics.hedge_ratio(y, x)
    expected = sm.OLS(y.to_numpy(), sm.add_constant(x.to_numpy())).fit()
    assert result.alpha == pytest.approx(expected.params[0], rel=1e-9)
    assert result.beta == pytest.approx(expected.params[1], rel=1e-9)
    assert result.r_squared == pytest.approx(expected.rsquared, rel=1e-9)
    assert result.residual_std == pytest.approx(math.sqrt(expected.scale), rel=1e-9)


def test_ols_regression_direction_identity():
    # beta(y on x) * beta(x on y) = r^2 (< 1 with noise): OLS is not symmetric in the legs.
    y, x = make_cointegrated_pair(2_000, beta=0.8, half_life=50, seed=9)
    forward = analytics.hedge_ratio(y, x)
    backward = analytics.hedge_ratio(x, y)
    assert forward.beta * backward.beta == pytest.approx(forward.r_squared, rel=1e-9)
    assert forward.beta * backward.beta < 0.999


def test_tls_matches_covariance_eigenvector_and_is_symmetric():
    y, x = make_cointegrated_pair(3_000, beta=0.8, half_life=30, seed=4)
    result = analytics.hedge_ratio(y, x, method="tls")
    # Reference: principal eigenvector of the 2x2 covariance matrix (numpy.linalg.eigh).
    _, vectors = np.linalg.eigh(np.cov(np.vstack([x, y])))
    principal = vectors[:, -1]
    assert result.beta == pytest.approx(principal[1] / principal[0], rel=1e-9)
    assert result.alpha == pytest.approx(y.mean() - result.beta * x.mean(), rel=1e-9)
    swapped = analytics.hedge_ratio(x, y, method="tls")
    assert swapped.beta == pytest.approx(1.0 / result.beta, rel=1e-9)


def test_huber_matches_statsmodels_rlm_and_resists_outliers():
    rng = np.random.default_rng(12)
    x = pd.Series(np.linspace(0.0, 1.0, 400) + rng.normal(0, 0.01, 400))
    y = 0.5 + 2.0 * x + rng.normal(0, 0.01, 400)
    y.iloc[::20] += 1.0  # 5 % gross outliers
    result = analytics.hedge_ratio(y, x, method="huber", log_prices=False)
    expected = sm.RLM(y.to_numpy(), sm.add_constant(x.to_numpy()),
                      M=sm.robust.norms.HuberT()).fit()
    # Same IRLS fixed point; both stop at a deviance change < 1e-8.
    assert result.beta == pytest.approx(expected.params[1], rel=1e-6)
    assert result.alpha == pytest.approx(expected.params[0], rel=1e-6)
    ols = analytics.hedge_ratio(y, x, method="ols", log_prices=False)
    assert abs(result.beta - 2.0) < abs(ols.beta - 2.0)


def test_theil_sen_matches_scipy():
    y, x = make_cointegrated_pair(400, beta=0.7, half_life=15, seed=6)
    result = analytics.hedge_ratio(y, x, method="theil-sen")
    expected = scipy.stats.theilslopes(y.to_numpy(), x.to_numpy(), method="joint")
    assert result.beta == pytest.approx(expected.slope, rel=1e-12)
    assert result.alpha == pytest.approx(expected.intercept, rel=1e-12)


@pytest.mark.parametrize("method, limit", [("theil-sen", analytics.THEIL_SEN_MAX_POINTS),
                                           ("huber", analytics.HUBER_MAX_POINTS)])
def test_robust_methods_use_a_bounded_evenly_spaced_subsample(method, limit):
    n = limit + limit // 2
    y, x = make_cointegrated_pair(n, beta=0.8, half_life=20, seed=7)
    result = analytics.hedge_ratio(y, x, method=method)
    assert result.subsampled and result.nobs == limit
    keep = np.unique(np.linspace(0, n - 1, limit).round().astype(int))
    direct = analytics.hedge_ratio(y.iloc[keep], x.iloc[keep], method=method)
    assert result.beta == direct.beta and not direct.subsampled


def test_log_price_beta_is_unit_free_raw_price_beta_is_not():
    y, x = make_cointegrated_pair(1_000, beta=0.8, half_life=20, seed=15)
    quoted_in_cents = np.log(np.exp(y) * 100)  # same asset, other quote unit
    assert analytics.hedge_ratio(quoted_in_cents, x).beta == pytest.approx(
        analytics.hedge_ratio(y, x).beta, rel=1e-9)
    raw = analytics.hedge_ratio(np.exp(y), np.exp(x), log_prices=False).beta
    raw_cents = analytics.hedge_ratio(np.exp(y) * 100, np.exp(x), log_prices=False).beta
    assert raw_cents == pytest.approx(100 * raw, rel=1e-9)


def test_hedge_ratio_drops_nan_pairs_jointly():
    y, x = make_cointegrated_pair(300, beta=0.8, half_life=20, seed=5)
    y_gappy, x_gappy = y.copy(), x.copy()
    y_gappy.iloc[[3, 50]] = np.nan
    x_gappy.iloc[[50, 120]] = np.nan
    complete = y_gappy.notna() & x_gappy.notna()
    result = analytics.hedge_ratio(y_gappy, x_gappy)
    expected = analytics.hedge_ratio(y[complete], x[complete])
    assert result.beta == expected.beta and result.nobs == 297


def test_hedge_ratio_not_enough_data_and_constant_x():
    short = analytics.hedge_ratio([1.0, 2.0, 3.0], [1.0, 2.5, 3.0])
    assert math.isnan(short.beta) and short.nobs == 3 and short.needed == analytics.HEDGE_MIN_OBS
    assert not short.enough_data and "not enough data: needs 10, has 3" in short.reason
    constant = analytics.hedge_ratio(np.arange(20.0) / 10, np.ones(20))
    assert math.isnan(constant.beta) and "constant" in constant.reason


def test_hedge_ratio_argument_errors():
    y, x = make_cointegrated_pair(50, beta=0.8, half_life=20, seed=5)
    with pytest.raises(ValueError, match=r"method \('lasso'\)"):
        analytics.hedge_ratio(y, x, method="lasso")
    with pytest.raises(ValueError, match="cannot be log prices"):
        analytics.hedge_ratio(np.exp(y), np.exp(x))  # raw prices with the default flag
    with pytest.raises(ValueError, match="same index"):
        analytics.hedge_ratio(y, x.set_axis(x.index + 1))
    with pytest.raises(ValueError, match="same length"):
        analytics.hedge_ratio(y, x.iloc[:-1].to_numpy())
    assert analytics.hedge_ratio(np.exp(y), np.exp(x), log_prices=False).log_prices is False


# --------------------------------------------------------------------------------------
# rolling hedge ratio, spread, z
# --------------------------------------------------------------------------------------


def test_rolling_hedge_ratio_matches_pandas_reference_shifted_one_bar():
    y, x = make_cointegrated_pair(3_000, beta=0.8, half_life=20, seed=8)
    result = analytics.rolling_hedge_ratio(y, x, window=200)
    beta = y.rolling(200).cov(x) / x.rolling(200).var()  # plain pandas formula
    alpha = y.rolling(200).mean() - beta * x.rolling(200).mean()
    # rtol 1e-6: the module centres the legs first, pandas does not (rounding differs).
    np.testing.assert_allclose(result.beta, beta.shift(1), rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(result.alpha, alpha.shift(1), rtol=1e-6, equal_nan=True)
    assert result.beta.iloc[:200].isna().all() and result.beta.iloc[200:].notna().all()


def test_expanding_hedge_ratio_matches_full_fit_on_past_bars():
    y, x = make_cointegrated_pair(500, beta=0.8, half_life=20, seed=8)
    result = analytics.rolling_hedge_ratio(y, x, window=10, expanding=True)
    for t in (10, 250, 499):
        expected = analytics.hedge_ratio(y.iloc[:t], x.iloc[:t])  # bars 0..t-1
        assert result.beta.iloc[t] == pytest.approx(expected.beta, rel=1e-7)
        assert result.alpha.iloc[t] == pytest.approx(expected.alpha, rel=1e-7)


def test_rolling_hedge_ratio_with_nan_equals_ols_on_complete_pairs_of_window():
    y, x = make_cointegrated_pair(400, beta=0.8, half_life=20, seed=10)
    y.iloc[[100, 101, 150]] = np.nan
    x.iloc[[120]] = np.nan
    result = analytics.rolling_hedge_ratio(y, x, window=60, min_periods=50)
    t = 160  # window = bars 100..159: 4 incomplete pairs
    expected = analytics.hedge_ratio(y.iloc[t - 60:t], x.iloc[t - 60:t])
    assert result.beta.iloc[t] == pytest.approx(expected.beta, rel=1e-7)


def test_rolling_hedge_ratio_has_no_look_ahead():
    y, x = make_cointegrated_pair(1_000, beta=0.8, half_life=20, seed=13)
    before = analytics.rolling_hedge_ratio(y, x, window=100)
    t = 600
    y_changed, x_changed = y.copy(), x.copy()
    y_changed.iloc[t + 1:] += 0.5
    x_changed.iloc[t + 1:] *= 1.01
    after = analytics.rolling_hedge_ratio(y_changed, x_changed, window=100)
    # Row t+1 is fitted on bars <= t, so rows up to t+1 must be identical.
    pd.testing.assert_frame_equal(before.iloc[:t + 2], after.iloc[:t + 2])
    assert before.beta.iloc[t + 2] != after.beta.iloc[t + 2]  # the test can see changes


def test_rolling_hedge_ratio_argument_errors():
    y, x = make_cointegrated_pair(50, beta=0.8, half_life=20, seed=5)
    with pytest.raises(ValueError, match=r"window \(2\)"):
        analytics.rolling_hedge_ratio(y, x, window=2)
    with pytest.raises(ValueError, match=r"min_periods \(30\)"):
        analytics.rolling_hedge_ratio(y, x, window=20, min_periods=30)


def test_spread_formula_with_scalar_and_series_beta():
    y = pd.Series([10.0, 11.0, 12.0])
    x = pd.Series([1.0, 2.0, 4.0])
    assert analytics.spread(y, x, 2.0, 1.0).tolist() == [7.0, 6.0, 3.0]  # y - 2x - 1
    beta = pd.Series([1.0, np.nan, 2.0])
    result = analytics.spread(y, x, beta)
    assert result.iloc[0] == 9.0 and math.isnan(result.iloc[1]) and result.iloc[2] == 4.0
    with pytest.raises(ValueError, match="beta Series must share the index"):
        analytics.spread(y, x, beta.set_axis([5, 6, 7]))


def test_zscore_matches_pandas_reference():
    series = make_ou(2_000, half_life=10, seed=1)
    result = analytics.zscore(series, window=50)
    expected = (series - series.rolling(50).mean()) / series.rolling(50).std()
    np.testing.assert_allclose(result, expected, rtol=1e-12, equal_nan=True)
    assert result.iloc[:49].isna().all() and result.iloc[49:].notna().all()


def test_zscore_quiet_window_gives_nan_never_inf():
    series = pd.Series(np.r_[np.sin(np.arange(30.0)), np.full(40, 0.25), 0.25 + 1e-12, 0.5])
    result = analytics.zscore(series, window=20)
    quiet = result.iloc[49:70]  # windows made only of the constant stretch: std == 0
    assert quiet.isna().all()
    assert math.isnan(result.iloc[70])  # std ~ 2e-13 is below the 1e-9 floor
    assert np.isfinite(result.dropna()).all()
    # What the floor prevents: a 1e-12 wiggle in a quiet window reads as z ~ 4.2
    # (19 equal values and one 1e-12 higher: z = 0.95e-12 / 2.2e-13, hand computed).
    loose = analytics.zscore(series, window=20, std_floor=0.0)
    assert loose.iloc[70] == pytest.approx(4.25, rel=0.01)


def test_zscore_min_periods_and_nan_inside():
    series = pd.Series(np.r_[np.arange(10.0), np.nan, np.arange(10.0)])
    result = analytics.zscore(series, window=5, min_periods=3)
    expected = (series - series.rolling(5, 3).mean()) / series.rolling(5, 3).std()
    np.testing.assert_allclose(result, expected, equal_nan=True)
    with pytest.raises(ValueError, match=r"std_floor \(-1\)"):
        analytics.zscore(series, window=5, std_floor=-1)


def test_z_of_trailing_spread_has_no_look_ahead_but_full_sample_beta_would():
    y, x = make_cointegrated_pair(1_500, beta=0.8, half_life=20, seed=14)

    def trailing_z(y_in, x_in):
        hedge = analytics.rolling_hedge_ratio(y_in, x_in, window=200)
        return analytics.zscore(analytics.spread(y_in, x_in, hedge.beta, hedge.alpha), 100)

    def full_sample_z(y_in, x_in):
        fit = analytics.hedge_ratio(y_in, x_in)
        return analytics.zscore(analytics.spread(y_in, x_in, fit.beta, fit.alpha), 100)

    t = 1_000
    y_changed = y.copy()
    y_changed.iloc[t + 1:] += np.linspace(0, 0.3, len(y) - t - 1)
    pd.testing.assert_series_equal(trailing_z(y, x).iloc[:t + 1],
                                   trailing_z(y_changed, x).iloc[:t + 1])
    # The same check catches the classic leak: a full-sample beta moves every past z.
    leaked = full_sample_z(y, x).iloc[:t + 1] - full_sample_z(y_changed, x).iloc[:t + 1]
    assert leaked.abs().max() > 1e-6


# --------------------------------------------------------------------------------------
# Kalman
# --------------------------------------------------------------------------------------


def _kalman_pair():
    y, x = make_cointegrated_pair(600, beta=0.8, half_life=20, seed=21)
    y.iloc[[50, 51, 300]] = np.nan  # missing bars: no update, prior carried
    x.iloc[[400]] = np.nan
    return y, x


def test_kalman_batch_equals_incremental_updates():
    y, x = _kalman_pair()
    batch = analytics.kalman_hedge(y, x, delta=1e-6, obs_var=1e-6, warmup_bars=30)
    state = analytics.KalmanState.initial(delta=1e-6, obs_var=1e-6, warmup_bars=30)
    rows = []
    for y_t, x_t in zip(y, x):
        state, output = analytics.kalman_update(state, y_t, x_t)
        rows.append([getattr(output, column) for column in analytics.KALMAN_COLUMNS])
    incremental = pd.DataFrame(rows, columns=list(analytics.KALMAN_COLUMNS), index=y.index)
    pd.testing.assert_frame_equal(batch.frame, incremental, check_exact=True)
    assert batch.state == state
    assert state.n_updates == len(y) - 4


def test_adaptive_kalman_batch_equals_incremental_updates():
    # Realistic scale: log BTC ~11.4 moving 1e-4 per bar, log ETH ~8.0; gaps in both legs,
    # one inside the warm-up (it does not count towards it).
    rng = np.random.default_rng(23)
    log_x = math.log(87_000) + np.cumsum(rng.normal(0, 1e-4, 2_000))
    log_y = math.log(2_950) + 1.2 * (log_x - log_x[0]) + rng.normal(0, 3e-5, 2_000)
    log_y[[10, 700]] = np.nan
    log_x[[1_500]] = np.nan
    batch = analytics.kalman_hedge(log_y, log_x)
    state = analytics.KalmanState.adaptive_start()
    rows = []
    for y_t, x_t in zip(log_y, log_x):
        state, output = analytics.kalman_update(state, y_t, x_t)
        rows.append([getattr(output, column) for column in analytics.KALMAN_COLUMNS])
    incremental = pd.DataFrame(rows, columns=list(analytics.KALMAN_COLUMNS))
    pd.testing.assert_frame_equal(batch.frame, incremental, check_exact=True)
    assert batch.state == state and state.adaptive and state.n_updates == 1_997
    warm = analytics.KALMAN_DEFAULT_WARMUP
    assert batch.frame.warmup.sum() == warm + 1  # 60 observed bars + the gap at bar 10
    assert batch.frame.beta_prior.iloc[:warm + 1].isna().all()
    # Its start is the warm-up's OLS on the centred legs.
    ols = analytics.hedge_ratio(log_y[:warm + 1], log_x[:warm + 1])
    assert batch.frame.beta_prior.iloc[warm + 1] == pytest.approx(ols.beta, rel=1e-9)
    assert batch.frame.alpha_prior.iloc[warm + 1] == pytest.approx(ols.alpha, rel=1e-9)


def test_kalman_continues_from_a_state_exactly():
    y, x = _kalman_pair()
    whole = analytics.kalman_hedge(y, x)
    head = analytics.kalman_hedge(y.iloc[:350], x.iloc[:350])
    tail = analytics.kalman_hedge(y.iloc[350:], x.iloc[350:], state=head.state)
    pd.testing.assert_frame_equal(pd.concat([head.frame, tail.frame]), whole.frame,
                                  check_exact=True)
    assert tail.state == whole.state
    with pytest.raises(ValueError, match="either state or delta"):
        analytics.kalman_hedge(y, x, delta=1e-5, state=head.state)


def test_kalman_matches_textbook_matrix_filter():
    y, x = _kalman_pair()
    delta, obs_var = 1e-5, 1e-6
    result = analytics.kalman_hedge(y, x, delta=delta, obs_var=obs_var).frame
    # Reference: the filter written with numpy matrices (Chan 2013, ch. 3).
    theta, covariance = np.zeros(2), np.eye(2)
    state_noise = delta / (1 - delta) * np.eye(2)
    for i, (y_t, x_t) in enumerate(zip(y, x)):
        prior = covariance + state_noise
        assert result.beta_prior.iloc[i] == pytest.approx(theta[0], rel=1e-9, abs=1e-12)
        if np.isnan(y_t) or np.isnan(x_t):
            covariance = prior
            assert math.isnan(result.spread.iloc[i])
            continue
        design = np.array([x_t, 1.0])
        error = y_t - design @ theta
        q = design @ prior @ design + obs_var
        gain = prior @ design / q
        theta = theta + gain * error
        covariance = prior - np.outer(gain, design @ prior)
        assert result.spread.iloc[i] == pytest.approx(error, rel=1e-9, abs=1e-12)
        assert result.spread_std.iloc[i] == pytest.approx(math.sqrt(q), rel=1e-9)
        assert result.beta_post.iloc[i] == pytest.approx(theta[0], rel=1e-9, abs=1e-12)


def test_kalman_spread_is_forecast_error_before_update_and_has_no_look_ahead():
    y, x = make_cointegrated_pair(800, beta=0.8, half_life=20, seed=22)
    before = analytics.kalman_hedge(y, x).frame
    np.testing.assert_allclose(before.spread,
                               y - (before.beta_prior * x + before.alpha_prior), rtol=0, atol=1e-12)
    t = 500
    y_changed = y.copy()
    y_changed.iloc[t + 1:] += 0.2
    after = analytics.kalman_hedge(y_changed, x).frame
    pd.testing.assert_frame_equal(before.iloc[:t + 1], after.iloc[:t + 1])
    # Prior at t+1 is built from bars <= t: unchanged too; the spread at t+1 sees y_{t+1}.
    assert after.beta_prior.iloc[t + 1] == before.beta_prior.iloc[t + 1]
    assert after.spread.iloc[t + 1] != before.spread.iloc[t + 1]


def test_kalman_tracks_a_step_change_in_beta():
    rng = np.random.default_rng(7)
    n, step_at = 4_000, 2_000
    log_x = math.log(100) + np.cumsum(rng.normal(0, 0.02, n))
    beta = np.where(np.arange(n) < step_at, 0.5, 1.0)
    # alpha jumps so that y is continuous at the break: only the slope changes.
    alpha = np.where(np.arange(n) < step_at, 1.0, 1.0 - 0.5 * log_x[step_at])
    log_y = alpha + beta * log_x + rng.normal(0, 0.001, n)
    result = analytics.kalman_hedge(log_y, log_x, delta=1e-5, obs_var=1e-6).frame
    assert result.beta_prior.iloc[1_000:step_at].mean() == pytest.approx(0.5, abs=0.02)
    late = result.beta_prior.iloc[-200:].mean()
    assert late == pytest.approx(1.0, abs=0.06)
    static = analytics.hedge_ratio(log_y, log_x).beta  # one β for both regimes
    assert abs(late - 1.0) < abs(static - 1.0)


def test_kalman_warmup_flag_and_argument_errors():
    y, x = make_cointegrated_pair(50, beta=0.8, half_life=20, seed=5)
    y.iloc[2] = np.nan  # not absorbed: does not count towards the warm-up
    result = analytics.kalman_hedge(y, x, warmup_bars=10).frame
    assert result.warmup.tolist() == [True] * 11 + [False] * 39
    with pytest.raises(ValueError, match=r"delta \(1.5\)"):
        analytics.KalmanState.initial(delta=1.5)
    with pytest.raises(ValueError, match=r"obs_var \(0\)"):
        analytics.kalman_hedge(y, x, obs_var=0)
    with pytest.raises(ValueError, match="cannot be log prices"):
        analytics.kalman_update(analytics.KalmanState.initial(), 87_000.0, 3_000.0)


# --------------------------------------------------------------------------------------
# ADF / Engle–Granger
# --------------------------------------------------------------------------------------


def test_adf_lag_search_is_capped_at_ten():
    # Schwert's rule gives 29 lags at 3,000 points and 38 at 10,000: AIC over that many
    # costs seconds at 50-100k points; the cap keeps the search at 0..10.
    assert analytics.default_maxlag(3_000) == 10 and analytics.default_maxlag(100) == 10
    assert analytics.default_maxlag(20) == 9  # ceil(12 * 0.2^0.25): below the cap
    result = analytics.adf_test(make_ou(10_000, half_life=10, seed=40))
    assert result.maxlag == 10 and 0 <= result.lags_used <= 10
    assert analytics.engle_granger(*make_cointegrated_pair(3_000, beta=0.8, half_life=10,
                                                           seed=41)).maxlag == 10


@pytest.mark.parametrize("maxlag, regression", [(None, "c"), (4, "c"), (6, "ct")])
def test_adf_matches_statsmodels_adfuller(maxlag, regression):
    series = make_ou(3_000, half_life=30, seed=2)
    result = analytics.adf_test(series, maxlag=maxlag, regression=regression)
    # Documented default lag cap: min(ceil(12 (n/100)^(1/4)), 10) = 10 at n = 3000.
    cap = min(math.ceil(12 * (3_000 / 100) ** 0.25), 10) if maxlag is None else maxlag
    expected = adfuller(series.to_numpy(), maxlag=cap, regression=regression, autolag="AIC",
                        result_object=True)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.pvalue == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.lags_used == expected.lags and result.nobs == 3_000
    assert result.critical_values == pytest.approx(expected.critical_values)


def test_adf_verdicts_on_stationary_and_random_walk():
    stationary = analytics.adf_test(make_ou(2_000, half_life=10, seed=3))
    assert stationary.rejects_at_5pct and stationary.verdict.startswith("stationary at")
    assert "(reject unit root)" in stationary.verdict
    walk = analytics.adf_test(np.cumsum(np.random.default_rng(3).normal(size=2_000)))
    assert not walk.rejects_at_5pct and walk.verdict.startswith("cannot reject unit root")


def test_adf_refuses_short_and_constant_input():
    # statsmodels happily returns a p-value for 6 points; we report "not enough data".
    short = analytics.adf_test([1.0, 3.0, 2.0, 5.0, 4.0, 6.0])
    assert math.isnan(short.statistic) and math.isnan(short.pvalue) and not short.enough_data
    assert short.verdict == f"not enough data: needs {short.needed}, has 6"
    assert short.needed == 20 + analytics.default_maxlag(6)
    constant = analytics.adf_test(np.full(500, 3.0))
    assert math.isnan(constant.pvalue) and constant.verdict.startswith("constant series")


def test_adf_never_differences_across_a_gap_and_bounds_the_window():
    series = make_ou(1_000, half_life=10, seed=4)
    gappy = series.copy()
    gappy.iloc[[5, 500, 900]] = np.nan
    result = analytics.adf_test(gappy, maxlag=3)
    # Only the run after the last gap is tested: values 899 and 901 are not consecutive.
    expected = adfuller(gappy.to_numpy()[901:], maxlag=3, autolag="AIC", result_object=True)
    assert result.nobs == 99
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    leading = series.copy()
    leading.iloc[:50] = np.nan  # a warm-up costs nothing
    assert analytics.adf_test(leading, maxlag=3).nobs == 950
    bounded = analytics.adf_test(series, maxlag=3, max_points=400)
    tail = adfuller(series.to_numpy()[-400:], maxlag=3, autolag="AIC", result_object=True)
    assert bounded.nobs == 400 and bounded.statistic == pytest.approx(tail.statistic, rel=1e-12)


def test_adf_emits_no_statsmodels_future_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        analytics.adf_test(make_ou(500, half_life=10, seed=5))


def test_adf_argument_errors():
    with pytest.raises(ValueError, match=r"regression \('x'\)"):
        analytics.adf_test(np.arange(100.0), regression="x")
    with pytest.raises(ValueError, match=r"maxlag \(-1\)"):
        analytics.adf_test(np.arange(100.0), maxlag=-1)


def test_engle_granger_matches_statsmodels_coint():
    y, x = make_cointegrated_pair(2_000, beta=0.8, half_life=40, seed=31)
    result = analytics.engle_granger(y, x, maxlag=5)
    expected = coint(y.to_numpy(), x.to_numpy(), trend="c", maxlag=5, autolag="aic")
    assert result.statistic == pytest.approx(expected.coint_t, rel=1e-12)
    assert result.pvalue == pytest.approx(expected.pvalue, rel=1e-9)
    np.testing.assert_allclose(list(result.critical_values.values()), expected.critical_values)
    ols = analytics.hedge_ratio(y, x)
    assert result.beta == pytest.approx(ols.beta, rel=1e-12)


def test_engle_granger_rejects_cointegrated_and_not_independent_walks():
    y, x = make_cointegrated_pair(5_000, beta=0.8, half_life=20, seed=32)
    cointegrated = analytics.engle_granger(y, x)
    assert cointegrated.rejects_at_5pct and cointegrated.verdict.startswith("cointegrated at")
    walk_y, walk_x = make_random_walks(5_000, seed=33)
    independent = analytics.engle_granger(walk_y, walk_x)
    assert not independent.rejects_at_5pct
    assert independent.verdict.startswith("not cointegrated")
    # Pitfall 5: Engle–Granger critical values are stricter than a plain ADF's.
    adf_on_spread = analytics.adf_test(y - cointegrated.beta * x)
    assert cointegrated.critical_values["5%"] < adf_on_spread.critical_values["5%"]


def test_engle_granger_drops_nan_jointly_instead_of_reporting_perfect_cointegration():
    walk_y, walk_x = make_random_walks(1_000, seed=34)
    walk_y.iloc[[10, 400]] = np.nan
    # statsmodels with a NaN in y0: t = -inf, p = 0 ("perfectly cointegrated"); a NaN in y1
    # raises MissingDataError instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = coint(walk_y.to_numpy(), walk_x.to_numpy(), maxlag=5, autolag="aic")
    assert raw.coint_t == -np.inf and raw.pvalue == 0.0
    walk_x.iloc[[700]] = np.nan
    result = analytics.engle_granger(walk_y, walk_x, maxlag=5)
    # The most recent run without a gap in either leg (bars 701..999) is tested.
    expected = coint(walk_y.to_numpy()[701:], walk_x.to_numpy()[701:], maxlag=5,
                     autolag="aic")
    assert result.nobs == 299 and result.statistic == pytest.approx(expected.coint_t)
    assert math.isfinite(result.statistic) and result.pvalue > 0.0


def test_engle_granger_short_constant_and_collinear_input():
    short = analytics.engle_granger(np.log(np.arange(1.0, 16.0)), np.log(np.arange(2.0, 17.0)))
    assert math.isnan(short.pvalue) and short.verdict.startswith("not enough data: needs")
    x = pd.Series(np.log(30_000) + np.cumsum(np.random.default_rng(1).normal(0, 0.01, 300)))
    with pytest.warns(analytics.DegenerateInputWarning):
        collinear = analytics.engle_granger(2.0 * x - 10.0, x)
    assert math.isnan(collinear.statistic) and "collinear" in collinear.verdict
    assert collinear.beta == pytest.approx(2.0)
    constant = analytics.engle_granger(x, pd.Series(np.full(300, 8.0)))
    assert math.isnan(constant.pvalue) and "constant" in constant.verdict


# --------------------------------------------------------------------------------------
# half-life, Hurst, crossings
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("planted", [10, 40])
def test_half_life_recovers_planted_value(planted):
    y, x = make_cointegrated_pair(10_000, beta=0.8, half_life=planted, seed=41)
    fit = analytics.hedge_ratio(y, x)
    result = analytics.half_life(analytics.spread(y, x, fit.beta, fit.alpha))
    # Sampling error of lambda at n = 10,000 is ~8 % (H=20); 25 % is ~3 standard errors.
    assert result.bars == pytest.approx(planted, rel=0.25)
    assert result.seconds(60) == pytest.approx(result.bars * 60)
    assert result.lam < 0 and result.reason == ""


def test_half_life_nan_without_mean_reversion_or_data():
    explosive = pd.Series(1.01 ** np.arange(200.0))
    result = analytics.half_life(explosive)
    assert math.isnan(result.bars) and result.lam > 0 and "no mean reversion" in result.reason
    short = analytics.half_life([1.0, 0.5, 0.2])
    assert math.isnan(short.bars) and short.nobs == 2 and short.needed == 20
    assert "not enough data" in short.reason
    assert "constant" in analytics.half_life(np.ones(50)).reason
    with pytest.raises(ValueError, match=r"bar_seconds \(0\)"):
        result.seconds(0)


def test_half_life_regression_skips_rows_touching_nan():
    series = make_ou(500, half_life=10, seed=42)
    series.iloc[[100, 300]] = np.nan
    result = analytics.half_life(series)
    frame = pd.DataFrame({"diff": series.diff(), "lag": series.shift(1)}).dropna()
    expected = sm.OLS(frame["diff"], sm.add_constant(frame["lag"])).fit().params["lag"]
    assert result.lam == pytest.approx(expected, rel=1e-9) and result.nobs == len(frame)


def test_hurst_on_known_series():
    rng = np.random.default_rng(43)
    walk = np.cumsum(rng.normal(size=20_000))
    assert analytics.hurst(walk) == pytest.approx(0.5, abs=0.05)
    assert analytics.hurst(make_ou(20_000, half_life=5, seed=43)) < 0.25
    trend = np.cumsum(np.cumsum(rng.normal(size=20_000)))  # integrated walk: persistent
    assert analytics.hurst(trend) > 0.8
    assert math.isnan(analytics.hurst(walk[:399]))  # needs 4 * max_lag = 400
    assert math.isnan(analytics.hurst(np.ones(1_000)))


def test_hurst_never_differences_across_a_gap():
    spread = np.asarray(make_ou(4_000, half_life=5, seed=44), dtype=float)
    gappy = spread.copy()
    gappy[3_000:] += 50 * spread.std()  # the level moved while nothing was recorded
    gappy[1_000:3_000] = np.nan
    lags = np.arange(2, 101)
    by_position = [np.nanstd(gappy[lag:] - gappy[:-lag]) for lag in lags]
    expected = np.polyfit(np.log(lags), np.log(by_position), 1)[0]
    assert analytics.hurst(gappy) == pytest.approx(expected, rel=1e-9)
    assert analytics.hurst(gappy) < 0.25  # still the mean-reverting series it is
    # Dropping the NaN would put the two sides next to each other: the level change becomes
    # a one-bar jump inside every lag's differences and the series looks like a walk.
    assert analytics.hurst(gappy[np.isfinite(gappy)]) > 0.4


def test_mean_crossings_hand_counted():
    assert analytics.mean_crossings([1.0, -1.0, 1.0, 1.0, -1.0], level=0.0) == 3
    assert analytics.mean_crossings([1.0, 0.0, -1.0, np.nan, -2.0], level=0.0) == 1
    assert analytics.mean_crossings([0.0, 2.0, 0.0, 2.0]) == 3  # mean 1
    assert analytics.mean_crossings([5.0]) == 0


# --------------------------------------------------------------------------------------
# price stats, liquidity, matrices
# --------------------------------------------------------------------------------------


def test_price_stats_hand_computed():
    bars = pd.DataFrame(
        {"open": [100.0, 101.0, 104.0], "high": [102.0, 105.0, 104.5],
         "low": [99.0, 100.5, 103.0], "close": [101.0, 104.0, 103.0],
         "volume": [2.0, 1.0, 1.0], "buy_volume": [1.5, 1.0, np.nan], "trades": [3, 2, 5],
         "notional": [201.0, 104.0, 103.0], "vwap": [100.5, 104.0, 103.0]},
        index=pd.Index([T0, T0 + 1000, T0 + 3000], name="ts"),  # one absent second
    )
    result = analytics.price_stats(bars, bar_seconds=1)
    assert (result.open, result.last, result.high, result.low) == (100.0, 103.0, 105.0, 99.0)
    assert result.change == 3.0 and result.change_pct == pytest.approx(3.0)
    assert result.vwap == pytest.approx(408.0 / 4.0)
    realised = math.log(104 / 101) ** 2 + math.log(103 / 104) ** 2  # sum of r^2
    assert result.volatility_per_bar == pytest.approx(math.sqrt(realised / 3))  # 3 s elapsed
    assert result.volatility_annualised == pytest.approx(math.sqrt(realised * 365 * 86400 / 3))
    assert result.trades == 10 and result.trades_per_second == pytest.approx(10 / 4)
    # Side known on the first two bars only: buy 2.5 of volume 3, sell 0.5.
    assert (result.buy_volume, result.sell_volume) == (2.5, 0.5)
    assert result.imbalance == pytest.approx((2.5 - 0.5) / 3.0)
    inferred = analytics.price_stats(bars)
    assert inferred.volatility_per_bar == result.volatility_per_bar


def test_price_stats_empty_and_single_bar():
    empty = analytics.price_stats(analytics.resample(HAND_TICKS.iloc[0:0], "1s"))
    assert empty.bars == 0 and math.isnan(empty.last)
    single = analytics.price_stats(analytics.resample(HAND_TICKS.iloc[:1], "1s"), bar_seconds=1)
    assert single.bars == 1 and math.isnan(single.volatility_per_bar) and single.last == 101.0
    with pytest.raises(ValueError, match=r"bar_seconds \(-1\)"):
        analytics.price_stats(analytics.resample(HAND_TICKS, "1s"), bar_seconds=-1)


def test_liquidity_metrics_and_is_liquid():
    seconds = T0 + 1000 * np.arange(60)
    busy = bars_from_closes(np.full(60, 10.0), seconds, trades=2, volume=3.0)
    sparse = bars_from_closes(np.full(15, 10.0), seconds[::4], trades=1)
    metrics = analytics.liquidity_metrics({"BUSY": busy, "SPARSE": sparse}, "1s")
    # Common span: 60 one-second bars = 1 minute.
    assert metrics.loc["BUSY", "expected_bars"] == 60
    assert metrics.loc["BUSY", "trades_per_minute"] == 120.0
    assert metrics.loc["BUSY", "empty_share"] == 0.0 and metrics.loc["BUSY", "volume"] == 180.0
    assert metrics.loc["SPARSE", "empty_share"] == pytest.approx(0.75)
    assert metrics.loc["SPARSE", "trades_per_minute"] == 15.0
    assert analytics.is_liquid(metrics.loc["BUSY"]).liquid
    verdict = analytics.is_liquid(metrics.loc["SPARSE"], min_trades_per_minute=20)
    assert not verdict and "15.0 trades/min < 20" in verdict.reason
    assert "75 % empty bars" in verdict.reason
    with pytest.raises(ValueError, match=r"max_empty_share \(2\)"):
        analytics.is_liquid(metrics.loc["BUSY"], max_empty_share=2)


def test_correlation_matrix_is_pairwise_complete():
    rng = np.random.default_rng(51)
    returns = pd.DataFrame(rng.normal(size=(300, 3)), columns=["A", "B", "C"])
    returns.loc[:49, "A"] = np.nan
    returns.loc[250:, "B"] = np.nan
    result = analytics.correlation_matrix(returns)
    both = returns[["A", "B"]].dropna()  # rows 50..249 only
    assert result.loc["A", "B"] == pytest.approx(np.corrcoef(both.A, both.B)[0, 1], rel=1e-12)
    assert result.loc["A", "A"] == 1.0


def test_cointegration_matrix_raw_and_bh_corrected():
    y, x = make_cointegrated_pair(1_500, beta=0.8, half_life=10, seed=52)
    walk, _ = make_random_walks(1_500, seed=53)
    prices = pd.DataFrame({"Y": np.exp(y), "X": np.exp(x), "W": np.exp(walk)})
    result = analytics.cointegration_matrix(prices)
    direct = analytics.engle_granger(y, x).pvalue
    assert result.pvalues.loc["Y", "X"] == pytest.approx(direct, rel=1e-12)
    off_diagonal = ~np.eye(3, dtype=bool)
    expected = multipletests(result.pvalues.to_numpy()[off_diagonal], method="fdr_bh")[1]
    np.testing.assert_allclose(result.pvalues_bh.to_numpy()[off_diagonal], expected)
    assert result.reject_bh.loc["Y", "X"] and result.reject_bh.loc["X", "Y"]
    assert not result.reject_bh.loc["W"].any() and not result.reject_bh["W"].any()
    assert np.isnan(np.diag(result.pvalues.to_numpy())).all()
    # Colouring follows the corrected p-values: at a level between a pair's raw and its
    # BH-adjusted p-value, the raw test rejects and the matrix must not.
    raw, adjusted = result.pvalues.to_numpy()[off_diagonal], expected
    borderline = np.flatnonzero(adjusted > raw * 1.2)[np.argmin(raw[adjusted > raw * 1.2])]
    level = (raw[borderline] + adjusted[borderline]) / 2
    strict = analytics.cointegration_matrix(prices, alpha=level)
    np.testing.assert_array_equal(strict.reject_bh.to_numpy()[off_diagonal], adjusted < level)
    assert raw[borderline] < level and not strict.reject_bh.to_numpy()[off_diagonal][borderline]


# --------------------------------------------------------------------------------------
# minute_stats
# --------------------------------------------------------------------------------------


def _second_bars(n_seconds, seed):
    bars_y, bars_x = _sparse_correlated_legs(n_seconds, rho=0.8, x_trade_prob=0.5, seed=seed)
    return bars_y, bars_x


def test_minute_stats_is_the_composition_of_the_building_blocks():
    bars_y, bars_x = _second_bars(4 * 3600, seed=61)
    result = analytics.minute_stats(bars_y, bars_x, window=30)
    assert result.index.name == "ts" and len(result) == 240
    assert list(result.columns) == list(analytics.MINUTE_STATS_COLUMNS)
    minutes_y = analytics.resample_bars(bars_y, "1min")
    assert result.y_close.tolist() == minutes_y.close.tolist()
    assert result.y_volume.tolist() == minutes_y.volume.tolist()
    # β, spread and z are the page's pair_signals at 1 min bars (one function for all).
    signals = analytics.pair_signals(result.y_close, result.x_close, method="ols", window=30,
                                     z_window=30, bar_ms=60_000).frame
    for column in ("beta", "alpha", "spread", "z"):
        pd.testing.assert_series_equal(result[column], signals[column], check_names=False)
    hedge = analytics.rolling_hedge_ratio(np.log(result.y_close), np.log(result.x_close), 30)
    np.testing.assert_allclose(result.beta.iloc[30:], hedge.beta.iloc[30:], rtol=1e-7)
    # Half of each window is enough: beta from minute 15, z from minute 15 + 15.
    assert result.beta.iloc[:15].isna().all() and result.beta.iloc[15:].notna().all()
    assert result.z.iloc[:29].isna().all() and result.z.iloc[29:].notna().all()


def test_minute_stats_has_no_look_ahead():
    bars_y, bars_x = _second_bars(3 * 3600, seed=62)
    before = analytics.minute_stats(bars_y, bars_x, window=30)
    cut = T0 + 100 * MINUTE  # change every 1 s bar from minute 100 on
    changed_y = bars_y.copy()
    later = changed_y.index >= cut
    changed_y.loc[later, ["open", "high", "low", "close"]] *= 1.05
    changed_y.loc[later, "volume"] *= 3
    after = analytics.minute_stats(changed_y, bars_x, window=30)
    pd.testing.assert_frame_equal(before[before.index < cut], after[after.index < cut])
    assert not before.loc[cut:].equals(after.loc[cut:])


def test_minute_stats_minute_without_one_leg():
    bars_y, bars_x = _second_bars(2 * 3600, seed=63)
    gap = (bars_x.index >= T0 + 70 * MINUTE) & (bars_x.index < T0 + 71 * MINUTE)
    result = analytics.minute_stats(bars_y, bars_x[~gap], window=20, ffill_limit=0)
    row = result.loc[T0 + 70 * MINUTE]
    assert not row.both_traded and row.x_volume == 0 and row.x_trades == 0
    assert math.isnan(row.x_close) and math.isnan(row.correlation) and math.isnan(row.z)


# --------------------------------------------------------------------------------------
# documentation contract
# --------------------------------------------------------------------------------------

PUBLIC_FUNCTIONS = [
    "resample", "resample_bars", "align", "hedge_ratio", "rolling_hedge_ratio", "kalman_hedge",
    "kalman_update", "spread", "zscore", "adf_test", "engle_granger", "half_life", "hurst",
    "mean_crossings", "rolling_correlation", "price_stats", "liquidity_metrics", "is_liquid",
    "correlation_matrix", "cointegration_matrix", "minute_stats", "log_returns",
    "co_traded_log_returns", "to_log_prices",
]


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_public_functions_have_numpy_docstrings(name):
    doc = getattr(analytics, name).__doc__
    assert doc and all(section in doc for section in ("Parameters\n", "Returns\n", "Notes\n"))
