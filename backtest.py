"""Two-leg mean-reversion backtest of a pairs spread, with next-trade fills and costs.

A pure module: it imports nothing of the project. Inputs are pandas Series of price levels
and a signal z-score on one int64 epoch-ms index ``ts``; the output is a frozen
``BacktestResult`` (trades, mark-to-market equity, per-bar positions and metrics).

    >>> import pandas as pd
    >>> ts = pd.Index([0, 1000, 2000, 3000, 4000, 5000], name="ts")
    >>> y = pd.Series([100.0, 101, 102, 100, 99, 98], index=ts)
    >>> x = pd.Series([50.0, 50, 51, 50, 50, 49], index=ts)
    >>> z = pd.Series([0.0, 2.5, 1.0, 0.5, -0.1, 0.0], index=ts)
    >>> result = backtest(y, x, z, beta=0.5)
    >>> result.trades[["entry_ts", "exit_ts", "side", "bars_held", "exit_reason"]]
       entry_ts  exit_ts   side  bars_held exit_reason
    0      2000     5000  short          3        exit

The state machine, the fill rule, the sizing and the cost model are described once, in
``backtest``'s Notes; ``position_pnl`` is the P&L arithmetic of one two-leg round trip
(reused by anything that books trades); the metric helpers (``elapsed_periods_per_year``,
``sharpe_ratio``, ``sortino_ratio``, ``max_drawdown``) are public so that a reviewer can
recompute each figure from ``result.equity``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
import pandas as pd

SECONDS_PER_YEAR = 365 * 24 * 3600  # crypto trades 24/7: no trading-day calendar
SIDES = ("long", "short")
EXIT_REASONS = ("exit", "stop", "max_holding", "end")
TRADE_COLUMNS = (
    "entry_ts",
    "exit_ts",
    "side",
    "entry_price_y",
    "entry_price_x",
    "exit_price_y",
    "exit_price_x",
    "units_y",
    "units_x",
    "beta",
    "pnl",
    "gross_pnl",
    "fees",
    "slippage_cost",
    "bars_held",
    "exit_reason",
    "entry_ts_y",
    "entry_ts_x",
    "exit_ts_y",
    "exit_ts_x",
)
# A hedge leg worth more than this many times the y leg is refused (see ``backtest``).
DEFAULT_MAX_HEDGE_MULTIPLE = 10.0
MIN_BARS_FOR_RATIOS = 3  # two bar returns are the fewest a sample std (ddof=1) accepts
# Below these the annualised ratios are still computed but flagged (``ratios_note``): a few
# minutes of 1 s bars scaled by sqrt(31.5 million bars a year) give Sharpe ratios in the
# hundreds that mean nothing, and the dashboard shows them as "—".
MIN_BARS_TO_ANNUALISE = 100
MIN_SECONDS_TO_ANNUALISE = 3_600  # n_bars * bar_seconds: at least an hour of market time

_LONG = 1
_SHORT = -1
_NO_ORDER = 0
_ENTRY_ORDER = 1
_EXIT_ORDER = 2


@dataclass(frozen=True)
class Drawdown:
    """Deepest and longest drawdown of an equity curve (see ``max_drawdown``)."""

    depth: float
    duration_bars: int
    duration_seconds: float


@dataclass(frozen=True)
class PositionPnl:
    """Profit and costs of one closed two-leg position; see ``position_pnl``."""

    qty_y: float
    qty_x: float
    gross_y: float
    gross_x: float
    gross: float
    fees: float
    slippage: float
    net: float
    entry_fee: float
    exit_fee: float
    entry_fill_y: float
    entry_fill_x: float
    exit_fill_y: float
    exit_fill_x: float
    traded_notional: float


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Everything one ``backtest`` run produced; each field is described in ``backtest``."""

    trades: pd.DataFrame = field(repr=False)
    equity: pd.Series = field(repr=False)
    positions: pd.Series = field(repr=False)
    capital: float
    n_bars: int
    n_trades: int
    total_return: float
    sharpe: float
    sortino: float
    max_drawdown: float
    max_drawdown_duration_bars: int
    max_drawdown_duration_seconds: float
    win_rate: float
    profit_factor: float
    avg_holding_bars: float
    avg_holding_seconds: float
    exposure: float
    turnover: float
    fees_paid: float
    slippage_paid: float
    periods_per_year: float
    ratios_note: str = ""
    hedge_cap_refusals: int = 0


