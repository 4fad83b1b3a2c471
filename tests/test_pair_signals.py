"""pair_signals: the trailing hedge, spread and z the dashboard shows, alerts and backtest use.

Realistic scales throughout: log BTC ~11.4 and log ETH ~8.0 moving ~1e-4 per 1 s bar.
"""

import math

import numpy as np
import pandas as pd
import pytest

import analytics

START_MS = 1_765_843_200_000  # 2025-12-16 00:00 UTC, a multiple of the Kalman segment


def make_pair(n=1500, beta=0.8, seed=4, step=1e-4, phi=0.98, noise=2e-5, start_ms=START_MS):
    """Prices of a pair on 1 s bars: log x ~11.4, a random walk moving ``step`` per bar;
    log y ~8.0 = alpha + beta log x + an AR(1) spread."""
    rng = np.random.default_rng(seed)
    log_x = math.log(87_000) + np.cumsum(rng.normal(0, step, n))
    s = np.zeros(n)
    for i in range(1, n):
        s[i] = phi * s[i - 1] + rng.normal(0, noise)
    alpha = math.log(2_950) - beta * math.log(87_000)
    index = pd.Index(start_ms + np.arange(n, dtype=np.int64) * 1000, name="ts")
    return (pd.Series(np.exp(alpha + beta * log_x + s), index),
            pd.Series(np.exp(log_x), index))


@pytest.mark.parametrize("method", analytics.PAIR_METHODS)
def test_no_look_ahead(method):
    y, x = make_pair()
    t = 1100
    base = analytics.pair_signals(y, x, method=method, window=200, bar_ms=1000).frame
    y2, x2 = y.copy(), x.copy()
    y2.iloc[t + 1:] *= 1.05  # change everything after bar t
    x2.iloc[t + 1:] *= 0.97
    changed = analytics.pair_signals(y2, x2, method=method, window=200, bar_ms=1000).frame
    pd.testing.assert_frame_equal(base.iloc[:t + 1], changed.iloc[:t + 1])
    assert not base.iloc[t + 2:].equals(changed.iloc[t + 2:])


@pytest.mark.parametrize("method", analytics.PAIR_METHODS)
@pytest.mark.parametrize("bar_ms", [None, 1000])
def test_history_of_n_bars_is_the_first_n_rows_of_n_plus_k(method, bar_ms):
    y, x = make_pair(n=5_000, beta=1.2, seed=9)
    y.iloc[[700, 701, 2500]] = np.nan  # missing levels
    full = analytics.pair_signals(y, x, method=method, window=120, bar_ms=bar_ms).frame
    assert full["z"].notna().sum() > 3_000
    for n in (301, 1_234, 3_599, 3_600, 3_601, 4_999):
        head = analytics.pair_signals(y.iloc[:n], x.iloc[:n], method=method, window=120,
                                      bar_ms=bar_ms).frame
        pd.testing.assert_frame_equal(head, full.iloc[:n], check_exact=True)


@pytest.mark.parametrize("method", ["huber", "theil-sen"])
def test_robust_refits_are_anchored_to_bar_numbers_not_to_the_loaded_rows(method):
    y, x = make_pair(n=1_200, beta=1.2, seed=5)
    full = analytics.pair_signals(y, x, method=method, window=200, bar_ms=1000)
    step = full.refit_every
    assert step == 40  # ceil(200 / 5)
    later = analytics.pair_signals(y.iloc[157:], x.iloc[157:], method=method, window=200,
                                   bar_ms=1000)
    # Once the later load covers the z window of spreads whose refits it fully covers,
    # every value is the same (analytics.history_bars: window + z_window + refit step).
    ready = full.frame.index >= y.index[157 + analytics.history_bars(method, 200, 200)]
    pd.testing.assert_series_equal(later.frame.z[ready[157:]], full.frame.z[ready],
                                   rtol=1e-9)
    t = 200 + 3 * step  # a refit bar: beta from bars t-200 .. t-1, held until t+step-1
    static = analytics.hedge_ratio(np.log(y.iloc[t - 200:t]), np.log(x.iloc[t - 200:t]), method)
    assert full.frame.beta.iloc[t] == pytest.approx(static.beta, rel=1e-9)
    assert (full.frame.beta.iloc[t:t + step] == full.frame.beta.iloc[t]).all()
    assert full.frame.beta.iloc[t - 1] != full.frame.beta.iloc[t]


