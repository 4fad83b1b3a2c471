"""Evidence for the pair signal at the page's defaults (run: python bench/check_signals.py).

For each long real recording at 1 s bars and for the built-in market (one simulated hour,
three seeds), with the page's defaults (1 s bars, log prices, window
``dashboard_data.default_window("1s")``, ``pair_signals`` with ``bar_ms``), prints:

- Kalman: standard deviation of z after the warm-up, share of |z| > 2, the median Kalman β
  after the warm-up and its last value against the full-sample OLS β;
- per method: the largest finite |β| (the guard caps it at ``analytics.BETA_CAP``), the
  share of bars without a β and the main reason;
- per method: whether the history of n bars equals the first n rows of n + k bars
  (exactly, for several n).

The recordings are read from ``--data`` (default: ``../shared/data`` next to the
repository); a missing file is reported and skipped. This script is a developer's check,
never run by the page or the tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import analytics  # noqa: E402
import dashboard_data as dd  # noqa: E402
import market  # noqa: E402

TICK_FILES = ("futures_2025-12-15T0843Z_btc_eth.ndjson",
              "futures_2025-12-16T0941Z_btc_eth.csv",
              "futures_2025-12-16T1341Z_burst_btc_eth.ndjson")
SPOT_BARS = "ohlc/spot_bars_1s_1m_5m_IST_naive.csv"
MARKET_SECONDS = 3_600
MARKET_SEEDS = (7, 11, 23)
START_MS = 1_765_843_200_000


def bars_from_trades(trades: pd.DataFrame) -> dict[str, pd.DataFrame]:
    trades = trades[trades["status"] == "MARKET"] if "status" in trades else trades
    return {str(symbol): analytics.resample(group[["ts", "trade_id", "price", "qty"]], "1s")
            for symbol, group in trades.groupby("symbol", observed=True)}


def tick_recording(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    legs = bars_from_trades(market.read_trade_file(path))
    return legs["ETHUSDT"], legs["BTCUSDT"]


def spot_bar_recording(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.read_csv(path)
    frame = frame[frame["timeframe"] == "1s"]
    ts = (pd.to_datetime(frame["ts"]).dt.tz_localize("Asia/Kolkata").dt.tz_convert("UTC")
          .dt.as_unit("ms").astype("int64"))
    legs = {}
    for symbol, group in frame.assign(ms=ts).groupby("symbol"):
        group = group.sort_values("ms").drop_duplicates("ms", keep="last")
        legs[symbol] = pd.DataFrame({"close": group["price"].to_numpy(),
                                     "volume": group["volume"].to_numpy()},
                                    index=pd.Index(group["ms"].to_numpy(), name="ts"))
    return legs["ethusdt"], legs["btcusdt"]


def builtin_market(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    simulated = market.SimulatedMarket(seed=seed, start_ms=START_MS)
    legs = bars_from_trades(simulated.generate(MARKET_SECONDS))
    return legs["ETHUSDT"], legs["BTCUSDT"]


def identical_prefixes(y: pd.Series, x: pd.Series, method: str, window: int) -> str:
    full = analytics.pair_signals(y, x, method=method, window=window, bar_ms=1000).frame
    n_total = len(y)
    for n in sorted({n_total // 3, n_total // 2 + 7, n_total - 1}):
        head = analytics.pair_signals(y.iloc[:n], x.iloc[:n], method=method, window=window,
                                      bar_ms=1000).frame
        if not head.equals(full.iloc[:n]):
            return f"DIFFERS at n={n}"
    return "identical"


def report(name: str, bars_y: pd.DataFrame, bars_x: pd.DataFrame, window: int) -> None:
    aligned = analytics.align(bars_y, bars_x, timeframe="1s")
    y, x = aligned.y, aligned.x
    log_y, log_x = np.log(y), np.log(x)
    ols = analytics.hedge_ratio(log_y, log_x).beta
    kalman = analytics.pair_signals(y, x, method="kalman", window=window, bar_ms=1000).frame
    z = kalman["z"].dropna()
    beta = kalman["beta"].dropna()
    print(f"\n{name}: {len(aligned.frame):,} bars over {aligned.frame.index[-1] // 1000 - aligned.frame.index[0] // 1000 + 1:,} s, "
          f"co-traded {aligned.both_traded.mean():.0%}")
    print(f"  Kalman: z std {z.std():.3f} over {len(z):,} bars after the warm-up "
          f"(|z| > 2 on {np.mean(np.abs(z) > 2):.1%}); beta median {beta.median():.3f}, "
          f"last {beta.iloc[-1]:.3f}; full-sample OLS beta {ols:.3f} "
          f"(median off by {abs(beta.median() / ols - 1):.1%}, last by "
          f"{abs(beta.iloc[-1] / ols - 1):.1%})")
    for method in analytics.PAIR_METHODS:
        started = time.perf_counter()
        frame = analytics.pair_signals(y, x, method=method, window=window, bar_ms=1000).frame
        elapsed = (time.perf_counter() - started) * 1000
        notes = frame["beta_note"].astype(str)
        missing = notes[notes != ""]
        reason = missing.value_counts().index[0] if len(missing) else "-"
        print(f"  {method:<9} max |beta| {frame['beta'].abs().max():6.3f}  no beta on "
              f"{len(missing) / len(frame):5.1%} (mostly: {reason})  n vs n+k: "
              f"{identical_prefixes(y, x, method, window)}  [{elapsed:.0f} ms]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    data = Path(args.data)
    window = dd.default_window("1s")
    print(f"page defaults: 1 s bars, log prices, window {window} bars of clock time, "
          f"Kalman warm-up {analytics.KALMAN_DEFAULT_WARMUP} bars, beta cap "
          f"{analytics.BETA_CAP:g}")
    for file_name in TICK_FILES:
        path = data / "ticks" / file_name
        if not path.exists():
            print(f"\n{file_name}: not found in {data / 'ticks'}, skipped")
            continue
        report(file_name, *tick_recording(path), window)
    path = data / SPOT_BARS
    if path.exists():
        report(f"{SPOT_BARS} (1 s rows)", *spot_bar_recording(path), window)
    else:
        print(f"\n{SPOT_BARS}: not found, skipped")
    for seed in MARKET_SEEDS:
        report(f"built-in market, seed {seed}, {MARKET_SECONDS} s (true beta 1.2)",
               *builtin_market(seed), window)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