def backtest(
    y: pd.Series,
    x: pd.Series,
    z: pd.Series,
    entry: float = 2.0,
    exit: float = 0.0,
    *,
    beta: pd.Series | float,
    stop: float | None = None,
    max_holding_bars: int | None = None,
    fee_bps: float = 5.0,
    slippage_bps: float = 1.0,
    notional: float = 10_000.0,
    capital: float | None = None,
    bar_seconds: float = 1.0,
    log_prices: bool = True,
    y_traded: pd.Series | None = None,
    x_traded: pd.Series | None = None,
    max_hedge_multiple: float = DEFAULT_MAX_HEDGE_MULTIPLE,
) -> BacktestResult:
    """Backtest a z-score mean-reversion rule on the spread of ``y`` against ``x``.

    Parameters
    ----------
    y, x : pd.Series
        Price LEVELS (raw, positive; NaN where a leg has no price) of the dependent and the
        independent leg, indexed by the same strictly increasing int64 epoch-ms ``ts``.
    z : pd.Series
        Signal z-score of the spread on the same index, computed from trailing estimates
        only. NaN or +-inf means "no signal on this bar".
    entry : float, default 2.0
        Entry threshold, ``entry > exit``.
    exit : float, default 0.0
        Exit level, ``exit >= 0`` (see Notes for the exact rule).
    beta : pd.Series or float
        Hedge ratio known at each bar (trailing, free of look-ahead) on the same index, or
        one number for the whole sample. A log-price β is an elasticity, a raw-price β is
        units of x per unit of y; ``log_prices`` must say which. NaN blocks entries.
    stop : float or None, default None
        Stop-loss level on z, ``stop > entry``; None disables the stop.
    max_holding_bars : int or None, default None
        Longest holding, in bars (>= 1); None disables the limit.
    fee_bps : float, default 5.0
        Commission per fill, in basis points of the leg's traded notional (Binance USD-M
        taker at the base tier is about 5 bps, spot about 10 bps).
    slippage_bps : float, default 1.0
        Adverse move of each fill price, in basis points of the reference price.
    notional : float, default 10_000.0
        Dollar size of the y leg at entry (quote currency).
    capital : float or None, default None
        Starting equity; None means ``notional``.
    bar_seconds : float, default 1.0
        Length of one bar in seconds. Only counts the last bar's own length in the time
        the sample covers (``ratios_note``); Sharpe and Sortino are annualised from the
        timestamps ``ts``, not from it.
    log_prices : bool, default True
        True when ``beta`` and ``z`` come from the log-price spread ``ln y - β ln x``, False
        for the raw-price spread ``y - β x``. Selects the sizing (see Notes).
    y_traded, x_traded : pd.Series of bool or None, default None
        True on the bars in which that leg really traded (``analytics.align``'s
        ``y_traded``/``x_traded``), on the same index. A leg fills only on such a bar, at
        its own price there, never at a forward-filled level. None: a leg can fill on
        every bar where its price is not NaN.
    max_hedge_multiple : float, default 10.0 (``DEFAULT_MAX_HEDGE_MULTIPLE``)
        Largest hedge-leg notional, as a multiple of the y leg's, a position may open
        with (> 0). See Notes.

    Returns
    -------
    BacktestResult
        trades : DataFrame, one row per round trip, columns ``TRADE_COLUMNS``:
            ``entry_ts``/``exit_ts`` (int64 epoch ms of the bars the entry and the exit
            were booked on: when their second leg filled), ``side``
            ({"long", "short"} spread), ``entry_price_y``/``entry_price_x``/
            ``exit_price_y``/``exit_price_x`` (fill prices, slippage included),
            ``units_y``/``units_x`` (SIGNED quantities held: positive = long that leg),
            ``beta`` (β used for sizing, from the signal bar), ``pnl`` (net =
            gross_pnl - fees), ``gross_pnl`` (at fill prices, so after slippage, before
            commission), ``fees`` (commission of the four fills), ``slippage_cost``
            (what slippage cost against the reference prices; already inside gross_pnl),
            ``bars_held`` (exit bar - entry bar, as booked), ``exit_reason``
            ({"exit", "stop", "max_holding", "end"}), ``entry_ts_y``/``entry_ts_x``/
            ``exit_ts_y``/``exit_ts_x`` (the bar each leg's fill happened on).
        equity : Series indexed by ``ts``, mark-to-market equity, starts from ``capital``.
        positions : Series indexed by ``ts`` of int {+1 long spread, -1 short, 0 flat}:
            the position held over the close of each bar, after that bar's fill.
        capital, n_bars, n_trades : float, int, int.
        total_return : float
            ``equity[-1] / capital - 1``.
        sharpe, sortino : float
            Annualised from the bar-to-bar returns of ``equity`` with
            ``periods_per_year`` (see ``sharpe_ratio``, ``sortino_ratio``); NaN with
            fewer than ``MIN_BARS_FOR_RATIOS`` bars. A short sample is flagged in
            ``ratios_note``.
        max_drawdown : float
            Deepest fall from a running peak as a POSITIVE fraction (0.25 = -25 %).
        max_drawdown_duration_bars, max_drawdown_duration_seconds : int, float
            Longest peak-to-recovery stretch (see ``max_drawdown``).
        win_rate : float
            Share of trades with pnl > 0; NaN without trades.
        profit_factor : float
            Sum of winning pnl / |sum of losing pnl|; inf when there are wins and no
            losses, NaN without trades or when every pnl is 0.
        avg_holding_bars, avg_holding_seconds : float
            Mean ``bars_held`` and mean ``(exit_ts - entry_ts) / 1000``; NaN without trades.
        exposure : float
            Share of bars with a non-zero position.
        turnover : float
            Traded notional of all fills (both legs, at fill prices) / ``capital``.
        fees_paid, slippage_paid : float
            Sums of the trades' ``fees`` and ``slippage_cost``.
        periods_per_year : float
            Return intervals per year of elapsed time, ``elapsed_periods_per_year(ts)``
            = ``(n_bars - 1) / ((ts[-1] - ts[0]) / 1000 / SECONDS_PER_YEAR)``; NaN with
            fewer than 2 bars.
        ratios_note : str
            "" when the sample is long enough to annualise; otherwise why Sharpe and
            Sortino mean little: fewer than ``MIN_BARS_TO_ANNUALISE`` bars or less than
            ``MIN_SECONDS_TO_ANNUALISE`` seconds covered (``(ts[-1] - ts[0]) / 1000 +
            bar_seconds``).
        hedge_cap_refusals : int
            Bars on which an entry signal was refused because the hedge leg would have
            exceeded ``max_hedge_multiple`` (a persisting signal counts on each bar);
            0 tells that the cap never bound.

    Raises
    ------
    ValueError
        Naming the argument and the value: misaligned or non-int64 or unsorted indices,
        non-positive or infinite prices, ``entry <= exit``, ``exit < 0``,
        ``stop <= entry``, ``max_holding_bars < 1``, negative costs, non-positive
        ``notional``/``capital``/``bar_seconds``/``max_hedge_multiple``, a traded mask
        that is not a bool Series on y's index.

    Notes
    -----
    Timing and fills. The signal is observed at the close of bar t; the orders it creates
    (one per leg) fill after it. Each leg fills at the close price (``y``, ``x`` as given)
    of the first bar after t on which THAT leg can fill: it traded there
    (``y_traded``/``x_traded``, when given) and its price is not NaN. So a fill is always
    at a price that leg printed, never at a level carried forward from an earlier bar;
    the two legs may fill on different bars. The entry (or exit) is booked on the bar its
    second leg fills: the position exists from that bar on, and its z closes the bar
    where exits are first considered, filled later (``bars_held >= 1``). Signals are
    ignored while an order is in flight. (Pass open prices shifted by -1 if fills at the
    next open are wanted.)

    When a leg never trades again before the last bar: an entry is not opened (nothing is
    booked, as for a signal on the last bar); an exit, or a position still open, is closed
    at the end (below).

    Rules, evaluated on each bar without an order in flight (z is ``z[t]``):

    - flat: ``z > entry`` -> short the spread (sell y, buy β·x);
      ``z < -entry`` -> long the spread (buy y, sell β·x). No entry when β is NaN, when
      the hedge leg would exceed ``max_hedge_multiple`` (below), or when ``|z| >= stop``
      (it would be stopped out at once).
    - short: stop when ``z >= stop``; else exit when ``z <= exit``.
    - long: stop when ``z <= -stop``; else exit when ``z >= -exit``.
      With ``exit=0`` both sides exit when z reaches or crosses 0; with ``exit=0.5`` the
      short exits at ``z <= 0.5`` and the long at ``z >= -0.5``. The stop only fires on
      the adverse side; a move far beyond the exit level is an exit.
    - in a position with neither: a ``max_holding_bars`` exit is ordered on the bar whose
      next-bar fill makes ``bars_held == max_holding_bars`` (later if a leg has not
      traded on that bar). This is the only rule that fires on a NaN z (time passes
      without a signal).
    - after a "stop" or "max_holding" exit, no new entry until z has been back inside
      ``[-entry, entry]`` on some bar; otherwise the rule would re-enter the move it just
      gave up on, on the very next bar.

    Sizing, fixed at entry and never re-marked with a later β. ``β`` is the value at the
    signal bar; ``py`` and ``px`` are each leg's own fill (reference) price (a
    quote-quantity order: the notional is the desk's decision, the price is the market's).
    The sizing must match the spread the z-score was computed on:

    - log prices: β is an elasticity, the hedge is in dollars:
      ``units_y = notional / py``, ``units_x = β · notional / px`` (y notional N, x
      notional β·N), so a move ``ds`` of the log spread earns ``notional · ds``.
    - raw prices: β is units of x per unit of y: ``units_y = notional / py``,
      ``units_x = β · units_y``, so a move ``ds`` of ``y - β x`` earns ``units_y · ds``.

    A negative β flips the direction of the x leg; the signed ``units_x`` shows it.

    Hedge cap. No position is opened whose hedge-leg notional exceeds
    ``max_hedge_multiple`` times the y leg's: ``|β|`` in log prices, ``|β| · x / y`` at the
    signal bar's last known levels in raw prices (fills may move the ratio by the prices'
    change until they happen). The default, 10, is the cap the issue sets for a
    log-price β: real crypto pairs have elasticities of about 0.5 to 2, and a β beyond 10
    comes from a window in which x barely moved (a few distinct prints), where the
    regression is degenerate; hedging $10k of ETH with $1.16M of BTC is a bet on that
    artefact, not a pair trade.

    Costs. Every fill of every leg pays ``fee_bps`` on its traded notional
    ``|units| · fill_price``: a round trip is four fills. Slippage moves each fill against
    the trade: buys at ``p · (1 + slippage_bps/1e4)``, sells at ``p · (1 - ...)``. One
    function, ``position_pnl``, does this arithmetic for every round trip.

    Equity. ``capital + cash + Σ units · price`` with the cash flows of an entry or exit
    booked on its booking bar at the legs' fill prices. Open positions are marked at the
    given prices, carried forward where a leg is NaN: the MARK may use a forward-filled
    level (the value of a holding between prints), a FILL never does. A leg that filled
    before the booking bar is marked at the current level until then. Equity drops at
    entry by the entry commission and slippage. A position still open after the last bar
    (or whose exit has a leg that never traded again) is closed with the same commission
    and slippage as any fill: each leg at its exit fill if it had one, else at its last
    traded price in the sample (which may precede the exit signal), booked on the last
    bar with ``exit_reason == "end"``; so ``equity[-1] == capital + trades.pnl.sum()``. A
    position booked on that very bar is closed at once (``bars_held == 0``).

    Time. ``*_seconds`` figures are measured on ``ts`` (gaps in the bars count as time).
    Sharpe and Sortino are annualised by elapsed time, so irregular bars (rows only where
    something traded) are right: ``P = (n_bars - 1) / elapsed years`` of 365 days of 24 h,
    ``Sharpe = mean(r) / std(r) · sqrt(P)`` on the bar-to-bar returns r of ``equity``.
    Assumption: returns over non-overlapping intervals are uncorrelated, so mean and
    variance add up over time (see ``elapsed_periods_per_year``).
    """
    _check_series("y", y)
    for name, series in (("x", x), ("z", z)):
        _check_series(name, series)
        _check_same_index(name, series, y)
    if isinstance(beta, pd.Series):
        _check_series("beta", beta)
        _check_same_index("beta", beta, y)
        infinite = np.isinf(beta.to_numpy(dtype=np.float64))
        if infinite.any():
            first = int(np.flatnonzero(infinite)[0])
            raise ValueError(f"beta must be finite or NaN; found inf at ts {beta.index[first]}")
    elif not (isinstance(beta, Real) and math.isfinite(beta)):
        raise ValueError(f"beta ({beta!r}) must be a pandas Series or a finite number")
    _check_prices("y", y)
    _check_prices("x", x)
    for name, mask in (("y_traded", y_traded), ("x_traded", x_traded)):
        if mask is not None:
            _check_mask(name, mask, y)
    _check_thresholds(entry, exit, stop)
    if max_holding_bars is not None and (
        isinstance(max_holding_bars, bool)
        or not isinstance(max_holding_bars, Integral)
        or max_holding_bars < 1
    ):
        raise ValueError(f"max_holding_bars ({max_holding_bars!r}) must be an integer >= 1")
    _check_number("fee_bps", fee_bps, low=0.0, low_inclusive=True)
    _check_number("slippage_bps", slippage_bps, low=0.0, low_inclusive=True, high=10_000.0)
    _check_number("notional", notional, low=0.0)
    if capital is None:
        capital = notional
    _check_number("capital", capital, low=0.0)
    _check_number("bar_seconds", bar_seconds, low=0.0)
    if not isinstance(log_prices, bool):
        raise ValueError(f"log_prices ({log_prices!r}) must be True or False")
    _check_number("max_hedge_multiple", max_hedge_multiple, low=0.0)

    ts = y.index.to_numpy(dtype=np.int64)
    price_y = y.to_numpy(dtype=np.float64)
    price_x = x.to_numpy(dtype=np.float64)
    z_values = z.to_numpy(dtype=np.float64)
    z_values = np.where(np.isfinite(z_values), z_values, np.nan)
    if isinstance(beta, pd.Series):
        beta_values = beta.to_numpy(dtype=np.float64)
    else:
        beta_values = np.full(len(ts), float(beta))

    # A leg can fill on a bar where it has a price and (when the mask is given) traded.
    fills_y = np.isfinite(price_y)
    fills_x = np.isfinite(price_x)
    if y_traded is not None:
        fills_y &= y_traded.to_numpy(dtype=bool)
    if x_traded is not None:
        fills_x &= x_traded.to_numpy(dtype=bool)

    trades, hedge_cap_refusals = _run_state_machine(
        price_y=price_y,
        price_x=price_x,
        fills_y=fills_y,
        fills_x=fills_x,
        z_values=z_values,
        beta_values=beta_values,
        entry=float(entry),
        exit_level=float(exit),
        stop=math.inf if stop is None else float(stop),
        max_holding_bars=max_holding_bars,
        fee_bps=float(fee_bps),
        slippage_bps=float(slippage_bps),
        notional=float(notional),
        log_prices=log_prices,
        max_hedge_multiple=float(max_hedge_multiple),
    )
    return _assemble_result(
        trades, ts, y.index, price_y, price_x, float(capital), float(bar_seconds),
        hedge_cap_refusals,
    )


