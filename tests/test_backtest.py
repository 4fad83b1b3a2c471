"""Tests of backtest.py: hand-made z paths with hand-computed fills, PnL, fees and metrics.

Conventions used in the comments: bars are numbered from 0; "signal @t" is the close of
bar t, "fill @t" the fill on bar t's price; defaults are fee 5 bps, slippage 1 bp,
notional 10,000, log-price sizing. A slipped price is written out, e.g. a sell of y at 102
with 1 bp slippage fills at 102 * 0.9999 = 101.9898.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest import (
    SECONDS_PER_YEAR,
    TRADE_COLUMNS,
    BacktestResult,
    Drawdown,
    backtest,
    max_drawdown,
    periods_per_year,
    sharpe_ratio,
    sortino_ratio,
)

START_MS = 1_765_000_000_000
STEP_MS = 1_000


def make_index(n: int, step_ms: int = STEP_MS) -> pd.Index:
    return pd.Index(START_MS + step_ms * np.arange(n, dtype=np.int64), name="ts")


def run(y, x, z, **kwargs) -> BacktestResult:
    """Backtest plain lists on a regular 1 s index; ``beta`` may be a list or a number."""
    index = make_index(len(z))
    beta = kwargs.pop("beta", 0.5)
    if isinstance(beta, list):
        beta = pd.Series(beta, index=index, dtype=float)
    return backtest(
        pd.Series(y, index=index, dtype=float),
        pd.Series(x, index=index, dtype=float),
        pd.Series(z, index=index, dtype=float),
        beta=beta,
        **kwargs,
    )


def make_random_pair(n: int, seed: int) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """Seeded y, x, z, beta with frequent ±2 crossings (z is a fast AR(1), not fitted)."""
    rng = np.random.default_rng(seed)
    index = make_index(n)
    z = np.empty(n)
    z[0] = 0.0
    for t in range(1, n):
        z[t] = 0.8 * z[t - 1] + rng.normal(0.0, 1.5)
    x = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    y = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)) + 0.002 * z)
    beta = 0.5 + 0.1 * np.sin(np.arange(n) / 50.0)
    return (
        pd.Series(y, index=index),
        pd.Series(x, index=index),
        pd.Series(z, index=index),
        pd.Series(beta, index=index),
    )


# --- sides, fills, PnL -------------------------------------------------------------------


def test_short_spread_round_trip_matches_hand_computation():
    y = [100.0, 101.0, 102.0, 100.0, 99.0, 98.0]
    x = [50.0, 50.0, 51.0, 50.0, 50.0, 49.0]
    z = [0.0, 2.5, 1.0, 0.5, -0.1, 0.0]
    result = run(y, x, z, beta=0.5)

    # signal @1 (2.5 > 2) -> short spread, fill @2: sell y at 102*0.9999, buy x at 51*1.0001
    # units from the fill bar's prices: units_y = 10000/102, units_x = 0.5*10000/51
    # signal @4 (-0.1 <= 0) -> exit, fill @5: buy y at 98*1.0001, sell x at 49*0.9999
    units_y = 10_000 / 102
    units_x = 0.5 * 10_000 / 51
    entry_y, entry_x, exit_y, exit_x = 101.9898, 51.0051, 98.0098, 48.9951
    expected_gross = units_y * (entry_y - exit_y) + units_x * (exit_x - entry_x)  # ≈ 193.137
    expected_fees = 5e-4 * (
        units_y * entry_y + units_x * entry_x + units_y * exit_y + units_x * exit_x
    )  # four fills ≈ 14.706
    trades = result.trades
    assert len(trades) == 1
    trade = trades.iloc[0]
    assert trade["side"] == "short"
    assert trade["entry_ts"] == START_MS + 2_000
    assert trade["exit_ts"] == START_MS + 5_000
    assert trade["bars_held"] == 3
    assert trade["exit_reason"] == "exit"
    assert trade["entry_price_y"] == pytest.approx(entry_y, rel=1e-12)
    assert trade["entry_price_x"] == pytest.approx(entry_x, rel=1e-12)
    assert trade["exit_price_y"] == pytest.approx(exit_y, rel=1e-12)
    assert trade["exit_price_x"] == pytest.approx(exit_x, rel=1e-12)
    assert trade["units_y"] == pytest.approx(-units_y, rel=1e-12)  # short y
    assert trade["units_x"] == pytest.approx(units_x, rel=1e-12)  # long β·x
    assert trade["gross_pnl"] == pytest.approx(expected_gross, rel=1e-10)
    assert trade["fees"] == pytest.approx(expected_fees, rel=1e-10)
    assert trade["pnl"] == pytest.approx(expected_gross - expected_fees, rel=1e-10)
    assert result.positions.tolist() == [0, 0, -1, -1, -1, 0]
    # equity @3 marks the open position at 100 / 50, after the entry commission
    entry_fee = 5e-4 * (units_y * entry_y + units_x * entry_x)
    expected_equity_3 = (
        10_000 - units_y * (100.0 - entry_y) + units_x * (50.0 - entry_x) - entry_fee
    )
    assert result.equity.iloc[3] == pytest.approx(expected_equity_3, rel=1e-12)
    assert result.equity.iloc[-1] == pytest.approx(10_000 + expected_gross - expected_fees)


def test_long_spread_round_trip_mirrors_short():
    y = [100.0, 101.0, 102.0, 104.0, 105.0, 106.0]
    x = [50.0, 50.0, 51.0, 51.0, 52.0, 52.0]
    z = [0.0, -2.5, -1.0, -0.5, 0.1, 0.0]
    result = run(y, x, z, beta=0.5)

    # signal @1 (-2.5 < -2) -> long spread, fill @2: buy y at 102*1.0001, sell x at 51*0.9999
    # signal @4 (0.1 >= 0) -> exit, fill @5: sell y at 106*0.9999, buy x at 52*1.0001
    units_y = 10_000 / 102
    units_x = 0.5 * 10_000 / 51
    entry_y, entry_x, exit_y, exit_x = 102.0102, 50.9949, 105.9894, 52.0052
    expected_gross = units_y * (exit_y - entry_y) - units_x * (exit_x - entry_x)  # ≈ 291.06
    expected_fees = 5e-4 * units_y * (entry_y + exit_y) + 5e-4 * units_x * (entry_x + exit_x)
    trade = result.trades.iloc[0]
    assert len(result.trades) == 1
    assert trade["side"] == "long"
    assert (trade["entry_ts"], trade["exit_ts"]) == (START_MS + 2_000, START_MS + 5_000)
    assert trade["units_y"] == pytest.approx(units_y, rel=1e-12)
    assert trade["units_x"] == pytest.approx(-units_x, rel=1e-12)
    assert trade["entry_price_y"] == pytest.approx(entry_y, rel=1e-12)
    assert trade["exit_price_x"] == pytest.approx(exit_x, rel=1e-12)
    assert trade["gross_pnl"] == pytest.approx(expected_gross, rel=1e-10)
    assert trade["fees"] == pytest.approx(expected_fees, rel=1e-10)
    assert result.positions.tolist() == [0, 0, 1, 1, 1, 0]


def test_both_sides_trade_in_one_path():
    z = [0.0, 2.5, 1.0, -0.5, -2.6, -1.0, 0.2, 0.0]
    y = [100.0] * 8
    x = [50.0] * 8
    result = run(y, x, z)

    # short: signal @1, fill @2; exit signal @3 (-0.5 <= 0), fill @4
    # long: signal @4 (-2.6, flat again after the fill @4), fill @5; exit signal @6, fill @7
    trades = result.trades
    assert trades["side"].tolist() == ["short", "long"]
    assert (trades["entry_ts"] - START_MS).tolist() == [2_000, 5_000]
    assert (trades["exit_ts"] - START_MS).tolist() == [4_000, 7_000]
    assert result.positions.tolist() == [0, 0, -1, -1, 0, 1, 1, 0]


@pytest.mark.parametrize(("z_sign", "expected_side", "expected_pnl_sign"),
                         [(1.0, "short", 1.0), (-1.0, "long", -1.0)])
def test_short_spread_profits_when_y_falls_relative_to_x(z_sign, expected_side,
                                                        expected_pnl_sign):
    # y falls 100 -> 95 while x stays at 50; zero costs, position closed "end" at bar 4
    z = [z_sign * v for v in (0.0, 2.5, 1.0, 1.0, 1.0)]
    result = run([100.0, 100.0, 100.0, 95.0, 95.0], [50.0] * 5, z,
                 fee_bps=0.0, slippage_bps=0.0)
    trade = result.trades.iloc[0]
    assert trade["side"] == expected_side
    # units_y = 10000/100 = 100; the y leg moves 5 against the long / for the short
    assert trade["pnl"] == pytest.approx(expected_pnl_sign * 100 * 5.0, rel=1e-12)


def test_negative_beta_flips_the_x_leg():
    result = run([100.0] * 4, [50.0] * 4, [0.0, 2.5, 1.0, 1.0], beta=-0.5)
    trade = result.trades.iloc[0]
    # short spread sells y and "buys β·x" = sells 0.5*10000/50 = 100 units of x
    assert trade["units_y"] == pytest.approx(-100.0)
    assert trade["units_x"] == pytest.approx(-100.0)
    assert trade["entry_price_x"] == pytest.approx(50.0 * 0.9999)  # a sell slips down


# --- timing of entries and exits --------------------------------------------------------


@pytest.mark.parametrize(
    ("z", "exit_level", "expected_exit_bar"),
    [
        # held through several bars above 0; exit signal @5 (-0.1), fill @6
        ([0.0, 2.5, 0.5, 0.5, 0.5, -0.1, 0.3, 0.3], 0.0, 6),
        # z is already past 0 on the fill bar @2: exit signal @2, fill @3 (earliest possible)
        ([0.0, 2.5, -0.2, 1.0, 1.0, 1.0, 1.0, 1.0], 0.0, 3),
        # exit=0.5: the short exits at z <= 0.5 (inclusive) -> signal @3, fill @4
        ([0.0, 2.5, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0], 0.5, 4),
        # long with exit=0.5 exits at z >= -0.5 -> signal @4, fill @5
        ([0.0, -2.5, -1.0, -0.6, -0.5, -1.0, -1.0, -1.0], 0.5, 5),
    ],
)
def test_exit_fills_on_the_bar_after_the_exit_signal(z, exit_level, expected_exit_bar):
    result = run([100.0] * 8, [50.0] * 8, z, exit=exit_level)
    trade = result.trades.iloc[0]
    assert len(result.trades) == 1
    assert trade["entry_ts"] == START_MS + 2_000
    assert trade["exit_ts"] == START_MS + expected_exit_bar * STEP_MS
    assert trade["bars_held"] == expected_exit_bar - 2
    assert trade["exit_reason"] == "exit"


def test_stop_closes_and_blocks_reentry_until_z_is_back_inside_entry():
    # signal @1, fill @2; z=4.5 >= stop 4 @3 -> stop, fill @4. z stays above entry @4, @5:
    # no re-entry (disarmed); back inside ±2 @6 re-arms; 2.5 @7 -> new short, fill @8
    z = [0.0, 2.5, 3.0, 4.5, 3.0, 2.5, 1.0, 2.5, 1.0, 1.0]
    result = run([100.0] * 10, [50.0] * 10, z, stop=4.0)
    trades = result.trades
    assert trades["exit_reason"].tolist() == ["stop", "end"]
    assert (trades["entry_ts"] - START_MS).tolist() == [2_000, 8_000]
    assert trades["exit_ts"].iloc[0] == START_MS + 4_000
    assert result.positions.tolist() == [0, 0, -1, -1, 0, 0, 0, 0, -1, 0]


def test_long_stop_and_no_entry_beyond_the_stop():
    # long: signal @1, fill @2, z=-4.2 <= -4 @3 -> stop, fill @4
    result = run([100.0] * 6, [50.0] * 6, [0.0, -2.5, -3.0, -4.2, 0.0, 0.0], stop=4.0)
    assert result.trades["exit_reason"].tolist() == ["stop"]
    assert result.trades["exit_ts"].iloc[0] == START_MS + 4_000
    # |z| = 5 >= stop: entering would be stopped at once, so no trade
    jumped = run([100.0] * 4, [50.0] * 4, [0.0, 5.0, 5.0, 1.0], stop=4.0)
    assert jumped.n_trades == 0


@pytest.mark.parametrize("max_holding_bars", [1, 3])
def test_max_holding_exit(max_holding_bars):
    # z never reaches 0: fill @2, the exit is ordered so that its fill makes bars_held
    # equal max_holding_bars -> exit fill @(2 + max_holding_bars)
    z = [0.0, 2.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    result = run([100.0] * 8, [50.0] * 8, z, max_holding_bars=max_holding_bars)
    trade = result.trades.iloc[0]
    assert len(result.trades) == 1
    assert trade["exit_reason"] == "max_holding"
    assert trade["bars_held"] == max_holding_bars
    assert trade["exit_ts"] == START_MS + (2 + max_holding_bars) * STEP_MS


def test_max_holding_fires_on_nan_z():
    nan = math.nan
    result = run([100.0] * 6, [50.0] * 6, [0.0, 2.5, nan, nan, nan, nan], max_holding_bars=2)
    # fill @2, order @3 (3 + 1 - 2 == 2), fill @4
    assert result.trades["exit_reason"].tolist() == ["max_holding"]
    assert result.trades["exit_ts"].iloc[0] == START_MS + 4_000


def test_signal_on_the_last_bar_is_not_filled():
    result = run([100.0] * 4, [50.0] * 4, [0.0, 0.0, 0.0, 2.5])
    assert result.n_trades == 0
    assert result.positions.tolist() == [0, 0, 0, 0]
    assert result.equity.tolist() == [10_000.0] * 4


def test_open_position_is_closed_at_the_last_bar_with_costs():
    # fill @2 at 102 / 51; the exit signal @4 is on the last bar -> not filled -> "end" @4
    y = [100.0, 101.0, 102.0, 100.0, 99.0]
    x = [50.0, 50.0, 51.0, 50.0, 50.0]
    result = run(y, x, [0.0, 2.5, 1.0, 0.5, -0.1])
    trade = result.trades.iloc[0]
    assert trade["exit_reason"] == "end"
    assert trade["exit_ts"] == START_MS + 4_000
    # closing the short: buy y at 99*1.0001, sell x at 50*0.9999
    assert trade["exit_price_y"] == pytest.approx(99.0099, rel=1e-12)
    assert trade["exit_price_x"] == pytest.approx(49.995, rel=1e-12)
    units_y, units_x = 10_000 / 102, 0.5 * 10_000 / 51
    expected_fees = 5e-4 * (units_y * (101.9898 + 99.0099) + units_x * (51.0051 + 49.995))
    assert trade["fees"] == pytest.approx(expected_fees, rel=1e-10)
    assert result.equity.iloc[-1] == pytest.approx(10_000 + trade["pnl"], rel=1e-12)


# --- sizing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log_prices", "beta", "expected_units_x"),
    [
        (True, 0.5, 0.5 * 10_000 / 51),  # dollar hedge: β·notional / px
        (False, 2.0, 2.0 * 10_000 / 102),  # unit hedge: β·units_y
    ],
)
def test_sizing_matches_the_spread_definition(log_prices, beta, expected_units_x):
    result = run([100.0, 101.0, 102.0, 103.0], [50.0, 50.0, 51.0, 52.0],
                 [0.0, -2.5, -1.0, 0.0], beta=beta, log_prices=log_prices)
    trade = result.trades.iloc[0]
    assert trade["units_y"] == pytest.approx(10_000 / 102, rel=1e-12)
    assert trade["units_x"] == pytest.approx(-expected_units_x, rel=1e-12)


def test_raw_price_pnl_is_units_y_times_spread_change():
    # raw spread s = y - 2x: entry @2: 102 - 2*51 = 0; exit @5: 98 - 2*47 = 4 -> ds = +4
    # long spread, zero costs: pnl = units_y * ds = (10000/102) * 4
    result = run([100.0, 101.0, 102.0, 100.0, 99.0, 98.0], [50.0, 50.0, 51.0, 49.0, 48.0, 47.0],
                 [0.0, -2.5, -1.0, -0.5, 0.1, 0.0], beta=2.0, log_prices=False,
                 fee_bps=0.0, slippage_bps=0.0)
    assert result.trades["pnl"].iloc[0] == pytest.approx(10_000 / 102 * 4.0, rel=1e-12)


def test_units_are_fixed_at_entry_and_use_the_signal_bar_beta():
    y = [100.0, 101.0, 102.0, 100.0, 99.0, 98.0]
    x = [50.0, 50.0, 51.0, 50.0, 50.0, 49.0]
    z = [0.0, 2.5, 1.0, 0.5, -0.1, 0.0]
    constant = run(y, x, z, beta=0.5)
    # β known at the signal bar @1 is 0.5; it moves a lot from the fill bar on
    moving = run(y, x, z, beta=[0.5, 0.5, 0.9, 1.4, 2.0, 3.0])
    pd.testing.assert_frame_equal(moving.trades, constant.trades)
    pd.testing.assert_series_equal(moving.equity, constant.equity)
    assert moving.trades["beta"].iloc[0] == 0.5
    # a different β at the signal bar does change the size (the comparison can fail)
    other = run(y, x, z, beta=[0.5, 0.7, 0.5, 0.5, 0.5, 0.5])
    assert other.trades["units_x"].iloc[0] == pytest.approx(0.7 * 10_000 / 51)


# --- missing data ------------------------------------------------------------------------


def test_nan_z_holds_the_state():
    nan = math.nan
    # fill @2; NaN @2, @3 neither exit nor stop; exit signal @4, fill @5
    held = run([100.0] * 6, [50.0] * 6, [0.0, 2.5, nan, nan, -0.1, 0.0], stop=3.0)
    assert (held.trades["exit_ts"] - START_MS).tolist() == [5_000]
    # NaN / inf while flat never enters
    flat = run([100.0] * 5, [50.0] * 5, [0.0, nan, math.inf, -math.inf, 0.0])
    assert flat.n_trades == 0
    # a β still warming up (NaN) at the signal bar blocks the entry; @3 it is known
    warming = run([100.0] * 6, [50.0] * 6, [0.0, 2.5, 1.0, 2.5, 1.0, 1.0],
                  beta=[nan, nan, nan, 0.5, 0.5, 0.5])
    assert (warming.trades["entry_ts"] - START_MS).tolist() == [4_000]


def test_nan_price_defers_the_fill_to_the_next_bar_with_both_prices():
    nan = math.nan
    y = [100.0, 101.0, nan, 103.0, nan, 105.0, 106.0, 107.0]
    x = [50.0, 50.0, 50.0, 52.0, 52.0, nan, 53.0, 53.0]
    # signal @1 -> fill wanted @2 but y is NaN -> fill @3 at 103 / 52 (z @2 ignored: the
    # order is in flight); exit signal @4 -> fill wanted @5, x NaN -> fill @6 at 106 / 53
    z = [0.0, 2.5, -1.0, 1.0, -0.1, 1.0, 1.0, 1.0]
    result = run(y, x, z, fee_bps=0.0, slippage_bps=0.0)
    trade = result.trades.iloc[0]
    assert len(result.trades) == 1
    assert (trade["entry_ts"], trade["exit_ts"]) == (START_MS + 3_000, START_MS + 6_000)
    assert (trade["entry_price_y"], trade["entry_price_x"]) == (103.0, 52.0)
    assert (trade["exit_price_y"], trade["exit_price_x"]) == (106.0, 53.0)
    assert trade["units_y"] == pytest.approx(-10_000 / 103)
    assert result.positions.tolist() == [0, 0, 0, -1, -1, -1, 0, 0]
    # @4 y is NaN: marked at the last known y (103) and x = 52, the entry prices -> 10,000
    assert result.equity.iloc[4] == pytest.approx(10_000.0, rel=1e-12)
    # @5 x is NaN: the position is marked at the last known x (52) and y = 105
    units_y, units_x = 10_000 / 103, 0.5 * 10_000 / 52
    expected_equity_5 = 10_000 - units_y * (105.0 - 103.0) + units_x * (52.0 - 52.0)
    assert result.equity.iloc[5] == pytest.approx(expected_equity_5, rel=1e-12)


# --- no look-ahead -----------------------------------------------------------------------


@pytest.mark.parametrize("cut", [120, 250, 399])
def test_data_after_t_changes_nothing_at_or_before_t(cut):
    y, x, z, beta = make_random_pair(500, seed=11)
    original = backtest(y, x, z, beta=beta, stop=4.0, max_holding_bars=15)
    rng = np.random.default_rng(99)
    after = slice(cut + 1, None)
    y2, x2, z2, beta2 = y.copy(), x.copy(), z.copy(), beta.copy()
    y2.iloc[after] = y.iloc[after] * np.exp(rng.normal(0.0, 0.05, len(y) - cut - 1))
    x2.iloc[after] = x.iloc[after] * np.exp(rng.normal(0.0, 0.05, len(x) - cut - 1))
    z2.iloc[after] = rng.normal(0.0, 3.0, len(z) - cut - 1)
    beta2.iloc[after] = 2.0
    changed = backtest(y2, x2, z2, beta=beta2, stop=4.0, max_holding_bars=15)

    t_ms = y.index[cut]
    done_before = original.trades[original.trades["exit_ts"] <= t_ms]
    assert len(done_before) >= 3  # the test would be vacuous without closed trades
    pd.testing.assert_frame_equal(
        changed.trades[changed.trades["exit_ts"] <= t_ms], done_before
    )
    pd.testing.assert_series_equal(changed.equity.iloc[: cut + 1],
                                   original.equity.iloc[: cut + 1])
    pd.testing.assert_series_equal(changed.positions.iloc[: cut + 1],
                                   original.positions.iloc[: cut + 1])
    # and the perturbation does change the future (the comparison above can fail)
    assert not changed.equity.iloc[cut + 1:].equals(original.equity.iloc[cut + 1:])


# --- costs -------------------------------------------------------------------------------


def test_fees_are_four_fills_per_round_trip():
    y = [100.0, 100.0, 100.0, 95.0, 95.0]
    x = [50.0, 50.0, 50.0, 51.0, 52.0]
    result = run(y, x, [0.0, 2.5, 1.0, -0.1, 0.0], fee_bps=10.0, slippage_bps=0.0)
    # fill @2 at 100 / 50, fill @4 at 95 / 52; units_y = 100, units_x = 0.5*10000/50 = 100
    # fills: 100*100 + 100*50 + 100*95 + 100*52 = 29,700 traded; fee 10 bps -> 29.70
    trade = result.trades.iloc[0]
    assert trade["fees"] == pytest.approx(29.70, rel=1e-12)
    assert result.fees_paid == pytest.approx(29.70, rel=1e-12)
    assert result.turnover == pytest.approx(29_700 / 10_000, rel=1e-12)
    # gross: short y 100*(100-95) + long x 100*(52-50) = 700
    assert trade["gross_pnl"] == pytest.approx(700.0, rel=1e-12)
    assert trade["pnl"] == pytest.approx(700.0 - 29.70, rel=1e-12)


def test_zero_fees_make_gross_equal_net_and_slippage_moves_prices_against_us():
    y, x, z, beta = make_random_pair(400, seed=5)
    result = backtest(y, x, z, beta=beta, fee_bps=0.0, slippage_bps=3.0)
    trades = result.trades
    assert len(trades) >= 5
    assert (trades["fees"] == 0.0).all()
    np.testing.assert_array_equal(trades["pnl"].to_numpy(), trades["gross_pnl"].to_numpy())
    # fill vs the bar's price: buys above, sells below, by exactly 3 bps
    ref_y = y.loc[trades["entry_ts"]].to_numpy()
    buys_y = trades["units_y"].to_numpy() > 0
    expected = np.where(buys_y, ref_y * 1.0003, ref_y * 0.9997)
    np.testing.assert_allclose(trades["entry_price_y"].to_numpy(), expected, rtol=1e-14)
    ref_x = x.loc[trades["exit_ts"]].to_numpy()
    sells_x_on_exit = trades["units_x"].to_numpy() > 0
    expected = np.where(sells_x_on_exit, ref_x * 0.9997, ref_x * 1.0003)
    np.testing.assert_allclose(trades["exit_price_x"].to_numpy(), expected, rtol=1e-14)
    # the same run without slippage earns exactly the slippage cost more
    frictionless = backtest(y, x, z, beta=beta, fee_bps=0.0, slippage_bps=0.0)
    np.testing.assert_allclose(
        frictionless.trades["pnl"].to_numpy() - trades["pnl"].to_numpy(),
        trades["slippage_cost"].to_numpy(),
        rtol=1e-9,
    )


def test_final_equity_is_capital_plus_net_pnl():
    y, x, z, beta = make_random_pair(600, seed=3)
    result = backtest(y, x, z, beta=beta, capital=50_000.0, stop=4.5)
    assert result.equity.iloc[0] == 50_000.0
    assert result.equity.iloc[-1] == pytest.approx(50_000.0 + result.trades["pnl"].sum(),
                                                   rel=1e-12)
    assert result.total_return == pytest.approx(result.trades["pnl"].sum() / 50_000.0,
                                                rel=1e-9)
    # exposure from positions agrees with the trades' holding bars
    assert result.exposure == pytest.approx(result.trades["bars_held"].sum() / 600)


# --- metrics -----------------------------------------------------------------------------


def test_trade_metrics_on_a_three_trade_path():
    # zero costs, x flat at 50 (x leg earns 0), units_y = 10000/100 = 100 at every entry
    # trade 1 short: fill @2 at 100, fill @4 at 95  -> +100*5 = +500
    # trade 2 short: fill @6 at 100, fill @8 at 102 -> -100*2 = -200
    # trade 3 long:  fill @10 at 100, fill @12 at 103 -> +100*3 = +300
    z = [0.0, 2.5, 1.0, -0.1, 0.0, 2.5, 1.0, -0.1, 0.0, -2.5, -1.0, 0.1, 0.0]
    y = [100.0, 100.0, 100.0, 97.0, 95.0, 98.0, 100.0, 101.0, 102.0, 101.0, 100.0, 101.0, 103.0]
    result = run(y, [50.0] * 13, z, fee_bps=0.0, slippage_bps=0.0)
    assert result.trades["pnl"].tolist() == pytest.approx([500.0, -200.0, 300.0], rel=1e-12)
    assert result.n_trades == 3
    assert result.win_rate == pytest.approx(2 / 3)
    assert result.profit_factor == pytest.approx(800.0 / 200.0)
    assert result.total_return == pytest.approx(600.0 / 10_000)
    assert result.avg_holding_bars == 2.0
    assert result.avg_holding_seconds == 2.0
    assert result.exposure == pytest.approx(6 / 13)  # bars 2, 3, 6, 7, 10, 11
    # traded notional per trade: entry 100*100 + 100*50, exit 100*y_exit + 100*50
    # = 29,500 + 30,200 + 30,300 = 90,000
    assert result.turnover == pytest.approx(90_000 / 10_000, rel=1e-12)


def test_metrics_without_trades_or_without_losses():
    flat = run([100.0] * 5, [50.0] * 5, [0.0] * 5)
    assert flat.n_trades == 0
    for name in ("win_rate", "profit_factor", "avg_holding_bars", "avg_holding_seconds",
                 "sharpe", "sortino"):
        assert math.isnan(getattr(flat, name)), name
    assert (flat.total_return, flat.max_drawdown, flat.exposure) == (0.0, 0.0, 0.0)
    assert list(flat.trades.columns) == list(TRADE_COLUMNS)
    assert flat.trades["entry_ts"].dtype == np.int64
    winner = run([100.0, 100.0, 100.0, 95.0, 95.0], [50.0] * 5, [0.0, 2.5, 1.0, -0.1, 0.0],
                 fee_bps=0.0, slippage_bps=0.0)
    assert winner.profit_factor == math.inf
    assert winner.win_rate == 1.0


def test_sharpe_and_sortino_match_pandas_on_equity_returns():
    y, x, z, beta = make_random_pair(800, seed=21)
    result = backtest(y, x, z, beta=beta, bar_seconds=60.0)
    returns = result.equity.pct_change().iloc[1:]
    bars_per_year = 365 * 24 * 60  # 1 min bars, 24/7
    expected_sharpe = returns.mean() / returns.std() * math.sqrt(bars_per_year)
    downside = math.sqrt((returns.clip(upper=0.0) ** 2).mean())
    expected_sortino = returns.mean() / downside * math.sqrt(bars_per_year)
    assert result.periods_per_year == bars_per_year
    assert result.sharpe == pytest.approx(expected_sharpe, rel=1e-9)
    assert result.sortino == pytest.approx(expected_sortino, rel=1e-9)
    expected_depth = (1.0 - result.equity / result.equity.cummax()).max()
    assert result.max_drawdown == pytest.approx(expected_depth, rel=1e-12)


@pytest.mark.parametrize("n, bar_seconds, meaningful", [
    (800, 1.0, False),      # 13 min of 1 s bars: too short to annualise
    (3_599, 1.0, False),    # one bar short of an hour
    (3_600, 1.0, True),
    (99, 3_600.0, False),   # four days, but too few bars
    (100, 3_600.0, True),
])
def test_short_samples_are_flagged_as_too_short_to_annualise(n, bar_seconds, meaningful):
    y, x, z, beta = make_random_pair(n, seed=22)
    result = backtest(y, x, z, beta=beta, bar_seconds=bar_seconds)

    assert result.n_trades > 0
    assert math.isfinite(result.sharpe) and math.isfinite(result.sortino)  # still computed
    assert (result.ratios_note == "") is meaningful
    if not meaningful:
        assert f"has {n} bars" in result.ratios_note


def test_max_drawdown_on_a_hand_made_curve():
    # running peak: 100 120 120 120 130 130 130 130
    # drawdown:     0   0   .25 .083 0  .10  0  .038  -> depth 0.25 (90 vs 120)
    # underwater runs: @2-3 (peak @1, back at 130 @4) = 3 bars; @5 (peak @4, @6) = 2;
    # @7 (peak @6, never back) = 1. ts has a 3 s gap between @2 and @3.
    ts = pd.Index(START_MS + np.array([0, 1, 2, 5, 6, 7, 8, 9]) * 1_000, name="ts")
    equity = pd.Series([100.0, 120.0, 90.0, 110.0, 130.0, 117.0, 130.0, 125.0], index=ts)
    result = max_drawdown(equity)
    assert result == Drawdown(depth=pytest.approx(0.25), duration_bars=3,
                              duration_seconds=5.0)  # ts @4 - ts @1 = 6 s - 1 s


def test_max_drawdown_unrecovered_and_flat():
    ts = make_index(4)
    # peak @0 = 100, never regained: 3 bars to the last bar, depth 10 %
    result = max_drawdown(pd.Series([100.0, 90.0, 95.0, 99.0], index=ts))
    assert (result.depth, result.duration_bars, result.duration_seconds) == (
        pytest.approx(0.10), 3, 3.0)
    rising = max_drawdown(pd.Series([100.0, 100.0, 101.0, 102.0], index=ts))
    assert (rising.depth, rising.duration_bars) == (0.0, 0)


def test_ratio_helpers_on_hand_values():
    returns = np.array([0.01, -0.02, 0.03, 0.0])
    # mean 0.005; sample std: deviations .005 -.025 .025 -.005 -> ss 0.0013/3 -> 0.0208167
    assert sharpe_ratio(returns, 4.0) == pytest.approx(0.005 / math.sqrt(0.0013 / 3) * 2.0)
    # downside: sqrt((0.02**2) / 4) = 0.01 -> 0.005 / 0.01 * 2 = 1.0
    assert sortino_ratio(returns, 4.0) == pytest.approx(1.0)
    assert sortino_ratio(np.array([0.01, 0.0]), 4.0) == math.inf
    assert math.isnan(sharpe_ratio(np.array([0.01]), 4.0))
    assert math.isnan(sharpe_ratio(np.zeros(10), 4.0))
    assert periods_per_year(3600.0) == 8760.0
    assert SECONDS_PER_YEAR == 31_536_000


def test_too_few_bars_reports_nan_ratios():
    result = run([100.0, 100.0], [50.0, 50.0], [0.0, 0.0])
    assert math.isnan(result.sharpe) and math.isnan(result.sortino)
    assert "has 2 bars" in result.ratios_note
    empty = run([], [], [])
    assert empty.n_bars == 0 and math.isnan(empty.total_return)
    assert empty.equity.empty and empty.trades.empty


# --- validation --------------------------------------------------------------------------


def _valid_inputs(n: int = 5):
    index = make_index(n)
    return (pd.Series(100.0, index=index), pd.Series(50.0, index=index),
            pd.Series(0.0, index=index))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"entry": 1.0, "exit": 1.0}, r"entry \(1\.0\) must be greater than exit \(1\.0\)"),
        ({"exit": -0.5}, r"exit \(-0\.5\) must be >= 0"),
        ({"stop": 2.0}, r"stop \(2\.0\) must be None or a number greater than entry"),
        ({"max_holding_bars": 0}, r"max_holding_bars \(0\) must be an integer >= 1"),
        ({"max_holding_bars": 2.5}, r"max_holding_bars \(2\.5\)"),
        ({"fee_bps": -1.0}, r"fee_bps \(-1\.0\) must be >= 0"),
        ({"slippage_bps": math.nan}, r"slippage_bps \(nan\) must be a finite number"),
        ({"notional": 0.0}, r"notional \(0\.0\) must be > 0"),
        ({"capital": -5.0}, r"capital \(-5\.0\) must be > 0"),
        ({"bar_seconds": 0}, r"bar_seconds \(0\) must be > 0"),
        ({"beta": "0.5"}, r"beta \('0\.5'\) must be a pandas Series or a finite number"),
        ({"log_prices": "yes"}, r"log_prices \('yes'\) must be True or False"),
    ],
)
def test_invalid_arguments_name_the_argument(overrides, message):
    y, x, z = _valid_inputs()
    kwargs = {"entry": 2.0, "exit": 0.0, "beta": 0.5} | overrides
    with pytest.raises(ValueError, match=message):
        backtest(y, x, z, **kwargs)


def test_invalid_series_name_the_series():
    y, x, z = _valid_inputs()
    with pytest.raises(ValueError, match=r"z has 4 rows but y has 5"):
        backtest(y, x, z.iloc[:4], beta=0.5)
    shifted = pd.Series(50.0, index=make_index(5) + 1)
    with pytest.raises(ValueError, match=r"x index differs from y's at position 0"):
        backtest(y, shifted, z, beta=0.5)
    with pytest.raises(ValueError, match=r"beta index differs"):
        backtest(y, x, z, beta=pd.Series(0.5, index=make_index(5) + 7))
    with pytest.raises(ValueError, match=r"y must hold positive finite price levels.*0\.0"):
        backtest(y.where(y.index != y.index[2], 0.0), x, z, beta=0.5)
    with pytest.raises(ValueError, match=r"x must hold positive finite price levels.*inf"):
        backtest(y, x.where(x.index != x.index[1], math.inf), z, beta=0.5)
    dated = pd.Series(100.0, index=pd.date_range("2025-12-15", periods=5, freq="1s"))
    with pytest.raises(ValueError, match=r"beta must be finite or NaN; found inf"):
        backtest(y, x, z, beta=pd.Series([0.5, 0.5, math.inf, 0.5, 0.5], index=y.index))
    with pytest.raises(ValueError, match=r"y must be indexed by int64 epoch ms"):
        backtest(dated, x, z, beta=0.5)
    with pytest.raises(ValueError, match=r"y index must be strictly increasing"):
        backtest(y.iloc[::-1], x, z, beta=0.5)
    with pytest.raises(ValueError, match=r"x must be a pandas Series, got list"):
        backtest(y, [50.0] * 5, z, beta=0.5)
