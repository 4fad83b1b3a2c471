"""Collector against real loopback WebSocket servers and real SQLite files.

The scripted server (tests/loopback.py) plays what Binance does on a bad day: garbage frames,
abrupt drops, refused handshakes, silence with pings, replays after a reconnect, id jumps.
Every check reads the SQLite file the collector wrote with its own connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time

import pandas as pd
import psutil
import pytest

import collector
from collector import FrameKind, MalformedFrame, parse_frame, stream_url
from config import Settings
from helpers import count_rows, count_rows_or_zero, free_port, wait_until
from loopback import ScriptedServer, drop_tcp, hold_open, trade_frame

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1_765_800_000_000  # 2025-12-15 12:00:00 UTC



def settings_for(server_url: str, tmp_path, **changes) -> Settings:
    values = dict(feed="binance-futures", ws_url=server_url, db_path=str(tmp_path / "t.db"),
                  stream="trade", flush_interval=0.05)
    values.update(changes)
    return Settings(**values)



def send_trades(frames):
    """A script that sends ``frames`` once, then keeps the connection open."""

    async def script(connection, index):
        if index == 0:
            for frame in frames:
                await connection.send(frame)
        await hold_open(connection, 30)

    return script


# -- parsing ------------------------------------------------------------------------------


class TestParseFrame:
    def test_combined_futures_trade(self):
        frame = trade_frame("BTCUSDT", 42, T0, 87000.1, 0.004, buyer_is_maker=True)
        kind, trade = parse_frame(frame, T0 + 10)
        assert kind is FrameKind.TRADE
        assert trade == ("BTCUSDT", 42, T0, 87000.1, 0.004, 1, T0 + 10)

    def test_raw_aggtrade_uses_aggregate_id(self):
        frame = trade_frame("ETHUSDT", 9, T0, 3000.5, combined=False, event="aggTrade")
        kind, trade = parse_frame(frame, T0)
        assert kind is FrameKind.TRADE
        assert trade[:2] == ("ETHUSDT", 9)

    def test_spot_trade_without_x_and_with_unknown_fields(self):
        frame = json.dumps({"e": "trade", "E": T0, "s": "BTCUSDT", "t": 5, "p": "1.5",
                            "q": "2", "T": T0, "m": False, "M": True, "new": [1, 2]})
        assert parse_frame(frame, T0)[1][:5] == ("BTCUSDT", 5, T0, 1.5, 2.0)

    @pytest.mark.parametrize("status", ["NA", "INSURANCE_FUND", "ADL"])
    def test_non_market_prints_are_filtered_but_keep_their_id(self, status):
        frame = trade_frame("BTCUSDT", 77, T0, 0.0 if status == "NA" else 1.0, status=status)
        assert parse_frame(frame, T0) == (FrameKind.FILTERED, ("BTCUSDT", 77))

    def test_zero_price_market_frame_is_filtered(self):
        assert parse_frame(trade_frame("BTCUSDT", 1, T0, 0.0), T0)[0] is FrameKind.FILTERED

    def test_control_error_and_shutdown(self):
        assert parse_frame(b'{"result":null,"id":1}', T0)[0] is FrameKind.CONTROL
        assert parse_frame(b'{"code":2,"msg":"Invalid request"}', T0)[0] is FrameKind.ERROR
        shutdown = b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}'
        assert parse_frame(shutdown, T0)[0] is FrameKind.SHUTDOWN

    @pytest.mark.parametrize("message, reason", [
        (b"not json", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"e":"trade","s":"BTCUSDT","t":1,"p":"x","q":"1","T":1,"m":true}', "non-numeric"),
        (b'{"e":"trade","s":"BTCUSDT","t":1,"q":"1","T":1,"m":true}', "without field 'p'"),
        (b'{"e":"trade","s":"BTCUSDT","t":"1","p":"1","q":"1","T":1,"m":true}', "non-integer"),
        (b'{"e":"trade","s":"BTCUSDT","t":1,"p":"nan","q":"1","T":1,"m":true}', "non-finite"),
        (b'{"x":1}', "no event type"),
    ])
    def test_malformed_frames_say_why(self, message, reason):
        with pytest.raises(MalformedFrame, match=reason):
            parse_frame(message, T0)


def test_stream_urls_follow_binance_routing():
    base = "wss://fstream.binance.com"
    assert stream_url(base, "futures", "trade", ["btcusdt"]) == (
        "wss://fstream.binance.com/public/stream?streams=btcusdt@trade")
    assert stream_url(base + "/", "futures", "aggTrade", ["btcusdt", "ethusdt"]) == (
        "wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade")
    assert stream_url("wss://stream.binance.com:9443", "spot", "aggTrade", ["ethusdt"]) == (
        "wss://stream.binance.com:9443/stream?streams=ethusdt@aggTrade")


def test_backoff_is_full_jitter_capped_and_growing():
    rng = random.Random(1)
    delays = {n: [collector.backoff_delay(n, rng, 1.0, 60.0) for _ in range(2000)]
              for n in (0, 1, 3, 10)}
    assert max(delays[0]) <= 1.0 and max(delays[1]) <= 2.0 and max(delays[3]) <= 8.0
    assert max(delays[10]) <= 60.0 and max(delays[10]) > 55.0  # capped, not 1024 s
    assert min(delays[3]) < 1.0  # full jitter reaches down to zero
    means = [sum(delays[n]) / len(delays[n]) for n in (0, 1, 3, 10)]
    assert means == sorted(means)


# -- the collector against a scripted server ---------------------------------------------


@pytest.mark.parametrize("combined", [True, False])
@pytest.mark.parametrize("event", ["trade", "aggTrade"])
def test_happy_path_both_framings_and_stream_kinds(tmp_path, make_collector, combined, event):
    frames = [trade_frame(sym, i, T0 + i * 10, 100.0 + i, combined=combined, event=event)
              for i in range(1, 301) for sym in ("BTCUSDT", "ETHUSDT")]
    with ScriptedServer(send_trades(frames)) as server:
        settings = settings_for(server.url, tmp_path, stream=event)
        c = make_collector(settings).start()
        assert wait_until(lambda: c.stored == 600, 10)
        expected_path = "/public/stream" if event == "trade" else "/market/stream"
        assert server.paths[0].startswith(expected_path)
        assert f"btcusdt@{event}/ethusdt@{event}" in server.paths[0]
        c.stop()  # before the server goes: its close would be a reconnect
    assert count_rows(settings.db_path) == 600
    assert (c.rejected, c.filtered, c.duplicates, c.reconnects) == (0, 0, 0, 0)


def test_non_market_prints_are_counted_and_never_stored(tmp_path, make_collector):
    frames = [trade_frame("BTCUSDT", 1, T0, 87000.0),
              trade_frame("BTCUSDT", 2, T0 + 1, 0.0, 0.0, status="NA"),
              trade_frame("BTCUSDT", 3, T0 + 2, 86000.0, status="INSURANCE_FUND"),
              trade_frame("BTCUSDT", 4, T0 + 3, 87001.0, status="ADL"),
              trade_frame("BTCUSDT", 5, T0 + 4, 87002.0)]
    with ScriptedServer(send_trades(frames)) as server:
        c = make_collector(settings_for(server.url, tmp_path)).start()
        assert wait_until(lambda: c.stored == 2 and c.filtered == 3, 10)
        time.sleep(0.2)
    final = c.stop()
    with sqlite3.connect(c.db_path) as conn:
        stored = conn.execute("SELECT trade_id, price FROM ticks ORDER BY trade_id").fetchall()
        gaps = conn.execute("SELECT count(*) FROM gaps").fetchone()[0]
    assert stored == [(1, 87000.0), (5, 87002.0)]
    assert final["filtered"] == 3
    assert gaps == 0  # the filtered ids 2-4 were seen, so they are no gap


def test_malformed_frames_are_counted_and_skipped_without_reconnect(tmp_path, make_collector,
                                                                    caplog):
    rng = random.Random(3)
    bad = ["{not json", "[]", '{"e":"trade","s":"BTCUSDT"}', "\u00ff\u00fe garbage",
           '{"e":"trade","s":"BTCUSDT","t":1,"p":"abc","q":"1","T":1,"m":true}']
    frames = []
    for i in range(1, 1001):
        frames.append(trade_frame("ETHUSDT", i, T0 + i, 3000.0 + i % 7))
        frames.append(bad[rng.randrange(len(bad))])

    async def script(connection, index):
        if index == 0:
            for frame in frames:
                await connection.send(frame)
            await connection.send(b"\x00\x01binary")  # a binary frame is malformed too
        await hold_open(connection, 30)

    with ScriptedServer(script) as server:
        c = make_collector(settings_for(server.url, tmp_path)).start()
        assert wait_until(lambda: c.stored == 1000 and c.rejected == 1001, 15)
    final = c.stop()
    assert count_rows(c.db_path) == 1000
    assert final["reconnects"] == 0 and final["connections"] == 1
    rejected_lines = [r for r in caplog.records if "rejected frame" in r.getMessage()]
    assert 1 <= len(rejected_lines) <= 5  # rate-limited: at most one line a second


def test_abrupt_tcp_drop_reconnects_within_two_seconds(tmp_path, make_collector):
    dropped_at = []

    async def script(connection, index):
        await connection.send(trade_frame("BTCUSDT", index + 1, T0 + index, 87000.0))
        if index == 0:
            await asyncio.sleep(0.3)
            dropped_at.append(time.monotonic())
            drop_tcp(connection)
            return
        await hold_open(connection, 30)

    with ScriptedServer(script) as server:
        # Production backoff: the first retry must land within 2 s by itself.
        c = make_collector(settings_for(server.url, tmp_path), backoff_base=1.0,
                           backoff_cap=60.0)
        c.start()
        assert wait_until(lambda: server.connections >= 2, 5)
        assert server.attempts[1] - dropped_at[0] < 2.0
        assert wait_until(lambda: c.stored == 2, 5)
    assert c.reconnects == 1
    assert "closed" in c.last_close_reason or "socket" in c.last_close_reason


def test_refused_handshakes_back_off_with_growing_jittered_capped_delays(tmp_path,
                                                                          make_collector):
    with ScriptedServer(send_trades([trade_frame("BTCUSDT", 1, T0, 1.0)]), refuse=9) as server:
        c = make_collector(settings_for(server.url, tmp_path), backoff_base=0.02,
                           backoff_cap=0.3).start()
        assert wait_until(lambda: c.stored == 1, 15)
        assert "503" in c.health()["last_close_reason"]  # why the last attempt failed
    delays = c.retry_delays[:9]
    assert len(delays) == 9
    ceilings = [min(0.3, 0.02 * 2 ** n) for n in range(9)]
    assert all(0 <= d <= ceiling for d, ceiling in zip(delays, ceilings))
    assert len(set(round(d, 6) for d in delays)) == 9  # jittered: no two alike
    gaps = [b - a for a, b in zip(server.attempts, server.attempts[1:])]
    assert max(gaps) < 0.3 + 0.25  # capped (plus connect overhead)
    assert sum(delays[5:]) > sum(delays[:4])  # later waits are longer on the whole
    assert c.reconnects == 9


def test_silence_with_pings_answered_triggers_reconnect(tmp_path, make_collector):
    async def script(connection, index):
        await connection.send(trade_frame("BTCUSDT", index + 1, T0 + index, 87000.0))
        await hold_open(connection, 30)  # then silence; the server keeps pinging

    with ScriptedServer(script, ping_interval=0.2) as server:
        c = make_collector(settings_for(server.url, tmp_path, silence_timeout=1.5)).start()
        assert wait_until(lambda: c.stored == 1, 5)
        first_data = time.monotonic()
        assert wait_until(lambda: server.connections >= 2, 1.5 + 2.0 + 1.0)
        assert server.attempts[1] - first_data < 1.5 + 2.0
        assert "silence watchdog" in c.last_close_reason
    assert c.health()["connections"] >= 2


def test_replayed_trades_after_reconnect_are_stored_once(tmp_path, make_collector):
    frames = [trade_frame("BTCUSDT", i, T0 + i, 87000.0 + i) for i in range(1, 201)]

    async def script(connection, index):
        if index == 0:
            for frame in frames:
                await connection.send(frame)
            await asyncio.sleep(0.3)
            drop_tcp(connection)
            return
        for frame in frames[-50:]:  # the server re-sends its last 50 trades
            await connection.send(frame)
        await connection.send(trade_frame("BTCUSDT", 201, T0 + 201, 87201.0))
        await hold_open(connection, 30)

    with ScriptedServer(script) as server:
        c = make_collector(settings_for(server.url, tmp_path)).start()
        assert wait_until(lambda: c.stored == 201 and c.duplicates == 50, 10)
    final = c.stop()
    assert count_rows(c.db_path) == 201
    assert final["duplicates"] == 50 and final["stored"] == 201


def test_trade_id_jump_records_one_gap(tmp_path, make_collector):
    ids = list(range(1, 101)) + list(range(151, 201))
    frames = [trade_frame("ETHUSDT", i, T0 + i, 3000.0) for i in ids]
    with ScriptedServer(send_trades(frames)) as server:
        c = make_collector(settings_for(server.url, tmp_path)).start()
        assert wait_until(lambda: c.stored == 150, 10)
    c.stop()
    with sqlite3.connect(c.db_path) as conn:
        gaps = conn.execute("SELECT symbol, from_id, to_id FROM gaps").fetchall()
    assert gaps == [("ETHUSDT", 101, 150)]


def test_server_shutdown_event_reconnects_at_once(tmp_path, make_collector):
    async def script(connection, index):
        await connection.send(trade_frame("BTCUSDT", index + 1, T0 + index, 1.0))
        if index == 0:
            await connection.send('{"stream":"!serverShutdown","data":{"e":"serverShutdown",'
                                  '"E":1765800000000}}')
        await hold_open(connection, 30)

    with ScriptedServer(script) as server:
        c = make_collector(settings_for(server.url, tmp_path), backoff_base=5.0).start()
        assert wait_until(lambda: server.connections >= 2, 1.5)  # not the 5 s backoff
        assert wait_until(lambda: c.stored == 2, 5)


def test_write_lock_held_for_five_seconds_loses_nothing(tmp_path, make_collector):
    rate, seconds = 2000, 8
    total = rate * seconds
    db_path = str(tmp_path / "locked.db")

    async def script(connection, index):
        if index:
            await hold_open(connection, 30)
            return
        start = time.monotonic()
        for i in range(total):
            await connection.send(trade_frame("BTCUSDT", i + 1, T0 + i, 87000.0 + i % 50))
            if i % 100 == 99:  # pace at 2,000 trades/s
                delay = start + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        await hold_open(connection, 30)

    process = psutil.Process()
    with ScriptedServer(script) as server:
        c = make_collector(settings_for(server.url, tmp_path, db_path=db_path)).start()
        assert wait_until(lambda: c.stored > 1000, 10)
        locker = sqlite3.connect(db_path, timeout=10)
        locker.execute("BEGIN IMMEDIATE")  # hold the write lock
        rss_before = process.memory_info().rss
        time.sleep(5.0)
        depth_while_locked = c.health()["queue_depth"]
        rss_locked = process.memory_info().rss
        locker.rollback()
        locker.close()
        assert wait_until(lambda: c.stored == total, 30), c.health()
    final = c.stop()
    assert count_rows(db_path) == total
    assert final["dropped"] == 0
    assert depth_while_locked > 5000  # the queue absorbed the stall ...
    assert final["queue_high_water"] <= c.settings.queue_max
    assert rss_locked - rss_before < 50 * 2**20  # ... in bounded memory


def test_bounded_queue_drops_and_counts_when_full(tmp_path, make_collector):
    db_path = str(tmp_path / "full.db")
    frames = [trade_frame("BTCUSDT", i, T0 + i, 1.0) for i in range(1, 2001)]
    with ScriptedServer(send_trades([frames[0]])) as warmup:
        c0 = make_collector(settings_for(warmup.url, tmp_path, db_path=db_path)).start()
        assert wait_until(lambda: c0.stored == 1, 5)
        c0.stop()
    release = threading.Event()

    async def script(connection, index):
        for frame in frames[1:-1]:
            await connection.send(frame)
        while not release.is_set():  # the last trade comes once the database is free
            await asyncio.sleep(0.02)
        await connection.send(frames[-1])
        await hold_open(connection, 30)

    locker = sqlite3.connect(db_path, timeout=10)
    locker.execute("BEGIN IMMEDIATE")
    try:
        with ScriptedServer(script) as server:
            c = make_collector(settings_for(server.url, tmp_path, db_path=db_path,
                                            queue_max=500)).start()
            assert wait_until(lambda: c.received == 1998, 10)
            assert c.dropped >= 1998 - 500 - c.settings.batch_size
            assert c.health()["queue_depth"] <= 500
            locker.rollback()
            # Let the writer drain first, so the last trade is not dropped too.
            assert wait_until(lambda: c.health()["queue_depth"] == 0, 10)
            release.set()
            assert wait_until(lambda: c.received == 1999 and c.stored + c.dropped == 1999, 15)
    finally:
        locker.close()
    final = c.stop()
    assert final["stored"] + final["dropped"] == 1999 and final["dropped"] > 0
    with sqlite3.connect(db_path) as conn:
        missing = conn.execute("SELECT sum(to_id - from_id + 1) FROM gaps").fetchone()[0]
    assert missing == final["dropped"]  # every dropped trade is visible as a gap


def test_exact_count_then_stop_stores_everything_and_leaves_no_thread(tmp_path,
                                                                       make_collector):
    total = 12_345
    frames = [trade_frame("BTCUSDT" if i % 3 else "ETHUSDT", i, T0 + i, 100.0 + i % 10)
              for i in range(1, total + 1)]
    baseline = {t.name for t in threading.enumerate()}
    with ScriptedServer(send_trades(frames)) as server:
        c = make_collector(settings_for(server.url, tmp_path, flush_interval=0.4)).start()
        assert wait_until(lambda: c.received == total, 20)
        started = time.monotonic()
        final = c.stop()
        assert time.monotonic() - started < 5.0
    assert final["stored"] == total
    assert count_rows(c.db_path) == total
    left = {t.name for t in threading.enumerate()} - baseline
    assert not [name for name in left if name.startswith("collector")]


def test_forced_reconnects_leave_no_threads_or_open_files(tmp_path, make_collector):
    process = psutil.Process()

    async def script(connection, index):
        await connection.send(trade_frame("BTCUSDT", index + 1, T0 + index, 1.0))
        await hold_open(connection, 30)

    with ScriptedServer(script) as server:
        c = make_collector(settings_for(server.url, tmp_path)).start()
        assert wait_until(lambda: c.stored == 1, 5)
        time.sleep(0.2)
        threads_before = threading.active_count()
        files_before = process.num_fds()
        for n in range(200):
            c.request_reconnect("test")
            assert wait_until(lambda: c.connections >= n + 2 and c.received >= n + 2, 5)
        assert wait_until(lambda: c.stored == 201, 10)
        time.sleep(0.3)
        assert threading.active_count() == threads_before
        assert process.num_fds() <= files_before + 2


def test_one_second_bars_match_a_pandas_reference_with_out_of_order_trades(tmp_path,
                                                                           make_collector):
    rng = random.Random(11)
    trades = []
    for i in range(1, 3001):
        ts = T0 + i * 7 + rng.randrange(0, 3)
        trades.append((i, ts, round(87000 + rng.gauss(0, 20), 1), round(rng.uniform(0.001, 1), 3),
                       rng.random() < 0.5))
    shuffled = trades[:]
    for start in range(0, len(shuffled), 200):  # out of order within and across batches
        chunk = shuffled[start:start + 400]
        rng.shuffle(chunk)
        shuffled[start:start + 400] = chunk
    frames = [trade_frame("BTCUSDT", i, ts, p, q, buyer_is_maker=m) for i, ts, p, q, m in shuffled]
    with ScriptedServer(send_trades(frames)) as server:
        c = make_collector(settings_for(server.url, tmp_path, batch_size=250)).start()
        assert wait_until(lambda: c.stored == 3000, 10)
    c.stop()
    with sqlite3.connect(c.db_path) as conn:
        ticks = pd.read_sql("SELECT * FROM ticks WHERE symbol='BTCUSDT'", conn)
        bars = pd.read_sql("SELECT * FROM bars_1s WHERE symbol='BTCUSDT' ORDER BY ts", conn)
    ticks = ticks.sort_values(["ts", "trade_id"])
    ticks["second"] = ticks.ts // 1000 * 1000
    grouped = ticks.groupby("second")
    expected = pd.DataFrame({
        "open": grouped.price.first(), "high": grouped.price.max(), "low": grouped.price.min(),
        "close": grouped.price.last(), "volume": grouped.qty.sum(),
        "trades": grouped.price.count(),
        "buy_volume": ticks.assign(b=ticks.qty.where(ticks.is_buyer_maker == 0, 0.0))
        .groupby("second").b.sum(),
    })
    result = bars.set_index("ts")[expected.columns]
    result.index.name = "second"
    pd.testing.assert_frame_equal(result, expected, check_dtype=False, rtol=1e-12)


def test_against_the_built_in_market(tmp_path, make_collector):
    settings = Settings(feed="demo", db_path=str(tmp_path / "demo.db"), demo_seed=5,
                        flush_interval=0.1)
    c = make_collector(settings).start()
    assert wait_until(lambda: c.stored > 200, 10)
    health = c.health()
    assert health["builtin_market"] and health["feed"] == "demo"
    assert health["url"].startswith("ws://127.0.0.1:")
    assert set(health["symbols"]) == {"BTCUSDT", "ETHUSDT"}
    c.stop()
    with sqlite3.connect(settings.db_path) as conn:
        symbols = dict(conn.execute("SELECT symbol, count(*) FROM ticks GROUP BY symbol"))
        prices = dict(conn.execute("SELECT symbol, avg(price) FROM ticks GROUP BY symbol"))
    assert set(symbols) == {"BTCUSDT", "ETHUSDT"}
    assert 50_000 < prices["BTCUSDT"] < 150_000 and 1_000 < prices["ETHUSDT"] < 6_000


def test_auto_falls_back_to_the_built_in_market_when_binance_is_unreachable(tmp_path,
                                                                            make_collector):
    closed = f"ws://127.0.0.1:{free_port()}"  # nothing listens here
    settings = Settings(feed="auto", ws_url=closed, auto_fallback=1.0, demo_seed=3,
                        flush_interval=0.1)
    original_dir = os.getcwd()
    os.chdir(tmp_path)  # the fallback writes to data/demo.db under the working directory
    try:
        c = make_collector(settings).start()
        assert wait_until(lambda: c.stored > 50, 10)
    finally:
        os.chdir(original_dir)
    health = c.health()
    assert health["feed"] == "demo" and health["builtin_market"]
    assert health["requested_feed"] == "auto" and health["fallback_reason"]
    assert health["db_path"].endswith(os.path.join("data", "demo.db"))
    assert not (tmp_path / "data" / "binance-futures.db").exists()


def test_start_is_idempotent_per_process(tmp_path):
    settings = Settings(feed="demo", db_path=str(tmp_path / "one.db"), demo_seed=1)
    try:
        first = collector.start(settings)
        second = collector.start(settings.with_changes(db_path=str(tmp_path / "two.db")))
        assert first is second and collector.running_collector() is first
        names = [t.name for t in threading.enumerate()]
        assert names.count("collector-receive") == 1
    finally:
        collector.stop()
    assert collector.running_collector() is None


def test_cli_prints_a_json_summary_and_exits_zero(tmp_path):
    frames = [trade_frame("BTCUSDT", i, T0 + i, 87000.0) for i in range(1, 101)]
    frames.append("garbage")
    with ScriptedServer(send_trades(frames)) as server:
        db = tmp_path / "cli.db"
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "collector.py"), "--feed", "binance-futures",
             "--symbols", "btcusdt", "--stream", "trade", "--ws-url", server.url,
             "--db", str(db), "--silence-timeout", "5", "--duration", "2"],
            capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("received", "stored", "duplicates", "rejected", "filtered", "reconnects"):
        assert isinstance(summary[key], int)
    assert summary["stored"] == 100 and summary["rejected"] == 1
    assert count_rows(str(db)) == 100


def test_cli_rejects_a_bad_symbol_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "collector.py"), "--feed", "demo",
         "--symbols", "btc-usdt", "--duration", "1"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 2
    assert "btc-usdt" in result.stderr


def test_cli_stops_cleanly_on_sigterm(tmp_path):
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "collector.py"), "--feed", "demo",
         "--db", str(tmp_path / "sig.db"), "--seed", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    # Rows in the file mean the process is past start-up (signal handlers installed; a slow
    # import on a loaded machine must not turn into a kill before them).
    assert wait_until(lambda: (tmp_path / "sig.db.writer.lock").exists()
                      and count_rows_or_zero(str(tmp_path / "sig.db")) > 0, 30)
    time.sleep(1.5)
    process.terminate()
    out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stored"] > 0
    # Rows come from the stream and from the REST backfill of the demo's simulated past.
    assert summary["stored"] + summary["backfilled"] == count_rows(str(tmp_path / "sig.db"))


def test_replay_of_recorded_trades_stores_every_row_and_filters_zero_prices(tmp_path):
    recording = os.path.join(ROOT, "tests", "data", "market_futures_2025-12-15T0843Z_head2000.ndjson")
    rows = pd.read_json(recording, lines=True)
    zero = int((rows.price == 0).sum())
    assert zero > 0  # the excerpt holds Binance's NA placeholders
    db = tmp_path / "replay.db"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "collector.py"), "--feed", "replay", "--stream",
         "trade", "--replay-file", recording, "--replay-speed", "0", "--db", str(db),
         "--duration", "60"],
        capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["stored"] == len(rows) - zero  # identical rows are distinct trades
    assert summary["filtered"] == zero and summary["duplicates"] == 0
    with sqlite3.connect(db) as conn:
        stored = pd.read_sql("SELECT symbol, trade_id, price, qty FROM ticks", conn)
    expected = rows[rows.price > 0].groupby("symbol").size().to_dict()
    assert stored.groupby("symbol").size().to_dict() == expected
    assert (stored.price > 0).all()


def test_cli_evaluates_stored_alert_rules_without_a_browser(tmp_path):
    import alerts
    import database

    db = tmp_path / "alerts.db"
    conn = database.connect(str(db))
    rule_id = alerts.create_rule(conn, metric="price", symbol="BTCUSDT", comparison=">",
                                 threshold=1.0, timeframe="1s", cooldown_s=3600)
    conn.close()
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "collector.py"), "--feed", "demo", "--db", str(db),
         "--seed", "4", "--duration", "5"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        events = conn.execute("SELECT rule_id, value FROM alert_events").fetchall()
    assert len(events) == 1 and events[0][0] == rule_id  # fired once, then cooling down
    assert 50_000 < events[0][1] < 150_000  # the simulated BTC price


def test_planned_reconnect_before_the_connection_age_limit(tmp_path, make_collector):
    async def script(connection, index):
        for i in range(40):  # keep data flowing so only the age limit can end the connection
            await connection.send(trade_frame("BTCUSDT", index * 100 + i + 1, T0 + i, 1.0))
            await asyncio.sleep(0.05)
        await hold_open(connection, 30)

    with ScriptedServer(script) as server:
        c = make_collector(settings_for(server.url, tmp_path), max_connection_age=0.5,
                           backoff_base=5.0)  # a backoff would show as a 5 s pause
        c.start()
        assert wait_until(lambda: server.connections >= 3, 4)
        assert "planned reconnect" in c.last_close_reason
        assert c.retry_delays == []  # planned reconnects skip the backoff


def test_backoff_resets_after_a_healthy_connection(tmp_path, make_collector):
    async def script(connection, index):
        for i in range(30):
            await connection.send(trade_frame("BTCUSDT", i + 1, T0 + i, 1.0))
            await asyncio.sleep(0.05)
        await hold_open(connection, 30)

    with ScriptedServer(script, refuse=4) as server:
        c = make_collector(settings_for(server.url, tmp_path), backoff_base=0.01,
                           healthy_reset=0.5).start()
        assert wait_until(lambda: c.connections == 1, 10)
        assert c.failures == 4  # four refusals in a row
        assert wait_until(lambda: c.failures == 0, 3)  # healthy for 0.5 s: forgiven


def test_retention_prunes_old_ticks_in_the_background(tmp_path, make_collector, monkeypatch):
    import database

    db_path = str(tmp_path / "retention.db")
    day = 86_400_000
    conn = database.connect(db_path)
    old = [("BTCUSDT", i, T0 - 3 * day + i, 1.0, 1.0, 0, T0) for i in range(1, 501)]
    database.import_ticks(conn, old)
    conn.close()
    monkeypatch.setattr(collector, "PRUNE_EVERY_S", 0.1)
    frames = [trade_frame("BTCUSDT", 1000 + i, T0 + i, 2.0) for i in range(50)]
    with ScriptedServer(send_trades(frames)) as server:
        c = make_collector(settings_for(server.url, tmp_path, db_path=db_path,
                                        retention_days=1)).start()
        assert wait_until(lambda: c.stored == 50, 10)
        assert wait_until(lambda: count_rows(db_path) == 50, 10)
    with sqlite3.connect(db_path) as conn:
        oldest = conn.execute("SELECT min(ts) FROM ticks").fetchone()[0]
        old_bars = conn.execute("SELECT count(*) FROM bars_1s WHERE ts < ?", (T0 - day,)).fetchone()[0]
    assert oldest >= T0 and old_bars == 0


def test_auto_fallback_is_not_delayed_by_a_long_backoff(tmp_path, make_collector):
    closed = f"ws://127.0.0.1:{free_port()}"
    settings = Settings(feed="auto", ws_url=closed, auto_fallback=1.0, demo_seed=3,
                        db_path=str(tmp_path / "futures.db"), flush_interval=0.1)
    # Backoff ceiling 20 s (seed 7 draws a 6.5 s first wait): the fallback must not wait it.
    c = make_collector(settings, backoff_base=20.0, backoff_cap=60.0).start()
    assert wait_until(lambda: c.health()["feed"] == "demo", 2.5)
    assert wait_until(lambda: c.stored > 10, 5)
    assert c.db_path == str(tmp_path / "futures-demo.db")  # never the real file


def test_a_short_queue_is_written_without_waiting_for_the_flush_interval(tmp_path,
                                                                          make_collector):
    # flush_interval 3 s: a lone trade is written after QUICK_FLUSH_S (50 ms), not 3 s.
    async def script(connection, index):
        await connection.send(trade_frame("BTCUSDT", 1, T0, 100.0))
        await hold_open(connection, 30)

    with ScriptedServer(script) as server:
        c = make_collector(settings_for(server.url, tmp_path, flush_interval=3.0)).start()
        assert wait_until(lambda: c.received == 1, 5)
        received_at = time.monotonic()
        assert wait_until(lambda: c.stored == 1, 2.5)
        assert time.monotonic() - received_at < 1.5