def test_kalman_loaded_from_its_anchor_equals_the_whole_history():
    y, x = make_pair(n=9_000, beta=1.2, seed=6)
    full = analytics.pair_signals(y, x, method="kalman", bar_ms=1000).frame
    first_shown = int(y.index[8_000])
    start = analytics.kalman_history_start(first_shown, 1000)
    assert start == START_MS + 3_600_000  # the filter serving bar 8000 began at bar 3600
    loaded = y.index >= start
    part = analytics.pair_signals(y[loaded], x[loaded], method="kalman", bar_ms=1000).frame
    pd.testing.assert_frame_equal(part[part.index >= first_shown],
                                  full[full.index >= first_shown], check_exact=True)


def test_windows_count_clock_time_not_rows():
    y, x = make_pair(n=1_000, beta=1.2, seed=8)
    sparse = np.ones(1_000, dtype=bool)
    sparse[np.random.default_rng(1).choice(1_000, 300, replace=False)] = False
    sparse[:5] = True
    ys, xs = y[sparse], x[sparse]  # rows absent: seconds in which neither leg traded
    result = analytics.pair_signals(ys, xs, method="ols", window=100, bar_ms=1000).frame
    t = ys.index[600]
    window = (ys.index >= t - 100_000) & (ys.index < t)  # the 100 seconds before t
    static = analytics.hedge_ratio(np.log(ys[window]), np.log(xs[window]))
    assert result.beta.loc[t] == pytest.approx(static.beta, rel=1e-8)
    # Counting rows instead would reach further back than 100 s.
    by_rows = analytics.hedge_ratio(np.log(ys.iloc[500:600]), np.log(xs.iloc[500:600]))
    assert by_rows.beta != pytest.approx(static.beta, rel=1e-6)


def test_ols_matches_rolling_hedge_ratio_and_zscore_once_windows_are_full():
    y, x = make_pair()
    result = analytics.pair_signals(y, x, method="ols", window=150, z_window=90)
    log_y, log_x = np.log(y), np.log(x)
    hedge = analytics.rolling_hedge_ratio(log_y, log_x, 150)
    expected_spread = log_y - hedge.beta * log_x - hedge.alpha
    full = slice(150, None)
    pd.testing.assert_series_equal(result.frame.spread[full], expected_spread[full],
                                   check_names=False, rtol=1e-7)
    expected_z = ((expected_spread - expected_spread.rolling(90).mean())
                  / expected_spread.rolling(90).std())
    pd.testing.assert_series_equal(result.frame.z[240:], expected_z[240:], check_names=False,
                                   rtol=1e-6)
    # Half a window of observations is enough to start: 75 for beta, 45 for z.
    assert result.frame.beta.first_valid_index() == y.index[75]
    assert result.needed == 240 and result.enough_data


def test_rolling_tls_matches_the_static_fit_on_the_same_window():
    y, x = make_pair()
    result = analytics.pair_signals(y, x, method="tls", window=300)
    t = 900  # beta at t comes from bars t-300 .. t-1
    static = analytics.hedge_ratio(np.log(y.iloc[t - 300:t]), np.log(x.iloc[t - 300:t]), "tls")
    assert result.frame.beta.iloc[t] == pytest.approx(static.beta, rel=1e-8)
    assert result.frame.alpha.iloc[t] == pytest.approx(static.alpha, rel=1e-8, abs=1e-10)


# --------------------------------------------------------------------------------------
# beta guard
# --------------------------------------------------------------------------------------


def test_guard_refuses_a_window_in_which_x_printed_two_prices():
    # BTC at 87,000.00 / 87,000.01 for two minutes (the spot recording's blow-up), ETH moving.
    y, x = make_pair(n=600, beta=1.2, seed=11)
    x = x.copy()
    quiet = slice(300, 420)
    x.iloc[quiet] = 87_000.0 + 0.01 * (np.arange(120) % 2)
    result = analytics.pair_signals(y, x, method="ols", window=60, bar_ms=1000).frame
    inside = result.iloc[370:420]  # windows entirely in the quiet stretch
    assert inside.beta.isna().all() and inside.z.isna().all()
    assert (inside.beta_note == "x did not move enough in this window").all()
    assert result.beta.iloc[200:300].notna().all()
    assert (result.beta_note.iloc[200:300] == "").all()
    # Without the guard the same windows give slopes in the hundreds.
    unguarded = analytics.rolling_hedge_ratio(np.log(y), np.log(x), 60).beta.iloc[370:420]
    assert unguarded.abs().max() > 50


