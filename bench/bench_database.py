"""Benchmark of database.py: tick layouts, write path, bar reads, size on disk.

Prints figures; asserts nothing about time. Run from the repository root::

    python bench/bench_database.py              # ~2M ticks, 24 h, 2 symbols (~2-3 min)
    python bench/bench_database.py --rows 300000  # quick look

What it measures
- Write path per tick layout: ``TickWriter.write`` with 1000-row batches (INSERT OR IGNORE,
  1 s bar upkeep, gap tracking, one transaction each) over a synthetic 24 h of two symbols
  whose ticks cover every second; plus the bare ``executemany`` into ``ticks`` (same
  batches, no bars) for the cost of the upkeep. Layouts:
    (a) PRIMARY KEY (symbol, ts, trade_id) WITHOUT ROWID
    (b) (a) + UNIQUE INDEX (symbol, trade_id)                   <- database.py
    (c) PRIMARY KEY (symbol, trade_id) WITHOUT ROWID + INDEX (symbol, ts)
- The same at burst density (2 x 20k ticks/s, the collector's 40k/s target).
- Read of the last hour of ticks of one symbol (``read_ticks``), best of 7 warm runs.
- Size on disk per million ticks (after a WAL checkpoint).
- On layout (b): ``read_bars`` timings, ``list_symbols``, ``latest_bar_ts``, a ``prune``
  step, and the write path when every batch carries duplicates (savepoint + redo).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import database  # noqa: E402

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START_MS = 1_765_843_200_000  # 2025-12-16 00:00:00 UTC
DAY_MS = 86_400_000
BATCH = 1_000

# The ticks table of each layout; database.connect creates the rest of the schema.
LAYOUTS = {
    "(a) PK(symbol,ts,trade_id)": (
        """CREATE TABLE ticks (symbol TEXT NOT NULL, trade_id INTEGER NOT NULL,
            ts INTEGER NOT NULL, price REAL NOT NULL, qty REAL NOT NULL,
            is_buyer_maker INTEGER NOT NULL, received_ms INTEGER NOT NULL,
            PRIMARY KEY (symbol, ts, trade_id)) WITHOUT ROWID""",
    ),
    "(b) (a)+UNIQUE(symbol,trade_id)": None,  # exactly database.py's schema
    "(c) PK(symbol,trade_id)+IDX(symbol,ts)": (
        """CREATE TABLE ticks (symbol TEXT NOT NULL, trade_id INTEGER NOT NULL,
            ts INTEGER NOT NULL, price REAL NOT NULL, qty REAL NOT NULL,
            is_buyer_maker INTEGER NOT NULL, received_ms INTEGER NOT NULL,
            PRIMARY KEY (symbol, trade_id)) WITHOUT ROWID""",
        "CREATE INDEX ticks_symbol_ts ON ticks (symbol, ts)",
    ),
}


def make_trades(rows: int, seed: int = 7, span_ms: int = DAY_MS) -> list[tuple]:
    """Two symbols over ``span_ms``, time-ordered, consecutive ids per symbol, random walk."""
    rng = np.random.default_rng(seed)
    per_symbol = rows // len(SYMBOLS)
    trades: list[tuple] = []
    for k, symbol in enumerate(SYMBOLS):
        ts = np.sort(rng.integers(START_MS, START_MS + span_ms, per_symbol))
        price = (60_000.0 if k == 0 else 3_000.0) * np.exp(
            np.cumsum(rng.normal(0, 2e-5, per_symbol)))
        price = np.round(price, 2)
        qty = np.round(rng.exponential(0.05, per_symbol), 4) + 0.0001
        maker = rng.integers(0, 2, per_symbol)
        ids = np.arange(1_000_000, 1_000_000 + per_symbol)
        received = ts + rng.integers(5, 50, per_symbol)
        trades.extend(zip([symbol] * per_symbol, ids.tolist(), ts.tolist(), price.tolist(),
                          qty.tolist(), maker.tolist(), received.tolist()))
    trades.sort(key=lambda t: (t[2], t[0]))
    return trades


def fresh_db(directory: str, name: str, layout_sql) -> tuple[str, object]:
    path = os.path.join(directory, name + ".db")
    conn = database.connect(path)
    if layout_sql is not None:
        conn.execute("DROP INDEX ticks_symbol_trade_id")
        conn.execute("DROP TABLE ticks")
        for statement in layout_sql:
            conn.execute(statement)
    return path, conn


def time_write_path(conn, trades: list[tuple]) -> tuple[float, float]:
    """(rows/s overall, rows/s over the last 10 % of the rows) through TickWriter."""
    writer = database.TickWriter(conn)
    tail_from = int(len(trades) * 0.9) // BATCH * BATCH
    t0 = time.perf_counter()
    t_tail = t0
    for i in range(0, len(trades), BATCH):
        if i == tail_from:
            t_tail = time.perf_counter()
        writer.write(trades[i:i + BATCH])
    t1 = time.perf_counter()
    return len(trades) / (t1 - t0), (len(trades) - tail_from) / (t1 - t_tail)


def time_ticks_only(conn, trades: list[tuple]) -> float:
    """rows/s of bare executemany INSERT OR IGNORE transactions (no bars, no gaps)."""
    sql = ("INSERT OR IGNORE INTO ticks (symbol, trade_id, ts, price, qty, is_buyer_maker, "
           "received_ms) VALUES (?, ?, ?, ?, ?, ?, ?)")
    t0 = time.perf_counter()
    for i in range(0, len(trades), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, trades[i:i + BATCH])
        conn.execute("COMMIT")
    return len(trades) / (time.perf_counter() - t0)


def best_ms(function, repeat: int = 7) -> float:
    """Best of ``repeat`` warm runs in ms: other processes share the 2 cores, and the
    minimum is the figure least disturbed by them (as timeit does)."""
    function()  # warm the page cache and the statement cache
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        function()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def cold_ms(path: str, function, repeat: int = 7) -> tuple[float, float]:
    """(best, median) ms of ``function(conn)`` on a new read-only connection each time: the
    first read of a page that just opened (SQLite's page cache empty; the OS file cache is
    warm, as on a machine that wrote the file)."""
    times = []
    for _ in range(repeat):
        conn = database.connect(path, readonly=True)
        t0 = time.perf_counter()
        function(conn)
        times.append((time.perf_counter() - t0) * 1000)
        conn.close()
    return min(times), float(np.median(times))


def aggregate_seconds_read(conn, symbol: str):
    """The 1-minute read before bars_1m: 86,400 1 s bars a day aggregated in SQL."""
    return database._bars_frame(conn.execute(database._READ_BUCKETS, {
        "symbol": symbol, "start": database._MIN_TS, "end": database._MAX_TS,
        "size": 60_000}).fetchall())


def checkpointed_size(conn, path: str) -> int:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return database.database_size_bytes(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="ticks in total")
    parser.add_argument("--dir", default=None, help="where to put the files (default: tmp)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    trades = make_trades(args.rows)
    end_ms = max(t[2] for t in trades[-1000:]) + 1
    print(f"{len(trades):,} synthetic ticks, {len(SYMBOLS)} symbols, 24 h "
          f"(made in {time.perf_counter() - t0:.1f} s); batches of {BATCH}; "
          f"SQLite {database.sqlite3.sqlite_version}")
    tmp = tempfile.TemporaryDirectory(dir=args.dir)
    directory = tmp.name

    print("\n== tick layouts: write path (TickWriter: ticks + 1 s bars + gaps, one "
          "transaction per batch) ==")
    burst = make_trades(400_000, seed=3, span_ms=10_000)
    print(f"{'layout':<40}{'write rows/s':>14}{'last 10 %':>12}{'burst':>10}{'ticks only':>12}"
          f"{'read 1 h':>11}{'MB/1M ticks':>13}")
    chosen = None
    for name, layout_sql in LAYOUTS.items():
        path, conn = fresh_db(directory, f"layout{len(name)}", layout_sql)
        rate, tail_rate = time_write_path(conn, trades)
        size = checkpointed_size(conn, path)
        reader = database.connect(path, readonly=True)
        hour = database.read_ticks(reader, SYMBOLS[0], end_ms - 3_600_000)
        read_ms = best_ms(lambda: database.read_ticks(reader, SYMBOLS[0],
                                                        end_ms - 3_600_000))
        reader.close()
        only_path, only_conn = fresh_db(directory, f"only{len(name)}", layout_sql)
        only_rate = time_ticks_only(only_conn, trades)
        only_conn.close()
        burst_path, burst_conn = fresh_db(directory, f"burst{len(name)}", layout_sql)
        burst_rate, _ = time_write_path(burst_conn, burst)
        burst_conn.close()
        print(f"{name:<40}{rate:>14,.0f}{tail_rate:>12,.0f}{burst_rate:>10,.0f}{only_rate:>12,.0f}"
              f"{read_ms:>9.1f}ms{size / 1e6 / (len(trades) / 1e6):>13.1f}")
        if layout_sql is None:
            chosen = (path, conn)
        else:
            conn.close()
    print("write rows/s: whole run (24 h at ~12 trades/s/symbol: one bar upsert per ~12 "
          "ticks); last 10 %: the final 10 % of it (table large); burst: 400k ticks at "
          "40k/s (2 x 20k/s, one bar upsert per ~1000 ticks) into a fresh file; ticks "
          "only: bare executemany into ticks, no bars or gaps")
    print(f"read 1 h = read_ticks of the last hour of {SYMBOLS[0]}: {len(hour):,} rows, "
          "best of 7, warm cache")

    path, conn = chosen
    reader = database.connect(path, readonly=True)
    print("\n== reads on layout (b), from bars_1s (never raw ticks) ==")
    bars_1s = database.read_bars(reader, SYMBOLS[0])
    print(f"1 s bars stored per symbol: {len(bars_1s):,}")
    cases = [
        ("read_bars 1s, last hour, 1 symbol",
         lambda: database.read_bars(reader, SYMBOLS[0], end_ms - 3_600_000, None, "1s")),
        ("read_bars 1s, 24 h, 1 symbol",
         lambda: database.read_bars(reader, SYMBOLS[0], None, None, "1s")),
        ("read_bars 5s, 24 h, 1 symbol",
         lambda: database.read_bars(reader, SYMBOLS[0], None, None, "5s")),
        ("read_bars 1min, 24 h, 2 symbols (total)",
         lambda: [database.read_bars(reader, s, None, None, "1min") for s in SYMBOLS]),
        ("read_bars 1h, 24 h, 1 symbol",
         lambda: database.read_bars(reader, SYMBOLS[0], None, None, "1h")),
        ("read_bars_since 1s, last 2 s",
         lambda: database.read_bars_since(reader, SYMBOLS[0], end_ms - 2_000, "1s")),
        ("read_ticks last 5 min, 1 symbol",
         lambda: database.read_ticks(reader, SYMBOLS[0], end_ms - 300_000)),
        ("list_symbols", lambda: database.list_symbols(reader)),
        ("latest_bar_ts", lambda: database.latest_bar_ts(reader, SYMBOLS[0])),
    ]
    for label, function in cases:
        print(f"{label:<45}{best_ms(function):>9.2f} ms")

    print("\n== cold 24 h 1-minute read of both symbols (new connection each time, 7 runs) ==")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    minutes = sum(len(database.read_bars(reader, s, None, None, "1min")) for s in SYMBOLS)
    new_best, new_median = cold_ms(path, lambda c: [database.read_bars(c, s, None, None, "1min")
                                                    for s in SYMBOLS])
    old_best, old_median = cold_ms(path, lambda c: [aggregate_seconds_read(c, s)
                                                    for s in SYMBOLS])
    print(f"{'read_bars 1min from bars_1m (now)':<45}{new_best:>9.2f} ms best, "
          f"{new_median:.2f} ms median ({minutes:,} bars)")
    print(f"{'aggregating 1 s bars (before bars_1m)':<45}{old_best:>9.2f} ms best, "
          f"{old_median:.2f} ms median  -> {old_median / new_median:.0f}x")

    print("\n== write path with duplicates (layout b): savepoint, redo with only the new rows ==")
    # Re-send the previous batch's last 100 trades at the front of each batch, as after a
    # reconnect with overlap: every batch then takes the savepoint-and-redo path.
    shift = end_ms - START_MS + 1_000
    id_shift = 10_000_000
    for label, extra in (("24 h density", make_trades(200_000, seed=11)),
                         ("burst density", make_trades(200_000, seed=12, span_ms=5_000))):
        extra = [(s, i + id_shift, ts + shift, p, q, m, r + shift)
                 for s, i, ts, p, q, m, r in extra]
        shift += DAY_MS
        id_shift += 1_000_000
        writer = database.TickWriter(conn)
        t0 = time.perf_counter()
        inserted = 0
        for i in range(0, len(extra), BATCH):
            inserted += writer.write(extra[max(0, i - 100):i] + extra[i:i + BATCH]).inserted
        rate = inserted / (time.perf_counter() - t0)
        print(f"{label:<15} every batch 1000 new + 100 duplicates: {rate:>10,.0f} new rows/s")

    print("\n== prune (layout b) ==")
    cutoff = START_MS + 3_600_000
    t0 = time.perf_counter()
    deleted = database.prune(conn, cutoff, max_rows=5_000)
    step_ms = (time.perf_counter() - t0) * 1000
    print(f"prune step of {deleted:,} ticks (+ their bars): {step_ms:.1f} ms holding the "
          "write lock")
    reader.close()
    conn.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
