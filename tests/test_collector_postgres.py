"""collector.py writing PostgreSQL (``--db postgresql://...``) on the session's throwaway
server: exact ticks and bars from the built-in market's replay, restarts and re-sent trades
stored once, and a standby pair (two collectors on the same symbols, one killed mid-stream)
losing nothing. test_collector.py's scripted-server tests that count only what is stored run
here again on PostgreSQL (fixture ``collector_tests_write_postgresql``).

References: the recording the replay serves (tests/data), the frames a scripted loopback
server sends, and 1 s bars recomputed with pandas from the ticks PostgreSQL holds
(test_database.reference_bars_1s).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading

import pandas as pd

import pytest

import database
import database_postgres
import test_collector
from helpers import wait_until
from loopback import ScriptedServer, hold_open, trade_frame
from test_collector import (  # noqa: F401  (imported tests run here on PostgreSQL)
    test_exact_count_then_stop_stores_everything_and_leaves_no_thread,
    test_happy_path_both_framings_and_stream_kinds,
    test_malformed_frames_are_counted_and_skipped_without_reconnect,
    test_replayed_trades_after_reconnect_are_stored_once,
)
from test_database import assert_bars_equal, reference_bars_1s, stored_bars_1s, stored_ticks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDING = os.path.join(ROOT, "tests", "data",
                         "market_futures_2025-12-15T0843Z_head2000.ndjson")
T0 = 1_765_800_000_000  # 2025-12-15 12:00:00 UTC


def count_ticks(url, table: str = "ticks") -> int:
    """test_collector's ``count_rows`` for a PostgreSQL URL."""
    conn = database.connect(url, readonly=True)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # a fixed name
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def collector_tests_write_postgresql(request, monkeypatch):
    """test_collector's scripted-server tests imported above run unchanged with their
    database on PostgreSQL: its ``settings_for`` gets this test's database URL and its
    ``count_rows`` counts there."""
    if request.node.function.__module__ != "test_collector":
        return
    url = request.getfixturevalue("postgres_db")
    settings_for = test_collector.settings_for
    monkeypatch.setattr(test_collector, "settings_for", lambda server_url, tmp_path, **changes:
                        settings_for(server_url, tmp_path, **{"db_path": url, **changes}))
    monkeypatch.setattr(test_collector, "count_rows", count_ticks)


def run_cli(args, cwd, timeout=90) -> dict:
    result = subprocess.run([sys.executable, os.path.join(ROOT, "collector.py"), *args],
                            capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def read_back(url):
    conn = database.connect(url)
    try:
        return stored_ticks(conn), stored_bars_1s(conn), database.read_gaps(conn)
    finally:
        conn.close()


def test_replay_into_postgresql_stores_the_recording_exactly_and_once(postgres_db, tmp_path):
    rows = pd.read_json(RECORDING, lines=True, precise_float=True)
    market = rows[rows.price > 0]  # Binance's NA placeholders are filtered, as on SQLite
    args = ["--feed", "replay", "--stream", "trade", "--replay-file", RECORDING,
            "--replay-speed", "0", "--db", postgres_db, "--duration", "60"]
    summary = run_cli(args, tmp_path)
    assert summary["stored"] == len(market) and summary["duplicates"] == 0
    assert summary["db_path"] == postgres_db
    ticks, bars, _ = read_back(postgres_db)
    # The stored trades are the recording's market trades: same symbols, prices, sizes.
    stored = sorted(zip(ticks.symbol, ticks.price, ticks.qty))
    assert stored == sorted(zip(market.symbol, market.price, market["size"]))
    assert_bars_equal(bars, reference_bars_1s(ticks))
    # No SQLite writer lock, no journal in a directory named after the URL.
    assert not [p for p in os.listdir(tmp_path) if p.startswith("postgres")]
    assert not list(tmp_path.rglob("*.writer.lock"))


def test_demo_twice_into_one_database_keeps_bars_exact(postgres_db, tmp_path):
    first = run_cli(["--feed", "demo", "--db", postgres_db, "--seed", "3",
                     "--duration", "3"], tmp_path)
    assert first["stored"] > 0
    ticks, bars, _ = read_back(postgres_db)
    assert len(ticks) >= first["stored"]  # the stream's trades plus the REST backfill's
    assert_bars_equal(bars, reference_bars_1s(ticks))
    # A second run (another process, the same database) adds to it; nothing counted twice.
    run_cli(["--feed", "demo", "--db", postgres_db, "--seed", "3", "--duration", "2"],
            tmp_path)
    again, bars, _ = read_back(postgres_db)
    assert len(again) > len(ticks)
    assert not again.duplicated(["symbol", "trade_id"]).any()
    assert_bars_equal(bars, reference_bars_1s(again))


def test_standby_pair_on_the_same_symbols_loses_nothing_when_one_is_killed(postgres_db,
                                                                            tmp_path):
    """Two collectors subscribe to the same stream (each connection gets every frame);
    one is SIGKILLed halfway through, the survivor's trades all land, each trade once,
    and a replay of 200 old trades to the survivor counts as duplicates."""
    per_symbol = 600
    frames = [trade_frame(symbol, i, T0 + 10 * i + k, 87000.0 + i if k == 0 else 3000.0 + i,
                          qty=0.001 * (1 + i % 7), buyer_is_maker=bool(i % 3))
              for i in range(1, per_symbol + 1) for k, symbol in enumerate(("BTCUSDT",
                                                                             "ETHUSDT"))]
    # A new trade after the re-sends: once it is stored, the survivor has received all.
    last = trade_frame("BTCUSDT", per_symbol + 1, T0 + 10 * (per_symbol + 1), 87000.0)
    halfway = threading.Event()
    connected = [threading.Event(), threading.Event()]

    async def script(connection, index):
        if index < 2:
            connected[index].set()
            while not all(event.is_set() for event in connected):
                await asyncio.sleep(0.02)  # both collectors listen before any trade
        for n, frame in enumerate(frames):
            await connection.send(frame)
            if n % 20 == 19:
                await asyncio.sleep(0.02)  # ~1,000 frames/s: the kill lands mid-stream
            if index == 0 and n == len(frames) // 2:
                halfway.set()
        for frame in frames[:200]:  # the server re-sends old trades (to the survivor)
            await connection.send(frame)
        await connection.send(last)  # stored once the survivor has read the re-sends too
        await hold_open(connection, 60)

    args = ["--feed", "binance-futures", "--stream", "trade", "--symbols", "btcusdt,ethusdt",
            "--db", postgres_db, "--silence-timeout", "30", "--duration", "60"]
    with ScriptedServer(script) as server:
        processes = [subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "collector.py"), *args, "--ws-url",
             server.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=tmp_path) for _ in range(2)]
        try:
            assert halfway.wait(60), "the first collector never got halfway"
            # Both connections stream in step, so whichever process holds connection 0,
            # the first one started is mid-stream now.
            victim, survivor = processes
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)

            def survivor_stored_all():
                conn = database.connect(postgres_db, readonly=True)
                try:
                    return conn.execute("SELECT count(*) FROM ticks").fetchone()[0] == len(
                        frames) + 1
                finally:
                    conn.close()

            assert wait_until(survivor_stored_all, 60, interval=0.2)
            survivor.send_signal(signal.SIGTERM)
            out, err = survivor.communicate(timeout=30)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
    assert survivor.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["received"] == len(frames) + 200 + 1
    # What the survivor did not store was stored by the other one or re-sent: duplicates.
    assert summary["stored"] + summary["duplicates"] == len(frames) + 200 + 1
    assert summary["duplicates"] >= 200
    ticks, bars, gaps = read_back(postgres_db)
    expected = sorted((json.loads(f)["data"]["s"], json.loads(f)["data"]["t"])
                      for f in [*frames, last])
    assert sorted(zip(ticks.symbol, ticks.trade_id)) == expected
    assert_bars_equal(bars, reference_bars_1s(ticks))
    assert gaps.empty


