"""Two-leg mean-reversion backtest of a pairs spread, with next-bar fills and costs.

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

The state machine, the sizing and the cost model are described once, in ``backtest``'s
Notes; the metric helpers (``sharpe_ratio``, ``sortino_ratio``, ``max_drawdown``) are
public so that a reviewer can recompute each figure from ``result.equity``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real

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
)
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
        Length of one bar in seconds; only used to annualise Sharpe and Sortino.
    log_prices : bool, default True
        True when ``beta`` and ``z`` come from the log-price spread ``ln y - β ln x``, False
        for the raw-price spread ``y - β x``. Selects the sizing (see Notes).

    Returns
    -------
    BacktestResult
        trades : DataFrame, one row per round trip, columns ``TRADE_COLUMNS``:
            ``entry_ts``/``exit_ts`` (int64 epoch ms of the fill bars), ``side``
            ({"long", "short"} spread), ``entry_price_y``/``entry_price_x``/
            ``exit_price_y``/``exit_price_x`` (fill prices, slippage included),
            ``units_y``/``units_x`` (SIGNED quantities held: positive = long that leg),
            ``beta`` (β used for sizing, from the signal bar), ``pnl`` (net =
            gross_pnl - fees), ``gross_pnl`` (at fill prices, so after slippage, before
            commission), ``fees`` (commission of the four fills), ``slippage_cost``
            (what slippage cost against the reference prices; already inside gross_pnl),
            ``bars_held`` (exit fill bar - entry fill bar), ``exit_reason``
            ({"exit", "stop", "max_holding", "end"}).
        equity : Series indexed by ``ts``, mark-to-market equity, starts from ``capital``.
        positions : Series indexed by ``ts`` of int {+1 long spread, -1 short, 0 flat}:
            the position held over the close of each bar, after that bar's fill.
        capital, n_bars, n_trades : float, int, int.
        total_return : float
            ``equity[-1] / capital - 1``.
        sharpe, sortino : float
            Annualised from bar returns of ``equity`` (see ``sharpe_ratio``,
            ``sortino_ratio``); NaN with fewer than ``MIN_BARS_FOR_RATIOS`` bars. A
            short sample is flagged in ``ratios_note``.
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
            ``SECONDS_PER_YEAR / bar_seconds`` used for annualising.
        ratios_note : str
            "" when the sample is long enough to annualise; otherwise why Sharpe and
            Sortino mean little: fewer than ``MIN_BARS_TO_ANNUALISE`` bars or less than
            ``MIN_SECONDS_TO_ANNUALISE`` seconds of bars (``n_bars * bar_seconds``).

    Raises
    ------
    ValueError
        Naming the argument and the value: misaligned or non-int64 or unsorted indices,
        non-positive or infinite prices, ``entry <= exit``, ``exit < 0``,
        ``stop <= entry``, ``max_holding_bars < 1``, negative costs, non-positive
        ``notional``/``capital``/``bar_seconds``.

    Notes
    -----
    Timing. The signal is observed at the close of bar t. The order it creates fills at
    the close price of the next bar t+1 (the prices ``y``, ``x`` given; pass open prices
    shifted by -1 if fills at the next open are wanted). If either leg's price is NaN on
    that bar the fill is deferred to the next bar where both legs have a price; signals
    are ignored while an order waits. An order created on the last bar is never filled.
    A position exists from its entry fill bar on, so the earliest exit signal is the close
    of the fill bar, filled one bar later (``bars_held >= 1``).

    Rules, evaluated on each bar without a waiting order (z is ``z[t]``):

    - flat: ``z > entry`` -> short the spread (sell y, buy β·x);
      ``z < -entry`` -> long the spread (buy y, sell β·x). No entry when β is NaN, or
      when ``|z| >= stop`` (it would be stopped out at once).
    - short: stop when ``z >= stop``; else exit when ``z <= exit``.
    - long: stop when ``z <= -stop``; else exit when ``z >= -exit``.
      With ``exit=0`` both sides exit when z reaches or crosses 0; with ``exit=0.5`` the
      short exits at ``z <= 0.5`` and the long at ``z >= -0.5``. The stop only fires on
      the adverse side; a move far beyond the exit level is an exit.
    - in a position with neither: a ``max_holding_bars`` exit is ordered on the bar whose
      next-bar fill makes ``bars_held == max_holding_bars``. This is the only rule that
      fires on a NaN z (time passes without a signal).
    - after a "stop" or "max_holding" exit, no new entry until z has been back inside
      ``[-entry, entry]`` on some bar; otherwise the rule would re-enter the move it just
      gave up on, on the very next bar.

    Sizing, fixed at entry and never re-marked with a later β. ``β`` is the value at the
    signal bar; the reference prices ``py``, ``px`` are those of the fill bar (a
    quote-quantity order: the notional is the desk's decision, the price is the market's).

    - log prices: β is an elasticity, the hedge is in dollars:
      ``units_y = notional / py``, ``units_x = β · notional / px``, so a move ``ds`` of the
      log spread earns ``notional · ds``.
    - raw prices: β is units of x per unit of y: ``units_y = notional / py``,
      ``units_x = β · units_y``, so a move ``ds`` of ``y - β x`` earns ``units_y · ds``.

    A negative β flips the direction of the x leg; the signed ``units_x`` shows it.

    Costs. Every fill of every leg pays ``fee_bps`` on its traded notional
    ``|units| · fill_price``: a round trip is four fills. Slippage moves each fill against
    the trade: buys at ``p · (1 + slippage_bps/1e4)``, sells at ``p · (1 - ...)``.

    Equity. ``capital + cash + Σ units · price``, marked at the given prices (last known
    price where a leg is NaN). It drops at entry by the entry commission and slippage.
    A position still open after the last bar is closed at the last bar where both legs
    have a price, with the same commission and slippage as any fill, and
    ``exit_reason == "end"``; so ``equity[-1] == capital + trades.pnl.sum()``. A position
    filled on that very bar is closed at once (``bars_held == 0``).

    Time. ``*_seconds`` figures are measured on ``ts`` (gaps in the bars count as time);
    Sharpe and Sortino are annualised with ``bar_seconds`` (365 days of 24 h).
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

    ts = y.index.to_numpy(dtype=np.int64)
    price_y = y.to_numpy(dtype=np.float64)
    price_x = x.to_numpy(dtype=np.float64)
    z_values = z.to_numpy(dtype=np.float64)
    z_values = np.where(np.isfinite(z_values), z_values, np.nan)
    if isinstance(beta, pd.Series):
        beta_values = beta.to_numpy(dtype=np.float64)
    else:
        beta_values = np.full(len(ts), float(beta))

    trades = _run_state_machine(
        price_y=price_y,
        price_x=price_x,
        z_values=z_values,
        beta_values=beta_values,
        entry=float(entry),
        exit_level=float(exit),
        stop=math.inf if stop is None else float(stop),
        max_holding_bars=max_holding_bars,
        fee_rate=float(fee_bps) / 1e4,
        slippage_rate=float(slippage_bps) / 1e4,
        notional=float(notional),
        log_prices=log_prices,
    )
    return _assemble_result(
        trades, ts, y.index, price_y, price_x, float(capital), float(bar_seconds)
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
    """
    _check_number("bar_seconds", bar_seconds, low=0.0)
    return SECONDS_PER_YEAR / float(bar_seconds)


