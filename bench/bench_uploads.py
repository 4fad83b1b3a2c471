"""Upload parser benchmark: time and peak memory of large and hostile uploads.

    python bench/bench_uploads.py                 # every case, 1,000,000 rows
    python bench/bench_uploads.py --rows 200000   # a quicker look
    python bench/bench_uploads.py --case ohlc     # one case: ohlc, ticks, ndjson, invalid

Prints figures; asserts nothing. Each case runs in a fresh Python process so that one
case's freed memory cannot hide another's peak. The file is generated into a temporary
directory, read into memory as bytes (as Streamlit hands an upload to the page), and then
parsed once. Reported:

* **time**: wall time of ``parse_ohlc_csv`` / ``parse_tick_file`` on the bytes.
* **peak**: the process's peak RSS during the parse minus its RSS just before the parse
  (the file's bytes are already in memory and not counted), and that figure as a multiple
  of the file size. RSS is used instead of tracemalloc because pandas/pyarrow allocate
  outside Python's allocator, where tracemalloc cannot see.

Cases: ``ohlc`` = a valid 1-minute OHLC CSV of two symbols; ``ticks`` = a valid tick CSV
(epoch ms); ``ndjson`` = valid NDJSON ticks; ``invalid`` = a 40 MB file in which no row is
valid (every time unparseable, every price text).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CASES = ("ohlc", "ticks", "ndjson", "invalid")
INVALID_BYTES = 40 * 1024 * 1024
T0_MS = 1_765_839_780_000  # 2025-12-15 23:03 UTC


def write_case(case: str, rows: int, path: str) -> None:
    """Write the benchmark file of ``case`` with ``rows`` data rows (invalid: 40 MB)."""
    import numpy as np

    rng = np.random.default_rng(7)
    with open(path, "w", encoding="utf-8") as out:
        if case == "ohlc":
            out.write("time,symbol,open,high,low,close,volume,vwap\n")
            half = rows // 2
            price = {"btcusdt": 88_000 * np.exp(np.cumsum(rng.normal(0, 1e-4, half))),
                     "ethusdt": 3_000 * np.exp(np.cumsum(rng.normal(0, 1e-4, half)))}
            for i in range(half):
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((T0_MS // 1000) + 60 * i))
                for symbol, series in price.items():
                    p = series[i]
                    out.write(f"{stamp},{symbol},{p:.2f},{p * 1.0005:.2f},{p * 0.9995:.2f},"
                              f"{p:.2f},{rng.uniform(0, 20):.4f},{p:.2f}\n")
        elif case in ("ticks", "ndjson"):
            if case == "ticks":
                out.write("timestamp,symbol,price,qty\n")
            ts = T0_MS + np.cumsum(rng.integers(0, 20, rows))
            for i in range(rows):
                symbol, price = ("BTCUSDT", 88_000.1) if i % 3 == 0 else ("ETHUSDT", 3_000.25)
                qty = round(float(rng.uniform(0.001, 2)), 4)
                if case == "ticks":
                    out.write(f"{ts[i]},{symbol},{price},{qty}\n")
                else:
                    out.write(f'{{"symbol":"{symbol}","ts":{ts[i]},"price":{price},'
                              f'"size":{qty}}}\n')
        elif case == "invalid":
            out.write("time,symbol,open,high,low,close,volume\n")
            line = "not a time,btcusdt,abc,def,ghi,jkl,mno\n"
            out.write(line * (INVALID_BYTES // len(line)))
        else:
            raise ValueError(f"unknown case {case!r}")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_child(case: str, path: str) -> None:
    """Parse the file once in this process and print one JSON line of figures."""
    import uploads

    data = open(path, "rb").read()
    parse = uploads.parse_ohlc_csv if case in ("ohlc", "invalid") else uploads.parse_tick_file
    parse(b"time,symbol,open,high,low,close\n2025-12-15 23:03:00,btcusdt,1,1,1,1\n")  # warm
    before = rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    result = parse(data, filename=os.path.basename(path))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "case": case, "bytes": len(data), "rows": result.n_rows, "accepted": result.n_accepted,
        "rejected": result.n_rejected, "error": result.error, "seconds": seconds,
        "peak_extra": max(peak, peak_before) - before,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--case", choices=CASES, action="append")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return
    print(f"{'case':8} {'file MB':>8} {'rows':>10} {'accepted':>10} {'time s':>7} "
          f"{'peak MB':>8} {'x file':>7}  error")
    with tempfile.TemporaryDirectory() as folder:
        for case in args.case or CASES:
            path = os.path.join(folder, f"{case}.{'ndjson' if case == 'ndjson' else 'csv'}")
            write_case(case, args.rows, path)
            output = subprocess.run([sys.executable, __file__, "--child", case, path],
                                    capture_output=True, text=True, check=True).stdout
            figures = json.loads(output.strip().splitlines()[-1])
            size_mb = figures["bytes"] / 1e6
            peak_mb = figures["peak_extra"] / 1e6
            print(f"{case:8} {size_mb:8.1f} {figures['rows']:>10,} {figures['accepted']:>10,} "
                  f"{figures['seconds']:7.2f} {peak_mb:8.0f} {peak_mb / size_mb:7.1f}  "
                  f"{figures['error'] or ''}")
            os.remove(path)


if __name__ == "__main__":
    main()
