"""Benchmark: ingest into PostgreSQL over loopback next to SQLite, in the same run.

Prints figures; asserts nothing about time. Run from the repository root::

    python bench/bench_postgres.py                 # 200k ticks per case (~1-2 min)
    python bench/bench_postgres.py --rows 50000    # quick look

Needs Debian's PostgreSQL binaries (``/usr/lib/postgresql/*/bin``; .ci/run installs them):
it starts a throwaway cluster on 127.0.0.1 with ``tests/pg_cluster.py`` (fsync off, like the
tests) and removes it at the end.

Cases (synthetic trades of 24 h, 1000-row ``TickWriter.write`` batches - 1 s and 1 min bar
upkeep, gap tracking, one transaction each - as the collector's writer does):

- ``sqlite 1 writer``: one process, one file (the default backend).
- ``postgres 1 writer``: the same ticks into a PostgreSQL database.
- ``postgres 2 writers, disjoint symbols``: two processes side by side, each its own symbols
  (a desk's collectors split by symbol group); figure = all ticks / wall time.
- ``postgres standby pair``: two processes writing the SAME ticks (hot standbys); figure =
  distinct ticks stored / wall time (each trade is sent twice, stored once).
- ``read 24 h at 1 min``: ``read_bars(..., "1min")`` of one symbol over the day, best of 7.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import numpy as np  # noqa: E402

import database  # noqa: E402
import database_postgres  # noqa: E402
import pg_cluster  # noqa: E402  (tests/pg_cluster.py)

START_MS = 1_765_843_200_000  # 2025-12-16 00:00:00 UTC
DAY_MS = 86_400_000
BATCH = 1_000


def make_trades(rows: int, symbols: tuple[str, ...], seed: int = 1) -> list[tuple]:
    """``rows`` trades spread over 24 h, split over ``symbols``, ids consecutive per symbol."""
    rng = np.random.default_rng(seed)
    trades = []
    for k, symbol in enumerate(symbols):
        count = rows // len(symbols)
        ts = np.sort(rng.integers(START_MS, START_MS + DAY_MS, count))
        price = 100.0 * (k + 1) * np.exp(np.cumsum(rng.normal(0, 1e-4, count)))
        qty = rng.exponential(0.5, count) + 0.001
        maker = rng.integers(0, 2, count)
        trades.extend(zip([symbol] * count, range(1, count + 1), ts.tolist(), price.tolist(),
                          qty.tolist(), maker.tolist(), (ts + 5).tolist()))
    trades.sort(key=lambda t: t[2])
    return trades


def write_all(target: str, trades: list[tuple]) -> int:
    conn = database.connect(target)
    try:
        writer = database.TickWriter(conn)
        return sum(writer.write(trades[i:i + BATCH]).inserted
                   for i in range(0, len(trades), BATCH))
    finally:
        conn.close()


def _child(target, trades, start_event, result_queue):
    start_event.wait()
    result_queue.put(write_all(target, trades))


def parallel(target: str, streams: list[list[tuple]]) -> tuple[float, int]:
    """Write each stream from its own process at the same moment; (seconds, inserted)."""
    context = multiprocessing.get_context("spawn")  # fresh pools: none inherited
    start, results = context.Event(), context.Queue()
    database.connect(target).close()  # the schema exists before both start
    children = [context.Process(target=_child, args=(target, s, start, results))
                for s in streams]
    for child in children:
        child.start()
    time.sleep(3.0)  # the children import and connect before the clock starts
    began = time.perf_counter()
    start.set()
    inserted = sum(results.get(timeout=3_600) for _ in children)
    for child in children:
        child.join()
    return time.perf_counter() - began, inserted


def timed(label: str, seconds: float, ticks: int) -> None:
    print(f"{label:<42} {ticks:>9,} ticks {seconds:7.2f} s {ticks / seconds:>10,.0f} ticks/s",
          flush=True)


def read_24h(target: str, symbol: str) -> float:
    conn = database.connect(target)
    try:
        best = float("inf")
        for _ in range(7):
            began = time.perf_counter()
            bars = database.read_bars(conn, symbol, START_MS, START_MS + DAY_MS, "1min")
            best = min(best, time.perf_counter() - began)
        assert len(bars) > 1_000, len(bars)
        return best
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="ticks per case")
    rows = parser.parse_args().rows
    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} cores", flush=True)
    cluster = pg_cluster.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            one = make_trades(rows, ("BTCUSDT", "ETHUSDT"))
            began = time.perf_counter()
            inserted = write_all(os.path.join(tmp, "bench.db"), one)
            timed("sqlite 1 writer", time.perf_counter() - began, inserted)

            admin = database.connect(cluster.url, readonly=True)  # no schema in "postgres"
            for name in ("one", "split", "standby"):
                admin.execute(f"CREATE DATABASE bench_{name}")
            admin.close()

            began = time.perf_counter()
            inserted = write_all(cluster.url_of("bench_one"), one)
            timed("postgres 1 writer", time.perf_counter() - began, inserted)

            group_a = make_trades(rows // 2, ("BTCUSDT", "ETHUSDT"), seed=2)
            group_b = make_trades(rows // 2, ("SOLUSDT", "XRPUSDT"), seed=3)
            seconds, inserted = parallel(cluster.url_of("bench_split"), [group_a, group_b])
            timed("postgres 2 writers, disjoint symbols", seconds, inserted)

            seconds, inserted = parallel(cluster.url_of("bench_standby"), [one, one])
            timed("postgres standby pair (same ticks twice)", seconds, inserted)

            for label, target in (("sqlite", os.path.join(tmp, "bench.db")),
                                  ("postgres", cluster.url_of("bench_one"))):
                print(f"read 24 h at 1 min, {label:<8} (best of 7)       "
                      f"{read_24h(target, 'BTCUSDT') * 1000:8.1f} ms", flush=True)
    finally:
        database_postgres.close_pools()
        cluster.stop()
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