def sharpe_ratio(returns: np.ndarray | pd.Series, periods_per_year: float) -> float:
    """Annualised Sharpe ratio of per-bar returns, risk-free rate 0.

    Parameters
    ----------
    returns : array-like
        Simple per-bar returns (flat bars included, as 0).
    periods_per_year : float
        Bars per year, e.g. ``periods_per_year(bar_seconds)``.

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
        Bars per year.

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


def _run_state_machine(
    *,
    price_y: np.ndarray,
    price_x: np.ndarray,
    z_values: np.ndarray,
    beta_values: np.ndarray,
    entry: float,
    exit_level: float,
    stop: float,
    max_holding_bars: int | None,
    fee_rate: float,
    slippage_rate: float,
    notional: float,
    log_prices: bool,
) -> list[tuple]:
    """The bar loop: returns raw trade tuples (entry bar, exit bar, side, ...)."""
    n = len(price_y)
    # Plain Python floats: a loop over numpy scalars is several times slower.
    py = price_y.tolist()
    px = price_x.tolist()
    zs = z_values.tolist()
    betas = beta_values.tolist()
    tradable = (np.isfinite(price_y) & np.isfinite(price_x)).tolist()
    hold_limit = max_holding_bars if max_holding_bars is not None else n + 1

    trades: list[tuple] = []
    position = 0
    order = _NO_ORDER
    order_side = 0
    order_beta = math.nan
    order_reason = ""
    armed = True  # False after a stop/max_holding exit until z is back inside +-entry
    open_trade: tuple | None = None
    fill_bar = -1

    for t in range(n):
        if order != _NO_ORDER:
            if not tradable[t]:
                continue
            if order == _ENTRY_ORDER:
                open_trade = _open_leg_quantities(
                    order_side, order_beta, py[t], px[t], notional, log_prices, slippage_rate
                )
                position = order_side
                fill_bar = t
            else:
                trades.append(
                    _close_trade(
                        open_trade, fill_bar, t, py[t], px[t], order_reason,
                        fee_rate, slippage_rate,
                    )
                )
                position = 0
                open_trade = None
            order = _NO_ORDER

        zt = zs[t]
        if position == 0:
            if not armed:
                armed = abs(zt) <= entry  # False for NaN
                continue
            if zt > entry and zt < stop and betas[t] == betas[t]:
                order, order_side, order_beta = _ENTRY_ORDER, _SHORT, betas[t]
            elif zt < -entry and zt > -stop and betas[t] == betas[t]:
                order, order_side, order_beta = _ENTRY_ORDER, _LONG, betas[t]
            continue

        reason = ""
        if position == _SHORT:
            if zt >= stop:
                reason = "stop"
            elif zt <= exit_level:
                reason = "exit"
        else:
            if zt <= -stop:
                reason = "stop"
            elif zt >= -exit_level:
                reason = "exit"
        if not reason and t + 1 - fill_bar >= hold_limit:
            reason = "max_holding"
        if reason:
            order, order_reason = _EXIT_ORDER, reason
            armed = reason == "exit"

    if open_trade is not None:
        last_tradable = int(np.flatnonzero(tradable)[-1])
        trades.append(
            _close_trade(
                open_trade, fill_bar, last_tradable, py[last_tradable], px[last_tradable],
                "end", fee_rate, slippage_rate,
            )
        )
    return trades


def _open_leg_quantities(
    side: int,
    beta: float,
    ref_y: float,
    ref_x: float,
    notional: float,
    log_prices: bool,
    slippage_rate: float,
) -> tuple:
    """Signed units and slipped fill prices of an entry; the sizing rule of the Notes."""
    units_y = notional / ref_y
    units_x = beta * notional / ref_x if log_prices else beta * units_y
    qty_y = side * units_y  # long spread: buy y
    qty_x = -side * units_x  # long spread: sell β·x
    fill_y = ref_y * (1.0 + slippage_rate * _sign(qty_y))
    fill_x = ref_x * (1.0 + slippage_rate * _sign(qty_x))
    return (side, beta, qty_y, qty_x, ref_y, ref_x, fill_y, fill_x)


def _close_trade(
    open_trade: tuple,
    entry_bar: int,
    exit_bar: int,
    ref_y: float,
    ref_x: float,
    reason: str,
    fee_rate: float,
    slippage_rate: float,
) -> tuple:
    """Fills of the closing orders, PnL and costs of the round trip, as one raw tuple."""
    side, beta, qty_y, qty_x, entry_ref_y, entry_ref_x, entry_y, entry_x = open_trade
    # Closing sells what was bought and buys back what was sold.
    exit_y = ref_y * (1.0 - slippage_rate * _sign(qty_y))
    exit_x = ref_x * (1.0 - slippage_rate * _sign(qty_x))
    gross = qty_y * (exit_y - entry_y) + qty_x * (exit_x - entry_x)
    size_y, size_x = abs(qty_y), abs(qty_x)
    entry_fee = fee_rate * (size_y * entry_y + size_x * entry_x)
    exit_fee = fee_rate * (size_y * exit_y + size_x * exit_x)
    slippage = slippage_rate * (
        size_y * (entry_ref_y + ref_y) + size_x * (entry_ref_x + ref_x)
    )
    traded = size_y * (entry_y + exit_y) + size_x * (entry_x + exit_x)
    return (
        entry_bar, exit_bar, side, entry_y, entry_x, exit_y, exit_x, qty_y, qty_x, beta,
        gross, entry_fee, exit_fee, slippage, traded, reason,
    )


def _sign(value: float) -> float:
    return 1.0 if value > 0.0 else (-1.0 if value < 0.0 else 0.0)


def _assemble_result(
    raw_trades: list[tuple],
    ts: np.ndarray,
    index: pd.Index,
    price_y: np.ndarray,
    price_x: np.ndarray,
    capital: float,
    bar_seconds: float,
) -> BacktestResult:
    """Per-bar positions and equity from the trades, then the metrics."""
    n = len(ts)
    positions = np.zeros(n, dtype=np.int64)
    held_y = np.zeros(n)
    held_x = np.zeros(n)
    cash_flow = np.zeros(n)
    for (entry_bar, exit_bar, side, entry_y, entry_x, exit_y, exit_x, qty_y, qty_x, _beta,
         _gross, entry_fee, exit_fee, _slip, _traded, _reason) in raw_trades:
        positions[entry_bar:exit_bar] = side
        held_y[entry_bar:exit_bar] = qty_y
        held_x[entry_bar:exit_bar] = qty_x
        cash_flow[entry_bar] -= qty_y * entry_y + qty_x * entry_x + entry_fee
        cash_flow[exit_bar] += qty_y * exit_y + qty_x * exit_x - exit_fee
    # Mark at the last known price; only bars with a holding are marked, so the NaN
    # prices before a leg's first print never reach the equity.
    mark_y = pd.Series(price_y).ffill().to_numpy()
    mark_x = pd.Series(price_x).ffill().to_numpy()
    holdings = np.where(held_y != 0.0, held_y * mark_y, 0.0) + np.where(
        held_x != 0.0, held_x * mark_x, 0.0
    )
    equity_values = capital + np.cumsum(cash_flow) + holdings

    trades = _trades_frame(raw_trades, ts)
    equity = pd.Series(equity_values, index=index.copy(), name="equity")
    position_series = pd.Series(positions, index=index.copy(), name="position")

    bars_per_year = SECONDS_PER_YEAR / bar_seconds
    if n >= MIN_BARS_FOR_RATIOS:
        returns = equity_values[1:] / equity_values[:-1] - 1.0
        sharpe = sharpe_ratio(returns, bars_per_year)
        sortino = sortino_ratio(returns, bars_per_year)
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
    traded_notional = sum(trade[14] for trade in raw_trades)

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
        periods_per_year=bars_per_year,
        ratios_note=ratios_sample_note(n, bar_seconds),
    )


def ratios_sample_note(n_bars: int, bar_seconds: float) -> str:
    """Why ``n_bars`` bars of ``bar_seconds`` are too few to annualise, or "" when enough.

    Enough means at least ``MIN_BARS_TO_ANNUALISE`` bars and at least
    ``MIN_SECONDS_TO_ANNUALISE`` seconds of bars (``n_bars * bar_seconds``).
    """
    covered = n_bars * bar_seconds
    if n_bars >= MIN_BARS_TO_ANNUALISE and covered >= MIN_SECONDS_TO_ANNUALISE:
        return ""
    return (f"Sharpe and Sortino need at least {MIN_BARS_TO_ANNUALISE} bars covering "
            f"{MIN_SECONDS_TO_ANNUALISE // 60} min to mean something; the sample has "
            f"{n_bars} bars ({covered / 60:.1f} min)")


def _trades_frame(raw_trades: list[tuple], ts: np.ndarray) -> pd.DataFrame:
    entry_bars = np.array([t[0] for t in raw_trades], dtype=np.int64)
    exit_bars = np.array([t[1] for t in raw_trades], dtype=np.int64)

    def column(position: int) -> np.ndarray:
        return np.array([t[position] for t in raw_trades], dtype=np.float64)

    gross = column(10)
    fees = column(11) + column(12)
    return pd.DataFrame(
        {
            "entry_ts": ts[entry_bars],
            "exit_ts": ts[exit_bars],
            "side": pd.Series(
                ["long" if t[2] == _LONG else "short" for t in raw_trades], dtype="str"
            ),
            "entry_price_y": column(3),
            "entry_price_x": column(4),
            "exit_price_y": column(5),
            "exit_price_x": column(6),
            "units_y": column(7),
            "units_x": column(8),
            "beta": column(9),
            "pnl": gross - fees,
            "gross_pnl": gross,
            "fees": fees,
            "slippage_cost": column(13),
            "bars_held": exit_bars - entry_bars,
            "exit_reason": pd.Series([t[15] for t in raw_trades], dtype="str"),
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
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} ({value!r}) must be a finite number")
    above = value >= low if low_inclusive else value > low
    if not above or value >= high:
        bound = ">=" if low_inclusive else ">"
        upper = f" and < {high:g}" if math.isfinite(high) else ""
        raise ValueError(f"{name} ({value!r}) must be {bound} {low:g}{upper}")