def periods_per_year(bar_seconds: float) -> float:
    """Bars in a 365-day, 24-hour year: ``365 · 24 · 3600 / bar_seconds``.

    Parameters
    ----------
    bar_seconds : float
        Length of one bar in seconds, > 0.

    Returns
    -------
    float

    Notes
    -----
    Crypto markets trade around the clock, every day: there is no 252-day calendar.
    Right only for regular bars; ``elapsed_periods_per_year`` measures the pace of
    irregular ones from their timestamps.
    """
    _check_number("bar_seconds", bar_seconds, low=0.0)
    return SECONDS_PER_YEAR / float(bar_seconds)


def elapsed_periods_per_year(ts_ms: np.ndarray | pd.Index) -> float:
    """Return intervals per year at the sample's own pace, from its bar timestamps.

    Parameters
    ----------
    ts_ms : array-like of int
        Strictly increasing epoch-ms bar timestamps (the ``ts`` index).

    Returns
    -------
    float
        ``(n - 1) / elapsed_years`` with ``elapsed_years = (ts[-1] - ts[0]) / 1000 /
        SECONDS_PER_YEAR``: the ``n - 1`` returns between ``n`` bars, per year of elapsed
        time. NaN with fewer than 2 timestamps.

    Notes
    -----
    On regular bars this equals ``periods_per_year(bar_seconds)``. On irregular bars (a
    row only where something traded, gaps in the recording) it is still right for the
    Sharpe and Sortino ratios, under the assumption that returns over non-overlapping
    intervals are uncorrelated: then both the mean and the variance of returns add up over
    time, so ``mean(r) · P`` is the return per elapsed year and ``var(r) · P`` the
    variance per elapsed year, whatever the spacing of the bars. Counting bars instead
    (13,225 bars spanning 31,382 s taken as 13,225 s) overstates the Sharpe ratio by
    ``sqrt(31,382 / 13,224) ≈ 1.54``.
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    if ts.size < 2:
        return math.nan
    elapsed_years = float(ts[-1] - ts[0]) / 1000.0 / SECONDS_PER_YEAR
    return (ts.size - 1) / elapsed_years


def sharpe_ratio(returns: np.ndarray | pd.Series, periods_per_year: float) -> float:
    """Annualised Sharpe ratio of per-bar returns, risk-free rate 0.

    Parameters
    ----------
    returns : array-like
        Simple per-bar returns (flat bars included, as 0).
    periods_per_year : float
        Return intervals per year: ``elapsed_periods_per_year(ts)`` (what ``backtest``
        uses), or ``periods_per_year(bar_seconds)`` for regular bars.

    Returns
    -------
    float
        ``mean(r) / std(r, ddof=1) · sqrt(periods_per_year)``; NaN with fewer than 2
        returns or a zero standard deviation.

    Notes
    -----
    Same as ``r.mean() / r.std() * sqrt(P)`` in pandas. No risk-free rate: for bars of
    seconds or minutes it is negligible, and funding is not modelled.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return math.nan
    std = float(np.std(r, ddof=1))
    if std == 0.0 or not math.isfinite(std):
        return math.nan
    return float(np.mean(r)) / std * math.sqrt(periods_per_year)