@pytest.mark.parametrize("method", analytics.PAIR_METHODS)
def test_a_window_where_x_barely_moved_against_the_noise_gives_no_beta(method):
    # x moves 1e-6 per bar (a few ticks a minute) while y's own noise is 100x larger:
    # any slope is noise over almost nothing (standard error >> 0.5).
    y, x = make_pair(n=2_000, beta=1.2, seed=12, step=1e-6, noise=1e-4, phi=0.5)
    frame = analytics.pair_signals(y, x, method=method, window=60, bar_ms=1000).frame
    assert not (frame.beta.abs() > analytics.BETA_CAP).any()
    refused = (frame.beta_note == "x did not move enough in this window").sum()
    # Kalman: its prior std of beta exceeds 0.5 until x has moved enough since the start.
    assert refused > (1_000 if method == "kalman" else 1_500)
    assert frame.z[frame.beta.isna()].isna().all()  # no beta, no z
    assert frame.spread[frame.beta.isna()].isna().all()


@pytest.mark.parametrize("method", analytics.PAIR_METHODS)
def test_no_finite_beta_beyond_the_cap(method):
    y, x = make_pair(n=1_500, beta=12.0, seed=17, step=2e-4)  # a precise but absurd hedge
    frame = analytics.pair_signals(y, x, method=method, window=120, bar_ms=1000).frame
    assert not (frame.beta.abs() > analytics.BETA_CAP).any()
    capped = frame.beta_note == "beta beyond the cap of ±10 (log prices)"
    assert capped.sum() > 1_000
    assert frame.beta[capped].isna().all() and frame.z[capped].isna().all()


def test_raw_price_cap_is_the_same_elasticity():
    y, x = make_pair(n=400, beta=1.2, seed=13)
    log_frame = analytics.pair_signals(y, x, method="ols", window=100, bar_ms=1000).frame
    raw_frame = analytics.pair_signals(y, x, method="ols", window=100, log_prices=False,
                                       bar_ms=1000).frame
    elasticity = raw_frame.beta * raw_frame.x / raw_frame.y
    both = log_frame.beta.notna() & raw_frame.beta.notna()
    assert both.sum() > 200
    np.testing.assert_allclose(elasticity[both], log_frame.beta[both], rtol=0.02)


# --------------------------------------------------------------------------------------
# Kalman at realistic scales
# --------------------------------------------------------------------------------------


def test_kalman_z_has_unit_variance_and_beta_the_true_elasticity_at_btc_eth_scale():
    # The old fixed-noise filter: beta stuck near ln(ETH)/ln(BTC) = 0.70, z std ~0.01-0.2.
    y, x = make_pair(n=6_000, beta=1.2, seed=14, step=1e-4, phi=0.99, noise=2e-5)
    frame = analytics.pair_signals(y, x, method="kalman", bar_ms=1000).frame
    ready = ~frame.warmup
    assert 0.8 < frame.z[ready].std() < 1.25
    assert (frame.z[ready].abs() > 2).mean() > 0.02  # an entry of 2 is reached
    late_beta = frame.beta.iloc[-1_000:].median()
    assert late_beta == pytest.approx(1.2, rel=0.1)
    ols = analytics.hedge_ratio(np.log(y), np.log(x)).beta
    assert late_beta == pytest.approx(ols, rel=0.1)


def test_kalman_does_not_depend_on_the_price_level():
    y, x = make_pair(n=1_500, beta=1.2, seed=15)
    base = analytics.kalman_hedge(np.log(y), np.log(x)).frame
    shifted = analytics.kalman_hedge(np.log(y * 50), np.log(x / 20)).frame
    np.testing.assert_allclose(shifted.zscore, base.zscore, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shifted.beta_prior, base.beta_prior, rtol=1e-6)


def test_kalman_warmup_is_not_shown():
    y, x = make_pair(n=500, beta=1.2, seed=16)
    frame = analytics.pair_signals(y, x, method="kalman", bar_ms=1000).frame
    warm = analytics.KALMAN_DEFAULT_WARMUP
    assert frame.beta.iloc[:warm].isna().all() and frame.spread.iloc[:warm].isna().all()
    assert frame.z.iloc[:warm].isna().all() and frame.warmup.iloc[:warm].all()
    assert (frame.beta_note.iloc[:warm] == analytics.KALMAN_WARMUP_NOTE).all()
    assert frame.beta.iloc[warm:].notna().all() and not frame.warmup.iloc[warm:].any()
    # The first forecast is already on the spread's scale: no spike of ~15 at the start.
    assert frame.spread.abs().max() < 0.01


def test_kalman_uses_the_filter_prior_and_its_own_forecast_std():
    y, x = make_pair()
    result = analytics.pair_signals(y, x, method="kalman")
    kalman = analytics.kalman_hedge(np.log(y), np.log(x)).frame
    ready = ~kalman.warmup
    pd.testing.assert_series_equal(result.frame.beta[ready], kalman.beta_prior[ready],
                                   check_names=False)
    pd.testing.assert_series_equal(result.frame.z[ready], kalman.zscore[ready],
                                   check_names=False)
    assert result.frame.z[~ready].isna().all()


