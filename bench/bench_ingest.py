"""End-to-end ingest benchmark: built-in market (own process) -> collector -> SQLite.

    python bench/bench_ingest.py                 # 200,000 trades at full speed + 60 s latency
    python bench/bench_ingest.py --latency-seconds 10 --trades 50000   # a quick look

Prints figures; asserts nothing. What it measures:

* **Throughput**: the market runs in a separate process at full speed (it waits for the
  reader, so nothing is dropped) and sends exactly ``--trades`` aggTrade frames over
  loopback. The collector receives, parses, queues and writes them with 1 s bars, gap
  tracking and dedup, exactly as in production. ticks/s = trades / (time from the first
  frame received to the last row committed). CPU % is this process's CPU time over that
  wall time (200 % = both cores).
* **Latency**: the market paced at ``--rate`` trades/s for ``--latency-seconds``; for each
  committed batch the age of its *oldest* row (commit time - local receive time). That is an
  upper bound for every row of the batch, so the printed p99 is conservative.
* **Size**: database bytes per million ticks after a WAL checkpoint.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import websocket  # noqa: E402

import collector  # noqa: E402
import database  # noqa: E402
from config import Settings  # noqa: E402

DEFAULT_MARKET_RATE = 110.0  # BTC 40/s + ETH 70/s: the simulated market at speed 1


def start_market(*args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "market.py"), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = process.stdout.readline().strip()
    if not url.startswith("ws://"):
        process.kill()
        raise RuntimeError(f"market did not start: {url!r}")
    return process, url


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def receive_only(trades: int, chunked: bool = False) -> tuple[float, float]:
    """The ceiling: a bare websocket-client reader on the same market (same arguments, its
    own process) that receives ``trades`` frames and discards them: (frames/s, CPU ms per
    1,000 frames). ``chunked``: with the collector's chunked socket reads, a stricter
    ceiling (the same receive path as ours, minus everything after it)."""
    market, url = start_market("--speed", "0", "--max-trades", str(trades), "--seed", "1")
    try:
        ws = websocket.create_connection(
            collector.stream_url(url, "futures", "aggTrade", Settings().symbols),
            timeout=30, skip_utf8_validation=True)
        if chunked:
            collector._read_in_chunks(ws)
        try:
            ws.recv_data()  # the first frame starts the clock, as for the collector
            started = time.perf_counter()
            cpu_before = time.process_time()
            recv_data = ws.recv_data
            for _ in range(trades - 1):
                recv_data()
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
        finally:
            ws.close()
    finally:
        market.terminate()
        market.wait(10)
    return (trades - 1) / elapsed, cpu / (trades - 1) * 1e6


def throughput(trades: int, workdir: str) -> float:
    market, url = start_market("--speed", "0", "--max-trades", str(trades), "--seed", "1")
    db_path = os.path.join(workdir, "ingest.db")
    settings = Settings(feed="binance-futures", ws_url=url, db_path=db_path, stream="aggTrade",
                        silence_timeout=30)
    me = psutil.Process()
    server = psutil.Process(market.pid)
    c = collector.Collector(settings).start()
    try:
        if not wait_for(lambda: c.received > 0, 20):
            raise RuntimeError("no data from the market")
        started = time.perf_counter()
        cpu_before, server_cpu_before = me.cpu_times(), server.cpu_times()
        wait_for(lambda: c.stored + c.duplicates >= trades, 300)
        elapsed = time.perf_counter() - started
        cpu_after, server_cpu_after = me.cpu_times(), server.cpu_times()
        final = c.stop()
    finally:
        market.terminate()
        market.wait(10)
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / elapsed
    server_cpu = (server_cpu_after.user + server_cpu_after.system
                  - server_cpu_before.user - server_cpu_before.system) / elapsed
    rate = final['stored'] / elapsed
    print(f"throughput: {final['stored']:,} trades stored in {elapsed:.2f} s = "
          f"{rate:,.0f} ticks/s sustained "
          f"(collector process CPU {cpu * 100:.0f} % = {cpu * elapsed / final['stored'] * 1e6:.1f}"
          f" ms CPU per 1,000 ticks, market process CPU {server_cpu * 100:.0f} %)")
    print(f"  received {final['received']:,}, duplicates {final['duplicates']}, "
          f"dropped {final['dropped']}, rejected {final['rejected']}, "
          f"queue high-water {final['queue_high_water']:,}, batches {final['batches']:,}")
    conn = database.connect(db_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    bars = conn.execute("SELECT count(*), sum(trades) FROM bars_1s").fetchone()
    conn.close()
    size = database.database_size_bytes(db_path)
    print(f"  1 s bars: {bars[0]:,} covering {bars[1]:,} trades")
    print(f"size: {size / 2**20:.1f} MiB for {final['stored']:,} ticks = "
          f"{size / final['stored'] * 1e6 / 2**20:.0f} MiB per million ticks (incl. 1 s bars)")
    return rate


def latency(rate: float, seconds: float, workdir: str) -> None:
    speed = rate / DEFAULT_MARKET_RATE
    market, url = start_market("--speed", f"{speed:.4f}", "--seed", "2")
    settings = Settings(feed="binance-futures", ws_url=url, stream="aggTrade",
                        db_path=os.path.join(workdir, "latency.db"))
    c = collector.Collector(settings).start()
    try:
        wait_for(lambda: c.stored > 0, 20)
        c.commit_latencies_ms.clear()
        received_before = c.received
        time.sleep(seconds)
        measured_rate = (c.received - received_before) / seconds
        samples = np.array(list(c.commit_latencies_ms), dtype=float)
        final = c.stop()
    finally:
        market.terminate()
        market.wait(10)
    p50, p99 = np.percentile(samples, [50, 99])
    print(f"latency at {measured_rate:,.0f} trades/s for {seconds:.0f} s "
          f"({len(samples)} batches, flush interval {settings.flush_interval} s): receive-to-commit "
          f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {samples.max():.0f} ms "
          f"(oldest row of each batch); dropped {final['dropped']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores; other "
          "jobs share them: compare figures of the same run only)")
    with tempfile.TemporaryDirectory() as workdir:
        # The ceiling is measured before and after ours, and averaged, so a load change
        # during the run shows as a spread between the two instead of skewing the ratio.
        before, cpu_before = receive_only(args.trades)
        rate = throughput(args.trades, workdir)
        after, cpu_after = receive_only(args.trades)
        ceiling = (before + after) / 2
        print(f"receive-only ceiling (websocket-client, frames discarded, same market): "
              f"{before:,.0f} before / {after:,.0f} after = {ceiling:,.0f} frames/s, "
              f"{(cpu_before + cpu_after) / 2:.1f} ms CPU per 1,000 frames")
        print(f"ingest / ceiling = {rate / ceiling:.2f}   (load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
        strict, strict_cpu = receive_only(args.trades, chunked=True)
        print(f"stricter ceiling, receive-only with the collector's chunked reads: "
              f"{strict:,.0f} frames/s, {strict_cpu:.1f} ms CPU per 1,000 frames; ingest / it "
              f"= {rate / strict:.2f}")
        latency(args.rate, args.latency_seconds, workdir)


if __name__ == "__main__":
    main()