def sortino_ratio(returns: np.ndarray | pd.Series, periods_per_year: float) -> float:
    """Annualised Sortino ratio of per-bar returns, target 0.

    Parameters
    ----------
    returns : array-like
        Simple per-bar returns (flat bars included, as 0).
    periods_per_year : float
        Return intervals per year (see ``sharpe_ratio``).

    Returns
    -------
    float
        ``mean(r) / sqrt(mean(min(r, 0)²)) · sqrt(periods_per_year)``; the downside
        deviation averages over ALL bars (as empyrical does). inf when the mean is
        positive and no return is negative; NaN with fewer than 2 returns, or when there is
        no downside and the mean is not positive.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return math.nan
    mean = float(np.mean(r))
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside == 0.0:
        return math.inf if mean > 0.0 else math.nan
    return mean / downside * math.sqrt(periods_per_year)


def max_drawdown(equity: pd.Series) -> Drawdown:
    """Deepest drawdown and longest drawdown duration of an equity curve.

    Parameters
    ----------
    equity : pd.Series
        Positive equity values indexed by int64 epoch-ms ``ts``, ascending.

    Returns
    -------
    Drawdown
        depth : float
            ``max(1 - equity / running_peak)``, a positive fraction; 0.0 when equity never
            falls below a previous peak, NaN for an empty series.
        duration_bars : int
            Longest stretch from a peak bar to the first bar back at or above that peak,
            or to the last bar when equity has not recovered; 0 without a drawdown.
        duration_seconds : float
            The same stretch measured on ``ts``: ``(ts[end] - ts[peak]) / 1000``.

    Notes
    -----
    Depth and duration are separate statistics and may come from different episodes.
    """
    values = np.asarray(equity, dtype=np.float64)
    if values.size == 0:
        return Drawdown(depth=math.nan, duration_bars=0, duration_seconds=math.nan)
    ts = np.asarray(equity.index, dtype=np.int64)
    running_peak = np.maximum.accumulate(values)
    depth = float(np.max(1.0 - values / running_peak))
    underwater = values < running_peak
    if not underwater.any():
        return Drawdown(depth=depth, duration_bars=0, duration_seconds=0.0)
    # Runs of underwater bars: a run [first, last] started after the peak bar first - 1
    # and ends at the recovery bar last + 1 (or the final bar if it never recovered).
    edges = np.diff(np.concatenate(([0], underwater.astype(np.int8), [0])))
    run_first = np.flatnonzero(edges == 1)
    run_last = np.flatnonzero(edges == -1) - 1
    peak_bar = run_first - 1
    end_bar = np.minimum(run_last + 1, values.size - 1)
    lengths = end_bar - peak_bar
    longest = int(np.argmax(lengths))
    seconds = (ts[end_bar[longest]] - ts[peak_bar[longest]]) / 1000.0
    return Drawdown(
        depth=depth, duration_bars=int(lengths[longest]), duration_seconds=float(seconds)
    )


class _Trade(NamedTuple):
    """One booked round trip, in bar numbers; ``_trades_frame`` turns it into a row."""

    entry_bar: int  # the bar on which the entry's second leg filled (the position exists)
    exit_bar: int  # the bar on which the exit's second leg filled, or the last bar ("end")
    entry_bar_y: int
    entry_bar_x: int
    exit_bar_y: int
    exit_bar_x: int
    side: int
    beta: float
    qty_y: float  # signed units held: positive = long that leg
    qty_x: float
    pnl: PositionPnl
    reason: str


def _run_state_machine(
    *,
    price_y: np.ndarray,
    price_x: np.ndarray,
    fills_y: np.ndarray,
    fills_x: np.ndarray,
    z_values: np.ndarray,
    beta_values: np.ndarray,
    entry: float,
    exit_level: float,
    stop: float,
    max_holding_bars: int | None,
    fee_bps: float,
    slippage_bps: float,
    notional: float,
    log_prices: bool,
    max_hedge_multiple: float,
) -> tuple[list[_Trade], int]:
    """The bar loop of ``backtest``'s Notes: the booked round trips, and how many entry
    signals the hedge cap refused."""
    n = len(price_y)
    # Plain Python floats: a loop over numpy scalars is several times slower.
    py = price_y.tolist()
    px = price_x.tolist()
    zs = z_values.tolist()
    betas = beta_values.tolist()
    # Last known levels at the signal bar: only the raw-price hedge cap needs them.
    known_y = known_x = py
    if not log_prices:
        known_y = pd.Series(price_y).ffill().tolist()
        known_x = pd.Series(price_x).ffill().tolist()
    next_y = _next_fill_bars(fills_y)
    next_x = _next_fill_bars(fills_x)
    hold_limit = max_holding_bars if max_holding_bars is not None else n + 1
    below_entry, below_stop, below_exit = -entry, -stop, -exit_level

    trades: list[_Trade] = []
    position = 0
    order = _NO_ORDER
    order_side = 0
    order_beta = math.nan
    order_reason = ""
    leg_bar_y = leg_bar_x = due = -1  # fill bars of the order in flight; due = the later
    armed = True  # False after a stop/max_holding exit until z is back inside +-entry
    held: tuple | None = None  # (side, beta, units_y, units_x, entry bar of y, of x)
    entry_bar = -1
    hedge_cap_refusals = 0

    for t in range(n):
        if order != _NO_ORDER:
            if t < due:
                continue  # a leg is still waiting for its next trade (due == n: never)
            if order == _ENTRY_ORDER:
                units_y, units_x = leg_units(notional, order_beta, py[leg_bar_y],
                                             px[leg_bar_x], log_prices)
                held = (order_side, order_beta, units_y, units_x, leg_bar_y, leg_bar_x)
                position = order_side
                entry_bar = t
            else:
                trades.append(_book_trade(held, entry_bar, t, leg_bar_y, leg_bar_x,
                                          order_reason, py, px, fee_bps, slippage_bps))
                position = 0
                held = None
            order = _NO_ORDER

        zt = zs[t]
        if position == 0:
            if not armed:
                armed = abs(zt) <= entry  # False for NaN
                continue
            if zt > entry:
                if zt >= stop:
                    continue  # it would be stopped out at once
                side = _SHORT
            elif zt < below_entry:
                if zt <= below_stop:
                    continue
                side = _LONG
            else:
                continue  # inside the band, or NaN
            beta_t = betas[t]
            hedge = abs(beta_t) if log_prices else abs(beta_t) * known_x[t] / known_y[t]
            if hedge <= max_hedge_multiple:  # False for a NaN β or an unknown price
                order, order_side, order_beta = _ENTRY_ORDER, side, beta_t
                leg_bar_y, leg_bar_x = int(next_y[t + 1]), int(next_x[t + 1])
                due = max(leg_bar_y, leg_bar_x)
            elif hedge > max_hedge_multiple:
                hedge_cap_refusals += 1
            continue

        reason = ""
        if position == _SHORT:
            if zt >= stop:
                reason = "stop"
            elif zt <= exit_level:
                reason = "exit"
        else:
            if zt <= below_stop:
                reason = "stop"
            elif zt >= below_exit:
                reason = "exit"
        if not reason and t + 1 - entry_bar >= hold_limit:
            reason = "max_holding"
        if reason:
            order, order_reason = _EXIT_ORDER, reason
            leg_bar_y, leg_bar_x = int(next_y[t + 1]), int(next_x[t + 1])
            due = max(leg_bar_y, leg_bar_x)
            armed = reason == "exit"

    if held is not None:
        # Still open, or an exit with a leg that never traded again: each leg closes at
        # its exit fill if it had one, else at its last traded price; booked on the last bar.
        last_y = int(np.flatnonzero(fills_y)[-1])
        last_x = int(np.flatnonzero(fills_x)[-1])
        exiting = order == _EXIT_ORDER
        bar_y = leg_bar_y if exiting and leg_bar_y < n else last_y
        bar_x = leg_bar_x if exiting and leg_bar_x < n else last_x
        trades.append(_book_trade(held, entry_bar, n - 1, bar_y, bar_x, "end", py, px,
                                  fee_bps, slippage_bps))
    return trades, hedge_cap_refusals


def _next_fill_bars(can_fill: np.ndarray) -> np.ndarray:
    """``result[t]`` = first bar >= t on which the leg can fill, ``n`` if none (n + 1 items).

    An array, not a list: the loop reads it only when it places an order.
    """
    n = len(can_fill)
    bars = np.where(can_fill, np.arange(n), n)
    following = np.minimum.accumulate(bars[::-1])[::-1]
    return np.append(following, n)


def _book_trade(
    held: tuple,
    entry_bar: int,
    exit_bar: int,
    exit_bar_y: int,
    exit_bar_x: int,
    reason: str,
    py: list[float],
    px: list[float],
    fee_bps: float,
    slippage_bps: float,
) -> _Trade:
    """Price a round trip with ``position_pnl`` at each leg's own fill bars."""
    side, beta, units_y, units_x, entry_bar_y, entry_bar_x = held
    pnl = position_pnl(
        "long" if side == _LONG else "short", units_y, units_x,
        py[entry_bar_y], px[entry_bar_x], py[exit_bar_y], px[exit_bar_x],
        fee_bps=fee_bps, slippage_bps=slippage_bps,
    )
    return _Trade(entry_bar, exit_bar, entry_bar_y, entry_bar_x, exit_bar_y, exit_bar_x,
                  side, beta, side * units_y, -side * units_x, pnl, reason)