def test_not_enough_data_is_reported_not_faked():
    y, x = make_pair(n=100)
    result = analytics.pair_signals(y, x, method="ols", window=150)
    assert not result.enough_data and result.needed == 300 and result.nobs == 100
    assert result.frame.z.isna().all() and result.latest.isna().all()
    assert (result.frame.beta_note.iloc[:75] == "not enough bars with both prices in this "
            "window").all()


def test_rejects_unknown_method_tiny_window_and_unordered_times():
    y, x = make_pair(n=50)
    with pytest.raises(ValueError, match="method"):
        analytics.pair_signals(y, x, method="lasso")
    with pytest.raises(ValueError, match="window"):
        analytics.pair_signals(y, x, window=3)
    with pytest.raises(ValueError, match="increasing"):
        analytics.pair_signals(y.iloc[::-1], x.iloc[::-1], bar_ms=1000)


@pytest.mark.parametrize("method, fitter, fits_cold", [
    ("huber", "_huber_fit", 20), ("theil-sen", "_theil_sen_fit", 20),
    ("kalman", "kalman_hedge", 2)])
def test_fit_cache_changes_no_number_and_a_refresh_recomputes_only_the_newest_fit(
        monkeypatch, method, fitter, fits_cold):
    # Mistakes caught: a memo key that misses part of the input (a stale fit served for
    # other data), and a memo that never hits (every refresh refits the whole history).
    y, x = make_pair(n=5_000, beta=1.2, seed=12)
    calls = []  # rows given to each call (Kalman: rows filtered)
    original = getattr(analytics, fitter)
    monkeypatch.setattr(analytics, fitter, lambda *args, **kwargs: calls.append(
        len(args[0])) or original(*args, **kwargs))
    cache: dict = {}
    for n in (4_000, 4_001, 4_040):  # load, a refresh with one new bar, one 39 bars later
        calls.clear()
        memo = analytics.pair_signals(y.iloc[:n], x.iloc[:n], method=method, window=200,
                                      bar_ms=1000, fit_cache=cache).frame
        memo_calls, memo_rows = len(calls), sum(calls)
        cold = analytics.pair_signals(y.iloc[:n], x.iloc[:n], method=method, window=200,
                                      bar_ms=1000).frame
        pd.testing.assert_frame_equal(memo, cold, check_exact=True)
        if n == 4_000:
            assert memo_calls >= fits_cold
        elif method == "kalman":
            # only the filter serving the newest segment runs, from its state before the
            # previous call's last row: over the new rows and that one
            assert memo_rows == n - previous + 1
        else:
            assert memo_calls <= 1  # a fit uses bars before its refit bar: the newest one
        previous = n
    # Different data of the same length hits no stale entry.
    y_other = y.iloc[:4_040] * 1.01
    pd.testing.assert_frame_equal(
        analytics.pair_signals(y_other, x.iloc[:4_040], method=method, window=200,
                               bar_ms=1000, fit_cache=cache).frame,
        analytics.pair_signals(y_other, x.iloc[:4_040], method=method, window=200,
                               bar_ms=1000).frame, check_exact=True)


def test_kalman_continued_over_a_changing_forming_bar_and_gaps_equals_a_fresh_run(
        monkeypatch):
    # Mistake caught: a filter continued from a state that had absorbed the old value of
    # the forming bar (a live refresh changes the last bar's close with every trade).
    y, x = make_pair(n=3_000, beta=0.9, seed=21)
    y.iloc[[500, 2_950]] = np.nan  # gaps: not absorbed, time passes
    rows = []
    original = analytics.kalman_hedge
    monkeypatch.setattr(analytics, "kalman_hedge", lambda *a, **k: rows.append(len(a[0]))
                        or original(*a, **k))
    cache: dict = {}
    steps = [(2_900, 1.0), (2_900, 1.0001), (2_901, 0.9999), (2_960, 1.0), (2_960, 1.0002)]
    for n, forming in steps:
        y_now = y.iloc[:n].copy()
        y_now.iloc[-1] *= forming  # the forming bar's close moved
        rows.clear()
        memo = analytics.pair_signals(y_now, x.iloc[:n], method="kalman", window=60,
                                      bar_ms=1000, fit_cache=cache).frame
        filtered = sum(rows)
        cold = analytics.pair_signals(y_now, x.iloc[:n], method="kalman", window=60,
                                      bar_ms=1000).frame
        pd.testing.assert_frame_equal(memo, cold, check_exact=True)
        if n == 2_900 and forming == 1.0:
            assert filtered == 2_900  # the first call filters everything
        else:
            assert filtered <= n - 2_899 + 1  # the rows after the first call's settled ones
