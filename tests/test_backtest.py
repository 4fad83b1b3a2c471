"""Tests of backtest.py: hand-made z paths with hand-computed fills, PnL, fees and metrics.

Conventions used in the comments: bars are numbered from 0; "signal @t" is the close of
bar t, "fill @t" the fill on bar t's price; defaults are fee 5 bps, slippage 1 bp,
notional 10,000, log-price sizing. A slipped price is written out, e.g. a sell of y at 102
with 1 bp slippage fills at 102 * 0.9999 = 101.9898.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest import (
    SECONDS_PER_YEAR,
    TRADE_COLUMNS,
    BacktestResult,
    Drawdown,
    PositionPnl,
    backtest,
    elapsed_periods_per_year,
    leg_units,
    max_drawdown,
    periods_per_year,
    position_pnl,
    sharpe_ratio,
    sortino_ratio,
)

DATA = Path(__file__).parent / "data"

START_MS = 1_765_000_000_000
STEP_MS = 1_000


def make_index(n: int, step_ms: int = STEP_MS) -> pd.Index:
    return pd.Index(START_MS + step_ms * np.arange(n, dtype=np.int64), name="ts")


def run(y, x, z, step_ms: int = STEP_MS, **kwargs) -> BacktestResult:
    """Backtest plain lists on a regular index (1 s unless ``step_ms``); ``beta`` may be a
    list or a number, ``y_traded``/``x_traded`` lists of bool."""
    index = make_index(len(z), step_ms)
    beta = kwargs.pop("beta", 0.5)
    if isinstance(beta, list):
        beta = pd.Series(beta, index=index, dtype=float)
    for mask in ("y_traded", "x_traded"):
        if isinstance(kwargs.get(mask), list):
            kwargs[mask] = pd.Series(kwargs[mask], index=index, dtype=bool)
    return backtest(
        pd.Series(y, index=index, dtype=float),
        pd.Series(x, index=index, dtype=float),
        pd.Series(z, index=index, dtype=float),
        beta=beta,
        **kwargs,
    )


def make_random_pair(n: int, seed: int, step_ms: int = STEP_MS
                     ) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """Seeded y, x, z, beta with frequent ±2 crossings (z is a fast AR(1), not fitted)."""
    rng = np.random.default_rng(seed)
    index = make_index(n, step_ms)
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


def test_nan_price_defers_that_legs_fill_to_its_next_bar_with_a_price():
    nan = math.nan
    y = [100.0, 101.0, nan, 103.0, nan, 105.0, 106.0, 107.0]
    x = [50.0, 50.0, 50.0, 52.0, 52.0, nan, 53.0, 53.0]
    # without masks a leg can fill wherever its price is not NaN, each leg on its own:
    # signal @1 -> x fills @2 at 50, y is NaN @2 -> fills @3 at 103; booked @3 (z @2 is
    # ignored: the order is in flight). exit signal @4 -> y fills @5 at 105, x is NaN @5
    # -> fills @6 at 53; booked @6.
    z = [0.0, 2.5, -1.0, 1.0, -0.1, 1.0, 1.0, 1.0]
    result = run(y, x, z, fee_bps=0.0, slippage_bps=0.0)
    trade = result.trades.iloc[0]
    assert len(result.trades) == 1
    assert (trade["entry_ts"], trade["exit_ts"]) == (START_MS + 3_000, START_MS + 6_000)
    assert (trade["entry_ts_y"], trade["entry_ts_x"]) == (START_MS + 3_000, START_MS + 2_000)
    assert (trade["exit_ts_y"], trade["exit_ts_x"]) == (START_MS + 5_000, START_MS + 6_000)
    assert (trade["entry_price_y"], trade["entry_price_x"]) == (103.0, 50.0)
    assert (trade["exit_price_y"], trade["exit_price_x"]) == (105.0, 53.0)
    units_y, units_x = 10_000 / 103, 0.5 * 10_000 / 50
    assert trade["units_y"] == pytest.approx(-units_y)
    assert result.positions.tolist() == [0, 0, 0, -1, -1, -1, 0, 0]
    # @3 marked at 103 / 52: the x leg bought at 50 is up 2 per unit
    assert result.equity.iloc[3] == pytest.approx(10_000.0 + units_x * 2.0, rel=1e-12)
    # @4 y is NaN: marked at the last known y (103)
    assert result.equity.iloc[4] == pytest.approx(10_000.0 + units_x * 2.0, rel=1e-12)
    # @5 x is NaN: the position is marked at the last known x (52) and y = 105
    expected_equity_5 = 10_000 - units_y * (105.0 - 103.0) + units_x * (52.0 - 50.0)
    assert result.equity.iloc[5] == pytest.approx(expected_equity_5, rel=1e-12)


# --- no look-ahead -----------------------------------------------------------------------


@pytest.mark.parametrize("with_masks", [False, True])
@pytest.mark.parametrize("cut", [120, 250, 399])
def test_data_after_t_changes_nothing_at_or_before_t(cut, with_masks):
    y, x, z, beta = make_random_pair(500, seed=11)
    rng = np.random.default_rng(99)
    masks = {}
    if with_masks:  # sparse legs: each trades on about 60 % of the bars
        masks = {name: pd.Series(rng.random(len(y)) < 0.6, index=y.index)
                 for name in ("y_traded", "x_traded")}
    original = backtest(y, x, z, beta=beta, stop=4.0, max_holding_bars=15, **masks)
    after = slice(cut + 1, None)
    y2, x2, z2, beta2 = y.copy(), x.copy(), z.copy(), beta.copy()
    y2.iloc[after] = y.iloc[after] * np.exp(rng.normal(0.0, 0.05, len(y) - cut - 1))
    x2.iloc[after] = x.iloc[after] * np.exp(rng.normal(0.0, 0.05, len(x) - cut - 1))
    z2.iloc[after] = rng.normal(0.0, 3.0, len(z) - cut - 1)
    beta2.iloc[after] = 2.0
    masks2 = {name: mask.copy() for name, mask in masks.items()}
    for mask in masks2.values():
        mask.iloc[after] = rng.random(len(y) - cut - 1) < 0.3
    changed = backtest(y2, x2, z2, beta=beta2, stop=4.0, max_holding_bars=15, **masks2)

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
    y, x, z, beta = make_random_pair(800, seed=21, step_ms=60_000)
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
    y, x, z, beta = make_random_pair(n, seed=22, step_ms=int(bar_seconds * 1000))
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


# --- P&L of one two-leg position ---------------------------------------------------------


def test_position_pnl_matches_hand_computation():
    # short spread: sell 2 y, buy 30 x; fee 10 bps, slippage 20 bps (0.2 %)
    # entry fills: sell y at 100*0.998 = 99.8, buy x at 5*1.002 = 5.01
    # exit fills:  buy y at 90*1.002 = 90.18, sell x at 5.5*0.998 = 5.489
    # gross: -2*(90.18 - 99.8) + 30*(5.489 - 5.01) = 19.24 + 14.37 = 33.61
    # traded: 2*99.8 + 30*5.01 = 349.9 at entry, 2*90.18 + 30*5.489 = 345.03 at exit
    # fees: 0.001 * 694.93 = 0.69493; slippage: 0.002 * (200 + 150 + 180 + 165) = 1.39
    # check: without slippage gross = 20 + 15 = 35 = 33.61 + 1.39
    result = position_pnl("short", 2.0, 30.0, 100.0, 5.0, 90.0, 5.5,
                          fee_bps=10.0, slippage_bps=20.0)
    assert isinstance(result, PositionPnl)
    assert result.gross == pytest.approx(33.61, rel=1e-12)
    assert result.fees == pytest.approx(0.69493, rel=1e-12)
    assert result.entry_fee == pytest.approx(0.3499, rel=1e-12)
    assert result.exit_fee == pytest.approx(0.34503, rel=1e-12)
    assert result.slippage == pytest.approx(1.39, rel=1e-12)
    assert result.net == pytest.approx(33.61 - 0.69493, rel=1e-12)
    assert (result.entry_fill_y, result.entry_fill_x) == (pytest.approx(99.8),
                                                         pytest.approx(5.01))
    assert (result.exit_fill_y, result.exit_fill_x) == (pytest.approx(90.18),
                                                       pytest.approx(5.489))
    assert result.traded_notional == pytest.approx(694.93, rel=1e-12)
    # per leg: short y = -2 units, long x = +30; -2*(90.18 - 99.8) = 19.24, 30*0.479 = 14.37
    assert (result.qty_y, result.qty_x) == (-2.0, 30.0)
    assert result.gross_y == pytest.approx(19.24, rel=1e-12)
    assert result.gross_x == pytest.approx(14.37, rel=1e-12)


def test_leg_units_follow_the_sizing_rule():
    # log prices: 10,000 of y at 2,000 = 5 y; β 1.2 -> 12,000 of x at 80,000 = 0.15 x
    assert leg_units(10_000.0, 1.2, 2_000.0, 80_000.0, True) == (5.0, pytest.approx(0.15))
    # raw prices: β is x per y: 0.05 x per y -> 0.25 x; a negative β flips the x leg
    assert leg_units(10_000.0, 0.05, 2_000.0, 80_000.0, False) == (5.0, pytest.approx(0.25))
    assert leg_units(10_000.0, -1.2, 2_000.0, 80_000.0, True)[1] == pytest.approx(-0.15)


def test_position_pnl_long_with_a_negative_hedge_buys_x():
    # long spread = buy units_y of y, sell units_x of x; units_x = -30 (β < 0) buys 30 x
    # gross: 2*(90 - 100) - (-30)*(5.5 - 5) = -20 + 15 = -5, no costs
    result = position_pnl("long", 2.0, -30.0, 100.0, 5.0, 90.0, 5.5,
                          fee_bps=0.0, slippage_bps=0.0)
    assert (result.gross, result.fees, result.slippage, result.net) == (
        pytest.approx(-5.0), 0.0, 0.0, pytest.approx(-5.0))
    with pytest.raises(ValueError, match=r"side \('flat'\) must be 'long' or 'short'"):
        position_pnl("flat", 2.0, 30.0, 100.0, 5.0, 90.0, 5.5, fee_bps=5.0, slippage_bps=1.0)
    with pytest.raises(ValueError, match=r"exit_x must be a positive finite price"):
        position_pnl("long", 2.0, 30.0, 100.0, 5.0, 90.0, math.nan, fee_bps=5.0,
                     slippage_bps=1.0)


def test_backtest_trades_are_priced_by_position_pnl():
    y, x, z, beta = make_random_pair(400, seed=8)
    result = backtest(y, x, z, beta=beta, fee_bps=7.0, slippage_bps=2.0)
    assert result.n_trades >= 5
    for trade in result.trades.itertuples():
        side = 1.0 if trade.side == "long" else -1.0
        expected = position_pnl(
            trade.side, abs(trade.units_y), -side * trade.units_x,
            y.loc[trade.entry_ts_y], x.loc[trade.entry_ts_x],
            y.loc[trade.exit_ts_y], x.loc[trade.exit_ts_x], fee_bps=7.0, slippage_bps=2.0)
        assert trade.pnl == pytest.approx(expected.net, rel=1e-12)
        assert trade.gross_pnl == pytest.approx(expected.gross, rel=1e-12)
        assert trade.fees == pytest.approx(expected.fees, rel=1e-12)
        assert trade.slippage_cost == pytest.approx(expected.slippage, rel=1e-12)
        assert trade.entry_price_y == pytest.approx(expected.entry_fill_y, rel=1e-14)


# --- fills at prices that existed --------------------------------------------------------


def test_each_leg_fills_at_its_own_next_traded_bar():
    # y and x are forward-filled levels; the masks say which bars really traded:
    #   bar      0    1    2    3    4    5    6    7
    #   y      100  101  101* 103  103* 105  105* 105*   (* = carried, y did not trade)
    #   x       50   50   51   51*  52   52*  53   53*
    # signal @1 -> y fills at its next trade @3 (103), x at @2 (51): booked @3, when the
    # second leg is in; z @2 is ignored (order in flight). exit signal @4 (-0.1) -> y fills
    # @5 (105), x @6 (53): booked @6. Never at a carried level (101 @2, 103 @4, 52 @5).
    y = [100.0, 101.0, 101.0, 103.0, 103.0, 105.0, 105.0, 105.0]
    x = [50.0, 50.0, 51.0, 51.0, 52.0, 52.0, 53.0, 53.0]
    y_traded = [True, True, False, True, False, True, False, False]
    x_traded = [True, True, True, False, True, False, True, False]
    z = [0.0, 2.5, -1.0, 1.0, -0.1, 1.0, 1.0, 1.0]
    result = run(y, x, z, y_traded=y_traded, x_traded=x_traded, fee_bps=0.0,
                 slippage_bps=0.0)

    trade = result.trades.iloc[0]
    assert len(result.trades) == 1
    assert (trade["entry_ts"], trade["exit_ts"]) == (START_MS + 3_000, START_MS + 6_000)
    assert (trade["entry_ts_y"], trade["entry_ts_x"]) == (START_MS + 3_000, START_MS + 2_000)
    assert (trade["exit_ts_y"], trade["exit_ts_x"]) == (START_MS + 5_000, START_MS + 6_000)
    assert (trade["entry_price_y"], trade["entry_price_x"]) == (103.0, 51.0)
    assert (trade["exit_price_y"], trade["exit_price_x"]) == (105.0, 53.0)
    units_y, units_x = 10_000 / 103, 0.5 * 10_000 / 51  # each leg sized at its own fill
    assert trade["units_y"] == pytest.approx(-units_y, rel=1e-12)
    assert trade["units_x"] == pytest.approx(units_x, rel=1e-12)
    assert trade["bars_held"] == 3
    assert result.positions.tolist() == [0, 0, 0, -1, -1, -1, 0, 0]
    # equity, marked at the (forward-filled) levels while booked @3..@5
    assert result.equity.iloc[3] == pytest.approx(10_000.0, rel=1e-12)
    assert result.equity.iloc[4] == pytest.approx(10_000 + units_x * 1.0, rel=1e-12)
    assert result.equity.iloc[5] == pytest.approx(10_000 - units_y * 2.0 + units_x * 1.0,
                                                  rel=1e-12)
    expected_pnl = -units_y * (105.0 - 103.0) + units_x * (53.0 - 51.0)
    assert trade["pnl"] == pytest.approx(expected_pnl, rel=1e-12)
    assert result.equity.iloc[-1] == pytest.approx(10_000 + expected_pnl, rel=1e-12)


def test_a_leg_with_a_nan_price_never_fills_on_that_bar():
    # the mask says y traded @2 but its price is NaN: y fills @3 (102), x @2 (50)
    nan = math.nan
    result = run([100.0, 100.0, nan, 102.0, 102.0], [50.0] * 5, [0.0, 2.5, 1.0, 1.0, 1.0],
                 y_traded=[True] * 5, x_traded=[True] * 5, slippage_bps=0.0)
    trade = result.trades.iloc[0]
    assert (trade["entry_ts_y"], trade["entry_ts_x"]) == (START_MS + 3_000, START_MS + 2_000)
    assert trade["entry_price_y"] == 102.0
    assert trade["exit_reason"] == "end"


def test_an_entry_is_not_opened_when_a_leg_never_trades_again():
    # x never trades after the signal @1: y would have filled @2, but the entry is never
    # complete, so nothing is booked (as for a signal on the last bar)
    result = run([100.0, 100.0, 101.0, 102.0, 103.0], [50.0] * 5, [0.0, 2.5, 1.0, 1.0, 1.0],
                 y_traded=[True] * 5, x_traded=[True, True, False, False, False])
    assert result.n_trades == 0
    assert result.positions.tolist() == [0] * 5
    assert result.equity.tolist() == [10_000.0] * 5


def test_an_exit_leg_that_never_trades_again_closes_at_its_last_traded_price():
    # entry signal @1 -> both legs fill @2 (100 / 51); exit signal @3 -> y fills @4 (97);
    # x never trades after @3, so at the end it closes at its last traded price (52 @3,
    # before the exit signal's next bar), reason "end", booked on the last bar @5.
    y = [100.0, 100.0, 100.0, 98.0, 97.0, 96.0]
    x = [50.0, 50.0, 51.0, 52.0, 52.0, 52.0]
    result = run(y, x, [0.0, 2.5, 1.0, -0.1, 1.0, 1.0], y_traded=[True] * 6,
                 x_traded=[True, True, True, True, False, False], fee_bps=0.0,
                 slippage_bps=0.0)
    trade = result.trades.iloc[0]
    assert trade["exit_reason"] == "end"
    assert trade["exit_ts"] == START_MS + 5_000
    assert (trade["exit_ts_y"], trade["exit_ts_x"]) == (START_MS + 4_000, START_MS + 3_000)
    assert (trade["exit_price_y"], trade["exit_price_x"]) == (97.0, 52.0)
    units_y, units_x = 100.0, 0.5 * 10_000 / 51
    assert trade["pnl"] == pytest.approx(units_y * 3.0 + units_x * 1.0, rel=1e-12)
    assert result.positions.tolist() == [0, 0, -1, -1, -1, 0]
    assert result.equity.iloc[-1] == pytest.approx(10_000 + trade["pnl"], rel=1e-12)


def _real_spot_pair() -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """ETH (y) and BTC (x) 1 s closes of the real spot recording, on the union of the bars
    in which either traded; levels forward-filled, masks True where that leg printed."""
    rows = pd.read_csv(DATA / "upload_spot_bars_1s_1m_5m_IST_naive_first3000.csv")
    rows = rows[rows["timeframe"] == "1s"]
    ms = pd.to_datetime(rows["ts"]).astype("datetime64[ms]").astype(np.int64)
    closes = rows.assign(ts=ms).pivot_table(index="ts", columns="symbol", values="price",
                                            aggfunc="last")
    closes.index = closes.index.astype(np.int64)
    traded = closes.notna()
    levels = closes.ffill()
    return levels["ethusdt"], levels["btcusdt"], traded["ethusdt"], traded["btcusdt"]


def test_fills_on_the_real_spot_recording_use_each_legs_own_prints():
    y, x, y_traded, x_traded = _real_spot_pair()
    spread = np.log(y) - np.log(x)
    z = (spread - spread.rolling(120).mean()) / spread.rolling(120).std()
    valid = z.notna() & y.notna() & x.notna()
    y, x, z = y[valid], x[valid], z[valid]
    y_traded, x_traded = y_traded[valid], x_traded[valid]
    assert 0.1 < 1 - y_traded.mean() < 0.5 and 0.05 < 1 - x_traded.mean() < 0.5  # sparse
    settings = dict(entry=1.5, exit=0.0, beta=1.0, slippage_bps=0.0)
    result = backtest(y, x, z, y_traded=y_traded, x_traded=x_traded, **settings)

    trades = result.trades
    assert len(trades) >= 5
    for leg, prices, traded in (("y", y, y_traded), ("x", x, x_traded)):
        for side in ("entry", "exit"):
            fill_ts = trades[f"{side}_ts_{leg}"]
            assert traded.loc[fill_ts].all(), f"{side} of {leg} on a bar it did not trade"
            np.testing.assert_array_equal(trades[f"{side}_price_{leg}"].to_numpy(),
                                          prices.loc[fill_ts].to_numpy())
    # without the masks the same run fills some legs at carried levels: the test can fail
    naive = backtest(y, x, z, **settings).trades
    carried = sum((~traded.loc[naive[f"{side}_ts_{leg}"]]).sum()
                  for leg, traded in (("y", y_traded), ("x", x_traded))
                  for side in ("entry", "exit"))
    assert carried > 0


# --- hedge-leg cap -----------------------------------------------------------------------


@pytest.mark.parametrize(("beta", "cap", "trades"), [
    (12.0, None, 0),    # default cap 10: a 12x hedge is refused
    (-12.0, None, 0),   # the cap is on |hedge notional|
    (10.0, None, 1),    # exactly at the cap is allowed
    (12.0, 15.0, 1),    # configurable
])
def test_log_price_hedge_cap(beta, cap, trades):
    kwargs = {} if cap is None else {"max_hedge_multiple": cap}
    # the signal persists @1 and @2 (z 2.5, 2.2): a refused entry is refused on both bars
    result = run([100.0] * 5, [50.0] * 5, [0.0, 2.5, 2.2, 1.0, 1.0], beta=beta, **kwargs)
    assert result.n_trades == trades
    assert result.hedge_cap_refusals == (0 if trades else 2)
    if trades:
        trade = result.trades.iloc[0]
        hedge = abs(trade["units_x"]) * 50.0 / (abs(trade["units_y"]) * 100.0)
        assert hedge == pytest.approx(abs(beta), rel=1e-12)


def test_raw_price_hedge_cap_uses_the_notional_ratio():
    # raw β = 0.5 unit of x (at 3000) per unit of y (at 100): hedge notional 15x -> refused
    refused = run([100.0] * 5, [3000.0] * 5, [0.0, -2.5, -1.0, -1.0, -1.0], beta=0.5,
                  log_prices=False)
    assert refused.n_trades == 0
    # β = 0.3 -> 9x, allowed; sized as units: units_x = 0.3 * units_y
    allowed = run([100.0] * 5, [3000.0] * 5, [0.0, -2.5, -1.0, -1.0, -1.0], beta=0.3,
                  log_prices=False)
    trade = allowed.trades.iloc[0]
    assert trade["units_x"] == pytest.approx(-0.3 * 10_000 / 100, rel=1e-12)
    # sized as log prices the same β would give 0.3 * 10000 / 3000 = 1 unit: must differ
    assert abs(trade["units_x"]) != pytest.approx(1.0)


def test_a_spiking_beta_never_opens_an_oversized_hedge():
    y, x, z, beta = make_random_pair(600, seed=4)
    wild = beta.copy()
    wild.iloc[::7] = 40.0  # every seventh bar an absurd β, as a near-constant x window gives
    result = backtest(y, x, z, beta=wild)
    assert result.n_trades >= 5
    assert (result.trades["beta"].abs() <= 10.0).all()
    # and the spikes did fall on signal bars: without the cap some trades carry them
    uncapped = backtest(y, x, z, beta=wild, max_hedge_multiple=100.0)
    assert (uncapped.trades["beta"] == 40.0).any()


# --- annualising by elapsed time ---------------------------------------------------------


def test_elapsed_periods_per_year_on_hand_values():
    # 3 intervals over 6 s -> 0.5 interval per second -> 15,768,000 a year
    assert elapsed_periods_per_year(np.array([0, 1_000, 3_000, 6_000])) == 15_768_000.0
    assert math.isnan(elapsed_periods_per_year(np.array([5_000])))


def test_sharpe_is_annualised_by_elapsed_time_on_irregular_bars():
    # 13,225 bars spanning 31,382 s (bars only where something traded): 13,224 returns
    # in 31,382 s, not 13,224 s -> periods per year 13,224 / 31,382 * 31,536,000
    rng = np.random.default_rng(13)
    gaps_s = 1 + rng.multinomial(31_382 - 13_224, np.full(13_224, 1 / 13_224))
    index = pd.Index(START_MS + 1_000 * np.concatenate(([0], np.cumsum(gaps_s))), name="ts")
    assert (index[-1] - index[0]) / 1000 == 31_382
    y, x, z, beta = (s.set_axis(index) for s in make_random_pair(13_225, seed=6))
    result = backtest(y, x, z, beta=beta, bar_seconds=1.0)

    expected_periods = 13_224 / 31_382 * SECONDS_PER_YEAR
    assert result.periods_per_year == pytest.approx(expected_periods, rel=1e-12)
    returns = result.equity.pct_change().iloc[1:]
    per_bar = returns.mean() / returns.std()
    assert result.sharpe == pytest.approx(per_bar * math.sqrt(expected_periods), rel=1e-9)
    downside = math.sqrt((returns.clip(upper=0.0) ** 2).mean())
    assert result.sortino == pytest.approx(
        returns.mean() / downside * math.sqrt(expected_periods), rel=1e-9)
    # the per-bar annualisation would overstate it by sqrt(31,382 / 13,224) ~ 1.54
    overstated = per_bar * math.sqrt(SECONDS_PER_YEAR)
    assert overstated / result.sharpe == pytest.approx(math.sqrt(31_382 / 13_224), rel=1e-9)


def test_ratios_note_counts_elapsed_time_not_bars():
    # 200 bars 20 s apart cover 66 min: long enough, though 200 bars x 1 s would not be
    y, x, z, beta = make_random_pair(200, seed=22, step_ms=20_000)
    assert backtest(y, x, z, beta=beta, bar_seconds=1.0).ratios_note == ""
    short = backtest(y.iloc[:150], x.iloc[:150], z.iloc[:150], beta=beta.iloc[:150])
    assert "has 150 bars (49.7 min)" in short.ratios_note  # 149 * 20 s + 1 s


def test_new_arguments_are_validated():
    y, x, z = _valid_inputs()
    with pytest.raises(ValueError, match=r"max_hedge_multiple \(0\.0\) must be > 0"):
        backtest(y, x, z, beta=0.5, max_hedge_multiple=0.0)
    with pytest.raises(ValueError, match=r"y_traded must hold booleans"):
        backtest(y, x, z, beta=0.5, y_traded=pd.Series(1.0, index=y.index))
    with pytest.raises(ValueError, match=r"x_traded index differs"):
        backtest(y, x, z, beta=0.5, x_traded=pd.Series(True, index=make_index(5) + 3))