def position_pnl(
    side: str,
    units_y: float,
    units_x: float,
    entry_y: float,
    entry_x: float,
    exit_y: float,
    exit_x: float,
    fee_bps: float,
    slippage_bps: float,
) -> PositionPnl:
    """Profit, commission and slippage of one closed two-leg spread position.

    The single P&L arithmetic of the project: ``backtest`` prices every round trip with it.

    Parameters
    ----------
    side : {"long", "short"}
        Long the spread = buy ``units_y`` of y and sell ``units_x`` of x; short = the
        opposite.
    units_y : float
        Quantity of y, > 0.
    units_x : float
        Hedge quantity of x, signed like β: a negative ``units_x`` (negative β) means the
        long spread BUYS ``|units_x|`` of x.
    entry_y, entry_x, exit_y, exit_x : float
        Reference prices, > 0: the traded prices at which each leg's entry and exit orders
        were filled, before slippage.
    fee_bps : float
        Commission per fill, in basis points of the fill's notional, >= 0.
    slippage_bps : float
        Adverse move of each fill, in basis points of the reference price, in [0, 10000).

    Returns
    -------
    PositionPnl
        qty_y, qty_x : float
            The signed quantities held: ``q_y = ±units_y``, ``q_x = ∓units_x`` (upper sign:
            long; positive = long that leg).
        entry_fill_y, entry_fill_x, exit_fill_y, exit_fill_x : float
            Fill prices: a buy at ``p · (1 + slippage_bps/1e4)``, a sell at
            ``p · (1 - slippage_bps/1e4)``.
        gross_y, gross_x : float
            Each leg's ``q · (exit_fill - entry_fill)``.
        gross : float
            ``gross_y + gross_x``. Slippage is already inside it; commission is not.
        entry_fee, exit_fee, fees : float
            ``fee_bps/1e4`` times the traded notional ``|q_y| · fill_y + |q_x| · fill_x``
            of the two entry fills, of the two exit fills, and their sum (four fills).
        slippage : float
            What slippage cost against the reference prices, for information:
            ``slippage_bps/1e4 · Σ |q| · reference price`` over the four fills. Already
            inside ``gross``: do not subtract it again.
        net : float
            ``gross - fees``.
        traded_notional : float
            ``Σ |q| · fill price`` over the four fills.

    Raises
    ------
    ValueError
        Naming the argument: an unknown side, a non-positive ``units_y``, a non-finite
        ``units_x``, a non-positive or non-finite price, negative costs.
    """
    if side not in SIDES:
        raise ValueError(f"side ({side!r}) must be 'long' or 'short'")
    _check_number("units_y", units_y, low=0.0)
    _check_number("units_x", units_x, low=-math.inf)
    for name, price in (("entry_y", entry_y), ("entry_x", entry_x), ("exit_y", exit_y),
                        ("exit_x", exit_x)):
        if (type(price) is not float and (isinstance(price, bool)
                                          or not isinstance(price, Real))) or not (
                math.isfinite(price) and price > 0.0):
            raise ValueError(f"{name} must be a positive finite price, got {price!r}")
    _check_number("fee_bps", fee_bps, low=0.0, low_inclusive=True)
    _check_number("slippage_bps", slippage_bps, low=0.0, low_inclusive=True, high=10_000.0)
    direction = 1.0 if side == "long" else -1.0
    qty_y = direction * units_y  # long spread: buy y
    qty_x = -direction * units_x  # long spread: sell β·x
    slip = slippage_bps / 1e4
    fee = fee_bps / 1e4
    entry_fill_y = entry_y * (1.0 + slip * _sign(qty_y))
    entry_fill_x = entry_x * (1.0 + slip * _sign(qty_x))
    # Closing sells what was bought and buys back what was sold.
    exit_fill_y = exit_y * (1.0 - slip * _sign(qty_y))
    exit_fill_x = exit_x * (1.0 - slip * _sign(qty_x))
    gross_y = qty_y * (exit_fill_y - entry_fill_y)
    gross_x = qty_x * (exit_fill_x - entry_fill_x)
    gross = gross_y + gross_x
    size_y, size_x = abs(qty_y), abs(qty_x)
    entry_notional = size_y * entry_fill_y + size_x * entry_fill_x
    exit_notional = size_y * exit_fill_y + size_x * exit_fill_x
    entry_fee = fee * entry_notional
    exit_fee = fee * exit_notional
    slippage = slip * (size_y * (entry_y + exit_y) + size_x * (entry_x + exit_x))
    return PositionPnl(
        qty_y=qty_y, qty_x=qty_x, gross_y=gross_y, gross_x=gross_x, gross=gross, fees=entry_fee + exit_fee, slippage=slippage,
        net=gross - (entry_fee + exit_fee), entry_fee=entry_fee, exit_fee=exit_fee,
        entry_fill_y=entry_fill_y, entry_fill_x=entry_fill_x, exit_fill_y=exit_fill_y,
        exit_fill_x=exit_fill_x, traded_notional=entry_notional + exit_notional,
    )


