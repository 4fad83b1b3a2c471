"""pair_signals: the trailing hedge, spread and z the dashboard shows and the backtest trades."""

import numpy as np
import pandas as pd
import pytest

import analytics


def make_pair(n=1500, beta=0.8, seed=4):
    """Log prices: x a random walk, y = 0.5 + beta x + AR(1) spread (phi 0.98)."""
    rng = np.random.default_rng(seed)
    log_x = np.log(87_000) + np.cumsum(rng.normal(0, 1e-3, n))
    s = np.zeros(n)
    for i in range(1, n):
        s[i] = 0.98 * s[i - 1] + rng.normal(0, 2e-4)
    index = pd.Index(np.arange(n, dtype=np.int64) * 1000, name="ts")
    return (pd.Series(np.exp(0.5 + beta * log_x + s), index),
            pd.Series(np.exp(log_x), index))


@pytest.mark.parametrize("method", analytics.PAIR_METHODS)
def test_no_look_ahead(method):
    y, x = make_pair()
    t = 1100
    base = analytics.pair_signals(y, x, method=method, window=200).frame
    y2, x2 = y.copy(), x.copy()
    y2.iloc[t + 1:] *= 1.05  # change everything after bar t
    x2.iloc[t + 1:] *= 0.97
    changed = analytics.pair_signals(y2, x2, method=method, window=200).frame
    pd.testing.assert_frame_equal(base.iloc[:t + 1], changed.iloc[:t + 1])
    assert not base.iloc[t + 2:].equals(changed.iloc[t + 2:])


def test_ols_matches_rolling_hedge_ratio_and_zscore():
    y, x = make_pair()
    result = analytics.pair_signals(y, x, method="ols", window=150, z_window=90)
    log_y, log_x = np.log(y), np.log(x)
    hedge = analytics.rolling_hedge_ratio(log_y, log_x, 150)
    expected_spread = log_y - hedge.beta * log_x - hedge.alpha
    pd.testing.assert_series_equal(result.frame.spread, expected_spread, check_names=False)
    expected_z = (expected_spread - expected_spread.rolling(90).mean()) / expected_spread.rolling(90).std()
    pd.testing.assert_series_equal(result.frame.z, expected_z, check_names=False)
    assert result.needed == 240 and result.enough_data


def test_rolling_tls_matches_the_static_fit_on_the_same_window():
    y, x = make_pair()
    result = analytics.pair_signals(y, x, method="tls", window=300)
    t = 900  # beta at t comes from bars t-300 .. t-1
    static = analytics.hedge_ratio(np.log(y.iloc[t - 300:t]), np.log(x.iloc[t - 300:t]), "tls")
    assert result.frame.beta.iloc[t] == pytest.approx(static.beta, rel=1e-8)
    assert result.frame.alpha.iloc[t] == pytest.approx(static.alpha, rel=1e-8, abs=1e-10)


def test_robust_refits_hold_between_refits_and_use_only_the_past():
    y, x = make_pair(n=1200)
    result = analytics.pair_signals(y, x, method="huber", window=200)
    step = result.refit_every
    assert step == int(np.ceil(1200 / analytics.MAX_ROBUST_REFITS))
    t = 200 + 3 * step  # a refit bar
    static = analytics.hedge_ratio(np.log(y.iloc[t - 200:t]), np.log(x.iloc[t - 200:t]), "huber")
    assert result.frame.beta.iloc[t] == pytest.approx(static.beta, rel=1e-9)
    assert result.frame.beta.iloc[t + step - 1] == result.frame.beta.iloc[t]


def test_kalman_uses_the_filter_prior_and_its_own_forecast_std():
    y, x = make_pair()
    result = analytics.pair_signals(y, x, method="kalman")
    kalman = analytics.kalman_hedge(np.log(y), np.log(x)).frame
    ready = ~kalman.warmup
    pd.testing.assert_series_equal(result.frame.beta, kalman.beta_prior, check_names=False)
    pd.testing.assert_series_equal(result.frame.z[ready], kalman.zscore[ready], check_names=False)
    assert result.frame.z[~ready].isna().all()


def test_not_enough_data_is_reported_not_faked():
    y, x = make_pair(n=100)
    result = analytics.pair_signals(y, x, method="ols", window=60)
    assert not result.enough_data and result.needed == 120 and result.nobs == 100
    assert result.frame.z.isna().all() and result.latest.isna().all()


def test_rejects_unknown_method_and_tiny_window():
    y, x = make_pair(n=50)
    with pytest.raises(ValueError, match="method"):
        analytics.pair_signals(y, x, method="lasso")
    with pytest.raises(ValueError, match="window"):
        analytics.pair_signals(y, x, window=3)
