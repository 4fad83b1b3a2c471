"""Benchmark of analytics.screen_pairs: screen time by universe size, "all" vs "clusters".

    python bench/bench_screen.py                 # 10, 30 and 60 symbols, 1,440 bars
    python bench/bench_screen.py --symbols 10 30 --bars 720 --repeat 3

Each universe is the synthetic one of tests/test_screen_pairs.py (``make_universe``): one
day of 1-minute log prices between 0.5 and 11.4 moving ~1e-3 per bar, a planted
cointegrated group of three for every ten symbols and noise walks for the rest, all sharing
a market walk. Printed per size and mode: pairs tested, wall time (best of ``--repeat``),
time per pair, planted pairs found and unrelated pairs passed. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import analytics  # noqa: E402
from test_screen_pairs import make_universe, pair_set  # noqa: E402


def universe(n_symbols: int, bars: int, seed: int = 0):
    groups = max(1, n_symbols // 10)
    return make_universe(seed, n_groups=groups, group_size=3, n_noise=n_symbols - 3 * groups,
                         bars=bars)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, nargs="+", default=[10, 30, 60])
    parser.add_argument("--bars", type=int, default=1_440)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    # Pay scikit-learn's and statsmodels' import once, outside the timings.
    warm, _ = universe(10, 300)
    analytics.screen_pairs(warm, candidates="clusters", min_bars=100)
    print(f"{'symbols':>7} {'mode':>8} {'pairs':>6} {'seconds':>8} {'ms/pair':>8} "
          f"{'planted found':>14} {'others passed':>14}")
    for n in args.symbols:
        prices, planted = universe(n, args.bars)
        for mode in ("all", "clusters"):
            best, result = float("inf"), None
            for _ in range(args.repeat):
                started = time.perf_counter()
                result = analytics.screen_pairs(prices, candidates=mode)
                best = min(best, time.perf_counter() - started)
            passed = pair_set(result, result["passed"])
            per_pair = 1000 * best / max(len(result), 1)
            print(f"{n:>7} {mode:>8} {len(result):>6} {best:>8.2f} {per_pair:>8.1f} "
                  f"{len(planted & passed):>6} of {len(planted):<5} {len(passed - planted):>14}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