def leg_units(notional: float, beta: float, price_y: float, price_x: float,
              log_prices: bool) -> tuple[float, float]:
    """``(units_y, units_x)`` of a spread position of y notional ``notional``.

    The sizing rule of ``backtest`` (its Notes) for the prices of the entry fills:

    - log prices: β is an elasticity, ``units_y = notional / price_y`` and
      ``units_x = β · notional / price_x`` (x notional β·N);
    - raw prices: β is units of x per unit of y, ``units_x = β · units_y``.

    ``units_x`` is signed like β (a negative β flips the x leg); pass both to
    ``position_pnl`` with the side. Inputs are not checked: ``position_pnl`` checks them.
    """
    units_y = notional / price_y
    return units_y, beta * (notional / price_x if log_prices else units_y)


def _sign(value: float) -> float:
    return 1.0 if value > 0.0 else (-1.0 if value < 0.0 else 0.0)


def _assemble_result(
    trades_booked: list[_Trade],
    ts: np.ndarray,
    index: pd.Index,
    price_y: np.ndarray,
    price_x: np.ndarray,
    capital: float,
    bar_seconds: float,
    hedge_cap_refusals: int,
) -> BacktestResult:
    """Per-bar positions and equity from the trades, then the metrics."""
    n = len(ts)
    positions = np.zeros(n, dtype=np.int64)
    held_y = np.zeros(n)
    held_x = np.zeros(n)
    cash_flow = np.zeros(n)
    for trade in trades_booked:
        pnl = trade.pnl
        positions[trade.entry_bar:trade.exit_bar] = trade.side
        held_y[trade.entry_bar:trade.exit_bar] = trade.qty_y
        held_x[trade.entry_bar:trade.exit_bar] = trade.qty_x
        cash_flow[trade.entry_bar] -= (trade.qty_y * pnl.entry_fill_y
                                       + trade.qty_x * pnl.entry_fill_x + pnl.entry_fee)
        cash_flow[trade.exit_bar] += (trade.qty_y * pnl.exit_fill_y
                                      + trade.qty_x * pnl.exit_fill_x - pnl.exit_fee)
    # Mark at the last known price; only bars with a holding are marked, so the NaN
    # prices before a leg's first print never reach the equity.
    mark_y = pd.Series(price_y).ffill().to_numpy()
    mark_x = pd.Series(price_x).ffill().to_numpy()
    holdings = np.where(held_y != 0.0, held_y * mark_y, 0.0) + np.where(
        held_x != 0.0, held_x * mark_x, 0.0
    )
    equity_values = capital + np.cumsum(cash_flow) + holdings

    trades = _trades_frame(trades_booked, ts)
    equity = pd.Series(equity_values, index=index.copy(), name="equity")
    position_series = pd.Series(positions, index=index.copy(), name="position")

    intervals_per_year = elapsed_periods_per_year(ts)
    if n >= MIN_BARS_FOR_RATIOS:
        returns = equity_values[1:] / equity_values[:-1] - 1.0
        sharpe = sharpe_ratio(returns, intervals_per_year)
        sortino = sortino_ratio(returns, intervals_per_year)
    else:
        sharpe = sortino = math.nan
    drawdown = max_drawdown(equity)

    pnl = trades["pnl"].to_numpy()
    wins = float(pnl[pnl > 0.0].sum())
    losses = float(-pnl[pnl < 0.0].sum())
    n_trades = len(trades)
    if n_trades == 0:
        win_rate = profit_factor = avg_bars = avg_seconds = math.nan
    else:
        win_rate = float(np.mean(pnl > 0.0))
        if losses > 0.0:
            profit_factor = wins / losses
        else:
            profit_factor = math.inf if wins > 0.0 else math.nan
        avg_bars = float(trades["bars_held"].mean())
        avg_seconds = float(((trades["exit_ts"] - trades["entry_ts"]) / 1000.0).mean())
    traded_notional = sum(trade.pnl.traded_notional for trade in trades_booked)
    span_seconds = float(ts[-1] - ts[0]) / 1000.0 if n else 0.0

    return BacktestResult(
        trades=trades,
        equity=equity,
        positions=position_series,
        capital=capital,
        n_bars=n,
        n_trades=n_trades,
        total_return=float(equity_values[-1] / capital - 1.0) if n else math.nan,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=drawdown.depth,
        max_drawdown_duration_bars=drawdown.duration_bars,
        max_drawdown_duration_seconds=drawdown.duration_seconds,
        win_rate=win_rate,
        profit_factor=profit_factor,
        avg_holding_bars=avg_bars,
        avg_holding_seconds=avg_seconds,
        exposure=float(np.mean(positions != 0)) if n else math.nan,
        turnover=traded_notional / capital,
        fees_paid=float(trades["fees"].sum()),
        slippage_paid=float(trades["slippage_cost"].sum()),
        periods_per_year=intervals_per_year,
        ratios_note=ratios_sample_note(n, bar_seconds, span_seconds=span_seconds),
        hedge_cap_refusals=hedge_cap_refusals,
    )


