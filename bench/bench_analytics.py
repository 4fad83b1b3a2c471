"""Benchmark of analytics.py on a synthetic day of 1 s bars (run: python bench/bench_analytics.py).

Prints the median wall time of several runs for each step a dashboard refresh needs, their
total (target <= 150 ms), ADF at 10,000 points (target <= 100 ms), the robust hedge
methods at their documented sample bounds, and a whole-day Kalman pass. With ``--cpu`` the
times are this process's CPU time (use it on a machine busy with other jobs).
"""

import os

# Before numpy is imported: one BLAS thread (2-core machines; threading slows ADF down).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import analytics  # noqa: E402

BARS_PER_DAY = 86_400
START_MS = 1_765_843_200_000  # 2025-12-16 00:00 UTC
REPEATS = 7
REFRESH_TARGET_MS = 150.0
ADF_TARGET_MS = 100.0


def synthetic_day(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two legs of 1 s bars: BTC-like x and a cointegrated ETH-like y; y skips 5 % of seconds."""
    rng = np.random.default_rng(seed)
    ts = START_MS + 1000 * np.arange(BARS_PER_DAY)
    log_x = math.log(87_000) + np.cumsum(rng.normal(0, 1e-4, BARS_PER_DAY))
    spread = np.zeros(BARS_PER_DAY)
    shocks = rng.normal(0, 5e-5, BARS_PER_DAY)
    rho = 2 ** (-1 / 300)
    for i in range(1, BARS_PER_DAY):
        spread[i] = rho * spread[i - 1] + shocks[i]
    log_y = -3.5 + 1.05 * log_x + spread

    def bars(log_close, keep):
        close = np.exp(log_close[keep])
        volume = rng.exponential(2.0, keep.sum())
        trades = rng.integers(1, 40, keep.sum())
        return pd.DataFrame(
            {"open": close, "high": close * 1.0001, "low": close * 0.9999, "close": close,
             "volume": volume, "buy_volume": volume * rng.random(keep.sum()),
             "trades": trades, "notional": close * volume, "vwap": close},
            index=pd.Index(ts[keep], name="ts"),
        )

    all_seconds = np.ones(BARS_PER_DAY, dtype=bool)
    return bars(log_y, rng.random(BARS_PER_DAY) > 0.05), bars(log_x, all_seconds)


# ``--cpu``: time with this process's CPU clock instead of the wall clock. The code timed is
# single-threaded (one BLAS thread), so on a quiet machine both agree; on a machine shared
# with other jobs the wall clock also counts the time spent waiting for a core.
CLOCK = time.process_time if "--cpu" in sys.argv else time.perf_counter


def timed(function, repeats: int = REPEATS) -> tuple[float, object]:
    """Median milliseconds over ``repeats`` runs, and the last result."""
    samples, result = [], None
    for _ in range(repeats):
        start = CLOCK()
        result = function()
        samples.append((CLOCK() - start) * 1000.0)
    return statistics.median(samples), result


def main() -> None:
    bars_y, bars_x = synthetic_day()
    print(f"synthetic day: {len(bars_y):,} y bars, {len(bars_x):,} x bars (1 s); "
          f"median of {REPEATS} runs per step; "
          f"{'CPU time (--cpu)' if CLOCK is time.process_time else 'wall time'}\n")

    align_ms, aligned = timed(lambda: analytics.align(bars_y, bars_x, timeframe="1s"))
    log_y, log_x = np.log(aligned.y), np.log(aligned.x)
    # Inputs of the later steps, computed once outside the timings.
    trailing = analytics.rolling_hedge_ratio(log_y, log_x, 3600)
    trailing_spread = analytics.spread(log_y, log_x, trailing.beta, trailing.alpha)
    # The page's refresh: the chosen method's history (pair_signals, OLS at the 1 s default
    # window of 300 bars) and the Kalman β drawn beside it, whose filter runs are memoised
    # by the page (dashboard_data's cache): a refresh with one new bar re-runs only the
    # filters that see it. Warm that cache on the day without its last bar.
    fit_cache: dict = {}
    analytics.pair_signals(aligned.y.iloc[:-1], aligned.x.iloc[:-1], method="kalman",
                           bar_ms=1000, fit_cache=fit_cache)

    def kalman_one_new_bar():
        cache = dict(fit_cache)  # every repeat sees the same warm cache
        return analytics.pair_signals(aligned.y, aligned.x, method="kalman", bar_ms=1000,
                                      fit_cache=cache)

    steps = [
        ("hedge_ratio OLS (86,400 bars)", lambda: analytics.hedge_ratio(log_y, log_x)),
        ("pair_signals OLS w=300 (beta, spread, z)", lambda: analytics.pair_signals(
            aligned.y, aligned.x, method="ols", window=300, bar_ms=1000)),
        ("pair_signals Kalman, one new bar", kalman_one_new_bar),
        ("rolling_correlation w=300 co-traded", lambda: analytics.rolling_correlation(
            aligned.y, aligned.x, 300, co_traded=aligned.both_traded)),
        ("price_stats (both legs)", lambda: (analytics.price_stats(bars_y, 1),
                                             analytics.price_stats(bars_x, 1))),
    ]
    print("refresh (24 h of 1 s bars, two legs):")
    total = 0.0
    for label, function in steps:
        elapsed, _ = timed(function)
        total += elapsed
        print(f"  {label:<36} {elapsed:8.2f} ms")
    verdict = "OK" if total <= REFRESH_TARGET_MS else "OVER TARGET"
    print(f"  {'TOTAL':<36} {total:8.2f} ms  (target <= {REFRESH_TARGET_MS:.0f} ms: {verdict})")
    print(f"  {'align both legs (when bars change)':<36} {align_ms:8.2f} ms  "
          f"(total with align {total + align_ms:.2f} ms)\n")

    spread_10k = trailing_spread.dropna().iloc[-10_000:]
    adf_ms, adf = timed(lambda: analytics.adf_test(spread_10k))
    verdict = "OK" if adf_ms <= ADF_TARGET_MS else "OVER TARGET"
    print(f"adf_test, 10,000 bars (AIC over 0..{adf.maxlag} lags)   {adf_ms:8.2f} ms  "
          f"(target <= {ADF_TARGET_MS:.0f} ms: {verdict})")
    eg_ms, _ = timed(lambda: analytics.engle_granger(log_y.iloc[-10_000:], log_x.iloc[-10_000:]),
                     repeats=3)
    print(f"engle_granger, 10,000 bars                  {eg_ms:8.2f} ms")
    huber_n = analytics.HUBER_MAX_POINTS  # longer than a day of 1 s bars: its own sample
    rng = np.random.default_rng(1)
    huber_x = math.log(87_000) + np.cumsum(rng.normal(0, 1e-4, huber_n))
    huber_y = -3.5 + 1.05 * huber_x + rng.standard_t(3, huber_n) * 1e-4  # fat-tailed noise
    huber_ms, huber = timed(lambda: analytics.hedge_ratio(huber_y, huber_x, method="huber"),
                            repeats=3)
    assert huber.nobs == huber_n and not huber.subsampled
    print(f"hedge_ratio huber at bound ({huber_n:,} pts)    {huber_ms:8.2f} ms")
    theil_n = analytics.THEIL_SEN_MAX_POINTS
    theil_ms, _ = timed(lambda: analytics.hedge_ratio(
        log_y.iloc[-theil_n:], log_x.iloc[-theil_n:], method="theil-sen"), repeats=3)
    print(f"hedge_ratio theil-sen at bound ({theil_n:,} pts)  {theil_ms:8.2f} ms")
    kalman_ms, _ = timed(lambda: analytics.kalman_hedge(log_y, log_x), repeats=3)
    print(f"kalman_hedge, whole day (86,400 bars)       {kalman_ms:8.2f} ms")
    anchored_ms, _ = timed(lambda: analytics.pair_signals(
        aligned.y, aligned.x, method="kalman", bar_ms=1000), repeats=3)
    print(f"pair_signals Kalman, whole day, no cache    {anchored_ms:8.2f} ms  "
          "(each bar filtered twice: the anchored restarts)")
    for method in ("huber", "theil-sen"):
        robust_ms, _ = timed(lambda: analytics.pair_signals(
            aligned.y.iloc[-3_600:], aligned.x.iloc[-3_600:], method=method, window=300,
            bar_ms=1000), repeats=3)
        print(f"pair_signals {method:<9} 1 h, w=300, no cache {robust_ms:8.2f} ms")
    minute_ms, minutes = timed(lambda: analytics.minute_stats(bars_y, bars_x), repeats=3)
    print(f"minute_stats, whole day ({len(minutes):,} minutes)     {minute_ms:8.2f} ms")


if __name__ == "__main__":
    main()