def test_retention_drops_old_day_partitions_while_collecting(postgres_db, tmp_path,
                                                             make_collector, monkeypatch):
    import collector
    from config import Settings

    day = 86_400_000
    conn = database.connect(postgres_db)
    old = [("BTCUSDT", i, T0 - 3 * day + i, 1.0, 1.0, 0, T0) for i in range(1, 501)]
    database.import_ticks(conn, old)
    conn.close()
    monkeypatch.setattr(collector, "PRUNE_EVERY_S", 0.1)
    frames = [trade_frame("BTCUSDT", 1000 + i, T0 + i, 2.0) for i in range(50)]

    async def script(connection, index):
        if index == 0:
            for frame in frames:
                await connection.send(frame)
        await hold_open(connection, 30)

    def old_partitions():
        check = database.connect(postgres_db, readonly=True)
        try:
            return [name for name, _, high in database_postgres.list_partitions(check)
                    if high <= T0 - day]
        finally:
            check.close()

    assert old_partitions() == [database_postgres.partition_name(T0 - 3 * day - T0 % day)]
    with ScriptedServer(script) as server:
        c = make_collector(Settings(feed="binance-futures", ws_url=server.url, stream="trade",
                                    db_path=postgres_db, flush_interval=0.05,
                                    retention_days=1)).start()
        assert wait_until(lambda: c.stored == 50, 30)
        assert wait_until(lambda: old_partitions() == [], 30)
    c.stop()
    ticks, bars, _ = read_back(postgres_db)
    assert ticks["ts"].min() >= T0 and len(ticks) == 50
    assert bars["ts"].min() >= T0 - T0 % day
    assert_bars_equal(bars, reference_bars_1s(ticks))


def test_sessions_killed_mid_stream_lose_nothing(postgres_db, tmp_path, make_collector):
    """The server ends every session of the database while trades stream in (a restart, a
    failover): the writer's batch fails, goes to the spill journal, and is replayed on a
    new connection - every trade stored once, bars exact."""
    from config import Settings

    frames = [trade_frame("BTCUSDT", i, T0 + 10 * i, 87000.0 + i % 50) for i in range(1, 801)]
    halfway = threading.Event()

    async def script(connection, index):
        if index == 0:
            for n, frame in enumerate(frames):
                await connection.send(frame)
                if n % 20 == 19:
                    await asyncio.sleep(0.03)
                if n == len(frames) // 2:
                    halfway.set()
        await hold_open(connection, 60)

    with ScriptedServer(script) as server:
        c = make_collector(Settings(feed="binance-futures", ws_url=server.url, stream="trade",
                                    db_path=postgres_db, flush_interval=0.05,
                                    spill_dir=str(tmp_path))).start()
        assert halfway.wait(30)
        admin = database.connect(postgres_db)
        try:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        finally:
            admin.close()
        assert ended >= 1  # the collector's writer session at least
        assert wait_until(lambda: c.stored == len(frames), 30)
    final = c.stop()
    assert final["write_errors"] >= 1 and final["duplicates"] == 0
    ticks, bars, gaps = read_back(postgres_db)
    assert sorted(ticks.trade_id) == list(range(1, len(frames) + 1))
    assert_bars_equal(bars, reference_bars_1s(ticks))
    assert gaps.empty