def ratios_sample_note(n_bars: int, bar_seconds: float, span_seconds: float | None = None
                       ) -> str:
    """Why ``n_bars`` bars are too few to annualise, or "" when enough.

    Enough means at least ``MIN_BARS_TO_ANNUALISE`` bars covering at least
    ``MIN_SECONDS_TO_ANNUALISE`` seconds. The time covered is ``span_seconds`` (first to
    last bar timestamp) plus the last bar's own ``bar_seconds``; without ``span_seconds``
    the bars are taken as regular, ``n_bars * bar_seconds``.
    """
    if span_seconds is None or n_bars == 0:
        covered = n_bars * bar_seconds
    else:
        covered = span_seconds + bar_seconds
    if n_bars >= MIN_BARS_TO_ANNUALISE and covered >= MIN_SECONDS_TO_ANNUALISE:
        return ""
    return (f"Sharpe and Sortino need at least {MIN_BARS_TO_ANNUALISE} bars covering "
            f"{MIN_SECONDS_TO_ANNUALISE // 60} min to mean something; the sample has "
            f"{n_bars} bars ({covered / 60:.1f} min)")


def _trades_frame(trades_booked: list[_Trade], ts: np.ndarray) -> pd.DataFrame:
    def bars(name: str) -> np.ndarray:
        return np.array([getattr(t, name) for t in trades_booked], dtype=np.int64)

    def prices(name: str) -> np.ndarray:
        return np.array([getattr(t.pnl, name) for t in trades_booked], dtype=np.float64)

    def values(name: str) -> np.ndarray:
        return np.array([getattr(t, name) for t in trades_booked], dtype=np.float64)

    entry_bars, exit_bars = bars("entry_bar"), bars("exit_bar")
    return pd.DataFrame(
        {
            "entry_ts": ts[entry_bars],
            "exit_ts": ts[exit_bars],
            "side": pd.Series(
                ["long" if t.side == _LONG else "short" for t in trades_booked], dtype="str"
            ),
            "entry_price_y": prices("entry_fill_y"),
            "entry_price_x": prices("entry_fill_x"),
            "exit_price_y": prices("exit_fill_y"),
            "exit_price_x": prices("exit_fill_x"),
            "units_y": values("qty_y"),
            "units_x": values("qty_x"),
            "beta": values("beta"),
            "pnl": prices("net"),
            "gross_pnl": prices("gross"),
            "fees": prices("fees"),
            "slippage_cost": prices("slippage"),
            "bars_held": exit_bars - entry_bars,
            "exit_reason": pd.Series([t.reason for t in trades_booked], dtype="str"),
            "entry_ts_y": ts[bars("entry_bar_y")],
            "entry_ts_x": ts[bars("entry_bar_x")],
            "exit_ts_y": ts[bars("exit_bar_y")],
            "exit_ts_x": ts[bars("exit_bar_x")],
        },
        columns=list(TRADE_COLUMNS),
    )


