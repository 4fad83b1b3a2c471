"""Time ``backtest.backtest`` on one day of 1 s bars (86,400) with a realistic OU signal.

Run: ``python bench/bench_backtest.py``. Prints the best and median of several runs; the
figure is informative only (tests never assert on time).

Synthetic data: log x is a random walk with 1 s volatility 1e-4 (~56 %/yr); the log
spread is an Ornstein-Uhlenbeck process with a 1-minute half-life and a 20 bps stationary
std; log y = β·log x + spread with a trailing β that wanders slowly around 0.8; z is the
spread over its stationary std, so the rule trades about 150 round trips a day. A second
run passes traded masks in which each leg prints on a random 70 % of the bars (the spot 1 s
recording's BTC and ETH print on 60-90 % of its rows), so fills wait for each leg's next trade.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from backtest import backtest  # noqa: E402

N_BARS = 86_400
REPEATS = 7


def make_ou_pair(n: int, seed: int = 7) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """Prices y, x, signal z and trailing β of a cointegrated pair on 1 s bars."""
    rng = np.random.default_rng(seed)
    half_life_bars = 60.0
    phi = 0.5 ** (1.0 / half_life_bars)
    stationary_std = 0.002  # 20 bps of log spread: 2σ clears the 4 x 5 bps round trip
    spread_shock = stationary_std * np.sqrt(1.0 - phi**2)
    shocks = rng.normal(0.0, spread_shock, n)
    spread = np.empty(n)
    spread[0] = 0.0
    for t in range(1, n):
        spread[t] = phi * spread[t - 1] + shocks[t]
    log_x = np.log(3_000.0) + np.cumsum(rng.normal(0.0, 1e-4, n))
    beta = 0.8 + 0.02 * np.sin(np.arange(n) / 20_000.0)
    log_y = np.log(90_000.0) - 0.8 * np.log(3_000.0) + beta * log_x + spread
    index = pd.Index(1_765_000_000_000 + 1000 * np.arange(n, dtype=np.int64), name="ts")
    return (
        pd.Series(np.exp(log_y), index=index),
        pd.Series(np.exp(log_x), index=index),
        pd.Series(spread / stationary_std, index=index),
        pd.Series(beta, index=index),
    )


def main() -> None:
    y, x, z, beta = make_ou_pair(N_BARS)
    rng = np.random.default_rng(11)
    masks = {name: pd.Series(rng.random(N_BARS) < 0.7, index=y.index)
             for name in ("y_traded", "x_traded")}
    for label, extra in (("every bar traded", {}), ("legs trade on 70 % of bars", masks)):
        timings = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            result = backtest(y, x, z, 2.0, 0.0, beta=beta, stop=4.0,
                              max_holding_bars=3_600, **extra)
            timings.append(time.perf_counter() - started)
        print(
            f"backtest, {N_BARS:,} bars, {label}, {result.n_trades} trades: "
            f"best {min(timings) * 1e3:.1f} ms, "
            f"median {statistics.median(timings) * 1e3:.1f} ms over {REPEATS} runs"
        )
        print(
            f"  exposure {result.exposure:.1%}, total return {result.total_return:.2%}, "
            f"fees {result.fees_paid:,.0f}, sharpe {result.sharpe:.2f}"
        )


if __name__ == "__main__":
    main()