def _check_series(name: str, series: object) -> None:
    if not isinstance(series, pd.Series):
        raise ValueError(f"{name} must be a pandas Series, got {type(series).__name__}")
    index = series.index
    if index.dtype != np.int64:
        raise ValueError(
            f"{name} must be indexed by int64 epoch ms, got index dtype {index.dtype}"
        )
    if not (index.is_monotonic_increasing and index.is_unique):
        raise ValueError(f"{name} index must be strictly increasing (sorted, no duplicates)")


def _check_same_index(name: str, series: pd.Series, reference: pd.Series) -> None:
    if len(series) != len(reference):
        raise ValueError(f"{name} has {len(series)} rows but y has {len(reference)}")
    if not series.index.equals(reference.index):
        mismatch = int(np.flatnonzero(series.index.to_numpy() != reference.index.to_numpy())[0])
        raise ValueError(
            f"{name} index differs from y's at position {mismatch} "
            f"(ts {series.index[mismatch]} vs {reference.index[mismatch]})"
        )


def _check_mask(name: str, mask: object, reference: pd.Series) -> None:
    if not isinstance(mask, pd.Series):
        raise ValueError(f"{name} must be a pandas Series of bool, got {type(mask).__name__}")
    _check_same_index(name, mask, reference)
    if mask.dtype != bool:
        raise ValueError(f"{name} must hold booleans (True where that leg traded in the "
                         f"bar), got dtype {mask.dtype}")


def _check_prices(name: str, series: pd.Series) -> None:
    values = series.to_numpy(dtype=np.float64)
    known = ~np.isnan(values)
    bad = known & ~((values > 0.0) & np.isfinite(values))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must hold positive finite price levels (NaN allowed); "
            f"found {values[first]!r} at ts {series.index[first]} ({int(bad.sum())} such rows)"
        )


def _check_thresholds(entry: object, exit_level: object, stop: object) -> None:
    for name, value in (("entry", entry), ("exit", exit_level)):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise ValueError(f"{name} ({value!r}) must be a finite number")
    if exit_level < 0:
        raise ValueError(f"exit ({exit_level!r}) must be >= 0")
    if not entry > exit_level:
        raise ValueError(f"entry ({entry!r}) must be greater than exit ({exit_level!r})")
    if stop is not None and (
        isinstance(stop, bool) or not isinstance(stop, Real) or not stop > entry
    ):
        raise ValueError(f"stop ({stop!r}) must be None or a number greater than entry ({entry!r})")


def _check_number(
    name: str,
    value: object,
    *,
    low: float,
    low_inclusive: bool = False,
    high: float = math.inf,
) -> None:
    kind = type(value)
    # Plain floats and ints first: the ABC check of ``Real`` is slow in a per-trade call.
    if (kind is not float and kind is not int) and (
            isinstance(value, bool) or not isinstance(value, Real)):
        raise ValueError(f"{name} ({value!r}) must be a finite number")
    if not math.isfinite(value):
        raise ValueError(f"{name} ({value!r}) must be a finite number")
    above = value >= low if low_inclusive else value > low
    if not above or value >= high:
        bound = ">=" if low_inclusive else ">"
        upper = f" and < {high:g}" if math.isfinite(high) else ""
        raise ValueError(f"{name} ({value!r}) must be {bound} {low:g}{upper}")
